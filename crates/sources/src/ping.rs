//! PingSource: an event per tick of the schedule.
//!
//! The next tick is always computed from the current time, so ticks missed
//! while the adapter was down (or stopped for a change of the source) are
//! skipped, not caught up — Knative's behaviour. `@every` periods tick on
//! multiples of the period since the Unix epoch, so every replica agrees on
//! the ticks. A tick that finds the queue full is dropped, counted in
//! `kn_source_events_dropped_total` and logged.

use crate::runner::SourceState;
use channel_core::event::Event;
use channel_core::sources::ping::{ping_source_uri, PingSettings, Schedule, PING_EVENT_TYPE};
use channel_core::sources::SourceContract;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The event of the tick at `time`.
pub fn ping_event(
    source: &SourceContract,
    settings: &PingSettings,
    time: chrono::DateTime<Utc>,
) -> Event {
    let mut event = Event::new(
        uuid::Uuid::new_v4().to_string(),
        ping_source_uri(&source.namespace, &source.name),
        PING_EVENT_TYPE,
    );
    event.time = Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if let Some(data) = settings.data() {
        event.datacontenttype = settings.content_type.clone();
        event.data = Some(data.into());
    }
    for (name, value) in &source.extensions {
        event = event.with_extension(name, value.as_str());
    }
    event
}

/// Tick until `stop`.
pub async fn run(
    source: SourceContract,
    settings: PingSettings,
    queue: mpsc::Sender<crate::queue::Queued>,
    state: Arc<SourceState>,
    stop: CancellationToken,
) {
    let schedule = match Schedule::parse(&settings.schedule, settings.timezone.as_deref()) {
        Ok(s) => s,
        Err((field, message)) => {
            // The compiler checked it; a contract written by another
            // version may still carry one this adapter cannot read.
            state.failed(format!("spec.{field}: {message}"));
            return;
        }
    };
    state.running();
    loop {
        let now = Utc::now();
        let Some(next) = schedule.next_after(now) else {
            state.failed("the schedule has no next tick".into());
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let event = ping_event(&source, &settings, next);
        state.ticked(&next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        match queue.try_send(event.into()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                state.counters.dropped.inc();
                tracing::warn!(source = %source.key(), tick = %next, "queue full (the sink is slow or down): tick dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::sources::{default_source_delivery, SourceSettings};
    use std::collections::BTreeMap;

    #[test]
    fn a_ping_is_knatives() {
        let settings = PingSettings {
            schedule: "* * * * *".into(),
            timezone: None,
            content_type: Some("text/plain".into()),
            data_base64: Some("aGVsbG8=".into()),
        };
        let source = SourceContract {
            uid: "u".into(),
            namespace: "shop".into(),
            name: "tick".into(),
            generation: 1,
            sink: url::Url::parse("http://sink/").expect("url"),
            dead_letter: None,
            delivery: default_source_delivery(),
            auth: None,
            extensions: BTreeMap::from([("team".into(), "shop".into())]),
            settings: SourceSettings::PingSource(settings.clone()),
        };
        let time = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:05:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let e = ping_event(&source, &settings, time);
        assert_eq!(e.ty, "dev.knative.sources.ping");
        assert_eq!(e.source, "/apis/v1/namespaces/shop/pingsources/tick");
        assert_eq!(e.time.as_deref(), Some("2026-12-04T10:05:00Z"));
        assert_eq!(e.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(e.data.as_deref(), Some(&b"hello"[..]));
        assert_eq!(e.extension("team").as_deref(), Some("shop"));
        assert!(e.validate().is_ok());
    }
}

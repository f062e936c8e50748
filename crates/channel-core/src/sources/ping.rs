//! Knative's `PingSource` (and the seeds' `CronJobSource`): an event on a
//! schedule.
//!
//! `spec.schedule` is what Knative's PingSource accepts (robfig/cron's
//! standard parser): five cron fields (minute hour day-of-month month
//! day-of-week; names like `MON` and `JAN`, ranges, steps, lists; a day
//! matches when either day field matches, as cron does), the descriptors
//! `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight` and
//! `@hourly`, and `@every <duration>` (`@every 10s`, `@every 1m30s`).
//! The time zone is `spec.timezone` or a `CRON_TZ=<zone>` (or `TZ=`)
//! prefix, an IANA name; UTC otherwise.
//!
//! An empty schedule is Knative's default, `* * * * *`.
//!
//! Events: type `dev.knative.sources.ping`, source
//! `/apis/v1/namespaces/<ns>/pingsources/<name>`, `time` the tick's
//! scheduled time, data `spec.data` or the decoded `spec.dataBase64` with
//! `spec.contentType` as `datacontenttype` (none when unset, as Knative's
//! adapter sends it; the seeds' CronJobSource sent JSON, so a CronJobSource
//! reads as `application/json`).

use super::CloudEventOverrides;
use crate::resources::{DeliverySpec, Destination, FieldError};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::str::FromStr as _;
use std::time::Duration;

/// The CloudEvents type of a ping.
pub const PING_EVENT_TYPE: &str = "dev.knative.sources.ping";
/// The `contentType` a CronJobSource's data is sent with.
pub const CRON_JOB_CONTENT_TYPE: &str = "application/json";
/// Knative's default schedule.
pub const DEFAULT_SCHEDULE: &str = "* * * * *";
/// Shortest `@every` period accepted.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// The CloudEvents source of a PingSource's events.
pub fn ping_source_uri(namespace: &str, name: &str) -> String {
    format!("/apis/v1/namespaces/{namespace}/pingsources/{name}")
}

/// `sources.knative.dev/v1` `PingSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PingSourceSpec {
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
    /// Beyond Knative: retries and a dead-letter sink for the pings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// The seeds' `v1alpha1` `CronJobSource` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronJobSourceSpec {
    schedule: String,
    #[serde(default)]
    data: Option<String>,
    /// A Destination, or (as the seeds write it) a bare reference.
    sink: serde_json::Value,
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    resources: Option<serde_json::Value>,
}

impl CronJobSourceSpec {
    /// The PingSource it is read as.
    pub fn into_spec(self) -> Result<PingSourceSpec, FieldError> {
        let _ = (self.service_account_name, self.resources);
        Ok(PingSourceSpec {
            schedule: self.schedule,
            content_type: self
                .data
                .is_some()
                .then(|| CRON_JOB_CONTENT_TYPE.to_owned()),
            data: self.data,
            sink: super::apiserver::legacy_sink(self.sink)?,
            ..PingSourceSpec::default()
        })
    }
}

/// What the adapter needs of a PingSource (in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingSettings {
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The data, base64 (text data encoded too, so one field carries both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

impl PingSettings {
    /// The data bytes.
    pub fn data(&self) -> Option<Vec<u8>> {
        self.data_base64
            .as_deref()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
    }
}

impl PingSourceSpec {
    /// Check what the schema cannot.
    /// The schedule, Knative's default when empty.
    pub fn schedule(&self) -> &str {
        match self.schedule.trim() {
            "" => DEFAULT_SCHEDULE,
            s => s,
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        Schedule::parse(self.schedule(), self.timezone.as_deref())
            .map_err(|(field, message)| FieldError::new(format!("spec.{field}"), message))?;
        if self.data.is_some() && self.data_base64.is_some() {
            return Err(FieldError::new(
                "spec.dataBase64",
                "data and dataBase64 are exclusive",
            ));
        }
        if let Some(d) = &self.data_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map_err(|e| FieldError::new("spec.dataBase64", format!("not base64: {e}")))?;
        }
        if let Some(o) = &self.ce_overrides {
            o.validate("spec.ceOverrides")?;
        }
        if let Some(d) = &self.delivery {
            d.validate("spec.delivery")?;
        }
        self.sink.validate("spec.sink")
    }

    /// The adapter's settings.
    pub fn settings(&self) -> PingSettings {
        let engine = base64::engine::general_purpose::STANDARD;
        let data_base64 = match (&self.data, &self.data_base64) {
            (_, Some(b)) => Some(b.trim().to_owned()),
            (Some(text), None) => Some(engine.encode(text)),
            (None, None) => None,
        };
        PingSettings {
            schedule: self.schedule().to_owned(),
            timezone: self.timezone.clone(),
            content_type: self.content_type.clone().filter(|c| !c.is_empty()),
            data_base64,
        }
    }
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<croner::Cron>,
        zone: chrono_tz::Tz,
    },
    Every(Duration),
}

/// Parse a duration of Go's form (`1h30m`, `10s`, `250ms`, `1.5h`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e10).then(|| Duration::from_secs_f64(total))
}

impl Schedule {
    /// Parse `schedule` (with an optional `CRON_TZ=`/`TZ=` prefix) in
    /// `timezone`; an error names the field (`schedule` or `timezone`).
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule, (String, String)> {
        let bad = |m: String| Err(("schedule".to_owned(), m));
        let mut text = schedule.trim();
        let mut zone_name = timezone.filter(|z| !z.is_empty()).map(str::to_owned);
        let mut zone_field = "timezone";
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (zone, cron) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                zone_name = Some(zone.to_owned());
                zone_field = "schedule";
                text = cron.trim();
            }
        }
        let zone = match &zone_name {
            None => chrono_tz::UTC,
            Some(z) => chrono_tz::Tz::from_str(z).map_err(|_| {
                (
                    zone_field.to_owned(),
                    format!("{z:?} is not an IANA time zone (e.g. Europe/Paris)"),
                )
            })?,
        };
        if text.is_empty() {
            return bad("a schedule is required (5 cron fields, @hourly, @every 1m, ...)".into());
        }
        if let Some(period) = text.strip_prefix("@every") {
            let Some(every) = parse_go_duration(period) else {
                return bad(format!(
                    "{text:?}: @every takes a duration such as 10s, 1m30s or 2h"
                ));
            };
            if every < MIN_EVERY {
                return bad(format!(
                    "{text:?}: the shortest period is {}s",
                    MIN_EVERY.as_secs()
                ));
            }
            return Ok(Schedule::Every(every));
        }
        let pattern = match text {
            "@midnight" => "@daily",
            other => other,
        };
        if !pattern.starts_with('@') && pattern.split_whitespace().count() != 5 {
            return bad(format!(
                "{text:?}: a cron schedule has 5 fields (minute hour day-of-month month day-of-week)"
            ));
        }
        match croner::Cron::new(pattern).parse() {
            Ok(cron) => Ok(Schedule::Cron {
                cron: Box::new(cron),
                zone,
            }),
            Err(e) => bad(format!("{text:?}: {e}")),
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                // Ticks on multiples of the period since the epoch, so all
                // replicas agree on them.
                let period_ms = period.as_millis().max(1) as i64;
                let now_ms = after.timestamp_millis();
                let next = (now_ms.div_euclid(period_ms) + 1) * period_ms;
                DateTime::from_timestamp_millis(next)
            }
            Schedule::Cron { cron, zone } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn next(schedule: &str, tz: Option<&str>, after: &str) -> String {
        Schedule::parse(schedule, tz)
            .expect("schedule")
            .next_after(at(after))
            .expect("next")
            .to_rfc3339()
    }

    #[test]
    fn cron_fields_descriptors_and_every() {
        assert_eq!(
            next("*/5 * * * *", None, "2026-12-04T10:02:30Z"),
            "2026-12-04T10:05:00+00:00"
        );
        assert_eq!(
            next("0 9 * * MON", None, "2026-12-04T10:00:00Z"),
            "2026-12-07T09:00:00+00:00"
        );
        assert_eq!(
            next("@hourly", None, "2026-12-04T10:00:00Z"),
            "2026-12-04T11:00:00+00:00"
        );
        assert_eq!(
            next("@midnight", None, "2026-12-04T10:00:00Z"),
            "2026-12-05T00:00:00+00:00"
        );
        assert_eq!(
            next("@every 10s", None, "2026-12-04T10:00:03Z"),
            "2026-12-04T10:00:10+00:00"
        );
        assert_eq!(
            next("@every 1m30s", None, "2026-12-04T10:00:00Z"),
            "2026-12-04T10:01:30+00:00"
        );
    }

    #[test]
    fn the_time_zone_comes_from_the_field_or_the_prefix() {
        // 09:00 in Paris is 08:00 UTC in December.
        assert_eq!(
            next("0 9 * * *", Some("Europe/Paris"), "2026-12-04T10:00:00Z"),
            "2026-12-05T08:00:00+00:00"
        );
        assert_eq!(
            next(
                "CRON_TZ=Europe/Paris 0 9 * * *",
                None,
                "2026-12-04T10:00:00Z"
            ),
            "2026-12-05T08:00:00+00:00"
        );
        assert_eq!(
            Schedule::parse("0 9 * * *", Some("Mars/Olympus"))
                .unwrap_err()
                .0,
            "timezone"
        );
        assert_eq!(
            Schedule::parse("CRON_TZ=Nowhere 0 9 * * *", None)
                .unwrap_err()
                .0,
            "schedule"
        );
        let _ = Utc.timestamp_opt(0, 0);
    }

    #[test]
    fn bad_schedules_say_why() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "61 * * * *",
            "@every",
            "@every 10",
            "@every 1x",
            "@every 100ms",
            "@sometimes",
        ] {
            let (field, message) = Schedule::parse(bad, None).expect_err(bad);
            assert_eq!(field, "schedule", "{bad:?}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn data_and_the_seeds_cron_job_source() {
        let spec = PingSourceSpec {
            schedule: "* * * * *".into(),
            data: Some("{\"message\": \"hi\"}".into()),
            sink: Destination {
                uri: Some("http://sink/".into()),
                ..Destination::default()
            },
            ..PingSourceSpec::default()
        };
        spec.validate().expect("valid");
        let s = spec.settings();
        assert_eq!(s.content_type, None, "no contentType, no datacontenttype");
        assert_eq!(s.data().as_deref(), Some(&b"{\"message\": \"hi\"}"[..]));
        let mut both = spec.clone();
        both.data_base64 = Some("e30=".into());
        assert_eq!(both.validate().unwrap_err().path, "spec.dataBase64");
        let mut not64 = spec.clone();
        not64.data = None;
        not64.data_base64 = Some("not base64!".into());
        assert_eq!(not64.validate().unwrap_err().path, "spec.dataBase64");

        let legacy: CronJobSourceSpec = serde_yaml_ng::from_str(
            "schedule: '*/2 * * * *'\ndata: '{\"message\": \"Hello world!\"}'\nsink:\n  apiVersion: eventing.knative.dev/v1alpha1\n  kind: Broker\n  name: default\n",
        )
        .expect("CronJobSource");
        let ping = legacy.into_spec().expect("as PingSource");
        assert_eq!(ping.schedule, "*/2 * * * *");
        assert_eq!(ping.content_type.as_deref(), Some("application/json"));
        let empty = PingSourceSpec {
            schedule: String::new(),
            ..ping.clone()
        };
        assert_eq!(empty.settings().schedule, "* * * * *", "Knative's default");
        assert_eq!(
            ping.sink.reference.as_ref().map(|r| r.kind.as_str()),
            Some("Broker")
        );
        ping.validate().expect("valid");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,40}", tz in proptest::option::of(".{0,12}")) {
            let _ = Schedule::parse(&s, tz.as_deref());
        }

        #[test]
        fn every_valid_period_ticks_in_the_future(secs in 1u64..100_000, after in 0i64..4_000_000_000) {
            let schedule = Schedule::parse(&format!("@every {secs}s"), None).expect("valid");
            let t = DateTime::from_timestamp(after, 0).expect("time");
            let next = schedule.next_after(t).expect("next");
            proptest::prop_assert!(next > t);
            proptest::prop_assert!(next - t <= chrono::Duration::seconds(secs as i64));
        }

        #[test]
        fn five_field_schedules_tick_within_a_year(min in 0u32..60, hour in 0u32..24) {
            let schedule = Schedule::parse(&format!("{min} {hour} * * *"), None).expect("valid");
            let t = at("2026-12-04T10:00:00Z");
            let next = schedule.next_after(t).expect("next");
            proptest::prop_assert!(next > t && next - t <= chrono::Duration::days(1));
        }
    }
}

//! Broker semantics for a Trigger's subscription.
//!
//! * **Filter before delivery.** The trigger's filter is compiled once per
//!   contract entry and evaluated on each event as the loop takes it from
//!   the backend; an event that does not pass is settled at once, with no
//!   HTTP request and no task. A filter that fails to evaluate (a CESQL
//!   error) counts as not passing and is counted.
//! * **Replies go back into the broker** (the subscription's reply is the
//!   broker's address, served by this dispatcher's own ingress). The reply
//!   and the subscriber's answer are one exchange: if the broker does not
//!   accept the reply, the delivery failed and the original event is
//!   redelivered to the subscriber by the retry policy, then dead-lettered,
//!   as the broker spec requires.
//! * **Loop protection.** Broker ingress stamps events that carry no
//!   `knativebrokerttl` extension with [`DEFAULT_BROKER_TTL`]; a reply
//!   leaves with its event's TTL minus one, and a reply whose TTL would
//!   reach 0 is dropped with a log line and the
//!   `kn_channel_broker_ttl_exceeded_total` metric (Knative's rule and
//!   attribute name).

use super::retry::{classify, parse_retry_after, retry_delay, Verdict};
use super::{Attempt, Failure, Job, SubscriptionMetrics};
use channel_core::event::{Event, ExtensionValue};
use channel_core::{SubscriptionContract, TriggerContract};
use event_filter::{Filter, FilterResult};
use http::Uri;
use std::sync::Arc;
use std::time::SystemTime;

/// The extension carrying the broker TTL (remaining hops).
pub const BROKER_TTL_EXTENSION: &str = "knativebrokerttl";
/// The TTL broker ingress gives an event that carries none.
pub const DEFAULT_BROKER_TTL: i64 = 255;

fn compile(trigger: &TriggerContract) -> Result<Filter, String> {
    Filter::compile(Some(&trigger.attributes), &trigger.filters).map_err(|e| e.to_string())
}

/// Whether a subscription's contract entry can run: a trigger's filter
/// must compile (the control plane checks it too; a hand-written contract
/// may not have been).
pub fn check(sub: &SubscriptionContract) -> Result<(), String> {
    match &sub.trigger {
        None => Ok(()),
        Some(t) => compile(t)
            .map(|_| ())
            .map_err(|e| format!("invalid trigger filter: {e}")),
    }
}

/// The compiled filter of a subscription's current contract entry,
/// recompiled only when the entry changes.
#[derive(Debug, Default)]
pub(super) struct FilterCache {
    entry: Option<Arc<SubscriptionContract>>,
    filter: Option<Filter>,
}

impl FilterCache {
    /// Whether `event` is to be delivered under contract entry `sub`.
    pub(super) fn passes(
        &mut self,
        sub: &Arc<SubscriptionContract>,
        event: &Event,
        metrics: &SubscriptionMetrics,
    ) -> bool {
        let Some(trigger) = &sub.trigger else {
            return true;
        };
        if !self.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, sub)) {
            self.filter = match compile(trigger) {
                Ok(f) => Some(f),
                Err(e) => {
                    // Refused at apply; kept safe here: nothing is delivered.
                    tracing::error!(subscription = %sub.key(), error = %e, "trigger filter does not compile");
                    None
                }
            };
            self.entry = Some(sub.clone());
        }
        let Some(filter) = &self.filter else {
            metrics.filter_error();
            return false;
        };
        if filter.is_match_all() {
            return true;
        }
        match filter.evaluate(event) {
            FilterResult::Pass => true,
            FilterResult::Fail => {
                metrics.filtered();
                false
            }
            FilterResult::Error(e) => {
                tracing::debug!(subscription = %sub.key(), event_id = %event.id, error = %e, "filter evaluation failed: treated as not matching");
                metrics.filter_error();
                metrics.filtered();
                false
            }
        }
    }
}

/// The broker TTL an event carries, or the default.
pub fn broker_ttl(event: &Event) -> i64 {
    match event.extensions.get(BROKER_TTL_EXTENSION) {
        Some(ExtensionValue::Integer(i)) => *i,
        Some(ExtensionValue::String(s)) => s.trim().parse().unwrap_or(DEFAULT_BROKER_TTL),
        _ => DEFAULT_BROKER_TTL,
    }
}

/// Stamp the default TTL on an event entering a broker without one.
pub fn default_broker_ttl(event: &mut Event) {
    if !event.extensions.contains_key(BROKER_TTL_EXTENSION) {
        event.extensions.insert(
            BROKER_TTL_EXTENSION.to_owned(),
            ExtensionValue::Integer(DEFAULT_BROKER_TTL),
        );
    }
}

impl Job {
    /// Deliver to a trigger's subscriber; a reply goes to the broker within
    /// the same attempt. `Err` is the last failure after the retries.
    pub(super) async fn deliver_to_trigger(
        &self,
        sub: &SubscriptionContract,
        event: &Event,
    ) -> Result<(), Failure> {
        let policy = &sub.delivery;
        let Some(subscriber) = &sub.subscriber else {
            return Ok(());
        };
        let invalid = |url: &url::Url, e: http::uri::InvalidUri| Failure {
            destination: url.clone(),
            last: Attempt::Failed {
                reason: format!("invalid destination URL: {e}"),
            },
        };
        let subscriber_uri: Uri = match subscriber.as_str().parse() {
            Ok(u) => u,
            Err(e) => return Err(invalid(subscriber, e)),
        };
        let ttl = broker_ttl(event);
        let client = &self.deliverer.client;
        let mut n = 0u32;
        loop {
            let (attempt, elapsed) = client
                .send(
                    &subscriber_uri,
                    event,
                    policy.format,
                    policy.timeout,
                    super::target(sub, |a| a.subscriber.as_ref()),
                )
                .await;
            let class = attempt.status().map_or(
                crate::metrics::StatusClass::Error,
                crate::metrics::StatusClass::of,
            );
            self.metrics.attempt(class, elapsed);
            let (verdict, failure) = match classify(attempt.status()) {
                Verdict::Success => {
                    let reply = self.reply_of(sub, event, attempt);
                    match (reply, &sub.reply) {
                        (None, _) => return Ok(()),
                        (Some(_), None) => return Ok(()),
                        (Some(_), Some(_)) if ttl <= 1 => {
                            self.metrics.ttl_exceeded();
                            tracing::warn!(subscription = %sub.key(), event_id = %event.id, ttl, "reply dropped: the broker TTL ran out (an event loop?)");
                            return Ok(());
                        }
                        (Some(mut reply), Some(reply_url)) => {
                            // Parsed only when there is a reply to send.
                            let uri: Uri = match reply_url.as_str().parse() {
                                Ok(u) => u,
                                Err(e) => return Err(invalid(reply_url, e)),
                            };
                            reply.extensions.insert(
                                BROKER_TTL_EXTENSION.to_owned(),
                                ExtensionValue::Integer(ttl - 1),
                            );
                            // The reply continues the event's trace.
                            for name in ["traceparent", "tracestate"] {
                                if let (false, Some(v)) = (
                                    reply.extensions.contains_key(name),
                                    event.extensions.get(name),
                                ) {
                                    reply.extensions.insert(name.to_owned(), v.clone());
                                }
                            }
                            let (answer, _) = client
                                .send(
                                    &uri,
                                    &reply,
                                    policy.format,
                                    policy.timeout,
                                    super::target(sub, |a| a.reply.as_ref()),
                                )
                                .await;
                            match classify(answer.status()) {
                                Verdict::Success => {
                                    self.metrics.reply();
                                    return Ok(());
                                }
                                // Whatever the broker's reason, the exchange
                                // failed: the original is redelivered.
                                _ => {
                                    tracing::debug!(subscription = %sub.key(), event_id = %event.id, status = answer.status(), "the broker did not accept the reply");
                                    (
                                        Verdict::Retry,
                                        Failure {
                                            destination: (**reply_url).clone(),
                                            last: answer,
                                        },
                                    )
                                }
                            }
                        }
                    }
                }
                verdict => (
                    verdict,
                    Failure {
                        destination: subscriber.clone(),
                        last: attempt,
                    },
                ),
            };
            if verdict == Verdict::Fatal || n >= policy.retry {
                return Err(failure);
            }
            n += 1;
            let retry_after = match &failure.last {
                Attempt::Response { headers, .. } => parse_retry_after(headers, SystemTime::now()),
                Attempt::Failed { .. } => None,
            };
            let delay = retry_delay(policy, n, failure.last.status(), retry_after);
            self.metrics.retry();
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_defaults_and_parses() {
        let mut e = Event::new("1", "/s", "t");
        assert_eq!(broker_ttl(&e), DEFAULT_BROKER_TTL);
        default_broker_ttl(&mut e);
        assert_eq!(broker_ttl(&e), 255);
        e.extensions.insert(
            BROKER_TTL_EXTENSION.into(),
            ExtensionValue::String("3".into()),
        );
        default_broker_ttl(&mut e);
        assert_eq!(broker_ttl(&e), 3, "an existing TTL is kept");
    }
}

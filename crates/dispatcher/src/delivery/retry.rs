//! What is retried, and when: the Knative delivery rules as pure functions.
//!
//! *What* ([`classify`]) is kept apart from *when* ([`retry_delay`]) so each
//! is tested on its own, without a network or a clock.

use channel_core::DeliveryPolicy;
use http::header::{HeaderMap, RETRY_AFTER};
use std::time::{Duration, SystemTime};

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Success,
    /// Try again if attempts remain.
    Retry,
    /// Give up now: the event goes to the dead-letter sink.
    Fatal,
}

/// Classify an attempt by its HTTP status (`None`: no response at all —
/// connection failure or timeout).
///
/// Knative's data-plane rules: `2xx` succeeds; network errors, timeouts,
/// `404`, `408`, `409`, `429` and every `5xx` are retried; any other `4xx`,
/// and `1xx`/`3xx`, are not.
pub fn classify(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Success,
        Some(404 | 408 | 409 | 429) => Verdict::Retry,
        Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::Fatal,
    }
}

/// Parse a `Retry-After` header: delta-seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Delay before re-attempt `n` (1 for the first retry).
///
/// The policy's backoff (linear `backoffDelay × n`, exponential
/// `backoffDelay × 2ⁿ`), unless the response was `429` or `503` with a
/// `Retry-After` and `retryAfterMax` is set: then the larger of the backoff
/// and `min(Retry-After, retryAfterMax)`. Without `retryAfterMax`,
/// `Retry-After` is ignored, as Knative specifies.
pub fn retry_delay(
    policy: &DeliveryPolicy,
    n: u32,
    status: Option<u16>,
    retry_after: Option<Duration>,
) -> Duration {
    let backoff = policy.backoff(n);
    match (status, retry_after, policy.retry_after_max) {
        (Some(429 | 503), Some(after), Some(max)) => backoff.max(after.min(max)),
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::contract::BackoffPolicy;
    use http::HeaderValue;

    #[test]
    fn classification_follows_knative() {
        assert_eq!(classify(None), Verdict::Retry);
        for ok in [200, 201, 202, 204, 299] {
            assert_eq!(classify(Some(ok)), Verdict::Success, "{ok}");
        }
        for retry in [404, 408, 409, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(Some(retry)), Verdict::Retry, "{retry}");
        }
        for fatal in [100, 301, 302, 400, 401, 403, 405, 410, 413, 415, 422] {
            assert_eq!(classify(Some(fatal)), Verdict::Fatal, "{fatal}");
        }
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&past).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }

    #[test]
    fn delays_follow_the_policy_and_retry_after_cap() {
        let mut p = DeliveryPolicy {
            retry: 5,
            backoff_policy: BackoffPolicy::Linear,
            backoff_delay: Duration::from_millis(100),
            ..DeliveryPolicy::default()
        };
        assert_eq!(
            retry_delay(&p, 1, Some(500), None),
            Duration::from_millis(100)
        );
        assert_eq!(retry_delay(&p, 2, None, None), Duration::from_millis(200));
        // Retry-After ignored without retryAfterMax.
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            retry_delay(&p, 1, Some(429), after),
            Duration::from_millis(100)
        );
        p.retry_after_max = Some(Duration::from_secs(2));
        assert_eq!(retry_delay(&p, 1, Some(429), after), Duration::from_secs(2));
        assert_eq!(
            retry_delay(&p, 1, Some(503), Some(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
        // Only for 429 and 503.
        assert_eq!(
            retry_delay(&p, 1, Some(500), after),
            Duration::from_millis(100)
        );
        // Never shorter than the backoff.
        p.backoff_policy = BackoffPolicy::Exponential;
        assert_eq!(
            retry_delay(&p, 5, Some(429), Some(Duration::from_millis(1))),
            Duration::from_millis(3200)
        );
    }
}

//! Streams and consumers: names, desired configuration, idempotent
//! create-or-update and delete.
//!
//! * One stream per channel, named as Knative's NatsJetStreamChannel names it:
//!   `KN_<NAMESPACE>__<NAME>` (upper case, `-` → `_`), capturing the single
//!   subject `<namespace>.<name>._knative`.
//! * One durable pull consumer per subscription, `KN_SUB_<UID>` (upper case,
//!   characters NATS forbids → `_`), explicit ack, filtered on the channel's
//!   subject. A brand-new consumer starts at the end of the stream (deliver
//!   policy `new`): a subscription receives the events stored after it was
//!   created, like the in-memory backend. An existing consumer keeps its
//!   position, so a restarted dispatcher resumes where the last one left.

use crate::config::StreamSettings;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::stream;
use async_nats::jetstream::ErrorCode;
use channel_core::backend::{BackendError, BackendErrorKind};
use channel_core::contract::DeliveryOrder;
use channel_core::{ChannelContract, SubscriptionContract};
use std::time::Duration;

/// The Knative stream name of a channel: `KN_<NAMESPACE>__<NAME>`.
pub fn stream_name(namespace: &str, name: &str) -> String {
    format!("KN_{}__{}", knative_token(namespace), knative_token(name))
}

fn knative_token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '-' => '_',
            c if c.is_ascii_alphanumeric() || c == '_' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect()
}

/// The subject a channel's events are published on: `<namespace>.<name>._knative`.
pub fn subject(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}._knative")
}

/// The durable consumer name of a subscription: `KN_SUB_<UID>`.
pub fn consumer_name(subscription_uid: &str) -> String {
    format!("KN_SUB_{}", knative_token(subscription_uid))
}

/// How long JetStream waits for an ack before redelivering, chosen from the
/// delivery timeout. While the engine works on a delivery (retries and
/// backoff included) the acknowledgement keeps it alive with progress acks
/// every third of this, so it bounds only how soon a crashed dispatcher's
/// deliveries are handed out again, not how long a delivery may take.
pub fn ack_wait(subscription: &SubscriptionContract) -> Duration {
    subscription
        .delivery
        .timeout
        .clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Most deliveries of a subscription outstanding at once, over all replicas:
/// the in-flight window, or 1 for an ordered subscription (one at a time in
/// stream order, also across replicas).
pub fn max_ack_pending(subscription: &SubscriptionContract) -> i64 {
    match subscription.delivery.order {
        DeliveryOrder::Ordered => 1,
        DeliveryOrder::Unordered => i64::from(subscription.delivery.max_in_flight.max(1)),
    }
}

/// The desired stream configuration of a channel.
pub fn stream_config(name: &str, subject: &str, s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention: s.retention,
        storage: s.storage,
        num_replicas: s.replicas,
        max_age: s.max_age,
        max_bytes: s.max_bytes,
        max_messages: s.max_msgs,
        max_message_size: s.max_msg_size,
        max_messages_per_subject: -1,
        max_consumers: -1,
        discard: s.discard,
        duplicate_window: s.duplicate_window,
        description: Some("Knative channel (managed by nats-dispatcher)".into()),
        ..stream::Config::default()
    }
}

/// The fields of `current` we manage that differ from `desired`, by name.
pub fn stream_differences(current: &stream::Config, desired: &stream::Config) -> Vec<&'static str> {
    let mut diff = Vec::new();
    if current.subjects != desired.subjects {
        diff.push("subjects");
    }
    if current.retention != desired.retention {
        diff.push("retention");
    }
    if current.storage != desired.storage {
        diff.push("storage");
    }
    if current.num_replicas != desired.num_replicas {
        diff.push("replicas");
    }
    if current.max_age != desired.max_age {
        diff.push("maxAge");
    }
    if current.max_bytes != desired.max_bytes {
        diff.push("maxBytes");
    }
    if current.max_messages != desired.max_messages {
        diff.push("maxMsgs");
    }
    if current.max_message_size != desired.max_message_size {
        diff.push("maxMsgSize");
    }
    if current.discard != desired.discard {
        diff.push("discard");
    }
    if current.duplicate_window != desired.duplicate_window {
        diff.push("duplicateWindow");
    }
    diff
}

/// The server's JetStream error code behind an async-nats error, if any.
pub fn js_error_code(err: &(dyn std::error::Error + 'static)) -> Option<ErrorCode> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(js) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return Some(js.error_code());
        }
        current = e.source();
    }
    None
}

/// Map a JetStream API failure to a backend error: server-side refusals are
/// `Invalid`, the rest (timeouts, no JetStream) `Unavailable`.
pub fn api_error(
    what: String,
    err: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    let text = err.to_string();
    let kind = if js_error_code(&err).is_some() || text.contains("jetstream error") {
        BackendErrorKind::Invalid
    } else {
        BackendErrorKind::Unavailable
    };
    BackendError::new(kind, format!("{what}: {text}")).with_source(err)
}

/// Create the channel's stream, or update it when its configuration differs.
/// Returns what changed (empty when created or unchanged).
pub async fn ensure_stream(
    js: &Context,
    desired: stream::Config,
) -> Result<StreamChange, BackendError> {
    let name = desired.name.clone();
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| api_error(format!("reading stream {name}"), e))?;
            let current = info.config.clone();
            let diff = stream_differences(&current, &desired);
            if diff.is_empty() {
                return Ok(StreamChange::Unchanged);
            }
            // Keep what we do not manage (placement, sources, metadata set
            // by an operator) and overwrite what we do.
            let updated = stream::Config {
                subjects: desired.subjects,
                retention: desired.retention,
                storage: desired.storage,
                num_replicas: desired.num_replicas,
                max_age: desired.max_age,
                max_bytes: desired.max_bytes,
                max_messages: desired.max_messages,
                max_message_size: desired.max_message_size,
                discard: desired.discard,
                duplicate_window: desired.duplicate_window,
                ..current
            };
            js.update_stream(updated).await.map_err(|e| {
                api_error(
                    format!("updating stream {name} ({} changed)", diff.join(", ")),
                    e,
                )
            })?;
            Ok(StreamChange::Updated(diff))
        }
        Err(e) => {
            let not_found = matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND
            );
            if !not_found {
                return Err(api_error(format!("looking up stream {name}"), e));
            }
            match js.create_stream(desired.clone()).await {
                Ok(_) => Ok(StreamChange::Created),
                // Another replica created it meanwhile: check it matches.
                Err(e)
                    if matches!(e.kind(), async_nats::jetstream::context::CreateStreamErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
                {
                    Box::pin(ensure_stream(js, desired)).await
                }
                Err(e) => Err(api_error(format!("creating stream {name}"), e)),
            }
        }
    }
}

/// What [`ensure_stream`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    Created,
    Updated(Vec<&'static str>),
    Unchanged,
}

/// Delete a stream; a missing stream is not an error.
pub async fn delete_stream(js: &Context, name: &str) -> Result<bool, BackendError> {
    match js.delete_stream(name).await {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref js)
                if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            Ok(false)
        }
        Err(e) => Err(api_error(format!("deleting stream {name}"), e)),
    }
}

/// The desired consumer configuration of a subscription (for creation).
pub fn consumer_config(
    channel: &ChannelContract,
    subscription: &SubscriptionContract,
) -> pull::Config {
    pull::Config {
        durable_name: Some(consumer_name(&subscription.uid)),
        description: Some(format!(
            "Knative subscription {} of channel {}",
            subscription.key(),
            channel.key()
        )),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ack_wait(subscription),
        // Retries happen in the engine; JetStream redelivers only what a
        // dispatcher abandoned or lost, without limit.
        max_deliver: -1,
        filter_subject: subject(&channel.namespace, &channel.name),
        replay_policy: ReplayPolicy::Instant,
        max_ack_pending: max_ack_pending(subscription),
        ..pull::Config::default()
    }
}

/// Get the subscription's durable consumer, creating it (deliver policy
/// `new`) when missing, and updating its in-flight bound and ack wait when
/// they changed. The position of an existing consumer is never touched.
pub async fn ensure_consumer(
    js: &Context,
    stream_name: &str,
    channel: &ChannelContract,
    subscription: &SubscriptionContract,
) -> Result<async_nats::jetstream::consumer::PullConsumer, BackendError> {
    let desired = consumer_config(channel, subscription);
    let name = consumer_name(&subscription.uid);
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| api_error(format!("opening stream {stream_name}"), e))?;
    for _ in 0..3 {
        match stream.consumer_info(&name).await {
            Ok(info) => {
                let current = info.config;
                if current.max_ack_pending == desired.max_ack_pending
                    && current.ack_wait == desired.ack_wait
                    && current.filter_subject == desired.filter_subject
                {
                    return stream.get_consumer(&name).await.map_err(|e| {
                        BackendError::new(
                            BackendErrorKind::Unavailable,
                            format!("opening consumer {name}: {e}"),
                        )
                    });
                }
                let updated = pull::Config {
                    durable_name: Some(name.clone()),
                    description: current.description.clone(),
                    deliver_policy: current.deliver_policy,
                    ack_policy: current.ack_policy,
                    ack_wait: desired.ack_wait,
                    max_deliver: current.max_deliver,
                    filter_subject: desired.filter_subject.clone(),
                    replay_policy: current.replay_policy,
                    max_ack_pending: desired.max_ack_pending,
                    ..pull::Config::default()
                };
                return stream
                    .update_consumer(updated)
                    .await
                    .map_err(|e| api_error(format!("updating consumer {name}"), e));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound
                ) =>
            {
                match stream.create_consumer_strict(desired.clone()).await {
                    Ok(consumer) => return Ok(consumer),
                    // Another replica created it first: read it again.
                    Err(e)
                        if matches!(
                            e.kind(),
                            async_nats::jetstream::stream::ConsumerCreateStrictErrorKind::AlreadyExists
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(api_error(format!("creating consumer {name}"), e)),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                return Err(BackendError::new(
                    BackendErrorKind::NotFound,
                    format!(
                        "stream {stream_name} of channel {} does not exist",
                        channel.key()
                    ),
                ))
            }
            Err(e) => return Err(api_error(format!("reading consumer {name}"), e)),
        }
    }
    Err(BackendError::new(
        BackendErrorKind::Unavailable,
        format!("consumer {name} changed concurrently; retrying later"),
    ))
}

/// Delete a subscription's consumer; a missing one (or a missing stream) is
/// not an error.
pub async fn delete_consumer(
    js: &Context,
    stream_name: &str,
    subscription: &SubscriptionContract,
) -> Result<(), BackendError> {
    let name = consumer_name(&subscription.uid);
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| api_error(format!("opening stream {stream_name}"), e))?;
    match stream.delete_consumer(&name).await {
        Ok(_) => Ok(()),
        Err(e) => match js_error_code(&e) {
            Some(ErrorCode::CONSUMER_NOT_FOUND) | Some(ErrorCode::STREAM_NOT_FOUND) => Ok(()),
            _ => {
                if let async_nats::jetstream::stream::ConsumerErrorKind::JetStream(js) = e.kind() {
                    if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                        || js.error_code() == ErrorCode::STREAM_NOT_FOUND
                    {
                        return Ok(());
                    }
                }
                Err(api_error(format!("deleting consumer {name}"), e))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_names() {
        assert_eq!(stream_name("my-ns", "orders-v1"), "KN_MY_NS__ORDERS_V1");
        assert_eq!(subject("my-ns", "orders-v1"), "my-ns.orders-v1._knative");
        assert_eq!(
            consumer_name("6f9d1c2e-aa00-4b1b-9c1e-0f3c2a1b7d10"),
            "KN_SUB_6F9D1C2E_AA00_4B1B_9C1E_0F3C2A1B7D10"
        );
        assert_eq!(consumer_name("a.b*c>d e"), "KN_SUB_A_B_C_D_E");
    }

    #[test]
    fn ack_wait_follows_the_timeout_within_bounds() {
        let mut s = SubscriptionContract {
            trigger: None,
            auth: None,
            uid: "u".into(),
            namespace: "n".into(),
            name: "s".into(),
            generation: 1,
            subscriber: None,
            reply: None,
            dead_letter: None,
            delivery: Default::default(),
        };
        assert_eq!(ack_wait(&s), Duration::from_secs(30));
        s.delivery.timeout = Duration::from_millis(100);
        assert_eq!(ack_wait(&s), Duration::from_secs(5));
        s.delivery.timeout = Duration::from_secs(600);
        assert_eq!(ack_wait(&s), Duration::from_secs(60));
        assert_eq!(max_ack_pending(&s), 256);
        s.delivery.order = DeliveryOrder::Ordered;
        assert_eq!(max_ack_pending(&s), 1);
    }

    #[test]
    fn differences_are_named() {
        let s = StreamSettings::default();
        let a = stream_config("S", "a.b._knative", &s);
        assert!(stream_differences(&a, &a).is_empty());
        let b = stream_config(
            "S",
            "a.b._knative",
            &StreamSettings {
                max_msgs: 5,
                max_age: Duration::from_secs(60),
                ..s
            },
        );
        assert_eq!(stream_differences(&a, &b), vec!["maxAge", "maxMsgs"]);
    }
}

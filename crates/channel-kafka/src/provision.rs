//! Topics and consumer groups, named as Knative's KafkaChannel names them.
//!
//! One topic per channel, `knative-messaging-kafka.<namespace>.<name>`,
//! created idempotently with the partitions, replication factor and
//! retention of the channel's parameters (an existing topic with fewer
//! partitions is grown; partitions are never removed). Deleting the channel
//! deletes the topic. One consumer group per subscription,
//! `kafka.<namespace>.<channel>.<subscription-uid>`, deleted with the
//! subscription.

use crate::config::KafkaParams;
use crate::consumer::TracingContext;
use channel_core::backend::{BackendError, BackendErrorKind};
use channel_core::ChannelContract;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::Arc;
use std::time::Duration;

/// The admin client type.
pub type Admin = Arc<AdminClient<TracingContext>>;

/// How long an admin operation may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The topic of a channel.
pub fn topic_name(namespace: &str, name: &str) -> String {
    format!("knative-messaging-kafka.{namespace}.{name}")
}

/// The topic of a channel contract.
pub fn channel_topic(channel: &ChannelContract) -> String {
    topic_name(&channel.namespace, &channel.name)
}

/// The consumer group of a subscription.
pub fn group_id(namespace: &str, channel: &str, subscription_uid: &str) -> String {
    format!("kafka.{namespace}.{channel}.{subscription_uid}")
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Whether a broker error code is the configuration's fault (retrying
/// cannot help) or the broker's (it may pass).
fn code_kind(code: RDKafkaErrorCode) -> BackendErrorKind {
    match code {
        RDKafkaErrorCode::InvalidPartitions
        | RDKafkaErrorCode::InvalidReplicationFactor
        | RDKafkaErrorCode::InvalidConfig
        | RDKafkaErrorCode::InvalidTopic
        | RDKafkaErrorCode::PolicyViolation
        | RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::InvalidArgument => BackendErrorKind::Invalid,
        _ => BackendErrorKind::Unavailable,
    }
}

/// Map a client-level Kafka error to a backend error.
pub fn backend_error(what: &str, e: KafkaError) -> BackendError {
    let kind = match (e.rdkafka_error_code(), &e) {
        (Some(code), _) => code_kind(code),
        (None, KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..)) => {
            BackendErrorKind::Invalid
        }
        (None, _) => BackendErrorKind::Unavailable,
    };
    BackendError::new(kind, format!("{what}: {e}")).with_source(e)
}

/// Create the channel's topic, or grow its partitions; idempotent.
pub async fn ensure_topic(
    admin: &Admin,
    topic: &str,
    params: &KafkaParams,
) -> Result<(), BackendError> {
    let retention = u64::try_from(params.retention.as_millis())
        .unwrap_or(u64::MAX)
        .to_string();
    let new = NewTopic::new(
        topic,
        params.num_partitions,
        TopicReplication::Fixed(params.replication_factor),
    )
    .set("retention.ms", &retention);
    let results = admin
        .create_topics([&new], &options())
        .await
        .map_err(|e| backend_error(&format!("creating topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) => {
                tracing::info!(topic, partitions = params.num_partitions, replication = params.replication_factor, retention_ms = %retention, "topic created");
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                grow_partitions(admin, topic, params.num_partitions).await?;
                align_retention(admin, topic, &retention).await?;
            }
            Err((_, code)) => {
                return Err(BackendError::new(
                    code_kind(code),
                    format!("creating topic {topic}: {code}"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether the broker does not implement the admin request.
pub fn is_unsupported(e: &KafkaError) -> bool {
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        e => e.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
    )
}

/// Set an existing topic's `retention.ms` to `wanted` when it differs.
///
/// Kafka's AlterConfigs (the API rdkafka offers) replaces a topic's whole
/// set of dynamic configs, so every config set on the topic is read first
/// and written back with the new retention: settings an operator made by
/// hand survive. A broker that does not implement DescribeConfigs or
/// AlterConfigs leaves the retention as it is (logged): the topic itself is
/// usable, and refusing to serve the channel would help no one.
async fn align_retention(admin: &Admin, topic: &str, wanted: &str) -> Result<(), BackendError> {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options())
        .await;
    let resource = match described.map(|mut r| r.pop()) {
        Ok(Some(Ok(resource))) => resource,
        Ok(Some(Err(code))) => {
            tracing::warn!(topic, error = %code, "cannot read the topic's configs; retention left as it is");
            return Ok(());
        }
        Ok(None) => return Ok(()),
        Err(e) => return Err(backend_error(&format!("reading configs of {topic}"), e)),
    };
    let current = resource
        .get("retention.ms")
        .and_then(|e| e.value.as_deref());
    if current == Some(wanted) {
        return Ok(());
    }
    let kept: Vec<(String, String)> = resource
        .entries
        .iter()
        .filter(|e| matches!(e.source, ConfigSource::DynamicTopic) && e.name != "retention.ms")
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("retention.ms", wanted);
    for (name, value) in &kept {
        alter = alter.set(name, value);
    }
    let results = match admin.alter_configs([&alter], &options()).await {
        Ok(results) => results,
        Err(e) if is_unsupported(&e) => {
            tracing::warn!(
                topic,
                wanted_ms = wanted,
                "the broker does not implement AlterConfigs; retention left as it is"
            );
            return Ok(());
        }
        Err(e) => {
            return Err(backend_error(
                &format!("changing the retention of {topic}"),
                e,
            ))
        }
    };
    for result in results {
        if let Err((_, code)) = result {
            return Err(BackendError::new(
                code_kind(code),
                format!("changing the retention of {topic} to {wanted} ms: {code}"),
            ));
        }
    }
    tracing::info!(
        topic,
        from = current.unwrap_or("default"),
        to = wanted,
        "topic retention changed"
    );
    Ok(())
}

/// Grow an existing topic to `wanted` partitions (never shrinks).
async fn grow_partitions(admin: &Admin, topic: &str, wanted: i32) -> Result<(), BackendError> {
    let topic_owned = topic.to_owned();
    let metadata = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(Some(&topic_owned), ADMIN_TIMEOUT)
        })
    };
    let current = match metadata.await {
        Ok(Ok(m)) => m
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len()),
        Ok(Err(e)) => return Err(backend_error(&format!("reading topic {topic}"), e)),
        Err(e) => {
            return Err(BackendError::new(
                BackendErrorKind::Other,
                format!("reading topic {topic}: {e}"),
            ))
        }
    };
    let Some(current) = current else {
        return Ok(());
    };
    let wanted = usize::try_from(wanted).unwrap_or(1);
    if current >= wanted {
        return Ok(());
    }
    let results = match admin
        .create_partitions([&NewPartitions::new(topic, wanted)], &options())
        .await
    {
        Ok(results) => results,
        Err(e) if is_unsupported(&e) => {
            tracing::warn!(
                topic,
                current,
                wanted,
                "the broker does not implement CreatePartitions; the topic keeps its partitions"
            );
            return Ok(());
        }
        Err(e) => return Err(backend_error(&format!("adding partitions to {topic}"), e)),
    };
    for result in results {
        if let Err((_, code)) = result {
            return Err(BackendError::new(
                BackendErrorKind::Unavailable,
                format!("adding partitions to {topic} ({current} → {wanted}): {code}"),
            ));
        }
    }
    tracing::info!(topic, from = current, to = wanted, "topic partitions added");
    Ok(())
}

/// Delete the channel's topic; a topic that does not exist is not an error.
pub async fn delete_topic(admin: &Admin, topic: &str) -> Result<(), BackendError> {
    let results = admin
        .delete_topics(&[topic], &options())
        .await
        .map_err(|e| backend_error(&format!("deleting topic {topic}"), e))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, "topic deleted"),
            Err((
                _,
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            )) => {}
            Err((_, code)) => {
                return Err(BackendError::new(
                    BackendErrorKind::Unavailable,
                    format!("deleting topic {topic}: {code}"),
                ))
            }
        }
    }
    Ok(())
}

/// Delete a subscription's consumer group; best effort (a group that does
/// not exist, or a broker without the DeleteGroups API, is not an error).
pub async fn delete_group(admin: &Admin, group: &str) {
    match admin.delete_groups(&[group], &options()).await {
        Ok(results) => {
            for result in results {
                match result {
                    Ok(_) => tracing::info!(group, "consumer group deleted"),
                    Err((_, code)) => {
                        tracing::debug!(group, error = %code, "consumer group not deleted")
                    }
                }
            }
        }
        Err(e) => tracing::debug!(group, error = %e, "consumer group not deleted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_names() {
        assert_eq!(
            topic_name("default", "orders"),
            "knative-messaging-kafka.default.orders"
        );
        assert_eq!(
            group_id("default", "orders", "0b1c-uid"),
            "kafka.default.orders.0b1c-uid"
        );
    }
}

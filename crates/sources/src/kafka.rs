//! KafkaSource: the records of existing topics, consumed by the Kafka
//! backend's consumer ([`channel_kafka::source`]) and sent to the sink by
//! the delivery engine. The engine settles each record once its final
//! outcome is known, and only then can its offset be committed: an adapter
//! killed mid-stream leaves the unfinished records uncommitted, and the
//! group's next member sends them again (at least once).
//!
//! The secrets of `spec.net` are read when the source starts (a failure
//! marks it failed and is retried); a topic that does not exist yet, or a
//! broker that cannot be reached, is retried with backoff, the source's
//! status saying why.

use crate::runner::SourceState;
use crate::secrets::SecretStore;
use channel_core::backend::{BackendErrorKind, DeliveryStream};
use channel_core::sources::kafka::{InitialOffset, KafkaSourceSettings};
use channel_core::sources::SourceContract;
use channel_kafka::config::{Defaults, KafkaParams, Sasl, SaslMechanism, Secret, Security, Tls};
use channel_kafka::source::SourceConsumer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest wait between two attempts to join the group.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The librdkafka properties of a source: bootstrap servers and `net`,
/// its secrets read now. They hold secrets: never log them.
pub async fn client_properties(
    settings: &KafkaSourceSettings,
    secrets: &SecretStore,
) -> Result<BTreeMap<String, String>, String> {
    let mut security = Security::default();
    if let Some(sasl) = &settings.sasl {
        let mechanism = match &sasl.mechanism {
            None => SaslMechanism::Plain,
            Some(r) => {
                let m = secrets.read(r).await?;
                match m.expose().trim() {
                    "PLAIN" => SaslMechanism::Plain,
                    "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                    "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                    other => {
                        return Err(format!(
                            "{r}: SASL type {other:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                        ))
                    }
                }
            }
        };
        security.sasl = Some(Sasl {
            mechanism,
            user: Secret::Inline(secrets.read(&sasl.user).await?.expose().to_owned()),
            password: Secret::Inline(secrets.read(&sasl.password).await?.expose().to_owned()),
        });
    }
    if let Some(tls) = &settings.tls {
        let mut material = Tls::default();
        for (slot, reference) in [
            (&mut material.ca, &tls.ca_cert),
            (&mut material.cert, &tls.cert),
            (&mut material.key, &tls.key),
        ] {
            if let Some(r) = reference {
                *slot = Some(Secret::Inline(secrets.read(r).await?.expose().to_owned()));
            }
        }
        security.tls = Some(material);
    }
    let params = KafkaParams {
        bootstrap_servers: Some(settings.bootstrap_servers.clone()),
        security,
        ..KafkaParams::default()
    };
    params
        .client_properties(&Defaults::default())
        .map_err(|e| e.message)
}

/// Join the source's consumer group, retrying until it works or `stop`.
pub async fn subscribe(
    source: &SourceContract,
    settings: &KafkaSourceSettings,
    secrets: &SecretStore,
    group_instance_id: Option<&str>,
    state: &Arc<SourceState>,
    stop: &CancellationToken,
) -> Option<Box<dyn DeliveryStream>> {
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = async {
            let props = client_properties(settings, secrets).await?;
            channel_kafka::source::subscribe(SourceConsumer {
                props,
                topics: settings.topics.clone(),
                group: settings.consumer_group.clone(),
                earliest: settings.initial_offset == InitialOffset::Earliest,
                consumers: settings.consumers,
                group_instance_id: group_instance_id.map(|id| format!("{id}-{}", source.uid)),
                source_prefix: format!(
                    "/apis/v1/namespaces/{}/kafkasources/{}",
                    source.namespace, source.name
                ),
                capacity: 256,
            })
            .await
            .map_err(|e| match e.kind {
                BackendErrorKind::NotFound => format!("{} (waiting for it)", e.message),
                _ => e.message,
            })
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return None,
            r = attempt => r,
        };
        match result {
            Ok(stream) => {
                state.running();
                return Some(stream);
            }
            Err(e) => {
                tracing::warn!(source = %source.key(), error = %e, retry_in = ?backoff, "KafkaSource cannot consume yet");
                state.failed(e);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

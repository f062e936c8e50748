//! Knative's event sources: where events come from.
//!
//! Four kinds that need no outside service, as users write them:
//!
//! * [`ping`]: `sources.knative.dev/v1` **PingSource** (and the seeds'
//!   `sources.eventing.knative.dev/v1alpha1` **CronJobSource**, read as a
//!   PingSource of the same name): an event on a schedule.
//! * [`apiserver`]: **ApiServerSource** (`v1`, and the seeds' `v1alpha1`):
//!   changes of Kubernetes objects.
//! * [`container`]: **ContainerSource** and **SinkBinding**: a program of
//!   the user's that sends events itself to the `K_SINK` it is given.
//! * [`github`] and [`gitlab`]: **GitHubSource** and **GitLabSource**
//!   (`v1alpha1`): webhook deliveries of a repository or project, the
//!   webhook registered by the control plane.
//! * [`kafka`]: **KafkaSource** (`v1beta1`): the records of Kafka topics.
//!
//! Secrets (tokens, SASL credentials) are named, never copied: see
//! [`secret`].
//!
//! Every source names a `sink` (a Destination: a Broker, a channel, a
//! Sequence or Parallel, a Service or a URI), optional `ceOverrides`
//! (`extensions` set on every event it sends) and, beyond Knative, an
//! optional `delivery` (retry, backoff, timeout, dead-letter sink) for the
//! adapters that send events themselves; without it they retry five times,
//! exponentially from 50 ms, as Knative's adapters do.
//!
//! The compiler resolves the sinks into a [`SourcesContract`] — what the
//! source adapter follows, as a dispatcher follows its contract.

pub mod apiserver;
pub mod container;
pub mod github;
pub mod gitlab;
pub mod kafka;
pub mod ping;
pub mod secret;

use crate::contract::{BackoffPolicy, DeliveryPolicy};
use crate::event::{is_valid_attribute_name, CONTEXT_ATTRIBUTES};
use crate::resources::{FieldError, ObjectMeta};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The API versions of today's sources.
pub const SOURCES_VERSIONS: &[&str] = &[
    "sources.knative.dev/v1",
    "sources.knative.dev/v1beta2",
    "sources.knative.dev/v1beta1",
    "sources.knative.dev/v1alpha2",
];
/// The seeds' API version (CronJobSource, ApiServerSource).
pub const LEGACY_SOURCES_VERSION: &str = "sources.eventing.knative.dev/v1alpha1";

/// Knative's `ceOverrides`: extension attributes set on every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CloudEventOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

impl CloudEventOverrides {
    pub fn validate(&self, path: &str) -> Result<(), FieldError> {
        for name in self.extensions.keys() {
            if !is_valid_attribute_name(name) {
                return Err(FieldError::new(
                    format!("{path}.extensions"),
                    format!("{name:?} is not a CloudEvents attribute name (lower-case letters and digits)"),
                ));
            }
            if CONTEXT_ATTRIBUTES.contains(&name.as_str()) || name == "data" {
                return Err(FieldError::new(
                    format!("{path}.extensions"),
                    format!("{name:?} is a context attribute, not an extension"),
                ));
            }
        }
        Ok(())
    }
}

/// A source resource: metadata plus the kind's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Source<S> {
    pub metadata: ObjectMeta,
    pub spec: S,
}

/// What a source is, for the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum SourceSettings {
    PingSource(ping::PingSettings),
    ApiServerSource(apiserver::ApiServerSettings),
    /// A ContainerSource (or a SinkBinding's subject) run as a local
    /// program.
    ContainerSource(container::LocalProgram),
    GitHubSource(Box<github::GitHubSettings>),
    GitLabSource(Box<gitlab::GitLabSettings>),
    KafkaSource(Box<kafka::KafkaSourceSettings>),
}

impl SourceSettings {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSettings::PingSource(_) => "PingSource",
            SourceSettings::ApiServerSource(_) => "ApiServerSource",
            SourceSettings::ContainerSource(_) => "ContainerSource",
            SourceSettings::GitHubSource(_) => "GitHubSource",
            SourceSettings::GitLabSource(_) => "GitLabSource",
            SourceSettings::KafkaSource(_) => "KafkaSource",
        }
    }

    /// Whether the source receives webhooks (served on the adapter's
    /// webhook listener at `/<namespace>/<name>`).
    pub fn is_webhook(&self) -> bool {
        matches!(
            self,
            SourceSettings::GitHubSource(_) | SourceSettings::GitLabSource(_)
        )
    }
}

/// One source, fully resolved: what the adapter runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceContract {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the source this entry was computed from.
    #[serde(default)]
    pub generation: i64,
    /// The resolved sink.
    pub sink: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Url>,
    pub delivery: DeliveryPolicy,
    /// CA certificates and OIDC audience of the sink (`subscriber`) and
    /// dead-letter sink, and the source's identity when a token is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<crate::contract::DeliveryAuth>>,
    /// `ceOverrides.extensions`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
    pub settings: SourceSettings,
}

impl SourceContract {
    /// `namespace/name`, for logs.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn kind(&self) -> &'static str {
        self.settings.kind()
    }
}

/// What the source adapter follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcesContract {
    pub generation: u64,
    #[serde(default)]
    pub sources: Vec<SourceContract>,
}

impl SourcesContract {
    pub fn from_json(bytes: &[u8]) -> Result<SourcesContract, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Equal but for the generation.
    pub fn same_content(&self, other: &SourcesContract) -> bool {
        self.sources == other.sources
    }
}

/// Outside Kubernetes the channels' and brokers' cluster host names do not
/// resolve: point every sink (and dead-letter sink) that names one at the
/// URL of the dispatcher serving it (`urls`, by backend) with the ingress
/// path, keeping the rest of the sink's URL (its query). Sinks of backends
/// without a URL, and every other sink, stay as they are.
pub fn route_sinks(
    sources: &mut [SourceContract],
    contracts: &BTreeMap<crate::BackendKind, crate::Contract>,
    urls: &BTreeMap<crate::BackendKind, Url>,
) {
    let mut routes: BTreeMap<&str, (&Url, &str)> = BTreeMap::new();
    for (backend, contract) in contracts {
        let Some(base) = urls.get(backend) else {
            continue;
        };
        for c in &contract.channels {
            routes.insert(&c.ingress.host, (base, &c.ingress.path));
            if let Some(b) = &c.broker {
                routes.insert(&b.ingress.host, (base, &b.ingress.path));
            }
        }
    }
    // With transport-encryption on, addresses name the dispatcher's TLS
    // host and carry the ingress path.
    let tls_hosts: BTreeMap<String, &Url> = urls
        .iter()
        .map(|(backend, base)| (crate::contract::tls_host(*backend), base))
        .collect();
    let route = |url: &mut Url| {
        let found = url.host_str().and_then(|h| match tls_hosts.get(h) {
            Some(base) => Some((*base, url.path().to_owned())),
            None => routes
                .get(h)
                .map(|(base, path)| (*base, (*path).to_owned())),
        });
        let Some((base, path)) = found else {
            return;
        };
        let mut routed = (*base).clone();
        routed.set_path(&format!("{}{}", base.path().trim_end_matches('/'), path));
        routed.set_query(url.query());
        *url = routed;
    };
    for s in sources {
        route(&mut s.sink);
        if let Some(d) = &mut s.dead_letter {
            route(d);
        }
    }
}

/// The delivery of a source without `spec.delivery`: Knative's adapters
/// retry five times, exponentially from 50 ms.
pub fn default_source_delivery() -> DeliveryPolicy {
    DeliveryPolicy {
        retry: 5,
        backoff_policy: BackoffPolicy::Exponential,
        backoff_delay: Duration::from_millis(50),
        ..DeliveryPolicy::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_extensions_only() {
        let ok = CloudEventOverrides {
            extensions: BTreeMap::from([("team".into(), "shop".into())]),
        };
        ok.validate("spec.ceOverrides").expect("valid");
        for bad in ["Team", "team-a", "type", "id", ""] {
            let o = CloudEventOverrides {
                extensions: BTreeMap::from([(bad.to_owned(), "x".into())]),
            };
            assert_eq!(
                o.validate("spec.ceOverrides").unwrap_err().path,
                "spec.ceOverrides.extensions",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sinks_naming_a_channel_or_broker_go_to_its_dispatcher() {
        let manifests = crate::manifests::load_str(
            "m.yaml",
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: shop}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: orders, namespace: shop}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: a, namespace: shop}\nspec: {schedule: '@hourly', sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: b, namespace: shop}\nspec: {schedule: '@hourly', sink: {ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: c, namespace: shop}\nspec: {schedule: '@hourly', sink: {uri: 'http://elsewhere/x?y=1'}}\n",
        )
        .expect("manifests");
        let mut compiled = crate::compile::compile(&manifests);
        let urls = BTreeMap::from([(
            crate::BackendKind::InMemory,
            Url::parse("http://127.0.0.1:8080").expect("url"),
        )]);
        route_sinks(&mut compiled.sources, &compiled.contracts, &urls);
        let sinks: Vec<&str> = compiled.sources.iter().map(|s| s.sink.as_str()).collect();
        assert_eq!(
            sinks,
            [
                "http://127.0.0.1:8080/brokers/shop/default",
                "http://127.0.0.1:8080/shop/orders",
                "http://elsewhere/x?y=1"
            ]
        );
    }

    #[test]
    fn a_contract_round_trips() {
        let contract = SourcesContract {
            generation: 3,
            sources: vec![SourceContract {
                uid: "u".into(),
                namespace: "shop".into(),
                name: "tick".into(),
                generation: 1,
                sink: Url::parse("http://sink/").expect("url"),
                dead_letter: None,
                delivery: default_source_delivery(),
                auth: None,
                extensions: BTreeMap::from([("team".into(), "shop".into())]),
                settings: SourceSettings::PingSource(ping::PingSettings {
                    schedule: "@every 1s".into(),
                    timezone: None,
                    content_type: Some("application/json".into()),
                    data_base64: Some("e30=".into()),
                }),
            }],
        };
        let text = contract.to_json_pretty();
        assert!(text.contains("\"kind\": \"PingSource\""), "{text}");
        assert_eq!(
            SourcesContract::from_json(text.as_bytes()).expect("json"),
            contract
        );
    }
}

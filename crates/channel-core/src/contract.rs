//! The data-plane contract: what the control plane tells a dispatcher to do.
//!
//! One contract document per backend lists every channel that backend serves,
//! each with its subscriptions fully resolved (absolute URLs, delivery policy
//! with defaults applied). A dispatcher follows the document and nothing
//! else: it never reads Knative resources or talks to Kubernetes.
//!
//! The document is JSON (camelCase, like Knative's own contracts) and is
//! stamped with a `generation`; dispatchers apply a document only when its
//! generation or content changes, and report the generation they applied.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The backend drivers a class can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[serde(rename = "inmemory")]
    InMemory,
    Kafka,
    Nats,
}

impl BackendKind {
    /// The name used in `ClusterChannelProvisioner.spec.backend` and in contract file names.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::InMemory => "inmemory",
            BackendKind::Kafka => "kafka",
            BackendKind::Nats => "nats",
        }
    }

    /// All backends, in a stable order.
    pub const ALL: [BackendKind; 3] =
        [BackendKind::InMemory, BackendKind::Kafka, BackendKind::Nats];
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inmemory" => Ok(BackendKind::InMemory),
            "kafka" => Ok(BackendKind::Kafka),
            "nats" => Ok(BackendKind::Nats),
            other => Err(format!(
                "unknown backend {other:?}: expected one of inmemory, kafka, nats"
            )),
        }
    }
}

/// A complete data-plane contract for one backend.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Contract {
    /// Monotonic version of this document; dispatchers report the one applied.
    pub generation: u64,
    /// The backend every channel in this document belongs to, when the
    /// document was written for one backend (standalone and Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    #[serde(default)]
    pub channels: Vec<ChannelContract>,
    /// Knative feature flags the dispatcher follows (`config-features`).
    #[serde(default, skip_serializing_if = "crate::features::Features::is_default")]
    pub features: crate::features::Features,
}

impl Contract {
    /// Parse a contract document, with an error that says where it is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Contract, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Serialize for writing to a file or ConfigMap.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Whether two documents describe the same data plane (ignoring generation).
    pub fn same_content(&self, other: &Contract) -> bool {
        self.backend == other.backend
            && self.channels == other.channels
            && self.features == other.features
    }

    /// SHA-256 of what [`Contract::same_content`] compares (backend,
    /// channels, features; not the generation): equal digests mean the same
    /// data plane. Keeping the digest instead of the document saves a copy of
    /// a ten-thousand-channel contract.
    pub fn content_digest(&self) -> ContentDigest {
        use sha2::Digest as _;
        #[derive(Serialize)]
        struct Content<'a> {
            backend: &'a Option<BackendKind>,
            channels: &'a [ChannelContract],
            features: &'a crate::features::Features,
        }
        struct Hashing<'a>(&'a mut sha2::Sha256);
        impl std::io::Write for Hashing<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                sha2::Digest::update(self.0, buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut hasher = sha2::Sha256::new();
        // Serialising plain data into a hasher cannot fail.
        let _ = serde_json::to_writer(
            Hashing(&mut hasher),
            &Content {
                backend: &self.backend,
                channels: &self.channels,
                features: &self.features,
            },
        );
        hasher.finalize().into()
    }
}

/// See [`Contract::content_digest`].
pub type ContentDigest = [u8; 32];

/// How a channel is reached at ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ingress {
    /// `/<namespace>/<name>`
    pub path: String,
    /// `<name>-kn-channel.<namespace>.svc.cluster.local`
    pub host: String,
}

impl Ingress {
    /// The Knative ingress names for a channel.
    pub fn for_channel(namespace: &str, name: &str) -> Ingress {
        Ingress {
            path: format!("/{namespace}/{name}"),
            host: channel_host(namespace, name),
        }
    }
}

/// A `BACKEND=URL` flag value (a dispatcher's ingress or admin URL), e.g.
/// `kafka=http://127.0.0.1:9091`.
pub fn parse_backend_url(s: &str) -> Result<(BackendKind, Url), String> {
    let (backend, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not BACKEND=URL (e.g. kafka=http://127.0.0.1:9091)"))?;
    let backend: BackendKind = backend.trim().parse()?;
    let url = Url::parse(url.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{url} is not an http(s) URL"));
    }
    Ok((backend, url))
}

/// The in-cluster host of a channel, as Knative names it.
pub fn channel_host(namespace: &str, name: &str) -> String {
    format!("{name}-kn-channel.{namespace}.svc.cluster.local")
}

/// The host of a backend's dispatcher over HTTPS (its Service in
/// Kubernetes): with `transport-encryption` on, channels and brokers are
/// addressed by path on this one host, as Knative's own dispatchers are
/// (`https://inmemory-dispatcher.knative-channels.svc.cluster.local/<ns>/<name>`),
/// so a dispatcher's certificate names one host, not one per channel.
pub fn tls_host(backend: BackendKind) -> String {
    format!(
        "{}-dispatcher.knative-channels.svc.cluster.local",
        backend.as_str()
    )
}

/// The host Knative's multi-tenant broker ingress is reached by; a request
/// carrying it is routed by path `/<namespace>/<broker>` to a broker.
pub const KNATIVE_BROKER_INGRESS_HOST: &str = "broker-ingress.knative-eventing.svc.cluster.local";

/// The ingress names of a broker. A broker never shares a name space with
/// channels: its path has three segments (`/brokers/<namespace>/<name>`,
/// a channel's has two) and its host ends in `-kn-broker` (a channel's in
/// `-kn-channel`), so a broker and a channel of the same name in one
/// namespace are always told apart.
pub fn broker_ingress(namespace: &str, name: &str) -> Ingress {
    Ingress {
        path: format!("/brokers/{namespace}/{name}"),
        host: format!("{name}-kn-broker.{namespace}.svc.cluster.local"),
    }
}

/// A broker served through the channel that backs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerContract {
    /// `metadata.uid` of the Broker.
    pub uid: String,
    /// The broker's name (its namespace is the channel's).
    pub name: String,
    /// The broker's own ingress ([`broker_ingress`]); events accepted there
    /// are stored in the backing channel. Knative's form
    /// `http://broker-ingress.knative-eventing.svc.cluster.local/<ns>/<name>`
    /// routes here too.
    pub ingress: Ingress,
}

impl BrokerContract {
    /// The broker's address URL.
    pub fn address(&self) -> String {
        format!("http://{}", self.ingress.host)
    }

    /// The broker's HTTPS address, served by the dispatcher of `backend`.
    pub fn https_address(&self, backend: BackendKind) -> String {
        format!("https://{}{}", tls_host(backend), self.ingress.path)
    }
}

/// What makes a subscription a Trigger's: the broker it belongs to and its
/// filter, evaluated in the dispatcher before delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerContract {
    /// The broker's name.
    pub broker: String,
    /// `spec.filter.attributes`: exact match, an empty value matching any
    /// value of an attribute the event has.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// `spec.filters` (Knative's new filters); when non-empty `attributes`
    /// is ignored, as Knative does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<event_filter::spec::SubscriptionsApiFilter>,
}

/// One channel as a dispatcher serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelContract {
    /// `metadata.uid` of the channel (generated from namespace/name when the
    /// manifests carry none).
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The Kubernetes kind the user created (`Channel`, `InMemoryChannel`, ...).
    #[serde(default = "default_kind")]
    pub kind: String,
    pub backend: BackendKind,
    /// Name of the `ClusterChannelProvisioner` class that selected the backend.
    pub class: String,
    pub ingress: Ingress,
    /// Backend settings: class parameters overlaid with the channel template's
    /// spec fields. Their schema belongs to the backend crate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Shared (`Arc`): a dispatcher's worker for a subscription holds the
    /// same entry as the channel, not a copy of it.
    #[serde(default)]
    pub subscriptions: Vec<std::sync::Arc<SubscriptionContract>>,
    /// Set when the channel backs a Broker (boxed: most channels do not,
    /// and a dispatcher keeps every entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<Box<BrokerContract>>,
}

fn default_kind() -> String {
    "Channel".to_owned()
}

impl ChannelContract {
    /// `namespace/name`, for logs and metrics.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The channel's address URL.
    pub fn address(&self) -> String {
        format!("http://{}", self.ingress.host)
    }

    /// The channel's HTTPS address (through its dispatcher's TLS host).
    pub fn https_address(&self) -> String {
        format!("https://{}{}", tls_host(self.backend), self.ingress.path)
    }
}

/// One subscription, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionContract {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.generation` of the Subscription this entry was computed from.
    #[serde(default)]
    pub generation: i64,
    /// Where events are delivered. `None` for a subscription with only a reply
    /// (Knative allows it: the event is forwarded to the reply as if the
    /// subscriber had answered with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Url>,
    /// Boxed, like `dead_letter`, `trigger` and `auth`: most subscriptions
    /// have none, a URL is 88 bytes inline, and a dispatcher serving ten
    /// thousand subscriptions holds every entry (the struct is ~280 bytes
    /// rather than ~490).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Box<Url>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<Box<Url>>,
    #[serde(default)]
    pub delivery: DeliveryPolicy,
    /// Set when the subscription is a Trigger's: broker semantics apply
    /// (filter before delivery, the broker's TTL on replies, a reply the
    /// broker refuses fails the delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Box<TriggerContract>>,
    /// Trust and identity for the destinations, when any has some (boxed:
    /// most subscriptions have none, and a contract holds thousands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<DeliveryAuth>>,
}

/// How a destination is reached beyond its URL: Knative's
/// `Destination.CACerts` and `Destination.audience`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetAuth {
    /// PEM CA certificates an `https://` destination is verified against,
    /// beside the system roots and the sender's own extra roots.
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// The OIDC audience the destination expects: the sender presents a
    /// token for it, issued to [`DeliveryAuth::identity`]. Set only when
    /// `authentication-oidc` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl TargetAuth {
    /// `None` when neither is set.
    pub fn non_empty(self) -> Option<TargetAuth> {
        (self.ca_certs.is_some() || self.audience.is_some()).then_some(self)
    }
}

/// Trust and identity of one sender (a subscription, a trigger, a source)
/// for each of its destinations. For a source, `subscriber` is its sink.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryAuth {
    /// The OIDC subject the sender presents
    /// (`system:serviceaccount:<namespace>:<name>-oidc-<group>-<kind>`),
    /// set when a destination has an audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<TargetAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<TargetAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<TargetAuth>,
}

impl DeliveryAuth {
    /// The sender's settings for `subscriber`, `reply` and `dead_letter`
    /// (each `None` when it has neither CA certificates nor an audience),
    /// with `identity` when any destination expects a token; `None` when
    /// there is nothing to say.
    pub fn of(
        identity: impl FnOnce() -> String,
        subscriber: Option<TargetAuth>,
        reply: Option<TargetAuth>,
        dead_letter: Option<TargetAuth>,
    ) -> Option<Box<DeliveryAuth>> {
        let (subscriber, reply, dead_letter) = (
            subscriber.and_then(TargetAuth::non_empty),
            reply.and_then(TargetAuth::non_empty),
            dead_letter.and_then(TargetAuth::non_empty),
        );
        let wants_token = [&subscriber, &reply, &dead_letter]
            .iter()
            .any(|t| t.as_ref().is_some_and(|t| t.audience.is_some()));
        if subscriber.is_none() && reply.is_none() && dead_letter.is_none() {
            return None;
        }
        Some(Box::new(DeliveryAuth {
            identity: wants_token.then(identity),
            subscriber,
            reply,
            dead_letter,
        }))
    }
}

impl SubscriptionContract {
    /// `namespace/name`, for logs and metrics.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Knative backoff policies (`spec.delivery.backoffPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    Linear,
    #[default]
    Exponential,
}

/// Wire format of deliveries (`spec.delivery.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    /// HTTP binary content mode (the default).
    #[default]
    Binary,
    /// HTTP structured content mode (`delivery.format: json`).
    Json,
}

/// Delivery ordering for a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOrder {
    /// Many events in flight at once, bounded by `maxInFlight`.
    #[default]
    Unordered,
    /// One event at a time per ordering key (per partition where the backend
    /// has partitions), in stored order, retries included.
    Ordered,
}

/// Default number of deliveries in flight per unordered subscription.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// Default per-attempt timeout when the DeliverySpec sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The resolved delivery policy of a subscription (Knative `DeliverySpec`
/// with defaults applied). Durations are milliseconds in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Re-attempts after the first failed attempt (`delivery.retry`).
    #[serde(default)]
    pub retry: u32,
    #[serde(default)]
    pub backoff_policy: BackoffPolicy,
    /// Base delay between attempts (`delivery.backoffDelay`).
    #[serde(default, with = "millis")]
    pub backoff_delay: Duration,
    /// Per-attempt timeout (`delivery.timeout`).
    #[serde(default = "default_timeout", with = "millis")]
    pub timeout: Duration,
    /// Cap on honoured `Retry-After` (`delivery.retryAfterMax`); `None` means
    /// `Retry-After` is not honoured at all, as Knative specifies.
    #[serde(default, with = "opt_millis", skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<Duration>,
    #[serde(default)]
    pub format: DeliveryFormat,
    #[serde(default)]
    pub order: DeliveryOrder,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_max_in_flight() -> u32 {
    DEFAULT_MAX_IN_FLIGHT
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            retry: 0,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            retry_after_max: None,
            format: DeliveryFormat::Binary,
            order: DeliveryOrder::Unordered,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl DeliveryPolicy {
    /// Delay before re-attempt `n` (1 for the first retry), as Knative
    /// defines it: linear `backoffDelay × n`, exponential `backoffDelay × 2^n`.
    pub fn backoff(&self, n: u32) -> Duration {
        match self.backoff_policy {
            BackoffPolicy::Linear => self.backoff_delay.saturating_mul(n),
            BackoffPolicy::Exponential => {
                let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
                self.backoff_delay.saturating_mul(factor)
            }
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knative_backoff_formulas() {
        let mut p = DeliveryPolicy {
            backoff_delay: Duration::from_millis(100),
            backoff_policy: BackoffPolicy::Linear,
            ..DeliveryPolicy::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(3), Duration::from_millis(300));
        p.backoff_policy = BackoffPolicy::Exponential;
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(800));
        // Never overflows.
        assert!(p.backoff(200) >= Duration::from_secs(1000));
    }

    #[test]
    fn contract_round_trips_and_rejects_unknown_fields() {
        let c = Contract {
            generation: 3,
            backend: Some(BackendKind::InMemory),
            channels: vec![ChannelContract {
                broker: None,
                uid: "u1".into(),
                namespace: "default".into(),
                name: "orders".into(),
                kind: "Channel".into(),
                backend: BackendKind::InMemory,
                class: "in-memory-channel".into(),
                ingress: Ingress::for_channel("default", "orders"),
                parameters: BTreeMap::new(),
                subscriptions: vec![std::sync::Arc::new(SubscriptionContract {
                    trigger: None,
                    uid: "s1".into(),
                    namespace: "default".into(),
                    name: "sub".into(),
                    generation: 1,
                    subscriber: Some(Url::parse("http://127.0.0.1:8081/").unwrap()),
                    reply: None,
                    dead_letter: None,
                    delivery: DeliveryPolicy {
                        retry_after_max: Some(Duration::from_secs(5)),
                        ..DeliveryPolicy::default()
                    },
                    auth: DeliveryAuth::of(
                        || {
                            "system:serviceaccount:default:sub-oidc-messaging.knative.dev-subscription".into()
                        },
                        Some(TargetAuth {
                            ca_certs: Some("-----BEGIN CERTIFICATE-----\n...".into()),
                            audience: Some("sink".into()),
                        }),
                        None,
                        Some(TargetAuth::default()),
                    ),
                })],
            }],
            ..Default::default()
        };
        let json = c.to_json_pretty();
        assert_eq!(Contract::from_json(json.as_bytes()).unwrap(), c);
        assert!(Contract::from_json(br#"{"generation":1,"bogus":true}"#).is_err());
        assert_eq!(
            c.channels[0].ingress.host,
            "orders-kn-channel.default.svc.cluster.local"
        );

        // The digest follows same_content: the generation does not count,
        // a subscription's settings do.
        let renumbered = Contract {
            generation: 4,
            ..c.clone()
        };
        assert_eq!(renumbered.content_digest(), c.content_digest());
        let mut changed = c.clone();
        std::sync::Arc::make_mut(&mut changed.channels[0].subscriptions[0])
            .delivery
            .retry = 7;
        assert!(!changed.same_content(&c));
        assert_ne!(changed.content_digest(), c.content_digest());
    }
}

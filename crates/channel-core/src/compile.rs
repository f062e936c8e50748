//! Compiling manifests into data-plane contracts, one per backend.
//!
//! The same code serves the embedded mode (a dispatcher reading YAML) and
//! the provisioner. Rules:
//!
//! * **Class selection**, like a StorageClass: `spec.provisioner` names the
//!   class; else the kind (`spec.channelTemplate.kind`, or a concrete
//!   `InMemoryChannel`/`KafkaChannel`/`NatsJetStreamChannel`) picks the
//!   backend, and the class for it is the default class if it has that
//!   backend, else the only class with it (the built-in `in-memory-channel`
//!   for `inmemory`); else the class annotated
//!   `eventing.knative.dev/is-default-provisioner: "true"`. With no class in
//!   the manifests, the built-in `in-memory-channel` is the default. Two
//!   defaults are an error on every channel that needs one.
//! * **Parameters**: the class's `spec.parameters`, overlaid by the
//!   template's (or concrete kind's) spec fields.
//! * **Subscriptions** attach to the channel named by `spec.channel` in their
//!   namespace; a concrete kind also matches a `Channel` of that backend with
//!   the same name (Knative creates the concrete channel behind a Channel).
//! * **Destinations**: an absolute `uri`; a `ref` to a channel in the
//!   manifests (its address), to a core or Knative `Service`
//!   (`http://<name>.<namespace>.svc.cluster.local`); a `ref` plus a relative
//!   `uri` joined to the ref's address. Anything else is a problem, and the
//!   subscription is not served.
//! * **Delivery**: the subscription's `spec.delivery`, or — when it sets
//!   none — the channel's, as a whole (as Knative's channel controllers do).
//!   Annotations choose ordering (`kafka.eventing.knative.dev/delivery.order`)
//!   and the in-flight window (`dispatcher.knative.dev/max-in-flight`).
//!
//! * **Flows**: Sequences and Parallels expand into channels and
//!   subscriptions with Knative's generated names (see [`flows`]); a `ref`
//!   to a flow resolves to the address of its first (ingress) channel, and
//!   the problems of what a flow generated are the flow's.
//!
//! Output is deterministic: channels and subscriptions sorted by namespace
//! and name, uids derived from kind/namespace/name when the manifests carry
//! none, so an unchanged input compiles to an unchanged contract.

mod broker;
pub mod flows;
mod sources;

pub use flows::{BranchPlan, FlowKind, FlowPlan};
pub use sources::{SourceSinks, LOCAL_RUN_UNAVAILABLE};

use crate::contract::{
    BackendKind, BackoffPolicy, ChannelContract, Contract, DeliveryAuth, DeliveryFormat,
    DeliveryOrder, DeliveryPolicy, Ingress, SubscriptionContract, TargetAuth, TriggerContract,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_TIMEOUT,
};
use crate::duration::parse_iso8601;
use crate::manifests::Manifests;
use crate::resources::{
    ChannelKind, ChannelResource, ClusterChannelProvisioner, DeliverySpec, Destination, KReference,
    Subscription, BUILTIN_CLASS, DELIVERY_ORDER_ANNOTATION, MAX_IN_FLIGHT_ANNOTATION,
};
use std::collections::BTreeMap;
use url::Url;

/// A resource that could not be served, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// A CamelCase reason, as in Kubernetes conditions.
    pub reason: String,
    pub message: String,
}

/// The result of compiling manifests: one contract per backend (generation 0)
/// and the problems found.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub contracts: BTreeMap<BackendKind, Contract>,
    pub problems: Vec<Problem>,
    /// The resolved `spec.delivery.deadLetterSink` of each channel that sets
    /// one, by channel uid (Knative reports it as `status.deadLetterSinkUri`).
    pub channel_dead_letters: BTreeMap<String, Url>,
    /// What each Sequence and Parallel became, for their status.
    pub flows: Vec<FlowPlan>,
    /// The feature flags the manifests set (also in every contract).
    pub features: crate::features::Features,
    /// What the source adapter runs (its contract's entries).
    pub sources: Vec<crate::sources::SourceContract>,
    /// Every source's resolved sink, for its status.
    pub source_sinks: SourceSinks,
}

/// A stable uid for a resource without `metadata.uid`.
pub fn stable_uid(kind: &str, namespace: &str, name: &str) -> String {
    // FNV-1a, twice with different offsets: stable across Rust versions.
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in kind
            .bytes()
            .chain([0])
            .chain(namespace.bytes())
            .chain([0])
            .chain(name.bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

struct Classes {
    all: Vec<ClusterChannelProvisioner>,
    builtin: ClusterChannelProvisioner,
}

impl Classes {
    fn new(m: &Manifests) -> Classes {
        let all = if m.classes.is_empty() {
            vec![ClusterChannelProvisioner::builtin()]
        } else {
            m.classes.clone()
        };
        Classes {
            all,
            builtin: ClusterChannelProvisioner::builtin(),
        }
    }

    fn by_name(&self, name: &str) -> Option<&ClusterChannelProvisioner> {
        self.all.iter().find(|c| c.metadata.name == name)
    }

    /// The class annotated default; with none annotated, the class named
    /// `in-memory-channel` (the built-in one unless the manifests define
    /// their own), as Knative defaults to the in-memory channel.
    fn default_class(&self) -> Result<&ClusterChannelProvisioner, (String, String)> {
        let defaults: Vec<_> = self.all.iter().filter(|c| c.is_default()).collect();
        match defaults.as_slice() {
            [one] => Ok(one),
            [] => Ok(self.by_name(BUILTIN_CLASS).unwrap_or(&self.builtin)),
            many => Err((
                "AmbiguousDefaultClass".into(),
                format!(
                    "more than one default ClusterChannelProvisioner: {}",
                    many.iter()
                        .map(|c| c.metadata.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    fn for_backend(
        &self,
        backend: BackendKind,
    ) -> Result<&ClusterChannelProvisioner, (String, String)> {
        if let Ok(default) = self.default_class() {
            if default.spec.backend == backend {
                return Ok(default);
            }
        }
        let matching: Vec<_> = self
            .all
            .iter()
            .filter(|c| c.spec.backend == backend)
            .collect();
        match matching.as_slice() {
            [one] => Ok(one),
            [] if backend == BackendKind::InMemory => {
                // The built-in class always exists for the in-memory backend.
                Err(("UseBuiltin".into(), String::new()))
            }
            [] => Err((
                "NoClassForBackend".into(),
                format!("no ClusterChannelProvisioner has backend {backend}"),
            )),
            many => Err((
                "AmbiguousClass".into(),
                format!(
                    "several ClusterChannelProvisioners have backend {backend} ({}) and none of them is the default: set spec.provisioner",
                    many.iter().map(|c| c.metadata.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}

fn select_class(
    ch: &ChannelResource,
    classes: &Classes,
    builtin: &ClusterChannelProvisioner,
) -> Result<ClusterChannelProvisioner, (String, String)> {
    let implied = match ch.kind {
        ChannelKind::Channel => ch
            .template
            .as_ref()
            .and_then(|t| ChannelKind::from_kind(&t.kind))
            .and_then(ChannelKind::backend),
        concrete => concrete.backend(),
    };
    if let Some(reference) = &ch.provisioner {
        let class = classes.by_name(&reference.name).ok_or_else(|| {
            (
                "ClassNotFound".to_owned(),
                format!(
                    "ClusterChannelProvisioner {:?} does not exist",
                    reference.name
                ),
            )
        })?;
        if let Some(backend) = implied {
            if backend != class.spec.backend {
                return Err((
                    "BackendMismatch".into(),
                    format!(
                        "spec.provisioner {:?} has backend {} but the channel template asks for {backend}",
                        reference.name, class.spec.backend
                    ),
                ));
            }
        }
        return Ok(class.clone());
    }
    match implied {
        Some(backend) => match classes.for_backend(backend) {
            Ok(class) => Ok(class.clone()),
            Err((reason, _)) if reason == "UseBuiltin" => Ok(builtin.clone()),
            Err(e) => Err(e),
        },
        None => classes.default_class().cloned(),
    }
}

fn resolve_policy(spec: Option<&DeliverySpec>) -> Result<DeliveryPolicy, String> {
    let mut p = DeliveryPolicy::default();
    let Some(spec) = spec else { return Ok(p) };
    if let Some(retry) = spec.retry {
        p.retry =
            u32::try_from(retry).map_err(|_| format!("retry must be 0 or more, got {retry}"))?;
    }
    if let Some(policy) = &spec.backoff_policy {
        p.backoff_policy = match policy.as_str() {
            "linear" => BackoffPolicy::Linear,
            "exponential" => BackoffPolicy::Exponential,
            other => {
                return Err(format!(
                    "backoffPolicy {other:?} is not linear or exponential"
                ))
            }
        };
    }
    let dur = |field: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, String> {
        v.as_deref()
            .map(|s| parse_iso8601(s).map_err(|e| format!("{field} {e}")))
            .transpose()
    };
    if let Some(d) = dur("backoffDelay", &spec.backoff_delay)? {
        p.backoff_delay = d;
    }
    p.timeout = dur("timeout", &spec.timeout)?.unwrap_or(DEFAULT_TIMEOUT);
    p.retry_after_max = dur("retryAfterMax", &spec.retry_after_max)?;
    p.format = match spec.format.as_deref() {
        None | Some("binary") => DeliveryFormat::Binary,
        Some("json") => DeliveryFormat::Json,
        Some(other) => return Err(format!("format {other:?} is not json or binary")),
    };
    Ok(p)
}

struct Index<'a> {
    /// (namespace, name) → channels with that name (any kind).
    channels: BTreeMap<(String, String), Vec<(&'a ChannelResource, BackendKind)>>,
    /// Brokers: (namespace, name) → the backend serving them (`None`: not
    /// served).
    brokers: BTreeMap<(String, String), Option<BackendKind>>,
    /// Flows: (kind, namespace, name) → the channel holding their address.
    flows: &'a BTreeMap<(FlowKind, String, String), Option<String>>,
    /// The feature flags: with `authentication-oidc` on destinations carry
    /// the audience their senders present a token for; with
    /// `transport-encryption` on channels and brokers are reached over HTTPS.
    features: &'a crate::features::Features,
}

impl Index<'_> {
    /// The base URL a sender reaches `ingress` by: its host over HTTP, or
    /// with `transport-encryption` on the TLS host of the dispatcher of
    /// `backend` and the ingress path.
    fn address(&self, ingress: &Ingress, backend: BackendKind) -> String {
        if self.features.transport_encryption.is_on() {
            format!(
                "https://{}{}",
                crate::contract::tls_host(backend),
                ingress.path
            )
        } else {
            format!("http://{}/", ingress.host)
        }
    }

    /// The channel a reference points to, honouring the kind rules.
    fn find(
        &self,
        namespace: &str,
        reference: &KReference,
    ) -> Option<(&ChannelResource, BackendKind)> {
        let wanted = ChannelKind::from_kind(&reference.kind)?;
        let candidates = self
            .channels
            .get(&(namespace.to_owned(), reference.name.clone()))?;
        candidates
            .iter()
            .find(|(c, _)| c.kind == wanted)
            .or_else(|| match wanted.backend() {
                // A concrete kind also names the implementation behind a Channel.
                Some(backend) => candidates
                    .iter()
                    .find(|(c, b)| c.kind == ChannelKind::Channel && *b == backend),
                None => None,
            })
            .map(|(c, b)| (*c, *b))
    }
}

fn resolve_destination(
    dest: &Destination,
    namespace: &str,
    index: &Index<'_>,
) -> Result<Url, (String, String)> {
    resolve_target(dest, namespace, index).map(|(url, _)| url)
}

/// A destination's URL and how it is reached: its `CACerts`, and with OIDC
/// on the audience a sender presents a token for — the destination's own
/// `audience`, or the audience of the broker, channel or flow it references.
fn resolve_target(
    dest: &Destination,
    namespace: &str,
    index: &Index<'_>,
) -> Result<(Url, Option<TargetAuth>), (String, String)> {
    let mut audience = None;
    let base = match &dest.reference {
        None => None,
        Some(r) => {
            let ns = r.namespace.as_deref().unwrap_or(namespace);
            let api = r.api_version.as_deref().unwrap_or("");
            if ChannelKind::from_kind(&r.kind).is_some() {
                let (channel, backend) = &index.find(ns, r).ok_or_else(|| {
                    (
                        "DestinationNotFound".to_owned(),
                        format!("{} {ns}/{} does not exist", r.kind, r.name),
                    )
                })?;
                let ingress =
                    Ingress::for_channel(channel.metadata.namespace(), &channel.metadata.name);
                audience = Some(crate::features::audience(
                    channel.kind.as_str(),
                    channel.metadata.namespace(),
                    &channel.metadata.name,
                ));
                Some(index.address(&ingress, *backend))
            } else if r.kind == "Service"
                // Knative Services of every version (the seeds' v1alpha1 too).
                && (api.is_empty() || api == "v1" || api.starts_with("serving.knative.dev/"))
            {
                Some(format!("http://{}.{ns}.svc.cluster.local/", r.name))
            } else if r.kind == "Broker"
                && (api.is_empty() || api.starts_with(broker::EVENTING_GROUP))
            {
                match index.brokers.get(&(ns.to_owned(), r.name.clone())) {
                    Some(Some(backend)) => Some({
                        audience = Some(crate::features::audience("Broker", ns, &r.name));
                        index.address(&crate::contract::broker_ingress(ns, &r.name), *backend)
                    }),
                    Some(None) => {
                        return Err((
                            "DestinationNotReady".to_owned(),
                            format!("Broker {ns}/{} is not served (see its own status)", r.name),
                        ))
                    }
                    None => {
                        return Err((
                            "DestinationNotFound".to_owned(),
                            format!("Broker {ns}/{} does not exist", r.name),
                        ))
                    }
                }
            } else if let Some(flow) = FlowKind::of_reference(&r.kind, api) {
                let (address, channel_audience) = flow_address(flow, ns, &r.name, index)?;
                audience = Some(channel_audience);
                Some(address)
            } else {
                return Err((
                    "DestinationNotResolvable".to_owned(),
                    format!(
                        "cannot resolve a reference to {} {ns}/{} ({}) without a cluster: use a uri, a channel in the same manifests, or a Service",
                        r.kind,
                        r.name,
                        if api.is_empty() { "no apiVersion" } else { api }
                    ),
                ));
            }
        }
    };
    let invalid =
        |e: url::ParseError, what: &str| ("InvalidDestination".to_owned(), format!("{what}: {e}"));
    // An HTTPS address of this system is verified with the trust bundle.
    let internal_https = audience.is_some() && index.features.transport_encryption.is_on();
    let auth = TargetAuth {
        ca_certs: dest.ca_certs.clone().or_else(|| {
            internal_https
                .then(|| index.features.trust_bundle.clone())
                .flatten()
        }),
        audience: if index.features.oidc.is_some() {
            dest.audience.clone().or(audience)
        } else {
            None
        },
    }
    .non_empty();
    let url = match (base, dest.uri.as_deref()) {
        (None, Some(uri)) => {
            Url::parse(uri).map_err(|e| invalid(e, &format!("uri {uri:?} is not an absolute URL")))
        }
        (Some(base), None) => Url::parse(&base).map_err(|e| invalid(e, &base)),
        (Some(base), Some(uri)) => Url::parse(&base)
            .and_then(|b| b.join(uri))
            .map_err(|e| invalid(e, &format!("uri {uri:?} relative to {base}"))),
        (None, None) => Err((
            "InvalidDestination".into(),
            "a destination needs a ref or a uri".into(),
        )),
    }?;
    Ok((url, auth))
}

/// The address of a Sequence or Parallel (its first channel's), and that
/// channel's OIDC audience.
fn flow_address(
    flow: FlowKind,
    ns: &str,
    name: &str,
    index: &Index<'_>,
) -> Result<(String, String), (String, String)> {
    let what = format!("{} {ns}/{name}", flow.as_str());
    let channel = match index.flows.get(&(flow, ns.to_owned(), name.to_owned())) {
        None => {
            return Err((
                "DestinationNotFound".to_owned(),
                format!("{what} does not exist"),
            ))
        }
        Some(channel) => channel.as_ref(),
    };
    let served = channel.and_then(|c| {
        index
            .channels
            .get(&(ns.to_owned(), c.clone()))
            .and_then(|all| all.iter().find(|(r, _)| r.kind == ChannelKind::Channel))
            .map(|(_, backend)| (c, *backend))
    });
    match served {
        Some((c, backend)) => Ok((
            index.address(&Ingress::for_channel(ns, c), backend),
            crate::features::audience(ChannelKind::Channel.as_str(), ns, c),
        )),
        None => Err((
            "DestinationNotReady".to_owned(),
            format!("{what} is not served (see its own status)"),
        )),
    }
}

/// Where a subscription to compile comes from.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Subscription,
    Trigger(&'a TriggerContract),
    Flow(&'a flows::Owner),
}

impl Origin<'_> {
    /// The kind its uid derives from, and its place in the sort order.
    fn kind(self) -> &'static str {
        match self {
            Origin::Subscription | Origin::Flow(_) => "Subscription",
            Origin::Trigger(_) => "Trigger",
        }
    }
}

fn annotations(sub: &Subscription, policy: &mut DeliveryPolicy) -> Result<(), String> {
    if let Some(order) = sub.metadata.annotations.get(DELIVERY_ORDER_ANNOTATION) {
        policy.order = match order.as_str() {
            "ordered" => DeliveryOrder::Ordered,
            "unordered" => DeliveryOrder::Unordered,
            other => {
                return Err(format!(
                    "annotation {DELIVERY_ORDER_ANNOTATION}: {other:?} is not ordered or unordered"
                ))
            }
        };
    }
    if let Some(window) = sub.metadata.annotations.get(MAX_IN_FLIGHT_ANNOTATION) {
        policy.max_in_flight = window
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                format!(
                    "annotation {MAX_IN_FLIGHT_ANNOTATION}: {window:?} is not a positive integer"
                )
            })?;
    } else {
        policy.max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    }
    Ok(())
}

/// Compile manifests into contracts.
pub fn compile(m: &Manifests) -> Compiled {
    let classes = Classes::new(m);
    let builtin = ClusterChannelProvisioner::builtin();
    let expansion = broker::expand(m);
    let flow_expansion = flows::expand(m);
    let mut problems = Vec::new();
    let mut channels: Vec<&ChannelResource> = m
        .channels
        .iter()
        .chain(&expansion.channels)
        .chain(&flow_expansion.channels)
        .collect();
    channels.sort_by(|a, b| {
        (a.metadata.namespace(), &a.metadata.name, a.kind).cmp(&(
            b.metadata.namespace(),
            &b.metadata.name,
            b.kind,
        ))
    });

    // The feature flags, which resolution follows.
    let mut features = crate::features::from_manifests(m, &mut problems);

    // 1. Channels and their classes.
    let mut index = Index {
        channels: BTreeMap::new(),
        // A broker is served when its channel is; filled in below.
        brokers: expansion.known.keys().map(|k| (k.clone(), None)).collect(),
        flows: &flow_expansion.addresses,
        features: &features,
    };
    let mut compiled: Vec<ChannelContract> = Vec::new();
    let mut positions: BTreeMap<(String, String, ChannelKind), usize> = BTreeMap::new();
    for ch in channels {
        let ns = ch.metadata.namespace().to_owned();
        let name = ch.metadata.name.clone();
        let broker = if ch.kind == ChannelKind::Channel {
            expansion.broker_of_channel(&ns, &name).cloned()
        } else {
            None
        };
        let class = match select_class(ch, &classes, &builtin) {
            Ok(class) => class,
            Err((reason, message)) => {
                let flow = flow_expansion
                    .channel_owners
                    .get(&(ns.clone(), name.clone()));
                problems.push(match (&broker, flow) {
                    // The backing channel's problem is the broker's.
                    (Some(b), _) => Problem {
                        kind: "Broker".into(),
                        namespace: ns,
                        name: b.name.clone(),
                        reason,
                        message: format!("channel {name}: {message}"),
                    },
                    // A generated channel's problem is its flow's.
                    (None, Some(owner)) => Problem {
                        kind: owner.kind.as_str().into(),
                        namespace: ns,
                        name: owner.name.clone(),
                        reason,
                        message: format!("{} (channel {name}): {message}", owner.field),
                    },
                    (None, None) => Problem {
                        kind: ch.kind.as_str().into(),
                        namespace: ns,
                        name,
                        reason,
                        message,
                    },
                });
                continue;
            }
        };
        if let Some(b) = &broker {
            index
                .brokers
                .insert((ns.clone(), b.name.clone()), Some(class.spec.backend));
        }
        let mut parameters = class.spec.parameters.clone();
        parameters.extend(ch.parameters.clone());
        let uid = ch
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| stable_uid(ch.kind.as_str(), &ns, &name));
        index
            .channels
            .entry((ns.clone(), name.clone()))
            .or_default()
            .push((ch, class.spec.backend));
        positions.insert((ns.clone(), name.clone(), ch.kind), compiled.len());
        compiled.push(ChannelContract {
            uid,
            kind: ch.kind.as_str().into(),
            backend: class.spec.backend,
            class: class.metadata.name.clone(),
            ingress: Ingress::for_channel(&ns, &name),
            parameters,
            subscriptions: Vec::new(),
            namespace: ns,
            name,
            broker: broker.map(Box::new),
        });
    }

    // The channels' own dead-letter sinks, for their status.
    let mut channel_dead_letters = BTreeMap::new();
    for ch in &compiled {
        let Some(resource) = index
            .channels
            .get(&(ch.namespace.clone(), ch.name.clone()))
            .and_then(|all| all.iter().find(|(r, _)| r.kind.as_str() == ch.kind))
        else {
            continue;
        };
        let sink = resource
            .0
            .delivery
            .as_ref()
            .and_then(|d| d.dead_letter_sink.as_ref());
        if let Some(Ok(url)) = sink.map(|d| resolve_destination(d, &ch.namespace, &index)) {
            channel_dead_letters.insert(ch.uid.clone(), url);
        }
    }

    // 2. Subscriptions, resolved and attached.
    // Triggers are subscriptions of their broker's channel.
    // Flows' subscriptions are subscriptions of their generated channels.
    let mut subs: Vec<(Origin<'_>, &Subscription)> = m
        .subscriptions
        .iter()
        .map(|s| (Origin::Subscription, s))
        .chain(
            expansion
                .subscriptions
                .iter()
                .map(|(s, t)| (Origin::Trigger(t), s)),
        )
        .chain(
            flow_expansion
                .subscriptions
                .iter()
                .map(|(s, o)| (Origin::Flow(o), s)),
        )
        .collect();
    subs.sort_by(|a, b| {
        (a.1.metadata.namespace(), &a.1.metadata.name, a.0.kind()).cmp(&(
            b.1.metadata.namespace(),
            &b.1.metadata.name,
            b.0.kind(),
        ))
    });
    for (origin, sub) in subs {
        let kind = origin.kind();
        let trigger = match origin {
            Origin::Trigger(t) => Some(t),
            _ => None,
        };
        let ns = sub.metadata.namespace().to_owned();
        let problem = |reason: &str, message: String| match origin {
            Origin::Flow(owner) => Problem {
                kind: owner.kind.as_str().into(),
                namespace: ns.clone(),
                name: owner.name.clone(),
                reason: reason.into(),
                message: format!(
                    "{} (subscription {}): {message}",
                    owner.field, sub.metadata.name
                ),
            },
            _ => Problem {
                kind: kind.into(),
                namespace: ns.clone(),
                name: sub.metadata.name.clone(),
                reason: reason.into(),
                message,
            },
        };
        let channel_ns = sub
            .spec
            .channel
            .namespace
            .clone()
            .unwrap_or_else(|| ns.clone());
        let Some((channel, _)) = index.find(&channel_ns, &sub.spec.channel) else {
            if let Some(t) = trigger {
                problems.push(problem(
                    "BrokerNotReady",
                    format!(
                        "Broker {channel_ns}/{} is not served (see its own status)",
                        t.broker
                    ),
                ));
                continue;
            }
            if let Origin::Flow(_) = origin {
                // The generated channel's problem is already the flow's.
                continue;
            }
            let known = m.channels.iter().any(|c| {
                c.metadata.namespace() == channel_ns && c.metadata.name == sub.spec.channel.name
            });
            problems.push(if known {
                problem(
                    "ChannelNotReady",
                    format!(
                        "{} {channel_ns}/{} is not served (see its own problem)",
                        sub.spec.channel.kind, sub.spec.channel.name
                    ),
                )
            } else {
                problem(
                    "ChannelNotFound",
                    format!(
                        "{} {channel_ns}/{} does not exist",
                        sub.spec.channel.kind, sub.spec.channel.name
                    ),
                )
            });
            continue;
        };
        let key = (
            channel.metadata.namespace().to_owned(),
            channel.metadata.name.clone(),
            channel.kind,
        );
        let Some(&position) = positions.get(&key) else {
            continue;
        };
        let delivery_spec = sub.spec.delivery.as_ref().or(channel.delivery.as_ref());
        let mut policy = match resolve_policy(delivery_spec) {
            Ok(p) => p,
            Err(message) => {
                problems.push(problem("InvalidDelivery", message));
                continue;
            }
        };
        if let Err(message) = annotations(sub, &mut policy) {
            problems.push(problem("InvalidAnnotation", message));
            continue;
        }
        type Resolved = Option<(Url, Option<TargetAuth>)>;
        let resolve = |dest: &Option<Destination>, what: &str| -> Result<Resolved, Problem> {
            dest.as_ref()
                .map(|d| {
                    resolve_target(d, &ns, &index)
                        .map_err(|(reason, message)| problem(&reason, format!("{what}: {message}")))
                })
                .transpose()
        };
        let dead_letter_dest = delivery_spec.and_then(|d| d.dead_letter_sink.clone());
        let resolved = resolve(&sub.spec.subscriber, "subscriber").and_then(|subscriber| {
            Ok((
                subscriber,
                resolve(&sub.spec.reply, "reply")?,
                resolve(&dead_letter_dest, "deadLetterSink")?,
            ))
        });
        let (subscriber, reply, dead_letter) = match resolved {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let split = |r: Resolved| match r {
            Some((url, auth)) => (Some(url), auth),
            None => (None, None),
        };
        let ((subscriber, subscriber_auth), (reply, reply_auth), (dead_letter, dead_letter_auth)) =
            (split(subscriber), split(reply), split(dead_letter));
        let auth = DeliveryAuth::of(
            || {
                let group = match origin {
                    Origin::Trigger(_) => broker::EVENTING_GROUP,
                    _ => "messaging.knative.dev",
                };
                crate::features::identity(group, kind, &ns, &sub.metadata.name)
            },
            subscriber_auth,
            reply_auth,
            dead_letter_auth,
        );
        compiled[position]
            .subscriptions
            .push(std::sync::Arc::new(SubscriptionContract {
                uid: sub
                    .metadata
                    .uid
                    .clone()
                    .unwrap_or_else(|| stable_uid(kind, &ns, &sub.metadata.name)),
                namespace: ns.clone(),
                name: sub.metadata.name.clone(),
                generation: sub.metadata.generation.unwrap_or(1),
                subscriber,
                reply: reply.map(Box::new),
                dead_letter: dead_letter.map(Box::new),
                delivery: policy,
                trigger: trigger.cloned().map(Box::new),
                auth,
            }));
    }
    problems.extend(expansion.problems);
    problems.extend(flow_expansion.problems);

    // Sources, their sinks resolved as subscribers are.
    let (sources, source_sinks) = sources::compile_sources(m, &index, &mut problems);

    // 3. One contract per backend, each carrying the feature flags.
    if let Some(oidc) = &mut features.oidc {
        oidc.policies = crate::policy::applied_policies(m, &compiled);
    }
    let mut contracts: BTreeMap<BackendKind, Contract> = BTreeMap::new();
    for channel in compiled {
        contracts
            .entry(channel.backend)
            .or_insert_with(|| Contract {
                generation: 0,
                backend: Some(channel.backend),
                channels: Vec::new(),
                features: features.clone(),
            })
            .channels
            .push(channel);
    }
    Compiled {
        contracts,
        problems,
        channel_dead_letters,
        flows: flow_expansion.plans,
        features,
        sources,
        source_sinks,
    }
}

#[cfg(test)]
mod tests;

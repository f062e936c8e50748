//! Knative's feature flags (the `config-features` ConfigMap in the
//! `knative-eventing` namespace) that the data plane acts on, carried in the
//! contract so that every dispatcher follows the control plane's setting.
//!
//! `authentication-oidc: enabled` makes every broker and channel ingress
//! require an OIDC token (`Authorization: Bearer <JWT>`) whose audience is
//! the resource's ([`audience`]): see the dispatcher's `--oidc-*` flags.
//!
//! `eventtype-auto-create`: when it
//! is `enabled`, broker and channel ingress record the `(type, source)`
//! pairs of the events they accept, and the control plane turns them into
//! EventTypes of the registry. A producer sending random types must not grow
//! the registry without bound: at most `max_per_reference` pairs are kept
//! per broker or channel (this project's key
//! `eventtype-auto-create-max-per-reference` in the same ConfigMap, default
//! [`DEFAULT_MAX_PER_REFERENCE`]); the rest are counted and logged, never
//! recorded.

use crate::compile::Problem;
use crate::manifests::Manifests;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Namespace and name of Knative's feature ConfigMap.
pub const CONFIG_FEATURES: (&str, &str) = ("knative-eventing", "config-features");
/// The flag turning EventType auto-creation on (`enabled`) or off.
pub const EVENTTYPE_AUTO_CREATE: &str = "eventtype-auto-create";
/// The flag requiring OIDC tokens at ingress (`enabled`) or not.
pub const AUTHENTICATION_OIDC: &str = "authentication-oidc";
/// This project's bound on auto-created EventTypes per broker or channel.
pub const EVENTTYPE_MAX_PER_REFERENCE: &str = "eventtype-auto-create-max-per-reference";
/// Default of [`EVENTTYPE_MAX_PER_REFERENCE`].
pub const DEFAULT_MAX_PER_REFERENCE: u32 = 100;

/// The flag choosing HTTPS for addresses (`disabled`, `permissive`, `strict`).
pub const TRANSPORT_ENCRYPTION: &str = "transport-encryption";
/// The label of Knative's trust-bundle ConfigMaps (namespace
/// `knative-eventing`): PEM CA bundles every sender trusts.
pub const TRUST_BUNDLE_LABEL: &str = "networking.knative.dev/trust-bundle";

/// Knative's `transport-encryption` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportEncryption {
    /// Plain HTTP addresses.
    #[default]
    Disabled,
    /// Both addresses announced (`status.addresses`), `status.address`
    /// stays HTTP; senders inside the system use HTTPS.
    Permissive,
    /// HTTPS addresses only.
    Strict,
}

impl TransportEncryption {
    /// Whether senders inside the system use HTTPS addresses.
    pub fn is_on(self) -> bool {
        self != TransportEncryption::Disabled
    }
}

/// The flags a dispatcher follows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// `transport-encryption`: channels and brokers are addressed over
    /// HTTPS through their dispatcher's TLS host
    /// ([`crate::contract::tls_host`]) when it is on.
    #[serde(default, skip_serializing_if = "is_disabled")]
    pub transport_encryption: TransportEncryption,
    /// The PEM bundles of the trust-bundle ConfigMaps: the `CACerts` of
    /// HTTPS addresses, trusted by senders reaching them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<String>,
    /// Set when `eventtype-auto-create` is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventtype_auto_create: Option<EventTypeAutoCreate>,
    /// Set when `authentication-oidc` is enabled: tokens are required at
    /// every broker and channel ingress, and these policies authorize them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<Oidc>,
}

/// The OIDC feature's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oidc {
    /// `default-authorization-mode`: for brokers and channels no policy
    /// applies to.
    #[serde(default)]
    pub default_authorization_mode: crate::policy::AuthorizationMode,
    /// The EventPolicies applying to each broker and channel, by ingress
    /// path (`/<ns>/<channel>`, `/brokers/<ns>/<broker>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Vec<crate::policy::AppliedPolicy>>,
}

/// The OIDC audience of a channel (`kind` as the user wrote it, e.g.
/// `InMemoryChannel`) or, with `kind` `Broker`, of a broker — Knative's
/// form: `messaging.knative.dev/inmemorychannel/<ns>/<name>`,
/// `eventing.knative.dev/broker/<ns>/<name>`.
pub fn audience(kind: &str, namespace: &str, name: &str) -> String {
    let group = if kind == "Broker" {
        "eventing.knative.dev"
    } else {
        "messaging.knative.dev"
    };
    format!("{group}/{}/{namespace}/{name}", kind.to_ascii_lowercase())
}

/// The OIDC subject a sender presents: the service account Knative gives
/// the resource `kind` (of API `group`) `namespace/name` for its identity,
/// `system:serviceaccount:<namespace>:<name>-oidc-<group>-<kind>` in lower
/// case (Knative shortens names above 63 characters with a hash; here they
/// are kept whole, as a service account name may be 253 characters long).
pub fn identity(group: &str, kind: &str, namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}-oidc-{group}-{kind}").to_ascii_lowercase()
}

impl Features {
    pub fn is_default(&self) -> bool {
        *self == Features::default()
    }
}

/// EventType auto-creation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeAutoCreate {
    /// At most this many `(type, source)` pairs per broker or channel.
    pub max_per_reference: u32,
}

fn is_disabled(t: &TransportEncryption) -> bool {
    *t == TransportEncryption::Disabled
}

/// The flags the manifests set, with a problem for a value that cannot be
/// understood (the flag then stays off: the safe reading; except
/// `authentication-oidc`, which fails closed, and `transport-encryption`,
/// which is then `strict`).
pub fn from_manifests(manifests: &Manifests, problems: &mut Vec<Problem>) -> Features {
    let mut features = from_config_features(manifests, problems);
    let (namespace, name) = CONFIG_FEATURES;
    let flags = manifests
        .config_maps
        .iter()
        .find(|m| m.metadata.name == name && m.metadata.namespace.as_deref() == Some(namespace));
    features.transport_encryption = match flags
        .and_then(|m| m.data.get(TRANSPORT_ENCRYPTION))
        .map(|v| v.trim())
    {
        None | Some("disabled") => TransportEncryption::Disabled,
        Some("permissive") => TransportEncryption::Permissive,
        Some("strict") => TransportEncryption::Strict,
        Some(other) => {
            problems.push(Problem {
                kind: "ConfigMap".into(),
                namespace: namespace.into(),
                name: name.into(),
                reason: "InvalidFeatureFlag".into(),
                message: format!(
                    "data.{TRANSPORT_ENCRYPTION}: {other:?} is not disabled, permissive or strict; using strict"
                ),
            });
            TransportEncryption::Strict
        }
    };
    let bundles: Vec<&str> = manifests
        .config_maps
        .iter()
        .filter(|m| {
            m.metadata.namespace.as_deref() == Some(namespace)
                && m.metadata
                    .labels
                    .get(TRUST_BUNDLE_LABEL)
                    .map(String::as_str)
                    == Some("true")
        })
        .flat_map(|m| m.data.values())
        .map(|pem| pem.trim())
        .filter(|pem| !pem.is_empty())
        .collect();
    features.trust_bundle = (!bundles.is_empty()).then(|| bundles.join("\n") + "\n");
    features
}

fn from_config_features(manifests: &Manifests, problems: &mut Vec<Problem>) -> Features {
    let (namespace, name) = CONFIG_FEATURES;
    let Some(map) = manifests
        .config_maps
        .iter()
        .find(|m| m.metadata.name == name && m.metadata.namespace.as_deref() == Some(namespace))
    else {
        return Features::default();
    };
    let mut problem = |message: String| {
        problems.push(Problem {
            kind: "ConfigMap".into(),
            namespace: namespace.into(),
            name: name.into(),
            reason: "InvalidFeatureFlag".into(),
            message,
        })
    };
    let oidc_on = match map.data.get(AUTHENTICATION_OIDC).map(|v| v.trim()) {
        None | Some("disabled") => false,
        Some("enabled") => true,
        Some(other) => {
            // Fail closed: a value that cannot be read keeps tokens required.
            problem(format!(
                "data.{AUTHENTICATION_OIDC}: {other:?} is neither \"enabled\" nor \"disabled\"; tokens are required"
            ));
            true
        }
    };
    let mode = match map.data.get(crate::policy::DEFAULT_AUTHORIZATION_MODE) {
        None => crate::policy::AuthorizationMode::default(),
        Some(v) => crate::policy::AuthorizationMode::parse(v).unwrap_or_else(|| {
            problem(format!(
                "data.{}: {v:?} is not allow-all, allow-same-namespace or deny-all; using deny-all",
                crate::policy::DEFAULT_AUTHORIZATION_MODE
            ));
            crate::policy::AuthorizationMode::DenyAll
        }),
    };
    let oidc = oidc_on.then(|| Oidc {
        default_authorization_mode: mode,
        policies: BTreeMap::new(),
    });
    let enabled = match map.data.get(EVENTTYPE_AUTO_CREATE).map(|v| v.trim()) {
        None | Some("disabled") => false,
        Some("enabled") => true,
        Some(other) => {
            problem(format!(
                "data.{EVENTTYPE_AUTO_CREATE}: {other:?} is neither \"enabled\" nor \"disabled\"; auto-creation stays off"
            ));
            false
        }
    };
    if !enabled {
        return Features {
            oidc,
            ..Features::default()
        };
    }
    let max = match map.data.get(EVENTTYPE_MAX_PER_REFERENCE).map(|v| v.trim()) {
        None => DEFAULT_MAX_PER_REFERENCE,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                problem(format!(
                    "data.{EVENTTYPE_MAX_PER_REFERENCE}: {v:?} is not a positive number; using {DEFAULT_MAX_PER_REFERENCE}"
                ));
                DEFAULT_MAX_PER_REFERENCE
            }
        },
    };
    Features {
        eventtype_auto_create: Some(EventTypeAutoCreate {
            max_per_reference: max,
        }),
        oidc,
        ..Features::default()
    }
}

/// The name of the EventType auto-created for `(ty, source)` on the
/// broker or channel `reference_name`: stable across restarts and
/// processes (the control plane and every dispatcher agree on it), a valid
/// Kubernetes name, and distinct for distinct pairs.
pub fn auto_event_type_name(
    reference_kind: &str,
    reference_name: &str,
    ty: &str,
    source: &str,
) -> String {
    // FNV-1a, 64 bits, over kind, name, type and source separated by NUL.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [reference_kind, reference_name, ty, source] {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let prefix: String = reference_name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let prefix = prefix.trim_matches('-');
    if prefix.is_empty() {
        format!("et-{hash:016x}")
    } else {
        format!("et-{prefix}-{hash:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::load_str;

    fn features(yaml: &str) -> (Features, Vec<Problem>) {
        let m = load_str("t.yaml", yaml).expect("loads");
        let mut problems = Vec::new();
        (from_manifests(&m, &mut problems), problems)
    }

    #[test]
    fn oidc_is_required_when_enabled_or_unreadable_and_audiences_are_knatives() {
        let cm = |v: &str| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{authentication-oidc: '{v}'}}\n")
        };
        let on = features(&cm("enabled")).0.oidc.expect("on");
        assert_eq!(
            on.default_authorization_mode,
            crate::policy::AuthorizationMode::AllowSameNamespace,
            "Knative's default"
        );
        assert!(features(&cm("disabled")).0.oidc.is_none());
        let (f, p) = features(&cm("maybe"));
        assert!(f.oidc.is_some(), "fails closed");
        assert_eq!(p.len(), 1);
        assert_eq!(
            audience("InMemoryChannel", "shop", "orders"),
            "messaging.knative.dev/inmemorychannel/shop/orders"
        );
        assert_eq!(
            audience("Broker", "shop", "default"),
            "eventing.knative.dev/broker/shop/default"
        );
    }

    #[test]
    fn knatives_config_features_turns_auto_creation_on() {
        let (f, p) = features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {eventtype-auto-create: enabled}\n");
        assert!(p.is_empty());
        assert_eq!(
            f.eventtype_auto_create,
            Some(EventTypeAutoCreate {
                max_per_reference: DEFAULT_MAX_PER_REFERENCE
            })
        );
        let (f, _) = features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {eventtype-auto-create: enabled, eventtype-auto-create-max-per-reference: \"3\"}\n");
        assert_eq!(
            f.eventtype_auto_create.map(|a| a.max_per_reference),
            Some(3)
        );
    }

    #[test]
    fn off_unless_enabled_and_bad_values_are_problems() {
        assert!(features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: knative-eventing}\ndata: {eventtype-auto-create: enabled}\n").0.is_default());
        assert!(features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {eventtype-auto-create: disabled}\n").0.is_default());
        let (f, p) = features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {eventtype-auto-create: yes please}\n");
        assert!(f.is_default());
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("data.eventtype-auto-create"), "{p:?}");
        let (f, p) = features("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {eventtype-auto-create: enabled, eventtype-auto-create-max-per-reference: \"-1\"}\n");
        assert_eq!(
            f.eventtype_auto_create.map(|a| a.max_per_reference),
            Some(DEFAULT_MAX_PER_REFERENCE)
        );
        assert!(p[0].message.contains(EVENTTYPE_MAX_PER_REFERENCE), "{p:?}");
    }

    #[test]
    fn auto_names_are_stable_valid_and_distinct() {
        let a = auto_event_type_name("Broker", "default", "shop.order", "/shop");
        assert_eq!(
            a,
            auto_event_type_name("Broker", "default", "shop.order", "/shop")
        );
        assert!(a.starts_with("et-default-"), "{a}");
        // The README's registry walk-through shows this name.
        assert_eq!(
            auto_event_type_name("Broker", "default", "shop.order.created", "/shop/us"),
            "et-default-3d22a250bd91bfe5"
        );
        assert!(a.len() <= 63);
        assert_ne!(
            a,
            auto_event_type_name("Broker", "default", "shop.order", "/shop/eu")
        );
        assert_ne!(
            a,
            auto_event_type_name("Broker", "default", "shop.orde", "r/shop")
        );
        assert_ne!(
            a,
            auto_event_type_name("InMemoryChannel", "default", "shop.order", "/shop")
        );
        let long = auto_event_type_name("Broker", &"X".repeat(300), "t", "s");
        assert!(
            long.len() <= 63
                && long
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{long}"
        );
    }
}

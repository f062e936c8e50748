//! Knative's `EventPolicy` (`eventing.knative.dev/v1alpha1`): who may send
//! events to which brokers and channels, once OIDC authentication is on
//! (`authentication-oidc: enabled`).
//!
//! * `spec.to`: the brokers and channels the policy applies to, by `ref`
//!   (`kind`, `name`) or `selector` (`kind` and `matchLabels`); empty: every
//!   broker and channel of the policy's namespace.
//! * `spec.from`: the senders it allows, as OIDC subjects: `sub` (exact, or
//!   a prefix ending in `*`: `system:serviceaccount:shop:*`) or `ref` to a
//!   `ServiceAccount` (its subject `system:serviceaccount:<ns>:<name>`) or
//!   to a sender of Knative's API groups (a source, a Subscription, a
//!   Trigger: the identity it presents, [`crate::features::identity`]).
//! * `spec.filters`: Knative's Trigger filter dialects; an event must pass
//!   them too.
//!
//! A broker or channel that some policy applies to accepts an event when
//! one of those policies allows its sender and passes it (403 otherwise).
//! One that no policy applies to follows `default-authorization-mode`
//! (`config-features`): `allow-same-namespace` (Knative's default: senders
//! whose subject is a service account of the resource's namespace),
//! `allow-all` or `deny-all`.

use crate::resources::{FieldError, KReference, ObjectMeta};
use event_filter::spec::SubscriptionsApiFilter;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API versions EventPolicy is served at.
pub const EVENT_POLICY_VERSIONS: &[&str] = &["eventing.knative.dev/v1alpha1"];
/// The `config-features` key of the default authorization mode.
pub const DEFAULT_AUTHORIZATION_MODE: &str = "default-authorization-mode";

/// What a broker or channel that no policy applies to accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorizationMode {
    AllowAll,
    #[default]
    AllowSameNamespace,
    DenyAll,
}

impl AuthorizationMode {
    pub fn parse(text: &str) -> Option<AuthorizationMode> {
        match text.trim() {
            "allow-all" => Some(AuthorizationMode::AllowAll),
            "allow-same-namespace" => Some(AuthorizationMode::AllowSameNamespace),
            "deny-all" => Some(AuthorizationMode::DenyAll),
            _ => None,
        }
    }
}

/// `spec.to[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicyTo {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<PolicySelector>,
}

/// `spec.to[].selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicySelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// `spec.from[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PolicyFrom {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// `eventing.knative.dev/v1alpha1` `EventPolicy` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventPolicySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PolicyTo>,
    #[serde(default)]
    pub from: Vec<PolicyFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::broker::filter_list")
    )]
    pub filters: Vec<SubscriptionsApiFilter>,
}

/// An EventPolicy resource.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPolicy {
    pub metadata: ObjectMeta,
    pub spec: EventPolicySpec,
}

/// A policy as the dispatcher applies it to a broker or channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// `namespace/name` of the EventPolicy.
    pub name: String,
    /// Allowed subjects: exact, or prefixes ending in `*`.
    pub subjects: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsApiFilter>,
}

impl AppliedPolicy {
    /// Whether `sub` is one of the policy's senders.
    pub fn allows(&self, sub: &str) -> bool {
        self.subjects.iter().any(|p| subject_matches(p, sub))
    }
}

/// `pattern` (exact, or a prefix ending in `*`) against a subject.
pub fn subject_matches(pattern: &str, sub: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => sub.starts_with(prefix),
        None => pattern == sub,
    }
}

/// Whether a sender with no policy applying is allowed by `mode` to send
/// to a resource of `namespace`.
pub fn default_allows(mode: AuthorizationMode, namespace: &str, sub: &str) -> bool {
    match mode {
        AuthorizationMode::AllowAll => true,
        AuthorizationMode::DenyAll => false,
        AuthorizationMode::AllowSameNamespace => sub
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(ns, _)| ns == namespace),
    }
}

impl EventPolicySpec {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (i, to) in self.to.iter().enumerate() {
            let path = format!("spec.to[{i}]");
            if to.reference.is_some() == to.selector.is_some() {
                return Err(FieldError::new(path, "set exactly one of ref and selector"));
            }
            let kind = to
                .reference
                .as_ref()
                .map(|r| r.kind.as_str())
                .or(to.selector.as_ref().map(|s| s.kind.as_str()))
                .unwrap_or_default();
            if kind != "Broker" && crate::resources::ChannelKind::from_kind(kind).is_none() {
                return Err(FieldError::new(
                    format!(
                        "{path}.{}.kind",
                        if to.reference.is_some() {
                            "ref"
                        } else {
                            "selector"
                        }
                    ),
                    format!("{kind:?}: a policy applies to Brokers and channels"),
                ));
            }
        }
        if self.from.is_empty() {
            return Err(FieldError::new(
                "spec.from",
                "name at least one sender (sub or ref)",
            ));
        }
        for (i, from) in self.from.iter().enumerate() {
            let path = format!("spec.from[{i}]");
            match (&from.reference, &from.sub) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(FieldError::new(path, "set exactly one of ref and sub"))
                }
                (None, Some(sub)) => {
                    let stars = sub.matches('*').count();
                    if sub.is_empty() || stars > 1 || (stars == 1 && !sub.ends_with('*')) {
                        return Err(FieldError::new(
                            format!("{path}.sub"),
                            format!("{sub:?}: a subject, or a prefix ending in a single '*'"),
                        ));
                    }
                }
                (Some(r), None) => {
                    if sender_subject(r, "").is_none() {
                        return Err(FieldError::new(
                            format!("{path}.ref.kind"),
                            format!(
                                "{:?} has no OIDC identity: reference a ServiceAccount or a sender of Knative's API groups (a source, a Subscription, a Trigger) with its apiVersion, or name the subject with sub",
                                r.kind
                            ),
                        ));
                    }
                }
            }
        }
        event_filter::spec::validate_filters(&self.filters)
            .map_err(|e| FieldError::new(format!("spec.{}", e.path), e.message))
    }
}

/// The OIDC subject of the sender `r` names (its namespace defaulting to
/// `namespace`): a ServiceAccount's own, or the identity Knative gives a
/// resource of one of its API groups (a source, a Subscription, a
/// Trigger: [`crate::features::identity`]). `None` for anything else.
fn sender_subject(r: &KReference, namespace: &str) -> Option<String> {
    let ns = r.namespace.as_deref().unwrap_or(namespace);
    let group = r
        .api_version
        .as_deref()
        .and_then(|v| v.split_once('/'))
        .map(|(group, _)| group);
    match group {
        None if r.kind == "ServiceAccount" => {
            Some(format!("system:serviceaccount:{ns}:{}", r.name))
        }
        Some(group) if group == "knative.dev" || group.ends_with(".knative.dev") => {
            Some(crate::features::identity(group, &r.kind, ns, &r.name))
        }
        _ => None,
    }
}

impl EventPolicy {
    /// The policy as applied, its `from` refs turned into subjects.
    pub fn applied(&self) -> AppliedPolicy {
        let ns = self.metadata.namespace();
        AppliedPolicy {
            name: format!("{ns}/{}", self.metadata.name),
            subjects: self
                .spec
                .from
                .iter()
                .filter_map(|f| match (&f.sub, &f.reference) {
                    (Some(sub), _) => Some(sub.clone()),
                    (None, Some(r)) => sender_subject(r, ns),
                    (None, None) => None,
                })
                .collect(),
            filters: self.spec.filters.clone(),
        }
    }

    /// Whether the policy applies to the resource `kind` `namespace/name`
    /// with `labels`.
    pub fn applies_to(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        if self.metadata.namespace() != namespace {
            return false;
        }
        if self.spec.to.is_empty() {
            return true;
        }
        self.spec
            .to
            .iter()
            .any(|to| match (&to.reference, &to.selector) {
                (Some(r), _) => r.kind == kind && r.name == name,
                (None, Some(s)) => {
                    s.kind == kind && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                }
                (None, None) => false,
            })
    }
}

/// The policies applying to each compiled channel and broker, by ingress
/// path (only those with at least one).
pub fn applied_policies(
    m: &crate::manifests::Manifests,
    channels: &[crate::contract::ChannelContract],
) -> BTreeMap<String, Vec<AppliedPolicy>> {
    let no_labels = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut add =
        |path: &str, kind: &str, ns: &str, name: &str, labels: &BTreeMap<String, String>| {
            let applied: Vec<AppliedPolicy> = m
                .event_policies
                .iter()
                .filter(|p| p.applies_to(kind, ns, name, labels))
                .map(EventPolicy::applied)
                .collect();
            if !applied.is_empty() {
                out.insert(path.to_owned(), applied);
            }
        };
    for c in channels {
        let labels = m
            .channels
            .iter()
            .find(|r| r.metadata.name == c.name && r.metadata.namespace() == c.namespace)
            .map_or(&no_labels, |r| &r.metadata.labels);
        add(&c.ingress.path, &c.kind, &c.namespace, &c.name, labels);
        if let Some(b) = &c.broker {
            let labels = m
                .brokers
                .iter()
                .find(|r| r.metadata.name == b.name && r.metadata.namespace() == c.namespace)
                .map_or(&no_labels, |r| &r.metadata.labels);
            add(&b.ingress.path, "Broker", &c.namespace, &b.name, labels);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> EventPolicy {
        EventPolicy {
            metadata: ObjectMeta {
                name: "p".into(),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: serde_yaml_ng::from_str(yaml).expect("yaml"),
        }
    }

    #[test]
    fn subjects_and_targets() {
        let p = policy("to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}]\nfrom: [{sub: 'system:serviceaccount:billing:*'}, {ref: {apiVersion: v1, kind: ServiceAccount, name: shipper}}]\n");
        p.spec.validate().expect("valid");
        let a = p.applied();
        assert_eq!(a.name, "shop/p");
        assert!(a.allows("system:serviceaccount:billing:invoicer"));
        assert!(a.allows("system:serviceaccount:shop:shipper"));
        assert!(!a.allows("system:serviceaccount:shop:other"));
        // A source or a trigger is named by its Knative identity.
        let senders = policy("from: [{ref: {apiVersion: sources.knative.dev/v1, kind: PingSource, name: tick}}, {ref: {apiVersion: eventing.knative.dev/v1, kind: Trigger, name: audit, namespace: ops}}]\n");
        senders.spec.validate().expect("valid");
        let a = senders.applied();
        assert!(a.allows("system:serviceaccount:shop:tick-oidc-sources.knative.dev-pingsource"));
        assert!(a.allows("system:serviceaccount:ops:audit-oidc-eventing.knative.dev-trigger"));
        assert!(!a.allows("system:serviceaccount:shop:tick"));
        let none = BTreeMap::new();
        assert!(p.applies_to("Broker", "shop", "default", &none));
        assert!(!p.applies_to("Broker", "shop", "other", &none));
        assert!(!p.applies_to("Broker", "elsewhere", "default", &none));
        let all = policy("from: [{sub: x}]\n");
        assert!(all.applies_to("InMemoryChannel", "shop", "any", &none));
        let by_label = policy(
            "to: [{selector: {kind: InMemoryChannel, matchLabels: {team: a}}}]\nfrom: [{sub: x}]\n",
        );
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        assert!(by_label.applies_to("InMemoryChannel", "shop", "c", &labels));
        assert!(!by_label.applies_to("InMemoryChannel", "shop", "c", &none));
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (yaml, field) in [
            ("from: []\n", "spec.from"),
            ("from: [{sub: 'a*b'}]\n", "spec.from[0].sub"),
            (
                "from: [{sub: x, ref: {kind: ServiceAccount, name: y}}]\n",
                "spec.from[0]",
            ),
            (
                "from: [{ref: {kind: PingSource, name: y}}]\n",
                "spec.from[0].ref.kind",
            ),
            (
                "from: [{ref: {apiVersion: apps/v1, kind: Deployment, name: y}}]\n",
                "spec.from[0].ref.kind",
            ),
            (
                "to: [{ref: {kind: Service, name: y}}]\nfrom: [{sub: x}]\n",
                "spec.to[0].ref.kind",
            ),
            (
                "from: [{sub: x}]\nfilters: [{cesql: 'type = '}]\n",
                "spec.filters[0].cesql",
            ),
        ] {
            assert_eq!(
                policy(yaml).spec.validate().expect_err(yaml).path,
                field,
                "{yaml}"
            );
        }
    }

    #[test]
    fn default_modes() {
        let sa = "system:serviceaccount:shop:producer";
        assert!(default_allows(AuthorizationMode::AllowAll, "other", sa));
        assert!(default_allows(
            AuthorizationMode::AllowSameNamespace,
            "shop",
            sa
        ));
        assert!(!default_allows(
            AuthorizationMode::AllowSameNamespace,
            "other",
            sa
        ));
        assert!(!default_allows(
            AuthorizationMode::AllowSameNamespace,
            "shop",
            "alice@example.com"
        ));
        assert!(!default_allows(AuthorizationMode::DenyAll, "shop", sa));
        assert_eq!(
            AuthorizationMode::parse("deny-all"),
            Some(AuthorizationMode::DenyAll)
        );
        assert_eq!(AuthorizationMode::parse("nope"), None);
    }
}

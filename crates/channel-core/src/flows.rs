//! Knative's flows, Sequence and Parallel, field for field as users write
//! them.
//!
//! ```yaml
//! apiVersion: flows.knative.dev/v1
//! kind: Sequence
//! metadata: {name: enrich, namespace: shop}
//! spec:
//!   channelTemplate: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, spec: {numPartitions: 3}}
//!   steps:
//!   - ref: {apiVersion: v1, kind: Service, name: geocode}
//!   - uri: http://pricing.shop.svc.cluster.local/
//!     delivery: {retry: 5}
//!   reply: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
//! ---
//! apiVersion: flows.knative.dev/v1
//! kind: Parallel
//! metadata: {name: fanout, namespace: shop}
//! spec:
//!   branches:
//!   - filter: {uri: http://is-large-order.shop.svc.cluster.local/}
//!     subscriber: {ref: {apiVersion: v1, kind: Service, name: fraud-check}}
//!   - subscriber: {ref: {apiVersion: v1, kind: Service, name: audit}}
//!   reply: {uri: http://collector.shop.svc.cluster.local/}
//! ```
//!
//! Both are pure control-plane constructs: they compile into channels and
//! subscriptions with Knative's generated names (see `compile::flows`), and
//! both are Addressable, so a subscriber or reply may be a `ref` to one.

use crate::resources::{ChannelKind, ChannelTemplate, DeliverySpec, Destination, FieldError};
use crate::resources::{KReference, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API versions Sequence and Parallel are accepted under: today's
/// `flows.knative.dev` and the older `messaging.knative.dev/v1alpha1`.
pub const FLOWS_VERSIONS: &[&str] = &[
    "flows.knative.dev/v1",
    "flows.knative.dev/v1beta1",
    "flows.knative.dev/v1alpha1",
    "messaging.knative.dev/v1alpha1",
];

/// The name of step `i`'s channel and subscription, as Knative names them.
pub fn sequence_step_name(sequence: &str, i: usize) -> String {
    format!("{sequence}-kn-sequence-{i}")
}

/// The name of a Parallel's ingress channel.
pub fn parallel_ingress_name(parallel: &str) -> String {
    format!("{parallel}-kn-parallel")
}

/// The name of branch `i`'s channel and of its subscriber's subscription.
pub fn parallel_branch_name(parallel: &str, i: usize) -> String {
    format!("{parallel}-kn-parallel-{i}")
}

/// The name of branch `i`'s filter subscription (on the ingress channel).
pub fn parallel_filter_name(parallel: &str, i: usize) -> String {
    format!("{parallel}-kn-parallel-filter-{i}")
}

/// One step of a Sequence: a Destination (inline, as Knative writes it)
/// and the step's own delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SequenceStep {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl SequenceStep {
    /// The step's subscriber.
    pub fn destination(&self) -> Destination {
        Destination {
            reference: self.reference.clone(),
            uri: self.uri.clone(),
            ca_certs: self.ca_certs.clone(),
            audience: self.audience.clone(),
        }
    }
}

/// `flows.knative.dev/v1` `Sequence` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SequenceSpec {
    #[serde(default)]
    pub steps: Vec<SequenceStep>,
    /// The kind of the generated channels; the default class when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Where the last step's reply goes; nowhere when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// A Sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub metadata: ObjectMeta,
    pub spec: SequenceSpec,
}

impl Sequence {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.spec.steps.is_empty() {
            return Err(FieldError::new(
                "spec.steps",
                "a Sequence needs at least one step",
            ));
        }
        for (i, step) in self.spec.steps.iter().enumerate() {
            let path = format!("spec.steps[{i}]");
            step.destination().validate(&path)?;
            if let Some(d) = &step.delivery {
                d.validate(&format!("{path}.delivery"))?;
            }
        }
        validate_template(self.spec.channel_template.as_ref())?;
        if let Some(reply) = &self.spec.reply {
            reply.validate("spec.reply")?;
        }
        Ok(())
    }
}

/// One branch of a Parallel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParallelBranch {
    /// Answers 2xx with the event as its reply to let it pass; a branch
    /// without a filter passes every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Destination>,
    pub subscriber: Destination,
    /// Where the subscriber's reply goes; the Parallel's reply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `flows.knative.dev/v1` `Parallel` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParallelSpec {
    #[serde(default)]
    pub branches: Vec<ParallelBranch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// A Parallel.
#[derive(Debug, Clone, PartialEq)]
pub struct Parallel {
    pub metadata: ObjectMeta,
    pub spec: ParallelSpec,
}

impl Parallel {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.spec.branches.is_empty() {
            return Err(FieldError::new(
                "spec.branches",
                "a Parallel needs at least one branch",
            ));
        }
        for (i, branch) in self.spec.branches.iter().enumerate() {
            let path = format!("spec.branches[{i}]");
            if let Some(filter) = &branch.filter {
                filter.validate(&format!("{path}.filter"))?;
            }
            branch.subscriber.validate(&format!("{path}.subscriber"))?;
            if let Some(reply) = &branch.reply {
                reply.validate(&format!("{path}.reply"))?;
            }
            if let Some(d) = &branch.delivery {
                d.validate(&format!("{path}.delivery"))?;
            }
        }
        validate_template(self.spec.channel_template.as_ref())?;
        if let Some(reply) = &self.spec.reply {
            reply.validate("spec.reply")?;
        }
        Ok(())
    }
}

fn validate_template(template: Option<&ChannelTemplate>) -> Result<(), FieldError> {
    let Some(t) = template else { return Ok(()) };
    if ChannelKind::from_kind(&t.kind).is_none_or(|k| k == ChannelKind::Channel) {
        return Err(FieldError::new(
            "spec.channelTemplate.kind",
            format!(
                "kind {:?} is not a channel implementation: expected InMemoryChannel, KafkaChannel or NatsJetStreamChannel",
                t.kind
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(steps: Vec<SequenceStep>) -> Sequence {
        Sequence {
            metadata: ObjectMeta {
                name: "s".into(),
                ..ObjectMeta::default()
            },
            spec: SequenceSpec {
                steps,
                ..SequenceSpec::default()
            },
        }
    }

    #[test]
    fn knative_names() {
        assert_eq!(sequence_step_name("enrich", 0), "enrich-kn-sequence-0");
        assert_eq!(parallel_ingress_name("fan"), "fan-kn-parallel");
        assert_eq!(parallel_branch_name("fan", 2), "fan-kn-parallel-2");
        assert_eq!(parallel_filter_name("fan", 2), "fan-kn-parallel-filter-2");
    }

    #[test]
    fn a_sequence_needs_steps_that_lead_somewhere() {
        let e = sequence(vec![]).validate().unwrap_err();
        assert_eq!(e.path, "spec.steps");
        let e = sequence(vec![
            SequenceStep {
                uri: Some("http://a/".into()),
                ..SequenceStep::default()
            },
            SequenceStep::default(),
        ])
        .validate()
        .unwrap_err();
        assert_eq!(e.path, "spec.steps[1]");
        assert!(e.message.contains("needs a ref or a uri"), "{}", e.message);
        let mut bad_template = sequence(vec![SequenceStep {
            uri: Some("http://a/".into()),
            ..SequenceStep::default()
        }]);
        bad_template.spec.channel_template = Some(ChannelTemplate {
            api_version: None,
            kind: "Deployment".into(),
            spec: None,
        });
        assert_eq!(
            bad_template.validate().unwrap_err().path,
            "spec.channelTemplate.kind"
        );
    }

    #[test]
    fn a_parallel_needs_branches_with_valid_destinations() {
        let mut p = Parallel {
            metadata: ObjectMeta::default(),
            spec: ParallelSpec::default(),
        };
        assert_eq!(p.validate().unwrap_err().path, "spec.branches");
        p.spec.branches.push(ParallelBranch {
            filter: Some(Destination {
                uri: Some("relative/path".into()),
                ..Destination::default()
            }),
            subscriber: Destination {
                uri: Some("http://sub/".into()),
                ..Destination::default()
            },
            ..ParallelBranch::default()
        });
        assert_eq!(
            p.validate().unwrap_err().path,
            "spec.branches[0].filter.uri"
        );
        p.spec.branches[0].filter = None;
        assert!(p.validate().is_ok());
    }
}

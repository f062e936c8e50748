//! Sequence and Parallel compile down to channels and subscriptions with
//! Knative's generated names; the engine runs them like any other.
//!
//! * A **Sequence** of *n* steps becomes channels `<seq>-kn-sequence-<i>`
//!   and one subscription of the same name per step: step *i* subscribes to
//!   channel *i* with the step's delivery and replies into channel *i+1*;
//!   the last step replies to `spec.reply` (or nowhere). The Sequence's
//!   address is channel 0's.
//! * A **Parallel** becomes an ingress channel `<p>-kn-parallel` (its
//!   address); per branch *i* a channel `<p>-kn-parallel-<i>`, a filter
//!   subscription `<p>-kn-parallel-filter-<i>` on the ingress channel whose
//!   subscriber is the branch filter and whose reply is the branch channel
//!   (no filter: a reply-only subscription that forwards every event), and a
//!   subscription `<p>-kn-parallel-<i>` on the branch channel to the branch
//!   subscriber, replying to the branch reply or else the Parallel's.
//!
//! Names and uids depend only on the flow's name and the step or branch
//! index, so editing one step updates that step's subscription in place:
//! the channels and the other steps keep running and keep their events.
//! The channels are generic Channels with the flow's `channelTemplate`, so
//! the class rules pick their backend exactly as for a user's Channel.

use super::broker::apply_template;
use super::{stable_uid, Problem};
use crate::flows::{
    parallel_branch_name, parallel_filter_name, parallel_ingress_name, sequence_step_name,
    Parallel, Sequence,
};
use crate::manifests::Manifests;
use crate::resources::{
    ChannelKind, ChannelResource, ChannelTemplate, DeliverySpec, Destination, KReference,
    ObjectMeta, Subscription, SubscriptionSpec, MESSAGING_V1,
};
use std::collections::BTreeMap;

/// Which flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowKind {
    Sequence,
    Parallel,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Sequence => "Sequence",
            FlowKind::Parallel => "Parallel",
        }
    }

    /// The kind a reference names, when it names a flow of a group that
    /// serves flows (`flows.knative.dev`, or the older
    /// `messaging.knative.dev/v1alpha1`).
    pub fn of_reference(kind: &str, api_version: &str) -> Option<FlowKind> {
        let group_ok = api_version.is_empty()
            || api_version.starts_with("flows.knative.dev/")
            || api_version == "messaging.knative.dev/v1alpha1";
        match kind {
            "Sequence" if group_ok => Some(FlowKind::Sequence),
            "Parallel" if group_ok => Some(FlowKind::Parallel),
            _ => None,
        }
    }
}

/// One branch of a compiled Parallel: the names of what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchPlan {
    pub filter_subscription: String,
    pub channel: String,
    pub subscription: String,
}

/// What a flow became, for its status: the names of its generated channels
/// and subscriptions (in its namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPlan {
    pub kind: FlowKind,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// The channel whose address is the flow's (step 0's, or the ingress).
    pub address_channel: String,
    /// A Sequence's step channels and subscriptions, in step order.
    pub steps: Vec<(String, String)>,
    /// A Parallel's branches.
    pub branches: Vec<BranchPlan>,
}

/// Who owns a generated subscription, for problems: the flow and the field
/// of its spec the subscription comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: FlowKind,
    pub name: String,
    /// e.g. `spec.steps[1]`, `spec.branches[0].filter`.
    pub field: String,
}

/// What the flows of a set of manifests expand into.
#[derive(Debug, Default)]
pub(super) struct Expansion {
    pub channels: Vec<ChannelResource>,
    pub subscriptions: Vec<(Subscription, Owner)>,
    /// Owner of each generated channel, by (namespace, name).
    pub channel_owners: BTreeMap<(String, String), Owner>,
    /// Every flow by (kind, namespace, name): the channel holding its
    /// address, `None` when the flow could not be expanded.
    pub addresses: BTreeMap<(FlowKind, String, String), Option<String>>,
    pub plans: Vec<FlowPlan>,
    pub problems: Vec<Problem>,
}

fn problem(kind: FlowKind, meta: &ObjectMeta, reason: &str, message: String) -> Problem {
    Problem {
        kind: kind.as_str().to_owned(),
        namespace: meta.namespace().to_owned(),
        name: meta.name.clone(),
        reason: reason.to_owned(),
        message,
    }
}

/// A destination naming the generated channel `name`.
fn channel_destination(name: &str) -> Destination {
    Destination {
        reference: Some(channel_ref(name)),
        ..Destination::default()
    }
}

fn channel_ref(name: &str) -> KReference {
    KReference {
        api_version: Some(MESSAGING_V1.to_owned()),
        kind: ChannelKind::Channel.as_str().to_owned(),
        name: name.to_owned(),
        namespace: None,
        group: None,
    }
}

/// Builds one flow's channels and subscriptions, refusing names a user's
/// resource already has.
struct Builder<'m> {
    m: &'m Manifests,
    kind: FlowKind,
    meta: &'m ObjectMeta,
    template: Option<&'m ChannelTemplate>,
    channels: Vec<ChannelResource>,
    subscriptions: Vec<(Subscription, Owner)>,
}

impl<'m> Builder<'m> {
    fn namespace(&self) -> &str {
        self.meta.namespace()
    }

    fn channel(&mut self, name: String) -> Result<(), (String, String)> {
        let ns = self.namespace().to_owned();
        if self
            .m
            .channels
            .iter()
            .any(|c| c.metadata.namespace() == ns && c.metadata.name == name)
        {
            return Err((
                "ChannelNameTaken".into(),
                format!(
                    "a channel {ns}/{name} exists already; the {} needs that name",
                    self.kind.as_str()
                ),
            ));
        }
        let mut channel = ChannelResource {
            kind: ChannelKind::Channel,
            metadata: ObjectMeta {
                uid: Some(stable_uid("Channel", &ns, &name)),
                name,
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            template: None,
            provisioner: None,
            delivery: None,
            parameters: BTreeMap::new(),
        };
        if let Some(t) = self.template {
            apply_template(&mut channel, t.clone()).map_err(|e| {
                (
                    "InvalidChannelTemplate".to_owned(),
                    format!("spec.channelTemplate: {e}"),
                )
            })?;
        }
        self.channels.push(channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn subscription(
        &mut self,
        name: String,
        channel: &str,
        subscriber: Option<Destination>,
        reply: Option<Destination>,
        delivery: Option<DeliverySpec>,
        field: String,
    ) -> Result<(), (String, String)> {
        let ns = self.namespace().to_owned();
        if self
            .m
            .subscriptions
            .iter()
            .any(|s| s.metadata.namespace() == ns && s.metadata.name == name)
        {
            return Err((
                "SubscriptionNameTaken".into(),
                format!(
                    "a subscription {ns}/{name} exists already; the {} needs that name",
                    self.kind.as_str()
                ),
            ));
        }
        let sub = Subscription {
            metadata: ObjectMeta {
                uid: Some(stable_uid("Subscription", &ns, &name)),
                generation: self.meta.generation,
                name,
                namespace: Some(ns),
                ..ObjectMeta::default()
            },
            spec: SubscriptionSpec {
                channel: channel_ref(channel),
                subscriber,
                reply,
                delivery,
            },
        };
        let owner = Owner {
            kind: self.kind,
            name: self.meta.name.clone(),
            field,
        };
        self.subscriptions.push((sub, owner));
        Ok(())
    }
}

fn sequence<'m>(m: &'m Manifests, s: &'m Sequence) -> Result<Builder<'m>, (String, String)> {
    let mut b = Builder {
        m,
        kind: FlowKind::Sequence,
        meta: &s.metadata,
        template: s.spec.channel_template.as_ref(),
        channels: Vec::new(),
        subscriptions: Vec::new(),
    };
    let name = &s.metadata.name;
    let last = s.spec.steps.len().saturating_sub(1);
    for (i, step) in s.spec.steps.iter().enumerate() {
        let step_name = sequence_step_name(name, i);
        b.channel(step_name.clone())?;
        let reply = if i == last {
            s.spec.reply.clone()
        } else {
            Some(channel_destination(&sequence_step_name(name, i + 1)))
        };
        b.subscription(
            step_name.clone(),
            &step_name,
            Some(step.destination()),
            reply,
            step.delivery.clone(),
            format!("spec.steps[{i}]"),
        )?;
    }
    Ok(b)
}

fn parallel<'m>(m: &'m Manifests, p: &'m Parallel) -> Result<Builder<'m>, (String, String)> {
    let mut b = Builder {
        m,
        kind: FlowKind::Parallel,
        meta: &p.metadata,
        template: p.spec.channel_template.as_ref(),
        channels: Vec::new(),
        subscriptions: Vec::new(),
    };
    let name = &p.metadata.name;
    let ingress = parallel_ingress_name(name);
    b.channel(ingress.clone())?;
    for (i, branch) in p.spec.branches.iter().enumerate() {
        let branch_channel = parallel_branch_name(name, i);
        b.channel(branch_channel.clone())?;
        b.subscription(
            parallel_filter_name(name, i),
            &ingress,
            branch.filter.clone(),
            Some(channel_destination(&branch_channel)),
            branch.delivery.clone(),
            format!("spec.branches[{i}].filter"),
        )?;
        b.subscription(
            branch_channel.clone(),
            &branch_channel,
            Some(branch.subscriber.clone()),
            branch.reply.clone().or_else(|| p.spec.reply.clone()),
            branch.delivery.clone(),
            format!("spec.branches[{i}].subscriber"),
        )?;
    }
    Ok(b)
}

/// Expand the Sequences and Parallels of `m`.
pub(super) fn expand(m: &Manifests) -> Expansion {
    let mut out = Expansion::default();
    let built = m
        .sequences
        .iter()
        .map(|s| (FlowKind::Sequence, &s.metadata, sequence(m, s)))
        .chain(
            m.parallels
                .iter()
                .map(|p| (FlowKind::Parallel, &p.metadata, parallel(m, p))),
        );
    for (kind, meta, result) in built {
        let ns = meta.namespace().to_owned();
        let key = (kind, ns.clone(), meta.name.clone());
        let b = match result {
            Ok(b) => b,
            Err((reason, message)) => {
                out.problems.push(problem(kind, meta, &reason, message));
                out.addresses.insert(key, None);
                continue;
            }
        };
        let mut plan = FlowPlan {
            kind,
            namespace: ns.clone(),
            name: meta.name.clone(),
            generation: meta.generation.unwrap_or(1),
            address_channel: b.channels[0].metadata.name.clone(),
            steps: Vec::new(),
            branches: Vec::new(),
        };
        match kind {
            FlowKind::Sequence => {
                plan.steps = b
                    .channels
                    .iter()
                    .zip(&b.subscriptions)
                    .map(|(c, (s, _))| (c.metadata.name.clone(), s.metadata.name.clone()))
                    .collect();
            }
            FlowKind::Parallel => {
                plan.branches = b.channels[1..]
                    .iter()
                    .zip(b.subscriptions.chunks(2))
                    .map(|(c, subs)| BranchPlan {
                        filter_subscription: subs[0].0.metadata.name.clone(),
                        channel: c.metadata.name.clone(),
                        subscription: subs[1].0.metadata.name.clone(),
                    })
                    .collect();
            }
        }
        out.addresses
            .insert(key, Some(plan.address_channel.clone()));
        for (i, c) in b.channels.iter().enumerate() {
            let field = match (kind, i) {
                (FlowKind::Sequence, i) => format!("spec.steps[{i}]"),
                (FlowKind::Parallel, 0) => "spec".to_owned(),
                (FlowKind::Parallel, i) => format!("spec.branches[{}]", i - 1),
            };
            out.channel_owners.insert(
                (ns.clone(), c.metadata.name.clone()),
                Owner {
                    kind,
                    name: meta.name.clone(),
                    field,
                },
            );
        }
        out.channels.extend(b.channels);
        out.subscriptions.extend(b.subscriptions);
        out.plans.push(plan);
    }
    out
}

#[cfg(test)]
mod tests;

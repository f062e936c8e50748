//! Sequences and Parallels on Kubernetes (see `docs/kubernetes-flows.md`).
//!
//! A flow compiles, as in every run mode, into channels and subscriptions
//! with Knative's generated names (`<seq>-kn-sequence-<i>`,
//! `<par>-kn-parallel[-<i>]`, `<par>-kn-parallel-filter-<i>`). On Kubernetes
//! they live in the contract, as a broker's channel does, not as API
//! objects: the flow owns them the way a Deployment owns its pods' specs,
//! and its status lists them by those names. What is an API object is each
//! generated channel's `<channel>-kn-channel` ExternalName Service, owned by
//! the flow (label `flows.knative.dev/sequence` or `.../parallel`), so the
//! flow's address and the replies between steps resolve in the cluster.
//!
//! A step, branch or reply that references a Service or another
//! Addressable is resolved through the API before compiling; one that
//! cannot be is reported in the flow's `SubscriptionsReady` condition
//! naming the field (`spec.steps[1] (subscription …)`), while the flow's
//! channels, and the events in them, stay served.
//!
//! Every live flow carries [`FLOW_FINALIZER`]. A deleted flow leaves the
//! contract first; once its dispatcher applied that, the backing topics or
//! streams of its channels are deleted and the finalizer removed.

use super::{
    class_manifests, document, has_finalizer, is_live, kind_of, merge, note, problem, Controller,
    Snapshot,
};
use crate::cycle::dispatcher_released;
use crate::kubernetes::crd;
use crate::reconcile::{ChannelKey, Plan};
use crate::status::DispatcherObservation;
use channel_core::compile::{compile, FlowKind, Problem};
use channel_core::flows::{
    parallel_branch_name, parallel_filter_name, parallel_ingress_name, sequence_step_name,
};
use channel_core::manifests::{load_str, Manifests};
use channel_core::resources::Destination;
use channel_core::{BackendKind, ChannelContract, Contract};
use kube::api::{ApiResource, DynamicObject};
use kube::ResourceExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// Held by every Sequence and Parallel until the backing resources of its
/// channels are deleted.
pub const FLOW_FINALIZER: &str = "flows.knative.dev/channel-provisioner";
/// The API version flows are read and written in.
const FLOWS_V1: &str = "flows.knative.dev/v1";

/// The API resource of Sequences.
pub fn sequence_resource() -> ApiResource {
    ApiResource::erase::<crd::Sequence>(&())
}

/// The API resource of Parallels.
pub fn parallel_resource() -> ApiResource {
    ApiResource::erase::<crd::Parallel>(&())
}

/// Every flow of the snapshot with its kind.
pub(super) fn all_flows(snap: &Snapshot) -> impl Iterator<Item = (FlowKind, &DynamicObject)> {
    snap.sequences
        .iter()
        .map(|o| (FlowKind::Sequence, o))
        .chain(snap.parallels.iter().map(|o| (FlowKind::Parallel, o)))
}

/// The live flow `kind` `namespace/name` of the snapshot.
pub(super) fn find_flow<'a>(
    snap: &'a Snapshot,
    kind: FlowKind,
    namespace: &str,
    name: &str,
) -> Option<&'a DynamicObject> {
    all_flows(snap)
        .find(|(k, o)| {
            *k == kind && o.namespace().as_deref() == Some(namespace) && o.name_any() == name
        })
        .map(|(_, o)| o)
        .filter(|o| is_live(o))
}

/// Whether `channel` is one a flow named `name` of `kind` generates:
/// `<name>-kn-sequence-<i>`, or `<name>-kn-parallel` and
/// `<name>-kn-parallel-<i>`.
pub(super) fn generated_by(kind: FlowKind, name: &str, channel: &str) -> bool {
    let index = |rest: &str| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    match kind {
        FlowKind::Sequence => channel
            .strip_prefix(&format!("{name}-kn-sequence-"))
            .is_some_and(index),
        FlowKind::Parallel => {
            let ingress = parallel_ingress_name(name);
            channel == ingress
                || channel
                    .strip_prefix(&format!("{ingress}-"))
                    .is_some_and(index)
        }
    }
}

/// Whether the contract entry `c` is a channel of the flow.
fn of_flow(c: &ChannelContract, kind: FlowKind, namespace: &str, name: &str) -> bool {
    c.broker.is_none() && c.namespace == namespace && generated_by(kind, name, &c.name)
}

/// The flow owning the planned channel `namespace/channel`, if any.
pub(super) fn flow_of_channel<'p>(
    plan: &'p Plan,
    namespace: &str,
    channel: &str,
) -> Option<(FlowKind, &'p str)> {
    plan.flows
        .iter()
        .find(|f| {
            f.namespace == namespace
                && (f.address_channel == channel
                    || f.steps.iter().any(|(c, _)| c == channel)
                    || f.branches.iter().any(|b| b.channel == channel))
        })
        .map(|f| (f.kind, f.name.as_str()))
}

/// The label a flow's Services carry (`flows.knative.dev/sequence: NAME`).
pub(super) fn service_label(kind: FlowKind) -> &'static str {
    match kind {
        FlowKind::Sequence => "flows.knative.dev/sequence",
        FlowKind::Parallel => "flows.knative.dev/parallel",
    }
}

/// A destination field of a flow's spec: where it is (a JSON pointer), the
/// field as users read it, and the generated subscription it becomes part
/// of.
struct Field {
    pointer: String,
    path: String,
    subscription: String,
}

/// The destinations of a flow's spec that may need resolving.
fn destination_fields(kind: FlowKind, name: &str, spec: &Value) -> Vec<Field> {
    let mut out = Vec::new();
    let mut push = |pointer: String, path: String, subscription: String| {
        if spec.pointer(&pointer).is_some_and(Value::is_object) {
            out.push(Field {
                pointer,
                path,
                subscription,
            });
        }
    };
    match kind {
        FlowKind::Sequence => {
            let steps = spec["steps"].as_array().map_or(0, Vec::len);
            for i in 0..steps {
                let sub = sequence_step_name(name, i);
                push(
                    format!("/steps/{i}"),
                    format!("spec.steps[{i}]"),
                    sub.clone(),
                );
                push(
                    format!("/steps/{i}/delivery/deadLetterSink"),
                    format!("spec.steps[{i}].delivery.deadLetterSink"),
                    sub,
                );
            }
            if steps > 0 {
                push(
                    "/reply".into(),
                    "spec.reply".into(),
                    sequence_step_name(name, steps - 1),
                );
            }
        }
        FlowKind::Parallel => {
            let branches = spec["branches"].as_array().map_or(0, Vec::len);
            for i in 0..branches {
                let filter = parallel_filter_name(name, i);
                let sub = parallel_branch_name(name, i);
                push(
                    format!("/branches/{i}/filter"),
                    format!("spec.branches[{i}].filter"),
                    filter,
                );
                for field in ["subscriber", "reply", "delivery/deadLetterSink"] {
                    push(
                        format!("/branches/{i}/{field}"),
                        format!("spec.branches[{i}].{}", field.replace('/', ".")),
                        sub.clone(),
                    );
                }
            }
            // The Parallel's reply is that of every branch without its own.
            for i in 0..branches {
                if spec.pointer(&format!("/branches/{i}/reply")).is_none() {
                    push(
                        "/reply".into(),
                        "spec.reply".into(),
                        parallel_branch_name(name, i),
                    );
                }
            }
        }
    }
    out
}

/// A flow's destination that cannot be resolved: the problem naming the
/// field, and the generated subscription that cannot be served for it.
pub(super) struct Unresolved {
    pub problem: Problem,
    pub subscription: String,
}

impl Unresolved {
    /// Take the subscription out of the plan (compile, which knows no
    /// cluster, may have resolved the reference by its name alone).
    pub(super) fn unplan(&self, plan: &mut Plan) {
        for c in &mut plan.channels {
            if c.contract.namespace == self.problem.namespace {
                c.contract
                    .subscriptions
                    .retain(|s| s.name != self.subscription || s.trigger.is_some());
            }
        }
    }
}

/// Write a resolved destination back into its place, keeping the other
/// keys there (a step's `delivery`).
fn put_destination(slot: &mut Value, dest: &Destination) {
    let Some(object) = slot.as_object_mut() else {
        return;
    };
    object.remove("ref");
    if let Some(uri) = &dest.uri {
        object.insert("uri".into(), Value::String(uri.clone()));
    }
}

impl Controller {
    /// The live flows into `manifests`, their destinations resolved. A
    /// destination that cannot be resolved is returned with the generated
    /// subscription it belongs to: that one is not served, and the problem
    /// (naming the field) is reported ahead of the compiler's.
    pub(super) async fn flow_manifests(
        &self,
        snap: &Snapshot,
        manifests: &mut Manifests,
        problems: &mut Vec<Problem>,
    ) -> Vec<Unresolved> {
        let mut unresolved = Vec::new();
        for (kind, flow) in all_flows(snap) {
            if !is_live(flow) {
                continue;
            }
            let ns = flow.namespace().unwrap_or_default();
            let name = flow.name_any();
            let mut spec = flow.data.get("spec").cloned().unwrap_or(Value::Null);
            for field in destination_fields(kind, &name, &spec) {
                let Some(slot) = spec.pointer(&field.pointer) else {
                    continue;
                };
                // A step is a destination plus its own delivery.
                let mut inline = slot.clone();
                if let Some(o) = inline.as_object_mut() {
                    o.remove("delivery");
                }
                // A malformed destination is the loader's to report.
                let Ok(mut dest) = serde_json::from_value::<Destination>(inline) else {
                    continue;
                };
                match self.resolve(snap, &ns, &mut dest).await {
                    // Resolved to a URI (references compile resolves itself
                    // stay as written).
                    Ok(()) if dest.reference.is_none() => {
                        if let Some(slot) = spec.pointer_mut(&field.pointer) {
                            put_destination(slot, &dest);
                        }
                    }
                    Ok(()) => {}
                    Err(message) => unresolved.push(Unresolved {
                        problem: problem(
                            kind.as_str(),
                            &flow.metadata,
                            "DestinationResolveFailed",
                            format!(
                                "{} (subscription {}): {message}",
                                field.path, field.subscription
                            ),
                        ),
                        subscription: field.subscription,
                    }),
                }
            }
            let doc = document(FLOWS_V1, kind.as_str(), &flow.metadata, &spec);
            match load_str(&format!("{} {ns}/{name}", kind.as_str()), &doc) {
                Ok(m) => merge(manifests, m),
                Err(e) => problems.push(problem(
                    kind.as_str(),
                    &flow.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
        unresolved
    }

    /// The contracts of a deleting flow's channels: those served, else
    /// compiled from its spec (a controller restarted after the contract
    /// dropped them still deletes their topics or streams).
    fn contracts_of_deleting_flow(
        &self,
        kind: FlowKind,
        flow: &DynamicObject,
        snap: &Snapshot,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
    ) -> (Vec<ChannelContract>, bool) {
        let ns = flow.namespace().unwrap_or_default();
        let name = flow.name_any();
        let served: Vec<ChannelContract> = previous
            .values()
            .filter(|c| of_flow(c, kind, &ns, &name))
            .cloned()
            .collect();
        if !served.is_empty() {
            return (served, true);
        }
        let mut manifests = class_manifests(snap);
        let spec = flow.data.get("spec").cloned().unwrap_or(Value::Null);
        let doc = document(FLOWS_V1, kind.as_str(), &flow.metadata, &spec);
        let Ok(m) = load_str("flow", &doc) else {
            return (Vec::new(), false);
        };
        merge(&mut manifests, m);
        let compiled = compile(&manifests)
            .contracts
            .into_values()
            .flat_map(|c| c.channels)
            .filter(|c| of_flow(c, kind, &ns, &name))
            .collect();
        (compiled, false)
    }

    /// Step 7 for flows: once the dispatchers applied contracts without a
    /// deleted flow's channels, their backing resources are deleted and the
    /// finalizer removed. Whether one waits.
    pub(super) async fn release_flows(
        &mut self,
        snap: &Snapshot,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
        dispatchers: &BTreeMap<BackendKind, DispatcherObservation>,
        errors: &mut Vec<String>,
    ) -> bool {
        let in_force: BTreeMap<BackendKind, Contract> = self.current_contracts(snap);
        let mut waiting = false;
        for (kind, flow) in all_flows(snap) {
            if is_live(flow) || !has_finalizer(flow, FLOW_FINALIZER) {
                continue;
            }
            let ns = flow.namespace().unwrap_or_default();
            let name = flow.name_any();
            let key: ChannelKey = (ns.clone(), name.clone(), kind.as_str().into());
            let since = *self
                .deleting_since
                .entry(key.clone())
                .or_insert_with(Instant::now);
            let (channels, served) = self.contracts_of_deleting_flow(kind, flow, snap, previous);
            let listed = |c: &ChannelContract| of_flow(c, kind, &ns, &name);
            let released = channels.iter().all(|c| {
                !in_force
                    .get(&c.backend)
                    .is_some_and(|contract| contract.channels.iter().any(listed))
                    && dispatcher_released(
                        dispatchers.get(&c.backend),
                        self.written.get(&c.backend).map(|w| w.generation),
                        since,
                    )
            });
            if served && !released {
                tracing::debug!(flow = %format!("{} {ns}/{name}", kind.as_str()), "deletion waits for the dispatcher to stop serving the flow's channels");
                waiting = true;
                continue;
            }
            let mut failed = false;
            for contract in &channels {
                match self.cycle.provisioner.deprovision(contract).await {
                    Ok(()) => {
                        tracing::info!(flow = %format!("{} {ns}/{name}", kind.as_str()), channel = %contract.key(), backend = %contract.backend, "backing resource deleted")
                    }
                    Err(e) => {
                        tracing::warn!(channel = %contract.key(), error = %e, "deleting the backing resource failed; the finalizer stays");
                        errors.push(format!("deleting {}: {e}", contract.key()));
                        failed = true;
                    }
                }
            }
            if failed {
                continue;
            }
            if self
                .release_finalizer(flow, kind.as_str(), FLOW_FINALIZER, errors)
                .await
            {
                for c in &channels {
                    self.services
                        .remove(&(ns.clone(), format!("{}-kn-channel", c.name)));
                }
                self.deleting_since.remove(&key);
            }
        }
        waiting
    }

    /// Step 1 for flows: the finalizer on every live one.
    pub(super) async fn hold_flow_finalizers(&self, snap: &Snapshot, errors: &mut Vec<String>) {
        for (kind, flow) in all_flows(snap) {
            if !is_live(flow) || has_finalizer(flow, FLOW_FINALIZER) {
                continue;
            }
            let mut finalizers = flow.finalizers().to_vec();
            finalizers.push(FLOW_FINALIZER.into());
            if let Err(e) = self
                .set_finalizers_of(kind.as_str(), flow, finalizers)
                .await
            {
                note(
                    errors,
                    format!(
                        "adding the finalizer to {} {}/{}",
                        kind_of(flow),
                        flow.namespace().unwrap_or_default(),
                        flow.name_any()
                    ),
                    e,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_channel_names_belong_to_their_flow_only() {
        assert!(generated_by(FlowKind::Sequence, "s", "s-kn-sequence-0"));
        assert!(generated_by(FlowKind::Sequence, "s", "s-kn-sequence-12"));
        assert!(!generated_by(FlowKind::Sequence, "s", "s-kn-sequence-"));
        assert!(!generated_by(FlowKind::Sequence, "s", "s-kn-sequence-x"));
        assert!(!generated_by(FlowKind::Sequence, "s", "t-kn-sequence-0"));
        // `a` must not claim `a-b`'s channels.
        assert!(!generated_by(FlowKind::Sequence, "a", "a-b-kn-sequence-0"));
        assert!(generated_by(FlowKind::Parallel, "p", "p-kn-parallel"));
        assert!(generated_by(FlowKind::Parallel, "p", "p-kn-parallel-3"));
        assert!(!generated_by(
            FlowKind::Parallel,
            "p",
            "p-kn-parallel-filter-0"
        ));
        assert!(!generated_by(FlowKind::Parallel, "p", "p-kn-parallelx"));
    }

    #[test]
    fn every_destination_of_a_flow_is_found_with_its_subscription() {
        let spec = serde_json::json!({
            "steps": [
                {"ref": {"kind": "Service", "name": "a"}, "delivery": {"deadLetterSink": {"uri": "http://d/"}}},
                {"uri": "http://b/"},
            ],
            "reply": {"uri": "http://r/"},
        });
        let fields: Vec<(String, String)> = destination_fields(FlowKind::Sequence, "s", &spec)
            .into_iter()
            .map(|f| (f.path, f.subscription))
            .collect();
        assert_eq!(
            fields,
            [
                ("spec.steps[0]".into(), "s-kn-sequence-0".into()),
                (
                    "spec.steps[0].delivery.deadLetterSink".into(),
                    "s-kn-sequence-0".into()
                ),
                ("spec.steps[1]".into(), "s-kn-sequence-1".into()),
                ("spec.reply".into(), "s-kn-sequence-1".into()),
            ]
        );
        let spec = serde_json::json!({
            "branches": [
                {"filter": {"uri": "http://f/"}, "subscriber": {"uri": "http://s/"}, "reply": {"uri": "http://r/"}},
                {"subscriber": {"uri": "http://t/"}},
            ],
            "reply": {"uri": "http://all/"},
        });
        let fields: Vec<(String, String)> = destination_fields(FlowKind::Parallel, "p", &spec)
            .into_iter()
            .map(|f| (f.path, f.subscription))
            .collect();
        assert_eq!(
            fields,
            [
                (
                    "spec.branches[0].filter".into(),
                    "p-kn-parallel-filter-0".into()
                ),
                (
                    "spec.branches[0].subscriber".into(),
                    "p-kn-parallel-0".into()
                ),
                ("spec.branches[0].reply".into(), "p-kn-parallel-0".into()),
                (
                    "spec.branches[1].subscriber".into(),
                    "p-kn-parallel-1".into()
                ),
                // The Parallel's reply stands for branch 1's only.
                ("spec.reply".into(), "p-kn-parallel-1".into()),
            ]
        );
    }

    #[test]
    fn a_resolved_step_keeps_its_delivery() {
        let mut step = serde_json::json!({"ref": {"kind": "Service", "name": "a"}, "uri": "/x", "delivery": {"retry": 2}});
        put_destination(
            &mut step,
            &Destination {
                uri: Some("http://a.shop.svc.cluster.local/x".into()),
                ..Destination::default()
            },
        );
        assert_eq!(
            step,
            serde_json::json!({"uri": "http://a.shop.svc.cluster.local/x", "delivery": {"retry": 2}})
        );
    }
}

//! Event sources on Kubernetes (see `docs/kubernetes-sources.md`).
//!
//! * **PingSource** (and the seeds' CronJobSource) and **ApiServerSource**
//!   (both versions) run in one multi-tenant `source-adapter` (the
//!   StatefulSet `source-adapter` in the system namespace): the controller
//!   resolves their sinks and writes the sources contract into the
//!   ConfigMap [`SOURCES_CONTRACT_MAP`] the adapter mounts, and reads the
//!   adapter's `/status` for their `Deployed` condition.
//! * **GitHubSource**, **GitLabSource** and **KafkaSource** run in the same
//!   adapter, from the same contract: the webhook sources on its webhook
//!   listener (`/<namespace>/<name>`), KafkaSources as consumers. The
//!   webhooks are registered with GitHub and GitLab by the controller (see
//!   [`super::webhooks`]).
//! * **ContainerSource** becomes a Deployment `<name>-deployment` owned by
//!   the source (Knative's name and labels), its containers given `K_SINK`
//!   and `K_CE_OVERRIDES`; `Deployed` follows the Deployment's available
//!   replicas.
//! * **SinkBinding** puts `K_SINK` and `K_CE_OVERRIDES` into the pod
//!   template of its subject (by name or label selector; Deployments,
//!   StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Knative
//!   Services — anything with a pod template) by server-side apply under a
//!   field manager of its own, so nothing else of the subject is touched,
//!   and takes them out again when it is deleted (finalizer
//!   [`SINK_BINDING_FINALIZER`]).
//!
//! A sink referencing a Service or another Addressable is resolved through
//! the API first; one that cannot be makes the source `SinkProvided=False`
//! naming `spec.sink`. An ApiServerSource whose `serviceAccountName` does
//! not exist is `Deployed=False`, reason `ServiceAccountNotFound`, and not
//! run (the shared adapter watches with its own identity; the account is
//! checked so that a source that could not run on Knative does not run
//! here either).

use super::{
    api_version_of, document, has_finalizer, is_live, kind_of, merge, note, problem, Controller,
    Snapshot, MANAGER,
};
use crate::kubernetes::crd;
use crate::reconcile::Plan;
use crate::status::sources::{AdapterObservation, AdapterReport};
use crate::status::{summarize, Condition, ConditionStatus, ResourceStatus};
use channel_core::compile::{Problem, LOCAL_RUN_UNAVAILABLE};
use channel_core::manifests::{load_str, Manifests};
use channel_core::sources::apiserver::legacy_sink;
use channel_core::sources::container::sink_environment;
use channel_core::sources::{CloudEventOverrides, SourceSettings, SourcesContract};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The ConfigMap holding the source adapter's contract (key
/// [`SOURCES_CONTRACT_KEY`]).
pub const SOURCES_CONTRACT_MAP: &str = "source-adapter-contract";
pub const SOURCES_CONTRACT_KEY: &str = "sources.json";
/// Held by every SinkBinding until its environment is out of its subjects.
pub const SINK_BINDING_FINALIZER: &str = "sources.knative.dev/sinkbinding";
/// Knative's labels on a ContainerSource's Deployment.
const SOURCE_LABEL: &str = "sources.knative.dev/source";
const CONTAINER_SOURCE_LABEL: &str = "sources.knative.dev/containerSource";
const CONTAINER_SOURCE_CONTROLLER: &str = "container-source-controller";

/// The API resource of every source kind.
pub fn source_resources() -> [ApiResource; 9] {
    [
        ApiResource::erase::<crd::PingSource>(&()),
        ApiResource::erase::<crd::ApiServerSource>(&()),
        ApiResource::erase::<crd::ContainerSource>(&()),
        ApiResource::erase::<crd::SinkBinding>(&()),
        ApiResource::erase::<crd::CronJobSource>(&()),
        ApiResource::erase::<crd::LegacyApiServerSource>(&()),
        ApiResource::erase::<crd::GitHubSource>(&()),
        ApiResource::erase::<crd::GitLabSource>(&()),
        ApiResource::erase::<crd::KafkaSource>(&()),
    ]
}

/// The resource of a source object (by kind and group).
pub(super) fn resource_of_source(kind: &str, api_version: &str) -> Option<ApiResource> {
    source_resources()
        .into_iter()
        .find(|ar| ar.kind == kind && (api_version.is_empty() || ar.api_version == api_version))
}

/// The kind status rows use for a source object: the seeds' CronJobSource
/// is reported as what it runs as, a PingSource.
fn row_kind(o: &DynamicObject) -> String {
    match kind_of(o).as_str() {
        "CronJobSource" => "PingSource".into(),
        k => k.into(),
    }
}

/// The live source `kind` `namespace/name` (a status row's object).
pub(super) fn find_source<'a>(
    snap: &'a Snapshot,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<&'a DynamicObject> {
    snap.sources.iter().find(|o| {
        is_live(o)
            && o.namespace().as_deref() == Some(namespace)
            && o.name_any() == name
            && (kind_of(o) == kind || row_kind(o) == kind)
    })
}

/// `<name>-deployment`, as Knative names a ContainerSource's Deployment.
pub fn deployment_name(source: &str) -> String {
    format!("{source}-deployment")
}

/// The environment a ContainerSource or SinkBinding gives its program.
fn contract_env(sink: &Url, spec: &Value) -> Vec<Value> {
    let overrides: Option<CloudEventOverrides> = spec
        .get("ceOverrides")
        .and_then(|o| serde_json::from_value(o.clone()).ok());
    sink_environment(sink.as_str(), overrides.as_ref(), None)
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect()
}

/// `containers` of a pod template with the contract's environment set
/// (replacing entries of the same names).
fn with_env(containers: &Value, env: &[Value]) -> Value {
    let names: Vec<&Value> = env.iter().map(|e| &e["name"]).collect();
    let mut out = containers.clone();
    if let Some(list) = out.as_array_mut() {
        for c in list {
            let mut entries: Vec<Value> = c["env"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !names.contains(&&e["name"]))
                .collect();
            entries.extend(env.iter().cloned());
            c["env"] = Value::Array(entries);
        }
    }
    out
}

/// Where a kind keeps its pod template's containers.
fn containers_pointer(kind: &str) -> &'static str {
    match kind {
        "CronJob" => "/spec/jobTemplate/spec/template/spec/containers",
        _ => "/spec/template/spec/containers",
    }
}

/// A patch that sets `env` in every container of `object`'s pod template
/// (by container name, the list's merge key), and nothing else.
fn binding_patch(object: &DynamicObject, env: &[Value]) -> Value {
    let kind = kind_of(object);
    let pointer = containers_pointer(&kind);
    let containers: Vec<Value> = object
        .data
        .pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| json!({"name": c["name"], "env": env}))
        .collect();
    let mut patch = json!({
        "apiVersion": api_version_of(object),
        "kind": kind,
        "metadata": {"name": object.name_any(), "namespace": object.namespace()},
    });
    // Build the nested path down to `containers`.
    let mut at = &mut patch;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            at[*part] = Value::Array(containers.clone());
        } else {
            at = &mut at[*part];
        }
    }
    patch
}

/// Whether every container of `object`'s pod template already carries
/// exactly `env` (an empty `env`: none of the contract's variables), so a
/// round that changes nothing writes nothing.
fn has_env(object: &DynamicObject, env: &[Value]) -> bool {
    let containers = object
        .data
        .pointer(containers_pointer(&kind_of(object)))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    containers.iter().all(|c| {
        let present = c["env"].as_array().cloned().unwrap_or_default();
        if env.is_empty() {
            return !present.iter().any(|e| {
                ["K_SINK", "K_CE_OVERRIDES", "K_CA_CERTS"]
                    .contains(&e["name"].as_str().unwrap_or(""))
            });
        }
        env.iter().all(|e| present.contains(e))
    })
}

impl Controller {
    /// The live sources into `manifests`, their sinks resolved; one that
    /// cannot be resolved or read, as a problem.
    pub(super) async fn source_manifests(
        &self,
        snap: &Snapshot,
        manifests: &mut Manifests,
        problems: &mut Vec<Problem>,
    ) {
        for source in snap.sources.iter().filter(|s| is_live(s)) {
            let kind = kind_of(source);
            let ns = source.namespace().unwrap_or_default();
            let mut spec = source.data.get("spec").cloned().unwrap_or(Value::Null);
            // An ApiServerSource naming a ServiceAccount that does not exist
            // would not run on Knative either: say so, and do not run it.
            if let Some(account) = spec["serviceAccountName"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
                if let Ok(None) = api.get_opt(account).await {
                    problems.push(problem(
                        &row_kind(source),
                        &source.metadata,
                        "ServiceAccountNotFound",
                        format!(
                            "spec.serviceAccountName: ServiceAccount {ns}/{account} does not exist"
                        ),
                    ));
                    continue;
                }
            }
            // A malformed sink is the loader's to report.
            if let Some(Ok(mut dest)) = spec.get("sink").cloned().map(legacy_sink) {
                match self.resolve(snap, &ns, &mut dest).await {
                    Ok(()) => spec["sink"] = serde_json::to_value(&dest).unwrap_or_default(),
                    Err(message) => {
                        problems.push(problem(
                            &row_kind(source),
                            &source.metadata,
                            "SinkResolveFailed",
                            format!("spec.sink: {message}"),
                        ));
                        continue;
                    }
                }
            }
            let doc = document(&api_version_of(source), &kind, &source.metadata, &spec);
            match load_str(&format!("{kind} {ns}/{}", source.name_any()), &doc) {
                Ok(m) => merge(manifests, m),
                Err(e) => problems.push(problem(
                    &row_kind(source),
                    &source.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
    }

    /// The sources contract ConfigMap: the PingSources, ApiServerSources,
    /// GitHubSources, GitLabSources and KafkaSources the adapter runs
    /// (ContainerSources are Deployments here).
    pub(super) async fn apply_sources_contract(
        &mut self,
        snap: &Snapshot,
        plan: &Plan,
        errors: &mut Vec<String>,
    ) {
        let sources: Vec<_> = plan
            .sources
            .iter()
            .filter(|s| !matches!(s.settings, SourceSettings::ContainerSource(_)))
            .cloned()
            .collect();
        let current = snap
            .contract_maps
            .iter()
            .chain(self.sources_map.iter())
            .find(|m| m.metadata.name.as_deref() == Some(SOURCES_CONTRACT_MAP))
            .and_then(|m| m.data.as_ref()?.get(SOURCES_CONTRACT_KEY).cloned())
            .and_then(|t| SourcesContract::from_json(t.as_bytes()).ok());
        let mut next = SourcesContract {
            generation: current.as_ref().map_or(0, |c| c.generation),
            sources,
        };
        if current.as_ref().is_some_and(|c| c.same_content(&next)) {
            return;
        }
        next.generation += 1;
        let map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": SOURCES_CONTRACT_MAP,
                "namespace": self.settings.namespace,
                "labels": {super::CONTRACT_LABEL: "sources", "app.kubernetes.io/managed-by": MANAGER},
            },
            "data": {SOURCES_CONTRACT_KEY: next.to_json_pretty()},
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        match api
            .patch(
                SOURCES_CONTRACT_MAP,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(map),
            )
            .await
        {
            Ok(written) => {
                tracing::info!(
                    generation = next.generation,
                    sources = next.sources.len(),
                    "sources contract written"
                );
                self.sources_map = Some(written);
            }
            Err(e) => note(errors, "writing the sources contract".into(), e),
        }
    }

    /// Each ContainerSource's Deployment, applied when its spec or sink
    /// changed. The Deployments' readiness, by source uid.
    pub(super) async fn apply_container_sources(
        &mut self,
        snap: &Snapshot,
        plan: &Plan,
        errors: &mut Vec<String>,
    ) -> BTreeMap<String, Result<bool, String>> {
        let mut out = BTreeMap::new();
        for source in snap
            .sources
            .iter()
            .filter(|s| is_live(s) && kind_of(s) == "ContainerSource")
        {
            let ns = source.namespace().unwrap_or_default();
            let name = source.name_any();
            let key = ("ContainerSource".to_owned(), ns.clone(), name.clone());
            let Some(sink) = plan.source_sinks.get(&key) else {
                continue;
            };
            let spec = &source.data["spec"];
            let env = contract_env(sink, spec);
            let mut template = spec["template"].clone();
            let containers = with_env(&template["spec"]["containers"], &env);
            template["spec"]["containers"] = containers;
            let labels =
                json!({SOURCE_LABEL: CONTAINER_SOURCE_CONTROLLER, CONTAINER_SOURCE_LABEL: name});
            let mut template_labels = template["metadata"]["labels"].clone();
            if !template_labels.is_object() {
                template_labels = json!({});
            }
            for (k, v) in labels.as_object().into_iter().flatten() {
                template_labels[k] = v.clone();
            }
            template["metadata"]["labels"] = template_labels.clone();
            let deployment = json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": deployment_name(&name),
                    "namespace": ns,
                    "labels": template_labels,
                    "ownerReferences": [{
                        "apiVersion": api_version_of(source),
                        "kind": "ContainerSource",
                        "name": name,
                        "uid": source.uid().unwrap_or_default(),
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                },
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": template,
                },
            });
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                &ns,
                &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
            );
            let wanted = deployment.to_string();
            if self.deployments.get(&(ns.clone(), name.clone())) != Some(&wanted) {
                match api
                    .patch(
                        &deployment_name(&name),
                        &PatchParams::apply(MANAGER).force(),
                        &Patch::Apply(deployment),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(source = %format!("{ns}/{name}"), "ContainerSource deployment applied");
                        self.deployments.insert((ns.clone(), name.clone()), wanted);
                    }
                    Err(e) => {
                        note(
                            errors,
                            format!("applying the Deployment of ContainerSource {ns}/{name}"),
                            e,
                        );
                        out.insert(
                            source.uid().unwrap_or_default(),
                            Err("the Deployment cannot be applied".into()),
                        );
                        continue;
                    }
                }
            }
            let available = match api.get_opt(&deployment_name(&name)).await {
                Ok(Some(d)) => Ok(d.data["status"]["availableReplicas"].as_i64().unwrap_or(0) > 0),
                Ok(None) => Ok(false),
                Err(e) => Err(e.to_string()),
            };
            out.insert(source.uid().unwrap_or_default(), available);
        }
        out
    }

    /// The objects a SinkBinding's subject names.
    async fn subjects(&self, binding: &DynamicObject) -> Result<Vec<DynamicObject>, String> {
        let subject = &binding.data["spec"]["subject"];
        let api_version = subject["apiVersion"].as_str().unwrap_or_default();
        let kind = subject["kind"].as_str().unwrap_or_default();
        let ns = subject["namespace"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| binding.namespace())
            .unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let (ar, _) = kube::discovery::pinned_kind(
            &self.client,
            &GroupVersionKind::gvk(group, version, kind),
        )
        .await
        .map_err(|e| {
            format!("spec.subject: {api_version} {kind} is not served by the cluster: {e}")
        })?;
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        if let Some(name) = subject["name"].as_str() {
            return match api.get_opt(name).await {
                Ok(Some(o)) => Ok(vec![o]),
                Ok(None) => Err(format!("spec.subject: {kind} {ns}/{name} does not exist")),
                Err(e) => Err(format!("spec.subject: reading {kind} {ns}/{name}: {e}")),
            };
        }
        let selector: channel_core::sources::apiserver::LabelSelector =
            serde_json::from_value(subject["selector"].clone()).unwrap_or_default();
        let query = selector
            .to_query("spec.subject.selector")
            .map_err(|e| format!("{}: {}", e.path, e.message))?;
        api.list(&ListParams::default().labels(&query))
            .await
            .map(|l| l.items)
            .map_err(|e| format!("spec.subject: listing {kind} in {ns}: {e}"))
    }

    /// Apply (or, with `env` empty, take back) a binding's environment in
    /// its subjects, as the binding's own field manager.
    async fn bind(&self, binding: &DynamicObject, env: &[Value]) -> Result<usize, String> {
        let manager = format!(
            "sinkbinding.{}.{}",
            binding.namespace().unwrap_or_default(),
            binding.name_any()
        );
        let subjects = self.subjects(binding).await?;
        for subject in &subjects {
            if has_env(subject, env) {
                continue;
            }
            let ar = ApiResource::from_gvk(
                &GroupVersionKind::try_from(
                    subject.types.as_ref().ok_or("subject without a type")?,
                )
                .map_err(|e| e.to_string())?,
            );
            let api: Api<DynamicObject> = Api::namespaced_with(
                self.client.clone(),
                &subject.namespace().unwrap_or_default(),
                &ar,
            );
            api.patch(
                &subject.name_any(),
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(binding_patch(subject, env)),
            )
            .await
            .map_err(|e| format!("binding {} {}: {e}", kind_of(subject), subject.name_any()))?;
        }
        Ok(subjects.len())
    }

    /// Every SinkBinding's environment in its subjects; deleted bindings'
    /// taken out, then their finalizer removed. Availability by uid.
    pub(super) async fn apply_sink_bindings(
        &mut self,
        snap: &Snapshot,
        plan: &Plan,
        errors: &mut Vec<String>,
    ) -> BTreeMap<String, Result<usize, String>> {
        let mut out = BTreeMap::new();
        for binding in snap.sources.iter().filter(|s| kind_of(s) == "SinkBinding") {
            let ns = binding.namespace().unwrap_or_default();
            let name = binding.name_any();
            if !is_live(binding) {
                if !has_finalizer(binding, SINK_BINDING_FINALIZER) {
                    continue;
                }
                match self.bind(binding, &[]).await {
                    Ok(_) => {
                        self.release_finalizer(
                            binding,
                            "SinkBinding",
                            SINK_BINDING_FINALIZER,
                            errors,
                        )
                        .await;
                    }
                    Err(e) => errors.push(format!("unbinding SinkBinding {ns}/{name}: {e}")),
                }
                continue;
            }
            if !has_finalizer(binding, SINK_BINDING_FINALIZER) {
                let mut finalizers = binding.finalizers().to_vec();
                finalizers.push(SINK_BINDING_FINALIZER.into());
                if let Err(e) = self
                    .set_finalizers_of("SinkBinding", binding, finalizers)
                    .await
                {
                    note(
                        errors,
                        format!("adding the finalizer to SinkBinding {ns}/{name}"),
                        e,
                    );
                }
            }
            let Some(sink) =
                plan.source_sinks
                    .get(&("SinkBinding".to_owned(), ns.clone(), name.clone()))
            else {
                continue;
            };
            let env = contract_env(sink, &binding.data["spec"]);
            out.insert(
                binding.uid().unwrap_or_default(),
                self.bind(binding, &env).await,
            );
        }
        out
    }

    /// What the source adapter runs, from its `/status`.
    pub(super) async fn poll_source_adapter(&self) -> AdapterObservation {
        let Some(admin) = &self.settings.source_adapter_admin else {
            return AdapterObservation::Unconfigured;
        };
        match crate::cycle::get_json::<AdapterReport>(
            &self.http,
            admin,
            "status",
            "the source adapter's status",
            Duration::from_secs(2),
        )
        .await
        {
            Ok(r) => AdapterObservation::Report(
                r.sources.into_iter().map(|s| (s.uid.clone(), s)).collect(),
            ),
            Err(e) => AdapterObservation::Unreachable(e),
        }
    }
}

/// Status rows of the sources that run as Deployments or bindings here:
/// their `Deployed` (ContainerSource) or `SinkBindingAvailable`
/// (SinkBinding) condition from what was applied.
pub(super) fn amend_source_rows(
    snap: &Snapshot,
    resources: &mut [ResourceStatus],
    deployments: &BTreeMap<String, Result<bool, String>>,
    bindings: &BTreeMap<String, Result<usize, String>>,
) {
    for row in resources.iter_mut() {
        // Only these two are amended: no search for the others (every
        // channel and subscription).
        if !matches!(row.kind.as_str(), "ContainerSource" | "SinkBinding") {
            continue;
        }
        let Some(object) = find_source(snap, &row.kind, &row.namespace, &row.name) else {
            continue;
        };
        let uid = object.uid().unwrap_or_default();
        let condition = match row.kind.as_str() {
            "ContainerSource" => match deployments.get(&uid) {
                None => continue,
                Some(Ok(true)) => Condition::ready("Deployed", "DeploymentAvailable"),
                Some(Ok(false)) => Condition::new(
                    "Deployed",
                    ConditionStatus::Unknown,
                    "DeploymentUnavailable",
                    format!(
                        "Deployment {} has no available replica yet",
                        deployment_name(&row.name)
                    ),
                ),
                Some(Err(e)) => Condition::new(
                    "Deployed",
                    ConditionStatus::False,
                    "DeploymentFailed",
                    e.clone(),
                ),
            },
            "SinkBinding" => match bindings.get(&uid) {
                None => continue,
                Some(Ok(n)) => Condition::new(
                    "SinkBindingAvailable",
                    ConditionStatus::True,
                    "Bound",
                    format!("bound to {n} subject(s)"),
                ),
                Some(Err(e)) => Condition::new(
                    "SinkBindingAvailable",
                    ConditionStatus::False,
                    "SubjectUnavailable",
                    e.clone(),
                ),
            },
            _ => continue,
        };
        let Ok(mut conditions) =
            serde_json::from_value::<Vec<Condition>>(row.status["conditions"].clone())
        else {
            continue;
        };
        conditions.retain(|c| c.type_ != condition.type_ && c.type_ != "Ready");
        conditions.push(condition);
        summarize(&mut conditions);
        let ready = &conditions[0];
        row.ready = ready.status;
        row.reason = ready.reason.clone();
        row.message = ready.message.clone();
        row.status["conditions"] = serde_json::to_value(&conditions).unwrap_or_default();
    }
}

/// On Kubernetes a ContainerSource runs as a Deployment, so a container
/// without a local command is no problem.
pub(super) fn drop_local_only_problems(plan: &mut Plan) {
    plan.problems
        .retain(|p| !(p.kind == "ContainerSource" && p.reason == LOCAL_RUN_UNAVAILABLE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_environment_replaces_entries_of_the_same_name() {
        let containers = json!([{"name": "a", "env": [{"name": "K_SINK", "value": "old"}, {"name": "X", "value": "1"}]}, {"name": "b"}]);
        let env = contract_env(
            &Url::parse("http://sink/").expect("url"),
            &json!({"ceOverrides": {"extensions": {"team": "shop"}}}),
        );
        let out = with_env(&containers, &env);
        assert_eq!(out[0]["env"][0], json!({"name": "X", "value": "1"}));
        assert_eq!(
            out[0]["env"][1],
            json!({"name": "K_CE_OVERRIDES", "value": "{\"extensions\":{\"team\":\"shop\"}}"})
        );
        assert_eq!(
            out[0]["env"][2],
            json!({"name": "K_SINK", "value": "http://sink/"})
        );
        assert_eq!(out[1]["env"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_binding_patch_names_only_the_containers_and_their_env() {
        let deployment: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "x"}, {"name": "side", "image": "y"}]}}}
        }))
        .expect("deployment");
        let env = vec![json!({"name": "K_SINK", "value": "http://sink/"})];
        let patch = binding_patch(&deployment, &env);
        assert_eq!(
            patch,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"template": {"spec": {"containers": [
                       {"name": "app", "env": env},
                       {"name": "side", "env": env}]}}}})
        );
        let cron: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "job"}]}}}}}
        }))
        .expect("cronjob");
        let patch = binding_patch(&cron, &[]);
        assert_eq!(
            patch["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "job", "env": []}])
        );
    }
}

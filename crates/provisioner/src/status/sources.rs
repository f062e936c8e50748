//! Source status (Knative's shape): `sinkUri`, `observedGeneration` and
//! the conditions
//!
//! * `SinkProvided`: the sink resolved (`False` with the reason when not);
//! * `Deployed`: the source adapter runs the source (`Unknown` while it
//!   starts, restarts, or cannot be asked; `False` with its message when it
//!   failed, e.g. an ApiServerSource watching a kind the API does not
//!   serve);
//! * `WebhookRegistered` (GitHubSource, GitLabSource): the webhook is
//!   registered with GitHub or GitLab (`status.webhookIDKey` holds its id);
//!   `False` with the API's answer (`Unauthorized`, `RepositoryNotFound`,
//!   `WebhookRefused`, `ApiUnavailable`, `SecretNotFound`), `Unknown`
//!   while no public webhook URL is configured;
//! * `Ready`: all of them.
//!
//! A SinkBinding runs nothing itself: outside Kubernetes it has
//! `SinkProvided` and `Ready` only (its `sinkUri` is what a local program
//! would be given as `K_SINK`).

use super::{summarize, Condition, ConditionStatus, ResourceStatus};
use crate::reconcile::Plan;
use channel_core::compile::Problem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The source kinds.
pub const SOURCE_KINDS: [&str; 7] = [
    "PingSource",
    "ApiServerSource",
    "ContainerSource",
    "SinkBinding",
    "GitHubSource",
    "GitLabSource",
    "KafkaSource",
];

/// What the control plane knows of the webhooks it registers.
#[derive(Debug, Clone, Default)]
pub enum WebhookObservation {
    /// No public webhook URL is configured: nothing is registered.
    #[default]
    Unconfigured,
    /// The registrations, by source uid.
    Report(BTreeMap<String, sources::hooks::HookStatus>),
}

impl WebhookObservation {
    /// From a registrar's answer.
    pub fn from_statuses(
        statuses: Vec<sources::hooks::HookStatus>,
        uids: &BTreeMap<(String, String, String), String>,
    ) -> WebhookObservation {
        WebhookObservation::Report(
            statuses
                .into_iter()
                .filter_map(|h| {
                    let uid = uids.get(&(h.kind.clone(), h.namespace.clone(), h.name.clone()))?;
                    Some((uid.clone(), h))
                })
                .collect(),
        )
    }
}

/// One source as the adapter's `/status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterSource {
    pub uid: String,
    #[serde(default)]
    pub generation: i64,
    pub state: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// The adapter's `/status`, as far as status needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterReport {
    #[serde(default)]
    pub sources: Vec<AdapterSource>,
}

/// What the control plane observed of the source adapters.
#[derive(Debug, Clone, Default)]
pub enum AdapterObservation {
    /// No adapter admin URL is configured.
    #[default]
    Unconfigured,
    /// An adapter did not answer (the first such error).
    Unreachable(String),
    /// Every adapter's sources, by uid (replicas share the sources).
    Report(BTreeMap<String, AdapterSource>),
}

/// `status` of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_uri: Option<String>,
    /// GitHubSource and GitLabSource: the id of the registered webhook.
    #[serde(
        default,
        rename = "webhookIDKey",
        skip_serializing_if = "Option::is_none"
    )]
    pub webhook_id_key: Option<String>,
}

fn row(kind: &str, namespace: &str, name: &str, status: SourceStatus) -> ResourceStatus {
    let ready = status.conditions.first().cloned();
    ResourceStatus {
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        backend: None,
        ready: ready
            .as_ref()
            .map_or(ConditionStatus::Unknown, |c| c.status),
        reason: ready.as_ref().and_then(|c| c.reason.clone()),
        message: ready.and_then(|c| c.message),
        url: status.sink_uri.clone(),
        status: serde_json::to_value(&status).unwrap_or_default(),
    }
}

fn deployed(uid: &str, generation: i64, adapters: &AdapterObservation) -> Condition {
    let unknown = |reason: &str, message: String| {
        Condition::new("Deployed", ConditionStatus::Unknown, reason, message)
    };
    match adapters {
        AdapterObservation::Unconfigured => unknown(
            "AdapterUnknown",
            "no source adapter admin URL is configured (--source-adapter-admin)".into(),
        ),
        AdapterObservation::Unreachable(e) => unknown("AdapterUnreachable", e.clone()),
        AdapterObservation::Report(sources) => match sources.get(uid) {
            None => unknown(
                "NotRunning",
                "the source adapter does not run it yet".into(),
            ),
            Some(s) if s.generation < generation => unknown(
                "Updating",
                format!(
                    "the source adapter runs generation {}, not {generation} yet",
                    s.generation
                ),
            ),
            Some(s) => match s.state.as_str() {
                "running" => Condition::ready("Deployed", "Running"),
                "failed" => Condition::new(
                    "Deployed",
                    ConditionStatus::False,
                    "AdapterFailed",
                    s.message.clone().unwrap_or_default(),
                ),
                other => unknown(&capitalized(other), s.message.clone().unwrap_or_default()),
            },
        },
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `WebhookRegistered` of a webhook source, and the hook's id.
fn webhook(uid: &str, hooks: &WebhookObservation) -> (Condition, Option<String>) {
    match hooks {
        WebhookObservation::Unconfigured => (
            Condition::new(
                "WebhookRegistered",
                ConditionStatus::Unknown,
                "WebhookUrlUnknown",
                "no public URL of the source adapter's webhook listener is configured (--webhook-base-url)".into(),
            ),
            None,
        ),
        WebhookObservation::Report(hooks) => match hooks.get(uid) {
            None => (
                Condition::new(
                    "WebhookRegistered",
                    ConditionStatus::Unknown,
                    "Registering",
                    String::new(),
                ),
                None,
            ),
            Some(h) => {
                let id = h.id.map(|i| i.to_string());
                match &h.error {
                    None => (Condition::ready("WebhookRegistered", "Registered"), id),
                    Some((reason, message)) => (
                        Condition::new("WebhookRegistered", ConditionStatus::False, reason, message.clone()),
                        id,
                    ),
                }
            }
        },
    }
}

/// Add a row for every planned source (those with problems have theirs
/// already), the SinkBindings' sinks, and the ContainerSources that run
/// as Deployments.
pub(super) fn add_source_statuses(
    plan: &Plan,
    adapters: &AdapterObservation,
    hooks: &WebhookObservation,
    out: &mut Vec<ResourceStatus>,
) {
    let has_problem = |kind: &str, ns: &str, name: &str| {
        plan.problems
            .iter()
            .any(|p| p.kind == kind && p.namespace == ns && p.name == name)
    };
    for s in &plan.sources {
        let sink = Condition::ready("SinkProvided", "");
        let mut conditions = vec![sink, deployed(&s.uid, s.generation, adapters)];
        let mut webhook_id_key = None;
        if s.settings.is_webhook() {
            let (condition, id) = webhook(&s.uid, hooks);
            conditions.push(condition);
            webhook_id_key = id;
        }
        summarize(&mut conditions);
        out.push(row(
            s.kind(),
            &s.namespace,
            &s.name,
            SourceStatus {
                observed_generation: Some(s.generation),
                conditions,
                sink_uri: Some(s.sink.to_string()),
                webhook_id_key,
            },
        ));
    }
    let planned = |kind: &str, ns: &str, name: &str| {
        plan.sources
            .iter()
            .any(|s| s.kind() == kind && s.namespace == ns && s.name == name)
    };
    for ((kind, ns, name), sink) in &plan.source_sinks {
        if planned(kind, ns, name) || has_problem(kind, ns, name) {
            continue;
        }
        // A ContainerSource run by Kubernetes (as a Deployment): its
        // `Deployed` comes from the Deployment.
        let mut conditions = vec![Condition::ready("SinkProvided", "")];
        if kind == "ContainerSource" {
            conditions.push(Condition::new(
                "Deployed",
                ConditionStatus::Unknown,
                "DeploymentUnknown",
                String::new(),
            ));
        }
        summarize(&mut conditions);
        out.push(row(
            kind,
            ns,
            name,
            SourceStatus {
                observed_generation: None,
                conditions,
                sink_uri: Some(sink.to_string()),
                webhook_id_key: None,
            },
        ));
    }
}

/// The status of a source that could not be planned: `SinkProvided`
/// `False` when its sink is the problem, else `Deployed` `False`.
pub(super) fn problem_status(p: &Problem) -> Option<serde_json::Value> {
    if !SOURCE_KINDS.contains(&p.kind.as_str()) {
        return None;
    }
    let failed =
        |type_: &str| Condition::new(type_, ConditionStatus::False, &p.reason, p.message.clone());
    let mut conditions = if p.message.starts_with("spec.sink") {
        vec![failed("SinkProvided")]
    } else {
        vec![Condition::ready("SinkProvided", ""), failed("Deployed")]
    };
    summarize(&mut conditions);
    serde_json::to_value(SourceStatus {
        observed_generation: None,
        conditions,
        sink_uri: None,
        webhook_id_key: None,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{plan, Addressing};
    use channel_core::manifests::load_str;

    fn statuses(yaml: &str, adapters: &AdapterObservation) -> Vec<ResourceStatus> {
        let manifests = load_str("s.yaml", yaml).expect("manifests");
        let plan = plan(&manifests, &BTreeMap::new(), &Addressing::default());
        let mut out = Vec::new();
        add_source_statuses(&plan, adapters, &WebhookObservation::Unconfigured, &mut out);
        for p in &plan.problems {
            if let Some(status) = problem_status(p) {
                out.push(ResourceStatus {
                    kind: p.kind.clone(),
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    backend: None,
                    ready: ConditionStatus::False,
                    reason: Some(p.reason.clone()),
                    message: Some(p.message.clone()),
                    url: None,
                    status,
                });
            }
        }
        out
    }

    const YAML: &str = "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: tick, namespace: shop, uid: tick-uid, generation: 2}\nspec: {schedule: '@hourly', sink: {uri: 'http://sink/'}}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: lost, namespace: shop}\nspec: {schedule: '@hourly', sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: nope}}}\n---\napiVersion: sources.knative.dev/v1\nkind: SinkBinding\nmetadata: {name: bind, namespace: shop}\nspec:\n  subject: {apiVersion: apps/v1, kind: Deployment, name: web}\n  sink: {uri: 'http://sink/'}\n";

    fn find<'a>(rows: &'a [ResourceStatus], name: &str) -> &'a ResourceStatus {
        rows.iter().find(|r| r.name == name).expect(name)
    }

    fn condition<'a>(r: &'a ResourceStatus, type_: &str) -> &'a serde_json::Value {
        r.status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .expect(type_)
    }

    #[test]
    fn a_running_source_is_ready_with_its_sink() {
        let adapters = AdapterObservation::Report(BTreeMap::from([(
            "tick-uid".to_owned(),
            AdapterSource {
                uid: "tick-uid".into(),
                generation: 2,
                state: "running".into(),
                message: None,
            },
        )]));
        let rows = statuses(YAML, &adapters);
        let tick = find(&rows, "tick");
        assert_eq!(tick.ready, ConditionStatus::True, "{:#}", tick.status);
        assert_eq!(tick.status["sinkUri"], "http://sink/");
        assert_eq!(tick.status["observedGeneration"], 2);
        assert_eq!(condition(tick, "Deployed")["reason"], "Running");
        let lost = find(&rows, "lost");
        assert_eq!(condition(lost, "SinkProvided")["status"], "False");
        assert!(lost.status["sinkUri"].is_null());
        let bind = find(&rows, "bind");
        assert_eq!(bind.ready, ConditionStatus::True);
        assert_eq!(bind.status["sinkUri"], "http://sink/");
    }

    #[test]
    fn deployed_follows_the_adapter() {
        let report = |state: &str, generation: i64| {
            AdapterObservation::Report(BTreeMap::from([(
                "tick-uid".to_owned(),
                AdapterSource {
                    uid: "tick-uid".into(),
                    generation,
                    state: state.into(),
                    message: Some("why".into()),
                },
            )]))
        };
        for (adapters, status, reason) in [
            (
                AdapterObservation::Unconfigured,
                "Unknown",
                "AdapterUnknown",
            ),
            (
                AdapterObservation::Unreachable("refused".into()),
                "Unknown",
                "AdapterUnreachable",
            ),
            (
                AdapterObservation::Report(BTreeMap::new()),
                "Unknown",
                "NotRunning",
            ),
            (report("running", 1), "Unknown", "Updating"),
            (report("failed", 2), "False", "AdapterFailed"),
            (report("restarting", 2), "Unknown", "Restarting"),
        ] {
            let rows = statuses(YAML, &adapters);
            let tick = find(&rows, "tick");
            let deployed = condition(tick, "Deployed");
            assert_eq!(
                (deployed["status"].as_str(), deployed["reason"].as_str()),
                (Some(status), Some(reason)),
                "{adapters:?}"
            );
            assert_eq!(tick.ready.as_str(), status);
        }
    }
}

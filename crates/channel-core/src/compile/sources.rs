//! Sources compile into the entries of the [`SourcesContract`] the source
//! adapter follows: the sink resolved exactly as a subscription's
//! subscriber (a Broker, a channel, a Sequence or Parallel, a Service or a
//! URI), the delivery policy, the `ceOverrides` extensions and what the
//! kind's adapter needs.
//!
//! A source whose sink cannot be resolved is a problem naming `spec.sink`
//! and is not run. A ContainerSource whose container has no `command` runs
//! only on Kubernetes (the image's entrypoint is unknown here): a problem
//! with reason `LocalRunUnavailable` in the other modes.
//!
//! [`SourcesContract`]: crate::sources::SourcesContract

use super::{resolve_policy, resolve_target, stable_uid, Index, Problem};
use crate::contract::DeliveryAuth;
use crate::contract::DeliveryOrder;
use crate::manifests::Manifests;
use crate::resources::{DeliverySpec, Destination, ObjectMeta};
use crate::sources::container::first_container;
use crate::sources::{
    default_source_delivery, CloudEventOverrides, Source, SourceContract, SourceSettings,
};
use std::collections::BTreeMap;
use url::Url;

/// The sink of every source that has one resolved, by (kind, namespace,
/// name), for status (`status.sinkUri`).
pub type SourceSinks = BTreeMap<(String, String, String), Url>;

/// The API group of the sources, which their OIDC identities name.
const SOURCES_GROUP: &str = "sources.knative.dev";

/// Reason of a ContainerSource that cannot run outside Kubernetes.
pub const LOCAL_RUN_UNAVAILABLE: &str = "LocalRunUnavailable";

struct Common<'a> {
    kind: &'static str,
    metadata: &'a ObjectMeta,
    sink: &'a Destination,
    overrides: Option<&'a CloudEventOverrides>,
    delivery: Option<&'a DeliverySpec>,
    /// The delivery order the kind imposes or its annotation asks for.
    order: Option<DeliveryOrder>,
}

impl Common<'_> {
    fn problem(&self, reason: &str, message: String) -> Problem {
        Problem {
            kind: self.kind.to_owned(),
            namespace: self.metadata.namespace().to_owned(),
            name: self.metadata.name.clone(),
            reason: reason.to_owned(),
            message,
        }
    }

    /// The contract entry with `settings`, or the problem.
    fn contract(
        &self,
        index: &Index<'_>,
        sinks: &mut SourceSinks,
        settings: Option<SourceSettings>,
    ) -> Result<Option<SourceContract>, Problem> {
        let ns = self.metadata.namespace();
        let (sink, sink_auth) = resolve_target(self.sink, ns, index)
            .map_err(|(reason, message)| self.problem(&reason, format!("spec.sink: {message}")))?;
        sinks.insert(
            (
                self.kind.to_owned(),
                ns.to_owned(),
                self.metadata.name.clone(),
            ),
            sink.clone(),
        );
        let Some(settings) = settings else {
            return Ok(None);
        };
        let mut delivery = match self.delivery {
            None => default_source_delivery(),
            Some(d) => resolve_policy(Some(d))
                .map_err(|m| self.problem("InvalidDelivery", format!("spec.delivery: {m}")))?,
        };
        if let Some(order) = self.order {
            delivery.order = order;
        }
        let (dead_letter, dead_letter_auth) = match self
            .delivery
            .and_then(|d| d.dead_letter_sink.as_ref())
        {
            None => (None, None),
            Some(d) => {
                let (url, auth) = resolve_target(d, ns, index).map_err(|(reason, message)| {
                    self.problem(&reason, format!("spec.delivery.deadLetterSink: {message}"))
                })?;
                (Some(url), auth)
            }
        };
        let auth = DeliveryAuth::of(
            || crate::features::identity(SOURCES_GROUP, self.kind, ns, &self.metadata.name),
            sink_auth,
            None,
            dead_letter_auth,
        );
        Ok(Some(SourceContract {
            uid: self
                .metadata
                .uid
                .clone()
                .unwrap_or_else(|| stable_uid(self.kind, ns, &self.metadata.name)),
            namespace: ns.to_owned(),
            name: self.metadata.name.clone(),
            generation: self.metadata.generation.unwrap_or(1),
            sink,
            dead_letter,
            delivery,
            auth,
            extensions: self
                .overrides
                .map(|o| o.extensions.clone())
                .unwrap_or_default(),
            settings,
        }))
    }
}

fn common<'a, S>(
    kind: &'static str,
    source: &'a Source<S>,
    sink: &'a Destination,
    overrides: Option<&'a CloudEventOverrides>,
    delivery: Option<&'a DeliverySpec>,
) -> Common<'a> {
    Common {
        kind,
        metadata: &source.metadata,
        sink,
        overrides,
        delivery,
        order: None,
    }
}

/// Compile every source of `m`; problems into `problems`.
pub(super) fn compile_sources(
    m: &Manifests,
    index: &Index<'_>,
    problems: &mut Vec<Problem>,
) -> (Vec<SourceContract>, SourceSinks) {
    let mut out = Vec::new();
    let mut sinks = SourceSinks::new();
    let mut add = |c: Common<'_>, settings: Result<Option<SourceSettings>, Problem>| {
        // The sink first: a source that cannot run here still reports it.
        let (settings, unusable) = match settings {
            Ok(s) => (s, None),
            Err(p) => (None, Some(p)),
        };
        match c.contract(index, &mut sinks, settings) {
            Ok(Some(contract)) => out.push(contract),
            Ok(None) => problems.extend(unusable),
            Err(p) => problems.push(p),
        }
    };
    for s in &m.ping_sources {
        let c = common(
            "PingSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            s.spec.delivery.as_ref(),
        );
        add(c, Ok(Some(SourceSettings::PingSource(s.spec.settings()))));
    }
    for s in &m.api_server_sources {
        let mut c = common(
            "ApiServerSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            s.spec.delivery.as_ref(),
        );
        // An object's changes reach the sink in the order they happened,
        // one at a time, as Knative's adapter sends them.
        c.order = Some(DeliveryOrder::Ordered);
        let settings = s
            .spec
            .settings(s.metadata.namespace())
            .map(|a| Some(SourceSettings::ApiServerSource(a)))
            .map_err(|e| c.problem("InvalidSpec", format!("{}: {}", e.path, e.message)));
        add(c, settings);
    }
    for s in &m.container_sources {
        let c = common(
            "ContainerSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            None,
        );
        let path = "spec.template.spec.containers[0]";
        let settings = first_container(&s.spec.template, "spec.template")
            .and_then(|container| container.local_program(path))
            .map(|p| Some(SourceSettings::ContainerSource(p)))
            .map_err(|e| c.problem(LOCAL_RUN_UNAVAILABLE, format!("{}: {}", e.path, e.message)));
        add(c, settings);
    }
    for s in &m.sink_bindings {
        // Only the sink: a binding runs nothing itself.
        let c = common(
            "SinkBinding",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            None,
        );
        add(c, Ok(None));
    }
    for s in &m.github_sources {
        let c = common(
            "GitHubSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            s.spec.delivery.as_ref(),
        );
        let settings = s
            .spec
            .settings(s.metadata.namespace())
            .map(|g| Some(SourceSettings::GitHubSource(Box::new(g))))
            .map_err(|e| c.problem("InvalidSpec", format!("{}: {}", e.path, e.message)));
        add(c, settings);
    }
    for s in &m.gitlab_sources {
        let c = common(
            "GitLabSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            s.spec.delivery.as_ref(),
        );
        let settings = s
            .spec
            .settings(s.metadata.namespace())
            .map(|g| Some(SourceSettings::GitLabSource(Box::new(g))))
            .map_err(|e| c.problem("InvalidSpec", format!("{}: {}", e.path, e.message)));
        add(c, settings);
    }
    for s in &m.kafka_sources {
        let mut c = common(
            "KafkaSource",
            s,
            &s.spec.sink,
            s.spec.ce_overrides.as_ref(),
            s.spec.delivery.as_ref(),
        );
        let ns = s.metadata.namespace();
        let uid = s
            .metadata
            .uid
            .clone()
            .unwrap_or_else(|| stable_uid("KafkaSource", ns, &s.metadata.name));
        // Knative's KafkaSource delivers each partition in order unless
        // the annotation asks otherwise.
        let order = crate::sources::kafka::delivery_order(&s.metadata.annotations);
        c.order = Some(
            order
                .clone()
                .ok()
                .flatten()
                .unwrap_or(DeliveryOrder::Ordered),
        );
        let settings = order
            .map(|_| {
                Some(SourceSettings::KafkaSource(Box::new(
                    s.spec.settings(ns, &uid),
                )))
            })
            .map_err(|e| c.problem("InvalidSpec", format!("{}: {}", e.path, e.message)));
        add(c, settings);
    }
    out.sort_by(|a, b| (&a.namespace, &a.name, a.kind()).cmp(&(&b.namespace, &b.name, b.kind())));
    (out, sinks)
}

#[cfg(test)]
mod tests {
    use crate::compile::compile;
    use crate::manifests::load_str;
    use crate::sources::apiserver::{EventMode, Namespaces};
    use crate::sources::SourceSettings;

    const TARGETS: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: orders, namespace: shop}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: pipeline, namespace: shop}
spec:
  steps: [{uri: "http://step.example/"}]
"#;

    fn ping(name: &str, sink: &str) -> String {
        format!(
            "---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  schedule: '@every 1s'\n  data: '{{}}'\n  ceOverrides: {{extensions: {{team: shop}}}}\n  sink: {sink}\n"
        )
    }

    #[test]
    fn a_sink_resolves_as_a_subscriber_does() {
        let yaml = [
            TARGETS.to_owned(),
            ping("to-broker", "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}"),
            ping("to-channel", "{ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}"),
            ping("to-sequence", "{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: pipeline}}"),
            ping("to-service", "{ref: {apiVersion: v1, kind: Service, name: display}, uri: /in}"),
            ping("to-uri", "{uri: 'http://127.0.0.1:8081/'}"),
            ping("to-nothing", "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: missing}}"),
        ]
        .concat();
        let compiled = compile(&load_str("sources.yaml", &yaml).expect("manifests"));
        let sinks: Vec<(&str, &str)> = compiled
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.sink.as_str()))
            .collect();
        assert_eq!(
            sinks,
            [
                (
                    "to-broker",
                    "http://default-kn-broker.shop.svc.cluster.local/"
                ),
                (
                    "to-channel",
                    "http://orders-kn-channel.shop.svc.cluster.local/"
                ),
                (
                    "to-sequence",
                    "http://pipeline-kn-sequence-0-kn-channel.shop.svc.cluster.local/"
                ),
                ("to-service", "http://display.shop.svc.cluster.local/in"),
                ("to-uri", "http://127.0.0.1:8081/"),
            ]
        );
        let problem = compiled
            .problems
            .iter()
            .find(|p| p.kind == "PingSource")
            .expect("a problem");
        assert_eq!(problem.name, "to-nothing");
        assert!(
            problem.message.starts_with("spec.sink: "),
            "{}",
            problem.message
        );
        let first = &compiled.sources[0];
        assert_eq!(first.extensions["team"], "shop");
        assert_eq!(
            first.delivery.retry, 5,
            "Knative's adapters retry five times"
        );
        assert_eq!(compiled.source_sinks.len(), 5);
    }

    #[test]
    fn the_seeds_sources_compile() {
        let yaml = r#"
apiVersion: sources.eventing.knative.dev/v1alpha1
kind: CronJobSource
metadata: {name: test-cronjob-source, namespace: default}
spec:
  schedule: "*/2 * * * *"
  data: '{"message": "Hello world!"}'
  sink: {apiVersion: serving.knative.dev/v1alpha1, kind: Service, name: event-display}
---
apiVersion: sources.eventing.knative.dev/v1alpha1
kind: ApiServerSource
metadata: {name: testevents, namespace: default}
spec:
  serviceAccountName: events-sa
  mode: Resource
  resources:
  - apiVersion: v1
    kind: Event
  sink: {apiVersion: eventing.knative.dev/v1alpha1, kind: Broker, name: default}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: Broker
metadata: {name: default, namespace: default}
"#;
        let compiled = compile(&load_str("seeds.yaml", yaml).expect("manifests"));
        assert!(compiled.problems.is_empty(), "{:?}", compiled.problems);
        let kinds: Vec<(&str, &str)> = compiled
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("test-cronjob-source", "PingSource"),
                ("testevents", "ApiServerSource")
            ]
        );
        let SourceSettings::ApiServerSource(a) = &compiled.sources[1].settings else {
            panic!("ApiServerSource");
        };
        assert_eq!(a.mode, EventMode::Resource);
        assert_eq!(a.namespaces, Namespaces::Only(vec!["default".into()]));
        assert_eq!(a.resources[0].kind, "Event");
    }

    #[test]
    fn a_container_without_a_command_runs_only_on_kubernetes() {
        let yaml = r#"
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: heartbeats, namespace: shop}
spec:
  template:
    spec:
      containers: [{name: hb, image: gcr.io/knative-releases/heartbeats}]
  sink: {uri: "http://sink/"}
---
apiVersion: sources.knative.dev/v1
kind: ContainerSource
metadata: {name: local, namespace: shop}
spec:
  template:
    spec:
      containers: [{name: hb, image: x, command: [/bin/heartbeats], args: [--period, 1s]}]
  sink: {uri: "http://sink/"}
"#;
        let compiled = compile(&load_str("c.yaml", yaml).expect("manifests"));
        assert_eq!(compiled.sources.len(), 1);
        let SourceSettings::ContainerSource(p) = &compiled.sources[0].settings else {
            panic!("a local program");
        };
        assert_eq!(p.argv, ["/bin/heartbeats", "--period", "1s"]);
        let problem = &compiled.problems[0];
        assert_eq!(
            (
                problem.kind.as_str(),
                problem.name.as_str(),
                problem.reason.as_str()
            ),
            (
                "ContainerSource",
                "heartbeats",
                super::LOCAL_RUN_UNAVAILABLE
            )
        );
    }

    #[test]
    fn bad_sources_are_refused_naming_the_field() {
        for (yaml, field) in [
            ("kind: PingSource\nspec: {schedule: 'every day', sink: {uri: 'http://x/'}}", "spec.schedule"),
            ("kind: PingSource\nspec: {schedule: '@hourly', timezone: Nowhere, sink: {uri: 'http://x/'}}", "spec.timezone"),
            ("kind: PingSource\nspec: {schedule: '@hourly', sink: {}}", "spec.sink"),
            ("kind: PingSource\nspec: {schedule: '@hourly', sink: {uri: 'http://x/'}, ceOverrides: {extensions: {Bad-Name: x}}}", "spec.ceOverrides.extensions"),
            ("kind: ApiServerSource\nspec: {resources: [], sink: {uri: 'http://x/'}}", "spec.resources"),
            ("kind: ApiServerSource\nspec: {mode: All, resources: [{apiVersion: v1, kind: Event}], sink: {uri: 'http://x/'}}", "spec.mode"),
            ("kind: ContainerSource\nspec: {template: {spec: {}}, sink: {uri: 'http://x/'}}", "spec.template.spec.containers"),
            ("kind: SinkBinding\nspec: {subject: {apiVersion: apps/v1, kind: Deployment}, sink: {uri: 'http://x/'}}", "spec.subject"),
        ] {
            let doc = format!("apiVersion: sources.knative.dev/v1\nmetadata: {{name: s, namespace: shop}}\n{yaml}\n");
            let e = load_str("bad.yaml", &doc).expect_err(yaml).to_string();
            assert!(e.contains(&format!("field {field}:")), "{yaml}\n{e}");
        }
    }
}

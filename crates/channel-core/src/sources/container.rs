//! Knative's `ContainerSource` and `SinkBinding`: a program of the user's
//! that sends events itself, told where to by the environment.
//!
//! Both resolve their `sink` and hand the program Knative's runtime
//! contract: `K_SINK` (the sink's URL) and `K_CE_OVERRIDES`
//! (`{"extensions": {...}}`, the `ceOverrides` as JSON), plus `K_CA_CERTS`
//! when the sink carries CA certificates.
//!
//! - A **ContainerSource** runs its `spec.template` (a pod template). On
//!   Kubernetes that is a Deployment `<name>-deployment` owned by the
//!   source, as Knative's; with `--manifests` and in standalone mode the
//!   source adapter runs the template's first container's `command` and
//!   `args` as a local process (its `env` and `workingDir` kept), restarted
//!   with backoff when it exits.
//! - A **SinkBinding** adds the contract to the pod template of its
//!   `spec.subject` (an `apps/v1` Deployment, a `batch/v1` Job, ... by name
//!   or label selector) on Kubernetes. Outside Kubernetes a subject can only
//!   be something the adapter runs: a `Deployment` document in the same
//!   manifests, which the adapter then runs as it runs a ContainerSource.

use super::apiserver::LabelSelector;
use crate::resources::{Destination, FieldError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The environment variable holding the sink's URL.
pub const K_SINK: &str = "K_SINK";
/// The environment variable holding the CloudEvents overrides as JSON.
pub const K_CE_OVERRIDES: &str = "K_CE_OVERRIDES";
/// The environment variable holding the sink's CA certificates (PEM).
pub const K_CA_CERTS: &str = "K_CA_CERTS";

/// One `env` entry with a literal value (`valueFrom` is for Kubernetes to
/// resolve; a local run skips it with a warning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<serde_json::Value>,
}

/// The parts of a container a local run uses (the rest is kept for
/// Kubernetes in the raw template).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// What a local run of a pod template executes: the first container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalProgram {
    /// `command` then `args` (the image's entrypoint is not known locally:
    /// a container without `command` cannot run outside Kubernetes).
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment entries a local run cannot set (`valueFrom`), to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_env: Vec<String>,
}

/// The first container of a pod template (`spec.template` of a
/// ContainerSource or Deployment), at `path`.
pub fn first_container(template: &serde_json::Value, path: &str) -> Result<Container, FieldError> {
    let containers = template
        .pointer("/spec/containers")
        .and_then(serde_json::Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            FieldError::new(
                format!("{path}.spec.containers"),
                "a pod template needs at least one container",
            )
        })?;
    serde_json::from_value(containers[0].clone())
        .map_err(|e| FieldError::new(format!("{path}.spec.containers[0]"), e.to_string()))
}

impl Container {
    /// What a local run executes, or why this container cannot run locally.
    pub fn local_program(&self, path: &str) -> Result<LocalProgram, FieldError> {
        if self.command.is_empty() {
            return Err(FieldError::new(
                format!("{path}.command"),
                format!(
                    "runs only on Kubernetes: image {:?} has no command this machine could run (set command to a local program to run it with --manifests or standalone)",
                    self.image
                ),
            ));
        }
        let mut env = BTreeMap::new();
        let mut skipped_env = Vec::new();
        for (i, e) in self.env.iter().enumerate() {
            match (&e.value, &e.value_from) {
                (Some(v), _) => {
                    env.insert(e.name.clone(), v.clone());
                }
                (None, Some(_)) => skipped_env.push(format!(
                    "{path}.env[{i}] ({}): valueFrom is resolved by Kubernetes only; not set locally",
                    e.name
                )),
                (None, None) => {
                    env.insert(e.name.clone(), String::new());
                }
            }
        }
        Ok(LocalProgram {
            argv: self.command.iter().chain(&self.args).cloned().collect(),
            env,
            working_dir: self.working_dir.clone(),
            skipped_env,
        })
    }
}

/// `sources.knative.dev/v1` `ContainerSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerSourceSpec {
    /// A pod template, kept as written (Kubernetes runs all of it).
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::free_form")
    )]
    pub template: serde_json::Value,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<super::CloudEventOverrides>,
}

impl ContainerSourceSpec {
    pub fn validate(&self) -> Result<(), FieldError> {
        first_container(&self.template, "spec.template")?;
        self.sink.validate("spec.sink")
    }
}

/// `spec.subject` of a SinkBinding: Knative's tracker reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One object by name, or ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ... every object of the kind whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `sources.knative.dev/v1` `SinkBinding` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SinkBindingSpec {
    pub subject: Subject,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<super::CloudEventOverrides>,
}

impl SinkBindingSpec {
    pub fn validate(&self) -> Result<(), FieldError> {
        let s = &self.subject;
        if s.api_version.is_empty() || s.kind.is_empty() {
            return Err(FieldError::new(
                "spec.subject",
                "apiVersion and kind are required",
            ));
        }
        match (&s.name, &s.selector) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "spec.subject",
                    "name and selector are exclusive",
                ))
            }
            (None, None) => {
                return Err(FieldError::new(
                    "spec.subject",
                    "a name or a selector is required",
                ))
            }
            (None, Some(selector)) => {
                selector.to_query("spec.subject.selector")?;
            }
            (Some(_), None) => {}
        }
        self.sink.validate("spec.sink")
    }
}

/// The runtime contract's environment for a sink URL and overrides.
pub fn sink_environment(
    sink: &str,
    overrides: Option<&super::CloudEventOverrides>,
    ca_certs: Option<&str>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([(K_SINK.to_owned(), sink.to_owned())]);
    if let Some(o) = overrides {
        env.insert(
            K_CE_OVERRIDES.to_owned(),
            serde_json::to_string(o).unwrap_or_default(),
        );
    }
    if let Some(ca) = ca_certs {
        env.insert(K_CA_CERTS.to_owned(), ca.to_owned());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_runs_locally_from_its_command() {
        let template = json!({"spec": {"containers": [{
            "name": "heartbeats", "image": "ko://heartbeats",
            "command": ["/usr/local/bin/heartbeats"], "args": ["--period", "1s"],
            "env": [{"name": "POD_NAME", "value": "hb"}, {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "workingDir": "/tmp"}]}});
        let c = first_container(&template, "spec.template").expect("container");
        let p = c
            .local_program("spec.template.spec.containers[0]")
            .expect("local");
        assert_eq!(p.argv, ["/usr/local/bin/heartbeats", "--period", "1s"]);
        assert_eq!(p.env.get("POD_NAME").map(String::as_str), Some("hb"));
        assert!(!p.env.contains_key("SECRET"), "valueFrom is Kubernetes'");
        assert_eq!(p.skipped_env.len(), 1);
        assert!(p.skipped_env[0].contains("env[1] (SECRET)"));
        assert_eq!(p.working_dir.as_deref(), Some("/tmp"));
    }

    #[test]
    fn a_template_without_a_command_or_containers_says_so() {
        let e = first_container(&json!({"spec": {}}), "spec.template").unwrap_err();
        assert_eq!(e.path, "spec.template.spec.containers");
        let c = first_container(
            &json!({"spec": {"containers": [{"image": "gcr.io/x/heartbeats"}]}}),
            "spec.template",
        )
        .expect("container");
        let e = c
            .local_program("spec.template.spec.containers[0]")
            .unwrap_err();
        assert_eq!(e.path, "spec.template.spec.containers[0].command");
        assert!(e.message.contains("gcr.io/x/heartbeats"), "{}", e.message);
    }

    #[test]
    fn a_subject_is_named_or_selected_not_both() {
        let mut spec = SinkBindingSpec {
            subject: Subject {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: Some("web".into()),
                ..Subject::default()
            },
            sink: Destination {
                uri: Some("http://sink/".into()),
                ..Destination::default()
            },
            ce_overrides: None,
        };
        spec.validate().expect("named");
        spec.subject.selector = Some(LabelSelector::default());
        assert_eq!(spec.validate().unwrap_err().path, "spec.subject");
        spec.subject.name = None;
        spec.validate().expect("selected");
        spec.subject.selector = None;
        assert_eq!(spec.validate().unwrap_err().path, "spec.subject");
    }
}

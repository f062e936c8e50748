//! Knative's `GitLabSource` (`sources.knative.dev/v1alpha1`): GitLab
//! project webhook deliveries as CloudEvents.
//!
//! The control plane adds a project hook through the GitLab REST API
//! (`/api/v4/projects/<path>/hooks`) with the access token, enabling the
//! hook's `<kind>_events` flags for `eventTypes` and giving it the secret
//! token; GitLab then POSTs each delivery to the source adapter, which
//! checks `X-Gitlab-Token` (constant time) and sends the event on:
//!
//! * type `dev.knative.sources.gitlab.<object_kind>` (`push`, `tag_push`,
//!   `issue`, `merge_request`, `note`, `pipeline`, `build`, `wiki_page`,
//!   `deployment`, `release`), the payload's `object_kind`,
//! * source the project's URL (`projectUrl`),
//! * id `X-Gitlab-Event-UUID` (a fresh UUID when GitLab sends none),
//!   subject per kind, data the JSON payload.

use super::secret::{SecretRef, SecretValueFromSource};
use super::CloudEventOverrides;
use crate::resources::{DeliverySpec, Destination, FieldError};
use serde::{Deserialize, Serialize};
use url::Url;

/// The API versions GitLabSource is served at.
pub const GITLAB_VERSIONS: &[&str] = &["sources.knative.dev/v1alpha1"];
/// The prefix of every GitLabSource event type.
pub const GITLAB_EVENT_PREFIX: &str = "dev.knative.sources.gitlab.";

/// The webhook flags of `eventTypes` and the payload `object_kind` each
/// makes GitLab deliver.
pub const GITLAB_HOOKS: &[(&str, &str)] = &[
    ("push_events", "push"),
    ("tag_push_events", "tag_push"),
    ("issues_events", "issue"),
    ("confidential_issues_events", "issue"),
    ("merge_requests_events", "merge_request"),
    ("note_events", "note"),
    ("confidential_note_events", "note"),
    ("job_events", "build"),
    ("pipeline_events", "pipeline"),
    ("wiki_page_events", "wiki_page"),
    ("deployment_events", "deployment"),
    ("releases_events", "release"),
];

/// The CloudEvents type of a GitLab `object_kind`.
pub fn gitlab_event_type(object_kind: &str) -> String {
    format!("{GITLAB_EVENT_PREFIX}{object_kind}")
}

/// `sources.knative.dev/v1alpha1` `GitLabSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GitLabSourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The project's URL, `https://gitlab.com/<group>/<project>`.
    pub project_url: String,
    /// Webhook flags (`push_events`, `issues_events`, ...).
    pub event_types: Vec<String>,
    pub access_token: SecretValueFromSource,
    pub secret_token: SecretValueFromSource,
    /// Whether GitLab verifies the webhook's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslverify: Option<bool>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
    /// Beyond Knative: retries and a dead-letter sink for the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// What the adapter and the hook registration need (in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitLabSettings {
    pub project_url: Url,
    /// The webhook flags, sorted.
    pub event_types: Vec<String>,
    pub access_token: SecretRef,
    pub secret_token: SecretRef,
    pub ssl_verify: bool,
}

impl GitLabSettings {
    /// The instance's API base (`https://gitlab.com/api/v4/`).
    pub fn api_url(&self) -> Url {
        let mut api = self.project_url.clone();
        api.set_path("/api/v4/");
        api.set_query(None);
        api.set_fragment(None);
        api
    }

    /// The project's path (`group/subgroup/project`).
    pub fn project_path(&self) -> String {
        self.project_url
            .path()
            .trim_matches('/')
            .trim_end_matches(".git")
            .to_owned()
    }

    /// The CloudEvents source of the events.
    pub fn source_uri(&self) -> String {
        self.project_url.as_str().trim_end_matches('/').to_owned()
    }

    /// The `object_kind`s the hook delivers.
    pub fn object_kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<&'static str> = GITLAB_HOOKS
            .iter()
            .filter(|(flag, _)| self.event_types.iter().any(|t| t == flag))
            .map(|(_, kind)| *kind)
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        kinds
    }
}

impl GitLabSourceSpec {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        project_url(&self.project_url)?;
        if self.event_types.is_empty() {
            return Err(FieldError::new(
                "spec.eventTypes",
                "name at least one webhook (push_events, issues_events, merge_requests_events, ...)",
            ));
        }
        for (i, t) in self.event_types.iter().enumerate() {
            if !GITLAB_HOOKS.iter().any(|(flag, _)| flag == t) {
                let known: Vec<&str> = GITLAB_HOOKS.iter().map(|(f, _)| *f).collect();
                return Err(FieldError::new(
                    format!("spec.eventTypes[{i}]"),
                    format!(
                        "{t:?} is not a GitLab webhook; expected one of {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        self.access_token.validate("spec.accessToken")?;
        self.secret_token.validate("spec.secretToken")?;
        if let Some(o) = &self.ce_overrides {
            o.validate("spec.ceOverrides")?;
        }
        if let Some(d) = &self.delivery {
            d.validate("spec.delivery")?;
        }
        self.sink.validate("spec.sink")
    }

    /// The adapter's settings, for a source in `namespace`.
    pub fn settings(&self, namespace: &str) -> Result<GitLabSettings, FieldError> {
        let mut event_types = self.event_types.clone();
        event_types.sort();
        event_types.dedup();
        Ok(GitLabSettings {
            project_url: project_url(&self.project_url)?,
            event_types,
            access_token: self.access_token.reference(namespace),
            secret_token: self.secret_token.reference(namespace),
            ssl_verify: self.sslverify.unwrap_or(true),
        })
    }
}

fn project_url(text: &str) -> Result<Url, FieldError> {
    let bad = |why: String| FieldError::new("spec.projectUrl", why);
    let url = Url::parse(text).map_err(|e| bad(format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(format!("{text:?} is not an http or https URL")));
    }
    let segments = url
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    if segments < 2 {
        return Err(bad(format!(
            "{text:?} names no project: expected https://<host>/<group>/<project>"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "projectUrl: https://gitlab.com/group/sub/project\neventTypes: [push_events, issues_events, confidential_issues_events]\naccessToken: {secretKeyRef: {name: gl, key: accessToken}}\nsecretToken: {env: GITLAB_SECRET}\nsink: {uri: 'http://sink/'}\n";

    fn spec(yaml: &str) -> GitLabSourceSpec {
        serde_yaml_ng::from_str(yaml).expect("yaml")
    }

    #[test]
    fn a_project_resolves_to_its_api_path_and_kinds() {
        let s = spec(BASE);
        s.validate().expect("valid");
        let settings = s.settings("shop").expect("settings");
        assert_eq!(settings.api_url().as_str(), "https://gitlab.com/api/v4/");
        assert_eq!(settings.project_path(), "group/sub/project");
        assert_eq!(
            settings.source_uri(),
            "https://gitlab.com/group/sub/project"
        );
        assert_eq!(settings.object_kinds(), ["issue", "push"]);
        assert!(settings.ssl_verify);
        assert_eq!(
            settings.secret_token,
            SecretRef::Env {
                name: "GITLAB_SECRET".into()
            }
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                BASE.replace(
                    "https://gitlab.com/group/sub/project",
                    "https://gitlab.com/only",
                ),
                "spec.projectUrl",
            ),
            (
                BASE.replace("https://gitlab.com/group/sub/project", "gitlab.com/a/b"),
                "spec.projectUrl",
            ),
            (
                BASE.replace(
                    "[push_events, issues_events, confidential_issues_events]",
                    "[]",
                ),
                "spec.eventTypes",
            ),
            (
                BASE.replace("issues_events,", "push,"),
                "spec.eventTypes[1]",
            ),
            (
                BASE.replace("{env: GITLAB_SECRET}", "{env: ''}"),
                "spec.secretToken",
            ),
        ];
        for (yaml, field) in cases {
            assert_eq!(
                spec(&yaml).validate().expect_err(&yaml).path,
                field,
                "{yaml}"
            );
        }
    }
}

//! Knative's `GitHubSource` (`sources.knative.dev/v1alpha1`): GitHub
//! webhook deliveries as CloudEvents.
//!
//! The control plane registers a webhook on the repository (or the
//! organisation, when `ownerAndRepository` names only an owner) through
//! the GitHub REST API with the access token; GitHub then POSTs each
//! delivery to the source adapter, which verifies `X-Hub-Signature-256`
//! with the secret token and sends the event to the sink:
//!
//! * type `dev.knative.source.github.<event>` (the `X-GitHub-Event` name),
//! * source `https://github.com/<owner>/<repo>` (or `<owner>`),
//! * id the `X-GitHub-Delivery` header, subject per event kind, data the
//!   delivery's JSON payload.

use super::secret::{SecretRef, SecretValueFromSource};
use super::CloudEventOverrides;
use crate::resources::{DeliverySpec, Destination, FieldError};
use serde::{Deserialize, Serialize};
use url::Url;

/// The API versions GitHubSource is served at.
pub const GITHUB_VERSIONS: &[&str] = &["sources.knative.dev/v1alpha1"];
/// The prefix of every GitHubSource event type.
pub const GITHUB_EVENT_PREFIX: &str = "dev.knative.source.github.";
/// GitHub's public API, when `githubAPIURL` is not set.
pub const GITHUB_API: &str = "https://api.github.com/";

/// Webhook event names GitHub delivers (lower case, as in `eventTypes`).
pub const GITHUB_EVENTS: &[&str] = &[
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "gollum",
    "installation",
    "installation_repositories",
    "integration_installation",
    "issue_comment",
    "issues",
    "label",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "ping",
    "project",
    "project_card",
    "project_column",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_dispatch",
    "repository_import",
    "secret_scanning_alert",
    "security_advisory",
    "star",
    "status",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

/// The CloudEvents type of a GitHub event.
pub fn github_event_type(event: &str) -> String {
    format!("{GITHUB_EVENT_PREFIX}{event}")
}

/// The CloudEvents source of a GitHubSource's events.
pub fn github_source_uri(owner_and_repository: &str) -> String {
    format!("https://github.com/{owner_and_repository}")
}

/// `sources.knative.dev/v1alpha1` `GitHubSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GitHubSourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `owner/repo`, or `owner` for an organisation's webhook.
    pub owner_and_repository: String,
    /// GitHub webhook event names (`push`, `pull_request`, ...).
    pub event_types: Vec<String>,
    /// Token of a user or app allowed to manage the webhooks.
    pub access_token: SecretValueFromSource,
    /// The webhook's secret: deliveries are signed with it.
    pub secret_token: SecretValueFromSource,
    /// The API of a GitHub Enterprise server (`https://host/api/v3/`).
    #[serde(
        default,
        rename = "githubAPIURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub github_api_url: Option<String>,
    /// Whether GitHub must reach the webhook over HTTPS (and verify its
    /// certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
    /// Beyond Knative: retries and a dead-letter sink for the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// What the adapter and the webhook registration need (in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitHubSettings {
    pub owner_and_repository: String,
    pub event_types: Vec<String>,
    pub access_token: SecretRef,
    pub secret_token: SecretRef,
    pub api_url: Url,
    pub secure: bool,
}

impl GitHubSettings {
    /// The repository's owner and name (`None` for an organisation).
    pub fn owner_repo(&self) -> (&str, Option<&str>) {
        match self.owner_and_repository.split_once('/') {
            Some((owner, repo)) => (owner, Some(repo)),
            None => (&self.owner_and_repository, None),
        }
    }

    /// The CloudEvents source of the events.
    pub fn source_uri(&self) -> String {
        github_source_uri(&self.owner_and_repository)
    }
}

fn is_github_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl GitHubSourceSpec {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        let parts: Vec<&str> = self.owner_and_repository.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|p| is_github_name(p)) {
            return Err(FieldError::new(
                "spec.ownerAndRepository",
                format!(
                    "{:?} is not `owner/repository` or `owner` (letters, digits, '-', '_', '.')",
                    self.owner_and_repository
                ),
            ));
        }
        if self.event_types.is_empty() {
            return Err(FieldError::new(
                "spec.eventTypes",
                "name at least one GitHub event (push, pull_request, issues, ...)",
            ));
        }
        for (i, t) in self.event_types.iter().enumerate() {
            if !GITHUB_EVENTS.contains(&t.as_str()) {
                return Err(FieldError::new(
                    format!("spec.eventTypes[{i}]"),
                    format!(
                        "{t:?} is not a GitHub webhook event (lower case, e.g. push, pull_request)"
                    ),
                ));
            }
        }
        self.access_token.validate("spec.accessToken")?;
        self.secret_token.validate("spec.secretToken")?;
        if let Some(u) = &self.github_api_url {
            api_url(u)?;
        }
        if let Some(o) = &self.ce_overrides {
            o.validate("spec.ceOverrides")?;
        }
        if let Some(d) = &self.delivery {
            d.validate("spec.delivery")?;
        }
        self.sink.validate("spec.sink")
    }

    /// The adapter's settings, for a source in `namespace`.
    pub fn settings(&self, namespace: &str) -> Result<GitHubSettings, FieldError> {
        let api_url = api_url(self.github_api_url.as_deref().unwrap_or(GITHUB_API))?;
        let mut event_types = self.event_types.clone();
        event_types.sort();
        event_types.dedup();
        Ok(GitHubSettings {
            owner_and_repository: self.owner_and_repository.clone(),
            event_types,
            access_token: self.access_token.reference(namespace),
            secret_token: self.secret_token.reference(namespace),
            api_url,
            secure: self.secure.unwrap_or(false),
        })
    }
}

/// The API base URL, ending with `/` so paths join under it.
fn api_url(text: &str) -> Result<Url, FieldError> {
    let mut url = Url::parse(text)
        .map_err(|e| FieldError::new("spec.githubAPIURL", format!("{text:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(FieldError::new(
            "spec.githubAPIURL",
            format!("{text:?} is not an http or https URL"),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> GitHubSourceSpec {
        serde_yaml_ng::from_str(yaml).expect("yaml")
    }

    const BASE: &str = "ownerAndRepository: knative/docs\neventTypes: [push, pull_request]\naccessToken: {secretKeyRef: {name: gh, key: accessToken}}\nsecretToken: {secretKeyRef: {name: gh, key: secretToken}}\nsink: {uri: 'http://sink/'}\n";

    #[test]
    fn knatives_example_is_valid_and_resolves_references() {
        let s = spec(BASE);
        s.validate().expect("valid");
        let settings = s.settings("shop").expect("settings");
        assert_eq!(settings.api_url.as_str(), GITHUB_API);
        assert_eq!(settings.owner_repo(), ("knative", Some("docs")));
        assert_eq!(settings.source_uri(), "https://github.com/knative/docs");
        assert_eq!(settings.event_types, ["pull_request", "push"]);
        assert!(!settings.secure);
        let enterprise = spec(&format!("{BASE}githubAPIURL: https://ghe.corp/api/v3\n"));
        assert_eq!(
            enterprise
                .settings("shop")
                .expect("settings")
                .api_url
                .as_str(),
            "https://ghe.corp/api/v3/"
        );
        let org = spec(&BASE.replace("knative/docs", "knative"));
        org.validate().expect("an organisation");
        assert_eq!(
            org.settings("x").expect("settings").owner_repo(),
            ("knative", None)
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                BASE.replace("knative/docs", "a/b/c"),
                "spec.ownerAndRepository",
            ),
            (
                BASE.replace("knative/docs", "'a b/c'"),
                "spec.ownerAndRepository",
            ),
            (
                BASE.replace("[push, pull_request]", "[]"),
                "spec.eventTypes",
            ),
            (
                BASE.replace("[push, pull_request]", "[push, Push]"),
                "spec.eventTypes[1]",
            ),
            (
                BASE.replace("{secretKeyRef: {name: gh, key: accessToken}}", "{}"),
                "spec.accessToken",
            ),
            (
                format!("{BASE}githubAPIURL: ftp://x/\n"),
                "spec.githubAPIURL",
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

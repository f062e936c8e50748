//! GitHub's repository and organisation webhooks API
//! (`/repos/{owner}/{repo}/hooks`, `/orgs/{org}/hooks`).

use super::{failure, ApiClient, HookError};
use crate::secrets::SecretValue;
use channel_core::sources::github::GitHubSettings;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use url::Url;

/// The hooks collection of a source's repository or organisation.
pub fn hooks_url(settings: &GitHubSettings) -> Result<Url, HookError> {
    let path = match settings.owner_repo() {
        (owner, Some(repo)) => format!("repos/{owner}/{repo}/hooks"),
        (org, None) => format!("orgs/{org}/hooks"),
    };
    settings
        .api_url
        .join(&path)
        .map_err(|e| HookError::Invalid(format!("githubAPIURL {}: {e}", settings.api_url)))
}

fn headers(token: &SecretValue) -> [(&'static str, String); 3] {
    [
        ("authorization", format!("Bearer {}", token.expose())),
        ("accept", "application/vnd.github+json".to_owned()),
        ("x-github-api-version", "2022-11-28".to_owned()),
    ]
}

async fn call(
    api: &ApiClient,
    method: Method,
    url: &Url,
    token: &SecretValue,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), HookError> {
    let h = headers(token);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    api.call(method, url, &h, body).await
}

/// The hook as GitHub wants it: JSON deliveries signed with `secret`.
fn hook_body(settings: &GitHubSettings, secret: &SecretValue, webhook: &Url) -> Value {
    json!({
        "name": "web",
        "active": true,
        "events": settings.event_types,
        "config": {
            "url": webhook.as_str(),
            "content_type": "json",
            "secret": secret.expose(),
            "insecure_ssl": if settings.secure { "0" } else { "1" },
        },
    })
}

/// A repository's or organisation's hooks, for [`super::ensure`].
struct Hooks<'a> {
    api: &'a ApiClient,
    url: Url,
    token: &'a SecretValue,
    body: Value,
}

impl super::HookCollection for Hooks<'_> {
    async fn update(&self, id: u64) -> Result<(StatusCode, Value), HookError> {
        let url = self
            .url
            .join(&format!("hooks/{id}"))
            .map_err(|e| HookError::Invalid(e.to_string()))?;
        call(self.api, Method::PATCH, &url, self.token, Some(&self.body)).await
    }

    async fn list(&self) -> Result<(StatusCode, Value), HookError> {
        call(self.api, Method::GET, &self.url, self.token, None).await
    }

    async fn create(&self) -> Result<(StatusCode, Value), HookError> {
        call(
            self.api,
            Method::POST,
            &self.url,
            self.token,
            Some(&self.body),
        )
        .await
    }

    fn delivery_url(hook: &Value) -> Option<&str> {
        hook.pointer("/config/url").and_then(Value::as_str)
    }
}

/// Create or update the hook of `settings` delivering to `webhook`;
/// `known` is the id recorded earlier. Returns the hook's id and its
/// collection URL.
pub async fn ensure(
    api: &ApiClient,
    settings: &GitHubSettings,
    token: &SecretValue,
    secret: &SecretValue,
    webhook: &Url,
    known: Option<u64>,
) -> Result<(u64, String), HookError> {
    let hooks = Hooks {
        api,
        url: hooks_url(settings)?,
        token,
        body: hook_body(settings, secret, webhook),
    };
    let what = format!("GitHub webhook of {}", settings.owner_and_repository);
    let id = super::ensure(&hooks, &what, webhook, known).await?;
    Ok((id, hooks.url.to_string()))
}

/// Delete hook `id` of the collection `hooks`; one already gone is fine.
pub async fn delete(
    api: &ApiClient,
    hooks: &Url,
    token: &SecretValue,
    id: u64,
) -> Result<(), HookError> {
    let url = hooks
        .join(&format!("hooks/{id}"))
        .map_err(|e| HookError::Invalid(e.to_string()))?;
    let (status, answer) = call(api, Method::DELETE, &url, token, None).await?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        tracing::info!(hook = id, url = %hooks, "GitHub webhook deleted");
        Ok(())
    } else {
        Err(failure(
            &format!("deleting GitHub webhook {id}"),
            status,
            &answer,
        ))
    }
}

//! GitLab's project hooks API (`/api/v4/projects/:id/hooks`, the project
//! named by its URL-encoded path).

use super::{failure, ApiClient, HookError};
use crate::secrets::SecretValue;
use channel_core::sources::gitlab::{GitLabSettings, GITLAB_HOOKS};
use http::{Method, StatusCode};
use serde_json::{json, Map, Value};
use url::Url;

/// The hooks collection of a source's project.
pub fn hooks_url(settings: &GitLabSettings) -> Result<Url, HookError> {
    let project: String =
        url::form_urlencoded::byte_serialize(settings.project_path().as_bytes()).collect();
    // `byte_serialize` writes spaces as '+': a project path has none.
    settings
        .api_url()
        .join(&format!("projects/{project}/hooks"))
        .map_err(|e| HookError::Invalid(format!("projectUrl {}: {e}", settings.project_url)))
}

async fn call(
    api: &ApiClient,
    method: Method,
    url: &Url,
    token: &SecretValue,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), HookError> {
    api.call(method, url, &[("private-token", token.expose())], body)
        .await
}

/// The hook as GitLab wants it: every flag set, true for `eventTypes`.
fn hook_body(settings: &GitLabSettings, secret: &SecretValue, webhook: &Url) -> Value {
    let mut body = Map::new();
    body.insert("url".into(), json!(webhook.as_str()));
    body.insert("token".into(), json!(secret.expose()));
    body.insert("enable_ssl_verification".into(), json!(settings.ssl_verify));
    for (flag, _) in GITLAB_HOOKS {
        body.insert(
            (*flag).into(),
            json!(settings.event_types.iter().any(|t| t == flag)),
        );
    }
    Value::Object(body)
}

/// A project's hooks, for [`super::ensure`].
struct Hooks<'a> {
    api: &'a ApiClient,
    url: Url,
    token: &'a SecretValue,
    body: Value,
}

impl Hooks<'_> {
    fn hook(&self, id: u64) -> Url {
        let mut url = self.url.clone();
        url.set_path(&format!("{}/{id}", self.url.path()));
        url
    }
}

impl super::HookCollection for Hooks<'_> {
    async fn update(&self, id: u64) -> Result<(StatusCode, Value), HookError> {
        call(
            self.api,
            Method::PUT,
            &self.hook(id),
            self.token,
            Some(&self.body),
        )
        .await
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
        hook.get("url").and_then(Value::as_str)
    }
}

/// Create or update the hook of `settings` delivering to `webhook`;
/// `known` is the id recorded earlier. Returns the hook's id and its
/// collection URL.
pub async fn ensure(
    api: &ApiClient,
    settings: &GitLabSettings,
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
    let what = format!("GitLab hook of {}", settings.project_url);
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
    let mut url = hooks.clone();
    url.set_path(&format!("{}/{id}", hooks.path()));
    let (status, answer) = call(api, Method::DELETE, &url, token, None).await?;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        tracing::info!(hook = id, url = %hooks, "GitLab hook deleted");
        Ok(())
    } else {
        Err(failure(
            &format!("deleting GitLab hook {id}"),
            status,
            &answer,
        ))
    }
}

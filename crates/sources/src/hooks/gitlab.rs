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

fn id_of(body: &Value) -> Option<u64> {
    body.get("id").and_then(Value::as_u64)
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
    let hooks = hooks_url(settings)?;
    let body = hook_body(settings, secret, webhook);
    let what = format!("GitLab hook of {}", settings.project_url);
    let hook = |id: u64| {
        let mut url = hooks.clone();
        url.set_path(&format!("{}/{id}", hooks.path()));
        url
    };
    if let Some(id) = known {
        let (status, answer) = call(api, Method::PUT, &hook(id), token, Some(&body)).await?;
        match status {
            s if s.is_success() => return Ok((id, hooks.to_string())),
            StatusCode::NOT_FOUND => {}
            s => return Err(failure(&format!("updating the {what}"), s, &answer)),
        }
    }
    let (status, list) = call(api, Method::GET, &hooks, token, None).await?;
    if !status.is_success() {
        return Err(failure(
            &format!("listing the hooks for the {what}"),
            status,
            &list,
        ));
    }
    let existing = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h.get("url").and_then(Value::as_str) == Some(webhook.as_str()));
    if let Some(id) = existing.and_then(id_of) {
        let (status, answer) = call(api, Method::PUT, &hook(id), token, Some(&body)).await?;
        return if status.is_success() {
            Ok((id, hooks.to_string()))
        } else {
            Err(failure(&format!("updating the {what}"), status, &answer))
        };
    }
    let (status, answer) = call(api, Method::POST, &hooks, token, Some(&body)).await?;
    match (status, id_of(&answer)) {
        (StatusCode::CREATED | StatusCode::OK, Some(id)) => Ok((id, hooks.to_string())),
        (s, _) => Err(failure(&format!("creating the {what}"), s, &answer)),
    }
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

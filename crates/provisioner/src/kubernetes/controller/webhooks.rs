//! The webhooks of GitHubSources and GitLabSources on Kubernetes (see
//! `docs/kubernetes-sources.md`).
//!
//! The source adapter receives the deliveries on its webhook listener at
//! `/<namespace>/<name>`; GitHub or GitLab must be told to send them there.
//! With `--webhook-base-url` (the public URL of that listener, e.g. an
//! Ingress in front of the Service `source-adapter-webhooks`) the
//! controller keeps one [`Registrar`] across rounds and gives it the planned
//! sources every round: a new source's hook is created, a changed one
//! updated, one whose source is gone deleted. Tokens are read from the
//! Secrets the sources name, through the API ([`SecretStore::Kube`]), when
//! they are used; only references are kept.
//!
//! * Every live webhook source holds the finalizer [`WEBHOOK_FINALIZER`],
//!   added before its hook is registered. A deleted one is left out of
//!   what the registrar is given, so its hook is deleted (with the access
//!   token it was registered with); the finalizer goes once the registrar
//!   no longer records the hook (deleted, or given up because the token
//!   can no longer be read, e.g. the Secret went first).
//! * The registrar's records live in this process only: a restarted (or
//!   newly leading) controller recovers them from the sources' own
//!   `status.webhookIDKey` (of live sources, and of deleted ones still
//!   holding the finalizer), so it updates and deletes the hooks it made
//!   instead of making new ones (and the registrar adopts a hook already
//!   delivering to the same URL).
//! * Status: `WebhookRegistered` and `status.webhookIDKey`, from the
//!   registrar's answer ([`WebhookObservation`]).
//!
//! Without `--webhook-base-url` nothing is registered: the webhook sources
//! are `WebhookRegistered=Unknown`, and a deleted one that still holds the
//! finalizer (from a run with the flag) is let go, its hook left in place.

use super::{has_finalizer, is_live, kind_of, note, Controller, Snapshot};
use crate::reconcile::Plan;
use crate::status::sources::WebhookObservation;
use ::sources::hooks::{github, gitlab, Registered, Registrar};
use ::sources::secrets::SecretStore;
use channel_core::sources::github::GitHubSourceSpec;
use channel_core::sources::gitlab::GitLabSourceSpec;
use channel_core::sources::SourceContract;
use kube::api::DynamicObject;
use kube::ResourceExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use url::Url;

/// Held by every GitHubSource and GitLabSource (with
/// `--webhook-base-url`) until its webhook is deleted.
pub const WEBHOOK_FINALIZER: &str = "sources.knative.dev/webhook";

/// Whether `o` is of a kind whose webhook the controller registers.
fn is_webhook_source(o: &DynamicObject) -> bool {
    matches!(kind_of(o).as_str(), "GitHubSource" | "GitLabSource")
}

/// The hook id a source's status records (`status.webhookIDKey`).
fn recorded_id(o: &DynamicObject) -> Option<u64> {
    match &o.data["status"]["webhookIDKey"] {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `<base>/<namespace>/<name>`, `https` for a GitHub source asking for a
/// secure hook (as the registrar computes it).
fn webhook_url(base: &Url, namespace: &str, name: &str, secure: bool) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{namespace}/{name}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    if secure {
        let _ = url.set_scheme("https");
    }
    url
}

/// What a source's hook was registered as, recovered from the object: the
/// id its status records, where the hook lives and the access token's
/// reference. The fingerprint is left empty, so the next registration
/// updates the hook (by id) rather than trusting it unchanged.
fn recover(o: &DynamicObject, base: &Url) -> Option<Registered> {
    let id = recorded_id(o)?;
    let ns = o.namespace()?;
    let name = o.name_any();
    let spec = o.data.get("spec")?.clone();
    let kind = kind_of(o);
    let (hooks_url, access_token, secure) = match kind.as_str() {
        "GitHubSource" => {
            let settings = serde_json::from_value::<GitHubSourceSpec>(spec)
                .ok()?
                .settings(&ns)
                .ok()?;
            let hooks = github::hooks_url(&settings).ok()?;
            (hooks, settings.access_token, settings.secure)
        }
        "GitLabSource" => {
            let settings = serde_json::from_value::<GitLabSourceSpec>(spec)
                .ok()?
                .settings(&ns)
                .ok()?;
            let hooks = gitlab::hooks_url(&settings).ok()?;
            (hooks, settings.access_token, false)
        }
        _ => return None,
    };
    Some(Registered {
        kind,
        id,
        hooks_url: hooks_url.to_string(),
        webhook_url: webhook_url(base, &ns, &name, secure).to_string(),
        access_token,
        fingerprint: String::new(),
    })
}

impl Controller {
    /// Register the webhooks of the planned GitHubSources and
    /// GitLabSources, delete those of deleted (or no longer planned) ones,
    /// and hold or release [`WEBHOOK_FINALIZER`]. What is registered, for
    /// status.
    pub(super) async fn apply_webhooks(
        &mut self,
        snap: &Snapshot,
        plan: &Plan,
        errors: &mut Vec<String>,
    ) -> WebhookObservation {
        let objects: Vec<&DynamicObject> = snap
            .sources
            .iter()
            .filter(|o| is_webhook_source(o))
            .collect();
        let deleting = || {
            objects
                .iter()
                .copied()
                .filter(|o| !is_live(o) && has_finalizer(o, WEBHOOK_FINALIZER))
        };
        let Some(base) = self.settings.webhook_base_url.clone() else {
            for o in deleting() {
                tracing::warn!(
                    source = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()),
                    kind = %kind_of(o),
                    "no --webhook-base-url: the webhook of a deleted source is left in place"
                );
                self.release_finalizer(o, &kind_of(o), WEBHOOK_FINALIZER, errors)
                    .await;
            }
            return WebhookObservation::Unconfigured;
        };

        // What was registered: this process's records, and the hooks the
        // sources' status names that it has no record of (after a restart).
        let known = self
            .registrar
            .as_ref()
            .map(|r| r.registered().clone())
            .unwrap_or_default();
        let mut records = known.clone();
        for o in objects
            .iter()
            .filter(|o| is_live(o) || has_finalizer(o, WEBHOOK_FINALIZER))
        {
            let uid = o.uid().unwrap_or_default();
            if uid.is_empty() || records.contains_key(&uid) {
                continue;
            }
            if let Some(r) = recover(o, &base) {
                tracing::info!(source = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()), kind = %r.kind, hook = r.id, "webhook recovered from the source's status");
                records.insert(uid, r);
            }
        }
        if self.registrar.is_none() || records.len() != known.len() {
            self.registrar = Some(Registrar::new(base, records));
        }

        // The finalizer, before a hook is registered.
        let mut held: BTreeSet<String> = BTreeSet::new();
        for o in objects.iter().filter(|o| is_live(o)) {
            let uid = o.uid().unwrap_or_default();
            if has_finalizer(o, WEBHOOK_FINALIZER) {
                held.insert(uid);
                continue;
            }
            let kind = kind_of(o);
            let mut finalizers = o.finalizers().to_vec();
            finalizers.push(WEBHOOK_FINALIZER.into());
            match self.set_finalizers_of(&kind, o, finalizers).await {
                Ok(()) => {
                    held.insert(uid);
                }
                Err(e) => note(
                    errors,
                    format!(
                        "adding the finalizer to {kind} {}/{}",
                        o.namespace().unwrap_or_default(),
                        o.name_any()
                    ),
                    e,
                ),
            }
        }

        let Some(registrar) = self.registrar.as_mut() else {
            return WebhookObservation::Unconfigured;
        };
        // A source without the finalizer is not registered (yet); one
        // registered already stays so (it is not deleted for that).
        let wanted: Vec<SourceContract> = plan
            .sources
            .iter()
            .filter(|s| {
                !s.settings.is_webhook()
                    || held.contains(&s.uid)
                    || registrar.registered().contains_key(&s.uid)
            })
            .cloned()
            .collect();
        let statuses = registrar
            .reconcile(&wanted, &SecretStore::Kube(self.client.clone()))
            .await;
        let registered: BTreeSet<String> = registrar.registered().keys().cloned().collect();

        // Deleted sources whose hook is gone: the finalizer goes.
        for o in deleting() {
            let uid = o.uid().unwrap_or_default();
            if registered.contains(&uid) {
                tracing::debug!(source = %format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()), "deletion waits for the webhook to be deleted");
                continue;
            }
            self.release_finalizer(o, &kind_of(o), WEBHOOK_FINALIZER, errors)
                .await;
        }

        let uids: BTreeMap<(String, String, String), String> = wanted
            .iter()
            .map(|s| {
                (
                    (s.kind().to_owned(), s.namespace.clone(), s.name.clone()),
                    s.uid.clone(),
                )
            })
            .collect();
        WebhookObservation::from_statuses(statuses, &uids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hook_is_recovered_from_the_status_of_its_source() {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sources.knative.dev/v1alpha1", "kind": "GitHubSource",
            "metadata": {"name": "repo", "namespace": "shop", "uid": "u"},
            "spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"],
                     "accessToken": {"secretKeyRef": {"name": "gh", "key": "accessToken"}},
                     "secretToken": {"secretKeyRef": {"name": "gh", "key": "secretToken"}},
                     "secure": true,
                     "sink": {"uri": "http://display/"}},
            "status": {"webhookIDKey": "42", "conditions": []}
        }))
        .expect("object");
        let base = Url::parse("http://hooks.example.com/adapter/").expect("url");
        let r = recover(&o, &base).expect("recovered");
        assert_eq!(r.id, 42);
        assert_eq!(r.kind, "GitHubSource");
        assert_eq!(r.hooks_url, "https://api.github.com/repos/o/r/hooks");
        assert_eq!(r.webhook_url, "https://hooks.example.com/adapter/shop/repo");
        assert_eq!(r.fingerprint, "", "the next round updates the hook");
        assert_eq!(
            r.access_token.to_string(),
            channel_core::sources::secret::SecretRef::Secret {
                namespace: "shop".into(),
                name: "gh".into(),
                key: "accessToken".into()
            }
            .to_string()
        );
        let mut without = o.clone();
        without.data["status"] = json!({"conditions": []});
        assert!(recover(&without, &base).is_none());
    }
}

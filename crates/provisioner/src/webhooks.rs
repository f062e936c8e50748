//! Standalone mode's webhook registrations: the GitHub and GitLab hooks of
//! the webhook sources, kept registered by [`sources::hooks::Registrar`]
//! and recorded in `<contracts-dir>/webhooks.json` (ids and what each was
//! computed from; references to secrets, never their values), so a
//! restarted provisioner updates or deletes the hooks it made instead of
//! making new ones.
//!
//! Nothing is registered without `--webhook-base-url` (the public URL of
//! the source adapter's webhook listener): the sources then report
//! `WebhookRegistered=Unknown`.

use crate::status::sources::WebhookObservation;
use channel_core::sources::SourceContract;
use sources::hooks::{Registered, Registrar};
use sources::secrets::SecretStore;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

/// The file of the registrations, in the contracts directory.
pub const WEBHOOKS_FILE: &str = "webhooks.json";

/// The webhook registrations of a standalone provisioner.
#[derive(Debug)]
pub struct Webhooks {
    registrar: Option<Registrar>,
    path: PathBuf,
    secrets: SecretStore,
    written: BTreeMap<String, Registered>,
}

impl Webhooks {
    /// Start from what `contracts_dir` records.
    pub fn load(base: Option<Url>, contracts_dir: &Path, secrets_dir: PathBuf) -> Webhooks {
        let path = contracts_dir.join(WEBHOOKS_FILE);
        let written: BTreeMap<String, Registered> = std::fs::read(&path)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable webhook registrations");
                    None
                }
            })
            .unwrap_or_default();
        Webhooks {
            registrar: base.map(|b| Registrar::new(b, written.clone())),
            path,
            secrets: SecretStore::Dir(secrets_dir),
            written,
        }
    }

    /// Register the hooks of the webhook sources among `sources` (and
    /// delete those of removed ones); record the result.
    pub async fn reconcile(&mut self, sources: &[SourceContract]) -> WebhookObservation {
        let Some(registrar) = &mut self.registrar else {
            return WebhookObservation::Unconfigured;
        };
        let statuses = registrar.reconcile(sources, &self.secrets).await;
        if registrar.registered() != &self.written {
            let json = serde_json::to_vec_pretty(registrar.registered()).unwrap_or_default();
            match crate::standalone::write_json_atomically(&self.path, &json) {
                Ok(()) => self.written = registrar.registered().clone(),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot record the webhook registrations")
                }
            }
        }
        let uids = sources
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

//! EventPolicies (`eventing.knative.dev/v1alpha1`): read into the manifests
//! the contracts are compiled from (the dispatchers enforce them when
//! `authentication-oidc` is enabled in `config-features`), and given their
//! status.

use super::{api_version_of, document, is_live, merge, problem, Controller, Snapshot};
use crate::kubernetes::crd;
use channel_core::compile::Problem;
use channel_core::manifests::{load_str, Manifests};
use kube::api::ApiResource;
use kube::ResourceExt;
use serde_json::Value;

/// The API version EventPolicies are read in.
const EVENT_POLICY_V1ALPHA1: &str = "eventing.knative.dev/v1alpha1";

/// The API resource of EventPolicies.
pub fn event_policy_resource() -> ApiResource {
    ApiResource::erase::<crd::EventPolicy>(&())
}

impl Controller {
    /// The live EventPolicies into `manifests`; one that cannot be read, as
    /// a problem.
    pub(super) fn event_policy_manifests(
        &self,
        snap: &Snapshot,
        manifests: &mut Manifests,
        problems: &mut Vec<Problem>,
    ) {
        for p in snap.event_policies.iter().filter(|p| is_live(p)) {
            let ns = p.namespace().unwrap_or_default();
            let spec = p.data.get("spec").cloned().unwrap_or(Value::Null);
            let api_version = match api_version_of(p) {
                v if v.is_empty() => EVENT_POLICY_V1ALPHA1.to_owned(),
                v => v,
            };
            let doc = document(&api_version, "EventPolicy", &p.metadata, &spec);
            match load_str(&format!("EventPolicy {ns}/{}", p.name_any()), &doc) {
                Ok(m) => merge(manifests, m),
                Err(err) => problems.push(problem(
                    "EventPolicy",
                    &p.metadata,
                    "InvalidSpec",
                    err.to_string(),
                )),
            }
        }
    }
}

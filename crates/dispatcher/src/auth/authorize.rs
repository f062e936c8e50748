//! Authorization of a verified sender at a broker or channel ingress:
//! the EventPolicies that apply to it, or the default authorization mode
//! (see `channel_core::policy`).

use channel_core::event::Event;
use channel_core::features::Oidc;
use channel_core::policy::{default_allows, AppliedPolicy, AuthorizationMode};
use event_filter::{Filter, FilterResult};

/// What a route requires of a sender.
#[derive(Debug)]
pub struct RouteAuth {
    /// The token's required audience.
    pub audience: String,
    namespace: String,
    mode: AuthorizationMode,
    /// The policies applying, with their compiled filters.
    policies: Vec<(AppliedPolicy, Option<Filter>)>,
}

impl RouteAuth {
    /// The requirements of the resource at ingress `path` (`kind`
    /// `namespace/name`), under `oidc`.
    pub fn new(oidc: &Oidc, path: &str, kind: &str, namespace: &str, name: &str) -> RouteAuth {
        let policies = oidc
            .policies
            .get(path)
            .into_iter()
            .flatten()
            .map(|p| {
                // Validated by the control plane; a filter that does not
                // compile here denies (never allows by accident).
                let filter = match Filter::compile(None, &p.filters) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(policy = %p.name, error = %e, "EventPolicy filters do not compile; the policy allows nothing");
                        None
                    }
                };
                (p.clone(), filter)
            })
            .collect();
        RouteAuth {
            audience: channel_core::features::audience(kind, namespace, name),
            namespace: namespace.to_owned(),
            mode: oidc.default_authorization_mode,
            policies,
        }
    }

    /// Whether `sub` may send `event` here: `Err` says why not.
    pub fn authorize(&self, sub: &str, event: &Event) -> Result<(), String> {
        if self.policies.is_empty() {
            return if default_allows(self.mode, &self.namespace, sub) {
                Ok(())
            } else {
                Err(format!(
                    "no EventPolicy applies here and the default authorization mode ({:?}) does not allow {sub:?}",
                    self.mode
                ))
            };
        }
        let mut sender_allowed = false;
        for (policy, filter) in &self.policies {
            if policy.allows(sub) {
                sender_allowed = true;
                if filter
                    .as_ref()
                    .is_some_and(|f| f.evaluate(event) == FilterResult::Pass)
                {
                    return Ok(());
                }
            }
        }
        if sender_allowed {
            Err(format!(
                "the EventPolicies allowing {sub:?} do not pass this event"
            ))
        } else {
            let names: Vec<&str> = self.policies.iter().map(|(p, _)| p.name.as_str()).collect();
            Err(format!(
                "{sub:?} is not allowed by the EventPolicies {}",
                names.join(", ")
            ))
        }
    }
}

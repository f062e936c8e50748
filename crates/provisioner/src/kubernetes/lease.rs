//! Leader election through a `coordination.k8s.io/v1` Lease, so several
//! controller replicas can run and exactly one reconciles.
//!
//! The holder renews the Lease every third of its duration; another replica
//! takes it over once `renewTime + leaseDurationSeconds` has passed without a
//! renewal. Every write carries the Lease's resourceVersion, so two replicas
//! racing for an expired Lease cannot both win: the loser gets a conflict
//! and stays a follower.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::Duration;

/// One replica's view of the Lease.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    /// How often the holder renews (and followers retry).
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Acquire the Lease, or renew it when held: whether this replica leads.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !held_by_me {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(self.seconds()));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() + duration <= now.0.as_second());
            if spec.holder_identity.is_some() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(self.seconds());
        spec.renew_time = Some(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !held_by_me {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!(error = %e, "lease not released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::fake::{client, Shared};
    use serde_json::json;

    const PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/knative-channels/leases/provisioner";

    fn elector(state: &Shared, identity: &str) -> Elector {
        let api = Api::namespaced(client(state.clone()), "knative-channels");
        Elector::new(api, "provisioner", identity, Duration::from_secs(15))
    }

    fn holder(state: &Shared) -> serde_json::Value {
        state.lock().unwrap_or_else(|e| e.into_inner()).objects[PATH]["spec"].clone()
    }

    #[tokio::test]
    async fn one_replica_leads_until_its_lease_expires() {
        let state = Shared::default();
        let (a, b) = (elector(&state, "pod-a"), elector(&state, "pod-b"));
        assert!(
            a.try_acquire_or_renew().await.expect("api"),
            "the first replica creates the lease"
        );
        assert!(
            !b.try_acquire_or_renew().await.expect("api"),
            "a held lease is not taken"
        );
        assert!(
            a.try_acquire_or_renew().await.expect("api"),
            "the holder renews"
        );
        assert_eq!(holder(&state)["holderIdentity"], "pod-a");
        assert_eq!(holder(&state)["leaseDurationSeconds"], 15);

        // pod-a stops renewing: a minute later its lease has expired.
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let mut lease = s.objects[PATH].clone();
            lease["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
            s.put(PATH, lease);
        }
        assert!(
            b.try_acquire_or_renew().await.expect("api"),
            "an expired lease is taken over"
        );
        assert_eq!(holder(&state)["holderIdentity"], "pod-b");
        assert_eq!(holder(&state)["leaseTransitions"], 1);
        assert!(
            !a.try_acquire_or_renew().await.expect("api"),
            "the old holder is now a follower"
        );

        // A graceful shutdown hands over at once.
        b.release().await;
        assert!(a.try_acquire_or_renew().await.expect("api"));
        assert_eq!(holder(&state)["holderIdentity"], "pod-a");
    }
}

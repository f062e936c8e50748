//! The stateful half of a reconcile, shared by standalone mode and the
//! Kubernetes controller: provision what is due, decide which channels each
//! backend's contract lists, delete what is gone, and ask the dispatchers
//! what they applied.

use crate::provision::{Provisioner, Schedule, Tracker};
use crate::reconcile::{channel_key, contracts_for, ChannelKey, Plan};
use crate::status::{DispatcherObservation, Observations, Provisioning};
use bytes::Bytes;
use channel_core::{BackendKind, ChannelContract};
use channel_nats::cli::NatsArgs;
use dispatcher::dataplane::Status as DispatcherStatus;
use futures_util::future::join_all;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use url::Url;

/// How backing resources are provisioned: the flags standalone mode and the
/// controller share.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisioningArgs {
    /// How often a provisioned topic or stream is verified (and recreated
    /// or updated if it drifted).
    #[arg(long, env = "KN_PROVISIONER_RESYNC_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// Longest wait for one provisioning call before the broker is reported
    /// unavailable.
    #[arg(long, env = "KN_PROVISIONER_PROVISION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provision_timeout: Duration,

    /// Longest pause between retries of a failed provisioning (backoff
    /// doubles from 500ms).
    #[arg(long, env = "KN_PROVISIONER_MAX_BACKOFF", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_backoff: Duration,

    /// Kafka bootstrap servers for classes that set no `bootstrapServers`.
    #[arg(long, env = "KN_CHANNEL_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: Option<String>,

    #[command(flatten)]
    pub nats: NatsArgs,
}

impl ProvisioningArgs {
    /// A fresh provisioning cycle with these settings.
    pub fn cycle(&self) -> Cycle {
        let kafka_defaults = channel_kafka::config::Defaults {
            bootstrap_servers: self
                .bootstrap_servers
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        };
        Cycle::new(
            Provisioner::new(
                kafka_defaults,
                self.nats.options("provisioner"),
                self.provision_timeout,
            ),
            Tracker::new(Schedule {
                min_backoff: Duration::from_millis(500),
                max_backoff: self.max_backoff,
                resync: self.resync_interval,
            }),
        )
    }
}

/// Longest wait for an unreachable dispatcher to confirm it stopped serving
/// a removed channel before its topic or stream is deleted anyway.
pub const DELETE_GRACE: Duration = Duration::from_secs(30);

/// A channel taken out of its backend's contract, whose backing resource
/// waits for the dispatcher to confirm.
#[derive(Debug, Clone)]
struct Removal {
    backend: BackendKind,
    /// The first contract generation written without the channel.
    generation: Option<u64>,
    since: Instant,
}

/// Whether a dispatcher has stopped serving what a contract generation
/// removed: it applied that generation, or none is configured to ask, or it
/// has not answered for [`DELETE_GRACE`].
pub fn dispatcher_released(
    observation: Option<&DispatcherObservation>,
    generation: Option<u64>,
    since: Instant,
) -> bool {
    match observation {
        None | Some(DispatcherObservation::Unconfigured) => true,
        Some(DispatcherObservation::Unreachable(_)) => since.elapsed() >= DELETE_GRACE,
        Some(DispatcherObservation::Report(r)) => match (r.generation, generation) {
            (Some(applied), Some(wanted)) => applied >= wanted,
            _ => false,
        },
    }
}

/// Provisioning state carried from one reconcile to the next.
///
/// A removed channel's topic or stream is deleted only once its dispatcher
/// applied the contract without it: deleting a topic under a live consumer
/// is never what anyone wants, and crashed librdkafka 2.12 against tansu.
#[derive(Debug)]
pub struct Cycle {
    pub provisioner: Provisioner,
    pub tracker: Tracker,
    removals: BTreeMap<ChannelKey, Removal>,
}

impl Cycle {
    pub fn new(provisioner: Provisioner, tracker: Tracker) -> Cycle {
        Cycle {
            provisioner,
            tracker,
            removals: BTreeMap::new(),
        }
    }

    /// Provision the planned channels that are due (new, failed and backed
    /// off, or due for verification), concurrently; schedule the deletion
    /// of channels in `previous` that are no longer planned.
    pub async fn provision(
        &mut self,
        plan: &Plan,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
    ) {
        let now = Instant::now();
        let due = self.tracker.due(
            plan.channels
                .iter()
                .map(|c| (channel_key(&c.contract), &c.contract)),
            now,
        );
        let provisioner = &self.provisioner;
        let results = join_all(due.into_iter().map(|(key, contract)| async move {
            let state = provisioner.provision(&contract).await;
            (key, contract, state)
        }))
        .await;
        for (key, contract, state) in results {
            let before = self.tracker.get(&key).map(|t| t.state.clone());
            match (&before, &state) {
                (Some(Provisioning::Ready { .. }), Provisioning::Ready { .. }) => {}
                (_, Provisioning::Ready { message, .. }) => {
                    tracing::info!(channel = %contract.key(), backend = %contract.backend, resource = %message, "channel provisioned")
                }
                (_, Provisioning::Failed { reason, message }) => {
                    tracing::warn!(channel = %contract.key(), backend = %contract.backend, reason = %reason, error = %message, "provisioning failed; retrying with backoff")
                }
                _ => {}
            }
            self.tracker.record(key, contract, state, now);
        }
        let wanted: BTreeSet<ChannelKey> = plan
            .channels
            .iter()
            .map(|c| channel_key(&c.contract))
            .collect();
        self.tracker.forget_except(&wanted, now);
        for (key, contract) in previous {
            if !wanted.contains(key) {
                self.tracker
                    .delete_later(key.clone(), contract.clone(), now);
                self.removals.entry(key.clone()).or_insert(Removal {
                    backend: contract.backend,
                    generation: None,
                    since: now,
                });
            }
        }
    }

    /// Note that `backend`'s contract was written at `generation`: channels
    /// removed before it wait for the dispatcher to apply it.
    pub fn contract_written(&mut self, backend: BackendKind, generation: u64) {
        for removal in self.removals.values_mut() {
            if removal.backend == backend && removal.generation.is_none() {
                removal.generation = Some(generation);
            }
        }
    }

    /// The channels each backend's contract lists: those provisioned, and
    /// those already served (a broker outage never unroutes a channel).
    pub fn contracts(
        &self,
        plan: &Plan,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
    ) -> BTreeMap<BackendKind, Vec<ChannelContract>> {
        contracts_for(plan, &BackendKind::ALL, |c| {
            let key = channel_key(&c.contract);
            previous.contains_key(&key)
                || matches!(
                    self.tracker.get(&key).map(|t| &t.state),
                    Some(Provisioning::Ready { .. })
                )
        })
    }

    /// Delete the backing resources whose deletion is due and whose
    /// dispatcher released them (see [`dispatcher_released`]). The keys
    /// deleted.
    pub async fn delete_due(
        &mut self,
        dispatchers: &BTreeMap<BackendKind, DispatcherObservation>,
    ) -> Vec<ChannelKey> {
        let mut deleted = Vec::new();
        for (key, contract) in self.tracker.deletions_due(Instant::now()) {
            if let Some(r) = self.removals.get(&key) {
                if !dispatcher_released(dispatchers.get(&r.backend), r.generation, r.since) {
                    tracing::debug!(channel = %contract.key(), "deletion waits for the dispatcher to stop serving the channel");
                    continue;
                }
            }
            let result = self.provisioner.deprovision(&contract).await;
            match &result {
                Ok(()) => {
                    tracing::info!(channel = %contract.key(), backend = %contract.backend, "backing resource deleted");
                    self.removals.remove(&key);
                    deleted.push(key.clone());
                }
                Err(e) => {
                    tracing::warn!(channel = %contract.key(), error = %e, "deletion failed; retrying with backoff")
                }
            }
            self.tracker.deleted(&key, result, Instant::now());
        }
        deleted
    }

    /// What status is computed from, but for the dispatchers: the
    /// provisioning state of every planned channel, which channels the
    /// contracts list, and the contracts' generations.
    pub fn observations(
        &self,
        plan: &Plan,
        in_contract: BTreeMap<ChannelKey, bool>,
        written: &BTreeMap<BackendKind, channel_core::Contract>,
    ) -> Observations {
        Observations {
            provisioning: self.provisioning(plan),
            in_contract,
            generations: written.iter().map(|(b, c)| (*b, c.generation)).collect(),
            ..Observations::default()
        }
    }

    /// The provisioning state of every planned channel.
    pub fn provisioning(&self, plan: &Plan) -> BTreeMap<ChannelKey, Provisioning> {
        plan.channels
            .iter()
            .filter_map(|c| {
                let key = channel_key(&c.contract);
                let state = self.tracker.get(&key)?.state.clone();
                Some((key, state))
            })
            .collect()
    }
}

/// An HTTP client for dispatcher admin endpoints.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET <base>/<path>` as JSON of type `T`, within `timeout`; the error
/// names the URL and what went wrong (`what` is the document expected).
/// The admin token sent to dispatchers and source adapters (`--admin-token`,
/// `KN_ADMIN_TOKEN`), set once at start.
pub static ADMIN_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub async fn get_json<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    base: &Url,
    path: &str,
    what: &str,
    timeout: Duration,
) -> Result<T, String> {
    let uri = base.join(path).map_err(|e| e.to_string())?.to_string();
    let mut request = Request::get(&uri);
    if let Some(token) = ADMIN_TOKEN.get() {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let answer = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("GET {uri}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {uri}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("GET {uri}: {status}"));
        }
        serde_json::from_slice::<T>(&body).map_err(|e| format!("GET {uri}: not {what}: {e}"))
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(result) => result,
        Err(_) => Err(format!("GET {uri}: no answer within {timeout:?}")),
    }
}

/// Ask a dispatcher for its `/status`.
pub async fn poll_dispatcher(client: &HttpClient, admin: &Url) -> DispatcherObservation {
    match get_json::<DispatcherStatus>(
        client,
        admin,
        "status",
        "a dispatcher status",
        Duration::from_secs(2),
    )
    .await
    {
        Ok(report) => DispatcherObservation::Report(Box::new(report)),
        Err(e) => DispatcherObservation::Unreachable(e),
    }
}

/// Poll every backend's dispatcher that has an admin URL, concurrently.
pub async fn poll_dispatchers(
    client: &HttpClient,
    admins: &BTreeMap<BackendKind, Url>,
) -> Vec<(BackendKind, Option<Url>, DispatcherObservation)> {
    join_all(BackendKind::ALL.into_iter().map(|backend| {
        let admin = admins.get(&backend).cloned();
        async move {
            let obs = match &admin {
                Some(url) => poll_dispatcher(client, url).await,
                None => DispatcherObservation::Unconfigured,
            };
            (backend, admin, obs)
        }
    }))
    .await
}

/// Make `Url::join` append to a base URL's path (it replaces the last
/// segment unless the path ends in `/`).
pub fn as_base(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(generation: u64) -> DispatcherObservation {
        DispatcherObservation::Report(Box::new(DispatcherStatus {
            generation: Some(generation),
            backend: "kafka".into(),
            channels: Vec::new(),
            problems: Vec::new(),
            last_error: None,
        }))
    }

    #[test]
    fn a_backing_resource_waits_until_its_dispatcher_applied_the_removal() {
        let now = Instant::now();
        assert!(!dispatcher_released(Some(&applied(4)), Some(5), now));
        assert!(dispatcher_released(Some(&applied(5)), Some(5), now));
        assert!(dispatcher_released(Some(&applied(6)), Some(5), now));
        // Not written yet: nothing to have applied.
        assert!(!dispatcher_released(Some(&applied(6)), None, now));
        // No dispatcher to ask: nothing to wait for.
        assert!(dispatcher_released(None, Some(5), now));
        assert!(dispatcher_released(
            Some(&DispatcherObservation::Unconfigured),
            Some(5),
            now
        ));
        // A silent dispatcher is waited for, within a bound.
        let down = DispatcherObservation::Unreachable("refused".into());
        assert!(!dispatcher_released(Some(&down), Some(5), now));
        let long_ago = now.checked_sub(DELETE_GRACE + Duration::from_secs(1));
        if let Some(long_ago) = long_ago {
            assert!(dispatcher_released(Some(&down), Some(5), long_ago));
        }
    }
}

//! Delivery: per-subscription loops that POST events to subscribers by the
//! Knative rules — retry, backoff, timeout, `Retry-After`, dead letter and
//! reply.
//!
//! One loop runs per subscription. It takes an event from the backend only
//! when it has room (at most `maxInFlight` events in flight), delivers each
//! in its own task, and settles every event exactly once with the backend:
//! `Delivered`, `DeadLettered`, `Dropped` (no dead-letter sink), or
//! `Abandoned` when the loop is stopped before the event's outcome is final,
//! so the backend hands it out again.
//!
//! Ordered subscriptions deliver one event at a time per ordering key, in
//! the order the backend hands them out, retries included; other keys go on.

mod client;
mod connections;
pub mod retry;
#[cfg(test)]
mod tests;
pub mod trigger;

use crate::metrics::{Metrics, StatusClass, SubscriptionMetrics};
use base64::Engine as _;
use channel_core::backend::{Delivery, DeliveryStream, Outcome};
use channel_core::contract::DeliveryOrder;
use channel_core::event::{decode_http, DecodeError, Event, ExtensionValue};
use channel_core::{ChannelContract, DeliveryPolicy, SubscriptionContract};
pub use client::{Attempt, EventClient, Target};
use http::Uri;
use retry::{classify, parse_retry_after, retry_delay, Verdict};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Hosts the dispatcher serves itself (channel hosts), so a reply or
/// subscriber that is another channel of this dispatcher is reached without
/// cluster DNS.
pub trait LocalRoutes: Send + Sync + std::fmt::Debug {
    /// The socket address to connect to for `host`, when it is served locally.
    fn resolve(&self, host: &str) -> Option<SocketAddr>;
}

/// Settings shared by every subscription loop.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// How long in-flight deliveries may run after a stop before they are
    /// abandoned (left for the backend to hand out again).
    pub drain_timeout: Duration,
    /// Largest response body read from a subscriber; a larger reply is not routed.
    pub max_reply_bytes: usize,
    pub local_routes: Option<Arc<dyn LocalRoutes>>,
    /// Extra roots HTTPS destinations are verified against, beside the
    /// system's (`--delivery-ca-certs`).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Signs the OIDC tokens presented to destinations with an audience.
    pub signer: Option<Arc<crate::auth::identity::Signer>>,
}

impl DeliveryOptions {
    /// Delivery over plain connections verified against the system's roots
    /// only: no local routes, no extra CA certificates, no signing key (a
    /// destination expecting a token fails its attempts, saying so).
    pub fn basic(drain_timeout: Duration, max_reply_bytes: usize) -> Self {
        DeliveryOptions {
            drain_timeout,
            max_reply_bytes,
            local_routes: None,
            ca_certs: Vec::new(),
            signer: None,
        }
    }
}

/// The latest contract entry of one subscription, shared by its worker
/// (which reads it before every delivery) and the data plane (which
/// replaces it when the contract changes): a change applies to the next
/// delivery without pausing the worker. A few dozen bytes per subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig(Arc<arc_swap::ArcSwap<SubscriptionContract>>);

impl SubscriptionConfig {
    pub fn new(subscription: Arc<SubscriptionContract>) -> Self {
        SubscriptionConfig(Arc::new(arc_swap::ArcSwap::new(subscription)))
    }

    /// The current entry.
    pub fn borrow(&self) -> arc_swap::Guard<Arc<SubscriptionContract>> {
        self.0.load()
    }

    /// Replace the entry; the worker's next delivery uses it.
    pub fn set(&self, subscription: Arc<SubscriptionContract>) {
        self.0.store(subscription);
    }
}

/// Largest `knativeerrordata` value, in characters of base64.
pub const MAX_ERROR_DATA: usize = 1024;
/// Longest pause before starting over when the dead-letter sink keeps failing.
const MAX_DEAD_LETTER_PAUSE: Duration = Duration::from_secs(30);

/// The delivery engine: an HTTP client pool plus metrics. Cheap to clone
/// (one pointer: every subscription's worker and delivery task holds one).
#[derive(Debug, Clone)]
pub struct Deliverer(Arc<Engine>);

/// What every clone of a [`Deliverer`] shares.
#[derive(Debug)]
pub struct Engine {
    client: EventClient,
    metrics: Arc<Metrics>,
    opts: DeliveryOptions,
}

impl std::ops::Deref for Deliverer {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        &self.0
    }
}

/// Why a send to one destination ended without success.
#[derive(Debug)]
struct Failure {
    destination: Url,
    last: Attempt,
}

/// How sending to one destination (with retries) ended.
enum Sent {
    Ok(Attempt),
    Failed(Failure),
}

/// Queues of ordered deliveries waiting behind the one in flight, per key.
type Lanes = Mutex<HashMap<Option<Arc<str>>, VecDeque<(Delivery, OwnedSemaphorePermit)>>>;

/// Everything one delivery task needs.
struct Job {
    deliverer: Deliverer,
    config: SubscriptionConfig,
    metrics: Arc<SubscriptionMetrics>,
    abort: CancellationToken,
}

impl Deliverer {
    pub fn new(metrics: Arc<Metrics>, opts: DeliveryOptions) -> Self {
        Deliverer(Arc::new(Engine {
            client: EventClient::new(
                opts.local_routes.clone(),
                opts.max_reply_bytes,
                client::root_store(&opts.ca_certs),
                opts.signer.clone(),
            ),
            metrics,
            opts,
        }))
    }

    /// The metric handles of one subscription of `channel`.
    pub fn subscription_metrics(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Arc<SubscriptionMetrics> {
        self.metrics
            .subscription(&subscription.namespace, &channel.name, &subscription.name)
    }

    /// Run one subscription until `stop` is cancelled (then drain) or the
    /// stream ends. `config` carries the latest contract entry of the
    /// subscription; changes apply to the next delivery without a pause.
    ///
    /// An idle subscription is a small task waiting on its stream: what the
    /// worker keeps between events is one allocation, and what
    /// only deliveries in flight need (their window, tasks, ordered lanes,
    /// abort signal, the loop that drives them) is made when an event
    /// arrives and dropped when the last delivery finishes. Ten thousand
    /// idle subscriptions are ten thousand of these.
    pub fn run_subscription(
        self,
        config: SubscriptionConfig,
        metrics: Arc<SubscriptionMetrics>,
        stream: Box<dyn DeliveryStream>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        // Not an `async fn`: its arguments would stay in the task beside
        // the box they are moved into.
        Box::new(Worker {
            deliverer: self,
            wanted: Wanted {
                config,
                metrics,
                filters: trigger::FilterCache::default(),
            },
            stream,
            stop,
            stream_errors: 0,
        })
        .run()
    }
}

/// What a subscription's worker keeps between events.
struct Worker {
    deliverer: Deliverer,
    wanted: Wanted,
    stream: Box<dyn DeliveryStream>,
    stop: CancellationToken,
    /// Stream errors in a row, for the pause before trying again.
    stream_errors: u32,
}

/// Which events the subscription wants (a trigger's filter), and what
/// deliveries read: its contract entry and metrics.
struct Wanted {
    config: SubscriptionConfig,
    metrics: Arc<SubscriptionMetrics>,
    filters: trigger::FilterCache,
}

impl Wanted {
    fn passes(&mut self, event: &Event) -> bool {
        self.filters
            .passes(&self.config.borrow(), event, &self.metrics)
    }
}

/// What the stream gave the worker.
type Item = Option<Option<Result<Delivery, channel_core::backend::BackendError>>>;

/// What the worker does next with what the stream gave.
enum Next {
    /// Stopped, or the stream closed.
    End,
    /// Pause after a stream error, then look again.
    Pause(Duration),
    Deliver(Delivery),
}

/// Whether the worker goes on (idle) after a pause or a busy period.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Idle,
    End,
}

impl Worker {
    async fn run(mut self: Box<Self>) {
        loop {
            // Only the idle wait is part of the task; pauses and busy
            // periods are boxed, made when needed.
            // (Each boxed future is made in a statement of its own: a
            // temporary of the awaiting statement would be part of the
            // task even once moved into its box.)
            let item = self.next_idle().await;
            let then: Pin<Box<dyn Future<Output = Flow> + Send + '_>> = match self.take(item) {
                Next::End => return,
                Next::Pause(pause) => Box::pin(self.pause(pause)),
                Next::Deliver(delivery) => Box::pin(self.run_busy(delivery)),
            };
            let flow = then.await;
            if flow == Flow::End {
                return;
            }
        }
    }

    /// Wait, idle, for the next event the subscription wants; `None` when
    /// stopped. A trigger's filter runs inside the backend's
    /// `next_wanted`, before any task or request: an event that does not
    /// pass is settled at once (the in-memory log skips it in place).
    async fn next_idle(&mut self) -> Item {
        let mut wanted = |event: &Event| self.wanted.passes(event);
        tokio::select! {
            _ = self.stop.cancelled() => None,
            item = self.stream.next_wanted(&mut wanted) => Some(item),
        }
    }

    /// What to do with what the stream gave.
    fn take(&mut self, item: Item) -> Next {
        match item {
            None => Next::End,
            Some(None) => {
                tracing::info!(subscription = %self.wanted.config.borrow().key(), "delivery stream closed");
                Next::End
            }
            Some(Some(Err(e))) => {
                self.stream_errors = self.stream_errors.saturating_add(1);
                let pause = Duration::from_millis(100 * u64::from(self.stream_errors.min(50)));
                tracing::warn!(subscription = %self.wanted.config.borrow().key(), error = %e, pause_ms = pause.as_millis() as u64, "delivery stream error");
                Next::Pause(pause)
            }
            Some(Some(Ok(delivery))) => {
                self.stream_errors = 0;
                Next::Deliver(delivery)
            }
        }
    }

    /// The pause after a stream error; ends early on a stop.
    async fn pause(&mut self, pause: Duration) -> Flow {
        tokio::select! {
            _ = self.stop.cancelled() => Flow::End,
            _ = tokio::time::sleep(pause) => Flow::Idle,
        }
    }

    /// Deliver `first` and whatever else the stream hands out while
    /// deliveries are in flight, taking an event only when the window has
    /// room; back to idle once the last delivery finishes. On a stop, or
    /// when the stream closes, what was taken may finish within the drain
    /// timeout; the rest is abandoned for the backend to hand out again.
    async fn run_busy(&mut self, first: Delivery) -> Flow {
        let mut busy = Busy::new(&self.deliverer, &self.wanted.config, &self.wanted.metrics);
        // The next delivery to start, with its permit when one is held
        // (the first has none: a fresh window has room).
        let mut next = Some((first, None));
        let flow = loop {
            if let Some((delivery, permit)) = next.take() {
                let permit = match permit {
                    Some(p) => p,
                    None => match busy.semaphore.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => match busy.semaphore.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => break Flow::End,
                        },
                    },
                };
                let ordered = self.wanted.config.borrow().delivery.order == DeliveryOrder::Ordered;
                busy.start(delivery, permit, ordered);
            }
            busy.reap();
            if busy.tasks.is_empty() {
                break Flow::Idle;
            }
            // Room for the next delivery, or a stop.
            busy.follow_window(self.wanted.config.borrow().delivery.max_in_flight.max(1) as usize);
            let permit = tokio::select! {
                _ = self.stop.cancelled() => break Flow::End,
                permit = busy.semaphore.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break Flow::End,
                },
            };
            busy.reap();
            if busy.tasks.is_empty() {
                break Flow::Idle;
            }
            let Worker {
                wanted: filter,
                stream,
                stop,
                ..
            } = &mut *self;
            let mut wanted = |event: &Event| filter.passes(event);
            let item = tokio::select! {
                _ = stop.cancelled() => None,
                item = stream.next_wanted(&mut wanted) => Some(item),
                // A delivery finished while no event was waiting: look
                // again (idle once the last one is done).
                Some(done) = busy.tasks.join_next() => {
                    busy.log_failure(done);
                    continue;
                }
            };
            match self.take(item) {
                Next::End => break Flow::End,
                Next::Pause(pause) => {
                    drop(permit);
                    if self.pause(pause).await == Flow::End {
                        break Flow::End;
                    }
                }
                Next::Deliver(delivery) => next = Some((delivery, Some(permit))),
            }
        };
        if flow == Flow::End {
            busy.drain(self.deliverer.opts.drain_timeout).await;
        }
        flow
    }
}

/// What a subscription's worker holds only while deliveries are in flight.
struct Busy {
    /// The in-flight window the semaphore holds now.
    window: usize,
    semaphore: Arc<Semaphore>,
    /// Cancelled when the drain deadline passes: deliveries still running
    /// are abandoned.
    abort: CancellationToken,
    job: Arc<Job>,
    lanes: Arc<Lanes>,
    tasks: JoinSet<()>,
}

impl Busy {
    fn new(
        deliverer: &Deliverer,
        config: &SubscriptionConfig,
        metrics: &Arc<SubscriptionMetrics>,
    ) -> Busy {
        let window = config.borrow().delivery.max_in_flight.max(1) as usize;
        let abort = CancellationToken::new();
        Busy {
            window,
            semaphore: Arc::new(Semaphore::new(window)),
            job: Arc::new(Job {
                deliverer: deliverer.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                abort: abort.clone(),
            }),
            abort,
            lanes: Arc::default(),
            tasks: JoinSet::new(),
        }
    }

    /// Follow a change of the subscription's in-flight window.
    fn follow_window(&mut self, wanted: usize) {
        if wanted > self.window {
            self.semaphore.add_permits(wanted - self.window);
            self.window = wanted;
        } else if wanted < self.window {
            self.window -= self.semaphore.forget_permits(self.window - wanted);
        }
    }

    fn log_failure(&self, done: Result<(), tokio::task::JoinError>) {
        if let Err(e) = done {
            tracing::error!(subscription = %self.job.config.borrow().key(), error = %e, "delivery task failed");
        }
    }

    /// Collect the deliveries that finished.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            self.log_failure(done);
        }
    }

    /// Deliver `delivery` under `permit`: in a task of its own, or, for an
    /// ordered subscription, behind the deliveries of the same key.
    fn start(&mut self, delivery: Delivery, permit: OwnedSemaphorePermit, ordered: bool) {
        if !ordered {
            self.tasks
                .spawn(delivery_task(self.job.clone(), delivery, permit));
            return;
        }
        // Ordered: queue behind the same key; start a lane if none runs.
        let key = delivery.ordering_key.clone();
        let start_lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            match lanes.get_mut(&key) {
                Some(queue) => {
                    queue.push_back((delivery, permit));
                    false
                }
                None => {
                    lanes.insert(key.clone(), VecDeque::from([(delivery, permit)]));
                    true
                }
            }
        };
        if start_lane {
            let job = self.job.clone();
            let lanes = self.lanes.clone();
            self.tasks.spawn(async move {
                loop {
                    let next = {
                        let mut lanes = lanes.lock().unwrap_or_else(|e| e.into_inner());
                        let next = lanes.get_mut(&key).and_then(VecDeque::pop_front);
                        if next.is_none() {
                            lanes.remove(&key);
                        }
                        next
                    };
                    let Some((delivery, permit)) = next else {
                        break;
                    };
                    Box::pin(job.deliver(delivery)).await;
                    drop(permit);
                }
            });
        }
    }

    /// Let the deliveries in flight finish within `timeout`, then abandon
    /// the rest (the backend hands them out again).
    async fn drain(mut self, timeout: Duration) {
        let drained = tokio::time::timeout(timeout, async {
            while let Some(done) = self.tasks.join_next().await {
                self.log_failure(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(subscription = %self.job.config.borrow().key(), in_flight = self.tasks.len(), "drain timeout: abandoning deliveries in flight");
            self.abort.cancel();
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// The task of one unordered delivery. Spawning moves a task's future
/// through several frames, so this one is kept a few pointers wide: the
/// delivery's own state (a few kilobytes) is made once, on the heap, when
/// the task first runs.
async fn delivery_task(job: Arc<Job>, delivery: Delivery, permit: OwnedSemaphorePermit) {
    Box::pin(job.deliver(delivery)).await;
    drop(permit);
}

impl Job {
    /// Deliver one event to its final outcome (or abandon it on abort) and
    /// settle it with the backend.
    async fn deliver(&self, delivery: Delivery) {
        let Delivery { event, ack, .. } = delivery;
        let outcome = tokio::select! {
            outcome = self.process(&event) => outcome,
            _ = self.abort.cancelled() => Outcome::Abandoned,
        };
        let sub = self.config.borrow().clone();
        if let Err(e) = ack.settle(outcome).await {
            tracing::error!(subscription = %sub.key(), event_id = %event.id, error = %e, "settling with the backend failed");
        }
    }

    async fn process(&self, event: &Arc<Event>) -> Outcome {
        let mut pauses = 0u32;
        loop {
            let sub = self.config.borrow().clone();
            // 1-2. The subscriber and the reply.
            let sent = match &sub.trigger {
                Some(_) => self.deliver_to_trigger(&sub, event).await,
                None => self.deliver_to_subscriber(&sub, event).await,
            };
            let Err(failure) = sent else {
                return Outcome::Delivered;
            };
            // 3. The dead-letter sink. Boxed: rare, and its state would
            // widen every delivery's.
            if let Some(outcome) =
                Box::pin(self.dead_letter(&sub, event, failure, &mut pauses)).await
            {
                return outcome;
            }
        }
    }

    /// Send the event that failed with `failure` to the dead-letter sink:
    /// the outcome, or `None` to start over after a pause when the sink
    /// failed too (`pauses` counts them).
    async fn dead_letter(
        &self,
        sub: &SubscriptionContract,
        event: &Event,
        failure: Failure,
        pauses: &mut u32,
    ) -> Option<Outcome> {
        let Some(dead_letter) = &sub.dead_letter else {
            self.metrics.dropped();
            tracing::warn!(
                subscription = %sub.key(),
                event_id = %event.id,
                destination = %failure.destination,
                status = failure.last.status(),
                "delivery failed and there is no dead-letter sink: event dropped"
            );
            return Some(Outcome::Dropped);
        };
        let dead = with_error_extensions(event, &failure);
        let to = target(sub, |a| a.dead_letter.as_ref());
        match self
            .send(dead_letter, to, &dead, &sub.delivery, false)
            .await
        {
            Sent::Ok(_) => {
                self.metrics.dead_lettered();
                tracing::info!(subscription = %sub.key(), event_id = %event.id, destination = %failure.destination, status = failure.last.status(), "event dead-lettered");
                Some(Outcome::DeadLettered)
            }
            Sent::Failed(dl) => {
                // Never drop an event because the dead-letter sink is down:
                // pause, then start over.
                *pauses = pauses.saturating_add(1);
                let pause =
                    Duration::from_secs(1u64 << (*pauses).min(5)).min(MAX_DEAD_LETTER_PAUSE);
                tracing::error!(
                    subscription = %sub.key(),
                    event_id = %event.id,
                    dead_letter = %dl.destination,
                    status = dl.last.status(),
                    pause_ms = pause.as_millis() as u64,
                    "dead-letter sink failed too; the event is kept and delivery starts over"
                );
                tokio::time::sleep(pause).await;
                None
            }
        }
    }

    /// A subscription's delivery: the subscriber, retried by the policy,
    /// then the reply, retried on its own. `Err` is the failure to report
    /// to the dead-letter sink.
    async fn deliver_to_subscriber(
        &self,
        sub: &SubscriptionContract,
        event: &Arc<Event>,
    ) -> Result<(), Failure> {
        let policy = &sub.delivery;
        // A reply-only subscription forwards the event itself.
        let reply = match &sub.subscriber {
            Some(subscriber) => match self
                .send(
                    subscriber,
                    target(sub, |a| a.subscriber.as_ref()),
                    event,
                    policy,
                    true,
                )
                .await
            {
                Sent::Ok(response) => self.reply_of(sub, event, response),
                Sent::Failed(f) => return Err(f),
            },
            None => Some((**event).clone()),
        };
        let Some(reply_event) = reply else {
            return Ok(());
        };
        match &sub.reply {
            Some(reply_url) => match self
                .send(
                    reply_url,
                    target(sub, |a| a.reply.as_ref()),
                    &reply_event,
                    policy,
                    false,
                )
                .await
            {
                Sent::Ok(_) => {
                    self.metrics.reply();
                    Ok(())
                }
                Sent::Failed(f) => Err(f),
            },
            None => {
                tracing::debug!(subscription = %sub.key(), event_id = %event.id, reply_id = %reply_event.id, "reply dropped: the subscription has no reply destination");
                Ok(())
            }
        }
    }

    /// Send to one destination, retrying by the policy. `subscriber` marks
    /// attempts counted in the delivery metrics.
    async fn send(
        &self,
        url: &Url,
        to: Target<'_>,
        event: &Event,
        policy: &DeliveryPolicy,
        subscriber: bool,
    ) -> Sent {
        let uri: Uri = match url.as_str().parse() {
            Ok(uri) => uri,
            Err(e) => {
                return Sent::Failed(Failure {
                    destination: url.clone(),
                    last: Attempt::Failed {
                        reason: format!("invalid destination URL: {e}"),
                    },
                })
            }
        };
        let mut n = 0u32;
        loop {
            let (attempt, elapsed) = self
                .deliverer
                .client
                .send(&uri, event, policy.format, policy.timeout, to)
                .await;
            if subscriber {
                let class = attempt.status().map_or(StatusClass::Error, StatusClass::of);
                self.metrics.attempt(class, elapsed);
            }
            let verdict = classify(attempt.status());
            tracing::debug!(destination = %url, event_id = %event.id, status = attempt.status(), attempt = n + 1, ?verdict, "delivery attempt");
            if let Attempt::Failed { reason } = &attempt {
                // No response at all (refused, timed out, a certificate
                // that does not verify): said once, on the last attempt.
                if n >= policy.retry {
                    tracing::warn!(destination = %url, event_id = %event.id, attempts = n + 1, reason = %reason, "delivery failed without a response");
                } else {
                    tracing::debug!(destination = %url, event_id = %event.id, reason = %reason, "no response");
                }
            }
            match verdict {
                Verdict::Success => return Sent::Ok(attempt),
                Verdict::Fatal => {
                    return Sent::Failed(Failure {
                        destination: url.clone(),
                        last: attempt,
                    })
                }
                Verdict::Retry if n >= policy.retry => {
                    return Sent::Failed(Failure {
                        destination: url.clone(),
                        last: attempt,
                    })
                }
                Verdict::Retry => {
                    n += 1;
                    let retry_after = match &attempt {
                        Attempt::Response { headers, .. } => {
                            parse_retry_after(headers, SystemTime::now())
                        }
                        Attempt::Failed { .. } => None,
                    };
                    let delay = retry_delay(policy, n, attempt.status(), retry_after);
                    if subscriber {
                        self.metrics.retry();
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The reply event carried by a successful response, if any.
    fn reply_of(
        &self,
        sub: &SubscriptionContract,
        event: &Event,
        response: Attempt,
    ) -> Option<Event> {
        let Attempt::Response {
            status,
            headers,
            body,
            truncated,
        } = response
        else {
            return None;
        };
        // 202 Accepted and 204 No Content never carry a reply.
        if status == 202 || status == 204 {
            return None;
        }
        if truncated {
            tracing::warn!(subscription = %sub.key(), event_id = %event.id, limit = self.deliverer.opts.max_reply_bytes, "reply larger than the limit: not routed");
            return None;
        }
        match decode_http(&headers, body) {
            Ok(reply) => Some(reply),
            Err(DecodeError::NotCloudEvent) => None,
            Err(e) => {
                tracing::warn!(subscription = %sub.key(), event_id = %event.id, error = %e, "subscriber answered with an invalid reply event: not routed");
                None
            }
        }
    }
}

/// Where `pick` sends for `sub`: that destination's trust and audience, and
/// the subscription's identity.
fn target(
    sub: &SubscriptionContract,
    pick: fn(&channel_core::contract::DeliveryAuth) -> Option<&channel_core::contract::TargetAuth>,
) -> Target<'_> {
    let auth = sub.auth.as_deref();
    Target {
        auth: auth.and_then(pick),
        identity: auth.and_then(|a| a.identity.as_deref()),
    }
}

/// The event as sent to a dead-letter sink: the original with the Knative
/// error extensions naming the failed destination, its last status code and
/// (base64, at most [`MAX_ERROR_DATA`] characters) its last response body.
fn with_error_extensions(event: &Event, failure: &Failure) -> Event {
    let mut dead = event.clone();
    dead.extensions.insert(
        "knativeerrordest".to_owned(),
        ExtensionValue::String(failure.destination.to_string()),
    );
    dead.extensions.remove("knativeerrorcode");
    dead.extensions.remove("knativeerrordata");
    if let Attempt::Response { status, body, .. } = &failure.last {
        dead.extensions.insert(
            "knativeerrorcode".to_owned(),
            ExtensionValue::String(status.to_string()),
        );
        if !body.is_empty() {
            let mut data = base64::engine::general_purpose::STANDARD.encode(body);
            data.truncate(MAX_ERROR_DATA);
            dead.extensions
                .insert("knativeerrordata".to_owned(), ExtensionValue::String(data));
        }
    }
    dead
}

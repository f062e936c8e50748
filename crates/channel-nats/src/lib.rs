//! The NATS JetStream channel backend.
//!
//! Owns: storing a channel's events in a JetStream stream (one per channel,
//! named as Knative's NatsJetStreamChannel names it), handing them to each
//! subscription through a durable pull consumer, settling deliveries with
//! acks, and creating, updating and deleting those streams and consumers
//! from class parameters ([`config`]). Events are stored in the CloudEvents
//! NATS binding ([`codec`]).
//!
//! Semantics, in the terms of [`channel_core::backend`]:
//! * **persist** publishes with `Nats-Msg-Id` = the CloudEvent id and returns
//!   only after the stream's PubAck, so a `202` means stored (and a retried
//!   POST of the same event within the duplicate window is stored once).
//!   Not connected, JetStream down or a timeout → `Unavailable` (`503`); a
//!   full stream with `discard: New` → `Full` (`429`); too large → `Rejected`.
//! * **subscribe** opens the subscription's durable consumer (explicit ack,
//!   `max_ack_pending` = the in-flight window, 1 when ordered). Retries and
//!   backoff are the engine's, in process; while a delivery is in progress
//!   its acknowledgement keeps it alive with progress acks every third of
//!   the ack wait. Final outcomes are acked with a plain ack (one message,
//!   no reply awaited: a lost ack only means a redelivery, which
//!   at-least-once allows), or with confirmation from the server when
//!   `--nats-confirm-acks` asks for it (a round trip per event, fewer
//!   redeliveries after a crash); `Abandoned` (or an acknowledgement dropped unsettled) is nak'ed
//!   so another replica, or this one, gets it again at once. A dispatcher
//!   that dies leaves its deliveries to be redelivered after the ack wait.
//!   Several dispatchers share a consumer: each message goes to one of them.
//! * A stored message that is not a CloudEvent is logged and terminated
//!   (`+TERM`): never redelivered, never a crash loop.
//!
//! This crate knows nothing of Kafka, HTTP delivery or Kubernetes.

pub mod cli;
pub mod codec;
pub mod config;
pub mod provision;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_nats::{Client, ConnectOptions, ServerAddr, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use channel_core::backend::{
    Acknowledgement, Backend, BackendError, BackendErrorKind, Delivery, DeliveryStream, Health,
    Outcome, PersistError, PersistErrorKind, Position,
};
use channel_core::{BackendKind, ChannelContract, Event, SubscriptionContract};
use config::{ConnectionSettings, NatsParameters};
use futures_util::StreamExt as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

/// How long producers are asked to wait when NATS is unavailable or the
/// stream is full.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Idle heartbeat of pull requests: a silent server is noticed within twice this.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Lifetime of one pull request.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Most messages requested per pull.
const MAX_PULL_BATCH: usize = 512;

/// How the backend connects when a class sets no connection parameters.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// The default connection (`--nats-url` and the security flags).
    pub default_connection: ConnectionSettings,
    /// Timeout of JetStream API requests, publish acks and ack confirmations.
    pub request_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Longest pause between reconnection attempts (the pause doubles from
    /// 100 ms up to this).
    pub max_reconnect_delay: Duration,
    /// Client name shown by the server (`nats server report connections`).
    pub client_name: String,
    /// Wait for the server to confirm each final ack (`+ACK` as a request)
    /// instead of sending it plainly.
    pub confirm_acks: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            default_connection: ConnectionSettings::from_urls("nats://127.0.0.1:4222"),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(2),
            client_name: "nats-dispatcher".into(),
            confirm_acks: false,
        }
    }
}

/// One NATS connection and its JetStream context.
#[derive(Debug, Clone)]
struct Connection {
    settings: ConnectionSettings,
    client: Client,
    js: jetstream::Context,
}

/// What the backend knows of one provisioned channel.
#[derive(Debug)]
struct ChannelHandle {
    key: String,
    parameters: NatsParameters,
    stream: String,
    subject: Subject,
    conn: Connection,
    /// Set when the channel is deprovisioned: its delivery streams end.
    closed: AtomicBool,
}

impl ChannelHandle {
    fn desired_stream(&self) -> async_nats::jetstream::stream::Config {
        provision::stream_config(&self.stream, &self.subject, &self.parameters.stream)
    }
}

/// Per subscription: deliveries in progress, for keep-alive and `pending`.
#[derive(Debug)]
struct SubscriptionState {
    key: String,
    /// Messages the server still had for the consumer at the last delivery.
    stream_pending: AtomicU64,
    in_flight: Arc<InFlight>,
    /// Set by `unsubscribe`: the delivery stream ends.
    removed: AtomicBool,
}

/// Deliveries handed to the engine and not yet settled.
#[derive(Debug)]
struct InFlight {
    client: Client,
    next_token: AtomicU64,
    entries: Mutex<HashMap<u64, (Subject, Instant)>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Subject, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, reply: Subject) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(token, (reply, Instant::now()));
        token
    }

    fn remove(&self, token: u64) {
        self.lock().remove(&token);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Send progress acks for deliveries in progress longer than `period`,
/// every `period`, until nothing refers to `in_flight` any more.
async fn keep_alive(in_flight: Weak<InFlight>, period: Duration, subscription: String) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(in_flight) = in_flight.upgrade() else {
            break;
        };
        let due: Vec<Subject> = in_flight
            .lock()
            .values()
            .filter(|(_, since)| since.elapsed() >= period)
            .map(|(reply, _)| reply.clone())
            .collect();
        let client = in_flight.client.clone();
        drop(in_flight);
        for reply in due {
            if let Err(e) = client.publish(reply, Bytes::from(AckKind::Progress)).await {
                tracing::debug!(subscription = %subscription, error = %e, "progress ack not sent");
            }
        }
    }
}

/// The NATS JetStream backend.
#[derive(Debug)]
pub struct NatsBackend {
    options: NatsOptions,
    connections: tokio::sync::Mutex<Vec<Connection>>,
    /// A snapshot of the connections for the synchronous paths.
    clients: RwLock<Vec<(String, Client)>>,
    channels: RwLock<HashMap<String, Arc<ChannelHandle>>>,
    subscriptions: Mutex<HashMap<(String, String), Arc<SubscriptionState>>>,
}

impl NatsBackend {
    /// A backend whose default connection is opened now, in the background:
    /// this returns at once even when NATS is down (health reports it, and
    /// the client reconnects with backoff forever).
    pub async fn connect(options: NatsOptions) -> Result<NatsBackend, BackendError> {
        options.default_connection.validate()?;
        let backend = NatsBackend {
            options,
            connections: tokio::sync::Mutex::new(Vec::new()),
            clients: RwLock::new(Vec::new()),
            channels: RwLock::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
        };
        let default = backend.options.default_connection.clone();
        backend.connection(&default).await?;
        Ok(backend)
    }

    /// The options the backend was built with.
    pub fn options(&self) -> &NatsOptions {
        &self.options
    }

    /// The JetStream context of the default connection (for tools and tests).
    pub async fn default_jetstream(&self) -> Result<jetstream::Context, BackendError> {
        let default = self.options.default_connection.clone();
        Ok(self.connection(&default).await?.js)
    }

    async fn connection(&self, settings: &ConnectionSettings) -> Result<Connection, BackendError> {
        let mut connections = self.connections.lock().await;
        if let Some(c) = connections.iter().find(|c| &c.settings == settings) {
            return Ok(c.clone());
        }
        let client = open_client(settings, &self.options).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(self.options.request_timeout)
            .build(client.clone());
        let conn = Connection {
            settings: settings.clone(),
            client: client.clone(),
            js,
        };
        connections.push(conn.clone());
        self.clients
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((settings.display_urls(), client));
        Ok(conn)
    }

    /// The handle of a channel, built (without provisioning) if this process
    /// has not provisioned it yet, or rebuilt if its parameters changed.
    async fn handle(&self, channel: &ChannelContract) -> Result<Arc<ChannelHandle>, BackendError> {
        let existing = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel.uid)
            .cloned();
        let parameters = NatsParameters::from_channel(channel)?;
        if let Some(h) = existing {
            if h.parameters == parameters && h.key == channel.key() {
                return Ok(h);
            }
        }
        let settings = parameters
            .connection
            .clone()
            .unwrap_or_else(|| self.options.default_connection.clone());
        let conn = self.connection(&settings).await?;
        let stream = match &parameters.stream.name_override {
            Some(name) => name.clone(),
            None => provision::stream_name(&channel.namespace, &channel.name),
        };
        let handle = Arc::new(ChannelHandle {
            key: channel.key(),
            parameters,
            stream,
            subject: Subject::from(provision::subject(&channel.namespace, &channel.name)),
            conn,
            closed: AtomicBool::new(false),
        });
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.uid.clone(), handle.clone());
        Ok(handle)
    }

    /// The fast path of persist: the handle when already known with the
    /// same parameters object (no parsing).
    fn known_handle(&self, channel: &ChannelContract) -> Option<Arc<ChannelHandle>> {
        let h = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel.uid)
            .cloned()?;
        (!h.closed.load(Ordering::Relaxed)).then_some(h)
    }

    fn subscription_state(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
        client: &Client,
        period: Duration,
    ) -> Arc<SubscriptionState> {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let key = (channel.uid.clone(), subscription.uid.clone());
        if let Some(s) = subs.get(&key) {
            if !s.removed.load(Ordering::Relaxed) {
                return s.clone();
            }
        }
        let state = Arc::new(SubscriptionState {
            key: subscription.key(),
            stream_pending: AtomicU64::new(0),
            in_flight: Arc::new(InFlight {
                client: client.clone(),
                next_token: AtomicU64::new(0),
                entries: Mutex::new(HashMap::new()),
            }),
            removed: AtomicBool::new(false),
        });
        tokio::spawn(keep_alive(
            Arc::downgrade(&state.in_flight),
            period,
            subscription.key(),
        ));
        subs.insert(key, state.clone());
        state
    }

    async fn publish(
        &self,
        handle: &ChannelHandle,
        event: &Event,
    ) -> Result<jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError> {
        let (headers, payload) = codec::encode(event);
        let ack = handle
            .conn
            .js
            .send_publish(
                handle.subject.clone(),
                jetstream::message::PublishMessage::build()
                    .headers(headers)
                    .payload(payload),
            )
            .await?;
        ack.await
    }
}

/// Open a client: background connect, reconnect forever with capped backoff.
async fn open_client(
    settings: &ConnectionSettings,
    options: &NatsOptions,
) -> Result<Client, BackendError> {
    settings.validate()?;
    let addrs: Vec<ServerAddr> = settings
        .urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>().map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Invalid,
                    format!("nats url {u:?} is not valid: {e}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let urls = settings.display_urls();
    let max_delay = options.max_reconnect_delay.max(Duration::from_millis(100));
    let event_urls = urls.clone();
    let mut opts = ConnectOptions::new()
        .name(&options.client_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout))
        .reconnect_delay_callback(move |attempts| {
            let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
            Duration::from_millis(100)
                .saturating_mul(1 << exp.min(15))
                .min(max_delay)
        })
        .event_callback(move |event| {
            let urls = event_urls.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(nats = %urls, "nats connected")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(nats = %urls, "nats disconnected; reconnecting")
                    }
                    other => tracing::warn!(nats = %urls, event = %other, "nats connection event"),
                }
            }
        });
    if let Some(path) = &settings.credentials_file {
        opts = opts.credentials_file(path).await.map_err(|e| {
            BackendError::new(
                BackendErrorKind::Invalid,
                format!("nats credentials file {}: {e}", path.display()),
            )
            .with_source(e)
        })?;
    }
    if let Some(token) = &settings.token {
        opts = opts.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    let mut tls = false;
    if let Some(ca) = &settings.tls_ca_file {
        check_readable("tlsCaFile", ca)?;
        opts = opts.add_root_certificates(ca.clone());
        tls = true;
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert_file, &settings.tls_key_file) {
        check_readable("tlsCertFile", cert)?;
        check_readable("tlsKeyFile", key)?;
        opts = opts.add_client_certificate(cert.clone(), key.clone());
        tls = true;
    }
    if tls {
        opts = opts.require_tls(true);
    }
    tracing::info!(nats = %urls, "connecting to nats");
    opts.connect(addrs).await.map_err(|e| {
        BackendError::new(
            BackendErrorKind::Unavailable,
            format!("cannot connect to nats {urls}: {e}"),
        )
        .with_source(e)
    })
}

fn check_readable(key: &str, path: &std::path::Path) -> Result<(), BackendError> {
    std::fs::metadata(path).map(|_| ()).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Invalid,
            format!("nats {key} {}: {e}", path.display()),
        )
    })
}

fn unavailable(message: String) -> PersistError {
    PersistError::new(PersistErrorKind::Unavailable, message).with_retry_after(RETRY_AFTER)
}

/// Map a failed publish to the ingress answer.
fn persist_error(
    handle: &ChannelHandle,
    event: &Event,
    e: async_nats::jetstream::context::PublishError,
) -> PersistError {
    use async_nats::jetstream::context::PublishErrorKind as K;
    use async_nats::jetstream::ErrorCode;
    let stream = &handle.stream;
    match e.kind() {
        K::MaxPayloadExceeded => PersistError::new(
            PersistErrorKind::Rejected,
            format!(
                "event {} is larger than the NATS server accepts: {e}",
                event.id
            ),
        )
        .with_source(e),
        K::TimedOut | K::BrokenPipe | K::MaxAckPending => unavailable(format!(
            "nats did not confirm storing the event in stream {stream}: {e}"
        )),
        K::StreamNotFound => unavailable(format!(
            "stream {stream} is not available (JetStream down or stream missing)"
        )),
        _ => {
            let code = provision::js_error_code(&e);
            let text = e.to_string();
            match code {
                Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
                | Some(ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM) => PersistError::new(
                    PersistErrorKind::Rejected,
                    format!("event {} exceeds the stream's maxMsgSize: {text}", event.id),
                )
                .with_source(e),
                Some(ErrorCode::STREAM_STORE_FAILED) if text.contains("maximum") => {
                    PersistError::new(
                        PersistErrorKind::Full,
                        format!("stream {stream} is full ({text}); retry later"),
                    )
                    .with_retry_after(RETRY_AFTER)
                    .with_source(e)
                }
                _ => unavailable(format!(
                    "storing the event in stream {stream} failed: {text}"
                )),
            }
        }
    }
}

#[async_trait]
impl Backend for NatsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nats
    }

    async fn provision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let handle = self.handle(channel).await?;
        let desired = handle.desired_stream();
        match provision::ensure_stream(&handle.conn.js, desired).await? {
            provision::StreamChange::Created => {
                tracing::info!(channel = %handle.key, stream = %handle.stream, subject = %handle.subject, "stream created")
            }
            provision::StreamChange::Updated(fields) => {
                tracing::info!(channel = %handle.key, stream = %handle.stream, changed = %fields.join(","), "stream updated")
            }
            provision::StreamChange::Unchanged => {
                tracing::debug!(channel = %handle.key, stream = %handle.stream, "stream up to date")
            }
        }
        Ok(())
    }

    async fn deprovision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let handle = self.handle(channel).await?;
        handle.closed.store(true, Ordering::Relaxed);
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel.uid);
        {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            subs.retain(|(c, _), s| {
                if c == &channel.uid {
                    s.removed.store(true, Ordering::Relaxed);
                    false
                } else {
                    true
                }
            });
        }
        if provision::delete_stream(&handle.conn.js, &handle.stream).await? {
            tracing::info!(channel = %handle.key, stream = %handle.stream, "stream deleted");
        }
        Ok(())
    }

    async fn persist(&self, channel: &ChannelContract, event: Event) -> Result<(), PersistError> {
        let handle = match self.known_handle(channel) {
            Some(h) => h,
            None => self.handle(channel).await.map_err(|e| match e.kind {
                BackendErrorKind::Invalid => {
                    PersistError::new(PersistErrorKind::UnknownChannel, e.message)
                }
                _ => unavailable(e.message),
            })?,
        };
        let state = handle.conn.client.connection_state();
        if state != State::Connected {
            return Err(unavailable(format!(
                "nats is not connected ({state}); the event was not stored, retry later"
            )));
        }
        match self.publish(&handle, &event).await {
            Ok(ack) => {
                if ack.duplicate {
                    // Accepted, not stored again: JetStream keeps one event
                    // per id within `duplicateWindow`. A reply that keeps
                    // its request's id and re-enters the same channel or
                    // broker lands here.
                    tracing::info!(channel = %handle.key, id = %event.id, "the stream already holds an event with this id (duplicateWindow): stored once");
                }
                Ok(())
            }
            Err(e)
                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound =>
            {
                // The stream was deleted behind our back (or JetStream was
                // restarted without its storage): recreate it and retry once.
                if let Err(pe) =
                    provision::ensure_stream(&handle.conn.js, handle.desired_stream()).await
                {
                    return Err(unavailable(format!(
                        "stream {} is not available: {pe}",
                        handle.stream
                    )));
                }
                tracing::warn!(channel = %handle.key, stream = %handle.stream, "stream was missing and has been recreated");
                self.publish(&handle, &event)
                    .await
                    .map(|_| ())
                    .map_err(|e| persist_error(&handle, &event, e))
            }
            Err(e) => Err(persist_error(&handle, &event, e)),
        }
    }

    async fn subscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<Box<dyn DeliveryStream>, BackendError> {
        let handle = self.handle(channel).await?;
        let ack_wait = provision::ack_wait(subscription);
        let consumer =
            provision::ensure_consumer(&handle.conn.js, &handle.stream, channel, subscription)
                .await?;
        let state = self.subscription_state(
            channel,
            subscription,
            &handle.conn.client,
            (ack_wait / 3).max(Duration::from_millis(100)),
        );
        let batch = usize::try_from(provision::max_ack_pending(subscription))
            .unwrap_or(1)
            .clamp(1, MAX_PULL_BATCH);
        let mut stream = Stream {
            handle,
            state,
            channel: channel.clone(),
            subscription: subscription.clone(),
            consumer: Some(consumer),
            messages: None,
            batch,
            acks: if self.options.confirm_acks {
                AckMode::Confirmed(self.options.request_timeout)
            } else {
                AckMode::Plain
            },
        };
        stream.open().await?;
        Ok(Box::new(stream))
    }

    async fn unsubscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<(), BackendError> {
        if let Some(s) = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(channel.uid.clone(), subscription.uid.clone()))
        {
            s.removed.store(true, Ordering::Relaxed);
        }
        let handle = self.handle(channel).await?;
        provision::delete_consumer(&handle.conn.js, &handle.stream, subscription).await?;
        tracing::info!(subscription = %subscription.key(), consumer = %provision::consumer_name(&subscription.uid), "consumer deleted");
        Ok(())
    }

    async fn health(&self) -> Health {
        let clients = self.clients.read().unwrap_or_else(|e| e.into_inner());
        let down: Vec<String> = clients
            .iter()
            .filter_map(|(urls, client)| {
                let state = client.connection_state();
                (state != State::Connected).then(|| format!("nats {urls} is {state}"))
            })
            .collect();
        if down.is_empty() {
            Health::Healthy
        } else {
            Health::Unhealthy(down.join("; "))
        }
    }

    fn pending(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Option<u64> {
        let subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let s = subs.get(&(channel.uid.clone(), subscription.uid.clone()))?;
        Some(s.stream_pending.load(Ordering::Relaxed) + s.in_flight.len() as u64)
    }
}

/// One subscription's delivery stream: a pull consumer's message stream,
/// reopened when the consumer or the connection went away.
struct Stream {
    handle: Arc<ChannelHandle>,
    state: Arc<SubscriptionState>,
    channel: ChannelContract,
    subscription: SubscriptionContract,
    consumer: Option<PullConsumer>,
    messages: Option<jetstream::consumer::pull::Stream>,
    batch: usize,
    acks: AckMode,
}

/// How final outcomes are acked.
#[derive(Debug, Clone, Copy)]
enum AckMode {
    /// `+ACK` published: the server may not have recorded it when settling
    /// returns, and a lost ack is a redelivery.
    Plain,
    /// `+ACK` as a request, the server's confirmation awaited this long.
    Confirmed(Duration),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("stream", &self.handle.stream)
            .field("subscription", &self.state.key)
            .field("open", &self.messages.is_some())
            .finish()
    }
}

impl Stream {
    async fn open(&mut self) -> Result<(), BackendError> {
        let consumer = match self.consumer.take() {
            Some(c) => c,
            None => {
                provision::ensure_consumer(
                    &self.handle.conn.js,
                    &self.handle.stream,
                    &self.channel,
                    &self.subscription,
                )
                .await?
            }
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| {
                BackendError::new(
                    BackendErrorKind::Unavailable,
                    format!("pulling from consumer of {}: {e}", self.state.key),
                )
                .with_source(e)
            })?;
        self.messages = Some(messages);
        Ok(())
    }

    fn closed(&self) -> bool {
        self.handle.closed.load(Ordering::Relaxed) || self.state.removed.load(Ordering::Relaxed)
    }

    /// Terminate a message that is not a CloudEvent: it is never delivered.
    async fn terminate(
        &self,
        message: &jetstream::Message,
        reason: &(dyn std::fmt::Display + Sync),
    ) {
        let (sequence, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 0));
        tracing::error!(
            subscription = %self.state.key,
            stream = %self.handle.stream,
            stream_sequence = sequence,
            delivered,
            payload_bytes = message.payload.len(),
            error = %reason,
            "stored message is not a CloudEvent; terminated (it will not be delivered)"
        );
        if let Err(e) = message.ack_with(AckKind::Term).await {
            tracing::warn!(subscription = %self.state.key, stream_sequence = sequence, error = %e, "terminating a malformed message failed; it will come back after the ack wait");
        }
    }
}

#[async_trait]
impl DeliveryStream for Stream {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        // Each turn consumes one message (or returns), so this ends.
        loop {
            if self.closed() {
                return None;
            }
            if self.messages.is_none() {
                if let Err(e) = self.open().await {
                    if e.kind == BackendErrorKind::NotFound && self.closed() {
                        return None;
                    }
                    return Some(Err(e));
                }
            }
            let messages = self.messages.as_mut()?;
            let message = match messages.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    use jetstream::consumer::pull::MessagesErrorKind as K;
                    let fatal = matches!(e.kind(), K::ConsumerDeleted | K::PushBasedConsumer);
                    if fatal {
                        self.messages = None;
                        if self.closed() {
                            return None;
                        }
                    }
                    return Some(Err(BackendError::new(
                        BackendErrorKind::Unavailable,
                        format!("consumer of {}: {e}", self.state.key),
                    )
                    .with_source(e)));
                }
                None => {
                    self.messages = None;
                    if self.closed() {
                        return None;
                    }
                    return Some(Err(BackendError::new(
                        BackendErrorKind::Unavailable,
                        format!("consumer stream of {} ended; reopening", self.state.key),
                    )));
                }
            };
            let (sequence, delivered, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered, info.pending),
                Err(e) => {
                    tracing::warn!(subscription = %self.state.key, error = %e, "message without JetStream metadata ignored");
                    continue;
                }
            };
            let event = match codec::decode(message.headers.as_ref(), message.payload.clone()) {
                Ok(event) => event,
                Err(e) => {
                    self.terminate(&message, &e).await;
                    continue;
                }
            };
            self.state.stream_pending.store(pending, Ordering::Relaxed);
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let token = self.state.in_flight.insert(reply.clone());
            let event = Arc::new(event);
            return Some(Ok(Delivery {
                ordering_key: event
                    .extension("partitionkey")
                    .map(|k| Arc::from(k.as_ref())),
                event,
                position: Position {
                    partition: 0,
                    offset: i64::try_from(sequence).unwrap_or(i64::MAX),
                },
                redeliveries: u32::try_from(delivered.saturating_sub(1)).unwrap_or(u32::MAX),
                ack: Box::new(NatsAck {
                    in_flight: self.state.in_flight.clone(),
                    token,
                    reply: Some(reply),
                    sequence,
                    acks: self.acks,
                }),
            }));
        }
    }
}

/// Settles one JetStream message.
#[derive(Debug)]
struct NatsAck {
    in_flight: Arc<InFlight>,
    token: u64,
    /// `None` once settled.
    reply: Option<Subject>,
    sequence: u64,
    acks: AckMode,
}

#[async_trait]
impl Acknowledgement for NatsAck {
    async fn settle(mut self: Box<Self>, outcome: Outcome) -> Result<(), BackendError> {
        let Some(reply) = self.reply.take() else {
            return Ok(());
        };
        self.in_flight.remove(self.token);
        let client = &self.in_flight.client;
        if outcome.is_final() {
            let AckMode::Confirmed(timeout) = self.acks else {
                return client
                    .publish(reply, Bytes::from(AckKind::Ack))
                    .await
                    .map_err(|e| {
                        BackendError::new(
                            BackendErrorKind::Unavailable,
                            format!(
                                "ack of stream sequence {} not sent (it will be redelivered): {e}",
                                self.sequence
                            ),
                        )
                        .with_source(e)
                    });
            };
            // Ack with confirmation: once this returns the server has
            // recorded it and will not redeliver.
            let request = client.request(reply, Bytes::from(AckKind::Ack));
            match tokio::time::timeout(timeout, request).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(BackendError::new(
                    BackendErrorKind::Unavailable,
                    format!(
                        "ack of stream sequence {} not confirmed (it will be redelivered): {e}",
                        self.sequence
                    ),
                )
                .with_source(e)),
                Err(_) => Err(BackendError::new(
                    BackendErrorKind::Unavailable,
                    format!(
                        "ack of stream sequence {} not confirmed within {timeout:?} (it may be redelivered)",
                        self.sequence
                    ),
                )),
            }
        } else {
            client
                .publish(reply, Bytes::from(AckKind::Nak(None)))
                .await
                .map_err(|e| {
                    BackendError::new(
                        BackendErrorKind::Unavailable,
                        format!(
                            "nak of stream sequence {} not sent (redelivered after the ack wait): {e}",
                            self.sequence
                        ),
                    )
                    .with_source(e)
                })
        }
    }
}

impl Drop for NatsAck {
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else {
            return;
        };
        // Unsettled: abandoned. Nak it so it is handed out again at once;
        // without a runtime the ack wait does the same, later.
        self.in_flight.remove(self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.in_flight.client.clone();
            runtime.spawn(async move {
                let _ = client.publish(reply, Bytes::from(AckKind::Nak(None))).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_object_safe_and_default_options_are_sane() {
        fn takes(_: Option<&dyn Backend>) {}
        takes(None);
        let o = NatsOptions::default();
        assert_eq!(o.default_connection.urls, vec!["nats://127.0.0.1:4222"]);
        assert!(o.request_timeout >= Duration::from_secs(1));
        let _ = config::StreamSettings::default();
    }
}

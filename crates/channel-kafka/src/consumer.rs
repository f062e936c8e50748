//! One subscription's consumer: a consumer group member feeding a bounded
//! delivery stream, committing only what is finished.
//!
//! A dedicated thread (the *pump*) owns the librdkafka consumer. Every
//! assigned partition gets its own librdkafka queue, split off when the
//! partition is assigned and dropped when it is revoked; the consumer's main
//! queue then carries only events (rebalances, commit results, statistics,
//! errors). The pump serves those events continuously — so the consumer
//! never exceeds `max.poll.interval.ms`, even while a subscriber is slow or a
//! retry chain is long — and takes records from the partition queues, in
//! turn, **only while the hand-off queue to the [`Stream`] has room**. There
//! is no pause/resume for flow control: records the engine cannot take yet
//! stay in librdkafka's per-partition prefetch, which librdkafka bounds by
//! itself (`queued.max.messages.kbytes`, `queued.min.messages`) and refills
//! after `fetch.queue.backoff.ms` once drained. Memory stays bounded by that
//! prefetch, the hand-off queue and the engine's in-flight window. (Pausing
//! made librdkafka drop its prefetched records and wait out the fetch
//! backoff on every resume, which throttled delivery to a fraction of what
//! the broker serves.) With nothing to do the pump sleeps; records arriving
//! in an empty partition queue, an event, or the stream freeing room wake it.
//!
//! Settlements arrive in any order. A [`PartitionOffsets`] per partition
//! tracks the records handed out; the pump commits the contiguous finished
//! prefix every second without waiting for the broker (asynchronously, the
//! result recorded when librdkafka reports it), and synchronously on
//! revocation and on close. An abandoned record stops the prefix where it is
//! and rewinds the partition there, so it (and anything handed out after it)
//! is consumed again.
//!
//! Every assignment of a partition, and every rewind, starts a new *epoch*:
//! records queued under an older epoch are dropped by the stream and their
//! settlements ignored, so a revoked partition is never delivered or
//! committed by a consumer that no longer owns it.
//!
//! Consumer lag is computed when it is asked for (at metrics scrape time)
//! from the partitions' high watermarks in librdkafka's periodic statistics
//! and the positions this member tracks; nothing blocks the pump for it.

use crate::codec;
use crate::offsets::PartitionOffsets;
use async_trait::async_trait;
use channel_core::backend::{
    Acknowledgement, BackendError, Delivery, DeliveryStream, Outcome, Position,
};
use channel_core::event::ExtensionValue;
use channel_core::Event;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the finished prefix is committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a revocation waits for in-flight records of the revoked
/// partitions to finish before giving them up uncommitted.
pub const REVOKE_GRACE: Duration = Duration::from_secs(3);
/// How often librdkafka reports statistics (the high watermarks behind the
/// consumer lag), in milliseconds.
pub const STATISTICS_INTERVAL_MS: &str = "5000";
/// The longest the pump sleeps with nothing to do. It is woken earlier by
/// records arriving in an empty partition queue, by consumer events and by
/// the stream freeing room; this bound only covers a missed wake-up.
const IDLE: Duration = Duration::from_millis(10);
/// Consumer events served per turn of the pump.
const EVENTS_PER_TURN: usize = 8;
/// Records taken from one partition queue before the next partition's turn.
const RECORDS_PER_TURN: usize = 64;
/// Timeout of blocking consumer calls (commit, seek, offsets).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A log target for librdkafka messages that goes to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingContext;

fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "librdkafka error");
    }
}

/// The state of one assigned partition.
#[derive(Debug)]
struct Part {
    epoch: u64,
    tracker: PartitionOffsets,
    /// Being revoked: hand nothing more out.
    revoking: bool,
    /// An abandoned record asks to consume again from this offset.
    rewind: Option<i64>,
    /// A position to commit when the tracker has none (after a rewind).
    floor: Option<i64>,
    /// Last position this member's commits are known to have stored.
    committed: Option<i64>,
}

impl Part {
    fn new(epoch: u64) -> Part {
        Part {
            epoch,
            tracker: PartitionOffsets::new(),
            revoking: false,
            rewind: None,
            floor: None,
            committed: None,
        }
    }

    /// A position to commit now, if it advances the committed one.
    fn to_commit(&self) -> Option<i64> {
        let candidate = self.tracker.committable().or(self.floor)?;
        (self.committed.is_none_or(|c| candidate > c)).then_some(candidate)
    }

    /// The position this member has reached: everything below is finished.
    fn position(&self) -> Option<i64> {
        self.tracker.committable().or(self.floor).or(self.committed)
    }

    /// Ask to consume again from `offset` (or from the lowest unfinished
    /// record, if that is lower).
    fn request_rewind(&mut self, offset: i64) {
        let from = self.tracker.committable().map_or(offset, |c| c.min(offset));
        self.rewind = Some(self.rewind.map_or(from, |r| r.min(from)));
    }
}

#[derive(Debug, Default)]
struct Book {
    parts: HashMap<i32, Part>,
    next_epoch: u64,
}

impl Book {
    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }
}

/// What librdkafka's statistics say about one partition.
#[derive(Debug, Clone, Copy)]
struct PartitionStats {
    /// High watermark (the offset the next produced record gets).
    high: i64,
    /// The group's committed offset, as librdkafka knows it.
    committed: i64,
}

/// A partition queue split off on assignment.
type SplitQueue = PartitionQueue<SubscriptionContext>;

/// What the pump, the stream, the acknowledgements and the consumer
/// callbacks share.
pub(crate) struct Shared {
    topic: String,
    group: String,
    /// How records become events.
    decoder: Decoder,
    book: Mutex<Book>,
    /// The stream is gone: stop.
    closed: AtomicBool,
    /// The consumer, once the pump owns it: the rebalance callback splits
    /// partition queues off it. Weak: the consumer owns this via its context.
    consumer: OnceLock<Weak<SubscriptionConsumer>>,
    /// Partition queues split on assignment, waiting for the pump to adopt
    /// them (the rebalance callback runs inside the pump's own poll).
    split: Mutex<Vec<(i32, SplitQueue)>>,
    /// The pump thread, to wake it.
    pump: OnceLock<std::thread::Thread>,
    /// The pump sleeps until the hand-off queue has room again.
    starved: AtomicBool,
    /// Per partition, from librdkafka's latest statistics.
    stats: Mutex<HashMap<i32, PartitionStats>>,
    /// Set once the pump has closed its consumer.
    done: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation completes before anything that could panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wake the pump if it sleeps.
    fn wake(&self) {
        if let Some(pump) = self.pump.get() {
            pump.unpark();
        }
    }

    /// Records not yet finished by this subscription, summed over its
    /// partitions: the high watermark from librdkafka's latest statistics
    /// minus the position reached (or, before anything was handed out, the
    /// committed offset). Computed on demand; never blocks on the broker.
    pub(crate) fn lag(&self) -> u64 {
        let stats = lock(&self.stats).clone();
        let book = self.book();
        book.parts
            .iter()
            .filter_map(|(p, part)| {
                let s = stats.get(p)?;
                let position = part
                    .position()
                    .or((s.committed >= 0).then_some(s.committed))?;
                (s.high >= 0).then(|| u64::try_from(s.high.saturating_sub(position)).unwrap_or(0))
            })
            .sum()
    }

    /// Wait until the pump has closed its consumer (left the group).
    pub(crate) async fn wait_done(&self, timeout: Duration) -> bool {
        let mut rx = self.done.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|d| *d))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Commit the finished prefix of `only` (or every) partition. A
    /// synchronous commit records the stored positions at once; an
    /// asynchronous one when librdkafka reports its result
    /// ([`ConsumerContext::commit_callback`]).
    fn commit<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        only: Option<&[i32]>,
        mode: CommitMode,
    ) {
        let wanted: Vec<(i32, i64)> = {
            let book = self.book();
            book.parts
                .iter()
                .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
                .filter_map(|(p, part)| part.to_commit().map(|o| (*p, o)))
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(wanted.len());
        for (p, o) in &wanted {
            if let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)) {
                tracing::warn!(group = %self.group, partition = p, error = %e, "cannot commit");
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => {
                self.committed(wanted);
                tracing::trace!(group = %self.group, "offsets committed");
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; retried next interval")
            }
        }
    }

    /// Record positions the broker has stored.
    fn committed(&self, positions: impl IntoIterator<Item = (i32, i64)>) {
        let mut book = self.book();
        for (p, o) in positions {
            if let Some(part) = book.parts.get_mut(&p) {
                part.committed = Some(part.committed.map_or(o, |c| c.max(o)));
            }
        }
    }
}

/// The consumer context: rebalance handling, commit results, statistics.
#[derive(Debug)]
pub(crate) struct SubscriptionContext {
    pub(crate) shared: Arc<Shared>,
}

impl ClientContext for SubscriptionContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(group = %self.shared.group, error = %error, reason, "librdkafka consumer error");
    }
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.shared.topic) else {
            return;
        };
        let parts: HashMap<i32, PartitionStats> = topic
            .partitions
            .iter()
            .filter(|(p, _)| **p >= 0)
            .map(|(p, s)| {
                (
                    *p,
                    PartitionStats {
                        high: s.hi_offset,
                        committed: s.committed_offset,
                    },
                )
            })
            .collect();
        *lock(&self.shared.stats) = parts;
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

impl ConsumerContext for SubscriptionContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions_of(tpl, &shared.topic);
                tracing::info!(group = %shared.group, partitions = ?revoked, "partitions revoked");
                {
                    let mut book = shared.book();
                    for p in &revoked {
                        if let Some(part) = book.parts.get_mut(p) {
                            part.revoking = true;
                        }
                    }
                }
                // Let in-flight records of the revoked partitions finish,
                // within a bound; the rest is given up uncommitted and the
                // next owner delivers it again.
                let deadline = Instant::now() + REVOKE_GRACE;
                while !shared.closed.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let busy = {
                        let book = shared.book();
                        revoked.iter().any(|p| {
                            book.parts
                                .get(p)
                                .is_some_and(|part| part.tracker.unfinished() > 0)
                        })
                    };
                    if !busy {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                if !consumer.assignment_lost() {
                    shared.commit(consumer, Some(&revoked), CommitMode::Sync);
                }
                // Forgetting the partitions also makes the pump drop their
                // queues.
                let mut book = shared.book();
                for p in &revoked {
                    book.parts.remove(p);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(group = %shared.group, error = %e, "rebalance error")
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = partitions_of(tpl, &shared.topic);
            tracing::info!(group = %shared.group, partitions = ?assigned, "partitions assigned");
            {
                let mut book = shared.book();
                for p in &assigned {
                    let epoch = book.epoch();
                    book.parts.insert(*p, Part::new(epoch));
                }
            }
            // Split each partition's records into a queue of its own right
            // after the assignment, before librdkafka has fetched anything
            // for it (fetching starts once the committed offsets are known).
            let Some(consumer) = shared.consumer.get().and_then(Weak::upgrade) else {
                return;
            };
            let mut split = Vec::with_capacity(assigned.len());
            for p in assigned {
                match consumer.split_partition_queue(&shared.topic, p) {
                    Some(mut queue) => {
                        let waker = shared.clone();
                        queue.set_nonempty_callback(move || waker.wake());
                        split.push((p, queue));
                    }
                    None => {
                        tracing::error!(group = %shared.group, partition = p, "cannot split the partition's queue")
                    }
                }
            }
            lock(&shared.split).extend(split);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let shared = &self.shared;
        match result {
            Ok(()) => shared.committed(
                offsets
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == shared.topic && e.error().is_ok())
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    }),
            ),
            Err(e) => {
                tracing::warn!(group = %shared.group, error = %e, "offset commit failed; retried next interval")
            }
        }
    }
}

/// A consumed record on its way to the stream.
#[derive(Debug)]
struct Record {
    partition: i32,
    offset: i64,
    epoch: u64,
    key: Option<Arc<str>>,
    event: Result<Event, codec::CodecError>,
}

/// The consumer type of a subscription.
pub(crate) type SubscriptionConsumer = BaseConsumer<SubscriptionContext>;

/// How a consumer turns records into events.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    /// A channel's topic: every record is a CloudEvent (a record that is
    /// not is skipped); the partition and offset are added as
    /// `knativekafkapartition` and `knativekafkaoffset`.
    Channel,
    /// A KafkaSource's topic: see [`crate::source::record_event`].
    Source { prefix: Arc<str> },
}

/// Create the shared state of a subscription.
pub(crate) fn shared(topic: String, group: String, decoder: Decoder) -> Arc<Shared> {
    Arc::new(Shared {
        topic,
        group,
        decoder,
        book: Mutex::new(Book::default()),
        closed: AtomicBool::new(false),
        consumer: OnceLock::new(),
        split: Mutex::new(Vec::new()),
        pump: OnceLock::new(),
        starved: AtomicBool::new(false),
        stats: Mutex::new(HashMap::new()),
        done: tokio::sync::watch::channel(false).0,
    })
}

/// Give a brand-new group a committed offset at the current end of every
/// partition that has none, so the subscription neither replays the
/// topic's history nor misses what is published once it is ready.
/// Partitions that already have a committed offset keep it (a restarted
/// subscription resumes where it stopped). Blocking.
pub(crate) fn initialise_offsets(consumer: &SubscriptionConsumer) -> Result<(), BackendError> {
    let shared = &consumer.context().shared;
    let topic = shared.topic.as_str();
    let metadata = consumer
        .fetch_metadata(Some(topic), CALL_TIMEOUT)
        .map_err(|e| crate::provision::backend_error(&format!("reading topic {topic}"), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(BackendError::new(
            channel_core::backend::BackendErrorKind::NotFound,
            format!("topic {topic} does not exist (channel not provisioned yet)"),
        ));
    }
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in &partitions {
        let _ = tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, CALL_TIMEOUT)
        .map_err(|e| crate::provision::backend_error("reading committed offsets", e))?;
    let mut init = TopicPartitionList::new();
    for e in committed.elements() {
        if let Offset::Offset(_) = e.offset() {
            continue;
        }
        let (_, high) = consumer
            .fetch_watermarks(topic, e.partition(), CALL_TIMEOUT)
            .map_err(|e| crate::provision::backend_error("reading partition end", e))?;
        let _ = init.add_partition_offset(topic, e.partition(), Offset::Offset(high));
    }
    if init.count() > 0 {
        consumer
            .commit(&init, CommitMode::Sync)
            .map_err(|e| crate::provision::backend_error("initialising group offsets", e))?;
        tracing::info!(group = %shared.group, topic, partitions = init.count(), "new consumer group starts at the end of the topic");
    }
    Ok(())
}

/// Start the pump thread of a subscribed consumer; the returned stream
/// hands out what it consumes.
pub(crate) fn start(
    mut consumer: SubscriptionConsumer,
    capacity: usize,
) -> Result<Stream, BackendError> {
    let shared = consumer.context().shared.clone();
    // Consumer events (rebalances, commit results, statistics) wake the pump.
    let waker = shared.clone();
    consumer.set_nonempty_callback(move || waker.wake());
    let consumer = Arc::new(consumer);
    let _ = shared.consumer.set(Arc::downgrade(&consumer));
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let pump_shared = shared.clone();
    std::thread::Builder::new()
        .name(format!("kafka-{}", short(&shared.group)))
        .spawn(move || pump(consumer, tx, pump_shared))
        .map_err(|e| {
            BackendError::new(
                channel_core::backend::BackendErrorKind::Other,
                format!("cannot start the consumer thread: {e}"),
            )
        })?;
    Ok(Stream { rx, shared })
}

fn short(group: &str) -> String {
    group
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn to_record(shared: &Shared, msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<Record> {
    let partition = msg.partition();
    let offset = msg.offset();
    let epoch = shared.book().parts.get(&partition)?.epoch;
    let key = msg
        .key()
        .map(|k| Arc::from(String::from_utf8_lossy(k).as_ref()));
    if let Decoder::Source { prefix } = &shared.decoder {
        return Some(Record {
            partition,
            offset,
            epoch,
            key,
            event: Ok(crate::source::record_event(prefix, msg)),
        });
    }
    let event = codec::decode(msg.headers(), msg.payload()).map(|mut e| {
        e.extensions.insert(
            "knativekafkapartition".to_owned(),
            ExtensionValue::Integer(i64::from(partition)),
        );
        e.extensions.insert(
            "knativekafkaoffset".to_owned(),
            ExtensionValue::Integer(offset),
        );
        e
    });
    Some(Record {
        partition,
        offset,
        epoch,
        key,
        event,
    })
}

/// Seek partitions back where abandoned records ask, starting new epochs.
fn rewind(consumer: &SubscriptionConsumer, shared: &Shared) {
    let wanted: Vec<(i32, i64)> = {
        let book = shared.book();
        book.parts
            .iter()
            .filter_map(|(p, part)| part.rewind.map(|o| (*p, o)))
            .collect()
    };
    for (p, offset) in wanted {
        if let Err(e) = consumer.seek(&shared.topic, p, Offset::Offset(offset), CALL_TIMEOUT) {
            tracing::warn!(group = %shared.group, partition = p, offset, error = %e, "cannot rewind to an abandoned record");
        } else {
            tracing::debug!(group = %shared.group, partition = p, offset, "rewound to an abandoned record");
        }
        let mut book = shared.book();
        let epoch = book.epoch();
        if let Some(part) = book.parts.get_mut(&p) {
            let committed = part.committed;
            *part = Part::new(epoch);
            part.committed = committed;
            part.floor = Some(offset);
        }
    }
}

/// Rate-limited logging of consumer errors: transient by nature (broker
/// down, rebalance in progress), librdkafka reconnects by itself.
#[derive(Debug)]
struct ErrorLog {
    repeated: u32,
    last: Instant,
}

impl ErrorLog {
    fn new() -> Self {
        ErrorLog {
            repeated: 0,
            last: Instant::now(),
        }
    }

    /// Log at most once every 10 s.
    fn log(&mut self, group: &str, e: &KafkaError) {
        self.repeated += 1;
        if self.repeated == 1 || self.last.elapsed() > Duration::from_secs(10) {
            tracing::warn!(group, error = %e, repeated = self.repeated, "consumer error");
            self.repeated = 0;
            self.last = Instant::now();
        }
    }
}

/// Take the partition queues split since the last turn; drop those of
/// partitions no longer assigned.
fn adopt_queues(shared: &Shared, queues: &mut Vec<(i32, SplitQueue)>) {
    let fresh = std::mem::take(&mut *lock(&shared.split));
    {
        let book = shared.book();
        queues.retain(|(p, _)| book.parts.contains_key(p));
    }
    for (p, queue) in fresh {
        queues.retain(|(q, _)| *q != p);
        queues.push((p, queue));
    }
}

/// Move records from the partition queues to the hand-off queue while it has
/// room, a bounded number per partition in turn, starting at `turn`.
/// Returns how many moved and whether the hand-off queue is full.
fn move_records(
    shared: &Shared,
    queues: &[(i32, SplitQueue)],
    tx: &mpsc::Sender<Record>,
    turn: usize,
    errors: &mut ErrorLog,
) -> (usize, bool) {
    let mut moved = 0;
    for i in 0..queues.len() {
        let (_, queue) = &queues[(turn + i) % queues.len()];
        for _ in 0..RECORDS_PER_TURN {
            // Reserve the slot first: a record leaves librdkafka only when
            // the engine can take it.
            let Ok(permit) = tx.try_reserve() else {
                return (moved, true);
            };
            match queue.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => {
                    if let Some(record) = to_record(shared, &msg) {
                        permit.send(record);
                        moved += 1;
                    }
                }
                Some(Err(e)) => errors.log(&shared.group, &e),
            }
        }
    }
    (moved, false)
}

/// The pump: serve consumer events, move records while there is room,
/// commit periodically, rewind; sleep when there is nothing to do.
fn pump(consumer: Arc<SubscriptionConsumer>, tx: mpsc::Sender<Record>, shared: Arc<Shared>) {
    let _ = shared.pump.set(std::thread::current());
    let mut queues: Vec<(i32, SplitQueue)> = Vec::new();
    let mut turn = 0usize;
    let mut last_commit = Instant::now();
    let mut errors = ErrorLog::new();
    while !shared.closed.load(Ordering::SeqCst) && !tx.is_closed() {
        rewind(&consumer, &shared);
        // Events: rebalances (which split the assigned partitions' queues),
        // commit results, statistics, errors. A record here was fetched
        // before its partition's queue was split: consume it again through
        // that queue, in order.
        for _ in 0..EVENTS_PER_TURN {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => {
                    let (p, offset) = (msg.partition(), msg.offset());
                    if let Some(part) = shared.book().parts.get_mut(&p) {
                        tracing::debug!(group = %shared.group, partition = p, offset, "record on the main queue: consumed again from its partition queue");
                        part.request_rewind(offset);
                    }
                }
                Some(Err(e)) => errors.log(&shared.group, &e),
            }
        }
        adopt_queues(&shared, &mut queues);
        let (moved, full) = move_records(&shared, &queues, &tx, turn, &mut errors);
        turn = turn.wrapping_add(1);
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            shared.commit(&*consumer, None, CommitMode::Async);
            last_commit = Instant::now();
        }
        if moved == 0 {
            if full {
                // Sleep until the stream has taken half of the queue.
                shared.starved.store(true, Ordering::SeqCst);
                if tx.capacity() * 2 >= tx.max_capacity() {
                    shared.starved.store(false, Ordering::SeqCst);
                    continue;
                }
            }
            std::thread::park_timeout(IDLE);
        }
    }
    // Closing: commit what is finished, then leave the group. The partition
    // queues go before the consumer they belong to.
    shared.close();
    shared.commit(&*consumer, None, CommitMode::Sync);
    drop(queues);
    lock(&shared.split).clear();
    consumer.unsubscribe();
    drop(consumer);
    let _ = shared.done.send(true);
    tracing::debug!(group = %shared.group, "consumer closed");
}

/// A subscription's delivery stream.
#[derive(Debug)]
pub struct Stream {
    rx: mpsc::Receiver<Record>,
    shared: Arc<Shared>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[async_trait]
impl DeliveryStream for Stream {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        loop {
            // Cancel safe: nothing is taken from the queue unless recv completes.
            let record = self.rx.recv().await?;
            if self.shared.starved.load(Ordering::Relaxed)
                && self.rx.len() * 2 <= self.rx.max_capacity()
                && self.shared.starved.swap(false, Ordering::SeqCst)
            {
                self.shared.wake();
            }
            let mut book = self.shared.book();
            let Some(part) = book.parts.get_mut(&record.partition) else {
                continue;
            };
            if part.epoch != record.epoch || part.revoking || part.rewind.is_some() {
                continue;
            }
            if !part.tracker.handed(record.offset) {
                tracing::debug!(group = %self.shared.group, partition = record.partition, offset = record.offset, committable = ?part.tracker.committable(), "record at or below one already handed out: skipped as a duplicate");
                continue;
            }
            let event = match record.event {
                Ok(event) => event,
                Err(e) => {
                    // A record that is not a CloudEvent can never be
                    // delivered: skip it (committed) rather than crash-loop.
                    part.tracker.finish(record.offset);
                    tracing::warn!(group = %self.shared.group, partition = record.partition, offset = record.offset, error = %e, "skipping a record that is not a valid CloudEvent");
                    continue;
                }
            };
            drop(book);
            let ordering_key = record
                .key
                .or_else(|| Some(Arc::from(format!("\u{0}partition-{}", record.partition))));
            return Some(Ok(Delivery {
                event: Arc::new(event),
                position: Position {
                    partition: record.partition,
                    offset: record.offset,
                },
                ordering_key,
                redeliveries: 0,
                ack: Box::new(Ack {
                    shared: self.shared.clone(),
                    partition: record.partition,
                    offset: record.offset,
                    epoch: record.epoch,
                    settled: false,
                }),
            }));
        }
    }
}

/// Settles one record.
#[derive(Debug)]
struct Ack {
    shared: Arc<Shared>,
    partition: i32,
    offset: i64,
    epoch: u64,
    settled: bool,
}

impl Ack {
    fn record(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut book = self.shared.book();
        let Some(part) = book.parts.get_mut(&self.partition) else {
            return;
        };
        if part.epoch != self.epoch {
            return;
        }
        if outcome.is_final() {
            part.tracker.finish(self.offset);
        } else if part.tracker.is_unfinished(self.offset) && !part.revoking {
            // Consume again from the lowest unfinished record: the commit
            // never passes the abandoned one.
            part.request_rewind(self.offset);
        }
    }
}

#[async_trait]
impl Acknowledgement for Ack {
    async fn settle(mut self: Box<Self>, outcome: Outcome) -> Result<(), BackendError> {
        self.record(outcome);
        Ok(())
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.record(Outcome::Abandoned);
    }
}

//! One subscription's consumer: a consumer group member feeding a bounded
//! delivery stream, committing only what is finished.
//!
//! A dedicated thread (the *pump*) owns the librdkafka consumer. It polls
//! continuously — so the consumer never exceeds `max.poll.interval.ms`, even
//! while a subscriber is slow or a retry chain is long — and hands decoded
//! records to the [`Stream`] through a bounded queue. When the queue is full
//! it pauses every assigned partition and keeps polling (serving rebalances
//! and heartbeats) until there is room again: memory stays bounded by the
//! queue, the engine's in-flight window and librdkafka's fetch buffer
//! (`queued.max.messages.kbytes`).
//!
//! Settlements arrive in any order. A [`PartitionOffsets`] per partition
//! tracks the records handed out; the pump commits the contiguous finished
//! prefix every second, synchronously on revocation and on close. An
//! abandoned record stops the prefix where it is and rewinds the partition
//! there, so it (and anything handed out after it) is consumed again.
//!
//! Every assignment of a partition, and every rewind, starts a new *epoch*:
//! records queued under an older epoch are dropped by the stream and their
//! settlements ignored, so a revoked partition is never delivered or
//! committed by a consumer that no longer owns it.

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
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the finished prefix is committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a revocation waits for in-flight records of the revoked
/// partitions to finish before giving them up uncommitted.
pub const REVOKE_GRACE: Duration = Duration::from_secs(3);
/// How often the consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long one poll blocks the pump.
const POLL: Duration = Duration::from_millis(50);
/// Poll timeout while records wait for room in the hand-off queue.
const HANDOVER_POLL: Duration = Duration::from_millis(2);
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
    /// Last position committed by this member.
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

/// What the pump, the stream, the acknowledgements and the rebalance
/// callbacks share.
#[derive(Debug)]
pub(crate) struct Shared {
    topic: String,
    group: String,
    book: Mutex<Book>,
    /// The stream is gone: stop.
    closed: AtomicBool,
    /// Partitions are paused because the queue is full.
    paused: AtomicBool,
    /// Records stored but not committed (high watermark − committed), summed.
    lag: AtomicU64,
    /// Set once the pump has closed its consumer.
    done: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Every mutation completes before anything that could panic.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Wait until the pump has closed its consumer (left the group).
    pub(crate) async fn wait_done(&self, timeout: Duration) -> bool {
        let mut rx = self.done.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|d| *d))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Commit the finished prefix of `only` (or every) partition.
    fn commit<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, only: Option<&[i32]>) {
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
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                let mut book = self.book();
                for (p, o) in wanted {
                    if let Some(part) = book.parts.get_mut(&p) {
                        part.committed = Some(part.committed.map_or(o, |c| c.max(o)));
                    }
                }
                tracing::trace!(group = %self.group, "offsets committed");
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; retried next interval")
            }
        }
    }
}

/// The consumer context: rebalance handling.
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
                    shared.commit(consumer, Some(&revoked));
                }
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
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
            if shared.paused.load(Ordering::SeqCst) {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(group = %shared.group, error = %e, "cannot pause assigned partitions");
                }
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

/// Create the shared state of a subscription.
pub(crate) fn shared(topic: String, group: String) -> Arc<Shared> {
    Arc::new(Shared {
        topic,
        group,
        book: Mutex::new(Book::default()),
        closed: AtomicBool::new(false),
        paused: AtomicBool::new(false),
        lag: AtomicU64::new(0),
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
    consumer: SubscriptionConsumer,
    capacity: usize,
) -> Result<Stream, BackendError> {
    let shared = consumer.context().shared.clone();
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

fn set_paused(consumer: &SubscriptionConsumer, shared: &Shared, pause: bool) {
    shared.paused.store(pause, Ordering::SeqCst);
    match consumer.assignment() {
        Ok(tpl) if tpl.count() > 0 => {
            let r = if pause {
                consumer.pause(&tpl)
            } else {
                consumer.resume(&tpl)
            };
            if let Err(e) = r {
                tracing::warn!(group = %shared.group, pause, error = %e, "cannot pause/resume partitions");
            } else {
                tracing::debug!(group = %shared.group, pause, "partitions paused/resumed for flow control");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(group = %shared.group, error = %e, "cannot read assignment"),
    }
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

fn update_lag(consumer: &SubscriptionConsumer, shared: &Shared) {
    let positions: Vec<(i32, Option<i64>)> = {
        let book = shared.book();
        book.parts
            .iter()
            .map(|(p, part)| {
                (
                    *p,
                    part.tracker.committable().or(part.floor).or(part.committed),
                )
            })
            .collect()
    };
    let mut lag = 0u64;
    for (p, position) in positions {
        if let (Ok((_, high)), Some(position)) = (
            consumer.fetch_watermarks(&shared.topic, p, Duration::from_millis(500)),
            position,
        ) {
            lag += u64::try_from(high.saturating_sub(position)).unwrap_or(0);
        }
    }
    shared.lag.store(lag, Ordering::Relaxed);
}

/// The pump: poll, queue, pause when full, commit periodically, rewind.
fn pump(consumer: SubscriptionConsumer, tx: mpsc::Sender<Record>, shared: Arc<Shared>) {
    let mut held: VecDeque<Record> = VecDeque::new();
    // Hysteresis: pause only when the held records reach the queue's size,
    // resume once they are below half of it. Pausing at the first full
    // queue and resuming at the first free slot turns every slot into a
    // pause/resume cycle, and each resume is a new fetch from the broker.
    let high_water = tx.max_capacity().max(1);
    let low_water = high_water / 2;
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut errors_logged = 0u32;
    let mut last_error_log = Instant::now();
    while !shared.closed.load(Ordering::SeqCst) && !tx.is_closed() {
        rewind(&consumer, &shared);
        // Hand over what waits; resume once everything fits.
        while let Some(record) = held.pop_front() {
            match tx.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(record)) => {
                    held.push_front(record);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        if held.len() <= low_water && shared.paused.load(Ordering::SeqCst) {
            set_paused(&consumer, &shared, false);
        }
        // With records waiting for room, come back soon to hand them over.
        let wait = if held.is_empty() { POLL } else { HANDOVER_POLL };
        match consumer.poll(wait) {
            None => {}
            Some(Ok(msg)) => {
                if let Some(record) = to_record(&shared, &msg) {
                    if !held.is_empty() {
                        held.push_back(record);
                    } else if let Err(e) = tx.try_send(record) {
                        match e {
                            mpsc::error::TrySendError::Full(record) => {
                                held.push_back(record);
                            }
                            mpsc::error::TrySendError::Closed(_) => break,
                        }
                    }
                }
            }
            Some(Err(e)) => {
                // Transient by nature (broker down, rebalance in progress):
                // librdkafka reconnects; log at most once every 10 s.
                errors_logged += 1;
                if errors_logged == 1 || last_error_log.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(group = %shared.group, error = %e, repeated = errors_logged, "consumer error");
                    errors_logged = 0;
                    last_error_log = Instant::now();
                }
            }
        }
        if held.len() >= high_water && !shared.paused.load(Ordering::SeqCst) {
            set_paused(&consumer, &shared, true);
        }
        if last_commit.elapsed() >= COMMIT_INTERVAL {
            shared.commit(&consumer, None);
            last_commit = Instant::now();
        }
        if last_lag.elapsed() >= LAG_INTERVAL {
            update_lag(&consumer, &shared);
            last_lag = Instant::now();
        }
    }
    // Closing: commit what is finished, then leave the group.
    shared.close();
    shared.commit(&consumer, None);
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
            let from = part.tracker.committable().unwrap_or(self.offset);
            part.rewind = Some(part.rewind.map_or(from, |r| r.min(from)));
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

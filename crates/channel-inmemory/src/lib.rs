//! The in-memory channel backend: a bounded log per channel with one cursor
//! per subscription.
//!
//! Each channel keeps the events that at least one of its subscriptions has
//! not yet settled, in a ring buffer bounded by a count and a byte size
//! (`maxEvents`, `maxBytes` class or template parameters; dispatcher flags
//! give the defaults). Subscriptions progress independently: a slow or
//! stalled subscriber only holds the events it has not finished, the others
//! keep receiving, and only when the bound is reached does ingress answer
//! `429` with `Retry-After` — explicit backpressure instead of unbounded
//! memory or lost events.
//!
//! Settlements may arrive in any order: a cursor advances over the
//! contiguous prefix of final outcomes and remembers the ones beyond it, so a
//! restarted subscription worker resumes without losing or repeating events.
//! Abandoned deliveries (shutdown, worker stop) are handed out again.
//!
//! Nothing survives a restart of the process: like Knative's
//! InMemoryChannel, this backend is for development and for workloads that
//! accept losing buffered events when the dispatcher stops.
//!
//! This crate knows nothing of Kafka or NATS.

use async_trait::async_trait;
use channel_core::backend::{
    Acknowledgement, Backend, BackendError, BackendErrorKind, Delivery, DeliveryStream, Health,
    Outcome, PersistError, PersistErrorKind, Position,
};
use channel_core::{BackendKind, ChannelContract, Event, SubscriptionContract};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Per-channel bounds of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events held for a channel.
    pub max_events: usize,
    /// Most bytes (approximate in-memory size of the events) held for a channel.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_events: 10_000,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// The defaults overridden by a channel's `maxEvents` / `maxBytes` parameters.
    pub fn for_channel(self, channel: &ChannelContract) -> Result<Limits, BackendError> {
        let read = |name: &str, default: usize| -> Result<usize, BackendError> {
            match channel.parameters.get(name) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n > 0)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        BackendError::new(
                            BackendErrorKind::Invalid,
                            format!("parameter {name} must be a positive integer, got {v}"),
                        )
                    }),
            }
        };
        Ok(Limits {
            max_events: read("maxEvents", self.max_events)?,
            max_bytes: read("maxBytes", self.max_bytes)?,
        })
    }
}

/// How long producers are asked to wait when a channel is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Cursor {
    /// Every offset below this is settled final.
    committed: u64,
    /// Next offset never handed out.
    next: u64,
    /// Final settlements beyond `committed`.
    settled: BTreeSet<u64>,
    /// Abandoned offsets to hand out again, lowest first.
    redeliver: BTreeSet<u64>,
}

impl Cursor {
    /// Record a final outcome for `offset`.
    fn finish(&mut self, offset: u64) {
        if offset < self.committed {
            return;
        }
        if offset == self.committed {
            self.committed += 1;
            while self.settled.remove(&self.committed) {
                self.committed += 1;
            }
        } else {
            self.settled.insert(offset);
        }
    }

    fn unsettled(&self, end: u64) -> u64 {
        end.saturating_sub(self.committed)
            .saturating_sub(self.settled.len() as u64)
    }
}

/// The cursors of a channel's subscriptions, by subscription uid. A few
/// entries per channel, found by a scan: ten thousand channels with one
/// subscription each hold ten thousand one-entry vectors, a fifth of the
/// memory of as many hash maps. The uid is shared with the subscription's
/// stream and acks.
#[derive(Debug, Default)]
struct Cursors(Vec<(Arc<str>, Cursor)>);

impl Cursors {
    fn values(&self) -> impl Iterator<Item = &Cursor> {
        self.0.iter().map(|(_, c)| c)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, uid: &str) -> Option<&Cursor> {
        self.0.iter().find(|(u, _)| &**u == uid).map(|(_, c)| c)
    }

    fn get_mut(&mut self, uid: &str) -> Option<&mut Cursor> {
        self.0.iter_mut().find(|(u, _)| &**u == uid).map(|(_, c)| c)
    }

    /// The uid as the cursors hold it, after adding a cursor if none is.
    fn get_or_insert(&mut self, uid: &str, new: impl FnOnce() -> Cursor) -> Arc<str> {
        if let Some((key, _)) = self.0.iter().find(|(u, _)| &**u == uid) {
            return key.clone();
        }
        let key: Arc<str> = uid.into();
        self.0.push((key.clone(), new()));
        self.0.shrink_to_fit();
        key
    }

    fn remove(&mut self, uid: &str) {
        self.0.retain(|(u, _)| &**u != uid);
    }
}

#[derive(Debug)]
struct Log {
    /// Offset of `events[0]`.
    base: u64,
    events: VecDeque<(Arc<Event>, usize)>,
    bytes: usize,
    limits: Limits,
    cursors: Cursors,
    closed: bool,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    /// Drop events every subscription has settled.
    fn trim(&mut self) {
        let low = self
            .cursors
            .values()
            .map(|c| c.committed)
            .min()
            .unwrap_or_else(|| self.end());
        while self.base < low {
            match self.events.pop_front() {
                Some((_, size)) => {
                    self.bytes -= size;
                    self.base += 1;
                }
                None => break,
            }
        }
    }
}

#[derive(Debug)]
struct ChannelLog {
    log: Mutex<Log>,
    /// Woken on every append, settle-to-redeliver and close.
    wake: Notify,
}

impl ChannelLog {
    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is completed before any call that could panic).
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct InMemoryBackend {
    defaults: Limits,
    channels: RwLock<HashMap<String, Arc<ChannelLog>>>,
}

impl InMemoryBackend {
    /// A backend whose channels default to `defaults` bounds.
    pub fn new(defaults: Limits) -> Self {
        InMemoryBackend {
            defaults,
            channels: RwLock::new(HashMap::new()),
        }
    }

    fn channel(&self, uid: &str) -> Option<Arc<ChannelLog>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    fn not_found(channel: &ChannelContract) -> BackendError {
        BackendError::new(
            BackendErrorKind::NotFound,
            format!("channel {} is not provisioned", channel.key()),
        )
    }
}

#[async_trait]
impl Backend for InMemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::InMemory
    }

    async fn provision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let limits = self.defaults.for_channel(channel)?;
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        match channels.get(&channel.uid) {
            Some(existing) => existing.lock().limits = limits,
            None => {
                channels.insert(
                    channel.uid.clone(),
                    Arc::new(ChannelLog {
                        log: Mutex::new(Log {
                            base: 0,
                            events: VecDeque::new(),
                            bytes: 0,
                            limits,
                            cursors: Cursors::default(),
                            closed: false,
                        }),
                        wake: Notify::new(),
                    }),
                );
            }
        }
        Ok(())
    }

    async fn deprovision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let removed = self
            .channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel.uid);
        if let Some(log) = removed {
            {
                let mut inner = log.lock();
                inner.closed = true;
                inner.events.clear();
                inner.bytes = 0;
            }
            log.wake.notify_waiters();
        }
        Ok(())
    }

    async fn persist(&self, channel: &ChannelContract, event: Event) -> Result<(), PersistError> {
        let Some(log) = self.channel(&channel.uid) else {
            return Err(PersistError::new(
                PersistErrorKind::UnknownChannel,
                format!("channel {} is not provisioned", channel.key()),
            ));
        };
        let size = event.size_hint();
        {
            let mut inner = log.lock();
            if inner.closed {
                return Err(PersistError::new(
                    PersistErrorKind::UnknownChannel,
                    format!("channel {} was removed", channel.key()),
                ));
            }
            if inner.cursors.is_empty() {
                // No subscription: Knative channels accept and drop.
                return Ok(());
            }
            if size > inner.limits.max_bytes {
                return Err(PersistError::new(
                    PersistErrorKind::Rejected,
                    format!(
                        "event of {size} bytes exceeds the channel's buffer of {} bytes",
                        inner.limits.max_bytes
                    ),
                ));
            }
            if inner.events.len() >= inner.limits.max_events
                || inner.bytes + size > inner.limits.max_bytes
            {
                return Err(PersistError::new(
                    PersistErrorKind::Full,
                    format!(
                        "channel {} is full ({} events, {} bytes buffered for slow subscribers); retry later",
                        channel.key(),
                        inner.events.len(),
                        inner.bytes
                    ),
                )
                .with_retry_after(FULL_RETRY_AFTER));
            }
            inner.events.push_back((Arc::new(event), size));
            inner.bytes += size;
        }
        log.wake.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<Box<dyn DeliveryStream>, BackendError> {
        let log = self
            .channel(&channel.uid)
            .ok_or_else(|| Self::not_found(channel))?;
        let uid = {
            let mut inner = log.lock();
            let end = inner.end();
            // A new subscription starts at the end of the log: it receives
            // every event stored after it was subscribed. An existing one
            // (worker restarted) resumes where it stands.
            inner.cursors.get_or_insert(&subscription.uid, || Cursor {
                committed: end,
                next: end,
                ..Cursor::default()
            })
        };
        Ok(Box::new(Stream {
            log,
            subscription: uid,
        }))
    }

    async fn unsubscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<(), BackendError> {
        if let Some(log) = self.channel(&channel.uid) {
            {
                let mut inner = log.lock();
                inner.cursors.remove(&subscription.uid);
                inner.trim();
            }
            log.wake.notify_waiters();
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }

    fn pending(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Option<u64> {
        let log = self.channel(&channel.uid)?;
        let inner = log.lock();
        let end = inner.end();
        inner
            .cursors
            .get(&subscription.uid)
            .map(|c| c.unsettled(end))
    }
}

/// One subscription's view of a channel log.
#[derive(Debug)]
struct Stream {
    log: Arc<ChannelLog>,
    subscription: Arc<str>,
}

/// Most refused events a stream skips under one hold of the log's lock
/// before letting ingress and the other subscriptions in.
const MAX_SKIPPED_PER_LOCK: usize = 1024;

impl Stream {
    /// The next event `wanted` accepts (all when `None`); refused ones are
    /// settled in place, under the same lock, with no allocation.
    async fn take(
        &mut self,
        mut wanted: Option<&mut (dyn for<'e> FnMut(&'e Event) -> bool + Send)>,
    ) -> Option<Result<Delivery, BackendError>> {
        loop {
            // Register interest before looking, so an append between the
            // look and the wait is not missed.
            let notified = self.log.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut skipped = 0usize;
            {
                let mut guard = self.log.lock();
                let inner = &mut *guard;
                if inner.closed {
                    return None;
                }
                let end = inner.end();
                let base = inner.base;
                let cursor = inner.cursors.get_mut(&self.subscription)?;
                while skipped < MAX_SKIPPED_PER_LOCK {
                    let (offset, redelivered) = if let Some(offset) = cursor.redeliver.pop_first() {
                        (offset, true)
                    } else if cursor.next < end {
                        cursor.next = cursor.next.max(base);
                        let offset = cursor.next;
                        cursor.next += 1;
                        (offset, false)
                    } else {
                        break;
                    };
                    let Some((event, _)) = offset
                        .checked_sub(base)
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| inner.events.get(i))
                    else {
                        // Trimmed while it waited for redelivery: settled.
                        continue;
                    };
                    if let Some(wanted) = wanted.as_mut() {
                        if !wanted(event) {
                            cursor.finish(offset);
                            skipped += 1;
                            continue;
                        }
                    }
                    let event = event.clone();
                    if skipped > 0 {
                        inner.trim();
                    }
                    return Some(Ok(Delivery {
                        ordering_key: event
                            .extension("partitionkey")
                            .map(|k| Arc::from(k.as_ref())),
                        event,
                        position: Position {
                            partition: 0,
                            offset: i64::try_from(offset).unwrap_or(i64::MAX),
                        },
                        redeliveries: u32::from(redelivered),
                        ack: Box::new(Ack {
                            log: self.log.clone(),
                            subscription: self.subscription.clone(),
                            offset,
                            settled: false,
                        }),
                    }));
                }
                if skipped > 0 {
                    inner.trim();
                }
            }
            if skipped >= MAX_SKIPPED_PER_LOCK {
                tokio::task::yield_now().await;
                continue;
            }
            notified.await;
        }
    }
}

#[async_trait]
impl DeliveryStream for Stream {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        self.take(None).await
    }

    async fn next_wanted(
        &mut self,
        wanted: &mut (dyn for<'e> FnMut(&'e Event) -> bool + Send),
    ) -> Option<Result<Delivery, BackendError>> {
        self.take(Some(wanted)).await
    }
}

/// Settles one offset of one subscription.
#[derive(Debug)]
struct Ack {
    log: Arc<ChannelLog>,
    subscription: Arc<str>,
    offset: u64,
    settled: bool,
}

impl Ack {
    fn record(&mut self, outcome: Outcome) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut wake = false;
        {
            let mut inner = self.log.lock();
            let Some(cursor) = inner.cursors.get_mut(&self.subscription) else {
                return;
            };
            if self.offset < cursor.committed {
                return;
            }
            if outcome.is_final() {
                cursor.finish(self.offset);
                inner.trim();
            } else {
                cursor.redeliver.insert(self.offset);
                wake = true;
            }
        }
        if wake {
            self.log.wake.notify_waiters();
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
        // An unsettled delivery is abandoned: hand it out again.
        self.record(Outcome::Abandoned);
    }
}

#[cfg(test)]
mod tests;

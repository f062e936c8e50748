//! A source's events, queued for the delivery engine.
//!
//! The engine delivers from a [`DeliveryStream`], as it does from a
//! channel's backend: here that stream is a bounded in-process queue the
//! source fills. Each delivery's final outcome is counted (sent, failed)
//! and, for a [`Queued`] event that asks for it, reported back to the
//! source (a webhook answers its sender only once it is known). Nothing is
//! redelivered after a restart: events still queued or in flight when the
//! adapter stops are lost, as with Knative's adapters — except where the
//! source itself can have them sent again (a webhook's sender sees no 2xx,
//! a KafkaSource's offsets are not committed).

use crate::metrics::SourceCounters;
use async_trait::async_trait;
use channel_core::backend::{
    Acknowledgement, BackendError, Delivery, DeliveryStream, Outcome, Position,
};
use channel_core::event::Event;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// An event on its way to the engine, with where to report its final
/// outcome (if anyone waits for it).
#[derive(Debug)]
pub struct Queued {
    pub event: Event,
    pub outcome: Option<oneshot::Sender<Outcome>>,
}

impl From<Event> for Queued {
    fn from(event: Event) -> Queued {
        Queued {
            event,
            outcome: None,
        }
    }
}

impl Queued {
    /// An event whose final outcome is reported on the returned receiver
    /// (dropped unanswered if the source stops first).
    pub fn tracked(event: Event) -> (Queued, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (
            Queued {
                event,
                outcome: Some(tx),
            },
            rx,
        )
    }
}

/// A bounded queue: the sender side for the source, the stream for the
/// engine.
pub fn queue(capacity: usize, counters: SourceCounters) -> (mpsc::Sender<Queued>, QueueStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        tx,
        QueueStream {
            rx,
            counters,
            next: 0,
        },
    )
}

/// The engine's side of a source's queue.
#[derive(Debug)]
pub struct QueueStream {
    rx: mpsc::Receiver<Queued>,
    counters: SourceCounters,
    next: i64,
}

#[derive(Debug)]
struct Ack {
    counters: SourceCounters,
    outcome: Option<oneshot::Sender<Outcome>>,
}

#[async_trait]
impl Acknowledgement for Ack {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<(), BackendError> {
        match outcome {
            Outcome::Delivered => {
                self.counters.sent.inc();
            }
            Outcome::DeadLettered | Outcome::Dropped => {
                self.counters.failed.inc();
            }
            Outcome::Abandoned => {}
        }
        if let Some(tx) = self.outcome {
            let _ = tx.send(outcome);
        }
        Ok(())
    }
}

#[async_trait]
impl DeliveryStream for QueueStream {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        let Queued { event, outcome } = self.rx.recv().await?;
        let offset = self.next;
        self.next += 1;
        Some(Ok(Delivery {
            event: Arc::new(event),
            position: Position {
                partition: 0,
                offset,
            },
            ordering_key: None,
            redeliveries: 0,
            ack: Box::new(Ack {
                counters: self.counters.clone(),
                outcome,
            }),
        }))
    }
}

/// Another stream's deliveries (a KafkaSource's) as a source sends them:
/// `ceOverrides` extensions set on each event, final outcomes counted in
/// the source's counters, each settled as it was.
#[derive(Debug)]
pub struct Counted {
    inner: Box<dyn DeliveryStream>,
    counters: SourceCounters,
    extensions: std::collections::BTreeMap<String, String>,
}

impl Counted {
    pub fn new(
        inner: Box<dyn DeliveryStream>,
        counters: SourceCounters,
        extensions: std::collections::BTreeMap<String, String>,
    ) -> Counted {
        Counted {
            inner,
            counters,
            extensions,
        }
    }
}

#[derive(Debug)]
struct CountedAck {
    inner: Box<dyn Acknowledgement>,
    counters: SourceCounters,
}

#[async_trait]
impl Acknowledgement for CountedAck {
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<(), BackendError> {
        match outcome {
            Outcome::Delivered => self.counters.sent.inc(),
            Outcome::DeadLettered | Outcome::Dropped => self.counters.failed.inc(),
            Outcome::Abandoned => 0,
        };
        self.inner.settle(outcome).await
    }
}

#[async_trait]
impl DeliveryStream for Counted {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        let mut delivery = match self.inner.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        if !self.extensions.is_empty() {
            let event = Arc::make_mut(&mut delivery.event);
            for (name, value) in &self.extensions {
                event.extensions.insert(
                    name.clone(),
                    channel_core::event::ExtensionValue::String(value.clone()),
                );
            }
        }
        // An ack dropped unsettled drops the inner one: still abandoned.
        let inner = std::mem::replace(&mut delivery.ack, Box::new(Noop));
        delivery.ack = Box::new(CountedAck {
            inner,
            counters: self.counters.clone(),
        });
        Some(Ok(delivery))
    }
}

#[derive(Debug)]
struct Noop;

#[async_trait]
impl Acknowledgement for Noop {
    async fn settle(self: Box<Self>, _outcome: Outcome) -> Result<(), BackendError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_come_out_in_order_and_outcomes_are_counted() {
        let counters = SourceCounters::default();
        let (tx, mut stream) = queue(2, counters.clone());
        let (tracked, outcome) = Queued::tracked(Event::new("1", "/s", "t"));
        tx.send(tracked).await.expect("send");
        tx.send(Event::new("2", "/s", "t").into())
            .await
            .expect("send");
        assert!(
            tx.try_send(Event::new("3", "/s", "t").into()).is_err(),
            "bounded"
        );
        let a = stream.next().await.expect("one").expect("ok");
        let b = stream.next().await.expect("two").expect("ok");
        assert_eq!((a.event.id.as_str(), b.event.id.as_str()), ("1", "2"));
        assert_eq!((a.position.offset, b.position.offset), (0, 1));
        a.ack.settle(Outcome::Delivered).await.expect("settle");
        assert_eq!(outcome.await.expect("reported"), Outcome::Delivered);
        b.ack.settle(Outcome::Dropped).await.expect("settle");
        assert_eq!((counters.sent.get(), counters.failed.get()), (1, 1));
        drop(tx);
        assert!(stream.next().await.is_none(), "closed with the source");
    }
}

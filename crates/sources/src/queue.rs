//! A source's events, queued for the delivery engine.
//!
//! The engine delivers from a [`DeliveryStream`], as it does from a
//! channel's backend: here that stream is a bounded in-process queue the
//! source fills. Each delivery's final outcome is counted (sent, failed);
//! nothing is redelivered after a restart (events still queued or in
//! flight when the adapter stops are lost, as with Knative's adapters).

use crate::metrics::SourceCounters;
use async_trait::async_trait;
use channel_core::backend::{
    Acknowledgement, BackendError, Delivery, DeliveryStream, Outcome, Position,
};
use channel_core::event::Event;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A bounded queue: the sender side for the source, the stream for the
/// engine.
pub fn queue(capacity: usize, counters: SourceCounters) -> (mpsc::Sender<Event>, QueueStream) {
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
    rx: mpsc::Receiver<Event>,
    counters: SourceCounters,
    next: i64,
}

#[derive(Debug)]
struct Ack {
    counters: SourceCounters,
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
        Ok(())
    }
}

#[async_trait]
impl DeliveryStream for QueueStream {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        let event = self.rx.recv().await?;
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
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_come_out_in_order_and_outcomes_are_counted() {
        let counters = SourceCounters::default();
        let (tx, mut stream) = queue(2, counters.clone());
        tx.send(Event::new("1", "/s", "t")).await.expect("send");
        tx.send(Event::new("2", "/s", "t")).await.expect("send");
        assert!(tx.try_send(Event::new("3", "/s", "t")).is_err(), "bounded");
        let a = stream.next().await.expect("one").expect("ok");
        let b = stream.next().await.expect("two").expect("ok");
        assert_eq!((a.event.id.as_str(), b.event.id.as_str()), ("1", "2"));
        assert_eq!((a.position.offset, b.position.offset), (0, 1));
        a.ack.settle(Outcome::Delivered).await.expect("settle");
        b.ack.settle(Outcome::Dropped).await.expect("settle");
        assert_eq!((counters.sent.get(), counters.failed.get()), (1, 1));
        drop(tx);
        assert!(stream.next().await.is_none(), "closed with the source");
    }
}

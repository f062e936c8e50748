use super::*;
use channel_core::backend::{Acknowledgement, BackendError, Position};

#[derive(Debug)]
struct NoAck;

#[async_trait::async_trait]
impl Acknowledgement for NoAck {
    async fn settle(self: Box<Self>, _: Outcome) -> Result<(), BackendError> {
        Ok(())
    }
}

fn job() -> Arc<Job> {
    let deliverer = Deliverer::new(
        Arc::new(Metrics::new()),
        DeliveryOptions::basic(Duration::from_secs(1), 1024),
    );
    let sub: SubscriptionContract = serde_json::from_value(serde_json::json!({
        "uid": "u", "namespace": "default", "name": "s", "generation": 1,
        "subscriber": "http://127.0.0.1:9/", "delivery": {}
    }))
    .expect("a subscription entry");
    Arc::new(Job {
        metrics: deliverer.metrics.subscription("default", "c", "s"),
        deliverer,
        config: SubscriptionConfig::new(Arc::new(sub)),
        abort: CancellationToken::new(),
    })
}

fn delivery() -> Delivery {
    Delivery {
        event: Arc::new(Event::new("e", "/s", "t")),
        position: Position {
            partition: 0,
            offset: 0,
        },
        ordering_key: None,
        redeliveries: 0,
        ack: Box::new(NoAck),
    }
}

/// Every event's delivery is a task: its future is moved into the task
/// through several frames of tokio's spawn, so it is kept small, the
/// delivery's state made once on the heap. Within that state, the paths
/// most deliveries never take (opening a connection, TLS, the dead-letter
/// sink) are boxed too.
#[test]
fn a_delivery_is_a_small_task() {
    let job = job();
    let permit = Arc::new(Semaphore::new(1))
        .try_acquire_owned()
        .expect("a permit");
    let task = delivery_task(job.clone(), delivery(), permit);
    let size = std::mem::size_of_val(&task);
    assert!(size <= 128, "the spawned future is {size} bytes");
    let state = std::mem::size_of_val(&job.deliver(delivery()));
    assert!(state <= 4096, "a delivery's state is {state} bytes");
}

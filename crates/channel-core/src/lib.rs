//! The shared vocabulary of the Knative channel layer.
//!
//! `channel-core` owns everything the control plane and the data plane must
//! agree on, and nothing that performs I/O:
//!
//! * [`event`]: the CloudEvents 1.0 model (attributes plus opaque data bytes),
//!   its validation and the HTTP protocol binding (binary and structured).
//! * [`resources`]: the Knative resources a user writes (`Channel`,
//!   `Subscription`, the concrete channel kinds, `ClusterChannelProvisioner`)
//!   field for field, with defaulting and validation.
//! * [`broker`]: Knative's Broker and Trigger (and the ConfigMap a broker
//!   takes its channel template from), v1 and the seeds' v1alpha1 forms.
//! * [`flows`]: Knative's Sequence and Parallel.
//! * [`eventtype`]: the event registry's EventType.
//! * [`sources`]: the event sources (PingSource, ApiServerSource,
//!   ContainerSource, SinkBinding) and the contract the source adapter
//!   follows.
//! * [`manifests`]: loading multi-document YAML from files and directories.
//! * [`compile`]: turning manifests into the data-plane [`contract`].
//! * [`features`]: Knative's `config-features` flags the data plane follows.
//! * [`contract`]: the document the control plane hands to a dispatcher.
//! * [`backend`]: the traits every backend (memory, Kafka, NATS) implements.
//!
//! It must not know about HTTP servers, Kubernetes clients or any particular
//! broker: backends depend on this crate, never the reverse.

pub mod backend;
pub mod broker;
pub mod compile;
pub mod contract;
pub mod duration;
pub mod event;
pub mod eventtype;
pub mod features;
pub mod flows;
pub mod manifests;
pub mod policy;
pub mod resources;
pub mod sources;

pub use backend::{
    Acknowledgement, Backend, BackendError, BackendErrorKind, Delivery, DeliveryStream, Health,
    Outcome, PersistError, PersistErrorKind, Position,
};
pub use contract::{
    BackendKind, BrokerContract, ChannelContract, Contract, DeliveryPolicy, SubscriptionContract,
    TriggerContract,
};
pub use event::Event;

//! The Knative channel control plane.
//!
//! The provisioner turns Knative resources (Channel, the concrete channel
//! kinds, Subscription, ClusterChannelProvisioner) into running channels:
//!
//! * [`reconcile`] plans, purely: class selection (as a StorageClass picks a
//!   storage driver), defaulting, validation, parameter overlay and
//!   destination resolution (shared with the dispatchers through
//!   `channel_core::compile`), plus what needs memory: a channel's backend
//!   never changes once created.
//! * [`provision`] creates, updates and deletes the backing resources (Kafka
//!   topics, JetStream streams) through the backend crates, with timeouts
//!   and exponential backoff.
//! * [`status`] computes each resource's Knative status: conditions with
//!   reasons, addresses, `subscribers[]`, `physicalSubscription`.
//! * [`standalone`] runs all of it against a directory of manifests and
//!   writes one contract file per backend for the dispatchers; [`table`]
//!   prints its status like `kubectl get`.
//! * [`bindings`]: SinkBindings outside Kubernetes (`provisioner exec`).

pub mod bindings;
pub mod cycle;
pub mod kubernetes;
pub mod provision;
pub mod reconcile;
pub mod registry;
pub mod standalone;
pub mod status;
pub mod table;
pub mod webhooks;

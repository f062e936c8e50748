//! The control plane on Kubernetes: CRDs generated from Rust types and a
//! controller that reconciles Knative channels, subscriptions, classes,
//! brokers and triggers through the same core as standalone mode.

pub mod controller;
pub mod crd;
pub mod lease;
pub mod run;

#[cfg(test)]
mod fake;

//! The backend-agnostic channel data plane.

pub mod delivery;
pub mod metrics;

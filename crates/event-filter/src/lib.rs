//! Knative Trigger filters and CloudEvents SQL.
//!
//! (skeleton: being written)

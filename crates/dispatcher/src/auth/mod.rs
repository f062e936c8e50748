//! Knative's `authentication-oidc` feature: who sends ([`identity`]),
//! whether a sender's token is genuine ([`oidc`]), and whether the sender
//! may send here ([`authorize`]).

pub mod authorize;
pub mod identity;
pub mod oidc;

pub mod authorize;
pub mod oidc;

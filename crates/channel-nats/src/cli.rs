//! The NATS connection flags, shared by `nats-dispatcher` and the
//! provisioner (which creates and deletes streams with the same identity).

use crate::config::{split_urls, ConnectionSettings};
use crate::NatsOptions;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach NATS when a class sets no `url` parameter. Every flag can
/// also be set through the environment variable shown.
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URLs, comma-separated.
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, env = "KN_CHANNEL_NATS_CREDENTIALS_FILE")]
    pub nats_credentials_file: Option<PathBuf>,

    /// NATS auth token.
    #[arg(long, env = "KN_CHANNEL_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// NATS user (with --nats-password).
    #[arg(long, env = "KN_CHANNEL_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// NATS password (with --nats-user).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,

    /// CA certificates (PEM) to verify the NATS server; implies TLS.
    #[arg(long, env = "KN_CHANNEL_NATS_TLS_CA_FILE")]
    pub nats_tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key-file).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_TLS_CERT_FILE",
        requires = "nats_tls_key_file"
    )]
    pub nats_tls_cert_file: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS (with --nats-tls-cert-file).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_TLS_KEY_FILE",
        requires = "nats_tls_cert_file"
    )]
    pub nats_tls_key_file: Option<PathBuf>,

    /// Timeout of JetStream requests: publish acks (ingress answers 503
    /// after it), stream and consumer management, ack confirmations
    /// (`nats-dispatcher --nats-confirm-acks`).
    #[arg(long, env = "KN_CHANNEL_NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub nats_request_timeout: Duration,

    /// Longest pause between reconnection attempts (backoff from 100ms).
    #[arg(long, env = "KN_CHANNEL_NATS_MAX_RECONNECT_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub nats_max_reconnect_delay: Duration,
}

impl std::fmt::Debug for NatsArgs {
    /// Secrets (token, password) are shown only as present or absent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsArgs")
            .field("nats_url", &self.nats_url)
            .field("nats_credentials_file", &self.nats_credentials_file)
            .field("nats_token", &redacted(&self.nats_token))
            .field("nats_user", &self.nats_user)
            .field("nats_password", &redacted(&self.nats_password))
            .field("nats_tls_ca_file", &self.nats_tls_ca_file)
            .field("nats_tls_cert_file", &self.nats_tls_cert_file)
            .field("nats_tls_key_file", &self.nats_tls_key_file)
            .field("nats_request_timeout", &self.nats_request_timeout)
            .field("nats_max_reconnect_delay", &self.nats_max_reconnect_delay)
            .finish()
    }
}

impl NatsArgs {
    /// Backend options for a client that names itself `client_name`.
    pub fn options(&self, client_name: &str) -> NatsOptions {
        NatsOptions {
            default_connection: ConnectionSettings {
                urls: split_urls(&self.nats_url),
                credentials_file: self.nats_credentials_file.clone(),
                token: self.nats_token.clone(),
                user: self.nats_user.clone(),
                password: self.nats_password.clone(),
                tls_ca_file: self.nats_tls_ca_file.clone(),
                tls_cert_file: self.nats_tls_cert_file.clone(),
                tls_key_file: self.nats_tls_key_file.clone(),
            },
            request_timeout: self.nats_request_timeout,
            max_reconnect_delay: self.nats_max_reconnect_delay,
            client_name: client_name.to_owned(),
            ..NatsOptions::default()
        }
    }
}

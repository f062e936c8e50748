//! Class parameters of the `nats` backend.
//!
//! A channel's parameters are its `ClusterChannelProvisioner`'s
//! `spec.parameters` overlaid with the fields of its `NatsJetStreamChannel`
//! template (see [`channel_core::compile`]). They are flat camelCase keys;
//! Knative eventing-natss's nested form `stream: {overrideName, config:
//! {...}}` is accepted too and means the same as the flat keys. Parsing is
//! strict: an unknown key, a wrong type or a bad value is
//! [`BackendErrorKind::Invalid`] naming the key.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `url` | comma-separated NATS URLs | the dispatcher's `--nats-url` |
//! | `credentialsFile` | NATS `.creds` file (JWT + nkey seed) | none |
//! | `token` | auth token | none |
//! | `user`, `password` | user/password auth (both or neither) | none |
//! | `tlsCaFile` | PEM CA bundle to verify the server | system roots |
//! | `tlsCertFile`, `tlsKeyFile` | PEM client certificate and key (both or neither) | none |
//! | `streamName` (`stream.overrideName`) | stream name instead of `KN_<NAMESPACE>__<NAME>` | |
//! | `retention` | `Interest` (kept until every subscription settled it) or `Limits` (kept until a limit is hit) | `Interest` |
//! | `storage` | `File` or `Memory` | `File` |
//! | `replicas` | stream replicas (1..=5) | 1 |
//! | `maxAge` | oldest message kept; ISO-8601 (`PT1H`) or Go style (`1h`); `0` = unlimited | `P7D` |
//! | `maxBytes` | stream size bound in bytes, `-1` = unlimited | -1 |
//! | `maxMsgs` | stream message count bound, `-1` = unlimited | -1 |
//! | `maxMsgSize` | largest message in bytes, `-1` = the server's max payload | -1 |
//! | `discard` | at a bound: `New` refuses new events (ingress `429`), `Old` drops the oldest | `New` |
//! | `duplicateWindow` | window in which a re-sent event id is dropped as a duplicate | `PT2M` |
//!
//! Connection keys (`url` and the security keys) replace the dispatcher's
//! default connection as a whole: a class that sets any of them connects with
//! exactly what it sets.

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use channel_core::backend::{BackendError, BackendErrorKind};
use channel_core::ChannelContract;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default `maxAge`: a week, like Knative's Kafka channel retention.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `duplicateWindow` (the NATS server's own default).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How to reach a NATS cluster. Equal settings share one connection.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ConnectionSettings {
    /// Server URLs, tried in order (the client also learns the cluster's
    /// other servers from the first one it reaches).
    pub urls: Vec<String>,
    /// NATS credentials file (decentralised JWT auth).
    pub credentials_file: Option<PathBuf>,
    /// Token auth.
    pub token: Option<String>,
    /// User for user/password auth.
    pub user: Option<String>,
    /// Password for user/password auth.
    pub password: Option<String>,
    /// CA certificates (PEM) trusted for the server's certificate; setting
    /// any TLS file requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub tls_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        f.debug_struct("ConnectionSettings")
            .field("urls", &self.urls)
            .field("credentials_file", &self.credentials_file)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

impl ConnectionSettings {
    /// Settings for `urls` (comma-separated) without authentication.
    pub fn from_urls(urls: &str) -> ConnectionSettings {
        ConnectionSettings {
            urls: split_urls(urls),
            ..ConnectionSettings::default()
        }
    }

    /// The URLs joined for logs (no secrets: credentials in URLs are cut).
    pub fn display_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| match u.rsplit_once('@') {
                Some((_, host)) => format!("<credentials>@{host}"),
                None => u.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Check the combination (pairs set together, at least one URL).
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.urls.is_empty() {
            return Err(invalid("url", "at least one NATS URL is required"));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid(
                if self.user.is_some() {
                    "password"
                } else {
                    "user"
                },
                "user and password must be set together",
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                if self.tls_cert_file.is_some() {
                    "tlsKeyFile"
                } else {
                    "tlsCertFile"
                },
                "tlsCertFile and tlsKeyFile must be set together",
            ));
        }
        Ok(())
    }
}

/// Split a comma-separated URL list, dropping blanks.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The JetStream stream settings of one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name instead of the Knative-derived one.
    pub name_override: Option<String>,
    /// `Interest` or `Limits` (a work queue cannot fan out to several
    /// subscriptions and is refused).
    pub retention: RetentionPolicy,
    /// File or memory storage.
    pub storage: StorageType,
    /// Number of replicas in a clustered JetStream.
    pub replicas: usize,
    /// Oldest message kept; zero means unlimited.
    pub max_age: Duration,
    /// Size bound in bytes, -1 for none.
    pub max_bytes: i64,
    /// Message count bound, -1 for none.
    pub max_msgs: i64,
    /// Largest message in bytes, -1 for the server's limit.
    pub max_msg_size: i32,
    /// What happens at a bound.
    pub discard: DiscardPolicy,
    /// Deduplication window for `Nats-Msg-Id` (the CloudEvent id).
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name_override: None,
            retention: RetentionPolicy::Interest,
            storage: StorageType::File,
            replicas: 1,
            max_age: DEFAULT_MAX_AGE,
            max_bytes: -1,
            max_msgs: -1,
            max_msg_size: -1,
            discard: DiscardPolicy::New,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }
}

/// Everything the backend reads from a channel's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsParameters {
    /// `None` when the class sets no connection key: use the dispatcher's default.
    pub connection: Option<ConnectionSettings>,
    pub stream: StreamSettings,
}

/// The flat, strict form of the parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawParameters {
    url: Option<String>,
    credentials_file: Option<PathBuf>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    stream_name: Option<String>,
    retention: Option<String>,
    storage: Option<String>,
    replicas: Option<u32>,
    max_age: Option<serde_json::Value>,
    max_bytes: Option<i64>,
    max_msgs: Option<i64>,
    max_msg_size: Option<i32>,
    discard: Option<String>,
    duplicate_window: Option<serde_json::Value>,
}

fn invalid(key: &str, reason: impl std::fmt::Display) -> BackendError {
    BackendError::new(
        BackendErrorKind::Invalid,
        format!("nats parameter {key}: {reason}"),
    )
}

/// Move eventing-natss's `stream: {overrideName, config: {...}}` to flat keys.
fn hoist_stream_spec(
    params: &BTreeMap<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, BackendError> {
    let mut flat: serde_json::Map<String, serde_json::Value> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "stream")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Some(stream) = params.get("stream") else {
        return Ok(flat);
    };
    let serde_json::Value::Object(stream) = stream else {
        return Err(invalid("stream", "expected an object"));
    };
    let mut put = |key: &str, path: String, value: &serde_json::Value| {
        if flat.contains_key(key) {
            return Err(invalid(
                &path,
                format!("conflicts with {key}; set one of them"),
            ));
        }
        flat.insert(key.to_owned(), value.clone());
        Ok(())
    };
    for (k, v) in stream {
        match k.as_str() {
            "overrideName" => put("streamName", "stream.overrideName".into(), v)?,
            "config" => {
                let serde_json::Value::Object(config) = v else {
                    return Err(invalid("stream.config", "expected an object"));
                };
                const STREAM_KEYS: &[&str] = &[
                    "retention",
                    "storage",
                    "replicas",
                    "maxAge",
                    "maxBytes",
                    "maxMsgs",
                    "maxMsgSize",
                    "discard",
                    "duplicateWindow",
                ];
                for (ck, cv) in config {
                    if !STREAM_KEYS.contains(&ck.as_str()) {
                        return Err(invalid(
                            &format!("stream.config.{ck}"),
                            format!("unknown key; expected one of {}", STREAM_KEYS.join(", ")),
                        ));
                    }
                    put(ck, format!("stream.config.{ck}"), cv)?;
                }
            }
            other => {
                return Err(invalid(
                    &format!("stream.{other}"),
                    "unknown key; expected overrideName or config",
                ))
            }
        }
    }
    Ok(flat)
}

/// Parse a duration: ISO-8601 (`PT1H`, as Knative writes durations), Go
/// style (`1h`, `90s`, as eventing-natss's `metav1.Duration`), or `0`.
pub fn parse_duration(key: &str, value: &serde_json::Value) -> Result<Duration, BackendError> {
    match value {
        serde_json::Value::Number(n) if n.as_u64() == Some(0) => Ok(Duration::ZERO),
        serde_json::Value::String(s) => {
            let s = s.trim();
            if s == "0" {
                return Ok(Duration::ZERO);
            }
            if s.starts_with('P') {
                return channel_core::duration::parse_iso8601(s).map_err(|e| invalid(key, e));
            }
            humantime::parse_duration(s).map_err(|e| {
                invalid(
                    key,
                    format!("{s:?} is not a duration ({e}); write for example \"PT1H\" or \"1h\""),
                )
            })
        }
        other => Err(invalid(
            key,
            format!("expected a duration string such as \"PT1H\", got {other}"),
        )),
    }
}

fn choose<T: Copy>(key: &str, value: &str, options: &[(&str, T)]) -> Result<T, BackendError> {
    options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "{value:?} is not one of {}",
                    options
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
}

impl NatsParameters {
    /// Read a channel's parameters.
    pub fn from_channel(channel: &ChannelContract) -> Result<NatsParameters, BackendError> {
        NatsParameters::parse(&channel.parameters)
    }

    /// Read parameters from their JSON map.
    pub fn parse(
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<NatsParameters, BackendError> {
        let flat = hoist_stream_spec(params)?;
        let raw: RawParameters =
            serde_json::from_value(serde_json::Value::Object(flat)).map_err(|e| {
                BackendError::new(BackendErrorKind::Invalid, format!("nats parameters: {e}"))
            })?;

        let has_connection = raw.url.is_some()
            || raw.credentials_file.is_some()
            || raw.token.is_some()
            || raw.user.is_some()
            || raw.password.is_some()
            || raw.tls_ca_file.is_some()
            || raw.tls_cert_file.is_some()
            || raw.tls_key_file.is_some();
        let connection = if has_connection {
            let Some(url) = raw.url.as_deref() else {
                return Err(invalid(
                    "url",
                    "required when any connection key (credentials, token, user, TLS) is set",
                ));
            };
            let c = ConnectionSettings {
                urls: split_urls(url),
                credentials_file: raw.credentials_file,
                token: raw.token,
                user: raw.user,
                password: raw.password,
                tls_ca_file: raw.tls_ca_file,
                tls_cert_file: raw.tls_cert_file,
                tls_key_file: raw.tls_key_file,
            };
            c.validate()?;
            Some(c)
        } else {
            None
        };

        let mut stream = StreamSettings::default();
        if let Some(name) = raw.stream_name {
            validate_stream_name(&name).map_err(|e| invalid("streamName", e))?;
            stream.name_override = Some(name);
        }
        if let Some(r) = raw.retention {
            stream.retention = choose(
                "retention",
                &r,
                &[
                    ("Interest", RetentionPolicy::Interest),
                    ("Limits", RetentionPolicy::Limits),
                    ("WorkQueue", RetentionPolicy::WorkQueue),
                ],
            )?;
            if stream.retention == RetentionPolicy::WorkQueue {
                return Err(invalid(
                    "retention",
                    "WorkQueue cannot deliver an event to more than one subscription; use Interest or Limits",
                ));
            }
        }
        if let Some(s) = raw.storage {
            stream.storage = choose(
                "storage",
                &s,
                &[("File", StorageType::File), ("Memory", StorageType::Memory)],
            )?;
        }
        if let Some(r) = raw.replicas {
            if !(1..=5).contains(&r) {
                return Err(invalid("replicas", format!("{r} is not between 1 and 5")));
            }
            stream.replicas = r as usize;
        }
        if let Some(v) = &raw.max_age {
            stream.max_age = parse_duration("maxAge", v)?;
        }
        let bound = |key: &str, v: Option<i64>, default: i64| match v {
            None => Ok(default),
            Some(n) if n == -1 || n > 0 => Ok(n),
            Some(n) => Err(invalid(
                key,
                format!("{n} is not positive (or -1 for no bound)"),
            )),
        };
        stream.max_bytes = bound("maxBytes", raw.max_bytes, -1)?;
        stream.max_msgs = bound("maxMsgs", raw.max_msgs, -1)?;
        stream.max_msg_size = match raw.max_msg_size {
            None => -1,
            Some(n) if n == -1 || n > 0 => n,
            Some(n) => {
                return Err(invalid(
                    "maxMsgSize",
                    format!("{n} is not positive (or -1 for the server's limit)"),
                ))
            }
        };
        if let Some(d) = raw.discard {
            stream.discard = choose(
                "discard",
                &d,
                &[("New", DiscardPolicy::New), ("Old", DiscardPolicy::Old)],
            )?;
        }
        if let Some(v) = &raw.duplicate_window {
            stream.duplicate_window = parse_duration("duplicateWindow", v)?;
        }
        if !stream.max_age.is_zero() && stream.duplicate_window > stream.max_age {
            if raw.duplicate_window.is_some() {
                return Err(invalid(
                    "duplicateWindow",
                    "must not exceed maxAge (the server refuses it)",
                ));
            }
            stream.duplicate_window = stream.max_age;
        }
        Ok(NatsParameters { connection, stream })
    }
}

/// JetStream stream names: no whitespace, `.`, `*`, `>`, path separators.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!("{name:?} contains {c:?}, which NATS forbids"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<NatsParameters, BackendError> {
        let map: BTreeMap<String, serde_json::Value> = serde_json::from_value(v).unwrap();
        NatsParameters::parse(&map)
    }

    #[test]
    fn empty_parameters_give_the_defaults() {
        let p = parse(json!({})).unwrap();
        assert_eq!(p.connection, None);
        assert_eq!(p.stream, StreamSettings::default());
        assert_eq!(p.stream.retention, RetentionPolicy::Interest);
        assert_eq!(p.stream.discard, DiscardPolicy::New);
    }

    #[test]
    fn flat_keys_are_read() {
        let p = parse(json!({
            "url": "nats://a:4222, nats://b:4222",
            "user": "u", "password": "p",
            "retention": "limits", "storage": "Memory", "replicas": 3,
            "maxAge": "PT1H", "maxBytes": 1024, "maxMsgs": 10, "maxMsgSize": 512,
            "discard": "Old", "duplicateWindow": "30s", "streamName": "ORDERS"
        }))
        .unwrap();
        let c = p.connection.unwrap();
        assert_eq!(c.urls, vec!["nats://a:4222", "nats://b:4222"]);
        assert!(!format!("{c:?}").contains("\"p\""), "password is redacted");
        let s = p.stream;
        assert_eq!(s.retention, RetentionPolicy::Limits);
        assert_eq!(s.storage, StorageType::Memory);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.max_age, Duration::from_secs(3600));
        assert_eq!((s.max_bytes, s.max_msgs, s.max_msg_size), (1024, 10, 512));
        assert_eq!(s.discard, DiscardPolicy::Old);
        assert_eq!(s.duplicate_window, Duration::from_secs(30));
        assert_eq!(s.name_override.as_deref(), Some("ORDERS"));
    }

    #[test]
    fn eventing_natss_nested_form_is_read() {
        let p = parse(json!({
            "stream": {"overrideName": "X", "config": {"maxAge": "1h30m", "replicas": 1}}
        }))
        .unwrap();
        assert_eq!(p.stream.name_override.as_deref(), Some("X"));
        assert_eq!(p.stream.max_age, Duration::from_secs(5400));
        let e = parse(json!({"maxAge": "1h", "stream": {"config": {"maxAge": "2h"}}})).unwrap_err();
        assert!(e.message.contains("stream.config.maxAge"), "{e}");
        let e = parse(json!({"stream": {"config": {"bogus": 1}}})).unwrap_err();
        assert!(e.message.contains("stream.config.bogus"), "{e}");
    }

    #[test]
    fn unknown_and_bad_values_are_invalid_and_named() {
        for (v, needle) in [
            (json!({"bogus": 1}), "bogus"),
            (json!({"retention": "WorkQueue"}), "retention"),
            (json!({"storage": "disk"}), "storage"),
            (json!({"replicas": 0}), "replicas"),
            (json!({"maxAge": "5 fortnights"}), "maxAge"),
            (json!({"maxAge": 5}), "maxAge"),
            (json!({"maxBytes": 0}), "maxBytes"),
            (json!({"token": "t"}), "url"),
            (json!({"url": "nats://a", "user": "u"}), "password"),
            (json!({"url": "nats://a", "tlsCertFile": "c"}), "tlsKeyFile"),
            (json!({"streamName": "a.b"}), "streamName"),
            (
                json!({"maxAge": "PT1M", "duplicateWindow": "PT2M"}),
                "duplicateWindow",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.kind, BackendErrorKind::Invalid, "{v}");
            assert!(e.message.contains(needle), "{v}: {e}");
        }
    }

    #[test]
    fn short_max_age_caps_the_default_duplicate_window() {
        let p = parse(json!({"maxAge": "PT30S"})).unwrap();
        assert_eq!(p.stream.duplicate_window, Duration::from_secs(30));
        assert_eq!(
            parse(json!({"maxAge": 0})).unwrap().stream.max_age,
            Duration::ZERO
        );
    }

    #[test]
    fn display_urls_hide_credentials() {
        let c = ConnectionSettings::from_urls("nats://u:p@h:4222,nats://h2:4222");
        assert_eq!(c.display_urls(), "<credentials>@h:4222,nats://h2:4222");
    }
}

//! Class parameters of the `kafka` backend.
//!
//! A `ClusterChannelProvisioner` with `spec.backend: kafka` carries them in
//! `spec.parameters`; a `KafkaChannel` template overrides `numPartitions`,
//! `replicationFactor` and `retentionDuration`. Every parameter:
//!
//! ```yaml
//! parameters:
//!   bootstrapServers: "kafka-0:9092,kafka-1:9092"  # default: --bootstrap-servers
//!   numPartitions: 3            # default 1
//!   replicationFactor: 3        # default 1
//!   retentionDuration: PT168H   # ISO-8601, default 7 days
//!   security:
//!     protocol: SASL_SSL        # default: derived from sasl/tls
//!     sasl:
//!       mechanism: SCRAM-SHA-512   # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
//!       user: alice                # or userFile: /etc/kafka/user
//!       passwordFile: /etc/kafka/password   # or password: ...
//!     tls:
//!       caFile: /etc/kafka/ca.crt          # or ca: <PEM>
//!       certFile: /etc/kafka/tls.crt       # or cert: <PEM>
//!       keyFile: /etc/kafka/tls.key        # or key: <PEM>
//!       keyPasswordFile: /etc/kafka/key-pw # or keyPassword: ...
//!   config:                     # extra librdkafka properties (tuning)
//!     linger.ms: 5
//! ```
//!
//! Parsing is strict: an unknown parameter is an error naming it. Secrets
//! (passwords, private keys, secret-looking `config` entries) never appear in
//! `Debug` output or logs.

use channel_core::backend::{BackendError, BackendErrorKind};
use channel_core::duration::parse_iso8601;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default retention of a channel topic (Knative's default: 7 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Every parameter name the backend accepts.
pub const PARAMETERS: &[&str] = &[
    "bootstrapServers",
    "numPartitions",
    "replicationFactor",
    "retentionDuration",
    "security",
    "config",
];

/// Settings the dispatcher gives every class that sets none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    /// `--bootstrap-servers`.
    pub bootstrap_servers: Option<String>,
}

/// A value that may be a secret: given inline or read from a mounted file.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<redacted>"),
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Secret {
    fn from_pair(
        what: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Secret>, BackendError> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(format!(
                "parameter security.{what}: set either {what} or {what}File, not both"
            ))),
            (Some(v), None) => Ok(Some(Secret::Inline(v))),
            (None, Some(p)) => Ok(Some(Secret::File(p))),
            (None, None) => Ok(None),
        }
    }

    /// The value (a mounted file is read now, its trailing newline removed).
    fn read(&self, what: &str) -> Result<String, BackendError> {
        match self {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    BackendError::new(
                        BackendErrorKind::Invalid,
                        format!("cannot read {what} from {}: {e}", path.display()),
                    )
                }),
        }
    }
}

/// SASL mechanisms supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub user: Secret,
    pub password: Secret,
}

/// TLS material: PEM given inline or as mounted files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub ca: Option<Secret>,
    pub cert: Option<Secret>,
    pub key: Option<Secret>,
    pub key_password: Option<Secret>,
}

/// The `security` parameter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `security.protocol`; derived from `sasl`/`tls` when unset.
    pub protocol: Option<String>,
    pub sasl: Option<Sasl>,
    pub tls: Option<Tls>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecuritySpec {
    protocol: Option<String>,
    sasl: Option<SaslSpec>,
    tls: Option<TlsSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SaslSpec {
    mechanism: SaslMechanism,
    user: Option<String>,
    user_file: Option<PathBuf>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TlsSpec {
    ca: Option<String>,
    ca_file: Option<PathBuf>,
    cert: Option<String>,
    cert_file: Option<PathBuf>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    key_password: Option<String>,
    key_password_file: Option<PathBuf>,
}

/// The parsed parameters of one channel.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaParams {
    /// Comma-separated `host:port` list; `None` means the dispatcher default.
    pub bootstrap_servers: Option<String>,
    pub num_partitions: i32,
    pub replication_factor: i32,
    pub retention: Duration,
    pub security: Security,
    /// Extra librdkafka properties; they override what the backend sets.
    pub config: BTreeMap<String, String>,
}

impl Default for KafkaParams {
    fn default() -> Self {
        KafkaParams {
            bootstrap_servers: None,
            num_partitions: 1,
            replication_factor: 1,
            retention: DEFAULT_RETENTION,
            security: Security::default(),
            config: BTreeMap::new(),
        }
    }
}

/// Whether a librdkafka property holds a secret.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "pem",
        "jaas",
        "key",
        "token",
        "credential",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl fmt::Debug for KafkaParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config: BTreeMap<&str, &str> = self
            .config
            .iter()
            .map(|(k, v)| {
                let v = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaParams")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("num_partitions", &self.num_partitions)
            .field("replication_factor", &self.replication_factor)
            .field("retention", &self.retention)
            .field("security", &self.security)
            .field("config", &config)
            .finish()
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::new(BackendErrorKind::Invalid, message)
}

fn positive_i32(name: &str, v: &serde_json::Value) -> Result<i32, BackendError> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    n.filter(|n| *n >= 1)
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| {
            invalid(format!(
                "parameter {name} must be a positive integer, got {v}"
            ))
        })
}

fn property_value(name: &str, v: &serde_json::Value) -> Result<String, BackendError> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(invalid(format!(
            "parameter config.{name} must be a string, number or boolean"
        ))),
    }
}

impl KafkaParams {
    /// Parse a channel's parameters; unknown names and bad values are
    /// [`BackendErrorKind::Invalid`] errors naming the parameter.
    pub fn parse(parameters: &BTreeMap<String, serde_json::Value>) -> Result<Self, BackendError> {
        let mut p = KafkaParams::default();
        for (name, value) in parameters {
            match name.as_str() {
                "bootstrapServers" => {
                    let s = value
                        .as_str()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| {
                            invalid(
                                "parameter bootstrapServers must be a non-empty string of host:port[,host:port...]"
                                    .into(),
                            )
                        })?;
                    p.bootstrap_servers = Some(s.to_owned());
                }
                "numPartitions" => p.num_partitions = positive_i32(name, value)?,
                "replicationFactor" => p.replication_factor = positive_i32(name, value)?,
                "retentionDuration" => {
                    let s = value.as_str().ok_or_else(|| {
                        invalid("parameter retentionDuration must be an ISO-8601 duration string such as PT168H".into())
                    })?;
                    p.retention = parse_iso8601(s)
                        .map_err(|e| invalid(format!("parameter retentionDuration: {e}")))?;
                }
                "security" => {
                    let spec: SecuritySpec = serde_json::from_value(value.clone())
                        .map_err(|e| invalid(format!("parameter security: {e}")))?;
                    p.security = Security::from_spec(spec)?;
                }
                "config" => {
                    let map = value.as_object().ok_or_else(|| {
                        invalid("parameter config must be a map of librdkafka properties".into())
                    })?;
                    for (k, v) in map {
                        p.config.insert(k.clone(), property_value(k, v)?);
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} for the kafka backend; expected one of {}",
                        PARAMETERS.join(", ")
                    )))
                }
            }
        }
        Ok(p)
    }

    /// The bootstrap servers to use, falling back to the dispatcher default.
    pub fn servers<'a>(&'a self, defaults: &'a Defaults) -> Result<&'a str, BackendError> {
        self.bootstrap_servers
            .as_deref()
            .or(defaults.bootstrap_servers.as_deref())
            .ok_or_else(|| {
                invalid(
                    "no Kafka bootstrap servers: set the bootstrapServers parameter or --bootstrap-servers"
                        .into(),
                )
            })
    }

    /// The librdkafka connection properties (bootstrap, security, extra
    /// config), reading mounted secret files now. The result holds secrets:
    /// never log it.
    pub fn client_properties(
        &self,
        defaults: &Defaults,
    ) -> Result<BTreeMap<String, String>, BackendError> {
        let mut props = BTreeMap::new();
        props.insert(
            "bootstrap.servers".to_owned(),
            self.servers(defaults)?.to_owned(),
        );
        let sec = &self.security;
        let protocol = match (&sec.protocol, &sec.sasl, &sec.tls) {
            (Some(p), _, _) => Some(p.clone()),
            (None, Some(_), Some(_)) => Some("SASL_SSL".to_owned()),
            (None, Some(_), None) => Some("SASL_PLAINTEXT".to_owned()),
            (None, None, Some(_)) => Some("SSL".to_owned()),
            (None, None, None) => None,
        };
        if let Some(protocol) = protocol {
            props.insert("security.protocol".to_owned(), protocol);
        }
        if let Some(sasl) = &sec.sasl {
            props.insert(
                "sasl.mechanism".to_owned(),
                sasl.mechanism.as_str().to_owned(),
            );
            props.insert("sasl.username".to_owned(), sasl.user.read("sasl user")?);
            props.insert(
                "sasl.password".to_owned(),
                sasl.password.read("sasl password")?,
            );
        }
        if let Some(tls) = &sec.tls {
            let mut material = |secret: &Option<Secret>, location: &str, pem: &str| match secret {
                Some(Secret::File(path)) => {
                    props.insert(location.to_owned(), path.display().to_string());
                }
                Some(Secret::Inline(v)) => {
                    props.insert(pem.to_owned(), v.clone());
                }
                None => {}
            };
            material(&tls.ca, "ssl.ca.location", "ssl.ca.pem");
            material(&tls.cert, "ssl.certificate.location", "ssl.certificate.pem");
            material(&tls.key, "ssl.key.location", "ssl.key.pem");
            if let Some(pw) = &tls.key_password {
                props.insert("ssl.key.password".to_owned(), pw.read("tls key password")?);
            }
        }
        for (k, v) in &self.config {
            props.insert(k.clone(), v.clone());
        }
        Ok(props)
    }
}

impl Security {
    fn from_spec(spec: SecuritySpec) -> Result<Security, BackendError> {
        let sasl = match spec.sasl {
            None => None,
            Some(s) => Some(Sasl {
                mechanism: s.mechanism,
                user: Secret::from_pair("sasl.user", s.user, s.user_file)?.ok_or_else(|| {
                    invalid("parameter security.sasl needs user or userFile".into())
                })?,
                password: Secret::from_pair("sasl.password", s.password, s.password_file)?
                    .ok_or_else(|| {
                        invalid("parameter security.sasl needs password or passwordFile".into())
                    })?,
            }),
        };
        let tls = match spec.tls {
            None => None,
            Some(t) => Some(Tls {
                ca: Secret::from_pair("tls.ca", t.ca, t.ca_file)?,
                cert: Secret::from_pair("tls.cert", t.cert, t.cert_file)?,
                key: Secret::from_pair("tls.key", t.key, t.key_file)?,
                key_password: Secret::from_pair(
                    "tls.keyPassword",
                    t.key_password,
                    t.key_password_file,
                )?,
            }),
        };
        if let Some(p) = &spec.protocol {
            const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
            if !PROTOCOLS.contains(&p.to_ascii_uppercase().as_str()) {
                return Err(invalid(format!(
                    "parameter security.protocol {p:?} is not one of {}",
                    PROTOCOLS.join(", ")
                )));
            }
        }
        Ok(Security {
            protocol: spec.protocol,
            sasl,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_load() {
        let p = KafkaParams::parse(&BTreeMap::new()).unwrap();
        assert_eq!(p, KafkaParams::default());
        assert_eq!(p.num_partitions, 1);
        assert_eq!(p.retention, DEFAULT_RETENTION);
        assert!(p.servers(&Defaults::default()).is_err());
        let d = Defaults {
            bootstrap_servers: Some("k:9092".into()),
        };
        assert_eq!(p.servers(&d).unwrap(), "k:9092");
    }

    #[test]
    fn parses_every_parameter() {
        let p = KafkaParams::parse(&params(json!({
            "bootstrapServers": "a:9092,b:9092",
            "numPartitions": 3,
            "replicationFactor": "2",
            "retentionDuration": "PT1H",
            "security": {"sasl": {"mechanism": "SCRAM-SHA-512", "user": "alice", "password": "s3cret"},
                         "tls": {"caFile": "/etc/ca.crt"}},
            "config": {"linger.ms": 5, "enable.idempotence": true}
        })))
        .unwrap();
        assert_eq!(p.num_partitions, 3);
        assert_eq!(p.replication_factor, 2);
        assert_eq!(p.retention, Duration::from_secs(3600));
        let props = p.client_properties(&Defaults::default()).unwrap();
        assert_eq!(props["bootstrap.servers"], "a:9092,b:9092");
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(props["sasl.password"], "s3cret");
        assert_eq!(props["ssl.ca.location"], "/etc/ca.crt");
        assert_eq!(props["linger.ms"], "5");
    }

    #[test]
    fn unknown_and_bad_parameters_are_named() {
        let e = KafkaParams::parse(&params(json!({"numPartition": 3}))).unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Invalid);
        assert!(e.message.contains("\"numPartition\""), "{}", e.message);
        let e = KafkaParams::parse(&params(json!({"numPartitions": 0}))).unwrap_err();
        assert!(e.message.contains("numPartitions"), "{}", e.message);
        let e = KafkaParams::parse(&params(json!({"retentionDuration": "7 days"}))).unwrap_err();
        assert!(e.message.contains("retentionDuration"), "{}", e.message);
        let e = KafkaParams::parse(&params(
            json!({"security": {"sasl": {"mechanism": "GSSAPI", "user": "u", "password": "p"}}}),
        ))
        .unwrap_err();
        assert!(e.message.contains("security"), "{}", e.message);
        let e =
            KafkaParams::parse(&params(json!({"security": {"tls": {"bogus": 1}}}))).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e = KafkaParams::parse(&params(
            json!({"security": {"sasl": {"mechanism": "PLAIN", "user": "u", "password": "p", "passwordFile": "/x"}}}),
        ))
        .unwrap_err();
        assert!(e.message.contains("not both"), "{}", e.message);
    }

    #[test]
    fn secrets_are_redacted_and_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, "from-file\n").unwrap();
        let p = KafkaParams::parse(&params(json!({
            "bootstrapServers": "k:9092",
            "security": {"sasl": {"mechanism": "PLAIN", "user": "alice", "passwordFile": pw}, "tls": {"key": "-----BEGIN PRIVATE KEY-----TOPSECRETKEY"}},
            "config": {"sasl.oauthbearer.client.secret": "hush-hush", "linger.ms": "5"}
        })))
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("TOPSECRETKEY"), "{shown}");
        assert!(!shown.contains("hush-hush"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        assert!(shown.contains("linger.ms"), "{shown}");
        let props = p.client_properties(&Defaults::default()).unwrap();
        assert_eq!(props["sasl.password"], "from-file");
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert!(props["ssl.key.pem"].contains("TOPSECRETKEY"));
        // A missing secret file is an error naming the file, not the secret.
        std::fs::remove_file(&pw).unwrap();
        let e = p.client_properties(&Defaults::default()).unwrap_err();
        assert!(e.message.contains("password"), "{}", e.message);
    }
}

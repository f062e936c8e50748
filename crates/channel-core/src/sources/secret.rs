//! Where a source's secrets come from.
//!
//! Knative names a secret as `{secretKeyRef: {name, key}}`: a key of a
//! Kubernetes Secret in the source's namespace. Outside Kubernetes there
//! are no Secrets to read, so a source may instead name a file
//! (`{file: /run/secrets/github-token}`) or an environment variable of the
//! adapter (`{env: GITHUB_TOKEN}`); a `secretKeyRef` outside Kubernetes is
//! read from the adapter's secrets directory
//! (`<dir>/<namespace>/<name>/<key>`, the layout of a mounted Secret).
//!
//! Only the reference travels: contracts, status and logs never hold a
//! secret's value; the adapter and the control plane read it when they use
//! it.

use crate::resources::FieldError;
use serde::{Deserialize, Serialize};

/// Knative's `SecretValueFromSource`, plus `file` and `env` for running
/// outside Kubernetes. Exactly one is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretValueFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// Beyond Knative: a file holding the value (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Beyond Knative: an environment variable of the adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// A key of a Secret in the source's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// A resolved reference, in the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "camelCase")]
pub enum SecretRef {
    /// A key of a Kubernetes Secret (read through the API on Kubernetes,
    /// from the secrets directory elsewhere).
    Secret {
        namespace: String,
        name: String,
        key: String,
    },
    File {
        path: String,
    },
    Env {
        name: String,
    },
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Secret {
                namespace,
                name,
                key,
            } => write!(f, "key {key:?} of Secret {namespace}/{name}"),
            SecretRef::File { path } => write!(f, "file {path}"),
            SecretRef::Env { name } => write!(f, "environment variable {name}"),
        }
    }
}

impl SecretValueFromSource {
    /// Check that exactly one source is named, at `path`.
    pub fn validate(&self, path: &str) -> Result<(), FieldError> {
        let set = [
            self.secret_key_ref.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(FieldError::new(
                path,
                "name the secret with exactly one of secretKeyRef {name, key}, file or env",
            ));
        }
        if let Some(s) = &self.secret_key_ref {
            if s.name.is_empty() || s.key.is_empty() {
                return Err(FieldError::new(
                    format!("{path}.secretKeyRef"),
                    "name and key are required",
                ));
            }
        }
        if self.file.as_deref() == Some("") || self.env.as_deref() == Some("") {
            return Err(FieldError::new(path, "empty file or env name"));
        }
        Ok(())
    }

    /// The reference, for a source in `namespace`. Call after
    /// [`validate`](Self::validate).
    pub fn reference(&self, namespace: &str) -> SecretRef {
        match (&self.secret_key_ref, &self.file, &self.env) {
            (Some(s), _, _) => SecretRef::Secret {
                namespace: namespace.to_owned(),
                name: s.name.clone(),
                key: s.key.clone(),
            },
            (None, Some(path), _) => SecretRef::File { path: path.clone() },
            (None, None, Some(name)) => SecretRef::Env { name: name.clone() },
            (None, None, None) => SecretRef::Env {
                name: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_source_is_named() {
        let parse =
            |y: &str| -> SecretValueFromSource { serde_yaml_ng::from_str(y).expect("yaml") };
        let k8s = parse("secretKeyRef: {name: gh, key: token}");
        k8s.validate("spec.accessToken").expect("valid");
        assert_eq!(
            k8s.reference("shop"),
            SecretRef::Secret {
                namespace: "shop".into(),
                name: "gh".into(),
                key: "token".into()
            }
        );
        assert_eq!(
            parse("file: /run/t").reference("x"),
            SecretRef::File {
                path: "/run/t".into()
            }
        );
        for bad in [
            "{}",
            "{file: /a, env: B}",
            "secretKeyRef: {name: gh, key: ''}",
        ] {
            assert!(parse(bad).validate("spec.secretToken").is_err(), "{bad}");
        }
        assert!(serde_yaml_ng::from_str::<SecretValueFromSource>("value: x").is_err());
    }

    #[test]
    fn a_reference_names_where_not_what() {
        let r = SecretRef::Secret {
            namespace: "shop".into(),
            name: "gh".into(),
            key: "token".into(),
        };
        assert_eq!(r.to_string(), "key \"token\" of Secret shop/gh");
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(
            json,
            r#"{"from":"secret","namespace":"shop","name":"gh","key":"token"}"#
        );
    }
}

//! Reading the secrets a source names ([`SecretRef`]) when it is used.
//!
//! * `secretKeyRef`: through the Kubernetes API when the adapter has one
//!   (`--kubeconfig`, in-cluster), otherwise from the secrets directory
//!   (`--secrets-dir`, default `./secrets`): `<dir>/<namespace>/<name>/<key>`,
//!   the layout of Secrets mounted as volumes.
//! * `file`: the file's content; `env`: the adapter's environment.
//!
//! A trailing newline is dropped (files written with `echo`). Values are
//! [`SecretValue`]s: their `Debug` prints `<redacted>`, and nothing here
//! logs them.

use channel_core::sources::secret::SecretRef;
use std::path::PathBuf;

/// A secret's value; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where `secretKeyRef`s are read from.
#[derive(Clone)]
pub enum SecretStore {
    /// A directory laid out as mounted Secrets.
    Dir(PathBuf),
    /// The Kubernetes API.
    Kube(kube::Client),
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretStore::Dir(d) => f.debug_tuple("Dir").field(d).finish(),
            SecretStore::Kube(_) => f.write_str("Kube"),
        }
    }
}

fn trimmed(s: String) -> String {
    s.trim_end_matches(['\r', '\n']).to_owned()
}

impl SecretStore {
    /// Read `reference`; the error names it (never its value).
    pub async fn read(&self, reference: &SecretRef) -> Result<SecretValue, String> {
        let value = match reference {
            SecretRef::Env { name } => std::env::var(name)
                .map_err(|_| format!("{reference} is not set in the adapter's environment"))?,
            SecretRef::File { path } => std::fs::read_to_string(path)
                .map(trimmed)
                .map_err(|e| format!("cannot read {reference}: {e}"))?,
            SecretRef::Secret {
                namespace,
                name,
                key,
            } => match self {
                SecretStore::Dir(dir) => {
                    let path = dir.join(namespace).join(name).join(key);
                    std::fs::read_to_string(&path).map(trimmed).map_err(|e| {
                        format!("cannot read {reference} from {}: {e}", path.display())
                    })?
                }
                SecretStore::Kube(client) => {
                    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                        kube::Api::namespaced(client.clone(), namespace);
                    let secret = api
                        .get_opt(name)
                        .await
                        .map_err(|e| format!("cannot read {reference}: {e}"))?
                        .ok_or_else(|| format!("{reference}: the Secret does not exist"))?;
                    let from_data = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
                    let from_string = secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .cloned();
                    from_data
                        .or(from_string)
                        .ok_or_else(|| format!("{reference}: the Secret has no such key"))?
                }
            },
        };
        if value.is_empty() {
            return Err(format!("{reference} is empty"));
        }
        Ok(SecretValue(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_dirs_and_env_are_read_and_errors_name_the_reference() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("shop/gh");
        std::fs::create_dir_all(&secret).expect("mkdir");
        std::fs::write(secret.join("token"), "t0ken\n").expect("write");
        let store = SecretStore::Dir(dir.path().to_path_buf());
        let r = SecretRef::Secret {
            namespace: "shop".into(),
            name: "gh".into(),
            key: "token".into(),
        };
        assert_eq!(store.read(&r).await.expect("read").expose(), "t0ken");
        let file = SecretRef::File {
            path: secret.join("token").display().to_string(),
        };
        assert_eq!(store.read(&file).await.expect("read").expose(), "t0ken");
        let missing = SecretRef::Secret {
            namespace: "shop".into(),
            name: "gh".into(),
            key: "other".into(),
        };
        let e = store.read(&missing).await.expect_err("missing");
        assert!(e.contains("key \"other\" of Secret shop/gh"), "{e}");
        let env = SecretRef::Env {
            name: "KN_SOURCE_TEST_SURELY_UNSET".into(),
        };
        assert!(store.read(&env).await.is_err());
        assert_eq!(format!("{:?}", SecretValue::new("x")), "<redacted>");
    }
}

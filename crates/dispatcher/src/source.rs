//! Loading and watching the dispatcher's configuration source.
//!
//! A change is decided by a fingerprint (path, size, modification time and
//! inode of every file, following symlinks), taken every interval and
//! whenever a file notification arrives ([`crate::changes`]): the
//! notification makes an edit apply within milliseconds, the polling sees
//! what notifications miss (the `..data` symlink swap kubelet performs on
//! mounted ConfigMaps, network filesystems) for a few `stat` calls per
//! interval.
//!
//! A configuration that fails to load at start-up is fatal (the process
//! exits with the reason). Later failures keep the previous configuration
//! applied and are reported on `/status`.

use crate::changes::{fingerprint, Fingerprint};
use crate::config::Source;
use crate::dataplane::ProblemStatus;
use channel_core::compile::compile;
use channel_core::manifests::load_paths;
use channel_core::{BackendKind, Contract};
use std::path::PathBuf;

/// A configuration ready to apply.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub contract: Contract,
    pub problems: Vec<ProblemStatus>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Manifests(#[from] channel_core::manifests::ManifestError),
    #[error("cannot read contract {path}: {source}")]
    ReadContract {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("contract {path} is not a valid contract document: {source}")]
    ParseContract {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Loads a [`Source`] and tells when it changed.
#[derive(Debug)]
pub struct SourceWatcher {
    source: Source,
    backend: BackendKind,
    fingerprint: Option<Fingerprint>,
    /// Digest and generation of the contract loaded last: a copy of a
    /// ten-thousand-channel contract would cost megabytes to keep.
    last: Option<(channel_core::contract::ContentDigest, u64)>,
    generation: u64,
}

impl SourceWatcher {
    pub fn new(source: Source, backend: BackendKind) -> Self {
        SourceWatcher {
            source,
            backend,
            fingerprint: None,
            last: None,
            generation: 0,
        }
    }

    /// Load now, whatever the fingerprint says.
    pub fn load(&mut self) -> Result<Loaded, LoadError> {
        self.fingerprint = Some(self.take_fingerprint());
        let (loaded, digest) = match &self.source {
            Source::Manifests(paths) => {
                let manifests = load_paths(paths)?;
                for warning in &manifests.warnings {
                    tracing::warn!(warning = %warning, "manifest warning");
                }
                let compiled = compile(&manifests);
                let mut contract = compiled
                    .contracts
                    .get(&self.backend)
                    .cloned()
                    .unwrap_or_default();
                contract.backend = Some(self.backend);
                // Other backends' channels are listed so /status can say who serves them.
                for (kind, other) in &compiled.contracts {
                    if *kind != self.backend {
                        contract.channels.extend(other.channels.iter().cloned());
                    }
                }
                // Embedded mode numbers generations itself: +1 per content change.
                let digest = contract.content_digest();
                match &self.last {
                    Some((last, _)) if *last == digest => contract.generation = self.generation,
                    _ => {
                        self.generation += 1;
                        contract.generation = self.generation;
                    }
                }
                let loaded = Loaded {
                    contract,
                    problems: compiled.problems.iter().map(ProblemStatus::from).collect(),
                };
                (loaded, digest)
            }
            Source::Contract(path) => {
                let bytes = std::fs::read(path).map_err(|source| LoadError::ReadContract {
                    path: path.clone(),
                    source,
                })?;
                let contract =
                    Contract::from_json(&bytes).map_err(|source| LoadError::ParseContract {
                        path: path.clone(),
                        source,
                    })?;
                let digest = contract.content_digest();
                let loaded = Loaded {
                    contract,
                    problems: Vec::new(),
                };
                (loaded, digest)
            }
        };
        self.last = Some((digest, loaded.contract.generation));
        Ok(loaded)
    }

    /// Reload if any watched file changed; `None` when nothing changed or the
    /// new content equals what was loaded last.
    pub fn poll(&mut self) -> Option<Result<Loaded, LoadError>> {
        let fingerprint = self.take_fingerprint();
        if self.fingerprint.as_ref() == Some(&fingerprint) {
            return None;
        }
        let previous = self.last;
        let result = self.load();
        self.fingerprint = Some(fingerprint);
        match (&result, previous, self.last) {
            (Ok(_), Some(prev), Some(now)) if prev == now => None,
            _ => Some(result),
        }
    }

    fn take_fingerprint(&self) -> Fingerprint {
        match &self.source {
            Source::Manifests(paths) => fingerprint(paths),
            Source::Contract(path) => fingerprint(std::slice::from_ref(path)),
        }
    }
}

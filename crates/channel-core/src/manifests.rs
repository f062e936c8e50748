//! Loading multi-document YAML manifests.
use crate::resources::*;

/// Every resource read from a set of manifest files.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub warnings: Vec<String>,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// Load every `.yaml`/`.yml`/`.json` file under the given paths.
pub fn load_paths(_paths: &[std::path::PathBuf]) -> Result<Manifests, ManifestError> {
    Ok(Manifests::default())
}

//! The facility configuration (config/facility.toml) as the host reads it.
//! Components read the same file for what they show; the host reads only
//! what its providers need, each capability parsing its own section.

use anyhow::Context;
use serde::Deserialize;
use std::path::Path;

/// The parts of facility.toml the host uses. Unknown keys are ignored: the
/// components read the rest.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FacilityConfig {
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// `[streaming]`: parsed by the brokers capability.
    #[serde(default)]
    pub streaming: toml::Table,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ResourceConfig {
    pub name: String,
    /// `[resources.compute]`: parsed by the scheduler capability.
    #[serde(default)]
    pub compute: Option<toml::Table>,
    /// `[resources.environment]`: read by the environment component.
    #[serde(default)]
    pub environment: Option<toml::Table>,
}

impl FacilityConfig {
    /// Reads the file; a missing file is an empty facility.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            tracing::warn!(path = %path.display(), "no facility configuration: no resources");
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading facility configuration {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("facility configuration {} is not valid", path.display()))
    }
}

//! The facility configuration (config/facility.toml): one shape and one
//! reader, shared with the components, in the `s3m-wire` crate. The host
//! reads it at start; the wiring (wiring.rs) takes the sections its
//! providers need from it.

pub use s3m_wire::facility::FacilityConfig;
use std::path::Path;

/// Reads facility.toml for `s3m up`. A file that cannot be read or is not
/// valid stops start-up, naming the file and the problem. A missing file
/// is no resources: the host needs it only for the providers it
/// configures, and every component that reads it answers 503 naming it;
/// the same message goes to the log here.
pub fn load(path: &Path) -> anyhow::Result<FacilityConfig> {
    let (facility, missing) = FacilityConfig::load_or_empty(path)?;
    if let Some(why) = missing {
        tracing::warn!("{why}; starting with no resources");
    }
    Ok(facility)
}

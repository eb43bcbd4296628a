//! The facility configuration as every component reads it: mounted at
//! [`CONFIG_FILE`] (spin.toml's `files = [{ source = "config", destination =
//! "/config" }]`) and read on every request, so that edits show at once.
//! The shape and the reader are `s3m-wire`'s, shared with the host.
//!
//! A missing, unreadable or invalid file is a 503 whose message names the
//! file and says how to fix it; no component reads a missing file as an
//! empty facility.

use crate::ApiError;
pub use s3m_wire::facility::{
    DowntimeConfig, Facility, FacilityConfig, FacilityError, FacilityInfo, FacilitySummary,
    ResourceConfig, ResourceSummary, DIGEST_ENV, SUMMARY_DIGEST_ENV,
};

/// Where components find facility.toml.
pub const CONFIG_FILE: &str = "/config/facility.toml";

/// The facility configuration, or the 503 that says what is wrong with it.
///
/// Under `s3m up` the host hands over the file already parsed, as JSON in
/// [`DIGEST_ENV`] (kept current with the file, so edits still show at
/// once): reading that JSON costs a fraction of parsing the TOML. Other
/// hosts set no such variable, and the file is read.
pub fn load() -> Result<FacilityConfig, ApiError> {
    load_as(DIGEST_ENV)
}

/// As [`load`], without the per-component sections: for a reader that
/// needs none of them. The host's [`SUMMARY_DIGEST_ENV`] leaves them out;
/// the whole digest or the file are read past them.
pub fn load_summary() -> Result<FacilitySummary, ApiError> {
    if let Some(f) = std::env::var(SUMMARY_DIGEST_ENV)
        .ok()
        .and_then(|json| Facility::from_digest(&json))
    {
        return Ok(f);
    }
    load_as(DIGEST_ENV)
}

fn load_as<S: serde::de::DeserializeOwned + Default>(env: &str) -> Result<Facility<S>, ApiError> {
    if let Some(f) = std::env::var(env)
        .ok()
        .and_then(|json| Facility::from_digest(&json))
    {
        return Ok(f);
    }
    Facility::load(std::path::Path::new(CONFIG_FILE)).map_err(error)
}

/// The 503 of a facility configuration that cannot be used.
pub fn error(e: FacilityError) -> ApiError {
    ApiError::unavailable(e.to_string())
}

/// A 503 for something wrong in the file that its reader found (a bad value
/// of its own keys): `problem` prefixed with the file's name.
pub fn invalid(problem: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("facility configuration {CONFIG_FILE}: {problem}"))
}

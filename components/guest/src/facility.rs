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

/// The host's [`SUMMARY_DIGEST_ENV`] as it is: [`load`] without the
/// per-component sections (each still says whether it was there), as JSON,
/// for a reader that needs only which resources exist and what they offer
/// and reads just that, borrowed (compute's check of the resource a
/// request names, on every request). `None` where no host handed one over,
/// or where the host withheld it because the file is invalid: then [`load`]
/// reads and checks the file.
pub fn host_summary_json() -> Option<String> {
    std::env::var(SUMMARY_DIGEST_ENV).ok()
}

/// As [`load`], without the per-component sections, as JSON in the form of
/// the host's [`SUMMARY_DIGEST_ENV`], for a reader that reads it borrowed
/// (status): the host's text as it is, else [`written_summary`].
pub fn summary_json() -> Result<String, ApiError> {
    match host_summary_json() {
        Some(json) => Ok(json),
        None => written_summary(),
    }
}

/// The whole digest or the file, read past the per-component sections and
/// written as the host writes [`SUMMARY_DIGEST_ENV`] (every field, an absent
/// description as `""`, annotations as `{}`): for hosts that set no summary,
/// and for a reader that cannot read the one set.
pub fn written_summary() -> Result<String, ApiError> {
    let summary: FacilitySummary = load_as(DIGEST_ENV)?;
    serde_json::to_string(&summary)
        .map_err(|e| ApiError::internal(format!("could not write the facility summary: {e}")))
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

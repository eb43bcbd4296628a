//! The facility configuration, `config/facility.toml`: one typed shape and
//! one way to read it, for the host and for every component.
//!
//! The host reads it at start (`s3m up`); the components read it, mounted at
//! `/config/facility.toml`, on every request, so that edits show at once.
//!
//! **When the file is missing**, [`FacilityConfig::load`] answers
//! [`FacilityError::Missing`], whose message names the file and says how to
//! fix it. Every component that reads the file answers 503 with that
//! message. The host only needs the file for the providers it configures:
//! it logs the same message as a warning and starts with no resources
//! ([`FacilityConfig::load_or_empty`]), so that an app none of whose
//! components reads facility.toml (a tokens-only app) needs none. A file that
//! cannot be read or is not valid is an error everywhere: the host refuses
//! to start, and components answer 503.
//!
//! Keys this shape does not know are ignored. `[resources.compute]` and
//! `[resources.environment]` are kept as tables: their keys belong to their
//! readers (the host's scheduler and software providers, the environment
//! component), each of which deserialises its own typed view and names the
//! resource and the key when one is wrong. `[streaming]` is the host's
//! brokers capability's.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole facility configuration. Every section is optional.
pub type FacilityConfig = Facility<toml::Table>;

/// The configuration without its per-component sections: `[facility]`,
/// the resources' own keys and `[[downtimes]]`, for a reader that needs
/// nothing else (the status component). `[resources.compute]`,
/// `[resources.environment]` and `[streaming]` are read past, not built,
/// which makes this a fraction of the cost of a whole [`FacilityConfig`]
/// on every request.
pub type FacilitySummary = Facility<Skipped>;

/// One `[[resources]]` entry.
pub type ResourceConfig = Resource<toml::Table>;

/// One `[[resources]]` entry without its sections.
pub type ResourceSummary = Resource<Skipped>;

/// The configuration's shape, its per-component sections read as `S`: a
/// [`toml::Table`] ([`FacilityConfig`]) or [`Skipped`] ([`FacilitySummary`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct Facility<S> {
    /// `[facility]`.
    pub facility: FacilityInfo,
    /// `[[resources]]`.
    pub resources: Vec<Resource<S>>,
    /// `[[downtimes]]`.
    pub downtimes: Vec<DowntimeConfig>,
    /// `[streaming]`: parsed by the host's brokers capability.
    pub streaming: S,
}

/// A section read past and not kept: it may hold anything. Written, it is
/// an empty table (so a summary still says that the section was there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped;

impl Serialize for Skipped {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Skipped)
    }
}

/// `[facility]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct FacilityInfo {
    pub name: String,
    pub organization: String,
    /// `open` unless set.
    pub security_enclave: String,
}

impl Default for FacilityInfo {
    fn default() -> Self {
        Self {
            name: String::new(),
            organization: String::new(),
            security_enclave: "open".into(),
        }
    }
}

/// One `[[resources]]` entry, its sections read as `S`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(bound(deserialize = "S: Deserialize<'de>"))]
pub struct Resource<S> {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The resource's organization when not the facility's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// `OPERATIONAL`, `UNAVAILABLE` or `UNSPECIFIED` (checked by status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_schedule_available: Option<bool>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `[resources.compute]`: the resource runs jobs; its keys are the
    /// scheduler provider's.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub compute: Option<S>,
    /// `[resources.environment]`: read by the host's software providers
    /// (`modulepath`, `modules`, ...) and the environment component
    /// (`container_runtimes`, `filesystems`, `variables`).
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub environment: Option<S>,
}

fn none<S>() -> Option<S> {
    None
}

/// One `[[downtimes]]` entry. Times are kept as written (a TOML string or
/// datetime); the status component checks them.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DowntimeConfig {
    pub resource: String,
    pub start: toml::Value,
    pub end: toml::Value,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<toml::Value>,
}

/// Why the facility configuration could not be read. Its message names the
/// file and what to do.
#[derive(Debug)]
pub enum FacilityError {
    /// The file does not exist.
    Missing { path: PathBuf },
    /// The file exists but cannot be read.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file is not valid TOML or not of this shape.
    Invalid { path: PathBuf, error: String },
}

impl fmt::Display for FacilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FacilityError::Missing { path } => write!(
                f,
                "facility configuration {} does not exist: the app's config/ directory must hold \
                 facility.toml (start from config/facility.toml of the S3M repository), and each \
                 component that reads it needs files = [{{ source = \"config\", destination = \"/config\" }}] \
                 in spin.toml",
                path.display()
            ),
            FacilityError::Unreadable { path, error } => write!(
                f,
                "facility configuration {} cannot be read ({error}); check its permissions",
                path.display()
            ),
            FacilityError::Invalid { path, error } => write!(
                f,
                "facility configuration {} is not valid: {}",
                path.display(),
                error.trim_end()
            ),
        }
    }
}

impl std::error::Error for FacilityError {}

impl<S: DeserializeOwned + Default> Facility<S> {
    /// Parses the text of facility.toml; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FacilityError> {
        toml::from_str(text).map_err(|e| FacilityError::Invalid {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    }

    /// Reads and parses facility.toml. A missing file is an error
    /// ([`FacilityError::Missing`]), never an empty facility.
    pub fn load(path: &Path) -> Result<Self, FacilityError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                FacilityError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                FacilityError::Unreadable {
                    path: path.to_path_buf(),
                    error,
                }
            }
        })?;
        Self::parse(&text, path)
    }

    /// As [`Facility::load`], but a missing file is an empty facility
    /// (no resources), with the [`FacilityError::Missing`] that says so.
    pub fn load_or_empty(path: &Path) -> Result<(Self, Option<FacilityError>), FacilityError> {
        match Self::load(path) {
            Ok(f) => Ok((f, None)),
            Err(e @ FacilityError::Missing { .. }) => Ok((Self::default(), Some(e))),
            Err(e) => Err(e),
        }
    }

    /// The resource named `name`.
    pub fn resource(&self, name: &str) -> Option<&Resource<S>> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// The configuration from a [`FacilityConfig::digest`].
    pub fn from_digest(json: &str) -> Option<Self> {
        serde_json::from_str(json).ok()
    }
}

impl FacilityConfig {
    /// The configuration as [`Facility::from_digest`] reads it: the
    /// whole file as JSON, which a component reads in a fraction of the
    /// time that parsing TOML takes. `None` when the text is not a valid
    /// configuration (the component then reads the file and says what is
    /// wrong with it) or holds what JSON cannot (a NaN or infinite float).
    ///
    /// A TOML date-time becomes its RFC 3339 text: the fields that hold
    /// times are `toml::Value`s that their readers accept as either.
    pub fn digest(text: &str) -> Option<String> {
        Self::digests(text).map(|d| d.whole)
    }

    /// Both digests of the text: the whole configuration, and the
    /// [`FacilitySummary`] alone.
    pub fn digests(text: &str) -> Option<Digests> {
        toml::from_str::<FacilityConfig>(text).ok()?;
        let table: toml::Table = toml::from_str(text).ok()?;
        let whole = json_of_table(&table)?;
        // The summary is what a FacilitySummary reads, written back: the
        // type that reads it decides what it holds.
        let summary = FacilitySummary::deserialize(&whole).ok()?;
        Some(Digests {
            whole: serde_json::to_string(&whole).ok()?,
            summary: serde_json::to_string(&summary).ok()?,
        })
    }
}

/// The two JSON forms of one facility.toml that the s3m host hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// [`FacilityConfig::digest`], in [`DIGEST_ENV`].
    pub whole: String,
    /// What a [`FacilitySummary`] reads, in [`SUMMARY_DIGEST_ENV`]: the
    /// summary itself, written as JSON, so the per-component sections are
    /// left out, each resource's as an empty table (so that it still says
    /// whether it was there). The status
    /// component reads this on every request; reading past the sections of
    /// the whole cost it about a third of its JSON work (issue 13).
    pub summary: String,
}

/// The environment variable in which the s3m host hands its components
/// [`FacilityConfig::digest`] of the facility.toml they mount, kept current
/// with the file. Hosts that do not set it (stock Spin, `wasmtime serve`,
/// jco) leave the components reading the file.
pub const DIGEST_ENV: &str = "S3M_FACILITY_JSON";

/// The environment variable in which the s3m host hands its components the
/// [`Digests::summary`] of the same file, beside [`DIGEST_ENV`].
pub const SUMMARY_DIGEST_ENV: &str = "S3M_FACILITY_SUMMARY_JSON";

fn json_of_table(t: &toml::Table) -> Option<serde_json::Value> {
    let mut m = serde_json::Map::with_capacity(t.len());
    for (k, v) in t {
        m.insert(k.clone(), json_of(v)?);
    }
    Some(serde_json::Value::Object(m))
}

fn json_of(v: &toml::Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => J::Number(serde_json::Number::from_f64(*f)?),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(json_of).collect::<Option<_>>()?),
        toml::Value::Table(t) => json_of_table(t)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_reads_as_the_file() {
        // Debug shows every field, tables included; the sample writes its
        // times as strings, so both readings hold the same values.
        let from_file = FacilityConfig::parse(SAMPLE, Path::new("f")).unwrap();
        let digest = FacilityConfig::digest(SAMPLE).expect("the sample has a digest");
        let from_digest = FacilityConfig::from_digest(&digest).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{from_digest:?}"));
        assert!(!from_digest.resources.is_empty());
    }

    #[test]
    fn a_summary_reads_the_same_from_the_file_and_the_digest_and_skips_the_sections() {
        let path = Path::new("f");
        let whole = FacilityConfig::parse(SAMPLE, path).unwrap();
        let from_file = FacilitySummary::parse(SAMPLE, path).unwrap();
        let digests = FacilityConfig::digests(SAMPLE).unwrap();
        let from_digest = FacilitySummary::from_digest(&digests.whole).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{from_digest:?}"));
        let from_summary = FacilitySummary::from_digest(&digests.summary).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{from_summary:?}"));
        assert!(
            digests.summary.len() < digests.whole.len(),
            "the summary leaves the sections out"
        );
        // [streaming] is there as an empty table, none of its keys.
        let summary: serde_json::Value = serde_json::from_str(&digests.summary).unwrap();
        assert_eq!(summary["streaming"], serde_json::json!({}));
        assert!(!digests.summary.contains("rabbitmq_server"));
        assert!(!digests.summary.contains("modulepath"));
        assert_eq!(
            format!("{:?}", from_file.facility),
            format!("{:?}", whole.facility)
        );
        assert_eq!(
            format!("{:?}", from_file.downtimes),
            format!("{:?}", whole.downtimes)
        );
        assert_eq!(from_file.resources.len(), whole.resources.len());
        for (s, w) in from_file.resources.iter().zip(&whole.resources) {
            assert_eq!(
                (&s.name, &s.description, &s.organization, &s.status),
                (&w.name, &w.description, &w.organization, &w.status)
            );
            assert_eq!(
                (s.downtime_schedule_available, &s.annotations),
                (w.downtime_schedule_available, &w.annotations)
            );
            // A skipped section still says whether it was there.
            assert_eq!(s.compute.is_some(), w.compute.is_some());
            assert_eq!(s.environment.is_some(), w.environment.is_some());
        }
        // The sections are only read past, never checked: a summary does not
        // fail on one that a whole reading refuses.
        let text = "[[resources]]\nname = \"a\"\ncompute = 5\n";
        assert!(FacilityConfig::parse(text, path).is_err());
        assert_eq!(
            FacilitySummary::parse(text, path).unwrap().resources[0].name,
            "a"
        );
    }

    #[test]
    fn a_digest_holds_datetimes_as_their_text_and_refuses_what_json_cannot_hold() {
        let text = "[[downtimes]]\nresource = \"a\"\nstart = 2026-01-01T00:00:00Z\nend = \"2026-01-02T00:00:00Z\"\n[[resources]]\nname = \"a\"\n";
        let f = FacilityConfig::from_digest(&FacilityConfig::digest(text).unwrap()).unwrap();
        assert_eq!(
            f.downtimes[0].start,
            toml::Value::String("2026-01-01T00:00:00Z".into())
        );
        assert_eq!(FacilityConfig::digest("[streaming]\nx = nan\n"), None);
        // Not a configuration: no digest, so the reader meets the file's error.
        assert_eq!(FacilityConfig::digest("[facility\n"), None);
        assert_eq!(FacilityConfig::digest("resources = 3\n"), None);
    }

    const SAMPLE: &str = include_str!("../../../config/facility.toml");

    #[test]
    fn the_sample_parses() {
        let f = FacilityConfig::parse(SAMPLE, Path::new("facility.toml")).unwrap();
        let names: Vec<_> = f.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["basalt", "granite", "quartz-dtn", "shale-archive"]);
        assert!(f.resource("basalt").unwrap().compute.is_some());
        assert!(f.resource("quartz-dtn").unwrap().compute.is_none());
        assert_eq!(f.facility.organization, "CRCF");
        assert_eq!(f.downtimes.len(), 1);
        assert!(f.streaming.contains_key("provider"));
    }

    #[test]
    fn unknown_keys_are_ignored_and_sections_are_optional() {
        let f = FacilityConfig::parse(
            "[facility]\nnew_key = 1\n[[resources]]\nname = \"a\"\nfuture = true\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(f.facility.security_enclave, "open");
        assert_eq!(f.resources[0].name, "a");
        assert!(FacilityConfig::parse("", Path::new("f"))
            .unwrap()
            .resources
            .is_empty());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it_and_the_fix() {
        let path = Path::new("/nonexistent/config/facility.toml");
        let e = FacilityConfig::load(path).unwrap_err();
        assert!(matches!(e, FacilityError::Missing { .. }), "{e:?}");
        let m = e.to_string();
        assert!(
            m.contains("/nonexistent/config/facility.toml") && m.contains("spin.toml"),
            "{m}"
        );
    }

    #[test]
    fn an_invalid_file_names_it() {
        let e = FacilityConfig::parse("[facility\nname = ", Path::new("/config/facility.toml"))
            .unwrap_err();
        let m = e.to_string();
        assert!(m.contains("/config/facility.toml is not valid"), "{m}");
        let e = FacilityConfig::parse("[[resources]]\ndescription = \"x\"\n", Path::new("f"))
            .unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
    }
}

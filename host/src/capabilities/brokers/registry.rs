//! The cluster records: what was provisioned, for which project, with which
//! credentials, and when it expires. Kept in one JSON file in the state
//! directory (mode 0600: it holds passwords), rewritten atomically on every
//! change. Providers read and fill in the endpoint parts of a record; they
//! never decide names, owners or lifetimes.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The broker software of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redis,
    Rabbitmq,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Rabbitmq => "rabbitmq",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    Provisioning,
    Synced,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Provisioning,
    Healthy,
    Unhealthy,
}

/// A resource a cluster can be sized by.
#[derive(Debug, Clone)]
pub struct ResourceOption {
    pub key: &'static str,
    pub description: String,
    pub min: u32,
    pub max: u32,
    pub default: u32,
}

#[derive(Debug, Clone)]
pub struct FeatureFlag {
    pub key: &'static str,
    pub description: String,
    pub default: bool,
}

/// One kind of cluster a provider offers.
#[derive(Debug, Clone)]
pub struct Backend {
    pub engine: Engine,
    pub kind: String,
    pub description: String,
    pub resource_options: Vec<ResourceOption>,
    pub feature_flags: Vec<FeatureFlag>,
}

/// Errors of the brokers capability, as the WIT `broker-error` has them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    InvalidSettings(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// One provisioned cluster. `Debug` leaves the password out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    /// Stable, unique, safe in paths and object names.
    pub id: String,
    pub project: String,
    pub engine: Engine,
    pub kind: String,
    pub name: String,
    pub resource_settings: BTreeMap<String, u32>,
    pub feature_flags: BTreeMap<String, bool>,
    pub username: String,
    pub password: String,
    /// The client URL, credentials included; empty until the provider set it.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub mgmt_url: Option<String>,
    /// Provider-specific: ports, object names, ...
    #[serde(default)]
    pub endpoint: serde_json::Value,
    pub provisioned_at: DateTime<Utc>,
    #[serde(default)]
    pub extended_at: Option<DateTime<Utc>>,
    pub lifetime_seconds: u64,
    pub sync_status: SyncStatus,
    pub health_status: HealthStatus,
    /// The host (`<state>/host-id`) whose provider started the cluster.
    #[serde(default)]
    pub runner: Option<String>,
}

impl fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("id", &self.id)
            .field("project", &self.project)
            .field("engine", &self.engine)
            .field("name", &self.name)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("sync_status", &self.sync_status)
            .field("health_status", &self.health_status)
            .finish_non_exhaustive()
    }
}

/// A cluster's lifetime as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    pub provisioned_at: String,
    pub extended_at: Option<String>,
    pub seconds_lifetime: u64,
    pub seconds_remaining: u64,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl ClusterRecord {
    /// When the countdown ends: a full lifetime after provisioning or the last extension.
    pub fn expires_at(&self) -> DateTime<Utc> {
        let start = self.extended_at.unwrap_or(self.provisioned_at);
        start + chrono::Duration::seconds(self.lifetime_seconds.min(i64::MAX as u64) as i64)
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at()
    }

    pub fn lifetime(&self, now: DateTime<Utc>) -> Lifetime {
        let remaining = (self.expires_at() - now).num_seconds().max(0) as u64;
        Lifetime {
            provisioned_at: rfc3339(self.provisioned_at),
            extended_at: self.extended_at.map(rfc3339),
            seconds_lifetime: self.lifetime_seconds,
            seconds_remaining: remaining,
        }
    }

    pub fn setting(&self, key: &str) -> u32 {
        self.resource_settings.get(key).copied().unwrap_or(1)
    }

    pub fn flag(&self, key: &str) -> bool {
        self.feature_flags.get(key).copied().unwrap_or(false)
    }
}

/// Is `name` an RFC 1123 label of at most 40 characters?
pub fn valid_cluster_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A cluster's complete settings and flags, by name.
pub type Spec = (BTreeMap<String, u32>, BTreeMap<String, bool>);

/// Checks a request against the backends offered, and fills in defaults.
/// Returns the complete settings and flags.
pub fn check_spec(
    backends: &[Backend],
    engine: Engine,
    kind: &str,
    name: &str,
    settings: &[(String, u32)],
    flags: &[(String, bool)],
) -> Result<Spec, BrokerError> {
    let offered: Vec<&Backend> = backends.iter().filter(|b| b.engine == engine).collect();
    let Some(backend) = offered.iter().find(|b| b.kind == kind) else {
        let kinds: Vec<&str> = offered.iter().map(|b| b.kind.as_str()).collect();
        return Err(BrokerError::InvalidSettings(format!(
            "kind: {engine} offers the kinds {kinds:?}, not {kind:?}"
        )));
    };
    if !valid_cluster_name(name) {
        return Err(BrokerError::InvalidSettings(format!(
            "name: {:?} is not an RFC 1123 label of at most 40 characters \
             (lower-case letters, digits and '-', starting and ending with a letter or digit)",
            crate::text::cut(name)
        )));
    }
    let mut out = BTreeMap::new();
    for (key, value) in settings {
        if engine == Engine::Redis
            && key == "nodes"
            && !backend.resource_options.iter().any(|o| o.key == "nodes")
        {
            // OLCF's documentation: one node is what Redis is; more is refused
            // in its words.
            if *value == 1 {
                continue;
            }
            return Err(BrokerError::InvalidSettings(
                "resourceSettings.nodes: Multi-node Redis clusters are not currently supported."
                    .into(),
            ));
        }
        let Some(option) = backend.resource_options.iter().find(|o| o.key == key) else {
            let keys: Vec<&str> = backend.resource_options.iter().map(|o| o.key).collect();
            return Err(BrokerError::InvalidSettings(format!(
                "resourceSettings.{key}: {engine} {kind} takes only {keys:?}"
            )));
        };
        if *value == 0 || *value < option.min || *value > option.max {
            return Err(BrokerError::InvalidSettings(format!(
                "resourceSettings.{key}: {value} is outside {}..={}",
                option.min.max(1),
                option.max
            )));
        }
        if out.insert(key.clone(), *value).is_some() {
            return Err(BrokerError::InvalidSettings(format!(
                "resourceSettings.{key}: given twice"
            )));
        }
    }
    for option in &backend.resource_options {
        out.entry(option.key.to_string()).or_insert(option.default);
    }
    let mut out_flags = BTreeMap::new();
    for (key, value) in flags {
        if !backend.feature_flags.iter().any(|f| f.key == key) {
            let keys: Vec<&str> = backend.feature_flags.iter().map(|f| f.key).collect();
            return Err(BrokerError::InvalidSettings(format!(
                "featureFlags.{key}: {engine} {kind} takes only {keys:?}"
            )));
        }
        out_flags.insert(key.clone(), *value);
    }
    for flag in &backend.feature_flags {
        out_flags
            .entry(flag.key.to_string())
            .or_insert(flag.default);
    }
    Ok((out, out_flags))
}

/// The records file of versions before key-value held them; read once, to import.
pub struct RecordFile {
    path: PathBuf,
}

impl RecordFile {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn load(&self) -> anyhow::Result<Vec<ClusterRecord>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "broker records {} are not valid JSON: fix or remove the file",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<Backend> {
        vec![Backend {
            engine: Engine::Redis,
            kind: "general".into(),
            description: String::new(),
            resource_options: vec![ResourceOption {
                key: "ram-gbs",
                description: String::new(),
                min: 1,
                max: 8,
                default: 1,
            }],
            feature_flags: vec![FeatureFlag {
                key: "persistence",
                description: String::new(),
                default: false,
            }],
        }]
    }

    #[test]
    fn names_are_rfc1123_labels_of_at_most_40() {
        assert!(valid_cluster_name("my-cluster-1"));
        assert!(valid_cluster_name(&"a".repeat(40)));
        assert!(!valid_cluster_name(&"a".repeat(41)));
        for bad in ["", "-a", "a-", "My", "a_b", "a.b", "é"] {
            assert!(!valid_cluster_name(bad), "{bad}");
        }
    }

    #[test]
    fn spec_checks_name_the_field() {
        let b = backends();
        let err = |r: Result<_, BrokerError>| match r {
            Err(BrokerError::InvalidSettings(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(check_spec(&b, Engine::Redis, "huge", "a", &[], &[])).starts_with("kind:"));
        assert!(
            err(check_spec(&b, Engine::Rabbitmq, "general", "a", &[], &[])).starts_with("kind:")
        );
        assert!(err(check_spec(&b, Engine::Redis, "general", "A", &[], &[])).starts_with("name:"));
        let m = err(check_spec(
            &b,
            Engine::Redis,
            "general",
            "a",
            &[("nodes".into(), 2)],
            &[],
        ));
        assert!(m.starts_with("resourceSettings.nodes:"), "{m}");
        let m = err(check_spec(
            &b,
            Engine::Redis,
            "general",
            "a",
            &[("ram-gbs".into(), 0)],
            &[],
        ));
        assert!(m.starts_with("resourceSettings.ram-gbs:"), "{m}");
        let m = err(check_spec(
            &b,
            Engine::Redis,
            "general",
            "a",
            &[("ram-gbs".into(), 9)],
            &[],
        ));
        assert!(m.starts_with("resourceSettings.ram-gbs:"), "{m}");
        let m = err(check_spec(
            &b,
            Engine::Redis,
            "general",
            "a",
            &[],
            &[("x".into(), true)],
        ));
        assert!(m.starts_with("featureFlags.x:"), "{m}");
        let (s, f) = check_spec(&b, Engine::Redis, "general", "a", &[], &[]).unwrap();
        assert_eq!(s["ram-gbs"], 1);
        assert!(!f["persistence"]);
    }

    #[test]
    fn lifetime_counts_down_from_the_last_extension() {
        let t0 = Utc::now();
        let mut r = ClusterRecord {
            id: "x".into(),
            project: "P".into(),
            engine: Engine::Redis,
            kind: "general".into(),
            name: "n".into(),
            resource_settings: BTreeMap::new(),
            feature_flags: BTreeMap::new(),
            username: "u".into(),
            password: "secret-password".into(),
            url: String::new(),
            mgmt_url: None,
            endpoint: serde_json::Value::Null,
            provisioned_at: t0,
            extended_at: None,
            lifetime_seconds: 100,
            sync_status: SyncStatus::Provisioning,
            health_status: HealthStatus::Provisioning,
            runner: None,
        };
        let later = t0 + chrono::Duration::seconds(60);
        assert_eq!(r.lifetime(later).seconds_remaining, 40);
        r.extended_at = Some(later);
        assert_eq!(r.lifetime(later).seconds_remaining, 100);
        assert!(!r.expired(later + chrono::Duration::seconds(99)));
        assert!(r.expired(later + chrono::Duration::seconds(100)));
        assert!(!format!("{r:?}").contains("secret-password"));
    }
}

//! The `s3m:facility/brokers` capability: its WIT binding, the cluster
//! records (who owns what, credentials, lifetimes), the lifecycle that every
//! provider shares (health polling, expiry reaper, reconciliation at start),
//! and the trait that broker providers (host/src/providers/brokers/)
//! implement. Providers start, check and stop brokers; they never decide
//! names, owners or lifetimes.

pub mod registry;

use crate::metrics::Call;
use crate::state::HostState;
use async_trait::async_trait;
use chrono::Utc;
use registry::{Backend, BrokerError, ClusterRecord, Engine, HealthStatus, RecordFile, SyncStatus};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use wasmtime::component::{HasSelf, Linker};

wasmtime::component::bindgen!({
    world: "s3m:facility/brokers-host",
    path: "../wit",
    imports: { default: async | trappable },
    // The capability gateway carries these values as JSON (docs/gateway.md).
    additional_derives: [serde::Serialize, serde::Deserialize],
});

use s3m::facility::brokers as wit;
use s3m::facility::types::Caller;

/// What a provider answers when asked whether a cluster works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The broker answered, with the cluster's credentials.
    Healthy,
    /// Still coming up (or cannot be told yet).
    Starting,
    /// Its process or objects are gone: it must be started again.
    Gone,
    /// Running but not answering as it should.
    Unhealthy(String),
}

/// A backend behind the capability: local processes, Kubernetes, ...
#[async_trait]
pub trait BrokerProvider: Send + Sync + 'static {
    /// The kinds of cluster this provider can run.
    fn backends(&self) -> Vec<Backend>;
    /// Starts (or starts again) the cluster of `record`, whose id, owner,
    /// settings and credentials are decided; fills in `url`, `mgmt_url` and
    /// `endpoint`. Returns once it is launched, not once it is ready.
    async fn start(&self, record: &mut ClusterRecord) -> anyhow::Result<()>;
    async fn health(&self, record: &ClusterRecord) -> Health;
    /// Stops the cluster and deletes its data; nothing of it may survive.
    async fn stop(&self, record: &ClusterRecord) -> anyhow::Result<()>;
    /// At start: adopts what still runs of `records` (returns the ids it
    /// adopted), and stops whatever it once started that no record claims.
    async fn reconcile(&self, records: &[ClusterRecord]) -> anyhow::Result<Vec<String>>;
    /// How long a cluster may take to become healthy.
    fn start_timeout(&self, engine: Engine) -> Duration;
    /// The CA certificate (PEM) that clients verify the brokers against,
    /// when this provider's brokers speak TLS with the facility's own CA.
    fn ca_certificate(&self) -> Option<String> {
        None
    }
}

/// `[streaming]` of facility.toml, the parts every provider shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StreamingConfig {
    /// `local` (default) or `kubernetes`.
    pub provider: String,
    /// A cluster's lifetime; 7 days unless set.
    pub lifetime_seconds: u64,
    /// How often healthy clusters are checked and expired ones reaped.
    pub check_interval_ms: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            provider: "local".into(),
            lifetime_seconds: 7 * 24 * 3600,
            check_interval_ms: 1000,
        }
    }
}

struct Inner {
    config: StreamingConfig,
    provider: Box<dyn BrokerProvider>,
    file: RecordFile,
    records: Mutex<Vec<ClusterRecord>>,
}

/// The broker provider the facility configuration asks for, and the records
/// of what it runs.
#[derive(Clone)]
pub struct Brokers {
    inner: Arc<Inner>,
}

impl Brokers {
    /// See [`BrokerProvider::ca_certificate`].
    pub fn ca_certificate(&self) -> Option<String> {
        self.inner.provider.ca_certificate()
    }

    /// Runs `provider` (built by the wiring from `[streaming]`) with the
    /// records under `dir` (`<state>/brokers`): reconciles what it finds and
    /// starts the reaper.
    pub async fn start(
        config: StreamingConfig,
        provider: Box<dyn BrokerProvider>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let brokers = Self::with_provider(config, provider, dir);
        brokers.reconcile().await?;
        let monitor = brokers.clone();
        tokio::spawn(async move { monitor.monitor().await });
        Ok(brokers)
    }

    fn with_provider(
        config: StreamingConfig,
        provider: Box<dyn BrokerProvider>,
        dir: &Path,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                provider,
                file: RecordFile::new(dir.join("clusters.json")),
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    async fn save(&self, records: &[ClusterRecord]) -> Result<(), BrokerError> {
        self.inner.file.save(records).map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "saving broker records");
            BrokerError::Unavailable(format!(
                "cannot save the cluster records in {}: check the state directory",
                self.inner.file.path().display()
            ))
        })
    }

    /// Loads the records, adopts the clusters still running, starts again
    /// those that are not, and has the provider stop what no record claims.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let mut records = self.inner.file.load()?;
        let adopted = self.inner.provider.reconcile(&records).await?;
        let now = Utc::now();
        for record in records.iter_mut() {
            if adopted.contains(&record.id) || record.sync_status == SyncStatus::Failed {
                continue;
            }
            if record.expired(now) {
                continue; // the reaper deletes it
            }
            tracing::info!(cluster = %record.name, project = %record.project, engine = %record.engine,
                "starting a recorded cluster that no longer runs");
            record.health_status = HealthStatus::Provisioning;
            match self.inner.provider.start(record).await {
                Ok(()) => self.spawn_readiness(record.id.clone()),
                Err(e) => {
                    tracing::warn!(cluster = %record.name, error = %format!("{e:#}"), "cannot start it again");
                    record.sync_status = SyncStatus::Failed;
                    record.health_status = HealthStatus::Unhealthy;
                }
            }
        }
        for record in records.iter() {
            if adopted.contains(&record.id) {
                self.spawn_readiness(record.id.clone());
            }
        }
        self.inner.file.save(&records)?;
        *self.inner.records.lock().await = records;
        Ok(())
    }

    pub fn backends(&self) -> Vec<Backend> {
        self.inner.provider.backends()
    }

    /// How many clusters are recorded, by engine and health (`s3m_broker_clusters`).
    pub async fn counts(&self) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
        let mut counts = std::collections::BTreeMap::new();
        for r in self.inner.records.lock().await.iter() {
            let health = match r.health_status {
                HealthStatus::Provisioning => "provisioning",
                HealthStatus::Healthy => "healthy",
                HealthStatus::Unhealthy => "unhealthy",
            };
            *counts.entry((r.engine.as_str(), health)).or_default() += 1;
        }
        counts
    }

    pub async fn provision(
        &self,
        project: &str,
        engine: Engine,
        kind: &str,
        name: &str,
        settings: &[(String, u32)],
        flags: &[(String, bool)],
    ) -> Result<ClusterRecord, BrokerError> {
        let (resource_settings, feature_flags) =
            registry::check_spec(&self.backends(), engine, kind, name, settings, flags)?;
        let mut record = ClusterRecord {
            id: format!("{}-{}", engine.as_str(), uuid::Uuid::new_v4().simple()),
            project: project.to_string(),
            engine,
            kind: kind.to_string(),
            name: name.to_string(),
            resource_settings,
            feature_flags,
            username: format!("s3m-{name}"),
            password: new_password(),
            url: String::new(),
            mgmt_url: None,
            endpoint: serde_json::Value::Null,
            provisioned_at: Utc::now(),
            extended_at: None,
            lifetime_seconds: self.inner.config.lifetime_seconds,
            sync_status: SyncStatus::Provisioning,
            health_status: HealthStatus::Provisioning,
        };
        {
            // Reserve the name before the slow part.
            let mut records = self.inner.records.lock().await;
            if records
                .iter()
                .any(|r| r.project == project && r.engine == engine && r.name == name)
            {
                return Err(BrokerError::AlreadyExists(format!(
                    "name: project {project} already has a {engine} cluster named {name:?}: \
                     pick another name, or delete that one first"
                )));
            }
            records.push(record.clone());
        }
        let started = self.inner.provider.start(&mut record).await;
        let mut records = self.inner.records.lock().await;
        let Some(slot) = records.iter_mut().find(|r| r.id == record.id) else {
            // Deleted while starting.
            drop(records);
            let _ = self.inner.provider.stop(&record).await;
            return Err(BrokerError::NotFound(format!(
                "{engine} cluster {name:?} was deleted while it started"
            )));
        };
        if let Err(e) = started {
            records.retain(|r| r.id != record.id);
            drop(records);
            let _ = self.inner.provider.stop(&record).await;
            tracing::error!(cluster = %name, project = %project, engine = %engine, error = %format!("{e:#}"),
                "provisioning failed");
            return Err(BrokerError::Unavailable(format!(
                "the {engine} cluster could not be started: {e:#}"
            )));
        }
        *slot = record.clone();
        self.save(&records).await?;
        drop(records);
        tracing::info!(cluster = %name, project = %project, engine = %engine, id = %record.id, "provisioned");
        self.spawn_readiness(record.id.clone());
        Ok(record)
    }

    pub async fn list(&self, project: &str, engine: Engine) -> Vec<ClusterRecord> {
        let records = self.inner.records.lock().await;
        records
            .iter()
            .filter(|r| r.project == project && r.engine == engine)
            .cloned()
            .collect()
    }

    pub async fn get(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<ClusterRecord, BrokerError> {
        let records = self.inner.records.lock().await;
        records
            .iter()
            .find(|r| r.project == project && r.engine == engine && r.name == name)
            .cloned()
            .ok_or_else(|| not_found(engine, name))
    }

    pub async fn delete(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<(), BrokerError> {
        let record = {
            let mut records = self.inner.records.lock().await;
            let Some(i) = records
                .iter()
                .position(|r| r.project == project && r.engine == engine && r.name == name)
            else {
                return Err(not_found(engine, name));
            };
            let record = records.remove(i);
            self.save(&records).await?;
            record
        };
        self.stop(&record, "deleted").await;
        Ok(())
    }

    async fn stop(&self, record: &ClusterRecord, why: &str) {
        match self.inner.provider.stop(record).await {
            Ok(()) => {
                tracing::info!(cluster = %record.name, project = %record.project, engine = %record.engine, why, "stopped")
            }
            Err(e) => {
                tracing::error!(cluster = %record.name, project = %record.project, error = %format!("{e:#}"),
                "stopping the cluster failed; it is no longer recorded")
            }
        }
    }

    pub async fn extend(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<ClusterRecord, BrokerError> {
        let mut records = self.inner.records.lock().await;
        let Some(record) = records
            .iter_mut()
            .find(|r| r.project == project && r.engine == engine && r.name == name)
        else {
            return Err(not_found(engine, name));
        };
        record.extended_at = Some(Utc::now());
        let record = record.clone();
        self.save(&records).await?;
        Ok(record)
    }

    /// Polls a new (or restarted) cluster until it is healthy or too late.
    fn spawn_readiness(&self, id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let Some(record) = this.record(&id).await else {
                return;
            };
            let deadline =
                tokio::time::Instant::now() + this.inner.provider.start_timeout(record.engine);
            let mut pause = Duration::from_millis(10);
            loop {
                let Some(record) = this.record(&id).await else {
                    return;
                };
                let health = this.inner.provider.health(&record).await;
                let late = tokio::time::Instant::now() >= deadline;
                let outcome = match health {
                    Health::Healthy => Some((SyncStatus::Synced, HealthStatus::Healthy)),
                    Health::Gone => Some((SyncStatus::Failed, HealthStatus::Unhealthy)),
                    _ if late => Some((SyncStatus::Failed, HealthStatus::Unhealthy)),
                    _ => None,
                };
                if let Some((sync, health_status)) = outcome {
                    if sync == SyncStatus::Failed {
                        tracing::warn!(cluster = %record.name, project = %record.project, engine = %record.engine,
                            ?health, "the cluster did not become healthy");
                    }
                    this.set_status(&id, sync, health_status).await;
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        });
    }

    async fn record(&self, id: &str) -> Option<ClusterRecord> {
        self.inner
            .records
            .lock()
            .await
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    async fn set_status(&self, id: &str, sync: SyncStatus, health: HealthStatus) {
        let mut records = self.inner.records.lock().await;
        if let Some(r) = records.iter_mut().find(|r| r.id == id) {
            if r.sync_status != sync || r.health_status != health {
                r.sync_status = sync;
                r.health_status = health;
                let _ = self.save(&records).await;
            }
        }
    }

    /// Forever: reaps expired clusters, checks the health of running ones,
    /// starts again the local ones whose process is gone.
    async fn monitor(self) {
        let every = Duration::from_millis(self.inner.config.check_interval_ms.max(100));
        loop {
            tokio::time::sleep(every).await;
            let now = Utc::now();
            let expired: Vec<ClusterRecord> = {
                let mut records = self.inner.records.lock().await;
                let (gone, kept): (Vec<_>, Vec<_>) =
                    records.drain(..).partition(|r| r.expired(now));
                *records = kept;
                if !gone.is_empty() {
                    let _ = self.save(&records).await;
                }
                gone
            };
            for record in &expired {
                self.stop(record, "lifetime expired").await;
            }
            let settled: Vec<ClusterRecord> = {
                let records = self.inner.records.lock().await;
                records
                    .iter()
                    .filter(|r| r.sync_status != SyncStatus::Provisioning)
                    .cloned()
                    .collect()
            };
            for record in settled {
                let health = self.inner.provider.health(&record).await;
                if record.sync_status == SyncStatus::Failed {
                    // Too slow to start is not forever: one that came up after all recovers.
                    if health == Health::Healthy {
                        self.set_status(&record.id, SyncStatus::Synced, HealthStatus::Healthy)
                            .await;
                    }
                    continue;
                }
                match health {
                    Health::Healthy => {
                        self.set_status(&record.id, SyncStatus::Synced, HealthStatus::Healthy)
                            .await
                    }
                    Health::Gone => {
                        tracing::warn!(cluster = %record.name, project = %record.project, engine = %record.engine,
                            "the cluster is gone: starting it again");
                        let mut again = record.clone();
                        match self.inner.provider.start(&mut again).await {
                            Ok(()) => {
                                self.set_status(
                                    &record.id,
                                    SyncStatus::Provisioning,
                                    HealthStatus::Provisioning,
                                )
                                .await;
                                self.spawn_readiness(record.id.clone());
                            }
                            Err(e) => {
                                tracing::error!(cluster = %record.name, error = %format!("{e:#}"), "cannot start it again");
                                self.set_status(
                                    &record.id,
                                    SyncStatus::Failed,
                                    HealthStatus::Unhealthy,
                                )
                                .await;
                            }
                        }
                    }
                    Health::Starting | Health::Unhealthy(_) => {
                        self.set_status(&record.id, SyncStatus::Synced, HealthStatus::Unhealthy)
                            .await
                    }
                }
            }
        }
    }
}

fn not_found(engine: Engine, name: &str) -> BrokerError {
    BrokerError::NotFound(format!(
        "no {engine} cluster named {:?} in this project",
        crate::text::cut(name)
    ))
}

/// 192 random bits, hex: safe in URLs and configuration files.
fn new_password() -> String {
    let bytes: [u8; 24] = rand::random();
    hex::encode(bytes)
}

// ---- the WIT binding -------------------------------------------------------

impl From<wit::Engine> for Engine {
    fn from(e: wit::Engine) -> Self {
        match e {
            wit::Engine::Redis => Engine::Redis,
            wit::Engine::Rabbitmq => Engine::Rabbitmq,
        }
    }
}

impl From<Engine> for wit::Engine {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Redis => wit::Engine::Redis,
            Engine::Rabbitmq => wit::Engine::Rabbitmq,
        }
    }
}

impl From<BrokerError> for wit::BrokerError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::InvalidSettings(m) => wit::BrokerError::InvalidSettings(m),
            BrokerError::AlreadyExists(m) => wit::BrokerError::AlreadyExists(m),
            BrokerError::NotFound(m) => wit::BrokerError::NotFound(m),
            BrokerError::Unavailable(m) => wit::BrokerError::Unavailable(m),
        }
    }
}

fn wit_lifetime(r: &ClusterRecord) -> wit::Lifetime {
    let l = r.lifetime(Utc::now());
    wit::Lifetime {
        provisioned_at: l.provisioned_at,
        extended_at: l.extended_at,
        seconds_lifetime: l.seconds_lifetime,
        seconds_remaining: l.seconds_remaining,
    }
}

fn wit_summary(r: &ClusterRecord) -> wit::ClusterSummary {
    wit::ClusterSummary {
        engine: r.engine.into(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        sync_status: match r.sync_status {
            SyncStatus::Provisioning => wit::SyncStatus::Provisioning,
            SyncStatus::Synced => wit::SyncStatus::Synced,
            SyncStatus::Failed => wit::SyncStatus::Failed,
        },
        health_status: match r.health_status {
            HealthStatus::Provisioning => wit::HealthStatus::Provisioning,
            HealthStatus::Healthy => wit::HealthStatus::Healthy,
            HealthStatus::Unhealthy => wit::HealthStatus::Unhealthy,
        },
        lifetime: wit_lifetime(r),
    }
}

fn wit_credentials(r: &ClusterRecord) -> wit::Credentials {
    wit::Credentials {
        username: r.username.clone(),
        password: r.password.clone(),
        url: r.url.clone(),
        mgmt_url: r.mgmt_url.clone(),
    }
}

type R<T> = wasmtime::Result<Result<T, wit::BrokerError>>;

/// What a broker call needs of the request's token.
const STREAMING: &[&str] = &["data-streaming"];

impl s3m::facility::types::Host for HostState {}

/// Whom a brokers call acts for: its caller's project and token.
fn acting(caller: &Caller) -> crate::state::Acting<'_> {
    crate::state::Acting {
        project: &caller.project,
        token: &caller.token,
    }
}

impl crate::metrics::CallError for wit::BrokerError {
    fn case(&self) -> &'static str {
        match self {
            wit::BrokerError::InvalidSettings(_) => "InvalidSettings",
            wit::BrokerError::AlreadyExists(_) => "AlreadyExists",
            wit::BrokerError::NotFound(_) => "NotFound",
            wit::BrokerError::Unavailable(_) => "Unavailable",
            wit::BrokerError::Permission(_) => "Permission",
        }
    }
    fn message(&self) -> &str {
        match self {
            wit::BrokerError::InvalidSettings(m)
            | wit::BrokerError::AlreadyExists(m)
            | wit::BrokerError::NotFound(m)
            | wit::BrokerError::Unavailable(m)
            | wit::BrokerError::Permission(m) => m,
        }
    }
}

impl HostState {
    /// A broker call's answer, counted and audited (it always acts for the
    /// caller's project).
    fn broker_done<T>(
        &self,
        call: Call,
        caller: &Caller,
        name: Option<&str>,
        r: Result<T, wit::BrokerError>,
    ) -> R<T> {
        self.finish_call(&call, Some(&caller.project), None, name, &r);
        Ok(r)
    }

    /// A broker call's answer, its Unavailable details kept for the log.
    fn broker_told<T>(&self, r: Result<T, wit::BrokerError>) -> Result<T, wit::BrokerError> {
        r.map_err(|e| match e {
            wit::BrokerError::Unavailable(detail) => wit::BrokerError::Unavailable(
                self.conceal("the streaming service cannot do this now", &detail),
            ),
            other => other,
        })
    }
}

impl wit::Host for HostState {
    async fn backends(&mut self, _caller: Caller) -> wasmtime::Result<Vec<wit::Backend>> {
        let call = Call::start("brokers", "backends");
        if self.authorize("brokers", None, &[]).await.is_err() {
            call.finish("refused");
            return Ok(Vec::new());
        }
        call.finish("ok");
        Ok(self
            .services
            .brokers
            .backends()
            .into_iter()
            .map(|b| wit::Backend {
                engine: b.engine.into(),
                kind: b.kind,
                description: b.description,
                resource_options: b
                    .resource_options
                    .into_iter()
                    .map(|o| wit::ResourceOption {
                        key: o.key.to_string(),
                        description: o.description,
                        min: o.min,
                        max: o.max,
                        default: o.default,
                    })
                    .collect(),
                feature_flags: b
                    .feature_flags
                    .into_iter()
                    .map(|f| wit::FeatureFlag {
                        key: f.key.to_string(),
                        description: f.description,
                        default: f.default,
                    })
                    .collect(),
            })
            .collect())
    }

    async fn provision(&mut self, caller: Caller, spec: wit::ClusterSpec) -> R<wit::Credentials> {
        let call = Call::start("brokers", "provision");
        if let Err(why) = self
            .authorize("brokers", Some(acting(&caller)), STREAMING)
            .await
        {
            return self.broker_done(
                call,
                &caller,
                Some(spec.name.as_str()),
                Err(wit::BrokerError::Permission(why)),
            );
        }
        let settings: Vec<(String, u32)> = spec
            .resource_settings
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect();
        let flags: Vec<(String, bool)> = spec
            .feature_flags
            .into_iter()
            .map(|f| (f.key, f.enabled))
            .collect();
        let result = self
            .services
            .brokers
            .provision(
                &caller.project,
                spec.engine.into(),
                &spec.kind,
                &spec.name,
                &settings,
                &flags,
            )
            .await;
        let r = self.broker_told(result.map(|r| wit_credentials(&r)).map_err(Into::into));
        self.broker_done(call, &caller, Some(spec.name.as_str()), r)
    }

    async fn list(&mut self, caller: Caller, engine: wit::Engine) -> R<Vec<wit::ClusterSummary>> {
        let call = Call::start("brokers", "list");
        if let Err(why) = self
            .authorize("brokers", Some(acting(&caller)), STREAMING)
            .await
        {
            return self.broker_done(call, &caller, None, Err(wit::BrokerError::Permission(why)));
        }
        let records = self
            .services
            .brokers
            .list(&caller.project, engine.into())
            .await;
        self.broker_done(
            call,
            &caller,
            None,
            Ok(records.iter().map(wit_summary).collect()),
        )
    }

    async fn get(&mut self, caller: Caller, engine: wit::Engine, name: String) -> R<wit::Cluster> {
        let call = Call::start("brokers", "get");
        if let Err(why) = self
            .authorize("brokers", Some(acting(&caller)), STREAMING)
            .await
        {
            return self.broker_done(
                call,
                &caller,
                Some(name.as_str()),
                Err(wit::BrokerError::Permission(why)),
            );
        }
        let result = self
            .services
            .brokers
            .get(&caller.project, engine.into(), &name)
            .await;
        let r = result
            .map(|r| wit::Cluster {
                summary: wit_summary(&r),
                resource_settings: r
                    .resource_settings
                    .iter()
                    .map(|(k, v)| wit::ResourceSetting {
                        key: k.clone(),
                        value: *v,
                    })
                    .collect(),
                feature_flags: r
                    .feature_flags
                    .iter()
                    .map(|(k, v)| wit::FeatureFlagSetting {
                        key: k.clone(),
                        enabled: *v,
                    })
                    .collect(),
                credentials: wit_credentials(&r),
            })
            .map_err(Into::into);
        self.broker_done(call, &caller, Some(name.as_str()), r)
    }

    async fn delete(&mut self, caller: Caller, engine: wit::Engine, name: String) -> R<()> {
        let call = Call::start("brokers", "delete");
        if let Err(why) = self
            .authorize("brokers", Some(acting(&caller)), STREAMING)
            .await
        {
            return self.broker_done(
                call,
                &caller,
                Some(name.as_str()),
                Err(wit::BrokerError::Permission(why)),
            );
        }
        let r = self
            .services
            .brokers
            .delete(&caller.project, engine.into(), &name)
            .await
            .map_err(Into::into);
        let r = self.broker_told(r);
        self.broker_done(call, &caller, Some(name.as_str()), r)
    }

    async fn extend(
        &mut self,
        caller: Caller,
        engine: wit::Engine,
        name: String,
    ) -> R<wit::Lifetime> {
        let call = Call::start("brokers", "extend");
        if let Err(why) = self
            .authorize("brokers", Some(acting(&caller)), STREAMING)
            .await
        {
            return self.broker_done(
                call,
                &caller,
                Some(name.as_str()),
                Err(wit::BrokerError::Permission(why)),
            );
        }
        let result = self
            .services
            .brokers
            .extend(&caller.project, engine.into(), &name)
            .await;
        let r = self.broker_told(result.map(|r| wit_lifetime(&r)).map_err(Into::into));
        self.broker_done(call, &caller, Some(name.as_str()), r)
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    BrokersHost::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

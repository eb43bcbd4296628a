//! The `s3m:facility/brokers` capability: its WIT binding, the cluster
//! records (who owns what, credentials, lifetimes), the lifecycle that every
//! provider shares (health polling, expiry reaper, reconciliation at start),
//! and the trait that broker providers (host/src/providers/brokers/)
//! implement. Providers start, check and stop brokers; they never decide
//! names, owners or lifetimes.

pub mod records;
pub mod registry;

use crate::capabilities::key_value::Store;
use crate::metrics::Call;
use crate::state::HostState;
use async_trait::async_trait;
use chrono::Utc;
use records::Records;
use registry::{Backend, BrokerError, ClusterRecord, Engine, HealthStatus, RecordFile, SyncStatus};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
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
    /// Stops whatever this host runs that none of `records` claims (a
    /// cluster deleted through another host). Called at every check.
    async fn stop_unclaimed(&self, _records: &[ClusterRecord]) -> anyhow::Result<()> {
        Ok(())
    }
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

/// How often [`Brokers::readiness`] starts again a cluster whose
/// process exits before it was ever healthy.
const READINESS_RELAUNCHES: u32 = 2;

struct Inner {
    config: StreamingConfig,
    provider: Box<dyn BrokerProvider>,
    records: Records,
    /// This host's id (`<state>/host-id`): who runs and who monitors a cluster.
    host: String,
    /// Clusters whose readiness this host is polling.
    polling: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The broker provider the facility configuration asks for, and the records
/// of what it runs, in key-value (records.rs): every host on the same store
/// sees and manages every cluster.
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
    /// records in `store`; `dir` (`<state>/brokers`) may hold records of an
    /// older version (clusters.json), which move to key-value. Reconciles
    /// what it finds and starts the monitor.
    pub async fn start(
        config: StreamingConfig,
        provider: Box<dyn BrokerProvider>,
        store: Arc<dyn Store>,
        dir: &Path,
        host: String,
    ) -> anyhow::Result<Self> {
        let brokers = Self {
            inner: Arc::new(Inner {
                config,
                provider,
                records: Records::new(store),
                host,
                polling: Default::default(),
            }),
        };
        brokers.import_file(&dir.join("clusters.json")).await?;
        brokers.reconcile().await?;
        let monitor = brokers.clone();
        tokio::spawn(async move { monitor.monitor().await });
        Ok(brokers)
    }

    /// Records of an older version, kept in a file: moved into key-value
    /// once, the file renamed so that it is not read again.
    async fn import_file(&self, path: &Path) -> anyhow::Result<()> {
        if !path.exists() {
            return Ok(());
        }
        for mut record in RecordFile::new(path.to_path_buf()).load()? {
            if record.runner.is_none() {
                record.runner = Some(self.inner.host.clone());
            }
            if !self
                .inner
                .records
                .insert(&record)
                .await
                .map_err(anyhow_of)?
            {
                tracing::warn!(cluster = %record.name, project = %record.project,
                    "a cluster of the old records file has the name of one in key-value: not imported");
            }
        }
        let done = path.with_extension("json.imported");
        std::fs::rename(path, &done)?;
        tracing::info!(from = %path.display(), "moved the broker records into key-value");
        Ok(())
    }

    /// How long a lease lasts: several checks, so that a busy host keeps it.
    fn lease_ttl(&self) -> Duration {
        Duration::from_millis((self.inner.config.check_interval_ms.max(100) * 5).max(3000))
    }

    /// At start: adopts the clusters still running here, starts again those
    /// this host ran (or whose host is gone) that are not running, and has
    /// the provider stop what no record claims.
    async fn reconcile(&self) -> anyhow::Result<()> {
        let records = self.inner.records.all().await.map_err(anyhow_of)?;
        let adopted = self.inner.provider.reconcile(&records).await?;
        let now = Utc::now();
        let me = self.inner.host.clone();
        for record in records {
            if record.expired(now) {
                continue; // the monitor reaps it
            }
            // A cluster another live host monitors is left to it.
            if !self
                .inner
                .records
                .hold(&record.id, &me, self.lease_ttl())
                .await
                .map_err(anyhow_of)?
            {
                continue;
            }
            if adopted.contains(&record.id) {
                self.take_over(&record).await;
                self.spawn_readiness(record.id.clone());
                continue;
            }
            if record.sync_status == SyncStatus::Failed {
                continue;
            }
            self.start_again(&record, "a recorded cluster no longer runs")
                .await;
        }
        Ok(())
    }

    /// Records that this host now runs the cluster (its former host, if
    /// another, is gone and the processes are reachable from here).
    async fn take_over(&self, record: &ClusterRecord) {
        let me = &self.inner.host;
        if record.runner.as_deref() == Some(me.as_str()) {
            return;
        }
        tracing::warn!(cluster = %record.name, project = %record.project, engine = %record.engine,
            former = record.runner.as_deref().unwrap_or("unknown"),
            "adopted a running cluster whose host is gone");
        let _ = self
            .inner
            .records
            .update(&record.id, |r| {
                r.runner = Some(me.clone());
                true
            })
            .await;
    }

    /// Starts a recorded cluster on this host, then polls it until ready.
    async fn start_again(&self, record: &ClusterRecord, why: &str) {
        let me = self.inner.host.clone();
        if record.runner.as_deref().is_some_and(|h| h != me) {
            tracing::warn!(cluster = %record.name, project = %record.project, engine = %record.engine,
                former = record.runner.as_deref().unwrap_or_default(),
                "its host is gone and its processes are not reachable from here: starting it on this host \
                 (the former host stops its copy when it comes back)");
        } else {
            tracing::info!(cluster = %record.name, project = %record.project, engine = %record.engine, why,
                "starting it again");
        }
        match self.relaunch(record).await {
            Ok(()) => self.spawn_readiness(record.id.clone()),
            Err(e) => {
                tracing::error!(cluster = %record.name, error = %format!("{e:#}"), "cannot start it again");
                self.set_status(&record.id, SyncStatus::Failed, HealthStatus::Unhealthy)
                    .await;
            }
        }
    }

    /// Starts the processes of a recorded cluster again on this host (on its
    /// former ports where they are free, else on new ones) and records where
    /// it now runs, as provisioning.
    async fn relaunch(&self, record: &ClusterRecord) -> anyhow::Result<()> {
        let me = self.inner.host.clone();
        let mut again = record.clone();
        again.runner = Some(me.clone());
        self.inner.provider.start(&mut again).await?;
        let _ = self
            .inner
            .records
            .update(&record.id, |r| {
                r.runner = Some(me.clone());
                r.url = again.url.clone();
                r.mgmt_url = again.mgmt_url.clone();
                r.endpoint = again.endpoint.clone();
                r.sync_status = SyncStatus::Provisioning;
                r.health_status = HealthStatus::Provisioning;
                true
            })
            .await;
        Ok(())
    }

    pub fn backends(&self) -> Vec<Backend> {
        self.inner.provider.backends()
    }

    /// How many clusters are recorded, by engine and health (`s3m_broker_clusters`).
    pub async fn counts(&self) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
        let mut counts = std::collections::BTreeMap::new();
        for r in self.inner.records.all().await.unwrap_or_default().iter() {
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
            runner: Some(self.inner.host.clone()),
        };
        // Take the name, on every host, before the slow part.
        if !self.inner.records.insert(&record).await? {
            return Err(BrokerError::AlreadyExists(format!(
                "name: project {project} already has a {engine} cluster named {name:?}: \
                 pick another name, or delete that one first"
            )));
        }
        let _ = self
            .inner
            .records
            .hold(&record.id, &self.inner.host, self.lease_ttl())
            .await;
        let started = self.inner.provider.start(&mut record).await;
        if let Err(e) = started {
            let _ = self.inner.records.remove(&record).await;
            let _ = self.inner.provider.stop(&record).await;
            tracing::error!(cluster = %name, project = %project, engine = %engine, error = %format!("{e:#}"),
                "provisioning failed");
            return Err(BrokerError::Unavailable(format!(
                "the {engine} cluster could not be started: {e:#}"
            )));
        }
        let saved = self
            .inner
            .records
            .update(&record.id, |r| {
                r.url = record.url.clone();
                r.mgmt_url = record.mgmt_url.clone();
                r.endpoint = record.endpoint.clone();
                true
            })
            .await;
        match saved {
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = self.inner.provider.stop(&record).await;
                return Err(BrokerError::NotFound(format!(
                    "{engine} cluster {name:?} was deleted while it started"
                )));
            }
            Err(e) => {
                let _ = self.inner.records.remove(&record).await;
                let _ = self.inner.provider.stop(&record).await;
                return Err(e);
            }
        }
        tracing::info!(cluster = %name, project = %project, engine = %engine, id = %record.id, "provisioned");
        self.spawn_readiness(record.id.clone());
        Ok(record)
    }

    pub async fn list(
        &self,
        project: &str,
        engine: Engine,
    ) -> Result<Vec<ClusterRecord>, BrokerError> {
        let mut list: Vec<ClusterRecord> = self
            .inner
            .records
            .all()
            .await?
            .into_iter()
            .filter(|r| r.project == project && r.engine == engine)
            .collect();
        list.sort_by_key(|r| r.provisioned_at);
        Ok(list)
    }

    pub async fn get(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<ClusterRecord, BrokerError> {
        self.inner
            .records
            .by_name(project, engine, name)
            .await?
            .ok_or_else(|| not_found(engine, name))
    }

    pub async fn delete(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<(), BrokerError> {
        let record = self.get(project, engine, name).await?;
        if !self.inner.records.remove(&record).await? {
            return Err(not_found(engine, name));
        }
        // Stopped from here when its processes are reachable from here;
        // otherwise the host that runs them stops them at its next check,
        // finding them claimed by no record.
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
        let record = self.get(project, engine, name).await?;
        self.inner
            .records
            .update(&record.id, |r| {
                r.extended_at = Some(Utc::now());
                true
            })
            .await?
            .ok_or_else(|| not_found(engine, name))
    }

    /// Polls a new (or restarted) cluster until it is healthy or too late.
    fn spawn_readiness(&self, id: String) {
        {
            let mut polling = self.inner.polling.lock().unwrap_or_else(|e| e.into_inner());
            if !polling.insert(id.clone()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.readiness(&id).await;
            this.inner
                .polling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    async fn readiness(&self, id: &str) {
        let Ok(Some(record)) = self.inner.records.get(id).await else {
            return;
        };
        let deadline =
            tokio::time::Instant::now() + self.inner.provider.start_timeout(record.engine);
        let mut pause = Duration::from_millis(10);
        // A process that exits before it ever answered (its port taken
        // between our choice and its bind, say) is started again, a few
        // times, before the cluster is given up as failed.
        let mut relaunches = 0;
        loop {
            let record = match self.inner.records.get(id).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            let health = self.inner.provider.health(&record).await;
            let late = tokio::time::Instant::now() >= deadline;
            if health == Health::Gone && !late && relaunches < READINESS_RELAUNCHES {
                relaunches += 1;
                tracing::warn!(cluster = %record.name, project = %record.project, engine = %record.engine,
                    attempt = relaunches, "the cluster's process exited while it started: starting it again");
                match self.relaunch(&record).await {
                    Ok(()) => continue,
                    Err(e) => tracing::error!(cluster = %record.name, error = %format!("{e:#}"),
                        "cannot start it again"),
                }
            }
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
                self.set_status(id, sync, health_status).await;
                return;
            }
            // A refused probe is cheap, and a broker that has just opened
            // its port is healthy within a probe's time: poll often, so that
            // readiness shows within ~50 ms of it (it was up to 250 ms).
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn set_status(&self, id: &str, sync: SyncStatus, health: HealthStatus) {
        let _ = self
            .inner
            .records
            .update(id, |r| {
                let changed = r.sync_status != sync || r.health_status != health;
                r.sync_status = sync;
                r.health_status = health;
                changed
            })
            .await;
    }

    /// Forever, on every host: for each cluster whose lease this host holds
    /// (or takes, its holder being gone), reaps it when expired, checks its
    /// health, starts it again when its processes are gone. And stops what
    /// this host runs that no record claims any more (deleted elsewhere).
    async fn monitor(self) {
        let every = Duration::from_millis(self.inner.config.check_interval_ms.max(100));
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.check_all().await {
                tracing::warn!("broker check failed (retried at the next one): {e}");
            }
        }
    }

    async fn check_all(&self) -> Result<(), BrokerError> {
        let records = self.inner.records.all().await?;
        if let Err(e) = self.inner.provider.stop_unclaimed(&records).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot stop unclaimed brokers");
        }
        let now = Utc::now();
        let me = self.inner.host.clone();
        for record in records {
            if !self
                .inner
                .records
                .hold(&record.id, &me, self.lease_ttl())
                .await?
            {
                continue;
            }
            if record.expired(now) {
                if self.inner.records.remove(&record).await? {
                    self.stop(&record, "lifetime expired").await;
                }
                continue;
            }
            let ours = record.runner.as_deref() == Some(me.as_str());
            if record.sync_status == SyncStatus::Provisioning {
                if !ours {
                    // Its host died while it came up: poll it from here.
                    self.spawn_readiness(record.id.clone());
                }
                continue;
            }
            let health = self.inner.provider.health(&record).await;
            if health != Health::Gone && !ours {
                self.take_over(&record).await;
            }
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
                    self.start_again(&record, "the cluster is gone").await;
                }
                Health::Starting | Health::Unhealthy(_) => {
                    self.set_status(&record.id, SyncStatus::Synced, HealthStatus::Unhealthy)
                        .await
                }
            }
        }
        Ok(())
    }
}

fn anyhow_of(e: BrokerError) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
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
        let listed = self
            .services
            .brokers
            .list(&caller.project, engine.into())
            .await
            .map(|records| records.iter().map(wit_summary).collect())
            .map_err(wit::BrokerError::from);
        self.broker_done(call, &caller, None, listed)
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

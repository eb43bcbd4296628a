//! The wiring: builds the providers behind the capabilities from the
//! facility configuration (config/facility.toml), as runtime_config.rs does
//! for key-value from runtime-config.toml, and hands them to the
//! capabilities. It is the one module that knows both sides:
//!
//! ```text
//! cli ──> wiring ──> providers ──> capabilities (trait + WIT types)
//!            └──────────────────────> capabilities (routing, Host impls)
//! ```
//!
//! Capabilities never see a provider's type, and providers never see each
//! other's; each provider deserialises its own typed table, so the wiring
//! only picks which provider a resource (or `[streaming]`) names.

use crate::capabilities::brokers::{BrokerProvider, Brokers, StreamingConfig};
use crate::capabilities::scheduler::{NotStarted, SchedulerProvider, Schedulers};
use crate::capabilities::software::{Software, SoftwareProvider};
use crate::facility::FacilityConfig;
use crate::providers::brokers::{kubernetes, local as local_brokers};
use crate::providers::scheduler::{local::LocalScheduler, slurm::SlurmScheduler};
use crate::providers::software::{config::ConfiguredModules, lmod::Lmod};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Every compute resource's scheduler: `[resources.compute] scheduler`
/// names the provider (`local` unless set), which reads the rest of the
/// table. A bad table stops start-up with what to fix; a local scheduler
/// that cannot isolate jobs does not start, and its resource answers 503
/// while the rest of the facility serves.
pub async fn schedulers(facility: &FacilityConfig, state_dir: &Path) -> anyhow::Result<Schedulers> {
    let mut by_resource: HashMap<String, Arc<dyn SchedulerProvider>> = HashMap::new();
    for resource in &facility.resources {
        let Some(compute) = &resource.compute else {
            continue;
        };
        let kind = match compute.get("scheduler") {
            None => "local",
            Some(toml::Value::String(s)) => s.as_str(),
            Some(other) => anyhow::bail!(
                "resources `{}`: compute.scheduler must be \"slurm\" or \"local\", not {other}",
                resource.name
            ),
        };
        // The provider's own keys: `scheduler` was the wiring's.
        let mut table = compute.clone();
        table.remove("scheduler");
        let provider: Arc<dyn SchedulerProvider> = match kind {
            "slurm" => Arc::new(SlurmScheduler::from_config(&resource.name, &table)?),
            "local" => match LocalScheduler::start(&resource.name, &table, state_dir).await {
                Ok(local) => Arc::new(local),
                Err(e) => {
                    tracing::error!(
                        resource = %resource.name,
                        "the local scheduler did not start: {e:#}. Compute on this resource answers 503 until it is fixed."
                    );
                    Arc::new(NotStarted::new(&resource.name))
                }
            },
            other => anyhow::bail!(
                "resource `{}`: unknown compute.scheduler \"{other}\"; use \"slurm\" or \"local\"",
                resource.name
            ),
        };
        tracing::info!(resource = %resource.name, scheduler = kind, "compute resource ready");
        by_resource.insert(resource.name.clone(), provider);
    }
    Ok(Schedulers::new(by_resource))
}

/// The keys `[streaming]` may hold: the lifecycle's ([`StreamingConfig`]) and
/// the providers'.
const STREAMING_KEYS: &[&str] = &[
    "provider",
    "lifetime_seconds",
    "check_interval_ms",
    "advertise_address",
    "redis_server",
    "rabbitmq_server",
    "rabbitmq_management",
    "rabbitmq_max_nodes",
    "tls",
    "redis_start_timeout_seconds",
    "rabbitmq_start_timeout_seconds",
    "kubernetes",
];

/// The broker provider `[streaming] provider` names (`local` unless set),
/// configured from `[streaming]`, running under `<state>/brokers`: its
/// clusters reconciled and its reaper started.
pub async fn brokers(
    facility: &FacilityConfig,
    state_dir: &Path,
    store: std::sync::Arc<dyn crate::capabilities::key_value::Store>,
) -> anyhow::Result<Brokers> {
    if let Some(key) = facility
        .streaming
        .keys()
        .find(|k| !STREAMING_KEYS.contains(&k.as_str()))
    {
        anyhow::bail!(
            "facility.toml [streaming] has an unknown key {key:?}; the keys are {STREAMING_KEYS:?}"
        );
    }
    let table = toml::Value::Table(facility.streaming.clone());
    let config: StreamingConfig = table
        .clone()
        .try_into()
        .map_err(|e| anyhow::anyhow!("facility.toml [streaming] is not valid: {e}"))?;
    let dir = state_dir.join("brokers");
    if config.provider == "local" && table.get("tls").and_then(|v| v.as_bool()) != Some(false) {
        crate::providers::brokers::tls::share_ca(store.as_ref(), &dir.join("ca")).await?;
    }
    let provider = broker_provider(&config.provider, &table, &dir)?;
    Brokers::start(config, provider, store, &dir, host_id(state_dir)?).await
}

/// This host's id, made once per state directory (`<state>/host-id`): a
/// restarted host is the same host, and finds the clusters it ran.
fn host_id(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("host-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    std::fs::write(&path, &id).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(id)
}

/// The provider `[streaming] provider` names, configured from `[streaming]`.
/// `dir` is `<state>/brokers`.
fn broker_provider(
    name: &str,
    streaming: &toml::Value,
    dir: &Path,
) -> anyhow::Result<Box<dyn BrokerProvider>> {
    match name {
        "local" => {
            let config: local_brokers::LocalConfig = streaming
                .clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("facility.toml [streaming] is not valid for the local provider: {e}"))?;
            Ok(Box::new(local_brokers::LocalBrokers::new(config, dir.join("clusters"))?))
        }
        "kubernetes" => {
            let config: kubernetes::KubernetesConfig = streaming
                .get("kubernetes")
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(Default::default()))
                .try_into()
                .map_err(|e| anyhow::anyhow!("facility.toml [streaming.kubernetes] is not valid: {e}"))?;
            Ok(Box::new(kubernetes::KubernetesBrokers::new(config, dir.join("kubernetes"))?))
        }
        other => anyhow::bail!(
            "facility.toml [streaming] provider = {other:?} is unknown: use \"local\" or \"kubernetes\""
        ),
    }
}

/// Each resource's software module sources, from `[resources.environment]`:
/// Lmod's spider when it names a `modulepath`, then the configured
/// `modules`. A malformed table names the resource and the key.
pub fn software_from(facility: &FacilityConfig) -> anyhow::Result<Software> {
    let mut resources = HashMap::new();
    for resource in &facility.resources {
        let empty = toml::Table::new();
        let table = resource.environment.as_ref().unwrap_or(&empty);
        let configured = ConfiguredModules::from_table(table)
            .map_err(|e| anyhow::anyhow!("facility.toml, resource {:?}: {e}", resource.name))?;
        let lmod = Lmod::from_table(table)
            .map_err(|e| anyhow::anyhow!("facility.toml, resource {:?}: {e}", resource.name))?;
        let mut providers: Vec<Box<dyn SoftwareProvider>> = Vec::new();
        if let Some(lmod) = lmod {
            providers.push(Box::new(lmod));
        }
        providers.push(Box::new(configured));
        resources.insert(resource.name.clone(), providers);
    }
    Ok(Software::new(resources))
}

/// Builds the software providers and installs them in the capability. A
/// malformed `[resources.environment]` does not stop start-up: it is logged,
/// and the capability answers Unavailable with it.
pub fn software(facility: &FacilityConfig) {
    let built = software_from(facility).map_err(|e| format!("{e:#}"));
    if let Err(e) = &built {
        tracing::error!("software modules: {e}");
    }
    crate::capabilities::software::install(built);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::software::SoftwareError;

    fn facility(text: &str) -> FacilityConfig {
        toml::from_str(text).unwrap()
    }

    fn software(text: &str) -> anyhow::Result<Software> {
        software_from(&facility(text))
    }

    #[tokio::test]
    async fn a_failing_lmod_leaves_the_configured_modules_and_says_why() {
        let s = software(
            r#"
            [[resources]]
            name = "basalt"
            [resources.environment]
            modulepath = ["/nonexistent/modulefiles"]
            modules = [{ name = "cmake", versions = ["3.27.9"] }]
            "#,
        )
        .unwrap();
        let (modules, warnings) = s.modules("basalt").await.unwrap();
        assert_eq!(
            modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["cmake"]
        );
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("/nonexistent/modulefiles"),
            "{warnings:?}"
        );
    }

    #[tokio::test]
    async fn an_unknown_resource_is_not_found_and_one_without_a_table_has_none() {
        let s = software("[[resources]]\nname = \"shale\"\n").unwrap();
        assert!(matches!(
            s.modules("nosuch").await,
            Err(SoftwareError::NotFound(_))
        ));
        assert_eq!(s.modules("shale").await.unwrap(), (vec![], vec![]));
    }

    #[test]
    fn a_broken_table_names_the_resource() {
        let e =
            software("[[resources]]\nname = \"basalt\"\n[resources.environment]\nmodulepath = 3\n")
                .err()
                .unwrap();
        assert!(format!("{e}").contains("basalt"), "{e}");
    }

    async fn scheduler_error(compute: &str) -> String {
        let dir = std::env::temp_dir();
        let f = facility(&format!(
            "[[resources]]\nname = \"basalt\"\n[resources.compute]\n{compute}\n"
        ));
        match schedulers(&f, &dir).await {
            Ok(_) => panic!("accepted: {compute}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn a_bad_compute_table_names_the_resource_and_the_key() {
        let e = scheduler_error("scheduler = \"pbs\"").await;
        assert!(e.contains("basalt") && e.contains("\"pbs\""), "{e}");
        let e = scheduler_error("scheduler = \"slurm\"\njwt_key = \"/k\"").await;
        assert!(
            e.contains("resource `basalt`") && e.contains("compute.slurmrestd"),
            "{e}"
        );
        let e = scheduler_error("scheduler = \"slurm\"\nslurmrestd = 6820").await;
        assert!(
            e.contains("resource `basalt`: compute.slurmrestd: ") && e.contains("string"),
            "{e}"
        );
        let e = scheduler_error("scheduler = \"slurm\"\nslurmrestd = \"http://h:1\"\njwt_key = \"/k\"\ntimeout_secs = -1").await;
        assert!(
            e.contains("resource `basalt`: compute.timeout_secs: ") && e.contains(">= 0"),
            "{e}"
        );
        let e =
            scheduler_error("scheduler = \"slurm\"\nslurmrestd = \"http://h:1\"\njwtkey = \"/k\"")
                .await;
        assert!(
            e.contains("resource `basalt`: compute: unknown field `jwtkey`"),
            "{e}"
        );
    }
}

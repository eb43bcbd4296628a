//! Broker backends: local redis-server / rabbitmq-server processes
//! (`local`, the default), and Kubernetes objects (`kubernetes`). Each
//! implements `capabilities::brokers::BrokerProvider`; `probe` holds the
//! protocol-level health checks they share.

pub mod kubernetes;
pub mod local;
pub mod probe;

use crate::capabilities::brokers::BrokerProvider;
use std::path::Path;

/// The provider `[streaming] provider` names, configured from `[streaming]`.
/// `dir` is `<state>/brokers`.
pub fn from_config(
    name: &str,
    streaming: &toml::Value,
    dir: &Path,
) -> anyhow::Result<Box<dyn BrokerProvider>> {
    match name {
        "local" => {
            let config: local::LocalConfig = streaming
                .clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("facility.toml [streaming] is not valid for the local provider: {e}"))?;
            Ok(Box::new(local::LocalBrokers::new(config, dir.join("clusters"))))
        }
        "kubernetes" => {
            let config: kubernetes::KubernetesConfig = streaming
                .get("kubernetes")
                .cloned()
                .unwrap_or_else(|| toml::Value::Table(Default::default()))
                .try_into()
                .map_err(|e| anyhow::anyhow!("facility.toml [streaming.kubernetes] is not valid: {e}"))?;
            Ok(Box::new(kubernetes::KubernetesBrokers::new(config, dir.join("kubernetes"))))
        }
        other => anyhow::bail!(
            "facility.toml [streaming] provider = {other:?} is unknown: use \"local\" or \"kubernetes\""
        ),
    }
}

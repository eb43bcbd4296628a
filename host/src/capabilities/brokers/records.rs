//! Cluster records in key-value, shared by every host on the same store:
//!
//! - `brokers/cluster/<id>`: the record (JSON);
//! - `brokers/name/<project>/<engine>/<name>`: its id, written only if
//!   absent, so that a name is taken once across all hosts;
//! - `brokers/lease/<id>`: which host monitors the cluster (health checks,
//!   restarts, the expiry reaper) and until when. A host renews its leases
//!   every check; a lease that runs out passes to the next host that asks.
//!
//! Every change to a record is a compare-and-swap on its last value, so two
//! hosts changing one record at once lose neither change.

use super::registry::{BrokerError, ClusterRecord, Engine};
use crate::capabilities::key_value::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const CLUSTER: &str = "brokers/cluster/";
const NAME: &str = "brokers/name/";
const LEASE: &str = "brokers/lease/";

#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    host: String,
    until: DateTime<Utc>,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    tracing::error!(error = %e, "key-value failed on the broker records");
    BrokerError::Unavailable(format!(
        "the cluster records are unavailable (key-value: {e}); retry shortly"
    ))
}

fn name_key(project: &str, engine: Engine, name: &str) -> String {
    format!("{NAME}{project}/{}/{name}", engine.as_str())
}

impl Records {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn parse(id: &str, bytes: &[u8]) -> Option<ClusterRecord> {
        match serde_json::from_slice(bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(id, error = %e, "an unreadable broker record is skipped");
                None
            }
        }
    }

    /// Every record, in no particular order.
    pub async fn all(&self) -> Result<Vec<ClusterRecord>, BrokerError> {
        let keys = self
            .store
            .keys_with_prefix(CLUSTER)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for key in &keys {
            if let Some(bytes) = self.store.get(key).await.map_err(unavailable)? {
                out.extend(Self::parse(&key[CLUSTER.len()..], &bytes));
            }
        }
        Ok(out)
    }

    pub async fn get(&self, id: &str) -> Result<Option<ClusterRecord>, BrokerError> {
        Ok(self
            .store
            .get(&format!("{CLUSTER}{id}"))
            .await
            .map_err(unavailable)?
            .and_then(|b| Self::parse(id, &b)))
    }

    /// The record a project's cluster name points to.
    pub async fn by_name(
        &self,
        project: &str,
        engine: Engine,
        name: &str,
    ) -> Result<Option<ClusterRecord>, BrokerError> {
        let Some(id) = self
            .store
            .get(&name_key(project, engine, name))
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        Ok(self
            .get(&id)
            .await?
            .filter(|r| r.project == project && r.engine == engine && r.name == name))
    }

    /// Writes a new record, taking its name; false when the name is taken.
    /// A name left pointing at no record (a host died between the two
    /// writes) is taken over.
    pub async fn insert(&self, record: &ClusterRecord) -> Result<bool, BrokerError> {
        let key = name_key(&record.project, record.engine, &record.name);
        let id = record.id.as_bytes();
        let mut taken = !self
            .store
            .compare_and_swap(&key, None, id)
            .await
            .map_err(unavailable)?;
        if taken {
            if let Some(old) = self.store.get(&key).await.map_err(unavailable)? {
                let old_id = String::from_utf8_lossy(&old).into_owned();
                if self.get(&old_id).await?.is_none() {
                    taken = !self
                        .store
                        .compare_and_swap(&key, Some(&old), id)
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
        if taken {
            return Ok(false);
        }
        self.put(record).await?;
        Ok(true)
    }

    /// Writes `record` over whatever its key holds.
    pub async fn put(&self, record: &ClusterRecord) -> Result<(), BrokerError> {
        let bytes = serde_json::to_vec(record).map_err(unavailable)?;
        self.store
            .set(&format!("{CLUSTER}{}", record.id), &bytes)
            .await
            .map_err(unavailable)
    }

    /// Applies `change` to the stored record and writes it back, again from
    /// the newer value if another host wrote in between. `change` returns
    /// false to write nothing. None when the record is gone.
    pub async fn update(
        &self,
        id: &str,
        mut change: impl FnMut(&mut ClusterRecord) -> bool,
    ) -> Result<Option<ClusterRecord>, BrokerError> {
        let key = format!("{CLUSTER}{id}");
        for _ in 0..64 {
            let Some(old) = self.store.get(&key).await.map_err(unavailable)? else {
                return Ok(None);
            };
            let Some(mut record) = Self::parse(id, &old) else {
                return Ok(None);
            };
            if !change(&mut record) {
                return Ok(Some(record));
            }
            let new = serde_json::to_vec(&record).map_err(unavailable)?;
            if self
                .store
                .compare_and_swap(&key, Some(&old), &new)
                .await
                .map_err(unavailable)?
            {
                return Ok(Some(record));
            }
        }
        Err(BrokerError::Unavailable(format!(
            "cluster record {id} changes too often to update; retry"
        )))
    }

    /// Removes a record, its name (if still its) and its lease. Returns
    /// whether this call removed the record.
    pub async fn remove(&self, record: &ClusterRecord) -> Result<bool, BrokerError> {
        let key = format!("{CLUSTER}{}", record.id);
        let existed = self.store.exists(&key).await.map_err(unavailable)?;
        self.store.delete(&key).await.map_err(unavailable)?;
        // The name is freed by emptying it, only if it is still this
        // record's: a plain delete could remove a name another host has
        // just taken. `insert` takes an empty name over.
        let name = name_key(&record.project, record.engine, &record.name);
        self.store
            .compare_and_swap(&name, Some(record.id.as_bytes()), b"")
            .await
            .map_err(unavailable)?;
        self.store
            .delete(&format!("{LEASE}{}", record.id))
            .await
            .map_err(unavailable)?;
        Ok(existed)
    }

    /// Takes or renews the lease of cluster `id` for `host` until `ttl` from
    /// now. False while another host holds it.
    pub async fn hold(&self, id: &str, host: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let key = format!("{LEASE}{id}");
        let now = Utc::now();
        let new = serde_json::to_vec(&Lease {
            host: host.to_string(),
            until: now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(5)),
        })
        .map_err(unavailable)?;
        let old = self.store.get(&key).await.map_err(unavailable)?;
        if let Some(bytes) = &old {
            if let Ok(lease) = serde_json::from_slice::<Lease>(bytes) {
                if lease.host != host && lease.until > now {
                    return Ok(false);
                }
            }
        }
        self.store
            .compare_and_swap(&key, old.as_deref(), &new)
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::brokers::registry::{HealthStatus, SyncStatus};
    use crate::providers::key_value::sqlite::{SqliteDb, SqliteStore};

    fn record(id: &str, name: &str) -> ClusterRecord {
        ClusterRecord {
            id: id.into(),
            project: "STF040".into(),
            engine: Engine::Redis,
            kind: "general".into(),
            name: name.into(),
            resource_settings: Default::default(),
            feature_flags: Default::default(),
            username: "u".into(),
            password: "p".into(),
            url: String::new(),
            mgmt_url: None,
            endpoint: serde_json::Value::Null,
            provisioned_at: Utc::now(),
            extended_at: None,
            lifetime_seconds: 60,
            sync_status: SyncStatus::Provisioning,
            health_status: HealthStatus::Provisioning,
            runner: None,
        }
    }

    #[tokio::test]
    async fn a_name_is_taken_once_freed_by_remove_and_leases_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::new(
            SqliteDb::open(&dir.path().join("kv.db")).unwrap(),
            "default",
        ));
        let records = Records::new(store);
        assert!(records.insert(&record("a", "n")).await.unwrap());
        assert!(!records.insert(&record("b", "n")).await.unwrap());
        let got = records.by_name("STF040", Engine::Redis, "n").await.unwrap();
        assert_eq!(got.map(|r| r.id), Some("a".to_string()));
        assert!(records
            .by_name("STF040", Engine::Rabbitmq, "n")
            .await
            .unwrap()
            .is_none());

        let updated = records
            .update("a", |r| {
                r.health_status = HealthStatus::Healthy;
                true
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.health_status, HealthStatus::Healthy);
        assert!(records.update("zz", |_| true).await.unwrap().is_none());

        let ttl = Duration::from_secs(60);
        assert!(records.hold("a", "host-1", ttl).await.unwrap());
        assert!(records.hold("a", "host-1", ttl).await.unwrap(), "renewed");
        assert!(!records.hold("a", "host-2", ttl).await.unwrap());
        assert!(records.hold("a", "host-2", Duration::ZERO).await.is_ok());

        assert!(records.remove(&record("a", "n")).await.unwrap());
        assert!(!records.remove(&record("a", "n")).await.unwrap());
        assert!(records.all().await.unwrap().is_empty());
        // The lease went with it, and the name is free again.
        assert!(records.hold("a", "host-2", ttl).await.unwrap());
        assert!(records.insert(&record("c", "n")).await.unwrap());
    }
}

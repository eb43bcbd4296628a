//! runtime-config.toml, in Spin's format: which backend serves each
//! key-value store label. Without one, "default" is the embedded SQLite file
//! in the state directory.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! ```

use crate::capabilities::key_value::{KeyValueStores, Store};
use crate::providers::key_value::{
    redis::RedisStore,
    sqlite::{SqliteDb, SqliteStore},
};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub key_value_store: BTreeMap<String, KeyValueStoreConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeyValueStoreConfig {
    /// Spin's embedded store; `path` is relative to the runtime config file.
    Spin {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
    },
}

impl RuntimeConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<(Self, Option<PathBuf>)> {
        let Some(path) = path else {
            return Ok((Self::default(), None));
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("runtime config {} is not valid", path.display()))?;
        Ok((config, path.parent().map(Path::to_path_buf)))
    }

    /// Opens every configured store, plus "default" on the state directory's
    /// SQLite file when the config does not name it.
    pub async fn key_value_stores(
        &self,
        base: Option<&Path>,
        state_dir: &Path,
    ) -> anyhow::Result<KeyValueStores> {
        let default_db = state_dir.join("key-value.db");
        let mut dbs: HashMap<PathBuf, Arc<SqliteDb>> = HashMap::new();
        let mut stores: HashMap<String, Arc<dyn Store>> = HashMap::new();
        let mut configs: Vec<(&str, Option<&KeyValueStoreConfig>)> = self
            .key_value_store
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v)))
            .collect();
        if !self.key_value_store.contains_key("default") {
            configs.push(("default", None));
        }
        // Workflows (s3m_workflow::store::LABEL) live where "default" does
        // unless the runtime config says otherwise: two hosts that share
        // their default store then share workflows too.
        if !self
            .key_value_store
            .contains_key(s3m_workflow::store::LABEL)
        {
            configs.push((
                s3m_workflow::store::LABEL,
                self.key_value_store.get("default"),
            ));
        }
        for (label, config) in configs {
            let store: Arc<dyn Store> = match config {
                None | Some(KeyValueStoreConfig::Spin { path: None }) => {
                    let db = open_db(&mut dbs, &default_db)?;
                    Arc::new(SqliteStore::new(db, label))
                }
                Some(KeyValueStoreConfig::Spin { path: Some(p) }) => {
                    let p = base.map(|b| b.join(p)).unwrap_or_else(|| p.clone());
                    let db = open_db(&mut dbs, &p)?;
                    Arc::new(SqliteStore::new(db, label))
                }
                Some(KeyValueStoreConfig::Redis { url }) => {
                    if url.is_empty() {
                        bail!("key_value_store.{label}: redis url is empty");
                    }
                    Arc::new(
                        RedisStore::connect(url)
                            .await
                            .with_context(|| format!("key_value_store.{label}"))?,
                    )
                }
            };
            stores.insert(label.to_string(), store);
        }
        Ok(KeyValueStores::new(stores))
    }
}

fn open_db(
    dbs: &mut HashMap<PathBuf, Arc<SqliteDb>>,
    path: &Path,
) -> anyhow::Result<Arc<SqliteDb>> {
    if let Some(db) = dbs.get(path) {
        return Ok(db.clone());
    }
    let db = SqliteDb::open(path)?;
    dbs.insert(path.to_path_buf(), db.clone());
    Ok(db)
}

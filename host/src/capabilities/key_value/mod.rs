//! Key-value: `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue@0.2.0-draft2`
//! (store, atomics, batch) over one provider trait. Which provider backs a
//! store label is the runtime configuration's business (runtime_config.rs):
//! the embedded SQLite file by default, Redis when several hosts share state.

mod spin_binding;
mod wasi_binding;

use crate::state::HostState;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;
use wasmtime::component::Linker;

/// Why a key-value operation failed, in the terms both WIT interfaces share.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyValueError {
    #[error("no such store")]
    NoSuchStore,
    #[error("access denied: the component's manifest does not list this store")]
    AccessDenied,
    #[error("{0}")]
    Other(String),
}

pub type KvResult<T> = Result<T, KeyValueError>;

/// One store (a label of the manifest), as a backend provides it.
#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()>;
    async fn delete(&self, key: &str) -> KvResult<()>;
    async fn exists(&self, key: &str) -> KvResult<bool>;
    async fn keys(&self) -> KvResult<Vec<String>>;
    /// The keys that start with `prefix`, asked of the backend (an index
    /// range, a SCAN MATCH) rather than listing every key of the store:
    /// the host's own readers (broker records, the sweeper) use it.
    async fn keys_with_prefix(&self, prefix: &str) -> KvResult<Vec<String>>;
    /// Adds `delta` to the decimal number the key holds (0 when missing) and
    /// returns the result, atomically across every host sharing the store.
    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64>;
    /// Writes `value` only if the key still holds `expected` (None: absent).
    /// Returns whether it wrote.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> KvResult<bool>;
}

/// Every store the runtime configuration defines, by label.
#[derive(Clone, Default)]
pub struct KeyValueStores {
    stores: HashMap<String, Entry>,
}

/// One label's store, and what a guest's write to it through this host
/// signals once it has returned: the workflow engine waits on its store's
/// instead of reading the store every few milliseconds.
#[derive(Clone)]
struct Entry {
    store: Arc<dyn Store>,
    written: Arc<Notify>,
}

impl KeyValueStores {
    pub fn new(stores: HashMap<String, Arc<dyn Store>>) -> Self {
        let stores = stores
            .into_iter()
            .map(|(label, store)| {
                let written = Arc::new(Notify::new());
                (label, Entry { store, written })
            })
            .collect();
        Self { stores }
    }

    fn entry(&self, label: &str) -> KvResult<&Entry> {
        self.stores.get(label).ok_or(KeyValueError::NoSuchStore)
    }

    /// Signalled after each write that a guest of this host makes to the
    /// store behind `label` (set, delete, increment, swap, the batch
    /// calls), successful or not. Writes are not told apart, and signals
    /// arriving while nobody waits become one: a waiter then reads the
    /// store to see what changed. Other processes' writes to a shared
    /// store, and the host's own, are not signalled.
    pub fn written(&self, label: &str) -> KvResult<Arc<Notify>> {
        Ok(self.entry(label)?.written.clone())
    }

    /// The store behind a label, for host-side users (the token CLI).
    pub fn get(&self, label: &str) -> KvResult<Arc<dyn Store>> {
        Ok(self.entry(label)?.store.clone())
    }
}

impl HostState {
    /// Opens a store for the guest: it must be granted by the manifest and
    /// backed by the runtime configuration.
    pub(crate) fn open_store(&self, label: &str) -> KvResult<OpenStore> {
        if !self.grants.key_value_stores.contains(label) {
            return Err(KeyValueError::AccessDenied);
        }
        let entry = self.services.key_value.entry(label)?;
        Ok(OpenStore {
            store: entry.store.clone(),
            written: entry.written.clone(),
        })
    }
}

/// A store handle held in the guest's resource table.
pub struct OpenStore {
    pub(crate) store: Arc<dyn Store>,
    written: Arc<Notify>,
}

impl OpenStore {
    /// The store, for a write: the returned guard signals
    /// [`KeyValueStores::written`] when dropped, so keep it until the
    /// write has returned (a waiter woken earlier could read the store
    /// before the write lands, and then wait past it).
    fn for_write(&self) -> (Arc<dyn Store>, Wrote) {
        (self.store.clone(), Wrote(self.written.clone()))
    }
}

/// Signals a store's [`KeyValueStores::written`] when dropped.
struct Wrote(Arc<Notify>);

impl Drop for Wrote {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// A compare-and-swap handle: the key and the value it held when read.
pub struct CasHandle {
    store: Arc<dyn Store>,
    written: Arc<Notify>,
    key: String,
    current: Option<Vec<u8>>,
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    spin_binding::add_to_linker(linker)?;
    wasi_binding::add_to_linker(linker)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::key_value::sqlite::{SqliteDb, SqliteStore};
    use std::time::Duration;

    /// Whether `n` holds a signal now, without waiting for one.
    async fn signalled(n: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(20), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_guest_write_signals_its_store_once_it_has_returned() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("kv.db")).unwrap();
        let stores = KeyValueStores::new(HashMap::from([
            (
                "a".to_string(),
                Arc::new(SqliteStore::new(db.clone(), "a")) as Arc<dyn Store>,
            ),
            (
                "b".to_string(),
                Arc::new(SqliteStore::new(db, "b")) as Arc<dyn Store>,
            ),
        ]));
        let (a, b) = (stores.written("a").unwrap(), stores.written("b").unwrap());
        assert!(matches!(
            stores.written("c"),
            Err(KeyValueError::NoSuchStore)
        ));
        let open = OpenStore {
            store: stores.get("a").unwrap(),
            written: a.clone(),
        };
        assert!(!signalled(&a).await, "nothing written yet");

        // A read signals nothing; a write signals only when its guard goes,
        // after the value is in the store.
        open.store.get("k").await.unwrap();
        assert!(!signalled(&a).await, "a read is not a write");
        let (store, wrote) = open.for_write();
        store.set("k", b"v").await.unwrap();
        assert!(!signalled(&a).await, "signalled before the write returned");
        drop(wrote);
        assert!(signalled(&a).await, "the write was not signalled");
        assert!(!signalled(&b).await, "another store was signalled");

        // Writes nobody waited for become one signal: the waiter reads the
        // store once and sees all of them.
        for v in [b"1", b"2", b"3"] {
            let (store, _wrote) = open.for_write();
            store.set("k", v).await.unwrap();
        }
        assert!(signalled(&a).await);
        assert!(
            !signalled(&a).await,
            "three writes left more than one signal"
        );
        assert_eq!(
            open.store.get("k").await.unwrap().as_deref(),
            Some(&b"3"[..])
        );
    }
}

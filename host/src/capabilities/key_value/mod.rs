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
    stores: HashMap<String, Arc<dyn Store>>,
}

impl KeyValueStores {
    pub fn new(stores: HashMap<String, Arc<dyn Store>>) -> Self {
        Self { stores }
    }

    /// The store behind a label, for host-side users (the token CLI).
    pub fn get(&self, label: &str) -> KvResult<Arc<dyn Store>> {
        self.stores
            .get(label)
            .cloned()
            .ok_or(KeyValueError::NoSuchStore)
    }
}

impl HostState {
    /// Opens a store for the guest: it must be granted by the manifest and
    /// backed by the runtime configuration.
    pub(crate) fn open_store(&self, label: &str) -> KvResult<OpenStore> {
        if !self.grants.key_value_stores.contains(label) {
            return Err(KeyValueError::AccessDenied);
        }
        Ok(OpenStore {
            store: self.services.key_value.get(label)?,
        })
    }
}

/// A store handle held in the guest's resource table.
pub struct OpenStore {
    pub(crate) store: Arc<dyn Store>,
}

/// A compare-and-swap handle: the key and the value it held when read.
pub struct CasHandle {
    store: Arc<dyn Store>,
    key: String,
    current: Option<Vec<u8>>,
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    spin_binding::add_to_linker(linker)?;
    wasi_binding::add_to_linker(linker)?;
    Ok(())
}

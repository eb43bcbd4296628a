//! `fermyon:spin/key-value@2.0.0` for the guests.

use super::{KeyValueError, OpenStore};
use crate::state::HostState;
use wasmtime::component::{HasSelf, Linker, Resource};

wasmtime::component::bindgen!({
    world: "s3m:facility/spin-key-value-host",
    path: "../wit",
    imports: { default: async | trappable },
    with: { "fermyon:spin/key-value.store": crate::capabilities::key_value::OpenStore },
});

use fermyon::spin::key_value::{self as kv, Error};

impl From<KeyValueError> for Error {
    fn from(e: KeyValueError) -> Self {
        match e {
            KeyValueError::NoSuchStore => Error::NoSuchStore,
            KeyValueError::AccessDenied => Error::AccessDenied,
            KeyValueError::Other(m) => Error::Other(m),
        }
    }
}

type R<T> = wasmtime::Result<Result<T, Error>>;

impl kv::Host for HostState {}

impl kv::HostStore for HostState {
    async fn open(&mut self, label: String) -> R<Resource<OpenStore>> {
        match self.open_store(&label) {
            Ok(store) => Ok(Ok(self.table.push(store)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn get(&mut self, s: Resource<OpenStore>, key: String) -> R<Option<Vec<u8>>> {
        let store = self.table.get(&s)?.store.clone();
        Ok(store.get(&key).await.map_err(Into::into))
    }

    async fn set(&mut self, s: Resource<OpenStore>, key: String, value: Vec<u8>) -> R<()> {
        let (store, _wrote) = self.table.get(&s)?.for_write();
        Ok(store.set(&key, &value).await.map_err(Into::into))
    }

    async fn delete(&mut self, s: Resource<OpenStore>, key: String) -> R<()> {
        let (store, _wrote) = self.table.get(&s)?.for_write();
        Ok(store.delete(&key).await.map_err(Into::into))
    }

    async fn exists(&mut self, s: Resource<OpenStore>, key: String) -> R<bool> {
        let store = self.table.get(&s)?.store.clone();
        Ok(store.exists(&key).await.map_err(Into::into))
    }

    async fn get_keys(&mut self, s: Resource<OpenStore>) -> R<Vec<String>> {
        let store = self.table.get(&s)?.store.clone();
        Ok(store.keys().await.map_err(Into::into))
    }

    async fn drop(&mut self, s: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    Ok(kv::add_to_linker::<HostState, HasSelf<HostState>>(
        linker,
        |s| s,
    )?)
}

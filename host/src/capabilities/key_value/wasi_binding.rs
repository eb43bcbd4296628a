//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) for the guests.

use super::{CasHandle, KeyValueError, OpenStore};
use crate::state::HostState;
use wasmtime::component::{HasSelf, Linker, Resource};

wasmtime::component::bindgen!({
    world: "s3m:facility/wasi-keyvalue-host",
    path: "../wit",
    imports: { default: async | trappable },
    with: {
        "wasi:keyvalue/store.bucket": crate::capabilities::key_value::OpenStore,
        "wasi:keyvalue/atomics.cas": crate::capabilities::key_value::CasHandle,
    },
});

use wasi::keyvalue::{atomics, batch, store};

impl From<KeyValueError> for store::Error {
    fn from(e: KeyValueError) -> Self {
        match e {
            KeyValueError::NoSuchStore => store::Error::NoSuchStore,
            KeyValueError::AccessDenied => store::Error::AccessDenied,
            KeyValueError::Other(m) => store::Error::Other(m),
        }
    }
}

type R<T> = wasmtime::Result<Result<T, store::Error>>;

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> R<Resource<OpenStore>> {
        match self.open_store(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(store)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }
}

impl store::HostBucket for HostState {
    async fn get(&mut self, b: Resource<OpenStore>, key: String) -> R<Option<Vec<u8>>> {
        let store = self.table.get(&b)?.store.clone();
        Ok(store.get(&key).await.map_err(Into::into))
    }

    async fn set(&mut self, b: Resource<OpenStore>, key: String, value: Vec<u8>) -> R<()> {
        let (store, _wrote) = self.table.get(&b)?.for_write();
        Ok(store.set(&key, &value).await.map_err(Into::into))
    }

    async fn delete(&mut self, b: Resource<OpenStore>, key: String) -> R<()> {
        let (store, _wrote) = self.table.get(&b)?.for_write();
        Ok(store.delete(&key).await.map_err(Into::into))
    }

    async fn exists(&mut self, b: Resource<OpenStore>, key: String) -> R<bool> {
        let store = self.table.get(&b)?.store.clone();
        Ok(store.exists(&key).await.map_err(Into::into))
    }

    async fn list_keys(
        &mut self,
        b: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> R<store::KeyResponse> {
        // Every key in one page: the stores here are small, and a cursor of
        // None tells the guest there is nothing more.
        let store = self.table.get(&b)?.store.clone();
        Ok(store
            .keys()
            .await
            .map(|keys| store::KeyResponse { keys, cursor: None })
            .map_err(Into::into))
    }

    async fn drop(&mut self, b: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(&mut self, b: Resource<OpenStore>, key: String, delta: i64) -> R<i64> {
        let (store, _wrote) = self.table.get(&b)?.for_write();
        Ok(store.increment(&key, delta).await.map_err(Into::into))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.get(&cas)?;
        let (store, key, current) = (
            handle.store.clone(),
            handle.key.clone(),
            handle.current.clone(),
        );
        let _wrote = super::Wrote(handle.written.clone());
        match store
            .compare_and_swap(&key, current.as_deref(), &value)
            .await
        {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            // The handle goes back to the guest so it can read again and retry.
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(e.into())))
            }
        }
    }
}

impl atomics::HostCas for HostState {
    async fn new(&mut self, b: Resource<OpenStore>, key: String) -> R<Resource<CasHandle>> {
        let open = self.table.get(&b)?;
        let (store, written) = (open.store.clone(), open.written.clone());
        let current = match store.get(&key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e.into())),
        };
        Ok(Ok(self.table.push(CasHandle {
            store,
            written,
            key,
            current,
        })?))
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> R<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        b: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> R<Vec<(String, Option<Vec<u8>>)>> {
        let store = self.table.get(&b)?.store.clone();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            match store.get(&key).await {
                Ok(v) => out.push((key, v)),
                Err(e) => return Ok(Err(e.into())),
            }
        }
        Ok(Ok(out))
    }

    async fn set_many(&mut self, b: Resource<OpenStore>, kvs: Vec<(String, Vec<u8>)>) -> R<()> {
        let (store, _wrote) = self.table.get(&b)?.for_write();
        for (key, value) in kvs {
            if let Err(e) = store.set(&key, &value).await {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }

    async fn delete_many(&mut self, b: Resource<OpenStore>, keys: Vec<String>) -> R<()> {
        let (store, _wrote) = self.table.get(&b)?.for_write();
        for key in keys {
            if let Err(e) = store.delete(&key).await {
                return Ok(Err(e.into()));
            }
        }
        Ok(Ok(()))
    }
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

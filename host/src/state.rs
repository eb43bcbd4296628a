//! What a request's Store holds, and the services every request shares.

use crate::capabilities::brokers::Brokers;
use crate::capabilities::key_value::KeyValueStores;
use crate::capabilities::outbound_http::OutboundHooks;
use crate::capabilities::scheduler::Schedulers;
use crate::facility::FacilityConfig;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Made once at start-up, shared by every request: the providers behind the
/// capabilities.
pub struct Services {
    pub key_value: KeyValueStores,
    pub schedulers: Schedulers,
    pub brokers: Brokers,
    pub facility: FacilityConfig,
}

/// What the manifest grants one component, resolved once at start-up.
#[derive(Debug, Default)]
pub struct ComponentGrants {
    /// Labels of `key_value_stores`.
    pub key_value_stores: HashSet<String>,
    /// Component variables, already rendered from the application variables.
    pub variables: HashMap<String, String>,
}

/// The data of one request's Store.
pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    pub outbound: OutboundHooks,
    pub grants: Arc<ComponentGrants>,
    pub services: Arc<Services>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

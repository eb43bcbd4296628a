//! What a request's Store holds, and the services every request shares.

use crate::capabilities::brokers::Brokers;
use crate::capabilities::key_value::KeyValueStores;
use crate::capabilities::outbound_http::OutboundHooks;
use crate::capabilities::scheduler::Schedulers;
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
}

/// What the manifest grants one component, resolved once at start-up.
#[derive(Debug, Default)]
pub struct ComponentGrants {
    /// Labels of `key_value_stores`.
    pub key_value_stores: HashSet<String>,
    /// Component variables, already rendered from the application variables.
    pub variables: HashMap<String, String>,
    /// Facility capabilities (`[component.x.tool.s3m] capabilities`).
    pub capabilities: HashSet<String>,
    /// The component's id, for error messages.
    pub component: String,
    /// Largest request body for this component (`[component.x.tool.s3m]
    /// max_body_size`); None: the host's `--max-body-size`.
    pub max_body_size: Option<u64>,
}

impl ComponentGrants {
    /// Whether the component may use `capability` ("scheduler",
    /// "scheduler-read", "brokers", "software"); the full scheduler grant
    /// includes reading.
    pub fn allows(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
            || (capability == "scheduler-read" && self.capabilities.contains("scheduler"))
    }
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
    /// The `Authorization` value of the HTTP request this Store serves, if
    /// it serves one (never logged): a capability call's `caller.token` must
    /// be this token.
    pub request_token: Option<String>,
    /// The last token the host checked for this Store and what it found.
    pub principal: Option<(
        String,
        Result<crate::admin::principal::Principal, crate::admin::principal::Refusal>,
    )>,
    /// The id of the request (or gateway call) this Store serves: in its
    /// log lines, its `x-request-id`, and what concealed errors name.
    pub request_id: Option<String>,
    /// Keeps the epoch thread ticking while this Store is alive.
    pub _live: crate::engine::LiveStore,
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

/// Who a capability call says it acts for: the `caller` record's project
/// and token (the WIT `caller`; each capability's bindings have their own
/// Rust type of it).
#[derive(Clone, Copy)]
pub struct Acting<'a> {
    pub project: &'a str,
    pub token: &'a str,
}

impl HostState {
    /// Lets a capability act for a project only when the component holds
    /// the capability and the host itself found the caller's token valid
    /// for that project with one of `permissions` (none: any valid token).
    /// When the Store serves an HTTP request, the caller's token must also
    /// be that request's token: a component cannot act with a token it
    /// kept from another request. The error says why, never holding the
    /// token.
    pub async fn authorize(
        &mut self,
        capability: &str,
        acting: Option<Acting<'_>>,
        permissions: &[&str],
    ) -> Result<(), String> {
        if !self.grants.allows(capability) {
            tracing::warn!(
                component = %self.grants.component,
                capability,
                "a component used a capability spin.toml does not grant it"
            );
            return Err(format!(
                "component {} is not granted the {capability} capability (spin.toml: [component.{}.tool.s3m] capabilities)",
                self.grants.component, self.grants.component
            ));
        }
        let Some(acting) = acting else {
            return Ok(());
        };
        let token = crate::admin::principal::token_of(acting.token);
        if let Some(header) = self.request_token.as_deref() {
            let request = crate::admin::principal::token_of(header);
            if !crate::admin::principal::same_secret(request, token) {
                crate::metrics::get().token_refused("not_request_token");
                tracing::warn!(
                    component = %self.grants.component,
                    capability,
                    "a component named a token that is not its request's"
                );
                return Err(
                    "the host refused the call: the caller's token is not the request's".into(),
                );
            }
        }
        let cached = matches!(&self.principal, Some((t, _)) if crate::admin::principal::same_secret(t, token));
        if !cached {
            let checked = match self
                .services
                .key_value
                .get(crate::admin::principal::TOKEN_STORE)
            {
                Ok(store) => crate::admin::principal::verify(store.as_ref(), token).await,
                Err(e) => Err(crate::admin::principal::Refusal::new(
                    "unavailable",
                    format!("key-value unavailable: {e}"),
                )),
            };
            self.principal = Some((token.to_string(), checked));
        }
        let project = acting.project;
        match &self.principal.as_ref().expect("set above").1 {
            Err(why) => {
                crate::metrics::get().token_refused(why.reason);
                tracing::warn!(component = %self.grants.component, capability, "refused a capability call: {why}");
                Err(format!("the host refused the call: {why}"))
            }
            Ok(p) if !p.project.eq_ignore_ascii_case(project) => {
                crate::metrics::get().token_refused("wrong_project");
                tracing::warn!(
                    component = %self.grants.component,
                    capability,
                    "a component asked to act for another project than its caller's token"
                );
                Err("the host refused the call: the caller is not the token's project".into())
            }
            Ok(p) if !p.has_any(permissions) => {
                crate::metrics::get().token_refused("lacks_permission");
                Err(format!(
                    "the host refused the call: the caller's token lacks {}",
                    permissions.join(" or ")
                ))
            }
            Ok(_) => {
                crate::metrics::get().token_used();
                Ok(())
            }
        }
    }

    /// Ends a capability call: its metrics, and when it acted for
    /// `project`, its audit line (who: the token the host verified, if it
    /// did).
    pub fn finish_call<T, E: crate::metrics::CallError>(
        &self,
        call: &crate::metrics::Call,
        project: Option<&str>,
        resource: Option<&str>,
        object: Option<&str>,
        r: &Result<T, E>,
    ) {
        call.done(r);
        let Some(project) = project else {
            return;
        };
        let who = match &self.principal {
            Some((_, Ok(p))) => Some(p),
            _ => None,
        };
        let (result, reason) = match r {
            Ok(_) => ("ok", None),
            Err(e) if e.outcome() == "refused" => ("refused", Some(e.message())),
            Err(e) => ("error", Some(e.case())),
        };
        use crate::audit::opt;
        crate::audit::record(
            &call.action(),
            result,
            &[
                ("project", project.into()),
                ("jti", opt(who.map(|p| p.jti.as_str()))),
                ("username", opt(who.map(|p| p.username.as_str()))),
                ("component", self.grants.component.as_str().into()),
                ("request_id", opt(self.request_id.as_deref())),
                ("resource", opt(resource)),
                ("object", opt(object)),
                ("reason", opt(reason)),
            ],
        );
    }
}

impl HostState {
    /// A provider's failure as the caller may see it: what failed and the
    /// request id; the provider's own words (addresses, paths, settings)
    /// go to the log only.
    /// The id is the request's (its `x-request-id`); a Store that serves
    /// none gets one made here.
    pub fn conceal(&self, what: &str, detail: &str) -> String {
        let made;
        let id = match self.request_id.as_deref() {
            Some(id) => id,
            None => {
                made = crate::logging::RequestId::new();
                made.as_str()
            }
        };
        tracing::error!(request_id = %id, component = %self.grants.component, "{what}: {detail}");
        format!("{what} (request {id}: the facility's operators have the details)")
    }
}

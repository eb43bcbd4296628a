//! The capability gateway: the facility capabilities and key-value over HTTP,
//! for components that run in other hosts (stock Spin, `wasmtime serve`, jco)
//! through the adapter components of `components/adapters/`.
//!
//! docs/gateway.md is the contract. Each call runs the very `Host` trait impl
//! the native linker runs, on a `HostState` made for the calling component:
//! the same grants, the same token check, the same concealment of provider
//! details. There is no second implementation of any capability.

use crate::capabilities::brokers::s3m::facility::brokers as brokers_wit;
use crate::capabilities::key_value::KeyValueError;
use crate::capabilities::scheduler::s3m::facility::scheduler as scheduler_wit;
use crate::capabilities::software::s3m::facility::software as software_wit;
use crate::engine::App;
use crate::state::HostState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The prefix of every gateway route.
pub const PREFIX: &str = "/gateway/v1/";
/// Largest call body: a job script is at most 1 MiB, key-value values small.
const MAX_BODY: usize = 16 << 20;
/// The prefix of component credentials.
const CREDENTIAL_SCHEME: &str = "s3m-gw1";

/// The host's gateway key: 32 random bytes in `<state>/gateway.key` (0600),
/// made at first start.
pub fn load_or_create_key(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    let path = state_dir.join("gateway.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() == 32 => return Ok(key),
        Ok(_) => anyhow::bail!(
            "{} is not a gateway key (32 bytes); delete it to make a new one (every component credential changes)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key: [u8; 32] = rand::random();
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&key)?;
    Ok(key.to_vec())
}

fn mac(key: &[u8], component: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"s3m gateway v1 component ");
    mac.update(component.as_bytes());
    mac
}

/// The credential of `component`: `s3m-gw1.<component>.<mac>`.
pub fn credential(key: &[u8], component: &str) -> String {
    let tag = mac(key, component).finalize().into_bytes();
    format!(
        "{CREDENTIAL_SCHEME}.{component}.{}",
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The component a credential was made for, if the host made it.
fn component_of<'a>(key: &[u8], credential: &'a str) -> Option<&'a str> {
    let rest = credential
        .strip_prefix(CREDENTIAL_SCHEME)?
        .strip_prefix('.')?;
    let (component, tag) = rest.rsplit_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, component).verify_slice(&tag).ok()?;
    Some(component)
}

/// What the gateway serves from.
pub struct Gateway {
    app: Arc<App>,
    key: Vec<u8>,
}

type Answer = hyper::Response<Full<Bytes>>;

fn answer(status: u16, body: &Value) -> Answer {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// An error of the gateway itself, before any function runs.
fn refuse(status: u16, message: &str) -> Answer {
    answer(status, &json!({ "gateway_error": message }))
}

/// The HTTP status of a function's answer: 200, or what its error case means.
fn status_of(value: &Value) -> u16 {
    let Some(err) = value
        .as_object()
        .and_then(|o| (o.len() == 1).then(|| o.get("Err")).flatten())
    else {
        return 200;
    };
    let case = match err {
        Value::String(s) => s.as_str(),
        Value::Object(o) if o.len() == 1 => o.keys().next().map(String::as_str).unwrap_or(""),
        _ => "",
    };
    match case {
        "InvalidJob" | "InvalidSettings" => 400,
        "Permission" | "AccessDenied" => 403,
        "NotFound" | "NoSuchStore" => 404,
        "AlreadyExists" | "CasFailed" => 409,
        _ => 503,
    }
}

/// A call refused before it runs.
struct Refused(u16, String);

fn args<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| {
        Refused(
            400,
            format!("the call's body does not match the function's parameters: {e}"),
        )
    })
}

fn kv_err(e: KeyValueError) -> Value {
    match e {
        KeyValueError::NoSuchStore => json!("NoSuchStore"),
        KeyValueError::AccessDenied => json!("AccessDenied"),
        KeyValueError::Other(m) => json!({ "Other": m }),
    }
}

fn kv<T: serde::Serialize>(r: Result<T, KeyValueError>) -> Value {
    match r {
        Ok(v) => json!({ "Ok": v }),
        Err(e) => json!({ "Err": kv_err(e) }),
    }
}

/// Runs `$method` of a capability's `Host` trait with the body's members
/// as its parameters.
macro_rules! host_call {
    ($state:expr, $body:expr, $host:path, $method:ident ( $($arg:ident : $ty:ty),* )) => {{
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Args { $($arg: $ty),* }
        let Args { $($arg),* } = args::<Args>($body)?;
        let out = <HostState as $host>::$method($state, $($arg),*)
            .await
            .map_err(|e| Refused(500, format!("the host failed the call: {e:#}")))?;
        serde_json::to_value(out).map_err(|e| Refused(500, e.to_string()))?
    }};
}

impl Gateway {
    pub fn new(app: Arc<App>, key: Vec<u8>) -> Arc<Self> {
        Arc::new(Self { app, key })
    }

    /// Serves the gateway on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("gateway: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, std::convert::Infallible>(this.handle(req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(io, service)
                    .await;
            });
        }
    }

    /// Answers one call; like the public listener's, the answer carries
    /// the call's `x-request-id` (the caller's if valid, else a new one),
    /// and so do its log lines and the concealed errors of its providers.
    async fn handle(&self, req: hyper::Request<hyper::body::Incoming>) -> Answer {
        let id = crate::logging::RequestId::of(req.headers());
        let mut answer = crate::logging::in_request(id.clone(), self.serve_call(req, &id)).await;
        answer
            .headers_mut()
            .insert(crate::logging::REQUEST_ID, id.header());
        answer
    }

    async fn serve_call(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        id: &crate::logging::RequestId,
    ) -> Answer {
        let (parts, body) = req.into_parts();
        let Some(function) = parts.uri.path().strip_prefix(PREFIX).map(str::to_string) else {
            return refuse(
                404,
                &format!("not a gateway route: the gateway serves POST {PREFIX}<interface>/<function> (docs/gateway.md)"),
            );
        };
        if parts.method != hyper::Method::POST {
            return refuse(405, "gateway calls are POST");
        }
        let credential = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(crate::admin::principal::token_of)
            .unwrap_or("");
        if credential.is_empty() {
            return refuse(
                401,
                "the call carries no component credential: send Authorization: Bearer <credential> (s3m gateway env --component <id> prints it)",
            );
        }
        let Some(component) = component_of(&self.key, credential) else {
            tracing::warn!(
                function,
                "gateway: refused a call with a credential this host did not make"
            );
            return refuse(
                401,
                "the component credential is not one this host made (s3m gateway env --component <id> prints the right one)",
            );
        };
        let Some(loaded) = self.app.components.get(component) else {
            return refuse(
                401,
                &format!("the credential names component {component}, which this host's spin.toml does not have"),
            );
        };
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return refuse(
                    413,
                    &format!(
                        "the call's body is larger than {MAX_BODY} bytes, or could not be read"
                    ),
                )
            }
        };
        let mut state = match self.app.host_state(loaded, None) {
            Ok(s) => s,
            Err(e) => return refuse(500, &format!("the host could not serve the call: {e:#}")),
        };
        state.request_id = Some(id.as_str().to_string());
        match self.call(&mut state, &function, &body).await {
            Ok(value) => answer(status_of(&value), &value),
            Err(Refused(status, message)) => refuse(status, &message),
        }
    }

    async fn call(&self, s: &mut HostState, function: &str, body: &[u8]) -> Result<Value, Refused> {
        use brokers_wit::{ClusterSpec, Engine};
        use scheduler_wit::JobDescription;
        type SCaller = crate::capabilities::scheduler::Caller;
        type BCaller = crate::capabilities::brokers::s3m::facility::types::Caller;
        use brokers_wit::Host as Brok;
        use scheduler_wit::Host as Sched;
        use software_wit::Host as Soft;
        Ok(match function {
            "scheduler/about" => host_call!(s, body, Sched, about(resource: String)),
            "scheduler/overviews" => {
                host_call!(s, body, Sched, overviews(resources: Vec<String>, deadline_ms: u32))
            }
            "scheduler/submit" => host_call!(
                s,
                body,
                Sched,
                submit(resource: String, caller: SCaller, job: JobDescription, script: String)
            ),
            "scheduler/get" => {
                host_call!(s, body, Sched, get(resource: String, caller: SCaller, job_id: u32))
            }
            "scheduler/list-jobs" => {
                host_call!(s, body, Sched, list_jobs(resource: String, caller: SCaller))
            }
            "scheduler/cancel" => host_call!(
                s,
                body,
                Sched,
                cancel(resource: String, caller: SCaller, job_id: u32, signal: u32)
            ),
            "scheduler/ping" => host_call!(s, body, Sched, ping(resource: String)),
            "scheduler/diag" => host_call!(s, body, Sched, diag(resource: String)),
            "scheduler/nodes" => host_call!(s, body, Sched, nodes(resource: String)),
            "scheduler/partitions" => host_call!(s, body, Sched, partitions(resource: String)),
            "scheduler/reservations" => {
                host_call!(s, body, Sched, reservations(resource: String))
            }
            "brokers/backends" => host_call!(s, body, Brok, backends(caller: BCaller)),
            "brokers/provision" => {
                host_call!(s, body, Brok, provision(caller: BCaller, spec: ClusterSpec))
            }
            "brokers/list" => host_call!(s, body, Brok, list(caller: BCaller, engine: Engine)),
            "brokers/get" => {
                host_call!(s, body, Brok, get(caller: BCaller, engine: Engine, name: String))
            }
            "brokers/delete" => {
                host_call!(s, body, Brok, delete(caller: BCaller, engine: Engine, name: String))
            }
            "brokers/extend" => {
                host_call!(s, body, Brok, extend(caller: BCaller, engine: Engine, name: String))
            }
            "software/modules" => host_call!(s, body, Soft, modules(resource: String)),
            f if f.starts_with("key-value/") || f.starts_with("wasi-keyvalue/") => {
                self.key_value(s, f, body).await?
            }
            other => {
                return Err(Refused(
                    404,
                    format!("no gateway function {other:?}: see docs/gateway.md for the list"),
                ))
            }
        })
    }

    /// `fermyon:spin/key-value` and `wasi:keyvalue` on the stores the
    /// component's manifest grants.
    async fn key_value(
        &self,
        s: &mut HostState,
        function: &str,
        body: &[u8],
    ) -> Result<Value, Refused> {
        #[derive(Deserialize)]
        struct Call {
            store: String,
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            value: Option<Vec<u8>>,
            #[serde(default)]
            delta: Option<i64>,
            #[serde(default)]
            old: Option<Vec<u8>>,
            #[serde(default)]
            #[allow(dead_code)]
            cursor: Option<String>,
        }
        let call: Call = args(body)?;
        let (_, op) = function.split_once('/').expect("prefix checked");
        let store = match s.open_store(&call.store) {
            Ok(open) => open.store,
            Err(e) => return Ok(json!({ "Err": kv_err(e) })),
        };
        let key = || {
            call.key
                .clone()
                .ok_or_else(|| Refused(400, format!("{function} needs the member \"key\"")))
        };
        let value = || {
            call.value
                .clone()
                .ok_or_else(|| Refused(400, format!("{function} needs the member \"value\"")))
        };
        Ok(match op {
            "open" => json!({ "Ok": null }),
            "get" | "cas-current" => kv(store.get(&key()?).await),
            "set" => kv(store.set(&key()?, &value()?).await),
            "delete" => kv(store.delete(&key()?).await),
            "exists" => kv(store.exists(&key()?).await),
            "get-keys" if function.starts_with("key-value/") => kv(store.keys().await),
            "list-keys" if function.starts_with("wasi-keyvalue/") => kv(store
                .keys()
                .await
                .map(|keys| json!({ "keys": keys, "cursor": null }))),
            "increment" if function.starts_with("wasi-keyvalue/") => {
                let delta = call.delta.ok_or_else(|| {
                    Refused(400, format!("{function} needs the member \"delta\""))
                })?;
                kv(store.increment(&key()?, delta).await)
            }
            "swap" if function.starts_with("wasi-keyvalue/") => {
                match store
                    .compare_and_swap(&key()?, call.old.as_deref(), &value()?)
                    .await
                {
                    Ok(true) => json!({ "Ok": null }),
                    Ok(false) => json!({ "Err": "CasFailed" }),
                    Err(e) => json!({ "Err": { "StoreError": kv_err(e) } }),
                }
            }
            _ => {
                return Err(Refused(
                    404,
                    format!("no gateway function {function:?}: see docs/gateway.md for the list"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_name_their_component_and_cannot_be_forged() {
        let key = [7u8; 32];
        let c = credential(&key, "compute");
        assert!(c.starts_with("s3m-gw1.compute."));
        assert_eq!(component_of(&key, &c), Some("compute"));
        // Another key, another component's name, a truncated tag: refused.
        assert_eq!(component_of(&[8u8; 32], &c), None);
        let renamed = c.replacen("compute", "streaming", 1);
        assert_eq!(component_of(&key, &renamed), None);
        assert_eq!(component_of(&key, &c[..c.len() - 2]), None);
        assert_eq!(component_of(&key, "s3m-gw1.compute."), None);
        assert_eq!(component_of(&key, ""), None);
    }

    #[test]
    fn error_cases_map_to_their_http_meaning() {
        assert_eq!(status_of(&json!({"Ok": 5})), 200);
        assert_eq!(status_of(&json!([1, 2])), 200);
        assert_eq!(status_of(&json!({"Err": {"InvalidJob": "x"}})), 400);
        assert_eq!(status_of(&json!({"Err": {"Permission": "x"}})), 403);
        assert_eq!(status_of(&json!({"Err": "AccessDenied"})), 403);
        assert_eq!(status_of(&json!({"Err": {"NotFound": "x"}})), 404);
        assert_eq!(status_of(&json!({"Err": {"AlreadyExists": "x"}})), 409);
        assert_eq!(status_of(&json!({"Err": {"Unavailable": "x"}})), 503);
        assert_eq!(status_of(&json!({"Err": {"Other": "x"}})), 503);
    }
}

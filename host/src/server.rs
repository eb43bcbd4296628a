//! The HTTP front: accepts connections, routes each request with Spin's
//! rules, and runs the matched component in a fresh Store. Errors the host
//! itself answers use the API's one error shape.

use crate::engine::App;
use crate::routes::{RouteMatch, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

pub struct Server {
    app: App,
    router: Router,
}

/// `{"code", "message", "details": []}` with its HTTP status.
pub fn error_response(status: u16, code: u32, message: &str) -> hyper::Response<HyperOutgoingBody> {
    let body = serde_json::json!({ "code": code, "message": message, "details": [] }).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
        .expect("a static response is valid")
}

impl Server {
    pub fn new(app: App, router: Router) -> Arc<Self> {
        Arc::new(Self { app, router })
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        self.app.start_epoch_ticker();
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req, client).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("connection from {client}: {e}");
                }
            });
        }
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let response = match self.router.route(&path) {
            None => error_response(404, 5, &format!("no route matches {path}")),
            Some(m) => {
                let component = m.component.to_string();
                match self.run(req, m, client).await {
                    Ok(r) => r,
                    Err(e) => {
                        let timed_out = e.chain().any(|c| {
                            c.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
                        });
                        if timed_out {
                            tracing::error!(component, %path, "component ran past its time limit");
                            error_response(
                                504,
                                4,
                                "the request ran past the component's time limit",
                            )
                        } else {
                            tracing::error!(component, %path, "component failed: {e:#}");
                            error_response(
                                500,
                                13,
                                "internal error in the component; the host's log has the details",
                            )
                        }
                    }
                }
            }
        };
        // Never the headers or the query: they may hold a token.
        tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
        response
    }

    async fn run(
        &self,
        mut req: hyper::Request<hyper::body::Incoming>,
        m: RouteMatch<'_>,
        client: SocketAddr,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let component = self
            .app
            .components
            .get(m.component)
            .ok_or_else(|| anyhow::anyhow!("route names unknown component {}", m.component))?;
        set_spin_headers(&mut req, &m, client);
        let mut store = self.app.new_store(component)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = component.pre.clone();
        // The epoch callback stops a guest that computes past the limit; this
        // stops one that waits past it (on a slow scheduler, say).
        let limit = self.app.limits.request_timeout;
        let task = tokio::spawn(async move {
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
            };
            match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Err(wasmtime::Trap::Interrupt.into()),
            }
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(anyhow::anyhow!("component answered with an error: {e:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => anyhow::bail!("the component returned without setting a response"),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            },
        }
    }
}

fn set_spin_headers(
    req: &mut hyper::Request<hyper::body::Incoming>,
    m: &RouteMatch<'_>,
    client: SocketAddr,
) {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let full_url = format!("http://{host}{path_and_query}");
    let mut pairs: Vec<(String, String)> = vec![
        ("spin-full-url".into(), full_url),
        ("spin-path-info".into(), m.path_info.clone()),
        ("spin-matched-route".into(), m.raw_route.to_string()),
        ("spin-raw-component-route".into(), m.raw_route.to_string()),
        ("spin-component-route".into(), m.component_route.clone()),
        ("spin-base-path".into(), "/".into()),
        ("spin-client-addr".into(), client.to_string()),
    ];
    for (name, value) in &m.params {
        pairs.push((
            format!("spin-path-match-{}", name.to_ascii_lowercase()),
            value.clone(),
        ));
    }
    let headers = req.headers_mut();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            headers.insert(k, v);
        }
    }
}

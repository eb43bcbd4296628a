//! The HTTP front: accepts connections, routes each request with Spin's
//! rules, and runs the matched component in a fresh Store. Errors the host
//! itself answers use the API's one error shape.
//!
//! What a client sends is checked here before any component sees it:
//! - the authority (`Host`, or the URI's in absolute form) must be a plain
//!   `host[:port]`; the component is handed exactly the request line's path
//!   under that authority, so no header can change the path it sees;
//! - the body is read by the host, up to `--max-body-size` (a larger
//!   `Content-Length` is refused before a byte of it is read), and the
//!   component gets it whole: a malformed or oversized body is the host's 400
//!   or 413, never a component's failure;
//! - connections, requests in flight and the time to send a request head are
//!   bounded; past a bound the answer is 503 with `Retry-After`.

use crate::engine::App;
use crate::logging::{RequestId, REQUEST_ID};
use crate::routes::{RouteMatch, Router};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// The bounds of the HTTP front (`s3m up --max-body-size ...`).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest request body, in bytes; a larger one is answered 413.
    pub max_body_size: u64,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Requests being handled at once; one more is answered 503.
    pub max_concurrent_requests: usize,
    /// Time a client has to send a whole request head.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_size: 10 << 20,
            max_connections: 1024,
            max_concurrent_requests: 512,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest request head (request line and headers); a larger one is
/// answered 431.
const MAX_HEAD_SIZE: usize = 64 << 10;
/// Connections over `max_connections` that are still given their 503 at
/// once; past these, a new connection is closed without an answer.
const REFUSED_AT_ONCE: usize = 64;
/// How long a refused connection may take to send its request head.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// After the host closes a connection, what the client still sends is read
/// and dropped for this long (at most `LINGER_BYTES`), so that a response
/// sent before the request was read whole (a 413, say) reaches the client
/// instead of being destroyed by a TCP reset.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

pub struct Server {
    app: Arc<App>,
    router: Router,
    limits: HttpLimits,
    /// One permit per request being handled (`max_concurrent_requests`).
    in_flight: Arc<Semaphore>,
    /// One permit per component instance alive (`--max-instances`): a
    /// request waits here for an instance rather than fail to get one.
    instances: Arc<Semaphore>,
}

/// For the host's own GET-only paths: None for GET and HEAD, else a 405 in
/// the error shape with `Allow: GET`.
pub fn get_only(method: &http::Method, path: &str) -> Option<hyper::Response<HyperOutgoingBody>> {
    if method == http::Method::GET || method == http::Method::HEAD {
        return None;
    }
    let mut response = error_response(
        405,
        12,
        &format!("method {method} is not allowed on {path}; use GET"),
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
    Some(response)
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

/// 503 Unavailable with `Retry-After: 1`: the host is at one of its bounds.
pub fn busy_response(message: &str) -> hyper::Response<HyperOutgoingBody> {
    let mut response = error_response(503, 14, message);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    response
}

fn bad_request(message: &str) -> hyper::Response<HyperOutgoingBody> {
    error_response(400, 3, message)
}

impl Server {
    /// GET the broker CA (PEM): public, so clients can verify the brokers
    /// they were handed without a token. 404 when the brokers use no CA of
    /// this facility (plain text, or Kubernetes with its own certificates).
    fn broker_ca(&self, method: &http::Method) -> hyper::Response<HyperOutgoingBody> {
        if let Some(refused) = get_only(method, crate::providers::brokers::tls::CA_PATH) {
            return refused;
        }
        match self.app.services.brokers.ca_certificate() {
            Some(pem) => hyper::Response::builder()
                .status(200)
                .header("content-type", "application/x-pem-file")
                .body(
                    Full::new(Bytes::from(pem))
                        .map_err(|e| match e {})
                        .boxed_unsync(),
                )
                .expect("a PEM response is valid"),
            None => error_response(
                404,
                5,
                "this facility's brokers use no CA of its own: their certificates chain to a public CA, or they speak plain text",
            ),
        }
    }

    pub fn new(app: Arc<App>, router: Router, limits: HttpLimits) -> Arc<Self> {
        let in_flight = Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1)));
        let instances = Arc::new(Semaphore::new((app.limits.max_instances as usize).max(1)));
        crate::metrics::get().watch_pools(
            in_flight.clone(),
            limits.max_concurrent_requests.max(1),
            instances.clone(),
            (app.limits.max_instances as usize).max(1),
        );
        Arc::new(Self {
            app,
            router,
            limits,
            in_flight,
            instances,
        })
    }

    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        self.app.start_epoch_ticker();
        raise_open_files_limit();
        let fallback_local = listener.local_addr()?;
        let connections = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let refusals = Arc::new(Semaphore::new(REFUSED_AT_ONCE));
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather
                    // than spin on an error that repeats at once.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(fallback_local);
            match connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    let server = self.clone();
                    tokio::spawn(
                        async move { server.connection(stream, client, local, permit).await },
                    );
                }
                Err(_) => match refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(refuse_connection(stream, permit));
                    }
                    Err(_) => drop(stream),
                },
            }
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        local: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let server = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, std::convert::Infallible>(server.handle(req, client, local).await) }
        });
        if let Err(e) = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(MAX_HEAD_SIZE)
            .keep_alive(true)
            .serve_connection(TokioIo::new(Connection::new(stream, permit)), service)
            .await
        {
            tracing::debug!("connection from {client}: {e}");
        }
    }

    async fn handle(
        self: &Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> hyper::Response<HyperOutgoingBody> {
        let started = Instant::now();
        let id = RequestId::of(req.headers());
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // The metrics' labels: the matched component and spin.toml route.
        let mut labels = (crate::metrics::NONE, crate::metrics::NONE);
        let mut response = crate::logging::in_request(
            id.clone(),
            self.respond(req, &path, client, local, &id, &mut labels),
        )
        .await;
        response.headers_mut().insert(REQUEST_ID, id.header());
        let took = started.elapsed();
        crate::metrics::get().request(labels.0, labels.1, response.status(), took);
        // Never the headers or the query: they may hold a token.
        if tracing::enabled!(tracing::Level::DEBUG) {
            crate::logging::with_request(
                &id,
                || tracing::debug!(%method, %path, status = response.status().as_u16(), micros = took.as_micros() as u64, "request"),
            );
        }
        response
    }

    async fn respond<'s>(
        self: &'s Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
        path: &str,
        client: SocketAddr,
        local: SocketAddr,
        id: &RequestId,
        labels: &mut (&'s str, &'s str),
    ) -> hyper::Response<HyperOutgoingBody> {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return busy_response(
                "the server is handling as many requests as it may; retry shortly",
            );
        };
        let (mut parts, body) = req.into_parts();
        if let Err(message) = normalise_target(&mut parts, local) {
            return bad_request(message);
        }
        // Refused before a byte of the body is read: the component's own
        // limit (`[component.x.tool.s3m] max_body_size`), else the host's.
        let m = self.router.route(path);
        if let Some(m) = &m {
            *labels = (m.component, m.raw_route);
        }
        let max_body = m
            .as_ref()
            .and_then(|m| self.app.components.get(m.component))
            .and_then(|c| c.grants.max_body_size)
            .unwrap_or(self.limits.max_body_size);
        if body.size_hint().lower() > max_body {
            return too_large(max_body);
        }
        let Some(m) = m else {
            // Only where no component route matches: the API's own description.
            if let Some(r) = crate::openapi::answer(&parts.method, path) {
                return r;
            }
            if path == crate::providers::brokers::tls::CA_PATH {
                return self.broker_ca(&parts.method);
            }
            return error_response(404, 5, &format!("no route matches {path}"));
        };
        let component = m.component.to_string();
        // The component sees the id its answer will carry.
        parts.headers.insert(REQUEST_ID, id.header());
        set_spin_headers(&mut parts, &m, client);
        match self
            .run(parts, body, component.clone(), max_body, permit, id)
            .await
        {
            Ok(r) => r,
            Err(Failure::Answered(r)) => r,
            Err(Failure::Busy) => {
                tracing::warn!(component, %path, "no component instance free");
                busy_response("every component instance is busy; retry shortly")
            }
            Err(Failure::TimedOut) => {
                tracing::error!(component, %path, "component ran past its time limit");
                error_response(504, 4, "the request ran past the component's time limit")
            }
            Err(Failure::Error(e)) => {
                tracing::error!(component, %path, "component failed: {e:#}");
                error_response(
                    500,
                    13,
                    "internal error in the component; the host's log has the details",
                )
            }
        }
    }

    /// Reads the body, waits for a free instance and runs the component,
    /// all within the request's time limit. The guest runs on the
    /// connection's own task until it has answered: most guests have also
    /// finished by then, and the request costs no task of its own. One that
    /// is still writing its answer's body (or doing work after it) goes on
    /// in a task of its own, and so does one whose client went away before
    /// the answer: a guest is never stopped half-way because of the client
    /// (a submit and the record of its idempotency key belong together).
    async fn run(
        self: &Arc<Self>,
        parts: http::request::Parts,
        body: hyper::body::Incoming,
        component: String,
        max_body: u64,
        in_flight: OwnedSemaphorePermit,
        id: &RequestId,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Failure> {
        let server = self.clone();
        let request_id = id.as_str().to_string();
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        let limit = self.app.limits.request_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let name = component.clone();
        let guest = async move {
            // Held until the guest is done, response body included.
            let _in_flight = in_flight;
            let body = read_body(body, max_body, deadline)
                .await
                .map_err(Failure::Answered)?;
            let _instance =
                match tokio::time::timeout_at(deadline, server.instances.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Failure::Busy),
                };
            let component = server
                .app
                .components
                .get(&component)
                .ok_or_else(|| anyhow::anyhow!("route names unknown component {component}"))?;
            let mut store = server.app.new_store(component)?;
            // Kept for the host's own check before a capability acts for a
            // project (never logged).
            store.data_mut().request_token = parts
                .headers
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            store.data_mut().request_id = Some(request_id);
            let req = hyper::Request::from_parts(parts, Full::new(body));
            let incoming = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            let pre = component.pre.clone();
            // The epoch callback stops a guest that computes past the limit;
            // this stops one that waits past it (on a slow scheduler, say).
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
            };
            match tokio::time::timeout_at(deadline, call).await {
                Ok(r) => r.map_err(Failure::from),
                Err(_) => Err(Failure::TimedOut),
            }
        };
        let mut guest = Unfinished::new(guest, name, id.clone());
        // Whichever comes first: the guest's end or its answer.
        // (A guest that dropped its answer unset is waited for: its
        // failure says why.)
        let mut dropped = false;
        let answer = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = guest.poll(cx) {
                return Poll::Ready(Err(r));
            }
            if !dropped {
                match std::future::Future::poll(Pin::new(&mut receiver), cx) {
                    Poll::Ready(Ok(answer)) => return Poll::Ready(Ok(answer)),
                    Poll::Ready(Err(_)) => dropped = true,
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let answer = match answer {
            Ok(answer) => {
                // Answered and still running: it finishes on its own task.
                guest.detach();
                answer
            }
            Err(Ok(())) => match receiver.try_recv() {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(anyhow::anyhow!(
                        "the component returned without setting a response"
                    )
                    .into())
                }
            },
            Err(Err(failure)) => match receiver.try_recv() {
                // It answered and then failed: the answer stands, and the
                // log says so (its body may have been cut short).
                Ok(answer) => {
                    log_failure_after_answer(&guest.component, &failure);
                    answer
                }
                Err(_) => return Err(failure),
            },
        };
        match answer {
            Ok(resp) => Ok(resp),
            Err(e) => Err(anyhow::anyhow!("component answered with an error: {e:?}").into()),
        }
    }
}

type GuestRun = Pin<Box<dyn std::future::Future<Output = Result<(), Failure>> + Send>>;

/// A guest's run that has not finished. Dropped unfinished (the answer went
/// out first, or the client went away), it is handed to a task of its own
/// rather than stopped, and that task logs a failure that comes after the
/// answer began.
struct Unfinished {
    run: Option<GuestRun>,
    component: String,
    request: RequestId,
}

impl Unfinished {
    fn new(
        run: impl std::future::Future<Output = Result<(), Failure>> + Send + 'static,
        component: String,
        request: RequestId,
    ) -> Self {
        Self {
            run: Some(Box::pin(run)),
            component,
            request,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Pending;
        };
        let r = ready!(run.as_mut().poll(cx));
        self.run = None;
        Poll::Ready(r)
    }

    /// Lets the rest of the run go on in a task of its own.
    fn detach(&mut self) {
        let Some(run) = self.run.take() else { return };
        let component = std::mem::take(&mut self.component);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(crate::logging::in_request(
            self.request.clone(),
            async move {
                if let Err(failure) = run.await {
                    log_failure_after_answer(&component, &failure);
                }
            },
        ));
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A guest that fails after its answer began (while it writes the body)
/// cuts the answer short: say so in the log.
fn log_failure_after_answer(component: &str, failure: &Failure) {
    match failure {
        Failure::Error(e) => {
            tracing::error!(
                component = %component,
                "component failed while sending its answer: {e:#}"
            )
        }
        Failure::TimedOut => tracing::error!(
            component = %component,
            "component ran past its time limit while sending its answer"
        ),
        _ => {}
    }
}

/// Why a component gave no response.
enum Failure {
    /// The host answered itself (a malformed, oversized or late body).
    Answered(hyper::Response<HyperOutgoingBody>),
    /// No instance came free in time, or the instance pool was exhausted.
    Busy,
    /// The component ran past the request's time limit.
    TimedOut,
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        let is = |f: &dyn Fn(&(dyn std::error::Error + 'static)) -> bool| e.chain().any(f);
        if is(&|c| c.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)) {
            Failure::TimedOut
        } else if is(&|c| c.is::<wasmtime::PoolConcurrencyLimitError>()) {
            tracing::warn!("instance pool exhausted: {e:#}");
            Failure::Busy
        } else {
            Failure::Error(e.into())
        }
    }
}

fn too_large(limit: u64) -> hyper::Response<HyperOutgoingBody> {
    error_response(
        413,
        8,
        &format!("the request body is larger than this server accepts ({limit} bytes)"),
    )
}

/// Reads the whole body, refusing it (413) as soon as it passes `limit`
/// bytes, and answering 400 when its framing is broken (a bad chunk size,
/// say) or it ends early.
async fn read_body(
    mut body: hyper::body::Incoming,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Result<Bytes, hyper::Response<HyperOutgoingBody>> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let expected = body.size_hint().exact().unwrap_or(0).min(limit);
    let read = async {
        let mut buf = BytesMut::with_capacity(expected as usize);
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(_) => {
                    return Err(bad_request(
                        "the request body is malformed or incomplete (bad chunk framing, or shorter than its Content-Length)",
                    ))
                }
            };
            // Trailers, if any, are dropped: components read only the data.
            if let Ok(data) = frame.into_data() {
                if buf.len() as u64 + data.len() as u64 > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(r) => r,
        Err(_) => Err(error_response(
            408,
            4,
            "the request body was not received within the time limit",
        )),
    }
}

/// Checks the request target and its authority, and rewrites the URI to
/// `http://{authority}{path}`: what wasi:http hands the component is built
/// from that URI alone, so the component sees exactly the request line's
/// path under a checked authority.
fn normalise_target(
    parts: &mut http::request::Parts,
    local: SocketAddr,
) -> Result<(), &'static str> {
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
        _ => return Err("the request target must be an absolute path (/...)"),
    };
    if let Some(scheme) = parts.uri.scheme_str() {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("the request target's scheme must be http");
        }
    }
    let mut hosts = parts.headers.get_all(hyper::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    let host = match host {
        Some(h) => Some(
            h.to_str()
                .ok()
                .and_then(valid_authority)
                .ok_or("the Host header must be host or host:port (letters, digits, '.', '-', or a bracketed IPv6 address)")?,
        ),
        None => None,
    };
    let authority = match parts.uri.authority() {
        // Absolute form: the URI's authority wins over Host (RFC 9112, 3.2.2).
        Some(a) => valid_authority(a.as_str())
            .ok_or("the request target's authority must be host or host:port")?,
        None => match host {
            Some(h) => h,
            // HTTP/1.0, or a client that sent none: the address it reached.
            None => valid_authority(&local.to_string()).ok_or("the request has no Host header")?,
        },
    };
    let uri = hyper::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| "the request target is not a valid URI path")?;
    let host_value = hyper::header::HeaderValue::from_str(authority.as_str())
        .map_err(|_| "the request's authority is not a valid header value")?;
    parts.uri = uri;
    parts.headers.insert(hyper::header::HOST, host_value);
    Ok(())
}

/// `s` as an authority when it is exactly `host` or `host:port`: a host of
/// letters, digits, `.` and `-` (or a bracketed IPv6 address) and a decimal
/// port; no user info, no path, no spaces, no percent signs.
pub fn valid_authority(s: &str) -> Option<http::uri::Authority> {
    if s.is_empty() || s.len() > 262 {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        (&s[..ip.len() + 2], after)
    } else {
        match s.split_once(':') {
            Some((h, _)) => (h, &s[h.len()..]),
            None => (s, ""),
        }
    };
    if host.is_empty()
        || (!host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return None;
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u16>().ok()?;
    }
    let authority: http::uri::Authority = s.parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    Some(authority)
}

/// The headers Spin gives every request (named once, not per request).
mod spin_header {
    use hyper::header::HeaderName;
    pub const FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
    pub const PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
    pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
    pub const RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
    pub const COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
    pub const BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
    pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");
}

fn set_spin_headers(parts: &mut http::request::Parts, m: &RouteMatch<'_>, client: SocketAddr) {
    use hyper::header::{HeaderName, HeaderValue};
    // The URI is http://{checked authority}{path} by now (normalise_target).
    let full_url = parts.uri.to_string();
    let headers = &mut parts.headers;
    // Spin's headers are the host's to give: a client's are dropped.
    let forged: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for k in forged {
        headers.remove(k);
    }
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(spin_header::FULL_URL, &full_url);
    set(spin_header::PATH_INFO, &m.path_info);
    set(spin_header::MATCHED_ROUTE, m.raw_route);
    set(spin_header::RAW_COMPONENT_ROUTE, m.raw_route);
    set(spin_header::COMPONENT_ROUTE, &m.component_route);
    set(spin_header::CLIENT_ADDR, &client.to_string());
    headers.insert(spin_header::BASE_PATH, HeaderValue::from_static("/"));
    for (name, value) in &m.params {
        let name = format!("spin-path-match-{}", name.to_ascii_lowercase());
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(k, v);
        }
    }
}

/// A connection over `max_connections`: its first request is answered 503
/// with `Retry-After`, and it is closed.
async fn refuse_connection(stream: TcpStream, permit: OwnedSemaphorePermit) {
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        let id = RequestId::of(req.headers());
        async move {
            let mut response =
                busy_response("the server has as many connections open as it may; retry shortly");
            response.headers_mut().insert(REQUEST_ID, id.header());
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let serve = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(Connection::new(stream, permit)), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT * 2, serve).await;
}

/// Lets this process open as many files (sockets) as its hard limit allows,
/// so that `--max-connections` rather than a low default soft limit bounds
/// the connections.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A client connection as hyper reads and writes it. It does two things on
/// top of the socket:
/// - hyper answers a request head it cannot parse (a bad request line or
///   header, a head over its size limits) by itself, with a bare 400, 414 or
///   431 and no body; such a response is rewritten here into the API's error
///   JSON, so that every error the host sends has the one shape;
/// - when hyper is done with it, the socket is closed gracefully (see
///   `LINGER_TIME`), and only then is its connection permit given back.
struct Connection {
    stream: Option<TcpStream>,
    permit: Option<OwnedSemaphorePermit>,
    /// The rewritten response still to send, and how many bytes of hyper's
    /// it stands for.
    rewrite: Option<(Bytes, usize)>,
}

impl Connection {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream: Some(stream),
            permit: Some(permit),
            rewrite: None,
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("the stream lives until drop"))
    }

    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        loop {
            let Some((bytes, _)) = self.rewrite.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            if bytes.is_empty() {
                let (_, stands_for) = self.rewrite.take().expect("checked above");
                return Poll::Ready(Ok(stands_for));
            }
            let mut chunk = bytes.clone();
            let n = ready!(self.stream().poll_write(cx, &chunk))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            chunk.advance(n);
            if let Some((bytes, _)) = self.rewrite.as_mut() {
                *bytes = chunk;
            }
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.rewrite.is_none() {
            match automatic_error_as_json(buf) {
                Some(json) => self.rewrite = Some((json, buf.len())),
                None => return self.stream().poll_write(cx, buf),
            }
        }
        self.poll_rewrite(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.rewrite.is_none() {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let json = if total <= MAX_AUTOMATIC_HEAD {
                let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
                automatic_error_as_json(&joined)
            } else {
                None
            };
            match json {
                Some(json) => self.rewrite = Some((json, total)),
                None => return self.stream().poll_write_vectored(cx, bufs),
            }
        }
        self.poll_rewrite(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.rewrite.is_some() {
            ready!(self.poll_rewrite(cx))?;
        }
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.rewrite.is_some() {
            ready!(self.poll_rewrite(cx))?;
        }
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let (Some(mut stream), permit) = (self.stream.take(), self.permit.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _permit = permit;
            let _ = stream.shutdown().await;
            let drain = async {
                let mut buf = vec![0u8; 16 << 10];
                let mut left = LINGER_BYTES;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 && n < left => left -= n,
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER_TIME, drain).await;
        });
    }
}

/// hyper's automatic answers are one short head with no body.
const MAX_AUTOMATIC_HEAD: usize = 512;

/// When `bytes` are exactly one of hyper's automatic answers to a request it
/// could not parse (status 400, 414 or 431, and no headers but
/// `content-length: 0`, `date` and `connection: close`), the same answer
/// with the API's error JSON as its body.
fn automatic_error_as_json(bytes: &[u8]) -> Option<Bytes> {
    if bytes.len() > MAX_AUTOMATIC_HEAD || !bytes.starts_with(b"HTTP/1.") {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let head = text.strip_suffix("\r\n\r\n")?;
    if head.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    let (code, message) = match status {
        400 => (
            3,
            "the request is not valid HTTP/1.1 (request line or header)",
        ),
        414 => (8, "the request target is longer than this server accepts"),
        431 => (8, "the request head is larger than this server accepts"),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty_body = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") && value == "0" {
            empty_body = true;
        } else if name.eq_ignore_ascii_case("date")
            || (name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close"))
        {
            kept.push(line);
        } else {
            return None;
        }
    }
    if !empty_body {
        return None;
    }
    let body = serde_json::json!({ "code": code, "message": message, "details": [] }).to_string();
    let mut out = String::with_capacity(256 + body.len());
    out.push_str(status_line);
    out.push_str("\r\ncontent-type: application/json\r\n");
    // The request could not be read, so it named no id of its own.
    out.push_str("x-request-id: ");
    out.push_str(RequestId::new().as_str());
    out.push_str("\r\n");
    out.push_str(&format!("content-length: {}\r\n", body.len()));
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "localhost",
            "127.0.0.1:3000",
            "api.example.org",
            "a-b.c:1",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]:65535",
        ] {
            assert!(valid_authority(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "x/slurm/open/v0.0.42/basalt/nodes?",
            "user@host",
            "user:pw@host:1",
            "host:",
            "host:abc",
            "host:70000",
            "host:1:2",
            "host%2f",
            "[::1",
            "[nothost]:1",
            "[::1]x",
            "[::1]:",
            ":80",
            "host?",
            "host#",
            "h\u{e9}",
        ] {
            assert!(valid_authority(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn automatic_errors_become_json() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\n\r\n";
        let json = automatic_error_as_json(raw).expect("rewritten");
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("date: Sun"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], 3);
        // Anything else is left alone.
        assert!(automatic_error_as_json(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
        )
        .is_none());
        assert!(automatic_error_as_json(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error_as_json(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}"
        )
        .is_none());
    }
}

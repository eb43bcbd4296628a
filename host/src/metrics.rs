//! Operator metrics: Prometheus text at `GET /metrics` on the operator
//! listener (`s3m up --operator-listen`), never on the public one.
//!
//! Series (README, "Operations"):
//! - `s3m_http_requests_total{component,route,status}` and
//!   `s3m_http_request_duration_seconds{component,route}` (time to the
//!   response head); requests the host answers before routing have
//!   `component="none",route="none"`;
//! - `s3m_requests_in_flight`, `s3m_requests_max`, `s3m_instances_in_use`,
//!   `s3m_instances_max`: the request and component-instance pools;
//! - `s3m_capability_calls_total{capability,function,outcome}` (outcome ok,
//!   refused, error) and `s3m_capability_call_duration_seconds{capability,function}`,
//!   for native and gateway calls alike;
//! - `s3m_tokens_used_total`, `s3m_tokens_refused_total{reason}`: the host's
//!   own token checks (components check tokens themselves too; those are not
//!   seen here); `s3m_tokens_minted_total`: tokens `s3m token create` minted
//!   on this key-value store;
//! - `s3m_jobs{resource,state}` (schedulers that can count cheaply: `local`)
//!   and `s3m_broker_clusters{engine,health}`, refreshed at each scrape;
//! - `s3m_workflows_driven`, `s3m_workflows_finished_total{phase}` and
//!   `s3m_workflow_nodes_finished_total{phase}`: the workflow engine.
//!
//! Label values are the host's own (component ids, spin.toml routes, status
//! codes, fixed names), never anything a client chose.

use crate::engine::App;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The label value of a request the host answered before routing it.
pub const NONE: &str = "none";

/// The key, in the token store, of the number of tokens `s3m token create`
/// minted there (the CLI is another process: the count lives beside the
/// tokens, and the host reads it at each scrape).
pub const MINTED_KEY: &str = "s3m-metrics/tokens-minted";

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    requests_in_flight: IntGauge,
    requests_max: IntGauge,
    instances_in_use: IntGauge,
    instances_max: IntGauge,
    capability_calls: IntCounterVec,
    capability_duration: HistogramVec,
    tokens_used: IntCounter,
    tokens_refused: IntCounterVec,
    tokens_minted: IntCounter,
    jobs: IntGaugeVec,
    broker_clusters: IntGaugeVec,
    workflows_driven: IntGauge,
    workflows_finished: IntCounterVec,
    workflow_steps: IntCounterVec,
    pools: OnceLock<Pools>,
}

/// The server's semaphores, read at each scrape.
struct Pools {
    in_flight: Arc<Semaphore>,
    in_flight_max: usize,
    instances: Arc<Semaphore>,
    instances_max: usize,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauges(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0,
        ]),
        labels,
    )
    .expect("a valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let tokens_used = IntCounter::new(
            "s3m_tokens_used_total",
            "Capability calls for a project whose token the host checked and accepted",
        )
        .expect("a valid metric");
        r.register(Box::new(tokens_used.clone()))
            .expect("registered once");
        let tokens_minted = IntCounter::new(
            "s3m_tokens_minted_total",
            "Tokens `s3m token create` minted on this host's key-value store (read at scrape)",
        )
        .expect("a valid metric");
        r.register(Box::new(tokens_minted.clone()))
            .expect("registered once");
        Self {
            http_requests: counter(
                &r,
                "s3m_http_requests_total",
                "Requests answered on the public listener, by component, spin.toml route and status",
                &["component", "route", "status"],
            ),
            http_duration: histogram(
                &r,
                "s3m_http_request_duration_seconds",
                "Time from a request's head to its response's head, by component and route",
                &["component", "route"],
            ),
            requests_in_flight: gauge(&r, "s3m_requests_in_flight", "Requests being handled"),
            requests_max: gauge(
                &r,
                "s3m_requests_max",
                "Requests that may be handled at once (--max-concurrent-requests)",
            ),
            instances_in_use: gauge(
                &r,
                "s3m_instances_in_use",
                "Component instances alive (or reserved for a request)",
            ),
            instances_max: gauge(
                &r,
                "s3m_instances_max",
                "Component instances that may be alive at once (--max-instances)",
            ),
            capability_calls: counter(
                &r,
                "s3m_capability_calls_total",
                "Facility capability calls (native and gateway), by capability, function and outcome (ok, refused, error)",
                &["capability", "function", "outcome"],
            ),
            capability_duration: histogram(
                &r,
                "s3m_capability_call_duration_seconds",
                "Time of a facility capability call, by capability and function",
                &["capability", "function"],
            ),
            tokens_used,
            tokens_refused: counter(
                &r,
                "s3m_tokens_refused_total",
                "Tokens the host refused for a capability call, by reason",
                &["reason"],
            ),
            tokens_minted,
            jobs: gauges(
                &r,
                "s3m_jobs",
                "Jobs known to a scheduler that counts them cheaply (local), by resource and state",
                &["resource", "state"],
            ),
            workflows_driven: gauge(
                &r,
                "s3m_workflows_driven",
                "Workflows this host's engine is advancing now",
            ),
            workflows_finished: counter(
                &r,
                "s3m_workflows_finished_total",
                "Workflows this host's engine finished, by phase (Succeeded, Failed, Error)",
                &["phase"],
            ),
            workflow_steps: counter(
                &r,
                "s3m_workflow_nodes_finished_total",
                "Workflow leaf nodes (jobs, built-ins) that ended, by phase",
                &["phase"],
            ),
            broker_clusters: gauges(
                &r,
                "s3m_broker_clusters",
                "Broker clusters recorded, by engine and health",
                &["engine", "health"],
            ),
            registry: r,
            pools: OnceLock::new(),
        }
    }

    /// One request answered on the public listener.
    pub fn request(&self, component: &str, route: &str, status: http::StatusCode, took: Duration) {
        self.http_requests
            .with_label_values(&[component, route, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[component, route])
            .observe(took.as_secs_f64());
    }

    /// The server's pools, for the gauges (once; the first server wins).
    pub fn watch_pools(
        &self,
        in_flight: Arc<Semaphore>,
        in_flight_max: usize,
        instances: Arc<Semaphore>,
        instances_max: usize,
    ) {
        let _ = self.pools.set(Pools {
            in_flight,
            in_flight_max,
            instances,
            instances_max,
        });
    }

    pub fn workflow_driven(&self, delta: i64) {
        self.workflows_driven.add(delta);
    }

    /// `phase` is one of Argo's few phase names, never a client's text.
    pub fn workflow_finished(&self, phase: &str) {
        self.workflows_finished.with_label_values(&[phase]).inc();
    }

    pub fn workflow_node_finished(&self, phase: &str) {
        self.workflow_steps.with_label_values(&[phase]).inc();
    }

    pub fn token_used(&self) {
        self.tokens_used.inc();
    }

    pub fn token_refused(&self, reason: &'static str) {
        self.tokens_refused.with_label_values(&[reason]).inc();
    }

    /// Refreshes the gauges read from the providers, and renders every series.
    async fn render(&self, app: &App) -> String {
        if let Some(p) = self.pools.get() {
            let used = |s: &Semaphore, max: usize| max.saturating_sub(s.available_permits()) as i64;
            self.requests_in_flight
                .set(used(&p.in_flight, p.in_flight_max));
            self.requests_max.set(p.in_flight_max as i64);
            self.instances_in_use
                .set(used(&p.instances, p.instances_max));
            self.instances_max.set(p.instances_max as i64);
        }
        self.jobs.reset();
        for (resource, provider) in app.services.schedulers.iter() {
            for (state, n) in provider.job_counts().unwrap_or_default() {
                self.jobs
                    .with_label_values(&[resource, state.as_str()])
                    .set(n as i64);
            }
        }
        self.broker_clusters.reset();
        for ((engine, health), n) in app.services.brokers.counts().await {
            self.broker_clusters
                .with_label_values(&[engine, health])
                .set(n as i64);
        }
        if let Ok(store) = app
            .services
            .key_value
            .get(crate::admin::principal::TOKEN_STORE)
        {
            if let Ok(Some(bytes)) = store.get(MINTED_KEY).await {
                let minted = crate::providers::key_value::sqlite::decode_counter(&bytes)
                    .unwrap_or(0)
                    .max(0) as u64;
                let seen = self.tokens_minted.get();
                if minted > seen {
                    self.tokens_minted.inc_by(minted - seen);
                }
            }
        }
        let mut out = Vec::with_capacity(16 << 10);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding the metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counts the capability calls a Store made (the token checks of one call
/// count once, whatever else it calls).
pub struct Call {
    capability: &'static str,
    function: &'static str,
    started: Instant,
}

/// What a capability's error case means for the metrics and the audit log.
pub trait CallError {
    /// The WIT case's name (`Permission`, `NotFound`, ...).
    fn case(&self) -> &'static str;
    /// Its message (never a token).
    fn message(&self) -> &str;
    /// `refused` when the host refused the call, else `error`.
    fn outcome(&self) -> &'static str {
        if self.case() == "Permission" {
            "refused"
        } else {
            "error"
        }
    }
}

impl Call {
    pub fn start(capability: &'static str, function: &'static str) -> Self {
        Self {
            capability,
            function,
            started: Instant::now(),
        }
    }

    /// `capability.function`, the audit log's action.
    pub fn action(&self) -> String {
        format!("{}.{}", self.capability, self.function)
    }

    /// Records the call's outcome and time.
    pub fn done<T, E: CallError>(&self, r: &Result<T, E>) {
        self.finish(match r {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        });
    }

    /// Records the call with `outcome` (ok, refused, error).
    pub fn finish(&self, outcome: &str) {
        let m = get();
        m.capability_calls
            .with_label_values(&[self.capability, self.function, outcome])
            .inc();
        m.capability_duration
            .with_label_values(&[self.capability, self.function])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve_operator(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    use bytes::Bytes;
    use http_body_util::Full;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("operator listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let response = if req.uri().path() == "/metrics"
                            && matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD)
                        {
                            hyper::Response::builder()
                                .header("content-type", TextEncoder::new().format_type())
                                .body(Full::new(Bytes::from(get().render(&app).await)))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from_static(
                                    b"the operator listener serves GET /metrics\n",
                                )))
                        };
                        Ok::<_, std::convert::Infallible>(response.expect("a valid response"))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

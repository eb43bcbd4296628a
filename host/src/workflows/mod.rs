//! The workflow engine: the host drives every active workflow by itself, as
//! the brokers' reaper runs clusters. The workflows component only writes
//! what users ask into key-value (s3m_workflow::store); the engine finds it
//! there, holds a lease on each workflow it advances (so two hosts on one
//! Redis never both do), walks it (walk.rs), launches and polls its leaves
//! (jobs, brokers, HTTP, timers) with the submitter's project and token
//! permissions, and writes status back after every step.
//!
//! Crash safety: before a side effect the leaf is written as `Launching`
//! with an idempotency key (a job's comment, a broker's name); a host that
//! restarts finds a `Launching` leaf's job or broker before it would
//! submit or provision again, so a kill -9 never doubles either.

mod leaves;
pub mod state;
pub mod walk;

use crate::capabilities::key_value::Store;
use crate::capabilities::outbound_http::OutboundHooks;
use crate::state::Services;
use s3m_workflow::model::{phase, WorkflowStatus};
use s3m_workflow::store::{self, Doc, Run};
use state::{EngineState, Stage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a lease lasts without renewal.
const LEASE_MS: i64 = 15_000;
/// How often running jobs and brokers are looked at without an event.
const POLL_MS: i64 = 1_000;
/// How often the engine reads the store's event counter when no guest of
/// this host has written to the store: what this catches are the writes of
/// another host sharing the store (a user's delete or retry sent to the
/// host that does not hold the workflow's lease). This host's own guests'
/// writes wake it at once ([`KeyValueStores::written`]).
///
/// [`KeyValueStores::written`]: crate::capabilities::key_value::KeyValueStores::written
const OTHER_HOSTS_POLL: Duration = Duration::from_millis(250);

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub struct Engine {
    store: Arc<dyn Store>,
    tokens: Arc<dyn Store>,
    services: Arc<Services>,
    outbound: OutboundHooks,
    default_resource: String,
    host_id: String,
    http: reqwest::Client,
    /// Workflows being driven here, by key, with what wakes them.
    active: Mutex<HashMap<String, Arc<Notify>>>,
    /// Running jobs' workflows: (resource, job id) -> its wake-up.
    watch: Mutex<HashMap<(String, u32), Arc<Notify>>>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Next {
    Done,
    At(i64),
}

impl Engine {
    /// Starts the engine: resumes every unfinished workflow in the store
    /// and watches for new ones, woken by `written` (the store's
    /// [`KeyValueStores::written`]). `outbound` is the workflows component's
    /// `allowed_outbound_hosts` (the `http` built-in's reach).
    ///
    /// [`KeyValueStores::written`]: crate::capabilities::key_value::KeyValueStores::written
    pub fn start(
        store: Arc<dyn Store>,
        written: Arc<Notify>,
        tokens: Arc<dyn Store>,
        services: Arc<Services>,
        outbound: OutboundHooks,
        default_resource: String,
    ) -> Arc<Self> {
        let engine = Arc::new(Self {
            store,
            tokens,
            services,
            outbound,
            default_resource,
            host_id: uuid::Uuid::new_v4().simple().to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            active: Mutex::new(HashMap::new()),
            watch: Mutex::new(HashMap::new()),
        });
        for (resource, provider) in engine
            .services
            .schedulers
            .iter()
            .map(|(r, p)| (r.to_string(), p.clone()))
            .collect::<Vec<_>>()
        {
            if let Some(mut ended) = provider.ended() {
                let e = engine.clone();
                tokio::spawn(async move {
                    loop {
                        match ended.recv().await {
                            Ok(id) => {
                                let n = e
                                    .watch
                                    .lock()
                                    .unwrap()
                                    .get(&(resource.clone(), id))
                                    .cloned();
                                if let Some(n) = n {
                                    n.notify_one();
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                // Missed some: wake everything with jobs.
                                let all: Vec<_> =
                                    e.watch.lock().unwrap().values().cloned().collect();
                                all.iter().for_each(|n| n.notify_one());
                            }
                            Err(_) => return,
                        }
                    }
                });
            }
        }
        let e = engine.clone();
        tokio::spawn(async move { e.discover(written).await });
        engine
    }

    /// Finds workflows to drive: at start and every few seconds all of
    /// them; those the component marked (its event counter moves) as soon
    /// as one of this host's guests writes to the store, or within
    /// [`OTHER_HOSTS_POLL`] when another host's did.
    async fn discover(self: Arc<Self>, written: Arc<Notify>) {
        let mut last_events: Option<Vec<u8>> = None;
        let mut last_full = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            let events = self.store.get(store::EVENTS).await.ok().flatten();
            let full = last_full.elapsed() > Duration::from_secs(5);
            if events != last_events || full {
                last_events = events;
                if let Ok(keys) = self.store.keys().await {
                    for key in &keys {
                        if let Some(rest) = key.strip_prefix(store::WAKE_PREFIX) {
                            let _ = self.store.delete(key).await;
                            self.drive(rest);
                        } else if full {
                            if let Some(rest) = key.strip_prefix(store::DOC_PREFIX) {
                                if !self.active.lock().unwrap().contains_key(rest)
                                    && self.needs_driving(rest).await
                                {
                                    self.drive(rest);
                                }
                            }
                        }
                    }
                }
                if full {
                    last_full = std::time::Instant::now();
                }
            }
            // A write made while this pass ran left a permit: the next
            // wait returns at once, so it is never missed.
            let _ = tokio::time::timeout(OTHER_HOSTS_POLL, written.notified()).await;
        }
    }

    async fn needs_driving(&self, key: &str) -> bool {
        let Some((project, name)) = key.split_once('/') else {
            return false;
        };
        let Ok(Some(doc)) = self.store.get(&store::doc_key(project, name)).await else {
            return false;
        };
        let Ok(doc) = serde_json::from_slice::<Doc>(&doc) else {
            return false;
        };
        let run = self.load_run(project, name).await;
        let engine: EngineState = serde_json::from_value(run.engine.clone()).unwrap_or_default();
        doc.control.deleting
            || doc.control.retries > engine.retries_seen
            || doc.control.resumes > engine.resumes_seen
            || !phase::fulfilled(&run.status.phase)
    }

    /// Drives `project/name` here (once), or wakes it if it already is.
    fn drive(self: &Arc<Self>, key: &str) {
        let Some((project, name)) = key.split_once('/') else {
            return;
        };
        let (project, name) = (project.to_string(), name.to_string());
        let wake = {
            let mut active = self.active.lock().unwrap();
            if let Some(n) = active.get(key) {
                n.notify_one();
                return;
            }
            let n = Arc::new(Notify::new());
            active.insert(key.to_string(), n.clone());
            n
        };
        let e = self.clone();
        let key = key.to_string();
        crate::metrics::get().workflow_driven(1);
        tokio::spawn(async move {
            loop {
                let next = match e.operate(&project, &name, &wake).await {
                    Ok(n) => n,
                    Err(err) => {
                        tracing::error!(workflow = %name, project = %project, error = %err, "workflow step failed; retrying in 1 s");
                        Next::At(now_ms() + 1000)
                    }
                };
                match next {
                    Next::Done => break,
                    Next::At(at) => {
                        let wait = (at - now_ms()).clamp(0, POLL_MS * 5) as u64;
                        let _ = tokio::time::timeout(Duration::from_millis(wait), wake.notified())
                            .await;
                    }
                }
            }
            crate::metrics::get().workflow_driven(-1);
            e.active.lock().unwrap().remove(&key);
            e.watch
                .lock()
                .unwrap()
                .retain(|_, n| !Arc::ptr_eq(n, &wake));
        });
    }

    async fn load_run(&self, project: &str, name: &str) -> Run {
        match self.store.get(&store::run_key(project, name)).await {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
            _ => Run::default(),
        }
    }

    async fn save_run(
        &self,
        project: &str,
        name: &str,
        status: &WorkflowStatus,
        engine: &EngineState,
    ) -> anyhow::Result<()> {
        let run = Run {
            status: status.clone(),
            engine: serde_json::to_value(engine)?,
        };
        self.store
            .set(&store::run_key(project, name), &serde_json::to_vec(&run)?)
            .await
            .map_err(|e| anyhow::anyhow!("key-value: {e}"))
    }

    /// Takes or renews the lease; false when another live host holds it.
    async fn lease(&self, project: &str, name: &str) -> anyhow::Result<bool> {
        let key = store::lease_key(project, name);
        let current = self
            .store
            .get(&key)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(bytes) = &current {
            let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
            let holder = v["host"].as_str().unwrap_or_default();
            let until = v["until"].as_i64().unwrap_or(0);
            if holder != self.host_id && until > now_ms() {
                return Ok(false);
            }
            if holder == self.host_id && until - now_ms() > LEASE_MS * 2 / 3 {
                return Ok(true);
            }
        }
        let value = serde_json::to_vec(
            &serde_json::json!({"host": self.host_id, "until": now_ms() + LEASE_MS}),
        )?;
        self.store
            .compare_and_swap(&key, current.as_deref(), &value)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// One look at a workflow: walk, launch and poll until nothing more
    /// happens now; write status. Returns when to look again.
    async fn operate(
        self: &Arc<Self>,
        project: &str,
        name: &str,
        wake: &Arc<Notify>,
    ) -> anyhow::Result<Next> {
        let Some(bytes) = self
            .store
            .get(&store::doc_key(project, name))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
        else {
            return Ok(Next::Done);
        };
        let doc: Doc = serde_json::from_slice(&bytes)?;
        if !self.lease(project, name).await? {
            return Ok(Next::At(now_ms() + LEASE_MS / 3));
        }
        // Long steps (a broker that takes a minute to start) keep the lease.
        let _renewal = {
            let (e, p, n) = (self.clone(), project.to_string(), name.to_string());
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(LEASE_MS as u64 / 3)).await;
                    if let Err(err) = e.lease(&p, &n).await {
                        tracing::warn!(workflow = %n, error = %err, "could not renew a workflow's lease");
                    }
                }
            }))
        };
        let run = self.load_run(project, name).await;
        let mut status = run.status;
        let mut engine: EngineState = serde_json::from_value(run.engine).unwrap_or_default();
        let cx_caller = leaves::caller(&doc.submitter.project);

        if doc.control.deleting {
            self.cancel_all(
                &doc,
                &mut status,
                &mut engine,
                &cx_caller,
                "workflow deleted",
            )
            .await;
            for key in [
                store::run_key(project, name),
                store::doc_key(project, name),
                store::lease_key(project, name),
            ] {
                let _ = self.store.delete(&key).await;
            }
            tracing::info!(workflow = %name, project = %project, "workflow deleted");
            return Ok(Next::Done);
        }
        let before = serde_json::to_vec(&status)?;
        if doc.control.retries > engine.retries_seen {
            retry_failed(&mut status, &mut engine);
            engine.retries_seen = doc.control.retries;
        }
        if doc.control.resumes > engine.resumes_seen {
            let now = walk::rfc3339(now_ms());
            for (id, leaf) in &engine.leaves {
                if matches!(leaf.action, state::Action::Suspend { .. }) {
                    if let Some(n) = status.nodes.get_mut(id) {
                        if n.phase == phase::RUNNING {
                            n.phase = phase::SUCCEEDED.into();
                            n.finished_at = Some(now.clone());
                            n.message = "resumed".into();
                        }
                    }
                }
            }
            engine.resumes_seen = doc.control.resumes;
        }
        if phase::fulfilled(&status.phase) && serde_json::to_vec(&status)? == before {
            return Ok(Next::Done);
        }
        // Never trust what is stored: the document is checked again.
        if let Err(invalid) = s3m_workflow::validate(&doc.workflow) {
            status.phase = phase::ERROR.into();
            status.message = format!("invalid workflow: {invalid}");
            status.finished_at = Some(walk::rfc3339(now_ms()));
            self.save_run(project, name, &status, &engine).await?;
            return Ok(Next::Done);
        }
        if status.started_at.is_none() {
            status.started_at = Some(walk::rfc3339(now_ms()));
        }
        status.phase = phase::RUNNING.into();
        status.finished_at = None;
        status.message.clear();

        let mut shutdown = doc.workflow.spec.shutdown.clone();
        if let (Some(d), Some(start)) = (
            doc.workflow.spec.active_deadline_seconds,
            status.started_at.as_deref(),
        ) {
            let start = chrono::DateTime::parse_from_rfc3339(start)
                .map(|t| t.timestamp_millis())
                .unwrap_or(0);
            if shutdown.is_none() && now_ms() > start + d * 1000 {
                shutdown = Some("Deadline".into());
            }
        }
        if let Some(s) = &shutdown {
            if !engine.shut_down {
                let why = if s == "Deadline" {
                    "the workflow's activeDeadlineSeconds passed".to_string()
                } else {
                    format!("workflow shutdown with strategy: {s}")
                };
                self.cancel_all(&doc, &mut status, &mut engine, &cx_caller, &why)
                    .await;
                engine.shut_down = true;
            }
        }

        let uid = doc.workflow.metadata.uid.clone().unwrap_or_default();
        let created = doc
            .workflow
            .metadata
            .creation_timestamp
            .clone()
            .unwrap_or_default();
        let mut wake_at: Option<i64>;
        let mut decided: Option<(String, String)>;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let now = now_ms();
            let cx = walk::Context {
                wf: &doc.workflow,
                name,
                project,
                uid: &uid,
                created: &created,
                now_ms: now,
                shutdown: shutdown.clone(),
                suspended: doc.workflow.spec.suspend == Some(true),
                default_resource: &self.default_resource,
            };
            let mut w = walk::Walk::new(&cx, &mut status, &mut engine);
            decided = w.run();
            wake_at = w.wake_at;
            let walked = w.changed;
            // Launch what is new, look at what runs.
            let acted = self
                .advance(
                    &doc,
                    project,
                    name,
                    &uid,
                    &mut status,
                    &mut engine,
                    wake,
                    &mut wake_at,
                )
                .await?;
            if decided.is_some() || (!walked && !acted) || rounds > 50 {
                break;
            }
        }
        let leaves_total = engine.leaves.len();
        let leaves_done = engine
            .leaves
            .keys()
            .filter(|id| {
                status
                    .nodes
                    .get(*id)
                    .is_some_and(|n| phase::fulfilled(&n.phase))
            })
            .count();
        status.progress = format!("{leaves_done}/{leaves_total}");
        let next = match decided {
            Some((p, m)) => {
                status.phase = p;
                status.message = m;
                status.finished_at = Some(walk::rfc3339(now_ms()));
                tracing::info!(workflow = %name, project = %project, phase = %status.phase, "workflow finished");
                crate::metrics::get().workflow_finished(&status.phase);
                audit(
                    &doc,
                    "workflow.finish",
                    Ok(()),
                    &format!("{}: {}", name, status.phase),
                );
                Next::Done
            }
            None => Next::At(wake_at.unwrap_or(now_ms() + POLL_MS)),
        };
        if serde_json::to_vec(&status)? != before || matches!(next, Next::Done) {
            self.save_run(project, name, &status, &engine).await?;
        }
        if matches!(next, Next::Done) {
            let _ = self.store.delete(&store::lease_key(project, name)).await;
        }
        Ok(next)
    }

    /// Stops what a workflow runs: its jobs are cancelled and its running
    /// nodes fail with `why`; brokers it deployed are deleted unless kept.
    async fn cancel_all(
        &self,
        doc: &Doc,
        status: &mut WorkflowStatus,
        engine: &mut EngineState,
        caller: &crate::capabilities::scheduler::Caller,
        why: &str,
    ) {
        let now = walk::rfc3339(now_ms());
        for (id, leaf) in engine.leaves.iter_mut() {
            let Some(n) = status.nodes.get_mut(id) else {
                continue;
            };
            if phase::fulfilled(&n.phase) {
                continue;
            }
            if let Some((resource, job)) = &leaf.job {
                if let Ok(s) = self.services.schedulers.get(resource) {
                    let r = s.cancel(caller, *job, 9).await;
                    if let Err(e) = &r {
                        tracing::warn!(job = job, resource = %resource, error = ?e, "could not cancel a workflow's job");
                    }
                    audit(
                        doc,
                        "workflow.scheduler.cancel",
                        r.as_ref().map(|_| ()).map_err(|_| "cancel failed"),
                        &format!("{resource}/{job}"),
                    );
                }
            }
            leaf.stage = Stage::Done;
            n.phase = phase::FAILED.into();
            n.message = why.to_string();
            n.finished_at = Some(now.clone());
        }
        for b in std::mem::take(&mut engine.brokers) {
            if b.keep {
                engine.brokers.push(b);
                continue;
            }
            let Some(eng) = leaves::engine_of(&b.engine) else {
                continue;
            };
            match self
                .services
                .brokers
                .delete(&doc.submitter.project, eng, &b.name)
                .await
            {
                Ok(()) => {
                    tracing::info!(cluster = %b.name, project = %doc.submitter.project, "deleted the broker a stopped workflow deployed")
                }
                Err(e) => {
                    tracing::warn!(cluster = %b.name, error = %e, "could not delete a workflow's broker")
                }
            }
        }
    }
}

/// One audit line for a side effect the engine took for a workflow's
/// submitter (audit.rs): who (the project and token id, never the token),
/// what, on which object, with which result.
pub(crate) fn audit(doc: &Doc, action: &str, result: Result<(), &str>, object: &str) {
    use serde_json::Value;
    let (outcome, reason) = match result {
        Ok(()) => ("ok", Value::Null),
        Err(r) => ("error", Value::String(r.to_string())),
    };
    crate::audit::record(
        action,
        outcome,
        &[
            ("project", Value::String(doc.submitter.project.clone())),
            ("jti", Value::String(doc.submitter.token_id.clone())),
            ("component", Value::String("workflows".into())),
            (
                "workflow",
                crate::audit::opt(doc.workflow.metadata.name.as_deref()),
            ),
            ("object", Value::String(object.to_string())),
            ("reason", reason),
        ],
    );
}

/// Argo's retry: failed and errored nodes (and what they omitted or
/// skipped, and the DAG/steps nodes above them) are forgotten, so the next
/// pass runs them again; what succeeded stays.
fn retry_failed(status: &mut WorkflowStatus, engine: &mut EngineState) {
    let keep: Vec<String> = status
        .nodes
        .iter()
        .filter(|(_, n)| {
            n.phase == phase::SUCCEEDED
                && !matches!(
                    n.node_type.as_str(),
                    "DAG" | "Steps" | "StepGroup" | "TaskGroup" | "Retry"
                )
        })
        .map(|(id, _)| id.clone())
        .collect();
    status.nodes.retain(|id, _| keep.contains(id));
    for n in status.nodes.values_mut() {
        n.children.retain(|c| keep.contains(c));
    }
    engine.leaves.retain(|id, _| keep.contains(id));
    engine.secrets.retain(|id, _| keep.contains(id));
    engine.shut_down = false;
    status.phase = phase::RUNNING.into();
    status.finished_at = None;
    status.message.clear();
}

//! The side effects of a workflow's leaves: batch jobs (container, script
//! and submit-job), the built-ins (brokers, job waits, HTTP, sleep) and
//! timers. Each acts for the submitter's project and only while the
//! submitter's token still may (its record is checked before each effect).

use super::state::{Action, Deployed, EngineState, Leaf, Stage};
use super::{now_ms, Engine, POLL_MS};
use crate::capabilities::brokers::registry::{Engine as BrokerEngine, HealthStatus, SyncStatus};
use crate::capabilities::scheduler::{Caller, JobDescription, JobInfo, JobState};
use s3m_workflow::model::{phase, NodeIo, NodeParameter, NodeStatus, WorkflowStatus};
use s3m_workflow::store::Doc;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Notify;

/// The most of a job's stdout (and of an HTTP answer) kept as a result.
const RESULT_LIMIT: u64 = 256 * 1024;

pub fn caller(project: &str) -> Caller {
    Caller {
        project: project.to_string(),
        username: crate::providers::scheduler::common::project_user(project),
        token: String::new(),
    }
}

pub fn engine_of(s: &str) -> Option<BrokerEngine> {
    match s {
        "redis" => Some(BrokerEngine::Redis),
        "rabbitmq" => Some(BrokerEngine::Rabbitmq),
        _ => None,
    }
}

/// Slurm's name of a job state.
pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "PENDING",
        JobState::Running => "RUNNING",
        JobState::Suspended => "SUSPENDED",
        JobState::Completed => "COMPLETED",
        JobState::Cancelled => "CANCELLED",
        JobState::Failed => "FAILED",
        JobState::Timeout => "TIMEOUT",
        JobState::NodeFail => "NODE_FAIL",
        JobState::Preempted => "PREEMPTED",
        JobState::BootFail => "BOOT_FAIL",
        JobState::Deadline => "DEADLINE",
        JobState::OutOfMemory => "OUT_OF_MEMORY",
    }
}

fn ended(s: JobState) -> bool {
    !matches!(
        s,
        JobState::Pending | JobState::Running | JobState::Suspended
    )
}

/// The quoted form of a word for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What a leaf's effect did.
enum Outcome {
    /// Nothing changed.
    Same,
    /// The node ended.
    Ended {
        phase: &'static str,
        message: String,
        outputs: Option<NodeIo>,
        secrets: BTreeMap<String, String>,
    },
    /// The node is running (a job started).
    Running(String),
}

fn fail(message: impl Into<String>) -> Outcome {
    Outcome::Ended {
        phase: phase::FAILED,
        message: message.into(),
        outputs: None,
        secrets: BTreeMap::new(),
    }
}

fn error(message: impl Into<String>) -> Outcome {
    Outcome::Ended {
        phase: phase::ERROR,
        message: message.into(),
        outputs: None,
        secrets: BTreeMap::new(),
    }
}

fn params(pairs: &[(&str, String)]) -> Vec<NodeParameter> {
    pairs
        .iter()
        .map(|(k, v)| NodeParameter {
            name: k.to_string(),
            value: v.clone(),
        })
        .collect()
}

impl Engine {
    /// Launches new leaves and looks at running ones. Returns whether a
    /// node changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn advance(
        self: &Arc<Self>,
        doc: &Doc,
        project: &str,
        name: &str,
        uid: &str,
        status: &mut WorkflowStatus,
        engine: &mut EngineState,
        wake: &Arc<Notify>,
        wake_at: &mut Option<i64>,
    ) -> anyhow::Result<bool> {
        let ids: Vec<String> = engine
            .leaves
            .iter()
            .filter(|(id, leaf)| {
                leaf.stage != Stage::Done
                    && !matches!(leaf.action, Action::Suspend { .. })
                    && status
                        .nodes
                        .get(*id)
                        .is_some_and(|n| !phase::fulfilled(&n.phase))
            })
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(false);
        }
        // Mark new side effects Launching and write that down first: a
        // restart then looks for them before doing them again.
        let mut launching = false;
        for id in &ids {
            let leaf = engine.leaves.get_mut(id).expect("listed");
            if leaf.stage == Stage::New && needs_idempotency(&leaf.action) {
                leaf.stage = Stage::Launching;
                if matches!(leaf.action, Action::Job { .. }) {
                    // The line that separates a job's stdout from its output
                    // files; kept so that an adopted job's output parses.
                    leaf.marker = format!("S3M-OUTPUTS-{}", uuid::Uuid::new_v4().simple());
                }
                launching = true;
            }
        }
        if launching {
            self.save_run(project, name, status, engine).await?;
        }
        let mut changed = false;
        let mut token_ok: Option<Result<crate::admin::principal::Principal, String>> = None;
        for id in ids {
            let mut leaf = engine.leaves.get(&id).cloned().expect("listed");
            let node = status.nodes.get(&id).cloned().expect("listed");
            let outcome = self
                .step_leaf(
                    doc,
                    project,
                    name,
                    uid,
                    &id,
                    &node,
                    &mut leaf,
                    &mut token_ok,
                    engine,
                    wake,
                    wake_at,
                )
                .await;
            engine.leaves.insert(id.clone(), leaf);
            let n = status.nodes.get_mut(&id).expect("listed");
            match outcome {
                Outcome::Same => {}
                Outcome::Running(m) => {
                    let m = match n.message.starts_with(super::walk::ALIAS_NOTE) {
                        true => format!("{}; {m}", super::walk::ALIAS_NOTE),
                        false => m,
                    };
                    if n.phase != phase::RUNNING || n.message != m {
                        n.phase = phase::RUNNING.into();
                        n.message = m;
                        changed = true;
                    }
                }
                Outcome::Ended {
                    phase: p,
                    message,
                    outputs,
                    secrets,
                } => {
                    if let Some(l) = engine.leaves.get_mut(&id) {
                        l.stage = Stage::Done;
                    }
                    n.phase = p.to_string();
                    crate::metrics::get().workflow_node_finished(p);
                    if !message.is_empty() || p != phase::SUCCEEDED {
                        n.message = match n.message.starts_with(super::walk::ALIAS_NOTE) {
                            true => format!("{}; {message}", super::walk::ALIAS_NOTE),
                            false => message,
                        };
                    }
                    if outputs.is_some() {
                        n.outputs = outputs;
                    }
                    n.finished_at = Some(super::walk::rfc3339(now_ms()));
                    if !secrets.is_empty() {
                        engine.secrets.insert(id.clone(), secrets);
                    }
                    changed = true;
                }
            }
        }
        Ok(changed)
    }

    /// Whether the submitter's token may still do `what` (its record:
    /// revoked, expired; its project; the permission).
    async fn allowed(
        &self,
        doc: &Doc,
        token_ok: &mut Option<Result<crate::admin::principal::Principal, String>>,
        needs: &[&str],
    ) -> Result<(), String> {
        if token_ok.is_none() {
            *token_ok = Some(
                crate::admin::principal::by_id(self.tokens.as_ref(), &doc.submitter.token_id).await,
            );
        }
        let p = match token_ok.as_ref().expect("set") {
            Ok(p) => p,
            Err(e) => {
                return Err(format!(
                    "the submitter's token cannot act: {}",
                    e.replace("the request's token", "it")
                ))
            }
        };
        if !p.project.eq_ignore_ascii_case(&doc.submitter.project) {
            return Err("the submitter's token is not this workflow's project's".into());
        }
        if !p.has_any(&["workflows"]) {
            return Err("the submitter's token no longer carries the workflows permission".into());
        }
        if !p.has_any(needs) {
            return Err(format!(
                "this task needs a token with {}; the submitter's has {}",
                needs.join(" or "),
                p.permissions.join(", ")
            ));
        }
        Ok(())
    }

    fn watch(&self, resource: &str, job: u32, wake: &Arc<Notify>) {
        self.watch
            .lock()
            .unwrap()
            .insert((resource.to_string(), job), wake.clone());
    }

    fn unwatch(&self, resource: &str, job: u32) {
        self.watch
            .lock()
            .unwrap()
            .remove(&(resource.to_string(), job));
    }

    #[allow(clippy::too_many_arguments)]
    async fn step_leaf(
        &self,
        doc: &Doc,
        project: &str,
        name: &str,
        uid: &str,
        id: &str,
        node: &NodeStatus,
        leaf: &mut Leaf,
        token_ok: &mut Option<Result<crate::admin::principal::Principal, String>>,
        engine: &mut EngineState,
        wake: &Arc<Notify>,
        wake_at: &mut Option<i64>,
    ) -> Outcome {
        // Providers act for the project as the token names it.
        let _ = project;
        let project = doc.submitter.project.as_str();
        let caller = caller(project);
        let soon = |w: &mut Option<i64>, ms: i64| {
            let at = now_ms() + ms;
            *w = Some(w.map_or(at, |x| x.min(at)));
        };
        let action = leaf.action.clone();
        match action {
            Action::Suspend { .. } => Outcome::Same,
            Action::Job {
                resource,
                image,
                argv,
                source,
                environment,
                working_dir,
                outputs,
                deadline_s,
                submit_only,
            } => {
                let scheduler = match self.services.schedulers.get(&resource) {
                    Ok(s) => s,
                    Err(e) => return error(format!("compute resource {resource:?}: {e:?}")),
                };
                // A retry of the workflow runs the node again: a new key.
                let key = format!("s3m-wf:{uid}:{id}:{}", engine.retries_seen);
                if leaf.stage != Stage::Running {
                    if let Err(m) = self.allowed(doc, token_ok, &["compute-ace"]).await {
                        return error(m);
                    }
                    // After a restart: the job may exist already.
                    let mut found = None;
                    if leaf.stage == Stage::Launching {
                        if let Ok(list) = scheduler.list_jobs(&caller).await {
                            found = list
                                .jobs
                                .iter()
                                .find(|j| j.comment == key)
                                .map(|j| j.job_id);
                        }
                    }
                    if leaf.marker.is_empty() {
                        leaf.marker = format!("S3M-OUTPUTS-{}", uuid::Uuid::new_v4().simple());
                    }
                    let marker = leaf.marker.clone();
                    let job_id = match found {
                        Some(j) => {
                            tracing::info!(workflow = %name, job = j, "adopted the job a previous run submitted");
                            j
                        }
                        None => {
                            let script = job_script(
                                name,
                                &node.display_name,
                                &image,
                                &argv,
                                source.as_deref(),
                                &outputs,
                                &marker,
                                submit_only,
                            );
                            let desc = JobDescription {
                                name: Some(cut_name(&format!("{name}-{}", node.display_name))),
                                comment: Some(key.clone()),
                                time_limit: deadline_s.map(|s| s.div_ceil(60).max(1) as u32),
                                environment: environment.clone(),
                                current_working_directory: working_dir.clone(),
                                ..empty_job()
                            };
                            match scheduler.submit(&caller, desc, script).await {
                                Ok(s) => {
                                    super::audit(
                                        doc,
                                        "workflow.scheduler.submit",
                                        Ok(()),
                                        &format!("{resource}/{}", s.job_id),
                                    );
                                    s.job_id
                                }
                                Err(e) => {
                                    super::audit(
                                        doc,
                                        "workflow.scheduler.submit",
                                        Err("refused by the scheduler"),
                                        &resource,
                                    );
                                    return fail(format!(
                                        "the job was refused: {}",
                                        scheduler_message(&e)
                                    ));
                                }
                            }
                        }
                    };
                    leaf.job = Some((resource.clone(), job_id));
                    leaf.stage = Stage::Running;
                    leaf.started_ms = Some(now_ms());
                    engine.leaves.insert(id.to_string(), leaf.clone());
                    if submit_only {
                        return Outcome::Ended {
                            phase: phase::SUCCEEDED,
                            message: String::new(),
                            outputs: Some(NodeIo {
                                parameters: params(&[
                                    ("JOB_ID", job_id.to_string()),
                                    ("resource", resource.clone()),
                                ]),
                                ..Default::default()
                            }),
                            secrets: BTreeMap::new(),
                        };
                    }
                    self.watch(&resource, job_id, wake);
                    soon(wake_at, POLL_MS);
                    let note = if image.is_empty() {
                        format!("job {job_id} on {resource}")
                    } else {
                        format!("job {job_id} on {resource}; image {image} not used: the command runs in the resource's own environment")
                    };
                    return Outcome::Running(note);
                }
                let Some((_, job_id)) = leaf.job.clone() else {
                    return error("a running leaf without a job");
                };
                self.watch(&resource, job_id, wake);
                let info = match scheduler.get(&caller, job_id).await {
                    Ok(i) => i,
                    Err(e) => {
                        soon(wake_at, POLL_MS);
                        tracing::warn!(workflow = %name, job = job_id, error = ?e, "cannot look at a workflow's job");
                        return Outcome::Same;
                    }
                };
                if !ended(info.state) {
                    soon(wake_at, POLL_MS);
                    if let (Some(d), Some(start)) = (deadline_s, leaf.started_ms) {
                        if now_ms() > start + d as i64 * 1000 {
                            let _ = scheduler.cancel(&caller, job_id, 9).await;
                            self.unwatch(&resource, job_id);
                            return fail("Step exceeded its deadline");
                        }
                    }
                    return Outcome::Same;
                }
                self.unwatch(&resource, job_id);
                let marker = leaf.marker.clone();
                let stdout = scheduler
                    .read_output(&caller, job_id, "", RESULT_LIMIT + 64 * 1024)
                    .await;
                job_outcome(&info, stdout, &marker, &outputs)
            }
            Action::Builtin {
                name: builtin,
                params: p,
            } => {
                self.builtin(
                    doc, project, &builtin, &p, leaf, token_ok, engine, wake, wake_at, &caller,
                )
                .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn builtin(
        &self,
        doc: &Doc,
        project: &str,
        builtin: &str,
        p: &BTreeMap<String, String>,
        leaf: &mut Leaf,
        token_ok: &mut Option<Result<crate::admin::principal::Principal, String>>,
        engine: &mut EngineState,
        wake: &Arc<Notify>,
        wake_at: &mut Option<i64>,
        caller: &Caller,
    ) -> Outcome {
        let _ = project;
        let project = doc.submitter.project.as_str();
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        let soon = |w: &mut Option<i64>, ms: i64| {
            let at = now_ms() + ms;
            *w = Some(w.map_or(at, |x| x.min(at)));
        };
        let started = *leaf.started_ms.get_or_insert_with(now_ms);
        match builtin {
            "sleep" => {
                let d = match s3m_workflow::model::parse_duration(&serde_json::Value::String(get(
                    "duration",
                ))) {
                    Ok(d) => d.as_millis() as i64,
                    Err(m) => return error(format!("duration: {m}")),
                };
                if now_ms() >= started + d {
                    return Outcome::Ended {
                        phase: phase::SUCCEEDED,
                        message: String::new(),
                        outputs: None,
                        secrets: BTreeMap::new(),
                    };
                }
                soon(wake_at, started + d - now_ms());
                Outcome::Running(String::new())
            }
            "deploy-streaming" => {
                let Some(eng) = engine_of(&get("engine")) else {
                    return error(format!("engine {:?}: use redis or rabbitmq", get("engine")));
                };
                let cname = get("name");
                let keep = get("keep") == "true";
                if leaf.stage != Stage::Running {
                    if let Err(m) = self.allowed(doc, token_ok, &["data-streaming"]).await {
                        return error(m);
                    }
                    let parse = |k: &str| -> Result<Vec<(String, serde_json::Value)>, String> {
                        let v: serde_json::Value = serde_json::from_str(&get(k))
                            .map_err(|_| format!("{k}: not a JSON object"))?;
                        Ok(v.as_object()
                            .ok_or(format!("{k}: not a JSON object"))?
                            .clone()
                            .into_iter()
                            .collect())
                    };
                    let settings = match parse("resourceSettings") {
                        Ok(s) => s
                            .into_iter()
                            .map(|(k, v)| (k, v.as_u64().unwrap_or(0) as u32))
                            .collect::<Vec<_>>(),
                        Err(m) => return error(m),
                    };
                    let flags = match parse("featureFlags") {
                        Ok(s) => s
                            .into_iter()
                            .map(|(k, v)| (k, v.as_bool().unwrap_or(false)))
                            .collect::<Vec<_>>(),
                        Err(m) => return error(m),
                    };
                    let adopt = leaf.stage == Stage::Launching
                        && self
                            .services
                            .brokers
                            .get(project, eng, &cname)
                            .await
                            .is_ok()
                        && engine.brokers.iter().any(|b| b.name == cname);
                    if !adopt {
                        // Recorded before provisioning: a restart finds it by name.
                        if !engine
                            .brokers
                            .iter()
                            .any(|b| b.name == cname && b.engine == eng.as_str())
                        {
                            engine.brokers.push(Deployed {
                                engine: eng.as_str().into(),
                                name: cname.clone(),
                                keep,
                            });
                        }
                        let provisioned = self
                            .services
                            .brokers
                            .provision(project, eng, &get("kind"), &cname, &settings, &flags)
                            .await;
                        super::audit(
                            doc,
                            "workflow.brokers.provision",
                            provisioned
                                .as_ref()
                                .map(|_| ())
                                .map_err(|_| "provisioning failed"),
                            &format!("{eng}/{cname}"),
                        );
                        if let Err(e) = provisioned {
                            engine
                                .brokers
                                .retain(|b| !(b.name == cname && b.engine == eng.as_str()));
                            return fail(format!("provisioning {eng} cluster {cname:?}: {e}"));
                        }
                    }
                    leaf.stage = Stage::Running;
                }
                let timeout =
                    s3m_workflow::model::parse_duration(&serde_json::Value::String(get("timeout")))
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(180_000);
                let record = match self.services.brokers.get(project, eng, &cname).await {
                    Ok(r) => r,
                    Err(e) => return fail(format!("{eng} cluster {cname:?}: {e}")),
                };
                if record.health_status != HealthStatus::Healthy {
                    // Given up by the broker service (its process kept
                    // exiting, or it passed the provider's start timeout):
                    // waiting out the step's own timeout would hide why.
                    if record.sync_status == SyncStatus::Failed {
                        return fail(format!(
                            "{eng} cluster {cname:?} failed to start: the host's log says why \
                             (look for \"the cluster did not become healthy\"); delete it and deploy again"
                        ));
                    }
                    if now_ms() > started + timeout {
                        return fail(format!(
                            "{eng} cluster {cname:?} was not healthy within {}",
                            get("timeout")
                        ));
                    }
                    soon(wake_at, 200);
                    return Outcome::Running(format!(
                        "waiting for {eng} cluster {cname:?} to become healthy"
                    ));
                }
                let public_url = s3m_wire::url::without_password(&record.url);
                let (host, port) = s3m_wire::url::host_port(&record.url)
                    .map(|(h, p)| (h, p.to_string()))
                    .unwrap_or_default();
                let mgmt = record
                    .mgmt_url
                    .as_deref()
                    .map(s3m_wire::url::without_password)
                    .unwrap_or_default();
                let mut secrets = BTreeMap::new();
                secrets.insert("password".to_string(), record.password.clone());
                Outcome::Ended {
                    phase: phase::SUCCEEDED,
                    message: format!("{eng} cluster {cname:?} is healthy"),
                    outputs: Some(NodeIo {
                        parameters: params(&[
                            ("name", cname.clone()),
                            ("engine", eng.as_str().to_string()),
                            ("url", public_url),
                            ("host", host),
                            ("port", port),
                            ("username", record.username.clone()),
                            ("mgmtUrl", mgmt),
                        ]),
                        ..Default::default()
                    }),
                    secrets,
                }
            }
            "delete-streaming" => {
                let Some(eng) = engine_of(&get("engine")) else {
                    return error(format!("engine {:?}: use redis or rabbitmq", get("engine")));
                };
                if let Err(m) = self.allowed(doc, token_ok, &["data-streaming"]).await {
                    return error(m);
                }
                let cname = get("name");
                let deleted = self.services.brokers.delete(project, eng, &cname).await;
                super::audit(
                    doc,
                    "workflow.brokers.delete",
                    deleted.as_ref().map(|_| ()).map_err(|_| "delete failed"),
                    &format!("{eng}/{cname}"),
                );
                match deleted {
                    Ok(()) => {
                        engine
                            .brokers
                            .retain(|b| !(b.name == cname && b.engine == eng.as_str()));
                        Outcome::Ended {
                            phase: phase::SUCCEEDED,
                            message: format!("{eng} cluster {cname:?} deleted"),
                            outputs: None,
                            secrets: BTreeMap::new(),
                        }
                    }
                    Err(e) => fail(format!("{eng} cluster {cname:?}: {e}")),
                }
            }
            "wait-job" | "check-job-status" => {
                if let Err(m) = self
                    .allowed(doc, token_ok, &["compute-ace", "compute-ace-readonly"])
                    .await
                {
                    return error(m);
                }
                let resource = Some(get("resource"))
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| self.default_resource.clone());
                let Ok(job_id) = get("JOB_ID").trim().parse::<u32>() else {
                    return error(format!(
                        "JOB_ID {:?} is not a job id",
                        crate::text::cut(&get("JOB_ID"))
                    ));
                };
                let scheduler = match self.services.schedulers.get(&resource) {
                    Ok(s) => s,
                    Err(e) => return error(format!("compute resource {resource:?}: {e:?}")),
                };
                self.watch(&resource, job_id, wake);
                let info = match scheduler.get(caller, job_id).await {
                    Ok(i) => i,
                    Err(e) => return fail(format!("job {job_id}: {}", scheduler_message(&e))),
                };
                if !ended(info.state) {
                    soon(wake_at, POLL_MS);
                    leaf.stage = Stage::Running;
                    return Outcome::Running(format!("job {job_id} is {}", state_name(info.state)));
                }
                self.unwatch(&resource, job_id);
                let state = state_name(info.state);
                let code = info.exit_code.map(|c| c.to_string()).unwrap_or_default();
                let ok = info.state == JobState::Completed && info.exit_code.unwrap_or(0) == 0;
                let outputs = Some(NodeIo {
                    parameters: params(&[("state", state.to_string()), ("exitCode", code.clone())]),
                    ..Default::default()
                });
                let message = format!(
                    "job {job_id} ended {state}{}",
                    if code.is_empty() {
                        String::new()
                    } else {
                        format!(" (exit code {code})")
                    }
                );
                Outcome::Ended {
                    phase: if ok || builtin == "check-job-status" {
                        phase::SUCCEEDED
                    } else {
                        phase::FAILED
                    },
                    message,
                    outputs,
                    secrets: BTreeMap::new(),
                }
            }
            "http" => self.http_call(p).await,
            other => error(format!("{other:?} is not a built-in template")),
        }
    }

    async fn http_call(&self, p: &BTreeMap<String, String>) -> Outcome {
        let get = |k: &str| p.get(k).cloned().unwrap_or_default();
        let url = get("url");
        let Ok(uri) = url.parse::<http::Uri>() else {
            return error(format!("url {:?} is not a URL", crate::text::cut(&url)));
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) || !self.outbound.is_allowed(&uri) {
            return error(format!(
                "url {}: the host is not in the workflows component's allowed_outbound_hosts",
                crate::text::cut(&format!(
                    "{}://{}",
                    uri.scheme_str().unwrap_or("?"),
                    uri.authority().map(|a| a.as_str()).unwrap_or("")
                ))
            ));
        }
        let Ok(method) = reqwest::Method::from_bytes(get("method").to_uppercase().as_bytes())
        else {
            return error("method: not an HTTP method");
        };
        let timeout =
            s3m_workflow::model::parse_duration(&serde_json::Value::String(get("timeout")))
                .unwrap_or(std::time::Duration::from_secs(30));
        let mut req = self.http.request(method, &url).timeout(timeout);
        let headers: serde_json::Value = serde_json::from_str(&get("headers")).unwrap_or_default();
        if let Some(h) = headers.as_object() {
            for (k, v) in h {
                req = req.header(k, s3m_workflow::model::text(v));
            }
        }
        if !get("body").is_empty() {
            req = req.body(get("body"));
        }
        match req.send().await {
            Err(e) => fail(format!("the request failed: {}", e.without_url())),
            Ok(res) => {
                let code = res.status().as_u16();
                let mut body = Vec::new();
                let mut res = res;
                while let Ok(Some(chunk)) = res.chunk().await {
                    body.extend_from_slice(&chunk);
                    if body.len() as u64 > RESULT_LIMIT {
                        body.truncate(RESULT_LIMIT as usize);
                        break;
                    }
                }
                Outcome::Ended {
                    phase: if code < 400 {
                        phase::SUCCEEDED
                    } else {
                        phase::FAILED
                    },
                    message: format!("HTTP {code}"),
                    outputs: Some(NodeIo {
                        parameters: params(&[("statusCode", code.to_string())]),
                        result: Some(String::from_utf8_lossy(&body).into_owned()),
                        ..Default::default()
                    }),
                    secrets: BTreeMap::new(),
                }
            }
        }
    }
}

fn needs_idempotency(a: &Action) -> bool {
    match a {
        Action::Job { .. } => true,
        Action::Builtin { name, .. } => name == "deploy-streaming",
        Action::Suspend { .. } => false,
    }
}

fn scheduler_message(e: &crate::capabilities::scheduler::SchedulerError) -> String {
    use crate::capabilities::scheduler::SchedulerError as E;
    match e {
        E::InvalidJob(m) | E::NotFound(m) | E::Unavailable(m) | E::Permission(m) => m.clone(),
    }
}

fn empty_job() -> JobDescription {
    JobDescription {
        name: None,
        partition: None,
        qos: None,
        reservation: None,
        comment: None,
        licenses: None,
        time_limit: None,
        time_minimum: None,
        begin_time: None,
        priority: None,
        tasks: None,
        cpus_per_task: None,
        nodes: None,
        minimum_nodes: None,
        maximum_nodes: None,
        minimum_cpus: None,
        maximum_cpus: None,
        memory_per_cpu: None,
        memory_per_node: None,
        current_working_directory: None,
        environment: vec![],
        standard_input: None,
        standard_output: None,
        standard_error: None,
    }
}

fn cut_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

/// The batch script of a container or script template: the command, then
/// the output files after a marker line only this job knows.
#[allow(clippy::too_many_arguments)]
fn job_script(
    workflow: &str,
    display: &str,
    image: &str,
    argv: &[String],
    source: Option<&str>,
    outputs: &[(String, String, Option<String>)],
    marker: &str,
    submit_only: bool,
) -> String {
    if submit_only {
        // submit-job: the user's script as it is.
        return source.unwrap_or_default().to_string();
    }
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# S3M workflow {}, node {}\n",
        cut_name(workflow),
        cut_name(display)
    ));
    if !image.is_empty() {
        s.push_str(&format!(
            "# image {} (not used: this resource runs commands in its own environment)\n",
            cut_name(image)
        ));
    }
    let mut command: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    if let Some(src) = source {
        // The source reaches the command as a file on fd 3 (a here-document:
        // no temporary file, no extra process), as Argo passes a path.
        let mut delim = format!("S3M_SOURCE_{}", uuid::Uuid::new_v4().simple());
        while src.contains(&delim) {
            delim = format!("S3M_SOURCE_{}", uuid::Uuid::new_v4().simple());
        }
        command.push("/dev/fd/3".into());
        s.push_str(&command.join(" "));
        s.push_str(&format!(" 3<<'{delim}'\n{src}\n{delim}\n"));
    } else {
        s.push_str(&command.join(" "));
        s.push('\n');
    }
    s.push_str("__s3m_rc=$?\n");
    if !outputs.is_empty() {
        s.push_str(&format!("printf '\\n%s\\n' {}\n", sh_quote(marker)));
        for (name, path, _) in outputs {
            s.push_str(&format!(
                "if [ -f {p} ]; then printf '%s ' {n}; head -c {RESULT_LIMIT} -- {p} | base64 -w0; printf '\\n'; else printf '%s -\\n' {n}; fi\n",
                p = sh_quote(path),
                n = sh_quote(name)
            ));
        }
    }
    s.push_str("exit $__s3m_rc\n");
    s
}

/// A finished job's node: its phase, `result` (stdout before the marker),
/// `exitCode` and output parameters.
fn job_outcome(
    info: &JobInfo,
    stdout: Result<Vec<u8>, crate::capabilities::scheduler::SchedulerError>,
    marker: &str,
    outputs: &[(String, String, Option<String>)],
) -> Outcome {
    let state = state_name(info.state);
    let code = info.exit_code;
    let (text, read_problem) = match stdout {
        Ok(b) => (String::from_utf8_lossy(&b).into_owned(), None),
        Err(e) => (String::new(), Some(scheduler_message(&e))),
    };
    let (result, tail) = match (!marker.is_empty())
        .then(|| text.find(&format!("\n{marker}\n")))
        .flatten()
    {
        Some(i) => (
            text[..i].to_string(),
            text[i + marker.len() + 2..].to_string(),
        ),
        None => (text.clone(), String::new()),
    };
    let mut result = result;
    if result.len() as u64 > RESULT_LIMIT {
        let mut cut = RESULT_LIMIT as usize;
        while !result.is_char_boundary(cut) {
            cut -= 1;
        }
        result.truncate(cut);
    }
    let result = result.trim_end_matches('\n').to_string();
    let mut found: BTreeMap<String, Option<String>> = BTreeMap::new();
    for line in tail.lines() {
        if let Some((k, v)) = line.split_once(' ') {
            let value = if v == "-" {
                None
            } else {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            found.insert(k.to_string(), value);
        }
    }
    let ok = info.state == JobState::Completed && code == Some(0);
    let mut parameters = Vec::new();
    let mut missing = None;
    if ok {
        for (name, path, default) in outputs {
            match found.get(name).cloned().flatten().or(default.clone()) {
                Some(v) => parameters.push(NodeParameter {
                    name: name.clone(),
                    value: v.trim_end_matches('\n').to_string(),
                }),
                None => {
                    missing.get_or_insert(format!("output {name:?}: the job wrote no file {path}"));
                }
            }
        }
    }
    let io = NodeIo {
        parameters,
        result: Some(result),
        exit_code: code.map(|c| c.to_string()),
    };
    let outcome = |p: &'static str, m: String| Outcome::Ended {
        phase: p,
        message: m,
        outputs: Some(io.clone()),
        secrets: BTreeMap::new(),
    };
    if let Some(m) = missing {
        return outcome(phase::ERROR, m);
    }
    if let Some(p) = read_problem.as_ref().filter(|_| ok && !outputs.is_empty()) {
        return outcome(phase::ERROR, format!("cannot read the job's output: {p}"));
    }
    match (info.state, code) {
        (JobState::Completed, Some(0)) => outcome(
            phase::SUCCEEDED,
            read_problem
                .map(|p| format!("outputs.result is empty: {p}"))
                .unwrap_or_default(),
        ),
        (JobState::Completed | JobState::Failed, Some(c)) => {
            outcome(phase::FAILED, format!("Error (exit code {c})"))
        }
        (JobState::Timeout, _) => outcome(
            phase::FAILED,
            "Step exceeded its deadline (job TIMEOUT)".into(),
        ),
        _ => outcome(
            phase::FAILED,
            format!("job {} ended {state}: {}", info.job_id, info.state_reason),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_what_users_wrote() {
        let s = job_script(
            "wf",
            "A",
            "alpine",
            &["echo".into(), "it's $HOME; rm -rf /".into()],
            None,
            &[("x".into(), "/tmp/x".into(), None)],
            "M",
            false,
        );
        assert!(s.contains("'echo' 'it'\\''s $HOME; rm -rf /'"), "{s}");
        assert!(s.contains("printf '%s ' 'x'"), "{s}");
    }
}

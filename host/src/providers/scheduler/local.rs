//! The embedded scheduler for a machine without Slurm: batch scripts run as
//! local processes (as the host's own user, or the project's with
//! `run_as = "project-user"`), a FIFO queue with a fixed
//! number of slots, Slurm's job states, exit codes, output files and time
//! limits. Jobs are kept as one JSON file each under
//! `<state dir>/scheduler/<resource>/jobs/`, so they survive a host restart;
//! a job that was running when the host stopped reads NODE_FAIL afterwards.
//!
//! `[resources.compute]` keys:
//! - `scheduler = "local"` (the default)
//! - `slots`: jobs that run at once (default: the number of CPUs)
//! - `partition = "local"`: the one partition's name
//! - `default_time_limit = 60`, `max_time_limit = 1440` (minutes)
//! - `default_working_directory`: for jobs that name none (default
//!   `<state dir>/scheduler/<resource>/work`)
//! - `kill_wait_secs = 2`: between SIGTERM and SIGKILL on cancel and timeout
//! - `run_as = "host"`: jobs run as the host's user; `"project-user"` runs
//!   each as `{project}_auser` (the user must exist; the host must be root)
//! - `state_dir`: where the jobs are kept (default `<state dir>/scheduler/<resource>`)

use crate::capabilities::scheduler::{
    config_str, config_u64, Caller, Diagnostics, JobDescription, JobInfo, JobList, JobState,
    NodeInfo, PartitionInfo, PartitionState, PingInfo, ReservationInfo, SchedulerAbout,
    SchedulerError, SchedulerProvider, SchedulerResult, Submitted,
};
use crate::providers::scheduler::slurm::{expand_path_pattern, project_user};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

pub struct LocalScheduler {
    resource: String,
    inner: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    slots: usize,
    partition: String,
    default_time: u32,
    max_time: u32,
    default_cwd: String,
    kill_wait: Duration,
    /// Run each job as its project's Unix user (`setpriv`), not as the host's.
    as_project_user: bool,
    hostname: String,
    started_at: i64,
    jobs: Mutex<Table>,
    wake: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u32,
    jobs: BTreeMap<u32, LocalJob>,
    /// Process group of each running job.
    running: BTreeMap<u32, u32>,
    stats: Stats,
    last_update: i64,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    submitted: u32,
    started: u32,
    completed: u32,
    canceled: u32,
    failed: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalJob {
    job_id: u32,
    name: String,
    account: String,
    user_name: String,
    partition: String,
    /// Slurm's name, e.g. "RUNNING".
    state: String,
    state_reason: String,
    exit_code: Option<i32>,
    exit_signal: Option<u32>,
    submit_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    time_limit: u32,
    begin_time: Option<i64>,
    current_working_directory: String,
    environment: Vec<String>,
    standard_input: String,
    standard_output: String,
    standard_error: String,
    comment: String,
    priority: u32,
    tasks: u32,
    /// Set when a cancel arrives: the job ends CANCELLED whatever its exit.
    #[serde(default)]
    cancelled: bool,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn state_of(s: &str) -> JobState {
    crate::providers::scheduler::slurm::parse_job_state(s)
}

impl LocalJob {
    fn info(&self, hostname: &str) -> JobInfo {
        let running = self.state == "RUNNING";
        JobInfo {
            job_id: self.job_id,
            name: self.name.clone(),
            account: self.account.clone(),
            user_name: self.user_name.clone(),
            partition: self.partition.clone(),
            state: state_of(&self.state),
            state_flags: Vec::new(),
            state_reason: self.state_reason.clone(),
            exit_code: self.exit_code,
            exit_signal: self.exit_signal,
            submit_time: self.submit_time,
            start_time: self.start_time,
            end_time: self.end_time,
            time_limit: Some(self.time_limit),
            nodes: if self.start_time.is_some() {
                hostname.to_string()
            } else {
                String::new()
            },
            node_count: 1,
            tasks: self.tasks,
            cpus: 1,
            priority: self.priority,
            qos: String::new(),
            comment: self.comment.clone(),
            current_working_directory: self.current_working_directory.clone(),
            standard_input: self.standard_input.clone(),
            standard_output: self.standard_output.clone(),
            standard_error: self.standard_error.clone(),
            batch_host: if running || self.start_time.is_some() {
                hostname.to_string()
            } else {
                String::new()
            },
        }
    }
}

impl Shared {
    fn jobs_dir(&self) -> PathBuf {
        self.dir.join("jobs")
    }

    fn script_path(&self, id: u32) -> PathBuf {
        self.dir.join("scripts").join(format!("{id}.sh"))
    }

    /// Writes a job's record (write and rename, so a crash leaves the old or the new one).
    fn persist(&self, job: &LocalJob) {
        let path = self.jobs_dir().join(format!("{}.json", job.job_id));
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let result = serde_json::to_vec_pretty(job)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::error!(job = job.job_id, path = %path.display(), error = %e, "could not save a local job");
        }
    }

    fn update(&self, id: u32, f: impl FnOnce(&mut LocalJob, &mut Stats)) -> Option<LocalJob> {
        let copy = {
            let mut guard = self.jobs.lock().unwrap();
            let table = &mut *guard;
            let job = table.jobs.get_mut(&id)?;
            f(job, &mut table.stats);
            table.last_update = now();
            job.clone()
        };
        self.persist(&copy);
        Some(copy)
    }

    /// Starts queued jobs while slots are free.
    fn dispatch(self: &Arc<Self>) {
        loop {
            let job = {
                let mut table = self.jobs.lock().unwrap();
                if table.running.len() >= self.slots {
                    return;
                }
                let t = now();
                let next = table
                    .jobs
                    .values()
                    .find(|j| {
                        j.state == "PENDING"
                            && !table.running.contains_key(&j.job_id)
                            && j.begin_time.is_none_or(|b| b <= t)
                    })
                    .map(|j| j.job_id);
                let Some(id) = next else { return };
                // Reserve the slot before the process exists.
                table.running.insert(id, 0);
                let job = table.jobs.get_mut(&id).unwrap();
                job.state = "RUNNING".into();
                job.state_reason = "None".into();
                job.start_time = Some(t);
                table.stats.started += 1;
                table.last_update = t;
                table.jobs[&id].clone()
            };
            self.persist(&job);
            let shared = self.clone();
            tokio::spawn(async move { shared.run(job).await });
        }
    }

    async fn run(self: Arc<Self>, job: LocalJob) {
        let id = job.job_id;
        let outcome = self.execute(&job).await;
        let (state, reason, code, signal) = match outcome {
            Ok(Outcome::Exited(status)) => {
                let cancelled = self
                    .jobs
                    .lock()
                    .unwrap()
                    .jobs
                    .get(&id)
                    .is_some_and(|j| j.cancelled);
                match (status.code(), status.signal()) {
                    _ if cancelled => (
                        "CANCELLED",
                        "None".to_string(),
                        status.code(),
                        status.signal().map(|s| s as u32),
                    ),
                    (Some(0), _) => ("COMPLETED", "None".to_string(), Some(0), None),
                    (Some(c), _) => ("FAILED", "NonZeroExitCode".to_string(), Some(c), None),
                    (None, s) => (
                        "FAILED",
                        "RaisedSignal".to_string(),
                        None,
                        s.map(|s| s as u32),
                    ),
                }
            }
            Ok(Outcome::TimedOut) => ("TIMEOUT", "TimeLimit".to_string(), None, Some(SIGTERM)),
            Err(e) => ("FAILED", format!("JobLaunchFailure: {e}"), None, None),
        };
        let t = now();
        self.update(id, |j, stats| {
            j.state = state.into();
            j.state_reason = reason;
            j.exit_code = code;
            j.exit_signal = signal;
            j.end_time = Some(t);
            match state {
                "COMPLETED" => stats.completed += 1,
                "CANCELLED" => stats.canceled += 1,
                _ => stats.failed += 1,
            }
        });
        self.jobs.lock().unwrap().running.remove(&id);
        self.wake.notify_one();
    }

    async fn execute(&self, job: &LocalJob) -> std::io::Result<Outcome> {
        let id = job.job_id;
        let open_out = |path: &str| -> std::io::Result<std::fs::File> {
            if let Some(parent) = Path::new(path).parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        };
        let stdout = open_out(&job.standard_output)?;
        let stderr = if job.standard_error == job.standard_output {
            stdout.try_clone()?
        } else {
            open_out(&job.standard_error)?
        };
        let stdin = if job.standard_input.is_empty() {
            std::process::Stdio::null()
        } else {
            std::fs::File::open(&job.standard_input)?.into()
        };
        let mut cmd = if self.as_project_user {
            let mut c = tokio::process::Command::new("setpriv");
            c.arg(format!("--reuid={}", job.user_name))
                .arg(format!("--regid={}", job.user_name))
                .arg("--init-groups")
                .arg("--")
                .arg(self.script_path(id));
            c
        } else {
            tokio::process::Command::new(self.script_path(id))
        };
        cmd.current_dir(&job.current_working_directory)
            .env_clear()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        for entry in &job.environment {
            if let Some((k, v)) = entry.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.env("SLURM_JOB_ID", id.to_string())
            .env("SLURM_JOBID", id.to_string())
            .env("SLURM_JOB_NAME", &job.name)
            .env("SLURM_JOB_ACCOUNT", &job.account)
            .env("SLURM_JOB_PARTITION", &job.partition)
            .env("SLURM_SUBMIT_DIR", &job.current_working_directory)
            .env("SLURM_JOB_NODELIST", &self.hostname)
            .env("SLURM_NTASKS", job.tasks.to_string())
            .env("SLURM_CLUSTER_NAME", "local");
        let mut child = cmd.spawn()?;
        let pgid = child.id().unwrap_or(0);
        {
            let mut table = self.jobs.lock().unwrap();
            table.running.insert(id, pgid);
            // A cancel that came while the process was being started.
            if table.jobs.get(&id).is_some_and(|j| j.cancelled) {
                signal_group(pgid, SIGTERM);
            }
        }
        let limit = Duration::from_secs(job.time_limit as u64 * 60);
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok(Outcome::Exited(status?)),
            Err(_) => {
                signal_group(pgid, SIGTERM);
                if tokio::time::timeout(self.kill_wait, child.wait())
                    .await
                    .is_err()
                {
                    signal_group(pgid, SIGKILL);
                    let _ = child.wait().await;
                }
                Ok(Outcome::TimedOut)
            }
        }
    }
}

enum Outcome {
    Exited(std::process::ExitStatus),
    TimedOut,
}

/// Signals a job's whole process group (the `kill` tool: no libc binding here).
fn signal_group(pgid: u32, signal: u32) {
    if pgid == 0 {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl LocalScheduler {
    /// Loads the resource's saved jobs and starts its queue.
    pub async fn start(
        resource: &str,
        table: &toml::Table,
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let dir = match config_str(resource, table, "state_dir")? {
            Some(d) => PathBuf::from(d),
            None => state_dir.join("scheduler").join(resource),
        };
        for sub in ["jobs", "scripts", "work"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        let as_project_user =
            matches!(config_str(resource, table, "run_as")?, Some("project-user"));
        if as_project_user {
            // The project users must reach their scripts (not list them).
            use std::os::unix::fs::PermissionsExt;
            for d in [dir.clone(), dir.join("scripts")] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))?;
            }
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let slots = config_u64(resource, table, "slots")?
            .unwrap_or(cpus as u64)
            .max(1) as usize;
        let default_time = config_u64(resource, table, "default_time_limit")?.unwrap_or(60) as u32;
        let max_time = config_u64(resource, table, "max_time_limit")?.unwrap_or(1440) as u32;
        let default_cwd = match config_str(resource, table, "default_working_directory")? {
            Some(d) => d.to_string(),
            None => dir.join("work").display().to_string(),
        };
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());

        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(dir.join("jobs"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice::<LocalJob>(&b)?))
            {
                Ok(job) => {
                    jobs.insert(job.job_id, job);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable local job")
                }
            }
        }
        let t = now();
        let mut interrupted = Vec::new();
        for job in jobs.values_mut() {
            if job.state == "RUNNING" {
                job.state = "NODE_FAIL".into();
                job.state_reason = "the s3m host stopped while the job ran".into();
                job.end_time = Some(t);
                interrupted.push(job.clone());
            }
        }
        let next_id = jobs.keys().next_back().map(|id| id + 1).unwrap_or(1);
        let shared = Arc::new(Shared {
            dir,
            slots,
            partition: config_str(resource, table, "partition")?.unwrap_or("local").to_string(),
            default_time,
            max_time,
            default_cwd,
            kill_wait: Duration::from_secs(config_u64(resource, table, "kill_wait_secs")?.unwrap_or(2)),
            as_project_user: match config_str(resource, table, "run_as")? {
                None | Some("host") => false,
                Some("project-user") => true,
                Some(other) => anyhow::bail!(
                    "resource `{resource}`: compute.run_as must be \"host\" or \"project-user\", not \"{other}\""
                ),
            },
            hostname,
            started_at: t,
            jobs: Mutex::new(Table { next_id, jobs, running: BTreeMap::new(), stats: Stats::default(), last_update: t }),
            wake: Notify::new(),
        });
        for job in &interrupted {
            shared.persist(job);
        }
        let queue = shared.clone();
        tokio::spawn(async move {
            loop {
                queue.dispatch();
                // Woken by submits and job ends; the tick starts jobs whose begin time came.
                let _ = tokio::time::timeout(Duration::from_secs(1), queue.wake.notified()).await;
            }
        });
        Ok(Self {
            resource: resource.to_string(),
            inner: shared,
        })
    }

    fn owned(&self, caller: &Caller, job_id: u32) -> SchedulerResult<LocalJob> {
        let table = self.inner.jobs.lock().unwrap();
        match table.jobs.get(&job_id) {
            Some(job) if job.account.eq_ignore_ascii_case(&caller.project) => Ok(job.clone()),
            _ => Err(SchedulerError::NotFound(format!(
                "no job {job_id} in project {}",
                caller.project
            ))),
        }
    }
}

#[async_trait::async_trait]
impl SchedulerProvider for LocalScheduler {
    async fn about(&self) -> SchedulerResult<SchedulerAbout> {
        Ok(SchedulerAbout {
            kind: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            cluster: self.resource.clone(),
        })
    }

    async fn submit(
        &self,
        caller: &Caller,
        job: JobDescription,
        script: String,
    ) -> SchedulerResult<Submitted> {
        let s = &self.inner;
        if !script.starts_with("#!") {
            return Err(SchedulerError::InvalidJob(
                "job field `script` must start with an interpreter line such as #!/bin/bash".into(),
            ));
        }
        if let Some(p) = &job.partition {
            if p != &s.partition {
                return Err(SchedulerError::InvalidJob(format!(
                    "invalid partition `{p}`: resource `{}` has only `{}`",
                    self.resource, s.partition
                )));
            }
        }
        let time_limit = job.time_limit.unwrap_or(s.default_time);
        if time_limit == 0 || time_limit > s.max_time {
            return Err(SchedulerError::InvalidJob(format!(
                "job field `time_limit`: {time_limit} minutes is outside 1..{} of partition `{}`",
                s.max_time, s.partition
            )));
        }
        for entry in &job.environment {
            if !entry.contains('=') {
                return Err(SchedulerError::InvalidJob(format!(
                    "job field `environment`: `{entry}` is not NAME=value"
                )));
            }
        }
        let cwd = job
            .current_working_directory
            .clone()
            .unwrap_or_else(|| s.default_cwd.clone());
        if !Path::new(&cwd).is_dir() {
            return Err(SchedulerError::InvalidJob(format!(
                "job field `current_working_directory`: {cwd} is not a directory"
            )));
        }
        let name = job.name.clone().unwrap_or_else(|| "batch".into());
        let user = project_user(&caller.project);
        let t = now();
        let job_id = {
            let mut table = s.jobs.lock().unwrap();
            let id = table.next_id;
            table.next_id += 1;
            id
        };
        let abs = |p: String| {
            if p.starts_with('/') {
                p
            } else {
                format!("{}/{p}", cwd.trim_end_matches('/'))
            }
        };
        let out = abs(expand_path_pattern(
            job.standard_output.as_deref().unwrap_or("slurm-%j.out"),
            job_id,
            &name,
            &user,
        ));
        let err = match &job.standard_error {
            Some(e) => abs(expand_path_pattern(e, job_id, &name, &user)),
            None => out.clone(),
        };
        let script_path = s.script_path(job_id);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&script_path, script.as_bytes())
                .and_then(|_| {
                    let mode = if s.as_project_user { 0o755 } else { 0o700 };
                    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| {
                    SchedulerError::Unavailable(format!(
                        "cannot write the job script {}: {e}",
                        script_path.display()
                    ))
                })?;
        }
        let record = LocalJob {
            job_id,
            name,
            account: caller.project.to_lowercase(),
            user_name: user,
            partition: s.partition.clone(),
            state: "PENDING".into(),
            state_reason: "None".into(),
            exit_code: None,
            exit_signal: None,
            submit_time: t,
            start_time: None,
            end_time: None,
            time_limit,
            begin_time: job.begin_time,
            current_working_directory: cwd,
            environment: job.environment.clone(),
            standard_input: job.standard_input.clone().unwrap_or_default(),
            standard_output: out,
            standard_error: err,
            comment: job.comment.clone().unwrap_or_default(),
            priority: job.priority.unwrap_or(1),
            tasks: job.tasks.unwrap_or(1),
            cancelled: false,
        };
        s.persist(&record);
        {
            let mut table = s.jobs.lock().unwrap();
            table.jobs.insert(job_id, record);
            table.stats.submitted += 1;
            table.last_update = t;
        }
        s.wake.notify_one();
        Ok(Submitted {
            job_id,
            step_id: "batch".into(),
            user_message: String::new(),
        })
    }

    async fn get(&self, caller: &Caller, job_id: u32) -> SchedulerResult<JobInfo> {
        Ok(self.owned(caller, job_id)?.info(&self.inner.hostname))
    }

    async fn list_jobs(&self, caller: &Caller) -> SchedulerResult<JobList> {
        let table = self.inner.jobs.lock().unwrap();
        let jobs = table
            .jobs
            .values()
            .filter(|j| j.account.eq_ignore_ascii_case(&caller.project))
            .map(|j| j.info(&self.inner.hostname))
            .collect();
        Ok(JobList {
            jobs,
            last_update: table.last_update,
            last_backfill: 0,
        })
    }

    async fn cancel(&self, caller: &Caller, job_id: u32, signal: u32) -> SchedulerResult<()> {
        let job = self.owned(caller, job_id)?;
        let s = &self.inner;
        match job.state.as_str() {
            "PENDING" => {
                let t = now();
                s.update(job_id, |j, stats| {
                    j.state = "CANCELLED".into();
                    j.cancelled = true;
                    j.end_time = Some(t);
                    stats.canceled += 1;
                });
                Ok(())
            }
            "RUNNING" => {
                let cancels = signal == SIGTERM || signal == SIGKILL;
                let pgid = {
                    let mut table = s.jobs.lock().unwrap();
                    if cancels {
                        if let Some(j) = table.jobs.get_mut(&job_id) {
                            j.cancelled = true;
                        }
                    }
                    table.running.get(&job_id).copied().unwrap_or(0)
                };
                if cancels {
                    // As Slurm: SIGTERM, then SIGKILL after kill_wait.
                    signal_group(pgid, SIGTERM);
                    let wait = s.kill_wait;
                    let shared = s.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let still = shared.jobs.lock().unwrap().running.get(&job_id).copied();
                        if let Some(pgid) = still {
                            signal_group(pgid, SIGKILL);
                        }
                    });
                } else {
                    signal_group(pgid, signal);
                }
                Ok(())
            }
            _ => Err(SchedulerError::InvalidJob(format!(
                "job {job_id} has already ended ({})",
                job.state
            ))),
        }
    }

    async fn ping(&self) -> SchedulerResult<Vec<PingInfo>> {
        Ok(vec![PingInfo {
            hostname: self.inner.hostname.clone(),
            pinged: "UP".into(),
            latency: 1,
            mode: "primary".into(),
        }])
    }

    async fn diag(&self) -> SchedulerResult<Diagnostics> {
        let table = self.inner.jobs.lock().unwrap();
        let st = table.stats;
        let pending = table.jobs.values().filter(|j| j.state == "PENDING").count() as u32;
        Ok(Diagnostics {
            req_time: now(),
            req_time_start: self.inner.started_at,
            server_thread_count: 1,
            agent_queue_size: 0,
            agent_count: 0,
            dbd_agent_queue_size: 0,
            jobs_submitted: st.submitted,
            jobs_started: st.started,
            jobs_completed: st.completed,
            jobs_canceled: st.canceled,
            jobs_failed: st.failed,
            jobs_pending: pending,
            jobs_running: table.running.len() as u32,
            schedule_cycle_last: 0,
            schedule_cycle_max: 0,
            schedule_cycle_mean: 0,
            schedule_cycle_total: 0,
            bf_active: false,
            bf_last_backfilled_jobs: 0,
            bf_when_last_cycle: 0,
        })
    }

    async fn nodes(&self) -> SchedulerResult<Vec<NodeInfo>> {
        let s = &self.inner;
        let running = s.jobs.lock().unwrap().running.len() as u32;
        let state = match running {
            0 => "idle",
            n if n as usize >= s.slots => "allocated",
            _ => "mixed",
        };
        Ok(vec![NodeInfo {
            name: s.hostname.clone(),
            hostname: s.hostname.clone(),
            address: "127.0.0.1".into(),
            state: state.into(),
            state_flags: Vec::new(),
            cpus: s.slots as u32,
            alloc_cpus: running,
            real_memory: 0,
            free_memory: 0,
            partitions: vec![s.partition.clone()],
            architecture: std::env::consts::ARCH.into(),
            operating_system: std::env::consts::OS.into(),
            boot_time: s.started_at,
            version: env!("CARGO_PKG_VERSION").into(),
            reason: String::new(),
        }])
    }

    async fn partitions(&self) -> SchedulerResult<Vec<PartitionInfo>> {
        let s = &self.inner;
        Ok(vec![PartitionInfo {
            name: s.partition.clone(),
            nodes: s.hostname.clone(),
            total_nodes: 1,
            total_cpus: s.slots as u32,
            default_time: Some(s.default_time),
            max_time: Some(s.max_time),
            min_nodes: 1,
            max_nodes: Some(1),
            priority_tier: 1,
            is_default: true,
            state: PartitionState::Up,
        }])
    }

    async fn reservations(&self) -> SchedulerResult<Vec<ReservationInfo>> {
        Ok(Vec::new())
    }
}

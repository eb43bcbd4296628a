//! The embedded scheduler for a machine without Slurm: batch scripts run as
//! local processes, each as its project's user inside a bubblewrap sandbox
//! (see `sandbox.rs`), a FIFO queue with a fixed
//! number of slots, Slurm's job states, exit codes, output files and time
//! limits. Jobs are kept as one JSON file each under
//! `<state dir>/scheduler/<resource>/jobs/`, so they survive a host restart;
//! a job that was running when the host stopped reads NODE_FAIL afterwards
//! (a sandboxed one was ended with the host: bwrap's `--die-with-parent`).
//!
//! `[resources.compute]` keys:
//! - `scheduler = "local"` (the default)
//! - `slots`: jobs that run at once (default: the number of CPUs)
//! - `partition = "local"`: the one partition's name
//! - `default_time_limit = 60`, `max_time_limit = 1440` (minutes)
//! - `default_working_directory`: where the projects' directories are made
//!   (default `<state dir>/scheduler/<resource>/work`); each project gets
//!   `<it>/<project>`, owned by its user, mode 0700, the default working
//!   directory of its jobs
//! - `shared_directories = []`: more directories bound into every sandbox
//!   (scratch file systems, say); Unix permissions decide who writes there
//! - `kill_wait_secs = 2`: between SIGTERM and SIGKILL on cancel and timeout
//! - `min_job_age = 300`: seconds an ended job stays readable before it is
//!   purged from memory and disk (Slurm's `MinJobAge`, same default); 0
//!   keeps ended jobs for ever
//! - `isolation = "sandbox"` (the default): each job runs as `{project}_auser`
//!   (the user must exist) in a bubblewrap sandbox where only the system,
//!   its project's directory and `shared_directories` exist. The host must
//!   be root with bubblewrap installed; if it cannot isolate, this scheduler
//!   does not start and the host's log says why.
//!   `isolation = "none"`: no sandbox, for a one-user laptop only: jobs can
//!   read whatever the host's user (or with `run_as = "project-user"`, the
//!   project's user) can, the facility key included when they run as the
//!   host's user. Logged loudly at start.
//! - `state_dir`: where the jobs are kept (default `<state dir>/scheduler/<resource>`);
//!   job records hold environments: files 0600 in a 0700 directory

use super::common::{
    compute_config, expand_path_pattern, job_file, parse_job_state, project_user, read_as,
};
use super::sandbox::{self, Isolation, JobUser};
use crate::capabilities::scheduler::{
    Caller, Diagnostics, JobDescription, JobInfo, JobList, JobState, NodeInfo, PartitionInfo,
    PartitionState, PingInfo, ReservationInfo, SchedulerAbout, SchedulerError, SchedulerProvider,
    SchedulerResult, Submitted,
};
use crate::text::cut;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// `[resources.compute]` of a local resource (the keys above).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    pub slots: Option<u64>,
    pub partition: Option<String>,
    pub default_time_limit: Option<u64>,
    pub max_time_limit: Option<u64>,
    pub default_working_directory: Option<String>,
    pub shared_directories: Vec<String>,
    pub kill_wait_secs: Option<u64>,
    pub min_job_age: Option<u64>,
    /// `sandbox` (default) or `none`.
    pub isolation: Option<String>,
    /// `host` or `project-user`; only with `isolation = "none"`.
    pub run_as: Option<String>,
    pub state_dir: Option<String>,
}

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
    /// Where each project's directory is made (sandbox), or the default
    /// working directory (isolation none).
    work_root: PathBuf,
    kill_wait: Duration,
    isolation: Isolation,
    /// Ended jobs older than this are purged (None: kept for ever).
    min_job_age: Option<i64>,
    hostname: String,
    started_at: i64,
    jobs: Mutex<Table>,
    wake: Notify,
    /// Each job's id as it ends, for the workflow engine.
    ended: tokio::sync::broadcast::Sender<u32>,
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
    /// Cancelled while its processes still run (between the cancel's
    /// SIGTERM and their exit): shown as Slurm shows it, CANCELLED with the
    /// COMPLETING flag. Not kept across a restart, which ends them.
    #[serde(skip)]
    completing: bool,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn state_of(s: &str) -> JobState {
    parse_job_state(s)
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
            state_flags: if self.completing {
                vec!["COMPLETING".to_string()]
            } else {
                Vec::new()
            },
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

    fn launch_log_path(&self, id: u32) -> PathBuf {
        self.dir.join("jobs").join(format!("{id}.launch"))
    }

    /// A project's own directory (sandbox), or the shared default working
    /// directory (isolation none).
    fn project_dir(&self, project: &str) -> PathBuf {
        match self.isolation {
            Isolation::Sandbox { .. } => self.work_root.join(project.to_lowercase()),
            Isolation::None { .. } => self.work_root.clone(),
        }
    }

    /// Writes a job's record (write and rename, so a crash leaves the old or the new one).
    fn persist(&self, job: &LocalJob) {
        let path = self.jobs_dir().join(format!("{}.json", job.job_id));
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let result = serde_json::to_vec_pretty(job)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(&bytes)
            })
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

    /// Forgets ended jobs older than `min_job_age`, as Slurm does, so that
    /// memory and the job directory do not grow for ever.
    fn purge(&self) {
        let Some(age) = self.min_job_age else { return };
        let before = now() - age;
        let gone: Vec<u32> = {
            let mut table = self.jobs.lock().unwrap();
            let old: Vec<u32> = table
                .jobs
                .values()
                .filter(|j| {
                    j.end_time.is_some_and(|t| t < before) && !table.running.contains_key(&j.job_id)
                })
                .map(|j| j.job_id)
                .collect();
            for id in &old {
                table.jobs.remove(id);
            }
            // Ids are never reused, even once every job is purged.
            if !old.is_empty() {
                let _ = std::fs::write(self.dir.join("next_id"), table.next_id.to_string());
            }
            old
        };
        for id in gone {
            let _ = std::fs::remove_file(self.jobs_dir().join(format!("{id}.json")));
            let _ = std::fs::remove_file(self.script_path(id));
        }
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
        let launch_log = self.launch_log_path(id);
        let launch_said = std::fs::read(&launch_log)
            .map(|b| {
                let text = String::from_utf8_lossy(&b[..b.len().min(400)]);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default();
        let _ = std::fs::remove_file(&launch_log);
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
                    (Some(c), _) if !launch_said.is_empty() => (
                        "FAILED",
                        format!("JobLaunchFailure: {launch_said}"),
                        Some(c),
                        None,
                    ),
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
            // A cancelled job ended when it was cancelled, as in Slurm.
            if !j.completing {
                j.end_time = Some(t);
            }
            j.completing = false;
            match state {
                "COMPLETED" => stats.completed += 1,
                "CANCELLED" => stats.canceled += 1,
                _ => stats.failed += 1,
            }
        });
        self.jobs.lock().unwrap().running.remove(&id);
        self.wake.notify_one();
        let _ = self.ended.send(id);
    }

    async fn execute(&self, job: &LocalJob) -> std::io::Result<Outcome> {
        let id = job.job_id;
        let user = match &self.isolation {
            Isolation::None {
                as_project_user: false,
            } => None,
            _ => Some(JobUser::lookup(&job.user_name).ok_or_else(|| {
                std::io::Error::other(format!("the Unix user {} does not exist", job.user_name))
            })?),
        };
        let project_dir = self.project_dir(&job.account);
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), project_dir.display().to_string()),
            ("USER".into(), job.user_name.clone()),
            ("LOGNAME".into(), job.user_name.clone()),
        ];
        for entry in &job.environment {
            if let Some((k, v)) = entry.split_once('=') {
                env.retain(|(name, _)| name != k);
                env.push((k.to_string(), v.to_string()));
            }
        }
        for (k, v) in [
            ("SLURM_JOB_ID", id.to_string()),
            ("SLURM_JOBID", id.to_string()),
            ("SLURM_JOB_NAME", job.name.clone()),
            ("SLURM_JOB_ACCOUNT", job.account.clone()),
            ("SLURM_JOB_PARTITION", job.partition.clone()),
            ("SLURM_SUBMIT_DIR", job.current_working_directory.clone()),
            ("SLURM_JOB_NODELIST", self.hostname.clone()),
            ("SLURM_NTASKS", job.tasks.to_string()),
            ("SLURM_CLUSTER_NAME", "local".to_string()),
        ] {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v));
        }
        let script = self.script_path(id);
        let launch = sandbox::Launch {
            user: user.as_ref(),
            script: &script,
            project_dir: matches!(self.isolation, Isolation::Sandbox { .. })
                .then_some(project_dir.as_path()),
            cwd: &job.current_working_directory,
            stdin: &job.standard_input,
            stdout: &job.standard_output,
            stderr: &job.standard_error,
            env,
        };
        // What setpriv, bwrap or the redirecting shell say when the launch
        // fails; the job's own output goes to its files.
        let launch_log = self.launch_log_path(id);
        let log = std::fs::File::create(&launch_log)?;
        let mut cmd = sandbox::command(&self.isolation, &launch);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(false);
        // A session of its own: no controlling terminal to reach back
        // through, and one process group to signal.
        let sandboxed = matches!(self.isolation, Isolation::Sandbox { .. });
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if sandboxed {
                    sandbox::ignore_signals();
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pgid = child.id().unwrap_or(0);
        {
            let mut table = self.jobs.lock().unwrap();
            table.running.insert(id, pgid);
            // A cancel that came while the process was being started: the
            // job never ran, and a SIGTERM now would reach only the
            // sandbox's monitor, which ignores it (sandbox::ignore_signals).
            if table.jobs.get(&id).is_some_and(|j| j.cancelled) {
                signal_group(pgid, SIGKILL);
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

/// A project's directory: owned by its user, mode 0700.
fn ensure_project_dir(dir: &Path, user: &JobUser) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // Two first submits of a project at once both find no directory: the
    // one that does not make it must not fail for that.
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Checked without following a link, before chown (which would).
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    if m.uid() == user.uid {
        return Ok(());
    }
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
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
    /// Reads the resource's `[resources.compute]` table (without its
    /// `scheduler` key), loads the resource's saved jobs and starts its queue.
    pub async fn start(
        resource: &str,
        table: &toml::Table,
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let config: LocalConfig = compute_config(resource, table)?;
        let dir = match config.state_dir.as_deref() {
            Some(d) => PathBuf::from(d),
            None => state_dir.join("scheduler").join(resource),
        };
        let run_as = config.run_as.as_deref();
        let isolation = match config.isolation.as_deref() {
            None | Some("sandbox") => {
                if let Some(r) = run_as.filter(|r| *r != "project-user") {
                    anyhow::bail!(
                        "resource `{resource}`: compute.run_as = \"{r}\" needs isolation = \"none\": \
                         sandboxed jobs always run as their project's user"
                    );
                }
                let shared = config
                    .shared_directories
                    .iter()
                    .map(|v| match sandbox::normalized(v) {
                        Some(p) => Ok(p),
                        None => anyhow::bail!(
                            "resource `{resource}`: compute.shared_directories holds absolute paths, not {v:?}"
                        ),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                sandbox::probe().map_err(|why| {
                    anyhow::anyhow!("resource `{resource}`: the local scheduler cannot isolate jobs: {why}")
                })?;
                Isolation::Sandbox { shared }
            }
            Some("none") => {
                let as_project_user = match run_as {
                    None | Some("host") => false,
                    Some("project-user") => true,
                    Some(other) => anyhow::bail!(
                        "resource `{resource}`: compute.run_as must be \"host\" or \"project-user\", not \"{other}\""
                    ),
                };
                tracing::warn!(
                    resource,
                    "isolation = \"none\": jobs on this resource are NOT sandboxed; they can read \
                     whatever {} can, {}. Use this only on a one-user machine.",
                    if as_project_user { "their project's Unix user" } else { "the host's user" },
                    if as_project_user { "including other projects' world-readable files" }
                    else { "including the facility's signing key and every token record" }
                );
                Isolation::None { as_project_user }
            }
            Some(other) => anyhow::bail!(
                "resource `{resource}`: compute.isolation must be \"sandbox\" or \"none\", not \"{other}\""
            ),
        };
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            // Job records hold environments: only the host reads them. The
            // projects' users reach their own scripts and directories (not
            // list them).
            for (sub, mode) in [
                ("", 0o711),
                ("jobs", 0o700),
                ("scripts", 0o711),
                ("work", 0o711),
            ] {
                let path = dir.join(sub);
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(&path)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                let mode = match (&isolation, sub) {
                    (
                        Isolation::None {
                            as_project_user: false,
                        },
                        "scripts" | "work" | "",
                    ) => 0o700,
                    _ => mode,
                };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            }
            for entry in std::fs::read_dir(dir.join("jobs"))?.flatten() {
                let _ =
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600));
            }
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let slots = config.slots.unwrap_or(cpus as u64).max(1) as usize;
        let default_time = config.default_time_limit.unwrap_or(60) as u32;
        let max_time = config.max_time_limit.unwrap_or(1440) as u32;
        let work_root = match config.default_working_directory.as_deref() {
            Some(d) => sandbox::normalized(d).ok_or_else(|| {
                anyhow::anyhow!("resource `{resource}`: compute.default_working_directory must be an absolute path")
            })?,
            None => dir.join("work"),
        };
        if matches!(isolation, Isolation::Sandbox { .. }) {
            std::fs::create_dir_all(&work_root)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", work_root.display()))?;
        }
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
        let purged_up_to = std::fs::read_to_string(dir.join("next_id"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(1);
        let next_id = jobs
            .keys()
            .next_back()
            .map(|id| id + 1)
            .unwrap_or(1)
            .max(purged_up_to);
        let shared = Arc::new(Shared {
            dir,
            slots,
            partition: config.partition.unwrap_or_else(|| "local".into()),
            default_time,
            max_time,
            work_root,
            kill_wait: Duration::from_secs(config.kill_wait_secs.unwrap_or(2)),
            isolation,
            min_job_age: match config.min_job_age.unwrap_or(300) {
                0 => None,
                n => Some(n as i64),
            },
            hostname,
            started_at: t,
            jobs: Mutex::new(Table {
                next_id,
                jobs,
                running: BTreeMap::new(),
                stats: Stats::default(),
                last_update: t,
            }),
            wake: Notify::new(),
            ended: tokio::sync::broadcast::channel(1024).0,
        });
        for job in &interrupted {
            shared.persist(job);
        }
        let queue = shared.clone();
        tokio::spawn(async move {
            loop {
                queue.dispatch();
                queue.purge();
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
    fn job_counts(&self) -> Option<Vec<(String, u64)>> {
        let table = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for job in table.jobs.values() {
            *counts.entry(job.state.as_str()).or_default() += 1;
        }
        Some(
            counts
                .into_iter()
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
        )
    }

    async fn about(&self) -> SchedulerResult<SchedulerAbout> {
        Ok(SchedulerAbout {
            kind: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            cluster: self.resource.clone(),
        })
    }

    fn ended(&self) -> Option<tokio::sync::broadcast::Receiver<u32>> {
        Some(self.inner.ended.subscribe())
    }

    async fn read_output(
        &self,
        caller: &Caller,
        job_id: u32,
        path: &str,
        limit: u64,
    ) -> SchedulerResult<Vec<u8>> {
        let job = self.owned(caller, job_id)?;
        let path = job_file(path, &job.standard_output, &job.current_working_directory);
        let user = match &self.inner.isolation {
            Isolation::None {
                as_project_user: false,
            } => None,
            _ => Some(job.user_name.as_str()),
        };
        read_as(user, &path, limit).await
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
            match entry.split_once('=') {
                Some((k, _)) if !k.is_empty() && !entry.contains('\0') => {}
                _ => {
                    return Err(SchedulerError::InvalidJob(format!(
                        "job field `environment`: `{}` is not NAME=value (without NUL bytes)",
                        cut(entry)
                    )))
                }
            }
        }
        for (field, value) in [
            ("name", job.name.as_deref()),
            (
                "current_working_directory",
                job.current_working_directory.as_deref(),
            ),
            ("standard_input", job.standard_input.as_deref()),
            ("standard_output", job.standard_output.as_deref()),
            ("standard_error", job.standard_error.as_deref()),
            ("comment", job.comment.as_deref()),
        ] {
            if value.is_some_and(|v| v.contains('\0')) {
                return Err(SchedulerError::InvalidJob(format!(
                    "job field `{field}` holds a NUL byte"
                )));
            }
        }
        if script.contains('\0') {
            return Err(SchedulerError::InvalidJob(
                "job field `script` holds a NUL byte".into(),
            ));
        }
        let valid_project = !caller.project.is_empty()
            && caller.project.len() <= 64
            && caller
                .project
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_project {
            return Err(SchedulerError::Permission(
                "this project cannot run jobs on the local scheduler: its name is not a valid Unix name".into(),
            ));
        }
        let user = project_user(&caller.project);
        let job_user = match &s.isolation {
            Isolation::None {
                as_project_user: false,
            } => None,
            _ => Some(JobUser::lookup(&user).ok_or_else(|| {
                SchedulerError::Permission(format!(
                    "project {} has no account on resource `{}`: the Unix user {user} does not exist \
                     (an operator creates it, e.g. `useradd -M {user}`)",
                    caller.project, self.resource
                ))
            })?),
        };
        let project_dir = s.project_dir(&caller.project);
        let cwd = match &s.isolation {
            Isolation::Sandbox { shared } => {
                let cwd = match job.current_working_directory.as_deref() {
                    None => project_dir.clone(),
                    Some(c) => sandbox::normalized(c).ok_or_else(|| {
                        SchedulerError::InvalidJob(format!(
                            "job field `current_working_directory`: `{}` must be an absolute path without `..`",
                            cut(c)
                        ))
                    })?,
                };
                let visible =
                    cwd.starts_with(&project_dir) || shared.iter().any(|d| cwd.starts_with(d));
                if !visible {
                    let mut places = vec![project_dir.display().to_string()];
                    places.extend(shared.iter().map(|d| d.display().to_string()));
                    return Err(SchedulerError::InvalidJob(format!(
                        "job field `current_working_directory`: jobs on `{}` see only {}; `{}` is outside them",
                        self.resource,
                        places.join(", "),
                        cut(&cwd.display().to_string())
                    )));
                }
                if let Some(u) = &job_user {
                    ensure_project_dir(&project_dir, u).map_err(|e| {
                        tracing::error!(dir = %project_dir.display(), error = %e, "cannot make a project's directory");
                        SchedulerError::Unavailable(format!(
                            "the local scheduler of `{}` cannot prepare this project's directory; the host's log says why",
                            self.resource
                        ))
                    })?;
                }
                cwd.display().to_string()
            }
            Isolation::None { .. } => {
                let cwd = job
                    .current_working_directory
                    .clone()
                    .unwrap_or_else(|| project_dir.display().to_string());
                if !Path::new(&cwd).is_dir() {
                    return Err(SchedulerError::InvalidJob(format!(
                        "job field `current_working_directory`: {} is not a directory",
                        cut(&cwd)
                    )));
                }
                cwd
            }
        };
        let name = job.name.clone().unwrap_or_else(|| "batch".into());
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
            // The job's user reads its own script; nobody else does.
            std::fs::write(&script_path, script.as_bytes())
                .and_then(|_| {
                    std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o700))
                })
                .and_then(|_| match &job_user {
                    Some(u) => std::os::unix::fs::chown(&script_path, Some(u.uid), Some(u.gid)),
                    None => Ok(()),
                })
                .map_err(|e| {
                    tracing::error!(path = %script_path.display(), error = %e, "cannot write a job script");
                    SchedulerError::Unavailable(format!(
                        "the local scheduler of `{}` cannot store the job script; the host's log says why",
                        self.resource
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
            completing: false,
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
                if cancels {
                    // As Slurm: CANCELLED at once, COMPLETING until the
                    // job's processes are gone, so that whoever cancelled
                    // reads the job as cancelled from then on.
                    let t = now();
                    s.update(job_id, |j, _| {
                        if j.state == "RUNNING" {
                            j.state = "CANCELLED".into();
                            j.completing = true;
                            j.end_time = Some(t);
                        }
                        j.cancelled = true;
                    });
                }
                let pgid = s
                    .jobs
                    .lock()
                    .unwrap()
                    .running
                    .get(&job_id)
                    .copied()
                    .unwrap_or(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_first_submits_at_once_all_find_its_directory() {
        let parent = tempfile::tempdir().unwrap();
        let me = JobUser {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        for round in 0..20 {
            let dir = parent.path().join(format!("stf{round:03}"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (dir, start, me) = (dir.clone(), start.clone(), me.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        ensure_project_dir(&dir, &me)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
            assert!(dir.is_dir());
        }
        // What is there and is no directory is refused, a link included.
        let file = parent.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(ensure_project_dir(&file, &me).is_err());
        let link = parent.path().join("link");
        std::os::unix::fs::symlink(parent.path(), &link).unwrap();
        assert!(ensure_project_dir(&link, &me).is_err());
    }
}

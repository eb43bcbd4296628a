//! Slurm through slurmrestd: every call is one HTTP request to the cluster's
//! slurmrestd, authenticated by a short-lived Slurm JWT (HS256 with the
//! cluster's `jwt_key`, claims `exp`, `iat`, `sun`) minted for the caller's
//! Unix user, so that Slurm itself runs and checks the job as that user.
//!
//! `[resources.compute]` keys:
//! - `scheduler = "slurm"`
//! - `slurmrestd = "http://127.0.0.1:6820"` (required)
//! - `jwt_key = "/etc/slurm/jwt_hs256.key"` (required; the same file as the
//!   cluster's `AuthAltParameters=jwt_key=`; read once at start-up, never logged)
//! - `openapi = "v0.0.38"`: the slurmrestd plugin version (`-s openapi/v0.0.38`)
//! - `service_user = "nobody"`: the user that reads cluster-wide state (ping,
//!   diag, nodes, partitions, reservations)
//! - `default_working_directory = "/tmp"`: for jobs that name none
//! - `token_lifetime_secs = 60`, `timeout_secs = 30`

use super::common::{compute_config, expand_path_pattern, parse_job_state, project_user};
use crate::capabilities::scheduler::{
    Caller, Diagnostics, JobDescription, JobInfo, JobList, JobState, NodeInfo, PartitionInfo,
    PartitionState, PingInfo, ReservationInfo, SchedulerAbout, SchedulerError, SchedulerProvider,
    SchedulerResult, Submitted,
};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// `[resources.compute]` of a Slurm resource (the keys above).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    /// Required; an `http://` URL.
    pub slurmrestd: Option<String>,
    /// Required.
    pub jwt_key: Option<String>,
    pub openapi: String,
    pub service_user: String,
    pub default_working_directory: String,
    pub token_lifetime_secs: u64,
    pub timeout_secs: u64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            slurmrestd: None,
            jwt_key: None,
            openapi: "v0.0.38".into(),
            service_user: "nobody".into(),
            default_working_directory: "/tmp".into(),
            token_lifetime_secs: 60,
            timeout_secs: 30,
        }
    }
}

pub struct SlurmScheduler {
    resource: String,
    base: String,
    /// `base` parsed once: each call sets only its path (and query) on a
    /// copy. Parsing the whole URL per call (host, IDNA and all) was 3% of
    /// the host's samples in `perf` under submit load (issue 13).
    base_url: reqwest::Url,
    key: HS256Key,
    service_user: String,
    default_cwd: String,
    token_lifetime: u64,
    http: reqwest::Client,
}

#[derive(Serialize, Deserialize)]
struct SlurmClaims {
    sun: String,
}

impl SlurmScheduler {
    /// Reads the resource's `[resources.compute]` table (without its
    /// `scheduler` key) and the cluster's jwt key.
    pub fn from_config(resource: &str, table: &toml::Table) -> anyhow::Result<Self> {
        Self::new(resource, compute_config(resource, table)?)
    }

    pub fn new(resource: &str, config: SlurmConfig) -> anyhow::Result<Self> {
        let url = config.slurmrestd.ok_or_else(|| {
            anyhow::anyhow!("resource `{resource}`: scheduler = \"slurm\" needs compute.slurmrestd = \"http://HOST:PORT\"")
        })?;
        if !url.starts_with("http://") {
            anyhow::bail!(
                "resource `{resource}`: compute.slurmrestd must be an http:// URL, not `{url}`"
            );
        }
        let key_path = config.jwt_key.ok_or_else(|| {
            anyhow::anyhow!("resource `{resource}`: scheduler = \"slurm\" needs compute.jwt_key = \"/path/to/jwt_hs256.key\" (the cluster's AuthAltParameters jwt_key)")
        })?;
        let key = std::fs::read(&key_path).map_err(|e| {
            anyhow::anyhow!("resource `{resource}`: cannot read compute.jwt_key {key_path}: {e}; give s3m read access to the cluster's jwt key")
        })?;
        if key.len() < 32 {
            anyhow::bail!("resource `{resource}`: compute.jwt_key {key_path} holds {} bytes; Slurm needs at least 32", key.len());
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(config.timeout_secs))
            .pool_max_idle_per_host(64)
            .build()?;
        let base = format!("{}/slurm/{}", url.trim_end_matches('/'), config.openapi);
        let base_url = reqwest::Url::parse(&base).map_err(|e| {
            anyhow::anyhow!("resource `{resource}`: compute.slurmrestd `{url}` is not a URL: {e}")
        })?;
        Ok(Self {
            resource: resource.to_string(),
            base,
            base_url,
            key: HS256Key::from_bytes(&key),
            service_user: config.service_user,
            default_cwd: config.default_working_directory,
            token_lifetime: config.token_lifetime_secs.max(5),
            http,
        })
    }

    fn token(&self, user: &str) -> SchedulerResult<String> {
        let claims = Claims::with_custom_claims(
            SlurmClaims {
                sun: user.to_string(),
            },
            Duration::from_secs(self.token_lifetime),
        );
        self.key
            .authenticate(claims)
            .map_err(|e| SchedulerError::Unavailable(format!("could not mint a Slurm token: {e}")))
    }

    /// The URL of `path` (which may end in a query) under slurmrestd's
    /// base, without parsing the base again.
    fn url(&self, path: &str) -> reqwest::Url {
        let mut url = self.base_url.clone();
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{}{path}", self.base_url.path()));
        url.set_query(query);
        url
    }

    /// One call to slurmrestd as `user`; the answer's JSON, or the Slurm
    /// errors it reports mapped onto scheduler errors.
    async fn call(
        &self,
        user: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> SchedulerResult<Value> {
        self.call_as::<Value>(user, method, path, body).await
    }

    /// As [`Self::call`], read straight into `T`: for the job answers, whose
    /// jobs carry about a hundred fields each and are read for a few dozen.
    async fn call_as<T: Answer>(
        &self,
        user: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> SchedulerResult<T> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-SLURM-USER-NAME", user)
            .header("X-SLURM-USER-TOKEN", self.token(user)?);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.map_err(|e| {
            SchedulerError::Unavailable(format!(
                "slurmrestd of resource `{}` is not reachable at {}: {}; start slurmrestd there or fix compute.slurmrestd in the facility configuration",
                self.resource,
                self.base,
                error_chain(&e)
            ))
        })?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| {
            SchedulerError::Unavailable(format!(
                "slurmrestd of resource `{}` broke off its answer: {e}",
                self.resource
            ))
        })?;
        let value: T = serde_json::from_slice(&bytes).map_err(|_| {
            let snippet: String = String::from_utf8_lossy(&bytes[..bytes.len().min(800)])
                .chars()
                .take(200)
                .collect();
            if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                SchedulerError::Permission(format!(
                    "slurmrestd of resource `{}` refused user {user} (HTTP {status}): check that the user exists on the cluster and that compute.jwt_key is the cluster's jwt key",
                    self.resource
                ))
            } else {
                SchedulerError::Unavailable(format!(
                    "slurmrestd of resource `{}` answered HTTP {status} without JSON ({snippet}); is {} a slurmrestd serving openapi/{}?",
                    self.resource,
                    self.base,
                    self.base.rsplit('/').next().unwrap_or("")
                ))
            }
        })?;
        let errors: Vec<String> = value.errors().iter().map(error_text).collect();
        if errors.is_empty() && status.is_success() {
            return Ok(value);
        }
        let message = if errors.is_empty() {
            format!("HTTP {status}")
        } else {
            errors.join("; ")
        };
        let lower = message.to_lowercase();
        Err(
            if lower.contains("invalid job id") || lower.contains("unable to find jobid") {
                SchedulerError::NotFound(format!("no such job: {message}"))
            } else if lower.contains("authentication")
                || lower.contains("access denied")
                || lower.contains("invalid user")
                || status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                SchedulerError::Permission(format!(
                "Slurm refused user {user}: {message}; the project's user must exist on the cluster"
            ))
            } else if lower.contains("unable to contact slurm controller")
                || lower.contains("connection refused")
            {
                SchedulerError::Unavailable(format!(
                "slurmctld of resource `{}` is not answering slurmrestd: {message}; start slurmctld",
                self.resource
            ))
            } else if path.ends_with("/submit") || lower.contains("already completing or completed")
            {
                SchedulerError::InvalidJob(format!("Slurm refused: {message}"))
            } else {
                SchedulerError::Unavailable(format!(
                    "slurmrestd of resource `{}` failed: {message}",
                    self.resource
                ))
            },
        )
    }

    async fn job_value(&self, caller: &Caller, job_id: u32) -> SchedulerResult<SlimJob> {
        let user = project_user(&caller.project);
        let answer: JobsAnswer = self
            .call_as(&user, reqwest::Method::GET, &format!("/job/{job_id}"), None)
            .await?;
        let job = answer
            .jobs
            .unwrap_or_default()
            .into_iter()
            .find(|j| u64_of(j, "job_id") == Some(job_id as u64));
        match job {
            Some(job) if same_project(&job, &caller.project) => Ok(job),
            // Another project's job reads exactly like a missing one.
            _ => Err(SchedulerError::NotFound(format!(
                "no job {job_id} in project {}",
                caller.project
            ))),
        }
    }
}

/// An answer of slurmrestd: its `errors`, whatever else it holds.
trait Answer: serde::de::DeserializeOwned {
    fn errors(&self) -> &[Value];
}

impl Answer for Value {
    fn errors(&self) -> &[Value] {
        self.get("errors")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The answer of `GET /jobs` and `GET /job/{id}` (either list may be
/// absent or null, as a `Value` reading would allow).
#[derive(Deserialize)]
struct JobsAnswer {
    #[serde(default)]
    errors: Option<Vec<Value>>,
    #[serde(default)]
    jobs: Option<Vec<SlimJob>>,
}

impl Answer for JobsAnswer {
    fn errors(&self) -> &[Value] {
        self.errors.as_deref().unwrap_or(&[])
    }
}

/// The fields of a Slurm job that [`job_info`] and [`same_project`] read.
/// A test checks that a job read whole and one read through this list give
/// the same [`JobInfo`].
const JOB_FIELDS: &[&str] = &[
    "account",
    "batch_host",
    "comment",
    "cpus",
    "current_working_directory",
    "end_time",
    "exit_code",
    "job_id",
    "job_state",
    "name",
    "node_count",
    "nodes",
    "partition",
    "priority",
    "qos",
    "standard_error",
    "standard_input",
    "standard_output",
    "start_time",
    "state_reason",
    "submit_time",
    "tasks",
    "time_limit",
    "user_name",
];

/// A Slurm job holding only [`JOB_FIELDS`], each at its index in the list:
/// the other fields are skipped as they are parsed, never built, and no map
/// is built per job (`GET /jobs` of 2008 jobs spent a quarter of its time
/// building and searching those maps; reading a 2000-job answer and making
/// its `JobInfo`s went from 11.2 to 6.3 ms, issue 13).
struct SlimJob(Box<[Option<Value>; JOB_FIELDS.len()]>);

impl<'de> Deserialize<'de> for SlimJob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = SlimJob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Slurm job object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SlimJob, A::Error> {
                let mut job = SlimJob(Box::default());
                while let Some(key) = map.next_key::<FieldName>()? {
                    match key.0 {
                        Some(i) => job.0[i] = Some(map.next_value::<Value>()?),
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(job)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// Where `key` is in [`JOB_FIELDS`]. (A linear search: `==` on strings
/// compares lengths first, so most keys are refused at once; a binary
/// search, comparing bytes, was slower.)
fn field_index(key: &str) -> Option<usize> {
    JOB_FIELDS.iter().position(|f| *f == key)
}

/// A job's key: its index in [`JOB_FIELDS`], if listed (read without copying).
struct FieldName(Option<usize>);

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = FieldName;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldName, E> {
                Ok(FieldName(field_index(v)))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A Slurm job's fields by name: a whole job as slurmrestd wrote it, or a
/// [`SlimJob`].
trait JobFields {
    fn field(&self, key: &str) -> Option<&Value>;
}

impl JobFields for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
}

impl JobFields for SlimJob {
    fn field(&self, key: &str) -> Option<&Value> {
        self.0[field_index(key)?].as_ref()
    }
}

/// One entry of slurmrestd's `errors`, as one line.
fn error_text(e: &Value) -> String {
    let desc = e.get("description").and_then(Value::as_str).unwrap_or("");
    let err = e.get("error").and_then(Value::as_str).unwrap_or("");
    match (desc.is_empty(), err.is_empty()) {
        (false, false) if desc != err => format!("{desc} ({err})"),
        (false, _) => desc.to_string(),
        _ => err.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn same_project(job: &(impl JobFields + ?Sized), project: &str) -> bool {
    str_of(job, "account").eq_ignore_ascii_case(project)
}

fn str_of(v: &(impl JobFields + ?Sized), key: &str) -> String {
    v.field(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn u64_of(v: &(impl JobFields + ?Sized), key: &str) -> Option<u64> {
    v.field(key).and_then(|x| {
        x.as_u64()
            .or_else(|| x.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

fn i64_of(v: &(impl JobFields + ?Sized), key: &str) -> i64 {
    v.field(key)
        .and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

fn u32_of(v: &(impl JobFields + ?Sized), key: &str) -> u32 {
    u64_of(v, key)
        .map(|n| n.min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// Slurm writes "no limit" as null, a negative number or NO_VAL/INFINITE (0xfffffffe/0xffffffff).
fn limit_of(v: &(impl JobFields + ?Sized), key: &str) -> Option<u32> {
    let n = v.field(key)?.as_i64()?;
    if !(0..0xffff_fffe).contains(&n) {
        None
    } else {
        Some(n as u32)
    }
}

fn strings_of(v: &(impl JobFields + ?Sized), key: &str) -> Vec<String> {
    match v.field(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect(),
        Some(Value::String(s)) if !s.is_empty() => s.split(',').map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

fn is_ended(state: JobState) -> bool {
    !matches!(
        state,
        JobState::Pending | JobState::Running | JobState::Suspended
    )
}

fn job_info(j: &(impl JobFields + ?Sized)) -> JobInfo {
    let state_text = str_of(j, "job_state");
    let state = parse_job_state(&state_text);
    let job_id = u32_of(j, "job_id");
    let name = str_of(j, "name");
    let user = str_of(j, "user_name");
    let cwd = str_of(j, "current_working_directory");
    let ended = is_ended(state);
    // exit_code is the batch script's raw wait status.
    let raw = i64_of(j, "exit_code");
    let (exit_code, exit_signal) = if !ended {
        (None, None)
    } else if raw & 0x7f != 0 {
        (None, Some((raw & 0x7f) as u32))
    } else {
        (Some(((raw >> 8) & 0xff) as i32), None)
    };
    let out_path = |key: &str, default: &str| {
        let p = str_of(j, key);
        let p = if p.is_empty() { default.to_string() } else { p };
        if p.is_empty() {
            return p;
        }
        let p = expand_path_pattern(&p, job_id, &name, &user);
        if p.starts_with('/') || cwd.is_empty() {
            p
        } else {
            format!("{}/{p}", cwd.trim_end_matches('/'))
        }
    };
    let standard_output = out_path("standard_output", "slurm-%j.out");
    let standard_error = {
        let e = str_of(j, "standard_error");
        if e.is_empty() {
            standard_output.clone()
        } else {
            out_path("standard_error", "")
        }
    };
    let nonzero = |key: &str| Some(i64_of(j, key)).filter(|t| *t > 0);
    let mut state_flags = Vec::new();
    if state_text.contains("COMPLETING") {
        state_flags.push("COMPLETING".to_string());
    }
    JobInfo {
        job_id,
        name,
        account: str_of(j, "account"),
        user_name: user,
        partition: str_of(j, "partition"),
        state,
        state_flags,
        state_reason: str_of(j, "state_reason"),
        exit_code,
        exit_signal,
        submit_time: i64_of(j, "submit_time"),
        start_time: if state == JobState::Pending {
            None
        } else {
            nonzero("start_time")
        },
        end_time: if ended { nonzero("end_time") } else { None },
        time_limit: limit_of(j, "time_limit"),
        nodes: str_of(j, "nodes"),
        node_count: u32_of(j, "node_count"),
        tasks: u32_of(j, "tasks"),
        cpus: u32_of(j, "cpus"),
        priority: u32_of(j, "priority"),
        qos: str_of(j, "qos"),
        comment: str_of(j, "comment"),
        current_working_directory: cwd.clone(),
        standard_input: str_of(j, "standard_input"),
        standard_output,
        standard_error,
        batch_host: str_of(j, "batch_host"),
    }
}

/// "2" or "1-4" -> (min, max).
fn node_range(nodes: &str) -> SchedulerResult<(u32, Option<u32>)> {
    let bad = || {
        SchedulerError::InvalidJob(format!(
            "job field `nodes`: `{nodes}` is not a node count such as \"2\" or \"1-4\""
        ))
    };
    let mut parts = nodes.trim().splitn(2, '-');
    let min: u32 = parts
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .map_err(|_| bad())?;
    let max = match parts.next() {
        Some(m) => Some(m.trim().parse::<u32>().map_err(|_| bad())?),
        None => None,
    };
    if matches!(max, Some(m) if m < min) {
        return Err(bad());
    }
    Ok((min, max))
}

/// The v0.0.38 job description of a submit.
fn job_properties(
    caller: &Caller,
    job: &JobDescription,
    default_cwd: &str,
) -> SchedulerResult<Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("account", json!(caller.project.to_lowercase()));
    put(
        "current_working_directory",
        json!(job
            .current_working_directory
            .clone()
            .unwrap_or_else(|| default_cwd.to_string())),
    );
    let mut env = Map::new();
    for entry in &job.environment {
        let (k, v) = entry.split_once('=').ok_or_else(|| {
            SchedulerError::InvalidJob(format!(
                "job field `environment`: `{entry}` is not NAME=value"
            ))
        })?;
        env.insert(k.to_string(), json!(v));
    }
    if env.is_empty() {
        // slurmrestd refuses a batch job without an environment.
        env.insert("PATH".into(), json!("/usr/local/bin:/usr/bin:/bin"));
    }
    put("environment", Value::Object(env));
    for (k, v) in [
        ("name", &job.name),
        ("partition", &job.partition),
        ("qos", &job.qos),
        ("reservation", &job.reservation),
        ("comment", &job.comment),
        ("licenses", &job.licenses),
        ("standard_input", &job.standard_input),
        ("standard_output", &job.standard_output),
        ("standard_error", &job.standard_error),
    ] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    for (k, v) in [
        ("time_limit", job.time_limit),
        ("time_minimum", job.time_minimum),
        ("priority", job.priority),
        ("tasks", job.tasks),
        ("cpus_per_task", job.cpus_per_task),
        ("minimum_nodes", job.minimum_nodes),
        ("maximum_nodes", job.maximum_nodes),
        ("minimum_cpus", job.minimum_cpus),
    ] {
        if let Some(v) = v {
            put(k, json!(v));
        }
    }
    if let Some(n) = job.maximum_cpus {
        put("maximum_cpus", json!(n));
    }
    if let Some(mem) = job.memory_per_cpu {
        put("memory_per_cpu", json!(mem));
    }
    if let Some(mem) = job.memory_per_node {
        put("memory_per_node", json!(mem));
    }
    if let Some(t) = job.begin_time {
        put("begin_time", json!(t));
    }
    if let Some(nodes) = &job.nodes {
        let (min, max) = node_range(nodes)?;
        put("minimum_nodes", json!(min));
        put("maximum_nodes", json!(max.unwrap_or(min)));
    }
    Ok(Value::Object(m))
}

#[async_trait::async_trait]
impl SchedulerProvider for SlurmScheduler {
    /// The job's files as its project's user sees them on this host (the
    /// cluster's shared file system must be mounted here).
    async fn read_output(
        &self,
        caller: &Caller,
        job_id: u32,
        path: &str,
        limit: u64,
    ) -> SchedulerResult<Vec<u8>> {
        let job = job_info(&self.job_value(caller, job_id).await?);
        let path =
            super::common::job_file(path, &job.standard_output, &job.current_working_directory);
        super::common::read_as(Some(&project_user(&caller.project)), &path, limit).await
    }

    async fn about(&self) -> SchedulerResult<SchedulerAbout> {
        let value = self
            .call(&self.service_user, reqwest::Method::GET, "/ping", None)
            .await?;
        let version = value
            .pointer("/meta/Slurm/release")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cluster = self.resource.clone();
        Ok(SchedulerAbout {
            kind: "slurm".into(),
            version,
            cluster,
        })
    }

    async fn submit(
        &self,
        caller: &Caller,
        job: JobDescription,
        script: String,
    ) -> SchedulerResult<Submitted> {
        if !script.starts_with("#!") {
            return Err(SchedulerError::InvalidJob(
                "job field `script` must start with an interpreter line such as #!/bin/bash".into(),
            ));
        }
        let body =
            json!({ "job": job_properties(caller, &job, &self.default_cwd)?, "script": script });
        let user = project_user(&caller.project);
        let value = self
            .call(&user, reqwest::Method::POST, "/job/submit", Some(body))
            .await?;
        let job_id = u64_of(&value, "job_id").ok_or_else(|| {
            SchedulerError::Unavailable("slurmrestd accepted the job but named no job_id".into())
        })?;
        Ok(Submitted {
            job_id: job_id as u32,
            step_id: "batch".into(),
            user_message: str_of(&value, "job_submit_user_msg"),
        })
    }

    async fn get(&self, caller: &Caller, job_id: u32) -> SchedulerResult<JobInfo> {
        Ok(job_info(&self.job_value(caller, job_id).await?))
    }

    async fn list_jobs(&self, caller: &Caller) -> SchedulerResult<JobList> {
        let user = project_user(&caller.project);
        let answer: JobsAnswer = self
            .call_as(&user, reqwest::Method::GET, "/jobs", None)
            .await?;
        let jobs = answer
            .jobs
            .iter()
            .flatten()
            .filter(|j| same_project(*j, &caller.project))
            .map(job_info)
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(JobList {
            jobs,
            last_update: now,
            last_backfill: 0,
        })
    }

    async fn cancel(&self, caller: &Caller, job_id: u32, signal: u32) -> SchedulerResult<()> {
        // Ownership first: another project's job must read as missing.
        let job = self.job_value(caller, job_id).await?;
        let state = str_of(&job, "job_state");
        if is_ended(parse_job_state(&state)) {
            return Err(SchedulerError::InvalidJob(format!(
                "job {job_id} has already ended ({state})"
            )));
        }
        let user = project_user(&caller.project);
        // SIGTERM and SIGKILL cancel the job the way scancel does (Slurm
        // sends SIGTERM, then SIGKILL after KillWait): the job ends
        // CANCELLED. Other signals are delivered and the job goes on.
        let path = if signal == 15 || signal == 9 {
            format!("/job/{job_id}")
        } else {
            format!("/job/{job_id}?signal={signal}")
        };
        self.call(&user, reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> SchedulerResult<Vec<PingInfo>> {
        let start = Instant::now();
        let value = self
            .call(&self.service_user, reqwest::Method::GET, "/ping", None)
            .await?;
        let latency = start.elapsed().as_micros() as u64;
        Ok(value
            .get("pings")
            .and_then(Value::as_array)
            .map(|pings| {
                pings
                    .iter()
                    .map(|p| PingInfo {
                        hostname: str_of(p, "hostname"),
                        pinged: {
                            let s = str_of(p, "ping");
                            if s.is_empty() {
                                "DOWN".into()
                            } else {
                                s
                            }
                        },
                        latency,
                        mode: str_of(p, "mode"),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn diag(&self) -> SchedulerResult<Diagnostics> {
        let value = self
            .call(&self.service_user, reqwest::Method::GET, "/diag", None)
            .await?;
        let s = value.get("statistics").cloned().unwrap_or(Value::Null);
        Ok(Diagnostics {
            req_time: i64_of(&s, "req_time"),
            req_time_start: i64_of(&s, "req_time_start"),
            server_thread_count: u32_of(&s, "server_thread_count"),
            agent_queue_size: u32_of(&s, "agent_queue_size"),
            agent_count: u32_of(&s, "agent_count"),
            dbd_agent_queue_size: u32_of(&s, "dbd_agent_queue_size"),
            jobs_submitted: u32_of(&s, "jobs_submitted"),
            jobs_started: u32_of(&s, "jobs_started"),
            jobs_completed: u32_of(&s, "jobs_completed"),
            jobs_canceled: u32_of(&s, "jobs_canceled"),
            jobs_failed: u32_of(&s, "jobs_failed"),
            jobs_pending: u32_of(&s, "jobs_pending"),
            jobs_running: u32_of(&s, "jobs_running"),
            schedule_cycle_last: u32_of(&s, "schedule_cycle_last"),
            schedule_cycle_max: u32_of(&s, "schedule_cycle_max"),
            schedule_cycle_mean: u32_of(&s, "schedule_cycle_mean"),
            schedule_cycle_total: u32_of(&s, "schedule_cycle_total"),
            bf_active: s.get("bf_active").and_then(Value::as_bool).unwrap_or(false),
            bf_last_backfilled_jobs: u32_of(&s, "bf_last_backfilled_jobs"),
            bf_when_last_cycle: i64_of(&s, "bf_when_last_cycle"),
        })
    }

    async fn nodes(&self) -> SchedulerResult<Vec<NodeInfo>> {
        let value = self
            .call(&self.service_user, reqwest::Method::GET, "/nodes", None)
            .await?;
        Ok(value
            .get("nodes")
            .and_then(Value::as_array)
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| NodeInfo {
                        name: str_of(n, "name"),
                        hostname: str_of(n, "hostname"),
                        address: str_of(n, "address"),
                        state: str_of(n, "state"),
                        state_flags: strings_of(n, "state_flags"),
                        cpus: u32_of(n, "cpus"),
                        alloc_cpus: u32_of(n, "alloc_cpus"),
                        real_memory: u64_of(n, "real_memory").unwrap_or(0),
                        free_memory: u64_of(n, "free_memory").unwrap_or(0),
                        partitions: strings_of(n, "partitions"),
                        architecture: str_of(n, "architecture"),
                        operating_system: str_of(n, "operating_system"),
                        boot_time: i64_of(n, "boot_time"),
                        version: str_of(n, "slurmd_version"),
                        reason: str_of(n, "reason"),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn partitions(&self) -> SchedulerResult<Vec<PartitionInfo>> {
        let value = self
            .call(
                &self.service_user,
                reqwest::Method::GET,
                "/partitions",
                None,
            )
            .await?;
        Ok(value
            .get("partitions")
            .and_then(Value::as_array)
            .map(|parts| {
                parts
                    .iter()
                    .map(|p| {
                        let flags = strings_of(p, "flags");
                        PartitionInfo {
                            name: str_of(p, "name"),
                            nodes: str_of(p, "nodes"),
                            total_nodes: u32_of(p, "total_nodes"),
                            total_cpus: u32_of(p, "total_cpus"),
                            default_time: limit_of(p, "default_time_limit"),
                            max_time: limit_of(p, "max_time_limit"),
                            // slurmrestd 0.0.38 really spells this key with spaces.
                            min_nodes: u32_of(p, "min nodes per job")
                                .max(u32_of(p, "minimum_nodes_per_job")),
                            max_nodes: limit_of(p, "maximum_nodes_per_job"),
                            priority_tier: u32_of(p, "priority_tier"),
                            is_default: flags.iter().any(|f| f.eq_ignore_ascii_case("default")),
                            state: match str_of(p, "state").to_ascii_uppercase().as_str() {
                                "UP" => PartitionState::Up,
                                "DRAIN" => PartitionState::Drain,
                                "INACTIVE" => PartitionState::Inactive,
                                _ => PartitionState::Down,
                            },
                        }
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn reservations(&self) -> SchedulerResult<Vec<ReservationInfo>> {
        let value = self
            .call(
                &self.service_user,
                reqwest::Method::GET,
                "/reservations",
                None,
            )
            .await?;
        Ok(value
            .get("reservations")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .map(|r| ReservationInfo {
                        name: str_of(r, "name"),
                        partition: str_of(r, "partition"),
                        nodes: str_of(r, "node_list"),
                        node_count: u32_of(r, "node_count"),
                        core_count: u32_of(r, "core_count"),
                        start_time: i64_of(r, "start_time"),
                        end_time: i64_of(r, "end_time"),
                        accounts: strings_of(r, "accounts"),
                        users: strings_of(r, "users"),
                        flags: strings_of(r, "flags"),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job as slurmrestd 22.05 (openapi/v0.0.38) writes it: every field
    /// job_info reads, and some of the many it does not.
    const FULL_JOB: &str = r#"{
        "account": "ben001", "accrue_time": 1700000000, "admin_comment": "",
        "array_job_id": 0, "array_task_id": null, "batch_features": "",
        "batch_flag": true, "batch_host": "node1", "flags": ["JOB_WAS_RUNNING"],
        "comment": "a \"quoted\" comment", "cpus": 2, "cpus_per_task": 1,
        "current_working_directory": "/home/ben001/run",
        "dependency": "", "derived_exit_code": 0, "end_time": 1700000100,
        "exit_code": 256, "job_id": 42, "job_resources": {"nodes": "node1",
        "allocated_cores": 2, "allocated_hosts": 1, "allocated_nodes": [{"sockets": {"0": {"cores": {"0": "allocated"}}}, "nodename": "node1"}]},
        "job_state": "FAILED", "last_sched_evaluation": 1700000001,
        "name": "sim \u00e9t\u00e9", "nodes": "node1", "node_count": 1,
        "partition": "debug", "priority": 4294901759, "qos": "normal",
        "requeue": true, "standard_error": "", "standard_input": "/dev/null",
        "standard_output": "out-%j-%x.txt", "start_time": 1700000050,
        "state_description": "", "state_reason": "NonZeroExitCode",
        "submit_time": 1700000000, "tasks": 2, "time_limit": 60,
        "tres_req_str": "cpu=2,mem=1G,node=1", "user_name": "ben001",
        "job_\u0073tate_extra": {"deep": [1, 2, {"x": null}]}
    }"#;

    #[test]
    fn a_job_read_through_its_field_list_reads_as_the_whole_job() {
        let whole: Value = serde_json::from_str(FULL_JOB).unwrap();
        let slim: SlimJob = serde_json::from_str(FULL_JOB).unwrap();
        assert_eq!(
            format!("{:?}", job_info(&whole)),
            format!("{:?}", job_info(&slim))
        );
        // Each listed field holds what the whole job holds there.
        for (i, name) in JOB_FIELDS.iter().enumerate() {
            assert_eq!(slim.0[i].as_ref(), whole.get(*name), "{name}");
        }
        assert!(slim.field("job_resources").is_none());
        assert!(whole.get("job_resources").is_some());
        let info = job_info(&slim);
        assert_eq!(info.name, "sim été");
        assert_eq!(info.exit_code, Some(1));
        assert_eq!(info.standard_output, "/home/ben001/run/out-42-sim été.txt");
    }

    #[test]
    fn every_field_job_info_reads_is_in_the_list() {
        // job_info and same_project read fields by name through the *_of
        // helpers; a name missing from JOB_FIELDS would always read empty.
        let source = include_str!("slurm.rs");
        let body = &source[source.find("fn job_info(").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let mut read = Vec::new();
        for part in body.split("_of(j, \"").skip(1) {
            read.push(part.split('"').next().unwrap().to_string());
        }
        for part in body.split("out_path(\"").skip(1) {
            read.push(part.split('"').next().unwrap().to_string());
        }
        for part in body.split("nonzero(\"").skip(1) {
            read.push(part.split('"').next().unwrap().to_string());
        }
        read.push("account".into()); // same_project
        assert!(read.len() > 15, "{read:?}");
        for field in &read {
            assert!(
                JOB_FIELDS.contains(&field.as_str()),
                "{field} is read but not in JOB_FIELDS"
            );
        }
    }

    #[test]
    fn a_jobs_answer_carries_slurms_errors() {
        let a: JobsAnswer = serde_json::from_str(
            r#"{"meta": {}, "errors": [{"error": "Invalid job id specified", "error_number": 2017}], "jobs": []}"#,
        )
        .unwrap();
        assert_eq!(
            a.errors().iter().map(error_text).collect::<Vec<_>>(),
            ["Invalid job id specified"]
        );
        let a: JobsAnswer = serde_json::from_str(r#"{"errors": null, "jobs": null}"#).unwrap();
        assert!(a.errors().is_empty() && a.jobs.is_none());
    }

    fn scheduler() -> SlurmScheduler {
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key.path(), [7u8; 32]).unwrap();
        SlurmScheduler::new(
            "cedar",
            SlurmConfig {
                slurmrestd: Some("http://127.0.0.1:6820/".into()),
                jwt_key: Some(key.path().display().to_string()),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn call_urls_are_built_on_the_parsed_base() {
        let s = scheduler();
        assert_eq!(
            s.url("/job/submit").as_str(),
            "http://127.0.0.1:6820/slurm/v0.0.38/job/submit"
        );
        assert_eq!(
            s.url("/job/42?signal=10").as_str(),
            "http://127.0.0.1:6820/slurm/v0.0.38/job/42?signal=10"
        );
        assert_eq!(s.url("/jobs").query(), None);
    }

    #[test]
    fn node_ranges() {
        assert_eq!(node_range("2").unwrap(), (2, None));
        assert_eq!(node_range("1-4").unwrap(), (1, Some(4)));
        assert!(node_range("4-1").is_err());
        assert!(node_range("x").is_err());
    }
}

//! Compute: S3M's "Slurm indirect" API. Paths mirror slurmrestd's,
//! `/slurm/open/v0.0.{42,43,44}/{resource}/...` and the legacy
//! `/slurm/v0.0.42/{resource}/...`; the `scheduler` capability of the host
//! answers (Slurm through slurmrestd, or local processes: not this room's
//! business).
//!
//! - Permissions: `compute-ace` for everything, `compute-ace-readonly` for GET.
//! - Jobs run as the token's `{project}_auser` under account = the project;
//!   a project sees, gets and cancels only its own jobs (others read 404).
//! - `Idempotency-Key` on submit: the first submit with a key (per project
//!   and resource) claims it atomically (wasi:keyvalue `increment` in store
//!   "default"); repeats return that first job and submit nothing.
//! - `{resource}` must be a `[[resources]]` entry with a `[resources.compute]`
//!   table in `/config/facility.toml`.

mod body;
mod wire;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        world: "s3m:facility/compute",
        path: "../../wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::s3m::facility::scheduler::{self, SchedulerError};
use bindings::s3m::facility::types::Caller;
use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::{authenticate, json, route_path, ApiError, Principal};
use serde::Serialize;
use spin_sdk::http_component;
use wire::*;

const PERMISSION: &str = "compute-ace";
const READONLY: &str = "compute-ace-readonly";

/// The data parser version a path asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Version {
    V42,
    V43,
    V44,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V42 => "v0.0.42",
            Version::V43 => "v0.0.43",
            Version::V44 => "v0.0.44",
        }
    }
}

/// Signal names as `scancel --signal` takes them.
pub const SIGNALS: &[(&str, u32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ABRT", 6),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("URG", 23),
    ("XCPU", 24),
];

/// The flags slurmrestd's job DELETE takes; accepted, and all but the
/// signal are the scheduler's defaults here.
const CANCEL_FLAGS: &[&str] = &[
    "BATCH_JOB",
    "ARRAY_TASK",
    "FULL_STEPS_ONLY",
    "FULL_JOB",
    "FEDERATION_REQUEUE",
    "HURRY",
    "OUT_OF_MEMORY",
    "NO_SIBLING_JOBS",
    "RESERVATION_PURGE",
    "VERBOSE",
    "CRON_JOBS",
];

// ---- routes ----

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

enum Endpoint {
    Ping,
    Diag,
    Jobs,
    Job(String),
    Submit,
    Nodes,
    Partitions,
    Reservations,
}

fn parse_path(path: &str) -> Option<(Version, &str, Endpoint)> {
    let (version, rest) = if let Some(rest) = path.strip_prefix("/slurm/open/") {
        let (v, rest) = rest.split_once('/')?;
        let version = match v {
            "v0.0.42" => Version::V42,
            "v0.0.43" => Version::V43,
            "v0.0.44" => Version::V44,
            _ => return None,
        };
        (version, rest)
    } else {
        (Version::V42, path.strip_prefix("/slurm/v0.0.42/")?)
    };
    let (resource, rest) = rest.split_once('/')?;
    if resource.is_empty() {
        return None;
    }
    let endpoint = match rest {
        "ping" => Endpoint::Ping,
        "diag" => Endpoint::Diag,
        "jobs" => Endpoint::Jobs,
        "job/submit" => Endpoint::Submit,
        "nodes" => Endpoint::Nodes,
        "partitions" => Endpoint::Partitions,
        "reservations" => Endpoint::Reservations,
        job if job.starts_with("job/") && !job[4..].contains('/') => {
            Endpoint::Job(job[4..].to_string())
        }
        _ => return None,
    };
    Some((version, resource, endpoint))
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    let Some((version, resource, endpoint)) = parse_path(&path) else {
        return Err(ApiError::not_found(format!(
            "no endpoint at {path}; compute paths are /slurm/open/v0.0.{{42,43,44}}/{{resource}}/{{ping,diag,jobs,job/submit,job/{{job_id}},nodes,partitions,reservations}}"
        )));
    };
    let method = req.method().clone();
    let allowed: &[&str] = match endpoint {
        Endpoint::Submit => &["POST"],
        Endpoint::Job(_) => &["GET", "DELETE"],
        _ => &["GET"],
    };
    if !allowed.iter().any(|m| *m == method.to_string()) {
        return Err(ApiError::wrong_method(&method, &path, allowed));
    }
    let principal = authenticate(req)?;
    if method == Method::Get {
        principal.require_any(&[PERMISSION, READONLY])?;
    } else {
        principal.require(PERMISSION)?;
    }
    let job_id = match &endpoint {
        Endpoint::Job(id) => Some(parse_job_id(id)?),
        _ => None,
    };
    check_resource(resource)?;
    let cx = Context {
        version,
        resource,
        principal: &principal,
    };
    match endpoint {
        Endpoint::Ping => cx.ping(),
        Endpoint::Diag => cx.diag(),
        Endpoint::Jobs => cx.jobs(),
        Endpoint::Job(_) if method == Method::Delete => {
            cx.cancel(job_id.unwrap_or_default(), req.query())
        }
        Endpoint::Job(_) => cx.job(job_id.unwrap_or_default()),
        Endpoint::Submit => cx.submit(req),
        Endpoint::Nodes => cx.nodes(),
        Endpoint::Partitions => cx.partitions(),
        Endpoint::Reservations => cx.reservations(),
    }
}

/// Job ids are numeric, under 10 digits.
fn parse_job_id(text: &str) -> Result<u32, ApiError> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = text.chars().take(40).collect();
        return Err(ApiError::bad_request(format!(
            "job_id `{shown}` is not a job id: it must be a number of 1 to 9 digits"
        )));
    }
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("job_id `{text}` is out of range")))
}

/// 404 unless the facility configures `resource` as a compute resource.
fn check_resource(resource: &str) -> Result<(), ApiError> {
    // Which resources have a `[resources.compute]` is all this needs: read
    // from the host's summary, borrowed, past everything else (issue 13).
    if let Some(json) = s3m_guest::facility::host_summary_json() {
        if let Ok(summary) = serde_json::from_str::<ComputeResources>(&json) {
            let resources = summary.resources.iter();
            return has_compute(
                resources.map(|r| (r.name.as_ref(), r.compute.is_some())),
                resource,
            );
        }
    }
    let facility = s3m_guest::facility::load()?;
    let resources = facility.resources.iter();
    has_compute(
        resources.map(|r| (r.name.as_str(), r.compute.is_some())),
        resource,
    )
}

/// What [`check_resource`] reads of the host's facility summary.
#[derive(serde::Deserialize)]
struct ComputeResources<'a> {
    #[serde(borrow, default)]
    resources: Vec<ResourceEntry<'a>>,
}

#[derive(serde::Deserialize)]
struct ResourceEntry<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(default)]
    compute: Option<serde::de::IgnoredAny>,
}

/// `resources`: each resource's name, and whether it has a compute section.
fn has_compute<'a>(
    resources: impl Iterator<Item = (&'a str, bool)> + Clone,
    resource: &str,
) -> Result<(), ApiError> {
    if resources
        .clone()
        .any(|(name, compute)| compute && name == resource)
    {
        return Ok(());
    }
    let names: Vec<&str> = resources
        .filter(|(_, compute)| *compute)
        .map(|(name, _)| name)
        .collect();
    let shown: String = resource.chars().take(64).collect();
    Err(ApiError::not_found(format!(
        "no compute resource named `{shown}`; this facility's compute resources: {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

fn scheduler_error(e: SchedulerError) -> ApiError {
    match e {
        SchedulerError::InvalidJob(m) => ApiError::bad_request(m),
        SchedulerError::NotFound(m) => ApiError::not_found(m),
        SchedulerError::Unavailable(m) => ApiError::unavailable(m),
        SchedulerError::Permission(m) => ApiError::permission_denied(m),
    }
}

struct Context<'a> {
    version: Version,
    resource: &'a str,
    principal: &'a Principal,
}

impl Context<'_> {
    fn answer<T: Serialize>(&self, body: T) -> Result<Response, ApiError> {
        Ok(json(&Answer {
            body,
            meta: Meta::new(self.version, self.resource, &self.principal.username),
            errors: Vec::new(),
            warnings: Vec::new(),
        }))
    }

    fn caller(&self) -> Caller {
        Caller {
            project: self.principal.project.clone(),
            username: self.principal.username.clone(),
            token: self.principal.token.clone(),
        }
    }

    fn ping(&self) -> Result<Response, ApiError> {
        let pings = scheduler::ping(self.resource).map_err(scheduler_error)?;
        self.answer(Pings {
            pings: pings.into_iter().map(Ping::from).collect(),
        })
    }

    fn diag(&self) -> Result<Response, ApiError> {
        let d = scheduler::diag(self.resource).map_err(scheduler_error)?;
        self.answer(Statistics {
            statistics: d.into(),
        })
    }

    fn jobs(&self) -> Result<Response, ApiError> {
        let list = scheduler::list_jobs(self.resource, &self.caller()).map_err(scheduler_error)?;
        let project = &self.principal.project;
        let jobs = list
            .jobs
            .into_iter()
            // The provider filters already; a second look costs nothing.
            .filter(|j| j.account.eq_ignore_ascii_case(project))
            .map(|j| Job::from(j, self.resource))
            .collect();
        self.answer(Jobs {
            jobs,
            last_backfill: NoVal::opt(Some(list.last_backfill).filter(|t| *t > 0)),
            last_update: NoVal::some(list.last_update),
        })
    }

    fn job(&self, job_id: u32) -> Result<Response, ApiError> {
        let job = scheduler::get(self.resource, &self.caller(), job_id).map_err(scheduler_error)?;
        if !job.account.eq_ignore_ascii_case(&self.principal.project) {
            return Err(ApiError::not_found(format!(
                "no job {job_id} in project {}",
                self.principal.project
            )));
        }
        self.answer(JobOnly {
            jobs: vec![Job::from(job, self.resource)],
        })
    }

    fn cancel(&self, job_id: u32, query: &str) -> Result<Response, ApiError> {
        let mut signal = 15;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match key {
                "signal" => signal = parse_signal(&value)?,
                "flags" => {
                    for flag in value.split(',').filter(|f| !f.is_empty()) {
                        if !CANCEL_FLAGS.contains(&flag.to_ascii_uppercase().as_str()) {
                            return Err(ApiError::bad_request(format!(
                                "unknown cancel flag `{flag}`; known: {}",
                                CANCEL_FLAGS.join(", ")
                            )));
                        }
                    }
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter `{other}` on job cancel; use signal and flags"
                    )))
                }
            }
        }
        scheduler::cancel(self.resource, &self.caller(), job_id, signal)
            .map_err(scheduler_error)?;
        self.answer(Cancelled {
            status: vec![CancelStatus {
                error: String::new(),
                error_code: 0,
                why: String::new(),
                job_id: job_id.to_string(),
                step_id: "batch".into(),
                sibling: String::new(),
            }],
        })
    }

    fn submit(&self, req: &Request) -> Result<Response, ApiError> {
        let submit = body::parse(req.body(), self.version)?;
        if let Some(account) = &submit.account {
            if !account.eq_ignore_ascii_case(&self.principal.project) {
                return Err(ApiError::permission_denied(format!(
                    "job field `account` is `{account}`, but this token is for project {}: jobs run under the token's project",
                    self.principal.project
                )));
            }
        }
        let key = match req.header("idempotency-key")? {
            None => None,
            Some(v) => Some(idempotency_key(std::str::from_utf8(&v).ok())?),
        };
        let answer = match key {
            None => self.submit_now(submit)?,
            Some(key) => self.submit_once(&key, submit)?,
        };
        self.answer(answer)
    }

    fn submit_now(&self, submit: body::Submit) -> Result<SubmitAnswer, ApiError> {
        let done = scheduler::submit(self.resource, &self.caller(), &submit.job, &submit.script)
            .map_err(scheduler_error)?;
        Ok(SubmitAnswer {
            job_id: done.job_id,
            step_id: done.step_id,
            job_submit_user_msg: done.user_message,
        })
    }

    /// A submit guarded by an idempotency key: whoever increments the
    /// claim to 1 submits; the others wait for its job id. A failed submit
    /// releases the claim so that a retry may submit.
    fn submit_once(&self, key: &str, submit: body::Submit) -> Result<SubmitAnswer, ApiError> {
        use sha2::{Digest, Sha256};
        use spin_sdk::wit::wasi::keyvalue::{atomics, store};
        let kv = |e: store::Error| {
            ApiError::unavailable(format!(
                "key-value store failed on an idempotent submit: {e:?}"
            ))
        };
        let bucket = store::open("default").map_err(kv)?;
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        let base = format!(
            "compute/idempotency/{}/{}/{digest}",
            self.principal.project.to_lowercase(),
            self.resource
        );
        let claim = format!("{base}/claim");
        let result = format!("{base}/job");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(bytes) = bucket.get(&result).map_err(kv)? {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::internal(format!("stored idempotent submit is unreadable: {e}"))
                });
            }
            if atomics::increment(&bucket, &claim, 1).map_err(kv)? == 1 {
                // When the key was claimed: the host forgets the record
                // after its TTL (`s3m up --idempotency-ttl`), and frees a
                // claim whose job never came.
                let at = s3m_guest::time::rfc3339_micros(&s3m_guest::time::now());
                bucket
                    .set(&format!("{base}/at"), at.as_bytes())
                    .map_err(kv)?;
                return match self.submit_now(submit) {
                    Ok(answer) => {
                        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                        bucket.set(&result, &bytes).map_err(kv)?;
                        Ok(answer)
                    }
                    Err(e) => {
                        let _ = bucket.delete(&format!("{base}/at"));
                        let _ = bucket.delete(&claim);
                        Err(e)
                    }
                };
            }
            // Another request holds the claim: wait for its job, or for the
            // claim to go (its submit failed) and try again.
            loop {
                if std::time::Instant::now() > deadline {
                    return Err(ApiError::aborted(
                        "another submit with this Idempotency-Key is still in progress; retry later",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                if bucket.exists(&result).map_err(kv)? || !bucket.exists(&claim).map_err(kv)? {
                    break;
                }
            }
        }
    }

    fn nodes(&self) -> Result<Response, ApiError> {
        let nodes = scheduler::nodes(self.resource).map_err(scheduler_error)?;
        self.answer(Nodes {
            nodes: nodes.into_iter().map(Node::from).collect(),
        })
    }

    fn partitions(&self) -> Result<Response, ApiError> {
        let parts = scheduler::partitions(self.resource).map_err(scheduler_error)?;
        self.answer(Partitions {
            partitions: parts
                .into_iter()
                .map(|p| Partition::from(p, self.resource, self.version))
                .collect(),
        })
    }

    fn reservations(&self) -> Result<Response, ApiError> {
        let rs = scheduler::reservations(self.resource).map_err(scheduler_error)?;
        self.answer(Reservations {
            reservations: rs.into_iter().map(Reservation::from).collect(),
        })
    }
}

fn idempotency_key(value: Option<&str>) -> Result<String, ApiError> {
    match value {
        Some(k)
            if !k.trim().is_empty()
                && k.len() <= 255
                && k.chars().all(|c| c.is_ascii_graphic() || c == ' ') =>
        {
            Ok(k.trim().to_string())
        }
        _ => Err(ApiError::bad_request(
            "header Idempotency-Key must be 1 to 255 printable ASCII characters",
        )),
    }
}

fn parse_signal(text: &str) -> Result<u32, ApiError> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u32>() {
        if SIGNALS.iter().any(|(_, num)| *num == n) {
            return Ok(n);
        }
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, num)| *num)
        .ok_or_else(|| {
            let shown: String = t.chars().take(20).collect();
            ApiError::bad_request(format!(
                "unknown signal `{shown}`; use one of {}",
                SIGNALS
                    .iter()
                    .map(|(n, _)| format!("SIG{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3m_guest::facility::FacilityConfig;

    #[test]
    fn the_summary_read_borrowed_names_the_compute_resources_the_file_does() {
        let toml = r#"
[facility]
name = "F"
[[resources]]
name = "basalt"
[resources.compute]
scheduler = "local"
[[resources]]
name = "gr\"an\\ite"
description = "a name with escapes"
[resources.compute]
scheduler = "slurm"
slurmrestd = "http://x"
[[resources]]
name = "quartz"
[resources.environment]
modules = ["gcc"]
[[downtimes]]
resource = "basalt"
start = "2026-01-01T00:00:00Z"
end = "2026-01-02T00:00:00Z"
"#;
        let whole = FacilityConfig::parse(toml, std::path::Path::new("f")).unwrap();
        let from_file: Vec<(String, bool)> = whole
            .resources
            .iter()
            .map(|r| (r.name.clone(), r.compute.is_some()))
            .collect();
        let summary = FacilityConfig::digests(toml).unwrap().summary;
        let read: ComputeResources = serde_json::from_str(&summary).unwrap();
        let from_summary: Vec<(String, bool)> = read
            .resources
            .iter()
            .map(|r| (r.name.to_string(), r.compute.is_some()))
            .collect();
        assert_eq!(from_summary, from_file);
        assert_eq!(
            from_file,
            [
                ("basalt".to_string(), true),
                ("gr\"an\\ite".to_string(), true),
                ("quartz".to_string(), false)
            ]
        );
        let names = || {
            read.resources
                .iter()
                .map(|r| (r.name.as_ref(), r.compute.is_some()))
        };
        assert!(has_compute(names(), "gr\"an\\ite").is_ok());
        let err = has_compute(names(), "quartz").unwrap_err();
        assert!(
            format!("{err:?}").contains("basalt, gr"),
            "the 404 names the compute resources: {err:?}"
        );
    }
}

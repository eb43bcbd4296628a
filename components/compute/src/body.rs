//! The submit body: `{"job": {...}}` (every version, the script inside the
//! job or beside it), or v0.0.44's `{"script": "...", "jobs": [{...}]}`.
//! Every job field is checked against the allow-list and its type here, so
//! that a bad body is a 400 that names the field, before the scheduler sees
//! anything.

use crate::bindings::s3m::facility::scheduler::JobDescription;
use crate::Version;
use s3m_guest::{cut, ApiError};
use serde_json::{Map, Value};

/// The job fields S3M passes on: slurmrestd's job description, the part a
/// facility lets a project choose.
pub const ALLOWED_FIELDS: &[&str] = &[
    "account",
    "begin_time",
    "comment",
    "cpus_per_task",
    "current_working_directory",
    "environment",
    "licenses",
    "maximum_cpus",
    "maximum_nodes",
    "memory_per_cpu",
    "memory_per_node",
    "minimum_cpus",
    "minimum_nodes",
    "name",
    "nodes",
    "partition",
    "priority",
    "qos",
    "reservation",
    "script",
    "standard_error",
    "standard_input",
    "standard_output",
    "tasks",
    "time_limit",
    "time_minimum",
];

/// A checked submit: what to ask the scheduler for.
pub struct Submit {
    pub job: JobDescription,
    pub script: String,
    /// The `account` the body named, if any (must be the token's project).
    pub account: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request(message)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(field: &str, v: &Value) -> Result<String, ApiError> {
    let s = v.as_str().ok_or_else(|| {
        bad(format!(
            "job field `{field}` must be a string, not {}",
            kind(v)
        ))
    })?;
    // A NUL cannot reach a process's arguments, environment or paths.
    if s.contains('\0') {
        return Err(bad(format!("job field `{field}` holds a NUL byte")));
    }
    Ok(s.to_string())
}

/// A number, or Slurm's `{"number": n, "set": true, "infinite": false}`.
/// Unset or infinite is `None`.
fn number(field: &str, v: &Value, max: u64) -> Result<Option<u64>, ApiError> {
    let expect = || {
        bad(format!(
            "job field `{field}` must be a whole number from 0 to {max} or {{\"number\": n, \"set\": true}}, not {}",
            match v {
                Value::Number(n) => format!("{n}"),
                other => kind(other).to_string(),
            }
        ))
    };
    match v {
        Value::Number(n) => n
            .as_u64()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or_else(expect),
        Value::Object(m) => {
            for key in m.keys() {
                if !matches!(key.as_str(), "number" | "set" | "infinite") {
                    return Err(bad(format!(
                        "job field `{field}` has an unknown key `{key}`; use number, set, infinite"
                    )));
                }
            }
            let flag = |k: &str| -> Result<bool, ApiError> {
                match m.get(k) {
                    None => Ok(k == "set"),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(other) => Err(bad(format!(
                        "job field `{field}.{k}` must be true or false, not {}",
                        kind(other)
                    ))),
                }
            };
            let (set, infinite) = (flag("set")?, flag("infinite")?);
            if !set || infinite {
                return Ok(None);
            }
            match m.get("number") {
                Some(n) => number(field, n, max),
                None => Err(bad(format!(
                    "job field `{field}` is set but has no `number`"
                ))),
            }
        }
        _ => Err(expect()),
    }
}

fn small(field: &str, v: &Value) -> Result<Option<u32>, ApiError> {
    Ok(number(field, v, u32::MAX as u64 - 2)?.map(|n| n as u32))
}

fn environment(v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| match item.as_str() {
                Some(s) if s.contains('\0') => Err(bad(
                    "job field `environment`: an entry holds a NUL byte".to_string(),
                )),
                Some(s) if s.contains('=') && !s.starts_with('=') => Ok(s.to_string()),
                Some(s) => Err(bad(format!(
                    "job field `environment`: entry `{}` is not NAME=value",
                    cut(s)
                ))),
                None => Err(bad(format!(
                    "job field `environment` must hold strings \"NAME=value\", not {}",
                    kind(item)
                ))),
            })
            .collect(),
        // slurmrestd v0.0.38's form.
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) if s.contains('\0') || k.contains('\0') || k.is_empty() || k.contains('=') => {
                    Err(bad(
                        "job field `environment`: an entry has an empty name, `=` in its name or a NUL byte"
                            .to_string(),
                    ))
                }
                Some(s) => Ok(format!("{k}={s}")),
                None => Err(bad(format!(
                    "job field `environment`: the value of `{k}` must be a string"
                ))),
            })
            .collect(),
        other => Err(bad(format!(
            "job field `environment` must be an array of \"NAME=value\" strings, not {}",
            kind(other)
        ))),
    }
}

fn job_description(
    job: &Map<String, Value>,
) -> Result<(JobDescription, Option<String>, Option<String>), ApiError> {
    let mut d = JobDescription {
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
        environment: Vec::new(),
        standard_input: None,
        standard_output: None,
        standard_error: None,
    };
    let mut script = None;
    let mut account = None;
    for (field, v) in job {
        let f = field.as_str();
        match f {
            "account" => account = Some(string(f, v)?),
            "script" => script = Some(string(f, v)?),
            "name" => d.name = Some(string(f, v)?),
            "partition" => d.partition = Some(string(f, v)?),
            "qos" => d.qos = Some(string(f, v)?),
            "reservation" => d.reservation = Some(string(f, v)?),
            "comment" => d.comment = Some(string(f, v)?),
            "licenses" => d.licenses = Some(string(f, v)?),
            "current_working_directory" => {
                let cwd = string(f, v)?;
                if !cwd.starts_with('/') {
                    return Err(bad(format!("job field `current_working_directory` must be an absolute path, not `{cwd}`")));
                }
                d.current_working_directory = Some(cwd)
            }
            "standard_input" => d.standard_input = Some(string(f, v)?),
            "standard_output" => d.standard_output = Some(string(f, v)?),
            "standard_error" => d.standard_error = Some(string(f, v)?),
            "time_limit" => d.time_limit = small(f, v)?,
            "time_minimum" => d.time_minimum = small(f, v)?,
            "begin_time" => d.begin_time = number(f, v, i64::MAX as u64)?.map(|n| n as i64),
            "priority" => d.priority = small(f, v)?,
            "tasks" => d.tasks = small(f, v)?,
            "cpus_per_task" => d.cpus_per_task = small(f, v)?,
            "minimum_nodes" => d.minimum_nodes = small(f, v)?,
            "maximum_nodes" => d.maximum_nodes = small(f, v)?,
            "minimum_cpus" => d.minimum_cpus = small(f, v)?,
            "maximum_cpus" => d.maximum_cpus = small(f, v)?,
            "memory_per_cpu" => d.memory_per_cpu = number(f, v, u64::MAX - 2)?,
            "memory_per_node" => d.memory_per_node = number(f, v, u64::MAX - 2)?,
            "nodes" => {
                d.nodes = Some(match v {
                    Value::Number(n) if n.is_u64() => n.to_string(),
                    Value::String(s) => {
                        let ok = !s.is_empty()
                            && s.splitn(2, '-')
                                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
                        if !ok {
                            return Err(bad(format!("job field `nodes` must be a node count such as \"2\" or \"1-4\", not `{s}`")));
                        }
                        s.clone()
                    }
                    other => {
                        return Err(bad(format!(
                            "job field `nodes` must be a number or a string such as \"1-4\", not {}",
                            kind(other)
                        )));
                    }
                })
            }
            "environment" => d.environment = environment(v)?,
            unknown => {
                return Err(bad(format!(
                    "job field `{unknown}` is not allowed; allowed fields: {}",
                    ALLOWED_FIELDS.join(", ")
                )))
            }
        }
    }
    Ok((d, script, account))
}

/// Parses and checks a submit body for `version`.
pub fn parse(body: &[u8], version: Version) -> Result<Submit, ApiError> {
    if body.is_empty() {
        return Err(bad(
            "the submit body is empty; send {\"job\": {\"script\": \"#!/bin/bash\\n...\", ...}}"
                .into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the submit body is not valid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(bad(format!(
            "the submit body must be a JSON object, not {}",
            kind(&value)
        )));
    };
    for key in top.keys() {
        let known =
            matches!(key.as_str(), "job" | "script") || (key == "jobs" && version == Version::V44);
        if !known {
            let allowed = if version == Version::V44 {
                "job, jobs, script"
            } else {
                "job, script"
            };
            return Err(bad(format!(
                "unknown field `{key}` in the submit body; allowed: {allowed}"
            )));
        }
    }
    let job = match (top.get("job"), top.get("jobs")) {
        (Some(_), Some(_)) => return Err(bad("give either `job` or `jobs`, not both".into())),
        (Some(Value::Object(job)), None) => job,
        (Some(other), None) => {
            return Err(bad(format!(
                "field `job` must be an object, not {}",
                kind(other)
            )))
        }
        (None, Some(Value::Array(jobs))) => match jobs.as_slice() {
            [Value::Object(job)] => job,
            [_] => return Err(bad("`jobs` must hold one job object".into())),
            _ => {
                return Err(bad(format!(
                    "`jobs` holds {} jobs; heterogeneous jobs are not supported, send one",
                    jobs.len()
                )))
            }
        },
        (None, Some(other)) => {
            return Err(bad(format!(
                "field `jobs` must be an array, not {}",
                kind(other)
            )))
        }
        (None, None) => {
            return Err(bad(
                "field `job` is required: {\"job\": {\"script\": \"#!/bin/bash\\n...\", ...}}"
                    .into(),
            ))
        }
    };
    let (job, inner_script, account) = job_description(job)?;
    let outer_script = match top.get("script") {
        None => None,
        Some(v) => Some(string("script", v)?),
    };
    let script = match (inner_script, outer_script) {
        (Some(a), Some(b)) if a != b => {
            return Err(bad(
                "the body gives two different scripts (`job.script` and `script`); give one".into(),
            ))
        }
        (Some(s), _) | (None, Some(s)) => s,
        (None, None) => {
            return Err(bad(
                "job field `script` is required: the batch script, starting with #!".into(),
            ))
        }
    };
    if script.trim().is_empty() {
        return Err(bad("job field `script` is empty".into()));
    }
    if !script.starts_with("#!") {
        return Err(bad(
            "job field `script` must start with an interpreter line such as #!/bin/bash".into(),
        ));
    }
    Ok(Submit {
        job,
        script,
        account,
    })
}

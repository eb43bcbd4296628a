//! Environment: what a job on each resource runs with. The scheduler (kind,
//! version, reachable or not) and its partitions with their limits come live
//! from the `scheduler` capability; the software modules from the `software`
//! capability (Lmod's spider, or the configured list); container runtimes,
//! filesystems and default variables from `[resources.environment]` of the
//! facility configuration (`/config/facility.toml`, read on every request).
//! Any valid token may read it; no permission is needed.
//!
//! This room reads only `[[resources]]` `name`, `description`, whether
//! `[resources.compute]` exists, and `[resources.environment]`
//! `container_runtimes`, `filesystems` and `variables`; the host reads the
//! module keys (`modulepath`, `modules`, ...) of the same table.

use std::collections::BTreeMap;

use s3m_guest::facility::{self, ResourceConfig};
use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::time::{now, rfc3339};
use s3m_guest::{authenticate, cut, json, route_path, ApiError};
use serde::{Deserialize, Serialize};
use spin_sdk::http_component;

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        world: "s3m:facility/environment",
        path: "../../wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::s3m::facility::scheduler::{self, PartitionState, SchedulerError};
use bindings::s3m::facility::software::{self, SoftwareError};

const BASE: &str = "/olcf/v1alpha/environment";
/// How long the schedulers of a request may take, all together.
const SCHEDULER_DEADLINE_MS: u32 = 5_000;

// ---- routes ----

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    let Some(rest) = path.strip_prefix(BASE) else {
        return Err(ApiError::no_route(&path));
    };
    let resource = match rest {
        "" | "/" => None,
        name if name.starts_with('/') && !name[1..].contains('/') => Some(&name[1..]),
        _ => return Err(ApiError::no_route(&path)),
    };
    if *req.method() != Method::Get {
        return Err(ApiError::wrong_method(req.method(), &path, &["GET"]));
    }
    authenticate(req)?;
    let facility = facility::load()?;
    let wanted: Vec<&ResourceConfig> = match resource {
        None => facility.resources.iter().collect(),
        Some(name) => match facility.resources.iter().find(|r| r.name == name) {
            Some(r) => vec![r],
            None => {
                return Err(ApiError::not_found(format!(
                    "no resource named {:?}: GET {BASE} lists the resources",
                    cut(name)
                )))
            }
        },
    };
    // Every scheduler is asked at once, under one deadline: one that hangs
    // is reported unreachable and holds up nobody.
    let compute: Vec<String> = wanted
        .iter()
        .filter(|r| r.compute.is_some())
        .map(|r| r.name.clone())
        .collect();
    let mut overviews: BTreeMap<String, scheduler::SchedulerOverview> =
        scheduler::overviews(&compute, SCHEDULER_DEADLINE_MS)
            .into_iter()
            .map(|o| (o.resource.clone(), o))
            .collect();
    let mut environments = Vec::new();
    for r in wanted {
        let config = environment_config(r)?;
        environments.push(environment(r, &config, overviews.remove(&r.name))?);
    }
    Ok(match resource {
        None => json(&EnvironmentsAnswer { environments }),
        Some(_) => json(&environments.remove(0)),
    })
}

// ---- wire shapes ----

#[derive(Serialize)]
struct EnvironmentsAnswer {
    environments: Vec<Environment>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Environment {
    /// The resource's name.
    name: String,
    description: String,
    /// None for a resource that runs no jobs (no `[resources.compute]`).
    scheduler: Option<Scheduler>,
    partitions: Vec<Partition>,
    modules: Vec<Module>,
    container_runtimes: Vec<ContainerRuntime>,
    filesystems: Vec<Filesystem>,
    /// Set in every job's environment; keys kept verbatim.
    variables: BTreeMap<String, String>,
    /// What could not be read live (scheduler down, Lmod failing), and how to fix it.
    warnings: Vec<String>,
    retrieved_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Scheduler {
    /// "slurm" or "local"; empty when the scheduler could not say.
    kind: String,
    version: String,
    cluster: String,
    reachable: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Partition {
    name: String,
    /// "UP", "DOWN", "DRAIN" or "INACTIVE".
    state: &'static str,
    is_default: bool,
    /// Node list, e.g. "node[1-4]".
    nodes: String,
    total_nodes: u32,
    total_cpus: u32,
    min_nodes: u32,
    /// None for unlimited.
    max_nodes: Option<u32>,
    /// Minutes; none when the partition sets no default.
    default_time_minutes: Option<u32>,
    /// Minutes; none for unlimited.
    max_time_minutes: Option<u32>,
    priority_tier: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Module {
    name: String,
    /// Oldest first.
    versions: Vec<String>,
    default_version: Option<String>,
    description: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerRuntime {
    name: String,
    version: Option<String>,
    /// The command a job runs, e.g. "apptainer".
    command: Option<String>,
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Filesystem {
    name: String,
    mount_path: String,
    purpose: String,
    /// E.g. "never", "files unused for 90 days are purged".
    purge_policy: String,
}

// ---- the facility configuration (this room's keys) ----

#[derive(Deserialize, Default)]
struct EnvironmentConfig {
    #[serde(default)]
    container_runtimes: Vec<RuntimeConfig>,
    #[serde(default)]
    filesystems: Vec<FilesystemConfig>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeConfig {
    name: String,
    version: Option<String>,
    command: Option<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesystemConfig {
    name: String,
    mount_path: String,
    #[serde(default)]
    purpose: String,
    #[serde(default = "never")]
    purge_policy: String,
}

fn never() -> String {
    "never".into()
}

/// This room's keys of a resource's `[resources.environment]` (the host's
/// software providers read the others); a wrong one is a 503 naming the
/// resource and the key.
fn environment_config(r: &ResourceConfig) -> Result<EnvironmentConfig, ApiError> {
    let Some(table) = &r.environment else {
        return Ok(EnvironmentConfig::default());
    };
    table.clone().try_into().map_err(|e: toml::de::Error| {
        facility::invalid(format!(
            "resource {:?}: [resources.environment] is not valid: {}",
            r.name,
            e.to_string().trim_end().replace('\n', " ")
        ))
    })
}

// ---- capability calls ----

fn environment(
    r: &ResourceConfig,
    env: &EnvironmentConfig,
    overview: Option<scheduler::SchedulerOverview>,
) -> Result<Environment, ApiError> {
    let mut warnings = Vec::new();
    let (scheduler, partitions) = match overview {
        Some(o) if r.compute.is_some() => {
            let (s, p) = scheduler_of(o, &mut warnings);
            (Some(s), p)
        }
        _ => (None, Vec::new()),
    };
    let modules = match software::modules(&r.name) {
        Ok(list) => {
            warnings.extend(
                list.warnings
                    .into_iter()
                    .map(|w| format!("software modules: {w}")),
            );
            list.modules
                .into_iter()
                .map(|m| Module {
                    name: m.name,
                    versions: m.versions,
                    default_version: m.default_version,
                    description: m.description,
                })
                .collect()
        }
        Err(SoftwareError::NotFound(m) | SoftwareError::Unavailable(m)) => {
            warnings.push(format!("software modules unavailable: {m}"));
            Vec::new()
        }
    };
    Ok(Environment {
        name: r.name.clone(),
        description: r.description.clone(),
        scheduler,
        partitions,
        modules,
        container_runtimes: env
            .container_runtimes
            .iter()
            .map(|c| ContainerRuntime {
                name: c.name.clone(),
                version: c.version.clone(),
                command: c.command.clone(),
                description: c.description.clone(),
            })
            .collect(),
        filesystems: env
            .filesystems
            .iter()
            .map(|f| Filesystem {
                name: f.name.clone(),
                mount_path: f.mount_path.clone(),
                purpose: f.purpose.clone(),
                purge_policy: f.purge_policy.clone(),
            })
            .collect(),
        variables: env.variables.clone(),
        warnings,
        retrieved_at: rfc3339(&now()),
    })
}

fn scheduler_error(e: SchedulerError) -> String {
    match e {
        SchedulerError::InvalidJob(m)
        | SchedulerError::NotFound(m)
        | SchedulerError::Unavailable(m)
        | SchedulerError::Permission(m) => m,
    }
}

/// The scheduler and its partitions; what fails becomes a warning, so that
/// a scheduler that is down still leaves the rest of the environment readable.
fn scheduler_of(
    o: scheduler::SchedulerOverview,
    warnings: &mut Vec<String>,
) -> (Scheduler, Vec<Partition>) {
    let resource = o.resource;
    let mut s = Scheduler {
        kind: String::new(),
        version: String::new(),
        cluster: String::new(),
        reachable: false,
    };
    match o.about {
        Ok(a) => {
            s.kind = a.kind;
            s.version = a.version;
            s.cluster = a.cluster;
        }
        Err(e) => warnings.push(format!("scheduler unavailable: {}", scheduler_error(e))),
    }
    match o.reachable {
        Ok(up) => {
            s.reachable = up;
            if !up {
                warnings.push(format!("scheduler of {resource} does not answer its ping"));
            }
        }
        Err(e) => warnings.push(format!("scheduler unreachable: {}", scheduler_error(e))),
    }
    let partitions = match o.partitions {
        Ok(ps) => ps
            .into_iter()
            .map(|p| Partition {
                name: p.name,
                state: match p.state {
                    PartitionState::Up => "UP",
                    PartitionState::Down => "DOWN",
                    PartitionState::Drain => "DRAIN",
                    PartitionState::Inactive => "INACTIVE",
                },
                is_default: p.is_default,
                nodes: p.nodes,
                total_nodes: p.total_nodes,
                total_cpus: p.total_cpus,
                min_nodes: p.min_nodes,
                max_nodes: p.max_nodes,
                default_time_minutes: p.default_time,
                max_time_minutes: p.max_time,
                priority_tier: p.priority_tier,
            })
            .collect(),
        Err(e) => {
            warnings.push(format!("partitions unavailable: {}", scheduler_error(e)));
            Vec::new()
        }
    };
    (s, partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3m_guest::facility::FacilityConfig;

    fn parse(text: &str) -> Result<Vec<EnvironmentConfig>, ApiError> {
        let f = FacilityConfig::parse(text, std::path::Path::new(facility::CONFIG_FILE))
            .map_err(facility::error)?;
        f.resources.iter().map(environment_config).collect()
    }

    #[test]
    fn reads_this_rooms_keys_and_ignores_the_rest() {
        let f = parse(
            r#"
            [[resources]]
            name = "basalt"
            status = "OPERATIONAL"
            [resources.compute]
            scheduler = "local"
            [resources.environment]
            modulepath = ["/sw/modulefiles"]
            container_runtimes = [{ name = "apptainer", version = "1.3.4", command = "apptainer" }]
            filesystems = [{ name = "scratch", mount_path = "/lustre/scratch", purpose = "job I/O", purge_policy = "90 days" }]
            variables = { OMP_NUM_THREADS = "1" }
            "#,
        )
        .unwrap_or_else(|e| panic!("{}", e.message));
        let e = &f[0];
        assert_eq!(e.container_runtimes[0].name, "apptainer");
        assert_eq!(e.filesystems[0].mount_path, "/lustre/scratch");
        assert_eq!(e.variables["OMP_NUM_THREADS"], "1");
    }

    #[test]
    fn a_misspelt_filesystem_key_is_named() {
        let Err(e) = parse(
            r#"
            [[resources]]
            name = "basalt"
            [resources.environment]
            filesystems = [{ name = "scratch", path = "/lustre" }]
            "#,
        ) else {
            panic!("accepted")
        };
        assert_eq!(e.status, 503);
        assert!(
            e.message.contains("basalt")
                && (e.message.contains("mount_path") || e.message.contains("path")),
            "{}",
            e.message
        );
    }
}

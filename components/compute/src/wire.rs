//! Wire shapes of the answers, as slurmrestd's data parser of each version
//! writes them (snake_case; numbers that may be unset or infinite as
//! `{"set", "infinite", "number"}`). Every answer carries `meta`, `errors`
//! and `warnings`.

use crate::bindings::s3m::facility::scheduler::{
    Diagnostics, JobInfo, JobState, NodeInfo, PartitionInfo, PartitionState, PingInfo,
    ReservationInfo,
};
use crate::Version;
use serde::Serialize;

/// Slurm's optional number.
#[derive(Serialize, Clone, Copy)]
pub struct NoVal {
    pub set: bool,
    pub infinite: bool,
    pub number: i64,
}

impl NoVal {
    pub fn some(n: i64) -> Self {
        Self {
            set: true,
            infinite: false,
            number: n,
        }
    }
    pub fn unset() -> Self {
        Self {
            set: false,
            infinite: false,
            number: 0,
        }
    }
    pub fn infinite() -> Self {
        Self {
            set: false,
            infinite: true,
            number: 0,
        }
    }
    pub fn opt(n: Option<i64>) -> Self {
        n.map(Self::some).unwrap_or_else(Self::unset)
    }
    /// A limit: none is infinite.
    pub fn limit(n: Option<u32>) -> Self {
        n.map(|n| Self::some(n as i64))
            .unwrap_or_else(Self::infinite)
    }
}

#[derive(Serialize)]
pub struct Meta {
    pub plugin: Plugin,
    pub client: Client,
    pub command: Vec<String>,
    pub slurm: SlurmMeta,
}

#[derive(Serialize)]
pub struct Plugin {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub data_parser: String,
    pub accounting_storage: String,
}

#[derive(Serialize)]
pub struct Client {
    pub source: String,
    pub user: String,
    pub group: String,
}

#[derive(Serialize)]
pub struct SlurmMeta {
    pub cluster: String,
}

impl Meta {
    pub fn new(version: Version, resource: &str, user: &str) -> Self {
        Meta {
            plugin: Plugin {
                kind: "openapi/slurmctld".into(),
                name: "Slurm OpenAPI slurmctld".into(),
                data_parser: format!("data_parser/{}", version.as_str()),
                accounting_storage: String::new(),
            },
            client: Client {
                source: "s3m".into(),
                user: user.into(),
                group: user.into(),
            },
            command: Vec::new(),
            slurm: SlurmMeta {
                cluster: resource.into(),
            },
        }
    }
}

/// Every answer: its own fields flattened beside `meta`, `errors`, `warnings`.
#[derive(Serialize)]
pub struct Answer<T: Serialize> {
    #[serde(flatten)]
    pub body: T,
    pub meta: Meta,
    pub errors: Vec<serde_json::Value>,
    pub warnings: Vec<serde_json::Value>,
}

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

#[derive(Serialize)]
pub struct JobStateInfo {
    pub current: Vec<String>,
    pub reason: String,
}

#[derive(Serialize)]
pub struct ExitCode {
    pub status: Vec<String>,
    pub return_code: NoVal,
    pub signal: Signal,
}

#[derive(Serialize)]
pub struct Signal {
    pub id: NoVal,
    pub name: String,
}

#[derive(Serialize)]
pub struct Job {
    pub job_id: u32,
    pub name: String,
    pub account: String,
    pub user_name: String,
    pub partition: String,
    pub cluster: String,
    pub job_state: Vec<String>,
    pub state: JobStateInfo,
    pub state_reason: String,
    pub exit_code: ExitCode,
    pub submit_time: NoVal,
    pub start_time: NoVal,
    pub end_time: NoVal,
    pub time_limit: NoVal,
    pub nodes: String,
    pub node_count: NoVal,
    pub tasks: NoVal,
    pub cpus: NoVal,
    pub priority: NoVal,
    pub qos: String,
    pub comment: String,
    pub current_working_directory: String,
    pub standard_input: String,
    pub standard_output: String,
    pub standard_error: String,
    pub batch_host: String,
    pub batch_flag: bool,
}

pub fn signal_name(n: u32) -> String {
    crate::SIGNALS
        .iter()
        .find(|(_, num)| *num == n)
        .map(|(name, _)| format!("SIG{name}"))
        .unwrap_or_default()
}

impl Job {
    pub fn from(j: JobInfo, cluster: &str) -> Self {
        let mut current = vec![state_name(j.state).to_string()];
        current.extend(j.state_flags.iter().cloned());
        let status = match (j.state, j.exit_code, j.exit_signal) {
            (JobState::Pending | JobState::Running | JobState::Suspended, _, _) => "PENDING",
            (_, _, Some(_)) => "SIGNALED",
            (_, Some(0), _) => "SUCCESS",
            (_, Some(_), _) => "ERROR",
            _ => "ERROR",
        };
        Job {
            job_id: j.job_id,
            name: j.name,
            account: j.account,
            user_name: j.user_name,
            partition: j.partition,
            cluster: cluster.to_string(),
            job_state: current.clone(),
            state: JobStateInfo {
                current,
                reason: j.state_reason.clone(),
            },
            state_reason: j.state_reason,
            exit_code: ExitCode {
                status: vec![status.to_string()],
                return_code: NoVal::opt(j.exit_code.map(|c| c as i64)),
                signal: Signal {
                    id: NoVal::opt(j.exit_signal.map(|s| s as i64)),
                    name: j.exit_signal.map(signal_name).unwrap_or_default(),
                },
            },
            submit_time: NoVal::some(j.submit_time),
            start_time: NoVal::opt(j.start_time),
            end_time: NoVal::opt(j.end_time),
            time_limit: NoVal::limit(j.time_limit),
            nodes: j.nodes,
            node_count: NoVal::some(j.node_count as i64),
            tasks: NoVal::some(j.tasks as i64),
            cpus: NoVal::some(j.cpus as i64),
            priority: NoVal::some(j.priority as i64),
            qos: j.qos,
            comment: j.comment,
            current_working_directory: j.current_working_directory,
            standard_input: j.standard_input,
            standard_output: j.standard_output,
            standard_error: j.standard_error,
            batch_host: j.batch_host,
            batch_flag: true,
        }
    }
}

#[derive(Serialize)]
pub struct Jobs {
    pub jobs: Vec<Job>,
    pub last_backfill: NoVal,
    pub last_update: NoVal,
}

#[derive(Serialize)]
pub struct JobOnly {
    pub jobs: Vec<Job>,
}

#[derive(Serialize, serde::Deserialize, Clone)]
pub struct SubmitAnswer {
    pub job_id: u32,
    pub step_id: String,
    pub job_submit_user_msg: String,
}

#[derive(Serialize)]
pub struct CancelStatus {
    pub error: String,
    pub error_code: i32,
    pub why: String,
    pub job_id: String,
    pub step_id: String,
    pub sibling: String,
}

#[derive(Serialize)]
pub struct Cancelled {
    pub status: Vec<CancelStatus>,
}

#[derive(Serialize)]
pub struct Ping {
    pub hostname: String,
    pub pinged: String,
    pub latency: u64,
    pub mode: String,
    pub responding: bool,
    pub primary: bool,
}

#[derive(Serialize)]
pub struct Pings {
    pub pings: Vec<Ping>,
}

impl From<PingInfo> for Ping {
    fn from(p: PingInfo) -> Self {
        Ping {
            responding: p.pinged == "UP",
            primary: p.mode == "primary",
            hostname: p.hostname,
            pinged: p.pinged,
            latency: p.latency,
            mode: p.mode,
        }
    }
}

#[derive(Serialize)]
pub struct Statistics {
    pub statistics: Stats,
}

#[derive(Serialize)]
pub struct Stats {
    pub req_time: NoVal,
    pub req_time_start: NoVal,
    pub server_thread_count: u32,
    pub agent_queue_size: u32,
    pub agent_count: u32,
    pub dbd_agent_queue_size: u32,
    pub jobs_submitted: u32,
    pub jobs_started: u32,
    pub jobs_completed: u32,
    pub jobs_canceled: u32,
    pub jobs_failed: u32,
    pub jobs_pending: u32,
    pub jobs_running: u32,
    pub schedule_cycle_last: u32,
    pub schedule_cycle_max: u32,
    pub schedule_cycle_mean: u32,
    pub schedule_cycle_total: u32,
    pub bf_active: bool,
    pub bf_last_backfilled_jobs: u32,
    pub bf_when_last_cycle: NoVal,
}

impl From<Diagnostics> for Stats {
    fn from(d: Diagnostics) -> Self {
        Stats {
            req_time: NoVal::some(d.req_time),
            req_time_start: NoVal::some(d.req_time_start),
            server_thread_count: d.server_thread_count,
            agent_queue_size: d.agent_queue_size,
            agent_count: d.agent_count,
            dbd_agent_queue_size: d.dbd_agent_queue_size,
            jobs_submitted: d.jobs_submitted,
            jobs_started: d.jobs_started,
            jobs_completed: d.jobs_completed,
            jobs_canceled: d.jobs_canceled,
            jobs_failed: d.jobs_failed,
            jobs_pending: d.jobs_pending,
            jobs_running: d.jobs_running,
            schedule_cycle_last: d.schedule_cycle_last,
            schedule_cycle_max: d.schedule_cycle_max,
            schedule_cycle_mean: d.schedule_cycle_mean,
            schedule_cycle_total: d.schedule_cycle_total,
            bf_active: d.bf_active,
            bf_last_backfilled_jobs: d.bf_last_backfilled_jobs,
            bf_when_last_cycle: NoVal::opt(Some(d.bf_when_last_cycle).filter(|t| *t > 0)),
        }
    }
}

#[derive(Serialize)]
pub struct Node {
    pub name: String,
    pub hostname: String,
    pub address: String,
    pub state: Vec<String>,
    pub cpus: u32,
    pub alloc_cpus: u32,
    pub real_memory: u64,
    pub free_mem: NoVal,
    pub partitions: Vec<String>,
    pub architecture: String,
    pub operating_system: String,
    pub boot_time: NoVal,
    pub version: String,
    pub reason: String,
}

impl From<NodeInfo> for Node {
    fn from(n: NodeInfo) -> Self {
        let mut state = vec![n.state.to_ascii_uppercase()];
        state.extend(n.state_flags.into_iter().map(|f| f.to_ascii_uppercase()));
        Node {
            name: n.name,
            hostname: n.hostname,
            address: n.address,
            state,
            cpus: n.cpus,
            alloc_cpus: n.alloc_cpus,
            real_memory: n.real_memory,
            free_mem: NoVal::some(n.free_memory as i64),
            partitions: n.partitions,
            architecture: n.architecture,
            operating_system: n.operating_system,
            boot_time: NoVal::opt(Some(n.boot_time).filter(|t| *t > 0)),
            version: n.version,
            reason: n.reason,
        }
    }
}

#[derive(Serialize)]
pub struct Nodes {
    pub nodes: Vec<Node>,
}

#[derive(Serialize)]
pub struct PartitionNodes {
    /// v0.0.42 and v0.0.43 write `allowed_configuration`, v0.0.44 `allowed_allocation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_configuration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_allocation: Option<String>,
    pub configured: String,
    pub total: u32,
}

#[derive(Serialize)]
pub struct PartitionTime {
    pub time: NoVal,
}

#[derive(Serialize)]
pub struct PartitionMaximums {
    pub nodes: NoVal,
    pub time: NoVal,
}

#[derive(Serialize)]
pub struct PartitionMinimums {
    pub nodes: u32,
}

#[derive(Serialize)]
pub struct PartitionPriority {
    pub tier: u32,
}

#[derive(Serialize)]
pub struct PartitionStateInfo {
    pub state: Vec<String>,
}

#[derive(Serialize)]
pub struct PartitionCpus {
    pub total: u32,
}

#[derive(Serialize)]
pub struct Partition {
    pub name: String,
    pub cluster: String,
    pub nodes: PartitionNodes,
    pub cpus: PartitionCpus,
    pub defaults: PartitionTime,
    pub maximums: PartitionMaximums,
    pub minimums: PartitionMinimums,
    pub priority: PartitionPriority,
    pub partition: PartitionStateInfo,
    /// v0.0.44 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
}

impl Partition {
    pub fn from(p: PartitionInfo, cluster: &str, version: Version) -> Self {
        let v44 = version == Version::V44;
        let mut state = vec![match p.state {
            PartitionState::Up => "UP",
            PartitionState::Down => "DOWN",
            PartitionState::Drain => "DRAIN",
            PartitionState::Inactive => "INACTIVE",
        }
        .to_string()];
        if p.is_default {
            state.push("DEFAULT".into());
        }
        Partition {
            name: p.name,
            cluster: cluster.into(),
            nodes: PartitionNodes {
                allowed_configuration: (!v44).then(String::new),
                allowed_allocation: v44.then(String::new),
                configured: p.nodes,
                total: p.total_nodes,
            },
            cpus: PartitionCpus {
                total: p.total_cpus,
            },
            defaults: PartitionTime {
                time: NoVal::opt(p.default_time.map(|t| t as i64)),
            },
            maximums: PartitionMaximums {
                nodes: NoVal::limit(p.max_nodes),
                time: NoVal::limit(p.max_time),
            },
            minimums: PartitionMinimums { nodes: p.min_nodes },
            priority: PartitionPriority {
                tier: p.priority_tier,
            },
            partition: PartitionStateInfo { state },
            topology: v44.then(String::new),
        }
    }
}

#[derive(Serialize)]
pub struct Partitions {
    pub partitions: Vec<Partition>,
}

#[derive(Serialize)]
pub struct Reservation {
    pub name: String,
    pub partition: String,
    pub node_list: String,
    pub node_count: u32,
    pub core_count: u32,
    pub start_time: NoVal,
    pub end_time: NoVal,
    pub accounts: String,
    pub users: String,
    pub flags: Vec<String>,
}

impl From<ReservationInfo> for Reservation {
    fn from(r: ReservationInfo) -> Self {
        Reservation {
            name: r.name,
            partition: r.partition,
            node_list: r.nodes,
            node_count: r.node_count,
            core_count: r.core_count,
            start_time: NoVal::some(r.start_time),
            end_time: NoVal::some(r.end_time),
            accounts: r.accounts.join(","),
            users: r.users.join(","),
            flags: r.flags,
        }
    }
}

#[derive(Serialize)]
pub struct Reservations {
    pub reservations: Vec<Reservation>,
}

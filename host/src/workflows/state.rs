//! The engine's own part of a workflow's run record: what each leaf is,
//! how far its side effect got, and the idempotency key that lets a
//! restarted host find a job it submitted before it died. Never served.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EngineState {
    /// By node id: every container, script, built-in and suspend node.
    #[serde(default)]
    pub leaves: BTreeMap<String, Leaf>,
    /// By node id: secret outputs (a broker's password).
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Brokers the workflow deployed, deleted when it is stopped or
    /// deleted unless kept.
    #[serde(default)]
    pub brokers: Vec<Deployed>,
    #[serde(default)]
    pub retries_seen: u32,
    #[serde(default)]
    pub resumes_seen: u32,
    /// The shutdown's cancellations were done.
    #[serde(default)]
    pub shut_down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deployed {
    pub engine: String,
    pub name: String,
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub enum Stage {
    /// Not started.
    #[default]
    New,
    /// The side effect may have happened: look before doing it again.
    Launching,
    Running,
    Done,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Leaf {
    pub action: Action,
    #[serde(default)]
    pub stage: Stage,
    /// The job this leaf submitted: (resource, id).
    #[serde(default)]
    pub job: Option<(String, u32)>,
    /// When the leaf started running (ms), for deadlines and timeouts.
    #[serde(default)]
    pub started_ms: Option<i64>,
    /// A job's output marker line.
    #[serde(default)]
    pub marker: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Action {
    /// A batch job: a container or script template, or `submit-job`.
    Job {
        resource: String,
        image: String,
        argv: Vec<String>,
        /// A script template's source, or submit-job's whole script.
        source: Option<String>,
        environment: Vec<String>,
        working_dir: Option<String>,
        /// (output name, path, default)
        outputs: Vec<(String, String, Option<String>)>,
        deadline_s: Option<u64>,
        /// submit-job: the node succeeds once the job is submitted.
        submit_only: bool,
    },
    Builtin {
        name: String,
        params: BTreeMap<String, String>,
    },
    /// Until a time (ms), or until resumed.
    Suspend { until: Option<i64> },
}

impl Default for Action {
    fn default() -> Self {
        Action::Suspend { until: None }
    }
}

//! How workflows live in key-value (store label [`LABEL`]), the one
//! contract between the workflows component, which writes what users ask,
//! and the host's engine, which writes what happened:
//!
//! - `workflow/<project>/<name>`: [`Doc`], the document, who submitted it
//!   and the user's requests (stop, suspend, retry, delete); written by the
//!   component only.
//! - `workflow-run/<project>/<name>`: [`Run`], `status` and the engine's
//!   own state; written by the engine only, under the lease.
//! - `workflow-lease/<project>/<name>`: which host advances it, until when.
//! - `workflow-wake/<project>/<name>`: set by the component after a write,
//!   so the engine looks at that workflow at once; the engine removes it.
//! - `workflow-template/<project>/<name>`: a `WorkflowTemplate`.

use crate::model::{Workflow, WorkflowStatus};
use serde::{Deserialize, Serialize};

/// The key-value store label: granted to the workflows component alone.
pub const LABEL: &str = "workflows";

pub fn doc_key(project: &str, name: &str) -> String {
    format!("workflow/{project}/{name}")
}
pub fn run_key(project: &str, name: &str) -> String {
    format!("workflow-run/{project}/{name}")
}
pub fn lease_key(project: &str, name: &str) -> String {
    format!("workflow-lease/{project}/{name}")
}
pub fn wake_key(project: &str, name: &str) -> String {
    format!("workflow-wake/{project}/{name}")
}
pub fn template_key(project: &str, name: &str) -> String {
    format!("workflow-template/{project}/{name}")
}
/// A counter the component increments after every write (wasi:keyvalue
/// atomics), so the engine needs one read to notice there is news.
pub const EVENTS: &str = "workflow-events";
pub const DOC_PREFIX: &str = "workflow/";
pub const WAKE_PREFIX: &str = "workflow-wake/";
pub const TEMPLATE_PREFIX: &str = "workflow-template/";

/// Who submitted a workflow: the engine acts for this project with this
/// token's permissions, re-checking the token's record (revoked, expired)
/// before every side effect. The token itself is never stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Submitter {
    pub project: String,
    /// The token's `jti`.
    pub token_id: String,
    pub permissions: Vec<String>,
}

/// What users asked of a workflow since it was submitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Control {
    /// DELETE was called: the engine cancels what runs, then removes it.
    pub deleting: bool,
    /// How many times retry was called.
    pub retries: u32,
    /// How many times resume was called.
    pub resumes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doc {
    pub workflow: Workflow,
    pub submitter: Submitter,
    #[serde(default)]
    pub control: Control,
}

/// The engine's record; readers other than the engine use `status` only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Run {
    #[serde(default)]
    pub status: WorkflowStatus,
    /// The engine's own state (jobs, idempotency keys, secrets): never
    /// served.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub engine: serde_json::Value,
}

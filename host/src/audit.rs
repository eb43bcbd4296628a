//! The audit log: `<state>/audit.log` (mode 0600), one JSON object per line
//! for each action the host takes for a project (a capability call that acts
//! for a caller) and each `s3m token create` / `revoke`:
//!
//! ```json
//! {"time":"2026-12-01T10:00:00.000000Z","action":"scheduler.submit","result":"ok",
//!  "project":"STF040","jti":"5b0f...","username":"stf040_auser","component":"compute",
//!  "request_id":"...","resource":"cedar","object":"42"}
//! ```
//!
//! `result` is `ok`, `refused` (the host refused the call: `reason` says
//! why) or `error` (the provider failed or the object does not exist:
//! `reason` is the error's case). `jti` and `username` are those of the
//! token the host verified, absent when it found none valid. A token itself
//! is never written.

use serde_json::{Map, Value};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

static LOG: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Opens (creating, mode 0600) `<state>/audit.log` for appending; once per
/// process.
pub fn open(state_dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if LOG.get().is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let path = state_dir.join("audit.log");
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the audit log {}", path.display()))?;
    // An older file keeps its mode: make it the operator's alone.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private (0600)", path.display()))?;
    let _ = LOG.set(Mutex::new(file));
    Ok(())
}

/// One audit line: `action`, `result`, then `fields` (those whose value is
/// null are left out).
pub fn record(action: &str, result: &str, fields: &[(&str, Value)]) {
    let Some(log) = LOG.get() else {
        return;
    };
    let mut line = Map::new();
    line.insert(
        "time".into(),
        Value::String(crate::admin::tokens::rfc3339(chrono::Utc::now())),
    );
    line.insert("action".into(), Value::String(action.into()));
    line.insert("result".into(), Value::String(result.into()));
    for (k, v) in fields {
        if !v.is_null() {
            line.insert((*k).into(), v.clone());
        }
    }
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    // One write of one line, on a file opened for appending: lines of
    // concurrent writers (the host and the CLI) do not interleave.
    let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = file.write_all(text.as_bytes()) {
        tracing::error!(action, "cannot write the audit log: {e}");
    }
}

/// `Some(s)` as a JSON string, `None` as null.
pub fn opt(s: Option<&str>) -> Value {
    s.map(|s| Value::String(s.into())).unwrap_or(Value::Null)
}

//! What the scheduler providers share, and neither owns: Slurm's job state
//! names (the local scheduler speaks them too), the project user, output
//! path patterns, and reading a provider's typed `[resources.compute]`
//! table with errors that name the resource and the key.

use crate::capabilities::scheduler::JobState;
use serde::de::DeserializeOwned;

/// The Unix user a project's jobs run as.
pub fn project_user(project: &str) -> String {
    format!("{}_auser", project.to_lowercase())
}

/// A Slurm job state name (`PENDING`, `CANCELLED by 0`, ...) as a state.
pub fn parse_job_state(s: &str) -> JobState {
    match s
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
        .as_str()
    {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobState::Pending
        }
        "RUNNING" | "CONFIGURING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
            JobState::Running
        }
        "SUSPENDED" | "STOPPED" => JobState::Suspended,
        "COMPLETED" => JobState::Completed,
        "CANCELLED" => JobState::Cancelled,
        "TIMEOUT" => JobState::Timeout,
        "NODE_FAIL" => JobState::NodeFail,
        "PREEMPTED" => JobState::Preempted,
        "BOOT_FAIL" => JobState::BootFail,
        "DEADLINE" => JobState::Deadline,
        "OUT_OF_MEMORY" => JobState::OutOfMemory,
        _ => JobState::Failed,
    }
}

/// The file `read_output` means: `path` empty is the job's standard output,
/// a relative one is taken from its working directory.
pub fn job_file(path: &str, stdout: &str, cwd: &str) -> String {
    if path.is_empty() {
        stdout.to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", cwd.trim_end_matches('/'))
    }
}

/// Reads at most `limit` bytes of a job's file for the workflow engine.
///
/// With `user` (the job's Unix user), the file is taken only if it is a
/// regular file that user owns: it is opened with `O_PATH | O_NOFOLLOW`
/// (no device is ever opened, a final symlink is refused), checked with
/// `fstat`, and only then reopened for reading through `/proc/self/fd`.
/// Whatever path a job chose or symlinks it planted on the way, the host
/// reads nothing but the job user's own files. `None` (`isolation =
/// "none"` as the host's user): a regular file, read as the host.
pub async fn read_as(
    user: Option<&str>,
    path: &str,
    limit: u64,
) -> crate::capabilities::scheduler::SchedulerResult<Vec<u8>> {
    use crate::capabilities::scheduler::SchedulerError;
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    if !path.starts_with('/') || path.contains('\0') {
        return Err(SchedulerError::InvalidJob(format!(
            "{path:?} is not an absolute path"
        )));
    }
    let uid = match user {
        Some(u) => Some(
            super::sandbox::JobUser::lookup(u)
                .ok_or_else(|| {
                    SchedulerError::Unavailable(format!("the Unix user {u} does not exist"))
                })?
                .uid,
        ),
        None => None,
    };
    let path = path.to_string();
    let shown = crate::text::cut(&path);
    tokio::task::spawn_blocking(move || {
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| SchedulerError::NotFound(format!("cannot read {shown}: {e}")))?;
        let meta = handle
            .metadata()
            .map_err(|e| SchedulerError::NotFound(format!("cannot read {shown}: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(SchedulerError::NotFound(format!(
                "cannot read {shown}: not a regular file"
            )));
        }
        if uid.is_some_and(|u| meta.uid() != u) {
            return Err(SchedulerError::NotFound(format!(
                "cannot read {shown}: the file is not the job user's own"
            )));
        }
        let file = std::fs::File::open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
            .map_err(|e| SchedulerError::NotFound(format!("cannot read {shown}: {e}")))?;
        let mut out = Vec::new();
        file.take(limit)
            .read_to_end(&mut out)
            .map_err(|e| SchedulerError::NotFound(format!("cannot read {shown}: {e}")))?;
        Ok(out)
    })
    .await
    .map_err(|e| SchedulerError::Unavailable(format!("reading a job's file: {e}")))?
}

/// Expands the `%j`, `%x`, `%u`, `%%` of an output path, as Slurm does.
pub fn expand_path_pattern(pattern: &str, job_id: u32, name: &str, user: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('j') | Some('A') => out.push_str(&job_id.to_string()),
            Some('x') => out.push_str(name),
            Some('u') => out.push_str(user),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Deserialises a provider's typed configuration from its resource's
/// `[resources.compute]` table (without the `scheduler` key, which picked
/// the provider). An error names the resource and the key, e.g.
/// ``resource `basalt`: compute.slots: invalid value: integer `-1`, expected a whole number >= 0``.
pub fn compute_config<T: DeserializeOwned>(
    resource: &str,
    table: &toml::Table,
) -> anyhow::Result<T> {
    table.clone().try_into().map_err(|e: toml::de::Error| {
        let text = e.to_string();
        let text = text
            .trim_end()
            .replace("expected u64", "expected a whole number >= 0")
            .replace("expected u32", "expected a whole number >= 0");
        // toml names the key on a last line: "in `key`".
        match text.rsplit_once("\nin `") {
            Some((problem, key)) => anyhow::anyhow!(
                "resource `{resource}`: compute.{}: {}",
                key.trim_end_matches('`'),
                problem.trim_end()
            ),
            None => anyhow::anyhow!("resource `{resource}`: compute: {text}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn path_patterns() {
        assert_eq!(
            expand_path_pattern("/o/%x-%j.%u%%", 7, "n", "u"),
            "/o/n-7.u%"
        );
    }

    #[test]
    fn states() {
        assert_eq!(parse_job_state("COMPLETED"), JobState::Completed);
        assert_eq!(parse_job_state("CANCELLED by 0"), JobState::Cancelled);
        assert_eq!(parse_job_state("PENDING"), JobState::Pending);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        slots: Option<u64>,
        partition: Option<String>,
    }

    #[test]
    fn config_errors_name_the_resource_and_the_key() {
        let err = |text: &str| {
            compute_config::<Example>("basalt", &toml::from_str(text).unwrap())
                .unwrap_err()
                .to_string()
        };
        let e = err("slots = -1");
        assert!(
            e.starts_with("resource `basalt`: compute.slots: ") && e.contains("whole number >= 0"),
            "{e}"
        );
        let e = err("partition = 3");
        assert!(
            e.starts_with("resource `basalt`: compute.partition: ") && e.contains("string"),
            "{e}"
        );
        let e = err("slot = 3");
        assert!(
            e.starts_with("resource `basalt`: compute: unknown field `slot`"),
            "{e}"
        );
        assert!(compute_config::<Example>("b", &toml::Table::new()).is_ok());
    }
}

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

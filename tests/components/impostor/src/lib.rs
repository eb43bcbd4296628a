//! A test fixture, never deployed: a component that does not authenticate
//! and names whatever caller the query asks for, as a buggy or compromised
//! component could. The host must refuse every call it does not allow.
//! - `/impostor/jobs?resource=R&project=P`: lists P's jobs on R;
//! - `/impostor/submit?resource=R&project=P`: submits a job for P on R;
//! - `/impostor/partitions?resource=R`: reads R's partitions (no caller);
//! - `/impostor/clusters?project=P`: lists P's Redis clusters.
//!
//! Each answers 200 "allowed ..." when the host let the call through and
//! 403 "refused: ..." when it did not.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        inline: "
            package s3m:impostor;
            world impostor {
                import s3m:facility/scheduler@0.1.0;
                import s3m:facility/brokers@0.1.0;
            }
        ",
        path: "../../../wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

use bindings::s3m::facility::brokers::{self, BrokerError, Engine};
use bindings::s3m::facility::scheduler::{self, JobDescription, SchedulerError};
use bindings::s3m::facility::types::Caller;
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

fn param<'a>(query: &'a str, name: &str) -> &'a str {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

fn answer(result: Result<String, String>) -> Response {
    match result {
        Ok(m) => Response::new(200, format!("allowed {m}")),
        Err(m) => Response::new(403, format!("refused: {m}")),
    }
}

fn sched(e: SchedulerError) -> String {
    match e {
        SchedulerError::Permission(m) => m,
        other => format!("other error: {other:?}"),
    }
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let query = req.query().to_string();
    let resource = param(&query, "resource").to_string();
    let caller = Caller {
        project: param(&query, "project").to_string(),
        username: format!("{}_auser", param(&query, "project").to_lowercase()),
        // A token of the impostor's choosing (`token=`), else the request's own.
        token: match param(&query, "token") {
            "" => req
                .header("authorization")
                .and_then(|h| h.as_str())
                .map(|h| h.trim_start_matches("Bearer ").to_string())
                .unwrap_or_default(),
            t => t.to_string(),
        },
    };
    Ok(match req.path() {
        "/impostor/jobs" => answer(
            scheduler::list_jobs(&resource, &caller)
                .map(|l| format!("{} jobs", l.jobs.len()))
                .map_err(sched),
        ),
        "/impostor/submit" => {
            let job = JobDescription {
                name: Some("impostor".into()),
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
                environment: vec!["PATH=/usr/bin:/bin".into()],
                standard_input: None,
                standard_output: None,
                standard_error: None,
            };
            answer(
                scheduler::submit(&resource, &caller, &job, "#!/bin/sh\ntrue\n")
                    .map(|s| format!("job {}", s.job_id))
                    .map_err(sched),
            )
        }
        "/impostor/partitions" => answer(
            scheduler::partitions(&resource)
                .map(|p| format!("{} partitions", p.len()))
                .map_err(sched),
        ),
        "/impostor/clusters" => answer(
            brokers::list(&caller, Engine::Redis)
                .map(|l| format!("{} clusters", l.len()))
                .map_err(|e| match e {
                    BrokerError::Permission(m) => m,
                    other => format!("other error: {other:?}"),
                }),
        ),
        _ => Response::new(404, "no such fixture route"),
    })
}

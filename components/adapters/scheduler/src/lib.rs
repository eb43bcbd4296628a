//! Exports `s3m:facility/scheduler@0.1.0` and implements each function with
//! a `POST <s3m_gateway_url>/gateway/v1/scheduler/<function>` to the s3m
//! host's capability gateway (docs/gateway.md).

mod bindings {
    wit_bindgen::generate!({
        world: "s3m:adapters/scheduler-adapter",
        path: ["../../../wit", "../wit/adapters.wit"],
        with: { "fermyon:spin/variables@2.0.0": gateway_call::variables },
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

use bindings::exports::s3m::facility::scheduler::*;
use bindings::exports::s3m::facility::types::Caller;
use gateway_call::Failure;
use serde::de::DeserializeOwned;
use serde_json::json;

struct Adapter;
bindings::export!(Adapter with_types_in bindings);

/// The function's own error for a call that brought no answer.
fn error(failure: Failure) -> SchedulerError {
    match failure {
        Failure::Refused(m) => SchedulerError::Permission(m),
        Failure::Unavailable(m) => SchedulerError::Unavailable(m),
    }
}

/// Calls a function that returns `result<T, scheduler-error>`.
fn call<T: DeserializeOwned>(
    function: &str,
    body: serde_json::Value,
    caller: Option<&Caller>,
) -> Result<T, SchedulerError> {
    let secrets: Vec<&str> = caller.map(|c| c.token.as_str()).into_iter().collect();
    gateway_call::call("scheduler", function, &body, &secrets).unwrap_or_else(|f| Err(error(f)))
}

/// What `overviews` answers when the gateway does not: every part of every
/// resource holds the failure, as the native host answers when it refuses.
fn failed_overviews(resources: Vec<String>, failure: Failure) -> Vec<SchedulerOverview> {
    let e = error(failure);
    resources
        .into_iter()
        .map(|resource| SchedulerOverview {
            resource,
            about: Err(e.clone()),
            reachable: Err(e.clone()),
            partitions: Err(e.clone()),
        })
        .collect()
}

impl Guest for Adapter {
    fn about(resource: String) -> Result<SchedulerAbout, SchedulerError> {
        call("about", json!({ "resource": resource }), None)
    }

    fn overviews(resources: Vec<String>, deadline_ms: u32) -> Vec<SchedulerOverview> {
        let body = json!({ "resources": resources, "deadline_ms": deadline_ms });
        gateway_call::call("scheduler", "overviews", &body, &[])
            .unwrap_or_else(|f| failed_overviews(resources, f))
    }

    fn submit(
        resource: String,
        caller: Caller,
        job: JobDescription,
        script: String,
    ) -> Result<Submitted, SchedulerError> {
        let body = json!({ "resource": resource, "caller": caller, "job": job, "script": script });
        call("submit", body, Some(&caller))
    }

    fn get(resource: String, caller: Caller, job_id: u32) -> Result<JobInfo, SchedulerError> {
        let body = json!({ "resource": resource, "caller": caller, "job_id": job_id });
        call("get", body, Some(&caller))
    }

    fn list_jobs(resource: String, caller: Caller) -> Result<JobList, SchedulerError> {
        let body = json!({ "resource": resource, "caller": caller });
        call("list-jobs", body, Some(&caller))
    }

    fn cancel(
        resource: String,
        caller: Caller,
        job_id: u32,
        signal: u32,
    ) -> Result<(), SchedulerError> {
        let body =
            json!({ "resource": resource, "caller": caller, "job_id": job_id, "signal": signal });
        call("cancel", body, Some(&caller))
    }

    fn ping(resource: String) -> Result<Vec<PingInfo>, SchedulerError> {
        call("ping", json!({ "resource": resource }), None)
    }

    fn diag(resource: String) -> Result<Diagnostics, SchedulerError> {
        call("diag", json!({ "resource": resource }), None)
    }

    fn nodes(resource: String) -> Result<Vec<NodeInfo>, SchedulerError> {
        call("nodes", json!({ "resource": resource }), None)
    }

    fn partitions(resource: String) -> Result<Vec<PartitionInfo>, SchedulerError> {
        call("partitions", json!({ "resource": resource }), None)
    }

    fn reservations(resource: String) -> Result<Vec<ReservationInfo>, SchedulerError> {
        call("reservations", json!({ "resource": resource }), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer<T> = Result<T, SchedulerError>;

    #[test]
    fn json_of_the_wit_values() {
        let err: Answer<Submitted> =
            gateway_call::interpret("scheduler/get", 404, br#"{"Err": {"NotFound": "job 7"}}"#)
                .unwrap();
        assert_eq!(err, Err(SchedulerError::NotFound("job 7".into())));
        let ok: Answer<()> =
            gateway_call::interpret("scheduler/cancel", 200, br#"{"Ok": null}"#).unwrap();
        assert_eq!(ok, Ok(()));
        let p: Answer<Vec<PartitionInfo>> = gateway_call::interpret(
            "scheduler/partitions",
            200,
            br#"{"Ok": [{"name": "debug", "nodes": "n[1-2]", "total_nodes": 2, "total_cpus": 8,
                 "default_time": null, "max_time": 60, "min_nodes": 1, "max_nodes": null,
                 "priority_tier": 1, "is_default": true, "state": "Up"}]}"#,
        )
        .unwrap();
        assert_eq!(p.unwrap()[0].state, PartitionState::Up);
        let caller = Caller {
            project: "P1".into(),
            username: "p1_auser".into(),
            token: "t".into(),
        };
        assert_eq!(
            serde_json::to_value(&caller).unwrap(),
            json!({"project": "P1", "username": "p1_auser", "token": "t"})
        );
        assert_eq!(
            serde_json::to_value(JobState::OutOfMemory).unwrap(),
            json!("OutOfMemory")
        );
    }

    #[test]
    fn failures() {
        assert_eq!(
            error(Failure::Refused("no".into())),
            SchedulerError::Permission("no".into())
        );
        let o = failed_overviews(
            vec!["a".into(), "b".into()],
            Failure::Unavailable("down".into()),
        );
        assert_eq!(o.len(), 2);
        assert_eq!(o[1].resource, "b");
        assert_eq!(
            o[1].partitions,
            Err(SchedulerError::Unavailable("down".into()))
        );
    }
}

//! The built-in templates: what a `templateRef` with no `name` (or
//! `name: s3m`) reaches. Each acts with the submitter's token, within its
//! project, and needs that token to carry its permission.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltinParameter {
    pub name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<&'static str>,
    pub description: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    /// The token permission the task needs besides `workflows`.
    pub permission: Option<&'static str>,
    pub inputs: Vec<BuiltinParameter>,
    pub outputs: Vec<BuiltinParameter>,
}

const fn p(
    name: &'static str,
    default: Option<&'static str>,
    description: &'static str,
) -> BuiltinParameter {
    BuiltinParameter {
        name,
        default,
        description,
    }
}

/// `templateRef.name` values that mean the built-ins (absent also does).
pub const BUILTIN_REF_NAMES: &[&str] = &["s3m", "s3m-builtins"];

pub fn all() -> Vec<Builtin> {
    vec![
        Builtin {
            name: "deploy-streaming",
            description: "Provisions a Redis or RabbitMQ cluster for the project and waits until it is healthy.",
            permission: Some("data-streaming"),
            inputs: vec![
                p("name", None, "The cluster's name (an RFC 1123 label of at most 40 characters)."),
                p("engine", Some("rabbitmq"), "redis or rabbitmq."),
                p("kind", Some("general"), "The backend kind (GET /olcf/open/v1alpha/streaming/list_backends)."),
                p("resourceSettings", Some("{}"), "JSON object of resource sizes, e.g. {\"nodes\": 1}."),
                p("featureFlags", Some("{}"), "JSON object of feature flags."),
                p("timeout", Some("180s"), "How long to wait for the cluster to become healthy."),
                p("keep", Some("false"), "true: the cluster outlives a stopped or deleted workflow."),
            ],
            outputs: vec![
                p("name", None, "The cluster's name."),
                p("engine", None, "redis or rabbitmq."),
                p("url", None, "The broker's URL without the password."),
                p("host", None, "The broker's host."),
                p("port", None, "The broker's port."),
                p("username", None, "The user to connect as."),
                p("mgmtUrl", None, "RabbitMQ's management API without the password, when the cluster has it (featureFlags {\"management\": true})."),
                p("password", None, "Secret: given only to tasks that reference it, never shown in status."),
            ],
        },
        Builtin {
            name: "delete-streaming",
            description: "Deletes a cluster of the project.",
            permission: Some("data-streaming"),
            inputs: vec![
                p("name", None, "The cluster's name."),
                p("engine", Some("rabbitmq"), "redis or rabbitmq."),
            ],
            outputs: vec![],
        },
        Builtin {
            name: "submit-job",
            description: "Submits a batch job to a compute resource.",
            permission: Some("compute-ace"),
            inputs: vec![
                p("script", None, "The batch script (#!/bin/bash ...)."),
                p("resource", Some(""), "The compute resource; the workflow's default when empty."),
                p("name", Some(""), "The job's name; the node's when empty."),
                p("partition", Some(""), "The partition; the resource's default when empty."),
                p("time-limit", Some(""), "Minutes."),
                p("environment", Some(""), "NAME=value lines for the job's environment."),
                p("current-working-directory", Some(""), "An absolute path."),
            ],
            outputs: vec![
                p("JOB_ID", None, "The job's id."),
                p("resource", None, "The resource it was submitted to."),
            ],
        },
        Builtin {
            name: "wait-job",
            description: "Waits for a job to end; fails unless it completed with exit code 0.",
            permission: Some("compute-ace-readonly"),
            inputs: vec![
                p("JOB_ID", None, "The job's id."),
                p("resource", Some(""), "The compute resource; the workflow's default when empty."),
            ],
            outputs: vec![
                p("state", None, "The job's final state (COMPLETED, FAILED, ...)."),
                p("exitCode", None, "The batch script's exit code."),
            ],
        },
        Builtin {
            name: "check-job-status",
            description: "Waits for a job to end and reports its final state, whatever it is.",
            permission: Some("compute-ace-readonly"),
            inputs: vec![
                p("JOB_ID", None, "The job's id."),
                p("resource", Some(""), "The compute resource; the workflow's default when empty."),
            ],
            outputs: vec![
                p("state", None, "The job's final state (COMPLETED, FAILED, ...)."),
                p("exitCode", None, "The batch script's exit code."),
            ],
        },
        Builtin {
            name: "http",
            description: "An HTTP request to a host the workflows component's manifest allows (allowed_outbound_hosts).",
            permission: None,
            inputs: vec![
                p("url", None, "http(s)://host[:port]/path"),
                p("method", Some("GET"), "GET, POST, PUT, DELETE, PATCH or HEAD."),
                p("body", Some(""), "The request body."),
                p("headers", Some("{}"), "JSON object of request headers."),
                p("timeout", Some("30s"), "How long to wait for the answer."),
            ],
            outputs: vec![
                p("statusCode", None, "The answer's status; 4xx and 5xx fail the task."),
                p("result", None, "outputs.result: the answer's body (at most 256 KiB)."),
            ],
        },
        Builtin {
            name: "sleep",
            description: "Waits for a duration.",
            permission: None,
            inputs: vec![p("duration", Some("0s"), "\"30s\", \"5m\", \"1h\" or seconds.")],
            outputs: vec![],
        },
    ]
}

pub fn find(name: &str) -> Option<Builtin> {
    all().into_iter().find(|b| b.name == name)
}

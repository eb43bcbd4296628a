//! The capability gateway (docs/gateway.md) against the real `s3m` binary:
//! what a caller with a component credential, or without one, can make the
//! host do over HTTP. The calls are what the adapter components send.

use anyhow::Result;
use s3m_tests::{AppOptions, TestApp};
use serde_json::{json, Value};

fn app() -> Result<TestApp> {
    TestApp::start(AppOptions {
        components: vec!["tokens".into(), "status".into(), "compute".into()],
        facility_toml: Some(
            "[[resources]]\nname = \"cedar\"\ndescription = \"test\"\n[resources.compute]\nscheduler = \"local\"\n"
                .into(),
        ),
        ..Default::default()
    })
}

/// POSTs `body` to the gateway function `function` with `credential`.
async fn call(
    app: &TestApp,
    function: &str,
    credential: Option<&str>,
    body: Value,
) -> Result<(u16, Value)> {
    let mut req = app
        .client()
        .post(format!("{}/gateway/v1/{function}", app.gateway_url()?))
        .json(&body);
    if let Some(c) = credential {
        req = req.header("authorization", format!("Bearer {c}"));
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("the gateway answered {status} with non-JSON: {text}"));
    Ok((status, value))
}

fn caller(project: &str, token: &str) -> Value {
    json!({
        "project": project,
        "username": format!("{}_auser", project.to_lowercase()),
        "token": token,
    })
}

fn job() -> Value {
    json!({
        "name": "over-the-gateway", "partition": null, "qos": null, "reservation": null,
        "comment": null, "licenses": null, "time_limit": null, "time_minimum": null,
        "begin_time": null, "priority": null, "tasks": null, "cpus_per_task": null,
        "nodes": null, "minimum_nodes": null, "maximum_nodes": null, "minimum_cpus": null,
        "maximum_cpus": null, "memory_per_cpu": null, "memory_per_node": null,
        "current_working_directory": null, "environment": ["PATH=/usr/bin:/bin"],
        "standard_input": null, "standard_output": null, "standard_error": null,
    })
}

fn permission_error(v: &Value) -> &str {
    v["Err"]["Permission"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_gateway_refuses_calls_without_this_hosts_component_credential() -> Result<()> {
    let app = app()?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let body = json!({"resource": "cedar", "caller": caller("STF040", &token)});

    let (status, v) = call(&app, "scheduler/list-jobs", None, body.clone()).await?;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["gateway_error"]
            .as_str()
            .unwrap()
            .contains("no component credential"),
        "{v}"
    );

    // A credential made with another key, or with the component renamed.
    let real = app.gateway_credential("compute")?;
    let forged = format!("s3m-gw1.compute.{}", "A".repeat(43));
    let (status, v) = call(&app, "scheduler/list-jobs", Some(&forged), body.clone()).await?;
    assert_eq!(status, 401, "{v}");
    let renamed = real.replacen("compute", "tokens", 1);
    let (status, _) = call(&app, "scheduler/list-jobs", Some(&renamed), body.clone()).await?;
    assert_eq!(status, 401);
    // A project token is not a component credential.
    let (status, _) = call(&app, "scheduler/list-jobs", Some(&token), body.clone()).await?;
    assert_eq!(status, 401);
    assert!(!app.stderr().contains(&token), "a token reached the log");
    assert!(
        !app.stderr().contains(&real),
        "a credential reached the log"
    );
    Ok(())
}

#[tokio::test]
async fn a_component_reaches_over_the_gateway_only_what_spin_toml_grants_it() -> Result<()> {
    let app = app()?;
    let token = app.token(&["compute-ace"], "STF040")?;
    // status has no facility capability and no key-value store.
    let status_cred = app.gateway_credential("status")?;
    let (code, v) = call(
        &app,
        "scheduler/list-jobs",
        Some(&status_cred),
        json!({"resource": "cedar", "caller": caller("STF040", &token)}),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(
        permission_error(&v).contains("not granted the scheduler-read capability"),
        "{v}"
    );
    let (code, v) = call(
        &app,
        "scheduler/partitions",
        Some(&status_cred),
        json!({"resource": "cedar"}),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    let (code, v) = call(
        &app,
        "wasi-keyvalue/get",
        Some(&status_cred),
        json!({"store": "default", "key": format!("token/{}", s3m_tests::jwt_id(&token)?)}),
    )
    .await?;
    assert_eq!(
        (code, v.clone()),
        (403, json!({"Err": "AccessDenied"})),
        "{v}"
    );

    // compute holds `scheduler` and the `default` store.
    let compute = app.gateway_credential("compute")?;
    let (code, v) = call(
        &app,
        "scheduler/partitions",
        Some(&compute),
        json!({"resource": "cedar"}),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    assert!(v["Ok"].is_array(), "{v}");
    let (code, v) = call(
        &app,
        "key-value/exists",
        Some(&compute),
        json!({"store": "default", "key": format!("token/{}", s3m_tests::jwt_id(&token)?)}),
    )
    .await?;
    assert_eq!((code, v.clone()), (200, json!({"Ok": true})), "{v}");
    // ...but not brokers.
    let (code, v) = call(
        &app,
        "brokers/list",
        Some(&compute),
        json!({"caller": caller("STF040", &token), "engine": "Redis"}),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(
        permission_error(&v).contains("not granted the brokers capability"),
        "{v}"
    );
    // Unknown functions and malformed bodies are the gateway's own 4xx.
    let (code, v) = call(&app, "scheduler/format-disk", Some(&compute), json!({})).await?;
    assert_eq!(code, 404, "{v}");
    let (code, v) = call(
        &app,
        "scheduler/get",
        Some(&compute),
        json!({"resource": "cedar"}),
    )
    .await?;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["gateway_error"].as_str().unwrap().contains("caller"),
        "{v}"
    );
    Ok(())
}

#[tokio::test]
async fn a_gateway_call_acts_only_for_the_project_of_a_valid_token_it_carries() -> Result<()> {
    let app = app()?;
    let compute = app.gateway_credential("compute")?;
    let stf = app.token(&["compute-ace"], "STF040")?;
    let other = app.token(&["compute-ace"], "PRJ101")?;
    let readonly = app.token(&["compute-ace-readonly"], "STF040")?;
    let submit = |c: Value| json!({"resource": "cedar", "caller": c, "job": job(), "script": "#!/bin/sh\ntrue\n"});

    // No token, a forged one, another project's: nothing acts.
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", "")),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(permission_error(&v).contains("no usable token"), "{v}");
    let forged = {
        let mut parts: Vec<&str> = stf.split('.').collect();
        parts[2] = "AAAA";
        parts.join(".")
    };
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", &forged)),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(
        permission_error(&v).contains("does not match its record"),
        "{v}"
    );
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", &other)),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(
        permission_error(&v).contains("not the token's project"),
        "{v}"
    );
    // A read-only token reads but does not submit.
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", &readonly)),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(permission_error(&v).contains("lacks compute-ace"), "{v}");
    // A revoked token stops at once.
    let revoked = app.token(&["compute-ace"], "STF040")?;
    app.cli_ok(&["token", "revoke", &s3m_tests::jwt_id(&revoked)?])?;
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", &revoked)),
    )
    .await?;
    assert_eq!(code, 403, "{v}");
    assert!(permission_error(&v).contains("revoked"), "{v}");

    // The project's own valid token submits, and the job is the project's.
    let (code, v) = call(
        &app,
        "scheduler/submit",
        Some(&compute),
        submit(caller("STF040", &stf)),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    let job_id = v["Ok"]["job_id"].as_u64().expect("a job id");
    let (code, v) = call(
        &app,
        "scheduler/get",
        Some(&compute),
        json!({"resource": "cedar", "caller": caller("STF040", &stf), "job_id": job_id}),
    )
    .await?;
    assert_eq!(code, 200, "{v}");
    assert!(
        v["Ok"]["account"]
            .as_str()
            .unwrap_or("")
            .eq_ignore_ascii_case("STF040"),
        "{v}"
    );
    assert_eq!(v["Ok"]["user_name"], "stf040_auser", "{v}");
    // Another project's token does not see it: not-found, as natively.
    let (code, v) = call(
        &app,
        "scheduler/get",
        Some(&compute),
        json!({"resource": "cedar", "caller": caller("PRJ101", &other), "job_id": job_id}),
    )
    .await?;
    assert_eq!(code, 404, "{v}");
    assert!(v["Err"]["NotFound"].is_string(), "{v}");
    for secret in [&stf, &other, &readonly, &forged, &compute] {
        assert!(
            !app.stderr().contains(secret.as_str()),
            "a secret reached the log"
        );
    }
    Ok(())
}

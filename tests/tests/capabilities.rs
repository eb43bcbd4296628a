//! What a component may make the host do, against the real `s3m` binary:
//! the `impostor` fixture names whatever caller it likes and skips
//! authentication, as a buggy or compromised component could. The host
//! grants facility capabilities per component (`[component.x.tool.s3m]`),
//! and acts for a project only when the request's own token, checked by the
//! host, is that project's with the permission the call needs.

use anyhow::Result;
use s3m_tests::{component_wasm, jwt_id, AppOptions, TestApp};

fn impostor(capabilities: &[&str]) -> String {
    let wasm = component_wasm("test_impostor");
    assert!(
        wasm.is_file(),
        "{} is missing: build it with `cargo build --target wasm32-wasip2 --release -p test-impostor` (scripts/test does)",
        wasm.display()
    );
    let grant = if capabilities.is_empty() {
        String::new()
    } else {
        format!("[component.impostor.tool.s3m]\ncapabilities = {capabilities:?}\n")
    };
    format!(
        "\n[[trigger.http]]\nroute = \"/impostor/...\"\ncomponent = \"impostor\"\n\
         [component.impostor]\nsource = \"{}\"\n{grant}",
        wasm.display()
    )
}

fn app(capabilities: &[&str]) -> Result<TestApp> {
    TestApp::start(AppOptions {
        components: vec!["tokens".into()],
        extra_manifest: Some(impostor(capabilities)),
        facility_toml: Some(
            "[[resources]]\nname = \"cedar\"\ndescription = \"test\"\n[resources.compute]\nscheduler = \"local\"\n"
                .into(),
        ),
        ..Default::default()
    })
}

/// The status and text of GET `path` with `token`.
async fn call(app: &TestApp, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let res = app.get(path, token).await?;
    Ok((res.status().as_u16(), res.text().await?))
}

fn allowed((status, text): &(u16, String)) -> bool {
    *status == 200 && text.starts_with("allowed")
}

fn refused((status, text): &(u16, String), why: &str) -> bool {
    *status == 403 && text.starts_with("refused") && text.contains(why)
}

#[tokio::test]
async fn a_component_gets_no_capability_spin_toml_does_not_grant() -> Result<()> {
    let app = app(&[])?;
    let token = app.token(&["compute-ace", "data-streaming"], "STF040")?;
    let r = call(&app, "/impostor/partitions?resource=cedar", Some(&token)).await?;
    assert!(
        refused(&r, "not granted the scheduler-read capability"),
        "{r:?}"
    );
    let r = call(
        &app,
        "/impostor/submit?resource=cedar&project=STF040",
        Some(&token),
    )
    .await?;
    assert!(refused(&r, "not granted the scheduler capability"), "{r:?}");
    let r = call(&app, "/impostor/clusters?project=STF040", Some(&token)).await?;
    assert!(refused(&r, "not granted the brokers capability"), "{r:?}");
    assert!(!app.stderr().contains(&token), "the token reached the log");
    Ok(())
}

#[tokio::test]
async fn a_read_grant_reads_but_never_submits() -> Result<()> {
    let app = app(&["scheduler-read"])?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let r = call(&app, "/impostor/partitions?resource=cedar", None).await?;
    assert!(allowed(&r), "{r:?}");
    let r = call(
        &app,
        "/impostor/jobs?resource=cedar&project=STF040",
        Some(&token),
    )
    .await?;
    assert!(allowed(&r), "{r:?}");
    let r = call(
        &app,
        "/impostor/submit?resource=cedar&project=STF040",
        Some(&token),
    )
    .await?;
    assert!(refused(&r, "not granted the scheduler capability"), "{r:?}");
    Ok(())
}

#[tokio::test]
async fn the_host_acts_only_for_the_project_of_the_requests_own_valid_token() -> Result<()> {
    let app = app(&["scheduler", "brokers"])?;
    let stf = app.token(&["compute-ace", "data-streaming"], "STF040")?;
    let readonly = app.token(&["compute-ace-readonly"], "STF040")?;
    let streaming_only = app.token(&["data-streaming"], "STF040")?;

    // The caller the component names must be the token's project.
    let r = call(
        &app,
        "/impostor/jobs?resource=cedar&project=PRJ101",
        Some(&stf),
    )
    .await?;
    assert!(refused(&r, "not the token's project"), "{r:?}");
    let r = call(
        &app,
        "/impostor/submit?resource=cedar&project=PRJ101",
        Some(&stf),
    )
    .await?;
    assert!(refused(&r, "not the token's project"), "{r:?}");
    let r = call(&app, "/impostor/clusters?project=PRJ101", Some(&stf)).await?;
    assert!(refused(&r, "not the token's project"), "{r:?}");
    // Without a token, or with one the host did not mint, nothing acts for a project.
    let r = call(&app, "/impostor/jobs?resource=cedar&project=STF040", None).await?;
    assert!(refused(&r, "no usable token"), "{r:?}");
    let forged = {
        let mut parts: Vec<&str> = stf.split('.').collect();
        parts[2] = "AAAA";
        parts.join(".")
    };
    let r = call(
        &app,
        "/impostor/jobs?resource=cedar&project=STF040",
        Some(&forged),
    )
    .await?;
    assert!(refused(&r, "does not match its record"), "{r:?}");
    // A valid token of the project the component names, but not the
    // request's own: the component cannot act with a token it kept.
    let other = app.token(&["compute-ace"], "PRJ101")?;
    let r = call(
        &app,
        &format!("/impostor/jobs?resource=cedar&project=PRJ101&token={other}"),
        Some(&stf),
    )
    .await?;
    assert!(refused(&r, "not the request's"), "{r:?}");
    // The token's permissions bound what the host does for it.
    let r = call(
        &app,
        "/impostor/submit?resource=cedar&project=STF040",
        Some(&readonly),
    )
    .await?;
    assert!(refused(&r, "lacks compute-ace"), "{r:?}");
    let r = call(
        &app,
        "/impostor/jobs?resource=cedar&project=STF040",
        Some(&streaming_only),
    )
    .await?;
    assert!(refused(&r, "lacks"), "{r:?}");
    let r = call(&app, "/impostor/clusters?project=STF040", Some(&readonly)).await?;
    assert!(refused(&r, "lacks data-streaming"), "{r:?}");
    // The right token acts (the project's case does not matter, as in tokens).
    let r = call(
        &app,
        "/impostor/jobs?resource=cedar&project=stf040",
        Some(&readonly),
    )
    .await?;
    assert!(allowed(&r), "{r:?}");
    let r = call(&app, "/impostor/clusters?project=STF040", Some(&stf)).await?;
    assert!(allowed(&r), "{r:?}");
    // A revoked token stops acting at once.
    app.cli_ok(&["token", "revoke", &jwt_id(&stf)?])?;
    let r = call(&app, "/impostor/clusters?project=STF040", Some(&stf)).await?;
    assert!(refused(&r, "revoked"), "{r:?}");
    for t in [&stf, &readonly, &streaming_only] {
        assert!(
            !app.stderr().contains(t.as_str()),
            "a token reached the log"
        );
    }
    Ok(())
}

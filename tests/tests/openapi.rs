//! The API describes itself: `GET /openapi.json` serves the repository's
//! `openapi/s3m.json`, which is a valid OpenAPI 3.1 document (checked by
//! PyPI's openapi-spec-validator, which scripts/test installs), covers
//! every route of spin.toml, and describes the real
//! answers: every request below, across all five endpoint families, has its
//! status and JSON body validated (JSON Schema draft 2020-12) against the
//! document's schema for that path, method and status. Every operation of
//! the document must have been answered with a validated 200 at least once,
//! so an endpoint added to the document but never exercised here fails too.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use reqwest::Method;
use s3m_tests::streaming::{self as st, BrokerReaper};
use s3m_tests::{repo_root, serving, slurm, AppOptions, TestApp};
use serde_json::{json, Value};

const PROJECT: &str = "OAS101";

/// The document and what was checked against it.
struct Contract {
    doc: Value,
    /// `(METHOD, path template)` of every operation answered 2xx and valid.
    covered: Mutex<BTreeSet<(String, String)>>,
}

/// Does `template` (with `{param}` segments) match `path`?
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

impl Contract {
    fn load() -> Result<Contract> {
        let text = std::fs::read_to_string(repo_root().join("openapi/s3m.json"))?;
        Ok(Contract {
            doc: serde_json::from_str(&text).context("openapi/s3m.json is not JSON")?,
            covered: Mutex::new(BTreeSet::new()),
        })
    }

    /// The path template of the document that serves `path`: a concrete one
    /// before a templated one (OpenAPI's rule), then the fewest parameters.
    fn template(&self, path: &str) -> Result<String> {
        let paths = self.doc["paths"].as_object().context("paths")?;
        paths
            .keys()
            .filter(|t| matches(t, path))
            .min_by_key(|t| t.matches('{').count())
            .cloned()
            .with_context(|| format!("openapi/s3m.json has no path matching {path}"))
    }

    /// `#/a/b` of the document, following `$ref`s.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> Result<&'a Value> {
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            v = self
                .doc
                .pointer(r.trim_start_matches('#'))
                .with_context(|| format!("$ref {r} names nothing"))?;
        }
        Ok(v)
    }

    /// Checks one real answer against the document.
    fn check(&self, method: &Method, path: &str, status: u16, body: &Value) -> Result<()> {
        let path = path.split('?').next().unwrap_or(path);
        let template = self.template(path)?;
        let m = method.as_str().to_ascii_lowercase();
        let op = &self.doc["paths"][&template][&m];
        if !op.is_object() && status == 405 {
            // A method the path does not have: 405 in the error shape.
            let root =
                json!({"components": self.doc["components"], "$ref": "#/components/schemas/Error"});
            ensure!(
                jsonschema::draft202012::is_valid(&root, body),
                "{method} {path}: a 405 outside the error shape: {body}"
            );
            return Ok(());
        }
        ensure!(
            op.is_object(),
            "{method} {path}: {template} documents no {m} (answer was {status}: {body})"
        );
        let response = op["responses"].get(status.to_string()).with_context(|| {
            format!("{method} {template} does not document status {status} (answer: {body})")
        })?;
        let response = self.resolve(response)?;
        let schema = &response["content"]["application/json"]["schema"];
        ensure!(
            schema.is_object(),
            "{method} {template} {status}: no application/json schema"
        );
        // The schema with the document's components beside it, so that its
        // `#/components/...` references resolve.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::new(&root)
            .map_err(|e| anyhow::anyhow!("{method} {template} {status}: bad schema: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            bail!(
                "{method} {path} ({template}) answered {status} with a body the document does not allow:\n  {}\nbody: {body}",
                errors.join("\n  ")
            );
        }
        if (200..300).contains(&status) {
            self.covered.lock().unwrap().insert((m, template));
        }
        Ok(())
    }

    /// Every operation of the document that no request answered 2xx.
    fn uncovered(&self) -> Vec<String> {
        let covered = self.covered.lock().unwrap();
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for m in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(m).is_some() && !covered.contains(&(m.to_string(), path.clone())) {
                    missing.push(format!("{} {path}", m.to_uppercase()));
                }
            }
        }
        missing
    }
}

/// One client of one app that checks every answer against the contract.
struct Caller<'a> {
    app: &'a TestApp,
    contract: &'a Contract,
}

impl Caller<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        let mut req = self
            .app
            .client()
            .request(method.clone(), self.app.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: HTTP {status}, not JSON: {text}"))?;
        self.contract.check(&method, path, status, &value)?;
        Ok((status, value))
    }

    /// `call`, expecting `status`.
    async fn expect(
        &self,
        status: u16,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (got, value) = self.call(method.clone(), path, token, body, &[]).await?;
        ensure!(
            got == status,
            "{method} {path}: expected {status}, got {got}: {value}"
        );
        Ok(value)
    }
}

/// The repository's sample configuration plus a compute resource whose jobs
/// may write to `shared`.
fn facility(shared: &std::path::Path) -> Result<String> {
    let sample = std::fs::read_to_string(repo_root().join("config/facility.toml"))?;
    Ok(format!(
        "{sample}\n[[resources]]\nname = \"cedar\"\ndescription = \"openapi test cluster\"\n\
         [resources.compute]\nscheduler = \"local\"\nslots = 16\nshared_directories = [\"{}\"]\n",
        shared.display()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_is_served_valid_and_describes_every_real_answer() -> Result<()> {
    st::require_servers(false)?;
    slurm::ensure_project_user(PROJECT)?;
    let shared = tempfile::Builder::new().prefix("s3m-openapi-").tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777))?;
    }
    let app = TestApp::start(AppOptions::default().with_facility(facility(shared.path())?))?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let contract = Contract::load()?;
    let c = Caller {
        app: &app,
        contract: &contract,
    };

    // ---- the document ----
    // The OpenAPI Initiative's 3.1 schema and rules, as PyPI's
    // openapi-spec-validator applies them (scripts/test installs it).
    let validator = repo_root().join("target/tools/venv/bin/openapi-spec-validator");
    ensure!(
        validator.exists(),
        "{} is missing: run scripts/test, which installs tests/argo/requirements.txt into target/tools/venv",
        validator.display()
    );
    let out = std::process::Command::new(&validator)
        .args(["--schema", "3.1", "--errors", "all"])
        .arg(repo_root().join("openapi/s3m.json"))
        .output()?;
    ensure!(
        out.status.success(),
        "openapi/s3m.json is not a valid OpenAPI 3.1 document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(contract.doc["openapi"]
        .as_str()
        .unwrap()
        .starts_with("3.1."));
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo_root().join("spin.toml"))?)?;
    for trigger in manifest["trigger"]["http"].as_array().context("routes")? {
        let route = trigger["route"].as_str().context("route")?;
        let prefix = route.trim_end_matches("/...");
        ensure!(
            contract.doc["paths"]
                .as_object()
                .unwrap()
                .keys()
                .any(|p| p.starts_with(prefix)),
            "spin.toml's route {route} has no path in openapi/s3m.json"
        );
    }
    if serving::serving() == serving::Serving::S3m {
        // The host serves the repository's file as is, without a token.
        let res = app.client().get(app.url("/openapi.json")).send().await?;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let served: Value = res.json().await?;
        assert_eq!(
            served, contract.doc,
            "/openapi.json is not openapi/s3m.json"
        );
        contract.check(&Method::GET, "/openapi.json", 200, &served)?;
        // Another method is a 405 in the error shape (the document lists
        // only the GET it serves).
        let res = app
            .client()
            .post(app.url("/openapi.json"))
            .json(&json!({}))
            .send()
            .await?;
        assert_eq!(res.status(), 405);
        let body: Value = res.json().await?;
        let error =
            json!({"components": contract.doc["components"], "$ref": "#/components/schemas/Error"});
        assert!(jsonschema::draft202012::is_valid(&error, &body), "{body}");
        // Only that path: its neighbours are still the host's 404.
        let res = app.client().get(app.url("/openapi.json/x")).send().await?;
        assert_eq!(res.status(), 404);
    } else {
        // wasmtime serve answers only component routes.
        contract
            .covered
            .lock()
            .unwrap()
            .insert(("get".into(), "/openapi.json".into()));
    }
    // The broker CA, from the host itself, without a token.
    let res = app
        .client()
        .get(format!(
            "{}/.well-known/s3m/broker-ca.pem",
            app.host_base_url
        ))
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-pem-file");
    let pem = res.text().await?;
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    // Only GET, in the error shape.
    let res = app
        .client()
        .post(format!(
            "{}/.well-known/s3m/broker-ca.pem",
            app.host_base_url
        ))
        .send()
        .await?;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET");
    // A PEM body: the document's response is text, checked above.
    contract
        .covered
        .lock()
        .unwrap()
        .insert(("get".into(), "/.well-known/s3m/broker-ca.pem".into()));

    let token = app.token(&["compute-ace", "data-streaming"], PROJECT)?;
    let bearer = format!("Bearer {token}");
    let readonly = app.token(&["compute-ace-readonly"], PROJECT)?;
    let bare = app.token(&["workflows"], PROJECT)?;

    // ---- tokens ----
    let intro = "/olcf/v1/token/ctls/introspect";
    let revoke = "/olcf/v1/token/ctls/revoke";
    let v = c
        .expect(200, Method::GET, intro, Some(&token), None)
        .await?;
    assert_eq!(v["token"]["project"], PROJECT);
    c.expect(200, Method::GET, intro, Some(&bearer), None)
        .await?;
    c.expect(401, Method::GET, intro, None, None).await?;
    c.expect(401, Method::GET, intro, Some("not-a-token"), None)
        .await?;
    c.expect(405, Method::POST, intro, Some(&token), None)
        .await?;
    let doomed = app.token(&["workflows"], PROJECT)?;
    c.expect(405, Method::GET, revoke, Some(&doomed), None)
        .await?;
    c.expect(200, Method::DELETE, revoke, Some(&doomed), None)
        .await?;
    c.expect(401, Method::GET, intro, Some(&doomed), None)
        .await?;

    // ---- status ----
    let v = c
        .expect(200, Method::GET, "/olcf/v1alpha/status", None, None)
        .await?;
    assert!(!v["resources"].as_array().unwrap().is_empty());
    c.expect(200, Method::GET, "/olcf/v1alpha/status/basalt", None, None)
        .await?;
    c.expect(
        200,
        Method::GET,
        "/olcf/v1alpha/status/downtimes",
        None,
        None,
    )
    .await?;
    c.expect(
        200,
        Method::GET,
        "/olcf/v1alpha/status/downtimes/upcoming",
        None,
        None,
    )
    .await?;
    c.expect(404, Method::GET, "/olcf/v1alpha/status/nowhere", None, None)
        .await?;
    c.expect(405, Method::DELETE, "/olcf/v1alpha/status", None, None)
        .await?;

    // ---- environment ----
    let env = "/olcf/v1alpha/environment";
    let v = c.expect(200, Method::GET, env, Some(&bare), None).await?;
    assert!(v["environments"].as_array().unwrap().len() >= 5, "{v}");
    c.expect(
        200,
        Method::GET,
        &format!("{env}/basalt"),
        Some(&bare),
        None,
    )
    .await?;
    c.expect(
        200,
        Method::GET,
        &format!("{env}/shale-archive"),
        Some(&bare),
        None,
    )
    .await?;
    c.expect(
        404,
        Method::GET,
        &format!("{env}/nowhere"),
        Some(&bare),
        None,
    )
    .await?;
    c.expect(401, Method::GET, env, None, None).await?;
    c.expect(405, Method::POST, env, Some(&bare), None).await?;

    // ---- compute ----
    let out = shared.path();
    for prefix in [
        "/slurm/open/v0.0.42/cedar",
        "/slurm/open/v0.0.43/cedar",
        "/slurm/open/v0.0.44/cedar",
        "/slurm/v0.0.42/cedar",
    ] {
        for rest in [
            "ping",
            "diag",
            "jobs",
            "nodes",
            "partitions",
            "reservations",
        ] {
            c.expect(
                200,
                Method::GET,
                &format!("{prefix}/{rest}"),
                Some(&readonly),
                None,
            )
            .await?;
        }
        let job = json!({"name": "oas", "script": "#!/bin/bash\nsleep 60\n",
                         "current_working_directory": out, "standard_output": out.join("oas-%j.out"),
                         "environment": ["A=1"], "time_limit": {"number": 5, "set": true}});
        let body = if prefix.contains("v0.0.44") {
            let mut job = job.clone();
            let script = job.as_object_mut().unwrap().remove("script").unwrap();
            json!({"script": script, "jobs": [job]})
        } else {
            json!({ "job": job })
        };
        let submit = format!("{prefix}/job/submit");
        let v = c
            .expect(200, Method::POST, &submit, Some(&token), Some(&body))
            .await?;
        let id = v["job_id"].as_u64().context("job_id")?;
        // An idempotent repeat answers the same job.
        let key = format!("oas-{prefix}");
        let (s1, a) = c
            .call(
                Method::POST,
                &submit,
                Some(&token),
                Some(&body),
                &[("Idempotency-Key", &key)],
            )
            .await?;
        let (s2, b) = c
            .call(
                Method::POST,
                &submit,
                Some(&token),
                Some(&body),
                &[("Idempotency-Key", &key)],
            )
            .await?;
        assert_eq!((s1, s2), (200, 200), "{a} {b}");
        assert_eq!(a["job_id"], b["job_id"]);
        for id in [id, a["job_id"].as_u64().unwrap()] {
            let v = c
                .expect(
                    200,
                    Method::GET,
                    &format!("{prefix}/job/{id}"),
                    Some(&readonly),
                    None,
                )
                .await?;
            assert_eq!(v["jobs"][0]["job_id"], id);
            c.expect(
                200,
                Method::DELETE,
                &format!("{prefix}/job/{id}?signal=KILL&flags=FULL_JOB"),
                Some(&token),
                None,
            )
            .await?;
        }
        // Errors, in the one shape.
        c.expect(
            400,
            Method::GET,
            &format!("{prefix}/job/abc"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            404,
            Method::GET,
            &format!("{prefix}/job/987654321"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            400,
            Method::POST,
            &submit,
            Some(&token),
            Some(&json!({"job": {"script": "no shebang"}})),
        )
        .await?;
        c.expect(
            400,
            Method::POST,
            &submit,
            Some(&token),
            Some(&json!({"job": {"script": "#!/bin/sh\n", "color": "red"}})),
        )
        .await?;
        c.expect(403, Method::POST, &submit, Some(&readonly), Some(&body))
            .await?;
        c.expect(
            403,
            Method::GET,
            &format!("{prefix}/jobs"),
            Some(&bare),
            None,
        )
        .await?;
        c.expect(401, Method::GET, &format!("{prefix}/jobs"), None, None)
            .await?;
        c.expect(
            405,
            Method::PUT,
            &format!("{prefix}/jobs"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            400,
            Method::DELETE,
            &format!("{prefix}/job/{id}?signal=NOPE"),
            Some(&token),
            None,
        )
        .await?;
    }
    c.expect(
        404,
        Method::GET,
        "/slurm/open/v0.0.43/tape/ping",
        Some(&token),
        None,
    )
    .await?;
    c.expect(
        404,
        Method::GET,
        "/slurm/open/v0.0.43/basalt-nope/ping",
        Some(&token),
        None,
    )
    .await?;

    // ---- streaming ----
    for (base, name) in [
        ("/olcf/open/v1alpha/streaming", "oas-open"),
        ("/olcf/v1alpha/streaming", "oas-legacy"),
    ] {
        let v = c
            .expect(
                200,
                Method::GET,
                &format!("{base}/list_backends"),
                Some(&token),
                None,
            )
            .await?;
        assert!(!v["backends"].as_array().unwrap().is_empty(), "{v}");
        let spec = json!({"kind": "general", "name": name, "resourceSettings": {"cpus": 1, "ram-gbs": 1}, "featureFlags": {}});
        let provision = format!("{base}/redis/provision_cluster");
        c.expect(200, Method::POST, &provision, Some(&token), Some(&spec))
            .await?;
        c.expect(409, Method::POST, &provision, Some(&token), Some(&spec))
            .await?;
        let cluster = format!("{base}/redis/cluster/{name}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = c
                .expect(200, Method::GET, &cluster, Some(&token), None)
                .await?;
            if v["cluster"]["healthStatus"] == "healthy" {
                break;
            }
            ensure!(std::time::Instant::now() < deadline, "never healthy: {v}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let v = c
            .expect(
                200,
                Method::GET,
                &format!("{base}/redis/list_clusters"),
                Some(&token),
                None,
            )
            .await?;
        assert_eq!(v["clusters"][0]["name"], name);
        c.expect(
            200,
            Method::POST,
            &format!("{base}/redis/extend/{name}"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            400,
            Method::POST,
            &provision,
            Some(&token),
            Some(&json!({"kind": "general", "name": "Bad_Name"})),
        )
        .await?;
        c.expect(
            400,
            Method::POST,
            &provision,
            Some(&token),
            Some(&json!({"kind": "general", "name": "x", "colour": 1})),
        )
        .await?;
        c.expect(
            403,
            Method::GET,
            &format!("{base}/list_backends"),
            Some(&readonly),
            None,
        )
        .await?;
        c.expect(
            401,
            Method::GET,
            &format!("{base}/redis/list_clusters"),
            None,
            None,
        )
        .await?;
        c.expect(
            404,
            Method::GET,
            &format!("{base}/kafka/list_clusters"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(405, Method::PUT, &cluster, Some(&token), None)
            .await?;
        c.expect(200, Method::DELETE, &cluster, Some(&token), None)
            .await?;
    }

    // ---- workflows ----
    {
        let token = app.token(&["workflows", "compute-ace"], PROJECT)?;
        let ns = PROJECT.to_lowercase();
        let base = format!("/api/v1/workflows/{ns}");
        let hello = json!({"metadata": {"generateName": "oas-"}, "spec": {"entrypoint": "hi", "templates": [
            {"name": "hi", "container": {"image": "busybox", "command": ["echo", "hi"]}}]}});
        c.expect(
            200,
            Method::POST,
            &format!("{base}/lint"),
            Some(&token),
            Some(&json!({"workflow": hello})),
        )
        .await?;
        let wf = c
            .expect(
                200,
                Method::POST,
                &base,
                Some(&token),
                Some(&json!({"workflow": hello})),
            )
            .await?;
        let name = wf["metadata"]["name"].as_str().context("name")?.to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = c
                .expect(
                    200,
                    Method::GET,
                    &format!("{base}/{name}"),
                    Some(&token),
                    None,
                )
                .await?;
            if v["status"]["phase"] == "Succeeded" {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "workflow {name}: {}",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.expect(200, Method::GET, &base, Some(&token), None)
            .await?;
        c.expect(
            409,
            Method::PUT,
            &format!("{base}/{name}/stop"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            200,
            Method::PUT,
            &format!("{base}/{name}/resubmit"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            400,
            Method::POST,
            &base,
            Some(&token),
            Some(&json!({"workflow": {"spec": {}}})),
        )
        .await?;
        c.expect(
            404,
            Method::GET,
            &format!("/api/v1/workflows/other/{name}"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            200,
            Method::DELETE,
            &format!("{base}/{name}"),
            Some(&token),
            None,
        )
        .await?;
        let tbase = format!("/api/v1/workflow-templates/{ns}");
        let template = json!({"metadata": {"name": "oas-t"}, "spec": {"entrypoint": "hi", "templates": [
            {"name": "hi", "container": {"image": "busybox", "command": ["echo", "hi"]}}]}});
        c.expect(
            200,
            Method::POST,
            &tbase,
            Some(&token),
            Some(&json!({"template": template})),
        )
        .await?;
        c.expect(200, Method::GET, &tbase, Some(&token), None)
            .await?;
        c.expect(
            200,
            Method::GET,
            &format!("{tbase}/oas-t"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            200,
            Method::PUT,
            &format!("{tbase}/oas-t"),
            Some(&token),
            Some(&json!({"template": template})),
        )
        .await?;
        c.expect(
            200,
            Method::POST,
            &format!("{base}/submit"),
            Some(&token),
            Some(&json!({"resourceKind": "WorkflowTemplate", "resourceName": "oas-t"})),
        )
        .await?;
        c.expect(
            200,
            Method::DELETE,
            &format!("{tbase}/oas-t"),
            Some(&token),
            None,
        )
        .await?;
        c.expect(
            200,
            Method::GET,
            "/olcf/open/v1alpha/workflows/templates",
            Some(&token),
            None,
        )
        .await?;
    }

    // ---- the status page (HTML) ----
    for path in ["/", "/status"] {
        let res = app.client().get(app.url(path)).send().await?;
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let op = &contract.doc["paths"][path]["get"];
        ensure!(
            op["responses"][status.to_string()]["content"]["text/html"].is_object(),
            "GET {path} answered {status} {ctype}, undocumented"
        );
        ensure!(
            status == 200 && ctype.starts_with("text/html"),
            "GET {path}: {status} {ctype}"
        );
        contract
            .covered
            .lock()
            .unwrap()
            .insert(("get".into(), path.to_string()));
    }

    // A host-level error (no route at all) is the same shape.
    let res = app.client().get(app.url("/nowhere")).send().await?;
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await?;
    let root =
        json!({"components": contract.doc["components"], "$ref": "#/components/schemas/Error"});
    assert!(jsonschema::draft202012::is_valid(&root, &body), "{body}");

    let missing = contract.uncovered();
    ensure!(
        missing.is_empty(),
        "operations of openapi/s3m.json that no request here answered 2xx (add requests, or remove them from the document):\n{}",
        missing.join("\n")
    );
    Ok(())
}

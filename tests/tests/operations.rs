//! What operators see of a running `s3m up`: Prometheus metrics on the
//! operator listener (and not on the public one), request ids on every
//! answer and log line, JSON log lines, and the audit log.

use anyhow::{bail, Context, Result};
use s3m_tests::{slurm, AppOptions, TestApp};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const STATUS: &str = "/olcf/v1alpha/status";
const STATUS_ROUTE: &str = "/olcf/v1alpha/status/...";
const INTROSPECT: &str = "/olcf/v1/token/ctls/introspect";

/// One scrape of `/metrics`: each sample's name and labels, and its value.
struct Scrape(Vec<(String, BTreeMap<String, String>, f64)>);

impl Scrape {
    fn parse(text: &str) -> Result<Self> {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("not a sample: {line}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("not a value: {line}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').context("unclosed labels")?;
                    let mut labels = BTreeMap::new();
                    // Our label values hold no `",` sequence.
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").context("bad label")?;
                        labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Ok(Scrape(samples))
    }

    /// The sum of the samples of `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

async fn scrape(app: &TestApp) -> Result<Scrape> {
    let res = app
        .client()
        .get(format!("{}/metrics", app.operator_url()?))
        .send()
        .await?;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.text().await?;
    if status != 200 {
        bail!("GET /metrics answered {status}: {text}");
    }
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&text)
}

fn request_id(res: &reqwest::Response) -> String {
    res.headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on a {} answer", res.status()))
        .to_str()
        .expect("an ASCII request id")
        .to_string()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

#[tokio::test]
async fn metrics_count_requests_on_the_operator_listener_only() -> Result<()> {
    let app = TestApp::start(AppOptions::only(&["tokens", "status"]))?;
    let before = scrape(&app).await?;
    for name in [
        "s3m_instances_in_use",
        "s3m_instances_max",
        "s3m_requests_in_flight",
        "s3m_requests_max",
    ] {
        assert!(before.has(name), "no {name} in the first scrape");
    }
    assert_eq!(before.value("s3m_instances_max", &[]), 256.0);

    for _ in 0..3 {
        let res = app.get(STATUS, None).await?;
        assert_eq!(res.status(), 200);
    }
    let res = app.get(INTROSPECT, None).await?;
    assert_eq!(res.status(), 401);
    // Metrics are never on the public listener.
    let res = app.get("/metrics", None).await?;
    assert_eq!(res.status(), 404);
    assert!(!res.text().await?.contains("s3m_http_requests_total"));
    assert_eq!(app.get("/nowhere", None).await?.status(), 404);
    // The operator listener serves nothing else.
    let res = app
        .client()
        .get(format!("{}/", app.operator_url()?))
        .send()
        .await?;
    assert_eq!(res.status(), 404);

    let after = scrape(&app).await?;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let status_ok = [
        ("component", "status"),
        ("route", STATUS_ROUTE),
        ("status", "200"),
    ];
    assert_eq!(moved("s3m_http_requests_total", &status_ok), 3.0);
    assert_eq!(
        moved(
            "s3m_http_requests_total",
            &[
                ("component", "tokens"),
                ("route", "/olcf/v1/token/..."),
                ("status", "401")
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "s3m_http_requests_total",
            &[("component", "none"), ("route", "none"), ("status", "404")]
        ),
        2.0
    );
    let status_route = [("component", "status"), ("route", STATUS_ROUTE)];
    assert_eq!(
        moved("s3m_http_request_duration_seconds_count", &status_route),
        3.0
    );
    assert!(moved("s3m_http_request_duration_seconds_sum", &status_route) > 0.0);
    assert_eq!(
        moved(
            "s3m_http_request_duration_seconds_bucket",
            &[
                ("component", "status"),
                ("route", STATUS_ROUTE),
                ("le", "+Inf")
            ]
        ),
        3.0
    );
    // Nothing is in flight between requests (an instance is given back
    // just after its answer is sent).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(&app).await?;
        if now.value("s3m_instances_in_use", &[]) == 0.0
            && now.value("s3m_requests_in_flight", &[]) == 0.0
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("instances or requests still in use after the requests ended");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn every_answer_carries_a_request_id() -> Result<()> {
    let app = TestApp::start(AppOptions::only(&["tokens", "status"]))?;
    let get = |path: &'static str, id: Option<&[u8]>| {
        let mut req = app.client().get(app.url(path));
        if let Some(id) = id {
            req = req.header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(id).unwrap(),
            );
        }
        req.send()
    };

    // A valid id is echoed, on success and on errors.
    let res = get(STATUS, Some(b"op-test.Id_1")).await?;
    assert_eq!(res.status(), 200);
    assert_eq!(request_id(&res), "op-test.Id_1");
    let long_ok = "a".repeat(128);
    let res = get(STATUS, Some(long_ok.as_bytes())).await?;
    assert_eq!(request_id(&res), long_ok);
    let res = get("/nowhere", Some(b"op-404")).await?;
    assert_eq!(res.status(), 404);
    assert_eq!(request_id(&res), "op-404");

    // An invalid one is replaced by a new one.
    let too_long = "a".repeat(500);
    for bad in [
        too_long.as_bytes(),
        b"with spaces in it".as_slice(),
        b"caf\xc3\xa9".as_slice(),
        b"a/b".as_slice(),
    ] {
        let res = get(STATUS, Some(bad)).await?;
        assert_eq!(res.status(), 200);
        let id = request_id(&res);
        assert!(is_uuid(&id), "{bad:?} was answered with id {id:?}");
    }

    // Errors the host and components answer carry one too: 404, 401, 413.
    let res = get("/nowhere", None).await?;
    assert_eq!(res.status(), 404);
    assert!(is_uuid(&request_id(&res)));
    let res = get(INTROSPECT, None).await?;
    assert_eq!(res.status(), 401);
    assert!(is_uuid(&request_id(&res)));
    // On a connection of its own: the host closes it after a 413, and a
    // pooled connection might be reused while it does.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let res = once
        .post(app.url(STATUS))
        .header("x-request-id", "op-413")
        // Over status's own limit (64 KiB): refused on its Content-Length.
        .body(vec![b'x'; 100 << 10])
        .send()
        .await?;
    assert_eq!(res.status(), 413);
    assert_eq!(request_id(&res), "op-413");
    // Two requests never share a new id.
    let a = request_id(&get(STATUS, None).await?);
    let b = request_id(&get(STATUS, None).await?);
    assert_ne!(a, b);

    // A request hyper cannot parse is answered (400) with an id too.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base_url.trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 400"), "{answer}");
        assert!(answer.contains("\r\nx-request-id: "), "{answer}");
    }

    // The capability gateway's answers too.
    let res = app
        .client()
        .post(format!("{}/gateway/v1/scheduler/about", app.gateway_url()?))
        .header("x-request-id", "op-gateway")
        .json(&json!({"resource": "cedar"}))
        .send()
        .await?;
    assert_eq!(res.status(), 401);
    assert_eq!(request_id(&res), "op-gateway");
    Ok(())
}

#[tokio::test]
async fn json_log_lines_carry_the_request_id() -> Result<()> {
    let app = TestApp::start(AppOptions {
        env: vec![
            ("S3M_LOG_FORMAT".into(), "json".into()),
            ("S3M_LOG".into(), "s3m=debug".into()),
        ],
        ..AppOptions::only(&["tokens", "status"])
    })?;
    let res = app
        .client()
        .get(app.url(STATUS))
        .header("x-request-id", "json-log-probe")
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stderr = app.stderr();
        let mut lines = Vec::new();
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("a log line that is not JSON: {line}"))?;
            assert!(v.is_object(), "{line}");
            lines.push(v);
        }
        // The startup lines (routes, gateway) are JSON events too.
        assert!(
            lines
                .iter()
                .any(|v| v["fields"]["message"] == "Available routes:"),
            "{stderr}"
        );
        if let Some(v) = lines
            .iter()
            .find(|v| v["span"]["request_id"] == "json-log-probe")
        {
            assert_eq!(v["fields"]["message"], "request", "{v}");
            assert_eq!(v["fields"]["status"], 200, "{v}");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("no log line carries the request id json-log-probe:\n{stderr}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gateway_caller(project: &str, token: &str) -> Value {
    json!({
        "project": project,
        "username": format!("{}_auser", project.to_lowercase()),
        "token": token,
    })
}

fn gateway_job() -> Value {
    json!({
        "name": "audited", "partition": null, "qos": null, "reservation": null,
        "comment": null, "licenses": null, "time_limit": null, "time_minimum": null,
        "begin_time": null, "priority": null, "tasks": null, "cpus_per_task": null,
        "nodes": null, "minimum_nodes": null, "maximum_nodes": null, "minimum_cpus": null,
        "maximum_cpus": null, "memory_per_cpu": null, "memory_per_node": null,
        "current_working_directory": null, "environment": ["PATH=/usr/bin:/bin"],
        "standard_input": null, "standard_output": null, "standard_error": null,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_calls_are_audited_and_counted() -> Result<()> {
    slurm::ensure_project_user("STF040")?;
    let dir = tempfile::tempdir()?;
    let facility = format!(
        "[[resources]]\nname = \"cedar\"\ndescription = \"test cluster\"\n[resources.compute]\n\
         scheduler = \"local\"\nslots = 4\nstate_dir = \"{}\"\ndefault_working_directory = \"{}\"\n",
        dir.path().join("scheduler").display(),
        dir.path().join("projects").display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility))?;
    let token = app.token(&["compute-ace"], "STF040")?;
    let jti = s3m_tests::jwt_id(&token)?;
    let before = scrape(&app).await?;
    assert!(before.value("s3m_tokens_minted_total", &[]) >= 1.0);

    // A submit through the compute component, acting for STF040.
    let res = app
        .client()
        .post(app.url("/slurm/open/v0.0.43/cedar/job/submit"))
        .header("Authorization", &token)
        .header("x-request-id", "audit-submit")
        .json(&json!({"job": {"script": "#!/bin/bash\ntrue\n"}}))
        .send()
        .await?;
    assert_eq!(request_id(&res), "audit-submit");
    let body: Value = res.json().await?;
    let job_id = body["job_id"].as_u64().with_context(|| format!("{body}"))?;

    // A call the host refuses: STF040's token acting for another project.
    let res = app
        .client()
        .post(format!(
            "{}/gateway/v1/scheduler/submit",
            app.gateway_url()?
        ))
        .header(
            "authorization",
            format!("Bearer {}", app.gateway_credential("compute")?),
        )
        .header("x-request-id", "audit-refused")
        .json(
            &json!({"resource": "cedar", "caller": gateway_caller("PRJ101", &token),
                      "job": gateway_job(), "script": "#!/bin/sh\ntrue\n"}),
        )
        .send()
        .await?;
    assert_eq!(res.status(), 403);
    assert_eq!(request_id(&res), "audit-refused");

    // The operator's token commands.
    let revoked = app.token(&["compute-ace-readonly"], "STF040")?;
    let revoked_jti = s3m_tests::jwt_id(&revoked)?;
    app.cli_ok(&["token", "revoke", &revoked_jti])?;

    let path = app.state_dir.join("audit.log");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect::<Result<_>>()?;
    let find = |action: &str, result: &str, extra: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .find(|l| l["action"] == action && l["result"] == result && extra(l))
            .cloned()
            .unwrap_or_else(|| panic!("no {action} {result} line in the audit log:\n{text}"))
    };
    let submit = find("scheduler.submit", "ok", &|l| {
        l["request_id"] == "audit-submit"
    });
    assert_eq!(submit["jti"], jti.as_str(), "{submit}");
    assert_eq!(submit["username"], "stf040_auser", "{submit}");
    assert_eq!(submit["project"], "STF040", "{submit}");
    assert_eq!(submit["component"], "compute", "{submit}");
    assert_eq!(submit["resource"], "cedar", "{submit}");
    assert_eq!(submit["object"], job_id.to_string(), "{submit}");
    assert!(submit["time"].is_string(), "{submit}");
    let refused = find("scheduler.submit", "refused", &|l| {
        l["request_id"] == "audit-refused"
    });
    assert_eq!(refused["project"], "PRJ101", "{refused}");
    assert_eq!(refused["jti"], jti.as_str(), "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not the token's project"),
        "{refused}"
    );
    let created = find("token.create", "ok", &|l| l["object"] == jti.as_str());
    assert_eq!(created["project"], "STF040", "{created}");
    assert!(created["operator"].is_string(), "{created}");
    let revoke = find("token.revoke", "ok", &|l| {
        l["object"] == revoked_jti.as_str()
    });
    assert_eq!(revoke["project"], "STF040", "{revoke}");
    for secret in [&token, &revoked] {
        assert!(
            !text.contains(secret.as_str()),
            "a token reached the audit log"
        );
        // Nor any of its parts (the signature, say).
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !text.contains(signature),
            "a token's signature reached the audit log"
        );
    }

    let after = scrape(&app).await?;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let submit_ok = [
        ("capability", "scheduler"),
        ("function", "submit"),
        ("outcome", "ok"),
    ];
    assert_eq!(moved("s3m_capability_calls_total", &submit_ok), 1.0);
    assert_eq!(
        moved(
            "s3m_capability_calls_total",
            &[
                ("capability", "scheduler"),
                ("function", "submit"),
                ("outcome", "refused")
            ]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "s3m_capability_call_duration_seconds_count",
            &[("capability", "scheduler"), ("function", "submit")]
        ),
        2.0
    );
    assert!(moved("s3m_tokens_used_total", &[]) >= 1.0);
    assert_eq!(
        moved("s3m_tokens_refused_total", &[("reason", "wrong_project")]),
        1.0
    );
    assert_eq!(
        after.value("s3m_tokens_minted_total", &[]),
        before.value("s3m_tokens_minted_total", &[]) + 1.0
    );
    assert!(
        after.value("s3m_jobs", &[("resource", "cedar")]) >= 1.0,
        "the local scheduler's jobs are counted"
    );
    Ok(())
}

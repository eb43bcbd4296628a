//! The components under jco (`@bytecodealliance/jco`, the Node.js host of components): the
//! same requests served by `tests/jco/serve.mjs` and by `s3m up` get the same answers.
//!
//! status.wasm imports only `wasi:*` and runs as built; tokens runs as the self-contained
//! composition of `s3m build --compose` (target/composed/tokens.wasm), its key-value going
//! over HTTP to the capability gateway of an `s3m up` (docs/gateway.md).
//!
//! Needs Node.js >= 20 and npm; `npm ci` in tests/jco installs the pinned jco (it runs here
//! when tests/jco/node_modules is missing). Nothing here skips: a missing tool fails the test,
//! naming what to install.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use s3m_tests::{expect_error, jwt_id, keys, repo_root, serving_url, AppOptions, TestApp};
use serde_json::Value;

const STATUS: &str = "/olcf/v1alpha/status";
const INTROSPECT: &str = "/olcf/v1/token/ctls/introspect";
const REVOKE: &str = "/olcf/v1/token/ctls/revoke";

/// How long the runner may take to transpile and print its "Serving" line (a few seconds
/// on a warm machine).
const JCO_STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// tests/jco: the runner and its pinned package.json / package-lock.json.
fn jco_dir() -> PathBuf {
    repo_root().join("tests/jco")
}

/// The self-contained tokens component of `s3m build --compose`.
fn composed_tokens_wasm() -> PathBuf {
    repo_root().join("target/composed/tokens.wasm")
}

/// Checks node (>= 20) and npm, and runs `npm ci` in tests/jco when its node_modules is
/// missing; once per test binary.
fn ensure_jco() -> Result<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| prepare_jco().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn prepare_jco() -> Result<()> {
    const INSTALL: &str = "install Node.js >= 20 and npm (Debian: `apt-get install nodejs npm`), \
                           then run `npm ci` in tests/jco (scripts/test does)";
    let out = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| anyhow!("cannot run `node --version` ({e}): {INSTALL}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if !out.status.success() || major < 20 {
        bail!("node {version:?} is not Node.js >= 20: {INSTALL}");
    }
    let dir = jco_dir();
    let installed = |name: &str| {
        dir.join("node_modules/@bytecodealliance")
            .join(name)
            .join("package.json")
            .is_file()
    };
    if installed("jco") && installed("preview2-shim") {
        return Ok(());
    }
    let started = Instant::now();
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow!("cannot run `npm ci` in {} ({e}): {INSTALL}", dir.display()))?;
    if !out.status.success() || !installed("jco") || !installed("preview2-shim") {
        bail!(
            "`npm ci` in {} failed ({:?}); run npm ci in tests/jco (scripts/test does):\n\
             stdout: {}\nstderr: {}",
            dir.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "jco: npm ci in {} took {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One component served by `node tests/jco/serve.mjs`; stopped on drop.
struct JcoServer {
    base_url: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
    _out_dir: tempfile::TempDir,
}

impl JcoServer {
    /// Transpiles and serves `wasm` with only the environment `env` and the preopens `dirs`
    /// (host dir, guest path), on a free port.
    fn start(wasm: &Path, dirs: &[(&Path, &str)], env: &[(&str, &str)]) -> Result<JcoServer> {
        ensure_jco()?;
        if !wasm.is_file() {
            bail!("{} is missing", wasm.display());
        }
        let out_dir = tempfile::Builder::new().prefix("s3m-jco-").tempdir()?;
        let mut cmd = Command::new("node");
        cmd.arg(jco_dir().join("serve.mjs"))
            .arg("--wasm")
            .arg(wasm)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .arg("--out-dir")
            .arg(out_dir.path());
        for (host, guest) in dirs {
            cmd.arg("--dir").arg(format!("{}::{guest}", host.display()));
        }
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let started = Instant::now();
        let mut child = cmd
            .current_dir(jco_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run node tests/jco/serve.mjs")?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        let out_pipe = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                if let Some(url) = serving_url(&line) {
                    let _ = tx.send(url);
                }
            }
        });
        let mut server = JcoServer {
            base_url: String::new(),
            child,
            stderr,
            _out_dir: out_dir,
        };
        match rx.recv_timeout(JCO_STARTUP_TIMEOUT) {
            Ok(url) => {
                eprintln!(
                    "jco: {} served after {:.1} s ({})",
                    wasm.display(),
                    started.elapsed().as_secs_f64(),
                    server.stderr().trim().replace('\n', "; ")
                );
                server.base_url = url;
                Ok(server)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "serve.mjs printed no Serving line within {JCO_STARTUP_TIMEOUT:?}; its stderr:\n{}",
                server.stderr()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200));
                let status = server.child.try_wait().ok().flatten();
                bail!(
                    "serve.mjs exited ({status:?}) before serving; its stderr:\n{}",
                    server.stderr()
                )
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for JcoServer {
    /// SIGTERM (the runner removes what it made), SIGKILL after 5 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer, reduced to what both hosts must agree on.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

/// `method path` against `base` with `Authorization: auth`; a non-JSON body is kept as a
/// string.
async fn ask(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
) -> Result<Answer> {
    let mut req = client.request(method.clone(), format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("{method} {base}{path}"))?;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        content_type,
        body,
    })
}

/// `value` without its `retrievedAt` members (the time of each request).
fn without_retrieved_at(mut value: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("retrievedAt");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

/// Asks both hosts and checks that they answer alike; returns the s3m answer.
async fn same_answer(
    client: &reqwest::Client,
    s3m: &str,
    jco: &str,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
) -> Result<Answer> {
    let mut native = ask(client, s3m, method.clone(), path, auth).await?;
    let mut under_jco = ask(client, jco, method.clone(), path, auth).await?;
    native.body = without_retrieved_at(native.body);
    under_jco.body = without_retrieved_at(under_jco.body);
    assert_eq!(
        under_jco, native,
        "{method} {path}: jco (left) and s3m up (right) differ"
    );
    Ok(native)
}

#[tokio::test]
async fn status_under_jco_answers_as_s3m_up() -> Result<()> {
    ensure_jco()?;
    let wasm = repo_root().join("target/wasm32-wasip2/release/status.wasm");
    if !wasm.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --target wasm32-wasip2 --release -p status`",
            wasm.display()
        );
    }
    let app = TestApp::start_only(&["status"])?;
    let config = app.dir.path().join("config");
    let jco = JcoServer::start(&wasm, &[(&config, "/config")], &[])?;
    let client = reqwest::Client::new();
    let get = reqwest::Method::GET;

    let list = same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get.clone(),
        &format!("{STATUS}/"),
        None,
    )
    .await?;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert!(
        list.body["resources"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["name"] == "basalt")),
        "{}",
        list.body
    );
    for path in [
        STATUS.to_string(),
        format!("{STATUS}/basalt"),
        format!("{STATUS}/granite/"),
        format!("{STATUS}/downtimes"),
        format!("{STATUS}/downtimes/upcoming"),
    ] {
        let a = same_answer(
            &client,
            &app.base_url,
            &jco.base_url,
            get.clone(),
            &path,
            None,
        )
        .await?;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    let basalt = ask(
        &client,
        &jco.base_url,
        get.clone(),
        &format!("{STATUS}/basalt"),
        None,
    )
    .await?;
    assert_eq!(basalt.body["name"], "basalt");
    assert!(
        basalt.body["retrievedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{}",
        basalt.body
    );

    // Errors too: 404 with the same message, 405.
    let missing = same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get.clone(),
        &format!("{STATUS}/no-such-system"),
        None,
    )
    .await?;
    assert_eq!(missing.status, 404, "{}", missing.body);
    same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        reqwest::Method::POST,
        STATUS,
        None,
    )
    .await?;

    // The preopen is the live directory: an edit shows under both hosts.
    let file = config.join("facility.toml");
    let mut text = std::fs::read_to_string(&file)?;
    text.push_str("\n[[resources]]\nname = \"obsidian\"\ndescription = \"added while serving\"\n");
    std::fs::write(&file, &text)?;
    let added = same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get,
        &format!("{STATUS}/obsidian"),
        None,
    )
    .await?;
    assert_eq!(added.body["description"], "added while serving");
    Ok(())
}

#[tokio::test]
async fn tokens_under_jco_through_the_gateway_answer_as_s3m_up() -> Result<()> {
    let wasm = composed_tokens_wasm();
    if !wasm.is_file() {
        bail!(
            "{} is missing: build it with `target/release/s3m build --compose`",
            wasm.display()
        );
    }
    ensure_jco()?;
    let app = TestApp::start(AppOptions::only(&["tokens"]))?;
    let gateway_url = app.gateway_url()?;
    let credential = app.gateway_credential("tokens")?;
    let jco = JcoServer::start(
        &wasm,
        &[],
        &[
            ("SPIN_VARIABLE_S3M_GATEWAY_URL", &gateway_url),
            ("SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL", &credential),
            ("SPIN_VARIABLE_TOKEN_AUDIENCE", "s3m"),
        ],
    )?;
    let client = reqwest::Client::new();
    let get = reqwest::Method::GET;

    // A live token: the very record, under either host.
    let token = app.token(&["compute-ace"], "STF040")?;
    let answer = same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get.clone(),
        INTROSPECT,
        Some(&token),
    )
    .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let t = &answer.body["token"];
    assert_eq!(t["project"], "STF040", "{t}");
    assert_eq!(t["permissions"], serde_json::json!(["compute-ace"]), "{t}");
    assert_eq!(
        keys(&answer.body),
        ["token".to_string()].into(),
        "{}",
        answer.body
    );
    let bearer = format!("Bearer {token}");
    same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get.clone(),
        INTROSPECT,
        Some(&bearer),
    )
    .await?;

    // No token and a garbage one: the same refusals.
    for auth in [None, Some("garbage")] {
        let a = same_answer(
            &client,
            &app.base_url,
            &jco.base_url,
            get.clone(),
            INTROSPECT,
            auth,
        )
        .await?;
        assert_eq!(a.status, 401, "{auth:?}: {}", a.body);
    }

    // Revoked with the CLI while both serve: refused under jco too, with the same message.
    let jti = jwt_id(&token)?;
    app.cli_ok(&["token", "revoke", &jti])?;
    let refused = same_answer(
        &client,
        &app.base_url,
        &jco.base_url,
        get.clone(),
        INTROSPECT,
        Some(&token),
    )
    .await?;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let res = client
        .get(format!("{}{INTROSPECT}", jco.base_url))
        .header("Authorization", &token)
        .send()
        .await?;
    let body = expect_error(res, 401).await?;
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );

    // A revoke through jco writes through the gateway: s3m up refuses the token after it.
    let other = app.token(&["compute-ace"], "STF040")?;
    let res = client
        .delete(format!("{}{REVOKE}", jco.base_url))
        .header("Authorization", &other)
        .send()
        .await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    assert_eq!(status, 200, "revoke under jco: {text}");
    let after = expect_error(app.get(INTROSPECT, Some(&other)).await?, 401).await?;
    assert!(
        after["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{after}"
    );
    Ok(())
}

//! The shared harness of the system tests: runs the real `s3m` binary over HTTP against the
//! real components, in a private temporary app directory per test app.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use s3m_tests::{TestApp, AppOptions};
//! let app = TestApp::start(AppOptions::default())?;
//! let token = app.token(&["compute-ace"], "STF040")?;
//! let res = app.client().get(app.url("/olcf/v1/token/ctls/introspect"))
//!     .header("Authorization", &token).send().await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```
//!
//! A missing `s3m` binary or component wasm makes the test fail with the command that builds
//! it; nothing here skips.

pub mod lmod;
pub mod load;
pub mod redis_server;
pub mod serving;
pub mod slurm;
pub mod streaming;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// How long `s3m up` may take to print its "Serving" line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `s3m` binary: `$S3M_BIN`, else `<repo>/target/release/s3m`. Fails, naming the build
/// command, when it does not exist, or (the default one only) when a source file of the host
/// is newer than it: `cargo test -p s3m-tests` does not rebuild it, and a test of a stale
/// host passes or fails for the wrong reason.
pub fn s3m_bin() -> Result<PathBuf> {
    let bin = match std::env::var_os("S3M_BIN") {
        Some(b) if !b.is_empty() => return existing_bin(PathBuf::from(b)),
        _ => existing_bin(repo_root().join("target/release/s3m"))?,
    };
    let built = std::fs::metadata(&bin)?.modified()?;
    let root = repo_root();
    for dir in ["host/src", "crates/wire/src", "crates/workflow/src"] {
        if let Some(newer) = newer_than(&root.join(dir), built) {
            bail!(
                "the s3m binary at {} is older than {}: rebuild it with `cargo build --release -p s3m` (cargo test does not)",
                bin.display(),
                newer.display()
            );
        }
    }
    Ok(bin)
}

fn existing_bin(bin: PathBuf) -> Result<PathBuf> {
    if !bin.is_file() {
        bail!(
            "the s3m binary is missing at {}: build it with `cargo build --release -p s3m` (or set S3M_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A file under `dir` modified after `time`, if any.
fn newer_than(dir: &Path, time: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if let Some(p) = newer_than(&path, time) {
                return Some(p);
            }
        } else if meta.modified().is_ok_and(|m| m > time) {
            return Some(path);
        }
    }
    None
}

/// A free TCP port on 127.0.0.1: free when asked; the server the test starts binds it soon after.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The wasm of component crate `name`: `<repo>/target/wasm32-wasip2/release/<name>.wasm`.
pub fn component_wasm(name: &str) -> PathBuf {
    repo_root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// The test-looper fixture (tests/components/looper), routed under
/// /looper/, as more spin.toml for `AppOptions::extra_manifest`.
pub fn looper_manifest(allowed_outbound: &[String]) -> String {
    looper_manifest_of(&component_wasm("test_looper"), allowed_outbound)
}

/// As [`looper_manifest`], with the fixture's wasm at `wasm` (a benchmark's baseline build).
pub fn looper_manifest_of(wasm: &Path, allowed_outbound: &[String]) -> String {
    assert!(
        wasm.is_file(),
        "{} is missing: build it with `cargo build --target wasm32-wasip2 --release -p test-looper` (scripts/test does)",
        wasm.display()
    );
    format!(
        "\n[[trigger.http]]\nroute = \"/looper/...\"\ncomponent = \"looper\"\n\
         [component.looper]\nsource = \"{}\"\nallowed_outbound_hosts = {:?}\n",
        wasm.display(),
        allowed_outbound
    )
}

/// Options of one test app.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// `config/facility.toml` of the app; `None` copies the repo's sample.
    pub facility_toml: Option<String>,
    /// Contents of a runtime config file passed as `--runtime-config-file`.
    pub runtime_config: Option<String>,
    /// Extra arguments of `s3m up` (e.g. `--variable token_audience=x`).
    pub up_args: Vec<String>,
    /// Extra environment of every `s3m` process of this app.
    pub env: Vec<(String, String)>,
    /// Serve only these components of spin.toml (and their routes); empty serves them all.
    pub components: Vec<String>,
    /// More spin.toml (e.g. a test fixture's `[[trigger.http]]` and `[component.x]`), merged
    /// into the copied manifest after the filtering above.
    pub extra_manifest: Option<String>,
    /// The `s3m` binary to run instead of [`s3m_bin`]'s (a benchmark's baseline build).
    pub bin: Option<PathBuf>,
    /// A directory of component wasm files (`status.wasm`, ...) that replace the built ones
    /// of the same name (a benchmark's baseline build); components it lacks are the built ones.
    pub wasm_dir: Option<PathBuf>,
}

impl AppOptions {
    /// Options serving only `components` (e.g. `&["tokens"]`).
    pub fn only(components: &[&str]) -> Self {
        AppOptions {
            components: components.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    /// These options with `config/facility.toml` replaced by `text`.
    pub fn with_facility(mut self, text: impl Into<String>) -> Self {
        self.facility_toml = Some(text.into());
        self
    }
}

/// One running `s3m up` with its own app directory and state; killed on drop.
pub struct TestApp {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The `s3m up` process's own listener (the same as `base_url` unless a
    /// frontend such as `wasmtime serve` is in front of it).
    pub host_base_url: String,
    /// The temporary app directory (spin.toml, config/, state/).
    pub dir: tempfile::TempDir,
    /// The manifest `s3m` runs.
    pub manifest: PathBuf,
    /// The state directory `s3m` keeps.
    pub state_dir: PathBuf,
    runtime_config: Option<PathBuf>,
    env: Vec<(String, String)>,
    bin: PathBuf,
    child: Child,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
    /// With S3M_TEST_SERVING=wasmtime-serve: the composed components under
    /// `wasmtime serve`, which `base_url` then reaches.
    frontend: Option<serving::Frontend>,
}

/// What a CLI run printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl TestApp {
    /// Prepares an app directory and runs `s3m up --listen 127.0.0.1:0` on it, waiting for its
    /// `Serving http://127.0.0.1:PORT` line.
    pub fn start(opts: AppOptions) -> Result<TestApp> {
        let bin = match &opts.bin {
            Some(bin) => existing_bin(bin.clone())?,
            None => s3m_bin()?,
        };
        let dir = tempfile::Builder::new().prefix("s3m-test-").tempdir()?;
        let manifest = write_manifest(
            dir.path(),
            &opts.components,
            opts.extra_manifest.as_deref(),
            opts.wasm_dir.as_deref(),
        )?;
        write_config(dir.path(), opts.facility_toml.as_deref())?;
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir)?;
        let runtime_config = match &opts.runtime_config {
            Some(text) => {
                let path = dir.path().join("runtime-config.toml");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };

        let mut cmd = Command::new(&bin);
        cmd.arg("up");
        push_globals(&mut cmd, &manifest, &state_dir, runtime_config.as_deref());
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--operator-listen",
            "127.0.0.1:0",
        ])
        .args(&opts.up_args);
        scrub_env(&mut cmd, &opts.env);
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let err_sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = err_sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (tx, rx) = mpsc::channel::<String>();
        let out_pipe = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            // Keeps draining stdout after the Serving line so that the host never blocks on it.
            for line in BufReader::new(out_pipe).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });

        let mut app = TestApp {
            base_url: String::new(),
            host_base_url: String::new(),
            dir,
            manifest,
            state_dir,
            runtime_config,
            env: opts.env,
            bin,
            child,
            stderr,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            frontend: None,
        };
        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = serving_url(&line) {
                        app.base_url = url.clone();
                        app.host_base_url = url;
                        if serving::serving() == serving::Serving::WasmtimeServe {
                            let variables = opts
                                .up_args
                                .windows(2)
                                .filter(|w| w[0] == "--variable")
                                .filter_map(|w| w[1].split_once('='))
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect();
                            let frontend = serving::start(
                                &app.manifest,
                                app.dir.path(),
                                &app.gateway_url()?,
                                &variables,
                                |id| app.gateway_credential(id),
                            )?;
                            app.base_url = frontend.base_url.clone();
                            app.frontend = Some(frontend);
                        }
                        return Ok(app);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("s3m up printed no `Serving http://...` line within {STARTUP_TIMEOUT:?}; its stderr:\n{}", app.stderr())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200));
                    let status = app.child.try_wait().ok().flatten();
                    bail!(
                        "s3m up exited ({status:?}) before serving; its stderr:\n{}",
                        app.stderr()
                    )
                }
            }
        }
    }

    /// The whole app (every component of spin.toml) with the repo's sample configuration.
    pub fn start_default() -> Result<TestApp> {
        Self::start(AppOptions::default())
    }

    /// Only `components`, with the repo's sample configuration.
    pub fn start_only(components: &[&str]) -> Result<TestApp> {
        Self::start(AppOptions::only(components))
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// An HTTP client for this app.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The `s3m up` process id (for RSS and file descriptor samples).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The capability gateway's URL, as `s3m up` wrote it to its state directory.
    pub fn gateway_url(&self) -> Result<String> {
        let path = self.state_dir.join("gateway.url");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("s3m up wrote no {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The operator listener's URL (metrics at `/metrics`), as `s3m up` wrote it to its
    /// state directory.
    pub fn operator_url(&self) -> Result<String> {
        let path = self.state_dir.join("operator.url");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("s3m up wrote no {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The credential `s3m gateway env` prints for `component`.
    pub fn gateway_credential(&self, component: &str) -> Result<String> {
        let out = self.cli_ok(&["gateway", "env", "--component", component])?;
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("SPIN_VARIABLE_S3M_GATEWAY_CREDENTIAL="))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("s3m gateway env printed no credential: {}", out.stdout))
    }

    /// What `s3m up` wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The host's log once a line of it satisfies `pred`, waiting up to 5 s
    /// for it: a line the host wrote before it answered may still be in the
    /// pipe when the answer arrives. After 5 s, the log as it is (the
    /// caller's assertion then fails and shows it).
    pub fn stderr_with_line(&self, pred: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.stderr();
            if log.lines().any(&pred) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `s3m <args...>` with this app's manifest, state and runtime config.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut cmd = Command::new(&self.bin);
        let (sub, rest) = args
            .split_first()
            .ok_or_else(|| anyhow!("cli needs a subcommand"))?;
        cmd.arg(sub);
        // Subcommand groups (`token create`) take the globals after their last word.
        let mut rest = rest.to_vec();
        if (*sub == "token" || *sub == "gateway") && !rest.is_empty() {
            cmd.arg(rest.remove(0));
        }
        push_globals(
            &mut cmd,
            &self.manifest,
            &self.state_dir,
            self.runtime_config.as_deref(),
        );
        cmd.args(&rest);
        scrub_env(&mut cmd, &self.env);
        let out = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        Ok(CliOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Like [`cli`](Self::cli), failing unless the command succeeds.
    pub fn cli_ok(&self, args: &[&str]) -> Result<CliOutput> {
        let out = self.cli(args)?;
        if !out.success {
            bail!(
                "s3m {} failed ({:?}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(out)
    }

    /// Mints a token with `s3m token create --project P --permission X...` plus `extra`
    /// arguments (e.g. `["--one-time"]`), and returns it.
    pub fn mint(&self, project: &str, permissions: &[&str], extra: &[&str]) -> Result<String> {
        let mut args = vec!["token", "create", "--project", project];
        for p in permissions {
            args.extend(["--permission", p]);
        }
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args)?;
        let token = out.stdout.trim().to_string();
        if token.is_empty() || token.lines().count() != 1 {
            bail!(
                "s3m token create should print only the token on one line; it printed {:?}",
                out.stdout
            );
        }
        Ok(token)
    }

    /// Mints a plain token for `project` with `permissions`.
    pub fn token(&self, permissions: &[&str], project: &str) -> Result<String> {
        self.mint(project, permissions, &[])
    }

    /// GET `path` with `Authorization: token` (no header when `None`).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<reqwest::Response> {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        Ok(req.send().await?)
    }
}

/// Lines of a host's log a failing test prints.
const HOST_LOG_TAIL: usize = 60;

/// Whether a stopping [`TestApp`] prints the end of its host's log.
static LOG_TAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For the benchmarks, whose output people read: a [`TestApp`] that stops
/// prints the end of its host's log only while panicking. Tests keep the
/// tail, which libtest shows only for a test that fails.
pub fn no_log_tails() {
    LOG_TAILS.store(false, std::sync::atomic::Ordering::Relaxed);
}

impl Drop for TestApp {
    /// Stops `s3m up`: SIGTERM first so that it can stop what it started (brokers, jobs),
    /// SIGKILL if it is still running after 10 s.
    fn drop(&mut self) {
        // The test harness shows what a test printed only when it fails: then
        // the end of its host's log says what the host saw (CI keeps nothing else).
        if LOG_TAILS.load(std::sync::atomic::Ordering::Relaxed) || std::thread::panicking() {
            let log = self.stderr();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- the last {} lines of this test's s3m log ---\n{}",
                lines.len().min(HOST_LOG_TAIL),
                lines[lines.len().saturating_sub(HOST_LOG_TAIL)..].join("\n")
            );
        }
        // Brokers outlive their host by design (a restarted host adopts them); a test's go once its host is gone.
        let _brokers = streaming::BrokerReaper::new(&self.state_dir);
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
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

fn push_globals(
    cmd: &mut Command,
    manifest: &Path,
    state_dir: &Path,
    runtime_config: Option<&Path>,
) {
    cmd.arg("--manifest")
        .arg(manifest)
        .arg("--state-dir")
        .arg(state_dir);
    if let Some(rc) = runtime_config {
        cmd.arg("--runtime-config-file").arg(rc);
    }
}

/// Keeps the caller's S3M_* settings from leaking into a test app, except
/// the binary to run and the profiler (which changes no behaviour, and lets
/// `perf` name guest code under a benchmark's load).
fn scrub_env(cmd: &mut Command, env: &[(String, String)]) {
    for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        let kept = k == "S3M_BIN" || k == "S3M_PROFILER";
        if (k.starts_with("S3M_") && !kept) || k.starts_with("SPIN_VARIABLE_") {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// The URL in a `Serving http://127.0.0.1:PORT` line.
pub fn serving_url(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("Serving ")?;
    let url = rest.split_whitespace().next()?.trim_end_matches('/');
    let port = url.strip_prefix("http://")?.rsplit_once(':')?.1;
    port.parse::<u16>().ok()?;
    Some(url.to_string())
}

/// The repo's spin.toml with every `source = "target/..."` made absolute, keeping only the
/// components in `only` (all when empty) and their routes; fails when a kept component's wasm
/// does not exist, naming the command that builds it.
fn write_manifest(
    app_dir: &Path,
    only: &[String],
    extra: Option<&str>,
    wasm_dir: Option<&Path>,
) -> Result<PathBuf> {
    let root = repo_root();
    let text =
        std::fs::read_to_string(root.join("spin.toml")).context("reading the repo's spin.toml")?;
    let mut manifest: toml::Table = text.parse().context("parsing the repo's spin.toml")?;
    let keep = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if let Some(components) = manifest.get_mut("component").and_then(|c| c.as_table_mut()) {
        for name in only {
            if !components.contains_key(name) {
                bail!("spin.toml has no component {name:?}");
            }
        }
        components.retain(|name, _| keep(name));
        let mut missing = Vec::new();
        for (name, component) in components.iter_mut() {
            let Some(source) = component.get_mut("source") else {
                continue;
            };
            let Some(rel) = source
                .as_str()
                .and_then(|s| s.strip_prefix("target/"))
                .map(str::to_string)
            else {
                continue;
            };
            let built = root.join("target").join(&rel);
            let abs = wasm_dir
                .zip(built.file_name())
                .map(|(dir, file)| dir.join(file))
                .filter(|p| p.is_file())
                .unwrap_or(built);
            if !abs.is_file() {
                let krate = abs
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or(name.as_str())
                    .to_string();
                missing.push(format!(
                    "{} of component {name} (build it with `cargo build --target wasm32-wasip2 --release -p {krate}`)",
                    abs.display()
                ));
            }
            *source = toml::Value::String(abs.display().to_string());
        }
        if !missing.is_empty() {
            bail!("component wasm missing:\n  {}", missing.join("\n  "));
        }
    }
    if let Some(triggers) = manifest
        .get_mut("trigger")
        .and_then(|t| t.get_mut("http"))
        .and_then(|h| h.as_array_mut())
    {
        triggers.retain(|t| t.get("component").and_then(|c| c.as_str()).is_none_or(keep));
    }
    if let Some(extra) = extra {
        let extra: toml::Table = extra.parse().context("parsing extra_manifest")?;
        merge_toml(&mut manifest, extra);
    }
    let path = app_dir.join("spin.toml");
    std::fs::write(&path, toml::to_string(&manifest)?)?;
    Ok(path)
}

/// Merges `extra` into `base`: tables key by key, arrays (like `[[trigger.http]]`) appended.
fn merge_toml(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge_toml(b, e),
            (Some(toml::Value::Array(b)), toml::Value::Array(e)) => b.extend(e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `config/` of the app: a copy of the repo's `config/`, with `facility.toml` replaced when
/// the test brings its own.
fn write_config(app_dir: &Path, facility_toml: Option<&str>) -> Result<()> {
    let dst = app_dir.join("config");
    copy_dir(&repo_root().join("config"), &dst)?;
    if let Some(text) = facility_toml {
        std::fs::write(dst.join("facility.toml"), text)?;
    }
    Ok(())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    if !src.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// The gRPC code the API pairs with an HTTP status.
pub fn grpc_code(status: u16) -> i64 {
    match status {
        400 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        405 => 12,
        408 => 4,
        413 | 414 | 429 | 431 => 8,
        500 => 13,
        503 => 14,
        504 => 4,
        _ => panic!("no gRPC code is defined for HTTP {status}"),
    }
}

/// Reads `res` and checks that it is the API's error: HTTP `status`, JSON content type, a body
/// of exactly `{"code", "message", "details": []}` with the matching gRPC code (409 takes 6
/// or 10). Returns the body.
pub async fn expect_error(res: reqwest::Response, status: u16) -> Result<Value> {
    let got = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.text().await?;
    if got != status {
        bail!("expected HTTP {status}, got {got}: {text}");
    }
    if !content_type.starts_with("application/json") {
        bail!("error content-type is {content_type:?}, not application/json: {text}");
    }
    let body: Value =
        serde_json::from_str(&text).with_context(|| format!("error body is not JSON: {text}"))?;
    check_error_body(&body, status)?;
    Ok(body)
}

/// The checks of [`expect_error`] on a parsed body.
pub fn check_error_body(body: &Value, status: u16) -> Result<()> {
    let keys: BTreeSet<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != BTreeSet::from(["code", "message", "details"]) {
        bail!("error body must have exactly code, message, details: {body}");
    }
    let code = body["code"]
        .as_i64()
        .ok_or_else(|| anyhow!("error code is not a number: {body}"))?;
    let ok = if status == 409 {
        code == 6 || code == 10
    } else {
        code == grpc_code(status)
    };
    if !ok {
        bail!(
            "HTTP {status} must carry gRPC code {}, got {code}: {body}",
            if status == 409 { 6 } else { grpc_code(status) }
        );
    }
    if body["message"].as_str().is_none_or(str::is_empty) {
        bail!("error message must be a non-empty string: {body}");
    }
    if body["details"] != Value::Array(vec![]) {
        bail!("error details must be []: {body}");
    }
    Ok(())
}

/// Reads `res` as a 200 JSON body.
pub async fn expect_json(res: reqwest::Response) -> Result<Value> {
    let status = res.status().as_u16();
    let text = res.text().await?;
    if status != 200 {
        bail!("expected HTTP 200, got {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("body is not JSON: {text}"))
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The decoded claims (payload) of a JWT, without verification.
pub fn jwt_claims(token: &str) -> Result<Value> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("JWT payload is not base64url")?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// The `jti` of a JWT.
pub fn jwt_id(token: &str) -> Result<String> {
    jwt_claims(token)?["jti"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("token has no jti"))
}

/// base64url without padding, as JWT segments are written.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

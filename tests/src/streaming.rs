//! Helpers of the streaming tests and benchmark: the facility configuration
//! they run with, polling a cluster until healthy, finding a cluster's
//! processes in the state directory, killing and restarting the host on the
//! same state directory, and a guard that leaves no broker process behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{s3m_bin, serving_url, TestApp, STARTUP_TIMEOUT};

pub const BASE: &str = "/olcf/open/v1alpha/streaming";
pub const LEGACY_BASE: &str = "/olcf/v1alpha/streaming";
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// `config/facility.toml` with a `[streaming]` section of `extra` lines.
pub fn facility(extra: &str) -> String {
    format!("[facility]\nname = \"test\"\n\n[streaming]\nprovider = \"local\"\n{extra}\n")
}

/// A `redis_server` for `[streaming]` that fails its first `fail` launches
/// (exit 1, as a redis-server whose port was taken between the host's choice
/// and its bind does), then runs the real one.
pub fn failing_redis_server(dir: &Path, fail: u32) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let count = dir.join("launches");
    let script = dir.join("failing-redis-server");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat {c} 2>/dev/null || echo 0)\necho $((n + 1)) > {c}\n\
             [ \"$n\" -ge {fail} ] || {{ echo 'Address already in use' >&2; exit 1; }}\n\
             exec redis-server \"$@\"\n",
            c = count.display()
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(format!("redis_server = {:?}", script.display().to_string()))
}

/// Fails, saying what to install, when a broker server is missing.
pub fn require_servers(rabbitmq: bool) -> Result<()> {
    let redis = Command::new("redis-server").arg("--version").output();
    if !matches!(redis, Ok(ref o) if o.status.success()) {
        bail!("redis-server is not installed: apt-get install -y redis-server");
    }
    if rabbitmq && !Path::new(RABBITMQ_SERVER).exists() {
        bail!("{RABBITMQ_SERVER} is missing: apt-get install -y rabbitmq-server");
    }
    Ok(())
}

/// Kills, on drop, every process working inside `<state>/brokers`: whatever
/// a test left running (a failed assertion before its delete, or a killed host).
pub struct BrokerReaper {
    root: PathBuf,
}

impl BrokerReaper {
    pub fn new(state_dir: &Path) -> Self {
        let root = state_dir.join("brokers");
        let _ = std::fs::create_dir_all(&root);
        Self {
            root: root.canonicalize().unwrap_or(root),
        }
    }
}

impl Drop for BrokerReaper {
    fn drop(&mut self) {
        for _ in 0..50 {
            let pids = processes_under(&self.root);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                // SAFETY: a plain kill of a process that works in our test directory.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Is `pid` a live process (not a zombie)?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z') | Some('X') | None
        ),
        Err(_) => false,
    }
}

/// Every live process whose working directory is inside `root`.
pub fn processes_under(root: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            alive(*pid)
                && std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .map(|c| c.starts_with(root))
                    .unwrap_or(false)
        })
        .collect()
}

/// The cluster records the host keeps, read from its key-value file (the
/// default SQLite store of `<state>/key-value.db`), with python3's sqlite3.
pub fn records(state_dir: &Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,json\n\
             db=sqlite3.connect(sys.argv[1])\n\
             print(json.dumps([json.loads(v) for (v,) in db.execute(\
             \"SELECT value FROM spin_key_value WHERE store='default' AND key LIKE 'brokers/cluster/%'\")]))",
        )
        .arg(state_dir.join("key-value.db"))
        .output()
        .context("python3 (apt-get install -y python3) reads the key-value file")?;
    if !out.status.success() {
        bail!(
            "reading the broker records: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Deletes a record from the key-value file behind the host's back, as a
/// lost write or an operator's mistake would.
pub fn forget_record(state_dir: &Path, id: &str) -> Result<()> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
             db=sqlite3.connect(sys.argv[1])\n\
             db.execute(\"DELETE FROM spin_key_value WHERE store='default' AND key=?\", ('brokers/cluster/'+sys.argv[2],))\n\
             db.commit()",
        )
        .arg(state_dir.join("key-value.db"))
        .arg(id)
        .output()?;
    if !out.status.success() {
        bail!(
            "deleting a broker record: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The id of cluster `name` among `records`.
pub fn cluster_id_in(records: &[Value], name: &str) -> Result<String> {
    records
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_str().map(String::from))
        .with_context(|| format!("no record of cluster {name}"))
}

/// The recorded id of a project's cluster.
pub fn cluster_id(state_dir: &Path, name: &str) -> Result<String> {
    records(state_dir)?
        .iter()
        .find(|r| r["name"] == name)
        .and_then(|r| r["id"].as_str().map(String::from))
        .with_context(|| format!("no record of cluster {name} in key-value"))
}

/// The directory of a cluster, and the pid its pid file names.
pub fn cluster_process(state_dir: &Path, id: &str) -> Result<(PathBuf, i32)> {
    let dir = state_dir.join("brokers").join("clusters").join(id);
    let pid = std::fs::read_to_string(dir.join("pid"))
        .with_context(|| format!("no pid file in {}", dir.display()))?
        .trim()
        .parse()?;
    Ok((dir, pid))
}

pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

/// The port of a `scheme://user:pass@host:port/...` URL.
pub fn url_port(url: &str) -> Result<u16> {
    let after_at = url.rsplit_once('@').map(|(_, r)| r).unwrap_or(url);
    let hostport = after_at.split('/').next().unwrap_or_default();
    Ok(hostport
        .rsplit_once(':')
        .context("no port in the URL")?
        .1
        .parse()?)
}

/// Waits until no process works in `dir` and `port` is closed.
pub fn wait_gone(dir: &Path, pid: i32, port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    loop {
        let left = processes_under(&dir);
        if !alive(pid) && left.is_empty() && !port_open(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {within:?}: pid {pid} alive {}, processes {left:?}, port {port} open {}",
                alive(pid),
                port_open(port)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host client: base URL and token.
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base_url: &str, token: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            token: token.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    pub fn of(app: &TestApp, token: &str) -> Self {
        Self::new(&app.base_url, token)
    }

    /// `method` on `BASE` + `path`; returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{BASE}{path}", self.base_url))
            .header("Authorization", &self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("HTTP {status}, not JSON: {text}"))?;
        Ok((status, value))
    }

    pub async fn provision(&self, engine: &str, body: &Value) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/{engine}/provision_cluster"),
            Some(body),
        )
        .await
    }

    pub async fn get_cluster(&self, engine: &str, name: &str) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::GET,
            &format!("/{engine}/cluster/{name}"),
            None,
        )
        .await
    }

    pub async fn delete(&self, engine: &str, name: &str) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/{engine}/cluster/{name}"),
            None,
        )
        .await
    }

    pub async fn list(&self, engine: &str) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::GET,
            &format!("/{engine}/list_clusters"),
            None,
        )
        .await
    }

    pub async fn extend(&self, engine: &str, name: &str) -> Result<(u16, Value)> {
        self.call(
            reqwest::Method::POST,
            &format!("/{engine}/extend/{name}"),
            None,
        )
        .await
    }

    /// Polls `GET cluster/{name}` until `healthStatus` is `healthy`; fails on
    /// `failed`, or after `within`. Returns the cluster.
    pub async fn wait_healthy(&self, engine: &str, name: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get_cluster(engine, name).await?;
            if status != 200 {
                bail!("GET cluster {name}: HTTP {status} {body}");
            }
            let c = &body["cluster"];
            if c["healthStatus"] == "healthy" {
                return Ok(c.clone());
            }
            if c["syncStatus"] == "failed" {
                bail!("cluster {name} failed: {}", c["healthStatus"]);
            }
            if Instant::now() > deadline {
                bail!(
                    "cluster {name} not healthy after {within:?}: {} / {}",
                    c["syncStatus"],
                    c["healthStatus"]
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Kills the `s3m up` that serves `state_dir` with SIGKILL, as a crash would.
pub fn kill_host(state_dir: &Path) -> Result<()> {
    let needle = state_dir.to_string_lossy().into_owned();
    let mut killed = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "up") && args.contains(&needle) && alive(pid) {
            // SAFETY: a plain kill of the test's own host process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed.push(pid);
        }
    }
    if killed.is_empty() {
        bail!("no s3m up serving {needle} to kill");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed.iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            bail!("s3m {killed:?} survived SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A second `s3m up` on an existing app directory (after `kill_host`); killed on drop.
pub struct Host {
    pub base_url: String,
    child: Child,
}

impl Host {
    pub fn start(manifest: &Path, state_dir: &Path, cwd: &Path) -> Result<Host> {
        let mut child = Command::new(s3m_bin()?)
            .arg("up")
            .arg("--manifest")
            .arg(manifest)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
            .args(["--operator-listen", "127.0.0.1:0"])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = serving_url(&line) {
                        return Ok(Host {
                            base_url: url,
                            child,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    bail!("the restarted s3m up did not serve within {STARTUP_TIMEOUT:?}");
                }
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The facility's broker CA (PEM), as a client gets it: from the host that
/// handed out the URLs, without a token.
pub async fn broker_ca(host_base_url: &str) -> Result<String> {
    let response = reqwest::get(format!("{host_base_url}/.well-known/s3m/broker-ca.pem")).await?;
    let status = response.status();
    let text = response.text().await?;
    if status != 200 || !text.starts_with("-----BEGIN CERTIFICATE-----") {
        bail!("GET /.well-known/s3m/broker-ca.pem answered {status}: {text}");
    }
    Ok(text)
}

/// A Redis client for a `rediss://` URL that trusts only `ca_pem`.
pub fn redis_client(url: &str, ca_pem: &str) -> Result<redis::Client> {
    Ok(redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )?)
}

/// An AMQP connection to an `amqps://` URL that trusts only `ca_pem`.
pub async fn amqp_connect(url: &str, ca_pem: &str) -> Result<lapin::Connection> {
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: Some(ca_pem.to_string()),
    };
    Ok(lapin::Connection::connect_with_config(
        url,
        lapin::ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await?)
}

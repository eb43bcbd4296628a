//! Local brokers: every cluster is its own `redis-server` or
//! `rabbitmq-server` process on this machine, on free ports of the advertise
//! address, in its own directory `<state>/brokers/clusters/<id>/` (config
//! files 0600, data, logs, pid file, Erlang cookie).
//!
//! The processes live in their own process group and survive the host: a
//! restarted host adopts those it finds running (pid file, and the process's
//! working directory inside the cluster's directory proves it is ours), and
//! stops those no record claims. Nothing here decides owners or lifetimes.
//!
//! Brokers speak TLS only (AMQPS, `rediss://`, the management UI over HTTPS),
//! with a certificate per cluster start from the facility CA (`tls`);
//! `[streaming] tls = false` serves them in plain text instead.

use super::probe;
use super::tls::FacilityCa;
use crate::capabilities::brokers::registry::{
    Backend, ClusterRecord, Engine, FeatureFlag, ResourceOption,
};
use crate::capabilities::brokers::{BrokerProvider, Health};
use anyhow::{bail, Context};
use async_trait::async_trait;
use serde::Deserialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `[streaming]` keys of the local provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LocalConfig {
    /// Where the brokers listen, and the host in the URLs handed out.
    pub advertise_address: String,
    pub redis_server: PathBuf,
    /// The server script itself, not Debian's /usr/sbin wrapper (which
    /// switches to user rabbitmq, who cannot enter the state directory).
    pub rabbitmq_server: PathBuf,
    /// Offer RabbitMQ's management plugin; by default when it is installed.
    pub rabbitmq_management: Option<bool>,
    pub redis_start_timeout_seconds: u64,
    pub rabbitmq_start_timeout_seconds: u64,
    /// The most RabbitMQ nodes a cluster may ask for (`nodes`).
    pub rabbitmq_max_nodes: u32,
    /// TLS only (the default); false serves plain AMQP and Redis, for an
    /// operator who terminates TLS elsewhere.
    pub tls: bool,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            advertise_address: "127.0.0.1".into(),
            redis_server: "redis-server".into(),
            rabbitmq_server: "/usr/lib/rabbitmq/bin/rabbitmq-server".into(),
            rabbitmq_management: None,
            redis_start_timeout_seconds: 30,
            rabbitmq_start_timeout_seconds: 120,
            tls: true,
            rabbitmq_max_nodes: 3,
        }
    }
}

pub struct LocalBrokers {
    config: LocalConfig,
    /// Absolute: `<state>/brokers/clusters`.
    root: PathBuf,
    management: bool,
    /// With `tls`: the CA, and a client configuration trusting it for the probes.
    tls: Option<(
        FacilityCa,
        std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
    )>,
    /// Held while a RabbitMQ node is started from a health check.
    starting: std::sync::Mutex<()>,
    /// The directories no record claimed at the last check.
    unclaimed_before: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

const PID_FILE: &str = "pid";

/// The pid file of RabbitMQ node `index` (node 0's is [`PID_FILE`]).
fn pid_file(index: usize) -> String {
    match index {
        0 => PID_FILE.to_string(),
        i => format!("pid-n{i}"),
    }
}

fn rabbitmq_node_name(id: &str, index: usize) -> String {
    match index {
        0 => format!("s3m-{id}@localhost"),
        i => format!("s3m-{id}-n{i}@localhost"),
    }
}

fn rabbitmq_conf_file(index: usize) -> String {
    match index {
        0 => "rabbitmq.conf".to_string(),
        i => format!("rabbitmq-n{i}.conf"),
    }
}

/// The recorded ports of a RabbitMQ cluster's nodes 1.. (`endpoint.extraNodes`).
fn extra_nodes(r: &ClusterRecord) -> Vec<serde_json::Value> {
    r.endpoint
        .get("extraNodes")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default()
}

/// A RabbitMQ node's ports: AMQP(S), Erlang distribution, management.
struct NodePorts {
    port: u16,
    dist: u16,
    mgmt: u16,
}

impl LocalBrokers {
    /// `root` is `<state>/brokers/clusters`; the CA lives beside it in `ca/`.
    pub fn new(config: LocalConfig, root: PathBuf) -> anyhow::Result<Self> {
        let _ = std::fs::create_dir_all(&root);
        if let Some(brokers) = root.parent() {
            let _ = std::fs::set_permissions(
                brokers,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            );
        }
        let root = root.canonicalize().unwrap_or(root);
        let management = config
            .rabbitmq_management
            .unwrap_or_else(|| management_plugin_installed(&config.rabbitmq_server));
        let tls = if config.tls {
            let dir = root.parent().unwrap_or(&root).join("ca");
            let ca = FacilityCa::load_or_create(&dir)?;
            let client = super::tls::client_config(ca.cert_pem())?;
            Some((ca, client))
        } else {
            None
        };
        Ok(Self {
            config,
            root,
            management,
            tls,
            starting: Default::default(),
            unclaimed_before: Default::default(),
        })
    }

    /// The CA's certificate (PEM) that the brokers' certificates chain to.
    pub fn ca_certificate(&self) -> Option<String> {
        self.tls.as_ref().map(|(ca, _)| ca.cert_pem().to_string())
    }

    /// Writes a fresh server certificate and key for this cluster into `dir`:
    /// (certificate, key, CA) paths.
    fn server_files(&self, r: &ClusterRecord, dir: &Path) -> anyhow::Result<Option<[PathBuf; 3]>> {
        let Some((ca, _)) = &self.tls else {
            return Ok(None);
        };
        let cert = ca.issue(&self.config.advertise_address, &r.id)?;
        let (cert_path, key_path) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
        write_private(&cert_path, cert.cert_pem.as_bytes())?;
        write_private(&key_path, cert.key_pem.as_bytes())?;
        Ok(Some([cert_path, key_path, ca.cert_path().to_path_buf()]))
    }

    /// Where a cluster's processes run: the directory its record names
    /// (perhaps under another host's state directory on this machine, which
    /// is how a host adopts the clusters of a host that is gone), else this
    /// host's own.
    fn dir_for(&self, r: &ClusterRecord) -> PathBuf {
        let recorded = r
            .endpoint
            .get("dir")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .filter(|d| {
                d.is_absolute()
                    && d.file_name().is_some_and(|n| n == r.id.as_str())
                    && d.components().all(|c| {
                        matches!(
                            c,
                            std::path::Component::RootDir | std::path::Component::Normal(_)
                        )
                    })
            });
        recorded.unwrap_or_else(|| self.dir_of(&r.id))
    }

    /// This host's directory for cluster `id`.
    fn dir_of(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn read_pid(dir: &Path) -> Option<i32> {
        std::fs::read_to_string(dir.join(PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The recorded process of a cluster, if it still runs.
    fn running_pid(&self, r: &ClusterRecord) -> Option<i32> {
        let dir = self.dir_for(r);
        let pid = Self::read_pid(&dir)?;
        alive_in(pid, &dir).then_some(pid)
    }

    /// A port: the one used before if it is still free, else a new one.
    fn port(&self, previous: Option<u64>) -> anyhow::Result<u16> {
        let addr = self.config.advertise_address.as_str();
        if let Some(p) = previous.and_then(|p| u16::try_from(p).ok()) {
            if std::net::TcpListener::bind((addr, p)).is_ok() {
                return Ok(p);
            }
            tracing::warn!(
                port = p,
                "the cluster's previous port is taken: it gets a new one"
            );
        }
        let l = std::net::TcpListener::bind((addr, 0)).with_context(|| {
            format!(
                "no free port on the advertise address {addr}: set [streaming] advertise_address"
            )
        })?;
        Ok(l.local_addr()?.port())
    }

    /// The cluster directories here that none of `records` claims: (id, directory).
    fn unclaimed(&self, records: &[ClusterRecord]) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.root.display())),
        };
        Ok(entries
            .flatten()
            .map(|entry| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            // Claimed: a record of this id runs here (not a copy started
            // on another host after this one was gone).
            .filter(|(id, dir)| {
                !records
                    .iter()
                    .any(|r| &r.id == id && &self.dir_for(r) == dir)
            })
            .collect())
    }

    /// Stops the processes of an unclaimed cluster directory and removes it.
    async fn stop_orphan(&self, id: &str, dir: &Path) {
        tracing::info!(id = %id, "stopping a broker that no record claims");
        self.kill_all(dir).await;
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an unclaimed broker directory");
        }
    }

    async fn start_redis(&self, r: &mut ClusterRecord, dir: &Path) -> anyhow::Result<()> {
        let port = self.port(r.endpoint.get("port").and_then(|v| v.as_u64()))?;
        let addr = &self.config.advertise_address;
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let listen = match self.server_files(r, dir)? {
            Some([cert, key, ca]) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n",
                cert.display(),
                key.display(),
                ca.display()
            ),
            None => format!("port {port}\n"),
        };
        let conf = format!(
            "{listen}bind {addr}\nprotected-mode yes\ndaemonize no\ndir {data}\nlogfile {log}\n\
             save \"\"\nappendonly {aof}\nmaxmemory {ram}gb\nmaxmemory-policy noeviction\nio-threads {cpus}\n\
             user default off\nuser {user} on >{pass} ~* &* +@all\n",
            data = data.display(),
            log = dir.join("redis.log").display(),
            aof = if r.flag("persistence") { "yes" } else { "no" },
            ram = r.setting("ram-gbs"),
            cpus = r.setting("cpus").max(1),
            user = r.username,
            pass = r.password,
        );
        write_private(&dir.join("redis.conf"), conf.as_bytes())?;
        let mut cmd = tokio::process::Command::new(&self.config.redis_server);
        cmd.arg(dir.join("redis.conf"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        spawn(
            cmd,
            dir,
            PID_FILE,
            "redis-server",
            "apt-get install redis-server, or set [streaming] redis_server",
        )?;
        r.endpoint = serde_json::json!({ "port": port });
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        r.url = format!("{scheme}://{}:{}@{addr}:{port}", r.username, r.password);
        r.mgmt_url = None;
        Ok(())
    }

    /// Starts node 0 of a RabbitMQ cluster. Its other nodes (`nodes` > 1)
    /// are started by [`Self::rabbitmq_nodes_health`] once node 0 answers:
    /// each boots blank with node 0 as its classic-config peer, and so joins
    /// node 0's cluster (same Erlang cookie) rather than forming its own.
    async fn start_rabbitmq(&self, r: &mut ClusterRecord, dir: &Path) -> anyhow::Result<()> {
        let previous = |k: &str| r.endpoint.get(k).and_then(|v| v.as_u64());
        let node0 = NodePorts {
            port: self.port(previous("port"))?,
            dist: self.port(previous("distPort"))?,
            mgmt: self.port(previous("mgmtPort"))?,
        };
        let earlier = extra_nodes(r);
        let mut extra = Vec::new();
        for i in 1..r.setting("nodes").max(1) as usize {
            let previous = |k: &str| {
                earlier
                    .get(i - 1)
                    .and_then(|n| n.get(k))
                    .and_then(|v| v.as_u64())
            };
            extra.push(NodePorts {
                port: self.port(previous("port"))?,
                dist: self.port(previous("distPort"))?,
                mgmt: self.port(previous("mgmtPort"))?,
            });
        }
        let addr = &self.config.advertise_address;
        let home = dir.join("home");
        for d in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let cookie = home.join(".erlang.cookie");
        if !cookie.exists() {
            let bytes: [u8; 20] = rand::random();
            write_private(&cookie, hex::encode(bytes).to_uppercase().as_bytes())?;
            std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
        }
        let management = self.management && r.flag("management");
        let plugins = if management {
            "[rabbitmq_management]."
        } else {
            "[]."
        };
        std::fs::write(dir.join("enabled_plugins"), plugins)?;
        let files = self.server_files(r, dir)?;
        for (i, ports) in std::iter::once(&node0).chain(&extra).enumerate() {
            let mut conf = self.rabbitmq_conf(r, ports, management, files.as_ref());
            if i > 0 {
                conf.push_str(&format!(
                    "cluster_formation.peer_discovery_backend = classic_config\n\
                     cluster_formation.classic_config.nodes.1 = {}\n",
                    rabbitmq_node_name(&r.id, 0)
                ));
            }
            write_private(&dir.join(rabbitmq_conf_file(i)), conf.as_bytes())?;
        }
        self.spawn_rabbitmq_node(r, dir, 0, &node0)?;
        let ports_json = |p: &NodePorts| serde_json::json!({ "port": p.port, "distPort": p.dist, "mgmtPort": p.mgmt });
        r.endpoint = serde_json::json!({
            "port": node0.port, "distPort": node0.dist, "mgmtPort": node0.mgmt,
            "extraNodes": extra.iter().map(ports_json).collect::<Vec<_>>(),
        });
        let (scheme, web) = if files.is_some() {
            ("amqps", "https")
        } else {
            ("amqp", "http")
        };
        r.url = format!(
            "{scheme}://{}:{}@{addr}:{}",
            r.username, r.password, node0.port
        );
        r.mgmt_url = management.then(|| format!("{web}://{addr}:{}/", node0.mgmt));
        Ok(())
    }

    /// One node's rabbitmq.conf: its listeners, the cluster's user, limits.
    fn rabbitmq_conf(
        &self,
        r: &ClusterRecord,
        ports: &NodePorts,
        management: bool,
        files: Option<&[PathBuf; 3]>,
    ) -> String {
        let addr = &self.config.advertise_address;
        let (port, mgmt_port) = (ports.port, ports.mgmt);
        let mut conf = match files {
            Some([cert, key, ca]) => format!(
                "listeners.tcp = none\nlisteners.ssl.default = {addr}:{port}\n\
                 ssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
                ca = ca.display(),
                cert = cert.display(),
                key = key.display(),
            ),
            None => format!("listeners.tcp.default = {addr}:{port}\n"),
        };
        conf.push_str(&format!(
            "loopback_users = none\n\
             default_user = {user}\ndefault_pass = {pass}\ndefault_vhost = /\n\
             default_user_tags.administrator = true\n\
             default_permissions.configure = .*\ndefault_permissions.read = .*\ndefault_permissions.write = .*\n\
             vm_memory_high_watermark.absolute = {ram}GB\nlog.file.level = warning\n",
            user = r.username,
            pass = r.password,
            ram = r.setting("ram-gbs"),
        ));
        if management {
            conf.push_str(&match files {
                Some([cert, key, ca]) => format!(
                    "management.ssl.port = {mgmt_port}\nmanagement.ssl.ip = {addr}\n\
                     management.ssl.cacertfile = {ca}\nmanagement.ssl.certfile = {cert}\nmanagement.ssl.keyfile = {key}\n",
                    ca = ca.display(),
                    cert = cert.display(),
                    key = key.display(),
                ),
                None => format!("management.tcp.port = {mgmt_port}\nmanagement.tcp.ip = {addr}\n"),
            });
        }
        conf
    }

    fn spawn_rabbitmq_node(
        &self,
        r: &ClusterRecord,
        dir: &Path,
        index: usize,
        ports: &NodePorts,
    ) -> anyhow::Result<()> {
        let cpus = r.setting("cpus").max(1);
        let mut cmd = tokio::process::Command::new(&self.config.rabbitmq_server);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("HOME", dir.join("home"))
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("RABBITMQ_NODENAME", rabbitmq_node_name(&r.id, index))
            .env("RABBITMQ_DIST_PORT", ports.dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join(rabbitmq_conf_file(index)))
            .env(
                "RABBITMQ_PID_FILE",
                dir.join(format!("rabbitmq-{index}.pid")),
            )
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!("+S {cpus}:{cpus}"),
            );
        spawn(
            cmd,
            dir,
            &pid_file(index),
            "rabbitmq-server",
            "apt-get install rabbitmq-server, or set [streaming] rabbitmq_server",
        )
    }

    /// Nodes 1.. of a RabbitMQ cluster whose node 0 answers: each one that
    /// does not run is started (it joins node 0), each one that runs must
    /// accept the cluster's login.
    async fn rabbitmq_nodes_health(&self, r: &ClusterRecord, timeout: Duration) -> Health {
        let nodes = extra_nodes(r);
        let dir = self.dir_for(r);
        let port =
            |n: &serde_json::Value, k: &str| n.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as u16;
        for (i, node) in nodes.iter().enumerate() {
            let index = i + 1;
            let ports = NodePorts {
                port: port(node, "port"),
                dist: port(node, "distPort"),
                mgmt: port(node, "mgmtPort"),
            };
            let running = || {
                std::fs::read_to_string(dir.join(pid_file(index)))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .is_some_and(|pid| alive_in(pid, &dir))
            };
            if !running() {
                // Checked again under the lock: two health checks at once
                // start the node once.
                let _one = self.starting.lock().unwrap_or_else(|e| e.into_inner());
                if !running() {
                    if let Err(e) = self.spawn_rabbitmq_node(r, &dir, index, &ports) {
                        return Health::Unhealthy(format!("node {index} did not start: {e:#}"));
                    }
                }
                return Health::Unhealthy(format!("node {index} is starting"));
            }
            if let Err(why) = self.amqp_probe(r, ports.port, timeout).await {
                return Health::Unhealthy(format!("node {index}: {why}"));
            }
        }
        Health::Healthy
    }

    async fn amqp_probe(
        &self,
        r: &ClusterRecord,
        port: u16,
        timeout: Duration,
    ) -> probe::ProbeResult {
        let tls = self.tls.as_ref().map(|(_, config)| probe::Tls {
            config: config.clone(),
            server_name: &self.config.advertise_address,
        });
        probe::amqp_login(
            &self.config.advertise_address,
            port,
            &r.username,
            &r.password,
            tls,
            timeout,
        )
        .await
    }

    /// Kills every process of a cluster's directory and waits until they are gone.
    async fn kill_all(&self, dir: &Path) {
        if let Some(pid) = Self::read_pid(dir) {
            if alive_in(pid, dir) {
                // SAFETY: plain syscalls on a pid checked to run in our directory.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for _ in 0..100 {
            let left = processes_in(dir);
            if left.is_empty() {
                return;
            }
            for pid in left {
                // SAFETY: as above.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::error!(dir = %dir.display(), "processes of a stopped cluster did not die");
    }
}

#[async_trait]
impl BrokerProvider for LocalBrokers {
    fn backends(&self) -> Vec<Backend> {
        let cpus = |max| ResourceOption {
            key: "cpus",
            description: "CPU threads the broker may use".into(),
            min: 1,
            max,
            default: 1,
        };
        let ram = ResourceOption {
            key: "ram-gbs",
            description: "Memory cap in GiB (Redis maxmemory, RabbitMQ memory high watermark)"
                .into(),
            min: 1,
            max: 16,
            default: 1,
        };
        let mut rabbit_flags = Vec::new();
        if self.management {
            rabbit_flags.push(FeatureFlag {
                key: "management",
                description: "RabbitMQ's management UI and HTTP API, at mgmtUrl".into(),
                default: true,
            });
        }
        let redis = |kind: &str, description: &str| Backend {
            engine: Engine::Redis,
            kind: kind.into(),
            description: description.into(),
            resource_options: vec![cpus(4), ram.clone()],
            feature_flags: vec![FeatureFlag {
                key: "persistence",
                description: "Keep data on disk in an append-only file".into(),
                default: false,
            }],
        };
        vec![
            redis("general", "One Redis 7 server with its own user and password, memory capped at ram-gbs"),
            // The kind OLCF's documentation provisions Redis with; here the
            // same Redis-protocol server as `general` serves it.
            redis(
                "dragonfly-general",
                "A Redis-protocol server (Redis 7 here) with its own user and password, memory capped at ram-gbs; the kind OLCF's documentation names",
            ),
            Backend {
                engine: Engine::Rabbitmq,
                kind: "general".into(),
                description: "RabbitMQ 3.10 with its own user and password: one node, or a cluster of `nodes` nodes that share one Erlang cookie".into(),
                resource_options: vec![
                    cpus(4),
                    ram,
                    ResourceOption {
                        key: "nodes",
                        description: "RabbitMQ nodes in the cluster; amqpsUrl reaches node 0, and every node serves every queue".into(),
                        min: 1,
                        max: self.config.rabbitmq_max_nodes.max(1),
                        default: 1,
                    },
                ],
                feature_flags: rabbit_flags,
            },
        ]
    }

    async fn start(&self, r: &mut ClusterRecord) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid(r) {
            bail!("cluster {} already runs as process {pid}", r.id);
        }
        // Always this host's own directory: a cluster started again here
        // after its host is gone does not run in that host's.
        let dir = self.dir_of(&r.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Config files, cookie and data hold credentials: only the host's user may enter.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        match r.engine {
            Engine::Redis => self.start_redis(r, &dir).await?,
            Engine::Rabbitmq => self.start_rabbitmq(r, &dir).await?,
        }
        r.endpoint["dir"] = dir.display().to_string().into();
        Ok(())
    }

    async fn health(&self, r: &ClusterRecord) -> Health {
        if self.running_pid(r).is_none() {
            return Health::Gone;
        }
        let timeout = Duration::from_secs(2);
        let port = r.endpoint.get("port").and_then(|v| v.as_u64()).unwrap_or(0) as u16;
        let result = match r.engine {
            Engine::Redis => {
                let ca = self.tls.as_ref().map(|(ca, _)| ca.cert_pem());
                probe::redis_ping(&r.url, ca, timeout).await
            }
            Engine::Rabbitmq => self.amqp_probe(r, port, timeout).await,
        };
        match result {
            Ok(()) if r.engine == Engine::Rabbitmq => self.rabbitmq_nodes_health(r, timeout).await,
            Ok(()) => Health::Healthy,
            Err(why) => Health::Unhealthy(why),
        }
    }

    async fn stop(&self, r: &ClusterRecord) -> anyhow::Result<()> {
        let dir = self.dir_for(r);
        self.kill_all(&dir).await;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }

    async fn reconcile(&self, records: &[ClusterRecord]) -> anyhow::Result<Vec<String>> {
        let mut adopted = Vec::new();
        for r in records {
            if let Some(pid) = self.running_pid(r) {
                if self.dir_for(r).starts_with(&self.root) {
                    tracing::info!(cluster = %r.name, project = %r.project, engine = %r.engine, pid, "adopted a running cluster");
                }
                adopted.push(r.id.clone());
            }
        }
        // At start nothing is being provisioned here yet: what no record
        // claims is an orphan now.
        for (id, dir) in self.unclaimed(records)? {
            self.stop_orphan(&id, &dir).await;
        }
        Ok(adopted)
    }

    /// At every check: a directory no record claims is stopped only when no
    /// record claimed it at the check before either. A record is written
    /// before its directory is made, so a cluster that is being provisioned
    /// while this runs (its directory newer than `records`) is claimed by
    /// the next check's records and never mistaken for an orphan.
    async fn stop_unclaimed(&self, records: &[ClusterRecord]) -> anyhow::Result<()> {
        let unclaimed = self.unclaimed(records)?;
        let orphans: Vec<(String, PathBuf)> = {
            let mut seen = self
                .unclaimed_before
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let orphans = unclaimed
                .iter()
                .filter(|(_, dir)| seen.contains(dir))
                .cloned()
                .collect();
            *seen = unclaimed.into_iter().map(|(_, dir)| dir).collect();
            orphans
        };
        for (id, dir) in orphans {
            self.stop_orphan(&id, &dir).await;
        }
        Ok(())
    }

    fn ca_certificate(&self) -> Option<String> {
        LocalBrokers::ca_certificate(self)
    }

    fn start_timeout(&self, engine: Engine) -> Duration {
        Duration::from_secs(match engine {
            Engine::Redis => self.config.redis_start_timeout_seconds,
            Engine::Rabbitmq => self.config.rabbitmq_start_timeout_seconds,
        })
    }
}

/// Starts `cmd` in `dir`, in its own process group, output to `dir/output.log`,
/// and records its pid. The child is reaped by a task of its own.
fn spawn(
    mut cmd: tokio::process::Command,
    dir: &Path,
    pid_file: &str,
    what: &str,
    fix: &str,
) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join("output.log"))?;
    cmd.current_dir(dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {what}: {fix}"))?;
    let pid = child.id().context("the broker exited at once")?;
    std::fs::write(dir.join(pid_file), pid.to_string())?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(())
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Alive (not a zombie) and working inside `dir`: a pid reused by another
/// program does not pass.
fn alive_in(pid: i32, dir: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|cwd| cwd.starts_with(dir))
        .unwrap_or(false)
}

/// Every live process whose working directory is inside `dir`.
fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive_in(*pid, dir))
        .collect()
}

fn management_plugin_installed(server: &Path) -> bool {
    // <prefix>/bin/rabbitmq-server -> <prefix>/lib/rabbitmq_server-*/plugins/rabbitmq_management-*
    let Some(prefix) = server.parent().and_then(Path::parent) else {
        return false;
    };
    let Ok(libs) = std::fs::read_dir(prefix.join("lib")) else {
        return false;
    };
    libs.flatten().any(|lib| {
        std::fs::read_dir(lib.path().join("plugins"))
            .map(|ps| {
                ps.flatten().any(|p| {
                    p.file_name()
                        .to_string_lossy()
                        .starts_with("rabbitmq_management-")
                })
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_management_plugin_of_debians_rabbitmq() {
        let server = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
        assert_eq!(management_plugin_installed(server), server.exists());
        assert!(!management_plugin_installed(Path::new(
            "/nonexistent/bin/rabbitmq-server"
        )));
    }

    #[test]
    fn a_process_counts_only_inside_its_directory() {
        let me = std::process::id() as i32;
        let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert!(alive_in(me, &cwd));
        assert!(!alive_in(me, Path::new("/nonexistent")));
        assert!(!alive_in(i32::MAX, &cwd));
    }

    /// A directory made after the check read its records (a cluster being
    /// provisioned) must survive that check; one still unclaimed at the
    /// next check is an orphan, and goes.
    #[tokio::test]
    async fn a_cluster_directory_goes_only_when_two_checks_find_it_unclaimed() {
        let state = tempfile::tempdir().unwrap();
        let config = LocalConfig {
            tls: false,
            ..Default::default()
        };
        let brokers = LocalBrokers::new(config, state.path().join("clusters")).unwrap();
        let dir = brokers.dir_of("redis-new");
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::fs::write(dir.join(PID_FILE), pid.to_string()).unwrap();

        brokers.stop_unclaimed(&[]).await.unwrap();
        assert!(
            alive_in(pid, &dir),
            "stopped at the first check that missed its record"
        );
        assert!(dir.exists());

        brokers.stop_unclaimed(&[]).await.unwrap();
        let _ = child.wait();
        assert!(!dir.exists(), "an orphan outlived two checks");
        assert!(!alive_in(pid, &dir));
    }
}

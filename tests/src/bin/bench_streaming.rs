//! Benchmark of the Streaming API: provision-to-healthy time of Redis and
//! RabbitMQ clusters through the real `s3m` (POST provision_cluster, then
//! GET cluster/{name} every `--poll-ms` (5) until `healthy`), beside the bare server's
//! own start time measured in the same run (spawn `redis-server` /
//! `rabbitmq-server` by hand with the same kind of configuration, then poll
//! until a client logs in).
//!
//! Run: `cargo run --release -p s3m-tests --bin bench_streaming -- [--redis-runs 10] [--rabbitmq-runs 3] [--rabbitmq-2-node-runs 2]`
//! (after `scripts/test`, or `cargo build --release -p s3m` and
//! `cargo build --target wasm32-wasip2 --release -p streaming`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use s3m_tests::streaming::{self as st, Api, BrokerReaper};
use s3m_tests::{AppOptions, TestApp};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10)]
    redis_runs: usize,
    #[arg(long, default_value_t = 3)]
    rabbitmq_runs: usize,
    /// How often GET cluster/{name} polls through s3m, in ms (each poll is a
    /// request the host serves, on the cores the broker boots on).
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Serve the brokers in plain text (`[streaming] tls = false`), as the
    /// bare servers are, to compare like with like.
    #[arg(long)]
    plain_brokers: bool,
    /// Runs of a 2-node RabbitMQ cluster.
    #[arg(long, default_value_t = 2)]
    rabbitmq_2_node_runs: usize,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // The whole process group: rabbitmq-server is a script with beam below it.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_group(cmd: &mut Command) -> Result<Killed> {
    use std::os::unix::process::CommandExt;
    Ok(Killed(
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

/// A bare redis-server with a password: spawn to first authenticated PONG.
async fn bare_redis(dir: &Path) -> Result<f64> {
    let port = s3m_tests::free_port();
    let t = Instant::now();
    let _server = spawn_group(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                "benchpassword",
                "--save",
                "",
            ])
            .current_dir(dir),
    )?;
    let url = format!("redis://:benchpassword@127.0.0.1:{port}");
    loop {
        if let Ok(client) = redis::Client::open(url.as_str()) {
            if let Ok(mut con) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut con)
                    .await
                    .is_ok()
                {
                    return Ok(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("bare redis-server did not answer in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A bare RabbitMQ of `nodes` nodes (management plugin on and one Erlang
/// scheduler each, as the local provider runs a cluster of the default
/// `cpus = 1`; plain AMQP): node 0 from spawn to its first AMQP login, then
/// each further node, started with node 0 as its classic-config peer as the
/// provider does, until it accepts a login too.
async fn bare_rabbitmq(dir: &Path, nodes: usize) -> Result<f64> {
    for d in ["home", "mnesia", "log"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("home/.erlang.cookie"), "BENCHCOOKIEBENCHCOOKIE")?;
    std::fs::set_permissions(
        dir.join("home/.erlang.cookie"),
        std::os::unix::fs::PermissionsExt::from_mode(0o400),
    )?;
    std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].")?;
    let t = Instant::now();
    let mut servers = Vec::new();
    let mut first = String::new();
    for i in 0..nodes.max(1) {
        let (port, dist, mgmt) = (
            s3m_tests::free_port(),
            s3m_tests::free_port(),
            s3m_tests::free_port(),
        );
        let name = format!("bench-{port}@localhost");
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\ndefault_user = bench\ndefault_pass = benchpassword\n\
             management.tcp.port = {mgmt}\nmanagement.tcp.ip = 127.0.0.1\n"
        );
        if i == 0 {
            first = name.clone();
        } else {
            conf.push_str(&format!(
                "cluster_formation.peer_discovery_backend = classic_config\ncluster_formation.classic_config.nodes.1 = {first}\n"
            ));
        }
        let conf_file = dir.join(format!("rabbitmq-{i}.conf"));
        std::fs::write(&conf_file, conf)?;
        servers.push(spawn_group(
            Command::new(st::RABBITMQ_SERVER)
                .current_dir(dir)
                .env("HOME", dir.join("home"))
                .env("LANG", "C.UTF-8")
                .env("RABBITMQ_NODENAME", &name)
                .env("RABBITMQ_NODE_PORT", port.to_string())
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", dir.join("log"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
                .env("RABBITMQ_CONFIG_FILE", &conf_file)
                // The provider gives a cluster `cpus` Erlang schedulers (default 1).
                .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "+S 1:1"),
        )?);
        let url = format!("amqp://bench:benchpassword@127.0.0.1:{port}/%2f");
        loop {
            if st::port_open(port) {
                if let Ok(conn) =
                    lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
                {
                    let _ = conn.close(200, "bye".into()).await;
                    break;
                }
            }
            if t.elapsed() > Duration::from_secs(240) {
                bail!("bare rabbitmq node {i} did not accept a login in 240 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Through s3m: POST provision_cluster to `healthy` in GET cluster/{name}.
async fn through_s3m(
    api: &Api,
    engine: &str,
    name: &str,
    nodes: u32,
    poll: Duration,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let settings = if nodes > 1 {
        json!({"nodes": nodes})
    } else {
        json!({})
    };
    let (status, body) = api
        .provision(
            engine,
            &json!({"kind": "general", "name": name, "resourceSettings": settings}),
        )
        .await?;
    if status != 200 {
        bail!("provision {engine}: HTTP {status} {body}");
    }
    let answered = t.elapsed().as_secs_f64() * 1000.0;
    loop {
        let (_, body) = api.get_cluster(engine, name).await?;
        let health = &body["cluster"]["healthStatus"];
        if health == "healthy" {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let url = body["cluster"]["amqpsUrl"]
                .as_str()
                .or(body["cluster"]["url"].as_str())
                .unwrap_or_default()
                .to_string();
            api.delete(engine, name).await?;
            // The next start, through s3m or bare, must not share the cores
            // with this broker's shutdown.
            if let Ok(port) = st::url_port(&url) {
                let gone = Instant::now();
                while st::port_open(port) && gone.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok((answered, ms));
        }
        if body["cluster"]["syncStatus"] == "failed" {
            bail!("{engine} cluster {name} failed");
        }
        tokio::time::sleep(poll).await;
    }
}

fn stats(xs: &[f64]) -> String {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = v[v.len() / 2];
    format!(
        "median {median:8.1} ms  min {:8.1}  max {:8.1}  (n={})",
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    st::require_servers(args.rabbitmq_runs + args.rabbitmq_2_node_runs > 0)?;
    let app = TestApp::start(AppOptions::only(&["streaming"]).with_facility(st::facility(
        if args.plain_brokers {
            "tls = false"
        } else {
            ""
        },
    )))?;
    let _reaper = BrokerReaper::new(&app.state_dir);
    let api = Api::of(&app, &app.token(&["data-streaming"], "BENCH01")?);
    let scratch = tempfile::tempdir()?;

    let poll = Duration::from_millis(args.poll_ms.max(1));
    let mut rows = Vec::new();
    if args.redis_runs > 0 {
        let (mut answer, mut healthy, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..args.redis_runs {
            let (a, h) = through_s3m(&api, "redis", &format!("bench-{i}"), 1, poll).await?;
            answer.push(a);
            healthy.push(h);
            let dir = scratch.path().join(format!("redis-{i}"));
            std::fs::create_dir_all(&dir)?;
            bare.push(bare_redis(&dir).await.context("bare redis")?);
        }
        rows.push(("redis: provision answered", answer));
        rows.push(("redis: provision to healthy", healthy));
        rows.push(("redis: bare redis-server start", bare));
    }
    for (nodes, runs) in [(1u32, args.rabbitmq_runs), (2, args.rabbitmq_2_node_runs)] {
        if runs == 0 {
            continue;
        }
        let (mut answer, mut healthy, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        // Which of the two starts first alternates from run to run, so that
        // neither always follows the other's teardown.
        for i in 0..runs {
            for s3m_turn in [i % 2 == 0, i % 2 != 0] {
                if s3m_turn {
                    let (a, h) = through_s3m(
                        &api,
                        "rabbitmq",
                        &format!("bench-{nodes}n-{i}"),
                        nodes,
                        poll,
                    )
                    .await?;
                    answer.push(a);
                    healthy.push(h);
                } else {
                    let dir = scratch.path().join(format!("rabbit-{nodes}n-{i}"));
                    std::fs::create_dir_all(&dir)?;
                    bare.push(
                        bare_rabbitmq(&dir, nodes as usize)
                            .await
                            .context("bare rabbitmq")?,
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let label = |what: &str| -> &'static str {
            Box::leak(format!("rabbitmq {nodes} node(s): {what}").into_boxed_str())
        };
        rows.push((label("provision answered"), answer));
        rows.push((
            label(if args.plain_brokers {
                "provision to healthy (plain)"
            } else {
                "provision to healthy (TLS)"
            }),
            healthy,
        ));
        rows.push((label("bare server(s), plain AMQP"), bare));
    }
    println!(
        "Streaming: provision-to-healthy through s3m vs the bare server (same machine, same run)"
    );
    for (label, xs) in rows {
        println!("  {label:48} {}", stats(&xs));
    }
    Ok(())
}

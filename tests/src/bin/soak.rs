//! Soak: the whole application under mixed load for a long time (10 minutes
//! by default), sampling the host's resident memory and open file
//! descriptors. Both must stay flat, and no request may get a 5xx.
//!
//! The mix, all at once: status, token introspection, environment, the
//! compute job list, a job submitted to the sandboxed local scheduler every
//! 250 ms, streaming lists, and hostile requests (forged and missing tokens,
//! another project's job, unknown paths, bad bodies).
//!
//! Run: `cargo run --release -p s3m-tests --bin soak -- [--seconds 600] [--window 30]`
//! (after `scripts/test`; as root, since the local scheduler's sandbox runs
//! jobs as the project's Unix user).

use anyhow::{bail, Result};
use clap::Parser;
use s3m_tests::{load, slurm, AppOptions, TestApp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Total seconds of load.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 30)]
    window: u64,
}

fn sample(pid: u32) -> (u64, usize) {
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kib, fds)
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    slurm::ensure_project_user("SOAK01")?;
    let work = tempfile::Builder::new().prefix("s3m-soak-").tempdir()?;
    let facility = format!(
        "[[resources]]\nname = \"basalt\"\ndescription = \"soak\"\n[resources.compute]\n\
         scheduler = \"local\"\nslots = 2\ndefault_working_directory = \"{}\"\n\
         [[resources]]\nname = \"tape\"\ndescription = \"no compute\"\n",
        work.path().display()
    );
    let mut opts = AppOptions::default().with_facility(facility);
    // Debug: the host logs why it ends a connection (never headers).
    opts.env.push(("S3M_LOG".into(), "s3m=debug,warn".into()));
    let app = TestApp::start(opts)?;
    let token = app.token(&["compute-ace", "data-streaming"], "SOAK01")?;
    let other = app.token(&["compute-ace"], "OTHER02")?;
    let pid = app.pid();
    let base = app.base_url.clone();
    let total = Duration::from_secs(args.seconds);
    let window = Duration::from_secs(args.window.max(1));
    let started = Instant::now();
    let five_xx = Arc::new(AtomicU64::new(0));
    let submitted = Arc::new(AtomicU64::new(0));

    // Jobs: one every 250 ms, each a short script.
    let submitter = {
        let (client, url, token, five_xx, submitted) = (
            app.client().clone(),
            app.url("/slurm/open/v0.0.43/basalt/job/submit"),
            token.clone(),
            five_xx.clone(),
            submitted.clone(),
        );
        tokio::spawn(async move {
            while started.elapsed() < total {
                let res = client
                    .post(&url)
                    .header("Authorization", &token)
                    .json(&serde_json::json!({"job": {"script": "#!/bin/bash\necho soak\n"}}))
                    .send()
                    .await;
                match res {
                    Ok(r) if r.status().is_server_error() => {
                        five_xx.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status().is_success() => {
                        submitted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    // Hostile requests: each must be a 4xx.
    let hostile = {
        let (client, base, token, other, five_xx) = (
            app.client().clone(),
            base.clone(),
            token.clone(),
            other.clone(),
            five_xx.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            let forged = format!("{}x", &token[..token.len() - 1]);
            while started.elapsed() < total {
                let (method, path, auth, body): (&str, String, Option<&str>, Option<&str>) =
                    match n % 6 {
                        0 => (
                            "GET",
                            "/olcf/v1/token/ctls/introspect".into(),
                            Some(forged.as_str()),
                            None,
                        ),
                        1 => ("GET", "/slurm/open/v0.0.43/basalt/jobs".into(), None, None),
                        2 => (
                            "GET",
                            "/slurm/open/v0.0.43/basalt/job/1".into(),
                            Some(other.as_str()),
                            None,
                        ),
                        3 => (
                            "GET",
                            format!("/no/such/path/{n}"),
                            Some(token.as_str()),
                            None,
                        ),
                        4 => (
                            "POST",
                            "/slurm/open/v0.0.43/basalt/job/submit".into(),
                            Some(token.as_str()),
                            Some("{not json"),
                        ),
                        _ => (
                            "POST",
                            "/olcf/open/v1alpha/streaming/redis/provision_cluster".into(),
                            Some(token.as_str()),
                            Some("{\"kind\":\"general\",\"name\":\"Bad_Name\"}"),
                        ),
                    };
                let mut req = client.request(method.parse().unwrap(), format!("{base}{path}"));
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                if let Some(b) = body {
                    req = req
                        .header("content-type", "application/json")
                        .body(b.to_string());
                }
                if let Ok(r) = req.send().await {
                    if r.status().is_server_error() {
                        five_xx.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    let (rss0, fds0) = sample(pid);
    println!(
        "soak: {} s, samples every {} s; s3m pid {pid}",
        args.seconds,
        window.as_secs()
    );
    println!(
        "{:>6}  {:>10}  {:>5}  {:>9}  {:>6}",
        "t (s)", "RSS (MiB)", "fds", "req/s", "non-2xx"
    );
    println!("{:>6}  {:>10.1}  {:>5}", 0, rss0 as f64 / 1024.0, fds0);
    let mut samples = vec![(rss0, fds0)];
    let mut non_2xx_total = 0;
    let mut broken = 0u64;
    while started.elapsed() < total {
        let d = window.min(total.saturating_sub(started.elapsed()));
        let auth = [("authorization", token.as_str())];
        let (status, introspect, environment, jobs, streams) = tokio::join!(
            load::run(&base, "/olcf/v1alpha/status", &[], 4, d),
            load::run(&base, "/olcf/v1/token/ctls/introspect", &auth, 4, d),
            load::run(&base, "/olcf/v1alpha/environment/basalt", &auth, 2, d),
            load::run(&base, "/slurm/open/v0.0.43/basalt/jobs", &auth, 2, d),
            load::run(
                &base,
                "/olcf/open/v1alpha/streaming/redis/list_clusters",
                &auth,
                2,
                d
            ),
        );
        let mut reports = Vec::new();
        for (name, r) in [
            ("status", status),
            ("introspect", introspect),
            ("environment", environment),
            ("jobs", jobs),
            ("streams", streams),
        ] {
            match r {
                Ok(r) => reports.push(r),
                Err(e) => {
                    // A connection the host ended under a request: say what
                    // the host's log says of its connections, and go on.
                    broken += 1;
                    println!("load on {name} failed: {e:#}");
                    let log = app.stderr();
                    for line in log
                        .lines()
                        .filter(|l| l.contains("connection") || l.contains("while sending"))
                        .rev()
                        .take(5)
                    {
                        println!("  host log: {line}");
                    }
                }
            }
        }
        let rate: f64 = reports.iter().map(|r| r.per_second()).sum();
        let non_2xx: u64 = reports.iter().map(|r| r.errors).sum();
        non_2xx_total += non_2xx;
        let (rss, fds) = sample(pid);
        samples.push((rss, fds));
        println!(
            "{:>6}  {:>10.1}  {:>5}  {:>9.0}  {:>6}",
            started.elapsed().as_secs(),
            rss as f64 / 1024.0,
            fds,
            rate,
            non_2xx
        );
    }
    submitter.await?;
    let hostile_sent = hostile.await?;
    let five = five_xx.load(Ordering::Relaxed);
    // Flat: the second half's peak within 20% (or 8 MiB) of the first half's.
    let half = samples.len() / 2;
    let peak = |s: &[(u64, usize)]| s.iter().map(|x| x.0).max().unwrap_or(0);
    let (first, second) = (peak(&samples[1..half.max(2)]), peak(&samples[half..]));
    let fd_first = samples[1].1;
    let fd_last = samples.last().unwrap().1;
    println!(
        "RSS peak first half {:.1} MiB, second half {:.1} MiB; fds {fd_first} -> {fd_last}; \
         jobs submitted {}; hostile requests {hostile_sent}; 5xx {five}; non-2xx on good paths {non_2xx_total}; \
         load runs broken by a closed connection {broken}",
        first as f64 / 1024.0,
        second as f64 / 1024.0,
        submitted.load(Ordering::Relaxed)
    );
    let mut bad = Vec::new();
    if second > first + (first / 5).max(8 * 1024) {
        bad.push("resident memory grew");
    }
    if fd_last > fd_first + 16 {
        bad.push("file descriptors grew");
    }
    if five > 0 || non_2xx_total > 0 || broken > 0 {
        bad.push("requests failed");
    }
    if !bad.is_empty() {
        bail!("soak failed: {}", bad.join(", "));
    }
    println!("soak: flat, no errors");
    Ok(())
}

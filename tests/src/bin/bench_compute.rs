//! Benchmark of compute: job submit throughput through s3m beside direct
//! submits to the same slurmrestd in the same run (the ratio is what s3m's
//! token check, validation, wasm and the scheduler capability cost), then
//! the latency of `GET /jobs` through s3m and of the same list straight from
//! slurmrestd, on a real single-node Slurm started here; the same submit
//! and list figures for the embedded local scheduler.
//!
//! Every turn starts on an idle scheduler: the bench waits until the jobs of
//! the turn before have run (slurmd starting them shares the 2 cores with
//! whichever way goes next). The submit ratio is the median of the rounds'
//! ratios, beside the ratio of the totals, which one of Slurm's stalls moves.
//!
//! Run: `cargo run --release -p s3m-tests --bin bench_compute -- [--jobs 200] [--concurrency 8] [--seconds 5]`
//! (needs root, slurm-wlm, slurmrestd and munge, like the tests; and the
//! built `s3m` and compute.wasm).

use anyhow::{bail, Context, Result};
use clap::Parser;
use s3m_tests::{load, slurm, AppOptions, TestApp};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Jobs submitted per way (through s3m, direct).
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of GET /jobs load per target.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections of the GET /jobs load.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Slurm's submits and lists alternate between s3m and direct in this
    /// many rounds (each takes `jobs / rounds` submits and `seconds / rounds`
    /// of list load per way, and the two ways swap order every round), so
    /// that neither way always meets the fuller queue.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

/// Adds one round's load report to the total of its way.
fn merge(total: &mut Option<load::LoadReport>, round: load::LoadReport) -> Result<()> {
    match total {
        None => *total = Some(round),
        Some(t) => {
            t.requests += round.requests;
            t.errors += round.errors;
            t.elapsed += round.elapsed;
            t.latency.add(&round.latency)?;
        }
    }
    Ok(())
}

/// The median of sorted, non-empty `values`.
fn median(values: &[f64]) -> f64 {
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// "p50 … ms  p99 … ms" of latencies in microseconds, read from the same
/// HDR histogram as the load generator's reports.
fn percentiles(latencies: &[u64]) -> String {
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .expect("valid histogram bounds");
    for &us in latencies {
        hist.saturating_record(us.max(1));
    }
    if hist.is_empty() {
        return "no successful submit".into();
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.2} ms  p99 {:.2} ms", ms(0.5), ms(0.99))
}

const PROJECT: &str = "BEN001";

fn facility(compute: &str) -> String {
    format!("[[resources]]\nname = \"cedar\"\n[resources.compute]\n{compute}\n")
}

/// Sends `n` POSTs with `concurrency` in flight; returns (seconds,
/// failures, each submit's latency in microseconds).
async fn submit_many(
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync>,
) -> Result<(f64, usize, Vec<u64>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let sent = Instant::now();
                match make().send().await {
                    Ok(res) => {
                        let ok = res.status().is_success();
                        let body: Value = res.json().await.unwrap_or(Value::Null);
                        match body["job_id"].as_u64() {
                            Some(_)
                                if ok && body["errors"].as_array().is_none_or(|e| e.is_empty()) =>
                            {
                                latencies.push(sent.elapsed().as_micros() as u64)
                            }
                            _ => {
                                if failed == 0 {
                                    eprintln!("submit failed: {body}");
                                }
                                failed += 1
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("submit failed: {e}");
                        failed += 1
                    }
                }
            }
            (failed, latencies)
        }));
    }
    let (mut failed, mut latencies) = (0, Vec::new());
    for t in tasks {
        let (f, l) = t.await?;
        failed += f;
        latencies.extend(l);
    }
    Ok((start.elapsed().as_secs_f64(), failed, latencies))
}

/// Asks `left` every 250 ms how many of the bench's jobs are still queued or
/// running, until none is; fails after 10 minutes, naming `scheduler`.
/// Returns the seconds waited.
async fn wait_until_run<F, Fut>(scheduler: &str, mut left: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let start = Instant::now();
    loop {
        let left = left().await?;
        if left == 0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{scheduler} still has {left} of the bench's jobs queued or running after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until Slurm has run every job the bench submitted (`squeue` shows
/// none pending, running or completing on the bench's cluster), so that the
/// next turn does not share the 2 cores with slurmd starting the last turn's
/// jobs: that work landed on whichever way went next, and moved `GET /jobs`
/// ratios from 1.06 to 1.53 between runs. Returns the seconds waited.
async fn wait_for_idle(cluster: &slurm::SlurmCluster) -> Result<f64> {
    wait_until_run("Slurm (is slurmd up? scontrol show node)", || async {
        let out = cluster
            .command("squeue")
            .args([
                "-h",
                "-t",
                "PENDING,RUNNING,COMPLETING,CONFIGURING",
                "-o",
                "%i",
            ])
            .output()
            .context("running squeue (from slurm-wlm; scripts/test installs it)")?;
        if !out.status.success() {
            bail!(
                "squeue failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count())
    })
    .await
}

/// Waits until the local scheduler has run every job the bench submitted
/// (as [`wait_for_idle`] does for Slurm: its sandboxed jobs otherwise share
/// the cores with the list load). Returns the seconds waited.
async fn wait_for_local_idle(client: &reqwest::Client, url: &str, token: &str) -> Result<f64> {
    wait_until_run("the local scheduler", || async {
        let listed: Value = client
            .get(url)
            .header("Authorization", token)
            .send()
            .await?
            .error_for_status()
            .context("GET /jobs of the local scheduler, waiting for its jobs to run")?
            .json()
            .await?;
        Ok(listed["jobs"]
            .as_array()
            .context("GET /jobs answered no jobs array")?
            .iter()
            .filter(|job| {
                job["job_state"].as_array().is_some_and(|states| {
                    states.iter().any(|s| {
                        matches!(
                            s.as_str(),
                            Some("PENDING" | "RUNNING" | "COMPLETING" | "CONFIGURING")
                        )
                    })
                })
            })
            .count())
    })
    .await
}

fn job_body() -> Value {
    json!({"job": {"name": "bench", "script": "#!/bin/bash\ntrue\n", "standard_output": "/dev/null"}})
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    let cluster = slurm::shared();
    let user = slurm::ensure_project_user(PROJECT)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;

    println!(
        "compute benchmark: {} jobs per way, {} in flight; GET /jobs {} s at {} connections",
        args.jobs, args.concurrency, args.seconds, args.connections
    );

    // --- Slurm: through s3m, and straight to slurmrestd ---
    let app = TestApp::start(
        AppOptions::only(&["compute"])
            .with_facility(facility(&cluster.compute_config(&cluster.restd_url))),
    )?;
    let token = app.token(&["compute-ace"], PROJECT)?;
    let submit_url = app.url("/slurm/open/v0.0.43/cedar/job/submit");

    // Warm-up: first requests pay for instantiation and connections.
    let (_, failed, _) = submit_many(args.concurrency, args.concurrency, {
        let (c, u, t) = (client.clone(), submit_url.clone(), token.clone());
        Arc::new(move || c.post(&u).header("Authorization", &t).json(&job_body()))
    })
    .await?;
    if failed > 0 {
        bail!("warm-up submits through s3m failed; see above");
    }

    let direct_url = format!(
        "{}/slurm/{}/job/submit",
        cluster.restd_url,
        slurm::OPENAPI.trim_start_matches("openapi/")
    );
    let direct_body = json!({
        "job": {"name": "bench", "account": PROJECT.to_lowercase(), "current_working_directory": cluster.work_dir,
                "environment": {"PATH": "/usr/bin:/bin"}, "standard_output": "/dev/null"},
        "script": "#!/bin/bash\ntrue\n"
    });
    let slurm_token = cluster.token(&user, 3600)?;
    let through_s3m: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync> = {
        let (c, u, t) = (client.clone(), submit_url.clone(), token.clone());
        Arc::new(move || c.post(&u).header("Authorization", &t).json(&job_body()))
    };
    let direct: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync> = {
        let (c, u, t, b, user) = (
            client.clone(),
            direct_url.clone(),
            slurm_token.clone(),
            direct_body.clone(),
            user.clone(),
        );
        Arc::new(move || {
            c.post(&u)
                .header("X-SLURM-USER-NAME", &user)
                .header("X-SLURM-USER-TOKEN", &t)
                .json(&b)
        })
    };
    let rounds = args.rounds.max(1);
    let per_round = (args.jobs / rounds).max(1);
    let (mut s3m_secs, mut s3m_failed, mut direct_secs, mut direct_failed) = (0.0, 0, 0.0, 0);
    // The s3m process's CPU time over its submit turns (clock ticks): what
    // s3m adds per job, whatever Slurm's own pace in this run.
    let mut s3m_submit_ticks = 0u64;
    let (mut s3m_latencies, mut direct_latencies) = (Vec::new(), Vec::new());
    // Seconds spent waiting for Slurm to run the jobs of the turn before.
    let mut idle_secs = 0.0;
    // Each round's s3m/direct submit-rate ratio: one stall of Slurm's moves
    // a round, and the median of the rounds is what it cannot move.
    let mut round_ratios = Vec::new();
    for round in 0..rounds {
        let (mut s3m_round, mut direct_round) = (0.0, 0.0);
        for s3m_turn in [round % 2 == 0, round % 2 != 0] {
            let make = if s3m_turn { &through_s3m } else { &direct };
            idle_secs += wait_for_idle(cluster).await?;
            let (user0, sys0, _) = load::proc_stat(app.pid())?;
            let (secs, failed, latencies) =
                submit_many(per_round, args.concurrency, make.clone()).await?;
            if s3m_turn {
                let (user1, sys1, _) = load::proc_stat(app.pid())?;
                s3m_submit_ticks += (user1 + sys1) - (user0 + sys0);
                (s3m_secs, s3m_failed) = (s3m_secs + secs, s3m_failed + failed);
                s3m_round = secs;
                s3m_latencies.extend(latencies);
            } else {
                (direct_secs, direct_failed) = (direct_secs + secs, direct_failed + failed);
                direct_round = secs;
                direct_latencies.extend(latencies);
            }
        }
        // Same number of jobs each way: the rate ratio is the inverse time ratio.
        round_ratios.push(direct_round / s3m_round);
    }
    let jobs = per_round * rounds;
    let s3m_rate = jobs as f64 / s3m_secs;
    let direct_rate = jobs as f64 / direct_secs;
    println!("slurm submit through s3m        {s3m_rate:>8.1} jobs/s  ({jobs} jobs in {s3m_secs:.2} s, {s3m_failed} failed; {rounds} rounds alternating with direct)  {}", percentiles(&s3m_latencies));
    println!("slurm submit direct slurmrestd  {direct_rate:>8.1} jobs/s  ({jobs} jobs in {direct_secs:.2} s, {direct_failed} failed)  {}", percentiles(&direct_latencies));
    round_ratios.sort_by(f64::total_cmp);
    println!(
        "ratio s3m / direct              {:>8.2}  (goal >= 0.9; median of {rounds} rounds' ratios, lowest {:.2}, highest {:.2}; of the totals {:.2})",
        median(&round_ratios),
        round_ratios[0],
        round_ratios[round_ratios.len() - 1],
        s3m_rate / direct_rate
    );
    println!(
        "submit s3m CPU per job           {:>8.2} ms  (the s3m process, user + system, over {jobs} jobs; Slurm's pace moves the ratio above, not this)",
        s3m_submit_ticks as f64 * 1000.0 / load::clock_ticks_per_second() / jobs as f64
    );

    idle_secs += wait_for_idle(cluster).await?;
    println!(
        "waited for Slurm to run the submitted jobs  {idle_secs:.1} s  (before each submit turn and before the lists)"
    );
    let listed: Value = client
        .get(app.url("/slurm/open/v0.0.43/cedar/jobs"))
        .header("Authorization", &token)
        .send()
        .await?
        .json()
        .await?;
    let count = listed["jobs"]
        .as_array()
        .context("GET /jobs answered no jobs array")?
        .len();
    let list_token = cluster.token(&user, 3600)?;
    let direct_list = format!(
        "/slurm/{}/jobs",
        slurm::OPENAPI.trim_start_matches("openapi/")
    );
    let slice = Duration::from_secs_f64(args.seconds as f64 / rounds as f64);
    let (mut s3m_list, mut direct_list_total) = (None, None);
    // The s3m process's CPU time over its list turns (clock ticks).
    let mut s3m_list_ticks = 0u64;
    for round in 0..rounds {
        for s3m_turn in [round % 2 == 0, round % 2 != 0] {
            if s3m_turn {
                let (user0, sys0, _) = load::proc_stat(app.pid())?;
                let r = load::run(
                    &app.base_url,
                    "/slurm/open/v0.0.43/cedar/jobs",
                    &[("Authorization", &token)],
                    args.connections,
                    slice,
                )
                .await?;
                let (user1, sys1, _) = load::proc_stat(app.pid())?;
                s3m_list_ticks += (user1 + sys1) - (user0 + sys0);
                merge(&mut s3m_list, r)?;
            } else {
                let r = load::run(
                    &cluster.restd_url,
                    &direct_list,
                    &[
                        ("X-SLURM-USER-NAME", &user),
                        ("X-SLURM-USER-TOKEN", &list_token),
                    ],
                    args.connections,
                    slice,
                )
                .await?;
                merge(&mut direct_list_total, r)?;
            }
        }
    }
    let (s3m_list, direct_list_total) = (s3m_list.unwrap(), direct_list_total.unwrap());
    println!(
        "{}",
        s3m_list.line(
            &format!("slurm GET /jobs s3m ({count} jobs)"),
            args.connections
        )
    );
    println!(
        "{}",
        direct_list_total.line("slurm GET /jobs direct", args.connections)
    );
    println!(
        "GET /jobs p50 s3m / direct       {:>8.2}  (goal <= 1.05)",
        s3m_list.ms(0.5) / direct_list_total.ms(0.5)
    );
    let ticks_per_second = load::clock_ticks_per_second();
    println!(
        "GET /jobs s3m CPU per request    {:>8.1} ms  (the s3m process, user + system, over {} requests)",
        s3m_list_ticks as f64 * 1000.0 / ticks_per_second / s3m_list.requests.max(1) as f64,
        s3m_list.requests
    );
    drop(app);

    // --- The embedded local scheduler ---
    let dir = tempfile::tempdir()?;
    let compute = format!(
        "scheduler = \"local\"\nslots = 4\ndefault_working_directory = \"{}\"\n",
        dir.path().display()
    );
    let app = TestApp::start(AppOptions::only(&["compute"]).with_facility(facility(&compute)))?;
    let token = app.token(&["compute-ace"], PROJECT)?;
    let submit_url = app.url("/slurm/open/v0.0.43/cedar/job/submit");
    let make: Arc<dyn Fn() -> reqwest::RequestBuilder + Send + Sync> = {
        let (c, u, t) = (client.clone(), submit_url.clone(), token.clone());
        Arc::new(move || c.post(&u).header("Authorization", &t).json(&job_body()))
    };
    submit_many(args.concurrency, args.concurrency, make.clone()).await?;
    let (secs, failed, latencies) = submit_many(args.jobs, args.concurrency, make).await?;
    println!(
        "local submit through s3m        {:>8.1} jobs/s  ({} jobs in {secs:.2} s, {failed} failed)  {}",
        args.jobs as f64 / secs,
        args.jobs,
        percentiles(&latencies)
    );
    let waited =
        wait_for_local_idle(&client, &app.url("/slurm/open/v0.0.43/cedar/jobs"), &token).await?;
    println!("waited for the local scheduler to run the submitted jobs  {waited:.1} s");
    let (user0, sys0, _) = load::proc_stat(app.pid())?;
    let report = load::run(
        &app.base_url,
        "/slurm/open/v0.0.43/cedar/jobs",
        &[("Authorization", &token)],
        args.connections,
        Duration::from_secs(args.seconds),
    )
    .await?;
    println!(
        "{}",
        report.line(
            &format!(
                "local GET /jobs s3m ({} jobs)",
                args.jobs + args.concurrency
            ),
            args.connections
        )
    );
    let (user1, sys1, _) = load::proc_stat(app.pid())?;
    println!(
        "local GET /jobs s3m CPU per request {:>5.1} ms  (the s3m process, user + system, over {} requests)",
        ((user1 + sys1) - (user0 + sys0)) as f64 * 1000.0 / ticks_per_second / report.requests.max(1) as f64,
        report.requests
    );
    Ok(())
}

//! How fast the engine moves workflows: `--workflows` concurrent workflows
//! (100) of `--tasks` tasks (10) each, a chain where every task depends on
//! the one before, each task a `sleep 0` batch job on the local scheduler
//! (sandboxed as the project's user, as in production).
//!
//! Each task's job prints the time it started and the time it ended
//! (`date +%s%N`, inside the job), so "from one task's end to its
//! dependent's start" is measured where it happens: from the moment a job's
//! command ended to the moment the next job's command began, through the
//! scheduler noticing the end, the engine's pass, the submit, the queue and
//! the sandbox. Also printed: the engine's share (from a job's end to its
//! dependent's node, whose job is submitted in the same pass), how soon
//! the engine finds a new workflow (from the submit's answer to the first
//! task's node, at millisecond resolution), and workflows finished per
//! second. `--alone` workflows (20) run one after another first, then the
//! concurrent ones.
//!
//! Run: `cargo run --release -p s3m-tests --bin bench_workflows -- [--workflows 100] [--tasks 10] [--slots 16] [--alone 20]`

use anyhow::{ensure, Context, Result};
use clap::Parser;
use s3m_tests::{slurm, AppOptions, TestApp};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Workflows submitted at once.
    #[arg(long, default_value_t = 100)]
    workflows: usize,
    /// Tasks per workflow, a chain.
    #[arg(long, default_value_t = 10)]
    tasks: usize,
    /// Jobs the local scheduler runs at once.
    #[arg(long, default_value_t = 16)]
    slots: usize,
    /// Workflows run alone, one after another, before the concurrent ones.
    #[arg(long, default_value_t = 20)]
    alone: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(t: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn chain(tasks: usize) -> Value {
    let mut list = vec![json!({"name": "t0", "template": "zero"})];
    for i in 1..tasks {
        list.push(
            json!({"name": format!("t{i}"), "depends": format!("t{}", i - 1), "template": "zero"}),
        );
    }
    json!({"workflow": {
        "metadata": {"generateName": "bench-"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "zero", "script": {"image": "alpine", "command": ["sh"],
                "source": "s=$(date +%s%N); sleep 0; echo \"$s $(date +%s%N)\""}},
            {"name": "main", "dag": {"tasks": list}}
        ]}
    }})
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    slurm::ensure_project_user("BEN001")?;
    let app = TestApp::start(AppOptions::only(&["workflows", "compute"]).with_facility(format!(
        "[[resources]]\nname = \"cedar\"\ndescription = \"bench\"\n[resources.compute]\nscheduler = \"local\"\nslots = {}\n",
        args.slots
    )))?;
    let token = app.token(&["workflows", "compute-ace"], "BEN001")?;
    let base = app.url("/api/v1/workflows/ben001");
    let body = chain(args.tasks);

    // Workflows alone first, one at a time: the path without queueing.
    let mut runs = Vec::new();
    let mut alone = Vec::new();
    let started = Instant::now();
    for _ in 0..args.alone {
        alone.extend(run(&app, &token, &base, &body, 1).await?);
    }
    runs.push(("1 workflow alone", args.alone, started.elapsed(), alone));
    let started = Instant::now();
    let concurrent = run(&app, &token, &base, &body, args.workflows).await?;
    runs.push(("concurrent", args.workflows, started.elapsed(), concurrent));

    println!("workflows: {} concurrent chains of {} `sleep 0` jobs, local scheduler, {} slots, sandboxed jobs", args.workflows, args.tasks, args.slots);
    println!("| run | workflows | submit answered -> first node made p50 | p99 | task end -> dependent start p50 | p99 | end -> dependent node made p50 | p99 | finished/s | wall |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, count, elapsed, done) in runs {
        let mut e2e = Vec::new();
        let mut engine = Vec::new();
        let mut first = Vec::new();
        for (answered_ms, v) in &done {
            let nodes = v["status"]["nodes"].as_object().context("nodes")?;
            let by_name = |t: &str| nodes.values().find(|n| n["displayName"] == t);
            // The engine finding a new workflow: from the submit's answer
            // to the first task's node (its job is submitted in that pass).
            if let Some(s) = by_name("t0").and_then(|n| ms(&n["startedAt"])) {
                first.push((s - answered_ms) as f64);
            }
            for i in 1..args.tasks {
                let (Some(prev), Some(next)) =
                    (by_name(&format!("t{}", i - 1)), by_name(&format!("t{i}")))
                else {
                    continue;
                };
                let times = |n: &Value| -> Option<(i64, i64)> {
                    let r = n["outputs"]["result"].as_str()?;
                    let mut it = r.split_whitespace().map(|x| x.parse::<i64>().ok());
                    Some((it.next()??, it.next()??))
                };
                if let (Some((_, prev_end)), Some((next_start, _))) = (times(prev), times(next)) {
                    e2e.push((next_start - prev_end) as f64 / 1e6);
                    // The engine's share: until the dependent's node exists
                    // (its job is submitted in the same pass).
                    if let Some(s) = ms(&next["startedAt"]) {
                        engine.push(s as f64 - prev_end as f64 / 1e6);
                    }
                }
            }
        }
        e2e.sort_by(|a, b| a.partial_cmp(b).unwrap());
        engine.sort_by(|a, b| a.partial_cmp(b).unwrap());
        first.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "| {label} | {count} | {:.0} ms | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} | {:.1} s |",
            percentile(&first, 0.5),
            percentile(&first, 0.99),
            percentile(&e2e, 0.5),
            percentile(&e2e, 0.99),
            percentile(&engine, 0.5),
            percentile(&engine, 0.99),
            count as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// Submits `count` workflows at once and waits until all have succeeded:
/// each one's final answer, beside the time (Unix ms) its submit was
/// answered.
async fn run(
    app: &TestApp,
    token: &str,
    base: &str,
    body: &Value,
    count: usize,
) -> Result<Vec<(i64, Value)>> {
    let mut names = Vec::new();
    for _ in 0..count {
        let res = app
            .client()
            .post(base)
            .header("authorization", token)
            .json(body)
            .send()
            .await?;
        ensure!(res.status().is_success(), "submit: {}", res.text().await?);
        let answered = chrono::Utc::now().timestamp_millis();
        let v: Value = res.json().await?;
        let name = v["metadata"]["name"].as_str().context("name")?;
        names.push((name.to_string(), answered));
    }
    let mut done: Vec<(String, i64, Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1200);
    while done.len() < names.len() {
        ensure!(
            Instant::now() < deadline,
            "workflows did not finish within 20 minutes"
        );
        for (n, answered) in &names {
            if done.iter().any(|(d, _, _)| d == n) {
                continue;
            }
            let v: Value = app
                .client()
                .get(format!("{base}/{n}"))
                .header("authorization", token)
                .send()
                .await?
                .json()
                .await?;
            let phase = v["status"]["phase"].as_str().unwrap_or_default();
            if phase == "Succeeded" {
                done.push((n.clone(), *answered, v));
            } else if phase == "Failed" || phase == "Error" {
                anyhow::bail!("workflow {n} {phase}: {}", v["status"]["message"]);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(done.into_iter().map(|(_, a, v)| (a, v)).collect())
}

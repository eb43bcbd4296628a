//! Benchmark of the environment endpoint: requests per second and latency
//! percentiles of `GET /olcf/v1alpha/environment/{resource}` against the
//! real `s3m` binary, for a resource on the real test Slurm cluster (every
//! request asks slurmrestd for the scheduler's version, ping and partitions;
//! Lmod's answer is cached) and one on the local scheduler; plus what one
//! run of Lmod's spider costs on the test module tree (what a request pays
//! when the module cache has expired).
//!
//! Run: `cargo run --release -p s3m-tests --bin bench_environment -- [--connections 16] [--seconds 5]`
//! (needs root, slurm-wlm, slurmrestd, munge and lmod, like the tests).

use anyhow::{bail, Result};
use clap::Parser;
use s3m_tests::{lmod, load, slurm, AppOptions, TestApp};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of load per case.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    let tree = lmod::module_tree()?;

    // One spider run, as the host does it.
    let mut runs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let out = Command::new(lmod::SPIDER)
            .args(["-o", "jsonSoftwarePage"])
            .arg(tree.path())
            .output()?;
        if !out.status.success() {
            bail!("spider failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "Lmod spider on the test tree (4 modulefiles): median {:.1} ms, max {:.1} ms over 20 runs",
        runs[10], runs[19]
    );

    let cluster = slurm::shared();
    let facility = format!(
        "[[resources]]\nname = \"basalt\"\n[resources.compute]\n{}\n[resources.environment]\nmodulepath = [\"{}\"]\n\n\
         [[resources]]\nname = \"granite\"\n[resources.compute]\nscheduler = \"local\"\n[resources.environment]\nmodulepath = [\"{}\"]\n",
        cluster.compute_config(&cluster.restd_url),
        tree.path().display(),
        tree.path().display()
    );
    let app = TestApp::start(AppOptions::only(&["environment"]).with_facility(facility))?;
    let token = app.token(&["data-streaming"], "BEN001")?;
    let headers = [("authorization", token.as_str())];
    let duration = Duration::from_secs(args.seconds);
    for (name, path) in [
        (
            "GET environment (Slurm)",
            "/olcf/v1alpha/environment/basalt",
        ),
        (
            "GET environment (local)",
            "/olcf/v1alpha/environment/granite",
        ),
        ("GET environment (list)", "/olcf/v1alpha/environment"),
    ] {
        load::run(
            &app.base_url,
            path,
            &headers,
            args.connections,
            Duration::from_secs(1),
        )
        .await?;
        let report = load::run(&app.base_url, path, &headers, args.connections, duration).await?;
        println!("{}", report.line(name, args.connections));
        if report.errors > 0 {
            bail!("{name}: {} requests were not 2xx", report.errors);
        }
    }
    Ok(())
}

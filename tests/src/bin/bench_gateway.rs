//! What the adapter path costs: the same requests, in one run, against the
//! components served natively by `s3m up`, and against the composed
//! components (target/composed/) under stock `wasmtime serve`, whose
//! capabilities and key-value go through the adapters to the s3m host's
//! capability gateway. Both sides use the one `s3m up`: the same state, the
//! same token records, the same jobs.
//!
//! - token introspect: one key-value read of the token record (over the
//!   gateway: one HTTP call from the key-value adapter);
//! - compute GET /jobs on the local scheduler with `--jobs` jobs: one
//!   key-value read and one scheduler call (over the gateway: two calls).
//!
//! Run: `cargo run --release -p s3m-tests --bin bench_gateway -- [--connections 16] [--seconds 5] [--jobs 20]`
//! after `scripts/test` (or `s3m build --compose` and the wasmtime CLI of
//! scripts/test under target/tools).

use anyhow::{Context, Result};
use clap::Parser;
use s3m_tests::{load, serving, slurm, AppOptions, TestApp};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of load per case.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Jobs of the project in the list GET /jobs returns.
    #[arg(long, default_value_t = 20)]
    jobs: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    slurm::ensure_project_user("BEN001")?;
    let app = TestApp::start(
        AppOptions::only(&["tokens", "compute"]).with_facility(
            "[[resources]]\nname = \"cedar\"\ndescription = \"bench\"\n[resources.compute]\nscheduler = \"local\"\nslots = 4\n",
        ),
    )?;
    let token = app.token(&["compute-ace"], "BEN001")?;
    for _ in 0..args.jobs {
        let res = app
            .client()
            .post(app.url("/slurm/open/v0.0.43/cedar/job/submit"))
            .header("authorization", &token)
            .json(&serde_json::json!({"job": {"script": "#!/bin/sh\ntrue\n"}}))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "submit: {}", res.text().await?);
    }
    let frontend = serving::start(
        &app.manifest,
        app.dir.path(),
        &app.gateway_url()?,
        &BTreeMap::new(),
        |id| app.gateway_credential(id),
    )
    .context("starting the composed components under wasmtime serve")?;

    println!(
        "{} connections, {} s per case, {} jobs in the list",
        args.connections, args.seconds, args.jobs
    );
    let duration = Duration::from_secs(args.seconds);
    let auth = [("authorization", token.as_str())];
    let cases = [
        ("introspect", "tokens", "/olcf/v1/token/ctls/introspect"),
        ("GET /jobs", "compute", "/slurm/open/v0.0.43/cedar/jobs"),
    ];
    for (name, component, path) in cases {
        // Straight to the component's own `wasmtime serve`, not through the
        // test router, so that only the host and the adapter path differ.
        for (side, base) in [
            ("s3m up, native", app.base_url.as_str()),
            (
                "wasmtime serve + gateway",
                frontend.backends[component].as_str(),
            ),
        ] {
            load::run(base, path, &auth, args.connections, Duration::from_secs(1)).await?;
            let report = load::run(base, path, &auth, args.connections, duration).await?;
            println!(
                "{}",
                report.line(&format!("{name}: {side}"), args.connections)
            );
            if report.errors > 0 {
                anyhow::bail!("{name} ({side}): {} requests were not 2xx", report.errors);
            }
        }
    }
    Ok(())
}

//! Benchmark of the host and its first endpoints: time to ready, then
//! requests per second and latency percentiles for status and token
//! introspection at 64 concurrent connections, against the real `s3m`
//! binary and components.
//!
//! Run: `cargo run --release -p s3m-tests --bin bench -- [--connections 64] [--seconds 10]`
//! (after `scripts/test` or `cargo build --release -p s3m && target/release/s3m build`).

use anyhow::Result;
use clap::Parser;
use s3m_tests::{load, AppOptions, TestApp};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    let cache = tempfile::tempdir()?;
    let opts = AppOptions {
        env: vec![("S3M_CACHE_DIR".into(), cache.path().display().to_string())],
        components: vec!["tokens".into(), "status".into()],
        ..Default::default()
    };

    // Time to ready: from spawning `s3m up` to its "Serving" line, first with
    // an empty compile cache, then with the cache the first start filled.
    let t = Instant::now();
    let cold = TestApp::start(opts.clone())?;
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(cold);
    let t = Instant::now();
    let app = TestApp::start(opts)?;
    let warm_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "time to ready (spawn to Serving)  cold cache {cold_ms:.0} ms   warm cache {warm_ms:.0} ms"
    );

    let token = app.token(&["compute-ace"], "BEN001")?;
    let duration = Duration::from_secs(args.seconds);
    // (name, path, headers)
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: [Case; 2] = [
        ("GET status", "/olcf/v1alpha/status", vec![]),
        (
            "GET token introspect",
            "/olcf/v1/token/ctls/introspect",
            vec![("authorization", token.as_str())],
        ),
    ];
    for (name, path, headers) in &cases {
        // Warm up connections and the instance pool first.
        load::run(
            &app.base_url,
            path,
            headers,
            args.connections,
            Duration::from_secs(1),
        )
        .await?;
        let report = load::run(&app.base_url, path, headers, args.connections, duration).await?;
        println!("{}", report.line(name, args.connections));
        if report.errors > 0 {
            anyhow::bail!("{name}: {} requests were not 2xx", report.errors);
        }
    }
    Ok(())
}

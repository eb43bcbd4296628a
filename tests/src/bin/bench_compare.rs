//! Request cost, side by side in one run: a native hyper "ok" server (the
//! physical limit of this machine), `wasmtime serve` on the no-op component,
//! stock `spin up` on it when a `spin` binary is on PATH, and `s3m up`
//! answering the same no-op, the status endpoint, token introspection
//! (the full auth path with a key-value read) and a job read (`GET job/{id}`
//! of an ended job on the local scheduler: compute's whole read path without
//! Slurm).
//!
//! Every server runs in its own process, all are up for the whole run, and
//! one load generator (`wrk`, Debian's package) drives each in turn, round
//! after round. For each it prints requests per second, p50 and p99 latency,
//! and the server process's CPU time and minor page faults per request (from
//! `/proc/<pid>/stat` before and after the load), then the ratios the
//! project tracks: each the ratio of the two medians, with the lowest and
//! highest of the same ratio taken round by round.
//!
//! Run (after `scripts/test`, or `cargo build --release -p s3m && target/release/s3m build
//! && cargo build --target wasm32-wasip2 --release -p test-looper`):
//! `cargo run --release -p s3m-tests --bin bench_compare -- [--connections 64] [--seconds 6] [--rounds 3]`
//!
//! A change's before and after in one run: `--baseline DIR`, where DIR holds the build
//! before the change (an `s3m` binary and/or `status.wasm`, `tokens.wasm`,
//! `compute.wasm`, `test_looper.wasm`; what it lacks is the current build's). A second `s3m up` serves
//! that build; each of its cases runs right beside the current build's in every round,
//! the two swapping places every round, and the summary gives each pair's CPU per request
//! round by round, their medians and how often the change was the cheaper one.

use anyhow::{bail, Context, Result};
use clap::Parser;
use s3m_tests::{
    component_wasm, free_port, load, looper_manifest, looper_manifest_of, repo_root, AppOptions,
    TestApp,
};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    about = "Request cost of s3m up against native hyper, wasmtime serve and spin, in one run"
)]
struct Args {
    /// Concurrent keep-alive connections (wrk -c).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of load per server and round (wrk -d).
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Rounds over all servers; the summary takes each one's median.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load generator threads (wrk -t).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Only the cases whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A directory with the build before a change: an `s3m` binary and/or component wasm
    /// files (status.wasm, tokens.wasm, compute.wasm, test_looper.wasm). A second `s3m up`
    /// serves it, and its no-op, status, introspect and job read run beside the current
    /// build's in every round.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Internal: serve the native baseline on this address and nothing else.
    #[arg(long, hide = true)]
    serve_native: Option<String>,
}

fn main() -> Result<()> {
    s3m_tests::no_log_tails();
    let args = Args::parse();
    if let Some(addr) = &args.serve_native {
        return serve_native(addr);
    }
    let wrk = which("wrk").context(
        "wrk is not on PATH: install it with `apt-get install wrk` (Debian's package); it is the load generator of this benchmark",
    )?;
    let looper = component_wasm("test_looper");
    if !looper.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --target wasm32-wasip2 --release -p test-looper`",
            looper.display()
        );
    }

    let mut servers: Vec<Server> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();

    // Native hyper: this same binary in its own process.
    let port = free_port();
    let child = Command::new(std::env::current_exe()?)
        .args(["--serve-native", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .spawn()?;
    servers.push(Server::child("native hyper", child));
    cases.push(Case::new(
        "native hyper ok",
        servers.len() - 1,
        format!("http://127.0.0.1:{port}/"),
        None,
    ));

    // wasmtime serve on the same no-op wasm.
    match wasmtime_cli() {
        Some(cli) => {
            let port = free_port();
            let child = Command::new(&cli)
                .args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
                .arg(&looper)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", cli.display()))?;
            servers.push(Server::child("wasmtime serve", child));
            cases.push(Case::new(
                "wasmtime serve no-op",
                servers.len() - 1,
                format!("http://127.0.0.1:{port}/looper/ok"),
                None,
            ));
        }
        None => println!(
            "wasmtime serve: no wasmtime CLI ($S3M_WASMTIME or target/tools from scripts/test): not measured"
        ),
    }

    // Stock Spin, when there is one.
    let spin_dir = tempfile::tempdir()?;
    match which("spin") {
        Some(spin) => {
            let port = free_port();
            std::fs::write(
                spin_dir.path().join("spin.toml"),
                format!(
                    "spin_manifest_version = 2\n[application]\nname = \"bench\"\n\
                     [[trigger.http]]\nroute = \"/looper/...\"\ncomponent = \"looper\"\n\
                     [component.looper]\nsource = \"{}\"\n",
                    looper.display()
                ),
            )?;
            let child = Command::new(&spin)
                .args(["up", "--listen", &format!("127.0.0.1:{port}"), "-f"])
                .arg(spin_dir.path().join("spin.toml"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            servers.push(Server::child("spin up", child));
            cases.push(Case::new(
                "spin up no-op",
                servers.len() - 1,
                format!("http://127.0.0.1:{port}/looper/ok"),
                None,
            ));
        }
        None => println!("spin up: no `spin` on PATH: not measured"),
    }

    // s3m up: the no-op, status, introspect and a job read in one host.
    s3m_tests::slurm::ensure_project_user("BEN001")?;
    let app = TestApp::start(AppOptions {
        components: vec!["tokens".into(), "status".into(), "compute".into()],
        extra_manifest: Some(looper_manifest(&[])),
        ..Default::default()
    })?;
    let token = app.token(&["compute-ace"], "BEN001")?;
    let job = ended_job(&app, &token)?;
    let s3m = servers.len();
    servers.push(Server::app("s3m up", app.pid()));
    cases.push(Case::new("s3m no-op", s3m, app.url("/looper/ok"), None));
    cases.push(Case::new(
        "s3m status",
        s3m,
        app.url("/olcf/v1alpha/status"),
        None,
    ));
    cases.push(Case::new(
        "s3m introspect",
        s3m,
        app.url("/olcf/v1/token/ctls/introspect"),
        Some(format!("Authorization: {token}")),
    ));
    cases.push(Case::new(
        "s3m job read",
        s3m,
        app.url(&job),
        Some(format!("Authorization: {token}")),
    ));
    // The same host with the pool's pages released after every instance
    // (wasmtime's default, and s3m's before it kept them resident): the
    // before and after of that change, in this run.
    let released = TestApp::start(AppOptions {
        components: vec!["tokens".into()],
        extra_manifest: Some(looper_manifest(&[])),
        env: vec![("S3M_POOL_KEEP_RESIDENT".into(), "0".into())],
        ..Default::default()
    })?;
    servers.push(Server::app("s3m up, pages released", released.pid()));
    cases.push(Case::new(
        "s3m no-op, pool pages released",
        servers.len() - 1,
        released.url("/looper/ok"),
        None,
    ));
    // The build before a change, beside the current one.
    let baseline = match &args.baseline {
        Some(dir) => {
            let bin = dir.join("s3m");
            let looper = dir.join("test_looper.wasm");
            let looper = if looper.is_file() {
                looper
            } else {
                component_wasm("test_looper")
            };
            let wasm: Vec<String> = ["status", "tokens", "compute", "test_looper"]
                .iter()
                .map(|c| format!("{c}.wasm"))
                .filter(|f| dir.join(f).is_file())
                .collect();
            if !bin.is_file() && wasm.is_empty() {
                bail!(
                    "--baseline {}: holds neither an s3m binary nor status.wasm, tokens.wasm, compute.wasm or test_looper.wasm; copy the build before the change there",
                    dir.display()
                );
            }
            println!(
                "baseline: {} ({}{})",
                dir.display(),
                if bin.is_file() {
                    "s3m"
                } else {
                    "the current s3m"
                },
                if wasm.is_empty() {
                    String::new()
                } else {
                    format!(", {}", wasm.join(", "))
                }
            );
            let before = TestApp::start(AppOptions {
                components: vec!["tokens".into(), "status".into(), "compute".into()],
                extra_manifest: Some(looper_manifest_of(&looper, &[])),
                bin: bin.is_file().then_some(bin),
                wasm_dir: Some(dir.clone()),
                ..Default::default()
            })?;
            let token = before.token(&["compute-ace"], "BEN001")?;
            let job = ended_job(&before, &token)?;
            servers.push(Server::app("s3m up, baseline", before.pid()));
            let server = servers.len() - 1;
            for (name, path, header) in [
                ("s3m no-op", "/looper/ok", None),
                ("s3m status", "/olcf/v1alpha/status", None),
                (
                    "s3m introspect",
                    "/olcf/v1/token/ctls/introspect",
                    Some(format!("Authorization: {token}")),
                ),
                (
                    "s3m job read",
                    &job,
                    Some(format!("Authorization: {token}")),
                ),
            ] {
                // Right after its counterpart, so that the two run side by side.
                let at = cases
                    .iter()
                    .position(|c| c.name == name)
                    .map_or(cases.len(), |i| i + 1);
                let mut case = Case::new(
                    &format!("{name}, baseline"),
                    server,
                    before.url(path),
                    header,
                );
                case.pair_of = Some(name.to_string());
                cases.insert(at, case);
            }
            Some(before)
        }
        None => None,
    };
    if !args.only.is_empty() {
        cases.retain(|c| args.only.iter().any(|o| c.name.contains(o.as_str())));
    }

    for case in &cases {
        wait_ready(&case.url, case.header.as_deref())
            .with_context(|| format!("{} never answered 200 at {}", case.name, case.url))?;
    }

    // Which host binary, and how fresh: the figures are that binary's.
    let bin = s3m_tests::s3m_bin()?;
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|e| format!("built {} min ago", e.as_secs() / 60))
        .unwrap_or_else(|| "build time unknown".into());
    println!("s3m: {} ({built})", bin.display());
    println!(
        "load: wrk -t{} -c{} -d{}s, {} rounds; CPU and faults are the server process's, per request",
        args.threads, args.connections, args.seconds, args.rounds
    );
    for round in 1..=args.rounds {
        println!("round {round}");
        // A baseline case runs beside its counterpart, first in every other round.
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if round % 2 == 0 {
            for i in 1..order.len() {
                if cases[order[i]].pair_of.is_some() && cases[order[i - 1]].pair_of.is_none() {
                    order.swap(i - 1, i);
                }
            }
        }
        for i in order {
            let case = &mut cases[i];
            // Warm the connections and the server's pools first.
            wrk_run(&wrk, &args, case, 1, None)?;
            let pid = servers[case.server].pid;
            let r = wrk_run(&wrk, &args, case, args.seconds, Some(pid))?;
            println!("  {}", r.line(&case.name));
            case.rounds.push(r);
        }
    }

    println!("\nmedians of {} rounds", args.rounds);
    println!(
        "| server | req/s | p50 | p99 | CPU µs/req (user+sys) | minor faults/req |\n|---|---|---|---|---|---|"
    );
    for case in &cases {
        let m = case.median();
        println!(
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} ({:.0}+{:.0}) | {:.2} |",
            case.name,
            m.rps,
            m.p50_ms,
            m.p99_ms,
            m.user_us + m.sys_us,
            m.user_us,
            m.sys_us,
            m.faults
        );
    }
    println!();
    for server in &servers {
        if let Some(kib) = rss_kib(server.pid) {
            println!(
                "{:<38} RSS after the load: {:.1} MiB",
                server.name,
                kib as f64 / 1024.0
            );
        }
    }
    let case = |name: &str| cases.iter().find(|c| c.name == name);
    let p99 = |name: &str| case(name).map(|c| c.median().p99_ms);
    println!();
    // Each ratio of medians, then the lowest and highest of the same ratio taken round by
    // round (the two cases of a round run seconds apart): on a shared VM the spread is wide,
    // and it shows how far one run's ratio can be trusted.
    let ratio = |label: &str, a: &str, b: &str, goal: &str| {
        let (Some(a), Some(b)) = (case(a), case(b)) else {
            return;
        };
        let (lo, hi) = a
            .rounds
            .iter()
            .zip(&b.rounds)
            .map(|(a, b)| a.rps / b.rps)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                (lo.min(r), hi.max(r))
            });
        println!(
            "{label:<38} {:.3}  (goal {goal}; round by round {lo:.3}-{hi:.3})",
            a.median().rps / b.median().rps
        );
    };
    ratio(
        "s3m no-op / same, pool pages released",
        "s3m no-op",
        "s3m no-op, pool pages released",
        "> 1: keeping pages resident pays",
    );
    ratio(
        "s3m no-op / native hyper",
        "s3m no-op",
        "native hyper ok",
        ">= 0.25",
    );
    ratio(
        "s3m no-op / wasmtime serve no-op",
        "s3m no-op",
        "wasmtime serve no-op",
        ">= 3",
    );
    ratio(
        "s3m no-op / spin up no-op",
        "s3m no-op",
        "spin up no-op",
        ">= 3",
    );
    ratio(
        "s3m introspect / s3m no-op",
        "s3m introspect",
        "s3m no-op",
        ">= 0.8",
    );
    ratio(
        "s3m status / s3m no-op",
        "s3m status",
        "s3m no-op",
        ">= 0.8",
    );
    ratio(
        "s3m job read / s3m no-op",
        "s3m job read",
        "s3m no-op",
        "none; for the record",
    );
    for name in ["s3m introspect", "s3m status"] {
        if let Some(p) = p99(name) {
            println!("{:<38} {p:.2} ms  (goal <= 10 ms)", format!("{name} p99"));
        }
    }
    // Each change's before and after, round by round.
    let pairs: Vec<(&Case, &Case)> = cases
        .iter()
        .filter_map(|b| {
            let name = b.pair_of.as_deref()?;
            Some((cases.iter().find(|c| c.name == name)?, b))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\nthis build against the baseline, CPU µs per request (this / baseline), round by round:");
    }
    for (now, before) in pairs {
        let cpu = |m: &Measure| m.user_us + m.sys_us;
        let rounds: Vec<String> = now
            .rounds
            .iter()
            .zip(&before.rounds)
            .map(|(a, b)| format!("{:.0}/{:.0}", cpu(a), cpu(b)))
            .collect();
        let cheaper = now
            .rounds
            .iter()
            .zip(&before.rounds)
            .filter(|(a, b)| cpu(a) < cpu(b))
            .count();
        let (a, b) = (now.median(), before.median());
        println!(
            "{:<16} {}  medians {:.0}/{:.0} ({:+.1}%), req/s {:.0}/{:.0}; cheaper in {cheaper} of {} rounds",
            now.name,
            rounds.join(" "),
            cpu(&a),
            cpu(&b),
            100.0 * (cpu(&a) / cpu(&b) - 1.0),
            a.rps,
            b.rps,
            now.rounds.len()
        );
    }
    drop(servers);
    drop(app);
    drop(released);
    drop(baseline);
    Ok(())
}

struct Server {
    name: String,
    pid: u32,
    child: Option<Child>,
}

impl Server {
    fn child(name: &str, child: Child) -> Self {
        Server {
            name: name.into(),
            pid: child.id(),
            child: Some(child),
        }
    }
    fn app(name: &str, pid: u32) -> Self {
        Server {
            name: name.into(),
            pid,
            child: None,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Case {
    name: String,
    server: usize,
    url: String,
    header: Option<String>,
    /// For a baseline case, the name of the current build's case it is compared with.
    pair_of: Option<String>,
    rounds: Vec<Measure>,
}

impl Case {
    fn new(name: &str, server: usize, url: String, header: Option<String>) -> Self {
        Case {
            name: name.into(),
            server,
            url,
            header,
            pair_of: None,
            rounds: Vec::new(),
        }
    }

    /// Each figure's median over the rounds.
    fn median(&self) -> Measure {
        let med = |f: fn(&Measure) -> f64| {
            let mut v: Vec<f64> = self.rounds.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        Measure {
            rps: med(|m| m.rps),
            p50_ms: med(|m| m.p50_ms),
            p99_ms: med(|m| m.p99_ms),
            user_us: med(|m| m.user_us),
            sys_us: med(|m| m.sys_us),
            faults: med(|m| m.faults),
        }
    }
}

#[derive(Clone, Copy)]
struct Measure {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    user_us: f64,
    sys_us: f64,
    faults: f64,
}

impl Measure {
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<22} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU {:>5.0} µs/req ({:.0} user + {:.0} sys)  {:.2} faults/req",
            self.rps,
            self.p50_ms,
            self.p99_ms,
            self.user_us + self.sys_us,
            self.user_us,
            self.sys_us,
            self.faults
        )
    }
}

/// A process's resident set, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn wrk_run(
    wrk: &PathBuf,
    args: &Args,
    case: &Case,
    seconds: u64,
    pid: Option<u32>,
) -> Result<Measure> {
    let mut cmd = Command::new(wrk);
    cmd.args([
        "--latency",
        &format!("-t{}", args.threads),
        &format!("-c{}", args.connections),
        &format!("-d{seconds}s"),
    ]);
    if let Some(h) = &case.header {
        cmd.args(["-H", h]);
    }
    cmd.arg(&case.url);
    let before = pid.map(load::proc_stat).transpose()?;
    let t = Instant::now();
    let out = cmd.output().context("running wrk")?;
    let elapsed = t.elapsed();
    let after = pid.map(load::proc_stat).transpose()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "wrk failed on {}: {}{}",
            case.name,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("{}: {}", case.name, line.trim());
    }
    if let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("Socket errors"))
    {
        bail!("{}: {}", case.name, line.trim());
    }
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let pct = |p: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .with_context(|| format!("no {p} latency in wrk's output:\n{text}"))?;
        parse_duration_ms(line.split_whitespace().nth(1).unwrap_or(""))
    };
    let (p50_ms, p99_ms) = (pct("50%")?, pct("99%")?);
    let (mut user_us, mut sys_us, mut faults) = (f64::NAN, f64::NAN, f64::NAN);
    if let (Some(b), Some(a)) = (before, after) {
        let tick_us = 1e6 / load::clock_ticks_per_second();
        user_us = (a.0 - b.0) as f64 * tick_us / requests;
        sys_us = (a.1 - b.1) as f64 * tick_us / requests;
        faults = (a.2 - b.2) as f64 / requests;
    }
    let _ = elapsed;
    Ok(Measure {
        rps,
        p50_ms,
        p99_ms,
        user_us,
        sys_us,
        faults,
    })
}

/// wrk's durations: "812.00us", "1.23ms", "2.00s".
fn parse_duration_ms(s: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown duration {s:?} in wrk's output")
    };
    Ok(num.parse::<f64>()? * scale)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// `$S3M_WASMTIME`, else the CLI scripts/test installs under target/tools.
fn wasmtime_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3M_WASMTIME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let lib = repo_root().join("target/tools/venv/lib");
    std::fs::read_dir(lib).ok()?.flatten().find_map(|d| {
        let p = d.path().join("site-packages/wasmtime_cli/wasmtime");
        p.is_file().then_some(p)
    })
}

/// Polls until one GET answers 200 (up to 30 s).
fn wait_ready(url: &str, header: Option<&str>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut req = client.get(url);
            if let Some((k, v)) = header.and_then(|h| h.split_once(": ")) {
                req = req.header(k, v);
            }
            match req.send().await {
                Ok(r) if r.status() == 200 => return Ok(()),
                Ok(r) if Instant::now() > deadline => bail!("answered {}", r.status()),
                Err(e) if Instant::now() > deadline => bail!("{e}"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

/// The baseline: hyper answering "ok" to every request, on tokio's default
/// multi-threaded runtime, with nothing else.
fn serve_native(addr: &str) -> Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Submits a `true` job to the local scheduler of the sample facility's
/// `basalt` and waits until it has ended: the path of its `GET`, the
/// compute component's whole read path (the token check, the resource
/// check, the scheduler capability, the answer) without Slurm.
fn ended_job(app: &TestApp, token: &str) -> Result<String> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = reqwest::Client::new();
        let res = client
            .post(app.url("/slurm/open/v0.0.43/basalt/job/submit"))
            .header("Authorization", token)
            .json(&serde_json::json!({"job": {"name": "bench", "script": "#!/bin/bash\ntrue\n"}}))
            .send()
            .await?;
        let status = res.status();
        let body: serde_json::Value = res.json().await?;
        let id = body["job_id"]
            .as_u64()
            .with_context(|| format!("submit answered {status}: {body}"))?;
        let path = format!("/slurm/open/v0.0.43/basalt/job/{id}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job: serde_json::Value = client
                .get(app.url(&path))
                .header("Authorization", token)
                .send()
                .await?
                .json()
                .await?;
            if job["jobs"][0]["job_state"] == serde_json::json!(["COMPLETED"]) {
                return Ok(path);
            }
            if Instant::now() > deadline {
                bail!("the bench's job {id} did not complete within 60 s: {job}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

//! A small HTTP load generator for the benchmarks: N keep-alive HTTP/1.1
//! connections, each sending one request after another for a fixed time,
//! latencies into an HDR histogram.

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl LoadReport {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn line(&self, name: &str, connections: usize) -> String {
        format!(
            "{name:<28} {connections:>3} conns  {:>9.0} req/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  non-2xx {}",
            self.per_second(),
            self.ms(0.50),
            self.ms(0.90),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
            self.errors
        )
    }
}

/// Sends `GET base_url + path` on `connections` connections for `duration`.
pub async fn run(
    base_url: &str,
    path: &str,
    headers: &[(&str, &str)],
    connections: usize,
    duration: Duration,
) -> Result<LoadReport> {
    let uri: hyper::Uri = format!("{base_url}{path}").parse()?;
    let authority = uri.authority().context("url without host")?.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (uri, authority, headers) = (uri.clone(), authority.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let connect = || async {
                let stream = TcpStream::connect(&authority).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(conn);
                anyhow::Ok(sender)
            };
            let mut sender = connect().await?;
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut bad) = (0u64, 0u64);
            while Instant::now() < deadline {
                let mut req =
                    hyper::Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                        .header("host", &authority);
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let req = req.body(Empty::<Bytes>::new())?;
                // A server may close a kept-alive connection between
                // requests (slurmrestd does): open another, as clients do.
                if sender.ready().await.is_err() {
                    sender = connect().await?;
                }
                let t = Instant::now();
                let res = sender.send_request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                if status.is_success() {
                    ok += 1;
                } else {
                    bad += 1;
                }
            }
            anyhow::Ok((ok, bad, hist))
        }));
    }
    let mut report = LoadReport {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for t in tasks {
        let (ok, bad, hist) = t.await??;
        report.requests += ok + bad;
        report.errors += bad;
        report.latency.add(hist)?;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// utime and stime in clock ticks, and minor faults, of a process.
pub fn proc_stat(pid: u32) -> Result<(u64, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = text.rsplit_once(')').context("malformed /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): minflt is field 10, utime 14, stime 15.
    let n = |i: usize| -> Result<u64> { Ok(f.get(i - 3).context("short /proc stat")?.parse()?) };
    Ok((n(14)?, n(15)?, n(10)?))
}

/// Clock ticks per second: the unit of [`proc_stat`]'s CPU times.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf with a valid name has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

//! Hostile HTTP against the real `s3m` binary, over raw sockets: a Host header that tries to
//! change the path, requests without a Host, broken chunked bodies, oversized bodies, floods
//! over the host's limits, and a corpus of a few hundred malformed requests. Every answer must
//! be a 2xx or a 4xx in the API's error shape (a 503 with `Retry-After` past a limit), never a
//! 500, never a token echoed, and the host's log must never hold a token.

use anyhow::{anyhow, bail, Context, Result};
use s3m_tests::{check_error_body, looper_manifest, AppOptions, TestApp};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INTROSPECT: &str = "/olcf/v1/token/ctls/introspect";
const STATUS: &str = "/olcf/v1alpha/status";
const JOBS: &str = "/slurm/open/v0.0.42/basalt/jobs";
const NODES: &str = "/slurm/open/v0.0.42/basalt/nodes";
const SUBMIT: &str = "/slurm/open/v0.0.42/basalt/job/submit";
const PROVISION: &str = "/olcf/open/v1alpha/streaming/redis/provision_cluster";
const ENVIRONMENT: &str = "/olcf/v1alpha/environment/basalt";

/// One HTTP response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Everything read, head included.
    bytes: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks that this is the API's error JSON for its status.
    fn expect_error(&self, status: u16) -> Result<Value> {
        if self.status != status {
            bail!(
                "expected HTTP {status}, got {}: {}",
                self.status,
                self.text()
            );
        }
        let ct = self.header("content-type").unwrap_or_default();
        if !ct.starts_with("application/json") {
            bail!("HTTP {status} with content-type {ct:?}: {}", self.text());
        }
        let body: Value = serde_json::from_slice(&self.body)
            .with_context(|| format!("error body is not JSON: {}", self.text()))?;
        check_error_body(&body, status)?;
        Ok(body)
    }
}

fn addr(app: &TestApp) -> String {
    app.base_url
        .strip_prefix("http://")
        .expect("http base URL")
        .to_string()
}

fn connect(app: &TestApp) -> Result<TcpStream> {
    let s = TcpStream::connect(addr(app))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response (`head_only`: the answer to a HEAD request, which has no body).
fn read_response(s: &mut TcpStream, head_only: bool) -> Result<Raw> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // A reset after the answer arrived still leaves the answer readable; before it,
            // there is none.
            Err(e) => bail!("connection failed before a response head: {e} (read {buf:?})"),
        };
        if n == 0 {
            bail!(
                "connection closed before a response head (read {:?})",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut rest = buf[head_end..].to_vec();
    let mut fill = |rest: &mut Vec<u8>, done: &dyn Fn(&[u8]) -> bool| -> Result<()> {
        while !done(rest) {
            let n = s.read(&mut chunk).unwrap_or(0);
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    };
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        fill(&mut rest, &|r: &[u8]| r.len() >= len)?;
        rest.truncate(len);
        rest.clone()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        fill(&mut rest, &|r: &[u8]| r.ends_with(b"0\r\n\r\n"))?;
        dechunk(&rest)?
    } else {
        fill(&mut rest, &|_: &[u8]| false)?;
        rest.clone()
    };
    let mut bytes = buf[..head_end].to_vec();
    bytes.extend_from_slice(&rest);
    Ok(Raw {
        status,
        headers,
        body,
        bytes,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = find(data, b"\r\n").ok_or_else(|| anyhow!("bad chunked response"))?;
        let size_text = std::str::from_utf8(&data[..i])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        data = &data[size + 2..];
    }
}

/// Sends `request` on a fresh connection and reads the answer. Write errors are ignored: the
/// host may answer (and close) before it has read everything.
fn exchange(app: &TestApp, request: &[u8]) -> Result<Raw> {
    let mut s = connect(app)?;
    let _ = s.write_all(request);
    read_response(&mut s, request.starts_with(b"HEAD "))
}

/// `METHOD path HTTP/1.1` with `Host`, `Connection: close`, `headers` and `body` (with its
/// Content-Length when not empty).
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// POSTs JSON `body` to `path` with `token` and the `extra` headers.
fn post_json(
    app: &TestApp,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Result<Raw> {
    let mut headers = vec![
        ("Authorization", token),
        ("Content-Type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    exchange(app, &request("POST", path, &headers, body))
}

fn app_with(components: &[&str], looper: bool, up_args: &[&str]) -> Result<TestApp> {
    TestApp::start(AppOptions {
        components: components.iter().map(|c| c.to_string()).collect(),
        extra_manifest: looper.then(|| looper_manifest(&[])),
        up_args: up_args.iter().map(|s| s.to_string()).collect(),
        // The most talkative log the host has: it must still hold no token.
        env: vec![("S3M_LOG".into(), "s3m=debug,warn".into())],
        ..Default::default()
    })
}

/// The token, and every long piece of it, must not be in `text`.
fn assert_no_token(text: &str, token: &str, what: &str) {
    assert!(!text.contains(token), "{what} holds a token");
    for part in token.split('.').filter(|p| p.len() >= 16) {
        assert!(!text.contains(part), "{what} holds part of a token");
    }
}

#[test]
fn the_host_header_cannot_change_the_path() -> Result<()> {
    let app = app_with(&["tokens", "status", "compute"], false, &[])?;
    let token = app.token(&["compute-ace"], "HOS001")?;

    // The attack of the review: a Host that carries a path and a '?' to swallow the real one.
    for host in [
        "x/slurm/open/v0.0.42/basalt/nodes?",
        "x/slurm/open/v0.0.42/basalt/nodes#",
        "x?/slurm/open/v0.0.42/basalt/nodes",
        "a b",
        "user@127.0.0.1",
        "user:pw@127.0.0.1:80",
        "127.0.0.1:99999",
        "127.0.0.1:",
        "127.0.0.1:8o",
        "[::1",
        "[zz]:80",
        "h%2fslurm",
        "h\\slurm",
        "",
    ] {
        let req = format!(
            "GET {JOBS} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        );
        let res = exchange(&app, req.as_bytes())?;
        let body = res
            .expect_error(400)
            .with_context(|| format!("Host: {host:?}"))?;
        assert!(
            body.get("nodes").is_none(),
            "Host {host:?} reached nodes: {body}"
        );
        assert_no_token(&res.text(), &token, "a 400 answer");
    }

    // Two Host headers, and absolute form with a smuggling Host or authority.
    let two = format!(
        "GET {JOBS} HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: x/slurm/open/v0.0.42/basalt/nodes?\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    exchange(&app, two.as_bytes())?.expect_error(400)?;
    let absolute = format!(
        "GET http://127.0.0.1{JOBS} HTTP/1.1\r\nHost: x{NODES}?\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    exchange(&app, absolute.as_bytes())?.expect_error(400)?;
    let userinfo = format!(
        "GET http://u:p@127.0.0.1{JOBS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    let res = exchange(&app, userinfo.as_bytes())?;
    assert!(
        (400..500).contains(&res.status),
        "absolute form with user info: {}",
        res.status
    );

    // A plain valid Host changes nothing: the component sees the request line's path.
    for host in ["example.org", "example.org:8080", "[::1]:3000", "127.0.0.1"] {
        let req =
            format!("GET {STATUS}/downtimes HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let res = exchange(&app, req.as_bytes())?;
        assert_eq!(res.status, 200, "Host {host}: {}", res.text());
        let body: Value = serde_json::from_slice(&res.body)?;
        assert!(
            body.get("resources").is_none(),
            "downtimes answered as status: {body}"
        );
        let req = format!("GET {INTROSPECT} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n");
        let res = exchange(&app, req.as_bytes())?;
        assert_eq!(
            res.status,
            200,
            "introspect with Host {host}: {}",
            res.text()
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&res.body)?["token"]["project"],
            "HOS001"
        );
    }
    // Absolute form: the path is the URI's, the authority too.
    let req = format!("GET http://example.org:80{STATUS}/downtimes HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let res = exchange(&app, req.as_bytes())?;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(serde_json::from_slice::<Value>(&res.body)?
        .get("resources")
        .is_none());

    // The same attack through reqwest, on the route and with the token of the review.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let res = app
            .client()
            .get(app.url(JOBS))
            .header("Host", "x/slurm/open/v0.0.42/basalt/nodes?")
            .header("Authorization", &token)
            .send()
            .await?;
        s3m_tests::expect_error(res, 400).await?;
        anyhow::Ok(())
    })?;
    assert_no_token(&app.stderr(), &token, "the host's log");
    Ok(())
}

#[test]
fn requests_without_a_host_get_a_proper_answer() -> Result<()> {
    let app = app_with(&["tokens", "status"], false, &[])?;
    // HTTP/1.0 never needs a Host.
    let res = exchange(&app, format!("GET {STATUS} HTTP/1.0\r\n\r\n").as_bytes())?;
    assert_eq!(res.status, 200, "{}", res.text());
    let body: Value = serde_json::from_slice(&res.body)?;
    assert!(body["resources"].is_array(), "{body}");
    // HTTP/1.1 sent raw without one: answered as if sent to the address it reached.
    let res = exchange(
        &app,
        format!("GET {STATUS}/downtimes HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    serde_json::from_slice::<Value>(&res.body)?;
    // Errors are the API's, too.
    exchange(
        &app,
        format!("GET {INTROSPECT} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )?
    .expect_error(401)?;
    exchange(
        &app,
        format!("GET {INTROSPECT} HTTP/1.0\r\n\r\n").as_bytes(),
    )?
    .expect_error(401)?;
    exchange(&app, b"GET /nowhere HTTP/1.0\r\n\r\n")?.expect_error(404)?;
    exchange(&app, b"GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n")?.expect_error(404)?;
    // A token still works without a Host.
    let token = app.token(&["data-streaming"], "HOS002")?;
    let res = exchange(
        &app,
        format!("GET {INTROSPECT} HTTP/1.0\r\nAuthorization: {token}\r\n\r\n").as_bytes(),
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_no_token(&app.stderr(), &token, "the host's log");
    Ok(())
}

/// POST `path` with a chunked body whose framing is `chunks` (raw bytes after the head).
fn chunked(path: &str, token: Option<&str>, chunks: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        r.push_str(&format!("Authorization: {t}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(chunks);
    r
}

#[test]
fn broken_chunked_bodies_get_400() -> Result<()> {
    let app = app_with(&["tokens", "status", "compute", "streaming"], false, &[])?;
    let token = app.token(&["compute-ace", "data-streaming"], "HOS003")?;
    let bodies: [&[u8]; 8] = [
        b"zz\r\nab\r\n0\r\n\r\n",
        // 2^64: overflows a 64-bit chunk size.
        b"10000000000000000\r\nab\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\nab\r\n0\r\n\r\n",
        b"-1\r\nab\r\n0\r\n\r\n",
        b"2\r\nabcdef\r\n0\r\n\r\n",
        b"2 2\r\nab\r\n0\r\n\r\n",
        b"\r\n\r\n",
        b"4\r\nab",
    ];
    let mut n = 0;
    for path in [INTROSPECT, SUBMIT, PROVISION, STATUS] {
        for auth in [Some(token.as_str()), None] {
            for body in bodies {
                let mut s = connect(&app)?;
                s.write_all(&chunked(path, auth, body))?;
                // The truncated body must be answered too once the client gives up on it.
                if body == b"4\r\nab" {
                    s.shutdown(Shutdown::Write)?;
                }
                let res = read_response(&mut s, false).with_context(|| {
                    format!("{path} with chunks {:?}", String::from_utf8_lossy(body))
                })?;
                res.expect_error(400).with_context(|| {
                    format!("{path} with chunks {:?}", String::from_utf8_lossy(body))
                })?;
                assert_no_token(&res.text(), &token, "an answer");
                n += 1;
            }
        }
    }
    assert_eq!(n, 64);
    // A body shorter than its Content-Length, the client giving up.
    let mut s = connect(&app)?;
    s.write_all(
        format!("POST {SUBMIT} HTTP/1.1\r\nHost: a\r\nAuthorization: {token}\r\nContent-Length: 100\r\n\r\n{{\"a\":")
            .as_bytes(),
    )?;
    s.shutdown(Shutdown::Write)?;
    let res = read_response(&mut s, false)?;
    assert!(
        res.status == 400 || res.status == 408,
        "a truncated body: {} {}",
        res.status,
        res.text()
    );
    assert_no_token(&app.stderr(), &token, "the host's log");
    Ok(())
}

#[test]
fn oversized_bodies_get_413_before_they_are_read() -> Result<()> {
    let app = app_with(
        &["tokens", "status", "compute", "streaming"],
        false,
        &["--max-body-size", "1MiB"],
    )?;
    let token = app.token(&["compute-ace", "data-streaming"], "HOS004")?;
    for path in [INTROSPECT, SUBMIT, PROVISION, STATUS, "/nowhere"] {
        for auth in [Some(token.as_str()), None] {
            // A Content-Length over the limit: answered at once, the body never sent.
            let mut head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                (1 << 20) + 1
            );
            if let Some(t) = auth {
                head.push_str(&format!("Authorization: {t}\r\n"));
            }
            head.push_str("\r\n");
            let started = Instant::now();
            let mut s = connect(&app)?;
            s.write_all(head.as_bytes())?;
            let res = read_response(&mut s, false)?;
            res.expect_error(413)
                .with_context(|| format!("{path}, Content-Length"))?;
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_no_token(&res.text(), &token, "a 413 answer");

            // A chunked stream without end: refused once it passes the limit (a path with
            // no route is refused before its body is read).
            let res = endless_chunks(&app, path, auth, 256 << 20)?;
            let status = if path == "/nowhere" { 404 } else { 413 };
            res.expect_error(status)
                .with_context(|| format!("{path}, chunked"))?;
        }
    }
    // With Expect: 100-continue the client is told no before it sends anything.
    let mut s = connect(&app)?;
    s.write_all(
        format!("PUT {SUBMIT} HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 99999999999\r\n\r\n").as_bytes(),
    )?;
    read_response(&mut s, false)?.expect_error(413)?;

    // At the limit it is the component that answers (a bad job, not a too large body), and
    // it has read the body whole: the field it names is the body's last few bytes, after
    // sixteen reads of 64 KiB.
    let last = br#""padding_at_the_end": 1}"#;
    let mut body = vec![b' '; (1 << 20) - last.len()];
    body[0] = b'{';
    body.extend_from_slice(last);
    let res = post_json(&app, SUBMIT, &token, &[], &body)?;
    assert_eq!(res.status, 400, "{}", res.text());
    let error = res.expect_error(400)?;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `padding_at_the_end`")),
        "the component did not see the end of a 1 MiB body: {error}"
    );
    assert_no_token(&app.stderr(), &token, "the host's log");
    Ok(())
}

/// Sends 64 KiB chunks (at most `total` bytes) until the host answers; returns the answer,
/// checking that it came long before `total` bytes were sent.
fn endless_chunks(app: &TestApp, path: &str, auth: Option<&str>, total: usize) -> Result<Raw> {
    let mut s = connect(app)?;
    s.write_all(&chunked(path, auth, b""))?;
    let mut writer = s.try_clone()?;
    let answered = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (a, n) = (answered.clone(), sent.clone());
    let feeder = std::thread::spawn(move || {
        let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', 64 << 10));
        chunk.extend_from_slice(b"\r\n");
        while !a.load(Ordering::SeqCst) && n.load(Ordering::SeqCst) < total {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            n.fetch_add(64 << 10, Ordering::SeqCst);
        }
    });
    let res = read_response(&mut s, false);
    answered.store(true, Ordering::SeqCst);
    let _ = s.shutdown(Shutdown::Both);
    let _ = feeder.join();
    let res = res?;
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < total / 4,
        "the host answered only after {sent} bytes of a chunked body"
    );
    Ok(res)
}

#[test]
fn the_default_limit_refuses_a_64_mib_body_at_once() -> Result<()> {
    let app = app_with(&["tokens", "compute"], false, &[])?;
    let token = app.token(&["compute-ace"], "HOS005")?;
    for auth in [format!("Authorization: {token}\r\n"), String::new()] {
        for path in [INTROSPECT, SUBMIT] {
            let started = Instant::now();
            let res = exchange(
                &app,
                format!(
                    "POST {path} HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: {}\r\n\r\n",
                    (64 << 20) + 1
                )
                .as_bytes(),
            )?;
            let body = res.expect_error(413)?;
            // compute keeps the host's default; tokens has its own 64 KiB.
            let limit = if path == SUBMIT { "10485760" } else { "65536" };
            assert!(
                body["message"].as_str().unwrap_or("").contains(limit),
                "{path}: {body}"
            );
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
    let stderr = app.stderr();
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert_no_token(&stderr, &token, "the host's log");
    Ok(())
}

/// Sends `n` requests for `path` at once, each on its own connection; returns the answers.
fn at_once(app: &TestApp, path: &str, n: usize) -> Result<Vec<Raw>> {
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(connect(app)?);
    }
    let req = request("GET", path, &[], b"");
    for s in &mut streams {
        s.write_all(&req)?;
    }
    let threads: Vec<_> = streams
        .into_iter()
        .map(|mut s| std::thread::spawn(move || read_response(&mut s, false)))
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow!("reader panicked"))?)
        .collect()
}

#[test]
fn a_flood_over_the_limits_gets_503_with_retry_after() -> Result<()> {
    // Requests in flight.
    let app = app_with(&["status"], true, &["--max-concurrent-requests", "4"])?;
    let answers = at_once(&app, "/looper/sleep?ms=1500", 16)?;
    let (mut ok, mut busy) = (0, 0);
    for res in &answers {
        match res.status {
            200 => ok += 1,
            503 => {
                res.expect_error(503)?;
                assert_eq!(res.header("retry-after"), Some("1"), "{:?}", res.headers);
                busy += 1;
            }
            other => bail!("a flood got {other}: {}", res.text()),
        }
    }
    assert!(
        (1..=4).contains(&ok),
        "{ok} requests ran at once with a limit of 4"
    );
    assert_eq!(ok + busy, 16);
    // The host serves again once the flood is over.
    let res = exchange(&app, &request("GET", "/looper/ok", &[], b""))?;
    assert_eq!(res.status, 200);
    drop(app);

    // Component instances: more requests than instances wait for one instead of failing.
    let app = app_with(&["status"], true, &["--max-instances", "2"])?;
    let answers = at_once(&app, "/looper/sleep?ms=300", 8)?;
    for res in &answers {
        assert!(
            res.status == 200 || (res.status == 503 && res.header("retry-after").is_some()),
            "over the instance pool: {} {}",
            res.status,
            res.text()
        );
    }
    assert!(answers.iter().filter(|r| r.status == 200).count() >= 2);
    let stderr = app.stderr();
    assert!(!stderr.contains("component failed"), "{stderr}");
    drop(app);

    // Connections: one over the limit is answered 503 and closed.
    let app = app_with(&["status"], false, &["--max-connections", "3"])?;
    let idle: Vec<TcpStream> = (0..3).map(|_| connect(&app)).collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(200));
    let res = exchange(&app, &request("GET", STATUS, &[], b""))?;
    res.expect_error(503)?;
    assert_eq!(res.header("retry-after"), Some("1"));
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = exchange(&app, &request("GET", STATUS, &[], b""))?;
        if res.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections were not given back: {}",
            res.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn a_slow_request_head_is_cut_off() -> Result<()> {
    let app = app_with(&["status"], false, &["--header-read-timeout", "1s"])?;
    let mut s = connect(&app)?;
    s.write_all(b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\n")?;
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a half-sent head held the connection for {:?}",
        started.elapsed()
    );
    // Closed, or at most answered with an error; never served.
    if n > 0 {
        assert!(
            !buf.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // Others are served meanwhile and after.
    let res = exchange(&app, &request("GET", STATUS, &[], b""))?;
    assert_eq!(res.status, 200);
    Ok(())
}

/// One hostile request of the corpus.
struct Case {
    label: String,
    bytes: Vec<u8>,
}

fn corpus(tokens: &[&str]) -> Vec<Case> {
    let (own, other, readonly) = (tokens[0], tokens[1], tokens[2]);
    let mut cases = Vec::new();
    let mut add = |label: String, bytes: Vec<u8>| cases.push(Case { label, bytes });

    // Every route family of spin.toml, and paths under each.
    let routes = [
        INTROSPECT,
        "/olcf/v1/token/ctls/revoke",
        "/olcf/v1/token",
        STATUS,
        "/olcf/v1alpha/status/basalt",
        "/olcf/v1alpha/status/downtimes/upcoming",
        "/olcf/v1alpha/environment",
        ENVIRONMENT,
        "/olcf/open/v1alpha/streaming/list_backends",
        PROVISION,
        "/olcf/open/v1alpha/streaming/redis/cluster/someone-elses",
        "/olcf/v1alpha/streaming/rabbitmq/list_clusters",
        JOBS,
        NODES,
        SUBMIT,
        "/slurm/open/v0.0.44/basalt/job/1",
        "/slurm/v0.0.42/basalt/partitions",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let bearer_junk = format!("Bearer {own}x");
    let tampered = {
        let mut t = own.to_string();
        let last = t.pop().unwrap_or('A');
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };
    let none_alg = format!(
        "{}.{}.",
        s3m_tests::b64url(br#"{"alg":"none","typ":"JWT"}"#),
        own.split('.').nth(1).unwrap_or("")
    );
    let auths: Vec<(&str, String)> = vec![
        ("no token", String::new()),
        ("own token", format!("Authorization: {own}\r\n")),
        (
            "another project's token",
            format!("Authorization: {other}\r\n"),
        ),
        (
            "a read-only token",
            format!("Authorization: Bearer {readonly}\r\n"),
        ),
        ("Bearer alone", "Authorization: Bearer\r\n".into()),
        ("Bearer and junk", "Authorization: Bearer junk==\r\n".into()),
        (
            "token with junk",
            format!("Authorization: {bearer_junk}\r\n"),
        ),
        ("tampered token", format!("Authorization: {tampered}\r\n")),
        ("alg none", format!("Authorization: Bearer {none_alg}\r\n")),
        (
            "two Authorization headers",
            format!("Authorization: {own}\r\nAuthorization: {other}\r\n"),
        ),
        ("Basic", "Authorization: Basic dXNlcjpwYXNz\r\n".into()),
        (
            "a long junk token",
            format!("Authorization: Bearer {}\r\n", "A.".repeat(8000)),
        ),
    ];
    for path in routes {
        for method in methods {
            // Never revoke the tokens the rest of the corpus uses.
            let usable: Vec<&(&str, String)> = auths
                .iter()
                .filter(|(l, _)| {
                    !(path.ends_with("revoke")
                        && matches!(
                            *l,
                            "own token"
                                | "another project's token"
                                | "a read-only token"
                                | "two Authorization headers"
                        ))
                })
                .collect();
            for (i, (label, auth)) in usable.iter().enumerate() {
                // Every method with a few tokens, every token with a few methods.
                if i > 3 && !matches!(method, "GET" | "POST" | "DELETE") {
                    continue;
                }
                let body: &[u8] = match method {
                    "POST" | "PUT" | "PATCH" => b"{not json",
                    _ => b"",
                };
                let mut r = format!(
                    "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}"
                );
                if !body.is_empty() {
                    r.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                r.push_str("\r\n");
                let mut bytes = r.into_bytes();
                bytes.extend_from_slice(body);
                add(format!("{method} {path} with {label}"), bytes);
            }
        }
    }

    // Malformed paths, with and without a token.
    let paths = [
        "/",
        "//",
        "/..",
        "/olcf/v1/token/../../slurm/open/v0.0.42/basalt/nodes",
        "/olcf/v1alpha/status/../../../slurm/open/v0.0.42/basalt/jobs",
        "/olcf/v1alpha/status/%2e%2e/%2e%2e/slurm/open/v0.0.42/basalt/jobs",
        "/olcf/v1alpha/status/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/olcf/v1alpha/status/..%2f..%2f..%2fetc%2fpasswd",
        "/olcf/v1alpha/status/%252e%252e%252f",
        "/olcf/v1alpha/environment/..%5c..%5cwindows",
        "/olcf/v1alpha/status/%00",
        "/olcf/v1alpha/status/basalt%00.json",
        "/olcf/v1alpha/status/%ff%fe%fd",
        "/olcf/v1alpha/status/%",
        "/olcf/v1alpha/status/%zz",
        "/olcf/v1alpha/status?x=%zz&y=%00",
        "/olcf/v1alpha/status/;jsessionid=1",
        "/olcf/v1alpha/status/basalt/",
        "/olcf/v1alpha/status//basalt",
        "/slurm/open/v0.0.42//jobs",
        "/slurm/open/v0.0.42/basalt/job/%2e%2e",
        "/slurm/open/v0.0.42/basalt/job/1%2f..%2f2",
        "/slurm/open/v0.0.99/basalt/jobs",
        "/slurm/open/v0.0.42/../../olcf/v1/token/ctls/introspect",
        "/olcf/open/v1alpha/streaming/redis/cluster/..%2f..%2fx",
        "/olcf/open/v1alpha/streaming/%72edis/list_clusters",
        "/OLCF/V1ALPHA/STATUS",
        "/olcf/v1alpha/status/\u{e9}t\u{e9}",
        "/olcf/v1alpha/status/~root",
        "/olcf/v1alpha/status/*",
    ];
    let long_path = format!("/olcf/v1alpha/status/{}", "a".repeat(6000));
    let deep_path = format!("/slurm{}", "/x".repeat(3000));
    let mut all_paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    all_paths.push(long_path);
    all_paths.push(deep_path);
    for path in &all_paths {
        for (label, auth) in [
            ("no token", String::new()),
            ("own token", format!("Authorization: {own}\r\n")),
        ] {
            for method in ["GET", "DELETE"] {
                add(
                    format!("{method} {} with {label}", &path[..path.len().min(80)]),
                    format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n").into_bytes(),
                );
            }
        }
    }

    // Bytes hyper must refuse before any route: NUL and control bytes in the request line and
    // the headers, broken framing, versions, and heads over the size limits.
    let raw_heads: Vec<(&str, Vec<u8>)> = vec![
        ("NUL in path", b"GET /olcf/v1alpha/status\0/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("SOH in path", b"GET /olcf/v1alpha/\x01status HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("DEL in path", b"GET /olcf/v1alpha/\x7fstatus HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("ESC in path", b"GET /olcf/\x1b[31mv1alpha HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("space in path", b"GET /olcf/v1alpha /status HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("tab in path", b"GET /olcf/v1alpha\t/status HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("CR in path", b"GET /olcf/v1alpha\r/status HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("NUL in header value", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: a\r\nAuthorization: {own}\0\r\n\r\n").into_bytes()),
        ("NUL in Host", b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\0b\r\n\r\n".to_vec()),
        ("control byte in Host", b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\x02b\r\n\r\n".to_vec()),
        ("DEL in header value", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: a\r\nAuthorization: {own}\x7f\r\n\r\n").into_bytes()),
        ("control byte in header name", b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\nX\x01Y: 1\r\n\r\n".to_vec()),
        ("space before colon", b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost : a\r\n\r\n".to_vec()),
        ("header without colon", b"GET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n".to_vec()),
        ("obs-fold", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer\r\n {own}\r\n\r\n").into_bytes()),
        ("bare LF", b"GET /olcf/v1alpha/status HTTP/1.1\nHost: a\n\n".to_vec()),
        ("bad method", b"G\x00ET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("long method", format!("{} /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\n\r\n", "X".repeat(5000)).into_bytes()),
        ("HTTP/2.0", b"GET /olcf/v1alpha/status HTTP/2.0\r\nHost: a\r\n\r\n".to_vec()),
        ("HTTP/9.9", b"GET /olcf/v1alpha/status HTTP/9.9\r\nHost: a\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /olcf/v1alpha/status\r\n\r\n".to_vec()),
        ("no version", b"GET /olcf/v1alpha/status \r\nHost: a\r\n\r\n".to_vec()),
        ("h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("asterisk form", b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec()),
        ("authority form", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n".to_vec()),
        ("relative target", b"GET olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec()),
        ("ftp scheme", b"GET ftp://a/olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec()),
        ("huge header", format!("GET {STATUS} HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(200_000)).into_bytes()),
        ("huge Authorization", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\r\n", "c".repeat(100_000)).into_bytes()),
        ("many headers", format!("GET {STATUS} HTTP/1.1\r\nHost: a\r\n{}\r\n", (0..300).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()).into_bytes()),
        ("huge path", format!("GET /olcf/v1alpha/status/{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(100_000)).into_bytes()),
        ("two Content-Lengths", format!("POST {INTROSPECT} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").into_bytes()),
        ("negative Content-Length", format!("POST {INTROSPECT} HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n").into_bytes()),
        ("huge Content-Length", format!("POST {INTROSPECT} HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n").into_bytes()),
        ("TE and CL", format!("POST {SUBMIT} HTTP/1.1\r\nHost: a\r\nAuthorization: {own}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /olcf/v1alpha/status HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes()),
        ("unknown TE", format!("POST {SUBMIT} HTTP/1.1\r\nHost: a\r\nAuthorization: {own}\r\nTransfer-Encoding: gzip\r\n\r\nxx").into_bytes()),
        ("TE chunked twice", format!("POST {SUBMIT} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n").into_bytes()),
        ("Host with path", format!("GET {JOBS} HTTP/1.1\r\nHost: x{NODES}?\r\nAuthorization: {own}\r\n\r\n").into_bytes()),
        ("Host with userinfo", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: {own}@a\r\n\r\n").into_bytes()),
        ("Host is the token", format!("GET {INTROSPECT} HTTP/1.1\r\nHost: {own}\r\n\r\n").into_bytes()),
        ("forged spin header", format!("GET {STATUS} HTTP/1.1\r\nHost: a\r\nspin-full-url: http://x{NODES}\r\nspin-path-info: /nodes\r\nConnection: close\r\n\r\n").into_bytes()),
        ("upgrade h2c", format!("GET {STATUS} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").into_bytes()),
        ("upgrade websocket", format!("GET {STATUS} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").into_bytes()),
        ("binary garbage", (0u8..=255).cycle().take(3000).collect()),
        ("TLS hello", vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]),
    ];
    for (label, bytes) in raw_heads {
        add(label.to_string(), bytes);
    }
    cases
}

#[test]
fn a_hostile_corpus_never_gets_a_5xx_nor_a_token_back() -> Result<()> {
    let app = app_with(&[], false, &[])?;
    let own = app.token(&["compute-ace", "data-streaming"], "HOS006")?;
    let other = app.token(&["compute-ace", "data-streaming"], "HOS007")?;
    let readonly = app.token(&["compute-ace-readonly"], "HOS006")?;
    let tokens = [own.as_str(), other.as_str(), readonly.as_str()];
    let cases = corpus(&tokens);
    assert!(cases.len() >= 200, "only {} cases", cases.len());

    let app = Arc::new(app);
    let cases = Arc::new(cases);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (app, cases, next) = (app.clone(), cases.clone(), next.clone());
            std::thread::spawn(move || -> Vec<(usize, Result<Raw>)> {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    out.push((i, exchange(&app, &case.bytes)));
                }
                out
            })
        })
        .collect();
    let mut answers: Vec<(usize, Result<Raw>)> = Vec::new();
    for w in workers {
        answers.extend(w.join().map_err(|_| anyhow!("a worker panicked"))?);
    }
    answers.sort_by_key(|(i, _)| *i);

    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for (i, res) in &answers {
        let case = &cases[*i];
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                // Only bytes that are not HTTP at all may be dropped without an answer.
                if !matches!(
                    case.label.as_str(),
                    "binary garbage" | "TLS hello" | "h2 preface"
                ) {
                    failures.push(format!("{}: no answer: {e}", case.label));
                }
                continue;
            }
        };
        *statuses.entry(res.status).or_default() += 1;
        let text = String::from_utf8_lossy(&res.bytes);
        for t in &tokens {
            if text.contains(t)
                || t.split('.')
                    .filter(|p| p.len() >= 16)
                    .any(|p| text.contains(p))
            {
                failures.push(format!("{}: the answer holds a token", case.label));
            }
        }
        if !(200..300).contains(&res.status) && !(400..500).contains(&res.status) {
            failures.push(format!(
                "{}: HTTP {}: {}",
                case.label,
                res.status,
                res.text()
            ));
            continue;
        }
        let head_request = case.bytes.starts_with(b"HEAD ");
        if res.status >= 400 && !head_request {
            if let Err(e) = res.expect_error(res.status) {
                failures.push(format!("{}: {e:#}", case.label));
            }
        }
    }
    let stderr = app.stderr();
    for t in &tokens {
        assert_no_token(&stderr, t, "the host's log");
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} hostile requests in {:?}; statuses {statuses:?}",
        cases.len(),
        started.elapsed()
    );
    Ok(())
}

/// A component's own limit (`[component.x.tool.s3m] max_body_size` in
/// spin.toml, where Spin looks no further) beats the host's: the repo's
/// spin.toml gives tokens 64 KiB, while compute keeps the host's 10 MiB.
#[test]
fn a_components_own_body_limit_applies_to_its_routes() -> Result<()> {
    let app = app_with(&["tokens", "compute"], false, &[])?;
    let body = vec![b' '; 100 << 10];
    let post = |path: &str| -> Result<Raw> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        exchange(&app, &req)
    };
    post(INTROSPECT)?
        .expect_error(413)
        .context("tokens, 100 KiB")?;
    let res = post(SUBMIT)?;
    assert_ne!(res.status, 413, "compute refused 100 KiB: {}", res.text());
    assert!(res.status < 500, "{} {}", res.status, res.text());
    Ok(())
}

/// A header that says who the caller is, or which submission this is, sent twice: refused
/// with a 400 that names it, never resolved by picking one (the host would read the first
/// Authorization value and a component the last).
#[test]
fn a_header_sent_twice_is_refused_not_guessed() -> Result<()> {
    let app = app_with(&["tokens", "compute"], false, &[])?;
    let token = app.token(&["compute-ace"], "HOS005")?;
    let other = app.token(&["compute-ace"], "HOS006")?;
    for pair in [[&token, &token], [&other, &token], [&token, &other]] {
        let res = exchange(
            &app,
            &request(
                "GET",
                INTROSPECT,
                &[("Authorization", pair[0]), ("Authorization", pair[1])],
                b"",
            ),
        )?;
        expect_sent_twice(&res, "authorization")?;
        assert_no_token(&res.text(), &token, "the answer");
        assert_no_token(&res.text(), &other, "the answer");
    }
    // Sent once, the same token works.
    let res = exchange(
        &app,
        &request("GET", INTROSPECT, &[("Authorization", &token)], b""),
    )?;
    assert_eq!(res.status, 200, "{}", res.text());
    let answer: Value = serde_json::from_slice(&res.body)?;
    assert_eq!(answer["token"]["project"], "HOS005");

    // Two idempotency keys on one submission: refused before any job is made.
    let res = post_json(
        &app,
        SUBMIT,
        &token,
        &[("Idempotency-Key", "first"), ("Idempotency-Key", "second")],
        br##"{"job": {"script": "#!/bin/bash\ntrue\n"}}"##,
    )?;
    expect_sent_twice(&res, "idempotency-key")?;
    assert_no_token(&app.stderr(), &token, "the host's log");
    Ok(())
}

/// The 400 of a header sent twice, naming it.
fn expect_sent_twice(res: &Raw, header: &str) -> Result<()> {
    let error = res.expect_error(400)?;
    assert_eq!(
        error["message"],
        format!("the header {header} was sent 2 times; send it once"),
        "{error}"
    );
    Ok(())
}

/// A component's answer carries its length in the head, not chunked framing: JSON answers,
/// an error, the HTML status page, and a long answer, which takes many writes of 4 KiB and
/// must arrive whole.
#[test]
fn component_answers_carry_their_length() -> Result<()> {
    let app = app_with(&["tokens", "status"], true, &[])?;
    let token = app.token(&["compute-ace"], "HOS007")?;
    let cases = [
        ("the status JSON", request("GET", STATUS, &[], b""), 200),
        (
            "introspect",
            request("GET", INTROSPECT, &[("Authorization", &token)], b""),
            200,
        ),
        ("a 401", request("GET", INTROSPECT, &[], b""), 401),
        ("the status page", request("GET", "/", &[], b""), 200),
        (
            "a long answer",
            request("GET", "/looper/big?bytes=100003", &[], b""),
            200,
        ),
    ];
    for (what, req, status) in cases {
        let res = exchange(&app, &req)?;
        assert_eq!(res.status, status, "{what}: {}", res.text());
        assert_eq!(res.header("transfer-encoding"), None, "{what} is chunked");
        assert_eq!(
            res.header("content-length"),
            Some(res.body.len().to_string().as_str()),
            "{what}"
        );
        if what == "the status page" {
            assert!(res.text().ends_with("</html>"), "{}", res.text());
        }
        if what == "a long answer" {
            let expected: Vec<u8> = (0..100_003).map(|i| b'0' + (i % 10) as u8).collect();
            assert!(res.body == expected, "{what}: {} bytes", res.body.len());
        }
    }
    Ok(())
}

//! A test fixture, never deployed: it misbehaves on request so the tests can
//! check that the host contains it.
//! - `/looper/spin`: loops for ever (the host's epoch deadline must stop it);
//! - `/looper/grow`: allocates until memory runs out (the memory limit must stop it);
//! - `/looper/sleep?ms=N`: waits N milliseconds (default 1000), then answers 200, to hold a
//!   request in flight;
//! - `/looper/ok`: answers 200, to show the host still serves;
//! - `/looper/later?ms=N&url=U`: waits N milliseconds, then sends `GET U` (an allowed
//!   host), to show that a guest whose client went away still runs to its end;
//! - `/looper/read?path=P` answers the file's text or the error, and `/looper/write?path=P`
//!   tries to create it: what a guest can do with its `files` mount;
//! - `/looper/half`: starts an answer of 1000 bytes, writes 500, then panics (a trap), to
//!   show that the host cuts that answer short and logs why;
//! - `/looper/big?bytes=N`: answers N bytes (at most 16 MiB) of `0123456789` repeated, to
//!   check that a long answer arrives whole;
//! - `/looper/leave`: writes a marker over a zero-initialised static and an
//!   initialised one, and `/looper/peek` answers whether either still holds
//!   a marker, so that a test can check that no request sees what an earlier
//!   one left in a reused instance slot.
//!
//! It reads the request and writes its answer the way the endpoint components do
//! (`s3m_guest::http`), so that `/looper/ok` is the cheapest request a component of
//! this repository can answer: the benchmarks' no-op.

use s3m_guest::http::{IncomingRequest, Request, Response, ResponseOutparam};
use spin_sdk::http_component;
use std::sync::atomic::{AtomicU64, Ordering};

/// Zero-initialised (in the module's zero memory) and initialised (in its
/// data image): a reused slot must come back with both as they were.
static ZEROED: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
static IMAGED: [AtomicU64; 1024] = [const { AtomicU64::new(INITIAL) }; 1024];
const INITIAL: u64 = 0x0123_4567_89ab_cdef;
const MARKER: u64 = 0x5ec2_e75e_c2e7_5ec2;

/// Whether both statics are as the module's image made them.
fn pristine() -> String {
    let zeroed = ZEROED.iter().all(|z| z.load(Ordering::Relaxed) == 0);
    let imaged = IMAGED.iter().all(|i| i.load(Ordering::Relaxed) == INITIAL);
    format!("zeroed={zeroed} imaged={imaged}")
}

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let answer = match Request::read(req) {
        Ok(req) if req.path() == "/looper/half" => return half_then_trap(out),
        Ok(req) => Response::new(200, "text/plain", answer(&req).await.into_bytes()),
        Err(e) => Response::from(e),
    };
    answer.send(out);
}

async fn answer(req: &Request) -> String {
    match req.path() {
        "/looper/spin" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "/looper/grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "/looper/outbound" => {
            // Outbound HTTP to a host the manifest does not allow.
            let url = req
                .query()
                .strip_prefix("url=")
                .unwrap_or("http://127.0.0.1:9/")
                .to_string();
            let sent: Result<spin_sdk::http::Response, _> =
                spin_sdk::http::send(spin_sdk::http::Request::get(url)).await;
            match sent {
                Ok(r) => format!("sent: {}", r.status()),
                Err(e) => format!("refused: {e}"),
            }
        }
        "/looper/later" => {
            let query = req.query();
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or_default()
                    .to_string()
            };
            let ms = param("ms").parse::<u64>().unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let sent: Result<spin_sdk::http::Response, _> =
                spin_sdk::http::send(spin_sdk::http::Request::get(param("url"))).await;
            match sent {
                Ok(r) => format!("sent: {}", r.status()),
                Err(e) => format!("refused: {e}"),
            }
        }
        "/looper/read" => {
            let path = req.query().strip_prefix("path=").unwrap_or_default();
            match std::fs::read_to_string(path) {
                Ok(text) => format!("read: {text}"),
                Err(e) => format!("refused: {e}"),
            }
        }
        "/looper/write" => {
            let path = req.query().strip_prefix("path=").unwrap_or_default();
            match std::fs::write(path, "written by a guest") {
                Ok(()) => "written".to_string(),
                Err(e) => format!("refused: {e}"),
            }
        }
        "/looper/sleep" => {
            let ms = req
                .query()
                .strip_prefix("ms=")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            "slept".to_string()
        }
        "/looper/leave" => {
            for (z, i) in ZEROED.iter().zip(IMAGED.iter()) {
                z.store(MARKER, Ordering::Relaxed);
                i.store(MARKER, Ordering::Relaxed);
            }
            // The same check as /looper/peek, after the writes: it must see them.
            pristine()
        }
        "/looper/peek" => pristine(),
        "/looper/big" => {
            let n = req
                .query()
                .strip_prefix("bytes=")
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0)
                .min(16 << 20);
            (0..n).map(|i| char::from(b'0' + (i % 10) as u8)).collect()
        }
        _ => "ok".to_string(),
    }
}

/// Promises 1000 bytes, sends 500 of them, and traps.
fn half_then_trap(out: ResponseOutparam) {
    use spin_sdk::http::{Fields, OutgoingResponse};
    let headers = Fields::from_list(&[("content-length".to_string(), b"1000".to_vec())])
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("the body of a new response");
    out.set(response);
    let stream = body.write().expect("the body's stream");
    stream
        .blocking_write_and_flush(&[b'x'; 500])
        .expect("half of the answer written");
    panic!("the looper stops half-way through its answer, on purpose");
}

//! The host's log (stderr): human text by default, one JSON object per line
//! with `S3M_LOG_FORMAT=json`; `S3M_LOG` filters it (default
//! `s3m=info,warn`). And request ids: every answer carries `x-request-id`,
//! and every log line of a request carries it (span `request`, field
//! `request_id`).

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up the log from `S3M_LOG_FORMAT` and `S3M_LOG`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("S3M_LOG")
        .unwrap_or_else(|_| "s3m=info,warn".into());
    let format = std::env::var("S3M_LOG_FORMAT").unwrap_or_default();
    if format.eq_ignore_ascii_case("json") {
        JSON.store(true, Ordering::Relaxed);
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        // Colours for a terminal only: a log piped to a file, journald or
        // a test's capture stays plain text that grep finds.
        tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    if !format.is_empty() && !matches!(format.to_ascii_lowercase().as_str(), "json" | "text") {
        tracing::warn!("S3M_LOG_FORMAT={format:?} is not json or text: logging text");
    }
}

/// Whether the log is JSON lines.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line for the operator on stderr (the routes, the gateway's URL): as is
/// in text, as an info event when the log is JSON, so that every stderr line
/// stays one JSON object.
pub fn say(line: &str) {
    if is_json() {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// The header of request ids.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A request's id: the client's `x-request-id` when it is 1 to 128
/// characters of `[A-Za-z0-9._-]`, else a new UUID.
#[derive(Clone, Debug)]
pub struct RequestId(http::HeaderValue);

impl RequestId {
    /// The id of a request with `headers`.
    pub fn of(headers: &http::HeaderMap) -> Self {
        let mut given = headers.get_all(&REQUEST_ID).iter();
        match (given.next(), given.next()) {
            (Some(v), None) if valid(v.as_bytes()) => Self(v.clone()),
            _ => Self::new(),
        }
    }

    /// A new id (a UUID v4).
    pub fn new() -> Self {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        Self(http::HeaderValue::from_str(text).expect("a UUID is a valid header value"))
    }

    pub fn as_str(&self) -> &str {
        // Checked (or made) as ASCII letters, digits and `._-`.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header(&self) -> http::HeaderValue {
        self.0.clone()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn valid(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The span of one request's log lines.
pub fn request_span(id: &RequestId) -> tracing::Span {
    tracing::info_span!("request", request_id = %id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut h = http::HeaderMap::new();
        assert_eq!(RequestId::of(&h).as_str().len(), 36);
        h.insert(&REQUEST_ID, "abc.DEF_1-2".parse().unwrap());
        assert_eq!(RequestId::of(&h).as_str(), "abc.DEF_1-2");
        for bad in ["a b", "", "x/y", "é"] {
            let mut h = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(bad.as_bytes()) {
                h.insert(&REQUEST_ID, v);
            }
            assert_ne!(RequestId::of(&h).as_str(), bad);
        }
        h.insert(&REQUEST_ID, "a".repeat(129).parse().unwrap());
        assert_eq!(RequestId::of(&h).as_str().len(), 36);
        h.insert(&REQUEST_ID, "a".repeat(128).parse().unwrap());
        assert_eq!(RequestId::of(&h).as_str(), "a".repeat(128));
        // Two ids: neither is the request's.
        h.append(&REQUEST_ID, "b".parse().unwrap());
        assert_eq!(RequestId::of(&h).as_str().len(), 36);
    }
}

//! The host's log (stderr): human text by default, one JSON object per line
//! with `S3M_LOG_FORMAT=json`; `S3M_LOG` filters it (default
//! `s3m=info,warn`). And request ids: every answer carries `x-request-id`,
//! and every log line of a request carries it (`request{request_id=…}` in
//! text, `span.request_id` in JSON, as a tracing span would show it).
//!
//! The id is not a tracing span: the subscriber's span bookkeeping (a slot,
//! its fields formatted at creation, an enter and exit at every poll) cost
//! about 4 µs of the 90 of a whole request (issue 13). A request's future
//! carries its id instead ([`in_request`]), puts it in a thread-local while
//! it is polled, and the event formatter reads it from there.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up the log from `S3M_LOG_FORMAT` and `S3M_LOG`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("S3M_LOG")
        .unwrap_or_else(|_| "s3m=info,warn".into());
    let format = std::env::var("S3M_LOG_FORMAT").unwrap_or_default();
    if format.eq_ignore_ascii_case("json") {
        JSON.store(true, Ordering::Relaxed);
        tracing_subscriber::fmt()
            .fmt_fields(format::JsonFields::new())
            // The request's id is the one "span" (the host makes no tracing
            // spans): the formatter adds it, and tracing's would be a second
            // "span" key.
            .event_format(WithRequestId::json(
                formatter()
                    .json()
                    .with_current_span(false)
                    .with_span_list(false),
            ))
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    } else {
        // Colours for a terminal only: a log piped to a file, journald or
        // a test's capture stays plain text that grep finds.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        tracing_subscriber::fmt()
            .with_ansi(ansi)
            .event_format(WithRequestId::text(formatter().with_ansi(ansi)))
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

fn formatter() -> format::Format {
    format::Format::default()
}

thread_local! {
    /// The id of the request whose future this thread is polling.
    static CURRENT: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// The request this thread works for now, if any.
pub fn current_request() -> Option<RequestId> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` as part of request `id`: its log lines carry the id.
pub fn with_request<T>(id: &RequestId, f: impl FnOnce() -> T) -> T {
    let mut id = Some(id.clone());
    let _current = Current::enter(&mut id);
    f()
}

/// `future`, whose log lines (and those of everything it polls on this
/// thread: the guest, its host calls) carry request `id`.
pub fn in_request<F: Future>(id: RequestId, future: F) -> InRequest<F> {
    InRequest {
        id: Some(id),
        future,
    }
}

pin_project_lite::pin_project! {
    /// See [`in_request`].
    pub struct InRequest<F> {
        id: Option<RequestId>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Current::enter(this.id);
        this.future.poll(cx)
    }
}

/// The thread's current request swapped with one held elsewhere, and
/// swapped back when dropped (also when the poll panics): no clone, no
/// allocation per poll.
struct Current<'a>(&'a mut Option<RequestId>);

impl<'a> Current<'a> {
    fn enter(id: &'a mut Option<RequestId>) -> Self {
        CURRENT.with(|c| std::mem::swap(&mut *c.borrow_mut(), id));
        Self(id)
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        CURRENT.with(|c| std::mem::swap(&mut *c.borrow_mut(), self.0));
    }
}

/// An event format that adds the current request's id where a span
/// `request{request_id}` would show: before the target in text, as
/// `"span":{"request_id":…,"name":"request"}` in JSON.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<F> WithRequestId<F> {
    fn text(inner: F) -> Self {
        Self { inner, json: false }
    }
    fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        // An id is ASCII letters, digits and `._-`: nothing to escape.
        if self.json {
            match line.rfind('}') {
                Some(end) => line.insert_str(
                    end,
                    &format!(",\"span\":{{\"request_id\":\"{id}\",\"name\":\"request\"}}"),
                ),
                None => line.push_str(&format!(" request_id={id}")),
            }
        } else {
            let target = event.metadata().target();
            let at = line.find(target).unwrap_or(0);
            line.insert_str(at, &format!("request{{request_id={id}}}: "));
        }
        writer.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_future_names_its_request_while_polled_and_only_then() {
        let mut h = http::HeaderMap::new();
        h.insert(&REQUEST_ID, "outer-1".parse().unwrap());
        let outer = RequestId::of(&h);
        h.insert(&REQUEST_ID, "inner-2".parse().unwrap());
        let inner = RequestId::of(&h);
        let now = || current_request().map(|i| i.as_str().to_string());
        assert_eq!(now(), None);
        let seen = futures::executor::block_on(in_request(outer, async move {
            let before = now();
            let during = in_request(inner, async { now() }).await;
            (before, during, now())
        }));
        assert_eq!(
            seen,
            (
                Some("outer-1".into()),
                Some("inner-2".into()),
                Some("outer-1".into())
            )
        );
        assert_eq!(now(), None, "the id outlived its future's poll");
    }

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

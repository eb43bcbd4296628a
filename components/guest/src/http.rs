//! One HTTP call as the components see it: the request read straight from `wasi:http`, and
//! the answer written straight back.
//!
//! spin-sdk's `Request` copies every header into a map (the host's seven `spin-*` ones
//! included), builds the URI as a string and parses it again, and reads the body through
//! its async executor; its `Response` goes back through the same executor. A component
//! here needs the method, the path, the query, one or two headers and, for writes, the
//! body, so that is what [`Request`] reads: headers are looked up in the host's field list
//! when asked for, and a `GET` or `HEAD` body is never read.
//!
//! Every component's entry point is [`serve`]:
//!
//! ```text
//! #[http_component]
//! fn handle(req: IncomingRequest, out: ResponseOutparam) {
//!     s3m_guest::http::serve(req, out, route);
//! }
//! ```

use spin_sdk::http::{Fields, OutgoingBody, OutgoingResponse};
pub use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};

use crate::ApiError;

/// How much of the body one read asks the host for.
const READ_CHUNK: u64 = 64 * 1024;
/// How much one write hands the host: `blocking-write-and-flush` takes at most 4096 bytes.
const WRITE_CHUNK: usize = 4096;

/// The request of one call.
pub struct Request {
    incoming: IncomingRequest,
    method: Method,
    target: Target,
    body: Vec<u8>,
}

/// The path and the query as the host gave them (`/a/b?c=d`).
struct Target {
    text: String,
    /// Where the path ends in `text` (at the first `?`, or the end).
    path_end: usize,
}

impl Target {
    fn new(text: String) -> Self {
        let path_end = text.find('?').unwrap_or(text.len());
        Target { text, path_end }
    }

    fn path(&self) -> &str {
        &self.text[..self.path_end]
    }

    fn query(&self) -> &str {
        self.text.get(self.path_end + 1..).unwrap_or_default()
    }
}

impl Request {
    /// Reads the method, the path and query and, unless the method is `GET` or `HEAD`
    /// (whose body means nothing to any route here), the whole body. The host has already
    /// refused a body over its `--max-body-size`.
    pub fn read(incoming: IncomingRequest) -> Result<Self, ApiError> {
        let method = incoming.method();
        let target = Target::new(incoming.path_with_query().unwrap_or_default());
        let body = match method {
            Method::Get | Method::Head => Vec::new(),
            _ => read_body(&incoming)?,
        };
        Ok(Request {
            incoming,
            method,
            target,
            body,
        })
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, without the query (`/a/b` of `/a/b?c=d`).
    pub fn path(&self) -> &str {
        self.target.path()
    }

    /// The query, without its `?` (`c=d` of `/a/b?c=d`; `""` without one).
    pub fn query(&self) -> &str {
        self.target.query()
    }

    /// The value of header `name` (any case), as bytes, if it was sent. A header sent more
    /// than once is refused (400): which of two tokens or idempotency keys a caller meant is
    /// not for the component to guess, and the host reads the first while spin-sdk's
    /// `Request` kept the last.
    pub fn header(&self, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let name = name.to_ascii_lowercase();
        let mut values = self.incoming.headers().get(&name);
        match values.len() {
            0 | 1 => Ok(values.pop()),
            n => Err(ApiError::bad_request(format!(
                "the header {name} was sent {n} times; send it once"
            ))),
        }
    }

    /// The body (empty for `GET` and `HEAD`).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The whole body of `incoming`, read in blocking chunks.
fn read_body(incoming: &IncomingRequest) -> Result<Vec<u8>, ApiError> {
    let unreadable = || ApiError::bad_request("could not read the request body");
    let body = incoming.consume().map_err(|()| unreadable())?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| unreadable())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(wasi::io::streams::StreamError::LastOperationFailed(_)) => {
                    return Err(unreadable())
                }
            }
        }
        // The stream is a child of the body: it goes first.
    }
    drop(body);
    Ok(bytes)
}

/// An answer: a status, its headers and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// An answer of `status` with `body`, of media type `content_type`.
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![("content-type".to_string(), content_type.as_bytes().to_vec())],
            body,
        }
    }

    /// This answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (any case), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Hands this answer to the host through `out`, with its `content-length`. A client
    /// that has gone away leaves nothing to tell, so a failed write ends the call quietly.
    pub fn send(mut self, out: ResponseOutparam) {
        // The whole body is known: its length goes in the head, so that the answer is not
        // chunked (and the host holds the body to that length).
        self.headers.push((
            "content-length".to_string(),
            self.body.len().to_string().into_bytes(),
        ));
        let headers = match Fields::from_list(&self.headers) {
            Ok(headers) => headers,
            // Header names and values are this crate's constants and checked text.
            Err(_) => Fields::new(),
        };
        let response = OutgoingResponse::new(headers);
        // Statuses here are the crate's own, all valid.
        let _ = response.set_status_code(self.status);
        let Ok(body) = response.body() else {
            return;
        };
        out.set(response);
        if !self.body.is_empty() {
            let Ok(stream) = body.write() else {
                return;
            };
            for chunk in self.body.chunks(WRITE_CHUNK) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    return;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Self {
        error.to_response()
    }
}

/// Answers one call: reads the request, routes it with `route`, and sends what it returns
/// (the error JSON for an [`ApiError`]).
pub fn serve(
    incoming: IncomingRequest,
    out: ResponseOutparam,
    route: impl FnOnce(&Request) -> Result<Response, ApiError>,
) {
    let response = match Request::read(incoming) {
        Ok(request) => route(&request).unwrap_or_else(Response::from),
        Err(error) => error.to_response(),
    };
    response.send(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_ends_at_the_first_question_mark() {
        for (text, path, query) in [
            ("/a/b?c=d", "/a/b", "c=d"),
            ("/a/b", "/a/b", ""),
            ("/a/b?", "/a/b", ""),
            ("/a?b?c", "/a", "b?c"),
            ("", "", ""),
            ("?x=1", "", "x=1"),
        ] {
            let t = Target::new(text.to_string());
            assert_eq!((t.path(), t.query()), (path, query), "{text:?}");
        }
    }

    #[test]
    fn an_answer_keeps_its_status_headers_and_body() {
        let r = Response::new(201, "application/json", b"{}".to_vec())
            .with_header("Cache-Control", "no-store");
        assert_eq!(r.status(), 201);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("CACHE-CONTROL"), Some("no-store"));
        assert_eq!(r.header("etag"), None);
        assert_eq!(r.body(), b"{}");
        let e = Response::from(ApiError::not_found("gone"));
        assert_eq!(e.status(), 404);
        assert_eq!(e.header("content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(e.body()).unwrap();
        assert_eq!(v["message"], "gone");
    }
}

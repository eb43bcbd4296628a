//! One blocking HTTP POST over `wasi:http/outgoing-handler`.

use crate::{Gateway, MAX_ANSWER_BYTES};
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

/// Posts `body` (JSON) to `path` of the gateway; the answer's status and
/// body, at most [`MAX_ANSWER_BYTES`] of it. Errors say what failed, without
/// the credential.
pub fn post(gateway: &Gateway, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
        ("accept".to_string(), b"application/json".to_vec()),
        (
            "authorization".to_string(),
            format!("Bearer {}", gateway.credential).into_bytes(),
        ),
    ])
    .map_err(|e| format!("cannot set the request headers ({e:?})"))?;
    let request = OutgoingRequest::new(headers);
    let scheme = if gateway.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_method(&Method::Post)
        .and(request.set_scheme(Some(&scheme)))
        .and(request.set_authority(Some(&gateway.authority)))
        .and(request.set_path_with_query(Some(path)))
        .map_err(|()| "the host refused the request's URL".to_string())?;
    let outgoing = request
        .body()
        .map_err(|()| "cannot open the request body".to_string())?;

    // Send first, then write the body: the host streams it while the call runs.
    let future = outgoing_handler::handle(request, None)
        .map_err(|e| format!("cannot send the request: {e:?}"))?;
    // A body that cannot be written (the connection failed, or the gateway
    // answered early, e.g. 413) is reported only if no answer comes.
    let written = write_all(outgoing, body);

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(format!("no answer: {e:?}")),
        Some(Err(())) | None => return Err(written.err().unwrap_or("no answer".to_string())),
    };
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| "cannot read the answer".to_string())?;
    let answer = read_all(&incoming)?;
    drop(incoming);
    Ok((status, answer))
}

/// Writes the whole request body and finishes it.
fn write_all(outgoing: OutgoingBody, body: &[u8]) -> Result<(), String> {
    {
        let stream = outgoing
            .write()
            .map_err(|()| "cannot write the request body".to_string())?;
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("cannot write the request body: {}", stream_error(e)))?;
        }
    }
    OutgoingBody::finish(outgoing, None)
        .map_err(|e| format!("cannot finish the request body: {e:?}"))
}

/// Reads a whole body, refusing one over [`MAX_ANSWER_BYTES`].
fn read_all(body: &IncomingBody) -> Result<Vec<u8>, String> {
    let stream = body
        .stream()
        .map_err(|()| "cannot read the answer".to_string())?;
    let mut answer = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "the answer is larger than {} MiB, the most an adapter reads",
                        MAX_ANSWER_BYTES >> 20
                    ));
                }
                answer.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(answer),
            Err(e) => return Err(format!("cannot read the answer: {}", stream_error(e))),
        }
    }
}

fn stream_error(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

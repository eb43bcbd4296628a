//! JSON answers and the request path as routes see it.

use crate::http::{Request, Response};
use serde::Serialize;

use crate::ApiError;

/// A 200 answer with `value` as its JSON body.
pub fn json<T: Serialize>(value: &T) -> Response {
    json_with_status(200, value)
}

/// An answer with `status` and `value` as its JSON body (500 error JSON if it cannot be
/// serialised, which typed wire structs never hit).
pub fn json_with_status<T: Serialize>(status: u16, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => Response::new(status, "application/json", body),
        Err(e) => ApiError::internal(format!("could not write the JSON answer: {e}")).to_response(),
    }
}

/// The request path as components route on it: from the request URI (not the `spin-*`
/// headers), with trailing slashes removed (`/a/b/` is `/a/b`; `/` stays `/`).
pub fn route_path(req: &Request) -> String {
    let path = req.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// A caller's value as an error message quotes it: at most 64 characters,
/// so that a huge value is never echoed back whole.
pub fn cut(value: &str) -> String {
    if value.chars().count() <= 64 {
        value.to_string()
    } else {
        format!("{}...", value.chars().take(64).collect::<String>())
    }
}

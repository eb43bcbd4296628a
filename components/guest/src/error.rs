//! The one error shape of the API: `{"code": <gRPC code>, "message": "...", "details": []}`
//! with the HTTP status that a gRPC gateway would pair with that code.

use crate::http::Response;
use serde::Serialize;

/// An error answer: an HTTP status, its gRPC code, and a message that says what to fix.
///
/// Messages never contain a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status, e.g. 401.
    pub status: u16,
    /// gRPC code, e.g. 16 (Unauthenticated).
    pub code: i32,
    /// Human-readable message.
    pub message: String,
}

/// The wire form of [`ApiError`].
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i32,
    message: &'a str,
    details: [(); 0],
}

impl ApiError {
    /// An error with an explicit status and gRPC code.
    pub fn new(status: u16, code: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400, InvalidArgument (3).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, 3, message)
    }
    /// 401, Unauthenticated (16).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(401, 16, message)
    }
    /// 403, PermissionDenied (7).
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(403, 7, message)
    }
    /// 404, NotFound (5).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, 5, message)
    }
    /// 405 with Unimplemented (12): the path exists, the method does not.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, 12, message)
    }
    /// 409, AlreadyExists (6).
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(409, 6, message)
    }
    /// 409, Aborted (10).
    pub fn aborted(message: impl Into<String>) -> Self {
        Self::new(409, 10, message)
    }
    /// 429, ResourceExhausted (8).
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(429, 8, message)
    }
    /// 500, Internal (13).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, 13, message)
    }
    /// 503, Unavailable (14).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, 14, message)
    }

    /// The 405 answer for `method` on `path`, naming the methods that path takes.
    pub fn wrong_method(method: &spin_sdk::http::Method, path: &str, allowed: &[&str]) -> Self {
        Self::method_not_allowed(format!(
            "method {method} is not allowed on {path}; use {}",
            allowed.join(" or ")
        ))
    }

    /// The 404 answer for a path no route of this component serves.
    pub fn no_route(path: &str) -> Self {
        Self::not_found(format!("no endpoint at {path}"))
    }

    /// The JSON body of this error.
    pub fn body(&self) -> Vec<u8> {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            details: [],
        };
        // Serialising a struct of an integer and a string cannot fail.
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| b"{\"code\":13,\"message\":\"\",\"details\":[]}".to_vec())
    }

    /// This error as an HTTP response.
    pub fn to_response(&self) -> Response {
        Response::new(self.status, "application/json", self.body())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (HTTP {}, code {})",
            self.message, self.status, self.code
        )
    }
}

impl std::error::Error for ApiError {}

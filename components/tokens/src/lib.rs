//! Tokens: what a project access token is (introspect), and how to end it (revoke).
//!
//! Any valid token works on itself; no permission is needed. The token is never echoed.

use s3m_guest::auth::{open_store, record_key};
use s3m_guest::http::{IncomingRequest, Method, Request, Response, ResponseOutparam};
use s3m_guest::time::{now, parse_rfc3339, rfc3339_micros};
use s3m_guest::{authenticate, json, route_path, ApiError, Principal};
use serde::Serialize;
use spin_sdk::http_component;

const INTROSPECT: &str = "/olcf/v1/token/ctls/introspect";
const REVOKE: &str = "/olcf/v1/token/ctls/revoke";

// ---- routes ----

#[http_component]
fn handle(req: IncomingRequest, out: ResponseOutparam) {
    s3m_guest::http::serve(req, out, route);
}

fn route(req: &Request) -> Result<Response, ApiError> {
    let path = route_path(req);
    match (path.as_str(), req.method()) {
        (INTROSPECT, Method::Get) => introspect(req),
        (INTROSPECT, m) => Err(ApiError::wrong_method(m, INTROSPECT, &["GET"])),
        (REVOKE, Method::Delete) => revoke(req),
        (REVOKE, m) => Err(ApiError::wrong_method(m, REVOKE, &["DELETE"])),
        _ => Err(ApiError::no_route(&path)),
    }
}

// ---- wire shapes ----

/// `{"token": {...}}` of introspect: exactly the OLCF field set.
#[derive(Serialize)]
struct IntrospectAnswer {
    token: TokenInfo,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenInfo {
    username: String,
    project: String,
    permissions: Vec<String>,
    planned_expiration: String,
    security_enclave: String,
    description: String,
    one_time_token: bool,
    delayed_start: bool,
    delay_date: Option<String>,
    /// In the Tokens page this API was specified from; `""` without a delay.
    delay_duration: String,
    owner_name: String,
    grpc_permissions: Vec<String>,
    extensions: i64,
}

/// `{}` of revoke.
#[derive(Serialize)]
struct RevokeAnswer {}

// ---- handlers ----

/// GET introspect: the record of the presented token, in OLCF's shape.
fn introspect(req: &Request) -> Result<Response, ApiError> {
    let principal = authenticate(req)?;
    Ok(json(&IntrospectAnswer {
        token: token_info(principal),
    }))
}

/// DELETE revoke: marks the presented token's record revoked; every later use is 401.
fn revoke(req: &Request) -> Result<Response, ApiError> {
    let principal = authenticate(req)?;
    let store = open_store()?;
    let key = record_key(&principal.jti);
    // Through serde_json::Value so that fields this component does not know survive.
    let stored = store
        .get(&key)
        .map_err(|e| {
            ApiError::unavailable(format!(
                "key-value store unavailable while reading the token record: {e}"
            ))
        })?
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid token: this facility did not mint it, or it was deleted",
            )
        })?;
    let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&stored)
        .map_err(|e| {
            ApiError::internal(format!(
                "the record of token {} is unreadable: {e}",
                principal.jti
            ))
        })?;
    record.insert("revoked".into(), true.into());
    record.insert("revokedAt".into(), rfc3339_micros(&now()).into());
    let bytes = serde_json::to_vec(&record)
        .map_err(|e| ApiError::internal(format!("could not write the token record: {e}")))?;
    store.set(&key, &bytes).map_err(|e| {
        ApiError::unavailable(format!(
            "key-value store unavailable while revoking the token: {e}"
        ))
    })?;
    Ok(json(&RevokeAnswer {}))
}

// ---- JSON ----

/// Times as OLCF writes them (microseconds, Z); a stored time that does not parse is shown
/// as stored rather than failing the answer.
fn wire_time(stored: &str) -> String {
    parse_rfc3339(stored)
        .map(|t| rfc3339_micros(&t))
        .unwrap_or_else(|| stored.to_string())
}

fn token_info(principal: Principal) -> TokenInfo {
    let r = principal.record;
    TokenInfo {
        username: r.username,
        project: r.project,
        permissions: r.permissions,
        planned_expiration: rfc3339_micros(&principal.expires),
        security_enclave: r.security_enclave,
        description: r.description,
        one_time_token: r.one_time_token,
        delayed_start: r.delayed_start,
        delay_date: r.delay_date.as_deref().map(wire_time),
        delay_duration: r.delay_duration,
        owner_name: r.owner_name,
        grpc_permissions: Vec::new(),
        extensions: r.extensions,
    }
}

//! The host's own check of a request's token. Components name a `caller`
//! when they ask a facility capability to act for a project; the host acts
//! only for the project of a token that it has itself found authentic,
//! unrevoked, unexpired and started in this request. A component's word is
//! never enough (a bug or a compromised component cannot act for another
//! project). The capability gateway uses the same check.

use crate::admin::tokens::TokenRecord;
use crate::capabilities::key_value::Store;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The key-value label of token records.
pub const TOKEN_STORE: &str = s3m_wire::token::STORE;

/// Who a request's token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub project: String,
    pub permissions: Vec<String>,
    /// The token's id and user, for the audit log.
    pub jti: String,
    pub username: String,
}

/// Why the host refused a token: a short reason for the metrics
/// (`s3m_tokens_refused_total{reason}`) and a message for the log and the
/// component. Neither holds the token.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Principal {
    pub fn has_any(&self, permissions: &[&str]) -> bool {
        permissions.is_empty()
            || permissions
                .iter()
                .any(|p| self.permissions.iter().any(|q| q == p))
    }
}

/// The token of an `Authorization` value: raw, or after `Bearer `.
pub fn token_of(header: &str) -> &str {
    let value = header.trim();
    match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

/// Whether two secrets are equal, in time that does not tell how much of
/// them matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks `token` against its record. The error is for the log and the
/// component: it never holds the token.
pub async fn verify(store: &dyn Store, token: &str) -> Result<Principal, Refusal> {
    if token.is_empty() || token.len() > 8192 {
        return Err(Refusal::new(
            "missing",
            "the request carries no usable token",
        ));
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::new(
            "malformed",
            "the request's token is not a JWT",
        ));
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| Refusal::new("malformed", "the request's token is not a JWT"))?;
    let claims: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|_| Refusal::new("malformed", "the request's token is not a JWT"))?;
    let jti = claims["jti"].as_str().unwrap_or_default();
    if jti.is_empty()
        || jti.len() > 128
        || !jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Refusal::new(
            "malformed",
            "the request's token has no valid jti",
        ));
    }
    let bytes = store
        .get(&crate::admin::tokens::record_key(jti))
        .await
        .map_err(|e| {
            Refusal::new(
                "unavailable",
                format!("key-value unavailable while checking a token: {e}"),
            )
        })?
        .ok_or_else(|| Refusal::new("unknown", "the request's token was not minted here"))?;
    let record: TokenRecord = serde_json::from_slice(&bytes).map_err(|e| {
        Refusal::new(
            "bad_record",
            format!("the record of token {jti} is unreadable: {e}"),
        )
    })?;
    let presented = hex::encode(Sha256::digest(token.as_bytes()));
    let expected = record.token_sha256.to_ascii_lowercase();
    // Constant time: the compare must not tell how much of a hash matched.
    let same = presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(Refusal::new(
            "mismatch",
            "the request's token does not match its record",
        ));
    }
    active(record)
}

/// Whether a token record still lets its token act: not revoked, not
/// expired, started. The workflow engine acts for a submitter by its
/// token's id ([`by_id`]) and asks this before every side effect.
fn active(record: TokenRecord) -> Result<Principal, Refusal> {
    let jti = record.jti.clone();
    if record.revoked {
        return Err(Refusal::new("revoked", "the request's token is revoked"));
    }
    let now = chrono::Utc::now();
    let expires =
        chrono::DateTime::parse_from_rfc3339(&record.planned_expiration).map_err(|_| {
            Refusal::new(
                "bad_record",
                format!("the record of token {jti} has an invalid expiration"),
            )
        })?;
    if now > expires {
        return Err(Refusal::new("expired", "the request's token has expired"));
    }
    if record.delayed_start {
        if let Some(start) = record.delay_date.as_deref() {
            let start = chrono::DateTime::parse_from_rfc3339(start).map_err(|_| {
                Refusal::new(
                    "bad_record",
                    format!("the record of token {jti} has an invalid delayDate"),
                )
            })?;
            if now < start {
                return Err(Refusal::new(
                    "not_active",
                    "the request's token is not active yet",
                ));
            }
        }
    }
    Ok(Principal {
        project: record.project,
        permissions: record.permissions,
        jti: record.jti,
        username: record.username,
    })
}

/// The principal of a stored token record, by the token's id, if the token
/// may still act (the workflow engine's check before each side effect: a
/// workflow outlives its request, never its token).
pub async fn by_id(store: &dyn Store, jti: &str) -> Result<Principal, String> {
    let bytes = store
        .get(&crate::admin::tokens::record_key(jti))
        .await
        .map_err(|e| format!("key-value unavailable while checking a token: {e}"))?
        .ok_or_else(|| "the submitter's token no longer exists".to_string())?;
    let record: TokenRecord = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the record of token {jti} is unreadable: {e}"))?;
    active(record).map_err(|r| r.message)
}

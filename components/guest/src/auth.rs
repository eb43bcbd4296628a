//! The one authentication path of every protected endpoint.
//!
//! A project access token is a JWT whose claims name a record in key-value (`token/{jti}`).
//! The record holds the SHA-256 of the token as minted, so a presented token is authentic when
//! its hash equals the record's: forged, altered, other-key and `alg: none` tokens cannot
//! match, and the hot path needs no Ed25519 verification. The signature stays for parties
//! that only hold the facility's public key.
//!
//! Nothing here ever puts the token into a message.

use crate::http::Request;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use spin_sdk::key_value::Store;
use subtle::ConstantTimeEq;

use crate::time::parse_rfc3339;
use crate::ApiError;

/// The key-value store label that holds token records, and their keys: the
/// record itself is the one `s3m-wire` defines, shared with the host.
pub use s3m_wire::token::{record_key, used_key, TokenRecord, STORE};
/// The audience a token must carry when the component variable `token_audience` is unset.
pub const DEFAULT_AUDIENCE: &str = "s3m";
/// The only token type this API accepts: an OLCF project access token.
pub const TOKEN_TYPE: &str = "opat";
/// Longest Authorization value looked at; real tokens are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8192;

/// Who is calling: the token's record, checked. Its `Debug` leaves the
/// token out.
#[derive(Clone)]
pub struct Principal {
    pub jti: String,
    /// The token as the client sent it: only for the host's own check
    /// (`caller.token`); never logged, never put in an answer.
    pub token: String,
    /// `{project}_auser`, lower case.
    pub username: String,
    pub project: String,
    pub permissions: Vec<String>,
    /// The record's `plannedExpiration`, as read when the token was checked.
    pub expires: DateTime<Utc>,
    pub record: TokenRecord,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("jti", &self.jti)
            .field("username", &self.username)
            .field("project", &self.project)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

impl Principal {
    /// Ok when the token holds `permission`; else 403 naming it.
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!(
                "this token lacks the permission '{permission}' (it has: {}); mint a token with --permission {permission}",
                if self.permissions.is_empty() { "none".to_string() } else { self.permissions.join(", ") }
            )))
        }
    }

    /// Ok when the token holds any of `permissions`; else 403 naming them.
    pub fn require_any(&self, permissions: &[&str]) -> Result<(), ApiError> {
        if permissions
            .iter()
            .any(|p| self.permissions.iter().any(|q| q == p))
        {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!(
                "this token lacks a permission this endpoint needs: one of {}",
                permissions.join(", ")
            )))
        }
    }

    /// Ok when the object touched belongs to the token's project; else 403.
    pub fn require_project(&self, project: &str) -> Result<(), ApiError> {
        if self.project.eq_ignore_ascii_case(project) {
            Ok(())
        } else {
            Err(ApiError::permission_denied(format!(
                "this token is for project {}, not {project}",
                self.project
            )))
        }
    }
}

/// The claims of a project access token that the hot path reads (the signature is not
/// verified here: the record hash is what makes a token authentic).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(rename = "type")]
    token_type: Option<String>,
    aud: Option<Audience>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// `aud`: one string or a list of them. Read by hand: an untagged enum
/// first buffers the value and then builds an error message for every
/// shape that does not match, on every request.
#[derive(Debug)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Audience;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Audience, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<String>()? {
                    all.push(a);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

/// The token in the `Authorization` header: raw, or after a case-insensitive `Bearer `.
pub fn bearer_token(req: &Request) -> Result<String, ApiError> {
    let missing =
        || ApiError::unauthenticated("missing token: send the header Authorization: <token>");
    let value = req.header("authorization")?.ok_or_else(missing)?;
    let value = std::str::from_utf8(&value)
        .map_err(|_| {
            ApiError::unauthenticated("malformed token: the Authorization header is not text")
        })?
        .trim_ascii();
    // HTTP separates the scheme from the credentials with spaces
    // (RFC 9110, 11.4): ASCII whitespace, never Unicode's.
    let token = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_ascii(),
        _ => value,
    };
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_string())
}

fn malformed() -> ApiError {
    ApiError::unauthenticated(
        "malformed token: expected a project access token (a JWT: header.payload.signature)",
    )
}

fn b64url() -> GeneralPurpose {
    GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    )
}

/// A JSON object whose members are read past, not kept: the JWT header only has to be one.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AnyObject, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(V)
    }
}

/// Decodes the claims of `token` without verifying its signature.
fn decode_claims(token: &str) -> Result<Claims, ApiError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed());
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let engine = b64url();
    let header = engine.decode(header).map_err(|_| malformed())?;
    serde_json::from_slice::<AnyObject>(&header).map_err(|_| malformed())?;
    let payload = engine.decode(payload).map_err(|_| malformed())?;
    serde_json::from_slice::<Claims>(&payload).map_err(|_| malformed())
}

/// The audience tokens must carry: component variable `token_audience`, else "s3m".
fn required_audience() -> String {
    match spin_sdk::variables::get("token_audience") {
        Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
        _ => DEFAULT_AUDIENCE.to_string(),
    }
}

fn is_plain_jti(jti: &str) -> bool {
    !jti.is_empty()
        && jti.len() <= 128
        && jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn kv_unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!(
        "key-value store '{STORE}' unavailable while {what}: {e}"
    ))
}

/// Opens the key-value store of token records.
pub fn open_store() -> Result<Store, ApiError> {
    Store::open(STORE).map_err(|e| kv_unavailable("opening it", e))
}

/// Loads the record of `jti`, `None` when there is none.
pub fn load_record(store: &Store, jti: &str) -> Result<Option<TokenRecord>, ApiError> {
    let Some(bytes) = store
        .get(&record_key(jti))
        .map_err(|e| kv_unavailable("reading a token record", e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::internal(format!("the record of token {jti} is unreadable: {e}")))
}

fn record_time(jti: &str, field: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_rfc3339(value).ok_or_else(|| {
        ApiError::internal(format!(
            "the record of token {jti} has an invalid {field}: {value:?}"
        ))
    })
}

/// Consumes one-time token `jti`: true for exactly one caller, ever (atomic in the host).
fn consume_once(jti: &str) -> Result<bool, ApiError> {
    use spin_sdk::wit::wasi::keyvalue::{atomics, store};
    let bucket = store::open(STORE)
        .map_err(|e| kv_unavailable("opening it for atomics", format!("{e:?}")))?;
    let count = atomics::increment(&bucket, &used_key(jti), 1)
        .map_err(|e| kv_unavailable("consuming a one-time token", format!("{e:?}")))?;
    Ok(count == 1)
}

/// Whether `token` is the one whose SHA-256 the record holds (hex, either case), compared
/// as bytes in constant time; a recorded hash that is not 64 hex digits matches no token.
fn hash_matches(token: &str, recorded_hex: &str) -> bool {
    let mut expected = [0u8; 32];
    hex::decode_to_slice(recorded_hex.as_bytes(), &mut expected).is_ok()
        && bool::from(Sha256::digest(token.as_bytes()).as_slice().ct_eq(&expected))
}

/// Authenticates the request: the token in `Authorization`, checked against its record.
/// 401 for every way a token can be missing or invalid, 503 when key-value fails.
pub fn authenticate(req: &Request) -> Result<Principal, ApiError> {
    let token = bearer_token(req)?;
    let claims = decode_claims(&token)?;
    if claims.token_type.as_deref() != Some(TOKEN_TYPE) {
        return Err(ApiError::unauthenticated(format!(
            "invalid token: its type is not '{TOKEN_TYPE}' (a project access token)"
        )));
    }
    let audience = required_audience();
    if !claims.aud.as_ref().is_some_and(|a| a.contains(&audience)) {
        return Err(ApiError::unauthenticated(format!(
            "invalid token: it is not meant for this service (audience '{audience}')"
        )));
    }
    let now = Utc::now();
    if let Some(nbf) = claims.nbf {
        if nbf > now.timestamp() {
            let from = DateTime::<Utc>::from_timestamp(nbf, 0)
                .map(|t| format!(" (not before {})", crate::time::rfc3339(&t)));
            return Err(ApiError::unauthenticated(format!(
                "token not yet valid{}",
                from.unwrap_or_default()
            )));
        }
    }
    let jti = claims.jti.unwrap_or_default();
    if !is_plain_jti(&jti) {
        return Err(malformed());
    }
    let unknown = || {
        ApiError::unauthenticated("invalid token: this facility did not mint it, or it was deleted")
    };
    let store = open_store()?;
    let record = load_record(&store, &jti)?.ok_or_else(unknown)?;

    if !hash_matches(&token, &record.token_sha256) {
        return Err(unknown());
    }
    if record.revoked {
        return Err(ApiError::unauthenticated("token revoked"));
    }
    let expires = record_time(&jti, "plannedExpiration", &record.planned_expiration)?;
    if now > expires {
        return Err(ApiError::unauthenticated("token expired"));
    }
    if record.delayed_start {
        if let Some(delay) = record.delay_date.as_deref() {
            let start = record_time(&jti, "delayDate", delay)?;
            if now < start {
                return Err(ApiError::unauthenticated(format!(
                    "token not active until {}",
                    crate::time::rfc3339_micros(&start)
                )));
            }
        }
    }
    if record.one_time_token && !consume_once(&jti)? {
        return Err(ApiError::unauthenticated("one-time token already used"));
    }
    Ok(Principal {
        jti,
        token,
        username: record.username.clone(),
        project: record.project.clone(),
        permissions: record.permissions.clone(),
        expires,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(header: &str, payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.c2ln", e.encode(header), e.encode(payload))
    }

    #[test]
    fn decodes_olcf_claims_with_list_or_string_audience() {
        let t = jwt(
            r#"{"alg":"EdDSA"}"#,
            r#"{"description":"d","type":"opat","aud":["s3m"],"nbf":1,"iat":1,"jti":"abc-1"}"#,
        );
        let c = decode_claims(&t).unwrap();
        assert_eq!(c.token_type.as_deref(), Some("opat"));
        assert!(c.aud.unwrap().contains("s3m"));
        let t = jwt(
            r#"{"alg":"EdDSA"}"#,
            r#"{"type":"opat","aud":"s3m","jti":"x"}"#,
        );
        assert!(decode_claims(&t).unwrap().aud.unwrap().contains("s3m"));
    }

    #[test]
    fn refuses_malformed_tokens_without_echoing_them() {
        let good = jwt(
            r#"{"alg":"EdDSA"}"#,
            r#"{"type":"opat","aud":"s3m","jti":"x"}"#,
        );
        for bad in [
            "",
            "garbage",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            &good[..good.len() / 2],
            &format!("{good}.x"),
            &jwt("not json", r#"{"type":"opat"}"#),
            &jwt("[]", r#"{"type":"opat","aud":"s3m","jti":"x"}"#),
            &jwt(r#""EdDSA""#, r#"{"type":"opat","aud":"s3m","jti":"x"}"#),
            &jwt(
                r#"{"alg":"EdDSA""#,
                r#"{"type":"opat","aud":"s3m","jti":"x"}"#,
            ),
            &jwt("{}", "[1,2]"),
            &jwt("{}", r#"{"aud":5}"#),
            "\u{0}.\u{0}.\u{0}",
        ] {
            let e = decode_claims(bad).expect_err(bad);
            assert_eq!((e.status, e.code), (401, 16));
            assert!(bad.len() < 4 || !e.message.contains(bad));
        }
    }

    #[test]
    fn any_header_object_is_read_past() {
        let t = jwt(
            r#"{"alg":"EdDSA","typ":"JWT","x":{"y":[1,null,"z"]}}"#,
            r#"{"type":"opat","aud":"s3m","jti":"x"}"#,
        );
        assert_eq!(decode_claims(&t).unwrap().jti.as_deref(), Some("x"));
    }

    #[test]
    fn the_token_must_hash_to_the_recorded_digest() {
        let token = "a.b.c";
        let digest = hex::encode(Sha256::digest(token.as_bytes()));
        assert!(hash_matches(token, &digest));
        assert!(hash_matches(token, &digest.to_ascii_uppercase()));
        assert!(!hash_matches("a.b.d", &digest));
        assert!(!hash_matches(token, &digest[..62]));
        assert!(!hash_matches(token, &format!("{digest}00")));
        assert!(!hash_matches(
            token,
            &digest.replace(|c: char| c.is_ascii_digit(), "g")
        ));
        assert!(!hash_matches(token, ""));
    }

    #[test]
    fn record_tolerates_unknown_and_null_fields() {
        let r: TokenRecord = serde_json::from_str(
            r#"{"jti":"j","tokenSha256":"ab","username":"u","project":"P","permissions":null,
                "plannedExpiration":"2026-12-22T06:00:00.123456Z","description":null,
                "delayDate":null,"somethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert!(r.permissions.is_empty() && r.description.is_empty() && !r.revoked);
    }

    #[test]
    fn errors_have_the_one_shape() {
        let e = ApiError::permission_denied("no");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 7, "message": "no", "details": []})
        );
        assert_eq!(ApiError::method_not_allowed("m").code, 12);
        assert_eq!(
            (
                ApiError::unavailable("u").status,
                ApiError::unavailable("u").code
            ),
            (503, 14)
        );
    }

    #[test]
    fn jti_must_be_plain() {
        assert!(is_plain_jti("0b6c1f0e-5d7a-4c1e-9d55-2f1f6a0e9b11"));
        for bad in ["", "../x", "a/b", "a b", &"x".repeat(200)] {
            assert!(!is_plain_jti(bad));
        }
    }
}

//! The record of a project access token, under `token/{jti}` of the
//! key-value store labelled [`STORE`].
//!
//! The host writes it (`s3m token create`, `s3m token revoke`); the
//! components read it on every request and the tokens component marks it
//! revoked. Reading is lenient, so that every record either side has ever
//! written still parses: a field may be missing or `null` (it reads as empty,
//! false or zero), `extensions` may be any integer, and fields this version
//! does not know are kept in [`TokenRecord::extra`] and written back as they
//! were.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// The key-value store label that holds token records.
pub const STORE: &str = "default";

/// The key of the record of token `jti`.
pub fn record_key(jti: &str) -> String {
    format!("token/{jti}")
}

/// The key whose atomic counter consumes one-time token `jti`.
pub fn used_key(jti: &str) -> String {
    format!("token-used/{jti}")
}

/// The record of a token, as `s3m token create` writes it under `token/{jti}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenRecord {
    #[serde(deserialize_with = "null_as_default")]
    pub jti: String,
    /// Lower-case hex SHA-256 of the whole token string as minted. Not
    /// written when empty: listings clear it before they show a record.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub token_sha256: String,
    #[serde(deserialize_with = "null_as_default")]
    pub username: String,
    #[serde(deserialize_with = "null_as_default")]
    pub project: String,
    #[serde(deserialize_with = "null_as_default")]
    pub permissions: Vec<String>,
    /// RFC 3339.
    #[serde(deserialize_with = "null_as_default")]
    pub planned_expiration: String,
    #[serde(deserialize_with = "null_as_default")]
    pub security_enclave: String,
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(deserialize_with = "null_as_default")]
    pub one_time_token: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub delayed_start: bool,
    /// RFC 3339; when the token starts to work if `delayed_start`.
    pub delay_date: Option<String>,
    /// How long after minting the token starts to work, as Go writes a
    /// duration (`1h30m0s`); empty when it starts at once. Not written when
    /// empty, so records from before this field read and write back alike.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub delay_duration: String,
    #[serde(deserialize_with = "null_as_default")]
    pub owner_name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub revoked: bool,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// RFC 3339; the host always writes it, older or foreign records may not.
    pub created_at: Option<String>,
    /// How many times the token was extended. The host wrote it as an
    /// unsigned and the guests read it as a signed integer: any integer
    /// that fits an i64 reads.
    #[serde(deserialize_with = "null_as_default")]
    pub extensions: i64,
    /// Fields this version does not know, kept so that a record read and
    /// written again loses nothing.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `seconds` as Go's `time.Duration` prints it: `0s`, `45s`, `1m30s`, `2h0m0s`.
pub fn go_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the host wrote it before this crate (u32 extensions,
    /// createdAt always set).
    const HOST_WRITTEN: &str = r#"{"jti":"5b0f","tokenSha256":"ab12","username":"stf040_auser",
        "project":"STF040","permissions":["compute-ace"],
        "plannedExpiration":"2026-12-22T06:00:00.123456Z","securityEnclave":"open",
        "description":"d","oneTimeToken":false,"delayedStart":true,
        "delayDate":"2026-12-01T00:00:00.000000Z","ownerName":"me","revoked":false,
        "revokedAt":null,"createdAt":"2026-11-22T06:00:00.123456Z","extensions":0}"#;

    #[test]
    fn reads_what_the_host_wrote_and_writes_it_back_the_same() {
        let r: TokenRecord = serde_json::from_str(HOST_WRITTEN).unwrap();
        assert_eq!(r.project, "STF040");
        assert_eq!(r.created_at.as_deref(), Some("2026-11-22T06:00:00.123456Z"));
        assert_eq!(r.delay_date.as_deref(), Some("2026-12-01T00:00:00.000000Z"));
        assert!(r.delayed_start && r.extra.is_empty());
        let again: serde_json::Value = serde_json::to_value(&r).unwrap();
        let before: serde_json::Value = serde_json::from_str(HOST_WRITTEN).unwrap();
        assert_eq!(again, before);
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(7200), "2h0m0s");
        assert_eq!(go_duration(5400 + 7), "1h30m7s");
    }

    #[test]
    fn tolerates_missing_null_and_unknown_fields_and_keeps_the_unknown() {
        let r: TokenRecord = serde_json::from_str(
            r#"{"jti":"j","tokenSha256":"ab","username":"u","project":"P","permissions":null,
                "plannedExpiration":"2026-12-22T06:00:00.123456Z","description":null,
                "delayDate":null,"extensions":-1,"somethingNew":{"x":1}}"#,
        )
        .unwrap();
        assert!(r.permissions.is_empty() && r.description.is_empty() && !r.revoked);
        assert_eq!((r.created_at, r.extensions), (None, -1));
        assert_eq!(r.extra["somethingNew"], serde_json::json!({"x": 1}));
        let mut r: TokenRecord = serde_json::from_str(r#"{"somethingNew":1}"#).unwrap();
        r.revoked = true;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (&v["somethingNew"], &v["revoked"]),
            (&1.into(), &true.into())
        );
    }

    #[test]
    fn a_cleared_hash_is_not_written() {
        let mut r: TokenRecord = serde_json::from_str(HOST_WRITTEN).unwrap();
        r.token_sha256.clear();
        assert!(serde_json::to_value(&r)
            .unwrap()
            .get("tokenSha256")
            .is_none());
    }
}

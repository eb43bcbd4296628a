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

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

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
///
/// Read by hand ([`Deserialize`] below) rather than derived: a derived
/// reader with `extra` flattened first buffers the whole record into a
/// generic tree and then reads every field out of it, and every protected
/// request reads one record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub jti: String,
    /// Lower-case hex SHA-256 of the whole token string as minted. Not
    /// written when empty: listings clear it before they show a record.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_sha256: String,
    pub username: String,
    pub project: String,
    pub permissions: Vec<String>,
    /// RFC 3339.
    pub planned_expiration: String,
    pub security_enclave: String,
    pub description: String,
    pub one_time_token: bool,
    pub delayed_start: bool,
    /// RFC 3339; when the token starts to work if `delayed_start`.
    pub delay_date: Option<String>,
    /// How long after minting the token starts to work, as Go writes a
    /// duration (`1h30m0s`); empty when it starts at once. Not written when
    /// empty, so records from before this field read and write back alike.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub delay_duration: String,
    pub owner_name: String,
    pub revoked: bool,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// RFC 3339; the host always writes it, older or foreign records may not.
    pub created_at: Option<String>,
    /// How many times the token was extended. The host wrote it as an
    /// unsigned and the guests read it as a signed integer: any integer
    /// that fits an i64 reads.
    pub extensions: i64,
    /// Fields this version does not know, kept so that a record read and
    /// written again loses nothing.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for TokenRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = TokenRecord;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token record (a JSON object)")
    }

    /// Every field may be missing or `null`: it reads as empty, false or
    /// zero (`None` for the optional times). A key met twice keeps its
    /// last value; a key this version does not know goes to `extra`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TokenRecord, A::Error> {
        fn or_default<'de, A: MapAccess<'de>, T: Deserialize<'de> + Default>(
            map: &mut A,
        ) -> Result<T, A::Error> {
            Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
        }
        let mut r = TokenRecord::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Jti => r.jti = or_default(&mut map)?,
                Key::TokenSha256 => r.token_sha256 = or_default(&mut map)?,
                Key::Username => r.username = or_default(&mut map)?,
                Key::Project => r.project = or_default(&mut map)?,
                Key::Permissions => r.permissions = or_default(&mut map)?,
                Key::PlannedExpiration => r.planned_expiration = or_default(&mut map)?,
                Key::SecurityEnclave => r.security_enclave = or_default(&mut map)?,
                Key::Description => r.description = or_default(&mut map)?,
                Key::OneTimeToken => r.one_time_token = or_default(&mut map)?,
                Key::DelayedStart => r.delayed_start = or_default(&mut map)?,
                Key::DelayDate => r.delay_date = map.next_value()?,
                Key::DelayDuration => r.delay_duration = or_default(&mut map)?,
                Key::OwnerName => r.owner_name = or_default(&mut map)?,
                Key::Revoked => r.revoked = or_default(&mut map)?,
                Key::RevokedAt => r.revoked_at = map.next_value()?,
                Key::CreatedAt => r.created_at = map.next_value()?,
                Key::Extensions => r.extensions = or_default(&mut map)?,
                Key::Other(name) => {
                    let value = map.next_value()?;
                    r.extra.insert(name, value);
                }
            }
        }
        Ok(r)
    }
}

/// A record's key: one of [`TokenRecord`]'s fields (camelCase), read
/// without allocating, or another one, kept.
enum Key {
    Jti,
    TokenSha256,
    Username,
    Project,
    Permissions,
    PlannedExpiration,
    SecurityEnclave,
    Description,
    OneTimeToken,
    DelayedStart,
    DelayDate,
    DelayDuration,
    OwnerName,
    Revoked,
    RevokedAt,
    CreatedAt,
    Extensions,
    Other(String),
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(match name {
                    "jti" => Key::Jti,
                    "tokenSha256" => Key::TokenSha256,
                    "username" => Key::Username,
                    "project" => Key::Project,
                    "permissions" => Key::Permissions,
                    "plannedExpiration" => Key::PlannedExpiration,
                    "securityEnclave" => Key::SecurityEnclave,
                    "description" => Key::Description,
                    "oneTimeToken" => Key::OneTimeToken,
                    "delayedStart" => Key::DelayedStart,
                    "delayDate" => Key::DelayDate,
                    "delayDuration" => Key::DelayDuration,
                    "ownerName" => Key::OwnerName,
                    "revoked" => Key::Revoked,
                    "revokedAt" => Key::RevokedAt,
                    "createdAt" => Key::CreatedAt,
                    "extensions" => Key::Extensions,
                    other => Key::Other(other.to_string()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
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
    fn every_field_reads_back_as_written_and_none_lands_in_extra() {
        let full = TokenRecord {
            jti: "j".into(),
            token_sha256: "ab".into(),
            username: "u".into(),
            project: "P".into(),
            permissions: vec!["compute-ace".into(), "streaming".into()],
            planned_expiration: "2026-12-22T06:00:00.123456Z".into(),
            security_enclave: "open".into(),
            description: "d".into(),
            one_time_token: true,
            delayed_start: true,
            delay_date: Some("2026-12-01T00:00:00.000000Z".into()),
            delay_duration: "1h0m0s".into(),
            owner_name: "me".into(),
            revoked: true,
            revoked_at: Some("2026-12-02T00:00:00.000000Z".into()),
            created_at: Some("2026-11-22T06:00:00.123456Z".into()),
            extensions: i64::MAX,
            extra: BTreeMap::from([("later".to_string(), serde_json::json!([1, {"x": null}]))]),
        };
        let text = serde_json::to_string(&full).unwrap();
        let again: TokenRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(again, full);
        // A key met twice keeps its last value; anything but an object is refused.
        let r: TokenRecord = serde_json::from_str(r#"{"project":"A","project":"B"}"#).unwrap();
        assert_eq!(r.project, "B");
        for bad in [
            "[]",
            "1",
            r#""x""#,
            r#"{"revoked":"yes"}"#,
            r#"{"extensions":1.5}"#,
        ] {
            assert!(serde_json::from_str::<TokenRecord>(bad).is_err(), "{bad}");
        }
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

//! Project access tokens: minting, listing and revoking, on the same
//! key-value store the components read, so a token works (or stops working)
//! at once while `s3m up` serves.
//!
//! The token is an OLCF-style JWT (`type: "opat"`); everything else about it
//! is the record under `token/{jti}`, which keeps the SHA-256 of the token as
//! minted: the components' cheap authenticity check.

use crate::capabilities::key_value::Store;
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use jwt_simple::prelude::*;
use serde::{Deserialize as De, Serialize as Se};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// The permissions a token may carry.
pub const PERMISSIONS: &[&str] = &[
    "compute-ace",
    "compute-ace-readonly",
    "data-streaming",
    "workflows",
];

/// The record of a token under `token/{jti}`: one definition, in
/// `s3m-wire`, which the components read too.
pub use s3m_wire::token::{record_key, TokenRecord};

#[derive(Debug, Se, De)]
struct OpatClaims {
    description: String,
    #[serde(rename = "type")]
    kind: String,
}

pub struct NewToken {
    pub project: String,
    pub permissions: Vec<String>,
    pub description: String,
    pub owner: String,
    pub expires_in: std::time::Duration,
    pub one_time: bool,
    pub delay: Option<std::time::Duration>,
    pub audience: String,
    pub enclave: String,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Checks a project name: letters and digits, as facilities name projects.
pub fn normalize_project(project: &str) -> anyhow::Result<String> {
    let p = project.trim();
    if p.is_empty() || p.len() > 32 || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("project {project:?}: use 1 to 32 letters and digits, e.g. STF040");
    }
    Ok(p.to_ascii_uppercase())
}

/// Mints a token and writes its record; returns the token and the record.
pub async fn create(
    store: &dyn Store,
    key: &Ed25519KeyPair,
    new: NewToken,
) -> anyhow::Result<(String, TokenRecord)> {
    let project = normalize_project(&new.project)?;
    if new.permissions.is_empty() {
        bail!(
            "give at least one --permission ({})",
            PERMISSIONS.join(", ")
        );
    }
    let mut permissions: Vec<String> = Vec::new();
    for p in &new.permissions {
        if !PERMISSIONS.contains(&p.as_str()) {
            bail!(
                "unknown permission {p:?}: use one of {}",
                PERMISSIONS.join(", ")
            );
        }
        if !permissions.contains(p) {
            permissions.push(p.clone());
        }
    }
    let now = Utc::now();
    let start = now + chrono::Duration::from_std(new.delay.unwrap_or_default())?;
    let expires = start + chrono::Duration::from_std(new.expires_in)?;
    let jti = uuid::Uuid::new_v4().to_string();

    let mut claims = Claims::with_custom_claims(
        OpatClaims {
            description: new.description.clone(),
            kind: "opat".into(),
        },
        jwt_simple::prelude::Duration::from_secs(new.expires_in.as_secs().max(1)),
    )
    .with_audiences(HashSet::from([new.audience.clone()]))
    .with_jwt_id(&jti);
    // OLCF's project access tokens carry no `exp`: the record decides.
    claims.expires_at = None;
    claims.invalid_before = Some(jwt_simple::prelude::Duration::from_secs(
        start.timestamp() as u64
    ));
    let token = key
        .sign(claims)
        .map_err(|e| anyhow::anyhow!("signing the token: {e}"))?;

    let record = TokenRecord {
        jti: jti.clone(),
        token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
        username: format!("{}_auser", project.to_ascii_lowercase()),
        project,
        permissions,
        planned_expiration: rfc3339(expires),
        security_enclave: new.enclave,
        description: new.description,
        one_time_token: new.one_time,
        delayed_start: new.delay.is_some(),
        delay_date: new.delay.map(|_| rfc3339(start)),
        delay_duration: new
            .delay
            .map(|d| s3m_wire::token::go_duration(d.as_secs()))
            .unwrap_or_default(),
        owner_name: new.owner,
        revoked: false,
        revoked_at: None,
        created_at: Some(rfc3339(now)),
        extensions: 0,
        extra: Default::default(),
    };
    store
        .set(&record_key(&jti), &serde_json::to_vec(&record)?)
        .await
        .map_err(|e| anyhow::anyhow!("writing the token record: {e}"))?;
    Ok((token, record))
}

/// Every token record (without its hash), optionally of one project.
pub async fn list(store: &dyn Store, project: Option<&str>) -> anyhow::Result<Vec<TokenRecord>> {
    let project = project.map(normalize_project).transpose()?;
    let mut out = Vec::new();
    let keys = store.keys().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for key in keys.iter().filter(|k| k.starts_with("token/")) {
        let Some(bytes) = store.get(key).await.map_err(|e| anyhow::anyhow!("{e}"))? else {
            continue;
        };
        let Ok(mut record) = serde_json::from_slice::<TokenRecord>(&bytes) else {
            tracing::warn!(key, "skipping a token record that does not parse");
            continue;
        };
        if project.as_deref().is_some_and(|p| p != record.project) {
            continue;
        }
        record.token_sha256.clear();
        out.push(record);
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    Ok(out)
}

/// Revokes a token by its `jti`; every later use is refused.
pub async fn revoke(store: &dyn Store, jti: &str) -> anyhow::Result<TokenRecord> {
    let key = record_key(jti);
    let bytes = store
        .get(&key)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no token with jti {jti}: `s3m token list` shows them"))?;
    let mut record: TokenRecord = serde_json::from_slice(&bytes)?;
    if !record.revoked {
        record.revoked = true;
        record.revoked_at = Some(rfc3339(Utc::now()));
        store
            .set(&key, &serde_json::to_vec(&record)?)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    record.token_sha256.clear();
    Ok(record)
}

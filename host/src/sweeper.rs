//! Expiry for what key-value would otherwise keep for ever. Spin's
//! key-value interface has no TTL, so the host sweeps:
//!
//! - one-time-token markers (`token-used/{jti}`), once their token can no
//!   longer work (record gone, revoked or past its planned expiration): the
//!   token check refuses such a token before it looks at the marker;
//! - compute's idempotency records (`compute/idempotency/<project>/<resource>/
//!   <digest>/{claim,job,at}`), `at` being when the key was first claimed: the
//!   whole record once older than the TTL (the same key then submits anew), and
//!   a claim that never got its job (its host died mid-submit) after
//!   [`STUCK_CLAIM`], so that a retry may submit.
//!
//! Deleting is safe from any number of hosts at once: a sweep only removes
//! what no request can still need, so hosts sharing a store need no lease.

use crate::capabilities::key_value::Store;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A claim without a job this old belongs to a submit that will never finish
/// (submits time out well within it).
pub const STUCK_CLAIM: Duration = Duration::from_secs(600);

const IDEMPOTENCY: &str = "compute/idempotency/";
/// `s3m_wire::token::used_key`'s prefix.
const USED: &str = "token-used/";

#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub one_time_markers: usize,
    pub idempotency_records: usize,
    pub stuck_claims: usize,
}

/// Sweeps `store` now, then every `interval`.
pub fn spawn(store: Arc<dyn Store>, interval: Duration, idempotency_ttl: Duration) {
    tokio::spawn(async move {
        loop {
            match sweep(store.as_ref(), Utc::now(), idempotency_ttl).await {
                Ok(s) if s != Swept::default() => tracing::info!(
                    one_time_markers = s.one_time_markers,
                    idempotency_records = s.idempotency_records,
                    stuck_claims = s.stuck_claims,
                    "expired key-value entries removed"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("key-value sweep failed (retried at the next one): {e:#}"),
            }
            tokio::time::sleep(interval).await;
        }
    });
}

pub async fn sweep(
    store: &dyn Store,
    now: DateTime<Utc>,
    idempotency_ttl: Duration,
) -> anyhow::Result<Swept> {
    let kv = |e| anyhow::anyhow!("{e}");
    let mut swept = Swept::default();

    for key in store.keys_with_prefix(USED).await.map_err(kv)? {
        let Some(jti) = key.strip_prefix(USED) else {
            continue;
        };
        if !token_can_work(store, jti, now).await? {
            store.delete(&key).await.map_err(kv)?;
            swept.one_time_markers += 1;
        }
    }

    // base -> the parts of it that exist
    let keys = store.keys_with_prefix(IDEMPOTENCY).await.map_err(kv)?;
    let mut records: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for key in &keys {
        if let Some((base, part)) = key.rsplit_once('/') {
            records.entry(base).or_default().push(part);
        }
    }
    let ttl = chrono::Duration::from_std(idempotency_ttl)?;
    let stuck = chrono::Duration::from_std(STUCK_CLAIM)?;
    for (base, parts) in records {
        let at_key = format!("{base}/at");
        let Some(at) = store.get(&at_key).await.map_err(kv)? else {
            // Written right after the claim: a record without it is being
            // made now, or predates expiry; either way not ours to judge.
            continue;
        };
        let Some(at) = std::str::from_utf8(&at)
            .ok()
            .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
        else {
            continue;
        };
        let age = now - at.with_timezone(&Utc);
        if age > ttl {
            for part in ["job", "claim", "at"] {
                store.delete(&format!("{base}/{part}")).await.map_err(kv)?;
            }
            swept.idempotency_records += 1;
        } else if age > stuck && !parts.contains(&"job") && parts.contains(&"claim") {
            // Claim first, then `at`: a later retry claims and dates it anew.
            store.delete(&format!("{base}/claim")).await.map_err(kv)?;
            store.delete(&at_key).await.map_err(kv)?;
            swept.stuck_claims += 1;
        }
    }
    Ok(swept)
}

/// Whether token `jti` could still be accepted: its record exists, is not
/// revoked, and has not reached its planned expiration. An unreadable record
/// counts as able to work, so that nothing is removed on a doubt.
async fn token_can_work(store: &dyn Store, jti: &str, now: DateTime<Utc>) -> anyhow::Result<bool> {
    let Some(bytes) = store
        .get(&s3m_wire::token::record_key(jti))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    else {
        return Ok(false);
    };
    let Ok(record) = serde_json::from_slice::<s3m_wire::token::TokenRecord>(&bytes) else {
        return Ok(true);
    };
    if record.revoked {
        return Ok(false);
    }
    Ok(DateTime::parse_from_rfc3339(&record.planned_expiration)
        .map(|t| t.with_timezone(&Utc) > now)
        .unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::key_value::sqlite::{SqliteDb, SqliteStore};

    #[tokio::test]
    async fn sweeps_what_no_request_can_need_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::new(
            SqliteDb::open(&dir.path().join("kv.db")).unwrap(),
            "default",
        );
        let now = Utc::now();
        let record = |exp: DateTime<Utc>, revoked: bool| {
            serde_json::to_vec(&serde_json::json!({
                "jti": "x", "plannedExpiration": exp.to_rfc3339(), "revoked": revoked
            }))
            .unwrap()
        };
        let hour = chrono::Duration::hours(1);
        store
            .set("token/live", &record(now + hour, false))
            .await
            .unwrap();
        store
            .set("token/old", &record(now - hour, false))
            .await
            .unwrap();
        store
            .set("token/revoked", &record(now + hour, true))
            .await
            .unwrap();
        for jti in ["live", "old", "revoked", "deleted"] {
            store
                .increment(&format!("token-used/{jti}"), 1)
                .await
                .unwrap();
        }
        let at = |t: DateTime<Utc>| t.to_rfc3339().into_bytes();
        let base = |d: &str| format!("compute/idempotency/stf040/frontier/{d}");
        // fresh, with its job
        store
            .increment(&format!("{}/claim", base("a")), 1)
            .await
            .unwrap();
        store
            .set(&format!("{}/job", base("a")), b"{}")
            .await
            .unwrap();
        store
            .set(&format!("{}/at", base("a")), &at(now - hour))
            .await
            .unwrap();
        // past the TTL
        store
            .increment(&format!("{}/claim", base("b")), 1)
            .await
            .unwrap();
        store
            .set(&format!("{}/job", base("b")), b"{}")
            .await
            .unwrap();
        store
            .set(&format!("{}/at", base("b")), &at(now - hour * 25))
            .await
            .unwrap();
        // claimed 20 minutes ago, never got its job
        store
            .increment(&format!("{}/claim", base("c")), 1)
            .await
            .unwrap();
        store
            .set(
                &format!("{}/at", base("c")),
                &at(now - chrono::Duration::minutes(20)),
            )
            .await
            .unwrap();
        // claimed just now, its submit still running
        store
            .increment(&format!("{}/claim", base("d")), 1)
            .await
            .unwrap();
        store
            .set(&format!("{}/at", base("d")), &at(now))
            .await
            .unwrap();

        let swept = sweep(&store, now, Duration::from_secs(24 * 3600))
            .await
            .unwrap();
        assert_eq!(
            swept,
            Swept {
                one_time_markers: 3,
                idempotency_records: 1,
                stuck_claims: 1
            }
        );
        let mut left = store.keys().await.unwrap();
        left.sort();
        assert_eq!(
            left,
            [
                format!("{}/at", base("a")),
                format!("{}/claim", base("a")),
                format!("{}/job", base("a")),
                format!("{}/at", base("d")),
                format!("{}/claim", base("d")),
                "token-used/live".to_string(),
                "token/live".into(),
                "token/old".into(),
                "token/revoked".into(),
            ]
        );
        // A second sweep finds nothing more.
        let again = sweep(&store, now, Duration::from_secs(24 * 3600))
            .await
            .unwrap();
        assert_eq!(again, Swept::default());
    }
}

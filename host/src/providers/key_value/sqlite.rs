//! The embedded key-value backend: one SQLite file in the state directory.
//! SQLite's locking lets the token CLI write while `s3m up` serves on the
//! same file, and makes increment and compare-and-swap atomic across both.

use crate::capabilities::key_value::{KeyValueError, KvResult, Store};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A database file shared by every store label it backs.
pub struct SqliteDb {
    conn: Mutex<Connection>,
}

impl SqliteDb {
    pub fn open(path: &Path) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Token records live here: only the host's user reads them. SQLite
        // gives its -wal and -shm files the database's mode.
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    anyhow::anyhow!("cannot create key-value database {}: {e}", path.display())
                })?;
            for p in [
                path.to_path_buf(),
                path.with_extension("db-wal"),
                path.with_extension("db-shm"),
            ] {
                if p.exists() {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
                }
            }
        }
        let conn = Connection::open(path).map_err(|e| {
            anyhow::anyhow!("cannot open key-value database {}: {e}", path.display())
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS key_value (
                store TEXT NOT NULL,
                key TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            )",
        )?;
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
        }))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> KvResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| KeyValueError::Other("key-value database lock poisoned".into()))?;
        f(&mut conn).map_err(|e| KeyValueError::Other(format!("key-value database: {e}")))
    }
}

/// One label's view of the database.
pub struct SqliteStore {
    db: Arc<SqliteDb>,
    label: String,
}

impl SqliteStore {
    pub fn new(db: Arc<SqliteDb>, label: &str) -> Self {
        Self {
            db,
            label: label.to_string(),
        }
    }
}

fn get(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM key_value WHERE store = ?1 AND key = ?2")?
        .query_row(params![store, key], |row| row.get(0))
        .optional()
}

fn set(conn: &Connection, store: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO key_value (store, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![store, key, value])?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.db.with(|c| get(c, &self.label, key))
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.db.with(|c| set(c, &self.label, key, value))
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.db.with(|c| {
            c.prepare_cached("DELETE FROM key_value WHERE store = ?1 AND key = ?2")?
                .execute(params![self.label, key])
                .map(|_| ())
        })
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        self.db.with(|c| {
            let mut stmt = c.prepare_cached("SELECT key FROM key_value WHERE store = ?1")?;
            let keys = stmt
                .query_map(params![self.label], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(keys)
        })
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let mut bad = None;
        let n = self.db.with(|c| {
            // IMMEDIATE takes the write lock before reading, so two processes
            // cannot both read the same old number.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = get(&tx, &self.label, key)?;
            let old = match old.as_deref().map(parse_number) {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => {
                    bad = Some(());
                    return Ok(0);
                }
            };
            let new = old.saturating_add(delta);
            set(&tx, &self.label, key, new.to_string().as_bytes())?;
            tx.commit()?;
            Ok(new)
        })?;
        match bad {
            Some(()) => Err(KeyValueError::Other(format!(
                "key {key:?} does not hold a number"
            ))),
            None => Ok(n),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> KvResult<bool> {
        self.db.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if get(&tx, &self.label, key)?.as_deref() != expected {
                return Ok(false);
            }
            set(&tx, &self.label, key, value)?;
            tx.commit()?;
            Ok(true)
        })
    }
}

/// Counters are kept as decimal text, as Redis keeps them.
pub(crate) fn parse_number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn increment_is_exact_under_concurrency() {
        let dir = tempdir();
        let db = SqliteDb::open(&dir.join("kv.db")).unwrap();
        let store = Arc::new(SqliteStore::new(db, "default"));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.increment("n", 1).await.unwrap()
            }));
        }
        let mut seen: Vec<i64> = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.sort();
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
        assert_eq!(store.get("n").await.unwrap().unwrap(), b"20");
    }

    #[tokio::test]
    async fn compare_and_swap_checks_the_old_value() {
        let dir = tempdir();
        let store = SqliteStore::new(SqliteDb::open(&dir.join("kv.db")).unwrap(), "s");
        assert!(store.compare_and_swap("k", None, b"a").await.unwrap());
        assert!(!store.compare_and_swap("k", None, b"b").await.unwrap());
        assert!(store.compare_and_swap("k", Some(b"a"), b"c").await.unwrap());
        assert_eq!(store.get("k").await.unwrap().unwrap(), b"c");
        store.delete("k").await.unwrap();
        assert!(!store.exists("k").await.unwrap());
    }

    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let path = dir.join("kv.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = SqliteStore::new(SqliteDb::open(&path).unwrap(), "s");
        let _ = store;
        for p in [path.clone(), dir.join("kv.db-wal")] {
            if p.exists() {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", p.display());
            }
        }
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("s3m-kv-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

//! The embedded key-value backend: one SQLite file in the state directory.
//! SQLite's locking lets the token CLI write while `s3m up` serves on the
//! same file, and makes increment and compare-and-swap atomic across both.
//!
//! The file is in stock Spin's schema (`spin_key_value`, from
//! spinframework/spin `crates/key-value-spin/src/store.rs`) and counters are
//! in Spin's encoding (8-byte little-endian i64), so stock `spin up` can open
//! the same file (runtime config `[key_value_store.default] type = "spin"
//! path = "..."`) and see every token `s3m token create` mints.
//!
//! Sharing the file with stock Spin:
//! - SQLite's file locks keep both processes' writes whole, and the journal
//!   mode (WAL) is stored in the file, so Spin's connection uses WAL too; the
//!   file must be on a local file system, and Spin must run as the user that
//!   owns it (it is 0600).
//! - s3m waits up to 10 s for a lock. Spin sets no busy timeout: a Spin
//!   request that meets a write in progress (from `s3m up`, the token CLI or
//!   another Spin) fails at once with "database is locked", and Spin's
//!   increment, a DEFERRED transaction, can fail the same way when it races
//!   another writer. Nothing is lost, but under load such calls fail; Redis
//!   is the better shared backend there.
//! - Spin's increment accepts only 8-byte values (it panics on others), so
//!   incrementing a counter s3m wrote before this format as decimal text (a
//!   one-time token's `token-used/<jti>` marker holding "1") fails the
//!   request under Spin, which keeps a used token refused, until s3m
//!   increments it once and so rewrites it in Spin's form.
//! - Compare-and-swap from an absent value: Spin's swap then upserts without
//!   checking, so a racing writer's value can be overwritten; s3m's inserts
//!   only if the key is still absent. With a present value both write only
//!   if the row still holds it.

use crate::capabilities::key_value::{KeyValueError, KvResult, Store};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle read connections kept open; more readers at once open more, and
/// those beyond this many are closed when done.
const IDLE_READERS: usize = 8;

/// A database file shared by every store label it backs.
///
/// Writes go through one connection, one at a time: two writers in this
/// process then queue on a mutex rather than on SQLite's busy handler,
/// which sleeps for milliseconds. Reads each take a connection of their
/// own: in WAL mode they never wait for a writer, and (the point, issue 13)
/// the worker threads no longer take turns on one lock for every token
/// check, which cost a futex wake-up and a context switch per request.
pub struct SqliteDb {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// `None` where the wal-index cannot be read (see [`ReadCache`]).
    cache: Option<ReadCache>,
    /// Reads that reached SQLite (for tests).
    #[cfg(test)]
    sqlite_reads: std::sync::atomic::AtomicUsize,
}

/// A connection with this host's settings (the journal mode, WAL, is the
/// file's own, set once in [`SqliteDb::open`]).
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl SqliteDb {
    pub fn open(path: &Path) -> anyhow::Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Token records live here: only the host's user reads them. SQLite
        // gives its -wal and -shm files the database's mode.
        //
        // Only a file that is not there yet is opened here, never one this
        // process may already hold through SQLite: closing any descriptor of
        // a file drops every POSIX lock the process holds on it, SQLite's
        // included (see [`ReadCache::map`]).
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => anyhow::bail!("cannot create key-value database {}: {e}", path.display()),
            }
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
        let mut conn = connect(path).map_err(|e| {
            anyhow::anyhow!("cannot open key-value database {}: {e}", path.display())
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        create_and_migrate(&mut conn).map_err(|e| {
            anyhow::anyhow!("cannot prepare key-value database {}: {e}", path.display())
        })?;
        let wal = conn
            .pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0))
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("wal"));
        let cache = if wal { ReadCache::open(path) } else { None };
        if cache.is_none() {
            tracing::debug!(
                "key-value database {}: its wal-index cannot be read; every read goes to SQLite",
                path.display()
            );
        }
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            cache,
            #[cfg(test)]
            sqlite_reads: Default::default(),
        }))
    }

    /// The value of `key` in store `label`: from memory when the database
    /// has not changed since it was read, else from SQLite.
    fn get(&self, label: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        let Some(cache) = &self.cache else {
            return self.read(|c| get(c, label, key));
        };
        // Read before the value: the value is then of this version of the
        // database or a later one, and kept only for this version, so a
        // commit in between is never hidden.
        let header = cache.header();
        if let Some(header) = &header {
            if let Some(value) = cache.lookup(header, label, key) {
                return Ok(value);
            }
        }
        let value = self.read(|c| get(c, label, key))?;
        if let Some(header) = &header {
            cache.keep(header, label, key, &value);
        }
        Ok(value)
    }

    /// Runs `f` on the writer connection (every write, every transaction).
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> KvResult<T> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| KeyValueError::Other("key-value database lock poisoned".into()))?;
        f(&mut conn).map_err(db_error)
    }

    /// Runs `f`, which only reads, on a reader connection of its own.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> KvResult<T> {
        #[cfg(test)]
        self.sqlite_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let idle = self.readers.lock().ok().and_then(|mut r| r.pop());
        let conn = match idle {
            Some(c) => c,
            None => connect(&self.path).map_err(db_error)?,
        };
        let out = f(&conn).map_err(db_error);
        if let Ok(mut readers) = self.readers.lock() {
            if readers.len() < IDLE_READERS {
                readers.push(conn);
            }
        }
        out
    }
}

/// Single-key reads answered from memory while the database is unchanged,
/// so that a token check does not take SQLite's WAL read lock (two `fcntl`
/// calls and a mutex) and run a query: about 11 µs of each authenticated
/// request (issue 13).
///
/// How "unchanged" is known, exactly and across processes (the token CLI,
/// another s3m, stock Spin): in WAL mode SQLite keeps the wal-index header
/// at the start of the database's `-shm` file, two copies of 48 bytes that
/// every commit rewrites before it returns, second copy first (its
/// `iChange` counts transactions; <https://www.sqlite.org/walformat.html>).
/// A read takes the header from the file's first page, mapped into memory
/// (no system call, no lock), and uses it only when both copies agree, read
/// first copy first, as SQLite's own readers do. A value is kept for the
/// header read before it was fetched and answered only while the header is
/// still that one, so a commit, by anyone, empties the cache at the next
/// read. A database not in WAL mode, or a header of an unknown version,
/// is never cached.
///
/// The one writer this cannot see is a connection that keeps the wal-index
/// in its own heap memory instead (`PRAGMA locking_mode=EXCLUSIVE` before
/// it first reads the file); such a connection also locks every other one
/// out of the file, s3m's uncached reads included, so do not open the
/// key-value file that way while s3m serves it.
///
/// The mapping: SQLite's own connections in this process map the same
/// file's pages to read the wal-index, so a `-shm` file truncated under a
/// running s3m (which SQLite itself never does while a connection of this
/// process holds its lock, which is why [`ReadCache::map`] never closes the
/// descriptor it maps) would fault SQLite's reads as it faults this one.
/// It replaced a `pread` per read: about 5% of the CPU of a token check
/// (`bench_compare --baseline`, README, Performance).
struct ReadCache {
    shm: memmap2::Mmap,
    state: Mutex<CacheState>,
}

/// The wal-index header's size (one copy).
const WAL_HEADER: usize = 48;
/// Its `iVersion`.
const WAL_INDEX_VERSION: u32 = 3_007_000;
/// Bounds of what is kept: values larger than this are not.
const CACHE_MAX_VALUE: usize = 16 << 10;
const CACHE_MAX_BYTES: usize = 8 << 20;
const CACHE_MAX_ENTRIES: usize = 4096;

#[derive(Default)]
struct CacheState {
    /// The header the entries were read at.
    header: Option<[u8; WAL_HEADER]>,
    /// Store label -> key -> value (None: no such key).
    entries: HashMap<String, HashMap<String, Option<Vec<u8>>>>,
    count: usize,
    bytes: usize,
}

impl ReadCache {
    fn open(db: &Path) -> Option<Self> {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        let shm = Self::map(Path::new(&shm))?;
        let cache = Self {
            shm,
            state: Mutex::new(CacheState::default()),
        };
        cache.header()?;
        Some(cache)
    }

    /// The first 2 * [`WAL_HEADER`] bytes of the `-shm` file at `path`,
    /// mapped; `None` when the file is shorter (SQLite's wal-index is at
    /// least one 32 KiB region once a connection has read in WAL mode).
    ///
    /// The descriptor the map is made from is never closed: closing any
    /// descriptor of a file drops every POSIX lock the process holds on it,
    /// and SQLite's connections in this process hold a read lock on the
    /// `-shm` file's DMS byte for as long as they are open. Without that
    /// lock, the next connection of another process (the token CLI) takes
    /// itself for the file's first user and resets the wal-index: it
    /// truncates the file under every map of it (a read in that moment is
    /// a SIGBUS) and rebuilds it while this process's readers use it. So
    /// the process keeps one descriptor per `-shm` file it maps, found
    /// again by device and inode, until it exits.
    fn map(path: &Path) -> Option<memmap2::Mmap> {
        use std::os::unix::fs::MetadataExt;
        static KEPT: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
        let mut kept = KEPT.lock().ok()?;
        let meta = std::fs::metadata(path).ok()?;
        let at = match kept.iter().position(|f| {
            f.metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
        }) {
            Some(at) => at,
            None => {
                kept.push(std::fs::File::open(path).ok()?);
                kept.len() - 1
            }
        };
        let file = &kept[at];
        if file.metadata().ok()?.len() < 2 * WAL_HEADER as u64 {
            return None;
        }
        // SAFETY: the map is read only through `header`, with volatile
        // reads of plain bytes that other processes may be writing (as
        // SQLite's readers read it); see the type's note on truncation.
        unsafe {
            memmap2::MmapOptions::new()
                .len(2 * WAL_HEADER)
                .map(file)
                .ok()
        }
    }

    /// The header as it is now, or `None` while a commit writes it (the
    /// copies differ) or when it is not one this code knows.
    fn header(&self) -> Option<[u8; WAL_HEADER]> {
        let base = self.shm.as_ptr().cast::<[u8; WAL_HEADER]>();
        // SAFETY: the map is 2 * WAL_HEADER bytes long, and any bytes are a
        // valid [u8; N]. Commits write the second copy, then the first;
        // reading the first, then the second, sees them equal only when
        // no commit was under way between the two reads.
        let (first, second) = unsafe {
            let first = std::ptr::read_volatile(base);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            (first, std::ptr::read_volatile(base.add(1)))
        };
        let version = u32::from_ne_bytes(first[..4].try_into().ok()?);
        // isInit, the 13th byte: the header has been written.
        if first != second || version != WAL_INDEX_VERSION || first[12] != 1 {
            return None;
        }
        Some(first)
    }

    fn lookup(&self, header: &[u8; WAL_HEADER], label: &str, key: &str) -> Option<Option<Vec<u8>>> {
        let state = self.state.lock().ok()?;
        if state.header.as_ref() != Some(header) {
            return None;
        }
        state.entries.get(label)?.get(key).cloned()
    }

    fn keep(&self, header: &[u8; WAL_HEADER], label: &str, key: &str, value: &Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if size > CACHE_MAX_VALUE {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.header.as_ref() != Some(header)
            || state.count >= CACHE_MAX_ENTRIES
            || state.bytes + size > CACHE_MAX_BYTES
        {
            *state = CacheState {
                header: Some(*header),
                ..Default::default()
            };
        }
        let old = state
            .entries
            .entry(label.to_string())
            .or_default()
            .insert(key.to_string(), value.clone());
        if old.is_none() {
            state.count += 1;
            state.bytes += size;
        }
    }
}

fn db_error(e: rusqlite::Error) -> KeyValueError {
    KeyValueError::Other(format!("key-value database: {e}"))
}

/// Creates Spin's table and moves the rows of the table older s3m versions
/// used (`key_value`, same columns) into it, then drops the old table: one
/// IMMEDIATE transaction, so concurrent opens (the token CLI and `s3m up`)
/// migrate once, and a second open finds nothing to do. A row Spin already
/// holds under the same store and key wins. Values are copied as blobs, the
/// type Spin reads.
fn create_and_migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Stock Spin's statement, column for column.
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS spin_key_value (
            store TEXT NOT NULL,
            key   TEXT NOT NULL,
            value BLOB NOT NULL,

            PRIMARY KEY (store, key)
        )",
    )?;
    let old: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'key_value')",
        [],
        |row| row.get(0),
    )?;
    if old {
        tx.execute_batch(
            "INSERT OR IGNORE INTO spin_key_value (store, key, value)
                 SELECT store, key, CAST(value AS BLOB) FROM key_value;
             DROP TABLE key_value;",
        )?;
    }
    tx.commit()
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
    conn.prepare_cached("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")?
        .query_row(params![store, key], |row| row.get(0))
        .optional()
}

fn set(conn: &Connection, store: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![store, key, value])?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.db.get(&self.label, key)
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.db.with(|c| set(c, &self.label, key, value))
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.db.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .execute(params![self.label, key])
                .map(|_| ())
        })
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        self.db.read(|c| {
            let mut stmt = c.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1")?;
            let keys = stmt
                .query_map(params![self.label], |row| row.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(keys)
        })
    }

    async fn keys_with_prefix(&self, prefix: &str) -> KvResult<Vec<String>> {
        // A range of the (store, key) primary key: keys compare as bytes,
        // and no UTF-8 key that starts with `prefix` sorts after
        // `prefix` + U+10FFFF.
        let end = format!("{prefix}\u{10FFFF}");
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key FROM spin_key_value WHERE store = ?1 AND key >= ?2 AND key < ?3",
            )?;
            let keys = stmt
                .query_map(params![self.label, prefix, end], |row| row.get(0))?
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
            let old = match old.as_deref().map(decode_counter) {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => {
                    bad = Some(());
                    return Ok(0);
                }
            };
            let new = old.saturating_add(delta);
            // Spin's encoding, whatever form the old value had.
            set(&tx, &self.label, key, &new.to_le_bytes())?;
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
        // Stricter than Spin's swap when `expected` is None (see the module
        // comment); the same when it is Some.
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

/// Reads a counter. Spin writes 8-byte little-endian i64s; s3m before the
/// Spin schema wrote decimal text, as Redis keeps counters. An 8-byte value
/// that is decimal text (an optional '-' and digits) is read as text: the
/// only little-endian numbers that look like that have a digit as their top
/// byte, so are above 3.4e18, which no counter here reaches.
pub(crate) fn decode_counter(bytes: &[u8]) -> Option<i64> {
    match <[u8; 8]>::try_from(bytes) {
        Ok(le) if !is_decimal_text(bytes) => Some(i64::from_le_bytes(le)),
        _ => parse_number(bytes),
    }
}

fn is_decimal_text(bytes: &[u8]) -> bool {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Decimal text, as older s3m versions (and Redis) keep counters.
pub(crate) fn parse_number(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_with_prefix_is_that_prefix_of_that_store_only() {
        let dir = tempdir();
        let db = SqliteDb::open(&dir.join("kv.db")).unwrap();
        let store = SqliteStore::new(db.clone(), "default");
        let other = SqliteStore::new(db, "other");
        for k in [
            "brokers/cluster/a",
            "brokers/cluster/é",
            "brokers/clusterx",
            "brokers/cluster",
            "a",
        ] {
            store.set(k, b"1").await.unwrap();
        }
        other.set("brokers/cluster/b", b"1").await.unwrap();
        let mut keys = store.keys_with_prefix("brokers/cluster/").await.unwrap();
        keys.sort();
        assert_eq!(keys, ["brokers/cluster/a", "brokers/cluster/é"]);
        assert!(store.keys_with_prefix("zzz").await.unwrap().is_empty());
        assert_eq!(store.keys_with_prefix("").await.unwrap().len(), 5);
    }

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
        assert_eq!(store.get("n").await.unwrap().unwrap(), 20i64.to_le_bytes());
    }

    #[tokio::test]
    async fn reads_see_each_write_at_once_and_never_wait_for_a_writer() {
        let dir = tempdir();
        let path = dir.join("kv.db");
        let store = SqliteStore::new(SqliteDb::open(&path).unwrap(), "s");
        store.set("k", b"a").await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        // Another process (the token CLI, say) in the middle of a write.
        let mut other = Connection::open(&path).unwrap();
        let tx = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "UPDATE spin_key_value SET value = ?1 WHERE store = 's' AND key = 'k'",
            params![&b"b"[..]],
        )
        .unwrap();
        // Readers see the last commit and do not wait (the busy timeout is 10 s).
        for _ in 0..3 {
            let read = tokio::time::timeout(Duration::from_secs(2), store.get("k")).await;
            assert_eq!(read.unwrap().unwrap().as_deref(), Some(&b"a"[..]));
        }
        tx.commit().unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        store.delete("k").await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        assert!(store.keys().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_cached_read_sees_every_commit_of_any_connection_at_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempdir();
        let path = dir.join("kv.db");
        let db = SqliteDb::open(&path).unwrap();
        assert!(db.cache.is_some(), "a WAL database's reads are cached");
        let store = SqliteStore::new(db.clone(), "s");
        let other_label = SqliteStore::new(db.clone(), "t");
        store.set("k", b"a").await.unwrap();
        other_label.set("k", b"other").await.unwrap();
        let reads = || db.sqlite_reads.load(Relaxed);
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
        let before = reads();
        for _ in 0..5 {
            assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"a"[..]));
            assert!(store.exists("k").await.unwrap());
        }
        assert_eq!(reads(), before, "an unchanged database is read from memory");
        // Labels are apart, and an absent key is cached as absent.
        assert_eq!(
            other_label.get("k").await.unwrap().as_deref(),
            Some(&b"other"[..])
        );
        assert_eq!(store.get("none").await.unwrap(), None);
        assert_eq!(store.get("none").await.unwrap(), None);

        // Another connection (as the token CLI or another host would) commits:
        // the next read sees it, whatever this one had kept.
        let other = Connection::open(&path).unwrap();
        other
            .execute(
                "UPDATE spin_key_value SET value = ?1 WHERE store = 's' AND key = 'k'",
                params![&b"b"[..]],
            )
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
        other
            .execute(
                "INSERT INTO spin_key_value (store, key, value) VALUES ('s', 'none', x'01')",
                [],
            )
            .unwrap();
        assert_eq!(
            store.get("none").await.unwrap().as_deref(),
            Some(&[1u8][..])
        );
        other
            .execute(
                "DELETE FROM spin_key_value WHERE store = 's' AND key = 'k'",
                [],
            )
            .unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        // A write in progress is not seen until it commits, then at once.
        let mut other = other;
        let tx = other
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES ('s', 'k', x'02')",
            [],
        )
        .unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
        tx.commit().unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&[2u8][..]));
        // This host's own writes, and a checkpoint that resets the WAL.
        store.set("k", b"c").await.unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"c"[..]));
        other
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"c"[..]));
        other
            .execute(
                "UPDATE spin_key_value SET value = x'03' WHERE store = 's' AND key = 'k'",
                [],
            )
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&[3u8][..]));
    }

    #[tokio::test]
    async fn the_wal_index_header_is_used_only_when_whole_and_known() {
        let dir = tempdir();
        let path = dir.join("kv.db");
        let db = SqliteDb::open(&path).unwrap();
        let store = SqliteStore::new(db.clone(), "s");
        store.set("k", b"a").await.unwrap();
        // Entries answer only for the header they were kept at.
        let mut cache = ReadCache::open(&path).unwrap();
        let header = cache.header().unwrap();
        cache.keep(&header, "s", "k", &Some(b"a".to_vec()));
        assert_eq!(cache.lookup(&header, "s", "k"), Some(Some(b"a".to_vec())));
        let mut changed = header;
        changed[8] ^= 1; // iChange
        assert_eq!(cache.lookup(&changed, "s", "k"), None);
        // An unknown version or an unwritten header is not used.
        let shm = dir.join("fake-shm");
        let mut bytes = [0u8; 2 * WAL_HEADER];
        bytes[..4].copy_from_slice(&WAL_INDEX_VERSION.to_ne_bytes());
        bytes[WAL_HEADER..WAL_HEADER + 4].copy_from_slice(&WAL_INDEX_VERSION.to_ne_bytes());
        std::fs::write(&shm, bytes).unwrap();
        cache.shm = ReadCache::map(&shm).unwrap();
        assert_eq!(cache.header(), None, "isInit is 0");
        bytes[12] = 1;
        bytes[WAL_HEADER + 12] = 1;
        bytes[20] = 7; // the copies differ: a commit is writing it
        std::fs::write(&shm, bytes).unwrap();
        assert_eq!(cache.header(), None);
        bytes[WAL_HEADER + 20] = 7;
        std::fs::write(&shm, bytes).unwrap();
        assert!(cache.header().is_some());
        bytes[0] ^= 1;
        bytes[WAL_HEADER] ^= 1;
        std::fs::write(&shm, bytes).unwrap();
        assert_eq!(cache.header(), None, "an unknown version");
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

    #[tokio::test]
    async fn increment_reads_spin_little_endian_counters() {
        let dir = tempdir();
        let path = dir.join("kv.db");
        let store = SqliteStore::new(SqliteDb::open(&path).unwrap(), "default");
        // As stock Spin writes a counter, straight into its table.
        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES ('default', 'c', ?1)",
            params![41i64.to_le_bytes()],
        )
        .unwrap();
        raw.execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES ('default', 'neg', ?1)",
            params![(-5i64).to_le_bytes()],
        )
        .unwrap();
        drop(raw);
        assert_eq!(store.increment("c", 1).await.unwrap(), 42);
        assert_eq!(store.get("c").await.unwrap().unwrap(), 42i64.to_le_bytes());
        assert_eq!(store.increment("neg", 2).await.unwrap(), -3);
        // A fresh counter is written in Spin's form too.
        assert_eq!(store.increment("fresh", 7).await.unwrap(), 7);
        assert_eq!(
            store.get("fresh").await.unwrap().unwrap(),
            7i64.to_le_bytes()
        );
    }

    #[tokio::test]
    async fn increment_reads_decimal_counters_of_older_s3m() {
        let dir = tempdir();
        let store = SqliteStore::new(SqliteDb::open(&dir.join("kv.db")).unwrap(), "default");
        // A one-time token's marker, as s3m wrote it before.
        store.set("token-used/j1", b"1").await.unwrap();
        assert_eq!(store.increment("token-used/j1", 1).await.unwrap(), 2);
        assert_eq!(
            store.get("token-used/j1").await.unwrap().unwrap(),
            2i64.to_le_bytes()
        );
        // Eight bytes of decimal text are text, not a little-endian number.
        store.set("eight", b"12345678").await.unwrap();
        assert_eq!(store.increment("eight", 1).await.unwrap(), 12345679);
        store.set("negative", b"-1234567").await.unwrap();
        assert_eq!(store.increment("negative", 1).await.unwrap(), -1234566);
    }

    #[tokio::test]
    async fn increment_refuses_a_value_that_is_no_number() {
        let dir = tempdir();
        let store = SqliteStore::new(SqliteDb::open(&dir.join("kv.db")).unwrap(), "default");
        for value in [&b"not a number"[..], b"", b"12x", b"\xff\xfe"] {
            store.set("k", value).await.unwrap();
            let err = store.increment("k", 1).await.unwrap_err();
            assert!(
                err.to_string().contains("does not hold a number"),
                "{value:?}: {err}"
            );
            // Left as it was.
            assert_eq!(store.get("k").await.unwrap().unwrap(), value);
        }
    }

    #[test]
    fn counters_decode_in_both_forms() {
        assert_eq!(decode_counter(&1i64.to_le_bytes()), Some(1));
        assert_eq!(decode_counter(&i64::MIN.to_le_bytes()), Some(i64::MIN));
        assert_eq!(decode_counter(b"1"), Some(1));
        assert_eq!(decode_counter(b"00000007"), Some(7));
        assert_eq!(decode_counter(b"-9"), Some(-9));
        assert_eq!(
            decode_counter(b"abcdefgh"),
            Some(i64::from_le_bytes(*b"abcdefgh"))
        );
        assert_eq!(decode_counter(b"abc"), None);
    }

    #[tokio::test]
    async fn an_old_key_value_table_is_moved_into_spins_table() {
        let dir = tempdir();
        let path = dir.join("kv.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE key_value (
                    store TEXT NOT NULL,
                    key TEXT NOT NULL,
                    value BLOB NOT NULL,
                    PRIMARY KEY (store, key)
                );
                INSERT INTO key_value VALUES ('default', 'token/j1', X'7B7D');
                INSERT INTO key_value VALUES ('default', 'token-used/j2', '1'); -- text: cast to a blob
                INSERT INTO key_value VALUES ('other', 'k', X'6F6C64');
                CREATE TABLE spin_key_value (
                    store TEXT NOT NULL,
                    key TEXT NOT NULL,
                    value BLOB NOT NULL,
                    PRIMARY KEY (store, key)
                );
                INSERT INTO spin_key_value VALUES ('other', 'k', X'7370696E');",
            )
            .unwrap();
        }
        let tables = |path: &Path| -> Vec<String> {
            let c = Connection::open(path).unwrap();
            let mut stmt = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            stmt.query_map([], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        for _ in 0..2 {
            // The second open finds nothing left to migrate.
            let db = SqliteDb::open(&path).unwrap();
            assert_eq!(tables(&path), vec!["spin_key_value".to_string()]);
            let default = SqliteStore::new(db.clone(), "default");
            let other = SqliteStore::new(db, "other");
            assert_eq!(default.get("token/j1").await.unwrap().unwrap(), b"{}");
            let mut keys = default.keys().await.unwrap();
            keys.sort();
            assert_eq!(keys, ["token-used/j2", "token/j1"]);
            // A row Spin already held wins over the old one.
            assert_eq!(other.get("k").await.unwrap().unwrap(), b"spin");
        }
        let store = SqliteStore::new(SqliteDb::open(&path).unwrap(), "default");
        assert_eq!(store.increment("token-used/j2", 1).await.unwrap(), 2);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("s3m-kv-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

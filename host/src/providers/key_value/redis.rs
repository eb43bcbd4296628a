//! The shared key-value backend: a Redis server, so that several s3m hosts
//! behind one load balancer see the same tokens and records.

use crate::capabilities::key_value::{KeyValueError, KvResult, Store};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

pub struct RedisStore {
    conn: ConnectionManager,
}

fn other(e: redis::RedisError) -> KeyValueError {
    KeyValueError::Other(format!("redis: {e}"))
}

impl RedisStore {
    /// Connects at once, so a wrong URL stops the host at start-up.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("key-value redis url {}: {e}", redact(url)))?;
        let conn = ConnectionManager::new(client).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the key-value redis at {}: {e}; start redis-server or fix runtime-config.toml",
                redact(url)
            )
        })?;
        Ok(Self { conn })
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

const CAS_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= false then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1
"#;

impl RedisStore {
    /// Every key matching the glob `pattern`, by SCAN (never KEYS, which
    /// blocks the server).
    async fn scan(&self, pattern: &str) -> KvResult<Vec<String>> {
        let mut conn = self.conn.clone();
        #[allow(deprecated)]
        let mut iter: redis::AsyncIter<String> = conn.scan_match(pattern).await.map_err(other)?;
        let mut keys = Vec::new();
        while let Some(k) = futures::StreamExt::next(&mut iter).await {
            keys.push(k);
        }
        Ok(keys)
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.conn.clone().get(key).await.map_err(other)
    }

    async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        self.conn.clone().set(key, value).await.map_err(other)
    }

    async fn delete(&self, key: &str) -> KvResult<()> {
        self.conn.clone().del(key).await.map_err(other)
    }

    async fn exists(&self, key: &str) -> KvResult<bool> {
        self.conn.clone().exists(key).await.map_err(other)
    }

    async fn keys(&self) -> KvResult<Vec<String>> {
        self.scan("*").await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> KvResult<Vec<String>> {
        // SCAN's MATCH is a glob: the prefix's own glob characters are escaped.
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        self.scan(&pattern).await
    }

    async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        self.conn.clone().incr(key, delta).await.map_err(other)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> KvResult<bool> {
        let wrote: i64 = redis::Script::new(CAS_SCRIPT)
            .key(key)
            .arg(if expected.is_none() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(other)?;
        Ok(wrote == 1)
    }
}

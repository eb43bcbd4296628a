//! Key-value backends: an embedded SQLite file (the default) and Redis.

pub mod redis;
pub mod sqlite;

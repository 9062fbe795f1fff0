//! Shared by the integration tests: the test server's URL, fresh prefixes, and
//! best-effort clean-up of the keys a test wrote.

#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use webhook_store_redis::deadpool_redis::redis;

/// The Redis to test against: `WEBHOOK_TEST_REDIS_URL`, else `REDIS_URL`. Fails the
/// test when neither is set: these tests never skip silently.
pub fn redis_url() -> String {
    std::env::var("WEBHOOK_TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| {
            panic!(
                "webhook-store-redis tests need a Redis server: set WEBHOOK_TEST_REDIS_URL \
                 (or REDIS_URL), e.g. WEBHOOK_TEST_REDIS_URL=redis://127.0.0.1:6379/"
            )
        })
}

/// A prefix no other test run uses.
pub fn fresh_prefix(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "whtest:{tag}:{}:{nanos}:{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every key under the registered prefixes when dropped, even when the test
/// panicked (best effort: errors are ignored).
pub struct Cleanup {
    url: String,
    prefixes: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefixes: Mutex::default(),
        }
    }

    /// A fresh prefix, deleted on drop.
    pub fn prefix(&self, tag: &str) -> String {
        let prefix = fresh_prefix(tag);
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(prefix.clone());
        prefix
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefixes = std::mem::take(
            &mut *self
                .prefixes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let _ = delete_prefixes(&self.url, &prefixes);
    }
}

fn delete_prefixes(url: &str, prefixes: &[String]) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    for prefix in prefixes {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)?;
            if !keys.is_empty() {
                redis::cmd("UNLINK").arg(&keys).exec(&mut conn)?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

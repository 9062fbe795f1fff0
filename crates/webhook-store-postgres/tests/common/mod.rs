//! Shared by the integration tests: the database URL, fresh schemas, and their cleanup.

#![allow(dead_code, unreachable_pub)]

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use webhook_store_postgres::{PostgresOptions, PostgresStore};

/// The test database: `WEBHOOK_TEST_POSTGRES_URL`, else `DATABASE_URL`. Fails the test
/// when neither is set: these tests never skip silently.
pub fn database_url() -> String {
    std::env::var("WEBHOOK_TEST_POSTGRES_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "the PostgreSQL store tests need a database: set WEBHOOK_TEST_POSTGRES_URL \
                 (or DATABASE_URL), e.g. postgres://postgres@127.0.0.1:5432/test"
            )
        })
}

/// A schema name no other test uses: `wh_test_<16 random hex digits>`.
pub fn fresh_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("wh_test_{:016x}", hasher.finish())
}

/// Hands out stores on fresh schemas and drops those schemas (best effort) when it is
/// dropped, also when a test panics.
pub struct Schemas {
    url: String,
    names: Mutex<Vec<String>>,
}

impl Schemas {
    pub fn new() -> Self {
        Self {
            url: database_url(),
            names: Mutex::new(Vec::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new schema name, dropped with `self`.
    pub fn name(&self) -> String {
        let name = fresh_schema();
        self.names.lock().unwrap().push(name.clone());
        name
    }

    /// Options for `schema`, with a small pool.
    pub fn options(schema: &str) -> PostgresOptions {
        PostgresOptions::default()
            .with_schema(schema)
            .with_pool_size(4)
    }

    /// A store on `schema`, with its own pool.
    pub async fn store_on(&self, schema: &str) -> PostgresStore {
        PostgresStore::connect_with(&self.url, Self::options(schema))
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database: {e}"))
    }

    /// A store on a fresh schema.
    pub async fn store(&self) -> PostgresStore {
        let schema = self.name();
        self.store_on(&schema).await
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        let url = self.url.clone();
        // Drop may run inside a runtime: do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(connection);
                for name in names {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

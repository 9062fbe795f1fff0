//! Versioned schema migrations, embedded in the crate and applied at start-up.

use deadpool_postgres::Client;
use webhook_core::Result;

use crate::error::Redactor;

/// One embedded migration.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Its version: applied in increasing order, each once per schema.
    pub version: i32,
    /// A short name, recorded in `schema_migrations`.
    pub name: &'static str,
    /// The SQL, run with `search_path` set to the store's schema.
    pub sql: &'static str,
}

/// Every migration this build knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "priority",
        sql: include_str!("../migrations/0002_priority.sql"),
    },
    Migration {
        version: 3,
        name: "in_flight",
        sql: include_str!("../migrations/0003_in_flight.sql"),
    },
];

/// The schema version this build expects: the last of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The advisory lock key that serializes migrations of `schema`: FNV-1a (64 bit) of
/// `webhook-store-postgres:<schema>`.
pub(crate) fn lock_key(schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "webhook-store-postgres:".bytes().chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Creates the schema if needed and applies the migrations it lacks, in one
/// transaction that holds `pg_advisory_xact_lock` so concurrent start-ups take turns.
/// Returns the versions applied now.
pub(crate) async fn run(
    client: &mut Client,
    schema: &str,
    quoted: &str,
    redactor: &Redactor,
) -> Result<Vec<i32>> {
    let db = |e: tokio_postgres::Error| redactor.db(&e);
    // READ COMMITTED whatever the database's default: each statement after the lock
    // then sees what the process that held it before committed (under REPEATABLE READ
    // the snapshot would predate the wait, and the migrations would run twice).
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(db)?;
    // Create the schema only when missing: CREATE SCHEMA IF NOT EXISTS would still need
    // the CREATE privilege on the database.
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(db)?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {quoted}"))
            .await
            .map_err(db)?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"
    ))
    .await
    .map_err(db)?;
    let applied: Vec<i32> = tx
        .query(
            &format!("SELECT version FROM {quoted}.schema_migrations"),
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let mut now_applied = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO {quoted}"))
            .await
            .map_err(db)?;
        tx.batch_execute(migration.sql).await.map_err(db)?;
        tx.execute(
            &format!("INSERT INTO {quoted}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(db)?;
        now_applied.push(migration.version);
    }
    tx.commit().await.map_err(db)?;
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_order_and_named_by_their_files() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
        assert_eq!(SCHEMA_VERSION, MIGRATIONS.len() as i32);
    }

    #[test]
    fn lock_keys_differ_by_schema() {
        assert_ne!(lock_key("webhook"), lock_key("webhook2"));
        assert_eq!(lock_key("webhook"), lock_key("webhook"));
    }
}

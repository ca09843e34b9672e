//! The state DB the unit tests use: SQLite in the test's directory, or, when
//! `RDBVAULT_TEST_PG_URL` names a PostgreSQL server (the second pass of `scripts/test.sh`), a
//! fresh database of its own on that server. The same tests run on both backends.

use super::Store;
use crate::config::StateConfig;
use sqlx::Connection as _;
use std::path::Path;
use std::time::Duration;

/// The server of the PostgreSQL pass, if this is one.
pub fn pg_server() -> Option<String> {
    std::env::var("RDBVAULT_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// A new empty database on `server` (a URL whose user may create databases); its URL.
pub async fn new_pg_database(server: &str) -> String {
    let name = format!("rdbvault_t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&name);
    url.to_string()
}

/// A fresh state DB for one test: `dir/state.db`, or a new PostgreSQL database.
pub async fn temp_store(dir: &Path) -> Store {
    temp_stores(dir, 1).await.remove(0)
}

/// `n` handles on one fresh state DB (each its own pool, as separate processes or replicas
/// would have): SQLite's `dir/state.db`, or one new PostgreSQL database.
pub async fn temp_stores(dir: &Path, n: usize) -> Vec<Store> {
    let state = StateConfig {
        path: dir.join("state.db"),
        url: match pg_server() {
            Some(server) => Some(new_pg_database(&server).await),
            None => None,
        },
        password_file: None,
        job_lease: Duration::from_secs(60),
    };
    let mut stores = Vec::with_capacity(n);
    for _ in 0..n {
        stores.push(Store::connect(&state).await.unwrap());
    }
    stores
}

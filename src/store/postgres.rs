//! Opening a PostgreSQL state DB (`state.url`), for replicas that share one database.
//!
//! The password comes from `state.password_file`, else `PGPASSWORD` (or `~/.pgpass`), never from
//! the URL, and never appears in a message: [`redacted`] is the URL every error and log shows.
//! Migrations (`migrations/postgres/`) run under sqlx's advisory lock, so replicas starting
//! together apply them once; a read-only open sets `default_transaction_read_only`, so a command
//! that only looks cannot write by mistake.

use super::sql::Db;
use super::{Error, Result, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

/// The URL without a password or query string, for messages.
pub fn redacted(url: &str) -> String {
    crate::config::redacted_url(url)
}

/// Connects, then migrates (`read_only`: checks the schema instead).
pub(super) async fn open(
    url: &str,
    password_file: Option<&Path>,
    read_only: bool,
) -> Result<Store> {
    let at = redacted(url);
    let connect_failed = |source: sqlx::Error| Error::Connect {
        url: at.clone(),
        source,
    };
    let mut options = PgConnectOptions::from_str(url)
        .map_err(connect_failed)?
        .application_name("rdbvault");
    if let Some(file) = password_file {
        let password =
            crate::config::credentials::read_secret_file(file).map_err(|e| Error::Connect {
                url: at.clone(),
                source: sqlx::Error::Configuration(format!("state.password_file: {e}").into()),
            })?;
        options = options.password(&password);
    }
    // A transaction left open by a stalled process must not hold row locks for ever.
    let mut settings = vec![("idle_in_transaction_session_timeout", "60s")];
    if read_only {
        settings.push(("default_transaction_read_only", "on"));
    }
    options = options.options(settings);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .map_err(connect_failed)?;
    let store = Store {
        db: Db::Postgres(pool.clone()),
        at: at.clone(),
        read_only,
    };
    let migrator = sqlx::migrate!("./migrations/postgres");
    if read_only {
        if let Err(e) = store.check_schema(&migrator).await {
            store.close().await;
            return Err(e);
        }
    } else if let Err(source) = migrator.run(&pool).await {
        // Closing ends the session, which frees sqlx's advisory lock: a failed migration
        // returns before unlocking, and a lock held by a pooled connection would block every
        // other replica's start.
        store.close().await;
        return Err(Error::Migrate { at, source });
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redacted_url_keeps_no_password_and_no_query() {
        assert_eq!(
            super::redacted(
                "postgres://rdb:s3cret@db.internal:5432/vault?sslmode=require&password=x"
            ),
            "postgres://rdb@db.internal:5432/vault"
        );
        assert_eq!(
            super::redacted("postgres://rdb@db:5432/vault"),
            "postgres://rdb@db:5432/vault"
        );
        assert_eq!(super::redacted("not a url"), "(an unreadable state.url)");
    }
}

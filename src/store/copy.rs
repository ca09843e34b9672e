//! `state migrate`: copying a SQLite state DB into an empty PostgreSQL one, row for row.
//!
//! Both schemas are at the same migration (each side's migrations ran at open), so each table
//! has the same columns on both sides; the copy reads them from SQLite's own description of the
//! table rather than from a list here that could drift. Tables go in the order their references
//! need (jobs before their shards, parts and events), in one PostgreSQL transaction: a failed
//! copy leaves the target empty. Ids are copied as they are, and the identity sequences are
//! moved past them, so new rows never collide.

use super::sql::Db;
use super::{Error, Result, Store};
use sqlx::Row as _;

/// The tables of the state DB, in the order a copy inserts them.
pub const TABLES: [&str; 10] = [
    "jobs",
    "job_shards",
    "job_parts",
    "job_events",
    "schedule_state",
    "backups",
    "leases",
    "describe_pacing",
    "drills",
    "notifications",
];

/// Rows per INSERT (PostgreSQL takes at most 65,535 parameters in one statement).
const BATCH_ROWS: usize = 200;

/// A column's values, as the schema types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

impl Store {
    /// How many rows each table holds, in [`TABLES`] order.
    pub async fn table_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut counts = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let (n,): (i64,) = super::sql::sql_as(format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(self.pool())
                .await?;
            counts.push((table, n));
        }
        Ok(counts)
    }

    /// Copies every row of this SQLite DB into `target`, a PostgreSQL DB whose tables are all
    /// empty, in one transaction; returns the rows copied per table.
    ///
    /// # Errors
    /// This DB is not SQLite or the target not PostgreSQL, the target holds rows, or a read or
    /// write failed (the target is then left as it was).
    pub async fn copy_into(&self, target: &Store) -> Result<Vec<(&'static str, u64)>> {
        let (Db::Sqlite(from), Db::Postgres(to)) = (self.pool(), target.pool()) else {
            return Err(refused(
                "the copy goes from a SQLite state DB to a PostgreSQL one",
            ));
        };
        if let Some((table, n)) = target
            .table_counts()
            .await?
            .into_iter()
            .find(|(_, n)| *n > 0)
        {
            return Err(refused(&format!(
                "the target database is not empty ({table} has {n} rows); give an empty database"
            )));
        }
        // A table a later migration adds must be added to TABLES too, or it would be left
        // behind silently: refuse instead.
        let present: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
        )
        .fetch_all(from)
        .await?;
        if let Some((unknown,)) = present.iter().find(|(t,)| !TABLES.contains(&t.as_str())) {
            return Err(refused(&format!(
                "the SQLite state DB has a table this rdbvault does not copy ({unknown}); use the rdbvault that made it"
            )));
        }
        let mut tx = to.begin().await?;
        let mut copied = Vec::with_capacity(TABLES.len());
        for table in TABLES {
            let columns = columns_of(from, table).await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM {table}",
                names(&columns)
            )))
            .fetch_all(from)
            .await?;
            for batch in rows.chunks(BATCH_ROWS) {
                insert_batch(&mut tx, table, &columns, batch).await?;
            }
            copied.push((table, rows.len() as u64));
        }
        // New rows of the identity columns start after the copied ids.
        for table in ["job_events", "backups", "drills", "notifications"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(copied)
    }
}

fn refused(why: &str) -> Error {
    Error::Query(sqlx::Error::Protocol(why.to_string()))
}

/// The columns of a SQLite table with the kind of their values, from `PRAGMA table_info`.
async fn columns_of(pool: &sqlx::SqlitePool, table: &str) -> Result<Vec<(String, Kind)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info({table})")))
        .fetch_all(pool)
        .await?;
    let mut columns = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("name")?;
        let declared: String = row.try_get("type")?;
        let kind = if declared.to_ascii_uppercase().contains("INT") {
            Kind::Int
        } else {
            Kind::Text
        };
        columns.push((name, kind));
    }
    Ok(columns)
}

fn names(columns: &[(String, Kind)]) -> String {
    columns
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One multi-row INSERT of `rows` (read from SQLite) into `table` on PostgreSQL.
async fn insert_batch(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    table: &str,
    columns: &[(String, Kind)],
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<()> {
    let mut builder = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "INSERT INTO {table} ({}) ",
        names(columns)
    ));
    let mut failed = None;
    builder.push_values(rows, |mut values, row| {
        for (i, (_, kind)) in columns.iter().enumerate() {
            match kind {
                Kind::Int => match row.try_get::<Option<i64>, _>(i) {
                    Ok(v) => {
                        values.push_bind(v);
                    }
                    Err(e) => failed = Some(e),
                },
                Kind::Text => match row.try_get::<Option<String>, _>(i) {
                    Ok(v) => {
                        values.push_bind(v);
                    }
                    Err(e) => failed = Some(e),
                },
            }
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    builder.build().execute(&mut **tx).await?;
    Ok(())
}

//! The state DB through sqlx: SQLite in WAL mode (one VM, the default; [`sqlite`]) or
//! PostgreSQL (replicas sharing one DB; [`postgres`]), with the migrations of each
//! (`migrations/`, `migrations/postgres/`) embedded and run at open. Every SQL string of
//! rdbvault lives in this module, written once for both backends ([`sql`]).
//!
//! - [`jobs`]: jobs, their shards and multipart parts, the event log.
//! - [`copy`]: `state migrate`, a SQLite state DB into an empty PostgreSQL one.
//! - [`control`]: what an operator asks of a job (`jobs cancel`), and the reads `status` needs.
//! - [`schedule`]: per (policy, instance) schedule state.
//! - [`inventory`]: the copies rdbvault knows about.
//! - [`leases`]: work one replica at a time does, with a fencing epoch.
//! - [`lookup`]: which job an id typed by a person names; the short ids tables show.
//!
//! Times are Unix milliseconds; [`ms`] and [`from_ms`] convert.

pub mod control;
pub mod copy;
pub mod drills;
pub mod inventory;
pub mod jobs;
pub mod leases;
pub mod lookup;
pub mod outbox;
pub mod pacing;
mod postgres;
pub mod schedule;
pub mod shards;
pub(crate) mod sql;
mod sqlite;
#[cfg(test)]
pub(crate) mod testing;

use chrono::{DateTime, Utc};
use sql::{Db, sql, sql_as};
use std::path::PathBuf;

pub use sql::Kind;

pub use jobs::{JobRow, NewJob};
pub use shards::{PartRow, ShardRow};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open the state DB {path}: {source}; check state.path and that its directory exists and is writable"
    )]
    Open { path: PathBuf, source: sqlx::Error },
    #[error(
        "cannot connect to the state DB {url}: {source}; check state.url, that the server is up and accepts this host, and the password (state.password_file, else PGPASSWORD)"
    )]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate the state DB {at}: {source}")]
    Migrate {
        at: String,
        source: sqlx::migrate::MigrateError,
    },
    /// A read-only command found no DB: it never creates one.
    #[error(
        "the state DB {path} does not exist: nothing has run with this config yet, or state.path names another file (a relative state.path is taken from the config file's directory, not the working directory); `backup-now` or `run` creates it"
    )]
    Missing { path: PathBuf },
    /// A read-only command found a DB that this binary's migrations have not been applied to.
    #[error(
        "the state DB {at} has an older schema ({found}) than this rdbvault needs (migration {needed}); open it once with a command that writes, e.g. `rdbvault prune --dry-run` or by restarting the daemon, which upgrades it, then try again"
    )]
    Outdated {
        at: String,
        found: String,
        needed: i64,
    },
    /// Not a `#[source]`: the message carries the driver's, which `{:#}` would print twice.
    #[error("state DB query failed: {0}")]
    Query(sqlx::Error),
    #[error("no job matches `{0}` (a job id, a provider backup id, or the start of either)")]
    NotFound(String),
    #[error("`{given}` matches several jobs ({}); give more of the id", .candidates.join(", "))]
    Ambiguous {
        given: String,
        /// Some of the matching job ids (at most 5).
        candidates: Vec<String>,
    },
    /// The job's row no longer names this process as its owner: another process took it over
    /// after this one's lease lapsed. The caller must stop touching the job at once.
    #[error(
        "job {job} is no longer owned by {owner}: another process took it over after this one's lease lapsed; stopping without touching it"
    )]
    LostClaim { job: String, owner: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Query(e)
    }
}

impl Error {
    /// The state DB could not be reached or dropped the connection (a restart, a failover, the
    /// network): nothing is wrong with the job, whose journal stands where it was; it is to be
    /// resumed once the DB answers, not failed.
    pub fn is_unreachable(&self) -> bool {
        let Error::Query(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            // SQLSTATE 08: connection exception; 57P01-57P03: the server shut down or restarts.
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        }
    }

    /// The database refused who we are (PostgreSQL SQLSTATE class 28: a wrong password or an
    /// unknown user) or `state.password_file` cannot be used: a credential problem.
    pub fn is_credentials(&self) -> bool {
        match self {
            Error::Connect { source, .. } => match source {
                sqlx::Error::Configuration(_) => true,
                other => other
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|code| code.starts_with("28")),
            },
            _ => false,
        }
    }
}

/// A cheap-to-clone handle on the state DB.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    /// The SQLite file, or the PostgreSQL URL without its password: for messages.
    at: String,
    /// Opened for reading only (the listing commands): writes fail.
    read_only: bool,
}

/// Unix milliseconds of a time.
pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time of Unix milliseconds.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Serialises the journal's Unix-millisecond times as RFC 3339 in UTC (`2026-11-29T19:11:54.123Z`),
/// the one time format of every `--json` and `/v1` answer.
pub mod rfc3339 {
    use chrono::SecondsFormat;

    fn text(ms: i64) -> String {
        super::from_ms(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// `#[serde(serialize_with = "rfc3339::ms")]`
    pub fn ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*ms))
    }

    /// `#[serde(serialize_with = "rfc3339::opt_ms")]`: `null` when unset.
    pub fn opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&text(*ms)),
            None => s.serialize_none(),
        }
    }
}

impl Store {
    /// Opens the state DB the config names: PostgreSQL when `state.url` is set, else the
    /// SQLite file `state.path` (created if needed). Pending migrations are applied.
    ///
    /// # Errors
    /// The DB cannot be opened, reached or migrated.
    pub async fn connect(state: &crate::config::StateConfig) -> Result<Store> {
        match &state.url {
            Some(url) => postgres::open(url, state.password_file.as_deref(), false).await,
            None => Store::open(&state.path).await,
        }
    }

    /// [`Store::connect`] for commands that only look: never creates, migrates or writes.
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Outdated`], or the DB cannot be opened.
    pub async fn connect_read_only(state: &crate::config::StateConfig) -> Result<Store> {
        match &state.url {
            Some(url) => postgres::open(url, state.password_file.as_deref(), true).await,
            None => Store::open_read_only(&state.path).await,
        }
    }

    /// Where the DB is: the SQLite file, or the PostgreSQL URL without its password.
    pub fn describe(&self) -> &str {
        &self.at
    }

    /// Opened for reading only: the listing commands' store, whose writes fail.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn kind(&self) -> Kind {
        self.db.kind()
    }

    pub(crate) fn pool(&self) -> &Db {
        &self.db
    }

    /// Every migration of `migrator` (this binary's, for the DB's backend) must have been
    /// applied: a read-only open refuses an older schema with a clear message rather than
    /// failing later on a missing column.
    async fn check_schema(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        let needed = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let has_table = match self.db.kind() {
            Kind::Sqlite => sql_as::<(String,)>(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            ),
            Kind::Postgres => sql_as::<(String,)>(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'",
            ),
        }
        .fetch_optional(&self.db)
        .await?
        .is_some();
        let applied: Vec<i64> = if has_table {
            sql_as::<(i64,)>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.db)
                .await?
                .into_iter()
                .map(|(v,)| v)
                .collect()
        } else {
            Vec::new()
        };
        if migrator.iter().any(|m| !applied.contains(&m.version)) {
            return Err(Error::Outdated {
                at: self.at.clone(),
                found: match applied.iter().max() {
                    Some(v) => format!("migration {v}"),
                    None => "no rdbvault migrations at all".into(),
                },
                needed,
            });
        }
        Ok(())
    }

    /// Checks the DB accepts a write (for `/readyz`).
    ///
    /// # Errors
    /// The write failed.
    pub async fn check_writable(&self) -> Result<()> {
        match self.db.kind() {
            Kind::Sqlite => {
                let mut tx = self.db.begin().await?;
                sql("CREATE TEMP TABLE IF NOT EXISTS rdbvault_probe (x INTEGER)")
                    .execute(&mut tx)
                    .await?;
                sql("INSERT INTO rdbvault_probe (x) VALUES (1)")
                    .execute(&mut tx)
                    .await?;
                tx.rollback().await?;
            }
            // A primary that accepts writes; no catalog change on every probe.
            Kind::Postgres => {
                let (writable,): (bool,) = sql_as(
                    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'",
                )
                .fetch_one(&self.db)
                .await?;
                if !writable {
                    return Err(Error::Query(sqlx::Error::Protocol(
                        "the PostgreSQL server is read-only (a standby, or default_transaction_read_only is on)".into(),
                    )));
                }
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_opening_a_fresh_db_at_once_both_succeed() {
        // CI once lost this race at connect ("database is locked" while switching to WAL), so
        // it is run often enough to make that likely again, with three openers.
        for _ in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.db");
            let (a, b, c) =
                tokio::join!(Store::open(&path), Store::open(&path), Store::open(&path));
            a.unwrap();
            b.unwrap();
            c.unwrap();
        }
    }

    #[tokio::test]
    async fn the_db_and_its_wal_are_private_and_an_open_one_is_tightened() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).await.unwrap();
        store.check_writable().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
        store.close().await;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        Store::open(&path).await.unwrap().close().await;
        assert_eq!(mode(&path), 0o600);
    }

    #[tokio::test]
    async fn read_only_open_never_creates_and_refuses_an_old_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let err = Store::open_read_only(&path).await.unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        assert!(err.to_string().contains("config file's directory"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file made"
        );

        // A current DB opens and reads; writes are refused.
        let store = Store::open(&path).await.unwrap();
        store
            .insert_job(&new_job("a", "i", Some("me")))
            .await
            .unwrap();
        store.close().await;
        let ro = Store::open_read_only(&path).await.unwrap();
        assert_eq!(ro.job("a").await.unwrap().id, "a");
        assert!(ro.insert_job(&new_job("b", "j", None)).await.is_err());
        ro.close().await;

        // A DB that predates this binary's migrations is refused before any query.
        let old = dir.path().join("old.db");
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&old)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE jobs (id TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let err = Store::open_read_only(&old).await.unwrap_err();
        assert!(matches!(err, Error::Outdated { .. }), "{err}");
        assert!(err.to_string().contains("prune --dry-run"), "{err}");
    }

    pub(crate) fn new_job(
        id: &str,
        instance: &str,
        owner: Option<&str>,
    ) -> crate::store::jobs::NewJob {
        crate::store::jobs::NewJob {
            id: id.into(),
            policy: "p".into(),
            instance_uuid: instance.into(),
            instance_name: "n".into(),
            region_id: String::new(),
            destination: "d".into(),
            trigger: "manual",
            due_at: 0,
            start_by: 10,
            deadline_at: 100,
            created_at: 0,
            owner: owner.map(str::to_string),
            schedule_key: None,
        }
    }

    #[tokio::test]
    async fn one_run_of_a_schedule_makes_one_job_however_many_replicas_fire_it() {
        use crate::store::jobs::{Inserted, schedule_key};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        let key = schedule_key("p", "i", 1_000);
        let run = |id: &str| crate::store::jobs::NewJob {
            schedule_key: Some(key.clone()),
            ..new_job(id, "i", None)
        };
        assert_eq!(
            store.insert_job(&run("r1")).await.unwrap(),
            Inserted::Created
        );
        // A second replica fires the same run: no second job.
        assert_eq!(
            store.insert_job(&run("r2")).await.unwrap(),
            Inserted::AlreadyScheduled { job: "r1".into() }
        );
        // Not even after the first one ended (a slow replica fires late).
        let claim = crate::store::jobs::Claim::new("r1", "me");
        assert!(store.claim_job("r1", "me", 1, 0).await.unwrap());
        store.fail_job(&claim, 2, "x").await.unwrap();
        assert_eq!(
            store.insert_job(&run("r3")).await.unwrap(),
            Inserted::AlreadyScheduled { job: "r1".into() }
        );
        // The next run of the schedule is another key.
        let next = crate::store::jobs::NewJob {
            schedule_key: Some(schedule_key("p", "i", 2_000)),
            ..new_job("r4", "i", None)
        };
        assert_eq!(store.insert_job(&next).await.unwrap(), Inserted::Created);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_inserted_in_batches_by_three_replicas_at_once_makes_one_job_per_instance() {
        use crate::store::jobs::{Inserted, NewJob, SCHEDULED_BATCH, schedule_key};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        // More than two batches; instance i3 already has this run's job (a replica that got
        // there first, one job at a time), i5 the policy's previous job, still open.
        let count = 2 * SCHEDULED_BATCH + 7;
        let run = |replica: &str| -> Vec<NewJob> {
            (0..count)
                .map(|n| NewJob {
                    schedule_key: Some(schedule_key("p", &format!("i{n}"), 1_000)),
                    ..new_job(&format!("{replica}-{n}"), &format!("i{n}"), None)
                })
                .collect()
        };
        let early = &run("early")[3];
        assert_eq!(store.insert_job(early).await.unwrap(), Inserted::Created);
        let previous = new_job("previous-5", "i5", None);
        assert_eq!(
            store.insert_job(&previous).await.unwrap(),
            Inserted::Created
        );
        let (a, b, c) = (run("a"), run("b"), run("c"));
        let (ra, rb, rc) = tokio::join!(
            store.insert_scheduled_jobs(&a),
            store.insert_scheduled_jobs(&b),
            store.insert_scheduled_jobs(&c)
        );
        let outcomes = [ra.unwrap(), rb.unwrap(), rc.unwrap()];
        for n in 0..count {
            let created: Vec<&str> = outcomes
                .iter()
                .zip(["a", "b", "c"])
                .filter(|(o, _)| o[n] == Inserted::Created)
                .map(|(_, r)| r)
                .collect();
            match n {
                3 | 5 => assert!(created.is_empty(), "i{n}: {created:?}"),
                _ => assert_eq!(created.len(), 1, "i{n}: {created:?}"),
            }
            let winner = created.first().map(|r| format!("{r}-{n}"));
            for o in &outcomes {
                match (&o[n], n) {
                    (Inserted::Created, _) => {}
                    (Inserted::AlreadyScheduled { job }, 3) => assert_eq!(job, "early-3"),
                    (Inserted::AlreadyScheduled { job }, _) => {
                        assert_eq!(Some(job), winner.as_ref())
                    }
                    (Inserted::InstanceBusy { open_job }, 5) => assert_eq!(open_job, "previous-5"),
                    (other, _) => panic!("i{n}: {other:?}"),
                }
            }
        }
        // One job per instance: i3's early one, i5's previous one, one new job for every other.
        let jobs = store.list_jobs(None, None, 10_000).await.unwrap();
        assert_eq!(jobs.len(), count);
        // A job that is not a scheduled run's is refused, with nothing written.
        let by_hand = vec![new_job("by-hand", "z", None)];
        assert!(store.insert_scheduled_jobs(&by_hand).await.is_err());
    }

    #[tokio::test]
    async fn one_open_job_per_instance() {
        use crate::store::jobs::{Claim, Inserted};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        let job = |id: &str| new_job(id, "i", Some("me"));
        assert_eq!(
            store.insert_job(&job("a")).await.unwrap(),
            Inserted::Created
        );
        assert_eq!(
            store.insert_job(&job("b")).await.unwrap(),
            Inserted::InstanceBusy {
                open_job: "a".into()
            }
        );
        store
            .fail_job(&Claim::new("a", "me"), 5, "boom")
            .await
            .unwrap();
        assert_eq!(
            store.insert_job(&job("c")).await.unwrap(),
            Inserted::Created
        );
        // A transition the lifecycle forbids is refused, and so is one from a stale state.
        use crate::job::state::{Event, State};
        let c = Claim::new("c", "me");
        assert!(
            store
                .advance(&c, State::Pending, Event::Verified, 1)
                .await
                .is_err()
        );
        store
            .advance(&c, State::Pending, Event::CreateAccepted, 1)
            .await
            .unwrap();
        assert!(
            store
                .advance(&c, State::Pending, Event::CreateAccepted, 2)
                .await
                .is_err()
        );
        assert_eq!(store.job("c").await.unwrap().requested_at, Some(1));
    }

    /// Every write of a running job is fenced by its owner: once another process has taken the
    /// job over, the old owner's writes change nothing and say why.
    #[tokio::test]
    async fn writes_of_a_process_that_lost_its_claim_change_nothing() {
        use crate::job::state::{Event, State};
        use crate::store::jobs::Claim;
        use crate::store::shards::{PartRow, ShardRow};
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        store
            .insert_job(&new_job("j", "i", Some("old")))
            .await
            .unwrap();
        let old = Claim::new("j", "old");
        store
            .advance(&old, State::Pending, Event::CreateAccepted, 1)
            .await
            .unwrap();
        let shard = ShardRow::waiting("j", "b", Some(10));
        store
            .insert_shards(&old, std::slice::from_ref(&shard))
            .await
            .unwrap();
        store
            .shard_pending_data(&old, "b", Some("upload-1"), None)
            .await
            .unwrap();
        // The old owner's lease lapses (heartbeat 1 < stale_before 100); "new" takes over.
        assert!(store.claim_job("j", "new", 200, 100).await.unwrap());
        assert!(!store.holds(&old).await.unwrap());
        let lost = |r: Result<()>| matches!(r, Err(Error::LostClaim { .. }));
        assert!(lost(store.shard_pending_data(&old, "b", None, None).await));
        assert!(lost(
            store
                .record_part(
                    &old,
                    "b",
                    &PartRow {
                        part_number: 1,
                        etag: "e".into(),
                        size: 5
                    }
                )
                .await
        ));
        assert!(lost(store.shard_started(&old, "b", "", "k", "k.m").await));
        assert!(lost(
            store
                .shard_stored(
                    &old,
                    "b",
                    &crate::store::shards::StoredShard {
                        bytes: 10,
                        sha256: "sha",
                        rdb_version: 11,
                        checksum: "verified",
                        contents: None,
                    }
                )
                .await
        ));
        assert!(lost(store.shard_failed(&old, "b").await));
        assert!(lost(store.set_job_bytes(&old, 10).await));
        assert!(lost(store.mark_create_sent(&old, 3).await));
        assert!(lost(store.fail_job(&old, 3, "late").await));
        let second = ShardRow::waiting("j", "b2", Some(10));
        assert!(lost(
            store.insert_shards(&old, &[shard.clone(), second]).await
        ));
        assert!(lost(store.insert_shards(&old, &[shard]).await));
        assert!(lost(store.complete_job(&old, &[], 3).await));
        assert!(lost(store.miss_job(&old, 3, "late").await));
        assert!(matches!(
            store
                .advance(&old, State::Requested, Event::SnapshotRunning, 3)
                .await,
            Err(Error::LostClaim { .. })
        ));
        // Nothing the old owner tried landed: the upload the new owner must deal with is intact.
        let row = store.job("j").await.unwrap();
        assert_eq!(
            (row.state.as_str(), row.owner.as_deref()),
            ("requested", Some("new"))
        );
        let shards = store.shards("j").await.unwrap();
        assert_eq!(shards[0].upload_id.as_deref(), Some("upload-1"));
        assert_eq!(shards[0].state, "waiting");
        // A live owner's job (fresh heartbeat) is not claimable, whatever its process looks like.
        store
            .insert_job(&new_job("k", "i2", Some("backup-now:h:999999:x")))
            .await
            .unwrap();
        assert!(
            store
                .claimable_jobs(10, -1)
                .await
                .unwrap()
                .iter()
                .all(|j| j.id != "k")
        );
        assert!(!store.claim_job("k", "daemon", 10, -1).await.unwrap());
        assert!(store.claim_job("k", "daemon", 10, 1).await.unwrap());
    }
}

//! The state DB: SQLite in WAL mode through sqlx, with the migrations in `migrations/` embedded
//! and run at open. Every SQL string of rdbvault lives in this module.
//!
//! - [`jobs`]: jobs, their shards and multipart parts, the event log.
//! - [`control`]: what an operator asks of a job (`jobs cancel`), and the reads `status` needs.
//! - [`schedule`]: per (policy, instance) schedule state.
//! - [`inventory`]: the copies rdbvault knows about.
//! - [`lookup`]: which job an id typed by a person names; the short ids tables show.
//!
//! Times are Unix milliseconds; [`ms`] and [`from_ms`] convert.

pub mod control;
pub mod inventory;
pub mod jobs;
pub mod lookup;
pub mod schedule;
pub mod shards;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use jobs::{JobRow, NewJob};
pub use shards::{PartRow, ShardRow};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot open the state DB {path}: {source}; check state.path and that its directory exists and is writable"
    )]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot migrate the state DB {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    /// A read-only command found no DB: it never creates one.
    #[error(
        "the state DB {path} does not exist: nothing has run with this config yet, or state.path names another file (a relative state.path is taken from the config file's directory, not the working directory); `backup-now` or `run` creates it"
    )]
    Missing { path: PathBuf },
    /// A read-only command found a DB that this binary's migrations have not been applied to.
    #[error(
        "the state DB {path} has an older schema ({found}) than this rdbvault needs (migration {needed}); open it once with a command that writes, e.g. `rdbvault prune --dry-run` or by restarting the daemon, which upgrades it, then try again"
    )]
    Outdated {
        path: PathBuf,
        found: String,
        needed: i64,
    },
    #[error("state DB query failed: {0}")]
    Query(#[from] sqlx::Error),
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

/// A cheap-to-clone handle on the state DB.
#[derive(Debug, Clone)]
pub struct Store {
    pool: sqlx::SqlitePool,
    path: PathBuf,
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
    /// Opens (creating if needed) the DB and applies pending migrations.
    ///
    /// # Errors
    /// The file cannot be opened or created, or a migration fails.
    pub async fn open(path: &Path) -> Result<Store> {
        prepare_private_file(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source: sqlx::Error::Io(source),
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // A daemon and a backup-now share the file; wait for each other's writes.
            .busy_timeout(Duration::from_secs(15));
        // Two processes opening a new DB together (a daemon and a backup-now) race twice:
        // switching the fresh file to WAL takes an exclusive lock for which SQLite may answer
        // SQLITE_BUSY without calling the busy handler, and both try to apply the same
        // migration (each is one transaction, so the loser fails cleanly and finds it applied).
        // Either way, opening again shortly after succeeds.
        let mut attempt = 0;
        let pool = loop {
            match Self::connect_and_migrate(path, &options).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 10 && e.is_opening_race() => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "state DB opening raced with another process; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Store {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing DB for reading only, for commands that only look (`jobs`, `backups`,
    /// `fetch`): never creates the file, never migrates, never chmods. A DB whose schema lacks
    /// a migration of this binary is refused with a clear message rather than failing later on
    /// a missing column.
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Outdated`], or the file cannot be opened.
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(Error::Open {
                    path: path.to_path_buf(),
                    source: sqlx::Error::Io(std::io::Error::other("not a regular file")),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(Error::Open {
                    path: path.to_path_buf(),
                    source: sqlx::Error::Io(e),
                });
            }
        }
        tighten_private(path);
        // No journal_mode: setting it is a write; the DB keeps the WAL mode it was made with.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(15));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        if let Err(e) = Self::check_schema(path, &pool).await {
            pool.close().await;
            return Err(e);
        }
        Ok(Store {
            pool,
            path: path.to_path_buf(),
        })
    }

    /// Every migration this binary embeds must have been applied.
    async fn check_schema(path: &Path, pool: &sqlx::SqlitePool) -> Result<()> {
        let needed = sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        let has_table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(pool)
        .await?;
        let applied: Vec<i64> = if has_table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(pool)
                .await?
        } else {
            Vec::new()
        };
        let missing = sqlx::migrate!("./migrations")
            .iter()
            .any(|m| !applied.contains(&m.version));
        if missing {
            return Err(Error::Outdated {
                path: path.to_path_buf(),
                found: match applied.iter().max() {
                    Some(v) => format!("migration {v}"),
                    None => "no rdbvault migrations at all".into(),
                },
                needed,
            });
        }
        Ok(())
    }

    async fn connect_and_migrate(
        path: &Path,
        options: &SqliteConnectOptions,
    ) -> Result<sqlx::SqlitePool> {
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        if let Err(source) = sqlx::migrate!("./migrations").run(&pool).await {
            pool.close().await;
            return Err(Error::Migrate {
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(pool)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.pool
    }

    /// Checks the DB accepts a write (for `/readyz`).
    ///
    /// # Errors
    /// The write failed.
    pub async fn check_writable(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS rdbvault_probe (x INTEGER)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO rdbvault_probe (x) VALUES (1)")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes the DB file private before SQLite opens it: a new file is created empty with mode
/// 0600 (SQLite gives its `-wal` and `-shm` files the DB file's mode, so they follow), and an
/// existing DB, `-wal` or `-shm` that its group or other users can read is chmodded to 0600. A
/// failing chmod (a file owned by another user) is logged, not fatal: the DB still works.
///
/// # Errors
/// The file does not exist and cannot be created.
fn prepare_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
        return Ok(());
    }
    // No truncate: an existing DB is opened, never emptied. Two processes racing here both
    // succeed; SQLite treats an empty file as a new database.
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(crate::private_fs::FILE_MODE)
        .open(path)?;
    tighten_private(path);
    Ok(())
}

/// Chmods an existing DB, `-wal` and `-shm` that other users can read to 0600 (logged; a
/// failing chmod, say of a file owned by another user, is a warning, never fatal). Read-only
/// opens do it too: they create nothing, but need not leave a backup index world-readable.
fn tighten_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_os_string();
        name.push(suffix);
        let file = PathBuf::from(name);
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            continue;
        }
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::info!(
                file = %file.display(),
                old_mode = format!("{mode:o}"),
                "state DB file was readable by other users; now mode 600"
            ),
            Err(e) => tracing::warn!(
                file = %file.display(),
                mode = format!("{mode:o}"),
                error = %e,
                "the state DB file is readable by other users and cannot be chmodded; run `chmod 600` on it as its owner"
            ),
        }
    }
}

impl Error {
    /// A failure another process opening the same new DB can cause: SQLite "database is
    /// locked" / "is busy" (codes 5 and 6, with extended codes) while connecting, or a
    /// migration that lost the race.
    fn is_opening_race(&self) -> bool {
        match self {
            Error::Open { source, .. } => source
                .as_database_error()
                .and_then(|e| e.code())
                .and_then(|code| code.parse::<i32>().ok())
                .is_some_and(|code| matches!(code & 0xff, 5 | 6)),
            Error::Migrate { .. } => true,
            _ => false,
        }
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
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
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
            SqliteConnectOptions::new()
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
        }
    }

    #[tokio::test]
    async fn one_open_job_per_instance() {
        use crate::store::jobs::{Claim, Inserted};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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
        let store = Store::open(&dir.path().join("s.db")).await.unwrap();
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
                .shard_stored(&old, "b", 10, "sha", 11, "verified")
                .await
        ));
        assert!(lost(store.shard_failed(&old, "b").await));
        assert!(lost(store.set_job_bytes(&old, 10).await));
        assert!(lost(store.mark_create_sent(&old, 3).await));
        assert!(lost(store.fail_job(&old, 3, "late").await));
        assert!(lost(store.insert_shards(&old, &[shard]).await));
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

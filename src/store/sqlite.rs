//! Opening the SQLite state DB: a private file in WAL mode, created and migrated at open
//! (`migrations/`), or opened read-only for commands that only look.

use super::sql::Db;
use super::{Error, Result, Store};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
            db: Db::Sqlite(pool),
            at: path.display().to_string(),
            read_only: false,
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
        let store = Store {
            db: Db::Sqlite(pool),
            at: path.display().to_string(),
            read_only: true,
        };
        if let Err(e) = store.check_schema(&sqlx::migrate!("./migrations")).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
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
                at: path.display().to_string(),
                source,
            });
        }
        Ok(pool)
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

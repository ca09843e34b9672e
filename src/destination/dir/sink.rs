//! The file sink: writes `<final name>.<random>.partial`, fsyncs, and renames it into place
//! only after verification; the manifest goes the same way. A crash leaves only a `.partial`
//! file, whose name the job journals; a resumed job reads it back through the checker and
//! continues with `Range`.
//!
//! One writer per file: a sink holds an exclusive lock (`flock`) on its `.partial` file for as
//! long as it is open, and each sink's file has a name of its own. A job taken over from a
//! process that is still alive (paused, or cut off from the state DB past its lease) finds the
//! lock held and writes a new file instead of appending to one the other process still
//! writes; the other process, when it notices, removes only its own file. A file whose lock can
//! be taken belongs to nobody (its writer died) and may be continued or swept. The lock is
//! advisory and per host: replicas on different hosts sharing one network directory rely on
//! the job claim and on the filesystem's lock support.
//!
//! Every file is created 0600 and every directory 0700 ([`crate::private_fs`]): a copy holds
//! all of an instance's data.

use crate::transfer::{Checker, Error, Manifest, Sink, Stored};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncWriteExt as _, BufWriter};

const WRITE_BUFFER: usize = 1 << 20;

pub struct FileSink {
    final_path: PathBuf,
    manifest_path: PathBuf,
    temp_path: PathBuf,
    /// The `.partial` file, locked while this is `Some`.
    file: Option<BufWriter<tokio::fs::File>>,
}

/// A sink ready for bytes.
pub struct OpenedFile {
    pub sink: FileSink,
    /// The checker fed with the bytes of the continued file (empty for a new one).
    pub already: Checker,
    /// Why the journaled file was not continued, when it was not.
    pub note: Option<String>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Destination(format!("{what} {}: {e}", path.display()))
}

fn task_error(e: tokio::task::JoinError) -> Error {
    Error::Destination(format!("file task failed: {e}"))
}

/// Syncs a directory so a rename inside it survives a power cut.
async fn sync_dir(dir: &Path) -> Result<(), Error> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&d).and_then(|f| f.sync_all()))
        .await
        .map_err(task_error)?
        .map_err(|e| io_error("cannot fsync directory", dir, e))
}

/// A new, unused temporary name beside `final_path`: `<name>.<8 hex>.partial`.
pub fn new_temp_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().unwrap_or_default().to_os_string();
    let token = uuid::Uuid::new_v4().simple().to_string();
    name.push(format!(".{}.partial", &token[..8]));
    final_path.with_file_name(name)
}

/// Whether `candidate` is a temporary file of `final_path`: beside it, named
/// `<name>.<anything>.partial` or (as earlier versions wrote) `<name>.partial`. Only such a
/// path is ever continued or removed, whatever the journal says.
pub fn is_temp_of(final_path: &Path, candidate: &Path) -> bool {
    let (Some(name), Some(cand)) = (
        final_path.file_name().and_then(|n| n.to_str()),
        candidate.file_name().and_then(|n| n.to_str()),
    ) else {
        return false;
    };
    candidate.parent() == final_path.parent()
        && cand
            .strip_prefix(name)
            .and_then(|rest| rest.strip_suffix(".partial"))
            .is_some_and(|mid| mid.is_empty() || (mid.starts_with('.') && !mid.contains('/')))
}

/// What trying a `.partial` file's lock found.
enum Lock {
    /// Locked by us (the file the name still names), positioned for appending.
    Taken(std::fs::File),
    /// Not there, or replaced between opening and locking (its writer removed it).
    Gone,
    /// Another process holds its lock: it is still writing.
    Busy,
}

/// Takes `path`'s lock without waiting.
fn lock_existing(path: &Path) -> std::io::Result<Lock> {
    use std::os::unix::fs::MetadataExt as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::Gone),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Lock::Busy),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => Ok(Lock::Taken(file)),
        Ok(_) => Ok(Lock::Gone),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::Gone),
        Err(e) => Err(e),
    }
}

/// Locks a journaled `.partial` file and reads it back through a fresh checker.
fn continue_file(path: &Path) -> std::io::Result<Result<(std::fs::File, Checker), Lock>> {
    use std::io::Read as _;
    let mut file = match lock_existing(path)? {
        Lock::Taken(f) => f,
        other => return Ok(Err(other)),
    };
    let mut checker = Checker::new();
    let mut buf = vec![0u8; WRITE_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(Ok((file, checker)));
        }
        checker.update(&buf[..n]);
    }
}

/// Creates a new `.partial` file and locks it.
fn create_locked(path: &Path) -> std::io::Result<std::fs::File> {
    let file = crate::private_fs::create_new_blocking(path)?;
    file.try_lock().map_err(std::io::Error::from)?;
    Ok(file)
}

/// Removes `path` if nobody writes it (its lock can be taken); the lock is held until the name
/// is gone, so no process can start continuing it in between.
fn remove_if_unheld(path: &Path) {
    if let Ok(Lock::Taken(file)) = lock_existing(path) {
        let _ = std::fs::remove_file(path);
        drop(file);
    }
}

/// Removes the temporary files beside `final_path` that nobody writes: those of writers that
/// died, or that lost their job and left. Best effort; a file still locked is left to its writer.
fn sweep_temps_of(final_path: &Path) {
    let Some(dir) = final_path.parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if is_temp_of(final_path, &path) {
            remove_if_unheld(&path);
        }
    }
}

/// Removes the temporary file `temp` of `final_path` if nobody writes it (a failed job's
/// cleanup); a path that is not such a file is left alone.
pub async fn discard(final_path: &Path, temp: &Path) {
    if !is_temp_of(final_path, temp) {
        return;
    }
    let temp = temp.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || remove_if_unheld(&temp)).await;
}

impl FileSink {
    /// Opens the sink. `resume_from` is the `.partial` file an earlier run journaled: when
    /// nobody writes it any more it is locked, read back through a fresh checker (returned, so
    /// the download continues after its bytes) and continued; otherwise a new file is started,
    /// and the note says why when it matters.
    ///
    /// # Errors
    /// The directory cannot be created or a file opened.
    pub async fn open(
        final_path: PathBuf,
        manifest_path: PathBuf,
        resume_from: Option<PathBuf>,
    ) -> Result<OpenedFile, Error> {
        if let Some(parent) = final_path.parent() {
            crate::private_fs::create_dir_all_async(parent)
                .await
                .map_err(|e| io_error("cannot create directory", parent, e))?;
        }
        let journaled = resume_from.filter(|p| is_temp_of(&final_path, p));
        let fresh = new_temp_path(&final_path);
        let (file, temp_path, already, note) = {
            let fresh = fresh.clone();
            tokio::task::spawn_blocking(move || open_blocking(journaled, fresh))
                .await
                .map_err(task_error)??
        };
        let file = tokio::fs::File::from_std(file);
        // A `.partial` left by an older version may be 0644; the copy it becomes must not.
        crate::private_fs::tighten_file(&file)
            .await
            .map_err(|e| io_error("cannot chmod 600", &temp_path, e))?;
        Ok(OpenedFile {
            sink: FileSink {
                final_path,
                manifest_path,
                temp_path,
                file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            },
            already,
            note,
        })
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }
}

type OpenedBlocking = (std::fs::File, PathBuf, Checker, Option<String>);

/// [`FileSink::open`]'s file work: continue `journaled` if nobody writes it, else create `fresh`.
fn open_blocking(journaled: Option<PathBuf>, fresh: PathBuf) -> Result<OpenedBlocking, Error> {
    let mut note = None;
    if let Some(path) = journaled {
        match continue_file(&path).map_err(|e| io_error("cannot read back", &path, e))? {
            Ok((file, checker)) => return Ok((file, path, checker, None)),
            Err(Lock::Gone | Lock::Taken(_)) => {}
            Err(Lock::Busy) => {
                note = Some(format!(
                    "{} is still being written by another process (it held this job before); transferring into a new file",
                    path.display()
                ));
            }
        }
    }
    let file = create_locked(&fresh).map_err(|e| io_error("cannot create", &fresh, e))?;
    Ok((file, fresh, Checker::new(), note))
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Destination("write after commit or abort".into()))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| io_error("cannot write", &self.temp_path, e))
    }

    async fn commit(&mut self, _stored: &Stored, manifest: &Manifest) -> Result<(), Error> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Destination("commit twice".into()))?;
        file.flush()
            .await
            .map_err(|e| io_error("cannot flush", &self.temp_path, e))?;
        file.get_mut()
            .sync_all()
            .await
            .map_err(|e| io_error("cannot fsync", &self.temp_path, e))?;
        // Renamed while still locked: nobody can start continuing the file in between.
        tokio::fs::rename(&self.temp_path, &self.final_path)
            .await
            .map_err(|e| io_error("cannot rename into place", &self.final_path, e))?;
        drop(file);
        let manifest_temp = new_temp_path(&self.manifest_path);
        // cannot fail: the manifest is strings, numbers and times.
        let body = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        let mut m = crate::private_fs::create(&manifest_temp)
            .await
            .map_err(|e| io_error("cannot create", &manifest_temp, e))?;
        m.write_all(&body)
            .await
            .map_err(|e| io_error("cannot write", &manifest_temp, e))?;
        m.sync_all()
            .await
            .map_err(|e| io_error("cannot fsync", &manifest_temp, e))?;
        tokio::fs::rename(&manifest_temp, &self.manifest_path)
            .await
            .map_err(|e| io_error("cannot rename into place", &self.manifest_path, e))?;
        if let Some(dir) = self.final_path.parent() {
            sync_dir(dir).await?;
        }
        // The copy is in place: files of earlier writers of it that died are of no more use.
        let (copy, manifest) = (self.final_path.clone(), self.manifest_path.clone());
        let _ = tokio::task::spawn_blocking(move || {
            sweep_temps_of(&copy);
            sweep_temps_of(&manifest);
        })
        .await;
        Ok(())
    }

    async fn abort(&mut self) {
        // Removed while still locked, then let go: only this sink's own file.
        let _ = tokio::fs::remove_file(&self.temp_path).await;
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temps_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        names.sort();
        names
    }

    async fn open(dir: &Path, resume_from: Option<&Path>) -> OpenedFile {
        FileSink::open(
            dir.join("x.rdb"),
            dir.join("x.rdb.manifest.json"),
            resume_from.map(Path::to_path_buf),
        )
        .await
        .unwrap()
    }

    #[test]
    fn only_temporary_files_of_the_copy_count_as_its_own() {
        let f = Path::new("/a/p/x.rdb");
        for ok in ["/a/p/x.rdb.partial", "/a/p/x.rdb.0123abcd.partial"] {
            assert!(is_temp_of(f, Path::new(ok)), "{ok}");
        }
        for bad in [
            "/a/p/x.rdb",
            "/a/p/y.rdb.partial",
            "/a/p/x.rdbz.partial",
            "/a/q/x.rdb.partial",
            "/a/p/sub/x.rdb.partial",
            "/a/p/x.rdb.manifest.json",
            "/etc/passwd",
        ] {
            assert!(!is_temp_of(f, Path::new(bad)), "{bad}");
        }
        assert!(is_temp_of(f, &new_temp_path(f)));
        assert_ne!(new_temp_path(f), new_temp_path(f));
    }

    #[tokio::test]
    async fn a_file_nobody_writes_is_continued_after_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = open(dir.path(), None).await;
        first
            .sink
            .write(Bytes::from_static(b"REDIS0011"))
            .await
            .unwrap();
        let journaled = first.sink.temp_path().to_path_buf();
        // The process stopped at a safe point (or died): its file is closed, its lock gone.
        first.sink.file.take().unwrap().flush().await.unwrap();
        drop(first);
        let second = open(dir.path(), Some(&journaled)).await;
        assert_eq!(second.sink.temp_path(), journaled);
        assert_eq!(second.already.bytes(), 9);
        assert!(second.note.is_none());
        assert_eq!(temps_in(dir.path()).len(), 1);
    }

    #[tokio::test]
    async fn a_file_another_sink_still_writes_is_left_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = open(dir.path(), None).await;
        old.sink.write(Bytes::from_static(b"REDIS")).await.unwrap();
        let journaled = old.sink.temp_path().to_path_buf();
        // The job was taken over while the old writer still holds its file.
        let mut new = open(dir.path(), Some(&journaled)).await;
        assert_ne!(new.sink.temp_path(), journaled);
        assert_eq!(
            new.already.bytes(),
            0,
            "nothing is read from a file being written"
        );
        let note = new.note.clone().expect("the journal says why");
        assert!(
            note.contains("still being written by another process"),
            "{note}"
        );
        // The old writer notices it lost the job and aborts: only its own file goes.
        old.sink.abort().await;
        assert!(!journaled.exists());
        assert!(new.sink.temp_path().exists());
        new.sink.write(Bytes::from_static(b"more")).await.unwrap();
        new.sink.abort().await;
        assert!(temps_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_journaled_path_that_is_not_the_copys_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.rdb");
        std::fs::write(&other, b"not ours").unwrap();
        let opened = open(dir.path(), Some(&other)).await;
        assert_eq!(opened.already.bytes(), 0);
        assert_ne!(opened.sink.temp_path(), other);
        discard(&dir.path().join("x.rdb"), &other).await;
        assert_eq!(std::fs::read(&other).unwrap(), b"not ours");
    }

    #[tokio::test]
    async fn sweeping_removes_dead_writers_files_and_keeps_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("x.rdb");
        let dead = dir.path().join("x.rdb.deadbeef.partial");
        let legacy = dir.path().join("x.rdb.partial");
        let unrelated = dir.path().join("y.rdb.partial");
        for p in [&dead, &legacy, &unrelated] {
            std::fs::write(p, b"left").unwrap();
        }
        let live = open(dir.path(), None).await;
        sweep_temps_of(&copy);
        assert!(!dead.exists() && !legacy.exists());
        assert!(
            live.sink.temp_path().exists(),
            "a locked file is its writer's"
        );
        assert!(unrelated.exists());
        let live_path = live.sink.temp_path().to_path_buf();
        discard(&copy, &live_path).await;
        assert!(
            live_path.exists(),
            "a failed job's cleanup leaves a live writer's file"
        );
        drop(live);
        discard(&copy, &live_path).await;
        assert!(!live_path.exists());
    }
}

//! Files and directories that hold backup data or state, created readable by their owner only.
//!
//! Copies, manifests, `.partial` files and the state DB hold every key of a user's Redis. Left
//! to the process umask (022 on most systems) they would come out 0644 / 0755, readable by any
//! local user, so everything rdbvault creates goes through here: files 0600, directories 0700,
//! whatever the umask. The directory a user configured (a destination's `path`, the state DB's
//! directory when it exists) is not ours to chmod: only what we create is tightened.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of every file rdbvault creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory rdbvault creates.
pub const DIR_MODE: u32 = 0o700;

/// `mkdir -p` whose new directories are 0700. Existing ones are left as they are.
///
/// # Errors
/// A directory cannot be created.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// [`create_dir_all`] off the async runtime's threads.
///
/// # Errors
/// A directory cannot be created, or the blocking task failed.
pub async fn create_dir_all_async(path: &Path) -> std::io::Result<()> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || create_dir_all(&p))
        .await
        .map_err(std::io::Error::other)?
}

/// Creates (or truncates) a file for writing, mode 0600 when it is new. An existing file is
/// also tightened to 0600, so overwriting a file left by an older version closes it too.
///
/// # Errors
/// The file cannot be created or chmodded.
pub async fn create(path: &Path) -> std::io::Result<tokio::fs::File> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .await?;
    tighten_file(&file).await?;
    Ok(file)
}

/// Sets an open file's mode to 0600 unless it already is.
///
/// # Errors
/// The file's metadata cannot be read or its mode set.
pub async fn tighten_file(file: &tokio::fs::File) -> std::io::Result<()> {
    let mode = file.metadata().await?.permissions().mode() & 0o7777;
    if mode != FILE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .await?;
    }
    Ok(())
}

/// Blocking [`create`], for code that is not async (probes).
///
/// # Errors
/// The file cannot be created.
pub fn create_blocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates a new file for writing and reading, mode 0600 whatever the umask; fails with
/// [`std::io::ErrorKind::AlreadyExists`] if `path` exists.
///
/// # Errors
/// The file exists or cannot be created.
pub fn create_new_blocking(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    // The mode above went through the umask; a umask such as 0277 would leave 0400.
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `contents` as the file `path`, mode 0600 whatever the umask, all at once: the bytes go
/// to a temporary file beside `path` (0600 from its creation), are synced, and the file is then
/// renamed into place, so nobody ever sees half a file or a moment of a wider mode. Without
/// `replace`, an existing `path` is never touched: the final step fails with
/// [`std::io::ErrorKind::AlreadyExists`], decided atomically by the filesystem. With it, an
/// existing file (or symlink) at `path` is replaced, its old mode with it.
///
/// # Errors
/// The directory of `path` is missing or not writable, the disk is full, or `path` exists and
/// `replace` is false.
pub fn write_file(path: &Path, contents: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rdbvault-")
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    // The mode above went through the umask; a umask such as 0277 would leave 0400.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    let placed = if replace {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    placed.map(drop).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn modes_are_private_and_existing_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_dir_all_async(&nested).await.unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, DIR_MODE, "{d}");
        }
        let f = nested.join("f");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create(&f).await.unwrap());
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        assert_eq!(std::fs::read(&f).unwrap(), b"");
    }

    #[test]
    fn write_file_is_private_and_never_replaces_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        write_file(&f, b"one", false).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        let err = write_file(&f, b"two", false).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_file(&f, b"three", true).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}

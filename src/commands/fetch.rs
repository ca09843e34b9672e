//! `fetch`: a stored copy back to a local file, verified on the way, nothing left behind on failure.
//!
//! The steps: resolve the id to exactly one stored copy ([`pick_copy`]); decide where it goes and
//! refuse before a byte is downloaded ([`fetch_target`], its pure part [`target_path`]); stream it
//! into a temporary file beside the target, verifying it, and rename it into place only when
//! verified ([`download_verified`]); print what was fetched.

use super::format::{FetchBar, Screen, progress_label};
use super::open_for_reading;
use crate::config::Config;
use crate::destination::Handle;
use crate::failure::Failure;
use crate::store::inventory::CopyRow;
use crate::transfer::Stored;
use anyhow::Context as _;
use std::path::{Path, PathBuf};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `fetch ID -o FILE|DIR [--force]`: a stored copy back to a local file, verified on the way.
/// Refusals come before any download; a failed or interrupted fetch leaves nothing behind.
pub async fn fetch(cfg: Config, id: &str, output: &Path, force: bool) -> Result<(), Failure> {
    let store = open_for_reading(&cfg).await?;
    let named = store.find(id).await.map_err(super::jobs::lookup_failure)?;
    let copies = store.copies_of(&named).await?;
    store.close().await;
    let (copy, object_key) = pick_copy(id, copies)?;
    let output = fetch_target(output, &object_key, force)?;
    let dest = cfg.destinations.get(&copy.destination).ok_or_else(|| {
        Failure::Usage(format!(
            "destination `{}` is no longer in the config",
            copy.destination
        ))
    })?;
    let handle = Handle::new(dest).await?;
    // Installed before the temp file exists, so an interrupt always finds it to remove.
    let mut signals = interrupt_signals()?;
    let stored = download_verified(&handle, &copy, &output, &mut signals).await?;
    outln!(
        "{}: {} bytes, sha256 {}, RDB v{} ({}), from {}\n{}",
        output.display(),
        stored.size,
        stored.sha256,
        stored.rdb.version,
        stored.checksum_label(),
        handle.locate(&object_key),
        stored.contents_text()
    );
    Ok(())
}

/// The one copy `id` names (a job id, or a provider backup id for one shard), with its object
/// key. No match and several (a cluster job has a copy per shard) are the user's to resolve
/// (exit 2); a copy without an object key cannot be read back (exit 3).
fn pick_copy(id: &str, copies: Vec<CopyRow>) -> Result<(CopyRow, String), Failure> {
    let rdbvault = crate::config::invocation();
    let copy = match <[CopyRow; 1]>::try_from(copies) {
        Ok([one]) => one,
        Err(none) if none.is_empty() => {
            return Err(Failure::Usage(format!(
                "`{id}` names a job with no stored copy (it stored none, or retention deleted them); see `{rdbvault} backups`"
            )));
        }
        Err(many) => {
            return Err(Failure::Usage(format!(
                "`{id}` has {} copies (one per shard); fetch each by its backup id: {}",
                many.len(),
                many.iter()
                    .map(|c| c.backup_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    match copy.object_key.clone() {
        Some(key) => Ok((copy, key)),
        None => Err(Failure::Failed(format!(
            "copy of backup {} has no object key recorded; nothing to fetch",
            copy.backup_id
        ))),
    }
}

/// Where `fetch` writes: `output` itself, or `output/<object name>` when `output` is a directory
/// (the last component of the object key). Every reason to refuse is found here, before a byte
/// is downloaded: the target is a directory, exists without `force`, or its directory is
/// missing or not a directory.
fn fetch_target(output: &Path, object_key: &str, force: bool) -> Result<PathBuf, Failure> {
    let target = target_path(output, output.is_dir(), object_key)?;
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(Failure::Usage(format!(
                "{} is a directory; give -o a file name, or a directory without an entry of that name",
                target.display()
            )));
        }
        Ok(_) if !force => {
            return Err(Failure::Usage(format!(
                "{} exists; pass --force to overwrite it",
                target.display()
            )));
        }
        _ => {}
    }
    let dir = parent_dir(&target);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(target),
        Ok(_) => Err(Failure::Usage(format!(
            "{} (for -o) is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing_dir(dir)),
        Err(e) => Err(Failure::Usage(format!(
            "cannot use the directory {} for -o: {e}",
            dir.display()
        ))),
    }
}

/// The path `-o` means, before looking at what is there: in a directory, the file is named
/// after the last part of the object key (which must be a name, not empty, `.` or `..`); an
/// output ending in `/` that is not a directory is a directory that does not exist (not a file
/// to create under that name).
fn target_path(output: &Path, output_is_dir: bool, object_key: &str) -> Result<PathBuf, Failure> {
    if output_is_dir {
        let name = object_key.rsplit('/').next().unwrap_or("");
        if name.is_empty() || name == "." || name == ".." {
            return Err(Failure::Usage(format!(
                "cannot name a file in {} after the object key `{object_key}`; give -o FILE",
                output.display()
            )));
        }
        Ok(output.join(name))
    } else if output.as_os_str().to_string_lossy().ends_with('/') {
        Err(missing_dir(output))
    } else {
        Ok(output.to_path_buf())
    }
}

fn missing_dir(dir: &Path) -> Failure {
    Failure::Usage(format!(
        "the directory {} for -o does not exist; create it (mkdir -p) or choose another",
        dir.display()
    ))
}

/// The directory a file goes in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary file beside `output`: hidden, and unique, so two fetches to the same target
/// do not write into each other. Beside it, so the final rename stays on one file system.
fn temp_path(output: &Path) -> PathBuf {
    parent_dir(output).join(format!(
        ".{}.rdbvault-fetch-{}",
        output
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("backup"),
        uuid::Uuid::new_v4().simple()
    ))
}

/// A file that is removed when dropped, unless kept: `fetch`'s temporary file, so no way out of
/// `fetch` (an error, a failed verification, Ctrl-C) leaves it behind.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, taken over so an interrupted fetch can remove its temporary file.
fn interrupt_signals() -> Result<[Signal; 3], Failure> {
    let on = |kind: SignalKind| {
        signal(kind).map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot install a signal handler for a clean interrupt: {e}"
            ))
        })
    };
    Ok([
        on(SignalKind::interrupt())?,
        on(SignalKind::terminate())?,
        on(SignalKind::hangup())?,
    ])
}

/// Resolves when the user interrupts (SIGINT, SIGTERM, SIGHUP).
async fn interrupted(signals: &mut [Signal; 3]) -> &'static str {
    let [int, term, hup] = signals;
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The copy at `output`, verified: streamed into a temporary file beside it and renamed into
/// place only once verified and on disk. Any error (and an interrupt) removes the temporary
/// file, so `output` is either the whole verified copy or untouched.
async fn download_verified(
    handle: &Handle,
    copy: &CopyRow,
    output: &Path,
    signals: &mut [Signal; 3],
) -> Result<Stored, Failure> {
    let temp = TempFile {
        path: temp_path(output),
        keep: false,
    };
    // 0600 from the start: the temp file becomes the fetched copy, which holds every key.
    let mut file = crate::private_fs::create(&temp.path).await.map_err(|e| {
        Failure::Usage(format!(
            "cannot create a file in {} (for -o): {e}; choose a directory you can write to",
            parent_dir(output).display()
        ))
    })?;
    let stored = stream_verified(handle, copy, &mut file, output, signals).await?;
    commit(temp, file, output).await?;
    Ok(stored)
}

/// Streams the copy into `file` through the checker, with a progress bar on a terminal, until
/// it is verified, found bad (exit 3) or interrupted (exit 1).
async fn stream_verified(
    handle: &Handle,
    copy: &CopyRow,
    file: &mut tokio::fs::File,
    output: &Path,
    signals: &mut [Signal; 3],
) -> Result<Stored, Failure> {
    let shard = if copy.shard_id.is_empty() {
        &copy.backup_id
    } else {
        &copy.shard_id
    };
    let bar = FetchBar::new(
        copy.size.unwrap_or(0).max(0) as u64,
        progress_label(&copy.instance_name, shard),
        Screen::stderr(),
    );
    let progress = |n| bar.set_position(n);
    let result = tokio::select! {
        r = crate::verify::check_copy(handle, copy, Some(file), &progress) => r,
        sig = interrupted(signals) => {
            bar.finish_and_clear();
            return Err(Failure::Runtime(anyhow::anyhow!(
                "interrupted by {sig}; nothing was written to {}",
                output.display()
            )));
        }
    };
    bar.finish_and_clear();
    result.map_err(|bad| {
        Failure::Failed(format!(
            "{bad}; nothing was written to {}",
            output.display()
        ))
    })
}

/// Puts the verified temporary file in place: on disk first (fsync), then renamed over
/// `output`, and only then kept.
async fn commit(mut temp: TempFile, file: tokio::fs::File, output: &Path) -> Result<(), Failure> {
    file.sync_all().await.with_context(|| {
        format!(
            "cannot fsync {}; nothing was written to {}",
            temp.path.display(),
            output.display()
        )
    })?;
    drop(file);
    tokio::fs::rename(&temp.path, output)
        .await
        .with_context(|| {
            format!(
                "cannot move the verified file to {}; nothing was written there",
                output.display()
            )
        })?;
    temp.keep = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::exit;

    fn copy(backup_id: &str, object_key: Option<&str>) -> CopyRow {
        CopyRow {
            id: 1,
            location: "destination".into(),
            policy: "nightly".into(),
            instance_uuid: "5d74bb81-0473-464d-b15b-0ae418619248".into(),
            instance_name: "prod-cache-01".into(),
            job_id: Some("0190a1b2".into()),
            backup_id: backup_id.into(),
            shard_id: "s1".into(),
            destination: "archive".into(),
            object_key: object_key.map(String::from),
            size: Some(1024),
            sha256: None,
            rdb_version: None,
            rdb_contents: None,
            requested_at: 0,
            verified: 1,
            verified_at: None,
            pinned: 0,
            missing: 0,
            deleted_at: None,
            last_check_at: None,
            last_check_error: None,
        }
    }

    #[test]
    fn one_matching_copy_is_fetched_by_its_object_key() {
        let (picked, key) = pick_copy("b1", vec![copy("b1", Some("n/p/b1.rdb"))]).unwrap();
        assert_eq!(picked.backup_id, "b1");
        assert_eq!(key, "n/p/b1.rdb");
    }

    #[test]
    fn a_job_without_copies_is_a_usage_error_pointing_at_backups() {
        let err = pick_copy("nope", Vec::new()).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("see `rdbvault backups`"), "{err}");
    }

    #[test]
    fn an_id_that_matches_several_shards_lists_their_backup_ids() {
        let copies = vec![copy("b1", Some("k1")), copy("b2", Some("k2"))];
        let err = pick_copy("job", copies).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert_eq!(
            err.to_string(),
            "`job` has 2 copies (one per shard); fetch each by its backup id: b1, b2"
        );
    }

    #[test]
    fn a_copy_without_an_object_key_cannot_be_fetched() {
        let err = pick_copy("b1", vec![copy("b1", None)]).unwrap_err();
        assert_eq!(err.exit_code(), exit::FAILED);
    }

    #[test]
    fn a_directory_output_names_the_file_after_the_last_part_of_the_key() {
        let target = target_path(Path::new("/restore"), true, "nightly/prod/b1.rdb").unwrap();
        assert_eq!(target, Path::new("/restore/b1.rdb"));
    }

    #[test]
    fn a_key_without_a_usable_last_part_cannot_name_a_file_in_a_directory() {
        for key in ["nightly/", "nightly/..", "nightly/.", ""] {
            let err = target_path(Path::new("/restore"), true, key).unwrap_err();
            assert_eq!(err.exit_code(), exit::USAGE, "{key}");
            assert!(err.to_string().contains("give -o FILE"), "{err}");
        }
    }

    #[test]
    fn an_output_ending_in_a_slash_that_is_not_a_directory_is_refused() {
        let err = target_path(Path::new("/restore/missing/"), false, "k.rdb").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the directory /restore/missing/ for -o does not exist; create it (mkdir -p) or choose another"
        );
    }

    #[test]
    fn a_file_output_is_used_as_given() {
        let target = target_path(Path::new("restore.rdb"), false, "n/b1.rdb").unwrap();
        assert_eq!(target, Path::new("restore.rdb"));
    }

    #[test]
    fn the_temporary_file_is_hidden_beside_the_output() {
        let beside = temp_path(Path::new("/restore/b1.rdb"));
        assert_eq!(beside.parent(), Some(Path::new("/restore")));
        let name = beside.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".b1.rdb.rdbvault-fetch-"), "{name}");
        let bare = temp_path(Path::new("b1.rdb"));
        assert_eq!(bare.parent(), Some(Path::new(".")));
        assert_ne!(temp_path(Path::new("b1.rdb")), bare, "unique per fetch");
    }
}

//! `fetch`: a stored copy back to a local file, verified on the way, nothing left behind on failure.

use super::open_for_reading;
use crate::config::Config;
use crate::failure::Failure;
use anyhow::Context as _;
use std::io::IsTerminal as _;

/// Where `fetch` writes: `output` itself, or `output/<object name>` when `output` is a directory
/// (the last component of the object key). Every reason to refuse is found here, before a byte
/// is downloaded.
fn fetch_target(
    output: &std::path::Path,
    object_key: &str,
    force: bool,
) -> Result<std::path::PathBuf, Failure> {
    use std::path::{Path, PathBuf};
    let target: PathBuf = if output.is_dir() {
        let name = object_key.rsplit('/').next().unwrap_or("");
        if name.is_empty() || name == "." || name == ".." {
            return Err(Failure::Usage(format!(
                "cannot name a file in {} after the object key `{object_key}`; give -o FILE",
                output.display()
            )));
        }
        output.join(name)
    } else if output.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Failure::Usage(format!(
            "the directory {} for -o does not exist; create it (mkdir -p) or choose another",
            output.display()
        )));
    } else {
        output.to_path_buf()
    };
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
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(target),
        Ok(_) => Err(Failure::Usage(format!(
            "{} (for -o) is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::Usage(format!(
            "the directory {} for -o does not exist; create it (mkdir -p) or choose another",
            dir.display()
        ))),
        Err(e) => Err(Failure::Usage(format!(
            "cannot use the directory {} for -o: {e}",
            dir.display()
        ))),
    }
}

/// A file that is removed when dropped, unless kept: `fetch`'s temporary file, so no way out of
/// `fetch` (an error, a failed verification, Ctrl-C) leaves it behind.
struct TempFile {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Resolves when the user interrupts (SIGINT, SIGTERM, SIGHUP).
async fn interrupted(signals: &mut [tokio::signal::unix::Signal; 3]) -> &'static str {
    let [int, term, hup] = signals;
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// `fetch ID -o FILE|DIR [--force]`: a stored copy back to a local file, verified on the way.
/// Refusals come before any download; a failed or interrupted fetch leaves nothing behind.
pub async fn fetch(
    cfg: Config,
    id: &str,
    output: &std::path::Path,
    force: bool,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let store = open_for_reading(&cfg).await?;
    let copies = store.destination_copies(&[id.to_string()]).await?;
    store.close().await;
    let copy = match copies.as_slice() {
        [] => {
            return Err(Failure::Usage(format!(
                "no stored copy matches `{id}` (a job id or a provider backup id); see `rdbvault backups`"
            )));
        }
        [one] => one.clone(),
        many => {
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
    let Some(object_key) = copy.object_key.clone() else {
        return Err(Failure::Failed(format!(
            "copy of backup {} has no object key recorded; nothing to fetch",
            copy.backup_id
        )));
    };
    let output = fetch_target(output, &object_key, force)?;
    let dest = cfg.destinations.get(&copy.destination).ok_or_else(|| {
        Failure::Usage(format!(
            "destination `{}` is no longer in the config",
            copy.destination
        ))
    })?;
    let handle = crate::destination::Handle::new(dest).await?;
    // Installed before the temp file exists, so an interrupt always finds it to remove.
    let on = |kind: SignalKind| {
        signal(kind).map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot install a signal handler for a clean interrupt: {e}"
            ))
        })
    };
    let mut signals = [
        on(SignalKind::interrupt())?,
        on(SignalKind::terminate())?,
        on(SignalKind::hangup())?,
    ];
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let temp = TempFile {
        path: dir.join(format!(
            ".{}.rdbvault-fetch-{}",
            output
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("backup"),
            uuid::Uuid::new_v4().simple()
        )),
        keep: false,
    };
    // 0600 from the start: the temp file becomes the fetched copy, which holds every key.
    let mut file = crate::private_fs::create(&temp.path).await.map_err(|e| {
        Failure::Usage(format!(
            "cannot create a file in {} (for -o): {e}; choose a directory you can write to",
            dir.display()
        ))
    })?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(copy.size.unwrap_or(0).max(0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            // cannot fail: a constant template.
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message("fetch");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |n| bar.set_position(n);
    let result = tokio::select! {
        r = crate::verify::check_copy(&handle, &copy, Some(&mut file), &progress) => r,
        sig = interrupted(&mut signals) => {
            bar.finish_and_clear();
            drop(file);
            drop(temp);
            return Err(Failure::Runtime(anyhow::anyhow!(
                "interrupted by {sig}; nothing was written to {}",
                output.display()
            )));
        }
    };
    bar.finish_and_clear();
    let stored = match result {
        Ok(s) => s,
        Err(bad) => {
            return Err(Failure::Failed(format!(
                "{bad}; nothing was written to {}",
                output.display()
            )));
        }
    };
    file.sync_all().await.with_context(|| {
        format!(
            "cannot fsync {}; nothing was written to {}",
            temp.path.display(),
            output.display()
        )
    })?;
    drop(file);
    tokio::fs::rename(&temp.path, &output)
        .await
        .with_context(|| {
            format!(
                "cannot move the verified file to {}; nothing was written there",
                output.display()
            )
        })?;
    let mut temp = temp;
    temp.keep = true;
    println!(
        "{}: {} bytes, sha256 {}, RDB v{} ({}), from {}",
        output.display(),
        stored.size,
        stored.sha256,
        stored.rdb.version,
        stored.checksum_label(),
        handle.locate(&object_key)
    );
    Ok(())
}

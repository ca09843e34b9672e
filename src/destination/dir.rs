//! A local directory as a destination: keys are relative paths under it, every one checked by
//! [`path_in`] before a file is written, read or deleted; the sink ([`sink`]) writes
//! `.partial` files (one writer each, under a lock) and renames them into place.

pub mod sink;

use super::{Backend, ObjectInfo, OpenUpload, OpenedSink, Reader, SinkRequest};
use crate::config::FileDestination;
use crate::transfer::{self, Error};
use anyhow::{Context as _, bail};
use std::path::PathBuf;

pub use sink::FileSink;

/// `file:/path`.
pub fn describe(cfg: &FileDestination) -> String {
    format!("file:{}", cfg.path.display())
}

/// `root` joined with a relative key, refusing any key that would leave `root` (an absolute
/// key, `..`, or an empty component): the last guard before a file is written or deleted.
///
/// # Errors
/// The key is not a plain relative path.
pub fn path_in(root: &std::path::Path, key: &str) -> Result<std::path::PathBuf, Error> {
    use std::path::Component;
    let rel = std::path::Path::new(key);
    let plain = !key.is_empty()
        && !key.contains("//")
        && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(Error::Destination(format!(
            "refusing the key {}: it is not a plain relative path under {}",
            transfer::shown(key),
            root.display()
        )));
    }
    Ok(root.join(rel))
}

/// One directory.
pub struct Directory {
    root: PathBuf,
}

impl Directory {
    pub fn new(cfg: &FileDestination) -> Directory {
        Directory {
            root: cfg.path.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for Directory {
    fn describe(&self) -> String {
        format!("file:{}", self.root.display())
    }

    fn key_prefix(&self) -> &str {
        ""
    }

    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn keeps_checksums(&self) -> bool {
        false
    }

    fn largest_object(&self) -> Option<u64> {
        None
    }

    async fn probe(&self) -> anyhow::Result<String> {
        let cfg = FileDestination {
            path: self.root.clone(),
        };
        tokio::task::spawn_blocking(move || probe_blocking(&cfg)).await?
    }

    async fn stat(&self, key: &str) -> anyhow::Result<Option<ObjectInfo>> {
        match tokio::fs::metadata(path_in(&self.root, key)?).await {
            Ok(m) => Ok(Some(ObjectInfo {
                size: m.len(),
                sha256: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", self.locate(key))),
        }
    }

    async fn open(&self, key: &str) -> anyhow::Result<Reader> {
        let f = tokio::fs::File::open(path_in(&self.root, key)?)
            .await
            .with_context(|| format!("cannot open {}", self.locate(key)))?;
        Ok(Box::new(f))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match tokio::fs::remove_file(path_in(&self.root, key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::anyhow!("cannot delete {}: {e}", self.locate(key))),
        }
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root.join(&prefix)];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(rel) = p.strip_prefix(&root) {
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await?
    }

    async fn open_sink(&self, req: SinkRequest) -> Result<OpenedSink, transfer::Error> {
        let final_path = path_in(&self.root, &req.key)?;
        let manifest_path = path_in(&self.root, &req.manifest_key)?;
        let resume_from = req.resume_from.as_ref().map(PathBuf::from);
        let sink::OpenedFile {
            sink,
            already,
            note,
        } = FileSink::open(final_path, manifest_path, resume_from).await?;
        let mut notes = Vec::new();
        if let Some(note) = note {
            notes.push(("resume", note));
        }
        if already.bytes() > 0 {
            notes.push((
                "resume",
                format!(
                    "continuing {} after {} bytes already on disk",
                    req.key,
                    already.bytes()
                ),
            ));
        }
        Ok(OpenedSink {
            temp_path: Some(sink.temp_path().display().to_string()),
            sink: Box::new(sink),
            already,
            resumable: true,
            notes,
        })
    }

    async fn abort_upload(&self, _key: &str, _upload_id: &str) -> Result<(), transfer::Error> {
        Ok(())
    }

    async fn discard_unfinished(&self, key: &str, temp_path: &str) {
        if let Ok(path) = path_in(&self.root, key) {
            sink::discard(&path, std::path::Path::new(temp_path)).await;
        }
    }

    async fn open_uploads(&self, _prefix: &str) -> anyhow::Result<Vec<OpenUpload>> {
        Ok(Vec::new())
    }
}

fn probe_blocking(cfg: &FileDestination) -> anyhow::Result<String> {
    use std::io::Write as _;
    let dir = &cfg.path;
    let meta = std::fs::metadata(dir).with_context(|| {
        format!(
            "{} does not exist or cannot be read: create it (mkdir -p) and make it writable by the rdbvault user",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let probe = dir.join(format!(
        ".rdbvault-write-probe-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = crate::private_fs::create_blocking(&probe)?;
        f.write_all(b"rdbvault write probe; safe to delete\n")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    };
    write().with_context(|| format!("cannot write and delete files in {}", dir.display()))?;
    Ok("write and delete OK".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_under_their_root() {
        let root = std::path::Path::new("/srv/archive");
        assert_eq!(
            path_in(root, "p/u/x.rdb").unwrap(),
            std::path::PathBuf::from("/srv/archive/p/u/x.rdb")
        );
        for bad in ["", "/etc/passwd", "../x", "p/../../x", "p//x", "./p"] {
            assert!(path_in(root, bad).is_err(), "{bad:?}");
        }
    }
}

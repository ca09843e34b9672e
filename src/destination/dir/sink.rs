//! The file sink: writes `<final name>.partial`, fsyncs, and renames it into place only after
//! verification; the manifest goes the same way. A crash leaves only a `.partial` file, which a
//! resumed job reads back through the checker and continues with `Range`.
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
    file: Option<BufWriter<tokio::fs::File>>,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Destination(format!("{what} {}: {e}", path.display()))
}

/// Syncs a directory so a rename inside it survives a power cut.
async fn sync_dir(dir: &Path) -> Result<(), Error> {
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&d).and_then(|f| f.sync_all()))
        .await
        .map_err(|e| Error::Destination(format!("sync task failed: {e}")))?
        .map_err(|e| io_error("cannot fsync directory", dir, e))
}

impl FileSink {
    /// The `.partial` name of a final path.
    pub fn temp_path_for(final_path: &Path) -> PathBuf {
        let mut name = final_path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        final_path.with_file_name(name)
    }

    /// Opens the sink. With `resume`, an existing `.partial` file is kept and read back through a
    /// fresh checker, which is returned so the download continues after its bytes.
    ///
    /// # Errors
    /// The directory cannot be created or the file opened.
    pub async fn open(
        final_path: PathBuf,
        manifest_path: PathBuf,
        resume: bool,
    ) -> Result<(FileSink, Checker), Error> {
        let temp_path = Self::temp_path_for(&final_path);
        if let Some(parent) = final_path.parent() {
            crate::private_fs::create_dir_all_async(parent)
                .await
                .map_err(|e| io_error("cannot create directory", parent, e))?;
        }
        let mut checker = Checker::new();
        let existing = resume && tokio::fs::metadata(&temp_path).await.is_ok();
        let file = if existing {
            let path = temp_path.clone();
            checker = tokio::task::spawn_blocking(move || -> std::io::Result<Checker> {
                use std::io::Read as _;
                let mut c = Checker::new();
                let mut f = std::fs::File::open(&path)?;
                let mut buf = vec![0u8; WRITE_BUFFER];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        return Ok(c);
                    }
                    c.update(&buf[..n]);
                }
            })
            .await
            .map_err(|e| Error::Destination(format!("read-back task failed: {e}")))?
            .map_err(|e| io_error("cannot read back", &temp_path, e))?;
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&temp_path)
                .await
                .map_err(|e| io_error("cannot reopen", &temp_path, e))?;
            // A `.partial` left by an older version may be 0644; the copy it becomes must not.
            crate::private_fs::tighten_file(&file)
                .await
                .map_err(|e| io_error("cannot chmod 600", &temp_path, e))?;
            file
        } else {
            crate::private_fs::create(&temp_path)
                .await
                .map_err(|e| io_error("cannot create", &temp_path, e))?
        };
        Ok((
            FileSink {
                final_path,
                manifest_path,
                temp_path,
                file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            },
            checker,
        ))
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }
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
        drop(file);
        tokio::fs::rename(&self.temp_path, &self.final_path)
            .await
            .map_err(|e| io_error("cannot rename into place", &self.final_path, e))?;
        let manifest_temp = Self::temp_path_for(&self.manifest_path);
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
        Ok(())
    }

    async fn abort(&mut self) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.temp_path).await;
    }
}

//! Streaming a provider backup to a destination in bounded memory, verifying it on the way.
//!
//! The HTTP body goes straight into the destination: S3 multipart parts (at most
//! `upload_concurrency` in flight, one filling) or a `.partial` file. SHA-256 and the RDB
//! verifier see every byte as it passes. Only when the byte count equals `BackupSize`, the
//! header is `REDIS` + 4 digits and the CRC64 trailer matches does the copy become visible: the
//! multipart upload is completed (or the small file PUT, or the rename done) and the manifest
//! written. A copy that fails verification is aborted and never visible.
//!
//! Each (re)connection asks `DownloadBackup` for a fresh URL first (URLs expire). A dropped
//! connection, an early end, a 403/404 or a 5xx from the download host resumes with `Range` from
//! the last byte received; the hash state is in memory, so nothing is read twice.
//!
//! - [`source`]: download URLs and resumable body streams.
//! - [`s3`] and [`file`]: the two sinks.

pub mod file;
pub mod s3;
pub mod source;

use crate::config::DownloadRoute;
use crate::rdb;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a faithful copy: wrong size, bad header, checksum mismatch.
    #[error("verification failed: {0}")]
    Verification(String),
    /// The provider or its download host failed for good.
    #[error("download failed: {0}")]
    Download(String),
    /// The destination refused a write.
    #[error("destination failed: {0}")]
    Destination(String),
    /// Shutdown was asked for; the journal says where the transfer stopped.
    #[error("interrupted by shutdown")]
    Cancelled,
    #[error("deadline exceeded (completion_window)")]
    Deadline,
}

/// What a shard's stored copy is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
    pub rdb: rdb::Summary,
}

impl Stored {
    pub fn checksum_label(&self) -> &'static str {
        match self.rdb.checksum {
            rdb::Checksum::Verified(_) => "verified",
            rdb::Checksum::Disabled => "disabled",
            rdb::Checksum::Absent => "absent",
        }
    }
}

/// The manifest written beside every object (PRODUCT.md §4).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Manifest {
    pub instance_uuid: String,
    pub instance_name: String,
    pub region: String,
    pub policy: String,
    pub provider_backup_id: String,
    pub shard_id: String,
    pub provider_start_time: String,
    pub provider_end_time: String,
    pub size: u64,
    pub sha256: String,
    pub rdb_version: u16,
    /// `verified`, `disabled` (rdbchecksum was off) or `absent` (RDB < 5).
    pub rdb_checksum: String,
    pub rdbvault_version: String,
    pub job_id: String,
    pub requested_at: DateTime<Utc>,
    pub stored_at: DateTime<Utc>,
    pub object_key: String,
}

/// `{prefix}{policy}/{instance}/{YYYY}/{MM}/{DD}/{YYYYMMDDTHHMMSSZ}-{backup_id}[-{shard_id}].rdb`,
/// with the UTC time at which the job asked for the backup.
pub fn object_key(
    prefix: &str,
    policy: &str,
    instance_uuid: &str,
    requested_at: DateTime<Utc>,
    backup_id: &str,
    shard_id: &str,
) -> String {
    let shard = if shard_id.is_empty() {
        String::new()
    } else {
        format!("-{}", sanitize(shard_id))
    };
    format!(
        "{prefix}{policy}/{instance_uuid}/{}/{}{shard}.rdb",
        requested_at.format("%Y/%m/%d"),
        format_args!(
            "{}-{}",
            requested_at.format("%Y%m%dT%H%M%SZ"),
            sanitize(backup_id)
        )
    )
}

/// The manifest's key beside an object key.
pub fn manifest_key(object_key: &str) -> String {
    format!("{object_key}.manifest.json")
}

/// Keeps provider ids safe inside a key or a file name.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Hashes and checks a stream as it passes.
pub struct Checker {
    sha: sha2::Sha256,
    rdb: rdb::Verifier,
    bytes: u64,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    pub fn new() -> Self {
        Checker {
            sha: sha2::Sha256::new(),
            rdb: rdb::Verifier::new(),
            bytes: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.rdb.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks size and RDB structure; returns what was stored.
    ///
    /// # Errors
    /// [`Error::Verification`] naming the mismatch.
    pub fn finish(self, expected_size: Option<u64>) -> Result<Stored, Error> {
        if let Some(expected) = expected_size
            && self.bytes != expected
        {
            return Err(Error::Verification(format!(
                "received {} bytes, the provider's BackupSize is {expected}",
                self.bytes
            )));
        }
        let summary = self
            .rdb
            .finish()
            .map_err(|e| Error::Verification(e.to_string()))?;
        Ok(Stored {
            size: self.bytes,
            sha256: hex::encode(self.sha.finalize()),
            rdb: summary,
        })
    }
}

/// Where a shard's bytes come from.
#[derive(Debug, Clone)]
pub struct ShardSource {
    pub instance_uuid: String,
    pub backup_id: String,
    pub expected_size: Option<u64>,
    pub route: DownloadRoute,
    /// A `DownloadBackup` answer obtained just before the transfer (the runner needs the shard
    /// id first): the first connection uses its URLs instead of asking again.
    pub fresh_urls: Option<crate::cds::model::BackupDownload>,
}

/// Progress callback: bytes received so far for this shard.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// A destination that takes a stream and makes it visible only when told.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Accepts the next bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error>;
    /// Makes the verified copy visible under its final name, with its metadata and manifest.
    async fn commit(&mut self, stored: &Stored, manifest: &Manifest) -> Result<(), Error>;
    /// Throws away everything written; nothing becomes visible.
    async fn abort(&mut self);
}

/// Streams one shard from the provider into `sink`, verifying it, and commits it.
///
/// `already` is the checker fed with bytes the sink already holds (a resumed `.partial`
/// file); downloading continues after them.
///
/// # Errors
/// Verification, download and destination failures; the sink is aborted on each, except on
/// cancellation, where the caller decides (the partial data may be resumed later).
#[allow(clippy::too_many_arguments)]
pub async fn transfer_shard<S: Sink>(
    downloader: &source::Downloader,
    src: &ShardSource,
    sink: &mut S,
    already: Checker,
    manifest: impl FnOnce(&Stored) -> Manifest,
    progress: Progress<'_>,
    cancel: &tokio_util::sync::CancellationToken,
    deadline: DateTime<Utc>,
) -> Result<Stored, Error> {
    let mut checker = already;
    let result = downloader
        .stream_into(src, &mut checker, sink, progress, cancel, deadline)
        .await;
    if let Err(e) = result {
        if !matches!(e, Error::Cancelled) {
            sink.abort().await;
        }
        return Err(e);
    }
    let stored = match checker.finish(src.expected_size) {
        Ok(s) => s,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    let manifest = manifest(&stored);
    if let Err(e) = sink.commit(&stored, &manifest).await {
        sink.abort().await;
        return Err(e);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_follow_the_product_layout() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T02:30:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            object_key("prod/", "nightly", "5d74bb81", t, "b1", ""),
            "prod/nightly/5d74bb81/2026/11/28/20261128T023005Z-b1.rdb"
        );
        assert_eq!(
            object_key("", "p", "u", t, "b/2", "shard 1"),
            "p/u/2026/11/28/20261128T023005Z-b_2-shard_1.rdb"
        );
        assert_eq!(manifest_key("a.rdb"), "a.rdb.manifest.json");
    }

    #[test]
    fn checker_reports_size_mismatch_before_rdb_problems() {
        let mut c = Checker::new();
        c.update(b"REDIS0011");
        let err = c.finish(Some(100)).unwrap_err();
        assert!(err.to_string().contains("BackupSize is 100"), "{err}");
    }
}

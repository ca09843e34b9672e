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
//! - the [`Sink`] trait, implemented by each destination kind in [`crate::destination`].
//! - object keys ([`object_key`], [`manifest_key`]) and the checks on provider ids that go
//!   into them ([`check_provider_id`], [`key_component`]).

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
    /// The destination refused the credentials: no retry helps until the operator fixes them.
    #[error("destination refused the credentials: {0}")]
    CredentialsRejected(String),
    /// Shutdown was asked for; the journal says where the transfer stopped.
    #[error("interrupted by shutdown")]
    Cancelled,
    #[error("deadline exceeded (completion_window)")]
    Deadline,
    /// Another process holds the job now (this one's lease lapsed): stop, touch nothing.
    #[error("{0}")]
    LostClaim(String),
    /// The state DB could not record the transfer's progress: a local failure, not the
    /// destination's, so it is not retried as one.
    #[error("cannot journal the transfer")]
    Journal(#[source] crate::store::Error),
}

impl Error {
    /// Whether another attempt may succeed: the download host or the destination failed in a
    /// way that can pass. Corrupt bytes, the deadline, a lost claim and local journal failures
    /// are not retried as transient.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Download(_) | Error::Destination(_))
    }
}

impl From<crate::store::Error> for Error {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::LostClaim { .. } => Error::LostClaim(e.to_string()),
            other => Error::Journal(other),
        }
    }
}

/// What a shard's stored copy is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stored {
    pub size: u64,
    pub sha256: String,
    pub rdb: rdb::Summary,
    /// What the file holds ([`rdb::contents`]), or why it could not be read: never a reason to
    /// refuse a copy whose size and CRC64 are right (a newer Redis may write what this reader
    /// does not know), but shown wherever the contents would be.
    pub contents: Result<rdb::contents::Contents, String>,
}

impl Stored {
    /// The contents' [`rdb::contents::Contents::summary`], or why they are unknown.
    pub fn contents_text(&self) -> String {
        match &self.contents {
            Ok(c) => c.summary(),
            Err(why) => format!("contents not read ({why})"),
        }
    }

    pub fn checksum_label(&self) -> &'static str {
        match self.rdb.checksum {
            rdb::Checksum::Verified(_) => "verified",
            rdb::Checksum::Disabled => "disabled",
            rdb::Checksum::Absent => "absent",
        }
    }
}

/// The manifest written beside every object (docs/product.md §4).
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
    /// What the file holds (absent from manifests written before rdbvault read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdb: Option<rdb::contents::Contents>,
    /// Why the file's contents could not be read (its bytes were still verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdb_unreadable: Option<String>,
}

/// `{prefix}{policy}/{instance}/{YYYY}/{MM}/{DD}/{YYYYMMDDTHHMMSSZ}-{backup_id}[-{shard_id}].rdb`,
/// with the UTC time at which the job asked for the backup. The provider's ids go through
/// [`key_component`]: callers check them first with [`check_provider_id`].
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
        format!("-{}", key_component(shard_id))
    };
    format!(
        "{prefix}{policy}/{}/{}/{}{shard}.rdb",
        key_component(instance_uuid),
        requested_at.format("%Y/%m/%d"),
        format_args!(
            "{}-{}",
            requested_at.format("%Y%m%dT%H%M%SZ"),
            key_component(backup_id)
        )
    )
}

/// The manifest's key beside an object key.
pub fn manifest_key(object_key: &str) -> String {
    format!("{object_key}.manifest.json")
}

/// The longest provider id (in bytes) rdbvault puts in a key. Real ids are UUIDs or 32 hex
/// digits; the limit keeps a whole key well inside S3's 1,024 bytes and a file name inside 255.
pub const MAX_PROVIDER_ID_BYTES: usize = 128;

/// A provider value that must not become part of an object key or a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the provider's {field} {shown} cannot name a backup copy: {why}; rdbvault refuses this instance's backup (report the value to the provider)"
)]
pub struct UnsafeProviderId {
    /// `instance_uuid`, `backup_id` or `shard_id`: also the metric label.
    pub field: &'static str,
    /// The value, escaped and shortened for a log line.
    pub shown: String,
    pub why: &'static str,
}

/// Checks a provider id before it reaches a key or a path. Refused: empty, longer than
/// [`MAX_PROVIDER_ID_BYTES`], containing `/` or `\\` or a control character, or `.`/`..`.
/// Everything else, non-ASCII letters included, is accepted and encoded by [`key_component`].
///
/// # Errors
/// [`UnsafeProviderId`] saying why.
pub fn check_provider_id(field: &'static str, value: &str) -> Result<(), UnsafeProviderId> {
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_PROVIDER_ID_BYTES {
        Some("it is longer than 128 bytes")
    } else if value.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if value == "." || value == ".." {
        Some("it is a relative path component")
    } else if value.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(UnsafeProviderId {
            field,
            shown: shown(value),
            why,
        }),
    }
}

/// A value for a message: debug-escaped (no control characters reach a terminal or a log) and
/// cut to 64 characters.
pub(crate) fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    if cut.len() < value.len() {
        format!("{cut:?}… ({} bytes)", value.len())
    } else {
        format!("{cut:?}")
    }
}

/// Encodes a provider id for a key or a file name, one-to-one: letters and digits (any
/// script), `-` and `_` stay; `.` stays except in first place (so no name is `.` or `..` or
/// hidden); every other character becomes `%XX` per UTF-8 byte, `%` included, so two different
/// ids never share an encoding. Real ids (UUIDs, hex) come out unchanged.
pub fn key_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        if c.is_alphanumeric() || c == '-' || c == '_' || (c == '.' && i > 0) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Hashes and checks a stream as it passes.
pub struct Checker {
    sha: sha2::Sha256,
    rdb: rdb::Verifier,
    contents: rdb::contents::Reader,
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
            contents: rdb::contents::Reader::new(),
            bytes: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.rdb.update(chunk);
        self.contents.update(chunk);
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
            contents: self.contents.finish(),
        })
    }
}

/// Where a shard's bytes come from.
#[derive(Debug, Clone)]
pub struct ShardSource {
    pub instance_uuid: String,
    pub backup_id: String,
    pub expected_size: Option<u64>,
    /// The most bytes accepted when the provider announced no size (`limits.max_backup_size`).
    pub max_size: u64,
    pub route: DownloadRoute,
    /// A `DownloadBackup` answer obtained just before the transfer (the runner needs the shard
    /// id first): the first connection uses its URLs instead of asking again.
    pub fresh_urls: Option<crate::cds::model::BackupDownload>,
}

/// Progress callback: bytes received so far for this shard.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// A destination that takes a stream and makes it visible only when told. Implemented by each
/// destination kind (`crate::destination::{s3, dir}`).
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Accepts the next bytes.
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error>;
    /// Makes the verified copy visible under its final name, with its metadata and manifest.
    async fn commit(&mut self, stored: &Stored, manifest: &Manifest) -> Result<(), Error>;
    /// Throws away everything written; nothing becomes visible.
    async fn abort(&mut self);
}

#[async_trait::async_trait]
impl<S: Sink + ?Sized> Sink for Box<S> {
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        (**self).write(chunk).await
    }
    async fn commit(&mut self, stored: &Stored, manifest: &Manifest) -> Result<(), Error> {
        (**self).commit(stored, manifest).await
    }
    async fn abort(&mut self) {
        (**self).abort().await
    }
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
    claim: (&crate::store::Store, &crate::store::jobs::Claim),
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
    // The last moment before the copy becomes visible: a process that lost its job to another
    // one (its lease lapsed while it downloaded) must not publish anything.
    let (store, claim) = claim;
    match store.holds(claim).await {
        Ok(true) => {}
        Ok(false) => {
            sink.abort().await;
            return Err(Error::LostClaim(format!(
                "job {} is held by another process now; {} did not publish its copy",
                claim.job_id, claim.owner
            )));
        }
        Err(e) => {
            sink.abort().await;
            return Err(e.into());
        }
    }
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
            object_key("", "p", "u", t, "b:2", "shard 1"),
            "p/u/2026/11/28/20261128T023005Z-b%3A2-shard%201.rdb"
        );
        assert_eq!(manifest_key("a.rdb"), "a.rdb.manifest.json");
    }

    #[test]
    fn provider_ids_that_are_paths_are_refused() {
        for bad in ["", "..", ".", "../../../x", "a/b", "a\\b", "a\nb", "x\0y"] {
            assert!(check_provider_id("backup_id", bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(MAX_PROVIDER_ID_BYTES + 1);
        let e = check_provider_id("instance_uuid", &long).unwrap_err();
        assert_eq!(e.field, "instance_uuid");
        assert!(e.to_string().len() < 400, "{e}");
        for good in [
            "5d74bb81-0473-464d-b15b-0ae418619248",
            "备份-一二三",
            "a.b",
            "..a",
            "a b",
        ] {
            check_provider_id("backup_id", good).unwrap();
        }
    }

    #[test]
    fn key_components_are_one_to_one_and_never_path_like() {
        assert_eq!(
            key_component("5d74bb81-0473-464d-b15b-0ae418619248"),
            "5d74bb81-0473-464d-b15b-0ae418619248"
        );
        assert_eq!(key_component("备份-1"), "备份-1");
        assert_eq!(key_component(".."), "%2E.");
        assert_eq!(key_component("a/b"), "a%2Fb");
        // Today's sanitising mapped all three to `a_b`.
        let ids = ["a_b", "a b", "a:b", "a%20b", "a%2520b", "a%b"];
        let keys: std::collections::BTreeSet<_> = ids.iter().map(|i| key_component(i)).collect();
        assert_eq!(keys.len(), ids.len(), "{keys:?}");
        for k in &keys {
            assert!(!k.contains('/') && !k.starts_with('.'), "{k}");
        }
    }

    proptest::proptest! {
        #[test]
        fn key_component_is_injective(a in "\\PC{0,12}", b in "\\PC{0,12}") {
            if a != b {
                proptest::prop_assert_ne!(key_component(&a), key_component(&b));
            }
        }
    }

    #[test]
    fn checker_reports_size_mismatch_before_rdb_problems() {
        let mut c = Checker::new();
        c.update(b"REDIS0011");
        let err = c.finish(Some(100)).unwrap_err();
        assert!(err.to_string().contains("BackupSize is 100"), "{err}");
    }
}

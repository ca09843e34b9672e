//! Where verified copies go, behind one handle: the only module that knows the destination
//! kinds.
//!
//! A [`Handle`] opens sinks for new copies, stats, reads, lists and deletes stored objects, and
//! aborts uploads a dead process left behind. The rest of rdbvault (the runner, prune, reconcile,
//! verify, fetch) speaks only to handles, built once per config in [`Handles`] and cached in
//! [`crate::services`].
//!
//! - [`s3`]: any S3-compatible bucket (multipart upload, metadata self-copy, SSE).
//! - [`dir`]: a local directory (`.partial` file, fsync, rename).
//!
//! Adding a kind: a variant in `config` ([`DestinationKind`]), one new file here implementing
//! [`Backend`] (and [`crate::transfer::Sink`] for its writer), and one arm in [`Handle::new`],
//! [`describe`] and [`settings`].

pub mod dir;
pub mod s3;

use crate::config::{Config, Destination, DestinationKind};
use crate::store::Store;
use crate::store::jobs::Claim;
use crate::transfer::{self, Sink};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

pub use s3::client as s3_client;
pub use s3::sdk_error_text;

/// The destination refused the credentials (unknown key id, wrong secret, missing permission):
/// a configuration problem, which commands report with exit 2. Carried inside an
/// `anyhow::Error`; find it with `downcast_ref`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsRejected(pub String);

/// No credentials for a destination that needs them (no key files, nothing in the environment
/// or the profile): a configuration problem, exit 2 like [`CredentialsRejected`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsMissing(pub String);

/// A byte stream from a destination.
pub type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// What a destination says about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// The SHA-256 recorded with the object (S3 `x-amz-meta-sha256`), where the kind keeps
    /// metadata; `None` for a plain file.
    pub sha256: Option<String>,
}

/// A multipart upload still open at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was started, if the destination says.
    pub started: Option<DateTime<Utc>>,
}

/// What the runner asks for when it starts (or resumes) one shard's copy.
pub struct SinkRequest {
    /// The object's key (with the destination's prefix, see [`Backend::key_prefix`]).
    pub key: String,
    pub manifest_key: String,
    pub backup_id: String,
    /// `BackupSize`, when the provider announced one (sizes the upload's parts).
    pub expected_size: Option<u64>,
    /// Where an earlier run of this shard left data at the destination (a `.partial` file),
    /// which is continued when nobody still writes it.
    pub resume_from: Option<String>,
    /// The journal the sink records its progress in (S3 parts), fenced on the job's claim.
    pub store: Store,
    pub claim: Claim,
}

/// A sink ready for bytes, and what the destination already holds of them.
pub struct OpenedSink {
    pub sink: Box<dyn Sink>,
    /// The checker fed with the bytes already at the destination (a resumed `.partial` file);
    /// the download continues after them.
    pub already: transfer::Checker,
    /// Where unfinished bytes wait, to be journaled so a later run can resume them.
    pub temp_path: Option<String>,
    /// Whether an interrupted sink can be continued by a later process. One that cannot (an
    /// S3 upload: the hash state is in memory) is aborted on shutdown instead.
    pub resumable: bool,
    /// Things worth a line in the job's journal: (event kind, text).
    pub notes: Vec<(&'static str, String)>,
}

/// One destination kind. Implemented by [`s3::Bucket`] and [`dir::Directory`]; only this module
/// builds them.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// `s3://bucket/prefix at endpoint` or `file:/path`.
    fn describe(&self) -> String;
    /// What every object key of this destination starts with (the S3 prefix; empty for a
    /// directory, whose keys are relative paths).
    fn key_prefix(&self) -> &str;
    /// Where a key lives, for messages: `s3://bucket/key` or a path.
    fn locate(&self, key: &str) -> String;
    /// Whether [`ObjectInfo::sha256`] is recorded with every object (S3 metadata); a kind that
    /// keeps none is checked by size alone.
    fn keeps_checksums(&self) -> bool;
    /// The largest object this kind accepts, if it has a limit of its own.
    fn largest_object(&self) -> Option<u64>;
    /// Writes and deletes a small probe object (`check-config --online`).
    async fn probe(&self) -> anyhow::Result<String>;
    /// The object's size and recorded checksum, or `None` if it does not exist.
    async fn stat(&self, key: &str) -> anyhow::Result<Option<ObjectInfo>>;
    /// Opens an object for streaming.
    async fn open(&self, key: &str) -> anyhow::Result<Reader>;
    /// Deletes an object; one that is already gone is not an error.
    async fn delete(&self, key: &str) -> anyhow::Result<()>;
    /// Every key under `prefix` (relative to the destination's own prefix, which is included
    /// in the keys returned).
    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>>;
    /// Opens a sink for one new copy.
    async fn open_sink(&self, req: SinkRequest) -> Result<OpenedSink, transfer::Error>;
    /// Aborts an upload an earlier process left open; one already gone is not an error. Kinds
    /// without uploads have nothing to do.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), transfer::Error>;
    /// Throws away the unfinished bytes of `key` after a failed job: the temporary file
    /// `temp_path` the job journaled, if it is one of `key`'s and nobody still writes it.
    async fn discard_unfinished(&self, key: &str, temp_path: &str);
    /// Uploads still open under `prefix` (relative to the destination's prefix).
    async fn open_uploads(&self, prefix: &str) -> anyhow::Result<Vec<OpenUpload>>;
}

/// Access to one destination's objects. Cheap to clone.
#[derive(Clone)]
pub struct Handle(Arc<dyn Backend>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Handle").field(&self.0.describe()).finish()
    }
}

impl std::ops::Deref for Handle {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Handle {
    /// Builds the client for a destination (S3: credentials, region, endpoint).
    ///
    /// # Errors
    /// S3 key files cannot be read; no static credentials where they are required.
    pub async fn new(dest: &Destination) -> anyhow::Result<Handle> {
        Ok(Handle(match &dest.kind {
            DestinationKind::S3(cfg) => Arc::new(s3::Bucket::new(cfg).await?),
            DestinationKind::File(cfg) => Arc::new(dir::Directory::new(cfg)),
        }))
    }

    /// Whether the object exists, and its size.
    ///
    /// # Errors
    /// The destination cannot be asked.
    pub async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.stat(key).await?.map(|o| o.size))
    }

    /// Reads a small object (a manifest) whole.
    ///
    /// # Errors
    /// It does not exist or cannot be read.
    pub async fn read_small(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context as _;
        use tokio::io::AsyncReadExt as _;
        let mut r = self.open(key).await?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .await
            .with_context(|| format!("cannot read {}", self.locate(key)))?;
        Ok(buf)
    }
}

/// The handles of every destination a config names, built once (an S3 client each) and shared
/// by every job, prune and check of that config.
#[derive(Clone, Debug, Default)]
pub struct Handles(HashMap<String, Handle>);

impl Handles {
    /// # Errors
    /// A destination's client cannot be built (see [`Handle::new`]).
    pub async fn open(config: &Config) -> anyhow::Result<Handles> {
        let mut map = HashMap::new();
        for d in config.destinations.values() {
            map.insert(d.name.clone(), Handle::new(d).await?);
        }
        Ok(Handles(map))
    }

    /// The handle of a configured destination; `None` for a name that left the config.
    pub fn get(&self, name: &str) -> Option<&Handle> {
        self.0.get(name)
    }
}

/// A short human description: `s3://bucket/prefix/` or `file:/path`.
pub fn describe(dest: &Destination) -> String {
    match &dest.kind {
        DestinationKind::S3(cfg) => s3::describe(cfg),
        DestinationKind::File(cfg) => dir::describe(cfg),
    }
}

/// The settings worth showing beside [`describe`] (`check-config`): ` (part 16MiB x 4, ...)`
/// for S3, nothing for a directory.
pub fn settings(dest: &Destination) -> String {
    match &dest.kind {
        DestinationKind::S3(cfg) => s3::settings(cfg),
        DestinationKind::File(_) => String::new(),
    }
}

/// Checks that rdbvault can write and delete at the destination: writes a small probe object
/// (or file) under the prefix and removes it again.
///
/// # Errors
/// Says which step failed (bucket access, write, delete) and what to check.
pub async fn probe(dest: &Destination) -> anyhow::Result<String> {
    Handle::new(dest).await?.probe().await
}

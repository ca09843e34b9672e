//! Where verified copies go: an S3 bucket (any S3-compatible store) or a local directory.
//!
//! This module owns building the S3 client from the config and the write-access probe that
//! `check-config --online` runs. The streaming transfer itself lands with the pipeline.

use crate::config::{
    Destination, DestinationKind, FileDestination, S3Credentials, S3Destination, credentials,
};
use anyhow::{Context as _, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, ProvideCredentials as _, Region};

/// The credentials of a destination that may not ask the network for them: the environment,
/// then `AWS_PROFILE` / the shared config files. No web identity, no ECS container endpoint,
/// no EC2 instance metadata service. Resolved once here so a destination without keys fails at
/// once, naming what to set, instead of after a metadata-service timeout.
async fn static_credentials(
    cfg: &S3Destination,
) -> anyhow::Result<aws_config::meta::credentials::CredentialsProviderChain> {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::meta::credentials::CredentialsProviderChain;
    use aws_config::profile::ProfileFileCredentialsProvider;
    let chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
    if let Err(e) = chain.provide_credentials().await {
        tracing::debug!(destination = %cfg.name, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "no static S3 credentials");
        bail!(
            "destination `{name}` (s3://{bucket}/{prefix}): no S3 credentials found; set access_key_id_file and secret_access_key_file on destinations.{name}, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials. A destination with its own endpoint never asks the EC2/ECS instance role unless it says `credentials: instance_profile`",
            name = cfg.name,
            bucket = cfg.bucket,
            prefix = cfg.prefix,
        );
    }
    Ok(chain)
}

/// Builds an S3 client for a destination: its region (else `AWS_REGION`, else `us-east-1`), its
/// endpoint and addressing style, and its key files if set; else, per its `credentials`, the
/// environment and profiles only ([`S3Credentials::Static`], the default with an `endpoint`) or
/// the whole AWS default chain with the instance role ([`S3Credentials::DefaultChain`]).
///
/// # Errors
/// Unreadable or world-readable key files; no static credentials where they are required.
pub async fn s3_client(cfg: &S3Destination) -> anyhow::Result<aws_sdk_s3::Client> {
    let region = cfg
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region));
    if let (Some(id_file), Some(secret_file)) =
        (&cfg.access_key_id_file, &cfg.secret_access_key_file)
    {
        let id = credentials::read_secret_file(id_file).with_context(|| {
            format!(
                "destinations.{}.access_key_id_file (bucket {})",
                cfg.name, cfg.bucket
            )
        })?;
        let secret = credentials::read_secret_file(secret_file).with_context(|| {
            format!(
                "destinations.{}.secret_access_key_file (bucket {})",
                cfg.name, cfg.bucket
            )
        })?;
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret,
            None,
            None,
            "rdbvault-config",
        ));
    } else if cfg.credentials == S3Credentials::Static {
        loader = loader.credentials_provider(static_credentials(cfg).await?);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.path_style);
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint_url(endpoint.as_str().trim_end_matches('/'));
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// One S3 SDK failure as text: what was being done and where, then the SDK's error with its
/// sources (the service's code and message when it answered). The one formatting of S3 errors,
/// shared by the handles here and the upload sink.
pub fn sdk_error_text(what: &str, e: impl std::error::Error) -> String {
    format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
}

/// A short human description: `s3://bucket/prefix/` or `file:/path`.
pub fn describe(dest: &Destination) -> String {
    match &dest.kind {
        DestinationKind::S3(s3) => {
            let mut text = format!("s3://{}/{}", s3.bucket, s3.prefix);
            if let Some(e) = &s3.endpoint {
                text.push_str(&format!(" at {}", e.as_str().trim_end_matches('/')));
            }
            text
        }
        DestinationKind::File(f) => format!("file:{}", f.path.display()),
    }
}

/// Checks that rdbvault can write and delete at the destination: writes a small probe object
/// (or file) under the prefix and removes it again.
///
/// # Errors
/// Says which step failed (bucket access, write, delete) and what to check.
pub async fn probe(dest: &Destination) -> anyhow::Result<String> {
    match &dest.kind {
        DestinationKind::S3(s3) => probe_s3(s3).await,
        DestinationKind::File(f) => probe_file(f),
    }
}

async fn probe_s3(cfg: &S3Destination) -> anyhow::Result<String> {
    let client = s3_client(cfg).await?;
    let key = format!(
        "{}.rdbvault-write-probe-{}",
        cfg.prefix,
        uuid::Uuid::new_v4().simple()
    );
    client
        .put_object()
        .bucket(&cfg.bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"rdbvault write probe; safe to delete\n",
        ))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))
        .with_context(|| {
            format!(
                "cannot write to s3://{}/{}: check the bucket exists, the endpoint, and that the credentials allow s3:PutObject",
                cfg.bucket, cfg.prefix
            )
        })?;
    client
        .delete_object()
        .bucket(&cfg.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e)))
        .with_context(|| {
            format!(
                "wrote s3://{}/{key} but cannot delete it: retention needs s3:DeleteObject; remove the probe object by hand",
                cfg.bucket
            )
        })?;
    Ok("write and delete OK".into())
}

fn probe_file(cfg: &FileDestination) -> anyhow::Result<String> {
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

/// Read, list and delete access to one destination's objects, by key (for a directory, the key
/// is the path relative to `path`).
#[derive(Clone)]
pub enum Handle {
    S3 {
        client: aws_sdk_s3::Client,
        cfg: std::sync::Arc<S3Destination>,
    },
    File {
        root: std::path::PathBuf,
    },
}

/// A byte stream from a destination.
pub type Reader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

impl Handle {
    /// # Errors
    /// S3 key files cannot be read.
    pub async fn new(dest: &Destination) -> anyhow::Result<Handle> {
        Ok(match &dest.kind {
            DestinationKind::S3(cfg) => Handle::S3 {
                client: s3_client(cfg).await?,
                cfg: std::sync::Arc::new((**cfg).clone()),
            },
            DestinationKind::File(f) => Handle::File {
                root: f.path.clone(),
            },
        })
    }

    /// Where a key lives, for messages: `s3://bucket/key` or a path.
    pub fn locate(&self, key: &str) -> String {
        match self {
            Handle::S3 { cfg, .. } => format!("s3://{}/{key}", cfg.bucket),
            Handle::File { root } => root.join(key).display().to_string(),
        }
    }

    /// The object's size, or `None` if it does not exist.
    ///
    /// # Errors
    /// The destination cannot be asked.
    pub async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self {
            Handle::S3 { client, cfg } => {
                match client
                    .head_object()
                    .bucket(&cfg.bucket)
                    .key(key)
                    .send()
                    .await
                {
                    Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
                    Err(e) => Err(anyhow::anyhow!(sdk_error_text(
                        &format!("HeadObject {}", self.locate(key)),
                        e
                    ))),
                }
            }
            Handle::File { root } => {
                match tokio::fs::metadata(crate::transfer::path_in(root, key)?).await {
                    Ok(m) => Ok(Some(m.len())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(anyhow::anyhow!("{}: {e}", self.locate(key))),
                }
            }
        }
    }

    /// Opens an object for streaming.
    ///
    /// # Errors
    /// It does not exist or cannot be read.
    pub async fn open(&self, key: &str) -> anyhow::Result<Reader> {
        match self {
            Handle::S3 { client, cfg } => {
                let out = client
                    .get_object()
                    .bucket(&cfg.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(sdk_error_text(
                            &format!("GetObject {}", self.locate(key)),
                            e
                        ))
                    })?;
                Ok(Box::new(out.body.into_async_read()))
            }
            Handle::File { root } => {
                let f = tokio::fs::File::open(crate::transfer::path_in(root, key)?)
                    .await
                    .with_context(|| format!("cannot open {}", self.locate(key)))?;
                Ok(Box::new(f))
            }
        }
    }

    /// Reads a small object (a manifest) whole.
    ///
    /// # Errors
    /// It does not exist or cannot be read.
    pub async fn read_small(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        let mut r = self.open(key).await?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .await
            .with_context(|| format!("cannot read {}", self.locate(key)))?;
        Ok(buf)
    }

    /// Deletes an object; one that is already gone is not an error.
    ///
    /// # Errors
    /// The destination refused.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self {
            Handle::S3 { client, cfg } => {
                client
                    .delete_object()
                    .bucket(&cfg.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(sdk_error_text(
                            &format!("DeleteObject {}", self.locate(key)),
                            e
                        ))
                    })?;
                Ok(())
            }
            Handle::File { root } => {
                match tokio::fs::remove_file(crate::transfer::path_in(root, key)?).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(anyhow::anyhow!("cannot delete {}: {e}", self.locate(key))),
                }
            }
        }
    }

    /// Every key under `prefix` (relative to the destination's own prefix for S3, which is
    /// included in the keys returned).
    ///
    /// # Errors
    /// Listing failed.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Handle::S3 { client, cfg } => {
                let mut keys = Vec::new();
                let mut token = None;
                loop {
                    let out = client
                        .list_objects_v2()
                        .bucket(&cfg.bucket)
                        .prefix(format!("{}{prefix}", cfg.prefix))
                        .set_continuation_token(token.take())
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(sdk_error_text(
                                &format!("ListObjectsV2 s3://{}/{}", cfg.bucket, cfg.prefix),
                                e
                            ))
                        })?;
                    keys.extend(
                        out.contents()
                            .iter()
                            .filter_map(|o| o.key().map(String::from)),
                    );
                    match out.next_continuation_token() {
                        Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                Ok(keys)
            }
            Handle::File { root } => {
                let root = root.clone();
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
        }
    }
}

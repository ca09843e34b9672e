//! An S3-compatible bucket as a destination: the client (credentials, region, endpoint), the
//! object operations behind [`super::Handle`], and the multipart upload sink ([`upload`]).
//!
//! Every SDK failure is formatted once, by [`sdk_error_text`]: what was being done and where,
//! then the service's code and message.

pub mod upload;

use super::{Backend, ObjectInfo, OpenUpload, OpenedSink, Reader, SinkRequest};
use crate::config::{S3Credentials, S3Destination, credentials};
use crate::transfer;
use anyhow::Context as _;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, ProvideCredentials as _, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::sync::Arc;

pub use upload::{MAX_PARTS, S3Sink, abort_upload, list_uploads, part_size_for};

/// S3's largest object (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = crate::config::S3_MAX_OBJECT_SIZE;

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
        return Err(anyhow::Error::new(super::CredentialsMissing(format!(
            "destination `{name}` (s3://{bucket}/{prefix}): no S3 credentials found; set access_key_id_file and secret_access_key_file on destinations.{name}, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials. A destination with its own endpoint never asks the EC2/ECS instance role unless it says `credentials: instance_profile`",
            name = cfg.name,
            bucket = cfg.bucket,
            prefix = cfg.prefix,
        ))));
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
pub async fn client(cfg: &S3Destination) -> anyhow::Result<aws_sdk_s3::Client> {
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

/// One S3 SDK failure as text: what was being done and where, the service's code and message
/// when it answered (or why it did not), and the setting to check. The one formatting of S3
/// errors, shared by the handles here and the upload sink; never the SDK's debug dump.
pub fn sdk_error_text<E>(what: &str, e: SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let answer = match &e {
        SdkError::ServiceError(_) => Answer::Service {
            code: e.code().map(str::to_string),
            message: e.message().map(str::to_string),
            status: e.raw_response().map(|r| r.status().as_u16()),
        },
        SdkError::TimeoutError(_) => Answer::Unreachable("timed out".into()),
        SdkError::DispatchFailure(d) => Answer::Unreachable(if d.is_timeout() {
            "timed out connecting".into()
        } else if d.is_io() {
            format!("cannot connect: {}", innermost(&e))
        } else {
            format!("cannot send the request: {}", innermost(&e))
        }),
        SdkError::ResponseError(_) => Answer::Garbled(innermost(&e)),
        _ => Answer::Garbled(innermost(&e)),
    };
    failure_text(what, &answer)
}

/// Codes that mean the credentials, not the service, are wrong.
const CREDENTIAL_CODES: [&str; 5] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
];

/// Whether S3 refused the credentials (a credential code, or HTTP 403) rather than failed.
pub fn refused<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    e.code().is_some_and(|c| CREDENTIAL_CODES.contains(&c))
        || e.raw_response().is_some_and(|r| r.status().as_u16() == 403)
}

/// An SDK failure as an `anyhow::Error` with its message, typed
/// [`super::CredentialsRejected`] when the credentials were refused, so every command can tell
/// (exit 2) and the runner does not retry it.
fn typed_error<E>(what: &str, e: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let rejected = refused(&e);
    let text = sdk_error_text(what, e);
    if rejected {
        anyhow::Error::new(super::CredentialsRejected(text))
    } else {
        anyhow::anyhow!(text)
    }
}

/// A probe failure ([`typed_error`]).
fn probe_error<E>(e: SdkError<E, HttpResponse>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    typed_error("the probe", e)
}

/// What S3 (or the way to it) said, as far as a message needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// The service answered with an error.
    Service {
        code: Option<String>,
        message: Option<String>,
        status: Option<u16>,
    },
    /// No answer: connection, DNS, TLS or a timeout.
    Unreachable(String),
    /// An answer the SDK could not read.
    Garbled(String),
}

/// The deepest cause of an error chain: the part a person can act on ("Connection refused").
fn innermost(e: &dyn std::error::Error) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

fn failure_text(what: &str, answer: &Answer) -> String {
    match answer {
        Answer::Service {
            code,
            message,
            status,
        } => {
            let code = code.as_deref().unwrap_or("");
            let said = match (code, message.as_deref(), status) {
                ("", None, Some(s)) => format!("HTTP {s}"),
                ("", Some(m), _) => m.to_string(),
                // A bare code (a HEAD answer, or a server that sends no body) says little
                // alone: the status goes with it.
                (c, None, Some(s)) => format!("{c} (HTTP {s})"),
                (c, None, None) => c.to_string(),
                (c, Some(m), _) => format!("{c}: {m}"),
            };
            match hint(code, *status) {
                Some(h) => format!("{what}: {said} ({h})"),
                None => format!("{what}: {said}"),
            }
        }
        Answer::Unreachable(why) => format!(
            "{what}: {why} (check the destination's endpoint and region, and that the host is reachable)"
        ),
        Answer::Garbled(why) => {
            format!("{what}: unreadable answer: {why} (is the endpoint an S3-compatible server?)")
        }
    }
}

/// The setting a code points at.
fn hint(code: &str, status: Option<u16>) -> Option<&'static str> {
    Some(match code {
        "NoSuchBucket" => "the bucket does not exist: check `bucket`, `endpoint` and `region`",
        "InvalidAccessKeyId" => {
            "this endpoint does not know the access key id: check access_key_id_file or AWS_ACCESS_KEY_ID"
        }
        "SignatureDoesNotMatch" => {
            "the secret key does not match the key id: check secret_access_key_file or AWS_SECRET_ACCESS_KEY"
        }
        "AccessDenied" | "AllAccessDisabled" => {
            "the credentials lack a permission: rdbvault needs s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket and s3:AbortMultipartUpload on the prefix"
        }
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            "the bucket is in another region: set the destination's `region`"
        }
        "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => {
            "the session credentials expired: refresh them or use key files"
        }
        c if c.starts_with("KMS") => "check server_side_encryption.kms_key_id and the key's policy",
        "" if status == Some(403) => "forbidden: check the credentials and the bucket policy",
        "NotFound" | "" if status == Some(404) => {
            "nothing at this address: check `bucket`, `endpoint` (an S3-compatible server, not a web server) and `path_style`"
        }
        "" if status == Some(301) => {
            "the bucket is in another region: set the destination's `region`"
        }
        _ => return None,
    })
}

/// `s3://bucket/prefix`, with the endpoint when it is not AWS's.
pub fn describe(cfg: &S3Destination) -> String {
    let mut text = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
    if let Some(e) = &cfg.endpoint {
        text.push_str(&format!(" at {}", e.as_str().trim_end_matches('/')));
    }
    text
}

/// Part size, upload concurrency, addressing and storage class, for `check-config`.
pub fn settings(cfg: &S3Destination) -> String {
    format!(
        " (part {} x {}{}{})",
        crate::config::units::format_size(cfg.part_size),
        cfg.upload_concurrency,
        if cfg.path_style { ", path-style" } else { "" },
        cfg.storage_class
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default()
    )
}

/// One bucket (and prefix) with its client.
pub struct Bucket {
    client: aws_sdk_s3::Client,
    cfg: Arc<S3Destination>,
}

impl Bucket {
    /// # Errors
    /// See [`client`].
    pub async fn new(cfg: &S3Destination) -> anyhow::Result<Bucket> {
        Ok(Bucket {
            client: client(cfg).await?,
            cfg: Arc::new(cfg.clone()),
        })
    }

    fn fail<E>(&self, action: &str, key: &str, e: SdkError<E, HttpResponse>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        typed_error(&format!("{action} {}", self.locate(key)), e)
    }
}

#[async_trait::async_trait]
impl Backend for Bucket {
    fn describe(&self) -> String {
        describe(&self.cfg)
    }

    fn key_prefix(&self) -> &str {
        &self.cfg.prefix
    }

    fn locate(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }

    fn keeps_checksums(&self) -> bool {
        true
    }

    fn largest_object(&self) -> Option<u64> {
        Some(MAX_OBJECT_SIZE)
    }

    async fn probe(&self) -> anyhow::Result<String> {
        probe(&self.client, &self.cfg).await
    }

    async fn stat(&self, key: &str) -> anyhow::Result<Option<ObjectInfo>> {
        let head = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await;
        match head {
            Ok(h) => Ok(Some(ObjectInfo {
                size: h.content_length().unwrap_or(0).max(0) as u64,
                sha256: h.metadata().and_then(|m| m.get("sha256")).cloned(),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.fail("HeadObject", key, e)),
        }
    }

    async fn open(&self, key: &str) -> anyhow::Result<Reader> {
        let out = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("GetObject", key, e))?;
        Ok(Box::new(out.body.into_async_read()))
    }

    async fn delete(&self, key: &str) -> anyhow::Result<()> {
        self.client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.fail("DeleteObject", key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .prefix(format!("{}{prefix}", self.cfg.prefix))
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.fail("ListObjectsV2", &self.cfg.prefix, e))?;
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

    async fn open_sink(&self, req: SinkRequest) -> Result<OpenedSink, transfer::Error> {
        let mut cfg = (*self.cfg).clone();
        let mut notes = Vec::new();
        if let Some(size) = req.expected_size {
            let part_size = part_size_for(size, cfg.part_size);
            if part_size != cfg.part_size {
                notes.push((
                    "part-size",
                    format!(
                        "{} bytes in parts of {} would exceed S3's {} parts; using parts of {}",
                        size,
                        crate::config::units::format_size(cfg.part_size),
                        MAX_PARTS,
                        crate::config::units::format_size(part_size)
                    ),
                ));
                cfg.part_size = part_size;
            }
        }
        let sink = S3Sink::new(
            self.client.clone(),
            Arc::new(cfg),
            req.key,
            req.manifest_key,
            req.backup_id,
            req.store,
            req.claim,
        );
        Ok(OpenedSink {
            sink: Box::new(sink),
            already: transfer::Checker::new(),
            temp_path: None,
            // The hash state of a streamed upload is in memory: another process cannot go on.
            resumable: false,
            notes,
        })
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), transfer::Error> {
        abort_upload(&self.client, &self.cfg.bucket, key, upload_id).await
    }

    async fn discard_unfinished(&self, _key: &str, _temp_path: &str) {
        // Unfinished S3 data is an open multipart upload: see `abort_upload`.
    }

    async fn open_uploads(&self, prefix: &str) -> anyhow::Result<Vec<OpenUpload>> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.cfg.bucket)
            .prefix(format!("{}{prefix}", self.cfg.prefix))
            .send()
            .await
            .map_err(|e| self.fail("ListMultipartUploads", &self.cfg.prefix, e))?;
        Ok(out
            .uploads()
            .iter()
            .filter_map(|u| {
                Some(OpenUpload {
                    key: u.key()?.to_string(),
                    upload_id: u.upload_id()?.to_string(),
                    started: u
                        .initiated()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                })
            })
            .collect())
    }
}

async fn probe(client: &aws_sdk_s3::Client, cfg: &S3Destination) -> anyhow::Result<String> {
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
        .map_err(probe_error)
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
        .map_err(probe_error)
        .with_context(|| {
            format!(
                "wrote s3://{}/{key} but cannot delete it: retention needs s3:DeleteObject; remove the probe object by hand",
                cfg.bucket
            )
        })?;
    Ok("write and delete OK".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, message: &str, status: u16) -> Answer {
        Answer::Service {
            code: (!code.is_empty()).then(|| code.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
            status: Some(status),
        }
    }

    #[test]
    fn an_s3_error_says_the_code_the_message_and_the_setting_to_check() {
        let t = failure_text(
            "PutObject s3://b/k",
            &service("NoSuchBucket", "The specified bucket does not exist", 404),
        );
        assert_eq!(
            t,
            "PutObject s3://b/k: NoSuchBucket: The specified bucket does not exist (the bucket does not exist: check `bucket`, `endpoint` and `region`)"
        );
        let t = failure_text("HeadObject s3://b/k", &service("", "", 403));
        assert!(t.contains("HTTP 403") && t.contains("credentials"), "{t}");
        let t = failure_text("x", &service("SignatureDoesNotMatch", "m", 403));
        assert!(t.contains("secret_access_key_file"), "{t}");
        let t = failure_text(
            "x",
            &service("SlowDown", "Please reduce your request rate", 503),
        );
        assert_eq!(t, "x: SlowDown: Please reduce your request rate");
        // An answer without a body still says its status and what to check.
        let t = failure_text("the probe", &service("NotFound", "", 404));
        assert!(
            t.starts_with("the probe: NotFound (HTTP 404) (nothing at this address"),
            "{t}"
        );
        let t = failure_text(
            "x",
            &Answer::Unreachable("cannot connect: Connection refused (os error 111)".into()),
        );
        assert!(
            t.contains("Connection refused") && t.contains("endpoint"),
            "{t}"
        );
        assert!(t.len() < 300, "{t}");
    }
}

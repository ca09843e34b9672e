//! The S3 upload sink: multipart upload with bounded parts in flight, or one PUT for a small file.
//!
//! Nothing is visible until [`Sink::commit`]: the multipart upload is completed only after the
//! whole stream was verified, and a small file (under one part) is held in memory and PUT only
//! then. The object gets `x-amz-meta-sha256` and `x-amz-meta-backup-id`; since the SHA-256 of a
//! streamed upload is known only at the end, a multipart object gets its metadata by a
//! server-side self-copy right after completion, before the manifest (the mark of a complete
//! copy) is written.

use crate::config::{S3Destination, ServerSideEncryption};
use crate::store::jobs::Claim;
use crate::store::{PartRow, Store};
use crate::transfer::{Error, Manifest, Sink, Stored};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::task::JoinSet;

/// S3's limit on the parts of one multipart upload.
pub const MAX_PARTS: u64 = 10_000;

/// The part size for an object of `total` bytes: the configured one, or the smallest whole
/// number of MiB that keeps the upload within [`MAX_PARTS`] (a 200 GiB RDB file needs 21 MiB).
pub fn part_size_for(total: u64, configured: u64) -> u64 {
    let needed = total.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    // Never past S3's largest part: a size that would need more is refused before this.
    configured.max(needed).min(MAX_PART_SIZE)
}

/// S3's largest part (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// S3's limit for a single CopyObject; larger objects are copied part by part.
pub const COPY_OBJECT_LIMIT: u64 = 5 << 30;
/// Part size for a multipart self-copy.
const COPY_PART_SIZE: u64 = 1 << 30;

fn s3_error<E>(what: &str, e: aws_sdk_s3::error::SdkError<E>) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if super::refused(&e) {
        Error::CredentialsRejected(super::sdk_error_text(what, e))
    } else {
        Error::Destination(super::sdk_error_text(what, e))
    }
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/`.
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

pub struct S3Sink {
    client: aws_sdk_s3::Client,
    cfg: Arc<S3Destination>,
    key: String,
    manifest_key: String,
    backup_id: String,
    store: Store,
    claim: Claim,
    upload_id: Option<String>,
    /// The part being filled; its capacity is `part_size`, so filling never reallocates.
    buf: BytesMut,
    /// Part buffers back from finished uploads, reused for the next parts: memory stays at
    /// (`upload_concurrency` + 1) × `part_size` however large the backup is, and the allocator
    /// never sees a stream of 16 MiB allocations to fragment.
    spare: Vec<BytesMut>,
    next_part: i32,
    inflight: JoinSet<Result<(PartRow, Bytes), Error>>,
    parts: Vec<PartRow>,
    /// Above this size the metadata self-copy goes part by part (a knob for tests).
    pub copy_object_limit: u64,
}

impl S3Sink {
    pub fn new(
        client: aws_sdk_s3::Client,
        cfg: Arc<S3Destination>,
        key: String,
        manifest_key: String,
        backup_id: String,
        store: Store,
        claim: Claim,
    ) -> Self {
        S3Sink {
            client,
            buf: BytesMut::new(),
            spare: Vec::new(),
            cfg,
            key,
            manifest_key,
            backup_id,
            store,
            claim,
            upload_id: None,
            next_part: 1,
            inflight: JoinSet::new(),
            parts: Vec::new(),
            copy_object_limit: COPY_OBJECT_LIMIT,
        }
    }

    /// Smaller than one part: the whole, verified file is in memory; one PUT.
    async fn put_whole(&mut self, stored: &Stored) -> Result<(), Error> {
        let data = std::mem::take(&mut self.buf).freeze();
        self.put(&self.key, "application/octet-stream")
            .content_length(data.len() as i64)
            .set_metadata(Some(self.metadata(stored)))
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!("PutObject s3://{}/{}", self.cfg.bucket, self.key),
                    e,
                )
            })?;
        Ok(())
    }

    /// Uploads the last part, waits for all, checks their sizes add up to the verified stream,
    /// completes the upload and gives the object its metadata.
    async fn complete_upload(&mut self, stored: &Stored) -> Result<(), Error> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.upload_part(last).await?;
        }
        while !self.inflight.is_empty() {
            self.join_one().await?;
        }
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| p.part_number);
        let uploaded: i64 = parts.iter().map(|p| p.size).sum();
        if uploaded as u64 != stored.size {
            return Err(Error::Destination(format!(
                "uploaded parts hold {uploaded} bytes, the verified stream {}",
                stored.size
            )));
        }
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.part_number as i32)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!(
                        "CompleteMultipartUpload s3://{}/{}",
                        self.cfg.bucket, self.key
                    ),
                    e,
                )
            })?;
        self.upload_id = None;
        self.set_metadata(stored).await?;
        Ok(())
    }

    /// A PutObject of `key` with the destination's storage class and encryption: the one
    /// builder for the data of a small copy and for every manifest.
    fn put(
        &self,
        key: &str,
        content_type: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let (sse, kms) = self.sse();
        self.client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(key)
            .content_type(content_type)
            .set_storage_class(self.storage_class())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
    }

    fn storage_class(&self) -> Option<aws_sdk_s3::types::StorageClass> {
        self.cfg
            .storage_class
            .as_deref()
            .map(aws_sdk_s3::types::StorageClass::from)
    }

    fn sse(
        &self,
    ) -> (
        Option<aws_sdk_s3::types::ServerSideEncryption>,
        Option<String>,
    ) {
        match &self.cfg.server_side_encryption {
            None => (None, None),
            Some(ServerSideEncryption::Aes256) => {
                (Some(aws_sdk_s3::types::ServerSideEncryption::Aes256), None)
            }
            Some(ServerSideEncryption::Kms { key_id }) => (
                Some(aws_sdk_s3::types::ServerSideEncryption::AwsKms),
                key_id.clone(),
            ),
        }
    }

    async fn ensure_upload(&mut self) -> Result<String, Error> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let (sse, kms) = self.sse();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(&self.key)
            .content_type("application/octet-stream")
            .metadata("backup-id", &self.backup_id)
            .set_storage_class(self.storage_class())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!(
                        "CreateMultipartUpload s3://{}/{}",
                        self.cfg.bucket, self.key
                    ),
                    e,
                )
            })?;
        let id = out
            .upload_id()
            .ok_or_else(|| {
                Error::Destination("CreateMultipartUpload returned no upload id".into())
            })?
            .to_string();
        // Journal it at once, so a crash leaves an upload rdbvault knows to abort.
        self.store
            .shard_pending_data(&self.claim, &self.backup_id, Some(&id), None)
            .await?;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    async fn join_one(&mut self) -> Result<(), Error> {
        if let Some(joined) = self.inflight.join_next().await {
            self.finish_part(joined).await?;
        }
        Ok(())
    }

    /// Journals parts that have finished uploading, without waiting for the others, so the
    /// journal always says how far the upload got.
    async fn reap_finished(&mut self) -> Result<(), Error> {
        while let Some(joined) = self.inflight.try_join_next() {
            self.finish_part(joined).await?;
        }
        Ok(())
    }

    async fn finish_part(
        &mut self,
        joined: Result<Result<(PartRow, Bytes), Error>, tokio::task::JoinError>,
    ) -> Result<(), Error> {
        let (part, data) =
            joined.map_err(|e| Error::Destination(format!("upload task failed: {e}")))??;
        // The SDK has dropped its handle on the body, so the buffer is ours again.
        if let Ok(mut buffer) = data.try_into_mut() {
            buffer.clear();
            self.spare.push(buffer);
        }
        self.store
            .record_part(&self.claim, &self.backup_id, &part)
            .await?;
        self.parts.push(part);
        Ok(())
    }

    async fn upload_part(&mut self, data: Bytes) -> Result<(), Error> {
        if self.next_part as u64 > MAX_PARTS {
            return Err(Error::Destination(format!(
                "s3://{}/{} would need more than {MAX_PARTS} parts of {}; raise part_size",
                self.cfg.bucket,
                self.key,
                crate::config::units::format_size(self.cfg.part_size)
            )));
        }
        let upload_id = self.ensure_upload().await?;
        while self.inflight.len() >= self.cfg.upload_concurrency {
            self.join_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let client = self.client.clone();
        let (bucket, key) = (self.cfg.bucket.clone(), self.key.clone());
        self.inflight.spawn(async move {
            let size = data.len() as i64;
            let out = client
                .upload_part()
                .bucket(&bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(size)
                .body(ByteStream::from(data.clone()))
                .customize()
                // No SigV4 hash of the payload: it would be a third SHA-256 pass over every
                // byte (ours is the second). The part still carries the SDK's CRC32 checksum,
                // which S3 checks, and the whole object is checked against our SHA-256 later.
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| s3_error(&format!("UploadPart {number} of s3://{bucket}/{key}"), e))?;
            Ok((
                PartRow {
                    part_number: i64::from(number),
                    etag: out.e_tag().unwrap_or_default().to_string(),
                    size,
                },
                data,
            ))
        });
        Ok(())
    }

    fn metadata(&self, stored: &Stored) -> std::collections::HashMap<String, String> {
        [
            ("sha256".to_string(), stored.sha256.clone()),
            ("backup-id".to_string(), self.backup_id.clone()),
        ]
        .into_iter()
        .collect()
    }

    /// Replaces the completed object's metadata with the final one (server-side copy).
    async fn set_metadata(&self, stored: &Stored) -> Result<(), Error> {
        let (sse, kms) = self.sse();
        let source = format!("{}/{}", self.cfg.bucket, encode_key(&self.key));
        if stored.size <= self.copy_object_limit {
            self.client
                .copy_object()
                .bucket(&self.cfg.bucket)
                .key(&self.key)
                .copy_source(&source)
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(self.metadata(stored)))
                .content_type("application/octet-stream")
                .set_storage_class(self.storage_class())
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms)
                .send()
                .await
                .map_err(|e| s3_error("CopyObject (setting x-amz-meta-sha256)", e))?;
            return Ok(());
        }
        // Too large for one CopyObject: a multipart copy of the object onto itself.
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(&self.key)
            .content_type("application/octet-stream")
            .set_metadata(Some(self.metadata(stored)))
            .set_storage_class(self.storage_class())
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload (metadata copy)", e))?;
        let copy_id = up.upload_id().unwrap_or_default().to_string();
        let copy_part_size = COPY_PART_SIZE.min(self.copy_object_limit.max(5 << 20));
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 1;
        let result: Result<(), Error> = async {
            while start < stored.size {
                let end = (start + copy_part_size).min(stored.size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.cfg.bucket)
                    .key(&self.key)
                    .upload_id(&copy_id)
                    .part_number(number)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| s3_error("UploadPartCopy (metadata copy)", e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string();
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(etag)
                        .build(),
                );
                number += 1;
                start = end + 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(&self.key)
                .upload_id(&copy_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| s3_error("CompleteMultipartUpload (metadata copy)", e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(&self.key)
                .upload_id(&copy_id)
                .send()
                .await;
        }
        result
    }
}

#[async_trait::async_trait]
impl Sink for S3Sink {
    async fn write(&mut self, chunk: Bytes) -> Result<(), Error> {
        if !self.inflight.is_empty() {
            self.reap_finished().await?;
        }
        let part_size = self.cfg.part_size as usize;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(part_size));
            }
            let n = (part_size - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == part_size {
                // Waits for a free upload slot first, which returns a buffer to `spare`.
                let part = std::mem::take(&mut self.buf).freeze();
                self.upload_part(part).await?;
            }
        }
        Ok(())
    }

    async fn commit(&mut self, stored: &Stored, manifest: &Manifest) -> Result<(), Error> {
        if self.upload_id.is_none() {
            self.put_whole(stored).await?;
        } else {
            self.complete_upload(stored).await?;
        }
        // What the destination now holds must be what was verified.
        let head = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!("HeadObject s3://{}/{}", self.cfg.bucket, self.key),
                    e,
                )
            })?;
        let size = head.content_length().unwrap_or(-1);
        let sha = head.metadata().and_then(|m| m.get("sha256")).cloned();
        if size as u64 != stored.size || sha.as_deref() != Some(stored.sha256.as_str()) {
            return Err(Error::Destination(format!(
                "s3://{}/{} holds {size} bytes with sha256 {sha:?}; expected {} bytes with {}",
                self.cfg.bucket, self.key, stored.size, stored.sha256
            )));
        }
        // cannot fail: the manifest is strings, numbers and times.
        let body = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        self.put(&self.manifest_key, "application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                s3_error(
                    &format!(
                        "PutObject manifest s3://{}/{}",
                        self.cfg.bucket, self.manifest_key
                    ),
                    e,
                )
            })?;
        Ok(())
    }

    async fn abort(&mut self) {
        self.inflight.abort_all();
        while self.inflight.join_next().await.is_some() {}
        self.buf.clear();
        if let Some(id) = self.upload_id.take()
            && let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.cfg.bucket)
                .key(&self.key)
                .upload_id(&id)
                .send()
                .await
        {
            tracing::error!(
                key = %self.key,
                error = %aws_sdk_s3::error::DisplayErrorContext(e),
                "cannot abort the multipart upload; reconcile will abort it later"
            );
            return;
        }
        let _ = self
            .store
            .shard_pending_data(&self.claim, &self.backup_id, None, None)
            .await;
    }
}

/// Aborts a multipart upload left by an earlier process (resume after a crash).
pub async fn abort_upload(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), Error> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Already gone (completed or aborted) is fine.
        Err(e) if aws_sdk_s3::error::ProvideErrorMetadata::code(&e) == Some("NoSuchUpload") => {
            Ok(())
        }
        Err(e) => Err(s3_error(
            &format!("AbortMultipartUpload s3://{bucket}/{key}"),
            e,
        )),
    }
}

/// Open multipart uploads under a prefix: (key, upload id).
pub async fn list_uploads(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<(String, String)>, Error> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .map_err(|e| s3_error("ListMultipartUploads", e))?;
    Ok(out
        .uploads()
        .iter()
        .map(|u| {
            (
                u.key().unwrap_or_default().to_string(),
                u.upload_id().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_when_the_part_limit_needs_it() {
        let mib = 1u64 << 20;
        assert_eq!(part_size_for(1 << 30, 16 * mib), 16 * mib);
        assert_eq!(part_size_for(16 * mib * MAX_PARTS, 16 * mib), 16 * mib);
        assert_eq!(part_size_for(16 * mib * MAX_PARTS + 1, 16 * mib), 17 * mib);
        let big = 200u64 << 30;
        let part = part_size_for(big, 16 * mib);
        assert_eq!(part, 21 * mib);
        assert!(big.div_ceil(part) <= MAX_PARTS);
    }
}

//! A job's provider records (one shard each) and the multipart parts of their uploads: where
//! each shard's transfer stands, journaled so a resumed job continues or aborts it. Every write
//! is fenced on the job's [`Claim`] (see [`super::jobs`]).

use super::jobs::{Claim, claimed, held};
use super::sql::{sql, sql_as};
use super::{Result, Store};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct ShardRow {
    pub job_id: String,
    pub backup_id: String,
    pub shard_id: String,
    pub size: Option<i64>,
    pub provider_start: String,
    pub provider_end: String,
    #[sqlx(try_from = "String")]
    pub state: crate::job::ShardState,
    pub object_key: Option<String>,
    pub manifest_key: Option<String>,
    pub upload_id: Option<String>,
    pub temp_path: Option<String>,
    pub bytes_done: i64,
    pub sha256: Option<String>,
    pub rdb_version: Option<i64>,
    pub checksum: Option<String>,
    /// What the stored file holds: JSON of [`crate::rdb::contents::Contents`] (see
    /// [`ShardRow::contents`]); `None` before it is stored or when it could not be read.
    #[serde(rename = "rdb", serialize_with = "contents_as_object")]
    pub rdb_contents: Option<String>,
}

/// Shows a stored contents column in JSON output as the object it holds, not as a string.
pub(super) fn contents_as_object<S: serde::Serializer>(
    json: &Option<String>,
    to: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    json.as_deref()
        .and_then(|j| serde_json::from_str::<crate::rdb::contents::Contents>(j).ok())
        .serialize(to)
}

impl ShardRow {
    /// The stored file's contents, when they were read.
    pub fn contents(&self) -> Option<crate::rdb::contents::Contents> {
        self.rdb_contents
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
    }
}

impl ShardRow {
    /// A provider record of a job, before its transfer: `waiting`, nothing written yet.
    pub fn waiting(job_id: &str, backup_id: &str, size: Option<i64>) -> ShardRow {
        ShardRow {
            job_id: job_id.to_string(),
            backup_id: backup_id.to_string(),
            shard_id: String::new(),
            size,
            provider_start: String::new(),
            provider_end: String::new(),
            state: crate::job::ShardState::Waiting,
            object_key: None,
            manifest_key: None,
            upload_id: None,
            temp_path: None,
            bytes_done: 0,
            sha256: None,
            rdb_version: None,
            checksum: None,
            rdb_contents: None,
        }
    }
}

/// A shard's verified copy, as the journal records it ([`Store::shard_stored`]).
#[derive(Debug, Clone, Copy)]
pub struct StoredShard<'a> {
    pub bytes: i64,
    pub sha256: &'a str,
    pub rdb_version: i64,
    /// `verified`, `disabled` or `absent`.
    pub checksum: &'a str,
    pub contents: Option<&'a crate::rdb::contents::Contents>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct PartRow {
    pub part_number: i64,
    pub etag: String,
    pub size: i64,
}

impl Store {
    /// Records the job's provider records (once, when they are all finished): all or none.
    pub async fn insert_shards(&self, claim: &Claim, rows: &[ShardRow]) -> Result<()> {
        let text = format!(
            "INSERT INTO job_shards (job_id, backup_id, shard_id, size, provider_start, provider_end, state)
             SELECT $1, $3, $4, $5, $6, $7, 'waiting' WHERE {}
             ON CONFLICT (job_id, backup_id) DO NOTHING",
            held(self.kind())
        );
        let insert = |r: &ShardRow| {
            claimed(claim, text.clone())
                .bind(r.backup_id.clone())
                .bind(r.shard_id.clone())
                .bind(r.size)
                .bind(r.provider_start.clone())
                .bind(r.provider_end.clone())
        };
        let mut written = 0;
        if let [only] = rows {
            written += insert(only).execute(self.pool()).await?.rows_affected();
        } else {
            // In one transaction: a job resumed after a crash must never see part of its set.
            // Its first statement holds the job row (PostgreSQL) or the write lock (SQLite)
            // to the commit, so the claim checked there covers the rest.
            let mut tx = self.pool().begin().await?;
            for r in rows {
                written += insert(r).execute(&mut tx).await?.rows_affected();
            }
            tx.commit().await?;
        }
        self.check_held(claim, written).await
    }

    pub async fn shards(&self, job_id: &str) -> Result<Vec<ShardRow>> {
        Ok(sql_as::<ShardRow>(
            "SELECT job_id, backup_id, shard_id, size, provider_start, provider_end, state, object_key,
                    manifest_key, upload_id, temp_path, bytes_done, sha256, rdb_version, checksum, rdb_contents
             FROM job_shards WHERE job_id = $1 ORDER BY shard_id, backup_id",
        )
        .bind(job_id.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// Starts (or restarts) a shard's transfer: its keys and where its partial data lives.
    pub async fn shard_started(
        &self,
        claim: &Claim,
        backup_id: &str,
        shard_id: &str,
        object_key: &str,
        manifest_key: &str,
    ) -> Result<()> {
        let text = format!(
            "UPDATE job_shards SET state = 'transferring', shard_id = $4, object_key = $5, manifest_key = $6, bytes_done = 0
             WHERE job_id = $1 AND backup_id = $3 AND {}",
            held(self.kind())
        );
        let done = claimed(claim, text)
            .bind(backup_id.to_string())
            .bind(shard_id.to_string())
            .bind(object_key.to_string())
            .bind(manifest_key.to_string())
            .execute(self.pool())
            .await?;
        self.check_held(claim, done.rows_affected()).await
    }

    /// Records where a shard's not-yet-visible data lives: an S3 multipart upload id or a
    /// `.partial` file (either may be `None` to clear it).
    pub async fn shard_pending_data(
        &self,
        claim: &Claim,
        backup_id: &str,
        upload_id: Option<&str>,
        temp_path: Option<&str>,
    ) -> Result<()> {
        let held = held(self.kind());
        if upload_id.is_none() {
            // The parts of an upload that is no longer the shard's go first: should the next
            // statement not happen, the journal still names the old upload with fewer parts
            // than it has, and a resume uploads them again; the other order could pair a new
            // upload with the old one's parts.
            let text =
                format!("DELETE FROM job_parts WHERE job_id = $1 AND backup_id = $3 AND {held}");
            claimed(claim, text)
                .bind(backup_id.to_string())
                .execute(self.pool())
                .await?;
        }
        let text = format!(
            "UPDATE job_shards SET upload_id = $4, temp_path = $5 WHERE job_id = $1 AND backup_id = $3 AND {held}"
        );
        let done = claimed(claim, text)
            .bind(backup_id.to_string())
            .bind(upload_id.map(str::to_string))
            .bind(temp_path.map(str::to_string))
            .execute(self.pool())
            .await?;
        self.check_held(claim, done.rows_affected()).await
    }

    pub async fn record_part(&self, claim: &Claim, backup_id: &str, part: &PartRow) -> Result<()> {
        let held = held(self.kind());
        let mut tx = self.pool().begin().await?;
        // The claimed write first: it holds the job row (or SQLite's write lock) to the commit.
        let text = format!(
            "INSERT INTO job_parts (job_id, backup_id, part_number, etag, size)
             SELECT $1, $3, $4, $5, $6 WHERE {held}
             ON CONFLICT (job_id, backup_id, part_number) DO UPDATE SET etag = excluded.etag, size = excluded.size"
        );
        let done = claimed(claim, text)
            .bind(backup_id.to_string())
            .bind(part.part_number)
            .bind(part.etag.clone())
            .bind(part.size)
            .execute(&mut tx)
            .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return self.check_held(claim, 0).await;
        }
        sql(
            "UPDATE job_shards SET bytes_done = (SELECT COALESCE(SUM(size), 0) FROM job_parts WHERE job_id = $1 AND backup_id = $2)
             WHERE job_id = $1 AND backup_id = $2",
        )
        .bind(claim.job_id.clone())
        .bind(backup_id.to_string())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn parts(&self, job_id: &str, backup_id: &str) -> Result<Vec<PartRow>> {
        Ok(sql_as::<PartRow>(
            "SELECT part_number, etag, size FROM job_parts WHERE job_id = $1 AND backup_id = $2 ORDER BY part_number",
        )
        .bind(job_id.to_string())
        .bind(backup_id.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// A shard's verified copy is visible at the destination.
    pub async fn shard_stored(
        &self,
        claim: &Claim,
        backup_id: &str,
        copy: &StoredShard<'_>,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        // The claimed write first: it holds the job row (or SQLite's write lock) to the commit.
        let text = format!(
            "UPDATE job_shards SET state = 'stored', bytes_done = $4, sha256 = $5, rdb_version = $6, checksum = $7,
                    rdb_contents = $8, upload_id = NULL, temp_path = NULL
             WHERE job_id = $1 AND backup_id = $3 AND {}",
            held(self.kind())
        );
        let done = claimed(claim, text)
            .bind(backup_id.to_string())
            .bind(copy.bytes)
            .bind(copy.sha256.to_string())
            .bind(copy.rdb_version)
            .bind(copy.checksum.to_string())
            .bind(copy.contents.and_then(|c| serde_json::to_string(c).ok()))
            .execute(&mut tx)
            .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            return self.check_held(claim, 0).await;
        }
        sql("DELETE FROM job_parts WHERE job_id = $1 AND backup_id = $2")
            .bind(claim.job_id.clone())
            .bind(backup_id.to_string())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn shard_failed(&self, claim: &Claim, backup_id: &str) -> Result<()> {
        let text = format!(
            "UPDATE job_shards SET state = 'failed' WHERE job_id = $1 AND backup_id = $3 AND {}",
            held(self.kind())
        );
        let done = claimed(claim, text)
            .bind(backup_id.to_string())
            .execute(self.pool())
            .await?;
        self.check_held(claim, done.rows_affected()).await
    }
}

//! The inventory of copies: each verified object at a destination, and each provider backup
//! rdbvault created.

use super::sql::{Tx, sql, sql_as};
use super::{Result, Store};

#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct CopyRow {
    pub id: i64,
    pub location: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub job_id: Option<String>,
    pub backup_id: String,
    pub shard_id: String,
    pub destination: String,
    pub object_key: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub rdb_version: Option<i64>,
    /// What the file holds: JSON of [`crate::rdb::contents::Contents`], when it was read.
    #[serde(rename = "rdb", serialize_with = "super::shards::contents_as_object")]
    pub rdb_contents: Option<String>,
    pub requested_at: i64,
    pub verified: i64,
    pub verified_at: Option<i64>,
    pub pinned: i64,
    pub missing: i64,
    pub deleted_at: Option<i64>,
    /// When the copy was last re-read by `verify` or the daemon's re-verification.
    pub last_check_at: Option<i64>,
    /// Why that re-read failed; `None` when it passed (or never ran).
    pub last_check_error: Option<String>,
}

impl CopyRow {
    /// What the file holds, when it was read.
    pub fn contents(&self) -> Option<crate::rdb::contents::Contents> {
        self.rdb_contents
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
    }

    /// A verified object at a destination (not a provider backup).
    pub fn at_destination(&self) -> bool {
        self.location == "destination"
    }

    /// A provider backup rdbvault created.
    pub fn at_provider(&self) -> bool {
        self.location == "provider"
    }

    /// Verified and not found missing since: a copy that counts.
    pub fn is_good(&self) -> bool {
        self.verified == 1 && self.missing == 0
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned == 1
    }

    /// Not deleted by retention.
    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }
}

/// A copy to record.
#[derive(Debug, Clone)]
pub struct NewCopy {
    pub location: &'static str,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub job_id: String,
    pub backup_id: String,
    pub shard_id: String,
    pub destination: String,
    pub object_key: Option<String>,
    pub size: i64,
    pub sha256: Option<String>,
    pub rdb_version: Option<i64>,
    pub rdb_contents: Option<String>,
    pub requested_at: i64,
    pub verified_at: i64,
}

/// Records a verified copy (idempotent: recording the same copy twice keeps one row). Called
/// inside the fenced transaction that completes a job ([`Store::complete_job`]).
pub(super) async fn insert_copy(conn: &mut Tx, c: &NewCopy) -> Result<()> {
    sql(
        "INSERT INTO backups (location, policy, instance_uuid, instance_name, job_id, backup_id, shard_id,
                              destination, object_key, size, sha256, rdb_version, requested_at, verified, verified_at,
                              rdb_contents)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, $15)
         ON CONFLICT (location, destination, backup_id) DO UPDATE SET
           verified = 1, verified_at = excluded.verified_at, object_key = excluded.object_key,
           sha256 = excluded.sha256, size = excluded.size, missing = 0,
           rdb_contents = COALESCE(excluded.rdb_contents, backups.rdb_contents)",
    )
    .bind(c.location)
    .bind(c.policy.clone())
    .bind(c.instance_uuid.clone())
    .bind(c.instance_name.clone())
    .bind(c.job_id.clone())
    .bind(c.backup_id.clone())
    .bind(c.shard_id.clone())
    .bind(c.destination.clone())
    .bind(c.object_key.clone())
    .bind(c.size)
    .bind(c.sha256.clone())
    .bind(c.rdb_version)
    .bind(c.requested_at)
    .bind(c.verified_at)
    .bind(c.rdb_contents.clone())
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Copies that still exist, newest first.
    pub async fn copies(
        &self,
        policy: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<CopyRow>> {
        Ok(sql_as::<CopyRow>(
            "SELECT id, location, policy, instance_uuid, instance_name, job_id, backup_id, shard_id, destination,
                    object_key, size, sha256, rdb_version, rdb_contents, requested_at, verified, verified_at, pinned, missing, deleted_at,
                    last_check_at, last_check_error
             FROM backups
             WHERE deleted_at IS NULL AND ($1 IS NULL OR policy = $1) AND ($2 IS NULL OR instance_uuid = $2)
             ORDER BY requested_at DESC, id DESC",
        )
        .bind(policy.map(str::to_string))
        .bind(instance.map(str::to_string))
        .fetch_all(self.pool())
        .await?)
    }
}

impl Store {
    /// Per (instance, location) of `policy`: how many backup sets (a job, or a provider backup
    /// rdbvault does not know) have a verified copy that is neither missing nor deleted. Reads
    /// only the partial index of such copies (`backups_live_verified`), never the history.
    pub async fn verified_set_counts(&self, policy: &str) -> Result<Vec<(String, String, i64)>> {
        Ok(sql_as(
            "SELECT instance_uuid, location, COUNT(DISTINCT COALESCE(job_id, backup_id))
             FROM backups
             WHERE policy = $1 AND deleted_at IS NULL AND verified = 1 AND missing = 0
             GROUP BY instance_uuid, location",
        )
        .bind(policy.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// [`Store::verified_set_counts`] of one instance: (location, sets), by the index on
    /// (policy, instance): what a job's end recounts without touching the rest of the fleet.
    pub async fn verified_set_counts_of(
        &self,
        policy: &str,
        instance: &str,
    ) -> Result<Vec<(String, i64)>> {
        Ok(sql_as(
            "SELECT location, COUNT(DISTINCT COALESCE(job_id, backup_id))
             FROM backups
             WHERE policy = $1 AND instance_uuid = $2
               AND deleted_at IS NULL AND verified = 1 AND missing = 0
             GROUP BY location",
        )
        .bind(policy.to_string())
        .bind(instance.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// Every copy of a policy, deleted ones included (`deleted_at` set).
    pub async fn copies_with_deleted(
        &self,
        policy: &str,
        instance: Option<&str>,
    ) -> Result<Vec<CopyRow>> {
        Ok(sql_as::<CopyRow>(
            "SELECT id, location, policy, instance_uuid, instance_name, job_id, backup_id, shard_id, destination,
                    object_key, size, sha256, rdb_version, rdb_contents, requested_at, verified, verified_at, pinned, missing, deleted_at,
                    last_check_at, last_check_error
             FROM backups WHERE policy = $1 AND ($2 IS NULL OR instance_uuid = $2)
             ORDER BY requested_at DESC, id DESC",
        )
        .bind(policy.to_string())
        .bind(instance.map(str::to_string))
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn mark_copy_deleted(&self, id: i64, now: i64) -> Result<()> {
        sql("UPDATE backups SET deleted_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Marks a provider copy deleted by its backup id.
    pub async fn mark_provider_deleted(&self, backup_id: &str, now: i64) -> Result<()> {
        sql("UPDATE backups SET deleted_at = $1 WHERE location = 'provider' AND backup_id = $2")
            .bind(now)
            .bind(backup_id.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Pins or unpins every copy of a job (retention keeps or decides about the whole set, at
    /// the provider and at the destination). Returns how many copies changed.
    pub async fn set_pinned(&self, job_id: &str, pinned: bool) -> Result<u64> {
        let r = sql("UPDATE backups SET pinned = $1 WHERE job_id = $2 AND deleted_at IS NULL")
            .bind(i64::from(pinned))
            .bind(job_id.to_string())
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }

    /// Records the result of re-reading a destination copy.
    pub async fn set_verified(&self, id: i64, ok: bool, missing: bool, now: i64) -> Result<()> {
        sql("UPDATE backups SET verified = $1, missing = $2, verified_at = CASE WHEN $3 THEN $4 ELSE verified_at END WHERE id = $5")
            .bind(i64::from(ok))
            .bind(i64::from(missing))
            .bind(ok)
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records the result of re-reading a destination copy: `error` is `None` when it passed.
    /// The copy's state follows (verified, or unverified and maybe missing), and the time and
    /// reason are kept for `jobs`, `jobs show` and `backups`.
    pub async fn record_check(
        &self,
        id: i64,
        error: Option<&str>,
        missing: bool,
        now: i64,
    ) -> Result<()> {
        sql("UPDATE backups SET verified = $1, missing = $2,
               verified_at = CASE WHEN $1 = 1 THEN $3 ELSE verified_at END,
               last_check_at = $3, last_check_error = $4
             WHERE id = $5")
        .bind(i64::from(error.is_none()))
        .bind(i64::from(missing))
        .bind(now)
        .bind(error.map(str::to_string))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live destination copies of one job that have been re-verified, by backup id.
    pub async fn checked_copies_of_job(&self, job_id: &str) -> Result<Vec<CopyRow>> {
        Ok(sql_as::<CopyRow>(
            "SELECT id, location, policy, instance_uuid, instance_name, job_id, backup_id, shard_id, destination,
                    object_key, size, sha256, rdb_version, rdb_contents, requested_at, verified, verified_at, pinned, missing, deleted_at,
                    last_check_at, last_check_error
             FROM backups
             WHERE job_id = $1 AND location = 'destination' AND deleted_at IS NULL
               AND last_check_at IS NOT NULL
             ORDER BY backup_id",
        )
        .bind(job_id.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// Every live copy at a destination, newest first.
    pub async fn destination_copies(&self) -> Result<Vec<CopyRow>> {
        self.copies_where("1 = 1", None, None).await
    }

    /// The live copies at a destination that `named` names: every shard's copy of the job, or
    /// the copy of the one provider backup it named.
    pub async fn copies_of(&self, named: &super::lookup::Named) -> Result<Vec<CopyRow>> {
        self.copies_where(
            "job_id = $1 AND ($2 IS NULL OR backup_id = $2)",
            Some(&named.job.id),
            named.backup_id.as_deref(),
        )
        .await
    }

    async fn copies_where(
        &self,
        condition: &str,
        job_id: Option<&str>,
        backup_id: Option<&str>,
    ) -> Result<Vec<CopyRow>> {
        Ok(sql_as::<CopyRow>(format!(
            "SELECT id, location, policy, instance_uuid, instance_name, job_id, backup_id, shard_id, destination,
                    object_key, size, sha256, rdb_version, rdb_contents, requested_at, verified, verified_at, pinned, missing, deleted_at,
                    last_check_at, last_check_error
             FROM backups WHERE location = 'destination' AND deleted_at IS NULL AND {condition}
             ORDER BY requested_at DESC, id DESC"
        ))
        .bind(job_id.map(str::to_string))
        .bind(backup_id.map(str::to_string))
        .fetch_all(self.pool())
        .await?)
    }
}

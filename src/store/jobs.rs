//! Jobs and their event log; their provider records (shards) and multipart parts are in
//! [`super::shards`].
//!
//! Every state change goes through [`Store::advance`], which applies the pure transition
//! function (`job::state::transition`) and writes only if the row is still in the state the
//! caller read, so two processes cannot both move the same job.
//!
//! Every write a running job makes carries its [`Claim`] and lands only while `jobs.owner`
//! still names that owner (a fence). A process whose lease lapsed (paused, partitioned) and
//! whose job was taken over gets [`Error::LostClaim`] at its next write and stops there.

use super::Kind;
use super::sql::{Conn, sql, sql_as};
use super::{Error, Result, Store};
use crate::job::state::{Event, State, transition};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub region_id: String,
    pub destination: String,
    pub trigger: String,
    /// Read through [`State`]'s `TryFrom<String>`: the store hands out typed states only.
    #[sqlx(try_from = "String")]
    pub state: State,
    #[serde(serialize_with = "super::rfc3339::ms")]
    pub due_at: i64,
    #[serde(serialize_with = "super::rfc3339::ms")]
    pub start_by: i64,
    #[serde(serialize_with = "super::rfc3339::ms")]
    pub deadline_at: i64,
    #[serde(serialize_with = "super::rfc3339::ms")]
    pub created_at: i64,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub create_sent_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub requested_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub snapshot_done_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub transfer_started_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub transfer_done_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub verified_at: Option<i64>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub finished_at: Option<i64>,
    pub attempts: i64,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub next_attempt_at: Option<i64>,
    pub bytes: i64,
    pub error: Option<String>,
    pub owner: Option<String>,
    #[serde(serialize_with = "super::rfc3339::opt_ms")]
    pub heartbeat_at: Option<i64>,
    /// When an operator asked the job to stop (`jobs cancel`), if one did. Read with the row
    /// so each step sees it without a query of its own; not part of the JSON views (`jobs show`
    /// says it in the events).
    #[serde(skip)]
    #[sqlx(default)]
    pub cancel_requested_at: Option<i64>,
}

impl JobRow {
    /// A row with every text empty, every time 0 or unset, state `pending`: the base unit tests
    /// override (`JobRow { state, ..JobRow::blank() }`) instead of spelling out 25 fields.
    #[cfg(test)]
    pub fn blank() -> JobRow {
        JobRow {
            id: String::new(),
            policy: String::new(),
            instance_uuid: String::new(),
            instance_name: String::new(),
            region_id: String::new(),
            destination: String::new(),
            trigger: String::new(),
            state: State::Pending,
            due_at: 0,
            start_by: 0,
            deadline_at: 0,
            created_at: 0,
            create_sent_at: None,
            requested_at: None,
            snapshot_done_at: None,
            transfer_started_at: None,
            transfer_done_at: None,
            verified_at: None,
            finished_at: None,
            attempts: 0,
            next_attempt_at: None,
            bytes: 0,
            error: None,
            owner: None,
            heartbeat_at: None,
            cancel_requested_at: None,
        }
    }

    /// The `Desc` token that finds this job's backup at the provider.
    pub fn token(&self) -> String {
        format!("{}{}", crate::cds::DESC_TOKEN_PREFIX, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct EventRow {
    #[serde(serialize_with = "super::rfc3339::ms")]
    pub at: i64,
    pub kind: String,
    pub message: String,
}

/// Who holds a job: every write of a running job is conditional on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub job_id: String,
    pub owner: String,
}

impl Claim {
    pub fn new(job_id: &str, owner: &str) -> Claim {
        Claim {
            job_id: job_id.to_string(),
            owner: owner.to_string(),
        }
    }

    fn lost(&self) -> Error {
        Error::LostClaim {
            job: self.job_id.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Maps "no row written" to [`Error::LostClaim`].
    fn check(&self, rows: u64) -> Result<()> {
        if rows == 0 { Err(self.lost()) } else { Ok(()) }
    }
}

/// The claim condition a write carries in its own WHERE clause, with the claim's job id bound as
/// `$1` and its owner as `$2` ([`claimed`]): the write happens only while the claim holds, in
/// one statement. On PostgreSQL the job row is share-locked until the write's transaction ends,
/// so a takeover (an UPDATE of that row) waits for the write to commit and then sees it; SQLite
/// runs one writer at a time, so there the check and the write are one step anyway.
pub(super) fn held(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => "EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND owner = $2)",
        Kind::Postgres => "EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND owner = $2 FOR SHARE)",
    }
}

/// A statement whose WHERE carries [`held`]: the claim is bound as `$1` and `$2`; the caller
/// binds the rest from `$3`.
pub(super) fn claimed(claim: &Claim, text: impl Into<String>) -> super::sql::Sql {
    sql(text)
        .bind(claim.job_id.clone())
        .bind(claim.owner.clone())
}

/// A job about to be created.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub region_id: String,
    pub destination: String,
    pub trigger: &'static str,
    pub due_at: i64,
    pub start_by: i64,
    pub deadline_at: i64,
    pub created_at: i64,
    /// The process that runs it, set at birth (`backup-now`), so no other process can claim it
    /// between its creation and its first step. `None`: whoever claims it (the dispatcher).
    pub owner: Option<String>,
    /// A scheduled job's run (policy, instance, cron time; [`schedule_key`]): unique, so
    /// replicas that all evaluate the cron make one job. `None` for jobs made by hand.
    pub schedule_key: Option<String>,
}

/// How many scheduled jobs [`Store::insert_scheduled_jobs`] writes per statement (12
/// parameters each: well under SQLite's and PostgreSQL's limits).
pub const SCHEDULED_BATCH: usize = 64;

/// The key of one scheduled run of a policy for one instance.
pub fn schedule_key(policy: &str, instance_uuid: &str, cron_time_ms: i64) -> String {
    // A unit separator: neither a policy name nor an instance id holds one.
    format!("{policy}\u{1f}{instance_uuid}\u{1f}{cron_time_ms}")
}

/// What happened when a job was inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Created,
    /// This run of the schedule already has its job (another replica made it).
    AlreadyScheduled {
        job: String,
    },
    /// An open job is in the way (this one: the same policy's, or for a job run at once any
    /// job of the instance), so nothing was created.
    InstanceBusy {
        open_job: String,
    },
}

pub(super) const JOB_COLUMNS: &str = "id, policy, instance_uuid, instance_name, region_id, destination, trigger, state, \
    due_at, start_by, deadline_at, created_at, create_sent_at, requested_at, snapshot_done_at, \
    transfer_started_at, transfer_done_at, verified_at, finished_at, attempts, next_attempt_at, bytes, \
    error, owner, heartbeat_at, cancel_requested_at";

/// Which timestamp column an advance sets; a fixed list, so no SQL is built from input.
/// Parameters: $1 now, $2 job id, $3 the state read, $4 the owner.
fn advance_sql(to: State) -> &'static str {
    match to {
        State::Requested => {
            "UPDATE jobs SET state = 'requested', requested_at = COALESCE(requested_at, $1) WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Snapshotting => {
            "UPDATE jobs SET state = 'snapshotting', requested_at = COALESCE(requested_at, $1) WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Transferring => {
            "UPDATE jobs SET state = 'transferring', snapshot_done_at = $1, transfer_started_at = COALESCE(transfer_started_at, $1) WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Verifying => {
            "UPDATE jobs SET state = 'verifying', transfer_done_at = $1 WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Stored => {
            "UPDATE jobs SET state = 'stored', verified_at = $1, finished_at = $1, owner = NULL WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Missed => {
            "UPDATE jobs SET state = 'missed', finished_at = $1, owner = NULL WHERE id = $2 AND state = $3 AND owner = $4"
        }
        State::Failed => {
            "UPDATE jobs SET state = 'failed', finished_at = $1, owner = NULL WHERE id = $2 AND state = $3 AND owner = $4"
        }
        // Back to pending only to send `CreateBackup` again: the send journal is cleared and
        // the next attempt is due now.
        State::Pending => {
            "UPDATE jobs SET state = 'pending', create_sent_at = NULL, next_attempt_at = $1 WHERE id = $2 AND state = $3 AND owner = $4"
        }
    }
}

/// Open jobs that are due and unheld, each the head of its instance's queue
/// ([`Store::claimable_jobs`]), in due order; `tail` follows the ORDER BY (a LIMIT, a lock
/// clause). $1 now, $2 the heartbeat before which an owner's lease has lapsed.
fn claimable_sql(tail: &str) -> String {
    format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE state NOT IN ('stored','failed','missed') AND due_at <= $1
           AND (owner IS NULL OR heartbeat_at IS NULL OR heartbeat_at < $2)
           AND NOT EXISTS (
             SELECT 1 FROM jobs o
             WHERE o.instance_uuid = jobs.instance_uuid AND o.id <> jobs.id
               AND o.state NOT IN ('stored','failed','missed')
               AND ((o.owner IS NOT NULL AND o.heartbeat_at >= $2)
                    OR (jobs.state = 'pending' AND o.state <> 'pending')
                    OR (jobs.state = 'pending' AND o.state = 'pending' AND o.due_at <= $1
                        AND (o.due_at < jobs.due_at OR (o.due_at = jobs.due_at AND o.id < jobs.id)))))
         ORDER BY due_at, id {tail}"
    )
}

/// Takes an open job for $1 at $2 if no process holds it (its owner's heartbeat is older
/// than $4) or $1 does already; $3 the job id.
const CLAIM_SQL: &str = "UPDATE jobs SET owner = $1, heartbeat_at = $2
     WHERE id = $3 AND state NOT IN ('stored','failed','missed')
       AND (owner IS NULL OR owner = $1 OR heartbeat_at IS NULL OR heartbeat_at < $4)";

impl Store {
    /// After a [`claimed`] write: no row written means the claim is lost
    /// ([`Error::LostClaim`]), unless it still holds and there was nothing to write (a row
    /// already inserted, a shard row that is not there).
    pub(super) async fn check_held(&self, claim: &Claim, rows: u64) -> Result<()> {
        if rows > 0 || self.holds(claim).await? {
            Ok(())
        } else {
            Err(claim.lost())
        }
    }

    /// One `UPDATE jobs ... WHERE id = $k AND owner = $k+1`: `query` carries its other binds; the
    /// claim's job id and owner are bound last. No row written: [`Error::LostClaim`].
    async fn owned_update(&self, claim: &Claim, query: super::sql::Sql) -> Result<()> {
        let r = query
            .bind(claim.job_id.clone())
            .bind(claim.owner.clone())
            .execute(self.pool())
            .await?;
        claim.check(r.rows_affected())
    }

    /// Creates a pending job. A job run at once by its creator (`owner` set: `backup-now`) is
    /// created only if the instance has no open job at all, so it never runs beside another;
    /// a scheduled job only if its policy has no open job for the instance (jobs of different
    /// policies queue per instance in [`Store::claimable_jobs`]).
    pub async fn insert_job(&self, job: &NewJob) -> Result<Inserted> {
        self.insert_job_where(job, job.owner.is_some()).await
    }

    /// Creates a pending job only if its instance has no open job at all (whoever owns it),
    /// for a job the daemon is to pick up at once (`jobs retry`).
    pub async fn insert_job_if_instance_idle(&self, job: &NewJob) -> Result<Inserted> {
        self.insert_job_where(job, true).await
    }

    /// Creates the scheduled jobs of a run (owner `None`, `schedule_key` set), up to
    /// [`SCHEDULED_BATCH`] rows per statement, and says for each what happened, in order. With
    /// 10,000 instances due at once and every replica evaluating the cron, one statement per
    /// job (and per replica) was most of the database's work at the start of a run. Replicas
    /// that insert the same keys wait on each other's rows and then skip them; the caller keeps
    /// the same order on every replica, so they never wait in a cycle.
    ///
    /// # Errors
    /// A job without a schedule key or with an owner (those go through [`Store::insert_job`]),
    /// or the DB failed.
    pub async fn insert_scheduled_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>> {
        const COLUMNS: usize = 12;
        let mut out = Vec::with_capacity(jobs.len());
        for batch in jobs.chunks(SCHEDULED_BATCH) {
            let mut rows = Vec::with_capacity(batch.len());
            let mut insert = sql("");
            for (i, job) in batch.iter().enumerate() {
                let (Some(key), None) = (&job.schedule_key, &job.owner) else {
                    return Err(Error::Query(sqlx::Error::Protocol(format!(
                        "job {} is not a scheduled run's (schedule key and no owner)",
                        job.id
                    ))));
                };
                let n = |k: usize| i * COLUMNS + k;
                rows.push(format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', ${}, ${}, ${}, ${}, ${})",
                    n(1),
                    n(2),
                    n(3),
                    n(4),
                    n(5),
                    n(6),
                    n(7),
                    n(8),
                    n(9),
                    n(10),
                    n(11),
                    n(12)
                ));
                insert = insert
                    .bind(job.id.clone())
                    .bind(job.policy.clone())
                    .bind(job.instance_uuid.clone())
                    .bind(job.instance_name.clone())
                    .bind(job.region_id.clone())
                    .bind(job.destination.clone())
                    .bind(job.trigger)
                    .bind(job.due_at)
                    .bind(job.start_by)
                    .bind(job.deadline_at)
                    .bind(job.created_at)
                    .bind(key.clone());
            }
            let text = format!(
                "INSERT INTO jobs (id, policy, instance_uuid, instance_name, region_id, destination, trigger, state,
                                   due_at, start_by, deadline_at, created_at, schedule_key)
                 VALUES {} ON CONFLICT DO NOTHING RETURNING id",
                rows.join(", ")
            );
            let created: std::collections::HashSet<String> = insert
                .retype::<(String,)>(text)
                .fetch_all(self.pool())
                .await?
                .into_iter()
                .map(|(id,)| id)
                .collect();
            // The rest met a unique index: this run's job made by another replica, or the
            // policy's previous job of the instance still open.
            let others: Vec<&NewJob> = batch.iter().filter(|j| !created.contains(&j.id)).collect();
            let made_elsewhere = self.jobs_by_schedule_key(&others).await?;
            for job in batch {
                if created.contains(&job.id) {
                    out.push(Inserted::Created);
                } else if let Some(id) = job
                    .schedule_key
                    .as_ref()
                    .and_then(|k| made_elsewhere.get(k))
                {
                    out.push(Inserted::AlreadyScheduled { job: id.clone() });
                } else {
                    out.push(Inserted::InstanceBusy {
                        open_job: self.open_job_in_the_way(job).await?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The ids of the jobs holding these jobs' schedule keys, by key (one query for all).
    async fn jobs_by_schedule_key(
        &self,
        jobs: &[&NewJob],
    ) -> Result<std::collections::HashMap<String, String>> {
        if jobs.is_empty() {
            return Ok(Default::default());
        }
        let marks: Vec<String> = (1..=jobs.len()).map(|i| format!("${i}")).collect();
        let mut query = sql_as::<(String, String)>(format!(
            "SELECT schedule_key, id FROM jobs WHERE schedule_key IN ({})",
            marks.join(", ")
        ));
        for job in jobs {
            query = query.bind(job.schedule_key.clone());
        }
        Ok(query.fetch_all(self.pool()).await?.into_iter().collect())
    }

    /// The open job that kept `job` from being created: the same policy's first, else any of
    /// the instance ('' if it finished meanwhile).
    async fn open_job_in_the_way(&self, job: &NewJob) -> Result<String> {
        let open: Option<(String,)> = sql_as(
            "SELECT id FROM jobs WHERE instance_uuid = $1 AND state NOT IN ('stored','failed','missed')
             ORDER BY policy = $2 DESC, due_at LIMIT 1",
        )
        .bind(job.instance_uuid.clone())
        .bind(job.policy.clone())
        .fetch_optional(self.pool())
        .await?;
        Ok(open.map(|r| r.0).unwrap_or_default())
    }

    /// [`Store::insert_job`]; `exclusive`: refused while the instance has any open job.
    async fn insert_job_where(&self, job: &NewJob, exclusive: bool) -> Result<Inserted> {
        // ON CONFLICT: the open job of the same policy, or this run's job (unique indexes).
        let insert = sql(
            "INSERT INTO jobs (id, policy, instance_uuid, instance_name, region_id, destination, trigger, state,
                               due_at, start_by, deadline_at, created_at, owner, heartbeat_at, schedule_key)
             SELECT $1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12,
                    CASE WHEN $12 IS NULL THEN NULL ELSE $11 END, $14
             WHERE NOT $13 OR NOT EXISTS (
                 SELECT 1 FROM jobs WHERE instance_uuid = $3 AND state NOT IN ('stored','failed','missed'))
             ON CONFLICT DO NOTHING",
        )
        .bind(job.id.clone())
        .bind(job.policy.clone())
        .bind(job.instance_uuid.clone())
        .bind(job.instance_name.clone())
        .bind(job.region_id.clone())
        .bind(job.destination.clone())
        .bind(job.trigger)
        .bind(job.due_at)
        .bind(job.start_by)
        .bind(job.deadline_at)
        .bind(job.created_at)
        .bind(job.owner.clone())
        .bind(exclusive)
        .bind(job.schedule_key.clone());
        let inserted = if exclusive && self.kind() == Kind::Postgres {
            // "No open job of the instance" is checked and acted on in one statement, which
            // SQLite's single writer makes atomic; under PostgreSQL's READ COMMITTED two
            // replicas' inserts could both see none. One lock per instance, held to commit.
            let mut tx = self.pool().begin().await?;
            sql("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(job.instance_uuid.clone())
                .execute(&mut tx)
                .await?;
            let done = insert.execute(&mut tx).await?;
            tx.commit().await?;
            done
        } else {
            // Only the unique indexes decide: one statement, atomic on its own.
            insert.execute(self.pool()).await?
        }
        .rows_affected();
        if inserted == 1 {
            return Ok(Inserted::Created);
        }
        if let Some(key) = &job.schedule_key {
            let made: Option<(String,)> = sql_as("SELECT id FROM jobs WHERE schedule_key = $1")
                .bind(key.clone())
                .fetch_optional(self.pool())
                .await?;
            if let Some((job,)) = made {
                return Ok(Inserted::AlreadyScheduled { job });
            }
        }
        Ok(Inserted::InstanceBusy {
            open_job: self.open_job_in_the_way(job).await?,
        })
    }

    /// One job by its full id.
    pub async fn job(&self, id: &str) -> Result<JobRow> {
        sql_as::<JobRow>(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Jobs, newest first, optionally filtered.
    pub async fn list_jobs(
        &self,
        policy: Option<&str>,
        state: Option<State>,
        limit: u32,
    ) -> Result<Vec<JobRow>> {
        Ok(sql_as::<JobRow>(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1 IS NULL OR policy = $1) AND ($2 IS NULL OR state = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(policy.map(str::to_string))
        .bind(state.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?)
    }

    /// Open jobs that are due and that no process holds: new ones and those whose owner has
    /// not renewed its heartbeat since `stale_before` (its lease lapsed). Per instance, one at a
    /// time (the provider makes one backup of an instance at a time): a job waits while another
    /// job of its instance is held by a live process or already started, and pending jobs of
    /// one instance go in due order. Liveness is judged by
    /// the heartbeat alone, never by looking for the owner's process (another user's process,
    /// another container's or another host's cannot be seen).
    pub async fn claimable_jobs(&self, now: i64, stale_before: i64) -> Result<Vec<JobRow>> {
        Ok(sql_as::<JobRow>(claimable_sql(""))
            .bind(now)
            .bind(stale_before)
            .fetch_all(self.pool())
            .await?)
    }

    /// How the open jobs are spread over the daemons sharing the DB: (open jobs `owner`
    /// holds, other daemons holding an open job with a heartbeat since `stale_before`, open
    /// jobs in all, counted only as far as `enough` needs: see [`enough_open_jobs`]). Daemons
    /// are the owners named `daemon:...` (a `backup-now` runs only its own jobs and claims no
    /// others). Both reads go through indexes of the open jobs (the held ones, then as many in
    /// due order as needed), so their cost does not grow with a fleet's open jobs.
    pub async fn job_spread(
        &self,
        owner: &str,
        stale_before: i64,
        enough: impl Fn(i64, i64) -> i64,
    ) -> Result<(i64, i64, i64)> {
        let (mine, others): (i64, i64) = sql_as(
            "SELECT COALESCE(SUM(CASE WHEN owner = $1 THEN 1 ELSE 0 END), 0),
                    COUNT(DISTINCT CASE WHEN owner <> $1 AND owner LIKE 'daemon:%'
                                         AND heartbeat_at >= $2 THEN owner END)
             FROM jobs WHERE owner IS NOT NULL AND state NOT IN ('stored','failed','missed')",
        )
        .bind(owner.to_string())
        .bind(stale_before)
        .fetch_one(self.pool())
        .await?;
        let (open,): (i64,) = sql_as(
            "SELECT COUNT(*) FROM (
                 SELECT 1 FROM jobs WHERE state NOT IN ('stored','failed','missed')
                 ORDER BY due_at, id LIMIT $1) AS open_jobs",
        )
        .bind(enough(mine, others).max(0))
        .fetch_one(self.pool())
        .await?;
        Ok((mine, others, open))
    }

    /// Claims for `owner` up to `limit` of the [`Store::claimable_jobs`], skipping the ids in
    /// `skip` (running here already); returns them as they were before the claim (their old
    /// owner says whose job was taken over). On PostgreSQL the candidates are locked with
    /// `FOR UPDATE SKIP LOCKED`, so replicas claiming at once never wait for each other and
    /// never get the same job; on SQLite (one writer) each claim is a compare-and-set.
    pub async fn claim_due_jobs(
        &self,
        owner: &str,
        now: i64,
        stale_before: i64,
        limit: usize,
        skip: &std::collections::HashSet<String>,
    ) -> Result<Vec<JobRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.kind() == Kind::Sqlite {
            let mut claimed = Vec::new();
            for job in self.claimable_jobs(now, stale_before).await? {
                if claimed.len() >= limit {
                    break;
                }
                if !skip.contains(&job.id)
                    && self.claim_job(&job.id, owner, now, stale_before).await?
                {
                    claimed.push(job);
                }
            }
            return Ok(claimed);
        }
        let mut tx = self.pool().begin().await?;
        let fetch = i64::try_from(limit + skip.len()).unwrap_or(i64::MAX);
        let candidates = sql_as::<JobRow>(claimable_sql("LIMIT $3 FOR UPDATE OF jobs SKIP LOCKED"))
            .bind(now)
            .bind(stale_before)
            .bind(fetch)
            .fetch_all(&mut tx)
            .await?;
        let mut claimed = Vec::new();
        for job in candidates {
            if claimed.len() >= limit {
                break;
            }
            if skip.contains(&job.id) {
                continue;
            }
            let done = sql(CLAIM_SQL)
                .bind(owner.to_string())
                .bind(now)
                .bind(job.id.clone())
                .bind(stale_before)
                .execute(&mut tx)
                .await?;
            if done.rows_affected() == 1 {
                claimed.push(job);
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Takes ownership of an open job if no process holds it (or this one already does). True
    /// if this caller owns it now.
    pub async fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        stale_before: i64,
    ) -> Result<bool> {
        let r = sql(CLAIM_SQL)
            .bind(owner.to_string())
            .bind(now)
            .bind(id.to_string())
            .bind(stale_before)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// True while `claim` still holds its job (a read; writes fence themselves).
    pub async fn holds(&self, claim: &Claim) -> Result<bool> {
        let row: Option<(String,)> = sql_as("SELECT id FROM jobs WHERE id = $1 AND owner = $2")
            .bind(claim.job_id.clone())
            .bind(claim.owner.clone())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Renews the heartbeat of every open job this process owns.
    pub async fn heartbeat(&self, owner: &str, now: i64) -> Result<()> {
        sql(
            "UPDATE jobs SET heartbeat_at = $1 WHERE owner = $2 AND state NOT IN ('stored','failed','missed')",
        )
        .bind(now)
        .bind(owner.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Gives up ownership (at shutdown), so the next process resumes the job at once.
    pub async fn release_job(&self, id: &str, owner: &str) -> Result<()> {
        sql("UPDATE jobs SET owner = NULL, heartbeat_at = NULL WHERE id = $1 AND owner = $2")
            .bind(id.to_string())
            .bind(owner.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Moves a job from `from` on `event`, setting the phase timestamp to `now`.
    ///
    /// # Errors
    /// The lifecycle forbids the move, the row is no longer in `from`, or the claim lapsed.
    pub async fn advance(
        &self,
        claim: &Claim,
        from: State,
        event: Event,
        now: i64,
    ) -> Result<State> {
        // One UPDATE of the job's row, conditional on its owner: atomic without a transaction.
        advance_on(self.pool(), claim, from, event, now).await
    }

    /// Fails a job (from whatever open state it is in) with the full error chain.
    pub async fn fail_job(&self, claim: &Claim, now: i64, error: &str) -> Result<()> {
        let query = sql(
            "UPDATE jobs SET state = 'failed', finished_at = $1, error = $2, owner = NULL
             WHERE id = $3 AND owner = $4 AND state NOT IN ('stored','failed','missed')",
        );
        self.owned_update(claim, query.bind(now).bind(error.to_string()))
            .await
    }

    /// Records a missed job (could not start inside its window) with the reason.
    pub async fn miss_job(&self, claim: &Claim, now: i64, reason: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        // The claimed write first: it takes the write lock (SQLite) or the row lock
        // (PostgreSQL), and a lost claim writes nothing.
        advance_on(&mut tx, claim, State::Pending, Event::Miss, now).await?;
        sql("UPDATE jobs SET error = $1 WHERE id = $2")
            .bind(reason.to_string())
            .bind(claim.job_id.clone())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Write-ahead for `CreateBackup`: from here on, the provider may hold a backup for the job.
    pub async fn mark_create_sent(&self, claim: &Claim, now: i64) -> Result<()> {
        let query = sql(
            "UPDATE jobs SET create_sent_at = $1, attempts = attempts + 1 WHERE id = $2 AND owner = $3",
        );
        self.owned_update(claim, query.bind(now)).await
    }

    /// `CreateBackup` was certainly not applied (refused or 409): it may be sent again later.
    pub async fn clear_create_sent(&self, claim: &Claim, next_attempt_at: i64) -> Result<()> {
        let query = sql(
            "UPDATE jobs SET create_sent_at = NULL, next_attempt_at = $1 WHERE id = $2 AND owner = $3",
        );
        self.owned_update(claim, query.bind(next_attempt_at)).await
    }

    pub async fn set_job_bytes(&self, claim: &Claim, bytes: i64) -> Result<()> {
        let query = sql("UPDATE jobs SET bytes = $1 WHERE id = $2 AND owner = $3");
        self.owned_update(claim, query.bind(bytes)).await
    }

    /// The end of a verified job, in one fenced transaction: its copies enter the inventory and
    /// the job becomes `stored`, or (the claim lapsed) neither happens.
    pub async fn complete_job(
        &self,
        claim: &Claim,
        copies: &[super::inventory::NewCopy],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        // The claimed move to `stored` first (see `miss_job`); a lost claim inserts no copy.
        advance_on(&mut tx, claim, State::Verifying, Event::Verified, now).await?;
        for c in copies {
            super::inventory::insert_copy(&mut tx, c).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_event(&self, job_id: &str, at: i64, kind: &str, message: &str) -> Result<()> {
        sql("INSERT INTO job_events (job_id, at, kind, message) VALUES ($1, $2, $3, $4)")
            .bind(job_id.to_string())
            .bind(at)
            .bind(kind.to_string())
            .bind(message.to_string())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn events(&self, job_id: &str) -> Result<Vec<EventRow>> {
        Ok(sql_as::<EventRow>(
            "SELECT at, kind, message FROM job_events WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id.to_string())
        .fetch_all(self.pool())
        .await?)
    }

    /// Jobs per state, for the `rdbvault_jobs` gauge.
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(String, i64)>> {
        Ok(sql_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(self.pool())
            .await?)
    }

    /// The last finished job of each (policy, instance) by result, to rebuild gauges at start.
    pub async fn last_finished(&self) -> Result<Vec<JobRow>> {
        // The newest end of each (policy, instance, result) from the index of finished jobs,
        // then those rows: one pass, not a subquery per finished job.
        let columns = JOB_COLUMNS
            .split(", ")
            .map(|c| format!("j.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(sql_as::<JobRow>(format!(
            "SELECT {columns} FROM jobs j
             JOIN (SELECT policy, instance_uuid, state, MAX(finished_at) AS last_at FROM jobs
                   WHERE state IN ('stored','failed','missed')
                   GROUP BY policy, instance_uuid, state) newest
               ON j.policy = newest.policy AND j.instance_uuid = newest.instance_uuid
              AND j.state = newest.state AND j.finished_at = newest.last_at
             WHERE j.state IN ('stored','failed','missed')"
        ))
        .fetch_all(self.pool())
        .await?)
    }
}

/// [`Store::advance`] on the pool or inside a transaction: one UPDATE conditional on the
/// state read and the owner.
async fn advance_on(
    mut conn: impl Conn,
    claim: &Claim,
    from: State,
    event: Event,
    now: i64,
) -> Result<State> {
    let to =
        transition(from, event).map_err(|e| Error::Query(sqlx::Error::Protocol(e.to_string())))?;
    let r = sql(advance_sql(to))
        .bind(now)
        .bind(claim.job_id.clone())
        .bind(from.as_str())
        .bind(claim.owner.clone())
        .execute(conn.on())
        .await?;
    if r.rows_affected() == 1 {
        return Ok(to);
    }
    let owner: Option<(Option<String>,)> = sql_as("SELECT owner FROM jobs WHERE id = $1")
        .bind(claim.job_id.clone())
        .fetch_optional(conn.on())
        .await?;
    match owner {
        Some((Some(o),)) if o == claim.owner => Err(Error::Query(sqlx::Error::Protocol(format!(
            "job {} is no longer {from}; another process changed it",
            claim.job_id
        )))),
        _ => Err(claim.lost()),
    }
}

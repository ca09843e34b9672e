//! Runs one job from whatever state its row is in to the end, one step at a time, journaling
//! every step before acting on it, so a process that dies anywhere leaves a row the next
//! process can resume.
//!
//! - `pending`: `CreateBackup` with `Desc = rdbvault:<job id>`. The send is journaled first
//!   (`create_sent_at`), so a job never sends it twice: after a crash or an answer that leaves
//!   the outcome unknown, the job looks for its backup by token instead. A 409 `ResourceInUse`
//!   (or a refused connection) is retried until the start window closes, then the job is
//!   `missed`.
//! - `requested`/`snapshotting`: `DescribeBackups` with backoff (at most one call per poll) until
//!   every record carrying the token is `finished` and the set is stable.
//! - `transferring`: each record (one per shard) is streamed, verified and committed
//!   ([`crate::transfer`]), at most `max_concurrent_transfers` at a time across jobs.
//! - `verifying`: the destination is asked whether it holds what the DB says; the copies enter
//!   the inventory; the job is `stored`.
//!
//! `completion_window` is a hard deadline for all of it.

use crate::destination::{Handle, SinkRequest};
use crate::job::{Event, State};
use crate::services::Context;
use crate::store::inventory::NewCopy;
use crate::store::{JobRow, ShardRow, from_ms, ms};
use crate::transfer::{self, Manifest, ShardSource, Sink as _};
use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a run of [`run_job`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Failed(String),
    Missed(String),
    /// Shutdown: the job stopped at a safe point and will be resumed.
    Interrupted,
    /// Another process took the job over (this one's lease lapsed); this one stopped without
    /// touching it again.
    LostClaim(String),
}

/// Why a step stopped.
enum Stop {
    Cancelled,
    Fail(anyhow::Error),
    /// A transfer failed for a reason that may pass (download host, destination): the shard
    /// is transferred again while the deadline allows. Outside `transfer_all` it is a failure.
    Transient(anyhow::Error),
    /// The bytes did not verify (size or checksum): a corruption in transit is worth one more
    /// download from a fresh URL, a few times. Outside `transfer_all` it is a failure.
    Corrupt(anyhow::Error),
    Miss(String),
    /// The job's row names another owner now: stop, touch nothing.
    LostClaim(String),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Fail(e)
    }
}

impl From<crate::store::Error> for Stop {
    fn from(e: crate::store::Error) -> Self {
        match e {
            crate::store::Error::LostClaim { .. } => Stop::LostClaim(e.to_string()),
            other => Stop::Fail(other.into()),
        }
    }
}

/// A provider value that cannot name a copy: counted, and the job fails saying which.
fn refuse(ctx: &Context, job: &JobRow, e: crate::transfer::UnsafeProviderId) -> Stop {
    reject_metric(ctx, job, e.field);
    Stop::Fail(anyhow::Error::new(e))
}

fn reject_metric(ctx: &Context, job: &JobRow, field: &str) {
    ctx.metrics
        .provider_values_rejected
        .with_label_values(&[job.policy.as_str(), field])
        .inc();
}

/// Checks a `BackupSize` against what rdbvault believes and what the destination accepts.
fn check_size(ctx: &Context, job: &JobRow, backup_id: &str, size: Option<u64>) -> Step {
    let Some(size) = size else { return Ok(()) };
    let max = ctx.config.limits.max_backup_size;
    let own_limit = ctx
        .destinations
        .get(&job.destination)
        .and_then(|d| d.largest_object());
    let limit = own_limit.map_or(max, |l| max.min(l));
    if size > limit {
        reject_metric(ctx, job, "backup_size");
        return Err(Stop::Fail(anyhow!(
            "the provider says backup {backup_id} of instance {} is {size} bytes, more than {} allows ({}); refusing it as implausible (raise limits.max_backup_size if it is real)",
            job.instance_uuid,
            if limit < max {
                "the destination"
            } else {
                "limits.max_backup_size"
            },
            crate::config::units::format_size(limit)
        )));
    }
    Ok(())
}

type Step = Result<(), Stop>;

/// Sleeps, unless shutdown comes first.
async fn sleep(d: Duration, cancel: &CancellationToken) -> Step {
    tokio::select! {
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// Runs a job until it is stored, failed or missed, or until shutdown. Every log line it
/// writes carries `policy`, `instance` and `job_id` (a tracing span).
pub async fn run_job(ctx: &Context, job_id: &str, cancel: &CancellationToken) -> Outcome {
    use tracing::Instrument as _;
    let (policy, instance) = match ctx.store.job(job_id).await {
        Ok(j) => (j.policy, j.instance_uuid),
        Err(_) => (String::new(), String::new()),
    };
    let span = tracing::info_span!("job", policy = %policy, instance = %instance, job_id = %job_id);
    run_job_steps(ctx, job_id, cancel).instrument(span).await
}

async fn run_job_steps(ctx: &Context, job_id: &str, cancel: &CancellationToken) -> Outcome {
    let mut poll = ctx.poll.initial;
    let mut last_seen: Option<Vec<String>> = None;
    loop {
        let job = match ctx.store.job(job_id).await {
            Ok(j) => j,
            Err(e) => return Outcome::Failed(format!("cannot read job {job_id}: {e}")),
        };
        let state = job.state();
        if state.is_terminal() {
            return match state {
                State::Stored => Outcome::Stored,
                State::Missed => Outcome::Missed(job.error.unwrap_or_default()),
                _ => Outcome::Failed(job.error.unwrap_or_default()),
            };
        }
        if cancel.is_cancelled() {
            return interrupted(ctx, &job).await;
        }
        let now = ctx.now();
        let step = if state != State::Pending && ms(now) > job.deadline_at {
            Err(Stop::Fail(anyhow!(
                "deadline exceeded: the job did not finish within completion_window (by {})",
                from_ms(job.deadline_at).format("%Y-%m-%d %H:%M:%S UTC")
            )))
        } else {
            match state {
                State::Pending => request(ctx, &job, cancel).await,
                State::Requested | State::Snapshotting => {
                    match wait_snapshot(ctx, &job, &mut last_seen).await {
                        Ok(true) => Ok(()),
                        // All finished once: confirm soon that the set is stable.
                        Ok(false) if last_seen.is_some() => sleep(ctx.poll.initial, cancel).await,
                        // Not finished yet: back off (one DescribeBackups per poll).
                        Ok(false) => {
                            let s = sleep(poll, cancel).await;
                            poll = (poll * 2).min(ctx.poll.max);
                            s
                        }
                        Err(e) => Err(e),
                    }
                }
                State::Transferring => transfer_all(ctx, &job, cancel).await,
                State::Verifying => verify(ctx, &job).await,
                State::Stored | State::Failed | State::Missed => {
                    unreachable!("terminal states return above")
                }
            }
        };
        match step {
            Ok(()) => {}
            Err(Stop::Cancelled) => return interrupted(ctx, &job).await,
            Err(Stop::LostClaim(why)) => return lost_claim(ctx, &job, why).await,
            Err(Stop::Miss(reason)) => {
                let now = ms(ctx.now());
                match ctx.store.miss_job(&ctx.claim(&job), now, &reason).await {
                    Err(e @ crate::store::Error::LostClaim { .. }) => {
                        return lost_claim(ctx, &job, e.to_string()).await;
                    }
                    Err(e) => {
                        tracing::error!(job_id = %job.id, error = %e, "cannot record a missed job")
                    }
                    Ok(()) => {}
                }
                ctx.event(&job, "missed", &reason).await;
                finished_metrics(ctx, &job, "missed", 0, now);
                return Outcome::Missed(reason);
            }
            Err(Stop::Fail(err)) | Err(Stop::Transient(err)) | Err(Stop::Corrupt(err)) => {
                let chain = format!("{err:#}");
                // Only the owner cleans up: another process's upload is not ours to abort.
                match ctx.store.holds(&ctx.claim(&job)).await {
                    Ok(true) => {}
                    Ok(false) => return lost_claim(ctx, &job, chain).await,
                    Err(e) => {
                        // Unknown owner: touch nothing, hand the job back so the next
                        // dispatch (ours or another process's) decides with a working DB.
                        tracing::error!(job_id = %job.id, error = %e, "cannot read the job's owner; leaving the job open");
                        let _ = ctx.store.release_job(&job.id, &ctx.owner).await;
                        return Outcome::Interrupted;
                    }
                }
                let current = ctx.store.job(&job.id).await.unwrap_or(job.clone());
                cleanup_partial(ctx, &current).await;
                let now = ms(ctx.now());
                match ctx.store.fail_job(&ctx.claim(&job), now, &chain).await {
                    Err(e @ crate::store::Error::LostClaim { .. }) => {
                        return lost_claim(ctx, &job, e.to_string()).await;
                    }
                    Err(e) => {
                        tracing::error!(job_id = %job.id, error = %e, "cannot record a failed job")
                    }
                    Ok(()) => {}
                }
                tracing::error!(policy = %job.policy, instance = %job.instance_uuid, job_id = %job.id, error = %chain, "backup job failed");
                let _ = ctx
                    .store
                    .add_event(&job.id, ms(ctx.now()), "failed", &chain)
                    .await;
                finished_metrics(ctx, &job, "failure", 0, now);
                return Outcome::Failed(chain);
            }
        }
    }
}

/// Another process owns the job now: say so in the journal (events are not state) and stop.
async fn lost_claim(ctx: &Context, job: &JobRow, why: String) -> Outcome {
    tracing::warn!(policy = %job.policy, instance = %job.instance_uuid, job_id = %job.id, "lost the claim on the job: {why}");
    ctx.event(
        job,
        "lost-claim",
        &format!("{} stopped: another process holds the job now", ctx.owner),
    )
    .await;
    Outcome::LostClaim(why)
}

async fn interrupted(ctx: &Context, job: &JobRow) -> Outcome {
    ctx.event(
        job,
        "interrupted",
        &format!(
            "shutdown: stopped in state {} at a safe point; the next start resumes it",
            job.state
        ),
    )
    .await;
    let _ = ctx.store.release_job(&job.id, &ctx.owner).await;
    Outcome::Interrupted
}

/// Aborts uploads and removes `.partial` files a failed job leaves.
async fn cleanup_partial(ctx: &Context, job: &JobRow) {
    let Ok(shards) = ctx.store.shards(&job.id).await else {
        return;
    };
    for s in shards {
        match abort_left_upload(ctx, job, &s).await {
            Ok(Some(key)) => {
                ctx.event(
                    job,
                    "upload-aborted",
                    &format!("aborted multipart upload of {key}"),
                )
                .await
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "cannot abort a multipart upload")
            }
        }
        if let (Some(_), Some(key), Some(dest)) = (
            &s.temp_path,
            &s.object_key,
            ctx.destinations.get(&job.destination),
        ) {
            dest.discard_unfinished(key).await;
        }
        let _ = ctx
            .store
            .shard_pending_data(&ctx.claim(job), &s.backup_id, None, None)
            .await;
    }
}

/// Aborts the S3 multipart upload a shard's row still names (left by a failed attempt or a
/// process that died) and forgets it. Returns its key if there was one.
async fn abort_left_upload(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
) -> anyhow::Result<Option<String>> {
    let (Some(upload), Some(key)) = (&shard.upload_id, &shard.object_key) else {
        return Ok(None);
    };
    let Some(dest) = ctx.destinations.get(&job.destination) else {
        return Ok(None);
    };
    dest.abort_upload(key, upload).await?;
    ctx.store
        .shard_pending_data(&ctx.claim(job), &shard.backup_id, None, None)
        .await?;
    Ok(Some(key.clone()))
}

/// Updates the per-instance metrics when a job ends; `at_ms` is the `finished_at` written to the
/// journal, so the gauges read the same after a restart rebuilds them from it.
fn finished_metrics(ctx: &Context, job: &JobRow, result: &str, size: i64, at_ms: i64) {
    let m = &ctx.metrics;
    let labels = [job.policy.as_str(), job.instance_uuid.as_str()];
    m.backup_runs
        .with_label_values(&[job.policy.as_str(), job.instance_uuid.as_str(), result])
        .inc();
    let at = at_ms as f64 / 1000.0;
    m.backup_last_attempt.with_label_values(&labels).set(at);
    if result == "success" {
        m.backup_last_success.with_label_values(&labels).set(at);
        m.backup_last_size
            .with_label_values(&labels)
            .set(size as f64);
    }
}

async fn request(ctx: &Context, job: &JobRow, cancel: &CancellationToken) -> Step {
    let now = ctx.now();
    // The uuid becomes part of every key and path of this instance's copies: refuse it before
    // the provider is asked for anything.
    crate::transfer::check_provider_id("instance_uuid", &job.instance_uuid)
        .map_err(|e| refuse(ctx, job, e))?;
    let claim = ctx.claim(job);
    if job.create_sent_at.is_some() {
        // Sent before (a crash or an unknown answer): never again. Look for it by token.
        ctx.event(
            job,
            "resume",
            "CreateBackup was sent by an earlier attempt; looking for the backup by its token",
        )
        .await;
        ctx.store
            .advance(&claim, State::Pending, Event::CreateAccepted, ms(now))
            .await?;
        return Ok(());
    }
    if ms(now) > job.start_by {
        return Err(Stop::Miss(format!(
            "could not start inside start_window (by {})",
            from_ms(job.start_by).format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    if let Some(next) = job.next_attempt_at
        && next > ms(now)
    {
        let wait = Duration::from_millis((next - ms(now)) as u64);
        return sleep(wait, cancel).await;
    }
    ctx.store.mark_create_sent(&claim, ms(now)).await?;
    let token = job.token();
    match ctx.cds.create_backup(&job.instance_uuid, &token).await {
        Ok(task) => {
            ctx.event(
                job,
                "requested",
                &format!(
                    "CreateBackup accepted (TaskId {}), Desc {token}",
                    task.task_id.as_deref().unwrap_or("-")
                ),
            )
            .await;
            ctx.store
                .advance(&claim, State::Pending, Event::CreateAccepted, ms(ctx.now()))
                .await?;
            Ok(())
        }
        Err(e) if e.certainly_not_applied() && e.is_retryable() => {
            let wait = Duration::from_secs(15 + fastrand::u64(0..15));
            let next = ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default();
            ctx.store.clear_create_sent(&claim, ms(next)).await?;
            if ms(next) > job.start_by {
                return Err(Stop::Miss(format!(
                    "the provider refused CreateBackup until start_window closed: {e}"
                )));
            }
            ctx.event(
                job,
                "retry",
                &format!("{e}; trying again in {}s", wait.as_secs()),
            )
            .await;
            Ok(())
        }
        Err(e) if e.is_retryable() => {
            // The request may have reached the provider: find the backup by token, never resend.
            ctx.event(
                job,
                "unknown-outcome",
                &format!(
                    "{e}; looking for the backup by its token instead of sending CreateBackup again"
                ),
            )
            .await;
            ctx.store
                .advance(&claim, State::Pending, Event::CreateAccepted, ms(ctx.now()))
                .await?;
            Ok(())
        }
        Err(e) => Err(Stop::Fail(anyhow::Error::new(e).context(format!(
            "CreateBackup for instance {} ({})",
            job.instance_uuid, job.instance_name
        )))),
    }
}

/// One `DescribeBackups`. `Ok(false)` means "not yet" (the caller sleeps); `Ok(true)`: a
/// finished, stable set of records moved the job to `transferring`.
async fn wait_snapshot(
    ctx: &Context,
    job: &JobRow,
    last_seen: &mut Option<Vec<String>>,
) -> Result<bool, Stop> {
    let token = job.token();
    let records = match ctx.cds.describe_backups(&job.instance_uuid).await {
        Ok(r) => r,
        Err(e) if e.is_retryable() => {
            tracing::warn!(job_id = %job.id, error = %e, "DescribeBackups failed; polling again");
            return Ok(false);
        }
        Err(e) => return Err(Stop::Fail(anyhow::Error::new(e).context("DescribeBackups"))),
    };
    let mine: Vec<_> = records.into_iter().filter(|b| b.desc == token).collect();
    let now = ctx.now();
    if mine.is_empty() {
        return token_not_found(ctx, job, now).await;
    }
    if let Some(bad) = mine.iter().find(|b| b.is_failed()) {
        return Err(Stop::Fail(anyhow!(
            "the provider reports backup {} of instance {} as {:?}",
            bad.backup_id,
            job.instance_uuid,
            bad.status
        )));
    }
    let mut ids: Vec<String> = mine.iter().map(|b| b.backup_id.clone()).collect();
    ids.sort();
    if !mine.iter().all(|b| b.is_finished()) {
        if job.state() == State::Requested {
            ctx.store
                .advance(
                    &ctx.claim(job),
                    State::Requested,
                    Event::SnapshotRunning,
                    ms(now),
                )
                .await?;
            ctx.event(
                job,
                "snapshotting",
                &format!("provider is making {} backup record(s)", mine.len()),
            )
            .await;
        }
        *last_seen = None;
        return Ok(false);
    }
    // All finished. Insist on the same set twice in a row, so a cluster's last shard record
    // appearing late is not missed.
    if last_seen.as_ref() != Some(&ids) {
        *last_seen = Some(ids);
        return Ok(false);
    }
    // Every id becomes part of a key; a size decides buffers and bounds the download.
    let mut seen = std::collections::HashSet::new();
    for b in &mine {
        crate::transfer::check_provider_id("backup_id", &b.backup_id)
            .map_err(|e| refuse(ctx, job, e))?;
        if !seen.insert(b.backup_id.as_str()) {
            reject_metric(ctx, job, "backup_id");
            return Err(Stop::Fail(anyhow!(
                "DescribeBackups lists backup {} of instance {} more than once; refusing an ambiguous answer",
                b.backup_id,
                job.instance_uuid
            )));
        }
        check_size(ctx, job, &b.backup_id, b.backup_size)?;
    }
    let rows: Vec<ShardRow> = mine
        .iter()
        .map(|b| ShardRow {
            job_id: job.id.clone(),
            backup_id: b.backup_id.clone(),
            shard_id: String::new(),
            size: b.backup_size.map(|s| s as i64),
            provider_start: b.start_time.clone(),
            provider_end: b.end_time.clone(),
            state: "waiting".into(),
            object_key: None,
            manifest_key: None,
            upload_id: None,
            temp_path: None,
            bytes_done: 0,
            sha256: None,
            rdb_version: None,
            checksum: None,
        })
        .collect();
    let claim = ctx.claim(job);
    ctx.store.insert_shards(&claim, &rows).await?;
    let from = job.state();
    ctx.store
        .advance(&claim, from, Event::SnapshotFinished, ms(ctx.now()))
        .await?;
    let snapshot_secs =
        (ms(ctx.now()) - job.requested_at.unwrap_or(job.created_at)) as f64 / 1000.0;
    ctx.metrics
        .phase_duration
        .with_label_values(&[job.policy.as_str(), "snapshot"])
        .observe(snapshot_secs.max(0.0));
    ctx.event(
        job,
        "snapshot-finished",
        &format!(
            "{} record(s) finished: {}",
            rows.len(),
            rows.iter()
                .map(|r| r.backup_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await;
    Ok(true)
}

/// How long a job looks for its token before it concludes `CreateBackup` did not take effect: a
/// few polls (at least 10 s), at most `not_found_grace` and a third of the start window, so a
/// resend still starts in time.
fn token_search_window(ctx: &Context, job: &JobRow) -> Duration {
    let start_window = Duration::from_millis((job.start_by - job.due_at).max(0) as u64);
    (ctx.poll.max * 3)
        .max(Duration::from_secs(10))
        .min(ctx.poll.not_found_grace)
        .min(start_window / 3)
}

/// No record carries the job's token. Within the search window: poll again. After it, the send
/// surely did not take effect: send `CreateBackup` again (back to `pending`), or, once the start
/// window has closed, fail with what the provider last answered.
async fn token_not_found(ctx: &Context, job: &JobRow, now: DateTime<Utc>) -> Result<bool, Stop> {
    let token = job.token();
    let since = job
        .create_sent_at
        .or(job.requested_at)
        .unwrap_or(job.created_at);
    let window = token_search_window(ctx, job);
    if ms(now) - since <= window.as_millis() as i64 {
        return Ok(false);
    }
    // The last answer that left the outcome unknown is in the journal.
    let cause = ctx
        .store
        .events(&job.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|e| e.kind == "unknown-outcome")
        .map(|e| e.message)
        .unwrap_or_else(|| "CreateBackup was accepted, yet no record carries the token".into());
    if job.state() != State::Requested || ms(now) > job.start_by {
        return Err(Stop::Fail(anyhow!(
            "CreateBackup was sent {} time(s) and no backup with Desc {token} appeared at the provider (searched {}s after the last send); the start window closed at {}; last answer: {cause}",
            job.attempts,
            window.as_secs(),
            from_ms(job.start_by).format("%Y-%m-%d %H:%M:%S UTC")
        )));
    }
    ctx.event(
        job,
        "resend",
        &format!(
            "no backup with Desc {token} after {}s: CreateBackup did not take effect ({cause}); sending it again",
            window.as_secs()
        ),
    )
    .await;
    ctx.store
        .advance(
            &ctx.claim(job),
            State::Requested,
            Event::CreateNotFound,
            ms(now),
        )
        .await?;
    Ok(true)
}

/// How many times one backup is downloaded when its bytes fail verification before the job
/// fails: a corruption in transit rarely repeats; a bad backup at the provider always does.
const MAX_DOWNLOADS_PER_SHARD: u32 = 3;

async fn transfer_all(ctx: &Context, job: &JobRow, cancel: &CancellationToken) -> Step {
    let shards = ctx.store.shards(&job.id).await?;
    let started = ctx.now();
    for shard in shards.iter().filter(|s| s.state != "stored") {
        let mut attempt = 1u32;
        let mut downloads = 1u32;
        loop {
            let _permit = tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                p = ctx.transfers.clone().acquire_owned() => p.expect("the transfer semaphore is never closed"),
            };
            // The row as it is now (a failed attempt changed it).
            let current = ctx
                .store
                .shards(&job.id)
                .await?
                .into_iter()
                .find(|s| s.backup_id == shard.backup_id)
                .unwrap_or_else(|| shard.clone());
            match transfer_one(ctx, job, &current, cancel).await {
                Ok(()) => break,
                Err(Stop::Transient(e)) => {
                    let wait = Duration::from_secs(5 * u64::from(attempt * attempt));
                    let deadline = from_ms(job.deadline_at);
                    if attempt >= 4
                        || ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default()
                            > deadline
                    {
                        return Err(Stop::Fail(e));
                    }
                    ctx.event(
                        job,
                        "retry",
                        &format!(
                            "transfer attempt {attempt} failed: {e:#}; transferring again in {}s",
                            wait.as_secs()
                        ),
                    )
                    .await;
                    drop(_permit);
                    sleep(wait, cancel).await?;
                    attempt += 1;
                }
                Err(Stop::Corrupt(e)) => {
                    // A flipped byte or a short body: download again from a fresh URL, at once,
                    // up to MAX_DOWNLOADS_PER_SHARD in all and within the deadline.
                    let wait = Duration::from_secs(2);
                    if downloads >= MAX_DOWNLOADS_PER_SHARD
                        || ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default()
                            > from_ms(job.deadline_at)
                    {
                        return Err(Stop::Fail(e.context(format!(
                            "{downloads} download(s) of this backup failed verification"
                        ))));
                    }
                    ctx.event(
                        job,
                        "retry",
                        &format!(
                            "download {downloads} failed verification: {e:#}; downloading again from a fresh URL"
                        ),
                    )
                    .await;
                    drop(_permit);
                    sleep(wait, cancel).await?;
                    downloads += 1;
                }
                Err(other) => return Err(other),
            }
        }
    }
    let shards = ctx.store.shards(&job.id).await?;
    let bytes: i64 = shards.iter().map(|s| s.bytes_done).sum();
    ctx.store.set_job_bytes(&ctx.claim(job), bytes).await?;
    ctx.store
        .advance(
            &ctx.claim(job),
            State::Transferring,
            Event::TransferDone,
            ms(ctx.now()),
        )
        .await?;
    ctx.metrics
        .phase_duration
        .with_label_values(&[job.policy.as_str(), "transfer"])
        .observe((ctx.now() - started).num_milliseconds().max(0) as f64 / 1000.0);
    Ok(())
}

/// The handle of the job's destination.
fn destination_of(ctx: &Context, job: &JobRow) -> Result<Handle, Stop> {
    ctx.destinations
        .get(&job.destination)
        .cloned()
        .ok_or_else(|| {
            Stop::Fail(anyhow!(
                "destination `{}` is no longer in the config",
                job.destination
            ))
        })
}

/// When the job asked the provider: the time in its object keys.
fn requested_at(job: &JobRow) -> DateTime<Utc> {
    from_ms(
        job.requested_at
            .or(job.create_sent_at)
            .unwrap_or(job.created_at),
    )
}

/// What one shard's transfer was settled on before the first byte.
struct ShardPlan {
    key: String,
    manifest_key: String,
    shard_id: String,
    expected_size: Option<u64>,
    source: ShardSource,
}

/// One shard: learn its shard id and size, stream it into the destination, record the outcome.
async fn transfer_one(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    cancel: &CancellationToken,
) -> Step {
    let dest = destination_of(ctx, job)?;
    let plan = plan_shard(ctx, job, shard, &dest).await?;
    let result = stream_shard(ctx, job, shard, &dest, &plan, cancel).await?;
    record_transfer(ctx, job, shard, &plan.key, result).await
}

/// Asks `DownloadBackup` for the shard id (part of the key), checks ids and sizes, aborts what
/// an earlier run left open, and journals the key before any byte moves.
async fn plan_shard(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    dest: &Handle,
) -> Result<ShardPlan, Stop> {
    let info = ctx
        .cds
        .download_backup(&job.instance_uuid, &shard.backup_id)
        .await
        .with_context(|| format!("DownloadBackup for backup {}", shard.backup_id))?;
    let shard_id = info.shard_id.clone();
    if !shard_id.is_empty() {
        crate::transfer::check_provider_id("shard_id", &shard_id)
            .map_err(|e| refuse(ctx, job, e))?;
    }
    let expected_size = shard.size.map(|s| s as u64).or(info.backup.backup_size);
    check_size(ctx, job, &shard.backup_id, info.backup.backup_size)?;
    check_size(ctx, job, &shard.backup_id, expected_size)?;

    // A multipart upload left by an earlier process is aborted; the transfer starts over.
    if let Some(key) = abort_left_upload(ctx, job, shard).await? {
        ctx.event(
            job,
            "upload-aborted",
            &format!(
                "aborted the multipart upload left by an earlier run of {key}; transferring again"
            ),
        )
        .await;
    }

    let key = transfer::object_key(
        dest.key_prefix(),
        &job.policy,
        &job.instance_uuid,
        requested_at(job),
        &shard.backup_id,
        &shard_id,
    );
    let manifest_key = transfer::manifest_key(&key);
    ctx.store
        .shard_started(
            &ctx.claim(job),
            &shard.backup_id,
            &shard_id,
            &key,
            &manifest_key,
        )
        .await?;
    let size_text = expected_size.map_or_else(|| "?".into(), |s| s.to_string());
    ctx.event(
        job,
        "transfer",
        &format!("backup {} → {key} ({size_text} bytes)", shard.backup_id),
    )
    .await;
    let route = ctx
        .config
        .policies
        .iter()
        .find(|p| p.name == job.policy)
        .map_or(crate::config::DownloadRoute::Auto, |p| p.download);
    let source = ShardSource {
        instance_uuid: job.instance_uuid.clone(),
        backup_id: shard.backup_id.clone(),
        expected_size,
        // Without an announced size, the download is cut off past what rdbvault believes.
        max_size: ctx.config.limits.max_backup_size,
        route,
        fresh_urls: Some(info),
    };
    Ok(ShardPlan {
        key,
        manifest_key,
        shard_id,
        expected_size,
        source,
    })
}

/// The manifest written beside a verified copy.
fn manifest_for(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    plan: &ShardPlan,
    stored: &transfer::Stored,
) -> Manifest {
    Manifest {
        instance_uuid: job.instance_uuid.clone(),
        instance_name: job.instance_name.clone(),
        region: job.region_id.clone(),
        policy: job.policy.clone(),
        provider_backup_id: shard.backup_id.clone(),
        shard_id: plan.shard_id.clone(),
        provider_start_time: shard.provider_start.clone(),
        provider_end_time: shard.provider_end.clone(),
        size: stored.size,
        sha256: stored.sha256.clone(),
        rdb_version: stored.rdb.version,
        rdb_checksum: stored.checksum_label().into(),
        rdbvault_version: env!("CARGO_PKG_VERSION").into(),
        job_id: job.id.clone(),
        requested_at: requested_at(job),
        stored_at: ctx.now(),
        object_key: plan.key.clone(),
    }
}

/// Opens the destination's sink and streams the shard through the verifier into it. An
/// interrupted sink that no later process can continue is aborted here.
async fn stream_shard(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    dest: &Handle,
    plan: &ShardPlan,
    cancel: &CancellationToken,
) -> Result<Result<transfer::Stored, transfer::Error>, Stop> {
    let claim = ctx.claim(job);
    let opened = dest
        .open_sink(SinkRequest {
            key: plan.key.clone(),
            manifest_key: plan.manifest_key.clone(),
            backup_id: shard.backup_id.clone(),
            expected_size: plan.expected_size,
            resume: shard.temp_path.is_some(),
            store: ctx.store.clone(),
            claim: claim.clone(),
        })
        .await
        .map_err(|e| Stop::Fail(anyhow::Error::new(e)))?;
    for (kind, text) in &opened.notes {
        ctx.event(job, kind, text).await;
    }
    if let Some(temp) = &opened.temp_path {
        ctx.store
            .shard_pending_data(&claim, &shard.backup_id, None, Some(temp))
            .await?;
    }
    let mut sink = opened.sink;
    let progress_fn = ctx.progress.clone();
    let (job_id, backup_id, expected) =
        (job.id.clone(), shard.backup_id.clone(), plan.expected_size);
    let progress = move |done: u64| {
        if let Some(p) = &progress_fn {
            p(&job_id, &backup_id, done, expected);
        }
    };
    let result = transfer::transfer_shard(
        &ctx.downloader,
        &plan.source,
        &mut sink,
        opened.already,
        |stored| manifest_for(ctx, job, shard, plan, stored),
        &progress,
        cancel,
        from_ms(job.deadline_at),
        (&ctx.store, &claim),
    )
    .await;
    if matches!(result, Err(transfer::Error::Cancelled)) && !opened.resumable {
        // Another process cannot continue this sink: abort it cleanly and transfer again on
        // the next start.
        sink.abort().await;
    }
    Ok(result)
}

/// Journals a shard's outcome and sorts a failure into retry-worthy or final.
async fn record_transfer(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    key: &str,
    result: Result<transfer::Stored, transfer::Error>,
) -> Step {
    let claim = ctx.claim(job);
    let stored = match result {
        Ok(stored) => stored,
        Err(transfer::Error::Cancelled) => return Err(Stop::Cancelled),
        Err(transfer::Error::LostClaim(why)) => return Err(Stop::LostClaim(why)),
        Err(e) => {
            ctx.store.shard_failed(&claim, &shard.backup_id).await?;
            let transient = e.is_transient();
            let corrupt = matches!(e, transfer::Error::Verification(_));
            let err = anyhow::Error::new(e).context(format!(
                "backup {} of instance {}",
                shard.backup_id, job.instance_uuid
            ));
            return Err(if transient {
                Stop::Transient(err)
            } else if corrupt {
                Stop::Corrupt(err)
            } else {
                Stop::Fail(err)
            });
        }
    };
    ctx.store
        .shard_stored(
            &claim,
            &shard.backup_id,
            stored.size as i64,
            &stored.sha256,
            i64::from(stored.rdb.version),
            stored.checksum_label(),
        )
        .await?;
    ctx.metrics
        .transfer_bytes
        .with_label_values(&[job.destination.as_str()])
        .inc_by(stored.size);
    ctx.event(
        job,
        "stored",
        &format!(
            "{key}: {} bytes, sha256 {}, RDB v{}, checksum {}",
            stored.size,
            stored.sha256,
            stored.rdb.version,
            stored.checksum_label()
        ),
    )
    .await;
    Ok(())
}

/// What the destination holds for one stored shard must be what the journal says: the size,
/// the checksum where the kind records one, and the manifest beside it.
async fn check_stored_shard(dest: &Handle, s: &ShardRow) -> Step {
    let key = s.object_key.clone().unwrap_or_default();
    let sha = s.sha256.clone().unwrap_or_default();
    if s.state != "stored" || sha.is_empty() {
        return Err(Stop::Fail(anyhow!("backup {} was not stored", s.backup_id)));
    }
    let Some(found) = dest.stat(&key).await? else {
        return Err(Stop::Fail(anyhow!("{} is missing", dest.locate(&key))));
    };
    let sha_differs = dest.keeps_checksums() && found.sha256.as_deref() != Some(sha.as_str());
    if found.size as i64 != s.bytes_done || sha_differs {
        let recorded = found
            .sha256
            .as_ref()
            .map(|m| format!(", sha256 {m:?}"))
            .unwrap_or_default();
        return Err(Stop::Fail(anyhow!(
            "{} holds {} bytes{recorded}; the journal says {} bytes, {sha}",
            dest.locate(&key),
            found.size,
            s.bytes_done
        )));
    }
    let manifest = s.manifest_key.clone().unwrap_or_default();
    if dest.stat(&manifest).await?.is_none() {
        return Err(Stop::Fail(anyhow!(
            "the manifest {} is missing",
            dest.locate(&manifest)
        )));
    }
    Ok(())
}

async fn verify(ctx: &Context, job: &JobRow) -> Step {
    let dest = destination_of(ctx, job)?;
    let shards = ctx.store.shards(&job.id).await?;
    let started = ctx.now();
    for s in &shards {
        check_stored_shard(&dest, s).await?;
    }
    let now = ctx.now();
    let requested_at = job
        .requested_at
        .or(job.create_sent_at)
        .unwrap_or(job.created_at);
    let mut copies = Vec::new();
    for s in &shards {
        for (location, destination, object_key) in [
            ("destination", job.destination.clone(), s.object_key.clone()),
            ("provider", String::new(), None),
        ] {
            copies.push(NewCopy {
                location,
                policy: job.policy.clone(),
                instance_uuid: job.instance_uuid.clone(),
                instance_name: job.instance_name.clone(),
                job_id: job.id.clone(),
                backup_id: s.backup_id.clone(),
                shard_id: s.shard_id.clone(),
                destination,
                object_key,
                size: s.bytes_done,
                sha256: s.sha256.clone(),
                rdb_version: s.rdb_version,
                requested_at,
                verified_at: ms(now),
            });
        }
    }
    ctx.store
        .complete_job(&ctx.claim(job), &copies, ms(now))
        .await?;
    let bytes: i64 = shards.iter().map(|s| s.bytes_done).sum();
    let m = &ctx.metrics;
    m.phase_duration
        .with_label_values(&[job.policy.as_str(), "verify"])
        .observe((ctx.now() - started).num_milliseconds().max(0) as f64 / 1000.0);
    m.phase_duration
        .with_label_values(&[job.policy.as_str(), "total"])
        .observe((ms(ctx.now()) - job.due_at.min(job.created_at)).max(0) as f64 / 1000.0);
    finished_metrics(ctx, job, "success", bytes, ms(now));
    ctx.event(
        job,
        "verified",
        &format!(
            "{} object(s), {bytes} bytes, verified at {}",
            shards.len(),
            job.destination
        ),
    )
    .await;
    Ok(())
}

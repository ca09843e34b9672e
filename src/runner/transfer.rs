//! `transferring`: each shard streamed from the provider into the destination, verified on the
//! way and committed ([`crate::transfer`]), at most `max_concurrent_transfers` at a time across
//! jobs, with retries.
//!
//! Per shard: [`plan_shard`] (the shard id from `DownloadBackup`, sizes, leftovers aborted, the
//! key journaled before any byte moves), [`stream_shard`], [`record_transfer`] (the outcome
//! journaled and sorted by [`failure_of`]). A failure that may pass or bytes that did not verify
//! are tried again as [`retry`] decides, never past the job's deadline.

use super::refusal::{SizeLimits, check_size, refuse};
use super::{Context, Step, Stop, destination_of, requested_at_ms, sleep};
use crate::destination::{Handle, SinkRequest};
use crate::job::{Event, State};
use crate::store::shards::StoredShard;
use crate::store::{JobRow, ShardRow, from_ms, ms};
use crate::transfer::{self, Manifest, ShardSource, Sink as _};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many times one backup is downloaded when its bytes fail verification before the job
/// fails: a corruption in transit rarely repeats; a bad backup at the provider always does.
const MAX_DOWNLOADS_PER_SHARD: u32 = 3;

/// How many attempts a shard gets when the download host or the destination fails.
const MAX_TRANSIENT_ATTEMPTS: u32 = 4;

/// The pause before downloading corrupt bytes again from a fresh URL: a moment, not a backoff
/// (the fault was in transit, not a host that needs time).
const REDOWNLOAD_AFTER: Duration = Duration::from_secs(2);

/// A shard's failure that is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The download host or the destination failed in a way that can pass.
    Transient,
    /// The bytes did not verify.
    Corrupt,
}

/// Sorts a transfer error: `None` is final (and so are shutdown and a lost claim, which the
/// caller handles first).
fn failure_of(e: &transfer::Error) -> Option<Failure> {
    if e.is_transient() {
        Some(Failure::Transient)
    } else if matches!(e, transfer::Error::Verification(_)) {
        Some(Failure::Corrupt)
    } else {
        None
    }
}

/// What to do after a shard's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Try again after this wait.
    After(Duration),
    /// Fail the job.
    GiveUp,
}

/// Decides a retry. `tries` counts the failed tries of this kind, this one included: transfer
/// attempts (transient: wait 5·tries² s, at most [`MAX_TRANSIENT_ATTEMPTS`]) or downloads
/// (corrupt: wait [`REDOWNLOAD_AFTER`], at most [`MAX_DOWNLOADS_PER_SHARD`]). A retry whose
/// wait would end past `deadline` is not made.
fn retry(failure: Failure, tries: u32, now: DateTime<Utc>, deadline: DateTime<Utc>) -> Retry {
    let (limit, wait) = match failure {
        Failure::Transient => (
            MAX_TRANSIENT_ATTEMPTS,
            Duration::from_secs(5 * u64::from(tries).pow(2)),
        ),
        Failure::Corrupt => (MAX_DOWNLOADS_PER_SHARD, REDOWNLOAD_AFTER),
    };
    if tries >= limit || now + chrono::Duration::from_std(wait).unwrap_or_default() > deadline {
        Retry::GiveUp
    } else {
        Retry::After(wait)
    }
}

/// Every shard not yet stored, then the job's bytes, and the job moves to `verifying`.
pub(super) async fn transfer_all(ctx: &Context, job: &JobRow, cancel: &CancellationToken) -> Step {
    let shards = ctx.store.shards(&job.id).await?;
    let started = ctx.now();
    for shard in shards
        .iter()
        .filter(|s| s.state != crate::job::ShardState::Stored)
    {
        transfer_with_retries(ctx, job, shard, cancel).await?;
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

/// One shard, tried again while [`retry`] allows; each try holds a transfer permit, released
/// before the wait so other jobs' shards can move meanwhile.
async fn transfer_with_retries(
    ctx: &Context,
    job: &JobRow,
    shard: &ShardRow,
    cancel: &CancellationToken,
) -> Step {
    let mut attempt = 1u32;
    let mut downloads = 1u32;
    loop {
        let permit = tokio::select! {
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
        let (failure, e) = match transfer_one(ctx, job, &current, cancel).await {
            Ok(()) => return Ok(()),
            Err(Stop::Transient(e)) => (Failure::Transient, e),
            Err(Stop::Corrupt(e)) => (Failure::Corrupt, e),
            Err(other) => return Err(other),
        };
        let tries = match failure {
            Failure::Transient => attempt,
            Failure::Corrupt => downloads,
        };
        let wait = match retry(failure, tries, ctx.now(), from_ms(job.deadline_at)) {
            Retry::After(wait) => wait,
            Retry::GiveUp if failure == Failure::Transient => return Err(Stop::Fail(e)),
            Retry::GiveUp => {
                return Err(Stop::Fail(e.context(format!(
                    "{downloads} download(s) of this backup failed verification"
                ))));
            }
        };
        let text = match failure {
            Failure::Transient => format!(
                "transfer attempt {attempt} failed: {e:#}; transferring again in {}s",
                wait.as_secs()
            ),
            // A flipped byte or a short body: download again from a fresh URL.
            Failure::Corrupt => format!(
                "download {downloads} failed verification: {e:#}; downloading again from a fresh URL"
            ),
        };
        ctx.event(job, "retry", &text).await;
        drop(permit);
        sleep(wait, cancel).await?;
        match failure {
            Failure::Transient => attempt += 1,
            Failure::Corrupt => downloads += 1,
        }
    }
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
            .map_err(|e| refuse(ctx, job, e.into()))?;
    }
    let expected_size = shard.size.map(|s| s as u64).or(info.backup.backup_size);
    // Both the size this answer announces and the one the transfer will expect.
    for size in [info.backup.backup_size, expected_size] {
        check_size(&shard.backup_id, size, SizeLimits::of(ctx, job))
            .map_err(|r| refuse(ctx, job, r))?;
    }

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
        from_ms(requested_at_ms(job)),
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
        requested_at: from_ms(requested_at_ms(job)),
        stored_at: ctx.now(),
        object_key: plan.key.clone(),
        rdb: stored.contents.as_ref().ok().cloned(),
        rdb_unreadable: stored.contents.as_ref().err().cloned(),
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
            resume_from: shard.temp_path.clone(),
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
            let failure = failure_of(&e);
            let err = anyhow::Error::new(e).context(format!(
                "backup {} of instance {}",
                shard.backup_id, job.instance_uuid
            ));
            return Err(match failure {
                Some(Failure::Transient) => Stop::Transient(err),
                Some(Failure::Corrupt) => Stop::Corrupt(err),
                None => Stop::Fail(err),
            });
        }
    };
    ctx.store
        .shard_stored(
            &claim,
            &shard.backup_id,
            &StoredShard {
                bytes: stored.size as i64,
                sha256: &stored.sha256,
                rdb_version: i64::from(stored.rdb.version),
                checksum: stored.checksum_label(),
                contents: stored.contents.as_ref().ok(),
            },
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
            "{key}: {} bytes, sha256 {}, RDB v{}, checksum {}; {}",
            stored.size,
            stored.sha256,
            stored.rdb.version,
            stored.checksum_label(),
            stored.contents_text()
        ),
    )
    .await;
    Ok(())
}

/// Aborts the S3 multipart upload a shard's row still names (left by a failed attempt or a
/// process that died) and forgets it. Returns its key if there was one.
pub(super) async fn abort_left_upload(
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

#[cfg(test)]
mod tests {
    use super::super::test_support::at;
    use super::*;
    use crate::clock::{Clock as _, ManualClock};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_transient_failure_is_retried_at_most_four_times_and_never_past_the_deadline() {
        let now = at("2026-03-01T00:00:00Z");
        let far = at("2026-03-02T00:00:00Z");
        // Attempts 1..3 fail and wait 5·n² s; the fourth failure is the last.
        assert_eq!(
            retry(Failure::Transient, 1, now, far),
            Retry::After(secs(5))
        );
        assert_eq!(
            retry(Failure::Transient, 2, now, far),
            Retry::After(secs(20))
        );
        assert_eq!(
            retry(Failure::Transient, 3, now, far),
            Retry::After(secs(45))
        );
        assert_eq!(retry(Failure::Transient, 4, now, far), Retry::GiveUp);
        // A wait that would end past the deadline is not started; one ending on it is.
        let deadline = at("2026-03-01T00:00:20Z");
        assert_eq!(
            retry(Failure::Transient, 2, now, deadline),
            Retry::After(secs(20))
        );
        let deadline = at("2026-03-01T00:00:19.999Z");
        assert_eq!(retry(Failure::Transient, 2, now, deadline), Retry::GiveUp);
    }

    #[test]
    fn corrupt_bytes_are_downloaded_again_two_seconds_later_up_to_three_downloads_in_all() {
        let now = at("2026-03-01T00:00:00Z");
        let far = at("2026-03-02T00:00:00Z");
        assert_eq!(retry(Failure::Corrupt, 1, now, far), Retry::After(secs(2)));
        assert_eq!(retry(Failure::Corrupt, 2, now, far), Retry::After(secs(2)));
        assert_eq!(
            retry(Failure::Corrupt, MAX_DOWNLOADS_PER_SHARD, now, far),
            Retry::GiveUp
        );
    }

    #[test]
    fn a_corrupt_download_is_not_tried_again_when_the_deadline_is_closer_than_two_seconds() {
        let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
        let deadline = at("2026-03-01T00:00:03Z");
        assert_eq!(
            retry(Failure::Corrupt, 1, clock.now(), deadline),
            Retry::After(secs(2))
        );
        clock.advance(chrono::Duration::milliseconds(1001));
        assert_eq!(
            retry(Failure::Corrupt, 1, clock.now(), deadline),
            Retry::GiveUp
        );
    }

    #[test]
    fn a_download_or_destination_error_is_transient_and_a_verification_error_is_corruption() {
        use transfer::Error as E;
        assert_eq!(
            failure_of(&E::Download("503".into())),
            Some(Failure::Transient)
        );
        assert_eq!(
            failure_of(&E::Destination("slow down".into())),
            Some(Failure::Transient)
        );
        assert_eq!(
            failure_of(&E::Verification("crc64 mismatch".into())),
            Some(Failure::Corrupt)
        );
        assert_eq!(failure_of(&E::Deadline), None, "the deadline is final");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_retry_wait_ever_ends_past_the_deadline_or_exceeds_its_limit(
                corrupt in any::<bool>(),
                tries in 1u32..10,
                now_s in 0i64..100_000,
                left_ms in -5_000i64..200_000,
            ) {
                let failure = if corrupt { Failure::Corrupt } else { Failure::Transient };
                let now = at("2026-03-01T00:00:00Z") + chrono::Duration::seconds(now_s);
                let deadline = now + chrono::Duration::milliseconds(left_ms);
                if let Retry::After(wait) = retry(failure, tries, now, deadline) {
                    prop_assert!(now + chrono::Duration::from_std(wait).unwrap() <= deadline);
                    let limit = if corrupt { MAX_DOWNLOADS_PER_SHARD } else { MAX_TRANSIENT_ATTEMPTS };
                    prop_assert!(tries < limit);
                }
            }
        }
    }
}

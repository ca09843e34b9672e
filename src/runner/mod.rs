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
//!
//! Two things stop a job early, and they mean different things. A shutdown (the caller's token)
//! stops it at a safe point and hands it back: it is resumed later. An operator's cancel
//! request (`jobs cancel`, recorded in the state DB by any process) fails it at its next safe
//! point with `cancelled by operator` and the failure's cleanup. The runner reads the request
//! before every step and, while a step runs, a watch polls for it and cancels the job's own
//! token (a child of the shutdown token), so a long transfer stops within about a second,
//! whichever process (daemon or `backup-now`) runs the job.
//!
//! # Layout
//! This file owns [`run_job`]: the step loop, the deadline check at its top, and every way a run
//! ends (failed, cancelled, missed, interrupted, lost claim) with its journal writes, cleanup
//! and metrics.
//! One file per phase does that phase's work: `request` (`pending`), `snapshot`
//! (`requested`/`snapshotting`), `transfer` (`transferring`) and `verify` (`verifying`);
//! `refusal` holds the provider values the runner will not build on.
//!
//! Each phase keeps its decisions in pure functions over plain values and an explicit `now`,
//! unit-tested beside them; the async code around them does the I/O, in the journal order the
//! crash tests rely on (a store write before the provider call it guards).

mod refusal;
mod request;
mod snapshot;
mod transfer;
mod verify;

use crate::destination::Handle;
use crate::job::State;
use crate::services::Context;
use crate::store::{JobRow, from_ms, ms};
use anyhow::anyhow;
use chrono::{DateTime, Utc};
use std::fmt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The error a job stopped by `rdbvault jobs cancel` is recorded with.
pub const CANCELLED_BY_OPERATOR: &str = "cancelled by operator";

/// How a run of [`run_job`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Failed(String),
    /// Failed because the provider or the destination refused the credentials.
    Refused(String),
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

type Step = Result<(), Stop>;

/// Sleeps, unless shutdown comes first.
async fn sleep(d: Duration, cancel: &CancellationToken) -> Step {
    tokio::select! {
        _ = cancel.cancelled() => Err(Stop::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// A journal time (Unix ms) as every message of the runner shows it.
fn utc(at_ms: i64) -> impl fmt::Display {
    from_ms(at_ms).format("%Y-%m-%d %H:%M:%S UTC")
}

/// When the job asked the provider (Unix ms): the time in its object keys and its inventory
/// rows.
fn requested_at_ms(job: &JobRow) -> i64 {
    job.requested_at
        .or(job.create_sent_at)
        .unwrap_or(job.created_at)
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

/// The outcome a job already in a terminal state reports, or `None` while it is open.
fn terminal_outcome(state: State, error: Option<&str>) -> Option<Outcome> {
    let error = || error.unwrap_or_default().to_string();
    match state {
        State::Stored => Some(Outcome::Stored),
        State::Missed => Some(Outcome::Missed(error())),
        State::Failed => Some(Outcome::Failed(error())),
        State::Pending
        | State::Requested
        | State::Snapshotting
        | State::Transferring
        | State::Verifying => None,
    }
}

/// An open job past its `completion_window`: it takes no further step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeadlineExceeded {
    /// `deadline_at`, Unix ms.
    deadline_at: i64,
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadline exceeded: the job did not finish within completion_window (by {})",
            utc(self.deadline_at)
        )
    }
}

/// The check at the top of every step. A pending job is exempt: until it sends `CreateBackup`
/// its start window (which ends before the deadline) decides whether it is missed.
fn check_deadline(
    state: State,
    now: DateTime<Utc>,
    deadline_at: i64,
) -> Result<(), DeadlineExceeded> {
    // Compared in whole milliseconds, as the journal stores times.
    if state != State::Pending && ms(now) > deadline_at {
        Err(DeadlineExceeded { deadline_at })
    } else {
        Ok(())
    }
}

/// What the step loop does before a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Take the step.
    Step,
    /// An operator asked the job to stop: record it failed (`cancelled by operator`), with the
    /// failure's cleanup.
    Cancel,
    /// Shutdown: stop at this safe point, hand the job back, resume it later.
    Interrupt,
}

/// Decides between a step, an operator's cancel and a shutdown, from what the journal says
/// (`cancel_requested`) and whether the process is shutting down. A cancel request outranks a
/// shutdown: the job stops either way, and the operator asked for it to end. A job in
/// `verifying` has every copy written and verified, so it finishes (stored) rather than being
/// failed: a cancel never throws away a verified copy.
fn next_move(state: State, cancel_requested: bool, shutdown: bool) -> Next {
    if cancel_requested && state != State::Verifying {
        Next::Cancel
    } else if shutdown {
        Next::Interrupt
    } else {
        Next::Step
    }
}

/// Runs a job until it is stored, failed or missed, or until shutdown (`shutdown`: the job
/// stops at a safe point and is resumed later) or an operator's cancel request (`jobs cancel`:
/// the job is failed at its next safe point). Every log line it writes carries `policy`,
/// `instance` and `job_id` once, from a tracing span: the lines logged inside it do not repeat
/// them.
pub async fn run_job(ctx: &Context, job_id: &str, shutdown: &CancellationToken) -> Outcome {
    use tracing::Instrument as _;
    let (policy, instance) = match ctx.store.job(job_id).await {
        Ok(j) => (j.policy, j.instance_uuid),
        Err(_) => (String::new(), String::new()),
    };
    // At ERROR level so that no log level filters the span out: a `warn` filter (backup-now's)
    // still shows a failed job's line, and it must name the job.
    let span =
        tracing::error_span!("job", policy = %policy, instance = %instance, job_id = %job_id);
    // The token the steps wait on: cancelled by a shutdown (its parent) or by the watch when an
    // operator asks; the journal and `shutdown` tell the two apart.
    let stop = shutdown.child_token();
    // Cancelled once an operator's request is in the state DB, so a transfer or a wait in
    // progress ends within the watch's poll instead of at its end; watched until the run ends.
    let _watched = ctx.cancel_watch.watch(&ctx.store, job_id, stop.clone());
    let outcome = run_job_steps(ctx, job_id, shutdown, &stop)
        .instrument(span)
        .await;
    tell(ctx, job_id, &outcome).await;
    outcome
}

/// The job's end, to whoever `notify:` names (queued in the outbox; never waits on them).
async fn tell(ctx: &Context, job_id: &str, outcome: &Outcome) {
    use crate::config::EventKind;
    let (kind, error) = match outcome {
        Outcome::Stored => (EventKind::Stored, None),
        Outcome::Failed(e) | Outcome::Refused(e) => (EventKind::Failed, Some(e.as_str())),
        Outcome::Missed(e) => (EventKind::Missed, Some(e.as_str())),
        // Not an end: whoever continues the job tells.
        Outcome::Interrupted | Outcome::LostClaim(_) => return,
    };
    if ctx.config.notify.is_empty() {
        return;
    }
    let Ok(job) = ctx.store.job(job_id).await else {
        return;
    };
    let event = crate::notify::Event::of_job(kind, &job, error, ctx.now());
    crate::notify::emit(&ctx.store, &ctx.config, &event).await;
    crate::notify::job_ended(&ctx.store, &ctx.config, &job).await;
}

/// Whether the journal holds an operator's cancel request for the job. A DB that cannot be
/// read says no: the job then stops as on shutdown (handed back), and whoever runs it next
/// reads the request.
async fn cancel_requested_now(ctx: &Context, job: &JobRow) -> bool {
    match ctx.store.cancel_requested(&job.id).await {
        Ok(at) => at.is_some(),
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "cannot read the job's cancel request");
            false
        }
    }
}

/// The step loop: re-reads the row before every step (the last step changed it, or another
/// process did), so each step decides on what the journal says now. Steps wait on `stop`.
async fn run_job_steps(
    ctx: &Context,
    job_id: &str,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) -> Outcome {
    // What the snapshot phase remembers between its polls.
    let mut polling = snapshot::Polling::new(&ctx.poll);
    let mut last_read: Option<JobRow> = None;
    loop {
        // Between polls that wrote nothing the row is the one read before them; an operator's
        // cancel reaches a waiting poll through `stop` (the cancel watch), not through the row.
        let reuse = last_read.take().filter(|_| polling.row_unchanged);
        let job = match reuse {
            Some(j) => j,
            None => match ctx.store.job(job_id).await {
                Ok(j) => j,
                Err(e) => return Outcome::Failed(format!("cannot read job {job_id}: {e}")),
            },
        };
        polling.row_unchanged = false;
        let state = job.state;
        if let Some(outcome) = terminal_outcome(state, job.error.as_deref()) {
            return outcome;
        }
        // The row just read carries the request: no query of its own per step.
        let requested = job.cancel_requested_at.is_some();
        match next_move(state, requested, shutdown.is_cancelled()) {
            Next::Cancel => return cancelled(ctx, &job).await,
            Next::Interrupt => return interrupted(ctx, &job).await,
            Next::Step => {}
        }
        let step = match check_deadline(state, ctx.now(), job.deadline_at) {
            Err(late) => Err(Stop::Fail(anyhow!("{late}"))),
            Ok(()) => match state {
                State::Pending => request::request(ctx, &job, stop).await,
                State::Requested | State::Snapshotting => {
                    snapshot::poll(ctx, &job, &mut polling, stop).await
                }
                State::Transferring => transfer::transfer_all(ctx, &job, stop).await,
                State::Verifying => verify::verify(ctx, &job).await,
                State::Stored | State::Failed | State::Missed => {
                    unreachable!("terminal states return above")
                }
            },
        };
        if let Err(why) = step {
            return end(ctx, &job, why).await;
        }
        last_read = Some(job);
    }
}

/// How a step that stopped ends the run.
async fn end(ctx: &Context, job: &JobRow, stop: Stop) -> Outcome {
    match stop {
        // The job's token fired: an operator's cancel (in the journal) or a shutdown.
        Stop::Cancelled => match next_move(job.state, cancel_requested_now(ctx, job).await, true) {
            Next::Cancel => cancelled(ctx, job).await,
            Next::Interrupt | Next::Step => interrupted(ctx, job).await,
        },
        Stop::LostClaim(why) => lost_claim(ctx, job, why).await,
        Stop::Miss(reason) => missed(ctx, job, reason).await,
        Stop::Fail(err) | Stop::Transient(err) | Stop::Corrupt(err) => failed(ctx, job, err).await,
    }
}

/// The job could not start inside its start window: journal it as missed.
async fn missed(ctx: &Context, job: &JobRow, reason: String) -> Outcome {
    let now = ms(ctx.now());
    match ctx.store.miss_job(&ctx.claim(job), now, &reason).await {
        Err(e @ crate::store::Error::LostClaim { .. }) => {
            return lost_claim(ctx, job, e.to_string()).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a missed job")
        }
        Ok(()) => {}
    }
    ctx.event(job, "missed", &reason).await;
    finished_metrics(ctx, job, "missed", 0, now);
    Outcome::Missed(reason)
}

/// The job failed for good: clean up what it left at the destination, then journal the
/// failure with its whole error chain.
async fn failed(ctx: &Context, job: &JobRow, err: anyhow::Error) -> Outcome {
    let chain = format!("{err:#}");
    if crate::services::state_db_unreachable(&err) {
        return db_outage(ctx, job, &chain).await;
    }
    // Only the owner cleans up: another process's upload is not ours to abort.
    match ctx.store.holds(&ctx.claim(job)).await {
        Ok(true) => {}
        Ok(false) => return lost_claim(ctx, job, chain).await,
        Err(e) => {
            // Unknown owner: touch nothing, hand the job back so the next
            // dispatch (ours or another process's) decides with a working DB.
            tracing::error!(error = %e, "cannot read the job's owner; leaving the job open");
            let _ = ctx.store.release_job(&job.id, &ctx.owner).await;
            return Outcome::Interrupted;
        }
    }
    let current = ctx.store.job(&job.id).await.unwrap_or(job.clone());
    cleanup_partial(ctx, &current).await;
    let now = ms(ctx.now());
    match ctx.store.fail_job(&ctx.claim(job), now, &chain).await {
        Err(e @ crate::store::Error::LostClaim { .. }) => {
            return lost_claim(ctx, job, e.to_string()).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a failed job")
        }
        Ok(()) => {}
    }
    if chain == CANCELLED_BY_OPERATOR {
        // Asked for: news in the daemon's log, not an error.
        tracing::info!("backup job cancelled by an operator");
    } else {
        tracing::error!(error = %chain, "backup job failed");
    }
    let _ = ctx
        .store
        .add_event(&job.id, ms(ctx.now()), "failed", &chain)
        .await;
    finished_metrics(ctx, job, "failure", 0, now);
    if crate::services::credential_problem(&err) {
        Outcome::Refused(chain)
    } else {
        Outcome::Failed(chain)
    }
}

/// An operator asked the job to stop (`jobs cancel`): it fails like any failure, with the same
/// cleanup (open multipart uploads aborted, `.partial` files removed). Stored copies and the
/// provider's backup are left alone; retention decides about those.
async fn cancelled(ctx: &Context, job: &JobRow) -> Outcome {
    ctx.event(
        job,
        "cancelled",
        &format!(
            "{} stopped the job in state {} at a safe point: an operator asked to cancel it",
            ctx.owner, job.state
        ),
    )
    .await;
    failed(ctx, job, anyhow!(CANCELLED_BY_OPERATOR)).await
}

/// Another process owns the job now: say so in the journal (events are not state) and stop.
async fn lost_claim(ctx: &Context, job: &JobRow, why: String) -> Outcome {
    tracing::warn!("lost the claim on the job: {why}");
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

/// The state DB went away under a step (a restart, a failover): the job is not failed. Its
/// journal stands where it was; it is handed back as soon as the DB answers again, and the next
/// dispatch, here or in another replica, resumes it from its phase. Until then the job stays
/// this process's (its heartbeat keeps it, so no one runs it twice); after a minute of trying
/// here, a task of its own keeps trying, with backoff, so a long outage does not leave the job
/// held by a process that no longer runs it.
async fn db_outage(ctx: &Context, job: &JobRow, why: &str) -> Outcome {
    tracing::warn!(error = %why, "the state DB is unreachable; the job stops here and is resumed when it answers");
    for _ in 0..60 {
        if ctx.store.release_job(&job.id, &ctx.owner).await.is_ok() {
            return Outcome::Interrupted;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    tracing::error!(
        "the state DB stayed unreachable for a minute; the job is handed back as soon as it answers"
    );
    let (store, id, owner) = (ctx.store.clone(), job.id.clone(), ctx.owner.clone());
    tokio::spawn(async move {
        let mut wait = std::time::Duration::from_secs(2);
        while store.release_job(&id, &owner).await.is_err() {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        }
        tracing::info!(job_id = %id, "the state DB answers again; the job is handed back");
    });
    Outcome::Interrupted
}

/// Aborts uploads and removes `.partial` files a failed job leaves.
async fn cleanup_partial(ctx: &Context, job: &JobRow) {
    let Ok(shards) = ctx.store.shards(&job.id).await else {
        return;
    };
    for s in shards {
        match transfer::abort_left_upload(ctx, job, &s).await {
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
                tracing::error!(error = %e, "cannot abort a multipart upload")
            }
        }
        if let (Some(temp), Some(key), Some(dest)) = (
            &s.temp_path,
            &s.object_key,
            ctx.destinations.get(&job.destination),
        ) {
            dest.discard_unfinished(key, temp).await;
        }
        let _ = ctx
            .store
            .shard_pending_data(&ctx.claim(job), &s.backup_id, None, None)
            .await;
    }
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

/// Helpers the phase tests share: plain timestamps.
#[cfg(test)]
mod test_support {
    use chrono::{DateTime, Utc};

    /// An RFC 3339 time.
    pub fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a valid test time")
            .with_timezone(&Utc)
    }

    /// The same time in Unix ms, as the journal stores it.
    pub fn at_ms(s: &str) -> i64 {
        crate::store::ms(at(s))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{at, at_ms};
    use super::*;

    #[test]
    fn a_pending_job_is_never_stopped_by_the_deadline_only_by_its_start_window() {
        let deadline = at_ms("2026-03-01T02:00:00Z");
        let long_after = at("2026-03-02T00:00:00Z");
        assert_eq!(check_deadline(State::Pending, long_after, deadline), Ok(()));
    }

    #[test]
    fn every_open_state_after_pending_stops_one_millisecond_past_the_deadline() {
        let deadline = at_ms("2026-03-01T02:00:00Z");
        let on_time = at("2026-03-01T02:00:00Z");
        let late = at("2026-03-01T02:00:00.001Z");
        for state in [
            State::Requested,
            State::Snapshotting,
            State::Transferring,
            State::Verifying,
        ] {
            assert_eq!(check_deadline(state, on_time, deadline), Ok(()), "{state}");
            assert_eq!(
                check_deadline(state, late, deadline),
                Err(DeadlineExceeded {
                    deadline_at: deadline
                }),
                "{state}"
            );
        }
    }

    #[test]
    fn the_deadline_is_compared_in_whole_milliseconds_as_the_journal_stores_it() {
        let deadline = at_ms("2026-03-01T02:00:00Z");
        // Half a millisecond late still reads as the deadline's own millisecond.
        let within_the_millisecond = at("2026-03-01T02:00:00.000500Z");
        assert_eq!(
            check_deadline(State::Transferring, within_the_millisecond, deadline),
            Ok(())
        );
    }

    #[test]
    fn the_deadline_message_names_the_setting_and_the_time_in_utc() {
        let late = DeadlineExceeded {
            deadline_at: at_ms("2026-03-01T02:00:00Z"),
        };
        assert_eq!(
            late.to_string(),
            "deadline exceeded: the job did not finish within completion_window (by 2026-03-01 02:00:00 UTC)"
        );
    }

    #[test]
    fn an_operators_cancel_request_stops_every_open_state_but_verifying() {
        for state in [
            State::Pending,
            State::Requested,
            State::Snapshotting,
            State::Transferring,
        ] {
            assert_eq!(next_move(state, true, false), Next::Cancel, "{state}");
        }
        // Every copy is written and verified: the job finishes, no verified copy is thrown away.
        assert_eq!(next_move(State::Verifying, true, false), Next::Step);
    }

    #[test]
    fn a_shutdown_without_a_cancel_request_interrupts_the_job_to_be_resumed_later() {
        for state in State::ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert_eq!(next_move(state, false, true), Next::Interrupt, "{state}");
            assert_eq!(next_move(state, false, false), Next::Step, "{state}");
        }
        assert_eq!(next_move(State::Verifying, true, true), Next::Interrupt);
    }

    #[test]
    fn a_cancel_request_outranks_a_shutdown_that_comes_at_the_same_time() {
        assert_eq!(next_move(State::Transferring, true, true), Next::Cancel);
    }

    #[test]
    fn a_terminal_job_reports_its_recorded_error_and_an_open_one_reports_nothing() {
        assert_eq!(
            terminal_outcome(State::Stored, Some("ignored")),
            Some(Outcome::Stored)
        );
        assert_eq!(
            terminal_outcome(State::Failed, Some("boom")),
            Some(Outcome::Failed("boom".into()))
        );
        assert_eq!(
            terminal_outcome(State::Missed, None),
            Some(Outcome::Missed(String::new()))
        );
        for open in State::ALL.into_iter().filter(|s| !s.is_terminal()) {
            assert_eq!(terminal_outcome(open, Some("x")), None, "{open}");
        }
    }
}

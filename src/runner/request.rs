//! `pending`: asking the provider for the backup (`CreateBackup` with `Desc = rdbvault:<job id>`)
//! at most once per send window.
//!
//! The send is journaled first (`create_sent_at`), so a job never sends it twice: after a crash
//! or an answer that leaves the outcome unknown, the job looks for its backup by token instead
//! (the snapshot phase). An answer saying the provider surely did nothing (409
//! `ResourceInUse`, a refused connection) is retried later, until the start window closes; then
//! the job is `missed`.
//!
//! [`start`] and [`classify`] are the decisions; [`request`] does the I/O around them.

use super::refusal::refuse;
use super::{Context, Step, Stop, sleep, utc};
use crate::cds;
use crate::job::{Event, State};
use crate::store::{JobRow, ms};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a pending job does now, before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// `CreateBackup` was sent by an earlier attempt (a crash or an unknown answer): look for the
    /// backup by its token, never send again.
    Resume,
    /// The start window has closed before a send.
    Miss,
    /// The provider refused an earlier send; its retry time has not come yet.
    Wait(Duration),
    /// Send `CreateBackup` now.
    Send,
}

/// Decides a pending job's step from its journal fields (Unix ms) and `now`.
pub(super) fn start(
    now: DateTime<Utc>,
    create_sent_at: Option<i64>,
    start_by: i64,
    next_attempt_at: Option<i64>,
) -> Start {
    let now = ms(now);
    if create_sent_at.is_some() {
        return Start::Resume;
    }
    if now > start_by {
        return Start::Miss;
    }
    match next_attempt_at {
        Some(next) if next > now => Start::Wait(Duration::from_millis((next - now) as u64)),
        _ => Start::Send,
    }
}

/// What a failed `CreateBackup` means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The provider certainly did not act and may accept it later: send again after a wait.
    NotApplied,
    /// The request may have reached the provider: find the backup by token, never resend.
    Unknown,
    /// A final refusal: the job fails.
    Final,
}

pub(super) fn classify(e: &cds::Error) -> Answer {
    if e.certainly_not_applied() && e.is_retryable() {
        Answer::NotApplied
    } else if e.is_retryable() {
        Answer::Unknown
    } else {
        Answer::Final
    }
}

/// How long to wait before sending again after a refusal: 15 s plus up to 15 s of jitter
/// (`jitter_secs`), so jobs refused together do not all come back in the same second.
pub(super) fn resend_wait(jitter_secs: u64) -> Duration {
    Duration::from_secs(15 + jitter_secs)
}

/// Whether a send at `at` is still inside the start window (`start_by`, Unix ms).
pub(super) fn within_start_window(at: DateTime<Utc>, start_by: i64) -> bool {
    ms(at) <= start_by
}

/// One step of a pending job: resume, miss, wait, or send `CreateBackup`.
pub(super) async fn request(ctx: &Context, job: &JobRow, cancel: &CancellationToken) -> Step {
    let now = ctx.now();
    // The uuid becomes part of every key and path of this instance's copies: refuse it before
    // the provider is asked for anything.
    crate::transfer::check_provider_id("instance_uuid", &job.instance_uuid)
        .map_err(|e| refuse(ctx, job, e.into()))?;
    match start(now, job.create_sent_at, job.start_by, job.next_attempt_at) {
        Start::Resume => {
            ctx.event(
                job,
                "resume",
                "CreateBackup was sent by an earlier attempt; looking for the backup by its token",
            )
            .await;
            ctx.store
                .advance(
                    &ctx.claim(job),
                    State::Pending,
                    Event::CreateAccepted,
                    ms(now),
                )
                .await?;
            Ok(())
        }
        Start::Miss => Err(Stop::Miss(format!(
            "could not start inside start_window (by {})",
            utc(job.start_by)
        ))),
        Start::Wait(wait) => sleep(wait, cancel).await,
        Start::Send => send(ctx, job, now).await,
    }
}

/// Journals the send, then sends, then journals what the answer means.
async fn send(ctx: &Context, job: &JobRow, now: DateTime<Utc>) -> Step {
    let claim = ctx.claim(job);
    // Before the call: a crash during it leaves a row that looks for the backup by token.
    ctx.store.mark_create_sent(&claim, ms(now)).await?;
    let token = job.token();
    let e = match ctx.cds.create_backup(&job.instance_uuid, &token).await {
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
            return Ok(());
        }
        Err(e) => e,
    };
    match classify(&e) {
        Answer::NotApplied => {
            let wait = resend_wait(fastrand::u64(0..15));
            let next = ctx.now() + chrono::Duration::from_std(wait).unwrap_or_default();
            // The send did not happen: forget it, so the next step may send again.
            ctx.store.clear_create_sent(&claim, ms(next)).await?;
            if !within_start_window(next, job.start_by) {
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
        Answer::Unknown => {
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
        Answer::Final => Err(Stop::Fail(anyhow::Error::new(e).context(format!(
            "CreateBackup for instance {} ({})",
            job.instance_uuid, job.instance_name
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{at, at_ms};
    use super::*;
    use crate::cds::error::ErrorKind;
    use crate::cds::{Action, Error};

    fn api_error(status: u16, code: &str) -> Error {
        Error::api(Action::CreateBackup, status, Some(code.into()), None)
    }

    #[test]
    fn a_job_that_sent_create_backup_before_never_sends_it_again() {
        // Even with its start window long closed: the backup may exist, so it is looked for.
        let start_by = at_ms("2026-03-01T01:00:00Z");
        assert_eq!(
            start(
                at("2026-03-01T05:00:00Z"),
                Some(at_ms("2026-03-01T00:59:00Z")),
                start_by,
                None
            ),
            Start::Resume
        );
    }

    #[test]
    fn a_job_that_never_sent_is_missed_once_the_start_window_has_closed() {
        let start_by = at_ms("2026-03-01T01:00:00Z");
        assert_eq!(
            start(at("2026-03-01T01:00:00Z"), None, start_by, None),
            Start::Send,
            "the last millisecond of the window still sends"
        );
        assert_eq!(
            start(at("2026-03-01T01:00:00.001Z"), None, start_by, None),
            Start::Miss
        );
    }

    #[test]
    fn a_refused_job_waits_until_its_retry_time_then_sends() {
        let start_by = at_ms("2026-03-01T01:00:00Z");
        let next = Some(at_ms("2026-03-01T00:10:20Z"));
        assert_eq!(
            start(at("2026-03-01T00:10:00Z"), None, start_by, next),
            Start::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            start(at("2026-03-01T00:10:20Z"), None, start_by, next),
            Start::Send
        );
    }

    #[test]
    fn a_refused_connection_or_a_409_is_sent_again_later() {
        assert_eq!(
            classify(&Error::new(Action::CreateBackup, ErrorKind::Connect)),
            Answer::NotApplied
        );
        assert_eq!(
            classify(&api_error(409, "ResourceInUse")),
            Answer::NotApplied
        );
    }

    #[test]
    fn a_timeout_or_a_server_error_may_have_created_the_backup_so_it_is_looked_for_by_token() {
        for e in [
            Error::new(Action::CreateBackup, ErrorKind::Timeout),
            Error::new(Action::CreateBackup, ErrorKind::Transport),
            api_error(500, "InternalError"),
        ] {
            assert_eq!(classify(&e), Answer::Unknown, "{e}");
        }
    }

    #[test]
    fn an_invalid_request_or_a_client_error_fails_the_job() {
        for e in [
            Error::new(Action::CreateBackup, ErrorKind::Request),
            Error::new(Action::CreateBackup, ErrorKind::Decode),
            api_error(400, "InvalidParameter"),
        ] {
            assert_eq!(classify(&e), Answer::Final, "{e}");
        }
    }

    #[test]
    fn a_resend_after_a_refusal_waits_fifteen_to_thirty_seconds() {
        assert_eq!(resend_wait(0), Duration::from_secs(15));
        assert_eq!(resend_wait(14), Duration::from_secs(29));
    }

    #[test]
    fn a_resend_is_allowed_up_to_the_last_millisecond_of_the_start_window() {
        let start_by = at_ms("2026-03-01T01:00:00Z");
        assert!(within_start_window(at("2026-03-01T01:00:00Z"), start_by));
        assert!(!within_start_window(
            at("2026-03-01T01:00:00.001Z"),
            start_by
        ));
    }
}

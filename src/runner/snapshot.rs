//! `requested`/`snapshotting`: following the provider's work with `DescribeBackups` until every
//! record carrying the job's token is finished, and the same set twice in a row.
//!
//! One `DescribeBackups` per poll, with backoff ([`Polling`]). What one answer means is
//! [`assess`]; a stable set is vetted (`refusal::vet_records`) and becomes the job's shard rows.
//! No record with the token after a bounded search ([`token_search_window`],
//! [`after_not_found`]) means `CreateBackup` did not take effect: it is sent again, or the job
//! fails once its start window has closed.

use super::refusal::{SizeLimits, refuse, vet_records};
use super::{Context, Step, Stop, sleep, utc};
use crate::cds::model::Backup;
use crate::job::{Event, State};
use crate::services::PollSettings;
use crate::store::{JobRow, ShardRow, ms};
use anyhow::anyhow;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the phase remembers between polls of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Polling {
    /// The next wait while the provider works; doubles up to `poll.max`.
    backoff: Duration,
    /// The sorted ids of a finished set seen once, awaiting its confirming look.
    last_seen: Option<Vec<String>>,
    /// The last poll wrote nothing to the job's row (the provider is still working), so the
    /// row the step loop read before it is still the job's: no need to read it again.
    pub(super) row_unchanged: bool,
}

impl Polling {
    pub(super) fn new(poll: &PollSettings) -> Polling {
        Polling {
            backoff: poll.initial,
            last_seen: None,
            row_unchanged: false,
        }
    }

    /// How long to sleep before the next `DescribeBackups`: `poll.initial` while a finished set
    /// awaits its confirming look (it is done; only its stability is in question), else the
    /// backoff, which then doubles up to `poll.max`.
    pub(super) fn next_wait(&mut self, poll: &PollSettings) -> Duration {
        if self.last_seen.is_some() {
            return poll.initial;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(poll.max);
        wait
    }
}

/// What one `DescribeBackups` answer says about the job's backup.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// No record carries the token.
    NotFound,
    /// The provider reports a record as failed (the first one it lists).
    Failed { backup_id: String, status: String },
    /// Records exist, not all finished.
    Running { records: usize },
    /// All finished, but not the set the last poll saw: look once more, so a cluster's last
    /// shard record appearing late is not missed. Carries the sorted ids to remember.
    Unconfirmed(Vec<String>),
    /// All finished, and the same set as the last poll: the records, in the provider's order.
    Stable(Vec<Backup>),
}

/// Judges one answer: the records carrying `token`, against the set the last poll saw finished.
pub(super) fn assess(records: Vec<Backup>, token: &str, last_seen: Option<&[String]>) -> Verdict {
    let mine: Vec<Backup> = records.into_iter().filter(|b| b.desc == token).collect();
    if mine.is_empty() {
        return Verdict::NotFound;
    }
    if let Some(bad) = mine.iter().find(|b| b.is_failed()) {
        return Verdict::Failed {
            backup_id: bad.backup_id.clone(),
            status: bad.status.clone(),
        };
    }
    if !mine.iter().all(Backup::is_finished) {
        return Verdict::Running {
            records: mine.len(),
        };
    }
    let mut ids: Vec<String> = mine.iter().map(|b| b.backup_id.clone()).collect();
    ids.sort();
    if last_seen != Some(ids.as_slice()) {
        return Verdict::Unconfirmed(ids);
    }
    Verdict::Stable(mine)
}

/// The shard row a finished record becomes: waiting for its transfer.
fn shard_row(job_id: &str, b: &Backup) -> ShardRow {
    ShardRow {
        provider_start: b.start_time.clone(),
        provider_end: b.end_time.clone(),
        ..ShardRow::waiting(job_id, &b.backup_id, b.backup_size.map(|s| s as i64))
    }
}

/// How long a job looks for its token before it concludes `CreateBackup` did not take effect: a
/// few polls (at least 10 s), at most `not_found_grace` and a third of the start window
/// (`due_at`..`start_by`, Unix ms), so a resend still starts in time.
pub(super) fn token_search_window(poll: &PollSettings, due_at: i64, start_by: i64) -> Duration {
    let start_window = Duration::from_millis((start_by - due_at).max(0) as u64);
    (poll.max * 3)
        .max(Duration::from_secs(10))
        .min(poll.not_found_grace)
        .min(start_window / 3)
}

/// What a poll that found no record with the token leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotFound {
    /// Still inside the search window: poll again.
    KeepLooking,
    /// The send surely did not take effect and there is time: send `CreateBackup` again.
    Resend,
    /// Too late to send again (the start window has closed), or the records vanished after
    /// they were seen (`snapshotting`): the job fails.
    GiveUp,
}

/// Decides after a poll without the token, `since` (Unix ms) being the last send.
pub(super) fn after_not_found(
    now: DateTime<Utc>,
    since: i64,
    window: Duration,
    state: State,
    start_by: i64,
) -> NotFound {
    let now = ms(now);
    if now - since <= window.as_millis() as i64 {
        NotFound::KeepLooking
    } else if state != State::Requested || now > start_by {
        NotFound::GiveUp
    } else {
        NotFound::Resend
    }
}

/// One poll, then the wait before the next one unless the job moved on.
pub(super) async fn poll(
    ctx: &Context,
    job: &JobRow,
    polling: &mut Polling,
    cancel: &CancellationToken,
) -> Step {
    polling.row_unchanged = false;
    if describe(ctx, job, &mut polling.last_seen).await? {
        return Ok(());
    }
    // Still working; `describe` moved the row only from `requested` to `snapshotting`.
    polling.row_unchanged = job.state == State::Snapshotting;
    sleep(polling.next_wait(&ctx.poll), cancel).await
}

/// One `DescribeBackups`. `Ok(false)` means "not yet" (the caller sleeps); `Ok(true)`: the job
/// moved on (to `transferring` with a finished, stable set, or back to `pending` to resend).
async fn describe(
    ctx: &Context,
    job: &JobRow,
    last_seen: &mut Option<Vec<String>>,
) -> Result<bool, Stop> {
    let records = match ctx.cds.describe_backups(&job.instance_uuid).await {
        Ok(r) => r,
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "DescribeBackups failed; polling again");
            return Ok(false);
        }
        Err(e) => return Err(Stop::Fail(anyhow::Error::new(e).context("DescribeBackups"))),
    };
    let now = ctx.now();
    match assess(records, &job.token(), last_seen.as_deref()) {
        Verdict::NotFound => token_not_found(ctx, job, now).await,
        Verdict::Failed { backup_id, status } => Err(Stop::Fail(anyhow!(
            "the provider reports backup {backup_id} of instance {} as {status:?}",
            job.instance_uuid,
        ))),
        Verdict::Running { records } => {
            if job.state == State::Requested {
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
                    &format!("provider is making {records} backup record(s)"),
                )
                .await;
            }
            *last_seen = None;
            Ok(false)
        }
        Verdict::Unconfirmed(ids) => {
            *last_seen = Some(ids);
            Ok(false)
        }
        Verdict::Stable(records) => finished(ctx, job, &records).await.map(|()| true),
    }
}

/// A finished, stable set: vetted, journaled as the job's shards, and the job moves to
/// `transferring`.
async fn finished(ctx: &Context, job: &JobRow, records: &[Backup]) -> Step {
    vet_records(records, SizeLimits::of(ctx, job)).map_err(|r| refuse(ctx, job, r))?;
    let rows: Vec<ShardRow> = records.iter().map(|b| shard_row(&job.id, b)).collect();
    let claim = ctx.claim(job);
    ctx.store.insert_shards(&claim, &rows).await?;
    let from = job.state;
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
    Ok(())
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
    let window = token_search_window(&ctx.poll, job.due_at, job.start_by);
    let decision = after_not_found(now, since, window, job.state, job.start_by);
    if decision == NotFound::KeepLooking {
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
    if decision == NotFound::GiveUp {
        return Err(Stop::Fail(anyhow!(
            "CreateBackup was sent {} time(s) and no backup with Desc {token} appeared at the provider (searched {}s after the last send); the start window closed at {}; last answer: {cause}",
            job.attempts,
            window.as_secs(),
            utc(job.start_by)
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{at, at_ms};
    use super::*;
    use crate::clock::{Clock as _, ManualClock};

    const TOKEN: &str = "rdbvault:job-1";

    fn record(id: &str, desc: &str, status: &str) -> Backup {
        Backup {
            backup_id: id.into(),
            desc: desc.into(),
            status: status.into(),
            backup_size: Some(4096),
            ..Backup::default()
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn poll_settings() -> PollSettings {
        PollSettings {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
            not_found_grace: Duration::from_secs(15 * 60),
        }
    }

    #[test]
    fn records_without_the_token_are_not_the_jobs() {
        let records = vec![
            record("a", "rdbvault:job-2", "finished"),
            record("b", "", "finished"),
        ];
        assert_eq!(assess(records, TOKEN, None), Verdict::NotFound);
    }

    #[test]
    fn a_failed_record_fails_the_set_whatever_the_others_say() {
        for spelling in ["failed", "Error", "FAIL"] {
            let records = vec![
                record("a", TOKEN, "finished"),
                record("b", TOKEN, "running"),
                record("c", TOKEN, spelling),
            ];
            assert_eq!(
                assess(records, TOKEN, Some(&ids(&["a", "b", "c"]))),
                Verdict::Failed {
                    backup_id: "c".into(),
                    status: spelling.into()
                }
            );
        }
    }

    #[test]
    fn a_set_with_an_unfinished_record_is_still_running() {
        let records = vec![
            record("a", TOKEN, "finished"),
            record("b", TOKEN, "running"),
            record("x", "other", "running"),
        ];
        assert_eq!(
            assess(records, TOKEN, None),
            Verdict::Running { records: 2 }
        );
    }

    #[test]
    fn a_finished_set_is_taken_only_when_two_polls_in_a_row_see_the_same_ids() {
        let first = vec![
            record("b", TOKEN, "finished"),
            record("a", TOKEN, "finished"),
        ];
        assert_eq!(
            assess(first.clone(), TOKEN, None),
            Verdict::Unconfirmed(ids(&["a", "b"])),
            "seen once: remembered, sorted"
        );
        // A late third shard record changes the set: it must be confirmed again.
        let mut grown = first.clone();
        grown.push(record("c", TOKEN, "finished"));
        assert_eq!(
            assess(grown, TOKEN, Some(&ids(&["a", "b"]))),
            Verdict::Unconfirmed(ids(&["a", "b", "c"]))
        );
        // The same ids in another order are the same set; the provider's order is kept.
        assert_eq!(
            assess(first.clone(), TOKEN, Some(&ids(&["a", "b"]))),
            Verdict::Stable(first)
        );
    }

    #[test]
    fn the_poll_backoff_doubles_up_to_poll_max() {
        let poll = poll_settings();
        let mut polling = Polling::new(&poll);
        let waits: Vec<u64> = (0..7).map(|_| polling.next_wait(&poll).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_finished_set_awaiting_confirmation_is_looked_at_again_after_poll_initial() {
        let poll = poll_settings();
        let mut polling = Polling::new(&poll);
        for _ in 0..4 {
            polling.next_wait(&poll);
        }
        polling.last_seen = Some(ids(&["a"]));
        assert_eq!(polling.next_wait(&poll), poll.initial);
        assert_eq!(
            polling.next_wait(&poll),
            poll.initial,
            "and the backoff is left alone"
        );
        polling.last_seen = None;
        assert_eq!(polling.next_wait(&poll), Duration::from_secs(30));
    }

    #[test]
    fn the_token_search_lasts_a_few_polls_but_at_most_the_grace_and_a_third_of_the_start_window() {
        let poll = poll_settings();
        let due = at_ms("2026-03-01T00:00:00Z");
        let window = |start_by: &str| token_search_window(&poll, due, at_ms(start_by));
        // Three polls at poll.max.
        assert_eq!(window("2026-03-01T06:00:00Z"), Duration::from_secs(90));
        // A third of a one-minute start window.
        assert_eq!(window("2026-03-01T00:01:00Z"), Duration::from_secs(20));
        // No start window at all: no search (a resend could not start in time anyway).
        assert_eq!(window("2026-03-01T00:00:00Z"), Duration::ZERO);
        // A short poll.max still searches at least 10 s; a short grace caps it.
        let fast = PollSettings {
            max: Duration::from_secs(1),
            ..poll
        };
        assert_eq!(
            token_search_window(&fast, due, at_ms("2026-03-01T06:00:00Z")),
            Duration::from_secs(10)
        );
        let impatient = PollSettings {
            not_found_grace: Duration::from_secs(45),
            ..poll
        };
        assert_eq!(
            token_search_window(&impatient, due, at_ms("2026-03-01T06:00:00Z")),
            Duration::from_secs(45)
        );
    }

    #[test]
    fn a_missing_token_is_looked_for_until_the_search_window_ends_then_create_backup_is_resent() {
        let sent = at("2026-03-01T00:00:00Z");
        let start_by = at_ms("2026-03-01T01:00:00Z");
        let window = Duration::from_secs(90);
        let clock = ManualClock::new(sent);
        let decide = |now| after_not_found(now, ms(sent), window, State::Requested, start_by);
        clock.advance(chrono::Duration::seconds(90));
        assert_eq!(decide(clock.now()), NotFound::KeepLooking, "inclusive");
        clock.advance(chrono::Duration::milliseconds(1));
        assert_eq!(decide(clock.now()), NotFound::Resend);
    }

    #[test]
    fn a_missing_token_after_the_start_window_closed_fails_instead_of_resending() {
        let sent = at_ms("2026-03-01T00:00:00Z");
        let start_by = at_ms("2026-03-01T00:01:00Z");
        let window = Duration::from_secs(20);
        assert_eq!(
            after_not_found(
                at("2026-03-01T00:01:00.001Z"),
                sent,
                window,
                State::Requested,
                start_by
            ),
            NotFound::GiveUp
        );
    }

    #[test]
    fn records_that_vanish_after_they_were_seen_fail_the_job_and_are_never_resent() {
        let sent = at_ms("2026-03-01T00:00:00Z");
        let start_by = at_ms("2026-03-01T01:00:00Z");
        assert_eq!(
            after_not_found(
                at("2026-03-01T00:05:00Z"),
                sent,
                Duration::from_secs(90),
                State::Snapshotting,
                start_by
            ),
            NotFound::GiveUp
        );
    }

    #[test]
    fn a_finished_record_becomes_a_waiting_shard_row_with_its_announced_size() {
        let mut b = record("b-1", TOKEN, "finished");
        b.start_time = "2026-03-01 00:00:01".into();
        b.end_time = "2026-03-01 00:00:09".into();
        let row = shard_row("job-1", &b);
        assert_eq!(
            (
                row.job_id.as_str(),
                row.backup_id.as_str(),
                row.state.as_str()
            ),
            ("job-1", "b-1", "waiting")
        );
        assert_eq!(row.size, Some(4096));
        assert_eq!(row.provider_start, "2026-03-01 00:00:01");
        assert_eq!(row.provider_end, "2026-03-01 00:00:09");
        assert_eq!((row.bytes_done, row.object_key), (0, None));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn the_poll_backoff_never_exceeds_poll_max_and_never_shrinks(
                initial_ms in 1u64..60_000,
                max_ms in 1u64..600_000,
                polls in 1usize..40,
            ) {
                let poll = PollSettings {
                    initial: Duration::from_millis(initial_ms),
                    max: Duration::from_millis(max_ms),
                    not_found_grace: Duration::from_secs(900),
                };
                let mut polling = Polling::new(&poll);
                let waits: Vec<Duration> = (0..polls).map(|_| polling.next_wait(&poll)).collect();
                // The first wait is poll.initial as configured; every later one is capped by
                // poll.max, and from then on none is shorter than the one before.
                prop_assert_eq!(waits[0], poll.initial);
                for (i, w) in waits.iter().enumerate().skip(1) {
                    prop_assert!(*w <= poll.max);
                    if i > 1 {
                        prop_assert!(*w >= waits[i - 1]);
                    }
                }
            }
        }
    }
}

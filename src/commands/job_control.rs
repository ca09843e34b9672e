//! `jobs cancel ID` and `jobs retry ID`: an operator's say over one job.
//!
//! **Cancel** works whoever runs the job, on whichever host shares the state DB. It records the
//! request in the job's row (`Store::request_cancel`); the process that owns the job reads it
//! before each step and, during a step, a watch cancels the job's own token, so the job stops
//! at its next safe point and is recorded `failed` (`cancelled by operator`) through its claim,
//! with the failure's cleanup (open multipart uploads aborted, `.partial` files removed). A job
//! no live process owns (pending and unclaimed, or its owner's heartbeat older than
//! `state.job_lease`) is claimed here and stopped the same way by the runner in this process.
//! The command waits (at most [`CANCEL_WAIT`]) until the job has ended and says how.
//!
//! **Retry** creates a new job (trigger `retry`, due now) for a failed or missed one; the
//! daemon's dispatcher picks it up.

use super::status::probe_daemon;
use crate::config::Config;
use crate::failure::Failure;
use crate::job::State;
use crate::runner::CANCELLED_BY_OPERATOR;
use crate::store::jobs::Inserted;
use crate::store::{JobRow, Store, from_ms, ms};
use crate::views::status::DaemonState;
use anyhow::anyhow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long `jobs cancel` waits for the job to end.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// How often it looks.
const CANCEL_LOOK_EVERY: Duration = Duration::from_millis(250);

/// Opens the state DB to write to it, but never creates one: a job id cannot name anything in
/// a DB that does not exist yet (exit 2, naming the path).
async fn open_existing(cfg: &Config) -> Result<Store, Failure> {
    if cfg.state.url.is_none() && !cfg.state.path.exists() {
        let missing = crate::store::Error::Missing {
            path: cfg.state.path.clone(),
        };
        return Err(Failure::Usage(format!(
            "{}: state.path: {missing}",
            cfg.source.display()
        )));
    }
    Ok(Store::connect(&cfg.state).await?)
}

/// A journal time (Unix ms) as RFC 3339 in UTC, to the second.
fn rfc3339(at_ms: i64) -> String {
    from_ms(at_ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `name (uuid)` of a job's instance, or the uuid alone.
fn instance_label(job: &JobRow) -> String {
    if job.instance_name.is_empty() {
        job.instance_uuid.clone()
    } else {
        format!("{} ({})", job.instance_name, job.instance_uuid)
    }
}

/// Why a job cannot be cancelled: it has ended already.
fn not_open(job: &JobRow) -> String {
    let rdbvault = crate::config::invocation();
    let when = job
        .finished_at
        .map(|t| format!(" at {}", rfc3339(t)))
        .unwrap_or_default();
    let next = match job.state {
        State::Failed | State::Missed => {
            format!("; `{rdbvault} jobs retry {}` runs it again", job.id)
        }
        _ => String::new(),
    };
    format!(
        "job {} already ended {}{when}; only an open job can be cancelled{next}",
        job.id, job.state
    )
}

/// Why a job cannot be retried, or `None` when it can: only a failed or missed job is run
/// again; an open one is still running (cancel it first), a stored one has its copy.
pub(super) fn retry_refusal(job: &JobRow) -> Option<String> {
    let rdbvault = crate::config::invocation();
    match job.state {
        State::Failed | State::Missed => None,
        State::Stored => Some(format!(
            "job {} is stored: it has its verified copy, so there is nothing to retry; `{rdbvault} backup-now --policy {} --instance {}` makes a new backup now",
            job.id, job.policy, job.instance_uuid
        )),
        open => Some(format!(
            "job {} is still {open}: only a failed or missed job can be retried; let it finish, or stop it first with `{rdbvault} jobs cancel {}`",
            job.id, job.id
        )),
    }
}

/// `jobs cancel ID`.
pub async fn cancel(cfg: &Config, id: &str) -> Result<(), Failure> {
    let store = open_existing(cfg).await?;
    let job = store
        .find_job(id)
        .await
        .map_err(super::jobs::lookup_failure)?;
    if job.state.is_terminal() {
        return Err(Failure::Usage(not_open(&job)));
    }
    let now = crate::clock::wall_now();
    let Some(requested_at) = store.request_cancel(&job.id, ms(now)).await? else {
        // It ended between the read and the request.
        return Err(Failure::Usage(not_open(&store.job(&job.id).await?)));
    };
    if requested_at == ms(now) {
        store
            .add_event(
                &job.id,
                requested_at,
                "cancel-requested",
                "an operator asked to cancel the job (`rdbvault jobs cancel`); it stops at its next safe point and is recorded failed",
            )
            .await?;
    }
    eprintln!(
        "cancel {} for job {} (policy `{}`, instance {}, {})",
        if requested_at == ms(now) {
            "requested".to_string()
        } else {
            format!("already requested at {}", rfc3339(requested_at))
        },
        job.id,
        job.policy,
        instance_label(&job),
        job.state
    );
    let owner = crate::services::owner_id("cancel");
    let end = wait_for_end(cfg, &store, &job, &owner).await;
    store.close().await;
    report(&job, requested_at, end?)
}

/// How the wait for a cancelled job ended.
struct Ended {
    row: JobRow,
    /// The multipart uploads its cleanup aborted (from its event log).
    aborted: Vec<String>,
}

/// Waits until the job has ended, at most [`CANCEL_WAIT`], printing each state it passes.
/// Whenever no live process owns it, claims it and stops it here.
async fn wait_for_end(
    cfg: &Config,
    store: &Store,
    job: &JobRow,
    owner: &str,
) -> Result<Ended, Failure> {
    let rdbvault = crate::config::invocation();
    let started = Instant::now();
    let mut said: Option<(State, Option<String>)> = None;
    loop {
        let now = crate::clock::wall_now();
        let lease = chrono::Duration::from_std(cfg.state.job_lease).unwrap_or_default();
        let row = if store
            .claim_job(&job.id, owner, ms(now), ms(now - lease))
            .await?
        {
            eprintln!("{}", unowned_note(&store.job(&job.id).await?, cfg));
            stop_here(cfg, store, &job.id, owner).await?
        } else {
            store.job(&job.id).await?
        };
        if row.state.is_terminal() {
            let aborted = store
                .events(&job.id)
                .await?
                .into_iter()
                .filter(|e| e.kind == "upload-aborted")
                .map(|e| e.message)
                .collect();
            return Ok(Ended { row, aborted });
        }
        let now_saying = (row.state, row.owner.clone());
        if said.as_ref() != Some(&now_saying) {
            eprintln!(
                "waiting for {} to stop it at its next safe point (now {})",
                row.owner.as_deref().unwrap_or("its owner"),
                row.state
            );
            said = Some(now_saying);
        }
        if started.elapsed() >= CANCEL_WAIT {
            return Err(Failure::Runtime(anyhow!(
                "job {} did not stop within {}s: it is still {}, run by {}; the cancel request stays recorded and it stops at its next safe point (a step in progress, such as a CreateBackup call, ends first); follow it with `{rdbvault} jobs show {}`",
                row.id,
                CANCEL_WAIT.as_secs(),
                row.state,
                row.owner.as_deref().unwrap_or("no process"),
                row.id
            )));
        }
        tokio::time::sleep(CANCEL_LOOK_EVERY).await;
    }
}

/// Why this command stops the job itself.
fn unowned_note(row: &JobRow, cfg: &Config) -> String {
    format!(
        "no live process owns job {} ({}): no owner, or its heartbeat is older than state.job_lease {}; stopping it here",
        row.id,
        row.state,
        crate::config::units::format_duration(cfg.state.job_lease)
    )
}

/// Runs the job this process has just claimed: the runner reads the cancel request before its
/// first step and fails the job with the failure's cleanup (or, in `verifying`, finishes it:
/// its copies are written and verified). Needs the config's destinations for the cleanup; if
/// they cannot be set up, the job is handed back and the request stays for the next owner.
async fn stop_here(cfg: &Config, store: &Store, id: &str, owner: &str) -> Result<JobRow, Failure> {
    let rdbvault = crate::config::invocation();
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let setup = crate::services::around(
        Arc::new(cfg.clone()),
        store.clone(),
        metrics,
        owner.to_string(),
        Arc::default(),
    )
    .await;
    let ctx = match setup {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = store.release_job(id, owner).await;
            let why = Failure::from(e);
            let text = format!(
                "cannot stop job {id} here: {why}; the cancel request stays recorded: the next process that runs the job (`{rdbvault} run`) stops it, or fix this and run `{rdbvault} jobs cancel {id}` again"
            );
            return Err(match why {
                Failure::Runtime(_) => Failure::Runtime(anyhow!(text)),
                _ => Failure::Usage(text),
            });
        }
    };
    let beat = tokio_util::sync::CancellationToken::new();
    let heartbeat = tokio::spawn(crate::daemon::heartbeat(ctx.clone(), beat.clone()));
    crate::runner::run_job(&ctx, id, &tokio_util::sync::CancellationToken::new()).await;
    beat.cancel();
    let _ = heartbeat.await;
    Ok(store.job(id).await?)
}

/// The result of `jobs cancel`: exit 0 once the job has stopped (cancelled, or it had failed
/// or been missed on its own meanwhile), 1 if it was stored before the cancel took effect.
fn report(job: &JobRow, requested_at: i64, ended: Ended) -> Result<(), Failure> {
    let Ended { row, aborted } = ended;
    let error = row.error.as_deref().unwrap_or("");
    match row.state {
        State::Failed if error == CANCELLED_BY_OPERATOR => {
            outln!("job {} cancelled: failed, {error}", row.id);
            for a in aborted {
                outln!("  {a}");
            }
            outln!(
                "  stored copies and the provider's backup were not touched: retention decides about them"
            );
            Ok(())
        }
        State::Failed | State::Missed => {
            outln!(
                "job {} ended {} before the cancel took effect: {error}",
                row.id,
                row.state
            );
            Ok(())
        }
        _ => Err(Failure::Runtime(anyhow!(
            "job {} was {} before the cancel took effect (requested at {}, it was {}): its copies were already written and verified, and are kept",
            row.id,
            row.state,
            rfc3339(requested_at),
            job.state
        ))),
    }
}

/// `jobs retry ID`.
pub async fn retry(cfg: &Config, id: &str) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    let store = open_existing(cfg).await?;
    let job = store
        .find_job(id)
        .await
        .map_err(super::jobs::lookup_failure)?;
    if let Some(why) = retry_refusal(&job) {
        return Err(Failure::Usage(why));
    }
    let Some(policy) = cfg.policies.iter().find(|p| p.name == job.policy) else {
        return Err(Failure::Usage(format!(
            "job {} belongs to policy `{}`, which is no longer in {}; only a configured policy's job can run again",
            job.id,
            job.policy,
            cfg.source.display()
        )));
    };
    if !cfg.destinations.contains_key(&job.destination) {
        return Err(Failure::Usage(format!(
            "job {} was made for destination `{}`, which is no longer in {}; `{rdbvault} backup-now --policy {} --instance {}` backs the instance up to the policy's destination now",
            job.id,
            job.destination,
            cfg.source.display(),
            job.policy,
            job.instance_uuid
        )));
    }
    let now = crate::clock::wall_now();
    let new = crate::scheduler::retry_of(policy, &job, now);
    if let Inserted::InstanceBusy { open_job } = store.insert_job_if_instance_idle(&new).await? {
        return Err(Failure::Skipped(busy(&store, &job, &open_job).await));
    }
    let why = job
        .error
        .as_deref()
        .and_then(|e| e.lines().next())
        .unwrap_or("");
    store
        .add_event(
            &new.id,
            ms(now),
            "retry",
            &format!("a retry of job {} ({}: {why})", job.id, job.state),
        )
        .await?;
    store
        .add_event(
            &job.id,
            ms(now),
            "retried",
            &format!("run again as job {}", new.id),
        )
        .await?;
    store.close().await;
    outln!(
        "job {} created: a retry of {} (policy `{}`, instance {}), due now",
        new.id,
        job.id,
        job.policy,
        instance_label(&job)
    );
    let daemon = probe_daemon(cfg).await;
    match daemon.state {
        DaemonState::Ready | DaemonState::NotReady => outln!(
            "the daemon at {} picks it up; follow it with `{rdbvault} jobs show {}`",
            daemon.address,
            new.id
        ),
        DaemonState::Unreachable => outln!(
            "no daemon answers at {} ({}), so nothing runs it yet: it waits for `{rdbvault} run` (and is recorded missed if nothing starts it by {}, the policy's start_window).\nTo back the instance up in the foreground instead: {rdbvault} jobs cancel {} && {rdbvault} backup-now --policy {} --instance {}",
            daemon.address,
            daemon.detail,
            rfc3339(new.start_by),
            new.id,
            job.policy,
            job.instance_uuid
        ),
    }
    Ok(())
}

/// Why a retry was refused: the instance has an open job (named, with its state).
async fn busy(store: &Store, job: &JobRow, open_job: &str) -> String {
    let rdbvault = crate::config::invocation();
    let what = match store.job(open_job).await {
        Ok(o) => format!("{open_job} ({}, policy `{}`)", o.state, o.policy),
        Err(_) => open_job.to_string(),
    };
    format!(
        "instance {} already has an open job {what}; one job per instance runs at a time, so no retry was created: wait for it to end, or stop it with `{rdbvault} jobs cancel {open_job}`, then retry again",
        instance_label(job)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::exit;

    fn job(state: State) -> JobRow {
        JobRow {
            id: "0190a1b2".into(),
            policy: "nightly".into(),
            instance_uuid: "5d74bb81".into(),
            instance_name: "prod-cache".into(),
            destination: "archive".into(),
            trigger: "schedule".into(),
            state,
            finished_at: Some(1_700_000_000_000),
            error: Some(CANCELLED_BY_OPERATOR.into()),
            ..JobRow::blank()
        }
    }

    fn ended(row: JobRow) -> Ended {
        Ended {
            row,
            aborted: Vec::new(),
        }
    }

    #[test]
    fn a_failed_or_missed_job_can_be_retried() {
        assert_eq!(retry_refusal(&job(State::Failed)), None);
        assert_eq!(retry_refusal(&job(State::Missed)), None);
    }

    #[test]
    fn an_open_job_cannot_be_retried_and_the_refusal_says_how_to_stop_it() {
        for state in State::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let why = retry_refusal(&job(state)).expect("refused");
            assert!(why.contains(&format!("is still {state}")), "{why}");
            assert!(why.contains("rdbvault jobs cancel 0190a1b2"), "{why}");
        }
    }

    #[test]
    fn a_stored_job_cannot_be_retried_and_the_refusal_offers_backup_now() {
        let why = retry_refusal(&job(State::Stored)).expect("refused");
        assert!(
            why.contains("rdbvault backup-now --policy nightly --instance 5d74bb81"),
            "{why}"
        );
    }

    #[test]
    fn cancelling_an_ended_job_names_its_state_and_offers_a_retry_when_it_failed() {
        let why = not_open(&job(State::Failed));
        assert!(
            why.starts_with("job 0190a1b2 already ended failed at "),
            "{why}"
        );
        assert!(
            why.ends_with("`rdbvault jobs retry 0190a1b2` runs it again"),
            "{why}"
        );
        assert!(!not_open(&job(State::Stored)).contains("retry"));
    }

    #[test]
    fn a_job_failed_by_its_cancel_is_success_and_one_stored_meanwhile_is_not() {
        assert!(report(&job(State::Transferring), 0, ended(job(State::Failed))).is_ok());
        let other = JobRow {
            error: Some("checksum mismatch".into()),
            ..job(State::Failed)
        };
        assert!(report(&job(State::Transferring), 0, ended(other)).is_ok());
        let stored = report(&job(State::Verifying), 0, ended(job(State::Stored))).unwrap_err();
        assert_eq!(stored.exit_code(), exit::RUNTIME);
        assert!(stored.to_string().contains("are kept"), "{stored}");
    }
}

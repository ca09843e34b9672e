//! The job dispatcher: claims due jobs from the state DB and runs each in its own task, at
//! most `limits.max_concurrent_jobs` at once per process.

use crate::runner::Outcome;
use crate::services::Context;
use crate::store::ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Claims due jobs and runs them, at most `max_concurrent_jobs` at once, until `cancel`.
///
/// `cancel` stops the dispatch loop (at shutdown or a config reload); running jobs are
/// children of `jobs_cancel`, so a reload lets them finish. `running` is shared across reloads
/// so a new dispatcher never starts a job the old one is still running.
pub async fn dispatch(
    ctx: Context,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    jobs_cancel: CancellationToken,
    tracker: TaskTracker,
    running: Arc<Mutex<std::collections::HashSet<String>>>,
) {
    let limit = ctx.config.limits.max_concurrent_jobs;
    loop {
        // Register for a wake-up before looking, so a job created meanwhile is not missed.
        let notified = wake.notified();
        let now = ctx.clock.now();
        let stale =
            now - chrono::Duration::from_std(ctx.config.state.job_lease).unwrap_or_default();
        match ctx.store.claimable_jobs(ms(now), ms(stale)).await {
            Ok(jobs) => {
                for job in jobs {
                    // cannot fail (here and below): the set's holders only look up, insert
                    // and remove, none of which panics, so the lock is never poisoned.
                    if running.lock().expect("running set").len() >= limit {
                        break;
                    }
                    if running.lock().expect("running set").contains(&job.id) {
                        continue;
                    }
                    match ctx
                        .store
                        .claim_job(&job.id, &ctx.owner, ms(now), ms(stale))
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot claim a job");
                            continue;
                        }
                    }
                    if job.owner.is_some() && job.owner.as_deref() != Some(ctx.owner.as_str()) {
                        tracing::info!(job_id = %job.id, policy = %job.policy, instance = %job.instance_uuid,
                            state = %job.state, "resuming a job left by a process that stopped");
                    }
                    running.lock().expect("running set").insert(job.id.clone());
                    let (ctx2, running2, wake2, cancel2) = (
                        ctx.clone(),
                        running.clone(),
                        wake.clone(),
                        jobs_cancel.child_token(),
                    );
                    tracker.spawn(async move {
                        let outcome = crate::runner::run_job(&ctx2, &job.id, &cancel2).await;
                        // Whatever the outcome: a new copy counts at once, and an instance whose
                        // first job failed is exported at 0. Retention (which may wait for the
                        // instance's DescribeBackups pacing) then recounts.
                        if let Err(e) = crate::reconcile::refresh_verified_gauge(&ctx2).await {
                            tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
                        }
                        if outcome == Outcome::Stored {
                            tracing::info!(job_id = %job.id, policy = %job.policy, instance = %job.instance_uuid, "job stored");
                            // A new verified copy may let retention drop an old one of this
                            // instance; the others have not changed.
                            super::maintenance::prune_policy_logged(&ctx2, &job.policy, Some(&job.instance_uuid)).await;
                        }
                        let _ = super::maintenance::refresh_job_gauge(&ctx2).await;
                        running2.lock().expect("running set").remove(&job.id);
                        wake2.notify_one();
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read due jobs"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

//! The daemon's periodic upkeep: the daily reconcile and prune, sampled re-verification, and
//! the gauges rebuilt from the state DB (at start, after each job, every few seconds).

use crate::services::Context;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rebuilds gauges from the state DB, so a restart never resets them to a default, and
/// creates every policy's counters at zero so each contract metric is exposed from the start.
pub async fn rebuild_gauges(ctx: &Context) -> anyhow::Result<()> {
    for p in &ctx.config.policies {
        let name = p.name.as_str();
        for location in ["destination", "provider"] {
            ctx.metrics
                .retention_deleted
                .with_label_values(&[name, location]);
        }
        ctx.metrics
            .retention_blocked
            .with_label_values(&[name, "max_deletions"]);
        ctx.metrics
            .schedule_skipped
            .with_label_values(&[name, "overlap"]);
        for field in ["instance_uuid", "backup_id", "shard_id", "backup_size"] {
            ctx.metrics
                .provider_values_rejected
                .with_label_values(&[name, field]);
        }
    }
    crate::reconcile::refresh_verified_gauge(ctx).await?;
    for job in ctx.store.last_finished().await? {
        let labels = [job.policy.as_str(), job.instance_uuid.as_str()];
        let at = job.finished_at.unwrap_or(job.created_at) as f64 / 1000.0;
        let g = &ctx.metrics.backup_last_attempt.with_label_values(&labels);
        if g.get() < at {
            g.set(at);
        }
        if job.state == crate::job::State::Stored {
            ctx.metrics
                .backup_last_success
                .with_label_values(&labels)
                .set(at);
            ctx.metrics
                .backup_last_size
                .with_label_values(&labels)
                .set(job.bytes as f64);
        }
    }
    refresh_job_gauge(ctx).await
}

/// Sets `rdbvault_jobs{state}` from the state DB.
pub async fn refresh_job_gauge(ctx: &Context) -> anyhow::Result<()> {
    let counts = ctx.store.count_jobs_by_state().await?;
    for state in crate::job::State::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == state.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0);
        ctx.metrics.jobs.with_label_values(&[state.as_str()]).set(n);
    }
    Ok(())
}

/// Prunes one policy (or one instance of it), logging instead of failing: retention problems
/// never stop the daemon.
pub async fn prune_policy_logged(ctx: &Context, policy_name: &str, instance: Option<&str>) {
    let Some(policy) = ctx.config.policies.iter().find(|p| p.name == policy_name) else {
        return;
    };
    // Runs for different instances touch different copies and may overlap; a whole-policy run
    // waits for them and keeps them out.
    let (_shared, _exclusive);
    if instance.is_some() {
        _shared = Some(ctx.prune_lock.read().await);
    } else {
        _exclusive = Some(ctx.prune_lock.write().await);
    }
    match crate::prune::prune_policy(ctx, policy, instance, crate::prune::Mode::Delete).await {
        Ok(report) => {
            let deleted = report
                .rows
                .iter()
                .filter(|r| matches!(r.deleted, Some(Ok(()))))
                .count();
            if deleted > 0 || report.failures() > 0 {
                tracing::info!(policy = %policy.name, deleted, failures = report.failures(), "retention applied");
            }
            for p in report.problems {
                tracing::warn!(policy = %policy.name, problem = %p, "retention could not plan a side");
            }
        }
        Err(e) => {
            tracing::error!(policy = %policy.name, error = %format!("{e:#}"), "retention failed")
        }
    }
    if let Err(e) = crate::reconcile::refresh_verified_gauge(ctx).await {
        tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
    }
}

/// Reconciles and prunes every policy once a day (and shortly after start).
pub async fn prune_daily(ctx: Context, cancel: CancellationToken) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match crate::reconcile::reconcile(&ctx).await {
            Ok(f) => tracing::info!(
                unknown_objects = f.unknown_objects.len(),
                missing = f.missing_copies.len(),
                unknown_provider_backups = f.unknown_provider_backups.len(),
                aborted_uploads = f.aborted_uploads.len(),
                "reconcile done"
            ),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "reconcile failed"),
        }
        for p in &ctx.config.policies {
            prune_policy_logged(&ctx, &p.name, None).await;
        }
        let _ = crate::reconcile::refresh_verified_gauge(&ctx).await;
        wait = Duration::from_secs(24 * 3600);
    }
}

/// Re-reads the least recently verified copies of each policy every `verify.interval`.
pub async fn reverify(ctx: Context, cancel: CancellationToken) {
    let interval = ctx.config.verify.interval;
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Ok(mut copies) = ctx.store.destination_copies().await else {
            continue;
        };
        copies.sort_by_key(|c| c.verified_at.unwrap_or(0));
        for policy in &ctx.config.policies {
            let sample: Vec<_> = copies
                .iter()
                .filter(|c| c.policy == policy.name)
                .take(ctx.config.verify.copies as usize)
                .cloned()
                .collect();
            let result = crate::verify::verify_copies(&ctx.store, &ctx.destinations, &ctx.clock, &sample, |c, r| match r {
                Ok(_) => tracing::info!(policy = %c.policy, instance = %c.instance_uuid, backup_id = %c.backup_id, "re-verified a stored copy"),
                Err(bad) => tracing::error!(policy = %c.policy, instance = %c.instance_uuid, backup_id = %c.backup_id, problem = %bad, "a stored copy failed re-verification"),
            })
            .await;
            if let Err(e) = result {
                tracing::error!(policy = %policy.name, error = %format!("{e:#}"), "re-verification failed to run");
            }
        }
        if let Err(e) = crate::reconcile::refresh_verified_gauge(&ctx).await {
            tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
        }
    }
}

/// How often the daemon recounts `rdbvault_verified_backups` from the state DB, on top of the
/// recount after each job: so it follows what other processes write there (`backup-now`,
/// `verify`, `prune`) and the instances each scheduled run selects.
pub const VERIFIED_GAUGE_EVERY: Duration = Duration::from_secs(15);

/// Recounts `rdbvault_verified_backups` every [`VERIFIED_GAUGE_EVERY`] until `cancel`.
pub async fn refresh_verified_gauge_loop(ctx: Context, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(VERIFIED_GAUGE_EVERY) => {}
        }
        if let Err(e) = crate::reconcile::refresh_verified_gauge(&ctx).await {
            tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
        }
    }
}

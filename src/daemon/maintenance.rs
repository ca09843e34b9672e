//! The daemon's periodic upkeep: the daily reconcile and prune, sampled re-verification, and
//! the gauges rebuilt from the state DB (at start, after each job, every few seconds).
//!
//! Several replicas may share the state DB: the upkeep that must not run twice at once runs
//! under a lease ([`with_lease`]; `store::leases`), renewed while the work goes on and
//! checked before every deletion (`Context::may_delete`), and the daily/interval work is
//! marked done for the fleet ([`run_shared`]), so whichever replica is up does it, once.

use crate::services::Context;
use crate::store::ms;
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
    refresh_fleet_gauges(ctx).await
}

/// Sets the gauges that describe the fleet rather than this process (last success, attempt
/// and size per instance, verified copies, jobs by state) from the state DB, so every replica
/// sharing it exports the same values, whichever ran the job, and a replica that is down takes
/// nothing away from the alerts.
pub async fn refresh_fleet_gauges(ctx: &Context) -> anyhow::Result<()> {
    crate::reconcile::refresh_verified_gauge(ctx).await?;
    for job in ctx.store.last_finished().await? {
        let labels = [job.policy.as_str(), job.instance_uuid.as_str()];
        let at = job.finished_at.unwrap_or(job.created_at) as f64 / 1000.0;
        let g = &ctx.metrics.backup_last_attempt.with_label_values(&labels);
        if g.get() < at {
            g.set(at);
        }
        if job.state != crate::job::State::Stored {
            continue;
        }
        // Never backwards: a job this process stored a moment ago already set them.
        let success = ctx.metrics.backup_last_success.with_label_values(&labels);
        if success.get() < at {
            success.set(at);
            ctx.metrics
                .backup_last_size
                .with_label_values(&labels)
                .set(job.bytes as f64);
        }
    }
    refresh_drill_gauges(ctx).await?;
    refresh_job_gauge(ctx).await
}

/// Sets the drill gauges from the journal of drills (whichever process ran them: a replica,
/// or `rdbvault drill` by hand). Never backwards.
async fn refresh_drill_gauges(ctx: &Context) -> anyhow::Result<()> {
    for t in ctx.store.drill_times().await? {
        let labels = [t.policy.as_str(), t.instance_uuid.as_str()];
        for (gauge, at) in [
            (&ctx.metrics.drill_last_success, t.last_restored_at),
            (&ctx.metrics.drill_last_failure, t.last_failed_at),
        ] {
            if let Some(at) = at {
                let g = gauge.with_label_values(&labels);
                if g.get() < at as f64 / 1000.0 {
                    g.set(at as f64 / 1000.0);
                }
            }
        }
    }
    Ok(())
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
            for r in &report.rows {
                if let Some(Err(why)) = &r.deleted {
                    tracing::warn!(policy = %policy.name, instance = %r.instance_uuid, set = %r.set, location = ?r.location, "{why}");
                }
            }
            for p in report.problems {
                tracing::warn!(policy = %policy.name, problem = %p, "retention could not plan a side");
            }
        }
        Err(e) => {
            tracing::error!(policy = %policy.name, error = %format!("{e:#}"), "retention failed")
        }
    }
    let recount = match instance {
        Some(i) => crate::reconcile::refresh_verified_gauge_of(ctx, &policy.name, i).await,
        None => crate::reconcile::refresh_verified_gauge(ctx).await,
    };
    if let Err(e) = recount {
        tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
    }
}

/// How long a lease of shared upkeep lasts unless renewed: `state.job_lease`, the time a
/// silent replica keeps any claim (jobs too); renewed every third of it while the work runs.
/// A replica that dies holding one frees it this long after.
pub fn work_lease(ctx: &Context) -> Duration {
    ctx.config.state.job_lease
}

/// Runs `work` holding the lease `name` (with a context whose deletions are fenced by it), or
/// returns `None` at once when another replica holds it. The lease is renewed while `work`
/// runs and released after.
pub async fn with_lease<T>(
    ctx: &Context,
    name: &str,
    work: impl AsyncFnOnce(&Context) -> T,
) -> Option<T> {
    let lease_for = work_lease(ctx);
    let lease_ms = i64::try_from(lease_for.as_millis()).unwrap_or(i64::MAX);
    let now = ms(ctx.now());
    let lease = match ctx
        .store
        .acquire_lease(name, &ctx.owner, now, now + lease_ms)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(lease = name, error = %e, "cannot take a lease; the work waits");
            return None;
        }
    };
    let renewer = {
        let (store, lease, clock) = (ctx.store.clone(), lease.clone(), ctx.clock.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease_for / 3).await;
                let now = ms(clock.now());
                match store.renew_lease(&lease, now, now + lease_ms).await {
                    Ok(true) => {}
                    // Lost (this replica was paused past it): deletions under it stop, as
                    // `may_delete` finds; the work ends on its own.
                    Ok(false) => {
                        tracing::warn!(lease = %lease.name, epoch = lease.epoch, "lease lost; no more deletions under it");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %lease.name, error = %e, "cannot renew a lease")
                    }
                }
            }
        })
    };
    let fenced = Context {
        deletion_fence: Some(lease.clone()),
        ..ctx.clone()
    };
    let out = work(&fenced).await;
    renewer.abort();
    if let Err(e) = ctx.store.release_lease(&lease).await {
        tracing::warn!(lease = name, error = %e, "cannot release a lease; it lapses by itself");
    }
    Some(out)
}

/// Runs `work` under the lease `name` unless some replica did it within `every` (marked by a
/// `name:done` lease lasting `every`). True when this replica did it now.
pub async fn run_shared(
    ctx: &Context,
    name: &str,
    every: Duration,
    work: impl AsyncFnOnce(&Context),
) -> bool {
    let done = format!("{name}:done");
    let done_recently = async |ctx: &Context| {
        matches!(
            ctx.store.lease_holder(&done, ms(ctx.now())).await,
            Ok(Some(_))
        )
    };
    if done_recently(ctx).await {
        return false;
    }
    let ran = with_lease(ctx, name, async |fenced: &Context| {
        // Another replica may have finished between the look and the lease.
        if done_recently(fenced).await {
            return false;
        }
        work(fenced).await;
        let now = ms(fenced.now());
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = fenced
            .store
            .acquire_lease(&done, &fenced.owner, now, now.saturating_add(every_ms))
            .await
        {
            tracing::warn!(work = name, error = %e, "cannot record the work as done; it may run again soon");
        }
        true
    })
    .await;
    ran == Some(true)
}

/// How often a replica looks whether the shared upkeep is due.
const UPKEEP_LOOK_EVERY: Duration = Duration::from_secs(60);

/// Reconciles and prunes every policy once a day (and shortly after start): on one replica of
/// those sharing the state DB, whichever is up.
pub async fn prune_daily(ctx: Context, cancel: CancellationToken) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        run_shared(
            &ctx,
            "retention",
            Duration::from_secs(24 * 3600),
            async |ctx: &Context| {
                reconcile_and_prune(ctx).await;
            },
        )
        .await;
        wait = UPKEEP_LOOK_EVERY;
    }
}

/// The daily upkeep itself: reconcile, then retention for every policy.
async fn reconcile_and_prune(ctx: &Context) {
    match crate::reconcile::reconcile(ctx).await {
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
        prune_policy_logged(ctx, &p.name, None).await;
    }
    let _ = crate::reconcile::refresh_verified_gauge(ctx).await;
}

/// Re-reads the least recently verified copies of each policy every `verify.interval`, on one
/// replica of those sharing the state DB.
pub async fn reverify(ctx: Context, cancel: CancellationToken) {
    let interval = ctx.config.verify.interval;
    if interval.is_zero() {
        return;
    }
    // The first round one interval after start, as before replicas shared the work.
    let first = ms(ctx.now()).saturating_add(i64::try_from(interval.as_millis()).unwrap_or(0));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval.min(UPKEEP_LOOK_EVERY)) => {}
        }
        if ms(ctx.now()) < first {
            continue;
        }
        run_shared(&ctx, "reverify", interval, async |ctx: &Context| {
            reverify_once(ctx).await;
        })
        .await;
    }
}

/// Restore drills on the daemon's own (`drill:`): every `drill.interval`, the newest set of
/// each of the `drill.sets_per_policy` instances of a policy drilled least recently (never
/// drilled first), by one replica at a time (a shared lease). Off when `drill.enabled` is
/// false, and, with one warning, when no redis-server is found and `drill.enabled` is not set.
pub async fn drills(ctx: Context, cancel: CancellationToken) {
    let settings = ctx.config.drill.clone();
    if settings.enabled == Some(false) {
        return;
    }
    let bin = match crate::drill::RedisBinary::find(settings.redis_server.as_deref()).await {
        Ok(bin) => bin,
        Err(why) if settings.enabled == Some(true) => {
            tracing::error!(problem = %why, "drill.enabled is true, yet no restore drill can run; set drill.redis_server to a redis-server");
            return;
        }
        Err(why) => {
            tracing::warn!(problem = %why, "restore drills are off (set drill.redis_server, or drill.enabled: false to silence this)");
            return;
        }
    };
    tracing::info!(redis_server = %bin.path.display(), version = %bin.version,
        every = %humantime_secs(settings.interval), "restore drills on");
    for p in &ctx.config.policies {
        ctx.metrics
            .drill_interval
            .with_label_values(&[p.name.as_str()])
            .set(settings.interval.as_secs_f64());
    }
    // The first round soon after start (at most 10 minutes), then every interval.
    let first_in = settings.interval.min(Duration::from_secs(600));
    let first = ms(ctx.now()).saturating_add(i64::try_from(first_in.as_millis()).unwrap_or(0));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.interval.min(UPKEEP_LOOK_EVERY)) => {}
        }
        if ms(ctx.now()) < first {
            continue;
        }
        run_shared(&ctx, "drill", settings.interval, async |ctx: &Context| {
            drill_once(ctx, &bin).await;
        })
        .await;
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// One round of drills over every policy.
async fn drill_once(ctx: &Context, bin: &crate::drill::RedisBinary) {
    let last_drilled: std::collections::HashMap<(String, String), i64> = match ctx
        .store
        .drill_times()
        .await
    {
        Ok(times) => times
            .into_iter()
            .map(|t| {
                let at = t.last_restored_at.max(t.last_failed_at).unwrap_or(0);
                ((t.policy, t.instance_uuid), at)
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the journal of drills; no drill this round");
            return;
        }
    };
    for policy in &ctx.config.policies {
        let copies = match ctx.store.copies(Some(&policy.name), None).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(policy = %policy.name, error = %e, "cannot list the copies to drill");
                continue;
            }
        };
        // The newest set of each instance, least recently drilled first.
        let mut newest: Vec<crate::drill::Set> = Vec::new();
        for set in crate::drill::sets(copies) {
            if !newest.iter().any(|s| s.instance_uuid == set.instance_uuid) {
                newest.push(set);
            }
        }
        newest.sort_by_key(|s| {
            last_drilled
                .get(&(s.policy.clone(), s.instance_uuid.clone()))
                .copied()
                .unwrap_or(0)
        });
        for set in newest
            .iter()
            .take(ctx.config.drill.sets_per_policy as usize)
        {
            match crate::drill::run_and_record(ctx, bin, set, "schedule").await {
                Ok(r) if r.restored() => {
                    tracing::info!(policy = %set.policy, instance = %set.instance_uuid,
                    job_id = %set.job_id, detail = %r.detail(), "restore drill: the set restores")
                }
                Ok(r) => tracing::error!(policy = %set.policy, instance = %set.instance_uuid,
                    job_id = %set.job_id, detail = %r.detail(), "restore drill: the set DOES NOT RESTORE"),
                Err(e) => tracing::warn!(policy = %set.policy, instance = %set.instance_uuid,
                    job_id = %set.job_id, problem = %e, "restore drill could not run"),
            }
        }
    }
}

/// One round of re-verification: the least recently verified copies of each policy.
async fn reverify_once(ctx: &Context) {
    let Ok(mut copies) = ctx.store.destination_copies().await else {
        return;
    };
    copies.sort_by_key(|c| c.verified_at.unwrap_or(0));
    for policy in &ctx.config.policies {
        let sample: Vec<_> = copies
            .iter()
            .filter(|c| c.policy == policy.name)
            .take(ctx.config.verify.copies as usize)
            .cloned()
            .collect();
        let mut failed = Vec::new();
        let result = crate::verify::verify_copies(&ctx.store, &ctx.destinations, &ctx.clock, &sample, |c, r| match r {
            Ok(_) => tracing::info!(policy = %c.policy, instance = %c.instance_uuid, backup_id = %c.backup_id, "re-verified a stored copy"),
            Err(bad) => {
                tracing::error!(policy = %c.policy, instance = %c.instance_uuid, backup_id = %c.backup_id, problem = %bad, "a stored copy failed re-verification");
                failed.push((c.clone(), bad.to_string()));
            }
        })
        .await;
        crate::verify::tell_failures(&ctx.store, &ctx.config, &failed).await;
        if let Err(e) = result {
            tracing::error!(policy = %policy.name, error = %format!("{e:#}"), "re-verification failed to run");
        }
    }
    if let Err(e) = crate::reconcile::refresh_verified_gauge(ctx).await {
        tracing::error!(error = %format!("{e:#}"), "cannot refresh rdbvault_verified_backups");
    }
}

/// How often the daemon recounts `rdbvault_verified_backups` from the state DB, on top of the
/// recount after each job: so it follows what other processes write there (`backup-now`,
/// `verify`, `prune`) and the instances each scheduled run selects.
pub const VERIFIED_GAUGE_EVERY: Duration = Duration::from_secs(15);

/// Refreshes the fleet gauges ([`refresh_fleet_gauges`]) every [`VERIFIED_GAUGE_EVERY`] until
/// `cancel`.
pub async fn refresh_verified_gauge_loop(ctx: Context, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(VERIFIED_GAUGE_EVERY) => {}
        }
        if let Err(e) = refresh_fleet_gauges(&ctx).await {
            tracing::error!(error = %format!("{e:#}"), "cannot refresh the gauges from the state DB");
        }
    }
}

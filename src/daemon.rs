//! The long-running process (`run`, and `demo` on top of it): wiring, the job dispatcher, the
//! heartbeat, and a drain on shutdown.
//!
//! Jobs are claimed through the state DB (owner + heartbeat), so a daemon and a `backup-now`
//! never run the same job, and a job whose owner stopped renewing its heartbeat for
//! `state.job_lease` is resumed by the next process from its recorded phase. Liveness is the
//! heartbeat alone: the shipped unit hides other users' processes (`ProtectProc=invisible`),
//! so "no such pid in /proc" proves nothing.

use crate::config::Config;
use crate::runner::Outcome;
use crate::services::Context;
use crate::store::ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long running jobs get to reach a safe point after SIGTERM. Shorter than the systemd
/// unit's TimeoutStopSec.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(25);

/// How often a process renews the heartbeat of the jobs it holds: six times per lease, so a
/// slow write or two never lets a live owner's lease lapse.
pub fn heartbeat_every(job_lease: Duration) -> Duration {
    (job_lease / 6).max(Duration::from_millis(250))
}

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
        if job.state() == crate::job::State::Stored {
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

async fn refresh_job_gauge(ctx: &Context) -> anyhow::Result<()> {
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
                            prune_policy_logged(&ctx2, &job.policy, Some(&job.instance_uuid)).await;
                        }
                        let _ = refresh_job_gauge(&ctx2).await;
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
        let Ok(mut copies) = ctx.store.destination_copies(&[]).await else {
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

/// Renews this process's job heartbeats and the job gauge until `cancel`.
pub async fn heartbeat(ctx: Context, cancel: CancellationToken) {
    loop {
        if let Err(e) = ctx.store.heartbeat(&ctx.owner, ms(ctx.clock.now())).await {
            tracing::error!(error = %e, "cannot renew job heartbeats");
        }
        let _ = refresh_job_gauge(&ctx).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(heartbeat_every(ctx.config.state.job_lease)) => {}
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then drains.
///
/// # Errors
/// Set-up failures (state DB, credentials, the `/v1` token file, listener).
pub async fn run(
    ctx: Context,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let token = crate::http::load_token(&ctx.config)?;
    run_with_reload(ctx, listener, shutdown, None, token).await
}

/// The tasks that follow the config: replaced as a whole on reload.
fn spawn_generation(
    ctx: &Context,
    tracker: &TaskTracker,
    jobs: &TaskTracker,
    wake: &Arc<Notify>,
    generation: &CancellationToken,
    jobs_cancel: &CancellationToken,
    running: &Arc<Mutex<std::collections::HashSet<String>>>,
) {
    tracker.spawn(prune_daily(ctx.clone(), generation.child_token()));
    tracker.spawn(reverify(ctx.clone(), generation.child_token()));
    tracker.spawn(refresh_verified_gauge_loop(
        ctx.clone(),
        generation.child_token(),
    ));
    tracker.spawn(crate::scheduler::run(
        ctx.clone(),
        ctx.config.clone(),
        wake.clone(),
        generation.child_token(),
    ));
    tracker.spawn(dispatch(
        ctx.clone(),
        wake.clone(),
        generation.child_token(),
        jobs_cancel.clone(),
        jobs.clone(),
        running.clone(),
    ));
}

/// Tells systemd the daemon is alive every half `WatchdogSec`, but only while the scheduler
/// loop is: a hung scheduler gets the service restarted.
async fn watchdog(ctx: Context, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period / 2) => {}
        }
        let beat = ctx.metrics.scheduler_heartbeat.get();
        let age = crate::clock::wall_now().timestamp_millis() as f64 / 1000.0 - beat;
        if beat > 0.0 && age < crate::http::HEARTBEAT_STALE_SECS {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!(
                age_secs = age,
                "scheduler heartbeat is stale; not feeding the systemd watchdog"
            );
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then drains. With `reload_from`, SIGHUP reloads
/// the config from that file: it is validated first; if invalid, the old config stays and the
/// log says why. Schedule state lives in the DB, so it survives a reload.
///
/// `token` is the `/v1` bearer token read from `http.token_file` at start (by the caller, so a
/// bad file stops `run` with exit 2 before anything starts); a reload reads the file again.
///
/// # Errors
/// Set-up failures (state DB, credentials, listener).
pub async fn run_with_reload(
    ctx: Context,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    reload_from: Option<std::path::PathBuf>,
    token: Option<crate::secret::Secret>,
) -> anyhow::Result<()> {
    rebuild_gauges(&ctx).await?;
    let root = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let tracker = TaskTracker::new();
    let jobs = TaskTracker::new();
    let running: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let jobs_cancel = root.child_token();

    let http_ctx = Arc::new(std::sync::RwLock::new(ctx.clone()));
    let http_token = Arc::new(std::sync::RwLock::new(token));
    let app = crate::http::router(crate::http::HttpState {
        metrics: ctx.metrics.clone(),
        store: ctx.store.clone(),
        ctx: http_ctx.clone(),
        token: http_token.clone(),
    });
    let http_cancel = root.clone();
    tracker.spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_cancel.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP endpoint failed");
        }
    });
    tracker.spawn(heartbeat(ctx.clone(), root.child_token()));
    tracker.spawn(watchdog(ctx.clone(), root.child_token()));
    let mut generation = root.child_token();
    spawn_generation(
        &ctx,
        &tracker,
        &jobs,
        &wake,
        &generation,
        &jobs_cancel,
        &running,
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let mut current = ctx.clone();
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::pin!(shutdown);
    loop {
        #[cfg(unix)]
        let reload = hup.recv();
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload => {
                let Some(path) = &reload_from else {
                    tracing::warn!("SIGHUP ignored: no config file to reload from");
                    continue;
                };
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                match crate::config::load(path) {
                    Err(errors) => tracing::error!(
                        config = %path.display(),
                        errors = %errors,
                        "config reload failed; keeping the old config"
                    ),
                    Ok(cfg) => match reload_parts(&current, cfg).await {
                        Err(e) => tracing::error!(error = %format!("{e:#}"), "config reload failed; keeping the old config"),
                        Ok((new_ctx, new_token)) => {
                            *http_token.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new_token;
                            generation.cancel();
                            generation = root.child_token();
                            spawn_generation(&new_ctx, &tracker, &jobs, &wake, &generation, &jobs_cancel, &running);
                            // cannot fail: writers only assign (readers cannot poison a RwLock).
                            *http_ctx.write().expect("context lock") = new_ctx.clone();
                            tracing::info!(config = %path.display(), policies = new_ctx.config.policies.len(), "config reloaded");
                            current = new_ctx;
                        }
                    },
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: no new jobs; running steps finish at a safe point");
    root.cancel();
    jobs.close();
    if tokio::time::timeout(DRAIN_DEADLINE, jobs.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline_secs = DRAIN_DEADLINE.as_secs(),
            "drain deadline passed; leaving the rest to the next start"
        );
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    // Hand every job we still own back, so the next process resumes it at once.
    if let Ok(open) = ctx.store.list_jobs(None, None, 10_000).await {
        for j in open
            .iter()
            .filter(|j| j.owner.as_deref() == Some(ctx.owner.as_str()))
        {
            let _ = ctx.store.release_job(&j.id, &ctx.owner).await;
        }
    }
    ctx.store.close().await;
    Ok(())
}

/// What a reload replaces: the context and the `/v1` token, both or neither.
async fn reload_parts(
    current: &Context,
    cfg: Config,
) -> anyhow::Result<(Context, Option<crate::secret::Secret>)> {
    let token = crate::http::load_token(&cfg)?;
    let ctx = crate::services::reload(current, Arc::new(cfg)).await?;
    Ok((ctx, token))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops rdbvault");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("SIGINT received");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! Liveness and lifecycle signals: the job heartbeat (this process still holds its jobs), the
//! systemd watchdog (fed only while the scheduler loop beats, judged like `/readyz` by
//! [`crate::metrics::Metrics::scheduler_staleness`]), and SIGTERM/SIGINT.

use crate::services::Context;
use crate::store::ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a process renews the heartbeat of the jobs it holds: six times per lease, so a
/// slow write or two never lets a live owner's lease lapse.
pub fn heartbeat_every(job_lease: Duration) -> Duration {
    (job_lease / 6).max(Duration::from_millis(250))
}

/// Renews this process's job heartbeats and the job gauge until `cancel`.
pub async fn heartbeat(ctx: Context, cancel: CancellationToken) {
    loop {
        if let Err(e) = ctx.store.heartbeat(&ctx.owner, ms(ctx.clock.now())).await {
            tracing::error!(error = %e, "cannot renew job heartbeats");
        }
        let _ = super::maintenance::refresh_job_gauge(&ctx).await;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(heartbeat_every(ctx.config.state.job_lease)) => {}
        }
    }
}

/// Tells systemd the daemon is alive every half `WatchdogSec`, but only while the scheduler
/// loop is: a hung scheduler gets the service restarted.
pub async fn watchdog(ctx: Context, cancel: CancellationToken) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period / 2) => {}
        }
        match ctx.metrics.scheduler_staleness(crate::clock::wall_now()) {
            None => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Some(age) => tracing::error!(
                age_secs = age,
                "scheduler heartbeat is stale; not feeding the systemd watchdog"
            ),
        }
    }
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

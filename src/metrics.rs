//! Every Prometheus metric rdbvault exports (docs/product.md §5), registered in an explicit
//! [`prometheus::Registry`] that the caller owns, never the global default one.
//!
//! Labels are bounded: policy, instance, destination, action and fixed enums. No job ids, no
//! backup ids, no error strings.

pub use crate::cds::metrics::ApiMetrics;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Buckets for backup phases: 1 s to 12 h.
const PHASE_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 43200.0,
];

/// All of rdbvault's metrics.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub api: ApiMetrics,
    pub backup_runs: IntCounterVec,
    pub backup_last_success: GaugeVec,
    pub backup_last_attempt: GaugeVec,
    pub backup_last_size: GaugeVec,
    pub phase_duration: HistogramVec,
    pub transfer_bytes: IntCounterVec,
    pub schedule_next_run: GaugeVec,
    pub schedule_expected_interval: GaugeVec,
    pub jobs: IntGaugeVec,
    pub verified_backups: IntGaugeVec,
    pub retention_deleted: IntCounterVec,
    pub retention_blocked: IntCounterVec,
    pub schedule_skipped: IntCounterVec,
    /// Provider values refused because they could not safely name a copy (path-like ids,
    /// implausible sizes), by field: `instance_uuid`, `backup_id`, `shard_id`, `backup_size`.
    pub provider_values_rejected: IntCounterVec,
    pub scheduler_heartbeat: prometheus::Gauge,
    pub build_info: IntGaugeVec,
    pub drill_last_success: GaugeVec,
    pub drill_last_failure: GaugeVec,
    pub drill_runs: IntCounterVec,
    pub drill_interval: GaugeVec,
    pub notifications: IntCounterVec,
}

/// A scheduler heartbeat older than this means the scheduler loop is hung: `/readyz` fails
/// and the systemd watchdog is no longer fed.
pub const HEARTBEAT_STALE_SECS: f64 = 30.0;

impl Metrics {
    /// `None` while the scheduler loop beats; else the age in seconds of its last beat (since
    /// the epoch when it never beat). The one liveness rule of `/readyz` and the watchdog.
    pub fn scheduler_staleness(&self, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
        let beat = self.scheduler_heartbeat.get();
        let age = now.timestamp_millis() as f64 / 1000.0 - beat;
        (beat <= 0.0 || age > HEARTBEAT_STALE_SECS).then_some(age)
    }

    /// Creates every metric and registers it in `registry`.
    ///
    /// # Errors
    /// Fails if a metric of the same name is already registered there.
    pub fn register(registry: Registry) -> prometheus::Result<Self> {
        let api = ApiMetrics::register(&registry)?;
        let r = &registry;
        // One metric per line: the table of what rdbvault exports.
        #[rustfmt::skip]
        let m = Metrics {
            backup_runs: counter(r, "rdbvault_backup_runs_total", "Backup jobs finished, by result (success, failure, missed)", &["policy", "instance", "result"])?,
            backup_last_success: gauge(r, "rdbvault_backup_last_success_timestamp_seconds", "When the last verified copy of this instance was stored (Unix time)", &["policy", "instance"])?,
            backup_last_attempt: gauge(r, "rdbvault_backup_last_attempt_timestamp_seconds", "When the last backup job of this instance ended, whatever its result", &["policy", "instance"])?,
            backup_last_size: gauge(r, "rdbvault_backup_last_size_bytes", "Size of the last stored copy (all shards)", &["policy", "instance"])?,
            phase_duration: histogram(r, "rdbvault_backup_phase_duration_seconds", "Duration of backup phases (snapshot, transfer, verify, total)", PHASE_BUCKETS, &["policy", "phase"])?,
            transfer_bytes: counter(r, "rdbvault_transfer_bytes_total", "Bytes written to each destination", &["destination"])?,
            schedule_next_run: gauge(r, "rdbvault_schedule_next_run_timestamp_seconds", "Next due time of the policy's schedule (Unix time)", &["policy"])?,
            schedule_expected_interval: gauge(r, "rdbvault_schedule_expected_interval_seconds", "Longest gap between consecutive runs of the policy's schedule", &["policy"])?,
            jobs: int_gauge(r, "rdbvault_jobs", "Jobs in the state DB by state", &["state"])?,
            verified_backups: int_gauge(r, "rdbvault_verified_backups", "Verified copies held, by location (provider, destination)", &["policy", "instance", "location"])?,
            retention_deleted: counter(r, "rdbvault_retention_deleted_total", "Copies deleted by retention, by location", &["policy", "location"])?,
            retention_blocked: counter(r, "rdbvault_retention_blocked_total", "Prune runs that deleted nothing because a safety rule stopped them", &["policy", "reason"])?,
            schedule_skipped: counter(r, "rdbvault_schedule_skipped_total", "Due runs not started because the instance still had an open job", &["policy", "reason"])?,
            provider_values_rejected: counter(r, "rdbvault_provider_values_rejected_total", "Provider values refused (path-like ids, implausible sizes), by field; the job of that instance failed", &["policy", "field"])?,
            scheduler_heartbeat: reg(r, prometheus::Gauge::new("rdbvault_scheduler_heartbeat_timestamp_seconds", "Last time the scheduler loop ran (Unix time)")?)?,
            build_info: int_gauge(r, "rdbvault_build_info", "Always 1; the version is in the label", &["version"])?,
            drill_last_success: gauge(r, "rdbvault_restore_drill_last_success_timestamp_seconds", "When a set of this instance last restored in a drill (Unix time; from the state DB)", &["policy", "instance"])?,
            drill_last_failure: gauge(r, "rdbvault_restore_drill_last_failure_timestamp_seconds", "When a set of this instance last failed a drill (Unix time; from the state DB)", &["policy", "instance"])?,
            drill_runs: counter(r, "rdbvault_restore_drill_runs_total", "Restore drills this process ran, by result (restored, failed)", &["policy", "instance", "result"])?,
            notifications: counter(r, "rdbvault_notifications_total", "Notification deliveries this process attempted, by target and result (delivered, failed)", &["target", "result"])?,
            drill_interval: gauge(r, "rdbvault_restore_drill_interval_seconds", "How often the daemon drills each policy (drill.interval); absent while drills are off", &["policy"])?,
            api,
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    reg(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<GaugeVec> {
    reg(r, GaugeVec::new(Opts::new(name, help), labels)?)
}

fn int_gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    reg(
        r,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?,
    )
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Renders any registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // cannot fail: gather() yields only named, non-empty families, and writing to a Vec cannot
    // fail; the text format is UTF-8 by construction.
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding of gathered metrics cannot fail");
    String::from_utf8(buf).expect("Prometheus text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_contract_metric_names_are_registered() {
        let m = Metrics::register(Registry::new()).unwrap();
        // Touch each vector once so it appears in the output.
        m.api
            .observe(crate::cds::Action::DescribeBackups, "Success", 0.1);
        m.backup_runs
            .with_label_values(&["p", "i", "success"])
            .inc();
        m.backup_last_success
            .with_label_values(&["p", "i"])
            .set(1.0);
        m.backup_last_attempt
            .with_label_values(&["p", "i"])
            .set(1.0);
        m.backup_last_size.with_label_values(&["p", "i"]).set(1.0);
        m.phase_duration
            .with_label_values(&["p", "total"])
            .observe(1.0);
        m.transfer_bytes.with_label_values(&["d"]).inc();
        m.schedule_next_run.with_label_values(&["p"]).set(1.0);
        m.schedule_expected_interval
            .with_label_values(&["p"])
            .set(1.0);
        m.jobs.with_label_values(&["stored"]).set(1);
        m.verified_backups
            .with_label_values(&["p", "i", "destination"])
            .set(1);
        m.retention_deleted
            .with_label_values(&["p", "destination"])
            .inc();
        m.retention_blocked
            .with_label_values(&["p", "max_deletions"])
            .inc();
        m.scheduler_heartbeat.set(1.0);
        m.drill_last_success.with_label_values(&["p", "i"]).set(1.0);
        m.drill_last_failure.with_label_values(&["p", "i"]).set(1.0);
        m.drill_runs
            .with_label_values(&["p", "i", "restored"])
            .inc();
        m.drill_interval.with_label_values(&["p"]).set(1.0);
        let text = m.render();
        for name in [
            "rdbvault_backup_runs_total",
            "rdbvault_backup_last_success_timestamp_seconds",
            "rdbvault_backup_last_attempt_timestamp_seconds",
            "rdbvault_backup_last_size_bytes",
            "rdbvault_backup_phase_duration_seconds_bucket",
            "rdbvault_transfer_bytes_total",
            "rdbvault_schedule_next_run_timestamp_seconds",
            "rdbvault_schedule_expected_interval_seconds",
            "rdbvault_jobs",
            "rdbvault_verified_backups",
            "rdbvault_retention_deleted_total",
            "rdbvault_retention_blocked_total",
            "rdbvault_api_requests_total",
            "rdbvault_api_request_duration_seconds_bucket",
            "rdbvault_scheduler_heartbeat_timestamp_seconds",
            "rdbvault_build_info",
            "rdbvault_restore_drill_last_success_timestamp_seconds",
            "rdbvault_restore_drill_last_failure_timestamp_seconds",
            "rdbvault_restore_drill_runs_total",
            "rdbvault_restore_drill_interval_seconds",
        ] {
            assert!(
                text.contains(&format!("\n{name}{{")) || text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }
}

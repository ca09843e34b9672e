//! The foreground commands, one file per subcommand:
//! - `backup_now.rs`: `backup-now`.
//! - `jobs.rs`: `jobs`, `jobs show`, and their JSON read model ([`JobDetail`],
//!   [`jobs_json`], also `GET /v1/jobs`).
//! - `backups.rs`: `backups`, `backups pin|unpin`, the inventory JSON
//!   ([`inventory`], [`inventory_json`], [`inventory_with_checks`], also `GET /v1/backups`).
//! - `prune.rs`: `prune`, and [`plan_policies`], the plan over every policy.
//! - `verify.rs`: `verify`, and [`verify_copies`] (also the daemon's `verify:` rounds).
//! - `fetch.rs`: `fetch`.
//! - `demo.rs`: `demo`.
//! - `format.rs`: the formatting the commands share (bytes, local times, durations, labels).
//!
//! Here: what several commands share ([`CopyCheck`], opening the state DB read-only, finding
//! policies by name) and [`policies_json`] (`GET /v1/policies`, no command's own).

mod backup_now;
mod backups;
mod demo;
mod fetch;
mod format;
mod jobs;
mod prune;
mod verify;

pub use backup_now::backup_now;
pub use backups::{backups, inventory, inventory_json, inventory_with_checks};
pub use demo::demo;
pub use fetch::fetch;
pub use jobs::{JobDetail, jobs, jobs_json};
pub use prune::{plan_policies, prune};
pub use verify::{verify, verify_copies};

use crate::app::Failure;
use crate::config::{self, Config};
use crate::store::{Store, from_ms};
use format::local;

// Re-verification results: shown by `jobs`, `jobs show` and `backups`.
/// The last re-verification (`verify`, or the daemon's `verify:` rounds) of one stored copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyCheck {
    pub backup_id: String,
    pub shard_id: String,
    pub destination: String,
    pub object_key: Option<String>,
    pub ok: bool,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// Why it failed; absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CopyCheck {
    fn of(c: &crate::store::inventory::CopyRow) -> Option<CopyCheck> {
        let at = c.last_check_at?;
        Some(CopyCheck {
            backup_id: c.backup_id.clone(),
            shard_id: c.shard_id.clone(),
            destination: c.destination.clone(),
            object_key: c.object_key.clone(),
            ok: c.last_check_error.is_none(),
            at: from_ms(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            error: c.last_check_error.clone(),
        })
    }

    /// The time in the local zone, as the other times of `jobs show`.
    fn local_at(&self) -> String {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|t| local(t.timestamp_millis()))
            .unwrap_or_else(|_| self.at.clone())
    }

    /// The time in UTC, as the other times of `backups`.
    fn utc_at(&self) -> String {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|_| self.at.clone())
    }
}

/// The re-verification results of a job's stored copies.
async fn job_checks(store: &Store, job_id: &str) -> Result<Vec<CopyCheck>, crate::store::Error> {
    Ok(store
        .checked_copies_of_job(job_id)
        .await?
        .iter()
        .filter_map(CopyCheck::of)
        .collect())
}

// The JSON of `GET /v1/policies`; no command prints it.
/// The JSON of `GET /v1/policies`: each policy with its next runs.
pub fn policies_json(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::Value::Array(
        cfg.policies
            .iter()
            .map(|p| {
                let s = &p.schedule;
                serde_json::json!({
                    "name": p.name,
                    "cron": s.cron.as_str(),
                    "timezone": s.timezone.name(),
                    "next_runs": s.cron.upcoming(now, s.timezone, 3).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                    "expected_interval_seconds": crate::scheduler::expected_interval(p, now, 64).map(|d| d.as_secs()),
                    "destination": p.destination,
                    "instances": p.instances.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

// Shared by `jobs`, `backups` and `fetch`.
/// Opens the state DB for a command that only reads it (`jobs`, `backups`, `fetch`): never
/// creates or migrates it. A DB that does not exist is a configuration problem (exit 2): the
/// message names the config file, the resolved path and how it was resolved.
async fn open_for_reading(cfg: &Config) -> Result<Store, Failure> {
    Store::open_read_only(&cfg.state.path)
        .await
        .map_err(|e| match e {
            crate::store::Error::Missing { .. } => {
                Failure::Usage(format!("{}: state.path: {e}", cfg.source.display()))
            }
            other => Failure::Runtime(other.into()),
        })
}

// Shared by `prune` and `backups`.
fn policies_named<'a>(
    cfg: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a config::Policy>, Failure> {
    match name {
        None => Ok(cfg.policies.iter().collect()),
        Some(n) => match cfg.policies.iter().find(|p| p.name == n) {
            Some(p) => Ok(vec![p]),
            None => Err(Failure::Usage(format!(
                "no policy named `{n}`; policies: {}",
                cfg.policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

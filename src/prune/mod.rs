//! Applies retention to both sides of every instance of a policy: builds the backup sets from
//! the inventory and the provider's live list, asks [`crate::retention::plan`], and carries out
//! the deletions (unless it is a dry run or the circuit breaker tripped).
//!
//! Destination: a set's objects and manifests are deleted together, each through the destination
//! its copy was recorded in (a copy whose destination left the config is kept, and the report
//! says so). Provider: `DeleteBackup` only for a record whose own backup id has a verified
//! destination copy; a record that merely carries a job's token (an extra backup made with a
//! copied `Desc`) is its own set and is never deleted. Failures are retried by the client, then
//! recorded and reported, never fatal.
//!
//! [`ProviderView::Inventory`] plans from the state DB alone (no provider call, no deletion):
//! the read-only view `/v1/backups` serves.
//!
//! This module owns the public face (the entry points, [`Mode`], [`ProviderView`], the
//! [`Report`] and its table) and the order of a run; the work is split three ways so the
//! decisions can be tested without S3 or the simulator:
//! - `gather`: reads the provider's records and the state DB's word on the jobs they name;
//! - `plan`: pure, from that plain data and `now` to a row and a deletion per set;
//! - `apply`: re-checks and carries out each deletion, records it, counts it, reports it.

mod apply;
mod gather;
mod plan;

use crate::cds::DESC_TOKEN_PREFIX;
use crate::config::Policy;
use crate::retention::{Location, Reason};
use crate::services::Context;
use chrono::{DateTime, Utc};

/// One row of a prune report: one backup set at one location.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub location: Location,
    /// The job id, or the provider backup id of a backup rdbvault does not know.
    pub set: String,
    pub time: DateTime<Utc>,
    pub verified: bool,
    pub pinned: bool,
    /// Provider backup ids of the set.
    pub backup_ids: Vec<String>,
    /// Destination object keys of the set.
    pub object_keys: Vec<String>,
    pub keep: bool,
    pub reasons: Vec<Reason>,
    /// What happened when the deletion was carried out (`None`: not attempted).
    pub deleted: Option<Result<(), String>>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// (policy, instance, location, why) for each plan the circuit breaker blocked.
    pub blocked: Vec<(String, String, Location, String)>,
    /// Problems that kept a side from being planned (e.g. the provider list failed).
    pub problems: Vec<String>,
    /// Whether a problem was the provider refusing the credentials (the operator's to fix:
    /// commands exit 2).
    pub credentials_refused: bool,
    /// Provider backups with rdbvault's token for a job this state DB does not know (another
    /// rdbvault's, or a DB that was replaced): listed once, never planned, never touched.
    pub unknown_to_state_db: Vec<UnknownBackup>,
}

/// A provider backup that carries rdbvault's token for a job unknown to this state DB.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct UnknownBackup {
    pub instance_uuid: String,
    pub backup_id: String,
    /// The job id in its `Desc`.
    pub job_id: String,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| matches!(r.deleted, Some(Err(_))))
            .count()
    }
}

/// The job id in a `Desc` that carries rdbvault's token.
pub fn job_of_desc(desc: &str) -> Option<&str> {
    desc.strip_prefix(DESC_TOKEN_PREFIX)
        .filter(|s| !s.is_empty())
}

/// Whether a retention run carries out its deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan and report only (`prune --dry-run`, `backups`, `/v1/backups`).
    DryRun,
    /// Plan, then delete what the plan lets go.
    Delete,
}

impl Mode {
    /// `--dry-run` on the command line.
    pub fn from_dry_run(dry_run: bool) -> Mode {
        if dry_run { Mode::DryRun } else { Mode::Delete }
    }
}

/// Where the provider side's list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderView {
    /// `DescribeBackups` per instance: what the provider holds now.
    Live,
    /// The provider copies the inventory records: no API call; the plan is a dry run.
    Inventory,
}

/// Plans (and in [`Mode::Delete`], applies) retention for one policy: every instance, or only
/// `instance` (the daemon after a job: retention is per instance, so the others have not
/// changed, and listing each of them after every job would cost O(instances²) API calls).
///
/// # Errors
/// The state DB or the destination cannot be opened; per-side problems are in the report.
pub async fn prune_policy(
    ctx: &Context,
    policy: &Policy,
    instance: Option<&str>,
    mode: Mode,
) -> anyhow::Result<Report> {
    prune_policy_from(ctx, policy, instance, mode, ProviderView::Live).await
}

/// [`prune_policy`] with the provider list taken from `view`; [`ProviderView::Inventory`] is
/// always a dry run.
///
/// Per instance: the destination side is planned and applied, then the provider's list is read
/// and that side planned and applied. The provider is asked only once the destination side is
/// done (as it always was), so a provider that is slow or down never holds up destination
/// pruning.
///
/// # Errors
/// See [`prune_policy`].
pub async fn prune_policy_from(
    ctx: &Context,
    policy: &Policy,
    instance: Option<&str>,
    mode: Mode,
    view: ProviderView,
) -> anyhow::Result<Report> {
    let rules = plan::Rules {
        policy: &policy.name,
        retention: &policy.retention,
        tz: policy.schedule.timezone,
        dry_run: mode == Mode::DryRun || view == ProviderView::Inventory,
    };
    let mut report = Report::default();
    let all = ctx
        .store
        .copies_with_deleted(&policy.name, instance)
        .await?;
    let inv = plan::Inventory::from_rows(&all);
    let known_destination = |name: &str| ctx.config.destinations.contains_key(name);

    for (uuid, sets) in &inv.instances {
        if instance.is_some_and(|only| only != uuid) {
            continue;
        }
        let side = plan::destination_side(&rules, uuid, sets, known_destination);
        apply::apply(ctx, policy, uuid, side, &inv, &mut report).await;

        let records = match gather::provider_records(ctx, policy, view, &all, uuid).await {
            Ok(r) => r,
            Err((problem, refused)) => {
                report.problems.push(problem);
                report.credentials_refused |= refused;
                continue;
            }
        };
        let jobs = gather::lookup_jobs(ctx, policy, &inv, &records).await;
        let facts = plan::ProviderFacts {
            records,
            jobs: &jobs,
            provider_tz: ctx.config.cds.time_zone,
            now: ctx.clock.now(),
        };
        let side = plan::provider_side(&rules, &inv, uuid, sets, &facts);
        apply::apply(ctx, policy, uuid, side, &inv, &mut report).await;
    }
    Ok(report)
}

/// Retention for every policy (or one), merged into one report; in [`Mode::DryRun`] nothing is
/// changed: that is the JSON of `backups --json` and `GET /v1/backups`.
pub async fn plan_policies(
    ctx: &Context,
    policy: Option<&str>,
    instance: Option<&str>,
    mode: Mode,
    view: ProviderView,
) -> anyhow::Result<Report> {
    let mut all = Report::default();
    for p in ctx
        .config
        .policies
        .iter()
        .filter(|p| policy.is_none_or(|n| p.name == n))
    {
        let r = prune_policy_from(ctx, p, None, mode, view).await?;
        all.rows.extend(r.rows);
        all.blocked.extend(r.blocked);
        all.problems.extend(r.problems);
        all.credentials_refused |= r.credentials_refused;
        all.unknown_to_state_db.extend(r.unknown_to_state_db);
    }
    // Every policy that lists an instance sees its unknown backups: say each once.
    all.unknown_to_state_db.sort();
    all.unknown_to_state_db.dedup();
    if let Some(i) = instance {
        all.rows.retain(|r| r.instance_uuid.eq_ignore_ascii_case(i));
        all.unknown_to_state_db
            .retain(|u| u.instance_uuid.eq_ignore_ascii_case(i));
    }
    Ok(all)
}

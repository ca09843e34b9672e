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

use crate::cds::DESC_TOKEN_PREFIX;
use crate::config::Policy;
use crate::destination::Handle;
use crate::retention::{self, Location, Reason, Set};
use crate::services::Context;
use crate::store::inventory::CopyRow;
use crate::store::{from_ms, ms};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

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

struct DestSet {
    time: DateTime<Utc>,
    instance_name: String,
    copies: Vec<CopyRow>,
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
/// # Errors
/// See [`prune_policy`].
pub async fn prune_policy_from(
    ctx: &Context,
    policy: &Policy,
    instance: Option<&str>,
    mode: Mode,
    view: ProviderView,
) -> anyhow::Result<Report> {
    let dry_run = mode == Mode::DryRun || view == ProviderView::Inventory;
    let mut report = Report::default();
    // One handle per destination a copy was recorded in, opened when first needed.
    let mut handles: BTreeMap<String, Handle> = BTreeMap::new();
    let tz = policy.schedule.timezone;
    let only_instance = instance;
    let all = ctx
        .store
        .copies_with_deleted(&policy.name, instance)
        .await?;

    // Jobs whose destination copies were verified (pruned ones included: they were good).
    let mut verified_jobs: BTreeSet<String> = BTreeSet::new();
    let mut failed_jobs: BTreeSet<String> = BTreeSet::new();
    for c in all.iter().filter(|c| c.at_destination()) {
        let job = c.job_id.clone().unwrap_or_default();
        if c.is_good() {
            verified_jobs.insert(job);
        } else {
            failed_jobs.insert(job);
        }
    }
    for j in &failed_jobs {
        verified_jobs.remove(j);
    }
    // Per job, the backup ids that have a verified destination copy: only these may ever be
    // deleted at the provider.
    let mut verified_backups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in all.iter().filter(|c| c.at_destination() && c.is_good()) {
        if let Some(job) = &c.job_id {
            verified_backups
                .entry(job.clone())
                .or_default()
                .insert(c.backup_id.clone());
        }
    }

    // Group live destination copies by instance and job.
    let mut by_instance: BTreeMap<String, BTreeMap<String, DestSet>> = BTreeMap::new();
    for c in all.iter().filter(|c| c.at_destination() && c.is_live()) {
        let sets = by_instance.entry(c.instance_uuid.clone()).or_default();
        let job = c.job_id.clone().unwrap_or_else(|| c.backup_id.clone());
        let s = sets.entry(job).or_insert_with(|| DestSet {
            time: from_ms(c.requested_at),
            instance_name: c.instance_name.clone(),
            copies: Vec::new(),
        });
        s.copies.push(c.clone());
    }
    // Instances with provider copies only still get their provider side planned.
    for c in all.iter().filter(|c| c.at_provider() && c.is_live()) {
        by_instance.entry(c.instance_uuid.clone()).or_default();
    }
    let job_times: BTreeMap<String, (i64, String)> = all
        .iter()
        .filter_map(|c| {
            c.job_id
                .clone()
                .map(|j| (j, (c.requested_at, c.instance_name.clone())))
        })
        .collect();

    for (instance, sets) in by_instance {
        if only_instance.is_some_and(|only| only != instance) {
            continue;
        }
        // ---- destination side ----
        let dest_sets: Vec<Set> = sets
            .iter()
            .map(|(job, s)| Set {
                id: job.clone(),
                time: s.time,
                verified: s.copies.iter().all(|c| c.is_good()),
                pinned: s.copies.iter().any(|c| c.is_pinned()),
                created_by_rdbvault: true,
            })
            .collect();
        let plan = retention::plan(
            &dest_sets,
            &policy.retention.destination,
            Location::Destination,
            tz,
            policy.retention.max_deletions_per_run,
        );
        if let Some(why) = &plan.blocked {
            blocked(
                ctx,
                &mut report,
                policy,
                &instance,
                Location::Destination,
                why,
            );
        }
        for d in &plan.decisions {
            let Some(s) = sets.get(&d.id) else { continue };
            // A copy recorded in a destination that left the config cannot be reached: keep it.
            let gone: Vec<&str> = s
                .copies
                .iter()
                .map(|c| c.destination.as_str())
                .filter(|name| !ctx.config.destinations.contains_key(*name))
                .collect();
            let (keep, reasons) = match gone.first() {
                Some(name) if !d.keep => (true, vec![Reason::DestinationGone(name.to_string())]),
                _ => (d.keep, d.reasons.clone()),
            };
            let mut row = Row {
                policy: policy.name.clone(),
                instance_uuid: instance.clone(),
                instance_name: s.instance_name.clone(),
                location: Location::Destination,
                set: d.id.clone(),
                time: s.time,
                verified: dest_sets.iter().any(|x| x.id == d.id && x.verified),
                pinned: s.copies.iter().any(|c| c.is_pinned()),
                backup_ids: s.copies.iter().map(|c| c.backup_id.clone()).collect(),
                object_keys: s
                    .copies
                    .iter()
                    .filter_map(|c| c.object_key.clone())
                    .collect(),
                keep,
                reasons,
                deleted: None,
            };
            if !keep && !dry_run {
                row.deleted = Some(delete_destination_set(ctx, &mut handles, &s.copies).await);
                if matches!(row.deleted, Some(Ok(()))) {
                    ctx.metrics
                        .retention_deleted
                        .with_label_values(&[policy.name.as_str(), "destination"])
                        .inc();
                }
            }
            report.rows.push(row);
        }

        // ---- provider side ----
        let records = match view {
            ProviderView::Inventory => inventory_records(&all, &instance),
            ProviderView::Live => match ctx.cds.describe_backups(&instance).await {
                Ok(r) => r,
                Err(e) => {
                    report.problems.push(format!(
                        "policy {}: instance {instance}: provider side not planned: {e}",
                        policy.name
                    ));
                    continue;
                }
            },
        };
        let mut groups: BTreeMap<String, Vec<crate::cds::model::Backup>> = BTreeMap::new();
        let mut stray: BTreeSet<String> = BTreeSet::new();
        for r in records {
            let key = match job_of_desc(&r.desc) {
                Some(job) => {
                    if !job_times.contains_key(job) {
                        match ctx.store.job(job).await {
                            // A job of another policy on the same instance is that policy's
                            // business.
                            Ok(j) if j.policy != policy.name => continue,
                            Ok(_) => {}
                            Err(crate::store::Error::NotFound(_)) => {
                                report.unknown_to_state_db.push(UnknownBackup {
                                    instance_uuid: instance.clone(),
                                    backup_id: r.backup_id.clone(),
                                    job_id: job.to_string(),
                                });
                                continue;
                            }
                            Err(e) => {
                                report.problems.push(format!(
                                    "policy {}: backup {}: cannot look up job {job}: {e}",
                                    policy.name, r.backup_id
                                ));
                                continue;
                            }
                        }
                    }
                    // A job with verified copies owns only those backup ids; any other record
                    // with its token (an extra backup made with a copied `Desc`) is a set of
                    // its own, which nothing verified. A job without any verified copy keeps
                    // its records together: the set is unverified and never deleted.
                    match verified_backups.get(job) {
                        Some(ids) if !ids.contains(&r.backup_id) => {
                            stray.insert(r.backup_id.clone());
                            r.backup_id.clone()
                        }
                        _ => job.to_string(),
                    }
                }
                None => r.backup_id.clone(),
            };
            groups.entry(key).or_default().push(r);
        }
        let provider_sets: Vec<Set> = groups
            .iter()
            .map(|(key, recs)| {
                let token = recs.iter().any(|r| job_of_desc(&r.desc).is_some());
                let time = job_times
                    .get(key)
                    .map(|(t, _)| from_ms(*t))
                    .or_else(|| {
                        recs.iter()
                            .filter_map(|r| {
                                crate::cds::model::parse_provider_time(
                                    &r.start_time,
                                    &ctx.config.cds.time_zone,
                                )
                            })
                            .min()
                    })
                    .unwrap_or_default();
                Set {
                    id: key.clone(),
                    time,
                    verified: token && !stray.contains(key) && verified_jobs.contains(key),
                    pinned: all
                        .iter()
                        .any(|c| c.job_id.as_deref() == Some(key.as_str()) && c.is_pinned()),
                    created_by_rdbvault: token,
                }
            })
            .collect();
        let plan = match &policy.retention.provider {
            Some(rules) => retention::plan(
                &provider_sets,
                rules,
                Location::Provider,
                tz,
                policy.retention.max_deletions_per_run,
            ),
            // Without provider rules nothing is deleted there: keep everything, say why.
            None => retention::Plan {
                decisions: provider_sets
                    .iter()
                    .map(|s| retention::Decision {
                        id: s.id.clone(),
                        keep: true,
                        reasons: vec![if s.created_by_rdbvault {
                            Reason::NoProviderRules
                        } else {
                            Reason::NotCreatedByRdbvault
                        }],
                    })
                    .collect(),
                blocked: None,
            },
        };
        if let Some(why) = &plan.blocked {
            blocked(ctx, &mut report, policy, &instance, Location::Provider, why);
        }
        let mut reclaimable =
            reclaim_candidates(ctx, policy, &provider_sets, &dest_sets, &stray).await;
        let planned = plan.decisions.iter().filter(|d| !d.keep).count();
        if !reclaimable.is_empty()
            && planned + reclaimable.len() > policy.retention.max_deletions_per_run as usize
        {
            let why = format!(
                "reclaiming {} uncopied provider backup(s) besides {planned} deletion(s) would exceed max_deletions_per_run ({}): none reclaimed",
                reclaimable.len(),
                policy.retention.max_deletions_per_run
            );
            blocked(
                ctx,
                &mut report,
                policy,
                &instance,
                Location::Provider,
                &why,
            );
            reclaimable.clear();
        }
        for d in &plan.decisions {
            let (Some(recs), Some(s)) = (
                groups.get(&d.id),
                provider_sets.iter().find(|s| s.id == d.id),
            ) else {
                continue;
            };
            let reclaim = reclaimable.contains(&d.id);
            let (keep, reasons) = if stray.contains(&d.id) {
                (true, vec![Reason::NoVerifiedCopyOfThisBackup])
            } else if let (true, Some(after)) = (reclaim, policy.retention.reclaim_uncopied_after) {
                (
                    false,
                    vec![Reason::ReclaimUncopied(
                        crate::config::units::format_duration(after),
                    )],
                )
            } else {
                (d.keep, d.reasons.clone())
            };
            let mut row = Row {
                policy: policy.name.clone(),
                instance_uuid: instance.clone(),
                instance_name: job_times
                    .get(&d.id)
                    .map(|(_, n)| n.clone())
                    .or_else(|| sets.values().next().map(|s| s.instance_name.clone()))
                    .unwrap_or_default(),
                location: Location::Provider,
                set: d.id.clone(),
                time: s.time,
                verified: s.verified,
                pinned: s.pinned,
                backup_ids: recs.iter().map(|r| r.backup_id.clone()).collect(),
                object_keys: Vec::new(),
                keep,
                reasons,
                deleted: None,
            };
            // Belt and braces: never delete what the plan must not have chosen, and never a
            // record whose own backup id lacks a verified copy.
            let deletable = s.created_by_rdbvault && (s.verified || reclaim) && !s.pinned;
            if !keep && !dry_run && deletable {
                let mut result = Ok(());
                for r in recs {
                    let copied = job_of_desc(&r.desc)
                        .and_then(|job| verified_backups.get(job))
                        .is_some_and(|ids| ids.contains(&r.backup_id));
                    if !copied && !reclaim {
                        result = Err(format!(
                            "backup {} has no verified copy: not deleted",
                            r.backup_id
                        ));
                        continue;
                    }
                    match ctx.cds.delete_backup(&instance, &r.backup_id).await {
                        Ok(_) => {
                            let _ = ctx
                                .store
                                .mark_provider_deleted(&r.backup_id, ms(ctx.clock.now()))
                                .await;
                        }
                        Err(e) if e.is_not_found() => {
                            let _ = ctx
                                .store
                                .mark_provider_deleted(&r.backup_id, ms(ctx.clock.now()))
                                .await;
                        }
                        Err(e) => {
                            tracing::error!(policy = %policy.name, instance = %instance, backup_id = %r.backup_id, error = %e,
                                "DeleteBackup failed; it will be tried again at the next prune");
                            result = Err(e.to_string());
                        }
                    }
                }
                if result.is_ok() {
                    ctx.metrics
                        .retention_deleted
                        .with_label_values(&[policy.name.as_str(), "provider"])
                        .inc();
                }
                row.deleted = Some(result);
            }
            report.rows.push(row);
        }
    }
    Ok(report)
}

fn blocked(
    ctx: &Context,
    report: &mut Report,
    policy: &Policy,
    instance: &str,
    location: Location,
    why: &str,
) {
    tracing::warn!(policy = %policy.name, instance, ?location, "retention blocked: {why}");
    ctx.metrics
        .retention_blocked
        .with_label_values(&[policy.name.as_str(), "max_deletions"])
        .inc();
    report.blocked.push((
        policy.name.clone(),
        instance.to_string(),
        location,
        why.to_string(),
    ));
}

/// Provider sets `retention.provider.reclaim_uncopied_after` lets go of: made by a job of this
/// policy that failed or was missed (so no verified copy exists), older than the rule, with a
/// newer verified set of the instance at the destination, and not the instance's newest provider
/// backup. Pinned sets and records that only carry a copied `Desc` are never candidates.
async fn reclaim_candidates(
    ctx: &Context,
    policy: &Policy,
    provider_sets: &[Set],
    dest_sets: &[Set],
    stray: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(after) = policy.retention.reclaim_uncopied_after else {
        return out;
    };
    let now = ctx.clock.now();
    let age = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let newest = provider_sets.iter().map(|s| s.time).max();
    for s in provider_sets {
        let candidate = s.created_by_rdbvault
            && !s.verified
            && !s.pinned
            && !stray.contains(&s.id)
            && now - s.time > age
            && newest.is_some_and(|n| s.time < n)
            && dest_sets.iter().any(|d| d.verified && d.time > s.time);
        if !candidate {
            continue;
        }
        // Only a job this DB knows ended without a copy: never an open job's backup.
        if let Ok(job) = ctx.store.job(&s.id).await
            && job.policy == policy.name
            && matches!(job.state.as_str(), "failed" | "missed")
        {
            out.insert(s.id.clone());
        }
    }
    out
}

/// The provider copies the inventory records for one instance, as `DescribeBackups` would list
/// them (for the DB-only view).
fn inventory_records(all: &[CopyRow], instance: &str) -> Vec<crate::cds::model::Backup> {
    all.iter()
        .filter(|c| c.at_provider() && c.is_live() && c.instance_uuid == instance)
        .map(|c| crate::cds::model::Backup {
            backup_id: c.backup_id.clone(),
            instance_id: c.instance_uuid.clone(),
            desc: c
                .job_id
                .as_ref()
                .map(|j| format!("{DESC_TOKEN_PREFIX}{j}"))
                .unwrap_or_default(),
            status: crate::cds::model::Backup::FINISHED.into(),
            backup_size: c.size.map(|s| s.max(0) as u64),
            ..Default::default()
        })
        .collect()
}

/// Deletes a set's objects, each through the destination its copy was recorded in.
async fn delete_destination_set(
    ctx: &Context,
    handles: &mut BTreeMap<String, Handle>,
    copies: &[CopyRow],
) -> Result<(), String> {
    for c in copies {
        if !handles.contains_key(&c.destination) {
            let Some(dest) = ctx.config.destinations.get(&c.destination) else {
                return Err(format!(
                    "destination `{}` is no longer in the config; the copy is kept",
                    c.destination
                ));
            };
            let h = Handle::new(dest).await.map_err(|e| format!("{e:#}"))?;
            handles.insert(c.destination.clone(), h);
        }
        let Some(handle) = handles.get(&c.destination) else {
            continue;
        };
        if let Some(key) = &c.object_key {
            // The manifest first: without it the object no longer looks like a complete copy.
            handle
                .delete(&crate::transfer::manifest_key(key))
                .await
                .map_err(|e| format!("{e:#}"))?;
            handle.delete(key).await.map_err(|e| format!("{e:#}"))?;
        }
        ctx.store
            .mark_copy_deleted(c.id, ms(ctx.clock.now()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Prints a report as a table. `verif`: a VERIF column, one label per row (`backups`).
pub fn print(report: &Report, mode: Mode, verif: Option<&[String]>) {
    let w = verif
        .map(|v| v.iter().map(String::len).max().unwrap_or(0).max(6))
        .unwrap_or(0);
    println!(
        "{:<11} {:<12} {:<18} {:<19} {:<36} {:<w$} DECISION: REASONS",
        "LOCATION",
        "POLICY",
        "INSTANCE",
        "TIME (UTC)",
        "SET (job or backup id)",
        if verif.is_some() { "VERIF" } else { "" },
    );
    for (i, r) in report.rows.iter().enumerate() {
        let name = if r.instance_name.is_empty() {
            &r.instance_uuid
        } else {
            &r.instance_name
        };
        let decision = if r.keep {
            "keep"
        } else if mode == Mode::DryRun {
            "would delete"
        } else {
            "delete"
        };
        let outcome = match &r.deleted {
            Some(Ok(())) => " (deleted)".to_string(),
            Some(Err(e)) => format!(" (FAILED: {e})"),
            None => String::new(),
        };
        let reasons: Vec<String> = r.reasons.iter().map(ToString::to_string).collect();
        println!(
            "{:<11} {:<12} {:<18} {:<19} {:<36} {:<w$} {decision}: {}{outcome}",
            format!("{:?}", r.location).to_lowercase(),
            r.policy,
            name,
            r.time.format("%Y-%m-%d %H:%M:%S"),
            r.set,
            verif.and_then(|v| v.get(i)).map_or("", String::as_str),
            reasons.join(", ")
        );
    }
    for (policy, instance, location, why) in &report.blocked {
        println!("BLOCKED {policy} {instance} {location:?}: {why}");
    }
    for p in &report.problems {
        println!("PROBLEM {p}");
    }
    for u in &report.unknown_to_state_db {
        println!(
            "UNKNOWN provider backup {} of {}: its Desc names job {}, unknown to this state DB (another rdbvault's, or a replaced DB); never touched",
            u.backup_id, u.instance_uuid, u.job_id
        );
    }
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

//! The pure half of a retention run: from plain data (the inventory rows, the provider's records,
//! what the state DB said about the jobs those records name, and `now`) to one report row per
//! backup set and location, each with its decision, its reasons, and the deletion to carry out.
//!
//! Nothing here reads a clock, the state DB, the provider or a destination, so every decision
//! (destination gone, stray token records, unknown jobs, reclaim_uncopied_after, no provider
//! rules, the circuit breakers) is unit-tested without S3 or the simulator. The keep/delete rules
//! themselves are [`crate::retention::plan`]'s; this module builds its sets and overrides its
//! answer only where a side has a reason to keep (or reclaim) that retention cannot see.

use super::{Row, UnknownBackup, job_of_desc};
use crate::cds::model::{Backup, parse_provider_time};
use crate::config::Retention;
use crate::job::State;
use crate::retention::{self, Location, Reason, Set};
use crate::store::from_ms;
use crate::store::inventory::CopyRow;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::collections::{BTreeMap, BTreeSet};

/// The live destination copies of one set (a job, or a backup id without a job) of an instance.
#[derive(Debug, Clone)]
pub struct DestSet {
    pub time: DateTime<Utc>,
    pub instance_name: String,
    pub copies: Vec<CopyRow>,
}

/// What the state DB's rows of one policy say, arranged for planning.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Jobs whose destination copies were all verified (pruned ones included: they were good).
    pub verified_jobs: BTreeSet<String>,
    /// Per job, the backup ids that have a verified destination copy: only these may ever be
    /// deleted at the provider.
    pub verified_backups: BTreeMap<String, BTreeSet<String>>,
    /// Live destination copies by instance, then by set id. Instances with live provider copies
    /// only are here too (with no sets), so their provider side still gets planned.
    pub instances: BTreeMap<String, BTreeMap<String, DestSet>>,
    /// Per job: when it was requested, and its instance's name.
    pub job_times: BTreeMap<String, (i64, String)>,
    /// Jobs with a pinned copy in any row.
    pub pinned_jobs: BTreeSet<String>,
}

impl Inventory {
    /// Arranges every row of a policy, deleted ones included.
    pub fn from_rows(all: &[CopyRow]) -> Inventory {
        let mut inv = Inventory::default();
        let mut failed_jobs: BTreeSet<String> = BTreeSet::new();
        for c in all.iter().filter(|c| c.at_destination()) {
            let job = c.job_id.clone().unwrap_or_default();
            if c.is_good() {
                inv.verified_jobs.insert(job);
            } else {
                failed_jobs.insert(job);
            }
        }
        // One bad copy makes the whole job unverified.
        for j in &failed_jobs {
            inv.verified_jobs.remove(j);
        }
        for c in all.iter().filter(|c| c.at_destination() && c.is_good()) {
            if let Some(job) = &c.job_id {
                inv.verified_backups
                    .entry(job.clone())
                    .or_default()
                    .insert(c.backup_id.clone());
            }
        }
        for c in all.iter().filter(|c| c.at_destination() && c.is_live()) {
            let sets = inv.instances.entry(c.instance_uuid.clone()).or_default();
            let job = c.job_id.clone().unwrap_or_else(|| c.backup_id.clone());
            let s = sets.entry(job).or_insert_with(|| DestSet {
                time: from_ms(c.requested_at),
                instance_name: c.instance_name.clone(),
                copies: Vec::new(),
            });
            s.copies.push(c.clone());
        }
        for c in all.iter().filter(|c| c.at_provider() && c.is_live()) {
            inv.instances.entry(c.instance_uuid.clone()).or_default();
        }
        // Every row of a job carries the job's request time and instance name: any one will do.
        inv.job_times = all
            .iter()
            .filter_map(|c| {
                c.job_id
                    .clone()
                    .map(|j| (j, (c.requested_at, c.instance_name.clone())))
            })
            .collect();
        inv.pinned_jobs = all
            .iter()
            .filter(|c| c.is_pinned())
            .filter_map(|c| c.job_id.clone())
            .collect();
        inv
    }

    /// Whether a provider record's own backup id has a verified destination copy of the job its
    /// `Desc` names: the last check before `DeleteBackup`.
    pub fn has_verified_copy(&self, record: &Backup) -> bool {
        job_of_desc(&record.desc)
            .and_then(|job| self.verified_backups.get(job))
            .is_some_and(|ids| ids.contains(&record.backup_id))
    }
}

/// What the state DB said about a job a provider record's `Desc` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLookup {
    Found {
        policy: String,
        state: crate::job::State,
    },
    NotFound,
    /// The lookup failed; the message says why.
    Failed(String),
}

/// The policy as the plan needs it.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub policy: &'a str,
    pub retention: &'a Retention,
    /// The policy's schedule zone: calendar buckets are taken in it.
    pub tz: Tz,
    /// Plan and report, delete nothing.
    pub dry_run: bool,
}

/// What the provider side is planned from, besides the inventory.
#[derive(Debug, Clone)]
pub struct ProviderFacts<'a> {
    /// `DescribeBackups` for the instance, or the inventory's view of it.
    pub records: Vec<Backup>,
    /// The jobs named by records' `Desc` that the inventory alone cannot answer for.
    pub jobs: &'a BTreeMap<String, JobLookup>,
    /// The zone of the provider's zone-less times (`cds.time_zone`).
    pub provider_tz: Tz,
    /// From the injected clock: reclaim_uncopied_after ages count to it.
    pub now: DateTime<Utc>,
}

/// A deletion the plan lets go of; [`super::apply`] re-checks it before carrying it out.
#[derive(Debug, Clone)]
pub enum Deletion {
    /// Every copy of the set, each through the destination it was recorded in.
    Destination(Vec<CopyRow>),
    /// The set's provider records.
    Provider {
        set: Set,
        records: Vec<Backup>,
        /// Let go by reclaim_uncopied_after (so no record has a verified copy).
        reclaim: bool,
    },
}

/// One report row and what to do about it (`None`: nothing, a keep or a dry run).
#[derive(Debug, Clone)]
pub struct Planned {
    pub row: Row,
    pub deletion: Option<Deletion>,
}

/// The plan for one side of one instance.
#[derive(Debug, Clone)]
pub struct SidePlan {
    pub location: Location,
    /// One message per circuit breaker that tripped.
    pub blocked: Vec<String>,
    pub rows: Vec<Planned>,
    /// Records that could not be planned (their job could not be looked up).
    pub problems: Vec<String>,
    /// Token records of jobs unknown to the state DB: listed, never planned.
    pub unknown: Vec<UnknownBackup>,
}

impl SidePlan {
    fn new(location: Location) -> SidePlan {
        SidePlan {
            location,
            blocked: Vec::new(),
            rows: Vec::new(),
            problems: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

/// The destination sets of an instance as retention sees them.
fn destination_sets(sets: &BTreeMap<String, DestSet>) -> Vec<Set> {
    sets.iter()
        .map(|(job, s)| Set {
            id: job.clone(),
            time: s.time,
            verified: s.copies.iter().all(|c| c.is_good()),
            pinned: s.copies.iter().any(|c| c.is_pinned()),
            created_by_rdbvault: true,
        })
        .collect()
}

/// Plans the destination side of one instance. `known_destination`: whether a destination name
/// is in the config; a copy recorded in one that is not cannot be reached, so its set is kept.
pub fn destination_side(
    rules: &Rules,
    instance: &str,
    sets: &BTreeMap<String, DestSet>,
    known_destination: impl Fn(&str) -> bool,
) -> SidePlan {
    let dest_sets = destination_sets(sets);
    let plan = retention::plan(
        &dest_sets,
        &rules.retention.destination,
        Location::Destination,
        rules.tz,
        rules.retention.max_deletions_per_run,
    );
    let mut side = SidePlan::new(Location::Destination);
    side.blocked.extend(plan.blocked.clone());
    for d in &plan.decisions {
        let Some(s) = sets.get(&d.id) else { continue };
        let gone = s
            .copies
            .iter()
            .map(|c| c.destination.as_str())
            .find(|name| !known_destination(name));
        let (keep, reasons) = match gone {
            Some(name) if !d.keep => (true, vec![Reason::DestinationGone(name.to_string())]),
            _ => (d.keep, d.reasons.clone()),
        };
        let row = Row {
            policy: rules.policy.to_string(),
            instance_uuid: instance.to_string(),
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
        let deletion = (!keep && !rules.dry_run).then(|| Deletion::Destination(s.copies.clone()));
        side.rows.push(Planned { row, deletion });
    }
    side
}

/// The provider records of one instance, grouped into sets.
#[derive(Debug, Default)]
struct Grouping {
    /// Set id (job id, or the backup id of a record that is a set of its own) -> records.
    groups: BTreeMap<String, Vec<Backup>>,
    /// Records carrying the token of a job whose verified copies are of other backup ids.
    stray: BTreeSet<String>,
    unknown: Vec<UnknownBackup>,
    problems: Vec<String>,
}

fn group_records(
    rules: &Rules,
    inv: &Inventory,
    instance: &str,
    facts: &ProviderFacts,
) -> Grouping {
    let mut g = Grouping::default();
    for r in &facts.records {
        let key = match job_of_desc(&r.desc) {
            Some(job) => {
                if !inv.job_times.contains_key(job) {
                    match facts.jobs.get(job) {
                        // A job of another policy on the same instance is that policy's
                        // business.
                        Some(JobLookup::Found { policy, .. }) if policy != rules.policy => continue,
                        Some(JobLookup::Found { .. }) => {}
                        Some(JobLookup::NotFound) => {
                            g.unknown.push(UnknownBackup {
                                instance_uuid: instance.to_string(),
                                backup_id: r.backup_id.clone(),
                                job_id: job.to_string(),
                            });
                            continue;
                        }
                        Some(JobLookup::Failed(e)) => {
                            g.problems.push(format!(
                                "policy {}: backup {}: cannot look up job {job}: {e}",
                                rules.policy, r.backup_id
                            ));
                            continue;
                        }
                        // Gathering looks up every such job; a record it did not is not planned.
                        None => continue,
                    }
                }
                // A job with verified copies owns only those backup ids; any other record with
                // its token (an extra backup made with a copied `Desc`) is a set of its own,
                // which nothing verified. A job without any verified copy keeps its records
                // together: the set is unverified and never deleted.
                match inv.verified_backups.get(job) {
                    Some(ids) if !ids.contains(&r.backup_id) => {
                        g.stray.insert(r.backup_id.clone());
                        r.backup_id.clone()
                    }
                    _ => job.to_string(),
                }
            }
            None => r.backup_id.clone(),
        };
        g.groups.entry(key).or_default().push(r.clone());
    }
    g
}

/// The provider sets as retention sees them. A set's time is its job's request time, else the
/// earliest start time the provider gives.
fn provider_sets(inv: &Inventory, g: &Grouping, provider_tz: Tz) -> Vec<Set> {
    g.groups
        .iter()
        .map(|(key, recs)| {
            let token = recs.iter().any(|r| job_of_desc(&r.desc).is_some());
            let time = inv
                .job_times
                .get(key)
                .map(|(t, _)| from_ms(*t))
                .or_else(|| {
                    recs.iter()
                        .filter_map(|r| parse_provider_time(&r.start_time, &provider_tz))
                        .min()
                })
                .unwrap_or_default();
            Set {
                id: key.clone(),
                time,
                verified: token && !g.stray.contains(key) && inv.verified_jobs.contains(key),
                pinned: inv.pinned_jobs.contains(key),
                created_by_rdbvault: token,
            }
        })
        .collect()
}

/// Retention's plan for the provider side; without provider rules nothing is deleted there:
/// everything is kept, saying why.
fn provider_retention(rules: &Rules, sets: &[Set]) -> retention::Plan {
    match &rules.retention.provider {
        Some(keep) => retention::plan(
            sets,
            keep,
            Location::Provider,
            rules.tz,
            rules.retention.max_deletions_per_run,
        ),
        None => retention::Plan {
            decisions: sets
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
    }
}

/// Provider sets `retention.provider.reclaim_uncopied_after` lets go of: made by a job of this
/// policy that failed or was missed (so no verified copy exists), older than the rule at `now`,
/// with a newer verified set of the instance at the destination, and not the instance's newest
/// provider backup. Pinned sets and records that only carry a copied `Desc` are never
/// candidates.
fn reclaim_candidates(
    rules: &Rules,
    provider_sets: &[Set],
    dest_sets: &[Set],
    stray: &BTreeSet<String>,
    facts: &ProviderFacts,
) -> BTreeSet<String> {
    let Some(after) = rules.retention.reclaim_uncopied_after else {
        return BTreeSet::new();
    };
    let age = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    let newest = provider_sets.iter().map(|s| s.time).max();
    provider_sets
        .iter()
        .filter(|s| {
            s.created_by_rdbvault
                && !s.verified
                && !s.pinned
                && !stray.contains(&s.id)
                && facts.now - s.time > age
                && newest.is_some_and(|n| s.time < n)
                && dest_sets.iter().any(|d| d.verified && d.time > s.time)
        })
        // Only a job this DB knows ended without a copy: never an open job's backup.
        .filter(|s| {
            matches!(facts.jobs.get(&s.id), Some(JobLookup::Found { policy, state })
                if policy == rules.policy && matches!(state, State::Failed | State::Missed))
        })
        .map(|s| s.id.clone())
        .collect()
}

/// Plans the provider side of one instance. `dest`: the instance's destination sets (a
/// reclaim needs a newer verified one).
pub fn provider_side(
    rules: &Rules,
    inv: &Inventory,
    instance: &str,
    dest: &BTreeMap<String, DestSet>,
    facts: &ProviderFacts,
) -> SidePlan {
    let g = group_records(rules, inv, instance, facts);
    let sets = provider_sets(inv, &g, facts.provider_tz);
    let plan = provider_retention(rules, &sets);
    let mut side = SidePlan::new(Location::Provider);
    side.blocked.extend(plan.blocked.clone());
    let mut reclaimable =
        reclaim_candidates(rules, &sets, &destination_sets(dest), &g.stray, facts);
    let planned = plan.decisions.iter().filter(|d| !d.keep).count();
    let max = rules.retention.max_deletions_per_run;
    if !reclaimable.is_empty() && planned + reclaimable.len() > max as usize {
        side.blocked.push(format!(
            "reclaiming {} uncopied provider backup(s) besides {planned} deletion(s) would exceed max_deletions_per_run ({max}): none reclaimed",
            reclaimable.len(),
        ));
        reclaimable.clear();
    }
    for d in &plan.decisions {
        let (Some(recs), Some(s)) = (g.groups.get(&d.id), sets.iter().find(|s| s.id == d.id))
        else {
            continue;
        };
        let reclaim = reclaimable.contains(&d.id);
        let (keep, reasons) = if g.stray.contains(&d.id) {
            (true, vec![Reason::NoVerifiedCopyOfThisBackup])
        } else if let (true, Some(after)) = (reclaim, rules.retention.reclaim_uncopied_after) {
            let after = crate::config::units::format_duration(after);
            (false, vec![Reason::ReclaimUncopied(after)])
        } else {
            (d.keep, d.reasons.clone())
        };
        let row = Row {
            policy: rules.policy.to_string(),
            instance_uuid: instance.to_string(),
            instance_name: inv
                .job_times
                .get(&d.id)
                .map(|(_, n)| n.clone())
                .or_else(|| dest.values().next().map(|s| s.instance_name.clone()))
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
        let deletion = (!keep && !rules.dry_run).then(|| Deletion::Provider {
            set: s.clone(),
            records: recs.clone(),
            reclaim,
        });
        side.rows.push(Planned { row, deletion });
    }
    side.problems = g.problems;
    side.unknown = g.unknown;
    side
}

#[cfg(test)]
mod tests;

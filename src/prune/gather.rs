//! The reading half of a retention run: the provider's records for an instance (a live
//! `DescribeBackups`, or the inventory's view of it) and what the state DB says about the jobs
//! those records name. Everything read here is handed to [`super::plan`] as plain data.
//!
//! The inventory rows themselves are one query, read by [`super::prune_policy_from`]; a dry run
//! never touches a destination (only [`super::apply`] deletes, through the cached handles).

use super::plan::{Inventory, JobLookup};
use super::{ProviderView, job_of_desc};
use crate::cds::DESC_TOKEN_PREFIX;
use crate::cds::model::Backup;
use crate::config::Policy;
use crate::services::Context;
use crate::store::inventory::CopyRow;
use std::collections::BTreeMap;

/// The provider's records for one instance, from `view`.
///
/// # Errors
/// `DescribeBackups` failed: the message for the report, which says the side was not planned,
/// and whether the provider refused the credentials.
pub async fn provider_records(
    ctx: &Context,
    policy: &Policy,
    view: ProviderView,
    all: &[CopyRow],
    instance: &str,
) -> Result<Vec<Backup>, (String, bool)> {
    match view {
        ProviderView::Inventory => Ok(inventory_records(all, instance)),
        ProviderView::Live => ctx.cds.describe_backups(instance).await.map_err(|e| {
            let text = format!(
                "policy {}: instance {instance}: provider side not planned: {e}",
                policy.name
            );
            (text, e.is_credentials())
        }),
    }
}

/// The provider copies the inventory records for one instance, as `DescribeBackups` would list
/// them (for the DB-only view).
pub fn inventory_records(all: &[CopyRow], instance: &str) -> Vec<Backup> {
    all.iter()
        .filter(|c| c.at_provider() && c.is_live() && c.instance_uuid == instance)
        .map(|c| Backup {
            backup_id: c.backup_id.clone(),
            instance_id: c.instance_uuid.clone(),
            desc: c
                .job_id
                .as_ref()
                .map(|j| format!("{DESC_TOKEN_PREFIX}{j}"))
                .unwrap_or_default(),
            status: Backup::FINISHED.into(),
            backup_size: c.size.map(|s| s.max(0) as u64),
            ..Default::default()
        })
        .collect()
}

/// Looks up, once each, the jobs named by `records` that the plan needs the state DB for: a job
/// the inventory does not know (another policy's, or unknown to this DB), and, when the policy
/// has `reclaim_uncopied_after`, a job without verified copies (reclaim only lets go of a job
/// that failed or was missed).
pub async fn lookup_jobs(
    ctx: &Context,
    policy: &Policy,
    inv: &Inventory,
    records: &[Backup],
) -> BTreeMap<String, JobLookup> {
    let reclaim = policy.retention.reclaim_uncopied_after.is_some();
    let mut out = BTreeMap::new();
    for job in records.iter().filter_map(|r| job_of_desc(&r.desc)) {
        let needed =
            !inv.job_times.contains_key(job) || (reclaim && !inv.verified_jobs.contains(job));
        if !needed || out.contains_key(job) {
            continue;
        }
        let lookup = match ctx.store.job(job).await {
            Ok(j) => JobLookup::Found {
                policy: j.policy,
                state: j.state,
            },
            Err(crate::store::Error::NotFound(_)) => JobLookup::NotFound,
            Err(e) => JobLookup::Failed(e.to_string()),
        };
        out.insert(job.to_string(), lookup);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(location: &str, instance: &str, job: Option<&str>, backup: &str) -> CopyRow {
        CopyRow {
            id: 1,
            location: location.into(),
            policy: "p".into(),
            instance_uuid: instance.into(),
            instance_name: "prod-1".into(),
            job_id: job.map(Into::into),
            backup_id: backup.into(),
            shard_id: "0".into(),
            destination: String::new(),
            object_key: None,
            size: Some(-1),
            sha256: None,
            rdb_version: None,
            rdb_contents: None,
            requested_at: 0,
            verified: 1,
            verified_at: None,
            pinned: 0,
            missing: 0,
            deleted_at: None,
            last_check_at: None,
            last_check_error: None,
        }
    }

    #[test]
    fn the_inventory_view_lists_live_provider_copies_of_the_instance_with_their_token() {
        let mut deleted = row("provider", "i1", Some("J2"), "b2");
        deleted.deleted_at = Some(5);
        let all = [
            row("provider", "i1", Some("J1"), "b1"),
            deleted,
            row("destination", "i1", Some("J1"), "b1"),
            row("provider", "i2", Some("J3"), "b3"),
            row("provider", "i1", None, "b4"),
        ];
        let records = inventory_records(&all, "i1");
        let ids: Vec<_> = records.iter().map(|r| r.backup_id.as_str()).collect();
        assert_eq!(ids, ["b1", "b4"]);
        assert_eq!(job_of_desc(&records[0].desc), Some("J1"));
        assert_eq!(records[1].desc, "", "no job, no token");
        assert!(records[0].is_finished());
        assert_eq!(
            records[0].backup_size,
            Some(0),
            "a negative size reads as 0"
        );
    }
}

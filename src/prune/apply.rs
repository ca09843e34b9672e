//! The acting half of a retention run: carries out a [`SidePlan`]'s deletions, re-checking each
//! one first, records them in the state DB, counts them in the metrics, logs and counts what a
//! circuit breaker blocked, and adds every row to the report.
//!
//! Failures are recorded in the row and logged, never fatal: the next prune tries again.

use super::Report;
use super::plan::{Deletion, Inventory, Planned, SidePlan};
use crate::cds::model::Backup;
use crate::config::Policy;
use crate::retention::{Location, Set};
use crate::services::Context;
use crate::store::inventory::CopyRow;
use crate::store::ms;

/// Carries out one side's plan for `instance` and adds it to `report`. Destination copies are
/// deleted through the handle of the destination each was recorded in (the services' cache).
pub async fn apply(
    ctx: &Context,
    policy: &Policy,
    instance: &str,
    side: SidePlan,
    inv: &Inventory,
    report: &mut Report,
) {
    report.problems.extend(side.problems);
    report.unknown_to_state_db.extend(side.unknown);
    for why in &side.blocked {
        blocked(ctx, report, policy, instance, side.location, why).await;
    }
    for Planned { mut row, deletion } in side.rows {
        match deletion {
            None => {}
            Some(Deletion::Destination(copies)) => {
                let result = delete_destination_set(ctx, &copies).await;
                if result.is_ok() {
                    ctx.metrics
                        .retention_deleted
                        .with_label_values(&[policy.name.as_str(), "destination"])
                        .inc();
                }
                row.deleted = Some(result);
            }
            // Belt and braces: never delete what the plan must not have chosen.
            Some(Deletion::Provider {
                set,
                records,
                reclaim,
            }) if provider_set_deletable(&set, reclaim) => {
                let result =
                    delete_provider_set(ctx, policy, instance, inv, &records, reclaim).await;
                if result.is_ok() {
                    ctx.metrics
                        .retention_deleted
                        .with_label_values(&[policy.name.as_str(), "provider"])
                        .inc();
                }
                row.deleted = Some(result);
            }
            Some(Deletion::Provider { .. }) => {}
        }
        report.rows.push(row);
    }
}

/// Logs, counts and reports a plan a circuit breaker blocked.
async fn blocked(
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
    let event = crate::notify::Event::new(
        crate::config::EventKind::RetentionBlocked,
        &policy.name,
        instance,
        "",
        ctx.now(),
    )
    .with_error(&format!("{location:?} side: {why}").to_lowercase());
    crate::notify::emit(&ctx.store, &ctx.config, &event).await;
    report.blocked.push((
        policy.name.clone(),
        instance.to_string(),
        location,
        why.to_string(),
    ));
}

/// The set-level re-check before any `DeleteBackup`: made by rdbvault, verified (or let go by
/// reclaim_uncopied_after), not pinned. A set failing it is quietly kept.
pub(super) fn provider_set_deletable(set: &Set, reclaim: bool) -> bool {
    set.created_by_rdbvault && (set.verified || reclaim) && !set.pinned
}

/// Deletes a set's provider records, each only if its own backup id has a verified copy (or the
/// set is reclaimed). A record already gone counts as deleted.
async fn delete_provider_set(
    ctx: &Context,
    policy: &Policy,
    instance: &str,
    inv: &Inventory,
    records: &[Backup],
    reclaim: bool,
) -> Result<(), String> {
    let mut result = Ok(());
    for r in records {
        if !inv.has_verified_copy(r) && !reclaim {
            result = Err(format!(
                "backup {} has no verified copy: not deleted",
                r.backup_id
            ));
            continue;
        }
        // Re-checked before every attempt (retries too): a replica whose lease lapsed stops
        // here.
        match ctx
            .cds
            .delete_backup_checked(instance, &r.backup_id, || ctx.may_delete())
            .await?
        {
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
    result
}

/// Deletes a set's objects, each through the destination its copy was recorded in.
async fn delete_destination_set(ctx: &Context, copies: &[CopyRow]) -> Result<(), String> {
    for c in copies {
        let Some(handle) = ctx.destinations.get(&c.destination) else {
            return Err(format!(
                "destination `{}` is no longer in the config; the copy is kept",
                c.destination
            ));
        };
        // Re-checked before every deletion: a replica whose lease lapsed stops here.
        ctx.may_delete().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_recheck_refuses_foreign_pinned_and_unverified_sets_unless_reclaimed() {
        let good = Set {
            id: "J".into(),
            time: chrono::DateTime::UNIX_EPOCH,
            verified: true,
            pinned: false,
            created_by_rdbvault: true,
        };
        assert!(provider_set_deletable(&good, false));
        let foreign = Set {
            created_by_rdbvault: false,
            ..good.clone()
        };
        let pinned = Set {
            pinned: true,
            ..good.clone()
        };
        let unverified = Set {
            verified: false,
            ..good.clone()
        };
        for reclaim in [false, true] {
            assert!(!provider_set_deletable(&foreign, reclaim));
            assert!(!provider_set_deletable(&pinned, reclaim));
        }
        assert!(!provider_set_deletable(&unverified, false));
        assert!(provider_set_deletable(&unverified, true), "reclaimed");
    }
}

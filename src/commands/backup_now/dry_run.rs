//! `backup-now --dry-run`: what `backup-now` would do now, with nothing created.
//!
//! It asks the provider which instances the policy selects (one `DescribeDBInstances`) and
//! names the selectors each matched; says where each copy would land (the destination and the
//! object key prefix `{prefix}{policy}/{instance_uuid}/`); and plans retention as a dry run
//! ([`crate::prune::plan_policies`] in [`Mode::DryRun`]), listing the sets it would delete.
//! No job, no `CreateBackup`, no write to the state DB: the DB is opened read-only when it
//! exists, and a missing one means there is no history yet (it is not created).

use super::select_instances;
use crate::cds::model::Instance;
use crate::config::{Config, Policy};
use crate::destination::Handle;
use crate::failure::Failure;
use crate::prune::{Mode, ProviderView, Report};
use crate::services::Context;
use crate::store::{JobRow, Store};
use std::sync::Arc;

/// `backup-now --policy P [--instance UUID] --dry-run`. The same selection errors as a real
/// run (an `--instance` the policy does not select is exit 2, a policy that selects nothing
/// exit 3); otherwise exit 0.
pub(super) async fn dry_run(
    cfg: Arc<Config>,
    policy: &Policy,
    instance: Option<&str>,
) -> Result<(), Failure> {
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    // With a state DB, the whole (read-only) bundle, for the retention plan; without one, the
    // API client alone.
    let ctx = match existing_store(&cfg).await? {
        Some(store) => {
            let owner = crate::services::owner_id("backup-now");
            Some(
                crate::services::around(cfg.clone(), store, metrics.clone(), owner, Arc::default())
                    .await?,
            )
        }
        None => None,
    };
    let cds = match &ctx {
        Some(ctx) => ctx.cds.clone(),
        None => crate::services::cds_client(&cfg.cds, metrics.api.clone())?,
    };
    let all = cds
        .describe_db_instances(&crate::cds::Params::new())
        .await?;
    let selected = select_instances(policy, &all, instance)?;
    let open = match &ctx {
        Some(ctx) => open_jobs(&ctx.store).await?,
        None => Vec::new(),
    };
    for line in selection_lines(policy, &selected, all.len(), &open) {
        outln!("{line}");
    }
    let handle = destination_handle(&cfg, ctx.as_ref(), policy).await?;
    for line in target_lines(policy, &handle, &selected) {
        outln!("{line}");
    }
    match &ctx {
        Some(ctx) => print_retention(ctx, policy, &selected).await?,
        None => outln!(
            "retention: no state DB yet at {} ({}): no history, nothing to delete",
            cfg.state.describe(),
            cfg.state.key()
        ),
    }
    if let Some(ctx) = ctx {
        ctx.store.close().await;
    }
    outln!("dry run: nothing was created (no job, no CreateBackup, no write to the state DB)");
    Ok(())
}

/// The state DB opened read-only, or `None` when it does not exist yet (it is not created).
async fn existing_store(cfg: &Config) -> Result<Option<Store>, Failure> {
    match Store::connect_read_only(&cfg.state).await {
        Ok(store) => Ok(Some(store)),
        Err(crate::store::Error::Missing { .. }) => Ok(None),
        Err(e @ crate::store::Error::Outdated { .. }) => Err(Failure::Usage(format!(
            "{}: {}: {e}",
            cfg.source.display(),
            cfg.state.key()
        ))),
        Err(e) => Err(Failure::Runtime(e.into())),
    }
}

/// How many recent jobs are looked through for open ones (open jobs are recent).
const RECENT_JOBS: u32 = 1000;

/// The open jobs among the most recent ones: an instance with one gets no new job.
async fn open_jobs(store: &Store) -> Result<Vec<JobRow>, Failure> {
    let recent = store.list_jobs(None, None, RECENT_JOBS).await?;
    Ok(recent
        .into_iter()
        .filter(|j| !j.state.is_terminal())
        .collect())
}

/// The policy's destination handle: the bundle's, or one built for it (no state DB yet).
async fn destination_handle(
    cfg: &Config,
    ctx: Option<&Context>,
    policy: &Policy,
) -> Result<Handle, Failure> {
    if let Some(handle) = ctx.and_then(|c| c.destinations.get(&policy.destination)) {
        return Ok(handle.clone());
    }
    let dest = cfg.destinations.get(&policy.destination).ok_or_else(|| {
        Failure::Usage(format!(
            "policy `{}`: destination `{}` is not in the config",
            policy.name, policy.destination
        ))
    })?;
    Ok(Handle::new(dest).await?)
}

/// The selected instances, each with the selectors that matched it and, when it has an open
/// job, that a real run would not start a second one.
fn selection_lines(
    policy: &Policy,
    selected: &[Instance],
    in_account: usize,
    open: &[JobRow],
) -> Vec<String> {
    let mut lines = vec![format!(
        "policy `{}` selects {} of the account's {in_account} instance(s) now (DescribeDBInstances):",
        policy.name,
        selected.len()
    )];
    for inst in selected {
        let matched: Vec<String> = policy
            .instances
            .iter()
            .filter(|s| s.matches(inst))
            .map(ToString::to_string)
            .collect();
        lines.push(format!(
            "  {} ({})  matched by {}",
            inst.instance_name,
            inst.instance_uuid,
            matched.join("; ")
        ));
        if let Some(job) = open.iter().find(|j| j.instance_uuid == inst.instance_uuid) {
            lines.push(format!(
                "    has an open job {} ({}): backup-now would not start a second one",
                job.id,
                job.state.as_str()
            ));
        }
    }
    lines
}

/// Where each copy would land: the destination, then per instance the object key prefix and
/// where that is.
fn target_lines(policy: &Policy, handle: &Handle, selected: &[Instance]) -> Vec<String> {
    let mut lines = vec![format!(
        "copies would go to destination `{}`: {}",
        policy.destination,
        handle.describe()
    )];
    for inst in selected {
        let prefix = key_prefix(handle.key_prefix(), &policy.name, &inst.instance_uuid);
        lines.push(format!(
            "  {}: keys {prefix}YYYY/MM/DD/<YYYYMMDDTHHMMSSZ>-<backup id>[-<shard id>].rdb ({})",
            inst.instance_name,
            handle.locate(&prefix)
        ));
    }
    lines
}

/// `{prefix}{policy}/{instance_uuid}/`: where every object key of an instance's copies starts
/// (`transfer::object_key`).
fn key_prefix(destination_prefix: &str, policy: &str, instance_uuid: &str) -> String {
    format!(
        "{destination_prefix}{policy}/{}/",
        crate::transfer::key_component(instance_uuid)
    )
}

/// The retention dry run for the selected instances: the sets it would delete, and the note
/// that the plan does not count the new backup.
async fn print_retention(
    ctx: &Context,
    policy: &Policy,
    selected: &[Instance],
) -> Result<(), Failure> {
    let plan = crate::prune::plan_policies(
        ctx,
        Some(&policy.name),
        None,
        Mode::DryRun,
        ProviderView::Live,
    )
    .await?;
    let doomed = deletions_of(plan, selected);
    if doomed.rows.is_empty() {
        outln!("retention would delete nothing of these instances");
        for p in &doomed.problems {
            outln!("PROBLEM {p}");
        }
    } else {
        outln!(
            "retention would delete {} set(s) of these instances:",
            doomed.rows.len()
        );
        crate::commands::sets_table::SetsTable::new(&ctx.store, &doomed, Mode::DryRun, Vec::new())
            .await?
            .print();
    }
    outln!(
        "  (planned before the new backup exists: once stored it is one more set to keep, so a \
count rule such as keep_last may then let one more old set go)"
    );
    Ok(())
}

/// The rows of `plan` that would be deleted, of the selected instances only (the others'
/// retention does not change with this run), with its problems and blocked plans.
fn deletions_of(plan: Report, selected: &[Instance]) -> Report {
    let chosen = |uuid: &str| selected.iter().any(|i| i.instance_uuid == uuid);
    Report {
        rows: plan
            .rows
            .into_iter()
            .filter(|r| !r.keep && chosen(&r.instance_uuid))
            .collect(),
        blocked: plan.blocked.into_iter().filter(|b| chosen(&b.1)).collect(),
        ..plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let text = "destinations: { d: { type: file, path: /tmp/archive } }\npolicies:\n  - name: nightly\n    schedule: { cron: \"0 2 * * *\" }\n    instances: [ { name: \"prod-*\" }, { uuid: \"8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11\" } ]\n    destination: d\n    retention: { destination: { keep_last: 1 } }\n";
        crate::config::parse(text, std::path::Path::new("t.yaml"))
            .unwrap()
            .policies
            .remove(0)
    }

    const CLUSTER: &str = "8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11";

    fn instance(uuid: &str, name: &str) -> Instance {
        Instance {
            instance_uuid: uuid.into(),
            instance_name: name.into(),
            ..Instance::default()
        }
    }

    #[test]
    fn each_selected_instance_names_every_selector_it_matched() {
        let selected = [
            instance("aaaa-1", "prod-cache-01"),
            instance(CLUSTER, "prod-cluster-01"),
        ];
        let lines = selection_lines(&policy(), &selected, 3, &[]);
        assert_eq!(
            lines,
            [
                "policy `nightly` selects 2 of the account's 3 instance(s) now (DescribeDBInstances):",
                "  prod-cache-01 (aaaa-1)  matched by name \"prod-*\"",
                "  prod-cluster-01 (8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11)  matched by name \"prod-*\"; uuid 8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11",
            ]
        );
    }

    #[test]
    fn an_instance_with_an_open_job_is_said_to_get_no_second_one() {
        let selected = [instance(CLUSTER, "prod-cluster-01")];
        let open = JobRow {
            id: "0190a1b2".into(),
            policy: "other".into(),
            instance_uuid: CLUSTER.into(),
            instance_name: "prod-cluster-01".into(),
            destination: "d".into(),
            trigger: "schedule".into(),
            state: crate::job::State::Transferring,
            ..JobRow::blank()
        };
        let lines = selection_lines(&policy(), &selected, 3, &[open]);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[2],
            "    has an open job 0190a1b2 (transferring): backup-now would not start a second one"
        );
    }

    #[test]
    fn the_key_prefix_is_the_destinations_then_policy_then_instance() {
        assert_eq!(key_prefix("", "nightly", "aaaa-1"), "nightly/aaaa-1/");
        assert_eq!(
            key_prefix("redis/", "nightly", "aaaa-1"),
            "redis/nightly/aaaa-1/"
        );
        // Encoded as the object keys are.
        assert_eq!(key_prefix("", "p", "a/b"), "p/a%2Fb/");
    }
}

//! `prune`, and [`plan_policies`], the retention plan over every policy that `backups` and
//! `GET /v1/backups` run as a dry run.

use super::policies_named;
use crate::app::Failure;
use crate::config::Config;
use crate::job;
use crate::prune::Mode;
use std::sync::Arc;

/// Retention for every policy (or one), merged into one report; in [`Mode::DryRun`] nothing is
/// changed: that is the JSON of `backups --json` and `GET /v1/backups`.
pub async fn plan_policies(
    ctx: &job::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    mode: Mode,
    view: crate::prune::ProviderView,
) -> anyhow::Result<crate::prune::Report> {
    let mut all = crate::prune::Report::default();
    for p in ctx
        .config
        .policies
        .iter()
        .filter(|p| policy.is_none_or(|n| p.name == n))
    {
        let r = crate::prune::prune_policy_from(ctx, p, None, mode, view).await?;
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

/// `prune [--policy P] [--dry-run]`.
pub async fn prune(cfg: Config, policy: Option<&str>, dry_run: bool) -> Result<(), Failure> {
    let cfg = Arc::new(cfg);
    policies_named(&cfg, policy)?;
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let ctx = crate::daemon::build_context(cfg.clone(), crate::daemon::owner_id("prune"), metrics)
        .await?;
    let mode = Mode::from_dry_run(dry_run);
    let all = plan_policies(&ctx, policy, None, mode, crate::prune::ProviderView::Live).await?;
    crate::prune::print(&all, mode, None);
    let deleted = all
        .rows
        .iter()
        .filter(|r| matches!(r.deleted, Some(Ok(()))))
        .count();
    let planned = all.rows.iter().filter(|r| !r.keep).count();
    if mode == Mode::DryRun {
        println!("dry run: {planned} set(s) would be deleted; nothing was changed");
    } else {
        println!("deleted {deleted} set(s); {} failure(s)", all.failures());
    }
    ctx.store.close().await;
    if all.failures() > 0 || !all.problems.is_empty() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{} deletion(s) failed and {} problem(s); see above",
            all.failures(),
            all.problems.len()
        )));
    }
    Ok(())
}

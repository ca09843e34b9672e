//! `prune [--policy P] [--dry-run] [--json]`.

use super::policies_named;
use crate::config::Config;
use crate::failure::Failure;
use crate::prune::Mode;
use std::sync::Arc;

/// `prune [--policy P] [--dry-run] [--json]`.
pub async fn prune(
    cfg: Config,
    policy: Option<&str>,
    dry_run: bool,
    json: bool,
) -> Result<(), Failure> {
    let cfg = Arc::new(cfg);
    policies_named(&cfg, policy)?;
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let ctx =
        crate::services::open(cfg.clone(), crate::services::owner_id("prune"), metrics).await?;
    let mode = Mode::from_dry_run(dry_run);
    let all =
        crate::prune::plan_policies(&ctx, policy, None, mode, crate::prune::ProviderView::Live)
            .await?;
    let deleted = all
        .rows
        .iter()
        .filter(|r| matches!(r.deleted, Some(Ok(()))))
        .count();
    let planned = all.rows.iter().filter(|r| !r.keep).count();
    if json {
        super::format::print_json(&serde_json::json!({
            "dry_run": mode == Mode::DryRun,
            "planned_deletions": planned,
            "deleted": deleted,
            "failures": all.failures(),
            "report": &all,
        }));
    } else {
        super::sets_table::SetsTable::new(&ctx.store, &all, mode, Vec::new())
            .await?
            .print();
        if mode == Mode::DryRun {
            outln!("dry run: {planned} set(s) would be deleted; nothing was changed");
        } else {
            outln!("deleted {deleted} set(s); {} failure(s)", all.failures());
        }
    }
    ctx.store.close().await;
    super::refused_credentials(&all)?;
    if all.failures() > 0 || !all.problems.is_empty() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{} deletion(s) failed and {} problem(s); see above",
            all.failures(),
            all.problems.len()
        )));
    }
    Ok(())
}

//! `backups` (the inventory table, with each set's re-verification results) and
//! `backups pin|unpin`; the inventory's JSON, which `GET /v1/backups` serves too.

use super::{CopyCheck, job_checks, open_for_reading, plan_policies, policies_named};
use crate::app::Failure;
use crate::config::Config;
use crate::job;
use crate::store::Store;
use std::sync::Arc;

/// The JSON of `backups --json` (provider list live) and `GET /v1/backups` (provider side from
/// the state DB alone, so no HTTP request costs a provider call): a dry-run plan of every
/// policy.
pub async fn inventory(
    ctx: &job::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    view: crate::prune::ProviderView,
) -> anyhow::Result<crate::prune::Report> {
    plan_policies(ctx, policy, instance, crate::prune::Mode::DryRun, view).await
}

/// The clients a read-only command needs (the API for the provider's side, one S3 client per
/// destination) around a read-only state DB; like `daemon::build_context`, which opens the DB
/// for writing.
async fn read_only_context(cfg: Arc<Config>, store: Store) -> Result<job::Context, Failure> {
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let owner = crate::daemon::owner_id("backups");
    Ok(crate::daemon::context_with(cfg, store, metrics, owner, Arc::default()).await?)
}

/// `backups [--policy P] [--instance UUID] [--json]`, `backups pin|unpin ID`.
pub async fn backups(cfg: Config, args: crate::cli::BackupsArgs) -> Result<(), Failure> {
    if let Some(cmd) = args.command {
        let store = Store::open(&cfg.state.path).await?;
        let (id, pin) = match cmd {
            crate::cli::BackupsCommand::Pin { id } => (id, true),
            crate::cli::BackupsCommand::Unpin { id } => (id, false),
        };
        let n = store.set_pinned(&id, pin).await?;
        if n == 0 {
            return Err(Failure::Usage(format!(
                "no backup or job `{id}` in the inventory; see `rdbvault backups`"
            )));
        }
        println!(
            "{} {id} ({n} cop{})",
            if pin { "pinned" } else { "unpinned" },
            if n == 1 { "y" } else { "ies" }
        );
        return Ok(());
    }
    let cfg = Arc::new(cfg);
    policies_named(&cfg, args.policy.as_deref())?;
    // Listing is a dry run: it reads the DB and never creates or changes it.
    let store = open_for_reading(&cfg).await?;
    let ctx = read_only_context(cfg.clone(), store).await?;
    let all = inventory(
        &ctx,
        args.policy.as_deref(),
        args.instance.as_deref(),
        crate::prune::ProviderView::Live,
    )
    .await?;
    let checks = set_checks(&ctx.store, &all).await?;
    if args.json {
        println!(
            "{}",
            // cannot fail: rows of strings and numbers, no non-string map keys.
            serde_json::to_string_pretty(&inventory_json(&all, &checks)).expect("serialisable")
        );
    } else {
        print_inventory(&all, &checks);
    }
    ctx.store.close().await;
    Ok(())
}

/// Per report row (same order), the re-verification results of its destination copies.
async fn set_checks(
    store: &Store,
    report: &crate::prune::Report,
) -> anyhow::Result<Vec<Vec<CopyCheck>>> {
    let mut out = Vec::with_capacity(report.rows.len());
    for r in &report.rows {
        if r.location != crate::retention::Location::Destination {
            out.push(Vec::new());
            continue;
        }
        let checks = job_checks(store, &r.set)
            .await?
            .into_iter()
            .filter(|c| r.backup_ids.contains(&c.backup_id))
            .collect();
        out.push(checks);
    }
    Ok(out)
}

/// The JSON of `backups --json` and `GET /v1/backups`: the report, each row with `reverify`
/// (the last re-verification of each of its copies) and `reverify_failed`.
pub fn inventory_json(
    report: &crate::prune::Report,
    checks: &[Vec<CopyCheck>],
) -> serde_json::Value {
    // cannot fail: rows of strings and numbers, no non-string map keys.
    let mut v = serde_json::to_value(report).expect("serialisable");
    if let Some(rows) = v.get_mut("rows").and_then(|r| r.as_array_mut()) {
        for (row, c) in rows.iter_mut().zip(checks) {
            if let Some(o) = row.as_object_mut() {
                o.insert("reverify_failed".into(), c.iter().any(|c| !c.ok).into());
                o.insert(
                    "reverify".into(),
                    serde_json::to_value(c).expect("serialisable"),
                );
            }
        }
    }
    v
}

/// [`inventory`] as JSON with each set's re-verification results ([`inventory_json`]).
///
/// # Errors
/// See [`inventory`].
pub async fn inventory_with_checks(
    ctx: &job::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    view: crate::prune::ProviderView,
) -> anyhow::Result<serde_json::Value> {
    let report = inventory(ctx, policy, instance, view).await?;
    let checks = set_checks(&ctx.store, &report).await?;
    Ok(inventory_json(&report, &checks))
}

/// The `backups` table: [`crate::prune::print`] with VERIF saying `FAILED <time>` (UTC) for a
/// set whose copy failed its last re-verification.
fn print_inventory(report: &crate::prune::Report, checks: &[Vec<CopyCheck>]) {
    let verif: Vec<String> = report
        .rows
        .iter()
        .zip(checks)
        .map(|(r, c)| match c.iter().find(|c| !c.ok) {
            Some(failed) => format!("FAILED {}", failed.utc_at()),
            None if r.verified => "yes".into(),
            None => "NO".into(),
        })
        .collect();
    crate::prune::print(report, crate::prune::Mode::DryRun, Some(&verif));
}

//! `backups` (the inventory table, with each set's re-verification results) and
//! `backups pin|unpin`; the inventory's JSON, which `GET /v1/backups` serves too.

use super::{open_for_reading, policies_named};
use crate::config::Config;
use crate::failure::Failure;
use crate::store::Store;
use crate::views::{CopyCheck, inventory, inventory_json, set_checks};
use std::sync::Arc;

/// The clients a read-only command needs (the API for the provider's side, one S3 client per
/// destination) around a read-only state DB; like `daemon::build_context`, which opens the DB
/// for writing.
async fn read_only_context(
    cfg: Arc<Config>,
    store: Store,
) -> Result<crate::services::Context, Failure> {
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let owner = crate::services::owner_id("backups");
    Ok(crate::services::around(cfg, store, metrics, owner, Arc::default()).await?)
}

/// `backups [--policy P] [--instance UUID] [--json]`, `backups pin|unpin ID`.
pub async fn backups(cfg: Config, args: crate::cli::BackupsArgs) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    if let Some(cmd) = args.command {
        let store = Store::connect(&cfg.state).await?;
        let (id, pin) = match cmd {
            crate::cli::BackupsCommand::Pin { id } => (id, true),
            crate::cli::BackupsCommand::Unpin { id } => (id, false),
        };
        let job = store
            .find_job(&id)
            .await
            .map_err(super::jobs::lookup_failure)?;
        let n = store.set_pinned(&job.id, pin).await?;
        if n == 0 {
            return Err(Failure::Usage(format!(
                "job {} has no copies in the inventory (it stored none, or retention deleted them); see `{rdbvault} backups`",
                job.id
            )));
        }
        outln!(
            "{} job {} ({n} cop{})",
            if pin { "pinned" } else { "unpinned" },
            job.id,
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
    let keys = crate::views::set_keys(&ctx.store, &all).await?;
    if args.json {
        let mut v = inventory_json(&all, &checks);
        if let Some(rows) = v.get_mut("rows").and_then(|r| r.as_array_mut()) {
            for (row, k) in rows.iter_mut().zip(&keys) {
                if let Some(o) = row.as_object_mut() {
                    o.insert("keys_per_db".into(), serde_json::json!(k));
                }
            }
        }
        super::format::print_json(&v);
    } else {
        print_inventory(&ctx.store, &all, &checks, &keys).await?;
    }
    ctx.store.close().await;
    super::refused_credentials(&all)?;
    if !all.problems.is_empty() {
        // The listing is incomplete: a script must not take it for the whole inventory.
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{} side(s) could not be listed (PROBLEM lines above); the inventory shown is incomplete",
            all.problems.len()
        )));
    }
    Ok(())
}

/// The `backups` table: [`super::sets_table`] with VERIF saying `FAILED <time>` (UTC) for a set
/// whose copy failed its last re-verification, KEYS the keys it held when stored, and DRILL its
/// last restore drill.
async fn print_inventory(
    store: &Store,
    report: &crate::prune::Report,
    checks: &[Vec<CopyCheck>],
    keys: &[Option<std::collections::BTreeMap<u64, u64>>],
) -> Result<(), Failure> {
    // Keys the set held when stored, all databases together ("-": not recorded).
    let keys: Vec<String> = keys
        .iter()
        .map(|k| {
            k.as_ref()
                .map_or("-".into(), |k| k.values().sum::<u64>().to_string())
        })
        .collect();
    let verif: Vec<String> = report
        .rows
        .iter()
        .zip(checks)
        .map(|(r, c)| match c.iter().find(|c| !c.ok) {
            Some(failed) => format!("FAILED {}", super::format::check_utc_at(failed)),
            None if r.verified => "yes".into(),
            None => "NO".into(),
        })
        .collect();
    // The last restore drill of each set: `restored <time>` or `FAILED <time>` (UTC).
    let drills = store.last_drill_of_each_set().await?;
    let drill: Vec<String> = report
        .rows
        .iter()
        .map(|r| match drills.get(&r.set) {
            None => "-".into(),
            Some(d) => format!(
                "{} {}",
                if d.restored() { "restored" } else { "FAILED" },
                crate::store::from_ms(d.finished_at).format("%Y-%m-%d %H:%M")
            ),
        })
        .collect();
    super::sets_table::SetsTable::new(
        store,
        report,
        crate::prune::Mode::DryRun,
        vec![("VERIF", &verif), ("KEYS", &keys), ("DRILL", &drill)],
    )
    .await?
    .print();
    Ok(())
}

//! `state migrate --to postgres://...`: moves a single VM's SQLite journal and inventory into an
//! empty PostgreSQL database, for replicas to share ([`crate::store::Store::copy_into`]).

use super::format::print_json;
use crate::config::{Config, StateConfig};
use crate::failure::Failure;
use crate::store::{Store, ms};
use std::path::Path;

/// `state migrate --to URL [--password-file FILE] [--json]`.
pub async fn state_migrate(
    cfg: &Config,
    to: &str,
    password_file: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    if cfg.state.url.is_some() {
        return Err(Failure::Usage(format!(
            "{}: the state DB is PostgreSQL already (state.url); `state migrate` copies a SQLite state DB (state.path) into PostgreSQL",
            cfg.source.display()
        )));
    }
    if let Some(why) = crate::config::postgres_url_problem(to) {
        return Err(Failure::Usage(format!("--to {why}")));
    }
    let source = super::open_for_reading(cfg).await?;
    if let Some(why) = job_in_progress(cfg, &source).await? {
        source.close().await;
        return Err(Failure::Usage(why));
    }
    let target_state = StateConfig {
        url: Some(to.to_string()),
        password_file: password_file.map(Path::to_path_buf),
        ..cfg.state.clone()
    };
    let target = Store::connect(&target_state).await?;
    if let Some((table, n)) = target
        .table_counts()
        .await?
        .into_iter()
        .find(|(_, n)| *n > 0)
    {
        target.close().await;
        return Err(Failure::Usage(format!(
            "{} is not empty ({table} has {n} rows): `state migrate` copies into an empty database only, so nothing is merged or overwritten",
            target_state.describe()
        )));
    }
    let copied = source.copy_into(&target).await.map_err(|e| {
        Failure::Runtime(anyhow::anyhow!(
            "copying into {} failed, nothing was kept there: {e}",
            target.describe()
        ))
    })?;
    // The check: every table holds as many rows on both sides.
    let (before, after) = (source.table_counts().await?, target.table_counts().await?);
    source.close().await;
    target.close().await;
    if before != after {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "row counts differ after the copy (SQLite {before:?}, PostgreSQL {after:?}); do not switch to {}",
            target_state.describe()
        )));
    }
    report(cfg, &target_state, &copied, json);
    Ok(())
}

/// Why the copy must wait: a job held by a live process (its heartbeat within the lease) would
/// go on writing to SQLite after the copy.
async fn job_in_progress(cfg: &Config, store: &Store) -> Result<Option<String>, Failure> {
    let lease = chrono::Duration::from_std(cfg.state.job_lease).unwrap_or_default();
    let live_since = ms(crate::clock::wall_now() - lease);
    Ok(store
        .open_jobs()
        .await?
        .into_iter()
        .find(|j| j.owner.is_some() && j.heartbeat_at.is_some_and(|h| h >= live_since))
        .map(|j| {
            format!(
                "job {} is in progress (held by {}): stop the daemon and any backup-now using {}, then migrate",
                j.id,
                j.owner.unwrap_or_default(),
                cfg.state.describe()
            )
        }))
}

/// What was copied, and what to do next.
fn report(cfg: &Config, target: &StateConfig, copied: &[(&str, u64)], json: bool) {
    if json {
        let tables: serde_json::Map<String, serde_json::Value> = copied
            .iter()
            .map(|(t, n)| ((*t).to_string(), serde_json::json!(n)))
            .collect();
        print_json(&serde_json::json!({
            "from": cfg.state.describe(),
            "to": target.describe(),
            "rows": tables,
            "counts_match": true,
        }));
        return;
    }
    outln!(
        "copied {} into {}:",
        cfg.state.describe(),
        target.describe()
    );
    for (table, n) in copied {
        outln!("  {table:<15} {n:>8} rows");
    }
    outln!("row counts checked: equal on both sides");
    outln!(
        "next: in {}, replace state.path with state.url: {} (and state.password_file if one is needed), then start the replicas; keep {} until they run well",
        cfg.source.display(),
        target.describe(),
        cfg.state.path.display()
    );
}

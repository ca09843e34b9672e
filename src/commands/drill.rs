//! `drill [ID] [--policy P] [--instance UUID] [--json]`: prove a stored set restores (see
//! [`crate::drill`]). Exit 0 when it does, 3 naming the shard and why when it does not, 2 when
//! there is no usable redis-server or nothing to drill.

use super::policies_named;
use crate::config::Config;
use crate::drill::{self, RedisBinary};
use crate::failure::Failure;
use crate::store::Store;
use std::sync::Arc;

pub async fn drill(
    cfg: Config,
    id: Option<&str>,
    policy: Option<&str>,
    instance: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    let cfg = Arc::new(cfg);
    policies_named(&cfg, policy)?;
    // Before anything is fetched: without a server there is nothing to prove.
    let bin = RedisBinary::find(cfg.drill.redis_server.as_deref())
        .await
        .map_err(|why| Failure::Usage(format!("cannot drill: {why}")))?;
    let store = Store::connect(&cfg.state).await?;
    let copies = match id {
        Some(id) => {
            let named = store.find(id).await.map_err(super::jobs::lookup_failure)?;
            store.copies_of(&named).await?
        }
        None => store.copies(policy, instance).await?,
    };
    let Some(set) = drill::sets(copies).into_iter().next() else {
        return Err(Failure::Usage(match id {
            Some(id) => format!(
                "`{id}` has no verified copy at a destination to drill (see `{rdbvault} backups`)"
            ),
            None => format!(
                "no verified set to drill{}; see `{rdbvault} backups`",
                match (policy, instance) {
                    (None, None) => String::new(),
                    _ => " among the ones asked for".into(),
                }
            ),
        }));
    };
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let owner = crate::services::owner_id("drill");
    let ctx = crate::services::around(cfg.clone(), store, metrics, owner, Arc::default()).await?;
    if !json {
        outln!(
            "drilling set {} of {} ({}), policy {}: {} shard(s), into redis-server {} ({})",
            set.job_id,
            set.instance_name,
            set.instance_uuid,
            set.policy,
            set.copies.len(),
            bin.version,
            bin.path.display()
        );
    }
    let outcome = drill::run_and_record(&ctx, &bin, &set, "manual").await;
    ctx.store.close().await;
    let report = outcome.map_err(|e| match e {
        drill::Error::NoServer(why) | drill::Error::ServerTooOld(why) => {
            Failure::Usage(format!("cannot drill: {why}"))
        }
        drill::Error::Setup(why) => Failure::Runtime(anyhow::anyhow!("cannot drill: {why}")),
    })?;
    if json {
        super::format::print_json(&serde_json::json!({
            "restored": report.restored(),
            "report": report,
        }));
    } else {
        print_shards(&report);
    }
    if report.restored() {
        if !json {
            outln!(
                "RESTORES: set {} loaded with the keys it recorded",
                report.job_id
            );
        }
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "set {} of {} does not restore: {}",
            report.job_id,
            report.instance_name,
            report.detail()
        )))
    }
}

/// One line per shard: what loaded, or why it does not restore.
fn print_shards(report: &drill::Report) {
    for s in &report.shards {
        let name = if s.shard_id.is_empty() {
            &s.backup_id
        } else {
            &s.shard_id
        };
        match &s.problem {
            None => outln!(
                "  {name}: loaded in {:.1}s, {}{}",
                s.load_seconds,
                s.loaded
                    .as_ref()
                    .map_or_else(|| "keys not counted".to_string(), keys),
                match (&s.note, &s.expected) {
                    (Some(n), _) => format!(" ({n})"),
                    (None, Some(_)) => ", as recorded".to_string(),
                    (None, None) => String::new(),
                }
            ),
            Some(p) => outln!("  {name}: DOES NOT RESTORE: {p}"),
        }
    }
}

fn keys(k: &std::collections::BTreeMap<u64, u64>) -> String {
    crate::rdb::contents::Contents {
        keys_per_db: k.clone(),
        ..Default::default()
    }
    .keys_text()
}

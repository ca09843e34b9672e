//! `backup-now`: one job per instance a policy selects, run in the foreground with progress bars.

use super::format::{duration_of, human_bytes, progress_label};
use crate::config::Config;
use crate::failure::Failure;
use crate::runner::Outcome;
use crate::store::jobs::Inserted;
use std::io::IsTerminal as _;
use std::sync::Arc;

/// `backup-now --policy P [--instance UUID]`: one job per selected instance, in the foreground.
pub async fn backup_now(
    cfg: Config,
    policy_name: &str,
    instance: Option<&str>,
) -> Result<(), Failure> {
    let Some(policy) = cfg.policies.iter().find(|p| p.name == policy_name).cloned() else {
        let names: Vec<_> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
        return Err(Failure::Usage(format!(
            "no policy named `{policy_name}` in {}; policies: {}",
            cfg.source.display(),
            names.join(", ")
        )));
    };
    let cfg = Arc::new(cfg);
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let mut ctx = crate::services::open(
        cfg.clone(),
        crate::services::owner_id("backup-now"),
        metrics,
    )
    .await?;

    let all = ctx
        .cds
        .describe_db_instances(&crate::cds::Params::new())
        .await?;
    let mut selected: Vec<_> = crate::scheduler::select(&policy, &all)
        .into_iter()
        .cloned()
        .collect();
    if let Some(uuid) = instance {
        selected.retain(|i| i.instance_uuid.eq_ignore_ascii_case(uuid));
        if selected.is_empty() {
            return Err(Failure::Usage(format!(
                "instance {uuid} is not selected by policy `{policy_name}` (or does not exist)"
            )));
        }
    }
    if selected.is_empty() {
        return Err(Failure::Failed(format!(
            "policy `{policy_name}` selects no instance; nothing to back up"
        )));
    }

    let tty = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    if !tty {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bar_map: Arc<std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>> =
        Arc::default();
    // Job id -> instance name, filled as the jobs are created below, for the bars' labels.
    let job_names: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        Arc::default();
    {
        let (bars, bar_map, job_names) = (bars.clone(), bar_map.clone(), job_names.clone());
        ctx.progress = Some(Arc::new(
            move |job: &str, backup: &str, done: u64, total: Option<u64>| {
                let mut map = bar_map.lock().unwrap_or_else(|e| e.into_inner());
                let bar = map.entry(backup.to_string()).or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(total.unwrap_or(0)));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                        )
                        // cannot fail: a constant template.
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    let names = job_names.lock().unwrap_or_else(|e| e.into_inner());
                    let name = names.get(job).map(String::as_str).unwrap_or("backup");
                    b.set_message(progress_label(name, backup));
                    b
                });
                bar.set_position(done);
                if total == Some(done) {
                    bar.finish();
                }
            },
        ));
    }

    let now = ctx.clock.now();
    let mut job_ids = Vec::new();
    let mut refused = Vec::new();
    for inst in &selected {
        let mut job = crate::scheduler::new_job(&policy, inst, now, "manual", now);
        // Owned from birth: no dispatcher can claim it between its insert and its first step.
        job.owner = Some(ctx.owner.clone());
        match ctx.store.insert_job(&job).await? {
            Inserted::Created => {
                eprintln!(
                    "job {} for {} ({}) started",
                    job.id, inst.instance_name, inst.instance_uuid
                );
                job_names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(job.id.clone(), inst.instance_name.clone());
                job_ids.push(job.id);
            }
            Inserted::InstanceBusy { open_job } => {
                eprintln!(
                    "instance {} ({}) already has an open job {open_job}; not starting a second one",
                    inst.instance_name, inst.instance_uuid
                );
                refused.push(inst.instance_uuid.clone());
            }
        }
    }

    let cancel = tokio_util::sync::CancellationToken::new();
    let hb = tokio::spawn(crate::daemon::heartbeat(ctx.clone(), cancel.clone()));
    let signal_cancel = cancel.clone();
    tokio::spawn(async move {
        crate::daemon::shutdown_signal().await;
        signal_cancel.cancel();
    });
    let limit = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_concurrent_jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for id in job_ids.clone() {
        let (ctx, cancel, limit) = (ctx.clone(), cancel.child_token(), limit.clone());
        tasks.spawn(async move {
            // cannot fail: `limit` is never closed.
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            let outcome = crate::runner::run_job(&ctx, &id, &cancel).await;
            (id, outcome)
        });
    }
    let mut failed = refused.len();
    let mut interrupted = 0;
    while let Some(r) = tasks.join_next().await {
        let (id, outcome) =
            r.map_err(|e| Failure::Runtime(anyhow::anyhow!("job task failed: {e}")))?;
        let job = ctx.store.job(&id).await?;
        match outcome {
            Outcome::Stored => {
                let shards = ctx.store.shards(&id).await.unwrap_or_default();
                println!(
                    "stored  {} {} ({}) {} in {}",
                    job.id,
                    job.instance_name,
                    job.instance_uuid,
                    human_bytes(job.bytes),
                    duration_of(&job)
                );
                for s in shards {
                    println!(
                        "        {} sha256 {}",
                        s.object_key.unwrap_or_default(),
                        s.sha256.unwrap_or_default()
                    );
                }
            }
            Outcome::Failed(e) => {
                failed += 1;
                println!(
                    "failed  {} {} ({}): {e}",
                    job.id, job.instance_name, job.instance_uuid
                );
            }
            Outcome::Missed(e) => {
                failed += 1;
                println!(
                    "missed  {} {} ({}): {e}",
                    job.id, job.instance_name, job.instance_uuid
                );
            }
            Outcome::LostClaim(why) => {
                failed += 1;
                println!(
                    "stopped {} {} ({}): {why}",
                    job.id, job.instance_name, job.instance_uuid
                );
            }
            Outcome::Interrupted => {
                interrupted += 1;
                println!(
                    "stopped {} {} ({}): interrupted; `rdbvault run` resumes it",
                    job.id, job.instance_name, job.instance_uuid
                );
            }
        }
    }
    cancel.cancel();
    let _ = hb.await;
    bars.clear().ok();
    ctx.store.close().await;
    if failed > 0 {
        return Err(Failure::Failed(format!(
            "{failed} of {} backup(s) failed",
            selected.len()
        )));
    }
    if interrupted > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{interrupted} job(s) interrupted before they finished"
        )));
    }
    Ok(())
}

//! `jobs` and `jobs show`, and their JSON read model ([`JobDetail`], [`jobs_json`]), which
//! `GET /v1/jobs` serves too.

use super::format::{duration_of, human_bytes, local};
use super::open_for_reading;
use crate::cli::{JobsArgs, JobsCommand};
use crate::config::Config;
use crate::failure::Failure;
use crate::job::State;
use crate::views::{JobDetail, job_checks, jobs_json, state_label};

/// `jobs` and `jobs show ID`.
pub async fn jobs(cfg: &Config, args: JobsArgs) -> Result<(), Failure> {
    let store = open_for_reading(cfg).await?;
    let rt = |e: crate::store::Error| match e {
        crate::store::Error::NotFound(_) | crate::store::Error::Ambiguous(_) => {
            Failure::Usage(e.to_string())
        }
        other => Failure::Runtime(other.into()),
    };
    if let Some(JobsCommand::Show { id, json }) = args.command {
        let job = store.find_job(&id).await.map_err(rt)?;
        let events = store.events(&job.id).await.map_err(rt)?;
        let detail = JobDetail::load(&store, job, None).await.map_err(rt)?;
        if json {
            let detail = JobDetail {
                events: Some(events),
                ..detail
            };
            println!(
                "{}",
                // cannot fail: rows of strings and numbers, no non-string map keys.
                serde_json::to_string_pretty(&detail).expect("serialisable")
            );
            return Ok(());
        }
        let JobDetail {
            job,
            shards,
            reverify,
            ..
        } = detail;
        println!("job        {}", job.id);
        println!("policy     {}", job.policy);
        println!("instance   {} ({})", job.instance_name, job.instance_uuid);
        println!("state      {}", state_label(&job.state, &reverify));
        println!("trigger    {}", job.trigger);
        println!("destination {}", job.destination);
        for (label, v) in [
            ("due", Some(job.due_at)),
            ("requested", job.requested_at),
            ("snapshot done", job.snapshot_done_at),
            ("transfer done", job.transfer_done_at),
            ("verified", job.verified_at),
            ("finished", job.finished_at),
        ] {
            if let Some(t) = v {
                println!("{label:<14} {}", local(t));
            }
        }
        println!("bytes      {} ({})", job.bytes, human_bytes(job.bytes));
        if let Some(e) = &job.error {
            println!("error      {e}");
        }
        for s in &shards {
            println!(
                "backup     {} shard {:?} {} {} bytes sha256 {} rdb v{} checksum {}",
                s.backup_id,
                s.shard_id,
                s.state,
                s.bytes_done,
                s.sha256.as_deref().unwrap_or("-"),
                s.rdb_version.unwrap_or(0),
                s.checksum.as_deref().unwrap_or("-")
            );
            if let Some(k) = &s.object_key {
                println!("           object {k}");
            }
            for c in reverify.iter().filter(|c| c.backup_id == s.backup_id) {
                match &c.error {
                    None => println!(
                        "           re-verified OK at {}",
                        super::format::check_local_at(c)
                    ),
                    Some(e) => println!(
                        "           re-verified FAILED at {}: {e}",
                        super::format::check_local_at(c)
                    ),
                }
            }
        }
        println!("events:");
        for e in events {
            println!("  {} {:<16} {}", local(e.at), e.kind, e.message);
        }
        return Ok(());
    }
    let state = match args.state.as_deref() {
        Some(s) => Some(s.parse::<State>().map_err(Failure::Usage)?),
        None => None,
    };
    let rows = store
        .list_jobs(args.policy.as_deref(), state, args.limit.unwrap_or(50))
        .await
        .map_err(rt)?;
    if args.json {
        let out = jobs_json(
            &store,
            args.policy.as_deref(),
            state,
            args.limit.unwrap_or(50),
        )
        .await
        .map_err(rt)?;
        println!(
            "{}",
            // cannot fail: rows of strings and numbers, no non-string map keys.
            serde_json::to_string_pretty(&out).expect("serialisable")
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no jobs yet in {}", cfg.state.path.display());
        return Ok(());
    }
    // A stored job whose copy failed re-verification says so in STATE, and ERROR names the
    // copy, when and why.
    let mut table = Vec::with_capacity(rows.len());
    for j in rows {
        let checks = job_checks(&store, &j.id).await.map_err(rt)?;
        let state = state_label(&j.state, &checks);
        let error = match (&j.error, checks.iter().find(|c| !c.ok)) {
            (Some(e), _) => e.clone(),
            (None, Some(c)) => format!(
                "backup {} re-verified FAILED at {}: {}",
                c.backup_id,
                super::format::check_local_at(c),
                c.error.as_deref().unwrap_or("")
            ),
            (None, None) => String::new(),
        };
        table.push((j, state, error));
    }
    let state_width = table.iter().map(|r| r.1.len()).max().unwrap_or(0).max(12);
    println!(
        "{:<36}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  ERROR",
        "ID", "POLICY", "INSTANCE", "STATE", "DUE", "TOOK", "BYTES"
    );
    for (j, state, error) in table {
        let name = if j.instance_name.is_empty() {
            &j.instance_uuid
        } else {
            &j.instance_name
        };
        let error: String = error.chars().take(120).collect();
        println!(
            "{:<36}  {:<14} {:<18} {:<state_width$} {:<19} {:>8} {:>10}  {}",
            j.id,
            j.policy,
            name,
            state,
            local(j.due_at),
            duration_of(&j),
            human_bytes(j.bytes),
            error
        );
    }
    Ok(())
}

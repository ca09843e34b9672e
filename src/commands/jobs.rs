//! `jobs` (the history table, or its JSON) and `jobs show` (one job in detail, or its JSON);
//! `jobs cancel` and `jobs retry` are in `job_control.rs`.
//! The JSON is the read model `GET /v1/jobs` serves too ([`JobDetail`], [`jobs_json`]); the
//! table's layout is in `format.rs`, what goes in its cells is decided here ([`table_row`]).

use super::format::{
    JobsRow, check_local_at, duration_of, human_bytes, jobs_table, local, print_json,
};
use super::open_for_reading;
use crate::cli::{JobsArgs, JobsCommand};
use crate::config::Config;
use crate::failure::Failure;
use crate::job::State;
use crate::store::jobs::EventRow;
use crate::store::{JobRow, ShardRow, Store, ms};
use crate::views::{CopyCheck, JobDetail, job_checks, jobs_json, state_label};

/// `jobs`, `jobs show ID`, `jobs cancel ID` and `jobs retry ID`.
pub async fn jobs(cfg: &Config, args: JobsArgs) -> Result<(), Failure> {
    match args.command {
        Some(JobsCommand::Show { id, json }) => {
            show(cfg, &open_for_reading(cfg).await?, &id, json).await
        }
        Some(JobsCommand::Cancel { id }) => super::job_control::cancel(cfg, &id).await,
        Some(JobsCommand::Retry { id }) => super::job_control::retry(cfg, &id).await,
        None => list(cfg, &open_for_reading(cfg).await?, &args).await,
    }
}

/// A state DB error of `jobs`: an id that matches no job, or several, is the user's mistake
/// (exit 2); anything else is a runtime failure.
pub(super) fn lookup_failure(e: crate::store::Error) -> Failure {
    match e {
        crate::store::Error::NotFound(_) | crate::store::Error::Ambiguous { .. } => {
            Failure::Usage(e.to_string())
        }
        other => Failure::Runtime(other.into()),
    }
}

/// `jobs show ID [--json]`: the job a unique prefix of `id` names.
async fn show(cfg: &Config, store: &Store, id: &str, json: bool) -> Result<(), Failure> {
    let job = store.find_job(id).await.map_err(lookup_failure)?;
    let events = store.events(&job.id).await.map_err(lookup_failure)?;
    let detail = JobDetail::load(store, job, None, cfg.cds.time_zone)
        .await
        .map_err(lookup_failure)?;
    if json {
        print_json(&JobDetail {
            events: Some(events),
            ..detail
        });
    } else {
        print_detail(detail, &events);
    }
    Ok(())
}

/// The detail view: the job's fields and phase times, each shard with its copy and
/// re-verifications, then the event log.
fn print_detail(detail: JobDetail, events: &[EventRow]) {
    let JobDetail {
        job,
        shards,
        reverify,
        ..
    } = detail;
    outln!("job        {}", job.id);
    outln!("policy     {}", job.policy);
    outln!("instance   {} ({})", job.instance_name, job.instance_uuid);
    outln!("state      {}", state_label(job.state, &reverify));
    outln!("trigger    {}", job.trigger);
    outln!("destination {}", job.destination);
    // Only the phases the job reached.
    for (label, v) in [
        ("due", Some(job.due_at)),
        ("requested", job.requested_at),
        ("snapshot done", job.snapshot_done_at),
        ("transfer done", job.transfer_done_at),
        ("verified", job.verified_at),
        ("finished", job.finished_at),
    ] {
        if let Some(t) = v {
            outln!("{label:<14} {}", local(t));
        }
    }
    outln!("bytes      {} ({})", job.bytes, human_bytes(job.bytes));
    if let Some(e) = &job.error {
        outln!("error      {e}");
    }
    for s in &shards {
        print_shard(s, &reverify);
    }
    outln!("events:");
    for e in events {
        outln!("  {} {:<16} {}", local(e.at), e.kind, e.message);
    }
}

/// One shard of `jobs show`: its provider record, its object, and the re-verifications of it.
fn print_shard(s: &ShardRow, reverify: &[CopyCheck]) {
    outln!(
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
        outln!("           object {k}");
    }
    if let Some(c) = s.contents() {
        outln!("           contents {}", c.summary());
    }
    for c in reverify.iter().filter(|c| c.backup_id == s.backup_id) {
        match &c.error {
            None => outln!("           re-verified OK at {}", check_local_at(c)),
            Some(e) => outln!(
                "           re-verified FAILED at {}: {e}",
                check_local_at(c)
            ),
        }
    }
}

/// `jobs [--policy P] [--state S] [--limit N] [--json]`: the newest jobs first.
async fn list(cfg: &Config, store: &Store, args: &JobsArgs) -> Result<(), Failure> {
    let state = match args.state.as_deref() {
        Some(s) => Some(s.parse::<State>().map_err(Failure::Usage)?),
        None => None,
    };
    let (policy, limit) = (args.policy.as_deref(), args.limit.unwrap_or(50));
    if args.json {
        let out = jobs_json(store, policy, state, limit, cfg.cds.time_zone)
            .await
            .map_err(lookup_failure)?;
        print_json(&out);
        return Ok(());
    }
    let jobs = store
        .list_jobs(policy, state, limit)
        .await
        .map_err(lookup_failure)?;
    if jobs.is_empty() {
        outln!("no jobs yet in {}", cfg.state.describe());
        return Ok(());
    }
    // One clock reading for the whole table: the TOOK of every running job is "so far".
    let now = ms(crate::clock::wall_now());
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let short = store.short_ids(&ids).await.map_err(lookup_failure)?;
    let mut rows = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let checks = job_checks(store, &job.id).await.map_err(lookup_failure)?;
        let mut row = table_row(job, &checks, now);
        if let Some(s) = short.get(&job.id) {
            row.id.clone_from(s);
        }
        rows.push(row);
    }
    for line in jobs_table(&rows) {
        outln!("{line}");
    }
    Ok(())
}

/// The cells of a job's row in the `jobs` table. A stored job whose copy failed
/// re-verification says so in STATE, and ERROR names the copy, when and why (the job's own
/// error, if it has one, comes first). A job without an instance name shows its UUID; ERROR is
/// cut at 120 characters so a row stays readable.
fn table_row(job: &JobRow, checks: &[CopyCheck], now_ms: i64) -> JobsRow {
    let error = match (&job.error, checks.iter().find(|c| !c.ok)) {
        (Some(e), _) => e.clone(),
        (None, Some(c)) => format!(
            "backup {} re-verified FAILED at {}: {}",
            c.backup_id,
            check_local_at(c),
            c.error.as_deref().unwrap_or("")
        ),
        (None, None) => String::new(),
    };
    let instance = if job.instance_name.is_empty() {
        &job.instance_uuid
    } else {
        &job.instance_name
    };
    JobsRow {
        id: job.id.clone(),
        policy: job.policy.clone(),
        instance: instance.clone(),
        state: state_label(job.state, checks),
        due: local(job.due_at),
        took: duration_of(job, now_ms),
        bytes: human_bytes(job.bytes),
        error: error.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobRow {
        JobRow {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            policy: "nightly".into(),
            instance_uuid: "5d74bb81-0473-464d-b15b-0ae418619248".into(),
            instance_name: "prod-cache-01".into(),
            region_id: "CN_Beijing_A".into(),
            destination: "archive".into(),
            trigger: "schedule".into(),
            state: crate::job::State::Stored,
            due_at: 1_700_000_000_000,
            start_by: 1_700_000_300_000,
            deadline_at: 1_700_003_600_000,
            created_at: 1_700_000_000_000,
            create_sent_at: Some(1_700_000_001_000),
            requested_at: Some(1_700_000_001_000),
            snapshot_done_at: Some(1_700_000_030_000),
            transfer_started_at: Some(1_700_000_030_000),
            transfer_done_at: Some(1_700_000_090_000),
            verified_at: Some(1_700_000_090_000),
            finished_at: Some(1_700_000_091_000),
            attempts: 1,
            bytes: 8 << 20,
            ..JobRow::blank()
        }
    }

    fn check(backup_id: &str, error: Option<&str>) -> CopyCheck {
        CopyCheck {
            backup_id: backup_id.into(),
            shard_id: "s1".into(),
            destination: "archive".into(),
            object_key: Some("nightly/prod/x.rdb".into()),
            ok: error.is_none(),
            at: "2026-01-02T03:04:05Z".into(),
            error: error.map(String::from),
        }
    }

    #[test]
    fn a_job_row_shows_its_cells_as_the_table_prints_them() {
        let row = table_row(&job(), &[check("b1", None)], 0);
        assert_eq!(row.id, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert_eq!(row.policy, "nightly");
        assert_eq!(row.instance, "prod-cache-01");
        assert_eq!(row.state, "stored");
        assert_eq!(row.due, local(1_700_000_000_000));
        assert_eq!(row.took, duration_of(&job(), 0));
        assert_eq!(row.bytes, "8.0 MiB");
        assert_eq!(row.error, "");
    }

    #[test]
    fn a_failed_re_verification_shows_in_state_and_names_the_copy_in_error() {
        let bad = check("b1", Some("corrupt: sha256 differs"));
        let row = table_row(&job(), &[check("b0", None), bad.clone()], 0);
        assert_eq!(row.state, "stored (copy failed re-verify)");
        assert_eq!(
            row.error,
            format!(
                "backup b1 re-verified FAILED at {}: corrupt: sha256 differs",
                check_local_at(&bad)
            )
        );
    }

    #[test]
    fn the_jobs_own_error_comes_before_a_failed_re_verification() {
        let failed = JobRow {
            error: Some("CreateBackup refused".into()),
            ..job()
        };
        let row = table_row(&failed, &[check("b1", Some("missing: gone"))], 0);
        assert_eq!(row.error, "CreateBackup refused");
    }

    #[test]
    fn a_job_without_an_instance_name_shows_its_uuid() {
        let nameless = JobRow {
            instance_name: String::new(),
            ..job()
        };
        let row = table_row(&nameless, &[], 0);
        assert_eq!(row.instance, "5d74bb81-0473-464d-b15b-0ae418619248");
    }

    #[test]
    fn a_long_error_is_cut_at_120_characters() {
        let long = JobRow {
            error: Some("错".repeat(200)),
            ..job()
        };
        let row = table_row(&long, &[], 0);
        assert_eq!(row.error.chars().count(), 120);
    }

    #[test]
    fn an_unknown_or_ambiguous_job_id_is_a_usage_error() {
        use crate::failure::exit;
        let unknown = lookup_failure(crate::store::Error::NotFound("0190".into()));
        assert_eq!(unknown.exit_code(), exit::USAGE);
        assert!(
            unknown.to_string().starts_with("no job matches `0190`"),
            "{unknown}"
        );
        let ambiguous = lookup_failure(crate::store::Error::Ambiguous {
            given: "0".into(),
            candidates: vec!["01a".into(), "01b".into()],
        });
        assert_eq!(ambiguous.exit_code(), exit::USAGE);
        assert_eq!(
            ambiguous.to_string(),
            "`0` matches several jobs (01a, 01b); give more of the id"
        );
        let other = lookup_failure(crate::store::Error::Missing {
            path: "/x.db".into(),
        });
        assert_eq!(other.exit_code(), exit::RUNTIME);
    }
}

//! The pipeline's foreground commands: `backup-now`, `jobs`, `jobs show`, `demo`.

use crate::app::Failure;
use crate::cli::{JobsArgs, JobsCommand};
use crate::config::{self, Config};
use crate::job::{self, Outcome, State};
use crate::store::jobs::Inserted;
use crate::store::{JobRow, Store, from_ms, ms};
use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::sync::Arc;

/// At most `max` characters of `s`, with `…` when cut. By characters, not bytes: provider ids
/// and instance names may be non-ASCII, and slicing them on a byte offset panics.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().nth(max).is_none() {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A progress bar's label: the instance name and the shard's backup id, both shortened by
/// characters so a bar stays one line on a terminal.
fn progress_label(instance_name: &str, backup_id: &str) -> String {
    format!("{} {}", shorten(instance_name, 16), shorten(backup_id, 12))
}

fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size as f64 {
            return format!("{:.1} {unit}", n / size as f64);
        }
    }
    format!("{n} B")
}

fn local(ms_value: i64) -> String {
    from_ms(ms_value)
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn duration_of(job: &JobRow) -> String {
    let start = job.create_sent_at.unwrap_or(job.created_at);
    let end = job
        .finished_at
        .unwrap_or_else(|| ms(crate::clock::wall_now()));
    let secs = ((end - start).max(0) as f64 / 1000.0).round() as u64;
    config::units::format_duration(std::time::Duration::from_secs(secs))
}

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
    let mut ctx =
        crate::daemon::build_context(cfg.clone(), crate::daemon::owner_id("backup-now"), metrics)
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
            let outcome = job::run_job(&ctx, &id, &cancel).await;
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

#[derive(serde::Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    job: JobRow,
    shards: Vec<crate::store::ShardRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<crate::store::jobs::EventRow>>,
    /// The last re-verification of each stored copy that has had one.
    reverify: Vec<CopyCheck>,
    /// Whether a stored copy of the job failed its last re-verification (the job stays
    /// `stored`: it did store a verified copy; the copy went bad afterwards).
    reverify_failed: bool,
}

/// The last re-verification (`verify`, or the daemon's `verify:` rounds) of one stored copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyCheck {
    pub backup_id: String,
    pub shard_id: String,
    pub destination: String,
    pub object_key: Option<String>,
    pub ok: bool,
    /// When, RFC 3339 (UTC).
    pub at: String,
    /// Why it failed; absent when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CopyCheck {
    fn of(c: &crate::store::inventory::CopyRow) -> Option<CopyCheck> {
        let at = c.last_check_at?;
        Some(CopyCheck {
            backup_id: c.backup_id.clone(),
            shard_id: c.shard_id.clone(),
            destination: c.destination.clone(),
            object_key: c.object_key.clone(),
            ok: c.last_check_error.is_none(),
            at: from_ms(at).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            error: c.last_check_error.clone(),
        })
    }

    /// The time in the local zone, as the other times of `jobs show`.
    fn local_at(&self) -> String {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|t| local(t.timestamp_millis()))
            .unwrap_or_else(|_| self.at.clone())
    }

    /// The time in UTC, as the other times of `backups`.
    fn utc_at(&self) -> String {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|_| self.at.clone())
    }
}

/// The re-verification results of a job's stored copies.
async fn job_checks(store: &Store, job_id: &str) -> Result<Vec<CopyCheck>, crate::store::Error> {
    Ok(store
        .checked_copies_of_job(job_id)
        .await?
        .iter()
        .filter_map(CopyCheck::of)
        .collect())
}

/// A job's state for the `jobs` table and `jobs show`: `stored (copy failed re-verify)` when a
/// stored copy failed its last re-verification.
fn state_label(state: &str, checks: &[CopyCheck]) -> String {
    if checks.iter().any(|c| !c.ok) {
        format!("{state} (copy failed re-verify)")
    } else {
        state.to_string()
    }
}

impl JobDetail {
    async fn load(
        store: &Store,
        job: JobRow,
        events: Option<Vec<crate::store::jobs::EventRow>>,
    ) -> Result<JobDetail, crate::store::Error> {
        let shards = store.shards(&job.id).await?;
        let reverify = job_checks(store, &job.id).await?;
        Ok(JobDetail {
            reverify_failed: reverify.iter().any(|c| !c.ok),
            job,
            shards,
            events,
            reverify,
        })
    }
}

/// The JSON of `jobs --json` and `GET /v1/jobs`.
pub async fn jobs_json(
    store: &Store,
    policy: Option<&str>,
    state: Option<State>,
    limit: u32,
) -> Result<Vec<JobDetail>, crate::store::Error> {
    let mut out = Vec::new();
    for job in store.list_jobs(policy, state, limit).await? {
        out.push(JobDetail::load(store, job, None).await?);
    }
    Ok(out)
}

/// Retention for every policy (or one), merged into one report; with `dry_run` nothing is
/// changed: that is the JSON of `backups --json` and `GET /v1/backups`.
pub async fn plan_policies(
    ctx: &job::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    dry_run: bool,
    view: crate::prune::ProviderView,
) -> anyhow::Result<crate::prune::Report> {
    let mut all = crate::prune::Report::default();
    for p in ctx
        .config
        .policies
        .iter()
        .filter(|p| policy.is_none_or(|n| p.name == n))
    {
        let r = crate::prune::prune_policy_from(ctx, p, None, dry_run, view).await?;
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

/// The JSON of `backups --json` (provider list live) and `GET /v1/backups` (provider side from
/// the state DB alone, so no HTTP request costs a provider call): a dry-run plan of every
/// policy.
pub async fn inventory(
    ctx: &job::Context,
    policy: Option<&str>,
    instance: Option<&str>,
    view: crate::prune::ProviderView,
) -> anyhow::Result<crate::prune::Report> {
    plan_policies(ctx, policy, instance, true, view).await
}

/// The JSON of `GET /v1/policies`: each policy with its next runs.
pub fn policies_json(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::Value::Array(
        cfg.policies
            .iter()
            .map(|p| {
                let s = &p.schedule;
                serde_json::json!({
                    "name": p.name,
                    "cron": s.cron.as_str(),
                    "timezone": s.timezone.name(),
                    "next_runs": s.cron.upcoming(now, s.timezone, 3).iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
                    "expected_interval_seconds": crate::scheduler::expected_interval(p, now, 64).map(|d| d.as_secs()),
                    "destination": p.destination,
                    "instances": p.instances.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// Opens the state DB for a command that only reads it (`jobs`, `backups`, `fetch`): never
/// creates or migrates it. A DB that does not exist is a configuration problem (exit 2): the
/// message names the config file, the resolved path and how it was resolved.
async fn open_for_reading(cfg: &Config) -> Result<Store, Failure> {
    Store::open_read_only(&cfg.state.path)
        .await
        .map_err(|e| match e {
            crate::store::Error::Missing { .. } => {
                Failure::Usage(format!("{}: state.path: {e}", cfg.source.display()))
            }
            other => Failure::Runtime(other.into()),
        })
}

/// The clients a read-only command needs (the API for the provider's side, one S3 client per
/// destination) around a read-only state DB; like `daemon::build_context`, which opens the DB
/// for writing.
async fn read_only_context(cfg: Arc<Config>, store: Store) -> Result<job::Context, Failure> {
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let owner = crate::daemon::owner_id("backups");
    Ok(crate::daemon::context_with(cfg, store, metrics, owner, Arc::default()).await?)
}

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
                    None => println!("           re-verified OK at {}", c.local_at()),
                    Some(e) => println!("           re-verified FAILED at {}: {e}", c.local_at()),
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
                c.local_at(),
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

/// `demo`: the simulator, a throwaway state DB and directory, a policy every 10 seconds.
pub async fn demo() -> Result<(), Failure> {
    let dir = tempfile::Builder::new()
        .prefix("rdbvault-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir.path();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the simulator")?;
    let mut sim_cfg = crate::sim::SimConfig::from_env();
    sim_cfg.access_key_id = crate::sim::DEMO_ACCESS_KEY_ID.into();
    sim_cfg.access_key_secret = crate::secret::Secret::new(crate::sim::DEMO_ACCESS_KEY_SECRET);
    sim_cfg.settings.backup_delay = std::time::Duration::from_secs(2);
    sim_cfg.settings.default_backup_size = 8 << 20;
    let sim = crate::sim::start(listener, sim_cfg).await?;

    write_private(
        &root.join("cds_access_key_id"),
        crate::sim::DEMO_ACCESS_KEY_ID,
    )?;
    write_private(
        &root.join("cds_access_key_secret"),
        crate::sim::DEMO_ACCESS_KEY_SECRET,
    )?;
    crate::private_fs::create_dir_all(&root.join("archive"))
        .context("cannot create the archive directory")?;
    let http = if std::net::TcpListener::bind("127.0.0.1:9750").is_ok() {
        "127.0.0.1:9750"
    } else {
        "127.0.0.1:0"
    };
    let yaml = format!(
        r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {root}/cds_access_key_id
  access_key_secret_file: {root}/cds_access_key_secret
  timeout: 10s
state:
  path: {root}/rdbvault.db
http:
  listen: {http}
destinations:
  archive:
    type: file
    path: {root}/archive
policies:
  - name: demo
    schedule:
      cron: "*/10 * * * * *"
      start_window: 30s
      completion_window: 5m
      catch_up: none
    instances:
      - name: "prod-*"
    destination: archive
    retention:
      destination: {{ keep_last: 5 }}
"#,
        endpoint = sim.base_url,
        root = root.display(),
    );
    let config_path = root.join("rdbvault.yaml");
    std::fs::write(&config_path, &yaml).context("cannot write the demo config")?;
    let cfg = Arc::new(config::load(&config_path)?);
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let mut ctx =
        crate::daemon::build_context(cfg.clone(), crate::daemon::owner_id("demo"), metrics).await?;
    ctx.poll = job::PollSettings {
        initial: std::time::Duration::from_millis(500),
        max: std::time::Duration::from_secs(2),
        ..job::PollSettings::default()
    };
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .context("cannot bind the metrics endpoint")?;
    let metrics_addr = listener.local_addr().context("metrics address")?;

    println!("rdbvault demo");
    println!(
        "  simulated CDS Redis API  {}/redis/  (instances prod-cache-01, prod-cluster-01 with 2 shards, staging-cache)",
        sim.base_url
    );
    println!(
        "  policy                   demo: every 10 seconds, instances \"prod-*\", keep_last 5"
    );
    println!("  copies land in           {}/archive", root.display());
    println!("  state DB                 {}/rdbvault.db", root.display());
    println!("  config                   {}", config_path.display());
    println!("  metrics                  http://{metrics_addr}/metrics");
    println!(
        "  try, in another terminal: rdbvault -c {} jobs",
        config_path.display()
    );
    println!("Ctrl-C stops the demo (and removes {}).", root.display());
    println!();

    let store = ctx.store.clone();
    let daemon = tokio::spawn(crate::daemon::run(
        ctx,
        listener,
        crate::daemon::shutdown_signal(),
    ));
    let mut seen = std::collections::HashSet::new();
    let archive = root.join("archive");
    loop {
        if daemon.is_finished() {
            break;
        }
        if let Ok(rows) = store.list_jobs(Some("demo"), None, 20).await {
            for j in rows.into_iter().rev() {
                if !State::from_str_lossy(&j.state).is_terminal() || !seen.insert(j.id.clone()) {
                    continue;
                }
                match j.state.as_str() {
                    "stored" => {
                        for s in store.shards(&j.id).await.unwrap_or_default() {
                            println!(
                                "{}  stored   {:<16} {}  {}  sha256 {}…",
                                local(j.finished_at.unwrap_or(j.created_at)),
                                j.instance_name,
                                archive.join(s.object_key.unwrap_or_default()).display(),
                                human_bytes(s.bytes_done),
                                s.sha256
                                    .unwrap_or_default()
                                    .chars()
                                    .take(16)
                                    .collect::<String>()
                            );
                        }
                    }
                    other => println!(
                        "{}  {other:<8} {:<16} {}",
                        local(j.finished_at.unwrap_or(j.created_at)),
                        j.instance_name,
                        j.error.unwrap_or_default()
                    ),
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    match daemon.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::Runtime(e)),
        Err(e) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "demo daemon task failed: {e}"
            )));
        }
    }
    sim.stop().await;
    println!("demo stopped; removing {}", root.display());
    Ok(())
}

fn write_private(path: &std::path::Path, content: &str) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(())
}

impl State {
    /// Parses a state from the DB; an unknown one reads as failed (it can only come from a
    /// newer version).
    pub fn from_str_lossy(s: &str) -> State {
        s.parse().unwrap_or(State::Failed)
    }
}

fn policies_named<'a>(
    cfg: &'a Config,
    name: Option<&str>,
) -> Result<Vec<&'a config::Policy>, Failure> {
    match name {
        None => Ok(cfg.policies.iter().collect()),
        Some(n) => match cfg.policies.iter().find(|p| p.name == n) {
            Some(p) => Ok(vec![p]),
            None => Err(Failure::Usage(format!(
                "no policy named `{n}`; policies: {}",
                cfg.policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// `prune [--policy P] [--dry-run]`.
pub async fn prune(cfg: Config, policy: Option<&str>, dry_run: bool) -> Result<(), Failure> {
    let cfg = Arc::new(cfg);
    policies_named(&cfg, policy)?;
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let ctx = crate::daemon::build_context(cfg.clone(), crate::daemon::owner_id("prune"), metrics)
        .await?;
    let all = plan_policies(
        &ctx,
        policy,
        None,
        dry_run,
        crate::prune::ProviderView::Live,
    )
    .await?;
    crate::prune::print(&all, dry_run, None);
    let deleted = all
        .rows
        .iter()
        .filter(|r| matches!(r.deleted, Some(Ok(()))))
        .count();
    let planned = all.rows.iter().filter(|r| !r.keep).count();
    if dry_run {
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
    crate::prune::print(report, true, Some(&verif));
}

/// Re-reads copies and records the result; returns the bad ones.
pub async fn verify_copies(
    store: &Store,
    cfg: &Config,
    copies: &[crate::store::inventory::CopyRow],
    mut report: impl FnMut(
        &crate::store::inventory::CopyRow,
        &Result<crate::transfer::Stored, crate::verify::Bad>,
    ),
) -> anyhow::Result<usize> {
    let mut handles: std::collections::HashMap<String, crate::destination::Handle> =
        Default::default();
    let mut bad = 0;
    for c in copies {
        let Some(dest) = cfg.destinations.get(&c.destination) else {
            anyhow::bail!(
                "copy {} is in destination `{}`, which is no longer in the config",
                c.backup_id,
                c.destination
            );
        };
        if !handles.contains_key(&c.destination) {
            handles.insert(
                c.destination.clone(),
                crate::destination::Handle::new(dest).await?,
            );
        }
        let result = crate::verify::check_copy(&handles[&c.destination], c, None, &|_| {}).await;
        let now = ms(crate::clock::wall_now());
        // A verdict on the copy is recorded with its time and reason (`jobs`, `jobs show` and
        // `backups` show it); an unreadable destination says nothing about the copy, so it
        // is reported but leaves the record as it was.
        match &result {
            Ok(_) => store.record_check(c.id, None, false, now).await?,
            Err(b @ crate::verify::Bad::Missing(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), true, now)
                    .await?;
            }
            Err(b @ crate::verify::Bad::Corrupt(_)) => {
                bad += 1;
                store
                    .record_check(c.id, Some(&b.to_string()), false, now)
                    .await?;
            }
            Err(crate::verify::Bad::Unreadable(_)) => bad += 1,
        }
        report(c, &result);
    }
    Ok(bad)
}

/// `verify [ID ...] [--all]`.
pub async fn verify(cfg: Config, ids: Vec<String>, all: bool) -> Result<(), Failure> {
    if ids.is_empty() && !all {
        return Err(Failure::Usage(
            "name the copies to verify (job or backup ids), or pass --all".into(),
        ));
    }
    let store = Store::open(&cfg.state.path).await?;
    let copies = store.destination_copies(&ids).await?;
    if copies.is_empty() {
        return Err(Failure::Usage(if all {
            "no stored copies to verify yet".into()
        } else {
            format!("no stored copy matches {}", ids.join(", "))
        }));
    }
    let bad = verify_copies(&store, &cfg, &copies, |c, r| match r {
        Ok(s) => println!(
            "ok   {} {} {} bytes sha256 {}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            s.size,
            s.sha256
        ),
        Err(b) => println!(
            "BAD  {} {} (backup {}, job {}): {b}",
            c.destination,
            c.object_key.as_deref().unwrap_or("-"),
            c.backup_id,
            c.job_id.as_deref().unwrap_or("-")
        ),
    })
    .await?;
    println!(
        "{} cop{} checked, {bad} bad",
        copies.len(),
        if copies.len() == 1 { "y" } else { "ies" }
    );
    store.close().await;
    if bad > 0 {
        return Err(Failure::Failed(format!(
            "{bad} stored cop{} failed verification (named above)",
            if bad == 1 { "y" } else { "ies" }
        )));
    }
    Ok(())
}

/// Where `fetch` writes: `output` itself, or `output/<object name>` when `output` is a directory
/// (the last component of the object key). Every reason to refuse is found here, before a byte
/// is downloaded.
fn fetch_target(
    output: &std::path::Path,
    object_key: &str,
    force: bool,
) -> Result<std::path::PathBuf, Failure> {
    use std::path::{Path, PathBuf};
    let target: PathBuf = if output.is_dir() {
        let name = object_key.rsplit('/').next().unwrap_or("");
        if name.is_empty() || name == "." || name == ".." {
            return Err(Failure::Usage(format!(
                "cannot name a file in {} after the object key `{object_key}`; give -o FILE",
                output.display()
            )));
        }
        output.join(name)
    } else if output.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Failure::Usage(format!(
            "the directory {} for -o does not exist; create it (mkdir -p) or choose another",
            output.display()
        )));
    } else {
        output.to_path_buf()
    };
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => {
            return Err(Failure::Usage(format!(
                "{} is a directory; give -o a file name, or a directory without an entry of that name",
                target.display()
            )));
        }
        Ok(_) if !force => {
            return Err(Failure::Usage(format!(
                "{} exists; pass --force to overwrite it",
                target.display()
            )));
        }
        _ => {}
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(target),
        Ok(_) => Err(Failure::Usage(format!(
            "{} (for -o) is not a directory",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure::Usage(format!(
            "the directory {} for -o does not exist; create it (mkdir -p) or choose another",
            dir.display()
        ))),
        Err(e) => Err(Failure::Usage(format!(
            "cannot use the directory {} for -o: {e}",
            dir.display()
        ))),
    }
}

/// A file that is removed when dropped, unless kept: `fetch`'s temporary file, so no way out of
/// `fetch` (an error, a failed verification, Ctrl-C) leaves it behind.
struct TempFile {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Resolves when the user interrupts (SIGINT, SIGTERM, SIGHUP).
async fn interrupted(signals: &mut [tokio::signal::unix::Signal; 3]) -> &'static str {
    let [int, term, hup] = signals;
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// `fetch ID -o FILE|DIR [--force]`: a stored copy back to a local file, verified on the way.
/// Refusals come before any download; a failed or interrupted fetch leaves nothing behind.
pub async fn fetch(
    cfg: Config,
    id: &str,
    output: &std::path::Path,
    force: bool,
) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let store = open_for_reading(&cfg).await?;
    let copies = store.destination_copies(&[id.to_string()]).await?;
    store.close().await;
    let copy = match copies.as_slice() {
        [] => {
            return Err(Failure::Usage(format!(
                "no stored copy matches `{id}` (a job id or a provider backup id); see `rdbvault backups`"
            )));
        }
        [one] => one.clone(),
        many => {
            return Err(Failure::Usage(format!(
                "`{id}` has {} copies (one per shard); fetch each by its backup id: {}",
                many.len(),
                many.iter()
                    .map(|c| c.backup_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let Some(object_key) = copy.object_key.clone() else {
        return Err(Failure::Failed(format!(
            "copy of backup {} has no object key recorded; nothing to fetch",
            copy.backup_id
        )));
    };
    let output = fetch_target(output, &object_key, force)?;
    let dest = cfg.destinations.get(&copy.destination).ok_or_else(|| {
        Failure::Usage(format!(
            "destination `{}` is no longer in the config",
            copy.destination
        ))
    })?;
    let handle = crate::destination::Handle::new(dest).await?;
    // Installed before the temp file exists, so an interrupt always finds it to remove.
    let on = |kind: SignalKind| {
        signal(kind).map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot install a signal handler for a clean interrupt: {e}"
            ))
        })
    };
    let mut signals = [
        on(SignalKind::interrupt())?,
        on(SignalKind::terminate())?,
        on(SignalKind::hangup())?,
    ];
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let temp = TempFile {
        path: dir.join(format!(
            ".{}.rdbvault-fetch-{}",
            output
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("backup"),
            uuid::Uuid::new_v4().simple()
        )),
        keep: false,
    };
    // 0600 from the start: the temp file becomes the fetched copy, which holds every key.
    let mut file = crate::private_fs::create(&temp.path).await.map_err(|e| {
        Failure::Usage(format!(
            "cannot create a file in {} (for -o): {e}; choose a directory you can write to",
            dir.display()
        ))
    })?;
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(copy.size.unwrap_or(0).max(0) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            // cannot fail: a constant template.
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message("fetch");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |n| bar.set_position(n);
    let result = tokio::select! {
        r = crate::verify::check_copy(&handle, &copy, Some(&mut file), &progress) => r,
        sig = interrupted(&mut signals) => {
            bar.finish_and_clear();
            drop(file);
            drop(temp);
            return Err(Failure::Runtime(anyhow::anyhow!(
                "interrupted by {sig}; nothing was written to {}",
                output.display()
            )));
        }
    };
    bar.finish_and_clear();
    let stored = match result {
        Ok(s) => s,
        Err(bad) => {
            return Err(Failure::Failed(format!(
                "{bad}; nothing was written to {}",
                output.display()
            )));
        }
    };
    file.sync_all().await.with_context(|| {
        format!(
            "cannot fsync {}; nothing was written to {}",
            temp.path.display(),
            output.display()
        )
    })?;
    drop(file);
    tokio::fs::rename(&temp.path, &output)
        .await
        .with_context(|| {
            format!(
                "cannot move the verified file to {}; nothing was written there",
                output.display()
            )
        })?;
    let mut temp = temp;
    temp.keep = true;
    println!(
        "{}: {} bytes, sha256 {}, RDB v{} ({}), from {}",
        output.display(),
        stored.size,
        stored.sha256,
        stored.rdb.version,
        stored.checksum_label(),
        handle.locate(&object_key)
    );
    Ok(())
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn labels_shorten_non_ascii_ids_by_characters() {
        let label = progress_label("缓存-生产-一号", "备份-一二三四五六七八九十");
        assert_eq!(label, "缓存-生产-一号 备份-一二三四五六七八…");
        assert_eq!(shorten("备份-一二三四五六七八九十", 12).chars().count(), 12);
        assert_eq!(
            progress_label("prod-cache-01", "0123456789abcdef"),
            "prod-cache-01 0123456789a…"
        );
        assert_eq!(shorten("short", 12), "short");
        assert_eq!(shorten("exactly-12ch", 12), "exactly-12ch");
        assert_eq!(shorten("", 12), "");
        assert_eq!(shorten("abc", 0), "");
    }
}

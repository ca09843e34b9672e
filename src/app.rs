//! What each command does: wiring config, the CDS client, destinations and the simulator
//! together, and mapping failures to the exit codes of docs/product.md §1.

use crate::cds::{self, Action, Client, ParamValue, Params};
use crate::cli::{Cli, Command, SimArgs};
use crate::config::{self, Config, DestinationKind, credentials};
use crate::metrics::ApiMetrics;
use anyhow::Context as _;
use std::fmt::Write as _;

pub use crate::failure::Failure;

/// Runs the parsed command line.
///
/// # Errors
/// A [`Failure`] whose [`Failure::exit_code`] the process should exit with.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let (config_path, explicit) = cli.config_path();
    match cli.command {
        Command::CheckConfig { online } => {
            init_logging(config::LogFormat::Text, "warn");
            let cfg = config::load(&config_path)?;
            check_config(&cfg, online).await
        }
        Command::Api {
            action,
            params,
            yes,
            endpoint,
        } => {
            init_logging(config::LogFormat::Text, "warn");
            let mut cds_cfg = config::load_cds(&config_path, explicit)?;
            if let Some(e) = endpoint {
                cds_cfg.endpoint = e;
            }
            api(&cds_cfg, &action, &params, yes).await
        }
        Command::Sim(args) => {
            init_logging(config::LogFormat::Text, "info");
            sim(args).await
        }
        Command::Run => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, &cfg.log.level);
            run_daemon(cfg).await
        }
        Command::BackupNow { policy, instance } => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::backup_now(cfg, &policy, instance.as_deref()).await
        }
        Command::Jobs(args) => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::jobs(&cfg, args).await
        }
        Command::Demo => {
            init_logging(config::LogFormat::Text, "warn");
            crate::commands::demo().await
        }
        Command::Backups(args) => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::backups(cfg, args).await
        }
        Command::Prune { policy, dry_run } => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::prune(cfg, policy.as_deref(), dry_run).await
        }
        Command::Verify { ids, all } => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::verify(cfg, ids, all).await
        }
        Command::Fetch { id, output, force } => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::fetch(cfg, &id, &output, force).await
        }
    }
}

/// Sets up logging once: `RUST_LOG` wins over the configured level.
pub fn init_logging(format: config::LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

async fn run_daemon(cfg: Config) -> Result<(), Failure> {
    // A token file that cannot be used is a configuration problem: exit 2 before anything runs.
    let token = crate::http::load_token(&cfg).map_err(|e| Failure::Usage(e.to_string()))?;
    let cfg = std::sync::Arc::new(cfg);
    let metrics = crate::metrics::Metrics::register(prometheus::Registry::new())?;
    let ctx =
        crate::services::open(cfg.clone(), crate::services::owner_id("daemon"), metrics).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", cfg.http.listen))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %bound, policies = cfg.policies.len(), state = %cfg.state.path.display(), "rdbvault daemon started");
    crate::daemon::run_with_reload(
        ctx,
        listener,
        crate::daemon::shutdown_signal(),
        Some(cfg.source.clone()),
        token,
    )
    .await?;
    tracing::info!("rdbvault daemon stopped");
    Ok(())
}

async fn api(
    cds_cfg: &config::CdsConfig,
    action: &str,
    raw_params: &[String],
    yes: bool,
) -> Result<(), Failure> {
    let action: Action = action
        .parse()
        .map_err(|e: cds::action::UnknownAction| Failure::Usage(e.to_string()))?;
    let mut params = Params::new();
    for kv in raw_params {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(Failure::Usage(format!(
                "`{kv}` is not KEY=VALUE; e.g. InstanceUuid=5d74bb81-0473-464d-b15b-0ae418619248"
            )));
        };
        let value = match action.param(k).map(|p| p.ty) {
            Some(cds::ParamType::Integer) => match v.parse::<i64>() {
                Ok(i) => ParamValue::Int(i),
                Err(_) => {
                    return Err(Failure::Usage(format!(
                        "{action}: `{k}` must be an integer, got {v:?}"
                    )));
                }
            },
            _ => ParamValue::Str(v.to_string()),
        };
        params.insert(k.to_string(), value);
    }
    Client::validate(action, &params).map_err(|e| Failure::Usage(e.to_string()))?;
    if action.is_destructive() && !yes {
        return Err(Failure::Usage(format!(
            "{action} changes or deletes resources at the provider; add --yes to confirm"
        )));
    }
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry)?;
    let client = crate::services::cds_client(cds_cfg, metrics)?;
    let resp = client.call(action, &params).await?;
    println!(
        "{}",
        // cannot fail: a serde_json::Value always serialises.
        serde_json::to_string_pretty(&resp.raw).expect("JSON values serialise")
    );
    Ok(())
}

fn format_local(t: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z (UTC%:z)")
        .to_string()
}

fn describe_keep(k: &config::KeepRules) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("keep_last", k.keep_last),
        ("keep_hourly", k.keep_hourly),
        ("keep_daily", k.keep_daily),
        ("keep_weekly", k.keep_weekly),
        ("keep_monthly", k.keep_monthly),
        ("keep_yearly", k.keep_yearly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if let Some(w) = k.keep_within {
        parts.push(format!("keep_within {}", config::units::format_duration(w)));
    }
    parts.push(format!("min_verified {}", k.min_verified));
    parts.join(", ")
}

/// The offline report of `check-config`.
pub fn describe_config(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", cfg.source.display());
    let _ = writeln!(
        out,
        "cds: {} (timeout {}, API times read in {})",
        cds::client::redis_base_url(&cfg.cds.endpoint),
        config::units::format_duration(cfg.cds.timeout),
        cfg.cds.time_zone
    );
    let cred = |file: &Option<std::path::PathBuf>, env: &str| match file {
        Some(p) => format!("file {}", p.display()),
        None => format!("${env}"),
    };
    let _ = writeln!(
        out,
        "credentials: access key id from {}, secret from {} (read by --online, run and api)",
        cred(&cfg.cds.access_key_id_file, credentials::ENV_ACCESS_KEY_ID),
        cred(
            &cfg.cds.access_key_secret_file,
            credentials::ENV_ACCESS_KEY_SECRET
        )
    );
    let _ = writeln!(
        out,
        "state: {}   http: {}{}   log: {} {}",
        cfg.state.path.display(),
        cfg.http.listen,
        match &cfg.http.token_file {
            Some(p) => format!(" (/v1 bearer token from {}, read by run)", p.display()),
            None => String::new(),
        },
        cfg.log.level,
        format!("{:?}", cfg.log.format).to_lowercase()
    );
    let _ = writeln!(out, "destinations:");
    for d in cfg.destinations.values() {
        let detail = match &d.kind {
            DestinationKind::S3(s3) => format!(
                " (part {} x {}{}{})",
                config::units::format_size(s3.part_size),
                s3.upload_concurrency,
                if s3.path_style { ", path-style" } else { "" },
                s3.storage_class
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default()
            ),
            DestinationKind::File(_) => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<12} {}{detail}",
            d.name,
            crate::destination::describe(d)
        );
    }
    let _ = writeln!(out, "policies:");
    for p in &cfg.policies {
        let s = &p.schedule;
        let _ = writeln!(
            out,
            "  {}: cron \"{}\" in {}, jitter {}, start within {}, finish within {}, catch-up {}, to {} ({} download)",
            p.name,
            s.cron,
            s.timezone,
            config::units::format_duration(s.jitter),
            config::units::format_duration(s.start_window),
            config::units::format_duration(s.completion_window),
            format!("{:?}", s.catch_up).to_lowercase(),
            p.destination,
            format!("{:?}", p.download).to_lowercase()
        );
        let runs = s.cron.upcoming(now, s.timezone, 3);
        if runs.is_empty() {
            let _ = writeln!(out, "    next runs: never (this cron never fires again)");
        }
        for (i, t) in runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "    {} {}",
                if i == 0 { "next runs:" } else { "          " },
                format_local(*t, s.timezone)
            );
        }
        let selectors: Vec<_> = p.instances.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "    instances: {}", selectors.join("; "));
        let _ = writeln!(
            out,
            "    retention: destination {}",
            describe_keep(&p.retention.destination)
        );
        match &p.retention.provider {
            Some(k) => {
                let _ = writeln!(out, "               provider {}", describe_keep(k));
            }
            None => {
                let _ = writeln!(
                    out,
                    "               provider: no rules, rdbvault never deletes provider backups"
                );
            }
        }
        let _ = writeln!(
            out,
            "               at most {} deletions per run",
            p.retention.max_deletions_per_run
        );
    }
    out
}

async fn check_config(cfg: &Config, online: bool) -> Result<(), Failure> {
    print!("{}", describe_config(cfg, crate::clock::wall_now()));
    if !online {
        return Ok(());
    }
    println!("online checks:");
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry)?;
    let client = crate::services::cds_client(&cfg.cds, metrics)?;
    let mut failures = Vec::new();
    match client.describe_db_instances(&Params::new()).await {
        Ok(instances) => {
            println!(
                "  CDS API: DescribeDBInstances signed and accepted; {} instance(s) visible",
                instances.len()
            );
            for p in &cfg.policies {
                for sel in &p.instances {
                    let matched: Vec<_> = instances.iter().filter(|i| sel.matches(i)).collect();
                    if matched.is_empty() {
                        let msg = format!("policy {}: selector {sel} matches no instance", p.name);
                        println!("  {msg}");
                        if matches!(sel, config::Selector::Uuid(_)) {
                            failures.push(msg);
                        }
                    } else {
                        let names: Vec<_> = matched
                            .iter()
                            .map(|i| {
                                format!("{} ({}, {})", i.instance_name, i.instance_uuid, i.status)
                            })
                            .collect();
                        println!("  policy {}: {sel} -> {}", p.name, names.join(", "));
                    }
                }
            }
        }
        Err(e) => {
            println!("  CDS API: FAILED: {e}");
            failures.push(e.to_string());
        }
    }
    for d in cfg.destinations.values() {
        match crate::destination::probe(d).await {
            Ok(msg) => println!("  destination {}: {msg}", d.name),
            Err(e) => {
                println!("  destination {}: FAILED: {e:#}", d.name);
                failures.push(format!("destination {}: {e:#}", d.name));
            }
        }
    }
    if failures.is_empty() {
        println!("all online checks passed");
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "{} online check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )))
    }
}

async fn sim(args: SimArgs) -> Result<(), Failure> {
    let mut cfg = crate::sim::SimConfig::from_env();
    cfg.settings.backup_delay = args.backup_delay;
    cfg.settings.url_ttl = args.url_ttl;
    cfg.settings.default_backup_size = args.backup_size;
    if let Some(path) = &args.state {
        cfg.instances =
            Some(crate::sim::load_state_file(path).map_err(|e| Failure::Usage(format!("{e:#}")))?);
    }
    if !args.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %args.listen,
            "the simulator is meant for loopback; anyone who can reach this address can use it"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let demo = cfg.uses_demo_credentials();
    let id = cfg.access_key_id.clone();
    let demo_secret = cfg.access_key_secret.clone();
    // Only instance definitions can make start fail: a usage problem (exit 2).
    let handle = crate::sim::start(listener, cfg)
        .await
        .map_err(|e| Failure::Usage(format!("{e:#}")))?;
    println!(
        "rdbvault sim: CDS Redis API simulator on {}/redis/",
        handle.base_url
    );
    println!("  config:      cds: {{ endpoint: {} }}", handle.base_url);
    if demo {
        println!(
            "  credentials: CDS_ACCESS_KEY_ID={id} CDS_ACCESS_KEY_SECRET={} (built-in demo credentials; set both variables to choose others)",
            demo_secret.expose()
        );
    } else {
        println!(
            "  credentials: from CDS_ACCESS_KEY_ID / CDS_ACCESS_KEY_SECRET (access key id {id})"
        );
    }
    {
        let world = handle.shared.world();
        for i in world.instances.values() {
            println!(
                "  instance:    {} {} {} ({}{})",
                i.info.instance_uuid,
                i.info.instance_name,
                i.info.ip,
                i.info.sub_product_name,
                if i.shards.is_empty() {
                    String::new()
                } else {
                    format!(", {} shards", i.shards.len())
                }
            );
        }
    }
    println!(
        "  faults:      curl -X POST {}/_sim/faults -d '{{\"kind\":\"api_error\",\"action\":\"CreateBackup\",\"count\":1}}'",
        handle.base_url
    );
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    handle.stop().await;
    Ok(())
}

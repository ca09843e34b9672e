//! The command line's entry: loads the config each command needs, sets up logging, and hands
//! over to the command's own module in [`crate::commands`]. Failures carry their exit code
//! (docs/product.md §1).

use crate::cli::{Cli, Command};
use crate::config;

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
            crate::commands::check_config(&cfg, online).await
        }
        Command::Api {
            action,
            params,
            yes,
            endpoint,
            password_file,
            password_stdin,
        } => {
            init_logging(config::LogFormat::Text, "warn");
            let mut cds_cfg = config::load_cds(&config_path, explicit)?;
            if let Some(e) = endpoint {
                cds_cfg.endpoint = e;
            }
            crate::commands::api(
                &cds_cfg,
                &action,
                &params,
                yes,
                password_file.as_deref(),
                password_stdin,
            )
            .await
        }
        Command::Sim(args) => {
            init_logging(config::LogFormat::Text, "info");
            crate::commands::sim(args).await
        }
        Command::Run => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, &cfg.log.level);
            crate::commands::run(cfg).await
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
        Command::Status { json } => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, "warn");
            crate::commands::status(&cfg, json).await
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
        Command::Init(args) => {
            init_logging(config::LogFormat::Text, "warn");
            let target = args.output.clone().unwrap_or(config_path);
            crate::commands::init(&args, &target).await
        }
        Command::Completions { shell } => crate::commands::completions(shell),
        Command::Man { dir } => crate::commands::man(dir.as_deref()),
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

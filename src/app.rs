//! The command line's entry: loads the config each command needs, sets up logging, and hands
//! over to the command's own module in [`crate::commands`]. Failures carry their exit code
//! (docs/product.md §1).

use crate::cli::{Cli, Command};
use crate::config;

pub use crate::commands::init_logging;
pub use crate::failure::Failure;

/// Runs the parsed command line.
///
/// # Errors
/// A [`Failure`] whose [`Failure::exit_code`] the process should exit with.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let (config_path, explicit) = cli.config_path();
    config::set_invocation(explicit.then_some(config_path.as_path()));
    match cli.command {
        Command::CheckConfig { online, json } => {
            init_logging(config::LogFormat::Text, "warn");
            let cfg = config::load(&config_path).inspect_err(|errors| {
                if json {
                    crate::commands::problems_json(errors);
                }
            })?;
            crate::commands::check_config(&cfg, online, json).await
        }
        Command::Api(args) => run_api(args, &config_path, explicit).await,
        Command::Sim(args) => {
            init_logging(config::LogFormat::Text, "info");
            crate::commands::sim(args).await
        }
        Command::Run => {
            let cfg = config::load(&config_path)?;
            init_logging(cfg.log.format, &cfg.log.level);
            crate::commands::run(cfg).await
        }
        Command::BackupNow {
            policy,
            instance,
            dry_run,
        } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::backup_now(cfg, &policy, instance.as_deref(), dry_run).await
        }
        Command::Jobs(args) => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::jobs(&cfg, args).await
        }
        Command::Status { json } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::status(&cfg, json).await
        }
        Command::Demo => {
            init_logging(config::LogFormat::Text, "warn");
            crate::commands::demo().await
        }
        Command::Backups(args) => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::backups(cfg, args).await
        }
        Command::Prune {
            policy,
            dry_run,
            json,
        } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::prune(cfg, policy.as_deref(), dry_run, json).await
        }
        Command::Verify { ids, all, json } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::verify(cfg, ids, all, json).await
        }
        Command::Init(args) => {
            init_logging(config::LogFormat::Text, "warn");
            let target = args.output.clone().unwrap_or(config_path);
            crate::commands::init(&args, &target).await
        }
        Command::Notify(crate::cli::NotifyCommand::Test) => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::notify_test(&cfg).await
        }
        Command::State(crate::cli::StateCommand::Migrate {
            to,
            password_file,
            json,
        }) => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::state_migrate(&cfg, &to, password_file.as_deref(), json).await
        }
        Command::Completions { shell } => crate::commands::completions(shell),
        Command::Man { dir } => crate::commands::man(dir.as_deref()),
        Command::Drill {
            id,
            policy,
            instance,
            json,
        } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::drill(
                cfg,
                id.as_deref(),
                policy.as_deref(),
                instance.as_deref(),
                json,
            )
            .await
        }
        Command::Fetch { id, output, force } => {
            let cfg = load_for_command(&config_path)?;
            crate::commands::fetch(cfg, &id, &output, force).await
        }
    }
}

/// The config of a foreground command, with logging set up as it asks, at `warn`: a command's
/// output is its result lines; its log says only what went wrong.
fn load_for_command(path: &std::path::Path) -> Result<config::Config, Failure> {
    let cfg = config::load(path)?;
    init_logging(cfg.log.format, "warn");
    Ok(cfg)
}

/// `api`: reads only the `cds` section (a config is optional: defaults and the environment
/// do), `--endpoint` overriding it.
async fn run_api(
    args: crate::cli::ApiArgs,
    config_path: &std::path::Path,
    explicit: bool,
) -> Result<(), Failure> {
    init_logging(config::LogFormat::Text, "warn");
    let mut cds_cfg = config::load_cds(config_path, explicit)?;
    if let Some(e) = args.endpoint {
        cds_cfg.endpoint = e;
    }
    crate::commands::api(
        &cds_cfg,
        &args.action,
        &args.params,
        args.yes,
        args.password_file.as_deref(),
        args.password_stdin,
    )
    .await
}

//! The foreground commands, one file per subcommand:
//! - `run.rs`: `run` (the daemon). `check_config.rs`: `check-config`. `api.rs`: `api`.
//!   `sim.rs`: `sim`.
//! - `backup_now.rs`: `backup-now`.
//! - `jobs.rs`: `jobs`, `jobs show`. `job_control.rs`: `jobs cancel`, `jobs retry`.
//! - `status.rs`: `status` (and the `/readyz` probe `jobs retry` uses too).
//! - `backups.rs`: `backups`, `backups pin|unpin`.
//! - `prune.rs`: `prune`.
//! - `verify.rs`: `verify`.
//! - `fetch.rs`: `fetch`.
//! - `state.rs`: `state migrate` (a SQLite state DB into PostgreSQL).
//! - `demo.rs`: `demo`.
//! - `init.rs`: `init` (a commented starting config, offline or from `DescribeDBInstances`).
//! - `shell.rs`: `completions SHELL` and `man` (both generated from the clap definition).
//! - `sets_table.rs`: the table of backup sets `backups`, `prune` and `backup-now --dry-run`
//!   print.
//! - `format.rs`: the formatting the commands share (bytes, local times, durations, labels,
//!   the progress bars, the `jobs` table's layout, pretty JSON).
//! - `terminal.rs`: colour or not (a terminal, `NO_COLOR`), the logging set-up, and log lines
//!   that step around the progress bars.
//!
//! The JSON they print is defined in [`crate::views`], which `/v1/*` serves too. Here: what
//! several commands share (opening the state DB read-only, finding policies by name).

/// `outln!` for what a command prints on stdout, through [`format::write_out`]: a reader that
/// went away (`rdbvault jobs | head -3`) ends the output quietly instead of a panic, and the
/// command itself goes on to its end (a prune piped into `head` still finishes its deletions).
macro_rules! outln {
    () => {
        $crate::commands::format::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::commands::format::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod api;
mod backup_now;
mod backups;
mod check_config;
mod demo;
mod drill;
mod fetch;
pub(crate) mod format;
mod init;
mod job_control;
mod jobs;
mod notify;
mod prune;
mod run;
mod sets_table;
mod shell;
mod sim;
mod state;
mod status;
mod terminal;
mod verify;

pub use api::api;
pub use backup_now::backup_now;
pub use backups::backups;
pub use check_config::{check_config, describe_config, problems_json};
pub use demo::demo;
pub use drill::drill;
pub use fetch::fetch;
pub use init::init;
pub use jobs::jobs;
pub use notify::notify_test;
pub use prune::prune;
pub use run::run;
pub use shell::{completions, man};
pub use sim::sim;
pub use state::state_migrate;
pub use status::status;
pub use terminal::init_logging;
pub use verify::verify;

use crate::config::{self, Config};
use crate::failure::Failure;
use crate::store::Store;

// Shared by `jobs`, `backups` and `fetch`.
/// Opens the state DB for a command that only reads it (`jobs`, `backups`, `fetch`): never
/// creates or migrates it. A DB that does not exist is a configuration problem (exit 2): the
/// message names the config file, the resolved path and how it was resolved.
async fn open_for_reading(cfg: &Config) -> Result<Store, Failure> {
    Store::connect_read_only(&cfg.state)
        .await
        .map_err(|e| match e {
            crate::store::Error::Missing { .. } => {
                Failure::Usage(format!("{}: state.path: {e}", cfg.source.display()))
            }
            other => Failure::Runtime(other.into()),
        })
}

// Shared by `prune` and `backups`.
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

/// Exit 2 when the provider refused the credentials while a report was made (`prune`,
/// `backups`): the PROBLEM lines name where; nothing works until the operator fixes them.
fn refused_credentials(report: &crate::prune::Report) -> Result<(), Failure> {
    let rdbvault = crate::config::invocation();
    if report.credentials_refused {
        return Err(Failure::Usage(format!(
            "the provider refused the credentials (PROBLEM lines above); check cds.access_key_id_file and cds.access_key_secret_file (or the environment), then `{rdbvault} check-config --online`"
        )));
    }
    Ok(())
}

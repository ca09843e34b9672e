//! The `rdbvault` binary: parse the command line, set up logging, run the command, map the
//! outcome to an exit code. Everything else lives in the library.

use clap::Parser as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = rdbvault::cli::Cli::parse();
    let default_level = match cli.command {
        rdbvault::cli::Command::Sim(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match rdbvault::app::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("rdbvault: {failure:#}");
            ExitCode::from(failure.exit_code())
        }
    }
}

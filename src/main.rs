//! The `rdbvault` binary: parse the command line, set up logging, run the command, map the
//! outcome to an exit code. Everything else lives in the library.

use clap::Parser as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = rdbvault::cli::Cli::parse();
    match rdbvault::app::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("rdbvault: {failure:#}");
            ExitCode::from(failure.exit_code())
        }
    }
}

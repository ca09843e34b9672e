//! How a command fails, and the exit code each failure means (docs/product.md §1). A leaf:
//! it depends on the error types of the layers below, nothing depends on it but the commands.
//!
//! `From` impls let a command use `?` on a config, state DB, CDS API or metrics error; each
//! becomes a runtime failure (exit 1) unless the command decides otherwise (a missing job id
//! is the user's mistake: `Failure::Usage`).

/// Exit codes of the binary.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// A runtime failure: the API, a destination or the state DB failed.
    pub const RUNTIME: u8 = 1;
    /// Bad usage or configuration; the message names the file and line or the YAML path.
    pub const USAGE: u8 = 2;
    /// A backup or a verification failed.
    pub const FAILED: u8 = 3;
    /// Nothing failed, but a backup asked for was not run: refused or skipped (its instance
    /// already had an open job). Not a failure of the backup; not a success either.
    pub const SKIPPED: u8 = 4;
}

/// A command's failure, carrying its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The config file is invalid (exit 2).
    #[error(transparent)]
    Config(#[from] crate::config::Errors),
    /// The command line is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed at run time (exit 1).
    #[error(transparent)]
    Runtime(#[from] anyhow::Error),
    /// A backup or a verification failed (exit 3).
    #[error("{0}")]
    Failed(String),
    /// A run asked for was refused or skipped, and nothing failed (exit 4).
    #[error("{0}")]
    Skipped(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Usage(_) => exit::USAGE,
            // Someone refused rdbvault's credentials, however deep in the chain: the
            // operator's to fix, like every configuration problem.
            Failure::Runtime(e) if crate::services::credential_problem(e) => exit::USAGE,
            Failure::Runtime(_) => exit::RUNTIME,
            Failure::Failed(_) => exit::FAILED,
            Failure::Skipped(_) => exit::SKIPPED,
        }
    }
}

impl From<crate::store::Error> for Failure {
    fn from(e: crate::store::Error) -> Self {
        if e.is_credentials() {
            // PostgreSQL refused the user or password, or state.password_file is unusable:
            // the operator's to fix, like every other credential problem.
            return Failure::Usage(e.to_string());
        }
        Failure::Runtime(e.into())
    }
}

impl From<crate::cds::Error> for Failure {
    fn from(e: crate::cds::Error) -> Self {
        Failure::Runtime(e.into())
    }
}

impl From<crate::services::Error> for Failure {
    fn from(e: crate::services::Error) -> Self {
        match e {
            crate::services::Error::Credentials(e) => Failure::Usage(format!("{e:#}")),
            crate::services::Error::Setup(e) => Failure::Runtime(e),
        }
    }
}

impl From<prometheus::Error> for Failure {
    fn from(e: prometheus::Error) -> Self {
        Failure::Runtime(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_exit_code() {
        assert_eq!(Failure::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(Failure::Failed("x".into()).exit_code(), exit::FAILED);
        let store: Failure = crate::store::Error::NotFound("j".into()).into();
        assert_eq!(store.exit_code(), exit::RUNTIME);
        let metrics: Failure = prometheus::Error::Msg("m".into()).into();
        assert_eq!(metrics.exit_code(), exit::RUNTIME);
    }
}

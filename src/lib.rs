//! rdbvault keeps Capital Online (CDS) cloud Redis backups safe.
//!
//! It reads backup policies from YAML, asks the CDS Redis API for a backup on each policy's
//! schedule, streams the finished RDB file into S3 or a local directory, verifies it, records
//! every step in SQLite, prunes old copies by retention policy, and exports Prometheus metrics.
//!
//! # Layout
//! - [`cli`]: the command line (clap) and exit codes.
//! - [`app`]: what each command does, wiring the parts below together.
//! - [`config`]: the YAML schema, parsing into typed values, validation with locations.
//! - [`cds`]: the signed CDS Redis API client.
//! - [`sim`]: a faithful CDS Redis API simulator (`rdbvault sim`), used by tests and `demo`.
//! - [`rdb`]: the RDB file format: header, CRC64 trailer, streaming verification, a generator.
//! - [`destination`]: where copies go (S3, a directory).
//! - [`metrics`]: every Prometheus metric, in an explicit registry.
//! - [`clock`]: the only code that reads wall time.
//! - [`secret`]: a string that never prints.
//! - [`private_fs`]: files 0600 and directories 0700, whatever the umask.
//!
//! # Error handling rules
//! - Library modules return their own error types (`cds::Error`, `config::Errors`); commands use
//!   `anyhow` with context saying which file, action or destination failed.
//! - Every message says what went wrong and what to do, and names the file and line, the YAML
//!   path, or the API action.
//! - No message carries a secret or a URL query string: secrets are [`secret::Secret`], and
//!   reqwest errors are stripped of their URL.
//! - Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error, 3 a backup or a
//!   verification failed.

pub mod app;
pub mod cds;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod destination;
pub mod http;
pub mod job;
pub mod metrics;
pub mod private_fs;
pub mod prune;
pub mod rdb;
pub mod reconcile;
pub mod retention;
pub mod scheduler;
pub mod secret;
pub mod sim;
pub mod store;
pub mod transfer;
pub mod verify;

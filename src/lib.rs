//! rdbvault keeps Capital Online (CDS) cloud Redis backups safe.
//!
//! It reads backup policies from YAML, asks the CDS Redis API for a backup on each policy's
//! schedule, streams the finished RDB file into S3 or a local directory, verifies it, records
//! every step in SQLite, prunes old copies by retention policy, and exports Prometheus metrics.
//!
//! # Layout
//! Every module, from the bottom up; each uses only the ones above it in this list
//! (`tests/integration/layers.rs` checks it; docs/architecture.md says where a change goes):
//! - Foundations: [`clock`] (the only reader of wall time), [`secret`] (a string that never
//!   prints), [`private_fs`] (files 0600, directories 0700 whatever the umask), [`rdb`] (the RDB
//!   format: header, CRC64 trailer, streaming verification, a generator), [`job`] (a job's
//!   states and their transitions).
//! - Inputs and state: [`cds`] (the signed CDS Redis API client, its typed answers and
//!   metrics), [`config`] (the YAML schema: loading, validation with locations, the model),
//!   [`store`] (the SQLite state DB: jobs, shards, parts, events, the inventory, schedule state),
//!   [`metrics`] (every Prometheus metric, in an explicit registry).
//! - Moving bytes: [`transfer`] (streaming a provider backup through the verifier into a sink;
//!   provider ids checked and encoded for keys), [`destination`] (the only module that knows the
//!   kinds: a handle per S3 bucket or directory, with its sink).
//! - The bundle: [`services`] (config, state DB, CDS client, downloader, destination handles,
//!   metrics, clock and owner, built once per config and rebuilt on reload).
//! - Decisions: [`retention`] (the pure keep/delete plan), [`runner`] (drives one job through its
//!   states), [`scheduler`] (cron, jitter, catch-up; creates jobs), [`prune`] (gather, plan,
//!   apply), [`reconcile`] (the state DB against what the destinations and the provider hold),
//!   [`verify`] (re-reading stored copies).
//! - Read models: [`views`] (the JSON the command line and `/v1` both serve).
//! - Processes and faces: [`http`] (`/metrics`, `/healthz`, `/readyz`, `/v1/jobs`,
//!   `/v1/backups`, `/v1/policies`), [`daemon`] (`run`: dispatch, maintenance, signals, reload,
//!   drain), [`sim`] (a faithful CDS Redis API simulator, used by tests and `demo`).
//! - The command line: [`failure`] (command failures and exit codes), [`cli`] (clap
//!   definitions), [`commands`] (one file per subcommand), [`app`] (dispatching the command
//!   line).
//!
//! # Error handling rules
//! - Library modules return their own error types (`cds::Error`, `config::Errors`); commands use
//!   `anyhow` with context saying which file, action or destination failed.
//! - Every message says what went wrong and what to do, and names the file and line, the YAML
//!   path, or the API action.
//! - No message carries a secret or a URL query string: secrets are [`secret::Secret`], and
//!   reqwest errors are stripped of their URL.
//! - Exit codes: 0 success, 1 runtime failure, 2 usage, configuration or credential error, 3 a
//!   backup or a verification failed, 4 a backup asked for was skipped and nothing failed.

pub mod app;
pub mod cds;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod destination;
pub mod drill;
pub mod failure;
pub mod http;
pub mod job;
pub mod metrics;
pub mod notify;
pub mod private_fs;
pub mod prune;
pub mod rdb;
pub mod reconcile;
pub mod retention;
pub mod runner;
pub mod scheduler;
pub mod secret;
pub mod services;
pub mod sim;
pub mod store;
pub mod transfer;
pub mod verify;
pub mod views;

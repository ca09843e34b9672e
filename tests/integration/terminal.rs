//! The operator's terminal, on the real binary: `backup-now`'s result lines survive the progress
//! bars whatever the terminal's width; `NO_COLOR` turns every colour off; pipes get no control
//! characters; `backup-now --dry-run` creates nothing; and a log line names its job once.
//!
//! The terminal is a real pseudo-terminal: `tests/pty_screen.py` runs the binary on one of a
//! given size, captures every byte it writes, and replays them through pyte (a VT100/xterm
//! emulator, installed by `scripts/test.sh`) to read the final screen, as a person would see
//! it. The CDS API is the in-process simulator with its built-in instances (`prod-cluster-01`
//! has two shards); copies go to a directory.

use crate::support::{self, AK, SECRET, start_sim, write_private};
use rdbvault::sim::SimHandle;
use rdbvault::sim::state::Fault;
use rdbvault::store::Store;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The simulator's built-in two-shard cluster instance, `prod-cluster-01`.
const CLUSTER: &str = "8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11";
/// The simulator's built-in `prod-cache-01` (one shard).
const SINGLE: &str = "5d74bb81-0473-464d-b15b-0ae418619248";

/// A simulator with the built-in instances, a directory destination and one policy `p`.
struct Term {
    dir: tempfile::TempDir,
    sim: SimHandle,
    config: PathBuf,
}

impl Term {
    /// `selector` picks the policy's instances; each backup (per shard) is `backup_size`
    /// bytes; `extra` is added to the config as it is (e.g. a `log:` section).
    async fn new(selector: &str, cron: &str, backup_size: u64, extra: &str) -> Term {
        let mut sim_cfg = support::sim_config();
        sim_cfg.settings.default_backup_size = backup_size;
        let sim = start_sim(sim_cfg).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_private(&d.join("cds_id"), AK);
        write_private(&d.join("cds_secret"), SECRET);
        std::fs::create_dir_all(d.join("archive")).unwrap();
        let text = format!(
            r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {d}/cds_id
  access_key_secret_file: {d}/cds_secret
  timeout: 10s
  poll_interval: 200ms
  poll_max_interval: 1s
  retry: {{ max_attempts: 3, base_delay: 50ms, max_delay: 200ms }}
state:
  path: {d}/state.db
  job_lease: 3s
http:
  listen: 127.0.0.1:0
{extra}destinations:
  dir:
    type: file
    path: {d}/archive
policies:
  - name: p
    schedule: {{ cron: "{cron}", start_window: {window}, completion_window: 5m, catch_up: none }}
    instances:
      - {selector}
    destination: dir
    retention: {{ destination: {{ keep_last: 1 }} }}
"#,
            endpoint = sim.base_url,
            d = d.display(),
            window = super::pipeline::start_window_for(cron),
        );
        let config = d.join("rdbvault.yaml");
        std::fs::write(&config, text).unwrap();
        Term { dir, sim, config }
    }

    fn state_db(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// The binary with this config, on pipes.
    async fn run(&self, env: &[(&str, &str)], args: &[&str]) -> support::Run {
        let mut c = support::rdbvault();
        c.arg("-c").arg(&self.config).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = tokio::process::Command::from(c)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        support::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The binary with this config on a pseudo-terminal `cols` wide (stdout to `stdout_file`
    /// instead, when given): what it wrote to the terminal and the screen at the end.
    async fn pty(
        &self,
        cols: u16,
        env: &[(&str, &str)],
        stdout_file: Option<&Path>,
        args: &[&str],
    ) -> Screen {
        let raw_path = self
            .dir
            .path()
            .join(format!("pty-{}.raw", uuid::Uuid::new_v4()));
        let mut c = support::clean_env(std::process::Command::new("python3"));
        // Whatever the caller's terminal says, the test decides about colour.
        for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TERM"] {
            c.env_remove(var);
        }
        c.arg(support::repo_root().join("tests/pty_screen.py"))
            .args([
                "--cols",
                &cols.to_string(),
                "--rows",
                &SCREEN_ROWS.to_string(),
            ])
            .arg("--raw")
            .arg(&raw_path);
        if let Some(f) = stdout_file {
            c.arg("--stdout").arg(f);
        }
        c.arg("--")
            .arg(env!("CARGO_BIN_EXE_rdbvault"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = tokio::process::Command::from(c)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pty_screen.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        Screen {
            code: report["code"].as_i64().unwrap(),
            rows: report["screen"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
            raw: std::fs::read(&raw_path).unwrap(),
        }
    }
}

/// Tall enough that nothing the tests print scrolls off the top.
const SCREEN_ROWS: u16 = 300;

/// What a pseudo-terminal showed: the exit code, the final screen, and the raw byte stream.
struct Screen {
    code: i64,
    rows: Vec<String>,
    raw: Vec<u8>,
}

impl Screen {
    /// The screen as one string, row after row (each padded to the width), so a line the
    /// terminal wrapped reads as it was written.
    fn flat(&self) -> String {
        self.rows.concat()
    }

    fn shows(&self, text: &str) -> bool {
        self.flat().contains(text)
    }

    /// The screen's non-empty rows, for failure messages.
    fn text(&self) -> String {
        self.rows
            .iter()
            .map(|r| r.trim_end())
            .filter(|r| !r.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn raw_contains(&self, text: &str) -> bool {
        self.raw.windows(text.len()).any(|w| w == text.as_bytes())
    }
}

/// Every SGR sequence (`ESC [ params m`) in `raw` that sets a colour: a foreground or
/// background code (30-39, 40-49, 90-97, 100-107, 38;… and 48;… included).
fn colour_sequences(raw: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while i + 1 < raw.len() {
        if raw[i] == 0x1b && raw[i + 1] == b'[' {
            let start = i + 2;
            let mut j = start;
            while j < raw.len() && (raw[j].is_ascii_digit() || raw[j] == b';') {
                j += 1;
            }
            if j < raw.len() && raw[j] == b'm' {
                let params = String::from_utf8_lossy(&raw[start..j]).into_owned();
                let colour = params
                    .split(';')
                    .any(|p| matches!(p.parse::<u32>(), Ok(30..=49 | 90..=97 | 100..=107)));
                if colour {
                    found.push(format!("ESC[{params}m"));
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// Whether pyte (the terminal emulator `tests/pty_screen.py` replays the bytes through) is
/// installed. Under `scripts/test.sh` (RDBVAULT_REQUIRE_TOOLS=1) a missing one fails the test.
fn have_pyte() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import pyte"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("RDBVAULT_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("python3 with pyte is required (scripts/test.sh installs it)");
        }
        eprintln!("SKIPPED: python3's pyte is not installed; run ./scripts/test.sh to install it");
    }
    found
}

/// The stored job's result lines as `backup-now` prints them: `stored  <job id> ...` and one
/// `        <object key> sha256 <hex>` per shard.
async fn result_lines(db: &Path) -> (String, Vec<String>) {
    let store = Store::open_read_only(db).await.unwrap();
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    let job = jobs
        .iter()
        .find(|j| j.instance_uuid == CLUSTER)
        .expect("a job of the cluster instance");
    assert_eq!(job.state, "stored", "{job:?}");
    let shards = store.shards(&job.id).await.unwrap();
    store.close().await;
    assert_eq!(shards.len(), 2, "prod-cluster-01 has two shards");
    let stored = format!("stored  {} prod-cluster-01 ({CLUSTER})", job.id);
    let shard_lines = shards
        .iter()
        .map(|s| {
            format!(
                "        {} sha256 {}",
                s.object_key.as_deref().unwrap(),
                s.sha256.as_deref().unwrap()
            )
        })
        .collect();
    (stored, shard_lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_keeps_every_result_line_on_screen_under_its_progress_bars() {
    if !have_pyte() {
        return;
    }
    // Large enough that the bars are drawn many times while the shards stream.
    let term = Term::new(r#"name: "prod-cluster-01""#, "@yearly", 24 << 20, "").await;
    // The width of the report (250), and a narrow one where every result line wraps.
    for cols in [250, 80] {
        let screen = term
            .pty(cols, &[], None, &["backup-now", "--policy", "p"])
            .await;
        assert_eq!(screen.code, 0, "{cols} columns:\n{}", screen.text());
        // The bars were really drawn, one per shard, labelled with the instance and shard id.
        for shard in ["8c1f6a52-shard-1", "8c1f6a52-shard-2"] {
            let label = format!("prod-cluster-01 {shard}");
            assert!(
                screen.raw_contains(&label),
                "{cols} columns: no bar labelled {label:?} was drawn"
            );
        }
        assert!(
            screen.raw_contains("\x1b[2K"),
            "the bars erase and redraw lines"
        );
        let (stored, shard_lines) = result_lines(&term.state_db()).await;
        assert!(
            screen.shows(&stored),
            "{cols} columns: the stored line is gone:\n{}",
            screen.text()
        );
        for line in &shard_lines {
            assert!(
                screen.shows(line),
                "{cols} columns: a shard's result line is gone: {line:?}\n{}",
                screen.text()
            );
        }
        assert!(screen.shows("prod-cluster-01 (8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11) started"));
        // No bar is left behind on the final screen.
        assert!(
            !screen.shows("MiB/24.00 MiB"),
            "{cols} columns: a bar stayed on screen:\n{}",
            screen.text()
        );
        // The next run gets a job of its own.
        std::fs::remove_file(term.state_db()).unwrap();
    }
    term.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_color_turns_off_the_bars_and_the_logs_colours_and_nothing_else() {
    if !have_pyte() {
        return;
    }
    let term = Term::new(r#"name: "prod-cluster-01""#, "@yearly", 8 << 20, "").await;
    let args = ["backup-now", "--policy", "p"];
    // Without NO_COLOR a terminal gets colour (the bars, the log levels): the check can see it.
    let coloured = term.pty(250, &[("RUST_LOG", "info")], None, &args).await;
    assert_eq!(coloured.code, 0, "{}", coloured.text());
    assert!(
        !colour_sequences(&coloured.raw).is_empty(),
        "a terminal without NO_COLOR shows colour"
    );
    std::fs::remove_file(term.state_db()).unwrap();

    let plain = term
        .pty(250, &[("RUST_LOG", "info"), ("NO_COLOR", "1")], None, &args)
        .await;
    assert_eq!(plain.code, 0, "{}", plain.text());
    assert_eq!(
        colour_sequences(&plain.raw),
        Vec::<String>::new(),
        "NO_COLOR=1 but colour was written"
    );
    // Still a terminal: the bars are drawn, the log lines and results are there.
    assert!(plain.raw_contains("prod-cluster-01 8c1f6a52-shard-1"));
    assert!(
        plain.shows(" INFO job{policy=p instance="),
        "{}",
        plain.text()
    );
    let (stored, shard_lines) = result_lines(&term.state_db()).await;
    assert!(plain.shows(&stored), "{}", plain.text());
    for line in &shard_lines {
        assert!(plain.shows(line), "{line:?}\n{}", plain.text());
    }
    term.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_and_files_get_no_bars_and_no_colour() {
    let term = Term::new(r#"name: "prod-cluster-01""#, "@yearly", 4 << 20, "").await;
    let r = term
        .run(&[("RUST_LOG", "info")], &["backup-now", "--policy", "p"])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.all().contains('\x1b'),
        "escape sequence on a pipe:\n{}",
        r.all()
    );
    assert!(r.stdout.contains("sha256"), "{}", r.stdout);

    if !have_pyte() {
        return;
    }
    // stdout to a file (or a pipe: `| tee log` would put the results on the terminal behind
    // the bars' back), stderr on a terminal: no bars at all, the file gets the result lines as
    // plain text and the terminal the rest.
    std::fs::remove_file(term.state_db()).unwrap();
    let out = term.dir.path().join("results.txt");
    let screen = term
        .pty(250, &[], Some(&out), &["backup-now", "--policy", "p"])
        .await;
    assert_eq!(screen.code, 0, "{}", screen.text());
    let results = std::fs::read_to_string(&out).unwrap();
    assert!(!results.contains('\x1b'), "{results:?}");
    let (stored, shard_lines) = result_lines(&term.state_db()).await;
    assert!(results.contains(&stored), "{results}");
    for line in &shard_lines {
        assert!(results.contains(line.as_str()), "{results}");
    }
    assert!(
        !screen.raw.contains(&0x1b),
        "a bar or colour on the terminal while stdout is a file: {:?}",
        String::from_utf8_lossy(&screen.raw)
    );
    assert!(screen.shows("started"), "{}", screen.text());
    term.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_dry_run_shows_the_selection_target_and_retention_and_creates_nothing() {
    let term = Term::new(r#"name: "prod-*""#, "@yearly", 64 << 10, "").await;
    let dry = ["backup-now", "--policy", "p", "--dry-run"];

    // No state DB yet: no history, and none is created.
    let r = term.run(&[], &dry).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(term.sim.calls("DescribeDBInstances"), 1);
    assert_eq!(term.sim.calls("CreateBackup"), 0);
    assert!(!term.state_db().exists(), "a dry run created the state DB");
    assert!(
        r.stdout
            .contains("policy `p` selects 2 of the account's 3 instance(s) now"),
        "{}",
        r.stdout
    );
    for (name, uuid) in [("prod-cache-01", SINGLE), ("prod-cluster-01", CLUSTER)] {
        assert!(
            r.stdout
                .contains(&format!("  {name} ({uuid})  matched by name \"prod-*\"")),
            "{}",
            r.stdout
        );
        let archive = term.dir.path().join("archive");
        assert!(
            r.stdout.contains(&format!(
                "  {name}: keys p/{uuid}/YYYY/MM/DD/<YYYYMMDDTHHMMSSZ>-<backup id>[-<shard id>].rdb ({}/p/{uuid}/)",
                archive.display()
            )),
            "{}",
            r.stdout
        );
    }
    assert!(
        r.stdout.contains(&format!(
            "copies would go to destination `dir`: file:{}/archive",
            term.dir.path().display()
        )),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("no state DB yet"), "{}", r.stdout);

    // Two stored sets of prod-cache-01 under keep_last 1: the older would go.
    for _ in 0..2 {
        let r = term
            .run(&[], &["backup-now", "--policy", "p", "--instance", SINGLE])
            .await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let store = Store::open_read_only(&term.state_db()).await.unwrap();
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    store.close().await;
    assert_eq!(jobs.len(), 2);
    let older = &jobs[1].id;
    let modified = std::fs::metadata(term.state_db())
        .unwrap()
        .modified()
        .unwrap();
    let (describes, creates) = (
        term.sim.calls("DescribeDBInstances"),
        term.sim.calls("CreateBackup"),
    );

    let r = term.run(&[], &dry).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(term.sim.calls("DescribeDBInstances"), describes + 1);
    assert_eq!(
        term.sim.calls("CreateBackup"),
        creates,
        "a dry run sent CreateBackup"
    );
    let store = Store::open_read_only(&term.state_db()).await.unwrap();
    assert_eq!(
        store.list_jobs(None, None, 10).await.unwrap().len(),
        2,
        "no new job"
    );
    store.close().await;
    assert_eq!(
        std::fs::metadata(term.state_db())
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "the state DB was written"
    );
    assert!(
        r.stdout
            .contains("retention would delete 1 set(s) of these instances:"),
        "{}",
        r.stdout
    );
    let doomed: Vec<_> = r
        .stdout
        .lines()
        .filter(|l| l.contains("would delete:"))
        .collect();
    assert_eq!(doomed.len(), 1, "{}", r.stdout);
    assert!(doomed[0].contains(&older[..8]), "{}", r.stdout);
    assert!(
        r.stdout.contains("planned before the new backup exists"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("dry run: nothing was created"),
        "{}",
        r.stdout
    );

    // An instance the policy does not select is the same usage error as without --dry-run.
    let r = term
        .run(
            &[],
            &[
                "backup-now",
                "--policy",
                "p",
                "--dry-run",
                "--instance",
                "e3a9b7d4-6f21-4d3c-8b0a-5c9e1f4a7d22",
            ],
        )
        .await;
    assert_eq!(r.code, 2, "{}", r.all());
    term.sim.stop().await;
}

/// How many times `key=` appears in a text log line as a field (after a space, `{` or `,`).
fn text_field_count(line: &str, key: &str) -> usize {
    let needle = format!("{key}=");
    line.match_indices(&needle)
        .filter(|(at, _)| *at == 0 || matches!(line.as_bytes()[at - 1], b' ' | b'{' | b','))
        .count()
}

/// How many times `key` appears in a JSON log line: among the event's fields, the current
/// span's, and each listed span's.
fn json_field_count(line: &serde_json::Value, key: &str) -> usize {
    let mut n = usize::from(line["fields"].get(key).is_some());
    n += usize::from(line.get("span").and_then(|s| s.get(key)).is_some());
    if let Some(spans) = line.get("spans").and_then(|s| s.as_array()) {
        n += spans.iter().filter(|s| s.get(key).is_some()).count();
    }
    n
}

/// Runs the daemon until one job is stored and one has failed (the first `CreateBackup` is
/// refused for good), then stops it; returns what it logged.
async fn daemon_log(term: &Term) -> String {
    term.sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: Some(1),
        status: 400,
        code: "InvalidParameter".into(),
    });
    let mut c = support::rdbvault();
    c.arg("-c")
        .arg(&term.config)
        .arg("run")
        .env("RUST_LOG", "info");
    let child = tokio::process::Command::from(c)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut done = false;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(store) = Store::open_read_only(&term.state_db()).await else {
            continue;
        };
        let jobs = store.list_jobs(None, None, 50).await.unwrap_or_default();
        store.close().await;
        if jobs.iter().any(|j| j.state == "stored") && jobs.iter().any(|j| j.state == "failed") {
            done = true;
            break;
        }
    }
    // A moment for the stored job's follow-up line (logged after the state is written).
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::signal(&child, "-TERM");
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(done, "no stored and failed job within 30 s:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_log_line_names_its_policy_instance_and_job_once_in_text_and_json() {
    // Text: the job's span names it once; lines outside a job's span name it themselves.
    let term = Term::new(r#"name: "prod-cache-01""#, "*/2 * * * * *", 64 << 10, "").await;
    let log = daemon_log(&term).await;
    let mut in_span = 0;
    for line in log.lines() {
        for key in ["policy", "instance", "job_id"] {
            assert!(text_field_count(line, key) <= 1, "{key} twice: {line}");
        }
        if line.contains(" job{") {
            in_span += 1;
            for key in ["policy", "instance", "job_id"] {
                assert_eq!(text_field_count(line, key), 1, "{key}: {line}");
            }
        }
    }
    assert!(in_span > 0, "no line inside a job's span:\n{log}");
    let failed = log
        .lines()
        .find(|l| l.contains("backup job failed"))
        .unwrap_or_else(|| panic!("no failed job logged:\n{log}"));
    assert!(
        failed.contains(&format!("job{{policy=p instance={SINGLE} job_id=")),
        "{failed}"
    );
    let stored = log
        .lines()
        .find(|l| l.contains("job stored"))
        .unwrap_or_else(|| panic!("no stored job logged:\n{log}"));
    for key in ["policy", "instance", "job_id"] {
        assert_eq!(text_field_count(stored, key), 1, "{key}: {stored}");
    }
    term.sim.stop().await;

    // JSON: the same, field by field.
    let term = Term::new(
        r#"name: "prod-cache-01""#,
        "*/2 * * * * *",
        64 << 10,
        "log:\n  format: json\n",
    )
    .await;
    let log = daemon_log(&term).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let message = |l: &serde_json::Value| l["fields"]["message"].as_str().unwrap_or("").to_string();
    for line in &lines {
        for key in ["policy", "instance", "job_id"] {
            assert!(json_field_count(line, key) <= 1, "{key} twice: {line}");
        }
    }
    for wanted in ["backup job failed", "job stored", "job created"] {
        let line = lines
            .iter()
            .find(|l| message(l) == wanted)
            .unwrap_or_else(|| panic!("no {wanted:?} line:\n{log}"));
        for key in ["policy", "instance", "job_id"] {
            assert_eq!(json_field_count(line, key), 1, "{key}: {line}");
        }
    }
    term.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_now_job_is_named_on_its_log_line_at_the_default_level() {
    // backup-now logs at `warn`: the job's span must still be there for the error line.
    let term = Term::new(r#"name: "prod-cache-01""#, "@yearly", 64 << 10, "").await;
    term.sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: Some(1),
        status: 400,
        code: "InvalidParameter".into(),
    });
    let r = term.run(&[], &["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("backup job failed"))
        .unwrap_or_else(|| panic!("no error line:\n{}", r.stderr));
    assert!(
        line.contains(&format!("job{{policy=p instance={SINGLE} job_id=")),
        "{line}"
    );
    for key in ["policy", "instance", "job_id"] {
        assert_eq!(text_field_count(line, key), 1, "{key}: {line}");
    }
    term.sim.stop().await;
}

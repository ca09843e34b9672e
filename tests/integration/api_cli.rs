//! `rdbvault api` as an operator meets it: the real binary against the simulator. A mistake on
//! the command line is named (with a "did you mean" and what the action takes) before anything is
//! sent; `CreateDBInstance` lists every missing parameter at once; the password comes only from
//! `--password-file` or `--password-stdin`, reaches the server, and is printed nowhere.

use crate::support::{self, AK, Run, SECRET, rdbvault, start_sim};
use rdbvault::sim::SimHandle;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const REPLICA: &str = "5d74bb81-0473-464d-b15b-0ae418619248";
/// A distinctive password, so output can be searched for it.
const PASSWORD: &str = "Redis-pw 7f3a; not for logs";

/// `CreateDBInstance`'s parameters but the password, for an offer the simulator sells.
const CREATE: &[&str] = &[
    "CreateDBInstance",
    "RegionId=CN_Beijing_A",
    "VdcId=vdc-1",
    "BasePipeId=pipe-1",
    "InstanceName=made-by-api-cli",
    "PaasGoodsId=12923",
    "--yes",
];

/// `rdbvault api --endpoint ENDPOINT ARGS...` with the test credentials, `stdin` piped in if
/// given (else standard input is empty), `RUST_LOG=debug` if `debug`.
fn api_at(endpoint: &str, args: &[&str], stdin: Option<&str>, debug: bool) -> Run {
    let mut cmd: Command = rdbvault();
    cmd.env("CDS_ACCESS_KEY_ID", AK)
        .env("CDS_ACCESS_KEY_SECRET", SECRET)
        .args(["api", "--endpoint", endpoint])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if debug {
        cmd.env("RUST_LOG", "debug");
    }
    let mut child = cmd.spawn().expect("rdbvault binary runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`api_at`] against the in-process simulator, off the runtime's threads.
async fn api(sim: &SimHandle, args: &[&str], stdin: Option<&str>, debug: bool) -> Run {
    let endpoint = sim.base_url.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        api_at(&endpoint, &args, stdin.as_deref(), debug)
    })
    .await
    .unwrap()
}

/// How many API calls the simulator has answered.
fn calls_seen(sim: &SimHandle) -> usize {
    sim.shared.world().log.len()
}

/// A file holding `content`, with `mode`.
fn password_file(dir: &Path, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(format!("pw-{mode:o}"));
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Asserts a usage error (exit 2) whose message holds every one of `needles`.
fn assert_usage(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    for needle in needles {
        assert!(
            r.stderr.contains(needle),
            "want {needle:?} in:\n{}",
            r.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_parameter_or_action_gets_a_did_you_mean_and_nothing_is_sent() {
    let sim = start_sim(support::sim_config()).await;
    for name in ["InstanceUUID", "instanceuuid"] {
        let arg = format!("{name}={REPLICA}");
        let r = api(&sim, &["DescribeBackups", &arg], None, false).await;
        assert_usage(
            &r,
            &[
                &format!(
                    "unknown parameter `{name}` (did you mean `InstanceUuid`? names are case-sensitive)"
                ),
                "DescribeBackups takes InstanceUuid (all required)",
            ],
        );
        assert!(!r.stderr.contains("missing"), "{}", r.stderr);
    }
    let r = api(
        &sim,
        &["DescribeDBInstances", "InstanceNmae=prod", "Colour=red"],
        None,
        false,
    )
    .await;
    assert_usage(
        &r,
        &[
            "DescribeDBInstances: 2 problems; nothing was sent:",
            "unknown parameter `InstanceNmae` (did you mean `InstanceName`?)",
            "unknown parameter `Colour`",
            "DescribeDBInstances takes InstanceUuid, InstanceName, IP, TagName (all optional)",
        ],
    );
    let r = api(&sim, &["DescribeBackup", "InstanceUuid=x"], None, false).await;
    assert_usage(
        &r,
        &[
            "unknown action `DescribeBackup` (did you mean `DescribeBackups`?); the Redis API has: DescribeRegins,",
        ],
    );
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_given_twice_is_refused_naming_it() {
    let sim = start_sim(support::sim_config()).await;
    let r = api(
        &sim,
        &[
            "DescribeBackups",
            &format!("InstanceUuid={REPLICA}"),
            "InstanceUuid=other",
        ],
        None,
        false,
    )
    .await;
    assert_usage(
        &r,
        &["DescribeBackups: `InstanceUuid` is given 2 times; give it once"],
    );
    assert!(
        !r.stderr.contains("other"),
        "values are not echoed: {}",
        r.stderr
    );
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_db_instance_lists_every_missing_parameter_with_what_it_is() {
    let sim = start_sim(support::sim_config()).await;
    let r = api(
        &sim,
        &[
            "CreateDBInstance",
            "RegionId=CN_Beijing_A",
            "InstanceName=x",
            "--yes",
        ],
        None,
        false,
    )
    .await;
    assert_usage(
        &r,
        &[
            "CreateDBInstance: missing 4 required parameters (add each as KEY=VALUE, the password as said below):",
            "VdcId        the virtual data centre (VDC) the instance goes in",
            "BasePipeId   the VDC's private network the instance joins",
            "PaasGoodsId  the offer to buy (version, architecture, RAM): a number from DescribeAvailableDBConfig",
            "Password     the new instance's Redis password; give it with --password-file FILE",
        ],
    );
    // With every problem at once: a bad integer, a missing --yes, the missing ones.
    let r = api(
        &sim,
        &[
            "CreateDBInstance",
            "RegionId=CN_Beijing_A",
            "PaasGoodsId=ten",
        ],
        None,
        false,
    )
    .await;
    assert_usage(
        &r,
        &[
            "CreateDBInstance: 3 problems; nothing was sent:",
            "`PaasGoodsId` must be an integer, got \"ten\"",
            "missing 4 required parameters",
            "add --yes to confirm",
        ],
    );
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_on_the_command_line_is_refused_and_never_shown() {
    let sim = start_sim(support::sim_config()).await;
    let given = format!("Password={PASSWORD}");
    for extra in [
        &given,
        &format!("password={PASSWORD}"),
        &PASSWORD.to_string(),
    ] {
        let mut args = CREATE.to_vec();
        args.push(extra);
        let r = api(&sim, &args, None, false).await;
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(!r.all().contains(PASSWORD), "{}", r.all());
        assert!(r.stderr.contains("--password-file FILE"), "{}", r.stderr);
    }
    let mut args = CREATE.to_vec();
    args.push(&given);
    let r = api(&sim, &args, None, false).await;
    assert_usage(
        &r,
        &[
            "`Password` is never taken from the command line, where it would stay in the shell history and show in `ps`",
            "--password-stdin",
        ],
    );
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_from_a_file_or_stdin_creates_the_instance_and_is_printed_nowhere() {
    let sim = start_sim(support::sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = password_file(dir.path(), &format!("{PASSWORD}\n"), 0o600);
    let mut with_file = CREATE.to_vec();
    with_file.extend(["--password-file", file.to_str().unwrap()]);
    let mut with_stdin = CREATE.to_vec();
    with_stdin.push("--password-stdin");
    for (args, stdin) in [
        (&with_file, None),
        (&with_stdin, Some(format!("{PASSWORD}\n"))),
    ] {
        let r = api(&sim, args, stdin.as_deref(), true).await;
        assert_eq!(r.code, 0, "{}", r.all());
        let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(doc["Code"], "Success");
        assert_eq!(doc["Data"]["InstancesUuid"].as_array().unwrap().len(), 1);
        assert!(
            r.stderr.contains("DEBUG"),
            "RUST_LOG=debug is in effect: {}",
            r.stderr
        );
        assert!(!r.all().contains(PASSWORD), "{}", r.all());
        assert!(!r.all().contains(SECRET));
    }
    // The simulator accepted both orders (it refuses one without a Password: ArgMissing).
    let log = sim.shared.world().log.clone();
    let creates: Vec<_> = log
        .iter()
        .filter(|e| e.action == "CreateDBInstance")
        .map(|e| (e.method, e.status, e.code.as_str()))
        .collect();
    assert_eq!(
        creates,
        [("POST", 200, "Success"), ("POST", 200, "Success")]
    );
    let r = api(
        &sim,
        &["DescribeDBInstances", "InstanceName=made-by-api-cli"],
        None,
        false,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["Data"].as_array().unwrap().len(), 2);
    sim.stop().await;
}

/// A one-request-at-a-time HTTP server that answers every request with success and hands each
/// request body to the test: the simulator checks that a password came but never keeps it.
fn capturing_server() -> (String, std::sync::mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let body = loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0usize);
                if request.len() >= end + 4 + length {
                    break Some(request[end + 4..end + 4 + length].to_vec());
                }
            };
            let answer = r#"{"Code":"Success","Message":"ok","Data":{"InstancesUuid":["u-1"]},"TaskId":"t-1"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let body = body.and_then(|b| serde_json::from_slice(&b).ok());
            let _ = tx.send(body.unwrap_or_default());
        }
    });
    (endpoint, rx)
}

#[test]
fn the_password_reaches_the_server_exactly_without_its_line_ending() {
    let (endpoint, bodies) = capturing_server();
    let dir = tempfile::tempdir().unwrap();
    // Blanks inside and at the end are part of the password; only the line ending goes.
    let exact = format!("{PASSWORD} ");
    let file = password_file(dir.path(), &format!("{exact}\r\n"), 0o400);
    let mut with_file = CREATE.to_vec();
    with_file.extend(["--password-file", file.to_str().unwrap()]);
    let mut with_stdin = CREATE.to_vec();
    with_stdin.push("--password-stdin");
    for (args, stdin) in [
        (&with_file, None),
        (
            &with_stdin,
            Some(format!("{exact}\nsecond line is not read\n")),
        ),
    ] {
        let r = api_at(&endpoint, args, stdin.as_deref(), true);
        assert_eq!(r.code, 0, "{}", r.all());
        let body = bodies
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        assert_eq!(body["Password"], exact.as_str());
        assert_eq!(body["PaasGoodsId"], 12923, "integers stay JSON numbers");
        assert_eq!(body["InstanceName"], "made-by-api-cli");
        assert!(!r.all().contains(PASSWORD), "{}", r.all());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_file_others_can_read_or_an_empty_one_is_refused_before_sending() {
    let sim = start_sim(support::sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    for (mode, who) in [(0o640, "its group"), (0o604, "every user")] {
        let file = password_file(dir.path(), PASSWORD, mode);
        let mut args = CREATE.to_vec();
        args.extend(["--password-file", file.to_str().unwrap()]);
        let r = api(&sim, &args, None, false).await;
        assert_usage(
            &r,
            &[
                &format!("can be read by {who} (mode {mode:o})"),
                &format!("run `chmod 600 {}`", file.display()),
            ],
        );
        assert!(!r.all().contains(PASSWORD), "{}", r.all());
    }
    let empty = password_file(dir.path(), "\n", 0o600);
    let mut args = CREATE.to_vec();
    args.extend(["--password-file", empty.to_str().unwrap()]);
    let r = api(&sim, &args, None, false).await;
    assert_usage(
        &r,
        &["the file is empty; put the password alone on one line"],
    );
    let missing = dir.path().join("nope");
    let mut args = CREATE.to_vec();
    args.extend(["--password-file", missing.to_str().unwrap()]);
    let r = api(&sim, &args, None, false).await;
    assert_usage(
        &r,
        &["cannot read it", "give the file that holds the password"],
    );
    let mut args = CREATE.to_vec();
    args.push("--password-stdin");
    let r = api(&sim, &args, Some(""), false).await;
    assert_usage(&r, &["--password-stdin: the line read is empty"]);
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_options_belong_to_create_db_instance_only_and_exclude_each_other() {
    let sim = start_sim(support::sim_config()).await;
    let uuid = format!("InstanceUuid={REPLICA}");
    let r = api(
        &sim,
        &["DescribeBackups", &uuid, "--password-stdin"],
        Some("x\n"),
        false,
    )
    .await;
    assert_usage(
        &r,
        &["DescribeBackups takes no password (only CreateDBInstance does); remove the option"],
    );
    let mut args = CREATE.to_vec();
    args.extend(["--password-stdin", "--password-file", "/dev/null"]);
    let r = api(&sim, &args, Some("x\n"), false).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
    assert_eq!(calls_seen(&sim), 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_is_still_needed_and_an_api_error_answer_exits_1() {
    let sim = start_sim(support::sim_config()).await;
    let r = api(
        &sim,
        &[
            "DeleteBackup",
            &format!("InstanceUuid={REPLICA}"),
            "BackupId=b-1",
        ],
        None,
        false,
    )
    .await;
    assert_usage(
        &r,
        &[
            "DeleteBackup deletes resources at the provider and cannot be undone; add --yes to confirm",
        ],
    );
    assert_eq!(calls_seen(&sim), 0);
    // The provider's refusal: exit 1, the action, status, code and message on stderr, nothing on stdout.
    let r = api(
        &sim,
        &[
            "DescribeBackups",
            "InstanceUuid=00000000-0000-4000-8000-000000000000",
        ],
        None,
        false,
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("CDS API DescribeBackups failed: HTTP 404, Code ResourceNotFound"),
        "{}",
        r.stderr
    );
    let r = api(
        &sim,
        &["DescribeBackups", &format!("InstanceUuid={REPLICA}")],
        None,
        false,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sim.calls("DescribeBackups"), 2);
    sim.stop().await;
}

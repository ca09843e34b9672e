//! The config file as a user meets it through the binary: every example passes `check-config`,
//! and a table of broken configs each exits 2 with a message that names the file, the line and
//! the culprit, without panicking.

use crate::support::{rdbvault, repo_root, run};

const BASE: &str = r#"cds:
  endpoint: http://127.0.0.1:9751
  timeout: 30s
destinations:
  archive:
    type: s3
    bucket: b
    prefix: p/
  local:
    type: file
    path: /tmp
policies:
  - name: nightly
    schedule:
      cron: "30 2 * * *"
      timezone: Asia/Shanghai
      jitter: 5m
    instances:
      - uuid: 5d74bb81-0473-464d-b15b-0ae418619248
    destination: archive
    retention:
      destination: { keep_last: 3 }
"#;

#[test]
fn every_example_config_passes_check_config() {
    let dir = repo_root().join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let r = run(rdbvault().arg("-c").arg(&path).arg("check-config"));
        assert_eq!(r.code, 0, "{}:\n{}", path.display(), r.all());
        assert!(r.stdout.contains("next runs:"), "{}", r.stdout);
        checked += 1;
    }
    assert!(checked >= 2, "expected the example configs in config/");
}

#[test]
fn check_config_prints_the_next_three_runs_in_the_policy_timezone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, BASE).unwrap();
    let r = run(rdbvault().arg("-c").arg(&path).arg("check-config"));
    assert_eq!(r.code, 0, "{}", r.all());
    let runs: Vec<_> = r
        .stdout
        .lines()
        .filter(|l| l.contains("02:30:00 CST (UTC+08:00)"))
        .collect();
    assert_eq!(runs.len(), 3, "{}", r.stdout);

    // The same as JSON: next runs in RFC 3339 with the zone's offset.
    let r = run(rdbvault()
        .arg("-c")
        .arg(&path)
        .args(["check-config", "--json"]));
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    let next = doc["config"]["policies"][0]["next_runs"][0]
        .as_str()
        .unwrap();
    assert!(next.ends_with("T02:30:00+08:00"), "{next}");
    assert!(chrono::DateTime::parse_from_rfc3339(next).is_ok());

    // An invalid config: its problems with their locations, exit 2.
    std::fs::write(&path, BASE.replace("30 2 * * *", "30 25 * * *")).unwrap();
    let r = run(rdbvault()
        .arg("-c")
        .arg(&path)
        .args(["check-config", "--json"]));
    assert_eq!(r.code, 2, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["valid"], false);
    let problem = &doc["problems"][0];
    assert!(problem["line"].as_u64().is_some(), "{doc}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("hour `25` is outside 0-23"),
        "{doc}"
    );
}

/// (what, replace this, with this, expected line, substrings the message must contain)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<usize>,
    &'static [&'static str],
);

const CASES: &[Case] = &[
    (
        "unknown key",
        "  timeout: 30s",
        "  timout: 30s",
        Some(3),
        &["timout", "unknown field"],
    ),
    (
        "4-field cron",
        r#"cron: "30 2 * * *""#,
        r#"cron: "30 2 * *""#,
        Some(15),
        &["30 2 * *", "4 fields"],
    ),
    (
        "7-field cron",
        r#"cron: "30 2 * * *""#,
        r#"cron: "0 30 2 * * * 2030""#,
        Some(15),
        &["7 fields"],
    ),
    (
        "unknown cron alias",
        r#"cron: "30 2 * * *""#,
        r#"cron: "@fortnightly""#,
        Some(15),
        &["@fortnightly"],
    ),
    (
        "misspelt timezone",
        "timezone: Asia/Shanghai",
        "timezone: Asia/Shangai",
        Some(16),
        &["Asia/Shangai", "did you mean `Asia/Shanghai`"],
    ),
    (
        "YAML syntax error",
        "    bucket: b\n",
        "    bucket: [b\n",
        None,
        &["archive"],
    ),
    (
        "unknown destination",
        "destination: archive",
        "destination: archve",
        Some(20),
        &["archve", "did you mean `archive`"],
    ),
    (
        "duration without unit",
        "  timeout: 30s",
        "  timeout: 30",
        Some(3),
        &["cds.timeout", "30s"],
    ),
    (
        "duration with a bad unit",
        "jitter: 5m",
        "jitter: 5x",
        Some(17),
        &["5x", "unknown unit"],
    ),
    (
        "jitter not shorter than start_window",
        "jitter: 5m",
        "jitter: 2h",
        Some(17),
        &["jitter", "start_window"],
    ),
    (
        "empty retention policy",
        "destination: { keep_last: 3 }",
        "destination: {}",
        Some(22),
        &["retention.destination", "empty retention policy"],
    ),
    (
        "min_verified 0",
        "destination: { keep_last: 3 }",
        "destination: { keep_last: 3, min_verified: 0 }",
        Some(22),
        &["min_verified"],
    ),
    (
        "keep_last 0",
        "destination: { keep_last: 3 }",
        "destination: { keep_last: 0, keep_daily: 7 }",
        Some(22),
        &["keep_last"],
    ),
    (
        "negative keep_last",
        "destination: { keep_last: 3 }",
        "destination: { keep_last: -1 }",
        Some(22),
        &["keep_last"],
    ),
    (
        "malformed instance uuid",
        "uuid: 5d74bb81-0473-464d-b15b-0ae418619248",
        "uuid: not-a-uuid",
        Some(19),
        &["not-a-uuid"],
    ),
    (
        "selector with two keys",
        "      - uuid: 5d74bb81-0473-464d-b15b-0ae418619248\n",
        "      - uuid: 5d74bb81-0473-464d-b15b-0ae418619248\n        name: prod\n",
        Some(19),
        &["instances[0]", "exactly one"],
    ),
    (
        "bad selector ip",
        "uuid: 5d74bb81-0473-464d-b15b-0ae418619248",
        "ip: 10.0.0.300",
        Some(19),
        &["10.0.0.300"],
    ),
    (
        "bad name glob",
        "uuid: 5d74bb81-0473-464d-b15b-0ae418619248",
        r#"name: "prod-[""#,
        Some(19),
        &["prod-["],
    ),
    (
        "endpoint and region together",
        "  timeout: 30s",
        "  timeout: 30s\n  region: asia",
        Some(4),
        &["cds.region", "not both"],
    ),
    (
        "endpoint is not http(s)",
        "endpoint: http://127.0.0.1:9751",
        "endpoint: ftp://x",
        Some(2),
        &["ftp://x"],
    ),
    (
        "unknown api region",
        "endpoint: http://127.0.0.1:9751",
        "region: europe",
        Some(2),
        &["europe", "mainland"],
    ),
    (
        "unknown destination type",
        "type: s3",
        "type: gcs",
        Some(6),
        &["gcs"],
    ),
    (
        "s3 without bucket",
        "    bucket: b\n",
        "",
        Some(6),
        &["destinations.archive", "bucket"],
    ),
    (
        "file destination with an s3 key",
        "    path: /tmp\n",
        "    path: /tmp\n    bucket: x\n",
        Some(12),
        &["destinations.local.bucket"],
    ),
    (
        "part_size below the S3 minimum",
        "    prefix: p/\n",
        "    prefix: p/\n    part_size: 1MiB\n",
        Some(9),
        &["part_size", "5MiB"],
    ),
    (
        "upload_concurrency 0",
        "    prefix: p/\n",
        "    prefix: p/\n    upload_concurrency: 0\n",
        Some(9),
        &["upload_concurrency"],
    ),
    (
        "unknown server-side encryption",
        "    prefix: p/\n",
        "    prefix: p/\n    server_side_encryption: AES128\n",
        Some(9),
        &["AES128"],
    ),
    (
        "duplicate policy names",
        "      destination: { keep_last: 3 }\n",
        "      destination: { keep_last: 3 }\n  - name: nightly\n    schedule: { cron: \"@daily\" }\n    instances: [ { name: x } ]\n    destination: local\n    retention: { destination: { keep_last: 1 } }\n",
        Some(23),
        &["nightly", "twice"],
    ),
    (
        "unknown catch_up",
        "      jitter: 5m\n",
        "      jitter: 5m\n      catch_up: all\n",
        Some(18),
        &["all", "none, latest"],
    ),
    (
        "unknown download route",
        "    destination: archive\n",
        "    destination: archive\n    download: fast\n",
        Some(21),
        &["fast", "intranet"],
    ),
    (
        "wrong type for a limit",
        "destinations:\n",
        "limits:\n  max_concurrent_jobs: many\ndestinations:\n",
        Some(5),
        &["limits.max_concurrent_jobs"],
    ),
    (
        "unknown log format",
        "destinations:\n",
        "log:\n  format: xml\ndestinations:\n",
        Some(5),
        &["xml"],
    ),
    (
        "listen is not an address",
        "destinations:\n",
        "http:\n  listen: localhost\ndestinations:\n",
        Some(5),
        &["localhost"],
    ),
    (
        "policy name with a space",
        "name: nightly",
        "name: \"night ly\"",
        Some(13),
        &["night ly"],
    ),
    (
        "unknown top-level key",
        "policies:\n",
        "policies: []\nunused:\n",
        Some(13),
        &["unused"],
    ),
    (
        "missing schedule",
        "    schedule:\n      cron: \"30 2 * * *\"\n      timezone: Asia/Shanghai\n      jitter: 5m\n",
        "",
        Some(13),
        &["policies[0].schedule", "missing"],
    ),
    (
        "tab indentation",
        "    bucket: b\n",
        "\tbucket: b\n",
        None,
        &["destinations"],
    ),
    (
        "duplicate key",
        "    bucket: b\n",
        "    bucket: b\n    bucket: c\n",
        Some(6),
        &["duplicate field `bucket`"],
    ),
    (
        "policies as a mapping",
        "policies:\n  - name: nightly\n",
        "policies:\n  nightly:\n    name: nightly\n",
        Some(13),
        &["policies"],
    ),
    (
        "instances as a string",
        "    instances:\n      - uuid: 5d74bb81-0473-464d-b15b-0ae418619248\n",
        "    instances: prod\n",
        Some(18),
        &["instances"],
    ),
    (
        "bad keep_within",
        "destination: { keep_last: 3 }",
        "destination: { keep_within: 3x }",
        Some(22),
        &["keep_within", "3x"],
    ),
    (
        "zero completion_window",
        "      jitter: 5m\n",
        "      jitter: 5m\n      completion_window: 0s\n",
        Some(18),
        &["completion_window"],
    ),
    (
        "zero start_window",
        "      jitter: 5m\n",
        "      jitter: 0s\n      start_window: 0\n",
        Some(18),
        &["start_window"],
    ),
    (
        "poll_max_interval below poll_interval",
        "  timeout: 30s\n",
        "  timeout: 30s\n  poll_interval: 10s\n  poll_max_interval: 5s\n",
        Some(5),
        &["poll_max_interval"],
    ),
    (
        "retry.max_attempts 0",
        "  timeout: 30s\n",
        "  timeout: 30s\n  retry: { max_attempts: 0 }\n",
        Some(4),
        &["max_attempts"],
    ),
    (
        "kms_key_id without aws:kms",
        "    prefix: p/\n",
        "    prefix: p/\n    kms_key_id: k1\n",
        Some(9),
        &["kms_key_id"],
    ),
    (
        "only one S3 key file",
        "    prefix: p/\n",
        "    prefix: p/\n    access_key_id_file: /x\n",
        Some(6),
        &["secret_access_key_file"],
    ),
    (
        "listen port out of range",
        "destinations:\n",
        "http:\n  listen: 127.0.0.1:99999\ndestinations:\n",
        Some(5),
        &["127.0.0.1:99999"],
    ),
    (
        "invalid log level",
        "destinations:\n",
        "log:\n  level: \"loud=[\"\ndestinations:\n",
        Some(5),
        &["log.level"],
    ),
    (
        "verify.copies 0",
        "destinations:\n",
        "verify:\n  copies: 0\ndestinations:\n",
        Some(5),
        &["verify.copies"],
    ),
    (
        "verify.interval without unit",
        "destinations:\n",
        "verify:\n  interval: often\ndestinations:\n",
        Some(5),
        &["verify.interval", "often"],
    ),
    (
        "destination name with a slash",
        "  local:\n",
        "  \"lo/cal\":\n",
        Some(10),
        &["lo/cal"],
    ),
    (
        "unknown key in schedule",
        "      jitter: 5m\n",
        "      jitter: 5m\n      timezon: UTC\n",
        Some(18),
        &["timezon"],
    ),
    (
        "cron in words",
        r#"cron: "30 2 * * *""#,
        r#"cron: "every day""#,
        Some(15),
        &["every day"],
    ),
    (
        "empty policy name",
        "name: nightly",
        "name: \"\"",
        Some(13),
        &["policy name"],
    ),
    (
        "max_deletions_per_run 0",
        "      destination: { keep_last: 3 }\n",
        "      destination: { keep_last: 3 }\n      max_deletions_per_run: 0\n",
        Some(23),
        &["max_deletions_per_run"],
    ),
    (
        "misspelt keep rule",
        "destination: { keep_last: 3 }",
        "destination: { keep_lats: 3 }",
        Some(22),
        &["keep_lats"],
    ),
    (
        "provider rules empty",
        "      destination: { keep_last: 3 }\n",
        "      destination: { keep_last: 3 }\n      provider: {}\n",
        Some(23),
        &["retention.provider", "empty retention policy"],
    ),
    (
        "sim-style endpoint with path and query",
        "endpoint: http://127.0.0.1:9751",
        "endpoint: \"not a url\"",
        Some(2),
        &["not a url"],
    ),
    (
        "number as a bucket list",
        "    bucket: b\n",
        "    bucket: [1, 2]\n",
        Some(6),
        &["destinations.archive.bucket", "a single value"],
    ),
];

#[test]
fn broken_configs_exit_2_with_location_and_culprit() {
    assert!(CASES.len() >= 50, "{} cases", CASES.len());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, from, to, line, needles)) in CASES.iter().enumerate() {
        assert!(
            BASE.contains(from),
            "case {what}: BASE does not contain {from:?}"
        );
        let text = BASE.replacen(from, to, 1);
        let path = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let r = run(rdbvault().arg("-c").arg(&path).arg("check-config"));
        let file = path.display().to_string();
        let mut problems = Vec::new();
        if r.code != 2 {
            problems.push(format!("exit {} (want 2)", r.code));
        }
        if r.all().contains("panicked") {
            problems.push("panicked".into());
        }
        if !r.stderr.contains(&file) {
            problems.push("does not name the file".into());
        }
        if let Some(line) = line
            && !r.stderr.contains(&format!("{file}:{line}:"))
        {
            problems.push(format!("does not point at line {line}"));
        }
        if line.is_none() && !r.stderr.contains(&format!("{file}:")) {
            problems.push("has no location".into());
        }
        for n in *needles {
            if !r.stderr.contains(n) {
                problems.push(format!("does not mention {n:?}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{what}: {}\n    stderr: {}",
                problems.join(", "),
                r.stderr.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn several_problems_are_reported_together() {
    let text = BASE
        .replace("timezone: Asia/Shanghai", "timezone: Mars/Olympus")
        .replace("destination: archive", "destination: nowhere")
        .replace("  timeout: 30s", "  timeout: soon");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.yaml");
    std::fs::write(&path, text).unwrap();
    let r = run(rdbvault().arg("-c").arg(&path).arg("check-config"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("3 problems"), "{}", r.stderr);
    for n in ["Mars/Olympus", "nowhere", "soon"] {
        assert!(r.stderr.contains(n), "{}", r.stderr);
    }
}

#[test]
fn missing_and_empty_config_files_exit_2() {
    let r = run(rdbvault().args(["-c", "/nonexistent/rdbvault.yaml", "check-config"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("/nonexistent/rdbvault.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.yaml");
    std::fs::write(&path, "\n").unwrap();
    let r = run(rdbvault().arg("-c").arg(&path).arg("check-config"));
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("empty"), "{}", r.stderr);
}

#[test]
fn config_path_comes_from_rdbvault_config_when_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.yaml");
    std::fs::write(&path, BASE).unwrap();
    let r = run(rdbvault().env("RDBVAULT_CONFIG", &path).arg("check-config"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(&path.display().to_string()));
}

#[test]
fn help_lists_every_command() {
    let r = run(rdbvault().arg("--help"));
    assert_eq!(r.code, 0);
    for cmd in [
        "run",
        "check-config",
        "backup-now",
        "jobs",
        "backups",
        "prune",
        "verify",
        "fetch",
        "api",
        "sim",
        "demo",
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} missing from --help"
        );
    }
}

#[test]
fn api_command_refuses_bad_input_with_exit_2() {
    for (args, needle) in [
        (vec!["api", "DescribeBackup"], "unknown action"),
        (
            vec!["api", "DescribeBackups", "InstanceUUID=x"],
            "InstanceUUID",
        ),
        (vec!["api", "DescribeBackups"], "InstanceUuid"),
        (vec!["api", "DescribeBackups", "oops"], "KEY=VALUE"),
        (
            vec!["api", "DeleteBackup", "InstanceUuid=x", "BackupId=y"],
            "--yes",
        ),
        (
            vec![
                "api",
                "CreateDBInstance",
                "RegionId=r",
                "VdcId=v",
                "BasePipeId=p",
                "InstanceName=n",
                "PaasGoodsId=ten",
                "Password=x",
                "--yes",
            ],
            "integer",
        ),
        (vec!["api", "DescribeRegins"], "CDS_ACCESS_KEY_ID"),
    ] {
        let r = run(rdbvault()
            .args(&args)
            .args(["--endpoint", "http://127.0.0.1:9"]));
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
}

//! The deployment files: alert rules and dashboard use only metrics rdbvault exports, promtool
//! checks and unit-tests the rules, systemd-analyze verifies the unit, and the container
//! example config passes check-config.

use crate::support::{have_tool, rdbvault, repo_root, run};
use std::process::Command;

fn contract_metrics() -> Vec<String> {
    let mut names: Vec<String> = super::operations::CONTRACT
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.push("rdbvault_schedule_skipped_total".into());
    // Exported once drills run (the daemon with a redis-server, or `rdbvault drill`).
    for name in [
        "rdbvault_restore_drill_last_success_timestamp_seconds",
        "rdbvault_restore_drill_last_failure_timestamp_seconds",
        "rdbvault_restore_drill_runs_total",
        "rdbvault_restore_drill_interval_seconds",
        "rdbvault_notifications_total",
    ] {
        names.push(name.into());
    }
    names
}

/// Every `rdbvault_*` identifier in a text.
fn referenced(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("rdbvault_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let known = contract_metrics();
    for file in [
        "deploy/prometheus/rdbvault-alerts.yml",
        "deploy/grafana/rdbvault-dashboard.json",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let refs = referenced(&text);
        assert!(!refs.is_empty(), "{file} references no metric");
        for r in refs {
            let base = r
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                known.iter().any(|k| k == base || k == &r),
                "{file} uses {r}, which rdbvault does not export"
            );
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/rdbvault-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let titles: Vec<_> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "failed",
        "age",
        "Phase durations",
        "Bytes",
        "API",
        "Jobs by state",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "dashboard lacks a panel about {want}: {titles:?}"
        );
    }
}

#[test]
fn the_shipped_scrape_job_and_the_rules_pass_promtool_check_config() {
    if !have_tool("promtool") {
        return;
    }
    let dir = repo_root().join("deploy/prometheus");
    let scrape = std::fs::read_to_string(dir.join("scrape-rdbvault.yml")).unwrap();
    assert!(scrape.contains("honor_labels: true"), "{scrape}");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("prometheus.yml");
    let indented: String = scrape.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        &config,
        format!(
            "rule_files: [\"{}\"]\nscrape_configs:\n{indented}",
            dir.join("rdbvault-alerts.yml").display()
        ),
    )
    .unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    if !have_tool("promtool") {
        return;
    }
    let dir = repo_root().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "rdbvault-alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "rdbvault-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Every alert is exercised by the tests, both firing and silent.
    let rules = std::fs::read_to_string(dir.join("rdbvault-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("rdbvault-alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
    {
        let name = line.split(':').nth(1).unwrap().trim();
        let cases: Vec<_> = tests
            .split("- eval_time:")
            .filter(|c| c.contains(&format!("alertname: {name}")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{name} is never tested silent"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels")),
            "{name} is never tested firing"
        );
    }
}

#[test]
fn the_systemd_unit_verifies() {
    if !have_tool("systemd-analyze") {
        return;
    }
    let unit = std::fs::read_to_string(repo_root().join("systemd/rdbvault.service")).unwrap();
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=rdbvault",
        "LoadCredential=cds_access_key_id",
        "LoadCredential=http_token:",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    // TimeoutStopSec must leave room for the drain.
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(stop > rdbvault::daemon::DRAIN_DEADLINE.as_secs());
    // Verify a copy whose ExecStart points at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdbvault.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rdbvault", env!("CARGO_BIN_EXE_rdbvault")),
    )
    .unwrap();
    verify_unit(&path);
    // With the replica drop-in (the PostgreSQL password as a credential) merged in.
    let drop_in =
        std::fs::read_to_string(repo_root().join("systemd/rdbvault-replica.conf")).unwrap();
    assert!(drop_in.contains("LoadCredential=pg_password:"));
    let with_drop_in = dir.path().join("replica").join("rdbvault.service");
    std::fs::create_dir_all(with_drop_in.parent().unwrap()).unwrap();
    std::fs::write(
        &with_drop_in,
        format!("{}\n{drop_in}", std::fs::read_to_string(&path).unwrap()),
    )
    .unwrap();
    verify_unit(&with_drop_in);
}

/// A tool's stdout and stderr, for an assertion's message.
fn both_streams(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `systemd-analyze verify` finds nothing to say about the unit file at `path`.
fn verify_unit(path: &std::path::Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(path)
        .output()
        .unwrap();
    let text = both_streams(&out);
    assert!(
        out.status.success() && !text.contains("rdbvault.service:"),
        "systemd-analyze verify {}:\n{text}",
        path.display()
    );
}

#[test]
fn the_container_example_config_passes_check_config() {
    let r = run(rdbvault().args([
        "-c",
        "deploy/container/rdbvault.compose.yaml",
        "check-config",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    for manifest in K8S_MANIFESTS {
        let k8s = std::fs::read_to_string(repo_root().join(manifest)).unwrap();
        let config = k8s
            .split("rdbvault.yaml: |\n")
            .nth(1)
            .unwrap()
            .split("\n---")
            .next()
            .unwrap();
        let config: String = config
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed = rdbvault::config::parse(&config, std::path::Path::new(manifest)).unwrap();
        if manifest.contains("replicas") {
            assert!(
                parsed.state.url.is_some(),
                "{manifest} shares a PostgreSQL DB"
            );
        }
    }
}

/// The Kubernetes manifests we ship.
const K8S_MANIFESTS: [&str; 2] = [
    "deploy/container/k8s-sidecar.yaml",
    "deploy/container/k8s-replicas.yaml",
];

/// Every `*.yml` / `*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every YAML file we ship parses, each document of a multi-document file included (a YAML
/// error in a manifest only shows when someone applies it).
#[test]
fn every_yaml_file_in_deploy_and_config_parses() {
    use serde::Deserialize as _;
    let mut files = 0;
    let mut documents = 0;
    for dir in ["deploy", "config"] {
        for path in yaml_files(&repo_root().join(dir)) {
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let value = serde_yaml_ng::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{} (document {}): {e}", path.display(), i + 1));
                assert!(
                    !value.is_null(),
                    "{} document {} is empty",
                    path.display(),
                    i + 1
                );
                documents += 1;
            }
        }
    }
    assert!(files >= 7, "found only {files} YAML files");
    assert!(documents > files, "the k8s manifest has several documents");
}

/// The compose files validate against the Compose Specification's JSON schema (the one
/// `check-jsonschema` ships as `vendor.compose-spec`; `docker-compose config` 1.29 does not
/// install on Python 3.11), and every secret a service uses is declared.
#[test]
fn the_compose_files_match_the_compose_spec() {
    if !have_tool("check-jsonschema") {
        return;
    }
    let composes: Vec<_> = yaml_files(&repo_root().join("deploy/container"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains("compose") && !name.starts_with("rdbvault.")
        })
        .collect();
    assert!(!composes.is_empty());
    for path in &composes {
        let out = Command::new("check-jsonschema")
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let declared = doc["secrets"].as_mapping().cloned().unwrap_or_default();
        for (name, service) in doc["services"].as_mapping().unwrap() {
            for s in service["secrets"].as_sequence().into_iter().flatten() {
                let secret = s.as_str().or_else(|| s["source"].as_str()).unwrap();
                assert!(
                    declared.contains_key(secret),
                    "{}: service {name:?} uses undeclared secret {secret}",
                    path.display()
                );
            }
        }
    }
    // The schema check itself rejects a broken file (so a pass above means something).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("compose.yaml");
    std::fs::write(&bad, "services:\n  a:\n    imag: x\n    ports: 9750\n").unwrap();
    let out = Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The Kubernetes manifest validates, strictly (no unknown fields), against the API schemas
/// that `kubernetes-validate` ships.
#[test]
fn the_k8s_manifest_matches_the_kubernetes_schema() {
    if !have_tool("kubernetes-validate") {
        return;
    }
    for (manifest, resources) in [(K8S_MANIFESTS[0], 2), (K8S_MANIFESTS[1], 3)] {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", manifest])
            .current_dir(repo_root())
            .output()
            .unwrap();
        let text = both_streams(&out);
        assert!(out.status.success(), "{manifest}: {text}");
        assert_eq!(
            text.matches("passed for resource").count(),
            resources,
            "{manifest}: {text}"
        );
    }
}

//! Backups are private: the real binary, started under umask 022 (which would give 0644 files
//! and 0755 directories), leaves every copy, manifest, directory and state DB file it creates
//! readable by its owner only, and `fetch` writes a 0600 file.

use super::pipeline::{Env, SMALL};
use crate::support::{self, rdbvault_under_umask};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root` (not `root` itself), directories and files.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// Files 0600, directories 0700; returns how many files were checked.
fn assert_private(root: &Path) -> usize {
    let mut files = 0;
    for path in walk(root) {
        if path.is_dir() {
            assert_eq!(
                mode(&path),
                0o700,
                "directory {} is not 0700",
                path.display()
            );
        } else {
            files += 1;
            assert_eq!(mode(&path), 0o600, "file {} is not 0600", path.display());
        }
    }
    files
}

fn run(env: &Env, args: &[&str]) -> support::Run {
    let mut cmd = rdbvault_under_umask("022");
    cmd.arg("-c").arg(&env.config).args(args);
    let r = support::run(&mut cmd);
    env.record(&r.all());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_manifests_state_and_fetched_files_are_private_under_umask_022() {
    let Some(env) = Env::new("perm", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let d = env.dir.path();
    // The state DB in directories rdbvault has to create itself.
    let state_root = d.join("var");
    let state_db = state_root.join("lib/rdbvault/state.db");
    // (A SQLite file whatever the pass: this test is about files.)
    let text = std::fs::read_to_string(&env.config).unwrap();
    let moved: String = text
        .lines()
        .map(|l| match l.trim_start() {
            t if t.starts_with("path:") && t.ends_with("/state.db")
                || t.starts_with("url: postgres") =>
            {
                format!("  path: {}\n", state_db.display())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert_ne!(moved, text, "the state path was not rewritten");
    std::fs::write(&env.config, moved).unwrap();

    // Sanity: the shell really applies umask 022 (a file it creates is 0644).
    let probe = d.join("umask-probe");
    let status = std::process::Command::new("sh")
        .args(["-c", "umask 022; : > \"$0\""])
        .arg(&probe)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(mode(&probe), 0o644);

    let r = run(&env, &["backup-now", "--policy", "p"]);
    assert_eq!(r.code, 0, "{}", r.all());

    // The archive root is the user's (made by the test); everything below it is ours.
    let archive = d.join("archive");
    let copies = assert_private(&archive);
    assert!(
        copies >= 2,
        "expected a copy and its manifest under {}: {:?}",
        archive.display(),
        walk(&archive)
    );
    assert!(
        walk(&archive)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".manifest.json"))
    );
    assert_eq!(mode(&state_root), 0o700);
    let state_files = assert_private(&state_root);
    assert!(state_files >= 1, "{:?}", walk(&state_root));

    // fetch: the verified copy lands 0600, and no temp file stays behind.
    let r = run(&env, &["jobs", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let jobs: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let id = jobs[0]["id"].as_str().unwrap().to_string();
    let out_dir = d.join("restore");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.rdb");
    let r = run(&env, &["fetch", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(mode(&out), 0o600, "fetched file");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "fetch left a temp file"
    );
    // Opening the DB again (jobs, fetch) loosens nothing.
    assert_private(&state_root);
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test]
async fn a_state_db_left_world_readable_is_tightened_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    std::fs::write(dir.path().join("rdbvault.yaml"), minimal_config(&db)).unwrap();
    // An older version left the DB 0644.
    rdbvault::store::Store::open(&db)
        .await
        .unwrap()
        .close()
        .await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = rdbvault_under_umask("022");
    cmd.arg("-c")
        .arg(dir.path().join("rdbvault.yaml"))
        .args(["jobs"]);
    let r = support::run(&mut cmd);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(mode(&db), 0o600);
}

fn minimal_config(db: &Path) -> String {
    format!(
        r#"cds: {{ endpoint: "http://127.0.0.1:9" }}
state: {{ path: {db} }}
destinations:
  d: {{ type: file, path: /nonexistent }}
policies:
  - name: p
    schedule: {{ cron: "@yearly" }}
    instances: [ {{ name: "x" }} ]
    destination: d
    retention: {{ destination: {{ keep_last: 1 }} }}
"#,
        db = db.display()
    )
}

//! Relative paths in the config are taken from the config file's directory, whatever the
//! working directory; commands that only read the state DB never create it.

use crate::support::{self, AK, SECRET, rdbvault, start_sim, write_private};
use std::path::Path;

const UUID: &str = "5d74bb81-0473-464d-b15b-0ae418619248";

/// A config at `conf/rdbvault.yaml` under `root` whose every path is relative.
fn write_relative_config(root: &Path, endpoint: &str) -> std::path::PathBuf {
    let conf = root.join("conf");
    std::fs::create_dir_all(conf.join("keys")).unwrap();
    std::fs::create_dir_all(conf.join("archive")).unwrap();
    write_private(&conf.join("keys/cds_id"), AK);
    write_private(&conf.join("keys/cds_secret"), SECRET);
    write_private(&conf.join("keys/s3_id"), "some-s3-key");
    write_private(&conf.join("keys/s3_secret"), "some-s3-secret-value");
    write_private(&conf.join("keys/token"), "a-bearer-token-value");
    let text = format!(
        r#"cds:
  endpoint: {endpoint}
  access_key_id_file: keys/cds_id
  access_key_secret_file: ./keys/cds_secret
  timeout: 10s
  poll_interval: 200ms
  poll_max_interval: 1s
state: {{ path: state.db }}
http: {{ listen: 127.0.0.1:0, token_file: keys/token }}
destinations:
  dir: {{ type: file, path: archive }}
  s3:
    type: s3
    bucket: unused
    endpoint: http://127.0.0.1:9
    path_style: true
    access_key_id_file: keys/s3_id
    secret_access_key_file: keys/s3_secret
policies:
  - name: p
    schedule: {{ cron: "@yearly", start_window: 1m, completion_window: 5m }}
    instances: [ {{ uuid: {UUID} }} ]
    destination: dir
    retention: {{ destination: {{ keep_last: 3 }} }}
"#
    );
    let path = conf.join("rdbvault.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_in(dir: &Path, args: &[&str]) -> support::Run {
    let mut cmd = rdbvault();
    cmd.current_dir(dir).args(args);
    support::run(&mut cmd)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_follow_the_config_file_not_the_working_directory() {
    let sim = start_sim(support::sim_config()).await;
    let root = tempfile::tempdir().unwrap();
    let config = write_relative_config(root.path(), &sim.base_url);
    let elsewhere = tempfile::tempdir().unwrap();
    let config_arg = config.to_str().unwrap().to_string();

    // backup-now from a directory that has nothing to do with the config.
    let (dir, c) = (elsewhere.path().to_path_buf(), config_arg.clone());
    let r = tokio::task::spawn_blocking(move || {
        run_in(&dir, &["-c", &c, "backup-now", "--policy", "p"])
    })
    .await
    .unwrap();
    assert_eq!(r.code, 0, "{}", r.all());
    let conf = root.path().join("conf");
    assert!(
        conf.join("state.db").is_file(),
        "the DB lands beside the config"
    );
    let copies: Vec<_> = files_under(&conf.join("archive"))
        .into_iter()
        .filter(|f| f.ends_with(".rdb"))
        .collect();
    assert_eq!(copies.len(), 1, "the copy lands in conf/archive");
    assert_eq!(
        files_under(elsewhere.path()),
        Vec::<String>::new(),
        "nothing is written to the working directory"
    );

    // jobs from yet another directory, naming the config relatively, shows that job.
    let other = root.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let r = run_in(&other, &["-c", "../conf/rdbvault.yaml", "jobs"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("stored"), "{}", r.stdout);
    assert!(!r.stdout.contains("no jobs yet"), "{}", r.stdout);
    let r = run_in(&other, &["-c", "../conf/rdbvault.yaml", "jobs", "--json"]);
    let jobs: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{}", r.stdout);
    // Times are RFC 3339 with a zone, like every other --json.
    for key in ["created_at", "due_at", "finished_at"] {
        let t = jobs[0][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {}", r.stdout));
        assert!(
            t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{key}: {t}"
        );
    }
    assert_eq!(files_under(&other), Vec::<String>::new());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_never_create_a_state_db() {
    let root = tempfile::tempdir().unwrap();
    let config = write_relative_config(root.path(), "http://127.0.0.1:9");
    let conf = root.path().join("conf");
    let before = files_under(&conf);
    let db = conf.join("state.db");
    for args in [
        vec!["jobs"],
        vec!["jobs", "--json"],
        vec!["jobs", "show", "abc"],
        vec!["backups"],
        vec!["fetch", "abc", "-o", "restore.rdb"],
    ] {
        let r = run_in(
            root.path(),
            &[&["-c", config.to_str().unwrap()], args.as_slice()].concat(),
        );
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        let text = r.stderr;
        assert!(text.contains(&db.display().to_string()), "{args:?}: {text}");
        assert!(text.contains("does not exist"), "{args:?}: {text}");
        assert!(text.contains("config file's directory"), "{args:?}: {text}");
        assert!(text.contains("state.path"), "{args:?}: {text}");
        assert_eq!(files_under(&conf), before, "{args:?} created a file");
        assert!(!root.path().join("restore.rdb").exists());
    }
}

//! End to end: the `rdbvault` binary against the simulator, a real SeaweedFS and a real
//! directory: stored copies equal the provider's bytes; corruption, truncation, expired URLs,
//! SIGKILL and SIGTERM each end the way they must.

use crate::support::{self, AK, SECRET, SeaweedFs, seaweedfs, start_sim, write_private};
use rdbvault::config::{DestinationKind, S3Destination};
use rdbvault::sim::SimHandle;
use rdbvault::sim::state::{Fault, InstanceSpec, TruncateMode};
use rdbvault::store::Store;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) const BIG: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub(crate) const SMALL: &str = "aaaaaaaa-0000-4000-8000-000000000002";
pub(crate) const CLUSTER: &str = "aaaaaaaa-0000-4000-8000-000000000003";
/// Larger than two 5 MiB parts, not a multiple of anything.
const BIG_SIZE: u64 = 12 * 1024 * 1024 + 123;

fn sim_config() -> rdbvault::sim::SimConfig {
    let mut cfg = support::sim_config();
    cfg.settings.backup_delay = Duration::from_millis(300);
    cfg.instances = Some(vec![
        InstanceSpec {
            uuid: Some(BIG.into()),
            name: "big-replica".into(),
            version: Some("7.0".into()),
            backup_size: Some(BIG_SIZE),
            ..Default::default()
        },
        InstanceSpec {
            uuid: Some(SMALL.into()),
            name: "small-replica".into(),
            version: Some("5.0".into()),
            backup_size: Some(300_001),
            auto_backup: Some(true),
            ..Default::default()
        },
        InstanceSpec {
            uuid: Some(CLUSTER.into()),
            name: "cluster-2".into(),
            version: Some("5.0".into()),
            architecture_type: Some(2),
            shards: Some(2),
            backup_size: Some(6 * 1024 * 1024 + 7),
            ..Default::default()
        },
    ]);
    cfg
}

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sim: SimHandle,
    s3: &'static SeaweedFs,
    pub(crate) config: PathBuf,
    pub(crate) prefix: String,
    /// Everything the binary printed, for the secret-leak check.
    output: std::sync::Mutex<String>,
}

/// A start window that fits between two runs of `cron` (check-config refuses a longer one):
/// the step of a `*/N` seconds field, else 1m.
pub(crate) fn start_window_for(cron: &str) -> String {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    match fields.first().and_then(|s| s.strip_prefix("*/")) {
        Some(step) if fields.len() == 6 => format!("{step}s"),
        _ => "1m".into(),
    }
}

impl Env {
    pub(crate) async fn new(
        name: &str,
        destination: &str,
        selector: &str,
        cron: &str,
    ) -> Option<Env> {
        let s3 = seaweedfs()?;
        let sim = start_sim(sim_config()).await;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_private(&d.join("cds_id"), AK);
        write_private(&d.join("cds_secret"), SECRET);
        write_private(&d.join("s3_id"), &s3.access_key);
        write_private(&d.join("s3_secret"), &s3.secret_key);
        std::fs::create_dir_all(d.join("archive")).unwrap();
        let prefix = format!("{name}-{}/", uuid::Uuid::new_v4().simple());
        let text = format!(
            r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {d}/cds_id
  access_key_secret_file: {d}/cds_secret
  timeout: 10s
  poll_interval: 200ms
  poll_max_interval: 1s
  retry: {{ max_attempts: 3, base_delay: 50ms, max_delay: 200ms }}
{state}  job_lease: 3s
http:
  listen: 127.0.0.1:0
log:
  level: info
limits:
  max_concurrent_jobs: 4
  max_concurrent_transfers: 2
destinations:
  s3:
    type: s3
    bucket: rdbvault-test
    prefix: {prefix}
    endpoint: {s3e}
    path_style: true
    part_size: 5MiB
    upload_concurrency: 2
    access_key_id_file: {d}/s3_id
    secret_access_key_file: {d}/s3_secret
  dir:
    type: file
    path: {d}/archive
policies:
  - name: p
    schedule: {{ cron: "{cron}", start_window: {window}, completion_window: 5m, catch_up: none }}
    instances:
      - {selector}
    destination: {destination}
    retention: {{ destination: {{ keep_last: 3 }} }}
"#,
            endpoint = sim.base_url,
            d = d.display(),
            s3e = s3.endpoint,
            window = start_window_for(cron),
            state = support::state_yaml(d),
        );
        let config = d.join("rdbvault.yaml");
        std::fs::write(&config, text).unwrap();
        Some(Env {
            dir,
            sim,
            s3,
            config,
            prefix,
            output: Default::default(),
        })
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = support::rdbvault();
        c.arg("-c").arg(&self.config).args(args);
        let mut c = tokio::process::Command::from(c);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c
    }

    pub(crate) async fn run(&self, args: &[&str]) -> support::Run {
        let out = self.cmd(args).output().await.unwrap();
        let r = support::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.output.lock().unwrap().push_str(&r.all());
        r
    }

    /// Replaces `from` by `to` in the config file (which must contain it).
    pub(crate) fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    pub(crate) fn record(&self, text: &str) {
        self.output.lock().unwrap().push_str(text);
    }

    pub(crate) async fn s3_client(&self) -> (aws_sdk_s3::Client, S3Destination) {
        let cfg = rdbvault::config::load(&self.config).unwrap();
        let DestinationKind::S3(s3) = &cfg.destinations["s3"].kind else {
            unreachable!()
        };
        (
            rdbvault::destination::s3_client(s3).await.unwrap(),
            (**s3).clone(),
        )
    }

    pub(crate) async fn objects(&self) -> Vec<String> {
        let (client, cfg) = self.s3_client().await;
        let out = client
            .list_objects_v2()
            .bucket(&cfg.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .unwrap();
        let mut keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect();
        keys.sort();
        keys
    }

    pub(crate) async fn uploads(&self) -> Vec<(String, String)> {
        let (client, cfg) = self.s3_client().await;
        rdbvault::destination::s3::list_uploads(&client, &cfg.bucket, &self.prefix)
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, key: &str) -> Vec<u8> {
        let (client, cfg) = self.s3_client().await;
        let out = client
            .get_object()
            .bucket(&cfg.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    pub(crate) async fn store(&self) -> Store {
        support::open_store(self.dir.path()).await
    }

    /// The provider's bytes of a backup, fetched straight from the simulator.
    pub(crate) async fn provider_bytes(&self, instance: &str, backup_id: &str) -> Vec<u8> {
        let (c, _) = support::client(&self.sim);
        let d = c.download_backup(instance, backup_id).await.unwrap();
        reqwest::get(&d.backup_download_url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// No secret and no download URL query string in anything the binary printed.
    pub(crate) fn assert_no_leaks(&self) {
        let out = self.output.lock().unwrap();
        for needle in [
            SECRET,
            self.s3.secret_key.as_str(),
            "Signature=",
            "Expires=",
            "OSSAccessKeyId",
        ] {
            assert!(!out.contains(needle), "output leaks {needle:?}:\n{out}");
        }
    }
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn wait_for<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) {
    for _ in 0..secs * 10 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_stores_verified_s3_objects_equal_to_the_providers_bytes() {
    let Some(env) = Env::new("e2e", "s3", r#"name: "*""#, "@yearly").await else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(env.sim.calls("CreateBackup"), 3);

    let store = env.store().await;
    let jobs = store.list_jobs(None, None, 10).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let mut objects = 0;
    for job in &jobs {
        assert_eq!(job.state, "stored", "{job:?}");
        for s in store.shards(&job.id).await.unwrap() {
            objects += 1;
            let key = s.object_key.clone().unwrap();
            assert!(
                key.starts_with(&format!("{}p/{}/", env.prefix, job.instance_uuid)),
                "{key}"
            );
            let stored = env.get(&key).await;
            let provider = env.provider_bytes(&job.instance_uuid, &s.backup_id).await;
            assert_eq!(stored.len(), provider.len());
            assert!(
                stored == provider,
                "stored bytes differ from the provider's for {key}"
            );
            assert_eq!(s.sha256.as_deref(), Some(sha(&stored).as_str()));
            // Metadata and manifest.
            let (client, cfg) = env.s3_client().await;
            let head = client
                .head_object()
                .bucket(&cfg.bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let meta = head.metadata().unwrap();
            assert_eq!(meta.get("sha256"), s.sha256.as_ref());
            assert_eq!(meta.get("backup-id"), Some(&s.backup_id));
            let manifest: serde_json::Value =
                serde_json::from_slice(&env.get(&format!("{key}.manifest.json")).await).unwrap();
            assert_eq!(manifest["sha256"], sha(&stored));
            assert_eq!(manifest["size"], stored.len());
            assert_eq!(manifest["provider_backup_id"], s.backup_id);
            assert_eq!(manifest["job_id"], job.id);
            assert_eq!(manifest["instance_uuid"], job.instance_uuid);
            assert_eq!(manifest["shard_id"], s.shard_id);
        }
    }
    assert_eq!(objects, 4, "big + small + two cluster shards");
    assert_eq!(env.objects().await.len(), 8, "each object and its manifest");
    assert!(env.uploads().await.is_empty(), "no multipart upload left");

    // The cluster job has one object per shard, each named with its shard id.
    let cluster = jobs.iter().find(|j| j.instance_uuid == CLUSTER).unwrap();
    let shards = store.shards(&cluster.id).await.unwrap();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| {
        s.object_key
            .as_ref()
            .unwrap()
            .ends_with(&format!("-{}.rdb", s.shard_id))
    }));

    // jobs and jobs show read the same journal.
    let r = env.run(&["jobs"]).await;
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.lines().filter(|l| l.contains(" stored ")).count(),
        3,
        "{}",
        r.stdout
    );
    let r = env.run(&["jobs", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let r = env.run(&["jobs", "show", &cluster.id[..32]]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("snapshot-finished") && r.stdout.contains("verified"),
        "{}",
        r.stdout
    );
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_destination_renames_only_verified_files() {
    let Some(env) = Env::new("file", "dir", r#"name: "*-2""#, "@yearly").await else {
        return;
    };
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let store = env.store().await;
    let job = &store.list_jobs(None, None, 10).await.unwrap()[0];
    assert_eq!(job.instance_uuid, CLUSTER);
    for s in store.shards(&job.id).await.unwrap() {
        let path = env.dir.path().join("archive").join(s.object_key.unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes == env.provider_bytes(CLUSTER, &s.backup_id).await);
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(format!("{}.manifest.json", path.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["sha256"], sha(&bytes));
    }
    let partial = walk(&env.dir.path().join("archive"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partial, 0);
    env.sim.stop().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_download_fails_with_nothing_visible_and_the_upload_aborted() {
    let Some(env) = Env::new("corrupt", "s3", &format!("uuid: {BIG}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadCorrupt {
        count: None,
        offset: Some(BIG_SIZE - 100),
    });
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.all().contains("checksum mismatch"), "{}", r.all());
    let store = env.store().await;
    let job = &store.list_jobs(None, None, 10).await.unwrap()[0];
    assert_eq!(job.state, "failed");
    assert!(job.error.as_deref().unwrap().contains("checksum mismatch"));
    assert!(
        env.objects().await.is_empty(),
        "a copy that failed verification must not be visible"
    );
    assert!(
        env.uploads().await.is_empty(),
        "its multipart upload must be aborted"
    );
    let r = env.run(&["jobs", "--state", "failed"]).await;
    assert!(r.stdout.contains(&job.id[..8]), "tables show short ids");
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_downloads_resume_and_expired_urls_are_refreshed() {
    let Some(env) = Env::new("resume", "s3", &format!("uuid: {BIG}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadTruncate {
        count: Some(2),
        after_bytes: 3 << 20,
        mode: TruncateMode::Abort,
    });
    env.sim.add_fault(Fault::DownloadExpired { count: Some(2) });
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let downloads = env.sim.shared.world.lock().unwrap().downloads;
    assert!(
        downloads >= 5,
        "2 expired + 2 truncated + the rest: {downloads}"
    );
    assert!(
        env.sim.calls("DownloadBackup") >= 5,
        "a fresh URL for every connection"
    );
    // Range resumption: the bytes served add up to little more than the file.
    let served = env.sim.shared.world.lock().unwrap().download_bytes;
    assert!(
        served <= BIG_SIZE + (1 << 20),
        "resumed with Range, not from the start: {served}"
    );
    let store = env.store().await;
    let job = &store.list_jobs(None, None, 10).await.unwrap()[0];
    assert_eq!(job.state, "stored");
    let s = &store.shards(&job.id).await.unwrap()[0];
    assert!(
        env.get(s.object_key.as_ref().unwrap()).await
            == env.provider_bytes(BIG, &s.backup_id).await
    );

    // A body that ends early without an error ("short") is resumed too.
    env.sim.add_fault(Fault::DownloadTruncate {
        count: Some(1),
        after_bytes: 1 << 20,
        mode: TruncateMode::Short,
    });
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_now_is_finished_by_run_with_one_create_backup_and_no_orphan_upload() {
    let Some(env) = Env::new("kill", "s3", &format!("uuid: {BIG}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 1 << 20,
    });
    let mut child = env.cmd(&["backup-now", "--policy", "p"]).spawn().unwrap();
    let store = env.store().await;
    // Wait until at least one part is in S3 and journaled, then kill -9.
    let mut waited = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "backup-now ended ({status}) before it could be killed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let has_part = {
            let store = store.clone();
            async move {
                let Some(job) = store
                    .list_jobs(None, None, 1)
                    .await
                    .unwrap()
                    .into_iter()
                    .next()
                else {
                    return false;
                };
                match store.shards(&job.id).await.unwrap().first() {
                    Some(s) => !store.parts(&job.id, &s.backup_id).await.unwrap().is_empty(),
                    None => false,
                }
            }
        }
        .await;
        if has_part {
            break;
        }
        waited += 1;
        assert!(waited < 1200, "no part journaled within 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(job.state, "transferring");
    let left = store.shards(&job.id).await.unwrap().remove(0);
    let orphan_id = left.upload_id.clone().expect("upload id journaled");
    let orphan_key = left.object_key.clone().unwrap();
    let (client, cfg) = env.s3_client().await;
    let parts = |id: String| {
        let (client, bucket, key) = (client.clone(), cfg.bucket.clone(), orphan_key.clone());
        async move {
            client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
        }
    };
    assert!(
        !parts(orphan_id.clone()).await.unwrap().parts().is_empty(),
        "the killed process left its multipart upload, with parts"
    );

    env.sim.shared.world.lock().unwrap().faults.clear();
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    wait_for("the resumed job to be stored", 90, || {
        let (store, id) = (store.clone(), job.id.clone());
        async move { store.job(&id).await.unwrap().state == "stored" }
    })
    .await;
    rdbvault_sigterm(&daemon);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the daemon exits 0 on SIGTERM");
    let out = daemon.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));

    assert_eq!(
        env.sim.calls("CreateBackup"),
        1,
        "one CreateBackup for the job, across both processes"
    );
    assert!(
        parts(orphan_id).await.is_err(),
        "the orphan upload was aborted"
    );
    assert!(env.uploads().await.is_empty(), "no multipart upload left");
    let s = &store.shards(&job.id).await.unwrap()[0];
    assert!(
        env.get(s.object_key.as_ref().unwrap()).await
            == env.provider_bytes(BIG, &s.backup_id).await
    );
    let events: Vec<_> = store
        .events(&job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(events.contains(&"upload-aborted".to_string()), "{events:?}");
    env.assert_no_leaks();
    env.sim.stop().await;
}

fn rdbvault_sigterm(child: &tokio::process::Child) {
    support::signal(child, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_the_next_start_resumes() {
    let Some(env) = Env::new("drain", "dir", &format!("uuid: {BIG}"), "*/2 * * * * *").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 1 << 20,
    });
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    wait_for("a transfer in progress", 60, || {
        let store = store.clone();
        async move {
            let Some(job) = store
                .list_jobs(None, None, 1)
                .await
                .unwrap()
                .into_iter()
                .next()
            else {
                return false;
            };
            job.state == "transferring"
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rdbvault_sigterm(&daemon);
    let status = tokio::time::timeout(Duration::from_secs(30), daemon.wait())
        .await
        .expect("drains within the deadline")
        .unwrap();
    assert!(status.success());
    let out = daemon.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(job.state, "transferring", "interrupted, not failed");
    assert!(job.owner.is_none(), "ownership handed back");
    let events: Vec<_> = store
        .events(&job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(events.contains(&"interrupted".to_string()), "{events:?}");
    let partial = walk(&env.dir.path().join("archive"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .count();
    assert_eq!(partial, 1, "the .partial file is kept for resumption");

    env.sim.shared.world.lock().unwrap().faults.clear();
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    wait_for("the job to be stored", 60, || {
        let (store, id) = (store.clone(), job.id.clone());
        async move { store.job(&id).await.unwrap().state == "stored" }
    })
    .await;
    rdbvault_sigterm(&daemon);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    let events = store.events(&job.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "resume" && e.message.contains("already on disk")),
        "{events:?}"
    );
    let s = &store.shards(&job.id).await.unwrap()[0];
    let bytes = std::fs::read(
        env.dir
            .path()
            .join("archive")
            .join(s.object_key.as_ref().unwrap()),
    )
    .unwrap();
    assert!(bytes == env.provider_bytes(BIG, &s.backup_id).await);
    env.assert_no_leaks();
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_field_cron_fires_on_time() {
    let Some(env) = Env::new("cron", "dir", &format!("uuid: {SMALL}"), "*/3 * * * * *").await
    else {
        return;
    };
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    wait_for("three stored runs", 40, || {
        let store = store.clone();
        async move {
            store
                .list_jobs(None, Some(rdbvault::job::State::Stored), 10)
                .await
                .unwrap()
                .len()
                >= 3
        }
    })
    .await;
    rdbvault_sigterm(&daemon);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    let out = daemon.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    for job in store.list_jobs(None, None, 50).await.unwrap() {
        assert_eq!(
            job.due_at % 3000,
            0,
            "due on a multiple of 3 seconds: {}",
            job.due_at
        );
        let late = job.created_at - job.due_at;
        assert!(
            (-50..1000).contains(&late),
            "job created {late} ms after its due time"
        );
    }
    env.assert_no_leaks();
    env.sim.stop().await;
}

/// Writes a policy schedule row as if rdbvault had last acted on a run two years ago.
async fn pretend_down_since_long_ago(env: &Env) {
    let store = env.store().await;
    let long_ago = chrono::Utc::now() - chrono::Duration::days(730);
    store
        .schedule_set("p", "*", Some(rdbvault::store::ms(long_ago)), None, None)
        .await
        .unwrap();
    store.close().await;
}

async fn run_daemon_until(
    env: &Env,
    what: &str,
    done: impl Fn(Vec<rdbvault::store::JobRow>) -> bool,
) -> Vec<rdbvault::store::JobRow> {
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    let mut jobs = Vec::new();
    for _ in 0..300 {
        jobs = store.list_jobs(None, None, 50).await.unwrap();
        if done(jobs.clone()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rdbvault_sigterm(&daemon);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    let out = daemon.wait_with_output().await.unwrap();
    env.record(&String::from_utf8_lossy(&out.stderr));
    assert!(
        done(jobs.clone()),
        "timed out waiting for {what}: {jobs:#?}"
    );
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_catch_up_latest_runs_once_and_none_records_a_miss() {
    // Yearly on 1 January: the last run was missed while "down".
    let Some(env) = Env::new("catchup", "dir", &format!("uuid: {SMALL}"), "0 0 1 1 *").await else {
        return;
    };
    pretend_down_since_long_ago(&env).await;
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("catch_up: none", "catch_up: latest");
    std::fs::write(&env.config, text).unwrap();
    let jobs = run_daemon_until(&env, "one stored catch-up job", |jobs| {
        jobs.iter().any(|j| j.state == "stored")
    })
    .await;
    assert_eq!(
        jobs.len(),
        1,
        "at most one catch-up run, never a stampede: {jobs:#?}"
    );
    assert_eq!(jobs[0].trigger, "catch_up");
    env.sim.stop().await;

    let Some(env) = Env::new("catchnone", "dir", &format!("uuid: {SMALL}"), "0 0 1 1 *").await
    else {
        return;
    };
    pretend_down_since_long_ago(&env).await;
    let jobs = run_daemon_until(&env, "a missed job", |jobs| {
        jobs.iter().any(|j| j.state == "missed")
    })
    .await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert!(
        jobs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("start_window"),
        "{jobs:#?}"
    );
    assert_eq!(
        env.sim.calls("CreateBackup"),
        0,
        "a missed run asks for no backup"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_now_refuses_an_instance_the_daemon_is_backing_up() {
    let Some(env) = Env::new("busy", "dir", &format!("uuid: {BIG}"), "*/2 * * * * *").await else {
        return;
    };
    env.sim.add_fault(Fault::DownloadThrottle {
        count: None,
        bytes_per_second: 1 << 20,
    });
    let mut daemon = env.cmd(&["run"]).spawn().unwrap();
    let store = env.store().await;
    wait_for("a transfer in progress", 60, || {
        let store = store.clone();
        async move {
            store
                .list_jobs(None, None, 1)
                .await
                .unwrap()
                .first()
                .is_some_and(|j| j.state == "transferring")
        }
    })
    .await;
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    // Skipped, not failed: a distinct exit.
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.all().contains("already has an open job"), "{}", r.all());
    assert!(r.all().contains("1 of 1 backup(s) skipped"), "{}", r.all());
    rdbvault_sigterm(&daemon);
    assert!(
        tokio::time::timeout(Duration::from_secs(30), daemon.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    assert_eq!(env.sim.calls("CreateBackup"), 1);
    env.sim.stop().await;
}

/// Adds download settings under `cds:` of an Env's config.
fn set_download_guard(env: &Env, min_rate: &str, window: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "  poll_max_interval: 1s\n",
        &format!(
            "  poll_max_interval: 1s\n  download_min_rate: {min_rate}\n  download_rate_window: {window}\n"
        ),
    );
    std::fs::write(&env.config, text).unwrap();
}

/// The stored file of a job's only shard equals the provider's bytes.
async fn assert_stored_file_is_the_providers(env: &Env) {
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(job.state, "stored", "{job:?}");
    let s = &store.shards(&job.id).await.unwrap()[0];
    let path = env
        .dir
        .path()
        .join("archive")
        .join(s.object_key.as_ref().unwrap());
    assert!(std::fs::read(&path).unwrap() == env.provider_bytes(SMALL, &s.backup_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_download_is_cut_as_stalled_and_resumes_when_the_host_recovers() {
    let Some(env) = Env::new("trickle", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    set_download_guard(&env, "64KiB", "2s");
    // 500 bytes per second: far below 64KiB/s, yet a byte arrives well within every read timeout.
    env.sim.add_fault(Fault::DownloadTrickle {
        count: None,
        chunk_bytes: 100,
        every_millis: 200,
    });
    let started = std::time::Instant::now();
    let child = env.cmd(&["backup-now", "--policy", "p"]).spawn().unwrap();
    // The first connection is dropped after about one window and a second one made.
    wait_for("a stalled connection to be replaced", 20, || async {
        env.sim.shared.world().downloads >= 2
    })
    .await;
    let first_cut = started.elapsed();
    assert!(
        first_cut < Duration::from_secs(10),
        "cut within a few 2s windows: {first_cut:?}"
    );
    wait_for("a second stalled connection", 20, || async {
        env.sim.shared.world().downloads >= 3
    })
    .await;
    // The host recovers: the download resumes with Range and completes.
    env.sim.shared.world().faults.clear();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("backup-now finishes once the host recovers")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    env.record(&stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("download stalled")
            && stderr.contains("64KiB/s")
            && stderr.contains("cds.download_rate_window 2s"),
        "the log names the rate and the window: {stderr}"
    );
    let served = env.sim.shared.world().download_bytes;
    assert!(
        served < 300_001 + 10_000,
        "resumed with Range, not from the start: {served}"
    );
    assert_stored_file_is_the_providers(&env).await;
    env.assert_no_leaks();
    env.sim.stop().await;
}

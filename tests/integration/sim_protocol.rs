//! The simulator as a protocol peer: an independent client's signatures, replays, downloads
//! with Range, and each download fault.

use crate::support::{self, AK, SECRET, client, have_tool, repo_root, start_sim};
use rdbvault::rdb;
use rdbvault::sim::state::{Fault, TruncateMode};
use std::process::Command;
use std::time::Duration;

const REPLICA: &str = "5d74bb81-0473-464d-b15b-0ae418619248";

fn python(
    endpoint: &str,
    secret: &str,
    method: &str,
    action: &str,
    params: &str,
    amp: bool,
) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("python3");
    cmd.arg(repo_root().join("tests/independent_client.py"))
        .args([endpoint, AK, secret, method, action, params]);
    if amp {
        cmd.arg("--amp");
    }
    let out = cmd.output().expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, body) = text
        .split_once('\n')
        .unwrap_or_else(|| panic!("no output: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body.trim()).unwrap(),
    )
}

/// Starts the real `rdbvault sim` binary on a free port.
struct SimProcess {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_sim_binary() -> SimProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = support::rdbvault()
        .args([
            "sim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backup-delay",
            "100ms",
        ])
        .env("CDS_ACCESS_KEY_ID", AK)
        .env("CDS_ACCESS_KEY_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sim = SimProcess {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return sim;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("rdbvault sim did not start");
}

#[test]
fn sim_binary_accepts_the_official_sample_signing_and_rejects_secret_ampersand() {
    if !have_tool("python3") {
        return;
    }
    let sim = spawn_sim_binary();
    // GET with a value full of special characters, sent the official way (unsorted, `+`,
    // every parameter twice).
    let (status, body) = python(
        &sim.endpoint,
        SECRET,
        "GET",
        "DescribeDBInstances",
        r#"{"InstanceName": "my redis*~/测试"}"#,
        false,
    );
    assert_eq!(
        (status, body["Code"].as_str()),
        (200, Some("Success")),
        "{body}"
    );
    let (status, body) = python(
        &sim.endpoint,
        SECRET,
        "GET",
        "DescribeDBInstances",
        r#"{"IP": "10.0.0.5"}"#,
        false,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Data"][0]["InstanceUuid"], REPLICA);
    // POST: common parameters signed, action parameters in the unsigned JSON body.
    let (status, body) = python(
        &sim.endpoint,
        SECRET,
        "POST",
        "CreateBackup",
        &format!(r#"{{"InstanceUuid": "{REPLICA}", "Desc": "测试 Redis 备份"}}"#),
        false,
    );
    assert_eq!(
        (status, body["Code"].as_str()),
        (200, Some("Success")),
        "{body}"
    );
    // The same calls keyed with `secret&` are refused.
    for (method, action, params) in [
        ("GET", "DescribeRegins", "{}"),
        (
            "POST",
            "DeleteBackup",
            r#"{"InstanceUuid": "x", "BackupId": "y"}"#,
        ),
    ] {
        let (status, body) = python(&sim.endpoint, SECRET, method, action, params, true);
        assert_eq!(
            (status, body["Code"].as_str()),
            (403, Some("SignatureDoesNotMatch")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_replayed_request_is_rejected() {
    let sim = start_sim(support::sim_config()).await;
    let query = rdbvault::cds::sign::signed_query(
        &rdbvault::cds::sign::SigningInput {
            method: rdbvault::cds::sign::Method::Get,
            action: "DescribeRegins",
            access_key_id: AK,
            secret: SECRET,
            timestamp: chrono::Utc::now(),
            nonce: "fixed-nonce-1",
        },
        &Default::default(),
    );
    let url = format!("{}/redis/?{query}", sim.base_url);
    let first = reqwest::get(&url).await.unwrap();
    assert_eq!(first.status(), 200);
    let second = reqwest::get(&url).await.unwrap();
    assert_eq!(second.status(), 400);
    let body: serde_json::Value = second.json().await.unwrap();
    assert_eq!(body["Code"], "SignatureNonceUsed");
    sim.stop().await;
}

async fn finished_backup(c: &rdbvault::cds::Client, desc: &str) -> String {
    c.create_backup(REPLICA, desc).await.unwrap();
    for _ in 0..100 {
        if let Some(b) = c
            .describe_backups(REPLICA)
            .await
            .unwrap()
            .into_iter()
            .find(|b| b.desc == desc && b.status != "running")
        {
            return b.backup_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backup did not finish");
}

async fn fetch(url: &str, range: Option<&str>) -> Result<(u16, Vec<u8>), reqwest::Error> {
    let mut req = reqwest::Client::new().get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.bytes().await?.to_vec()))
}

#[tokio::test]
async fn downloads_are_valid_rdb_files_and_honour_range() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    let id = finished_backup(&c, "rdbvault:dl").await;
    let d = c.download_backup(REPLICA, &id).await.unwrap();
    let (status, whole) = fetch(&d.backup_intranet_download_url, None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(whole.len() as u64, d.backup.backup_size.unwrap());
    let summary = rdb::verify_bytes(&whole).unwrap();
    assert_eq!(summary.version, 9, "a Redis 5.0 instance writes RDB v9");
    assert!(matches!(summary.checksum, rdb::Checksum::Verified(_)));

    // The public URL serves the same bytes.
    let (_, public) = fetch(&d.backup_download_url, None).await.unwrap();
    assert_eq!(public, whole);
    // Ranges resume exactly where asked.
    let (status, tail) = fetch(&d.backup_intranet_download_url, Some("bytes=100000-"))
        .await
        .unwrap();
    assert_eq!(status, 206);
    assert_eq!(tail, whole[100000..]);
    let (_, mid) = fetch(&d.backup_intranet_download_url, Some("bytes=10-19"))
        .await
        .unwrap();
    assert_eq!(mid, whole[10..20]);
    let (status, _) = fetch(
        &d.backup_intranet_download_url,
        Some(&format!("bytes={}-", whole.len())),
    )
    .await
    .unwrap();
    assert_eq!(status, 416);
    sim.stop().await;
}

#[tokio::test]
async fn download_faults_break_downloads_the_way_they_say() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    let id = finished_backup(&c, "rdbvault:faults").await;
    let url = c
        .download_backup(REPLICA, &id)
        .await
        .unwrap()
        .backup_intranet_download_url;

    sim.add_fault(Fault::DownloadExpired { count: Some(1) });
    assert_eq!(fetch(&url, None).await.unwrap().0, 403);
    assert_eq!(
        fetch(&url, None).await.unwrap().0,
        200,
        "count: 1 means one failure"
    );

    sim.add_fault(Fault::DownloadError {
        count: Some(1),
        status: 503,
    });
    assert_eq!(fetch(&url, None).await.unwrap().0, 503);

    sim.add_fault(Fault::DownloadTruncate {
        count: Some(1),
        after_bytes: 1000,
        mode: TruncateMode::Abort,
    });
    assert!(
        fetch(&url, None).await.is_err(),
        "an aborted body is a transport error"
    );

    sim.add_fault(Fault::DownloadTruncate {
        count: Some(1),
        after_bytes: 1000,
        mode: TruncateMode::Short,
    });
    let (status, short) = fetch(&url, None).await.unwrap();
    assert_eq!((status, short.len()), (200, 1000));
    assert!(rdb::verify_bytes(&short).is_err());

    sim.add_fault(Fault::DownloadCorrupt {
        count: Some(1),
        offset: None,
    });
    let (_, corrupt) = fetch(&url, None).await.unwrap();
    assert!(matches!(
        rdb::verify_bytes(&corrupt),
        Err(rdb::Error::ChecksumMismatch { .. })
    ));

    sim.add_fault(Fault::IntranetUnreachable { count: Some(1) });
    let d = c.download_backup(REPLICA, &id).await.unwrap();
    assert!(fetch(&d.backup_intranet_download_url, None).await.is_err());
    assert_eq!(fetch(&d.backup_download_url, None).await.unwrap().0, 200);
    sim.stop().await;
}

#[tokio::test]
async fn urls_expire_and_failed_backups_cannot_be_downloaded() {
    let mut cfg = support::sim_config();
    cfg.settings.url_ttl = Duration::from_secs(1);
    let sim = start_sim(cfg).await;
    let (c, _) = client(&sim);
    let id = finished_backup(&c, "rdbvault:ttl").await;
    let url = c
        .download_backup(REPLICA, &id)
        .await
        .unwrap()
        .backup_intranet_download_url;
    assert_eq!(fetch(&url, Some("bytes=0-8")).await.unwrap().0, 206);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = fetch(&url, None).await.unwrap();
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    sim.add_fault(Fault::BackupFails { count: Some(1) });
    let failed = finished_backup(&c, "rdbvault:fails").await;
    let rec = c
        .describe_backups(REPLICA)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.backup_id == failed)
        .unwrap();
    assert_eq!(rec.status, "failed");
    assert!(c.download_backup(REPLICA, &failed).await.is_err());
    sim.stop().await;
}

#[tokio::test]
async fn automatic_backups_exist_and_a_running_backup_blocks_another() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    let backups = c.describe_backups(REPLICA).await.unwrap();
    assert!(
        backups
            .iter()
            .any(|b| b.backup_mode == "auto" && b.desc.is_empty() && b.is_finished())
    );
    c.create_backup(REPLICA, "rdbvault:a").await.unwrap();
    let running = c.describe_backups(REPLICA).await.unwrap();
    let rec = running.iter().find(|b| b.desc == "rdbvault:a").unwrap();
    assert_eq!((rec.status.as_str(), rec.backup_size), ("running", None));
    let (c1, _) = support::client_with(&sim, SECRET, support::fast_retry(1));
    let err = c1.create_backup(REPLICA, "rdbvault:b").await.unwrap_err();
    assert_eq!((err.status, err.code()), (Some(409), Some("ResourceInUse")));
    sim.stop().await;
}

/// Runs `tests/independent_server.py` on a free port.
struct PyServer {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_independent_server() -> PyServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .arg(repo_root().join("tests/independent_server.py"))
        .args([&port.to_string(), AK, SECRET])
        .spawn()
        .unwrap();
    let server = PyServer {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("independent server did not start");
}

#[test]
fn rdbvault_api_is_accepted_by_an_independent_server_for_get_and_post() {
    if !have_tool("python3") {
        return;
    }
    let server = spawn_independent_server();
    let api = |args: &[&str], secret: &str| {
        support::run(
            support::rdbvault()
                .env("CDS_ACCESS_KEY_ID", AK)
                .env("CDS_ACCESS_KEY_SECRET", secret)
                .args(["api", "--endpoint", &server.endpoint])
                .args(args),
        )
    };
    let tricky = "my redis*~/测试 +%=&";
    let r = api(
        &[
            "DescribeDBInstances",
            &format!("InstanceName={tricky}"),
            "IP=10.0.0.5",
        ],
        SECRET,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["Data"]["method"], "GET");
    assert_eq!(doc["Data"]["query"]["InstanceName"], tricky);
    assert_eq!(doc["Data"]["query"]["IP"], "10.0.0.5");

    let r = api(
        &[
            "CreateBackup",
            &format!("InstanceUuid={REPLICA}"),
            &format!("Desc={tricky}"),
        ],
        SECRET,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["Data"]["method"], "POST");
    assert_eq!(
        doc["Data"]["query"],
        serde_json::json!({}),
        "POST action params stay out of the query"
    );
    assert_eq!(doc["Data"]["body"]["Desc"], tricky);
    assert_eq!(doc["Data"]["body"]["InstanceUuid"], REPLICA);

    // The password comes from a private file, never the command line.
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("redis-password");
    support::write_private(&password, "pw-7c1e\n");
    let r = api(
        &[
            "CreateDBInstance",
            "RegionId=CN_Beijing_A",
            "VdcId=v",
            "BasePipeId=p",
            "InstanceName=名字 x",
            "PaasGoodsId=12923",
            "--password-file",
            password.to_str().unwrap(),
            "Amount=2",
            "--yes",
        ],
        SECRET,
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        doc["Data"]["body"]["PaasGoodsId"], 12923,
        "integers travel as JSON numbers"
    );
    assert_eq!(doc["Data"]["body"]["Amount"], 2);
    assert_eq!(
        doc["Data"]["body"]["Password"], "***",
        "an echoed password is masked"
    );
    assert!(!r.all().contains("pw-7c1e"));

    // A wrong secret: non-zero exit, the API's code named, the secret nowhere.
    let r = api(&["DescribeRegins"], "wrong-secret-7f3a");
    assert_eq!(
        r.code,
        2,
        "a refused key is a credential problem: {}",
        r.all()
    );
    assert!(r.stderr.contains("SignatureDoesNotMatch"), "{}", r.stderr);
    assert!(!r.all().contains("wrong-secret-7f3a") && !r.all().contains(SECRET));
}

#[tokio::test]
async fn a_state_file_defines_instances_shards_sizes_and_real_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = repo_root().join("tests/fixtures/redis-7.0-small.rdb");
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        serde_json::json!({"instances": [
            {"uuid": "11111111-2222-4333-8444-555555555555", "name": "big-cluster", "version": "7.0",
             "architecture_type": 2, "shards": 3, "backup_size": 100_000},
            {"uuid": "66666666-7777-4888-9999-aaaaaaaaaaaa", "name": "real-data", "payload_file": fixture, "auto_backup": true}
        ]})
        .to_string(),
    )
    .unwrap();
    let mut cfg = support::sim_config();
    cfg.instances = Some(rdbvault::sim::load_state_file(&state).unwrap());
    let sim = start_sim(cfg).await;
    let (c, _) = client(&sim);
    assert_eq!(
        c.describe_db_instances(&Default::default())
            .await
            .unwrap()
            .len(),
        2
    );

    c.create_backup("11111111-2222-4333-8444-555555555555", "rdbvault:big")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let recs = c
        .describe_backups("11111111-2222-4333-8444-555555555555")
        .await
        .unwrap();
    assert_eq!(recs.len(), 3, "one record per shard");
    for r in &recs {
        let d = c
            .download_backup(&r.instance_id, &r.backup_id)
            .await
            .unwrap();
        let (_, bytes) = fetch(&d.backup_download_url, None).await.unwrap();
        let s = rdb::verify_bytes(&bytes).unwrap();
        assert_eq!((s.size, s.version), (100_000, 10));
    }

    // The seeded automatic backup of the real-data instance serves the real dump.
    let auto = c
        .describe_backups("66666666-7777-4888-9999-aaaaaaaaaaaa")
        .await
        .unwrap();
    assert_eq!(auto.len(), 1);
    let d = c
        .download_backup(&auto[0].instance_id, &auto[0].backup_id)
        .await
        .unwrap();
    let (_, bytes) = fetch(&d.backup_intranet_download_url, None).await.unwrap();
    assert_eq!(bytes, std::fs::read(&fixture).unwrap());
    sim.stop().await;
}

#[test]
fn sim_refuses_a_bad_state_file_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bad.json");
    std::fs::write(&state, r#"{"instances": [{"name": "x", "colour": "red"}]}"#).unwrap();
    let r = support::run(
        support::rdbvault()
            .args(["sim", "--listen", "127.0.0.1:0", "--state"])
            .arg(&state),
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("bad.json") && r.stderr.contains("colour"),
        "{}",
        r.stderr
    );
}

/// Instances added at run time with uuids that are short or not ASCII (the shard ids are
/// derived from the uuid's first characters) are accepted or refused, never a panic: a panic
/// in a handler used to poison the world's lock, and every later call failed.
#[tokio::test]
async fn odd_instance_uuids_do_not_take_the_simulator_down() {
    let sim = start_sim(support::sim_config()).await;
    let http = reqwest::Client::new();
    for (uuid, arch) in [("ab", 2), ("实例-一二三四五六七八九十", 2), ("é", 1)] {
        let resp = http
            .post(format!("{}/_sim/instances", sim.base_url))
            .json(&serde_json::json!({"uuid": uuid, "name": "odd", "architecture_type": arch}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /_sim/instances for {uuid:?} failed: {e}"));
        assert_eq!(
            resp.status(),
            200,
            "{uuid:?}: {}",
            resp.text().await.unwrap()
        );
    }
    // An absurd shard count is refused, not allocated.
    let resp = http
        .post(format!("{}/_sim/instances", sim.base_url))
        .json(&serde_json::json!({"name": "huge", "architecture_type": 2, "shards": 1u64 << 40}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Signed API calls still work, and the cluster instances have their shards.
    let (c, _) = client(&sim);
    let all = c
        .describe_db_instances(&Default::default())
        .await
        .expect("the simulator still answers signed calls");
    assert!(all.iter().any(|i| i.instance_uuid == "ab"));
    c.create_backup("实例-一二三四五六七八九十", "rdbvault:odd")
        .await
        .unwrap();
    let listed: serde_json::Value = http
        .get(format!("{}/_sim/backups", sim.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shards: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["Desc"] == "rdbvault:odd")
        .filter_map(|b| b["ShardId"].as_str())
        .collect();
    assert_eq!(
        shards,
        ["实例-一二三四五-shard-1", "实例-一二三四五-shard-2"],
        "shard ids start with the uuid's first 8 characters"
    );
    sim.stop().await;
}

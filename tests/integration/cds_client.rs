//! The CDS client against the simulator over real HTTP: all nine actions, rejected signatures,
//! retries.

use crate::support::{self, AK, SECRET, api_count, client, client_with, fast_retry, start_sim};
use rdbvault::cds::{self, Action, ErrorKind, ParamValue, params};
use rdbvault::sim::state::Fault;
use std::time::Duration;

const REPLICA: &str = "5d74bb81-0473-464d-b15b-0ae418619248";
const CLUSTER: &str = "8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11";

async fn wait_finished(
    c: &cds::Client,
    uuid: &str,
    desc: &str,
    want: usize,
) -> Vec<cds::model::Backup> {
    for _ in 0..100 {
        let mine: Vec<_> = c
            .describe_backups(uuid)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.desc == desc)
            .collect();
        if mine.len() == want && mine.iter().all(|b| b.is_finished()) {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backups with desc {desc} did not finish");
}

#[tokio::test]
async fn all_nine_actions_work_against_the_simulator() {
    let sim = start_sim(support::sim_config()).await;
    let (c, registry) = client(&sim);

    // 1. DescribeRegins
    let regions = c.describe_regions().await.unwrap();
    assert!(
        regions
            .iter()
            .any(|r| r.region_id == "CN_Beijing_A" && r.is_saling == 1)
    );
    // 2. DescribeAvailableDBConfig
    let catalogue = c
        .describe_available_db_config("CN_Beijing_A")
        .await
        .unwrap();
    let goods = catalogue
        .products
        .iter()
        .find(|p| p.version == "5.0")
        .unwrap()
        .architectures
        .iter()
        .find(|a| a.architecture_type == 1)
        .unwrap()
        .compute_roles[0]
        .standards
        .cpu_ram[0]
        .paas_goods_id;
    // 3. CreateDBInstance
    let (created, task) = c
        .create_db_instance(&params([
            ("RegionId", "CN_Beijing_A".into()),
            ("VdcId", "vdc-1".into()),
            ("BasePipeId", "pipe-1".into()),
            ("InstanceName", "it created me".into()),
            ("PaasGoodsId", ParamValue::Int(goods)),
            ("Password", "Passw0rd!".into()),
        ]))
        .await
        .unwrap();
    assert_eq!(created.instances_uuid.len(), 1);
    assert!(task.task_id.is_some());
    let new_uuid = &created.instances_uuid[0];
    // 4. DescribeDBInstances, with filters ANDed and IP substring match
    let all = c.describe_db_instances(&cds::Params::new()).await.unwrap();
    assert_eq!(all.len(), 4);
    let by_ip = c
        .describe_db_instances(&params([("IP", "10.0.0".into())]))
        .await
        .unwrap();
    assert_eq!(by_ip.len(), 2);
    let by_name = c
        .describe_db_instances(&params([("InstanceName", "it created me".into())]))
        .await
        .unwrap();
    assert_eq!(by_name[0].instance_uuid, *new_uuid);
    // 8. CreateBackup on a cluster instance: one record per shard
    c.create_backup(CLUSTER, "rdbvault:job-1").await.unwrap();
    // 6. DescribeBackups
    let mine = wait_finished(&c, CLUSTER, "rdbvault:job-1", 2).await;
    assert!(
        mine.iter()
            .all(|b| b.instance_id == CLUSTER && b.backup_size == Some(256 * 1024))
    );
    // 7. DownloadBackup: ShardId, both URLs, BackupSize sent as a string and read as a number
    let mut shards = Vec::new();
    for b in &mine {
        let d = c.download_backup(CLUSTER, &b.backup_id).await.unwrap();
        assert_eq!(d.backup.backup_size, Some(256 * 1024));
        assert!(d.backup_download_url.contains("/_download/"));
        assert!(d.backup_intranet_download_url.contains("/_download/"));
        shards.push(d.shard_id);
    }
    shards.sort();
    assert_eq!(shards.len(), 2);
    assert_ne!(shards[0], shards[1]);
    // 9. DeleteBackup
    c.delete_backup(CLUSTER, &mine[0].backup_id).await.unwrap();
    let left = c.describe_backups(CLUSTER).await.unwrap();
    assert!(!left.iter().any(|b| b.backup_id == mine[0].backup_id));
    // 5. DeleteDBInstance
    c.delete_db_instance(new_uuid).await.unwrap();
    assert_eq!(
        c.describe_db_instances(&cds::Params::new())
            .await
            .unwrap()
            .len(),
        3
    );

    for action in Action::ALL {
        assert!(
            api_count(&registry, action.name(), "Success") >= 1,
            "{action} not counted"
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_and_never_printed() {
    let sim = start_sim(support::sim_config()).await;
    let (c, registry) = client_with(&sim, "not-the-secret", fast_retry(3));
    let err = c.describe_regions().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert_eq!(err.status, Some(403));
    assert_eq!(err.attempts, 1, "auth errors are not retried");
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("not-the-secret") && !text.contains(SECRET),
        "{text}"
    );
    assert_eq!(
        api_count(&registry, "DescribeRegins", "SignatureDoesNotMatch"),
        1
    );

    // The documented mistake: HMAC keyed with `secret&`.
    let (c, _) = client_with(&sim, &format!("{SECRET}&"), fast_retry(1));
    assert_eq!(
        c.describe_regions().await.unwrap_err().code(),
        Some("SignatureDoesNotMatch")
    );
    sim.stop().await;
}

#[tokio::test]
async fn stale_timestamps_are_rejected() {
    let clock =
        rdbvault::clock::ManualClock::new(chrono::Utc::now() - chrono::Duration::minutes(20));
    let sim = start_sim(support::sim_config()).await;
    let registry = prometheus::Registry::new();
    let c = cds::Client::new(
        cds::ClientConfig {
            endpoint: sim.base_url.parse().unwrap(),
            access_key_id: AK.into(),
            access_key_secret: rdbvault::secret::Secret::new(SECRET),
            timeout: Duration::from_secs(5),
            retry: fast_retry(2),
        },
        rdbvault::metrics::ApiMetrics::register(&registry).unwrap(),
        std::sync::Arc::new(clock.clone()),
    )
    .unwrap();
    let err = c.describe_regions().await.unwrap_err();
    assert_eq!(err.code(), Some("RequestExpired"));
    assert!(err.to_string().contains("clock"), "{err}");
    clock.set(chrono::Utc::now());
    c.describe_regions().await.unwrap();
    sim.stop().await;
}

#[tokio::test]
async fn retries_5xx_and_409_then_succeeds() {
    let sim = start_sim(support::sim_config()).await;
    let (c, registry) = client(&sim);
    sim.add_fault(Fault::ApiError {
        action: "DescribeBackups".into(),
        count: Some(2),
        status: 500,
        code: "InternalError".into(),
    });
    c.describe_backups(REPLICA).await.unwrap();
    assert_eq!(sim.calls("DescribeBackups"), 3);
    assert_eq!(api_count(&registry, "DescribeBackups", "InternalError"), 2);
    assert_eq!(api_count(&registry, "DescribeBackups", "Success"), 1);

    sim.add_fault(Fault::ApiError {
        action: "DescribeRegins".into(),
        count: Some(1),
        status: 409,
        code: "ResourceInUse".into(),
    });
    c.describe_regions().await.unwrap();
    assert_eq!(sim.calls("DescribeRegins"), 2);

    // A 502 from a proxy (no JSON body) is retried too.
    sim.add_fault(Fault::ApiError {
        action: "DescribeRegins".into(),
        count: Some(1),
        status: 502,
        code: "".into(),
    });
    c.describe_regions().await.unwrap();
    sim.stop().await;
}

#[tokio::test]
async fn does_not_retry_400_or_404() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    sim.add_fault(Fault::ApiError {
        action: "DescribeBackups".into(),
        count: Some(1),
        status: 400,
        code: "InvalidParameter".into(),
    });
    let err = c.describe_backups(REPLICA).await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameter"));
    assert_eq!(err.attempts, 1);
    assert_eq!(sim.calls("DescribeBackups"), 1);

    let err = c
        .describe_backups("00000000-0000-4000-8000-000000000000")
        .await
        .unwrap_err();
    assert_eq!(
        (err.status, err.code()),
        (Some(404), Some("ResourceNotFound"))
    );
    assert_eq!(sim.calls("DescribeBackups"), 2);
    sim.stop().await;
}

#[tokio::test]
async fn create_backup_is_retried_only_when_the_server_surely_did_not_act() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    // 500 on CreateBackup: the backup may exist; a blind retry could make a second one.
    sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: Some(1),
        status: 500,
        code: "InternalError".into(),
    });
    let err = c.create_backup(REPLICA, "rdbvault:x").await.unwrap_err();
    assert_eq!(err.attempts, 1);
    assert_eq!(sim.calls("CreateBackup"), 1);
    // 409 ResourceInUse: nothing happened, so it is retried.
    sim.add_fault(Fault::ApiError {
        action: "CreateBackup".into(),
        count: Some(2),
        status: 409,
        code: "ResourceInUse".into(),
    });
    c.create_backup(REPLICA, "rdbvault:y").await.unwrap();
    assert_eq!(sim.calls("CreateBackup"), 4);
    sim.stop().await;
}

#[tokio::test]
async fn retries_stop_at_the_attempt_bound() {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client_with(&sim, SECRET, fast_retry(3));
    sim.add_fault(Fault::ApiError {
        action: "*".into(),
        count: None,
        status: 503,
        code: "InternalError".into(),
    });
    let err = c.describe_regions().await.unwrap_err();
    assert_eq!(err.attempts, 3);
    assert_eq!(sim.calls("DescribeRegins"), 3);
    assert!(err.is_retryable());
    sim.stop().await;
}

#[tokio::test]
async fn transport_errors_and_timeouts_are_classified() {
    // Nothing listens on port 9.
    let registry = prometheus::Registry::new();
    let c = cds::Client::new(
        cds::ClientConfig {
            endpoint: "http://127.0.0.1:9".parse().unwrap(),
            access_key_id: AK.into(),
            access_key_secret: rdbvault::secret::Secret::new(SECRET),
            timeout: Duration::from_millis(300),
            retry: fast_retry(2),
        },
        rdbvault::metrics::ApiMetrics::register(&registry).unwrap(),
        rdbvault::clock::system(),
    )
    .unwrap();
    let err = c.describe_regions().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Connect);
    assert_eq!(err.attempts, 2);
    assert!(!err.to_string().contains("Signature="), "{err}");
    assert_eq!(api_count(&registry, "DescribeRegins", "transport"), 2);

    let sim = start_sim(support::sim_config()).await;
    sim.add_fault(Fault::Latency {
        action: "DescribeRegins".into(),
        count: None,
        millis: 2_000,
    });
    let (slow, _) = {
        let registry = prometheus::Registry::new();
        let c = cds::Client::new(
            cds::ClientConfig {
                endpoint: sim.base_url.parse().unwrap(),
                access_key_id: AK.into(),
                access_key_secret: rdbvault::secret::Secret::new(SECRET),
                timeout: Duration::from_millis(300),
                retry: fast_retry(1),
            },
            rdbvault::metrics::ApiMetrics::register(&registry).unwrap(),
            rdbvault::clock::system(),
        )
        .unwrap();
        (c, registry)
    };
    let err = slow.describe_regions().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.is_retryable());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_delete_sends_no_retry_once_its_check_says_no() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let sim = start_sim(support::sim_config()).await;
    let (c, _registry) = client_with(&sim, SECRET, fast_retry(4));
    // The first attempt fails in a way worth retrying; before the retry, the lease is gone.
    sim.add_fault(Fault::ApiError {
        action: "DeleteBackup".into(),
        count: Some(1),
        status: 503,
        code: "ServiceUnavailable".into(),
    });
    let asked = AtomicU32::new(0);
    let outcome = c
        .delete_backup_checked(REPLICA, "no-such-backup", || async {
            match asked.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(()),
                _ => Err("the lease was lost"),
            }
        })
        .await;
    assert_eq!(outcome.unwrap_err(), "the lease was lost");
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked before each attempt");
    assert_eq!(sim.calls("DeleteBackup"), 1, "the retry was not sent");

    // Allowed throughout, the same failure is retried as any call is.
    sim.add_fault(Fault::ApiError {
        action: "DeleteBackup".into(),
        count: Some(1),
        status: 503,
        code: "ServiceUnavailable".into(),
    });
    let outcome = c
        .delete_backup_checked(REPLICA, "no-such-backup", || async { Ok::<(), ()>(()) })
        .await
        .unwrap();
    assert!(outcome.unwrap_err().is_not_found());
    assert_eq!(sim.calls("DeleteBackup"), 3);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_backups_is_paced_per_instance() {
    let sim = start_sim(support::sim_config()).await;
    let spacing = Duration::from_millis(400);
    let (c, _registry) = client(&sim);
    let c = c.with_describe_spacing(spacing);

    // Three callers at once for one instance (a job polling, retention, reconcile) and one
    // for another instance.
    let started = std::time::Instant::now();
    let (a, b, d, other) = tokio::join!(
        c.describe_backups(REPLICA),
        c.describe_backups(REPLICA),
        c.describe_backups(REPLICA),
        async {
            let r = c.describe_backups(CLUSTER).await;
            (r, started.elapsed())
        }
    );
    let took = started.elapsed();
    a.unwrap();
    b.unwrap();
    d.unwrap();
    other.0.unwrap();
    assert!(
        took >= spacing * 2,
        "three listings of one instance took {took:?}, spacing {spacing:?}"
    );
    assert!(
        other.1 < spacing,
        "another instance waited {:?} for this one's pacing",
        other.1
    );
    let gap = min_describe_gap(&sim);
    assert!(
        gap.to_std().unwrap() >= spacing,
        "the simulator saw two listings of one instance {gap} apart"
    );
    assert_eq!(sim.calls("DescribeBackups"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_backups_is_paced_across_processes_sharing_a_state_db() {
    use rdbvault::services::SharedListingSlots;
    use std::sync::Arc;
    let sim = start_sim(support::sim_config()).await;
    let spacing = Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    // Two replicas: each its own client and its own pool on one state DB.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = support::open_store(dir.path()).await;
        let (c, _registry) = client(&sim);
        replicas.push(
            c.with_describe_spacing(spacing)
                .with_shared_pacing(Arc::new(SharedListingSlots::new(store))),
        );
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let started = std::time::Instant::now();
    let results = tokio::join!(
        a.describe_backups(REPLICA),
        b.describe_backups(REPLICA),
        a.describe_backups(REPLICA),
        b.describe_backups(REPLICA),
    );
    let took = started.elapsed();
    for r in [results.0, results.1, results.2, results.3] {
        r.unwrap();
    }
    assert!(
        took >= spacing * 3,
        "four listings of one instance by two replicas took {took:?}, spacing {spacing:?}"
    );
    let gap = min_describe_gap(&sim);
    // Slots are reserved on the DB's clock and the call follows at once: the simulator sees
    // them a spacing apart, give or take the request's own latency.
    assert!(
        gap.to_std().unwrap() + Duration::from_millis(50) >= spacing,
        "the simulator saw two listings of one instance {gap} apart"
    );
    assert_eq!(sim.calls("DescribeBackups"), 4);
}

/// The shortest time the simulator saw between two `DescribeBackups` of one instance.
fn min_describe_gap(sim: &rdbvault::sim::SimHandle) -> chrono::Duration {
    sim.shared
        .world
        .lock()
        .unwrap()
        .describe_backups_min_gap
        .expect("two listings of one instance")
}

/// Every `(action, code)` label pair of `rdbvault_api_requests_total`.
fn api_label_pairs(registry: &prometheus::Registry) -> Vec<(String, String)> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "rdbvault_api_requests_total")
        .flat_map(|f| f.get_metric())
        .map(|m| {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            (label("action"), label("code"))
        })
        .collect()
}

/// A hostile provider sending arbitrary `Code`s cannot grow the metric's label set without
/// bound: unknown codes are counted under `other`, documented ones keep their name.
#[tokio::test]
async fn api_codes_in_metric_labels_are_a_bounded_set() {
    let sim = start_sim(support::sim_config()).await;
    let (c, registry) = client_with(&sim, SECRET, fast_retry(1));
    let mut codes: Vec<String> = (0..50)
        .map(|i| format!("Hostile{i}_{:016x}", fastrand::u64(..)))
        .collect();
    codes.push("X".repeat(10_000));
    codes.push("错误码-非法-😈".into());
    for code in &codes {
        sim.add_fault(Fault::ApiError {
            action: "DescribeBackups".into(),
            count: Some(1),
            status: 400,
            code: code.clone(),
        });
        let err = c.describe_backups(REPLICA).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(code.as_str()),
            "the error keeps the real code"
        );
    }
    // A status that is not a real HTTP status, without a code.
    sim.add_fault(Fault::ApiError {
        action: "DescribeBackups".into(),
        count: Some(1),
        status: 999,
        code: String::new(),
    });
    c.describe_backups(REPLICA).await.unwrap_err();
    // A documented code, a plain HTTP status and a success keep their own labels.
    sim.add_fault(Fault::ApiError {
        action: "DescribeBackups".into(),
        count: Some(1),
        status: 404,
        code: "ResourceNotFound".into(),
    });
    c.describe_backups(REPLICA).await.unwrap_err();
    sim.add_fault(Fault::ApiError {
        action: "DescribeBackups".into(),
        count: Some(1),
        status: 404,
        code: String::new(),
    });
    c.describe_backups(REPLICA).await.unwrap_err();
    c.describe_backups(REPLICA).await.unwrap();

    let pairs = api_label_pairs(&registry);
    assert!(
        pairs.len() <= 5,
        "the label set stays small whatever the codes: {} pairs",
        pairs.len()
    );
    assert_eq!(
        api_count(&registry, "DescribeBackups", "other"),
        codes.len() as u64 + 1,
        "52 unknown codes and a status of 999"
    );
    assert_eq!(
        api_count(&registry, "DescribeBackups", "ResourceNotFound"),
        1
    );
    assert_eq!(api_count(&registry, "DescribeBackups", "404"), 1);
    assert_eq!(api_count(&registry, "DescribeBackups", "Success"), 1);
    let actions: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    assert!(pairs.iter().all(|(a, _)| actions.contains(&a.as_str())));
    sim.stop().await;
}

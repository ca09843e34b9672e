//! The downloader against hostile download hosts (the simulator's redirect and trickle faults),
//! in-process so each case takes the downloader's own time, not the job runner's retries.

use crate::support::{self, client, start_sim};
use rdbvault::config::DownloadRoute;
use rdbvault::destination::dir::FileSink;
use rdbvault::sim::SimHandle;
use rdbvault::sim::state::Fault;
use rdbvault::transfer::source::{Downloader, RateGuard};
use rdbvault::transfer::{self, Checker, ShardSource};
use std::time::{Duration, Instant};

const REPLICA: &str = "5d74bb81-0473-464d-b15b-0ae418619248";

/// The simulator, a downloader with `guard`, and the seeded automatic backup to fetch.
async fn setup(guard: RateGuard) -> (SimHandle, Downloader, ShardSource) {
    let sim = start_sim(support::sim_config()).await;
    let (c, _) = client(&sim);
    let mut backup = None;
    for _ in 0..100 {
        backup = c
            .describe_backups(REPLICA)
            .await
            .unwrap()
            .into_iter()
            .find(|b| b.backup_mode == "auto" && b.is_finished());
        if backup.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backup = backup.expect("the seeded automatic backup finishes");
    let src = ShardSource {
        instance_uuid: REPLICA.into(),
        backup_id: backup.backup_id,
        expected_size: backup.backup_size,
        max_size: 1 << 40,
        route: DownloadRoute::Public,
        fresh_urls: None,
    };
    (sim, Downloader::new(c, guard).unwrap(), src)
}

/// Downloads `src` into a `.partial` file and verifies it.
async fn fetch(d: &Downloader, src: &ShardSource) -> Result<transfer::Stored, transfer::Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.rdb");
    let opened = FileSink::open(path.clone(), dir.path().join("b.rdb.manifest.json"), None).await?;
    let (mut sink, mut checker): (FileSink, Checker) = (opened.sink, opened.already);
    d.stream_into(
        src,
        &mut checker,
        &mut sink,
        &|_| {},
        &tokio_util::sync::CancellationToken::new(),
        chrono::Utc::now() + chrono::Duration::minutes(10),
    )
    .await?;
    checker.finish(src.expected_size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_to_http_at_most_three_times() {
    let (sim, d, src) = setup(RateGuard::default()).await;
    for (to, count, want) in [
        (Some("file:///etc/passwd"), 1, "only http and https"),
        (Some("ftp://127.0.0.1/backup.rdb"), 1, "only http and https"),
        (None, 5, "more than 3 redirects"),
    ] {
        sim.shared.world().faults.clear();
        sim.add_fault(Fault::DownloadRedirect {
            count: Some(count),
            to: to.map(String::from),
        });
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(30), fetch(&d, &src))
            .await
            .expect("a refused redirect does not hang")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, transfer::Error::Download(_)) && text.contains(want),
            "{to:?} x{count}: {text}"
        );
        assert!(!text.contains("Signature="), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refused at once, not retried: {:?}",
            started.elapsed()
        );
    }
    // One redirect, same host and scheme: followed.
    sim.shared.world().faults.clear();
    sim.add_fault(Fault::DownloadRedirect {
        count: Some(1),
        to: None,
    });
    let stored = fetch(&d, &src).await.unwrap();
    assert_eq!(Some(stored.size), src.expected_size);
    assert!(
        sim.shared.world().faults.is_empty(),
        "the redirect was served"
    );
    // Three in a row are still within bounds.
    sim.add_fault(Fault::DownloadRedirect {
        count: Some(3),
        to: None,
    });
    fetch(&d, &src).await.unwrap();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_only_trickles_is_given_up_naming_the_rate_and_window() {
    let (sim, d, src) = setup(RateGuard {
        min_bytes_per_second: 64 << 10,
        window: Duration::from_secs(1),
    })
    .await;
    // 500 bytes per second, a chunk every 200 ms: no read timeout ever fires.
    sim.add_fault(Fault::DownloadTrickle {
        count: None,
        chunk_bytes: 100,
        every_millis: 200,
    });
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(120), fetch(&d, &src))
        .await
        .expect("bounded by the attempts without progress")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up after 8 attempts")
            && err.contains("download stalled")
            && err.contains("cds.download_min_rate 64KiB/s over cds.download_rate_window 1s"),
        "{err}"
    );
    assert_eq!(
        sim.shared.world().downloads,
        8,
        "one connection per attempt"
    );
    eprintln!("gave up after {:?}", started.elapsed());
    sim.stop().await;
}

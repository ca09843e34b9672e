//! What a first week of real use finds (the runner's part): a lost `CreateBackup` is sent again,
//! a flipped byte gets a second download, two policies on one instance queue instead of
//! starving each other, and failed jobs' provider backups can be reclaimed by an explicit rule.

use super::pipeline::{Env, SMALL};
use rdbvault::sim::state::Fault;

fn edit_config(env: &Env, from: &str, to: &str) {
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert!(text.contains(from), "config has no {from:?}");
    std::fs::write(&env.config, text.replace(from, to)).unwrap();
}

fn create_fails(count: Option<u32>) -> Fault {
    Fault::ApiError {
        action: "CreateBackup".into(),
        count,
        status: 500,
        code: "InternalError".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_backup_lost_to_a_500_is_sent_again_after_a_bounded_search() {
    let Some(env) = Env::new("resend", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.sim.add_fault(create_fails(Some(1)));
    let started = std::time::Instant::now();
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "stored within the start window, not after it: {:?}",
        started.elapsed()
    );
    assert_eq!(
        env.sim.calls("CreateBackup"),
        2,
        "one lost send, one resend"
    );
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    assert_eq!(job.attempts, 2, "the journal counts each send");
    let events = store.events(&job.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "resend" && e.message.contains("InternalError")),
        "{events:?}"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_backup_that_never_takes_effect_fails_with_its_cause_when_the_window_closes() {
    let Some(env) = Env::new("resend-fail", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    edit_config(&env, "start_window: 1m", "start_window: 24s");
    env.sim.add_fault(create_fails(None));
    let started = std::time::Instant::now();
    let r = env.run(&["backup-now", "--policy", "p"]).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "fails when the start window closes, not at the completion deadline: {:?}",
        started.elapsed()
    );
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let error = job.error.clone().unwrap_or_default();
    assert!(
        error.contains("start window closed") && error.contains("InternalError"),
        "the real cause, not `deadline exceeded`: {error}"
    );
    assert!(!error.contains("deadline exceeded"), "{error}");
    assert!(
        env.sim.calls("CreateBackup") >= 3,
        "sent again while the window was open"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flipped_byte_in_transit_gets_a_fresh_download_instead_of_failing_the_night() {
    for destination in ["dir", "s3"] {
        let Some(env) = Env::new("reflip", destination, &format!("uuid: {SMALL}"), "@yearly").await
        else {
            return;
        };
        env.sim.add_fault(Fault::DownloadCorrupt {
            count: Some(1),
            offset: Some(1000),
        });
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 0, "{destination}: {}", r.all());
        assert_eq!(env.sim.shared.world.lock().unwrap().corruptions_served, 1);
        let store = env.store().await;
        let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
        let events = store.events(&job.id).await.unwrap();
        assert!(
            events.iter().any(|e| e.kind == "retry"
                && e.message.contains("failed verification")
                && e.message.contains("checksum mismatch")),
            "the mismatch is journaled: {events:?}"
        );
        let shard = &store.shards(&job.id).await.unwrap()[0];
        let stored = match destination {
            "dir" => std::fs::read(
                env.dir
                    .path()
                    .join("archive")
                    .join(shard.object_key.as_ref().unwrap()),
            )
            .unwrap(),
            _ => env.get(shard.object_key.as_ref().unwrap()).await,
        };
        assert!(stored == env.provider_bytes(SMALL, &shard.backup_id).await);

        // A backup that is bad every time fails after a bounded number of downloads.
        env.sim.add_fault(Fault::DownloadCorrupt {
            count: None,
            offset: Some(1000),
        });
        let served_before = env.sim.shared.world.lock().unwrap().corruptions_served;
        let r = env.run(&["backup-now", "--policy", "p"]).await;
        assert_eq!(r.code, 3, "{}", r.all());
        let served = env.sim.shared.world.lock().unwrap().corruptions_served - served_before;
        assert_eq!(served, 3, "three downloads, then the job fails");
        let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
        assert!(
            job.error.as_deref().unwrap_or("").contains("3 download(s)"),
            "{:?}",
            job.error
        );
        env.sim.stop().await;
    }
}

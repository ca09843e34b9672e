//! Replicas sharing one state DB: retention under a lease deletes nothing once the lease is
//! gone (a replica paused past it, another took over), and does its work while held.

use super::pipeline::{Env, SMALL};
use rdbvault::prune::{Mode, prune_policy};
use rdbvault::store::ms;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_retention_lease_was_taken_over_deletes_nothing() {
    let Some(env) = Env::new("fence", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    env.edit_config(
        "retention: { destination: { keep_last: 3 } }",
        "retention: { destination: { keep_last: 1 } }",
    );
    for _ in 0..3 {
        assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    }
    let cfg = Arc::new(rdbvault::config::load(&env.config).unwrap());
    let metrics = rdbvault::metrics::Metrics::register(prometheus::Registry::new()).unwrap();
    let ctx = rdbvault::services::open(cfg.clone(), "replica-a".into(), metrics)
        .await
        .unwrap();
    let policy = &cfg.policies[0];
    let now = ms(chrono::Utc::now());

    // Replica A took the lease, then was paused past it; replica B holds it now.
    let a = ctx
        .store
        .acquire_lease("retention", "replica-a", now - 120_000, now - 60_000)
        .await
        .unwrap()
        .unwrap();
    let b = ctx
        .store
        .acquire_lease("retention", "replica-b", now, now + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(b.epoch > a.epoch);
    let paused = rdbvault::services::Context {
        deletion_fence: Some(a),
        ..ctx.clone()
    };
    let report = prune_policy(&paused, policy, None, Mode::Delete)
        .await
        .unwrap();
    let planned: Vec<_> = report.rows.iter().filter(|r| !r.keep).collect();
    assert_eq!(planned.len(), 2, "keep_last 1 of 3 would delete two sets");
    for r in &planned {
        let why = r.deleted.clone().unwrap().unwrap_err();
        assert!(
            why.contains("no longer holds the `retention` lease"),
            "{why}"
        );
    }
    let live = |store: &rdbvault::store::Store| {
        let store = store.clone();
        async move { store.destination_copies().await.unwrap().len() }
    };
    assert_eq!(
        live(&ctx.store).await,
        3,
        "the paused replica deleted nothing"
    );

    // Under the lease it holds, B does the same work.
    let holder = rdbvault::services::Context {
        deletion_fence: Some(b),
        ..ctx.clone()
    };
    let report = prune_policy(&holder, policy, None, Mode::Delete)
        .await
        .unwrap();
    assert_eq!(
        report
            .rows
            .iter()
            .filter(|r| matches!(r.deleted, Some(Ok(()))))
            .count(),
        2
    );
    assert_eq!(live(&ctx.store).await, 1);
    env.sim.stop().await;
}

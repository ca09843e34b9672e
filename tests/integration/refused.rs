//! Refused credentials are the operator's to fix: every command says so with exit 2, and a
//! job whose destination refuses the keys fails at once instead of retrying what cannot pass.

use super::pipeline::{Env, SMALL};
use crate::support::write_private;
use std::time::Duration;

/// Runs `args`, giving up (a failed test, not a hang) after `limit`.
async fn run_within(env: &Env, args: &[&str], limit: Duration) -> crate::support::Run {
    tokio::time::timeout(limit, env.run(args))
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not end within {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cds_key_is_exit_two_in_every_command_that_calls_the_api() {
    let Some(env) = Env::new("refused-cds", "dir", &format!("uuid: {SMALL}"), "@yearly").await
    else {
        return;
    };
    // A job stored first, so the commands that list have something to list.
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    write_private(&env.dir.path().join("cds_id"), "an-unknown-access-key");
    for args in [
        vec!["backup-now", "--policy", "p"],
        vec!["backup-now", "--policy", "p", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["prune"],
        vec!["backups"],
        vec!["api", "DescribeRegions"],
        vec!["check-config", "--online"],
    ] {
        let r = run_within(&env, &args, Duration::from_secs(60)).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.all().contains("InvalidAccessKeyId"),
            "{args:?}: {}",
            r.all()
        );
        assert!(
            !r.all().contains(crate::support::SECRET),
            "{args:?} leaks the secret"
        );
    }
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_refuses_the_keys_fails_the_job_at_once_with_exit_two() {
    let Some(env) = Env::new("refused-s3", "s3", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let secret_file = env.dir.path().join("s3_secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    write_private(&secret_file, "not-the-secret-key");
    // Retried, this would take five attempts with back-off (over a minute): refused keys fail
    // the job on the first answer.
    let r = run_within(
        &env,
        &["backup-now", "--policy", "p"],
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stdout.contains("failed  "), "{}", r.stdout);
    assert!(
        r.stderr.contains("credentials were refused"),
        "{}",
        r.stderr
    );
    let store = env.store().await;
    let job = &store.list_jobs(None, None, 1).await.unwrap()[0];
    assert_eq!(job.state, "failed");
    let error = job.error.clone().unwrap_or_default();
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(
        store
            .events(&job.id)
            .await
            .unwrap()
            .iter()
            .all(|e| e.kind != "retry"),
        "a refused key is not retried"
    );
    store.close().await;
    write_private(&secret_file, &secret);
    assert!(
        env.uploads().await.is_empty(),
        "no multipart upload is left"
    );
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_s3_keys_are_exit_two_online_and_in_a_backup() {
    let Some(env) = Env::new("no-s3-keys", "s3", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    let d = env.dir.path().display().to_string();
    env.edit_config(
        &format!("    access_key_id_file: {d}/s3_id\n    secret_access_key_file: {d}/s3_secret\n"),
        "",
    );
    for args in [
        vec!["check-config", "--online"],
        vec!["backup-now", "--policy", "p"],
    ] {
        let r = run_within(&env, &args, Duration::from_secs(60)).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(
            r.all().contains("no S3 credentials found"),
            "{args:?}: {}",
            r.all()
        );
    }
    env.sim.stop().await;
}

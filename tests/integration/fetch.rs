//! `fetch -o DIR` and every way `fetch` can refuse or fail: refusals come before any download,
//! and a failed or interrupted fetch leaves no file behind.

use super::pipeline::{Env, SMALL};
use std::path::Path;
use std::time::Duration;

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The single stored copy of the newest job: (job id, object key).
async fn stored(env: &Env) -> (String, String) {
    let store = env.store().await;
    let job = store.list_jobs(None, None, 1).await.unwrap().remove(0);
    let key = store.shards(&job.id).await.unwrap()[0]
        .object_key
        .clone()
        .unwrap();
    store.close().await;
    (job.id, key)
}

fn name_of(key: &str) -> String {
    key.rsplit('/').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_into_a_directory_refuses_early_and_leaves_nothing_behind() {
    let Some(env) = Env::new("fetch-dir", "dir", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let (job, key) = stored(&env).await;
    let object = env.dir.path().join("archive").join(&key);
    let original = std::fs::read(&object).unwrap();
    let name = name_of(&key);
    assert!(name.ends_with(".rdb"), "{name}");

    // -o DIR writes DIR/<object name>, equal to the stored bytes (and the provider's).
    let restore = env.dir.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    let r = env
        .run(&["fetch", &job, "-o", restore.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(listing(&restore), vec![name.clone()]);
    let fetched = std::fs::read(restore.join(&name)).unwrap();
    assert!(
        fetched == original,
        "fetched bytes differ from the stored copy"
    );
    let shard_backup = env.store().await.shards(&job).await.unwrap()[0]
        .backup_id
        .clone();
    assert!(fetched == env.provider_bytes(SMALL, &shard_backup).await);

    // Refusals happen before any download: with the stored object moved away, a download
    // would fail as "missing" (exit 3); each refusal is exit 2 with its own reason.
    let aside = env.dir.path().join("aside.rdb");
    std::fs::rename(&object, &aside).unwrap();
    let r = env
        .run(&["fetch", &job, "-o", restore.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("exists") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    let r = env
        .run(&["fetch", &job, "-o", "/nonexistent/dir/x.rdb"])
        .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("/nonexistent/dir"), "{}", r.stderr);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    assert!(!Path::new("/nonexistent").exists());
    let missing_dir = format!("{}/", env.dir.path().join("no-such-dir").display());
    let r = env.run(&["fetch", &job, "-o", &missing_dir]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let r = env
        .run(&["fetch", "no-such-id", "-o", restore.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("no job matches `no-such-id`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        listing(&restore),
        vec![name.clone()],
        "refusals write nothing"
    );
    std::fs::rename(&aside, &object).unwrap();

    // A copy corrupted at the destination fails verification: nothing in the output directory,
    // and a file that --force would have replaced is left as it was.
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&object, &bad).unwrap();
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let r = env
        .run(&["fetch", &job, "-o", empty.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(listing(&empty), Vec::<String>::new(), "{}", r.all());
    let r = env
        .run(&["fetch", &job, "-o", restore.to_str().unwrap(), "--force"])
        .await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert_eq!(listing(&restore), vec![name.clone()]);
    assert!(std::fs::read(restore.join(&name)).unwrap() == original);

    // Interrupted mid-download (the stored object is a FIFO that delivers half the bytes and
    // then stalls): Ctrl-C removes the temporary file.
    std::fs::remove_file(&object).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&object)
        .status()
        .unwrap();
    assert!(status.success());
    let slow = env.dir.path().join("slow");
    std::fs::create_dir(&slow).unwrap();
    let mut child = env
        .cmd(&["fetch", &job, "-o", slow.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (fifo, half) = (object.clone(), original[..original.len() / 2].to_vec());
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut w = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
        w.write_all(&half).unwrap();
        w
    });
    let mut started = false;
    for _ in 0..200 {
        started = listing(&slow).iter().any(|n| {
            n.contains("rdbvault-fetch") && std::fs::metadata(slow.join(n)).unwrap().len() > 0
        });
        if started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the download never started: {:?}", listing(&slow));
    crate::support::signal(&child, "-INT");
    let mut cleaned = false;
    for _ in 0..200 {
        if listing(&slow).is_empty() {
            cleaned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cleaned, "interrupted fetch left {:?}", listing(&slow));
    drop(writer.await.unwrap()); // EOF for the blocked read, so the process can exit
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.code(), Some(1));
    let mut stderr = String::new();
    use tokio::io::AsyncReadExt as _;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_eq!(listing(&slow), Vec::<String>::new());
    env.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_from_s3_into_a_directory_names_the_file_after_the_object() {
    let Some(env) = Env::new("fetch-s3", "s3", &format!("uuid: {SMALL}"), "@yearly").await else {
        return;
    };
    assert_eq!(env.run(&["backup-now", "--policy", "p"]).await.code, 0);
    let (job, key) = stored(&env).await;
    let restore = env.dir.path().join("restore");
    std::fs::create_dir(&restore).unwrap();
    let r = env
        .run(&["fetch", &job, "-o", restore.to_str().unwrap()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(listing(&restore), [name_of(&key)]);
    assert!(std::fs::read(restore.join(name_of(&key))).unwrap() == env.get(&key).await);
    env.assert_no_leaks();
    env.sim.stop().await;
}

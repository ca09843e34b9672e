//! An S3 destination with its own endpoint never asks the EC2 instance metadata service or the
//! ECS container endpoint for credentials unless its config says `credentials: instance_profile`.

use crate::support::{self, AK, SECRET, rdbvault, seaweedfs, start_sim, write_private};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A TCP listener that counts every connection made to it and closes it unanswered.
struct Recorder {
    url: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok(_) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Recorder {
            url,
            connections,
            stop,
        }
    }
    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn write_config(dir: &std::path::Path, cds: &str, s3: &str, extra: &str) -> std::path::PathBuf {
    write_private(&dir.join("cds_id"), AK);
    write_private(&dir.join("cds_secret"), SECRET);
    let text = format!(
        r#"cds:
  endpoint: {cds}
  access_key_id_file: cds_id
  access_key_secret_file: cds_secret
  timeout: 5s
  retry: {{ max_attempts: 1 }}
destinations:
  objstore:
    type: s3
    bucket: rdbvault-test
    prefix: creds
    endpoint: {s3}
    path_style: true{extra}
policies:
  - name: p
    schedule: {{ cron: "@hourly" }}
    instances: [ {{ name: "prod-*" }} ]
    destination: objstore
    retention: {{ destination: {{ keep_last: 2 }} }}
"#
    );
    let path = dir.join("rdbvault.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `check-config --online` with no AWS keys anywhere and both metadata endpoints pointed at
/// `imds`; `env` adds variables.
async fn check(
    config: &std::path::Path,
    home: &std::path::Path,
    imds: &Recorder,
    env: &[(&str, &str)],
) -> support::Run {
    let mut cmd = rdbvault();
    cmd.arg("-c")
        .arg(config)
        .args(["check-config", "--online"])
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url)
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/creds", imds.url),
        )
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_EC2_METADATA_DISABLED");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let r = support::run(&mut cmd);
        (r, started.elapsed())
    })
    .await
    .map(|(r, took)| {
        assert!(took < Duration::from_secs(20), "took {took:?}: {}", r.all());
        r
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_destination_without_keys_fails_fast_and_never_asks_the_metadata_service() {
    let Some(s3) = seaweedfs() else { return };
    let sim = start_sim(support::sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let imds = Recorder::start();
    let config = write_config(dir.path(), &sim.base_url, &s3.endpoint, "");

    let r = check(&config, home.path(), &imds, &[]).await;
    assert_eq!(
        r.code,
        2,
        "missing keys are a credential problem: {}",
        r.all()
    );
    let text = r.all();
    assert!(text.contains("destination objstore: FAILED"), "{text}");
    assert!(text.contains("destination `objstore`"), "{text}");
    assert!(text.contains("destinations.objstore"), "{text}");
    assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
    assert!(text.contains("credentials: instance_profile"), "{text}");
    assert!(
        text.len() < 4000,
        "a short message, not an SDK dump:\n{text}"
    );
    assert_eq!(
        imds.count(),
        0,
        "something asked the metadata endpoints:\n{text}"
    );

    // With the keys in the environment it works, still without asking.
    let r = check(
        &config,
        home.path(),
        &imds,
        &[
            ("AWS_ACCESS_KEY_ID", &s3.access_key),
            ("AWS_SECRET_ACCESS_KEY", &s3.secret_key),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("destination objstore: write and delete OK"),
        "{}",
        r.stdout
    );
    assert!(!r.all().contains(&s3.secret_key));
    assert_eq!(imds.count(), 0);

    // And from a profile in the shared credentials file.
    let creds = home.path().join("creds");
    write_private(
        &creds,
        &format!(
            "[store]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3.access_key, s3.secret_key
        ),
    );
    let r = check(
        &config,
        home.path(),
        &imds,
        &[
            ("AWS_PROFILE", "store"),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(imds.count(), 0);

    // Opting in to the instance role does ask (here: the recorder, which hangs up).
    let config = write_config(
        dir.path(),
        &sim.base_url,
        &s3.endpoint,
        "\n    credentials: instance_profile",
    );
    let r = check(&config, home.path(), &imds, &[]).await;
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(
        imds.count() > 0,
        "instance_profile did not use the default chain"
    );
    sim.stop().await;
}

#[test]
fn a_bad_credentials_value_is_a_located_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "\n    credentials: imds",
    );
    let r = support::run(rdbvault().arg("-c").arg(&config).arg("check-config"));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("rdbvault.yaml:14:18: destinations.objstore.credentials"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("static, instance_profile"),
        "{}",
        r.stderr
    );
}

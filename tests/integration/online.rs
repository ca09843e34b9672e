//! `check-config --online` against the simulator, a real SeaweedFS and a real directory.

use crate::support::{self, AK, SECRET, rdbvault, run, seaweedfs, start_sim, write_private};
use std::path::Path;

struct Setup {
    dir: tempfile::TempDir,
}

fn write_config(
    dir: &Path,
    endpoint: &str,
    s3: &support::SeaweedFs,
    s3_secret: &str,
    uuid: &str,
) -> std::path::PathBuf {
    write_private(&dir.join("cds_id"), AK);
    write_private(&dir.join("cds_secret"), SECRET);
    write_private(&dir.join("s3_id"), &s3.access_key);
    write_private(&dir.join("s3_secret"), s3_secret);
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    let text = format!(
        r#"cds:
  endpoint: {endpoint}
  access_key_id_file: {d}/cds_id
  access_key_secret_file: {d}/cds_secret
  timeout: 5s
  retry: {{ max_attempts: 2, base_delay: 10ms }}
destinations:
  s3:
    type: s3
    bucket: rdbvault-test
    prefix: online
    endpoint: {s3e}
    path_style: true
    access_key_id_file: {d}/s3_id
    secret_access_key_file: {d}/s3_secret
  dir:
    type: file
    path: {d}/archive
policies:
  - name: prod
    schedule: {{ cron: "@hourly" }}
    instances:
      - uuid: {uuid}
      - name: "prod-*"
      - ip: 10.0.1.7
    destination: s3
    retention: {{ destination: {{ keep_last: 2 }} }}
"#,
        d = dir.display(),
        s3e = s3.endpoint,
    );
    let path = dir.join("rdbvault.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn check(path: std::path::PathBuf) -> support::Run {
    tokio::task::spawn_blocking(move || {
        run(rdbvault()
            .arg("-c")
            .arg(&path)
            .args(["check-config", "--online"]))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_resolves_selectors_and_probes_destinations() {
    let Some(s3) = seaweedfs() else { return };
    let sim = start_sim(support::sim_config()).await;
    let setup = Setup {
        dir: tempfile::tempdir().unwrap(),
    };
    let d = setup.dir.path();

    let path = write_config(
        d,
        &sim.base_url,
        s3,
        &s3.secret_key,
        "5d74bb81-0473-464d-b15b-0ae418619248",
    );
    let r = check(path.clone()).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // --json: each online check is an item; the same verdict.
    let p2 = path.clone();
    let r2 = tokio::task::spawn_blocking(move || {
        run(rdbvault()
            .arg("-c")
            .arg(&p2)
            .args(["check-config", "--online", "--json"]))
    })
    .await
    .unwrap();
    assert_eq!(r2.code, 0, "{}", r2.all());
    let doc: serde_json::Value = serde_json::from_str(&r2.stdout).unwrap();
    assert_eq!(doc["online_ok"], true, "{doc}");
    let checks = doc["online"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "cds" && c["instances"] == 3),
        "{doc}"
    );
    assert!(
        checks
            .iter()
            .any(|c| c["check"] == "destination" && c["name"] == "s3" && c["ok"] == true),
        "{doc}"
    );
    assert!(
        r.stdout
            .contains("DescribeDBInstances signed and accepted; 3 instance(s)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(r#"name "prod-*" -> prod-cache-01"#),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("prod-cluster-01"), "{}", r.stdout);
    assert!(
        r.stdout.contains("ip 10.0.1.7 -> staging-cache"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("destination s3: write and delete OK"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("destination dir: write and delete OK"),
        "{}",
        r.stdout
    );
    assert!(!r.all().contains(SECRET) && !r.all().contains(&s3.secret_key));
    assert_eq!(
        sim.calls("DescribeDBInstances"),
        2,
        "one signed call per check"
    );
    // The probe leaves nothing behind.
    assert_eq!(std::fs::read_dir(d.join("archive")).unwrap().count(), 0);

    // A uuid that matches nothing: a policy that would back up nothing, exit 3, named.
    let path = write_config(
        d,
        &sim.base_url,
        s3,
        &s3.secret_key,
        "00000000-0000-4000-8000-000000000000",
    );
    let r = check(path).await;
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.all().contains(
            "selector uuid 00000000-0000-4000-8000-000000000000 matches no instance; fix it or remove it"
        ),
        "{}",
        r.all()
    );

    // And a wrong S3 secret too: a credential problem, exit 2, each named.
    let path = write_config(
        d,
        &sim.base_url,
        s3,
        "wrong-s3-secret",
        "00000000-0000-4000-8000-000000000000",
    );
    let r = check(path).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("SignatureDoesNotMatch"), "{}", r.all());
    assert!(
        r.all()
            .contains("00000000-0000-4000-8000-000000000000 matches no instance"),
        "{}",
        r.all()
    );
    assert!(r.all().contains("destination s3: FAILED"), "{}", r.all());
    assert!(
        r.all().contains("s3://rdbvault-test/online/"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("wrong-s3-secret"));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_reports_a_wrong_cds_secret_without_printing_it() {
    let Some(s3) = seaweedfs() else { return };
    let sim = start_sim(support::sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim.base_url,
        s3,
        &s3.secret_key,
        "5d74bb81-0473-464d-b15b-0ae418619248",
    );
    write_private(&dir.path().join("cds_secret"), "a-wrong-cds-secret");
    let r = check(path.clone()).await;
    // Refused credentials are a configuration problem: exit 2.
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.all().contains("SignatureDoesNotMatch"), "{}", r.all());
    assert!(!r.all().contains("a-wrong-cds-secret"));

    // A secret file anyone can read is refused before any call.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("cds_secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let r = check(path).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    sim.stop().await;
}

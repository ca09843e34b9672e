//! The operator's command line around the daemon: `completions SHELL` and `man` (generated from
//! the clap definition, no config needed) and `init` (a starting config that passes
//! `check-config` as written, offline or from the simulator's `DescribeDBInstances`, whatever
//! names the provider gives its instances).

use crate::support::{self, AK, SECRET, rdbvault, rdbvault_under_umask, run, start_sim};
use clap::CommandFactory as _;
use rdbvault::sim::state::InstanceSpec;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every visible command name, nested ones included (`show`, `pin`, ...).
fn command_names() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.push(sub.get_name().to_string());
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&rdbvault::cli::Cli::command(), &mut out);
    out
}

fn top_level_names() -> Vec<String> {
    rdbvault::cli::Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect()
}

fn completions(shell: &str) -> String {
    // A config that does not exist: neither command reads one.
    let r = run(rdbvault()
        .args(["-c", "/nonexistent/rdbvault.yaml", "completions"])
        .arg(shell));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    r.stdout
}

/// Sources the script in a bash without any startup file and asks the function that
/// `complete -p rdbvault` names for the completions of `words` (the last one is completed).
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let probe = r#"
source "$1" || exit 10
spec=$(complete -p rdbvault) || exit 11
fn=$(sed -E 's/.*-F ([^ ]+).*/\1/' <<<"$spec")
shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
"$fn" rdbvault "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", probe, "probe"])
        .arg(script)
        .args(words)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn the_bash_completion_parses_and_completes_commands_options_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("rdbvault.bash");
    std::fs::write(&script, completions("bash")).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    assert_eq!(
        bash_complete(&script, &["rdbvault", "ch"]),
        ["check-config"]
    );
    assert_eq!(
        bash_complete(&script, &["rdbvault", "check-config", "--on"]),
        ["--online"]
    );
    assert_eq!(
        bash_complete(&script, &["rdbvault", "init", "--region", ""]),
        ["mainland", "asia", "us"]
    );
    assert_eq!(
        bash_complete(&script, &["rdbvault", "jobs", "sh"]),
        ["show"]
    );
    let all = bash_complete(&script, &["rdbvault", ""]);
    for name in top_level_names() {
        assert!(all.contains(&name), "{name} in {all:?}");
    }
}

#[test]
fn every_other_shell_gets_a_script_naming_every_command() {
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = completions(shell);
        assert!(script.lines().count() > 20, "{shell}: {script}");
        for name in command_names() {
            assert!(script.contains(&name), "{shell}: no `{name}`");
        }
    }
    assert!(completions("zsh").starts_with("#compdef rdbvault"));
    let r = run(rdbvault().args(["completions", "tcsh"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("bash, elvish, fish, powershell, zsh"),
        "{}",
        r.stderr
    );
}

fn man_page() -> String {
    let r = run(rdbvault().args(["-c", "/nonexistent/rdbvault.yaml", "man"]));
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout
}

#[test]
fn the_man_page_has_every_command_and_every_option_of_check_config() {
    let page = man_page();
    assert!(
        page.lines().any(|l| l.starts_with(".TH rdbvault 1 ")),
        "{page}"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "\"EXIT STATUS\"",
    ] {
        assert!(page.contains(&format!("\n.SH {section}\n")), "{section}");
    }
    for cmd in rdbvault::cli::Cli::command().get_subcommands() {
        let heading = format!(".SS \"rdbvault {}\"", cmd.get_name());
        assert!(page.contains(&heading), "{heading}");
        for sub in cmd.get_subcommands() {
            let heading = format!(".SS \"rdbvault {} {}\"", cmd.get_name(), sub.get_name());
            assert!(page.contains(&heading), "{heading}");
        }
    }
    let check = rdbvault::cli::Cli::command()
        .find_subcommand("check-config")
        .unwrap()
        .clone();
    let section = page
        .split(".SS \"rdbvault check-config\"")
        .nth(1)
        .unwrap()
        .split(".SS ")
        .next()
        .unwrap();
    for arg in check.get_arguments() {
        let long = arg.get_long().unwrap();
        assert!(
            section.contains(&format!("\\fB\\-\\-{long}\\fR")),
            "--{long}"
        );
        let help = arg.get_help().unwrap().to_string();
        assert!(section.contains(&help), "{help}");
    }
    assert!(page.is_ascii(), "non-ASCII is written as groff escapes");
}

/// The page as a reader sees it: `groff -man -Tutf8` (with every warning on) and, if
/// installed, `man -l -`.
#[test]
fn the_man_page_renders_without_warnings() {
    if !support::have_tool("groff") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rdbvault.1");
    std::fs::write(&file, man_page()).unwrap();
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout).replace(['\u{2212}', '\u{2010}'], "-");
    for needle in [
        "rdbvault check-config [-c|--config] [--online]",
        "rdbvault jobs show",
        "rdbvault completions",
        "rdbvault init",
        "EXIT STATUS",
        "rdbvault completions bash > ~/.local/share/bash-completion/completions/rdbvault",
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    if Command::new("sh")
        .args(["-c", "command -v man"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("MANWIDTH=100 man -l {} | col -b", file.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("rdbvault check-config"), "man -l:\n{text}");
    }
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let r = run(rdbvault().args(["man", "--dir"]).arg(dir.path()));
    assert_eq!(r.code, 0, "{}", r.all());
    for page in [
        "rdbvault.1",
        "rdbvault-check-config.1",
        "rdbvault-init.1",
        "rdbvault-jobs-show.1",
        "rdbvault-backups-unpin.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains("\n.TH "), "{page}");
        assert!(r.stdout.contains(page), "{}", r.stdout);
    }
    let r = run(rdbvault().args(["man", "--dir", "/nonexistent/man1"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("not an existing directory"),
        "{}",
        r.stderr
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn check_config(path: &Path) -> support::Run {
    run(rdbvault().arg("-c").arg(path).arg("check-config"))
}

#[test]
fn init_writes_a_private_config_that_passes_check_config_and_never_overwrites_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdbvault.yaml");
    // umask 000: the mode comes from rdbvault, not from the umask.
    let r = run(rdbvault_under_umask("000").args(["init", "-o"]).arg(&path));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(mode(&path), 0o600);
    for step in [
        "wrote",
        "next steps:",
        "edit ",
        "check-config --online",
        " run`",
    ] {
        assert!(r.stdout.contains(step), "{step}:\n{}", r.stdout);
    }
    assert!(r.stdout.contains(&format!(
        "mkdir -m 700 {}",
        dir.path().join("archive").display()
    )));
    let written = std::fs::read_to_string(&path).unwrap();
    let c = check_config(&path);
    assert_eq!(c.code, 0, "{}\n---\n{written}", c.all());
    assert!(
        c.stdout
            .contains("daily: cron \"30 2 * * *\" in Asia/Shanghai"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout
            .contains("keep_daily 7, keep_weekly 4, min_verified 3"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains(r#"instances: name "prod-*""#),
        "{}",
        c.stdout
    );

    // Again: refused, exit 2, the file as it was.
    std::fs::write(&path, "mine").unwrap();
    let r = run(rdbvault().args(["init", "-o"]).arg(&path));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    // --force replaces it, and a file left 0644 becomes 0600.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run(rdbvault().args(["init", "--force", "-o"]).arg(&path));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    assert_eq!(mode(&path), 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
}

#[test]
fn init_writes_to_the_config_path_or_the_default_and_refuses_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    // -c names the file when -o does not.
    let path = dir.path().join("named.yaml");
    let r = run(rdbvault().arg("-c").arg(&path).arg("init"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(check_config(&path).code, 0);
    // Neither: ./rdbvault.yaml in the working directory.
    let r = run(rdbvault().arg("init").current_dir(dir.path()));
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(check_config(&dir.path().join("rdbvault.yaml")).code, 0);
    // Key files and an endpoint given on the command line are in the file, absolute.
    let keys = dir.path().join("keys.yaml");
    let r = run(rdbvault()
        .current_dir(dir.path())
        .args([
            "init",
            "--access-key-id-file",
            "ak",
            "--access-key-secret-file",
            "sk",
        ])
        .args(["--endpoint", "http://127.0.0.1:9751", "-o"])
        .arg(&keys));
    assert_eq!(r.code, 0, "{}", r.all());
    let c = check_config(&keys);
    assert_eq!(c.code, 0, "{}", c.all());
    let ak = dir.path().join("ak");
    assert!(
        c.stdout
            .contains(&format!("access key id from file {}", ak.display())),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains("cds: http://127.0.0.1:9751/redis/"),
        "{}",
        c.stdout
    );

    for (args, message) in [
        (
            vec!["init", "-o", "/nonexistent/dir/rdbvault.yaml"],
            "does not exist",
        ),
        (vec!["init", "-o", "/tmp"], "is a directory"),
        (
            vec!["init", "--endpoint", "ftp://example.com", "-o", "x.yaml"],
            "not an http(s) URL",
        ),
        (vec!["init", "--region", "europe"], "mainland, asia, us"),
        (
            vec!["init", "--region", "asia", "--endpoint", "http://x"],
            "cannot be used with",
        ),
    ] {
        let r = run(rdbvault().args(&args).current_dir(dir.path()));
        assert_eq!(r.code, 2, "{args:?}: {}", r.all());
        assert!(r.stderr.contains(message), "{args:?}: {}", r.stderr);
    }
}

/// Instance names a hostile or careless provider account could hold.
const HOSTILE_NAMES: &[&str] = &[
    "evil\n      - uuid: 00000000-0000-4000-8000-000000000000\ninjected: true",
    "# not a comment: \"quoted\" 'single' \\",
    "key: value\r\n- item\u{2028}ls\u{85}nel",
    "rlo\u{202e}gnp.exe\u{feff}\u{7}",
    "生产 缓存",
];

fn hostile_instances() -> Vec<InstanceSpec> {
    let mut specs: Vec<InstanceSpec> = HOSTILE_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| InstanceSpec {
            uuid: Some(format!("1111111{i}-2222-4333-8444-555555555555")),
            name: (*name).to_string(),
            ip: Some(format!("10.9.0.{i}")),
            ..InstanceSpec::default()
        })
        .collect();
    specs.push(InstanceSpec {
        uuid: Some("not-a-uuid\ninjected: 2".into()),
        name: "odd id".into(),
        ..InstanceSpec::default()
    });
    specs
}

async fn blocking(mut cmd: Command) -> support::Run {
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

fn init_online(sim: &rdbvault::sim::SimHandle, path: &Path, secret: Option<&str>) -> Command {
    let mut cmd = rdbvault();
    cmd.args(["init", "--online", "--endpoint", &sim.base_url, "-o"])
        .arg(path);
    if let Some(secret) = secret {
        cmd.env("CDS_ACCESS_KEY_ID", AK)
            .env("CDS_ACCESS_KEY_SECRET", secret);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_online_lists_every_instance_safely_whatever_its_name() {
    let mut config = support::sim_config();
    config.instances = Some(hostile_instances());
    let sim = start_sim(config).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdbvault.yaml");

    let r = blocking(init_online(&sim, &path, Some(SECRET))).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(sim.calls("DescribeDBInstances"), 1);
    assert_eq!(mode(&path), 0o600);
    assert!(
        r.stdout
            .contains("5 by uuid, of the 6 DescribeDBInstances listed"),
        "{}",
        r.stdout
    );
    assert!(!r.all().contains(SECRET));
    let text = std::fs::read_to_string(&path).unwrap();

    // Offline check: valid as written; the selectors are exactly the five real uuids.
    let c = blocking({
        let mut cmd = rdbvault();
        cmd.arg("-c").arg(&path).arg("check-config");
        cmd
    })
    .await;
    assert_eq!(c.code, 0, "{}\n---\n{text}", c.all());
    let cfg = rdbvault::config::load(&path).unwrap();
    let mut selectors: Vec<_> = cfg.policies[0]
        .instances
        .iter()
        .map(|s| s.to_string())
        .collect();
    let expected: Vec<_> = (0..HOSTILE_NAMES.len())
        .map(|i| format!("uuid 1111111{i}-2222-4333-8444-555555555555"))
        .collect();
    selectors.sort();
    assert_eq!(selectors, expected, "{text}");
    // Nothing a name carried became YAML: no line starts with what the names tried to inject,
    // and each name is in a comment on its uuid's line, escaped.
    for line in text.lines() {
        let t = line.trim_start();
        assert!(
            !t.starts_with("injected") && !t.starts_with("- item"),
            "{line}"
        );
        if let Some(at) = line.find("00000000-0000-4000-8000-000000000000") {
            assert!(
                line.find('#').is_some_and(|hash| hash < at),
                "outside a comment: {line}"
            );
        }
    }
    assert!(text.contains(r#"# "evil\n      - uuid: 00000000-0000-4000-8000-000000000000\ninjected: true" (10.9.0.0"#), "{text}");
    assert!(text.contains(r#""rlo\u202Egnp.exe\uFEFF\x07""#), "{text}");
    assert!(text.contains("# 生产 缓存 (10.9.0.4"), "{text}");
    assert!(
        text.contains(
            r#"# left out: its InstanceUuid "not-a-uuid\ninjected: 2" is not a UUID: odd id"#
        ),
        "{text}"
    );

    // Online check: the keys, every selector matched, the destination once it exists.
    std::fs::create_dir(dir.path().join("archive")).unwrap();
    let c = blocking({
        let mut cmd = rdbvault();
        cmd.arg("-c").arg(&path).args(["check-config", "--online"]);
        cmd.env("CDS_ACCESS_KEY_ID", AK)
            .env("CDS_ACCESS_KEY_SECRET", SECRET);
        cmd
    })
    .await;
    assert_eq!(c.code, 0, "{}", c.all());
    assert!(
        c.stdout.contains("all online checks passed"),
        "{}",
        c.stdout
    );
    assert!(!c.stdout.contains("matches no instance"), "{}", c.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_online_without_keys_or_with_wrong_ones_writes_nothing() {
    let sim = start_sim(support::sim_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rdbvault.yaml");

    let r = blocking(init_online(&sim, &path, None)).await;
    assert_eq!(r.code, 2, "{}", r.all());
    for what in [
        "CDS_ACCESS_KEY_ID",
        "CDS_ACCESS_KEY_SECRET",
        "--access-key-id-file",
        "leave out --online",
    ] {
        assert!(r.stderr.contains(what), "{what}: {}", r.stderr);
    }
    assert_eq!(sim.calls("DescribeDBInstances"), 0, "no call without keys");

    let r = blocking(init_online(&sim, &path, Some("wrong-secret"))).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stderr.contains("DescribeDBInstances failed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was written"), "{}", r.stderr);
    assert!(!r.all().contains("wrong-secret"));

    // A key file every user can read is refused, with the chmod that fixes it.
    let sk = dir.path().join("sk");
    support::write_private(&sk, SECRET);
    std::fs::set_permissions(&sk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = init_online(&sim, &path, None);
    cmd.env("CDS_ACCESS_KEY_ID", AK)
        .arg("--access-key-secret-file")
        .arg(&sk);
    let r = blocking(cmd).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);

    assert!(!path.exists());
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left, [sk], "nothing but the key file");
}

use super::*;
use proptest::prelude::*;

/// Names a hostile or careless provider could give, each trying to end a comment or a string.
const HOSTILE: &[&str] = &[
    "evil\n  - uuid: 00000000-0000-0000-0000-000000000000\ninjected: true",
    "a # b: c",
    "\"quoted\" 'single' : colon",
    "trailing backslash \\",
    "cr\rlf\r\nnel\u{85}ls\u{2028}ps\u{2029}",
    "tab\there, nul\0, bell\u{7}, esc\u{1b}[31m, del\u{7f}, c1\u{9b}",
    "bom\u{feff}rlo\u{202e}gnp.exe zw\u{200b}j",
    "- item",
    "key: value",
    "*alias &anchor !tag %directive @ `",
    "{ flow: [map] }",
    "   spaces   ",
    "",
    "生产-缓存 01",
    "\u{fffe}\u{ffff}",
    "tag\u{e0000}\u{e0041} beyond the BMP",
];

fn read_back(quoted: &str) -> String {
    serde_yaml_ng::from_str::<String>(quoted).unwrap_or_else(|e| panic!("{quoted}: {e}"))
}

#[test]
fn quoted_values_read_back_exactly_on_one_line() {
    for s in HOSTILE {
        let q = yaml_quote(s);
        assert!(
            !q.contains(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']),
            "{q}"
        );
        assert_eq!(read_back(&q), *s, "{q}");
    }
    assert_eq!(yaml_quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    assert_eq!(yaml_quote("x\u{202e}y\u{85}"), r#""x\u202Ey\N""#);
}

#[test]
fn comment_text_is_plain_only_when_harmless() {
    assert_eq!(comment_text("prod-cache-01"), "prod-cache-01");
    assert_eq!(comment_text("Redis 主从版"), "Redis 主从版");
    assert_eq!(comment_text("fd00::1"), "fd00::1");
    assert_eq!(comment_text("a\nb"), r#""a\nb""#);
    assert_eq!(comment_text("a # b"), r#""a # b""#);
    assert_eq!(comment_text(" lead"), r#"" lead""#);
    assert_eq!(comment_text("rlo\u{202e}x"), r#""rlo\u202Ex""#);
    let long = "x".repeat(200);
    assert_eq!(
        comment_text(&long),
        format!("{}…", "x".repeat(COMMENT_MAX_CHARS))
    );
}

/// A comment holding `text` leaves the document exactly as it was without it.
fn comment_changes_nothing(text: &str) {
    let doc = format!("a: 1   # {text}\n# {text}\nb: [2]   # {text}\n");
    let parsed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let expected: serde_yaml_ng::Value = serde_yaml_ng::from_str("a: 1\nb: [2]\n").unwrap();
    assert_eq!(parsed, expected, "{doc}");
}

#[test]
fn hostile_text_in_a_comment_stays_in_the_comment() {
    for s in HOSTILE {
        comment_changes_nothing(&comment_text(s));
    }
}

fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>(),
        prop::sample::select(vec![
            '\n', '\r', '\t', '\0', '"', '\'', '\\', '#', ':', ' ', '-', '{', '[', '&', '*', '!',
            '|', '>', '%', '@', '`', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{202e}',
            '\u{7f}', '\u{9b}', '\u{fffe}',
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_string_quotes_and_reads_back(chars in prop::collection::vec(tricky_char(), 0..40)) {
        let s: String = chars.into_iter().collect();
        prop_assert_eq!(read_back(&yaml_quote(&s)), s);
    }

    #[test]
    fn any_string_in_a_comment_changes_nothing(chars in prop::collection::vec(tricky_char(), 0..40)) {
        let s: String = chars.into_iter().collect();
        comment_changes_nothing(&comment_text(&s));
    }
}

fn offline() -> Template {
    Template {
        api: Api::Region("mainland"),
        key_id_file: None,
        key_secret_file: None,
        listed: None,
    }
}

fn parse(text: &str) -> Config {
    config::parse(text, Path::new("/srv/rdbvault/rdbvault.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn the_offline_config_passes_validation_with_its_placeholders() {
    let text = render(&offline());
    let cfg = parse(&text);
    assert_eq!(
        cfg.cds.endpoint.as_str(),
        "https://cdsapi.capitalonline.net/"
    );
    assert!(cfg.cds.access_key_id_file.is_none() && cfg.cds.access_key_secret_file.is_none());
    assert_eq!(cfg.state.path, Path::new("/srv/rdbvault/rdbvault.db"));
    assert_eq!(archive_path(&cfg), Path::new("/srv/rdbvault/archive"));
    let [p] = &cfg.policies[..] else {
        panic!("one policy")
    };
    assert_eq!(
        (p.name.as_str(), p.destination.as_str()),
        (POLICY, DESTINATION)
    );
    assert_eq!(p.schedule.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(p.instances.len(), 1);
    assert_eq!(
        p.instances[0].to_string(),
        "name \"prod-*\"",
        "{:?}",
        p.instances
    );
    let keep = &p.retention.destination;
    assert_eq!(
        (keep.keep_daily, keep.keep_weekly, keep.min_verified),
        (Some(7), Some(4), 3)
    );
    assert!(p.retention.provider.is_none());
    assert!(text.contains("# access_key_id_file: /etc/rdbvault/credentials/cds_access_key_id"));
    assert!(text.contains("rather than UTC"), "the timezone says why");
}

#[test]
fn the_commented_s3_destination_is_valid_once_uncommented() {
    let text = render(&offline());
    let mut lines = Vec::new();
    let mut in_s3 = false;
    for line in text.lines() {
        if line == "  # s3:" {
            in_s3 = true;
        } else if in_s3 && !line.starts_with("  #   ") {
            in_s3 = false;
        }
        lines.push(if in_s3 {
            line.replacen("  # ", "  ", 1)
        } else {
            line.to_string()
        });
    }
    let text = lines.join("\n").replace(
        &format!("destination: {DESTINATION}\n"),
        "destination: s3\n",
    );
    let cfg = parse(&text);
    assert!(matches!(
        cfg.destinations["s3"].kind,
        config::DestinationKind::S3(_)
    ));
    assert_eq!(cfg.policies[0].destination, "s3");
}

#[test]
fn an_endpoint_and_key_files_are_written_quoted_and_active() {
    let t = Template {
        api: Api::Endpoint("http://127.0.0.1:9751/".into()),
        key_id_file: Some("/run/keys/id with space".into()),
        key_secret_file: Some("/run/keys/s#cret: \"x\"".into()),
        listed: None,
    };
    let cfg = parse(&render(&t));
    assert_eq!(cfg.cds.endpoint.as_str(), "http://127.0.0.1:9751/");
    assert_eq!(
        cfg.cds.access_key_id_file.as_deref(),
        Some(Path::new("/run/keys/id with space"))
    );
    assert_eq!(
        cfg.cds.access_key_secret_file.as_deref(),
        Some(Path::new("/run/keys/s#cret: \"x\""))
    );
}

fn instance(uuid: &str, name: &str, ip: &str) -> Instance {
    Instance {
        instance_uuid: uuid.into(),
        instance_name: name.into(),
        ip: ip.into(),
        sub_product_name: "Redis 集群版".into(),
        version: "5.0".into(),
        status: "RUNNING".into(),
        ..Instance::default()
    }
}

const U1: &str = "5d74bb81-0473-464d-b15b-0ae418619248";
const U2: &str = "8c1f6a52-2d0e-4c8b-9a51-3f7e0d2b6c11";

fn online(instances: Vec<Instance>) -> Template {
    Template {
        listed: Some(Listed {
            instances,
            at: "2026-05-01 10:00 UTC".into(),
        }),
        ..offline()
    }
}

fn uuid_selectors(cfg: &Config) -> Vec<String> {
    cfg.policies[0]
        .instances
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn listed_instances_become_uuid_selectors_whatever_their_names() {
    let mut instances: Vec<_> = HOSTILE
        .iter()
        .map(|name| instance(&uuid::Uuid::new_v4().to_string(), name, "10.0.0.5"))
        .collect();
    instances.push(instance(U1, "ok", "10.0.0.6\ninjected: 1"));
    instances.push(instance("not-a-uuid\n- uuid: x", "bad id", "10.0.0.7"));
    instances.push(instance(&U1.to_uppercase(), "twice", "10.0.0.8"));
    let mut expected: Vec<_> = instances[..HOSTILE.len() + 1]
        .iter()
        .map(|i| format!("uuid {}", i.instance_uuid))
        .collect();
    let text = render(&online(instances));
    let cfg = parse(&text);
    let mut got = uuid_selectors(&cfg);
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{text}");
    assert!(text.contains(r#"# left out: its InstanceUuid "not-a-uuid\n- uuid: x" is not a UUID: bad id (10.0.0.7"#), "{text}");
    assert!(
        text.contains("# left out: listed twice: twice (10.0.0.8, Redis 集群版 5.0)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "- uuid: \"{U1}\"   # ok (\"10.0.0.6\\ninjected: 1\", Redis 集群版 5.0)"
        )),
        "{text}"
    );
}

#[test]
fn a_comment_names_the_status_unless_running_and_no_instance_keeps_the_placeholder() {
    let mut creating = instance(U2, "new-one", "10.0.0.9");
    creating.status = "CREATING".into();
    let text = render(&online(vec![creating]));
    assert!(
        text.contains("# new-one (10.0.0.9, Redis 集群版 5.0, status CREATING)"),
        "{text}"
    );
    assert_eq!(uuid_selectors(&parse(&text)), [format!("uuid {U2}")]);

    for instances in [vec![], vec![instance("nope", "x", "")]] {
        let text = render(&online(instances));
        assert_eq!(uuid_selectors(&parse(&text)), ["name \"prod-*\""], "{text}");
        assert!(
            text.contains("no instance could be listed by uuid"),
            "{text}"
        );
    }
}

#[test]
fn shell_quote_leaves_plain_paths_alone() {
    assert_eq!(shell_quote("./rdbvault.yaml"), "./rdbvault.yaml");
    assert_eq!(shell_quote("/tmp/my dir/x.yaml"), "'/tmp/my dir/x.yaml'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn every_region_init_offers_is_one_the_config_accepts() {
    use clap::ValueEnum as _;
    let mut endpoints = Vec::new();
    for region in crate::cli::Region::value_variants() {
        let t = Template {
            api: Api::Region(region.as_str()),
            ..offline()
        };
        let endpoint = parse(&render(&t)).cds.endpoint.to_string();
        let help = region
            .to_possible_value()
            .unwrap()
            .get_help()
            .unwrap()
            .to_string();
        assert!(
            help.ends_with(endpoint.trim_end_matches('/')),
            "{help} vs {endpoint}"
        );
        endpoints.push(endpoint);
    }
    endpoints.dedup();
    assert_eq!(endpoints.len(), 3);
}

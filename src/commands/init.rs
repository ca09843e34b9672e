//! `init [--online] [-o FILE] [--force]`: writes a commented starting config and says what to do
//! next.
//!
//! The text comes from [`render`], a pure function of a [`Template`]; before anything is written
//! it goes through [`config::parse`] with the target as its source, so the file passes
//! `check-config` as written (and relative paths mean what they will mean there). With
//! `--online` the account's instances come from one `DescribeDBInstances`, made with the very
//! `cds` section the file will hold. Everything the provider says (names, uuids, addresses,
//! types) is untrusted: it reaches the file only through [`yaml_quote`] (a double-quoted YAML
//! scalar that escapes every line break, control and invisible character) or [`comment_text`]
//! (the same, left plain when it is plainly harmless), so a hostile name can neither end a
//! comment nor add a key. The file is written 0600 through [`crate::private_fs::write_file`]:
//! it may later name the key files.

use crate::cds::Params;
use crate::cds::model::Instance;
use crate::cli::InitArgs;
use crate::config::{self, Config, credentials};
use crate::failure::Failure;
use crate::metrics::ApiMetrics;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The policy, destination and schedule the file starts with (the summary names them too).
const POLICY: &str = "daily";
const DESTINATION: &str = "local";
const ARCHIVE_DIR: &str = "archive";
const CRON: &str = "30 2 * * *";
const TIMEZONE: &str = "Asia/Shanghai";
/// The name selector written when no instance list is known.
const NAME_PLACEHOLDER: &str = "prod-*";
/// A comment shows at most this many characters of one provider value.
const COMMENT_MAX_CHARS: usize = 80;

/// Where the API is, as the file says it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Api {
    /// `cds.region`: one of the provider's documented endpoints.
    Region(&'static str),
    /// `cds.endpoint`.
    Endpoint(String),
}

/// What the file says beyond its fixed text.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub api: Api,
    /// `cds.access_key_id_file`, absolute; `None` leaves it commented (the environment).
    pub key_id_file: Option<String>,
    /// `cds.access_key_secret_file`, likewise.
    pub key_secret_file: Option<String>,
    /// `None`: a name placeholder to edit. `Some`: what `DescribeDBInstances` listed.
    pub listed: Option<Listed>,
}

/// The account's instances, and when they were listed.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub instances: Vec<Instance>,
    /// e.g. `2026-05-01 10:00 UTC`.
    pub at: String,
}

/// `init`.
///
/// # Errors
/// The target exists without `--force`, its directory is missing, an option is unusable or the
/// CDS keys are missing (exit 2); `DescribeDBInstances` failed or the file cannot be written
/// (exit 1). Nothing is written in any of these cases.
pub async fn init(args: &InitArgs, target: &Path) -> Result<(), Failure> {
    check_target(target, args.force)?;
    let mut template = template_from(args)?;
    if args.online {
        // The client is built from the cds section exactly as the file will hold it.
        let draft = parse_generated(&render(&template), target)?;
        template.listed = Some(list_instances(&draft).await?);
    }
    let text = render(&template);
    let cfg = parse_generated(&text, target)?;
    crate::private_fs::write_file(target, text.as_bytes(), args.force).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            exists(target)
        } else {
            Failure::Runtime(anyhow::anyhow!(
                "cannot write {}: {e}; check that its directory is writable, or pass -o FILE elsewhere",
                target.display()
            ))
        }
    })?;
    crate::commands::format::write_out(format_args!("{}", summary(target, &cfg, &template)));
    Ok(())
}

/// Refuses, before any API call, a target that is a directory, exists (without `--force`) or
/// lies in a directory that does not exist.
fn check_target(target: &Path, force: bool) -> Result<(), Failure> {
    let shown = target.display();
    if target.is_dir() {
        return Err(Failure::Usage(format!(
            "{shown} is a directory; name the file to write, e.g. -o {}",
            target.join("rdbvault.yaml").display()
        )));
    }
    if !force && std::fs::symlink_metadata(target).is_ok() {
        return Err(exists(target));
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Failure::Usage(format!(
            "cannot write {shown}: the directory {} does not exist; create it (mkdir -p {}) or pass -o FILE elsewhere",
            dir.display(),
            shell_quote(&dir.display().to_string())
        )));
    }
    Ok(())
}

fn exists(target: &Path) -> Failure {
    Failure::Usage(format!(
        "{} already exists and was left as it is; pass --force to replace it, or -o FILE to write elsewhere",
        target.display()
    ))
}

/// The template the options ask for (no instance list yet).
fn template_from(args: &InitArgs) -> Result<Template, Failure> {
    let api = match (&args.endpoint, args.region) {
        (Some(url), _) => {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Failure::Usage(format!(
                    "--endpoint {url}: not an http(s) URL; e.g. https://cdsapi.capitalonline.net or http://127.0.0.1:9751 for `rdbvault sim`"
                )));
            }
            Api::Endpoint(url.to_string())
        }
        (None, region) => Api::Region(region.unwrap_or(crate::cli::Region::Mainland).as_str()),
    };
    Ok(Template {
        api,
        key_id_file: key_file(args.access_key_id_file.as_deref(), "--access-key-id-file")?,
        key_secret_file: key_file(
            args.access_key_secret_file.as_deref(),
            "--access-key-secret-file",
        )?,
        listed: None,
    })
}

/// A key file option made absolute (the file's relative paths are taken from its own
/// directory, the option's from the working directory).
fn key_file(path: Option<&Path>, option: &str) -> Result<Option<String>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let absolute = std::path::absolute(path).map_err(|e| {
        Failure::Usage(format!(
            "{option} {}: cannot make the path absolute: {e}",
            path.display()
        ))
    })?;
    match absolute.to_str() {
        Some(s) => Ok(Some(s.to_string())),
        None => Err(Failure::Usage(format!(
            "{option} {}: the path is not UTF-8, which a YAML config cannot hold; use another path",
            absolute.display()
        ))),
    }
}

/// Parses the generated text as `check-config` will. A problem here comes from an option (an
/// endpoint the config refuses) or is a bug; either way nothing is written.
fn parse_generated(text: &str, target: &Path) -> Result<Config, Failure> {
    config::parse(text, target).map_err(|e| {
        Failure::Usage(format!(
            "the config init would write does not pass check-config, so nothing was written:\n{e}"
        ))
    })
}

/// One `DescribeDBInstances` with the keys the file's `cds` section names.
async fn list_instances(cfg: &Config) -> Result<Listed, Failure> {
    let cds = &cfg.cds;
    if let Err(e) = credentials::load(
        cds.access_key_id_file.as_deref(),
        cds.access_key_secret_file.as_deref(),
    ) {
        return Err(Failure::Usage(match e {
            credentials::Error::Missing { what, env, .. } => format!(
                "init --online needs the CDS API keys and has no {what} (${env} is not set); \
export {} and {}, or pass --access-key-id-file FILE and --access-key-secret-file FILE; \
or leave out --online to write a config with a name placeholder instead",
                credentials::ENV_ACCESS_KEY_ID,
                credentials::ENV_ACCESS_KEY_SECRET
            ),
            other => format!(
                "init --online: {other}; fix the key file (--access-key-id-file / --access-key-secret-file)"
            ),
        }));
    }
    let registry = prometheus::Registry::new();
    let client = crate::services::cds_client(cds, ApiMetrics::register(&registry)?)?;
    let mut instances = client
        .describe_db_instances(&Params::new())
        .await
        .map_err(|e| {
            Failure::Runtime(anyhow::anyhow!(
                "{e}; nothing was written (leave out --online to write a config with a name placeholder instead)"
            ))
        })?;
    instances.sort_by(|a, b| {
        (&a.instance_name, &a.instance_uuid).cmp(&(&b.instance_name, &b.instance_uuid))
    });
    Ok(Listed {
        instances,
        at: crate::clock::wall_now()
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
    })
}

/// The whole file.
pub(crate) fn render(t: &Template) -> String {
    let mut out = String::new();
    header(&mut out);
    cds_section(&mut out, t);
    state_and_destinations(&mut out);
    policy_section(&mut out, t.listed.as_ref());
    out
}

fn header(out: &mut String) {
    let _ = write!(
        out,
        "\
# rdbvault configuration, written by `rdbvault init` (rdbvault {version}).
# A starting point that passes `rdbvault check-config` as it is. Edit the lines marked EDIT,
# then check it again:
#   rdbvault -c <this file> check-config            # offline: schema, cron, next runs
#   rdbvault -c <this file> check-config --online   # also the API keys, the instances, the destination
# Every key, with its default and meaning: config/rdbvault.example.yaml in rdbvault's source.
# Durations: 30s 10m 6h 7d; sizes: 16MiB 1GiB. Relative paths are taken from the directory of
# this file, wherever rdbvault is started. Unknown keys are errors, so a typo never goes unseen.

",
        version = env!("CARGO_PKG_VERSION")
    );
}

fn cds_section(out: &mut String, t: &Template) {
    out.push_str("cds:\n");
    match &t.api {
        Api::Region(region) => {
            let _ = writeln!(
                out,
                "  # EDIT: your account's API region: mainland (中国大陆), asia (亚太地区) or us (欧美地区).\n  \
# To name the API by URL instead, replace `region` with `endpoint: https://...`.\n  \
region: {region}"
            );
        }
        Api::Endpoint(url) => {
            let _ = writeln!(
                out,
                "  # The API, as given to init --endpoint; `region: mainland | asia | us` names the\n  \
# provider's own endpoints instead.\n  \
endpoint: {}",
                yaml_quote(url)
            );
        }
    }
    out.push_str(
        "  # The API keys come from CDS_ACCESS_KEY_ID / CDS_ACCESS_KEY_SECRET in the environment, unless
  # these keys name files holding them (readable by rdbvault only: a file every user can read is
  # refused). Under the systemd unit (LoadCredential=) write $CREDENTIALS_DIRECTORY/cds_access_key_id
  # and $CREDENTIALS_DIRECTORY/cds_access_key_secret.
",
    );
    for (key, value, example) in [
        (
            "access_key_id_file",
            &t.key_id_file,
            "/etc/rdbvault/credentials/cds_access_key_id",
        ),
        (
            "access_key_secret_file",
            &t.key_secret_file,
            "/etc/rdbvault/credentials/cds_access_key_secret",
        ),
    ] {
        let _ = match value {
            Some(path) => writeln!(out, "  {key}: {}", yaml_quote(path)),
            None => writeln!(out, "  # {key}: {example}"),
        };
    }
    out.push('\n');
}

fn state_and_destinations(out: &mut String) {
    let _ = write!(
        out,
        "\
state:
  # The job journal (SQLite, created 0600 when first needed). Under the systemd unit:
  # /var/lib/rdbvault/rdbvault.db (the unit's StateDirectory; it cannot write beside /etc).
  path: rdbvault.db

destinations:
  # EDIT: where the copies go. `{ARCHIVE_DIR}` is a directory beside this file; it must exist and be
  # writable by rdbvault (mkdir -m 700 {ARCHIVE_DIR}). Under the systemd unit: /var/lib/rdbvault/archive.
  {DESTINATION}:
    type: file
    path: {ARCHIVE_DIR}
  # Or an S3 bucket (AWS, or any S3-compatible store with `endpoint`): uncomment, fill in, and
  # set the policy's `destination: s3`. Its keys: these two files, else AWS_ACCESS_KEY_ID /
  # AWS_SECRET_ACCESS_KEY, else AWS_PROFILE (`credentials:` in the example config says more).
  # s3:
  #   type: s3
  #   bucket: redis-backups
  #   prefix: rdbvault/                         # object keys start with this
  #   region: us-east-1
  #   endpoint: https://s3.example.com          # omit for AWS
  #   path_style: true                          # most S3-compatible stores need it
  #   access_key_id_file: /etc/rdbvault/credentials/s3_access_key_id
  #   secret_access_key_file: /etc/rdbvault/credentials/s3_secret_access_key

"
    );
}

fn policy_section(out: &mut String, listed: Option<&Listed>) {
    let _ = write!(
        out,
        "\
policies:
  - name: {POLICY}                   # part of object keys and metric labels: A-Z a-z 0-9 - _ .
    schedule:
      cron: \"{CRON}\"          # every day at 02:30 in `timezone`
      # {TIMEZONE} rather than UTC: CDS is run from China and its mainland region keeps China
      # time (the console and the API's own times, which cds.time_zone reads, are Beijing time),
      # so 02:30 is the quiet hour of a service whose users are in China; and China has no
      # daylight saving time, so no run is ever skipped or doubled. For instances that serve
      # another part of the world, use their IANA zone (America/New_York, Europe/Berlin) or UTC.
      timezone: {TIMEZONE}
      jitter: 10m                 # each instance starts at its own fixed offset in 0-10m, not all at once
      catch_up: latest            # after downtime, the latest missed run is made up once
    instances:                    # re-resolved through DescribeDBInstances at every run
"
    );
    match listed {
        None => out.push_str(
            "      # EDIT: which instances to back up: `- name: \"glob\"` on InstanceName, `- uuid: ...` or
      # `- ip: ...`. `rdbvault api DescribeDBInstances` lists them; `rdbvault init --online`
      # writes them here.
      - name: \"prod-*\"
",
        ),
        Some(listed) => instance_selectors(out, listed),
    }
    let _ = write!(
        out,
        "    destination: {DESTINATION}
    retention:                    # only verified copies count; a failed run counts for nothing
      # At the destination: the newest copy of each of the last 7 days and of the last 4 weeks,
      # and never fewer than 3 verified copies, whatever the rules say.
      destination: {{ keep_daily: 7, keep_weekly: 4, min_verified: 3 }}
      # Without `provider:` rdbvault never deletes backups at CDS; `provider: {{ keep_last: 2 }}`
      # would delete its own older ones there (never those made by people or by CDS itself).
"
    );
}

/// One `uuid:` selector per listed instance, its name, address and type in a comment. An
/// instance whose uuid the config would refuse (not a UUID) or that is listed twice becomes a
/// comment only; with no selectable instance the name placeholder stays, so the file is valid.
fn instance_selectors(out: &mut String, listed: &Listed) {
    let n = listed.instances.len();
    let _ = writeln!(
        out,
        "      # The {n} instance{} DescribeDBInstances listed at {}. Delete the lines of those\n      \
# not to back up, or select by name instead: - name: \"prod-*\"",
        if n == 1 { "" } else { "s" },
        listed.at
    );
    let mut seen = std::collections::HashSet::new();
    let mut selected = 0;
    for i in &listed.instances {
        let uuid = &i.instance_uuid;
        let about = describe_instance(i);
        if uuid.trim() != uuid || uuid::Uuid::parse_str(uuid).is_err() {
            let _ = writeln!(
                out,
                "      # left out: its InstanceUuid {} is not a UUID: {about}",
                comment_text(uuid)
            );
        } else if !seen.insert(uuid.to_ascii_lowercase()) {
            let _ = writeln!(out, "      # left out: listed twice: {about}");
        } else {
            let _ = writeln!(out, "      - uuid: {}   # {about}", yaml_quote(uuid));
            selected += 1;
        }
    }
    if selected == 0 {
        let _ = writeln!(
            out,
            "      # EDIT: no instance could be listed by uuid; this placeholder selects by name.\n      \
- name: \"{NAME_PLACEHOLDER}\""
        );
    }
}

/// `name (ip, type version[, status S])` for a comment, every part from the provider made safe.
fn describe_instance(i: &Instance) -> String {
    let mut details = Vec::new();
    if !i.ip.is_empty() {
        details.push(comment_text(&i.ip));
    }
    let kind = [i.sub_product_name.as_str(), i.version.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| comment_text(s))
        .collect::<Vec<_>>()
        .join(" ");
    if !kind.is_empty() {
        details.push(kind);
    }
    if !i.status.is_empty() && i.status != "RUNNING" {
        details.push(format!("status {}", comment_text(&i.status)));
    }
    let name = if i.instance_name.is_empty() {
        "(no name)".to_string()
    } else {
        comment_text(&i.instance_name)
    };
    format!("{name} ({})", details.join(", "))
}

/// `s` as a double-quoted YAML scalar that reads back as exactly `s`, on one line: `"` and `\`
/// escaped, every line break (including NEL, LS and PS, which YAML 1.1 parsers break lines on)
/// and every control character as an escape sequence, and the invisible characters that could
/// make a comment or value read differently from what it holds (zero-width, bidirectional
/// overrides, BOM, noncharacters) as `\uXXXX`.
pub(crate) fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02X}", u32::from(c));
            }
            c if is_invisible(c) && u32::from(c) > 0xFFFF => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
            c if is_invisible(c) => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Format characters and noncharacters that display as nothing (or reorder what follows).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}' | '\u{1160}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFF}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// A provider value for a comment: as it is when it is plainly harmless (letters of any
/// script, digits, ` -_.:/+@`, no space at either end), else [`yaml_quote`]d; at most
/// [`COMMENT_MAX_CHARS`] characters of it, with `…` when cut.
pub(crate) fn comment_text(s: &str) -> String {
    let mut cut: String = s.chars().take(COMMENT_MAX_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    let plain = !cut.is_empty()
        && cut.trim() == cut
        && cut
            .chars()
            .all(|c| (c.is_alphanumeric() && !is_invisible(c)) || " -_.:/+@…".contains(c));
    if plain { cut } else { yaml_quote(&cut) }
}

/// A path for a command line the user can paste: as it is when it has no shell
/// metacharacters, else in single quotes.
fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+=:,@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What was written and the next steps, with paste-able commands.
fn summary(target: &Path, cfg: &Config, t: &Template) -> String {
    let file = shell_quote(&target.display().to_string());
    let mut out = String::new();
    let _ = writeln!(out, "wrote {} (mode 0600)", target.display());
    let _ = writeln!(
        out,
        "  cds:         {}",
        crate::cds::client::redis_base_url(&cfg.cds.endpoint)
    );
    let instances = match &t.listed {
        None => format!("name \"{NAME_PLACEHOLDER}\" (a placeholder: edit it)"),
        Some(l) => {
            let n = cfg.policies.first().map_or(0, |p| {
                p.instances
                    .iter()
                    .filter(|s| matches!(s, config::Selector::Uuid(_)))
                    .count()
            });
            format!(
                "{n} by uuid, of the {} DescribeDBInstances listed",
                l.instances.len()
            )
        }
    };
    let _ = writeln!(
        out,
        "  policy:      {POLICY}, every day at 02:30 {TIMEZONE}; instances: {instances}"
    );
    let archive = archive_path(cfg);
    let _ = writeln!(
        out,
        "  destination: {DESTINATION}, the directory {}{}",
        archive.display(),
        if archive.is_dir() {
            ""
        } else {
            " (not there yet)"
        }
    );
    let _ = writeln!(
        out,
        "  retention:   keep_daily 7, keep_weekly 4, min_verified 3"
    );
    next_steps(&mut out, &file, &archive, t);
    out
}

fn archive_path(cfg: &Config) -> PathBuf {
    cfg.destinations
        .get(DESTINATION)
        .and_then(|d| match &d.kind {
            config::DestinationKind::File(f) => Some(f.path.clone()),
            _ => None,
        })
        .unwrap_or_else(|| PathBuf::from(ARCHIVE_DIR))
}

fn next_steps(out: &mut String, file: &str, archive: &Path, t: &Template) {
    out.push_str("next steps:\n");
    let mut steps = Vec::new();
    steps.push(match t.listed {
        None => format!(
            "edit {file}: the lines marked EDIT (the API region, which instances, where copies go)"
        ),
        Some(_) => {
            format!("edit {file}: keep the instances to back up; check where copies go (EDIT)")
        }
    });
    if !archive.is_dir() {
        steps.push(format!(
            "mkdir -m 700 {}",
            shell_quote(&archive.display().to_string())
        ));
    }
    let missing: Vec<_> = [&t.key_id_file, &t.key_secret_file]
        .into_iter()
        .flatten()
        .filter(|f| !Path::new(f).exists())
        .map(|f| shell_quote(f))
        .collect();
    if !missing.is_empty() {
        steps.push(format!(
            "put each key in its file, readable by rdbvault only: printf %s \"$KEY\" | install -m 0600 /dev/stdin FILE   ({})",
            missing.join(", ")
        ));
    }
    if t.key_id_file.is_none() || t.key_secret_file.is_none() {
        steps.push(match t.listed {
            None => "export CDS_ACCESS_KEY_ID=... CDS_ACCESS_KEY_SECRET=...   (or name key files: cds.access_key_id_file / cds.access_key_secret_file)",
            Some(_) => "keep CDS_ACCESS_KEY_ID / CDS_ACCESS_KEY_SECRET exported where rdbvault runs   (or name key files: cds.access_key_id_file / cds.access_key_secret_file)",
        }.to_string());
    }
    steps.push(format!(
        "rdbvault -c {file} check-config --online    # the keys, the instances, the destination"
    ));
    steps.push(format!(
        "rdbvault -c {file} backup-now --policy {POLICY}   # one backup now; then `rdbvault -c {file} run`, the daemon"
    ));
    for (n, s) in steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {s}", n + 1);
    }
    let _ = writeln!(
        out,
        "For the systemd unit, see README \"Install and operate\": it reads /etc/rdbvault/rdbvault.yaml as a\n\
dynamic user, so install the file there readable by it (it names key files, never keys):\n  \
sudo install -D -m 0644 {file} /etc/rdbvault/rdbvault.yaml"
    );
}

#[cfg(test)]
mod tests;

//! The configuration: the YAML schema of docs/product.md §2, loaded into typed values.
//!
//! Loading has two steps:
//! 1. serde reads the file into [`raw`] structs (`deny_unknown_fields` everywhere, so a typo is
//!    an error, never a silently ignored key). Syntax and shape errors stop here, located by
//!    serde at their line and column.
//! 2. One validation pass (`validate`) turns every value into its type (durations, sizes, cron,
//!    timezones, URLs, addresses) and checks cross-references. It reports *every* problem, each
//!    with `file:line:column` (from [`locate`]) and its YAML path.
//!
//! This file owns loading: reading the file, the serde step and its messages, the error type,
//! and how paths written in the file are resolved. The validated types live in `model` and the
//! validation pass in `validate`; both are re-exported from here, so users name
//! `config::Config`, `config::Policy` and so on.
//!
//! Credentials are not read here: see [`credentials`]; commands that talk to the API load them.
//!
//! Every path in the file (`state.path`, a file destination's `path`, the `*_file` keys) comes
//! out absolute: a relative one is resolved from the config file's directory ([`resolve_path`]),
//! so no user of [`Config`] ever depends on the working directory.

pub mod credentials;
pub mod locate;
mod model;
pub mod raw;
pub mod schedule;
pub mod units;
mod validate;
pub use validate::service::postgres_url_problem;

pub use model::{
    CatchUp, CdsConfig, Config, DEFAULT_DOWNLOAD_MIN_RATE, DEFAULT_DOWNLOAD_RATE_WINDOW,
    Destination, DestinationKind, DownloadRoute, DrillConfig, EventKind, FileDestination,
    HttpConfig, KeepRules, Limits, LogConfig, LogFormat, NotifyKind, NotifyTarget, Policy,
    Retention, S3_MAX_OBJECT_SIZE, S3Credentials, S3Destination, Schedule, Selector,
    ServerSideEncryption, StateConfig, VerifyConfig, redacted_url,
};
use raw::RawConfig;
pub use schedule::CronExpr;
use std::fmt;
use std::path::{Path, PathBuf};

/// The default config file when neither `-c` nor `$RDBVAULT_CONFIG` is given.
pub const DEFAULT_PATH: &str = "./rdbvault.yaml";

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// YAML path such as `policies[0].schedule.cron`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

/// Why a config could not be loaded: every problem found, all in one file.
#[derive(Debug, Clone)]
pub struct Errors {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        if self.problems.len() > 1 {
            writeln!(f, "{file}: {} problems:", self.problems.len())?;
        }
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if self.problems.len() > 1 {
                write!(f, "  ")?;
            }
            write!(f, "{file}")?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
                if let Some(col) = p.column {
                    write!(f, ":{col}")?;
                }
            }
            if !p.path.is_empty() {
                write!(f, ": {}", p.path)?;
            }
            write!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

/// Reads and validates a config file.
///
/// # Errors
/// Every problem found, with its location; an unreadable file is one problem.
pub fn load(path: &Path) -> Result<Config, Errors> {
    let text = std::fs::read_to_string(path).map_err(|e| Errors {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: unreadable(path, &e),
        }],
    })?;
    parse(&text, path)
}

/// Why a config file cannot be read, and what to pass instead.
fn unreadable(path: &Path, e: &std::io::Error) -> String {
    if path.is_dir() {
        let inside = path.join("rdbvault.yaml");
        return format!(
            "this is a directory, not a config file; pass the file itself, e.g. -c {}",
            inside.display()
        );
    }
    format!("cannot read the config file: {e}; pass -c FILE or set RDBVAULT_CONFIG")
}

/// Parses and validates config text; `source` is used in messages.
///
/// # Errors
/// See [`load`].
pub fn parse(text: &str, source: &Path) -> Result<Config, Errors> {
    let fail = |problems| Errors {
        file: source.to_path_buf(),
        problems,
    };
    let raw: RawConfig = if text.trim().is_empty() {
        return Err(fail(vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: "the config file is empty; start from config/rdbvault.example.yaml".into(),
        }]));
    } else {
        deserialize(text, source)?
    };
    let index = locate::Index::build(text);
    validate::config(raw, &index, source).map_err(fail)
}

/// Reads only what the API client needs (the `cds` section) from a config file, still refusing
/// unknown keys anywhere in it. A missing file that the user did not name explicitly gives the
/// defaults, so `rdbvault api` works with nothing but the environment.
///
/// # Errors
/// See [`load`].
pub fn load_cds(path: &Path, explicit: bool) -> Result<CdsConfig, Errors> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
        Err(_) => return load(path).map(|c| c.cds),
    };
    let raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        deserialize(&text, path)?
    };
    let index = locate::Index::build(&text);
    validate::cds(&raw.cds, &index, path).map_err(|problems| Errors {
        file: path.to_path_buf(),
        problems,
    })
}

fn deserialize(text: &str, source: &Path) -> Result<RawConfig, Errors> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (Some(l.line()), Some(l.column())))
            .unwrap_or((None, None));
        // "." is the document root; "?" means serde never got a path (a YAML syntax error).
        let path = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        let mut message = strip_location(&inner.to_string());
        // serde_yaml_ng prefixes its own (partial) path; we print the full one in front.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.contains(' ')
            && path.starts_with(head)
        {
            message = rest.to_string();
        }
        // YAML indents with spaces only; its parser reports a tab where it gives up, which
        // may be a line after the one that has it.
        let (line, column, message, path) = match first_tab(text) {
            // The YAML path where the parser gave up names the tab's place only when it gave
            // up on the tab's own line; a tab further up broke the structure before it, and
            // the line alone is the location.
            Some((tab_line, tab_column)) if line.is_none_or(|l| tab_line <= l) => (
                Some(tab_line),
                Some(tab_column),
                format!(
                    "line {tab_line} has a tab character; YAML indents with spaces only (the parser said: {message})"
                ),
                if line == Some(tab_line) {
                    // `policies[0].?`: the `?` is the key the tab kept it from reading.
                    path.trim_end_matches(".?").to_string()
                } else {
                    String::new()
                },
            ),
            _ => (line, column, explain_serde_message(&message), path),
        };
        Errors {
            file: source.to_path_buf(),
            problems: vec![Problem {
                line,
                column,
                path,
                message,
            }],
        }
    })
}

/// The line and column (1-based) of the first tab character in the indentation or between
/// tokens of a YAML text, outside quoted strings and comments.
fn first_tab(text: &str) -> Option<(usize, usize)> {
    for (n, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or(line);
        let mut quote: Option<char> = None;
        for (col, c) in code.chars().enumerate() {
            match (quote, c) {
                (None, '#') if col == 0 => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '\t') => return Some((n + 1, col + 1)),
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tab_tests {
    use super::*;

    #[test]
    fn a_tab_is_found_where_it_is_and_not_inside_quotes_or_comments() {
        assert_eq!(first_tab("a:\n  b: 1\n\tc: 2\n"), Some((3, 1)));
        assert_eq!(first_tab("a: \"x\ty\"\n# \tnote\nb: 1 # \tnote\n"), None);
        assert_eq!(first_tab("a:\n  b:\t1\n"), Some((2, 5)));
        let err = parse(
            "cds:\n  region: mainland\ndestinations:\n\tlocal: {}\n",
            Path::new("t.yaml"),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("t.yaml:4:1") && text.contains("line 4 has a tab"),
            "{text}"
        );
    }
}

/// serde_yaml_ng appends " at line L column C"; we print the location in front instead.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Adds a hint to serde's terse messages where the fix is known.
fn explain_serde_message(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message} (unknown keys are errors, so a typo cannot silently disable a rule)")
    } else {
        message.to_string()
    }
}

/// The directory relative paths in a config file are resolved from: the file's own directory
/// (as named, symlinks not followed), made absolute. `None` only if the working directory is
/// gone, in which case relative paths stay as written.
pub fn base_dir(source: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(source).ok()?;
    absolute.parent().map(Path::to_path_buf)
}

/// A path written in the config, made absolute: a relative one is taken from `base` (the config
/// file's directory, [`base_dir`]), never from the process's working directory, so every command
/// finds the same state DB, archive and key files wherever it is started. Absolute paths, paths
/// starting with `$CREDENTIALS_DIRECTORY` (expanded when the file is read) and SQLite's
/// `:memory:` are left as they are. `.` components are dropped for readable messages.
pub fn resolve_path(base: Option<&Path>, path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let keep = path.is_absolute()
        || text.starts_with("$CREDENTIALS_DIRECTORY")
        || text.starts_with("${CREDENTIALS_DIRECTORY}")
        || text == ":memory:"
        || path.as_os_str().is_empty();
    match base {
        Some(base) if !keep => base
            .join(path)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect(),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// The smallest valid config, for tests to build on (here and in `validate`).
    pub(crate) const MINIMAL: &str = r#"
destinations:
  local: { type: file, path: /tmp/x }
policies:
  - name: p
    schedule: { cron: "@daily" }
    instances: [ { name: "prod-*" } ]
    destination: local
    retention: { destination: { keep_last: 3 } }
"#;

    #[test]
    fn unknown_key_is_located_by_serde() {
        let text = MINIMAL.replace("retention:", "retension:");
        let err = parse(&text, Path::new("t.yaml")).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let p = &err.problems[0];
        assert_eq!(p.path, "policies[0].retension");
        assert!(
            p.message.contains("unknown field `retension`"),
            "{}",
            p.message
        );
        assert_eq!(p.line, Some(9));
    }

    #[test]
    fn relative_paths_are_resolved_from_the_config_files_directory() {
        let text = r#"
cds:
  access_key_id_file: keys/cds_id
  access_key_secret_file: $CREDENTIALS_DIRECTORY/cds_secret
state: { path: ./state/rdbvault.db }
http: { token_file: ../token }
destinations:
  local: { type: file, path: archive }
  abs: { type: file, path: /srv/archive }
  s3: { type: s3, bucket: b, access_key_id_file: s3_id, secret_access_key_file: /run/s3_secret }
policies:
  - name: p
    schedule: { cron: "@daily" }
    instances: [ { name: "prod-*" } ]
    destination: local
    retention: { destination: { keep_last: 3 } }
"#;
        let c = parse(text, Path::new("/etc/rdbvault/conf.yaml")).unwrap();
        let etc = Path::new("/etc/rdbvault");
        assert_eq!(c.state.path, etc.join("state/rdbvault.db"));
        assert_eq!(c.http.token_file, Some(etc.join("../token")));
        assert_eq!(c.cds.access_key_id_file, Some(etc.join("keys/cds_id")));
        assert_eq!(
            c.cds.access_key_secret_file,
            Some(PathBuf::from("$CREDENTIALS_DIRECTORY/cds_secret")),
            "expanded when read, never joined"
        );
        let file = |name: &str| match &c.destinations[name].kind {
            DestinationKind::File(f) => f.path.clone(),
            DestinationKind::S3(_) => unreachable!(),
        };
        assert_eq!(file("local"), etc.join("archive"));
        assert_eq!(file("abs"), PathBuf::from("/srv/archive"));
        let DestinationKind::S3(s3) = &c.destinations["s3"].kind else {
            unreachable!()
        };
        assert_eq!(s3.access_key_id_file, Some(etc.join("s3_id")));
        assert_eq!(
            s3.secret_access_key_file,
            Some(PathBuf::from("/run/s3_secret"))
        );
        // A config named relatively resolves from where it is, made absolute.
        let c = parse(text, Path::new("sub/conf.yaml")).unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(c.state.path, here.join("sub/state/rdbvault.db"));
        // The `cds` section alone (rdbvault api) follows the same rule.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("c.yaml");
        std::fs::write(&conf, text).unwrap();
        let cds = load_cds(&conf, true).unwrap();
        assert_eq!(cds.access_key_id_file, Some(dir.path().join("keys/cds_id")));
    }

    #[test]
    fn paths_that_are_not_relative_to_the_file_are_left_as_written() {
        let base = Some(Path::new("/etc/rdbvault"));
        for kept in [
            "/srv/x",
            "$CREDENTIALS_DIRECTORY/k",
            "${CREDENTIALS_DIRECTORY}/k",
            ":memory:",
            "",
        ] {
            assert_eq!(resolve_path(base, Path::new(kept)), PathBuf::from(kept));
        }
        assert_eq!(
            resolve_path(base, Path::new("./a/./b")),
            PathBuf::from("/etc/rdbvault/a/b")
        );
        // Without a base (the working directory is gone) a relative path stays as written.
        assert_eq!(resolve_path(None, Path::new("a")), PathBuf::from("a"));
    }

    #[test]
    fn an_empty_or_unreadable_file_is_one_problem_saying_what_to_do() {
        let err = parse(" \n", Path::new("t.yaml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yaml: the config file is empty; start from config/rdbvault.example.yaml"
        );
        let err = load(Path::new("/nonexistent/rdbvault.yaml")).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let text = err.to_string();
        assert!(
            text.starts_with("/nonexistent/rdbvault.yaml: cannot read"),
            "{text}"
        );
        assert!(
            text.ends_with("pass -c FILE or set RDBVAULT_CONFIG"),
            "{text}"
        );
    }

    #[test]
    fn the_cds_section_alone_needs_no_file_unless_one_was_named() {
        let missing = Path::new("/nonexistent/rdbvault.yaml");
        let cds = load_cds(missing, false).unwrap();
        assert_eq!(cds.timeout, Duration::from_secs(30));
        assert!(load_cds(missing, true).is_err());
        // Unknown keys anywhere in the file are still refused.
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("c.yaml");
        std::fs::write(&conf, "policies: [ { nam: p } ]\n").unwrap();
        let err = load_cds(&conf, true).unwrap_err();
        assert_eq!(err.problems[0].path, "policies[0].nam");
    }

    #[test]
    fn serde_messages_lose_their_trailing_location_and_gain_hints() {
        assert_eq!(
            strip_location("invalid type: integer `3` at line 2 column 6"),
            "invalid type: integer `3`"
        );
        assert_eq!(strip_location("no location"), "no location");
        assert!(explain_serde_message("unknown field `x`").contains("typo cannot silently"));
        assert_eq!(explain_serde_message("invalid type"), "invalid type");
    }

    #[test]
    fn one_problem_is_one_line_and_several_are_counted_and_indented() {
        let problem = |line, column, path: &str| Problem {
            line,
            column,
            path: path.into(),
            message: "bad".into(),
        };
        let one = Errors {
            file: PathBuf::from("t.yaml"),
            problems: vec![problem(Some(3), Some(12), "cds.timeout")],
        };
        assert_eq!(one.to_string(), "t.yaml:3:12: cds.timeout: bad");
        let two = Errors {
            file: PathBuf::from("t.yaml"),
            problems: vec![problem(Some(3), None, "a"), problem(None, None, "")],
        };
        assert_eq!(
            two.to_string(),
            "t.yaml: 2 problems:\n  t.yaml:3: a: bad\n  t.yaml: bad"
        );
    }
}

/// How next-step hints spell a command: `rdbvault -c /abs/path/rdbvault.yaml` when the config
/// was named (`-c` or `$RDBVAULT_CONFIG`), so a hint pasted in another directory still finds
/// it; plain `rdbvault` otherwise. Set once by the command line's entry.
static INVOCATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records the config the command line named, for [`invocation`].
pub fn set_invocation(named_config: Option<&Path>) {
    let prefix = match named_config {
        Some(p) => {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let text = abs.display().to_string();
            // Quoted for a POSIX shell when it has anything but plain path characters.
            if text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+,@".contains(c))
            {
                format!("rdbvault -c {text}")
            } else {
                format!("rdbvault -c '{}'", text.replace('\'', "'\\''"))
            }
        }
        None => "rdbvault".to_string(),
    };
    let _ = INVOCATION.set(prefix);
}

/// How a hint starts a command: `rdbvault`, or `rdbvault -c CONFIG` when one was named.
pub fn invocation() -> &'static str {
    INVOCATION.get().map_or("rdbvault", String::as_str)
}

//! `api ACTION [KEY=VALUE ...]`: one signed CDS API call, printed as JSON.
//!
//! The command line is checked whole before anything is sent, and every problem is named at
//! once: an argument that is not `KEY=VALUE`, a name the action does not take (with a "did you
//! mean"), a name given twice, a value that must be an integer, every missing required parameter
//! with what it is, `--yes`. These checks are pure functions ([`check`], [`split`],
//! [`duplicates`], [`render`]).
//!
//! A secret parameter (`CreateDBInstance`'s `Password`) is never taken from the command line,
//! where it would stay in the shell history and show in `ps`: it comes from `--password-file`
//! or `--password-stdin`, and stays a [`Secret`] until the client builds the request body. It is
//! never printed, and is masked in the answer and in an error should the server echo it.

use crate::cds::{self, Action, Client, ParamSpec, ParamType, ParamValue, Params};
use crate::config;
use crate::failure::Failure;
use crate::metrics::ApiMetrics;
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

/// Where a secret parameter's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PasswordFrom {
    /// A file only its owner can read, holding the password on one line.
    File(PathBuf),
    /// One line of standard input.
    Stdin,
}

/// `api`: validates the action and parameters before sending; a mutating action needs `--yes`;
/// the password comes from `password_file` or, with `password_stdin`, standard input.
pub async fn api(
    cds_cfg: &config::CdsConfig,
    action: &str,
    raw_params: &[String],
    yes: bool,
    password_file: Option<&Path>,
    password_stdin: bool,
) -> Result<(), Failure> {
    let action: Action = action
        .parse()
        .map_err(|e: cds::action::UnknownAction| Failure::Usage(e.to_string()))?;
    let password_from = match (password_file, password_stdin) {
        (Some(path), _) => Some(PasswordFrom::File(path.to_path_buf())),
        (None, true) => Some(PasswordFrom::Stdin),
        (None, false) => None,
    };
    let mut params = check(action, raw_params, yes, password_from.is_some())
        .map_err(|problems| Failure::Usage(render(action, &problems)))?;
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry)?;
    let client = crate::services::cds_client(cds_cfg, metrics)?;
    let password = match (password_from, secret_param(action)) {
        (Some(from), Some(spec)) => {
            let password = read_password(&from)?;
            params.insert(spec.name.to_string(), ParamValue::Secret(password.clone()));
            Some(password)
        }
        _ => None,
    };
    Client::validate(action, &params).map_err(|e| Failure::Usage(e.to_string()))?;
    let resp = client.call(action, &params).await.map_err(|e| {
        let refused = e.is_credentials();
        let message = mask(&format!("{:#}", anyhow::Error::from(e)), password.as_ref());
        // Refused keys are a credential problem (exit 2) like in every other command.
        if refused {
            Failure::Usage(message)
        } else {
            Failure::Runtime(anyhow::anyhow!(message))
        }
    })?;
    let mut answer = resp.raw;
    mask_json(&mut answer, password.as_ref());
    // cannot fail: a serde_json::Value always serialises.
    let text = serde_json::to_string_pretty(&answer).expect("JSON values serialise");
    print_answer(&text)
}

/// Prints the answer. A reader that went away (`| head`) is not a failure: the call was made.
fn print_answer(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Runtime(
            anyhow::Error::new(e).context("the call succeeded but its answer could not be printed"),
        )),
        _ => Ok(()),
    }
}

/// The action's secret parameter (`CreateDBInstance`'s `Password`), if it has one.
fn secret_param(action: Action) -> Option<&'static ParamSpec> {
    action.params().iter().find(|p| p.secret)
}

/// One thing wrong with the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// The argument at this position (from 1) has no `=` or nothing before it; the argument
    /// itself when it may be shown (never for an action that takes a secret).
    NotKeyValue {
        position: usize,
        shown: Option<String>,
    },
    /// A name the action does not take.
    Unknown(String),
    /// A name given more than once, and how many times.
    Repeated(&'static str, usize),
    /// A secret parameter given as `KEY=VALUE`.
    SecretOnCommandLine(&'static str),
    /// An integer parameter whose value is not one.
    NotInteger { name: &'static str, value: String },
    /// Every required parameter not given, in the documented order.
    Missing(Vec<&'static ParamSpec>),
    /// `--password-file` or `--password-stdin` for an action without a secret parameter.
    PasswordNotTaken,
    /// A destructive or billable action without `--yes`.
    NeedsYes,
}

/// Checks the whole command line against the action and builds its parameters (all but the
/// secret, which is read only once the rest is right).
///
/// # Errors
/// Every problem, in the order of the arguments, then the missing parameters, then the flags.
fn check(
    action: Action,
    raw: &[String],
    yes: bool,
    password_given: bool,
) -> Result<Params, Vec<Problem>> {
    let secret = secret_param(action);
    let (pairs, mut problems) = split(raw, secret.is_none());
    for name in duplicates(&pairs) {
        if let Some(spec) = action.param(name).filter(|p| !p.secret) {
            let times = pairs.iter().filter(|(k, _)| *k == name).count();
            problems.push(Problem::Repeated(spec.name, times));
        }
    }
    let mut params = Params::new();
    let mut reported = BTreeSet::new();
    for &(name, value) in &pairs {
        let Some(spec) = action.param(name) else {
            if reported.insert(name) {
                problems.push(Problem::Unknown(name.to_string()));
            }
            continue;
        };
        if spec.secret {
            if reported.insert(name) {
                problems.push(Problem::SecretOnCommandLine(spec.name));
            }
        } else if params.contains_key(name) {
            // Repeated: already reported above.
        } else if spec.ty == ParamType::Integer {
            match value.parse::<i64>() {
                Ok(i) => {
                    params.insert(name.to_string(), ParamValue::Int(i));
                }
                Err(_) => problems.push(Problem::NotInteger {
                    name: spec.name,
                    value: value.to_string(),
                }),
            }
        } else {
            params.insert(name.to_string(), ParamValue::Str(value.to_string()));
        }
    }
    // A misspelt name already says which one it means; that one is not reported missing too.
    let meant: BTreeSet<&str> = pairs
        .iter()
        .filter(|(k, _)| action.param(k).is_none())
        .filter_map(|(k, _)| action.suggest_param(k))
        .collect();
    let given = |n: &str| {
        pairs.iter().any(|(k, _)| *k == n)
            || meant.contains(n)
            || (password_given && secret.is_some_and(|s| s.name == n))
    };
    let missing = action.missing_required(given);
    if !missing.is_empty() {
        problems.push(Problem::Missing(missing));
    }
    if password_given && secret.is_none() {
        problems.push(Problem::PasswordNotTaken);
    }
    if action.is_destructive() && !yes {
        problems.push(Problem::NeedsYes);
    }
    if problems.is_empty() {
        Ok(params)
    } else {
        Err(problems)
    }
}

/// Splits `KEY=VALUE` arguments at the first `=` (a value may hold more). An argument without
/// one, or with nothing before it, is a problem, shown only if `show` (an action that takes a
/// secret never shows it: it might be the secret).
fn split(raw: &[String], show: bool) -> (Vec<(&str, &str)>, Vec<Problem>) {
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    for (i, arg) in raw.iter().enumerate() {
        match arg.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k, v)),
            _ => problems.push(Problem::NotKeyValue {
                position: i + 1,
                shown: show.then(|| arg.clone()),
            }),
        }
    }
    (pairs, problems)
}

/// The names given more than once, each once, in the order they first appear.
fn duplicates<'a>(pairs: &[(&'a str, &str)]) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    let mut twice = Vec::new();
    for &(name, _) in pairs {
        if !seen.insert(name) && !twice.contains(&name) {
            twice.push(name);
        }
    }
    twice
}

/// How to give a secret parameter.
const SECRET_HOW: &str = "give it with --password-file FILE (a file only you can read) or --password-stdin (one line piped in)";

impl Problem {
    /// What is wrong and what to do, as lines (the first one says it; the others detail it).
    fn lines(&self, action: Action) -> Vec<String> {
        let example = action
            .params()
            .iter()
            .find(|p| !p.secret)
            .map_or("InstanceUuid", |p| p.name);
        match self {
            Problem::NotKeyValue { position, shown } => {
                let what = match shown {
                    Some(arg) => format!("`{arg}`"),
                    None => format!("argument {position}"),
                };
                vec![format!(
                    "{what} is not KEY=VALUE; write e.g. {example}=VALUE"
                )]
            }
            Problem::Unknown(name) => {
                match action.suggest_param(name).and_then(|n| action.param(n)) {
                    Some(spec) if spec.secret => vec![format!(
                        "{}; and `{}` is never taken from the command line: {SECRET_HOW}",
                        action.unknown_param(name),
                        spec.name
                    )],
                    _ => vec![action.unknown_param(name)],
                }
            }
            Problem::Repeated(name, times) => vec![format!(
                "`{name}` is given {times} times; give it once (rdbvault does not guess which value you meant)"
            )],
            Problem::SecretOnCommandLine(name) => vec![format!(
                "`{name}` is never taken from the command line, where it would stay in the shell history and show in `ps`; {SECRET_HOW}. If it is a real password, remove it from your shell history"
            )],
            Problem::NotInteger { name, value } => {
                vec![format!("`{name}` must be an integer, got {value:?}")]
            }
            Problem::Missing(specs) => missing_lines(specs),
            Problem::PasswordNotTaken => vec![format!(
                "--password-file / --password-stdin: {action} takes no password (only CreateDBInstance does); remove the option"
            )],
            Problem::NeedsYes => vec![match action {
                Action::CreateDbInstance => format!(
                    "{action} buys a new instance at the provider (billed); add --yes to confirm"
                ),
                _ => format!(
                    "{action} deletes resources at the provider and cannot be undone; add --yes to confirm"
                ),
            }],
        }
    }
}

/// The missing required parameters, each with what it is.
fn missing_lines(specs: &[&ParamSpec]) -> Vec<String> {
    let meaning = |p: &ParamSpec| {
        if p.secret {
            format!("{}; {SECRET_HOW}", p.meaning)
        } else {
            p.meaning.to_string()
        }
    };
    if let [one] = specs {
        return vec![format!(
            "missing required parameter `{}`: {}",
            one.name,
            meaning(one)
        )];
    }
    let width = specs.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let how = if specs.iter().any(|p| p.secret) {
        "add each as KEY=VALUE, the password as said below"
    } else {
        "add each as KEY=VALUE"
    };
    let mut lines = vec![format!(
        "missing {} required parameters ({how}):",
        specs.len()
    )];
    lines.extend(
        specs
            .iter()
            .map(|p| format!("  {:width$}  {}", p.name, meaning(p))),
    );
    lines
}

/// The message for every problem: one line for one problem, a list for several; the accepted
/// parameters follow when a name was not one of them.
fn render(action: Action, problems: &[Problem]) -> String {
    let mut out = match problems {
        [one] => {
            let lines = one.lines(action);
            format!("{action}: {}", lines.join("\n  "))
        }
        _ => {
            let mut out = format!("{action}: {} problems; nothing was sent:", problems.len());
            for p in problems {
                out.push_str(&format!("\n  - {}", p.lines(action).join("\n    ")));
            }
            out
        }
    };
    if !action.params().is_empty() && problems.iter().any(|p| matches!(p, Problem::Unknown(_))) {
        out.push_str(&format!("\n{}", action.accepted()));
    }
    out
}

/// The largest password read; anything longer is not a password.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// Reads the password from its source.
///
/// # Errors
/// A usage failure naming the source and what to do; never the password.
fn read_password(from: &PasswordFrom) -> Result<Secret, Failure> {
    match from {
        PasswordFrom::File(path) => read_password_file(path)
            .map_err(|what| Failure::Usage(format!("--password-file {}: {what}", path.display()))),
        PasswordFrom::Stdin => read_password_stdin()
            .map_err(|what| Failure::Usage(format!("--password-stdin: {what}"))),
    }
}

/// The password in a file that only its owner can read.
fn read_password_file(path: &Path) -> Result<Secret, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it ({e}); give the file that holds the password"))?;
    if meta.is_dir() {
        return Err("is a directory; give the file that holds the password".into());
    }
    #[cfg(unix)]
    if let Some(problem) = mode_problem(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()),
        path,
    ) {
        return Err(problem);
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PASSWORD_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it ({e})"))?;
    password_from_bytes(bytes)
        .map_err(|what| format!("the file {what}; put the password alone on one line"))
}

/// The password on the first line of standard input, which must not be a terminal (it would
/// echo what is typed).
fn read_password_stdin() -> Result<Secret, String> {
    let stdin = std::io::stdin();
    if std::io::IsTerminal::is_terminal(&stdin) {
        return Err("standard input is a terminal, which would show the password; pipe it in (e.g. `pass show redis | rdbvault api CreateDBInstance ... --password-stdin`) or use --password-file FILE".into());
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(MAX_PASSWORD_BYTES + 1)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| format!("cannot read standard input ({e})"))?;
    password_from_bytes(bytes)
        .map_err(|what| format!("the line read {what}; pipe the password in on one line"))
}

/// Why a password file's mode is unsafe (group or other users can read it), with the fix.
fn mode_problem(mode: u32, path: &Path) -> Option<String> {
    let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (false, false) => return None,
        (true, false) => "its group",
        (false, true) => "every user",
        (true, true) => "its group and every user",
    };
    Some(format!(
        "can be read by {who} (mode {:o}); run `chmod 600 {}` (owned by you)",
        mode & 0o7777,
        path.display()
    ))
}

/// The password in what was read: one line, its line ending (`\n` or `\r\n`) removed, not
/// empty, UTF-8, at most [`MAX_PASSWORD_BYTES`].
///
/// # Errors
/// What is wrong with it, never its content: `is empty`, `is not UTF-8 text`, ...
fn password_from_bytes(mut bytes: Vec<u8>) -> Result<Secret, &'static str> {
    if bytes.len() as u64 > MAX_PASSWORD_BYTES {
        return Err("is longer than 4096 bytes");
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.contains(&b'\n') {
        return Err("holds more than one line");
    }
    let text = String::from_utf8(bytes).map_err(|_| "is not UTF-8 text")?;
    if text.is_empty() {
        return Err("is empty");
    }
    Ok(Secret::new(text))
}

/// The shortest secret masked inside a longer text; a shorter one is masked only where it is a
/// whole string, so masking never garbles an answer that merely contains the same letters.
const MIN_MASKED_INSIDE: usize = 4;

/// `text` with the secret (as it is, and as it looks inside a JSON string) replaced by `***`:
/// the answer or error of a server that echoes it must not print it.
fn mask(text: &str, secret: Option<&Secret>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return text.to_string();
    };
    let plain = secret.expose();
    if text == plain {
        return "***".into();
    }
    if plain.chars().count() < MIN_MASKED_INSIDE {
        return text.to_string();
    }
    // cannot fail: a string always serialises.
    let quoted = serde_json::to_string(plain).expect("strings serialise");
    let escaped = &quoted[1..quoted.len() - 1];
    text.replace(plain, "***").replace(escaped, "***")
}

/// An answer with [`mask`] applied to every string value (names and structure stay as sent).
fn mask_json(value: &mut serde_json::Value, secret: Option<&Secret>) {
    match value {
        serde_json::Value::String(s) => *s = mask(s, secret),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_json(v, secret)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| mask_json(v, secret)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn problems(action: Action, list: &[&str], yes: bool, password: bool) -> Vec<Problem> {
        check(action, &args(list), yes, password).unwrap_err()
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        let raw = args(&["Desc=a=b", "InstanceUuid=", "IP=10.0.0.1"]);
        let (pairs, problems) = split(&raw, true);
        assert_eq!(
            pairs,
            [("Desc", "a=b"), ("InstanceUuid", ""), ("IP", "10.0.0.1")]
        );
        assert!(problems.is_empty());
    }

    #[test]
    fn an_argument_without_a_key_is_shown_only_when_it_cannot_be_a_secret() {
        let raw = args(&["oops", "=value"]);
        let (_, problems) = split(&raw, true);
        assert_eq!(
            problems,
            [
                Problem::NotKeyValue {
                    position: 1,
                    shown: Some("oops".into())
                },
                Problem::NotKeyValue {
                    position: 2,
                    shown: Some("=value".into())
                }
            ]
        );
        let (_, problems) = split(&args(&["hunter2"]), false);
        let text = render(Action::CreateDbInstance, &problems);
        assert!(text.contains("argument 1 is not KEY=VALUE"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_name_given_twice_is_found_once_in_first_seen_order() {
        let pairs = [("B", "1"), ("A", "2"), ("B", "3"), ("A", "4"), ("B", "5")];
        assert_eq!(duplicates(&pairs), ["B", "A"]);
        assert!(duplicates(&[("A", "1"), ("B", "2")]).is_empty());
    }

    #[test]
    fn a_parameter_given_twice_is_an_error_naming_it() {
        let p = problems(
            Action::DescribeBackups,
            &["InstanceUuid=a", "InstanceUuid=b"],
            false,
            false,
        );
        assert_eq!(p, [Problem::Repeated("InstanceUuid", 2)]);
        let text = render(Action::DescribeBackups, &p);
        assert!(
            text.contains("`InstanceUuid` is given 2 times; give it once"),
            "{text}"
        );
    }

    #[test]
    fn a_misspelt_name_gets_a_suggestion_and_the_accepted_list() {
        let p = problems(Action::DescribeBackups, &["InstanceUUID=x"], false, false);
        assert_eq!(
            p,
            [Problem::Unknown("InstanceUUID".into())],
            "the name it means is not reported missing too"
        );
        let text = render(Action::DescribeBackups, &p);
        assert!(
            text.contains("unknown parameter `InstanceUUID` (did you mean `InstanceUuid`? names are case-sensitive)"),
            "{text}"
        );
        assert!(
            text.ends_with("\nDescribeBackups takes InstanceUuid (all required)"),
            "{text}"
        );
        let p = problems(Action::DescribeBackups, &["instanceuuid=x"], false, false);
        assert!(render(Action::DescribeBackups, &p).contains("did you mean `InstanceUuid`?"));
    }

    #[test]
    fn every_missing_required_parameter_is_reported_at_once_with_its_meaning() {
        let p = problems(
            Action::CreateDbInstance,
            &["RegionId=CN_Beijing_A", "InstanceName=n"],
            true,
            false,
        );
        let names: Vec<_> = match &p[..] {
            [Problem::Missing(specs)] => specs.iter().map(|s| s.name).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names, ["VdcId", "BasePipeId", "PaasGoodsId", "Password"]);
        let text = render(Action::CreateDbInstance, &p);
        assert!(
            text.starts_with(
                "CreateDBInstance: missing 4 required parameters (add each as KEY=VALUE, the password as said below):\n"
            ),
            "{text}"
        );
        for line in [
            "  VdcId        the virtual data centre (VDC) the instance goes in",
            "  BasePipeId   the VDC's private network the instance joins",
            "  PaasGoodsId  the offer to buy",
            "  Password     the new instance's Redis password; give it with --password-file FILE",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn one_missing_parameter_fits_on_one_line() {
        let p = problems(Action::DownloadBackup, &["InstanceUuid=u"], false, false);
        assert_eq!(
            render(Action::DownloadBackup, &p),
            "DownloadBackup: missing required parameter `BackupId`: the backup's id (DescribeBackups InstanceUuid=<uuid> lists them)"
        );
    }

    #[test]
    fn a_password_on_the_command_line_is_refused_without_showing_it() {
        let p = problems(
            Action::CreateDbInstance,
            &[
                "RegionId=r",
                "VdcId=v",
                "BasePipeId=p",
                "InstanceName=n",
                "PaasGoodsId=1",
                "Password=hunter2-cli",
            ],
            true,
            false,
        );
        assert_eq!(p, [Problem::SecretOnCommandLine("Password")]);
        let text = render(Action::CreateDbInstance, &p);
        assert!(text.contains("--password-file FILE"), "{text}");
        assert!(text.contains("--password-stdin"), "{text}");
        assert!(!text.contains("hunter2-cli"), "{text}");
    }

    #[test]
    fn a_password_from_a_file_or_stdin_counts_as_given_and_is_not_in_the_params() {
        let params = check(
            Action::CreateDbInstance,
            &args(&[
                "RegionId=r",
                "VdcId=v",
                "BasePipeId=p",
                "InstanceName=n",
                "PaasGoodsId=12923",
                "Amount=2",
            ]),
            true,
            true,
        )
        .unwrap();
        assert_eq!(params["PaasGoodsId"], ParamValue::Int(12923));
        assert_eq!(params["Amount"], ParamValue::Int(2));
        assert!(!params.contains_key("Password"));
    }

    #[test]
    fn every_problem_is_named_together_and_nothing_is_sent() {
        let p = problems(
            Action::DeleteBackup,
            &[
                "InstanceUuid=a",
                "BakupId=b",
                "InstanceUuid=c",
                "loose",
                "Colour=red",
            ],
            false,
            true,
        );
        assert_eq!(
            p,
            [
                Problem::NotKeyValue {
                    position: 4,
                    shown: Some("loose".into())
                },
                Problem::Repeated("InstanceUuid", 2),
                Problem::Unknown("BakupId".into()),
                Problem::Unknown("Colour".into()),
                Problem::PasswordNotTaken,
                Problem::NeedsYes,
            ]
        );
        let text = render(Action::DeleteBackup, &p);
        assert!(
            text.starts_with("DeleteBackup: 6 problems; nothing was sent:\n  - "),
            "{text}"
        );
        assert!(text.contains("(did you mean `BackupId`?)"), "{text}");
        assert!(text.contains("add --yes to confirm"), "{text}");
        assert!(
            text.ends_with("\nDeleteBackup takes InstanceUuid, BackupId (all required)"),
            "{text}"
        );
    }

    #[test]
    fn a_misspelt_password_name_says_how_to_give_the_password() {
        let p = problems(
            Action::CreateDbInstance,
            &["password=hunter2-lc"],
            true,
            false,
        );
        let text = render(Action::CreateDbInstance, &p);
        assert!(
            text.contains("unknown parameter `password` (did you mean `Password`? names are case-sensitive); and `Password` is never taken from the command line: give it with --password-file FILE"),
            "{text}"
        );
        assert!(!text.contains("hunter2-lc"), "{text}");
    }

    #[test]
    fn an_action_without_parameters_says_so_once() {
        let p = problems(Action::DescribeRegions, &["RegionId=x"], false, false);
        assert_eq!(
            render(Action::DescribeRegions, &p),
            "DescribeRegins: unknown parameter `RegionId`: DescribeRegins takes none"
        );
    }

    #[test]
    fn an_integer_parameter_must_hold_an_integer() {
        let p = problems(Action::CreateDbInstance, &["PaasGoodsId=ten"], true, true);
        assert_eq!(
            p[0],
            Problem::NotInteger {
                name: "PaasGoodsId",
                value: "ten".into()
            }
        );
        assert!(
            render(Action::CreateDbInstance, &p)
                .contains("`PaasGoodsId` must be an integer, got \"ten\"")
        );
    }

    #[test]
    fn a_password_file_readable_by_group_or_others_is_refused_with_the_chmod() {
        let path = Path::new("/run/pw");
        assert_eq!(mode_problem(0o100600, path), None);
        assert_eq!(mode_problem(0o100400, path), None);
        assert_eq!(
            mode_problem(0o100640, path).unwrap(),
            "can be read by its group (mode 640); run `chmod 600 /run/pw` (owned by you)"
        );
        assert!(mode_problem(0o100604, path).unwrap().contains("every user"));
        assert!(
            mode_problem(0o100644, path)
                .unwrap()
                .contains("its group and every user")
        );
    }

    #[test]
    fn the_password_is_one_line_with_its_line_ending_removed() {
        let pw = |b: &[u8]| password_from_bytes(b.to_vec()).map(|s| s.expose().to_string());
        assert_eq!(
            pw(b"s3 cret \n").unwrap(),
            "s3 cret ",
            "inner and trailing blanks are kept"
        );
        assert_eq!(pw(b"s3cret\r\n").unwrap(), "s3cret");
        assert_eq!(pw(b"s3cret").unwrap(), "s3cret");
        assert_eq!(pw(b"\n"), Err("is empty"));
        assert_eq!(pw(b""), Err("is empty"));
        assert_eq!(pw(b"a\nb\n"), Err("holds more than one line"));
        assert_eq!(pw(b"\xff\n"), Err("is not UTF-8 text"));
        assert_eq!(pw(&[b'x'; 4097]), Err("is longer than 4096 bytes"));
    }

    #[test]
    fn an_echoed_password_is_masked_in_what_is_printed() {
        let pw = Secret::new("p\"w-long");
        assert_eq!(
            mask(r#"body {"Password": "p\"w-long"}: bad p"w-long"#, Some(&pw)),
            r#"body {"Password": "***"}: bad ***"#
        );
        assert_eq!(mask("anything", None), "anything");
        let mut answer =
            serde_json::json!({"Data": {"Password": "p\"w-long", "Echo": ["x p\"w-long y", 7]}});
        mask_json(&mut answer, Some(&pw));
        assert_eq!(
            answer,
            serde_json::json!({"Data": {"Password": "***", "Echo": ["x *** y", 7]}})
        );
    }

    #[test]
    fn a_short_password_is_masked_only_where_it_is_the_whole_string() {
        let pw = Secret::new("pw");
        let mut answer = serde_json::json!({"pw": "pw", "Message": "upwards"});
        mask_json(&mut answer, Some(&pw));
        assert_eq!(
            answer,
            serde_json::json!({"pw": "***", "Message": "upwards"})
        );
    }
}

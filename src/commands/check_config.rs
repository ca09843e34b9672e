//! `check-config [--online]`: what rdbvault understood from the config (offline), then, with
//! `--online`, a signed `DescribeDBInstances` and a write probe per destination.

use crate::cds::{self, Params};
use crate::config::{self, Config, credentials};
use crate::failure::Failure;
use crate::metrics::ApiMetrics;
use std::fmt::Write as _;

fn format_local(t: chrono::DateTime<chrono::Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z (UTC%:z)")
        .to_string()
}

fn describe_keep(k: &config::KeepRules) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("keep_last", k.keep_last),
        ("keep_hourly", k.keep_hourly),
        ("keep_daily", k.keep_daily),
        ("keep_weekly", k.keep_weekly),
        ("keep_monthly", k.keep_monthly),
        ("keep_yearly", k.keep_yearly),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    if let Some(w) = k.keep_within {
        parts.push(format!("keep_within {}", config::units::format_duration(w)));
    }
    parts.push(format!("min_verified {}", k.min_verified));
    parts.join(", ")
}

/// The offline report of `check-config`.
pub fn describe_config(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = String::new();
    describe_services(&mut out, cfg);
    let _ = writeln!(out, "destinations:");
    for d in cfg.destinations.values() {
        let _ = writeln!(
            out,
            "  {:<12} {}{}",
            d.name,
            crate::destination::describe(d),
            crate::destination::settings(d)
        );
    }
    let _ = writeln!(out, "policies:");
    for p in &cfg.policies {
        describe_policy(&mut out, p, now);
    }
    out
}

/// The file, the API endpoint, credentials, state, HTTP and logging.
fn describe_services(out: &mut String, cfg: &Config) {
    let _ = writeln!(out, "{}: OK", cfg.source.display());
    let _ = writeln!(
        out,
        "cds: {} (timeout {}, API times read in {})",
        cds::client::redis_base_url(&cfg.cds.endpoint),
        config::units::format_duration(cfg.cds.timeout),
        cfg.cds.time_zone
    );
    let cred = |file: &Option<std::path::PathBuf>, env: &str| match file {
        Some(p) => format!("file {}", p.display()),
        None => format!("${env}"),
    };
    let _ = writeln!(
        out,
        "credentials: access key id from {}, secret from {} (read by --online, run and api)",
        cred(&cfg.cds.access_key_id_file, credentials::ENV_ACCESS_KEY_ID),
        cred(
            &cfg.cds.access_key_secret_file,
            credentials::ENV_ACCESS_KEY_SECRET
        )
    );
    let _ = writeln!(
        out,
        "state: {}   http: {}{}   log: {} {}",
        cfg.state.describe(),
        cfg.http.listen,
        match &cfg.http.token_file {
            Some(p) => format!(" (/v1 bearer token from {}, read by run)", p.display()),
            None => String::new(),
        },
        cfg.log.level,
        format!("{:?}", cfg.log.format).to_lowercase()
    );
}

/// One policy: its schedule and next runs, selectors and retention.
fn describe_policy(out: &mut String, p: &config::Policy, now: chrono::DateTime<chrono::Utc>) {
    let s = &p.schedule;
    let _ = writeln!(
        out,
        "  {}: cron \"{}\" in {}, jitter {}, start within {}, finish within {}, catch-up {}, to {} ({} download)",
        p.name,
        s.cron,
        s.timezone,
        config::units::format_duration(s.jitter),
        config::units::format_duration(s.start_window),
        config::units::format_duration(s.completion_window),
        format!("{:?}", s.catch_up).to_lowercase(),
        p.destination,
        format!("{:?}", p.download).to_lowercase()
    );
    let runs = s.cron.upcoming(now, s.timezone, 3);
    if runs.is_empty() {
        let _ = writeln!(out, "    next runs: never (this cron never fires again)");
    }
    for (i, t) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {} {}",
            if i == 0 { "next runs:" } else { "          " },
            format_local(*t, s.timezone)
        );
    }
    let selectors: Vec<_> = p.instances.iter().map(ToString::to_string).collect();
    let _ = writeln!(out, "    instances: {}", selectors.join("; "));
    let _ = writeln!(
        out,
        "    retention: destination {}",
        describe_keep(&p.retention.destination)
    );
    match &p.retention.provider {
        Some(k) => {
            let _ = writeln!(out, "               provider {}", describe_keep(k));
        }
        None => {
            let _ = writeln!(
                out,
                "               provider: no rules, rdbvault never deletes provider backups"
            );
        }
    }
    let _ = writeln!(
        out,
        "               at most {} deletions per run",
        p.retention.max_deletions_per_run
    );
}

/// `check-config [--online] [--json]`.
pub async fn check_config(cfg: &Config, online: bool, json: bool) -> Result<(), Failure> {
    let now = crate::clock::wall_now();
    if !json {
        crate::commands::format::write_out(format_args!("{}", describe_config(cfg, now)));
    }
    let mut out = Online {
        json,
        checks: Vec::new(),
    };
    let found = if online {
        if !json {
            outln!("online checks:");
        }
        run_online(cfg, &mut out).await?
    } else {
        Findings::default()
    };
    if json {
        super::format::print_json(&serde_json::json!({
            "file": cfg.source,
            "valid": true,
            "config": config_json(cfg, now),
            "online": online.then_some(&out.checks),
            "online_ok": online.then(|| found.is_empty()),
        }));
    }
    if !online {
        if !json {
            outln!(
                "config is valid (offline checks only; --online also tries the credentials, the selectors and every destination)"
            );
        }
        return Ok(());
    }
    found.outcome(json)
}

/// Where the online checks report: a line each, or JSON items collected for the end.
struct Online {
    json: bool,
    checks: Vec<serde_json::Value>,
}

impl Online {
    fn say(&mut self, text: &str, item: serde_json::Value) {
        if self.json {
            self.checks.push(item);
        } else {
            outln!("  {text}");
        }
    }
}

/// One signed `DescribeDBInstances` (resolving every selector) and a write probe per
/// destination.
async fn run_online(cfg: &Config, out: &mut Online) -> Result<Findings, Failure> {
    let mut found = Findings::default();
    let registry = prometheus::Registry::new();
    let metrics = ApiMetrics::register(&registry)?;
    let client = crate::services::cds_client(&cfg.cds, metrics)?;
    match client.describe_db_instances(&Params::new()).await {
        Ok(instances) => resolve_selectors(cfg, &instances, out, &mut found),
        Err(e) => {
            out.say(
                &format!("CDS API: FAILED: {e}"),
                serde_json::json!({"check": "cds", "ok": false, "error": e.to_string()}),
            );
            if e.is_credentials() {
                found.credentials.push(e.to_string());
            } else {
                found.other.push(e.to_string());
            }
        }
    }
    for d in cfg.destinations.values() {
        match crate::destination::probe(d).await {
            Ok(msg) => out.say(
                &format!("destination {}: {msg}", d.name),
                serde_json::json!({"check": "destination", "name": d.name, "ok": true, "message": msg}),
            ),
            Err(e) => {
                let text = format!("destination {}: {e:#}", d.name);
                out.say(
                    &format!("destination {}: FAILED: {e:#}", d.name),
                    serde_json::json!({"check": "destination", "name": d.name, "ok": false, "error": format!("{e:#}")}),
                );
                if crate::services::credential_problem(&e) {
                    found.credentials.push(text);
                } else {
                    found.other.push(text);
                }
            }
        }
    }
    Ok(found)
}

/// The config as rdbvault understood it, for `check-config --json`: times RFC 3339 with zone.
fn config_json(cfg: &Config, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let secs = |d: std::time::Duration| d.as_secs();
    let policies: Vec<_> = cfg
        .policies
        .iter()
        .map(|p| {
            let s = &p.schedule;
            serde_json::json!({
                "name": p.name,
                "cron": s.cron.as_str(),
                "timezone": s.timezone.name(),
                "jitter_seconds": secs(s.jitter),
                "start_window_seconds": secs(s.start_window),
                "completion_window_seconds": secs(s.completion_window),
                "catch_up": format!("{:?}", s.catch_up).to_lowercase(),
                "next_runs": s.cron.upcoming(now, s.timezone, 3).iter()
                    .map(|t| t.with_timezone(&s.timezone).to_rfc3339()).collect::<Vec<_>>(),
                "instances": p.instances.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "destination": p.destination,
                "download": format!("{:?}", p.download).to_lowercase(),
                "retention": {
                    "destination": describe_keep(&p.retention.destination),
                    "provider": p.retention.provider.as_ref().map(describe_keep),
                    "max_deletions_per_run": p.retention.max_deletions_per_run,
                },
            })
        })
        .collect();
    let destinations: Vec<_> = cfg
        .destinations
        .values()
        .map(|d| serde_json::json!({"name": d.name, "location": crate::destination::describe(d)}))
        .collect();
    serde_json::json!({
        "cds": cds::client::redis_base_url(&cfg.cds.endpoint).to_string(),
        "state": cfg.state.describe(),
        "http": cfg.http.listen.to_string(),
        "destinations": destinations,
        "policies": policies,
    })
}

/// `check-config --json` for a config that does not load: every problem with its location.
pub fn problems_json(errors: &config::Errors) {
    let problems: Vec<_> = errors
        .problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "line": p.line, "column": p.column, "path": p.path, "message": p.message,
            })
        })
        .collect();
    super::format::print_json(&serde_json::json!({
        "file": errors.file,
        "valid": false,
        "problems": problems,
    }));
}

/// What the online checks found wrong, by what the user must do about it.
#[derive(Debug, Default)]
struct Findings {
    /// Credentials refused (CDS or S3): fix the keys (exit 2).
    credentials: Vec<String>,
    /// Selectors that match no instance: a policy that backs up nothing (exit 3).
    unmatched: Vec<String>,
    /// Anything else (unreachable endpoint, missing bucket): exit 1.
    other: Vec<String>,
}

impl Findings {
    fn is_empty(&self) -> bool {
        self.credentials.is_empty() && self.unmatched.is_empty() && self.other.is_empty()
    }

    /// Exit 2 when credentials were refused (nothing can work until they are fixed), else 3
    /// when a selector matches nothing, else 1 for any other failure.
    fn outcome(self, json: bool) -> Result<(), Failure> {
        let all: Vec<String> = [&self.credentials, &self.unmatched, &self.other]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if all.is_empty() {
            if !json {
                outln!("all online checks passed");
            }
            return Ok(());
        }
        let text = format!(
            "{} online check(s) failed:\n  {}",
            all.len(),
            all.join("\n  ")
        );
        Err(if !self.credentials.is_empty() {
            Failure::Usage(text)
        } else if !self.unmatched.is_empty() {
            Failure::Failed(text)
        } else {
            Failure::Runtime(anyhow::anyhow!(text))
        })
    }
}

/// Prints what each selector of each policy matches; one that matches nothing is a finding.
fn resolve_selectors(
    cfg: &Config,
    instances: &[cds::model::Instance],
    out: &mut Online,
    found: &mut Findings,
) {
    out.say(
        &format!(
            "CDS API: DescribeDBInstances signed and accepted; {} instance(s) visible",
            instances.len()
        ),
        serde_json::json!({"check": "cds", "ok": true, "instances": instances.len()}),
    );
    for p in &cfg.policies {
        for sel in &p.instances {
            let matched: Vec<_> = instances.iter().filter(|i| sel.matches(i)).collect();
            if matched.is_empty() {
                let msg = format!(
                    "policy {}: selector {sel} matches no instance; fix it or remove it",
                    p.name
                );
                out.say(
                    &msg,
                    serde_json::json!({"check": "selector", "policy": p.name, "selector": sel.to_string(), "matches": []}),
                );
                found.unmatched.push(msg);
            } else {
                let names: Vec<_> = matched
                    .iter()
                    .map(|i| format!("{} ({}, {})", i.instance_name, i.instance_uuid, i.status))
                    .collect();
                let uuids: Vec<_> = matched.iter().map(|i| i.instance_uuid.clone()).collect();
                out.say(
                    &format!("policy {}: {sel} -> {}", p.name, names.join(", ")),
                    serde_json::json!({"check": "selector", "policy": p.name, "selector": sel.to_string(), "matches": uuids}),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_outrank_unmatched_selectors_which_outrank_outages() {
        let f = |c: usize, u: usize, o: usize| Findings {
            credentials: vec!["c".into(); c],
            unmatched: vec!["u".into(); u],
            other: vec!["o".into(); o],
        };
        assert!(f(0, 0, 0).outcome(true).is_ok());
        assert_eq!(f(1, 1, 1).outcome(true).unwrap_err().exit_code(), 2);
        assert_eq!(f(0, 1, 1).outcome(true).unwrap_err().exit_code(), 3);
        assert_eq!(f(0, 0, 1).outcome(true).unwrap_err().exit_code(), 1);
        let text = f(1, 1, 1).outcome(true).unwrap_err().to_string();
        assert!(text.starts_with("3 online check(s) failed"), "{text}");
    }
}

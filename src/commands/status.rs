//! `status [--json]`: is everything backed up, and is the daemon up? Per policy and instance the
//! last success, the verified copies, the next run, the open job and the last drill; then every
//! thing that needs attention, one line each (exit 3), or none (exit 0). The model is
//! [`crate::views::status`]; here: asking the daemon's `/readyz`, and the text layout.
//!
//! Reads only: the state DB is opened read-only, and nothing asks the provider.

use super::format::print_json;
use super::open_for_reading;
use crate::config::Config;
use crate::failure::Failure;
use crate::views::status::{Daemon, DaemonState, InstanceStatus, PolicyStatus, Status};
use std::net::SocketAddr;
use std::time::Duration;

/// How long the daemon gets to answer `/readyz`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `status [--json]`.
pub async fn status(cfg: &Config, json: bool) -> Result<(), Failure> {
    let store = open_for_reading(cfg).await?;
    let daemon = probe_daemon(cfg).await;
    let now = crate::clock::wall_now();
    let status = crate::views::status::status(&store, cfg, now, daemon).await?;
    store.close().await;
    if json {
        print_json(&status);
    } else {
        for line in text(&status) {
            outln!("{line}");
        }
    }
    match status.attention.len() {
        0 => Ok(()),
        n => Err(Failure::Failed(format!(
            "{n} thing{} need{} attention ({})",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            if json {
                "see `attention`"
            } else {
                "listed above"
            }
        ))),
    }
}

/// The address to ask for the daemon listening on `listen`: loopback for an unspecified
/// address (it listens on every interface, this host's loopback included).
pub(super) fn daemon_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        other => other,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks the daemon's `/readyz` at `http.listen` (with the `http.token_file` token, when one is
/// set), within [`PROBE_TIMEOUT`].
pub(super) async fn probe_daemon(cfg: &Config) -> Daemon {
    let address = daemon_address(cfg.http.listen);
    let daemon = |state, detail: String| Daemon {
        address: address.to_string(),
        state,
        detail,
    };
    if address.port() == 0 {
        return daemon(
            DaemonState::Unreachable,
            "http.listen has port 0, a port picked at each start; set a fixed port to let `status` find the daemon".into(),
        );
    }
    // `/readyz` needs no token today; an unusable token file is said, not fatal to the probe.
    let (token, note) = match crate::http::load_token(cfg) {
        Ok(token) => (token, String::new()),
        Err(e) => (None, format!("; asked without a token: {e}")),
    };
    match readyz(address, token).await {
        Ok((200, body)) => daemon(DaemonState::Ready, readyz_detail(&body) + &note),
        Ok((code, body)) => daemon(
            DaemonState::NotReady,
            format!("/readyz answered {code}: {}{note}", readyz_detail(&body)),
        ),
        Err(why) => daemon(DaemonState::Unreachable, why + &note),
    }
}

/// One GET of `/readyz`: its status code and body, or why there was no answer.
async fn readyz(
    address: SocketAddr,
    token: Option<crate::secret::Secret>,
) -> Result<(u16, String), String> {
    let rdbvault = crate::config::invocation();
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut request = client.get(format!("http://{address}/readyz"));
    if let Some(token) = token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {}s", PROBE_TIMEOUT.as_secs())
        } else if e.is_connect() {
            format!("connection refused: is `{rdbvault} run` running with this config?")
        } else {
            e.without_url().to_string()
        }
    })?;
    let code = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((code, body))
}

/// `/readyz`'s body on one line, without its leading `ready` / `not ready:`.
fn readyz_detail(body: &str) -> String {
    let lines: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("not ready:").map_or(l, str::trim))
        .filter(|l| *l != "ready")
        .collect();
    let mut out: String = lines.join("; ").chars().take(300).collect();
    if out.is_empty() {
        out = "no detail".into();
    }
    out
}

/// An age in its two largest units: `3d 4h`, `5m 12s`, `40s`.
fn age(secs: i64) -> String {
    let secs = secs.max(0);
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let parts: Vec<String> = units
        .iter()
        .scan(secs, |left, (unit, len)| {
            let n = *left / len;
            *left %= len;
            Some((n, unit))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// The text of `status`: the daemon, each policy and instance, then what needs attention.
fn text(status: &Status) -> Vec<String> {
    let d = &status.daemon;
    let mut out = vec![match d.state {
        DaemonState::Ready => format!("daemon: up at {} ({})", d.address, d.detail),
        DaemonState::NotReady => format!("daemon: not ready at {}: {}", d.address, d.detail),
        DaemonState::Unreachable => {
            format!("daemon: not reachable at {} ({})", d.address, d.detail)
        }
    }];
    for p in &status.policies {
        out.extend(policy_text(p));
    }
    if status.attention.is_empty() {
        out.push("healthy: nothing needs attention".into());
    } else {
        out.push("needs attention:".into());
        out.extend(status.attention.iter().map(|a| format!("  - {a}")));
    }
    out
}

fn policy_text(p: &PolicyStatus) -> Vec<String> {
    let next = p
        .next_run
        .as_deref()
        .unwrap_or("never (the cron never fires again)");
    let mut out = vec![format!(
        "policy `{}`: cron \"{}\" in {}, to `{}`, min_verified {}; next run {next}",
        p.name, p.cron, p.timezone, p.destination, p.min_verified
    )];
    if p.instances.is_empty() {
        out.push("  no instance selected yet: the policy has not run".into());
    }
    for i in &p.instances {
        out.extend(instance_text(p, i));
    }
    out
}

fn instance_text(p: &PolicyStatus, i: &InstanceStatus) -> Vec<String> {
    let mut out = vec![format!("  {}", i.label())];
    out.push(match &i.last_success {
        Some(s) => format!(
            "    last success  {} ({} ago), job {}",
            s.at,
            age(s.age_seconds),
            s.job_id
        ),
        None => "    last success  never".into(),
    });
    if let Some(run) = &i.last_run
        && i.last_success
            .as_ref()
            .is_none_or(|s| s.job_id != run.job_id)
    {
        let why = run.error.as_deref().and_then(|e| e.lines().next());
        out.push(format!(
            "    last run      {} at {}, job {}{}",
            run.state.as_str(),
            run.at,
            run.job_id,
            why.map(|w| format!(": {w}")).unwrap_or_default()
        ));
    }
    out.push(format!(
        "    verified      {} at the destination (`{}`), {} at the provider",
        i.verified_copies.destination, p.destination, i.verified_copies.provider
    ));
    out.push(match &i.open_job {
        Some(j) => format!(
            "    open job      {} {} since {} ({})",
            j.id,
            j.state.as_str(),
            j.since,
            j.trigger
        ),
        None => "    open job      none".into(),
    });
    out.push(match &i.last_drill {
        Some(d) => format!(
            "    last drill    {} at {} (set {})",
            d.result, d.at, d.job_id
        ),
        None => "    last drill    none yet".into(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        let at = |s: &str| daemon_address(s.parse().unwrap()).to_string();
        assert_eq!(at("0.0.0.0:9750"), "127.0.0.1:9750");
        assert_eq!(at("[::]:9750"), "[::1]:9750");
        assert_eq!(at("10.0.0.5:9750"), "10.0.0.5:9750");
    }

    #[test]
    fn the_readyz_answer_is_one_line_without_its_verdict() {
        assert_eq!(
            readyz_detail("ready\nlast CDS API success: never\n"),
            "last CDS API success: never"
        );
        assert_eq!(
            readyz_detail(
                "not ready: scheduler heartbeat is stale (40s old)\nlast CDS API success: never\n"
            ),
            "scheduler heartbeat is stale (40s old); last CDS API success: never"
        );
        assert_eq!(readyz_detail(""), "no detail");
    }

    #[test]
    fn an_age_shows_its_two_largest_units() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(40), "40s");
        assert_eq!(age(312), "5m 12s");
        assert_eq!(age(3 * 86_400 + 4 * 3_600 + 5), "3d 4h");
        assert_eq!(age(86_400 + 59), "1d");
    }
}

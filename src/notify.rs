//! Notifications: telling people what happened without a dashboard. Each target of `notify:`
//! is a webhook (a JSON POST per event it wants: `failed`, `missed`, `retention_blocked`,
//! `verify_failed`, `drill_failed`, optionally `stored`) or a healthchecks.io-style ping URL
//! (`/start` when a scheduled run of its policies begins, the bare URL when every job of the run
//! was stored, `/fail` when one was not).
//!
//! Nothing here can fail or slow what it reports: an event is one row written to the outbox in
//! the state DB (`store::outbox`), and errors writing it are logged, never returned. The daemon's
//! delivery loop ([`deliver`]) sends the rows, each target with its own timeout, retrying with
//! backoff until a 2xx (at least once, across restarts and replicas) or a day has passed. A
//! body carries no secret: errors are scrubbed of URL query strings and credentials, and a
//! webhook's secret only signs (`X-Rdbvault-Signature: sha256=<hex HMAC-SHA256 of the body>`).

use crate::config::{Config, EventKind, NotifyKind, NotifyTarget};
use crate::services::Context;
use crate::store::outbox::{DeliveryRow, NewDelivery};
use crate::store::{JobRow, Store, ms};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt as _;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An event, as a webhook receives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub event: EventKind,
    /// Unique per event; the same in every retry of its delivery (`X-Rdbvault-Event-Id`), so a
    /// receiver can drop repeats.
    pub event_id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    pub job_id: Option<String>,
    /// The job's state (`failed`, `missed`, `stored`), when the event is a job's.
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 3339, UTC.
    pub at: String,
}

impl Event {
    pub fn new(
        kind: EventKind,
        policy: &str,
        instance_uuid: &str,
        instance_name: &str,
        at: DateTime<Utc>,
    ) -> Event {
        Event {
            event: kind,
            event_id: uuid::Uuid::now_v7().to_string(),
            policy: policy.to_string(),
            instance_uuid: instance_uuid.to_string(),
            instance_name: instance_name.to_string(),
            job_id: None,
            state: None,
            error: None,
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// A job's end (`failed`, `missed`, `stored`).
    pub fn of_job(kind: EventKind, job: &JobRow, error: Option<&str>, at: DateTime<Utc>) -> Event {
        Event {
            job_id: Some(job.id.clone()),
            state: Some(kind.as_str().to_string()),
            error: error.map(scrub),
            ..Event::new(
                kind,
                &job.policy,
                &job.instance_uuid,
                &job.instance_name,
                at,
            )
        }
    }

    pub fn with_error(mut self, error: &str) -> Event {
        self.error = Some(scrub(error));
        self
    }
}

/// Whether `target` wants `kind` events of `policy`.
fn wants(target: &NotifyTarget, kind: EventKind, policy: &str) -> bool {
    matches!(target.kind, NotifyKind::Webhook { .. })
        && target.events.contains(&kind)
        && (target.policies.is_empty() || target.policies.iter().any(|p| p == policy))
}

/// Queues `event` for every webhook that wants it. Never fails and never waits on a target.
pub async fn emit(store: &Store, config: &Config, event: &Event) {
    let body = match serde_json::to_string(event) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a notification");
            return;
        }
    };
    for target in config
        .notify
        .iter()
        .filter(|t| wants(t, event.event, &event.policy))
    {
        queue(
            store,
            &target.name,
            &event.event_id,
            event.event.as_str(),
            &body,
        )
        .await;
    }
}

async fn queue(store: &Store, target: &str, event_id: &str, event: &str, body: &str) {
    let delivery = NewDelivery {
        target: target.to_string(),
        event_id: event_id.to_string(),
        event: event.to_string(),
        body: body.to_string(),
        now: ms(Utc::now()),
    };
    if let Err(e) = store.enqueue_delivery(&delivery).await {
        tracing::error!(target = %target, event = %event, error = %e,
            "cannot queue a notification; it is lost, what it reports is not");
    }
}

/// The healthchecks targets of `policy`.
fn pingers<'c>(config: &'c Config, policy: &str) -> impl Iterator<Item = &'c NotifyTarget> {
    let policy = policy.to_string();
    config.notify.iter().filter(move |t| {
        t.kind == NotifyKind::Healthchecks
            && (t.policies.is_empty() || t.policies.contains(&policy))
    })
}

/// A scheduled run of `policy` began (its cron time `cron_ms`): `/start` to its healthchecks
/// targets, once per run however many replicas fire it.
pub async fn run_started(store: &Store, config: &Config, policy: &str, cron_ms: i64) {
    for t in pingers(config, policy) {
        queue(
            store,
            &t.name,
            &format!("run:{policy}:{cron_ms}:start"),
            "run_started",
            "/start",
        )
        .await;
    }
}

/// A job ended: if it was the last open job of its scheduled run, the run's outcome goes to
/// the policy's healthchecks targets (the bare URL when every job was stored, `/fail` else),
/// once per run.
pub async fn job_ended(store: &Store, config: &Config, job: &JobRow) {
    // Scheduled runs only: a run by hand (`backup-now`, `jobs retry`) has no start ping.
    if job.trigger != "schedule" || pingers(config, &job.policy).next().is_none() {
        return;
    }
    let Ok(Some(key)) = store.schedule_key_of(&job.id).await else {
        return;
    };
    let Some(cron_ms) = key
        .rsplit('\u{1f}')
        .next()
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return;
    };
    let (open, stored, other) = match store.run_standing(&job.policy, cron_ms).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read how the run stands; no healthchecks ping for it");
            return;
        }
    };
    if open > 0 {
        return;
    }
    let (event, suffix) = if other == 0 && stored > 0 {
        ("run_succeeded", "")
    } else {
        ("run_failed", "/fail")
    };
    for t in pingers(config, &job.policy) {
        queue(
            store,
            &t.name,
            &format!("run:{}:{cron_ms}:end", job.policy),
            event,
            suffix,
        )
        .await;
    }
}

/// Removes what must never travel in a body: query strings (presigned URLs carry signatures
/// there) and user:password of every http(s) URL in `text`.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(tail.len());
        let candidate = &tail[..end];
        match url::Url::parse(candidate) {
            Ok(mut u) => {
                u.set_query(None);
                u.set_fragment(None);
                let _ = u.set_username("");
                let _ = u.set_password(None);
                out.push_str(u.as_str());
            }
            Err(_) => out.push_str(candidate.split('?').next().unwrap_or("")),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Sends deliveries: one HTTP client, and the webhooks' secrets read once.
pub struct Sender {
    client: reqwest::Client,
    secrets: HashMap<String, crate::secret::Secret>,
}

impl Sender {
    /// # Errors
    /// A webhook's `secret_file` cannot be read (or is readable by every user).
    pub fn new(config: &Config) -> Result<Sender, String> {
        let mut secrets = HashMap::new();
        for t in &config.notify {
            if let NotifyKind::Webhook {
                secret_file: Some(path),
            } = &t.kind
            {
                let secret = crate::config::credentials::read_secret_file(path)
                    .map_err(|e| format!("notify target `{}`: secret_file: {e}", t.name))?;
                secrets.insert(t.name.clone(), crate::secret::Secret::new(secret));
            }
        }
        let client = reqwest::Client::builder()
            // A redirect could carry the event (and its signature) to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rdbvault/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Sender { client, secrets })
    }

    /// Sends one delivery to `target`: its HTTP status on a 2xx, else why not (no URL in it).
    pub async fn send(
        &self,
        target: &NotifyTarget,
        event_id: &str,
        body: &str,
    ) -> Result<u16, String> {
        let request = match &target.kind {
            NotifyKind::Webhook { .. } => {
                let mut r = self
                    .client
                    .post(target.url.clone())
                    .header("Content-Type", "application/json")
                    .header("X-Rdbvault-Event-Id", event_id)
                    .body(body.to_string());
                if let Some(secret) = self.secrets.get(&target.name) {
                    r = r.header(
                        "X-Rdbvault-Signature",
                        format!("sha256={}", sign(secret.expose(), body)),
                    );
                }
                r
            }
            NotifyKind::Healthchecks => {
                let url = format!("{}{body}", target.url.as_str().trim_end_matches('/'));
                self.client.post(url).body(String::new())
            }
        };
        match request.timeout(target.timeout).send().await {
            Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) if e.is_timeout() => Err(format!(
                "no answer within {}s (notify timeout)",
                target.timeout.as_secs()
            )),
            Err(e) => Err(format!("{}", e.without_url())),
        }
    }
}

/// `sha256=` value of `X-Rdbvault-Signature`: hex HMAC-SHA256 of the body with the secret.
pub fn sign(secret: &str, body: &str) -> String {
    use hmac::{Hmac, KeyInit as _, Mac as _};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Where a target's URL points, for logs: scheme and host only (the path of a webhook or a
/// ping URL is often its secret).
pub fn host_of(target: &NotifyTarget) -> String {
    format!(
        "{}://{}",
        target.url.scheme(),
        target.url.host_str().unwrap_or("?")
    )
}

/// How long a delivery is retried before it is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries claimed per look, and sent at once.
const BATCH: i64 = 16;
const IN_FLIGHT: usize = 4;

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s ... up to an hour.
pub fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// The daemon's delivery loop: every second (or sooner after a delivery), the due deliveries
/// are claimed and sent, a few at a time, until `cancel`.
pub async fn deliver(ctx: Context, cancel: CancellationToken) {
    if ctx.config.notify.is_empty() {
        return;
    }
    let sender = match Sender::new(&ctx.config) {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(problem = %why, "notifications cannot be sent; fix the config and reload (SIGHUP)");
            return;
        }
    };
    let longest = ctx
        .config
        .notify
        .iter()
        .map(|t| t.timeout)
        .max()
        .unwrap_or_default();
    let claim_for =
        i64::try_from((longest * 2 + Duration::from_secs(10)).as_millis()).unwrap_or(i64::MAX / 2);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = ms(ctx.now());
        let due = match ctx
            .store
            .claim_deliveries(&ctx.owner, now, now.saturating_add(claim_for), BATCH)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification outbox; trying again");
                continue;
            }
        };
        futures::stream::iter(due)
            .for_each_concurrent(IN_FLIGHT, |d| deliver_one(&ctx, &sender, d))
            .await;
    }
}

async fn deliver_one(ctx: &Context, sender: &Sender, d: DeliveryRow) {
    let Some(target) = ctx.config.notify.iter().find(|t| t.name == d.target) else {
        // The target left the config: nothing can send it.
        let now = ms(ctx.now());
        let _ = ctx
            .store
            .delivery_failed(
                d.id,
                now,
                Some(now),
                "the target is no longer in the config",
            )
            .await;
        return;
    };
    let result = sender.send(target, &d.event_id, &d.body).await;
    let now = ms(ctx.now());
    let outcome = match &result {
        Ok(_) => "delivered",
        Err(_) => "failed",
    };
    ctx.metrics
        .notifications
        .with_label_values(&[target.name.as_str(), outcome])
        .inc();
    match result {
        Ok(status) => {
            tracing::debug!(target = %target.name, event = %d.event, status, "notification delivered");
            if let Err(e) = ctx.store.delivery_done(d.id, now).await {
                // Sent but not marked: it may be sent again (at least once).
                tracing::warn!(error = %e, "cannot mark a notification delivered");
            }
        }
        Err(why) => {
            let give_up =
                now - d.created_at >= i64::try_from(GIVE_UP_AFTER.as_millis()).unwrap_or(i64::MAX);
            let next =
                now.saturating_add(i64::try_from(backoff(d.attempts).as_millis()).unwrap_or(0));
            if give_up {
                tracing::error!(target = %target.name, to = %host_of(target), event = %d.event, attempts = d.attempts + 1,
                    problem = %why, "gave up a notification after a day of attempts");
            } else {
                tracing::warn!(target = %target.name, to = %host_of(target), event = %d.event, attempt = d.attempts + 1,
                    problem = %why, "notification not delivered; retrying");
            }
            if let Err(e) = ctx
                .store
                .delivery_failed(d.id, next, give_up.then_some(now), &why)
                .await
            {
                tracing::warn!(error = %e, "cannot record a failed notification");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_query_strings_and_credentials() {
        let text = "GET https://bucket.s3.example/k.rdb?X-Amz-Signature=abc&X-Amz-Credential=AKIA failed; \
                    see http://user:pw@host:8080/path?token=1 (or https://plain.example/x)";
        assert_eq!(
            scrub(text),
            "GET https://bucket.s3.example/k.rdb failed; see http://host:8080/path (or https://plain.example/x)"
        );
        assert_eq!(scrub("no url here"), "no url here");
        assert_eq!(scrub("broken http://?a=b"), "broken http://");
    }

    #[test]
    fn the_signature_is_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_up_to_an_hour() {
        let waits: Vec<u64> = [0, 1, 2, 5, 11, 12, 40]
            .iter()
            .map(|a| backoff(*a).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 32, 2048, 3600, 3600]);
    }
}

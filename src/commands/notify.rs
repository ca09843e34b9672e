//! `notify test`: one test event to every `notify:` target, sent now (not through the outbox),
//! with how each answered.

use crate::config::{Config, EventKind, NotifyKind};
use crate::failure::Failure;
use crate::notify::{Event, Sender, host_of};

pub async fn notify_test(cfg: &Config) -> Result<(), Failure> {
    if cfg.notify.is_empty() {
        return Err(Failure::Usage(format!(
            "{} has no notify: targets; add a webhook or a healthchecks URL (README, Notifications)",
            cfg.source.display()
        )));
    }
    let sender = Sender::new(cfg).map_err(Failure::Usage)?;
    let mut failed = 0;
    for target in &cfg.notify {
        let (event_id, body) = match target.kind {
            NotifyKind::Webhook { .. } => {
                let mut event = Event::new(EventKind::Test, "", "", "", chrono::Utc::now());
                event.error =
                    Some("a test event from `rdbvault notify test`; nothing failed".into());
                let body = serde_json::to_string(&event).map_err(anyhow::Error::from)?;
                (event.event_id, body)
            }
            // Recorded by healthchecks.io (and its clones) without changing the check's state.
            NotifyKind::Healthchecks => (uuid::Uuid::now_v7().to_string(), "/log".to_string()),
        };
        match sender.send(target, &event_id, &body).await {
            Ok(status) => outln!(
                "{} ({}): delivered (HTTP {status})",
                target.name,
                host_of(target)
            ),
            Err(why) => {
                failed += 1;
                outln!(
                    "{} ({}): NOT DELIVERED: {why}",
                    target.name,
                    host_of(target)
                );
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "{failed} of {} notify target(s) did not take the test event (named above)",
            cfg.notify.len()
        )));
    }
    Ok(())
}

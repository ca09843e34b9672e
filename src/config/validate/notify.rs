//! Validation of `notify:`: each target's type, URL (http or https, no user or password in it),
//! events, policies (which must be defined) and timeout. A target's name is `name:` or
//! `<type>-<position>`, unique, since the outbox's deliveries refer to it.

use super::{Validator, did_you_mean, suggest};
use crate::config::model::{EventKind, NotifyKind, NotifyTarget, Policy};
use crate::config::raw::RawNotify;
use std::time::Duration;

/// The events a webhook gets when it names none.
const DEFAULT_EVENTS: [EventKind; 5] = [
    EventKind::Failed,
    EventKind::Missed,
    EventKind::RetentionBlocked,
    EventKind::VerifyFailed,
    EventKind::DrillFailed,
];

impl Validator<'_> {
    pub(super) fn notify(&mut self, raw: &[RawNotify], policies: &[Policy]) -> Vec<NotifyTarget> {
        let mut out: Vec<NotifyTarget> = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let at = |key: &str| format!("notify[{i}].{key}");
            let kind_name = r.kind.as_ref().map(|t| t.0.trim().to_string());
            let kind = match kind_name.as_deref() {
                Some("webhook") => NotifyKind::Webhook {
                    secret_file: r.secret_file.as_deref().map(|p| self.path(p)),
                },
                Some("healthchecks") => NotifyKind::Healthchecks,
                Some(other) => {
                    self.problem(
                        &at("type"),
                        format!("`{other}` is not one of: webhook, healthchecks"),
                    );
                    continue;
                }
                None => {
                    self.problem(
                        &format!("notify[{i}]"),
                        "needs a type: webhook or healthchecks",
                    );
                    continue;
                }
            };
            let type_name = kind_name.unwrap_or_default();
            if kind == NotifyKind::Healthchecks {
                if r.secret_file.is_some() {
                    self.problem(
                        &at("secret_file"),
                        "only a webhook signs its requests; remove it",
                    );
                }
                if r.events.is_some() {
                    self.problem(
                        &at("events"),
                        "a healthchecks target is pinged for each scheduled run of its policies (start, success, /fail); remove events",
                    );
                }
            }
            // Every problem of the target is reported, a bad URL's included.
            let url = self.notify_url(i, r);
            let events = self.notify_events(i, r, &kind);
            let mut named = Vec::new();
            for t in r.policies.iter().flatten() {
                let name = t.0.trim();
                if policies.iter().any(|p| p.name == name) {
                    named.push(name.to_string());
                } else {
                    self.problem(
                        &at("policies"),
                        format!(
                            "unknown policy `{name}`{}",
                            did_you_mean(suggest(name, policies.iter().map(|p| p.name.as_str())))
                        ),
                    );
                }
            }
            let timeout =
                self.duration(&at("timeout"), r.timeout.as_ref(), Duration::from_secs(10));
            let name = r
                .name
                .as_ref()
                .map(|t| t.0.trim().to_string())
                .unwrap_or_else(|| format!("{type_name}-{}", i + 1));
            if name.is_empty() || out.iter().any(|t| t.name == name) {
                self.problem(
                    &at("name"),
                    format!(
                        "`{name}` is empty or used by another target; give each a name of its own"
                    ),
                );
            }
            let Some(url) = url else {
                continue;
            };
            out.push(NotifyTarget {
                name,
                kind,
                url,
                events,
                policies: named,
                timeout,
            });
        }
        out
    }

    /// A target's `events:` (a webhook's default set when absent; none for healthchecks).
    fn notify_events(&mut self, i: usize, r: &RawNotify, kind: &NotifyKind) -> Vec<EventKind> {
        let at = |key: &str| format!("notify[{i}].{key}");
        let mut events = Vec::new();
        match &r.events {
            None if *kind != NotifyKind::Healthchecks => events.extend(DEFAULT_EVENTS),
            None => {}
            Some(list) => {
                for t in list {
                    let name = t.0.trim();
                    match EventKind::SUBSCRIBABLE.iter().find(|e| e.as_str() == name) {
                        Some(e) if !events.contains(e) => events.push(*e),
                        Some(_) => {}
                        None => {
                            let names: Vec<&str> =
                                EventKind::SUBSCRIBABLE.iter().map(|e| e.as_str()).collect();
                            self.problem(
                                &at("events"),
                                format!(
                                    "unknown event `{name}`{}; events: {}",
                                    did_you_mean(suggest(name, names.iter().copied())),
                                    names.join(", ")
                                ),
                            );
                        }
                    }
                }
                if list.is_empty() && *kind != NotifyKind::Healthchecks {
                    self.problem(&at("events"), "is empty: name the events this target wants, or remove the key for the defaults");
                }
            }
        }
        events
    }

    /// A target's `url`: http or https, without credentials.
    fn notify_url(&mut self, i: usize, r: &RawNotify) -> Option<url::Url> {
        let at = |key: &str| format!("notify[{i}].{key}");
        match r.url.as_ref().map(|t| url::Url::parse(t.0.trim())) {
            None => {
                self.problem(&format!("notify[{i}]"), "needs a url");
                None
            }
            Some(Err(e)) => {
                self.problem(&at("url"), format!("is not a URL ({e})"));
                None
            }
            Some(Ok(u)) if !matches!(u.scheme(), "http" | "https") => {
                self.problem(
                    &at("url"),
                    format!("must be http:// or https:// (found {}://)", u.scheme()),
                );
                None
            }
            Some(Ok(u)) if !u.username().is_empty() || u.password().is_some() => {
                self.problem(
                    &at("url"),
                    "must not carry a user or password (it would show in logs and copies of this file); a webhook signs its requests with secret_file instead",
                );
                None
            }
            Some(Ok(u)) => Some(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::MINIMAL;
    use crate::config::{EventKind, NotifyKind, parse};
    use std::path::Path;

    fn with_notify(block: &str) -> Result<crate::config::Config, crate::config::Errors> {
        parse(
            &format!("{MINIMAL}notify:\n{block}"),
            Path::new("/etc/rdbvault/t.yaml"),
        )
    }

    #[test]
    fn targets_get_names_defaults_and_their_own_settings() {
        let cfg = with_notify(
            "  - type: webhook\n    url: https://hooks.example/x\n    secret_file: hook.secret\n\
             \x20 - type: healthchecks\n    name: hc\n    url: https://hc.example/ping/1\n    timeout: 3s\n\
             \x20 - type: webhook\n    url: http://127.0.0.1:9/y\n    events: [stored, failed, stored]\n",
        )
        .unwrap();
        let [hook, hc, stored] = &cfg.notify[..] else {
            panic!("{:?}", cfg.notify)
        };
        assert_eq!(hook.name, "webhook-1");
        assert_eq!(
            hook.kind,
            NotifyKind::Webhook {
                secret_file: Some("/etc/rdbvault/hook.secret".into())
            }
        );
        assert_eq!(
            hook.events.len(),
            5,
            "the default events: {:?}",
            hook.events
        );
        assert!(!hook.events.contains(&EventKind::Stored));
        assert_eq!((hc.name.as_str(), hc.timeout.as_secs()), ("hc", 3));
        assert!(hc.events.is_empty());
        assert_eq!(stored.events, [EventKind::Stored, EventKind::Failed]);
        assert_eq!(hook.timeout.as_secs(), 10);
    }

    #[test]
    fn every_problem_of_every_target_is_named() {
        let err = with_notify(
            "  - type: webhok\n    url: http://x\n\
             \x20 - type: webhook\n    url: ftp://x/y\n    events: [faild]\n    policies: [nope]\n\
             \x20 - type: webhook\n    name: a\n    url: https://x/y\n\
             \x20 - type: webhook\n    name: a\n    url: https://u:p@x/z\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "notify[0].type",
                "notify[1].url",
                "notify[1].events",
                "notify[1].policies",
                "notify[3].url",
                "notify[3].name",
            ]
        );
        let text = err.to_string();
        assert!(text.contains("did you mean `failed`"), "{text}");
        assert!(!text.contains("u:p@"), "{text}");
    }
}

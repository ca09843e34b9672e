-- The notification outbox: one row per delivery to one target (notify: in the config), written
-- in the same moment as what it reports and sent by the daemon's delivery loop, retried with
-- backoff until the target answers 2xx (at least once, across restarts) or a day has passed.
-- `body`: a webhook's JSON, or a healthchecks ping's path suffix ('', '/start', '/fail').
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    target          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    INTEGER,
    gave_up_at      INTEGER,
    last_error      TEXT,
    claimed_by      TEXT,
    claimed_until   INTEGER
);
CREATE UNIQUE INDEX notifications_once ON notifications(target, event_id);
CREATE INDEX notifications_due ON notifications(next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

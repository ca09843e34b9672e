-- Several replicas on one state DB (the PostgreSQL backend; harmless on SQLite).
-- A scheduled job's key (policy, instance, cron time): however many replicas evaluate the
-- cron, one run of a policy makes one job per instance. NULL for jobs made by hand or retries.
ALTER TABLE jobs ADD COLUMN schedule_key TEXT;
CREATE UNIQUE INDEX jobs_schedule_key ON jobs(schedule_key);

-- Work one replica at a time does (the daily prune and reconcile, re-verification), held by a
-- lease: its holder until expires_at, and an epoch that grows with every new holder, so work
-- started under an old lease can be told apart (fenced off) from the current holder's.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The PostgreSQL twin of migrations/20261216000001_replicas.sql (same version).
ALTER TABLE jobs ADD COLUMN schedule_key TEXT COLLATE "C";
CREATE UNIQUE INDEX jobs_schedule_key ON jobs(schedule_key);

CREATE TABLE leases (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      TEXT COLLATE "C" NOT NULL,
    epoch       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The PostgreSQL twin of migrations/20261217000001_describe_pacing.sql (same version).
CREATE TABLE describe_pacing (
    instance_uuid TEXT COLLATE "C" PRIMARY KEY,
    next_at       BIGINT NOT NULL
);

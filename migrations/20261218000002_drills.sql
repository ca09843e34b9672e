-- Restore drills: each time a stored set was loaded into a throwaway redis-server and its keys
-- counted (`rdbvault drill`, or the daemon every drill.interval). `result` is 'restored' or
-- 'failed'; `detail` says what was loaded and counted, or why it failed.
CREATE TABLE drills (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    policy        TEXT NOT NULL,
    instance_uuid TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NOT NULL,
    result        TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX drills_by_set ON drills(job_id, finished_at);
CREATE INDEX drills_by_instance ON drills(policy, instance_uuid, finished_at);

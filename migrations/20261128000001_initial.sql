-- rdbvault state DB, first version. Migrations are append-only: never edit a released one.
-- Times are Unix milliseconds (UTC).

-- One job = one policy run for one instance. The row is the durable state of the job.
CREATE TABLE jobs (
    id                   TEXT PRIMARY KEY,           -- UUIDv7, so ids sort by creation
    policy               TEXT NOT NULL,
    instance_uuid        TEXT NOT NULL,
    instance_name        TEXT NOT NULL DEFAULT '',
    region_id            TEXT NOT NULL DEFAULT '',
    destination          TEXT NOT NULL,
    trigger              TEXT NOT NULL,              -- schedule | catch_up | manual
    state                TEXT NOT NULL,              -- pending requested snapshotting transferring verifying stored failed missed
    due_at               INTEGER NOT NULL,           -- cron time + jitter: when it was meant to start
    start_by             INTEGER NOT NULL,           -- due_at + start_window
    deadline_at          INTEGER NOT NULL,           -- due_at + completion_window
    created_at           INTEGER NOT NULL,
    create_sent_at       INTEGER,                    -- write-ahead: CreateBackup may have reached the provider
    requested_at         INTEGER,                    -- CreateBackup accepted; the time in object keys
    snapshot_done_at     INTEGER,                    -- every provider record of the job finished
    transfer_started_at  INTEGER,
    transfer_done_at     INTEGER,
    verified_at          INTEGER,
    finished_at          INTEGER,
    attempts             INTEGER NOT NULL DEFAULT 0, -- CreateBackup attempts
    next_attempt_at      INTEGER,
    bytes                INTEGER NOT NULL DEFAULT 0, -- stored bytes, all shards
    error                TEXT,                       -- full error chain of the failure
    owner                TEXT,                       -- process running it (daemon or backup-now)
    heartbeat_at         INTEGER                     -- the owner's last sign of life
);
-- At most one open job per instance, whoever opens it (daemon or backup-now).
CREATE UNIQUE INDEX jobs_one_open_per_instance ON jobs(instance_uuid)
    WHERE state NOT IN ('stored', 'failed', 'missed');
CREATE INDEX jobs_by_policy ON jobs(policy, instance_uuid, created_at);
CREATE INDEX jobs_by_state ON jobs(state, due_at);

-- The provider backup records of a job: one, or one per shard of a cluster instance.
CREATE TABLE job_shards (
    job_id          TEXT NOT NULL REFERENCES jobs(id),
    backup_id       TEXT NOT NULL,
    shard_id        TEXT NOT NULL DEFAULT '',
    size            INTEGER,                          -- BackupSize
    provider_start  TEXT NOT NULL DEFAULT '',
    provider_end    TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL DEFAULT 'waiting',  -- waiting transferring stored failed
    object_key      TEXT,
    manifest_key    TEXT,
    upload_id       TEXT,                             -- open S3 multipart upload, if any
    temp_path       TEXT,                             -- file destination: the .partial file
    bytes_done      INTEGER NOT NULL DEFAULT 0,
    sha256          TEXT,
    rdb_version     INTEGER,
    checksum        TEXT,                             -- verified | disabled | absent
    PRIMARY KEY (job_id, backup_id)
);

-- Parts of the open multipart upload of a shard, recorded as each completes.
CREATE TABLE job_parts (
    job_id       TEXT NOT NULL,
    backup_id    TEXT NOT NULL,
    part_number  INTEGER NOT NULL,
    etag         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    PRIMARY KEY (job_id, backup_id, part_number)
);

-- What happened to a job, in order.
CREATE TABLE job_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL
);
CREATE INDEX job_events_by_job ON job_events(job_id, id);

-- Per (policy, instance) schedule state; instance_uuid '*' holds the policy's own cron state.
CREATE TABLE schedule_state (
    policy         TEXT NOT NULL,
    instance_uuid  TEXT NOT NULL,
    last_due_at    INTEGER,
    next_due_at    INTEGER,
    last_job_id    TEXT,
    PRIMARY KEY (policy, instance_uuid)
);

-- The inventory: every known copy, at the destination or at the provider.
CREATE TABLE backups (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    location       TEXT NOT NULL,           -- destination | provider
    policy         TEXT NOT NULL,
    instance_uuid  TEXT NOT NULL,
    instance_name  TEXT NOT NULL DEFAULT '',
    job_id         TEXT,
    backup_id      TEXT NOT NULL,
    shard_id       TEXT NOT NULL DEFAULT '',
    destination    TEXT NOT NULL DEFAULT '', -- destination name ('' at the provider)
    object_key     TEXT,
    size           INTEGER,
    sha256         TEXT,
    rdb_version    INTEGER,
    requested_at   INTEGER NOT NULL,         -- when the job asked for the backup
    verified       INTEGER NOT NULL DEFAULT 0,
    verified_at    INTEGER,
    pinned         INTEGER NOT NULL DEFAULT 0,
    missing        INTEGER NOT NULL DEFAULT 0,
    deleted_at     INTEGER
);
CREATE UNIQUE INDEX backups_one_row_per_copy ON backups(location, destination, backup_id);
CREATE INDEX backups_by_instance ON backups(policy, instance_uuid, requested_at);

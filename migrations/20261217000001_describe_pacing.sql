-- Fleet-wide pacing of DescribeBackups: per instance, the earliest time (ms since the epoch)
-- the next listing may be made, whichever process or replica makes it. One row per instance
-- ever listed; a reservation moves next_at one poll interval on.
CREATE TABLE describe_pacing (
    instance_uuid TEXT PRIMARY KEY,
    next_at       INTEGER NOT NULL
);

-- Indexes over the open jobs only, for the queries every daemon makes several times a second:
-- the claim (open jobs in due order), the heartbeat and the fair share (open jobs with an
-- owner), and the cancel watch (open jobs with a cancel request). Without them each of those
-- scanned every open job, and on PostgreSQL with 10,000 open jobs and 3 replicas they were most
-- of the database's CPU (BENCHMARKS.md, Replicas); a journal's finished jobs are never read.
CREATE INDEX jobs_open_by_due ON jobs(due_at, id)
    WHERE state NOT IN ('stored', 'failed', 'missed');
CREATE INDEX jobs_open_owned ON jobs(owner, heartbeat_at)
    WHERE owner IS NOT NULL AND state NOT IN ('stored', 'failed', 'missed');
CREATE INDEX jobs_open_cancel_requested ON jobs(id)
    WHERE cancel_requested_at IS NOT NULL AND state NOT IN ('stored', 'failed', 'missed');

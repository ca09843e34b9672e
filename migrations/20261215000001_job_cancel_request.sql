-- `rdbvault jobs cancel`: when an operator asked an open job to stop. Whoever owns the job (a
-- daemon, a backup-now, on any host sharing the DB) sees it at the job's next step and records the
-- job `failed` ("cancelled by operator"); a job no live process owns is failed by `jobs cancel`
-- itself. A request, not a state: the state still changes only through the job's claim.
-- Migrations are append-only: never edit a released one.
ALTER TABLE jobs ADD COLUMN cancel_requested_at INTEGER;

-- The jobs of a policy since a given time, without reading its whole history: the pairs
-- `rdbvault_verified_backups` exports are found from the latest run's jobs (src/store/schedule.rs).
-- Migrations are append-only: never edit a released one.
CREATE INDEX jobs_by_policy_created ON jobs(policy, created_at);

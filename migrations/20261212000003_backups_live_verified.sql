-- The live verified copies of a policy, without reading its deleted history: the daemon counts
-- them for `rdbvault_verified_backups` every few seconds (Store::verified_set_counts).
-- Migrations are append-only: never edit a released one.
CREATE INDEX backups_live_verified ON backups(policy, instance_uuid, location)
    WHERE deleted_at IS NULL AND verified = 1 AND missing = 0;

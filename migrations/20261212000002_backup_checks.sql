-- The last re-verification of a copy (`verify`, or the daemon's `verify:` rounds): when, and why
-- it failed (NULL: it passed). `verified`/`missing` say what the copy is now; these say which
-- check made it so and when, for `jobs`, `jobs show` and `backups`.
-- Migrations are append-only: never edit a released one.
ALTER TABLE backups ADD COLUMN last_check_at INTEGER;
ALTER TABLE backups ADD COLUMN last_check_error TEXT;

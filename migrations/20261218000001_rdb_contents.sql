-- What is inside each stored RDB file (redis version, save time, memory in use, keys per
-- database), read while it streamed: JSON of rdb::contents::Contents, or NULL when unread
-- (stored before this column, or the file's contents could not be read to the end).
ALTER TABLE job_shards ADD COLUMN rdb_contents TEXT;
ALTER TABLE backups ADD COLUMN rdb_contents TEXT;

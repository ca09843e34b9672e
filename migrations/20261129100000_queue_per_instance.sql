-- Two policies may select the same instance (say hourly to a directory, daily to S3): each gets
-- its own open job, queued per instance by the dispatcher (the provider makes one backup of an
-- instance at a time). Only a second open job of the *same* policy is refused (a skipped run).
DROP INDEX jobs_one_open_per_instance;
CREATE UNIQUE INDEX jobs_one_open_per_policy_instance ON jobs(policy, instance_uuid)
    WHERE state NOT IN ('stored', 'failed', 'missed');
CREATE INDEX jobs_open_by_instance ON jobs(instance_uuid)
    WHERE state NOT IN ('stored', 'failed', 'missed');

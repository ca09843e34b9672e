//! Per (policy, instance) schedule state. The row with instance `*` is the policy's own cron
//! bookkeeping: the last cron time it acted on, and the next one.

use super::sql::{sql, sql_as};
use super::{Result, Store};

/// The instance key of a policy's own schedule row.
pub const POLICY_ROW: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct ScheduleRow {
    pub policy: String,
    pub instance_uuid: String,
    pub last_due_at: Option<i64>,
    pub next_due_at: Option<i64>,
    pub last_job_id: Option<String>,
}

impl Store {
    pub async fn schedule_get(&self, policy: &str, instance: &str) -> Result<Option<ScheduleRow>> {
        Ok(sql_as::<ScheduleRow>(
            "SELECT policy, instance_uuid, last_due_at, next_due_at, last_job_id
             FROM schedule_state WHERE policy = $1 AND instance_uuid = $2",
        )
        .bind(policy.to_string())
        .bind(instance.to_string())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn schedule_all(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sql_as::<ScheduleRow>(
            "SELECT policy, instance_uuid, last_due_at, next_due_at, last_job_id
             FROM schedule_state ORDER BY policy, instance_uuid",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The instances of `policy` that `rdbvault_verified_backups` exports: those the policy
    /// selects as far as the state DB knows. The scheduler resolves the selectors at each run
    /// and gives every selected instance a job (or finds it busy with an open one), so an
    /// instance counts when
    ///
    /// - it got a job in the policy's latest run that created any (its schedule row's
    ///   `last_due_at` is the newest of the policy), or
    /// - its last scheduled job was still open at that run (finished after that run's cron
    ///   time, or not yet), so that run found it busy, or
    /// - it has a job created since that run (`backup-now`), or any job when no run has
    ///   created one yet, or an open job.
    ///
    /// An instance the policy no longer selects gets no job in the next run and so drops out;
    /// a run that created no job at all (the API was down, the selectors match nothing)
    /// changes nothing.
    ///
    /// Runs every few seconds in the daemon, so it never reads a policy's whole job history:
    /// the recent jobs come from a range of `jobs_by_policy_created`, the open ones from the
    /// partial index of open jobs (`+policy` keeps the planner off `jobs_by_policy`).
    pub async fn selected_instances(&self, policy: &str) -> Result<Vec<String>> {
        // The planner hints are SQLite's; PostgreSQL's planner picks the indexes itself.
        let (recent_jobs, open_policy) = match self.kind() {
            super::Kind::Sqlite => ("jobs j INDEXED BY jobs_by_policy_created", "+j.policy"),
            super::Kind::Postgres => ("jobs j", "j.policy"),
        };
        let rows: Vec<(String,)> = sql_as(format!(
            "WITH latest AS (
               SELECT MAX(last_due_at) AS at FROM schedule_state
               WHERE policy = $1 AND instance_uuid != '*')
             SELECT s.instance_uuid FROM schedule_state s, latest
             WHERE s.policy = $1 AND s.instance_uuid != '*'
               AND (s.last_due_at >= latest.at
                    OR EXISTS (SELECT 1 FROM jobs j WHERE j.id = s.last_job_id
                               AND (j.finished_at IS NULL OR j.finished_at >= latest.at)))
             UNION
             SELECT j.instance_uuid FROM {recent_jobs}
             WHERE j.policy = $1
               AND j.created_at >= COALESCE((SELECT at FROM latest), -9223372036854775808)
             UNION
             SELECT j.instance_uuid FROM jobs j
             WHERE {open_policy} = $1 AND j.state NOT IN ('stored', 'failed', 'missed')
             ORDER BY 1"
        ))
        .bind(policy.to_string())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(i,)| i).collect())
    }

    /// Records that the run due at `last_due` was acted on and when the next one is.
    pub async fn schedule_set(
        &self,
        policy: &str,
        instance: &str,
        last_due: Option<i64>,
        next_due: Option<i64>,
        last_job_id: Option<&str>,
    ) -> Result<()> {
        sql(
            "INSERT INTO schedule_state (policy, instance_uuid, last_due_at, next_due_at, last_job_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (policy, instance_uuid) DO UPDATE SET
               last_due_at = COALESCE(excluded.last_due_at, schedule_state.last_due_at),
               next_due_at = excluded.next_due_at,
               last_job_id = COALESCE(excluded.last_job_id, schedule_state.last_job_id)",
        )
        .bind(policy.to_string())
        .bind(instance.to_string())
        .bind(last_due)
        .bind(next_due)
        .bind(last_job_id.map(str::to_string))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jobs::{Claim, NewJob};

    fn job(id: &str, policy: &str, instance: &str, trigger: &'static str, at: i64) -> NewJob {
        NewJob {
            id: id.into(),
            policy: policy.into(),
            instance_uuid: instance.into(),
            instance_name: String::new(),
            region_id: String::new(),
            destination: "d".into(),
            trigger,
            due_at: at,
            start_by: at + 60_000,
            deadline_at: at + 300_000,
            created_at: at,
            owner: Some("me".into()),
            schedule_key: None,
        }
    }

    /// What the scheduler's `fire` writes for one instance it selected and gave a job.
    async fn scheduled(store: &Store, id: &str, instance: &str, cron: i64) {
        store
            .insert_job(&job(id, "p", instance, "schedule", cron + 5))
            .await
            .unwrap();
        store
            .schedule_set("p", instance, Some(cron), None, Some(id))
            .await
            .unwrap();
    }

    async fn finish(store: &Store, id: &str, at: i64) {
        store
            .fail_job(&Claim::new(id, "me"), at, "verification failed")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn selected_instances_follow_the_latest_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        let selected = |p: &'static str| {
            let store = store.clone();
            async move { store.selected_instances(p).await.unwrap() }
        };
        assert!(selected("p").await.is_empty());

        // Run 1 (cron time 1000) selects A, B and C; A and B fail at once, C runs long.
        for (id, i) in [("a1", "A"), ("b1", "B"), ("c1", "C")] {
            scheduled(&store, id, i, 1000).await;
        }
        finish(&store, "a1", 1500).await;
        finish(&store, "b1", 1500).await;
        assert_eq!(selected("p").await, ["A", "B", "C"]);

        // Run 2 (2000) selects A and C: B left the policy; C is still busy, so gets no job.
        scheduled(&store, "a2", "A", 2000).await;
        store
            .schedule_set("p", POLICY_ROW, Some(2000), Some(3000), None)
            .await
            .unwrap();
        assert_eq!(selected("p").await, ["A", "C"]);
        // C's long job ends after run 2: C still counts (that run found it busy).
        finish(&store, "c1", 2500).await;
        finish(&store, "a2", 2500).await;
        assert_eq!(selected("p").await, ["A", "C"]);

        // Run 3 (3000) creates no job at all (the API was down): nothing changes.
        store
            .schedule_set("p", POLICY_ROW, Some(3000), Some(4000), None)
            .await
            .unwrap();
        assert_eq!(selected("p").await, ["A", "C"]);

        // Run 4 (4000) selects only A: C drops out.
        scheduled(&store, "a4", "A", 4000).await;
        assert_eq!(selected("p").await, ["A"]);

        // A `backup-now` job since the latest run counts, as does any job of a policy that
        // has had no scheduled run yet; other policies are apart.
        store
            .insert_job(&job("b5", "p", "B", "manual", 4100))
            .await
            .unwrap();
        assert_eq!(selected("p").await, ["A", "B"]);
        store
            .insert_job(&job("q1", "q", "Q", "manual", 10))
            .await
            .unwrap();
        finish(&store, "q1", 20).await;
        assert_eq!(selected("q").await, ["Q"]);
        assert_eq!(selected("p").await, ["A", "B"]);
    }
}

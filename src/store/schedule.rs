//! Per (policy, instance) schedule state. The row with instance `*` is the policy's own cron
//! bookkeeping: the last cron time it acted on, and the next one.

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
        Ok(sqlx::query_as::<_, ScheduleRow>(
            "SELECT policy, instance_uuid, last_due_at, next_due_at, last_job_id
             FROM schedule_state WHERE policy = ? AND instance_uuid = ?",
        )
        .bind(policy.to_string())
        .bind(instance.to_string())
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn schedule_all(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sqlx::query_as::<_, ScheduleRow>(
            "SELECT policy, instance_uuid, last_due_at, next_due_at, last_job_id
             FROM schedule_state ORDER BY policy, instance_uuid",
        )
        .fetch_all(self.pool())
        .await?)
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
        sqlx::query(
            "INSERT INTO schedule_state (policy, instance_uuid, last_due_at, next_due_at, last_job_id)
             VALUES (?, ?, ?, ?, ?)
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

//! What an operator asks of a job, and the reads `status` makes.
//!
//! A cancel request (`jobs.cancel_requested_at`) is the one write here that carries no claim:
//! it is a request to whoever owns the job, not a change of its state. The owner sees it at the
//! job's next step and fails the job through its claim (`Store::fail_job`), like any failure;
//! `jobs cancel` does the same itself only after claiming a job that no live process owns.

use super::jobs::{JOB_COLUMNS, JobRow};
use super::sql::sql_as;
use super::{Result, Store};

impl Store {
    /// Asks an open job to stop: records when (the first request stands; asking again changes
    /// nothing). `None` when the job is not open (it ended meanwhile, or there is no such id).
    pub async fn request_cancel(&self, job_id: &str, now: i64) -> Result<Option<i64>> {
        let at: Option<(i64,)> = sql_as(
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $1)
             WHERE id = $2 AND state NOT IN ('stored','failed','missed')
             RETURNING cancel_requested_at",
        )
        .bind(now)
        .bind(job_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        Ok(at.map(|(t,)| t))
    }

    /// When an operator asked the job to stop, if one did.
    pub async fn cancel_requested(&self, job_id: &str) -> Result<Option<i64>> {
        let at: Option<(Option<i64>,)> =
            sql_as("SELECT cancel_requested_at FROM jobs WHERE id = $1")
                .bind(job_id.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(at.and_then(|(t,)| t))
    }

    /// The open jobs an operator asked to stop: what the cancel watch polls, one query for
    /// all the jobs a process runs (a scan of the open jobs' partial index).
    pub async fn cancel_requested_jobs(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sql_as(
            "SELECT id FROM jobs
             WHERE state NOT IN ('stored','failed','missed') AND cancel_requested_at IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Every open job, oldest due first (from the partial index of open jobs).
    pub async fn open_jobs(&self) -> Result<Vec<JobRow>> {
        Ok(sql_as::<JobRow>(format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE state NOT IN ('stored','failed','missed')
             ORDER BY due_at, id"
        ))
        .fetch_all(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::jobs::{Claim, Inserted, NewJob};

    fn job(id: &str, instance: &str, owner: Option<&str>) -> NewJob {
        NewJob {
            id: id.into(),
            policy: "p".into(),
            instance_uuid: instance.into(),
            instance_name: String::new(),
            region_id: String::new(),
            destination: "d".into(),
            trigger: "schedule",
            due_at: 0,
            start_by: 10,
            deadline_at: 100,
            created_at: 0,
            owner: owner.map(str::to_string),
            schedule_key: None,
        }
    }

    #[tokio::test]
    async fn a_cancel_request_is_recorded_once_and_only_for_an_open_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        store.insert_job(&job("a", "i", Some("me"))).await.unwrap();
        assert_eq!(store.cancel_requested("a").await.unwrap(), None);
        assert_eq!(store.request_cancel("a", 5).await.unwrap(), Some(5));
        // Asking again keeps the first request's time.
        assert_eq!(store.request_cancel("a", 9).await.unwrap(), Some(5));
        assert_eq!(store.cancel_requested("a").await.unwrap(), Some(5));
        // The request changes neither the state nor the owner: only the claim holder does.
        let row = store.job("a").await.unwrap();
        assert_eq!(
            (row.state.as_str(), row.owner.as_deref()),
            ("pending", Some("me"))
        );
        store
            .fail_job(&Claim::new("a", "me"), 6, "x")
            .await
            .unwrap();
        assert_eq!(store.request_cancel("a", 7).await.unwrap(), None);
        assert_eq!(store.request_cancel("nope", 7).await.unwrap(), None);
        assert_eq!(store.cancel_requested("nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn open_jobs_lists_only_open_ones_and_an_idle_only_insert_names_the_busy_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        store.insert_job(&job("a", "i", None)).await.unwrap();
        store.insert_job(&job("b", "j", Some("me"))).await.unwrap();
        store
            .fail_job(&Claim::new("b", "me"), 1, "x")
            .await
            .unwrap();
        let open: Vec<_> = store
            .open_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(open, ["a"]);
        // Another policy's job may queue behind a scheduled one, but not an idle-only insert.
        let mut other = job("c", "i", None);
        other.policy = "q".into();
        assert_eq!(
            store.insert_job_if_instance_idle(&other).await.unwrap(),
            Inserted::InstanceBusy {
                open_job: "a".into()
            }
        );
        assert_eq!(store.insert_job(&other).await.unwrap(), Inserted::Created);
        let mut free = job("d", "j", None);
        free.policy = "q".into();
        assert_eq!(
            store.insert_job_if_instance_idle(&free).await.unwrap(),
            Inserted::Created
        );
    }
}

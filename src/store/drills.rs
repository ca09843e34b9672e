//! The journal of restore drills: each time a stored set was loaded into a throwaway
//! `redis-server` and its keys counted, with the result. It feeds `backups` (the last drill of
//! each set), the drill gauges every replica exports, and the daemon's choice of what to drill
//! next (the instances drilled least recently).

use super::sql::{sql, sql_as};
use super::{Result, Store};
use std::collections::HashMap;

/// A drill's result as journaled: `restored` or `failed`.
pub const RESTORED: &str = "restored";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct DrillRow {
    pub id: i64,
    /// The set drilled (its job).
    pub job_id: String,
    pub policy: String,
    pub instance_uuid: String,
    pub instance_name: String,
    /// `manual` (`rdbvault drill`) or `schedule` (the daemon).
    pub trigger: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub result: String,
    pub detail: String,
}

impl DrillRow {
    pub fn restored(&self) -> bool {
        self.result == RESTORED
    }
}

/// When each (policy, instance) last restored and last failed a drill.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DrillTimes {
    pub policy: String,
    pub instance_uuid: String,
    pub last_restored_at: Option<i64>,
    pub last_failed_at: Option<i64>,
}

const COLUMNS: &str = "id, job_id, policy, instance_uuid, instance_name, trigger, started_at, finished_at, result, detail";

impl Store {
    /// Journals a finished drill (`row.id` is ignored: the DB numbers it).
    pub async fn record_drill(&self, row: &DrillRow) -> Result<()> {
        sql(
            "INSERT INTO drills (job_id, policy, instance_uuid, instance_name, trigger, started_at, finished_at, result, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.job_id.clone())
        .bind(row.policy.clone())
        .bind(row.instance_uuid.clone())
        .bind(row.instance_name.clone())
        .bind(row.trigger.clone())
        .bind(row.started_at)
        .bind(row.finished_at)
        .bind(row.result.clone())
        .bind(row.detail.clone())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The last drill of every set drilled at least once, by set (job id).
    pub async fn last_drill_of_each_set(&self) -> Result<HashMap<String, DrillRow>> {
        let rows = sql_as::<DrillRow>(format!(
            "SELECT {COLUMNS} FROM drills d
             WHERE id = (SELECT MAX(id) FROM drills e WHERE e.job_id = d.job_id)"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|r| (r.job_id.clone(), r)).collect())
    }

    /// Per (policy, instance): the last restored and the last failed drill, for the gauges.
    pub async fn drill_times(&self) -> Result<Vec<DrillTimes>> {
        Ok(sql_as::<DrillTimes>(
            "SELECT policy, instance_uuid,
                    MAX(CASE WHEN result = 'restored' THEN finished_at END) AS last_restored_at,
                    MAX(CASE WHEN result = 'failed' THEN finished_at END) AS last_failed_at
             FROM drills GROUP BY policy, instance_uuid ORDER BY policy, instance_uuid",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The drills of one set, newest first.
    pub async fn drills_of(&self, job_id: &str) -> Result<Vec<DrillRow>> {
        Ok(sql_as::<DrillRow>(format!(
            "SELECT {COLUMNS} FROM drills WHERE job_id = $1 ORDER BY id DESC"
        ))
        .bind(job_id.to_string())
        .fetch_all(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(job: &str, instance: &str, at: i64, result: &str) -> DrillRow {
        DrillRow {
            id: 0,
            job_id: job.into(),
            policy: "p".into(),
            instance_uuid: instance.into(),
            instance_name: "n".into(),
            trigger: "manual".into(),
            started_at: at - 5,
            finished_at: at,
            result: result.into(),
            detail: format!("{result} at {at}"),
        }
    }

    #[tokio::test]
    async fn the_last_drill_of_each_set_and_each_instances_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        for d in [
            drill("j1", "a", 100, RESTORED),
            drill("j1", "a", 200, FAILED),
            drill("j2", "a", 300, RESTORED),
            drill("j3", "b", 150, FAILED),
        ] {
            store.record_drill(&d).await.unwrap();
        }
        let last = store.last_drill_of_each_set().await.unwrap();
        assert_eq!(last.len(), 3);
        assert_eq!(last["j1"].finished_at, 200);
        assert!(!last["j1"].restored());
        assert!(last["j2"].restored());
        let times = store.drill_times().await.unwrap();
        assert_eq!(
            times,
            vec![
                DrillTimes {
                    policy: "p".into(),
                    instance_uuid: "a".into(),
                    last_restored_at: Some(300),
                    last_failed_at: Some(200),
                },
                DrillTimes {
                    policy: "p".into(),
                    instance_uuid: "b".into(),
                    last_restored_at: None,
                    last_failed_at: Some(150),
                },
            ]
        );
        let of_j1 = store.drills_of("j1").await.unwrap();
        assert_eq!(
            of_j1.iter().map(|d| d.finished_at).collect::<Vec<_>>(),
            [200, 100]
        );
    }
}

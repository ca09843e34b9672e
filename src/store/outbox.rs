//! The notification outbox (`notifications`): deliveries written when something happens and
//! sent by the daemon's delivery loop (`crate::notify`). A delivery is claimed for a while by
//! one process (several replicas never send the same one at once; one that died mid-send is
//! picked up when its claim lapses), marked delivered on a 2xx, else retried later.

use super::sql::{sql, sql_as};
use super::{Kind, Result, Store};

/// A delivery to make.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub target: String,
    /// Unique per target: enqueueing the same event twice (two replicas seeing one run end)
    /// makes one delivery.
    pub event_id: String,
    pub event: String,
    pub body: String,
    pub now: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub target: String,
    pub event_id: String,
    pub event: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: i64,
}

/// Deliveries not yet made, for `status` and the readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    pub gave_up: i64,
}

impl Store {
    /// Adds a delivery; false when the target already has this event.
    pub async fn enqueue_delivery(&self, d: &NewDelivery) -> Result<bool> {
        let done = sql(
            "INSERT INTO notifications (target, event_id, event, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (target, event_id) DO NOTHING",
        )
        .bind(d.target.clone())
        .bind(d.event_id.clone())
        .bind(d.event.clone())
        .bind(d.body.clone())
        .bind(d.now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims up to `limit` deliveries due at `now` for `owner` until `until`.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        let lock = match self.kind() {
            Kind::Postgres => "FOR UPDATE SKIP LOCKED",
            Kind::Sqlite => "",
        };
        Ok(sql_as::<DeliveryRow>(format!(
            "UPDATE notifications SET claimed_by = $1, claimed_until = $2
             WHERE id IN (
                 SELECT id FROM notifications
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= $3
                   AND (claimed_until IS NULL OR claimed_until < $3)
                 ORDER BY id LIMIT $4 {lock})
             RETURNING id, target, event_id, event, body, created_at, attempts"
        ))
        .bind(owner.to_string())
        .bind(until)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn delivery_done(&self, id: i64, now: i64) -> Result<()> {
        sql("UPDATE notifications SET delivered_at = $1, attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL, last_error = NULL WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A failed attempt: tried again at `next_at`, or never again when `give_up_at` is set.
    pub async fn delivery_failed(
        &self,
        id: i64,
        next_at: i64,
        give_up_at: Option<i64>,
        error: &str,
    ) -> Result<()> {
        sql(
            "UPDATE notifications SET attempts = attempts + 1, next_attempt_at = $1, gave_up_at = $2,
                    last_error = $3, claimed_by = NULL, claimed_until = NULL
             WHERE id = $4",
        )
        .bind(next_at)
        .bind(give_up_at)
        .bind(error.to_string())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn delivery_backlog(&self) -> Result<Backlog> {
        let (pending, gave_up): (i64, i64) = sql_as(
            "SELECT COALESCE(SUM(CASE WHEN delivered_at IS NULL AND gave_up_at IS NULL THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN gave_up_at IS NOT NULL THEN 1 ELSE 0 END), 0)
             FROM notifications",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Backlog { pending, gave_up })
    }

    /// How a scheduled run of `policy` (its cron time `cron_ms`) stands: (open jobs, stored
    /// jobs, jobs that ended otherwise).
    pub async fn run_standing(&self, policy: &str, cron_ms: i64) -> Result<(i64, i64, i64)> {
        // The run's jobs are those whose schedule key is `policy ␟ instance ␟ cron_ms`.
        let escaped: String = policy
            .chars()
            .flat_map(|c| match c {
                '!' | '%' | '_' => vec!['!', c],
                c => vec![c],
            })
            .collect();
        let pattern = format!("{escaped}\u{1f}%\u{1f}{cron_ms}");
        let (open, stored, other): (i64, i64, i64) = sql_as(
            "SELECT COALESCE(SUM(CASE WHEN state NOT IN ('stored','failed','missed') THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN state = 'stored' THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN state IN ('failed','missed') THEN 1 ELSE 0 END), 0)
             FROM jobs WHERE policy = $1 AND schedule_key LIKE $2 ESCAPE '!'",
        )
        .bind(policy.to_string())
        .bind(pattern)
        .fetch_one(self.pool())
        .await?;
        Ok((open, stored, other))
    }

    /// The schedule key of a job (`None` for one made by hand).
    pub async fn schedule_key_of(&self, job_id: &str) -> Result<Option<String>> {
        let row: Option<(Option<String>,)> = sql_as("SELECT schedule_key FROM jobs WHERE id = $1")
            .bind(job_id.to_string())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(|(k,)| k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(target: &str, event_id: &str) -> NewDelivery {
        NewDelivery {
            target: target.into(),
            event_id: event_id.into(),
            event: "failed".into(),
            body: "{}".into(),
            now: 100,
        }
    }

    #[tokio::test]
    async fn a_delivery_is_claimed_by_one_process_until_done_or_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        assert!(
            store
                .enqueue_delivery(&delivery("hook", "e1"))
                .await
                .unwrap()
        );
        // The same event for the same target once; for another target too.
        assert!(
            !store
                .enqueue_delivery(&delivery("hook", "e1"))
                .await
                .unwrap()
        );
        assert!(
            store
                .enqueue_delivery(&delivery("other", "e1"))
                .await
                .unwrap()
        );
        let a = store.claim_deliveries("a", 100, 200, 10).await.unwrap();
        assert_eq!(a.len(), 2);
        // Claimed: nobody else gets them until the claim lapses.
        assert!(
            store
                .claim_deliveries("b", 150, 250, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let first = a.iter().find(|d| d.target == "hook").unwrap();
        store.delivery_done(first.id, 160).await.unwrap();
        let second = a.iter().find(|d| d.target == "other").unwrap();
        store
            .delivery_failed(second.id, 300, None, "HTTP 500")
            .await
            .unwrap();
        // Not due before its next attempt; due after; a claim that lapsed is taken over.
        assert!(
            store
                .claim_deliveries("b", 299, 400, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let retry = store.claim_deliveries("b", 300, 400, 10).await.unwrap();
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].attempts, 1);
        let taken_over = store.claim_deliveries("c", 401, 500, 10).await.unwrap();
        assert_eq!(taken_over.len(), 1);
        store
            .delivery_failed(taken_over[0].id, 0, Some(402), "gave up")
            .await
            .unwrap();
        assert!(
            store
                .claim_deliveries("d", 10_000, 20_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.delivery_backlog().await.unwrap(),
            Backlog {
                pending: 0,
                gave_up: 1
            }
        );
    }
}

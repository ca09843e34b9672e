//! Fleet-wide pacing of `DescribeBackups`: at most one listing per instance per poll interval,
//! whichever process or replica makes it.
//!
//! Each instance has a row holding the earliest time its next listing may be made. A caller
//! reserves a slot with one atomic upsert: its slot is the later of that time and now, and the
//! row moves one spacing past the slot. On PostgreSQL "now" is the database's clock, shared by
//! every replica, so a replica whose clock runs ahead cannot push the others' slots away; on
//! SQLite (one host) it is the caller's.

use super::sql::{Kind, sql_as};
use super::{Result, Store};
use std::time::Duration;

/// The database's clock in milliseconds since the epoch (PostgreSQL).
const PG_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";

impl Store {
    /// Reserves the next `DescribeBackups` slot of `instance_uuid`, slots `spacing` apart:
    /// returns how long to wait before making the call (zero when it may be made now).
    /// `now_ms` is this process's clock, used on SQLite only.
    pub async fn reserve_listing_slot(
        &self,
        instance_uuid: &str,
        spacing: Duration,
        now_ms: i64,
    ) -> Result<Duration> {
        let spacing_ms = i64::try_from(spacing.as_millis()).unwrap_or(i64::MAX / 4);
        // $1 instance, $2 spacing, $3 now (SQLite only: PostgreSQL reads its own clock).
        let now = match self.kind() {
            Kind::Postgres => PG_NOW_MS,
            Kind::Sqlite => "$3",
        };
        let text = format!(
            "INSERT INTO describe_pacing (instance_uuid, next_at) VALUES ($1, {now} + $2)
             ON CONFLICT (instance_uuid) DO UPDATE SET next_at =
               CASE WHEN describe_pacing.next_at > {now} THEN describe_pacing.next_at
                    ELSE {now} END + $2
             RETURNING next_at - $2 - {now}"
        );
        let mut query = sql_as::<(i64,)>(text)
            .bind(instance_uuid.to_string())
            .bind(spacing_ms);
        if self.kind() == Kind::Sqlite {
            query = query.bind(now_ms);
        }
        let (wait_ms,) = query.fetch_one(self.pool()).await?;
        Ok(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_stores;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_of_one_instance_are_one_spacing_apart_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let stores = temp_stores(dir.path(), 3).await;
        let spacing = Duration::from_secs(10);
        let now = chrono::Utc::now().timestamp_millis();
        let mut waits = Vec::new();
        for s in &stores {
            waits.push(s.reserve_listing_slot("i-1", spacing, now).await.unwrap());
        }
        // The first goes now, the next ones queue one spacing after each other.
        assert!(waits[0] < Duration::from_secs(1), "{waits:?}");
        for (i, w) in waits.iter().enumerate().skip(1) {
            let want = spacing * i as u32;
            assert!(
                *w <= want && *w > want - Duration::from_secs(2),
                "slot {i}: {waits:?}"
            );
        }
        // Another instance has its own slots.
        let other = stores[1]
            .reserve_listing_slot("i-2", spacing, now)
            .await
            .unwrap();
        assert!(other < Duration::from_secs(1), "{other:?}");
    }

    #[tokio::test]
    async fn a_slot_long_past_is_free_now() {
        let dir = tempfile::tempdir().unwrap();
        let stores = temp_stores(dir.path(), 1).await;
        let spacing = Duration::from_millis(200);
        let now = chrono::Utc::now().timestamp_millis();
        stores[0]
            .reserve_listing_slot("i-1", spacing, now)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = chrono::Utc::now().timestamp_millis();
        let wait = stores[0]
            .reserve_listing_slot("i-1", spacing, later)
            .await
            .unwrap();
        assert_eq!(wait, Duration::ZERO);
    }
}

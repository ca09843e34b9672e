//! Leases: work that one replica at a time does (the daily prune and reconcile,
//! re-verification), held until an expiry its holder keeps pushing back, with a fencing epoch.
//!
//! A lease is taken when it is free or expired, by one conditional upsert (atomic on both
//! backends); every new holder gets a higher epoch. A holder that was paused (GC, SIGSTOP, a
//! network partition) past its expiry may wake up still believing it holds the lease: before
//! each deletion it asks [`Store::lease_still_held`], which is false once the lease expired or
//! another holder took it (a new epoch), so a paused replica deletes nothing after it wakes.

use super::sql::{sql, sql_as};
use super::{Result, Store};

/// A lease this process holds (or held): its name, holder and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl Store {
    /// Takes `name` for `holder` until `expires_at` when it is free, expired or already this
    /// holder's (renewing it keeps its epoch). `None`: another holder has it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<Lease>> {
        let epoch: Option<(i64,)> = sql_as(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $4)
             ON CONFLICT (name) DO UPDATE SET
               epoch = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= $3
                            THEN leases.epoch ELSE leases.epoch + 1 END,
               holder = excluded.holder,
               expires_at = excluded.expires_at
             WHERE leases.expires_at < $3 OR leases.holder = excluded.holder
             RETURNING epoch",
        )
        .bind(name.to_string())
        .bind(holder.to_string())
        .bind(now)
        .bind(expires_at)
        .fetch_optional(self.pool())
        .await?;
        Ok(epoch.map(|(epoch,)| Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            epoch,
        }))
    }

    /// Pushes the lease's expiry to `expires_at` if `lease` still holds it (same holder and
    /// epoch, not expired at `now`). False: it was lost; the work under it must stop.
    pub async fn renew_lease(&self, lease: &Lease, now: i64, expires_at: i64) -> Result<bool> {
        let done = sql("UPDATE leases SET expires_at = $4
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at >= $5")
        .bind(lease.name.clone())
        .bind(lease.holder.clone())
        .bind(lease.epoch)
        .bind(expires_at)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `lease` is still held at `now` with at least `margin_ms` to run: the check made
    /// just before each deletion done under it.
    pub async fn lease_still_held(&self, lease: &Lease, now: i64, margin_ms: i64) -> Result<bool> {
        let row: Option<(i64,)> = sql_as(
            "SELECT epoch FROM leases
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at >= $4",
        )
        .bind(lease.name.clone())
        .bind(lease.holder.clone())
        .bind(lease.epoch)
        .bind(now + margin_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Lets the lease go (at shutdown), so another replica takes it at once.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        sql("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3")
            .bind(lease.name.clone())
            .bind(lease.holder.clone())
            .bind(lease.epoch)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Who holds `name` at `now`, if anyone: (holder, epoch, expires_at).
    pub async fn lease_holder(&self, name: &str, now: i64) -> Result<Option<(String, i64, i64)>> {
        Ok(sql_as(
            "SELECT holder, epoch, expires_at FROM leases WHERE name = $1 AND expires_at >= $2",
        )
        .bind(name.to_string())
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn one_holder_at_a_time_and_a_new_epoch_for_each_new_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = temp_store(dir.path()).await;
        let a = store
            .acquire_lease("prune", "a", 0, 100)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.epoch, 1);
        // Held: b cannot take it; a renews it and keeps its epoch.
        assert!(
            store
                .acquire_lease("prune", "b", 50, 150)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.renew_lease(&a, 90, 200).await.unwrap());
        let again = store
            .acquire_lease("prune", "a", 95, 210)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.epoch, 1);
        assert!(store.lease_still_held(&a, 100, 10).await.unwrap());
        // a is paused past its expiry; b takes the lease with a new epoch.
        let b = store
            .acquire_lease("prune", "b", 211, 300)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.epoch, 2);
        // a wakes: its lease is gone, whatever it believes; it can neither renew nor delete.
        assert!(!store.lease_still_held(&a, 212, 0).await.unwrap());
        assert!(!store.renew_lease(&a, 212, 400).await.unwrap());
        assert!(store.lease_still_held(&b, 212, 0).await.unwrap());
        // Not enough time left on the lease for a deletion: not held for that purpose.
        assert!(!store.lease_still_held(&b, 290, 20).await.unwrap());
        assert_eq!(
            store.lease_holder("prune", 212).await.unwrap(),
            Some(("b".to_string(), 2, 300))
        );
        // Released: a takes it at once, with a new epoch (b's work is fenced off).
        store.release_lease(&b).await.unwrap();
        let a2 = store
            .acquire_lease("prune", "a", 213, 400)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a2.epoch, 3);
        assert!(!store.lease_still_held(&b, 214, 0).await.unwrap());
        // Leases are per name.
        assert!(
            store
                .acquire_lease("reverify", "b", 214, 400)
                .await
                .unwrap()
                .is_some()
        );
    }
}

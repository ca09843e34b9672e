//! Which job an id typed by a person names, and the short ids tables show.
//!
//! Every command that takes an id (`jobs show|cancel|retry`, `verify`, `fetch`, `backups
//! pin|unpin`) goes through [`Store::find`]: a job id, a provider backup id (any shard of the
//! job), or a unique start of either. An exact id wins over a start; a start that fits several
//! jobs is [`Error::Ambiguous`], naming some of them. Tables print [`Store::short_ids`]: the
//! shortest start (at least [`SHORT_ID_LEN`] characters) that [`Store::find`] resolves back to
//! the same job, so a short id copied from a table always works.

use super::sql::sql_as;
use super::{Error, JobRow, Result, Store};
use std::collections::HashMap;

/// The fewest characters of a job id a table shows.
pub const SHORT_ID_LEN: usize = 8;

/// What an id given by a person names.
#[derive(Debug, Clone)]
pub struct Named {
    pub job: JobRow,
    /// Set when the id named one provider backup of the job (its whole id, or a start that fits
    /// that backup alone): one shard's copy of a cluster job rather than the whole job.
    pub backup_id: Option<String>,
}

/// (job id, provider backup id when the match was on a backup id).
type Candidate = (String, Option<String>);

impl Store {
    /// The job `given` names; see the module docs.
    pub async fn find(&self, given: &str) -> Result<Named> {
        let exact = self.candidates(given, None, 6).await?;
        let candidates = if exact.is_empty() {
            self.candidates(given, Some(given), 6).await?
        } else {
            exact
        };
        let mut jobs: Vec<&str> = candidates.iter().map(|(job, _)| job.as_str()).collect();
        jobs.dedup();
        match jobs.as_slice() {
            [] => Err(Error::NotFound(given.to_string())),
            [job] => {
                let job = self.job(job).await?;
                let mut backups = candidates.iter().map(|(_, backup)| backup.as_deref());
                let first = backups.next().flatten();
                let backup_id = backups
                    .all(|b| b == first)
                    .then(|| first.map(str::to_string))
                    .flatten();
                Ok(Named { job, backup_id })
            }
            many => Err(Error::Ambiguous {
                given: given.to_string(),
                candidates: many.iter().take(5).map(|id| id.to_string()).collect(),
            }),
        }
    }

    /// The job `given` names ([`Store::find`] without the backup detail).
    pub async fn find_job(&self, given: &str) -> Result<JobRow> {
        Ok(self.find(given).await?.job)
    }

    /// For each job id, the shortest start of it (at least [`SHORT_ID_LEN`] characters, never
    /// ending in `-`) that names that job alone, against every job id and provider backup id in
    /// the DB. Ids the DB does not hold are given back whole.
    pub async fn short_ids(&self, ids: &[String]) -> Result<HashMap<String, String>> {
        let mut short = HashMap::with_capacity(ids.len());
        for id in ids {
            if short.contains_key(id) {
                continue;
            }
            let mut chosen = id.clone();
            if self.candidates(id, None, 1).await?.is_empty() {
                // Not in the DB (a provider backup rdbvault did not make): shown whole.
                short.insert(id.clone(), chosen);
                continue;
            }
            for (n, c) in id.char_indices().skip(SHORT_ID_LEN - 1) {
                let start = &id[..n + c.len_utf8()];
                if start.ends_with('-') || start.len() == id.len() {
                    continue;
                }
                let fits = self.candidates(start, Some(start), 3).await?;
                if fits.iter().all(|(job, _)| job == id) && !fits.is_empty() {
                    chosen = start.to_string();
                    break;
                }
            }
            short.insert(id.clone(), chosen);
        }
        Ok(short)
    }

    /// Jobs whose id or any provider backup id equals `given`, or (`prefix` set) starts with
    /// `prefix`; at most `limit` rows, ordered by job id.
    async fn candidates(
        &self,
        given: &str,
        prefix: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Candidate>> {
        // `substr` rather than LIKE: a literal, case-sensitive start on both backends (SQLite's
        // LIKE ignores case, PostgreSQL's does not).
        let rows: Vec<Candidate> = sql_as(
            "SELECT id, NULL FROM jobs WHERE id = $1 OR substr(id, 1, length($2)) = $2
             UNION SELECT job_id, backup_id FROM job_shards
               WHERE backup_id = $1 OR substr(backup_id, 1, length($2)) = $2
             UNION SELECT job_id, backup_id FROM backups
               WHERE job_id IS NOT NULL AND (backup_id = $1 OR substr(backup_id, 1, length($2)) = $2)
             ORDER BY 1, 2 LIMIT $3",
        )
        .bind(given.to_string())
        .bind(prefix.map(str::to_string))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::jobs::Claim;
    use crate::store::shards::ShardRow;
    use crate::store::tests::new_job;

    /// Two jobs made in the same millisecond (time-ordered ids share a long start), the first
    /// with two shards whose backup ids share a start.
    async fn two_jobs() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::testing::temp_store(dir.path()).await;
        for (id, instance) in [(A, "i1"), (B, "i2")] {
            store
                .insert_job(&new_job(id, instance, Some("me")))
                .await
                .unwrap();
        }
        let shard = |job: &str, backup: &str| ShardRow::waiting(job, backup, None);
        store
            .insert_shards(
                &Claim::new(A, "me"),
                &[shard(A, "bk_7f3e"), shard(A, "bk_7f3f")],
            )
            .await
            .unwrap();
        (dir, store)
    }
    const A: &str = "01a228b8-80f7-7045-b9e3-4c3385f2aa89";
    const B: &str = "01a228b8-80fa-723c-98bd-3ec426a3beff";

    #[tokio::test]
    async fn one_resolver_takes_a_job_id_a_backup_id_or_a_unique_start_of_either() {
        let (_dir, store) = two_jobs().await;
        let found = async |given: &str| store.find(given).await.map(|n| (n.job.id, n.backup_id));
        assert_eq!(found(A).await.unwrap(), (A.into(), None), "a whole job id");
        assert_eq!(found("01a228b8-80f7").await.unwrap().0, A, "a unique start");
        assert_eq!(
            found("bk_7f3e").await.unwrap(),
            (A.into(), Some("bk_7f3e".into())),
            "a provider backup id names the job and that backup"
        );
        assert_eq!(
            found("bk_7f").await.unwrap(),
            (A.into(), None),
            "a start of two backup ids of one job names the job"
        );
        match found("01a228b8").await.unwrap_err() {
            Error::Ambiguous { candidates, .. } => assert_eq!(candidates, [A, B]),
            e => panic!("{e}"),
        }
        // A start is literal (`_` and `%` are no wildcards) and case-sensitive.
        assert!(matches!(found("bk%").await, Err(Error::NotFound(_))));
        assert!(matches!(found("BK_7F").await, Err(Error::NotFound(_))));
        assert!(matches!(
            found("01a228b8_80f7").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(found("nothing").await, Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn short_ids_are_the_shortest_start_that_resolves_back_to_the_job() {
        let (_dir, store) = two_jobs().await;
        let other = "7c4d02aa-1e55-4f0b-9a7e-2b1f0c9d8e71";
        store.insert_job(&new_job(other, "i3", None)).await.unwrap();
        let ids = [A.to_string(), B.to_string(), other.to_string()];
        let short = store.short_ids(&ids).await.unwrap();
        // The first 12 hex digits are shared: the start goes on past the `-` until they differ.
        assert_eq!(short[A], "01a228b8-80f7");
        assert_eq!(short[B], "01a228b8-80fa");
        assert_eq!(short[other], "7c4d02aa");
        for id in &ids {
            assert_eq!(&store.find_job(&short[id]).await.unwrap().id, id);
        }
        // A backup id of another job that starts like this job's id makes its short id longer.
        store
            .insert_shards(
                &Claim::new(A, "me"),
                &[ShardRow::waiting(A, "7c4d02aa-ff", None)],
            )
            .await
            .unwrap();
        let short = store.short_ids(&ids[2..]).await.unwrap();
        assert_eq!(short[other], "7c4d02aa-1");
        assert_eq!(store.find_job("7c4d02aa-1").await.unwrap().id, other);
    }
}

//! Operators' cancel requests (`jobs cancel`, recorded in the state DB) reach the jobs this
//! process runs through one watcher: every [`POLL`] it asks the DB once which open jobs have a
//! request, and cancels the tokens of those it runs. One query per process per poll, however
//! many jobs run: with thousands of jobs waiting on the provider, a query per job per poll
//! would be most of the database's load.

use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the state DB is asked: a cancelled transfer stops within about this long.
pub const POLL: Duration = Duration::from_millis(500);

/// The jobs this process runs and the token each one's steps wait on.
#[derive(Debug, Default)]
pub struct CancelWatch {
    jobs: Mutex<HashMap<String, CancellationToken>>,
    /// Whether the polling task runs (started by the first registration).
    started: std::sync::atomic::AtomicBool,
}

/// A job's place in the watch; dropping it takes the job out.
pub struct Watched {
    watch: Arc<CancelWatch>,
    job_id: String,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watch.lock().remove(&self.job_id);
    }
}

impl CancelWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `job_id` until the returned guard is dropped: `stop` is cancelled once an
    /// operator's cancel request for the job is in `store`. The polling task starts with the
    /// first job and ends when the watch is dropped.
    pub fn watch(
        self: &Arc<Self>,
        store: &Store,
        job_id: &str,
        stop: CancellationToken,
    ) -> Watched {
        self.lock().insert(job_id.to_string(), stop);
        if !self.started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tokio::spawn(poll(Arc::downgrade(self), store.clone()));
        }
        Watched {
            watch: self.clone(),
            job_id: job_id.to_string(),
        }
    }
}

/// The polling task: stops when the last handle on the watch is gone.
async fn poll(watch: Weak<CancelWatch>, store: Store) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(watch) = watch.upgrade() else {
            return;
        };
        if watch.lock().is_empty() {
            continue;
        }
        // A DB that cannot be read says nothing: the next poll asks again, and each step
        // re-reads the request before it starts.
        let Ok(requested) = store.cancel_requested_jobs().await else {
            continue;
        };
        let jobs = watch.lock();
        for id in requested {
            if let Some(stop) = jobs.get(&id).filter(|t| !t.is_cancelled()) {
                tracing::info!(
                    job_id = %id,
                    "an operator asked to cancel the job; stopping at the next safe point"
                );
                stop.cancel();
            }
        }
    }
}

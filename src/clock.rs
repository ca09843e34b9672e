//! The only place that reads wall-clock time. Decisions (deadlines, windows, retention ages,
//! job timestamps) take an injected [`SharedClock`], so tests can set "now" by hand; display and
//! process-liveness code (tables, `/readyz` ages, the watchdog) calls [`wall_now`].

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
/// Its lock's holders only read or add to a time, so it is never poisoned (the `expect`s
/// below cannot fail).
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// Wall time for display and process liveness only; anything that decides uses a
/// [`SharedClock`].
pub fn wall_now() -> DateTime<Utc> {
    Utc::now()
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

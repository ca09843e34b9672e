//! One job = one policy run for one instance: its states ([`state`]) and the runner that moves
//! it through them ([`runner`]).

pub mod runner;
pub mod state;

pub use runner::{Context, Outcome, PollSettings, ProgressFn, run_job};
pub use state::{Event, State};

//! What a job is: one policy run for one instance, and the states it moves through
//! ([`state`]). A leaf: the state DB stores these states, the runner ([`crate::runner`]) drives
//! them.

pub mod state;

pub use state::{Event, ShardState, State};

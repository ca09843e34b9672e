//! The job's states (docs/product.md §3) and the only transitions between them, as a pure function.
//!
//! `pending → requested → snapshotting → transferring → verifying → stored`, or `failed` from any
//! open state, or `missed` from `pending` (it could not start inside its start window). One way
//! back: `requested → pending` when no backup carries the job's token after a bounded search,
//! so `CreateBackup` is sent again.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Requested,
    Snapshotting,
    Transferring,
    Verifying,
    Stored,
    Failed,
    Missed,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Requested,
        State::Snapshotting,
        State::Transferring,
        State::Verifying,
        State::Stored,
        State::Failed,
        State::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Requested => "requested",
            State::Snapshotting => "snapshotting",
            State::Transferring => "transferring",
            State::Verifying => "verifying",
            State::Stored => "stored",
            State::Failed => "failed",
            State::Missed => "missed",
        }
    }

    /// Parses a state from the DB; an unknown one reads as failed (it can only come from a
    /// newer version).
    pub fn from_str_lossy(s: &str) -> State {
        s.parse().unwrap_or(State::Failed)
    }

    /// Stored, failed and missed jobs never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Stored | State::Failed | State::Missed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables align states with `{:<12}`.
        f.pad(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown job state `{s}`; one of: {}",
                    State::ALL.map(|s| s.as_str()).join(", ")
                )
            })
    }
}

impl TryFrom<String> for State {
    type Error = String;

    /// A state read from the state DB. An unknown one (written by a newer version, or a damaged
    /// DB) is an error that names it, so a row is never silently taken for another state.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl PartialEq<&str> for State {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for State {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// Where one shard (one provider backup record) of a job is: `waiting` for its transfer,
/// `transferring`, `stored` (verified and visible at the destination) or `failed` (its last
/// attempt failed; the job may try again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    Waiting,
    Transferring,
    Stored,
    Failed,
}

impl ShardState {
    pub const ALL: [ShardState; 4] = [
        ShardState::Waiting,
        ShardState::Transferring,
        ShardState::Stored,
        ShardState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Waiting => "waiting",
            ShardState::Transferring => "transferring",
            ShardState::Stored => "stored",
            ShardState::Failed => "failed",
        }
    }
}

impl fmt::Display for ShardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: tables align states with `{:<12}`.
        f.pad(self.as_str())
    }
}

impl TryFrom<String> for ShardState {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        ShardState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown shard state `{s}` in the state DB"))
    }
}

impl PartialEq<&str> for ShardState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `CreateBackup` was accepted (or its backup was found by token).
    CreateAccepted,
    /// Records with the job's token exist, not all finished.
    SnapshotRunning,
    /// Every record with the job's token is finished.
    SnapshotFinished,
    /// Every shard's bytes are at the destination, verified and finalised.
    TransferDone,
    /// The destination holds what the DB says.
    Verified,
    /// Something failed for good (or the deadline passed).
    Fail,
    /// It could not start inside its start window.
    Miss,
    /// No record carries the job's token after a bounded search: `CreateBackup` did not take
    /// effect, so it may be sent again.
    CreateNotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job cannot go from {from} on {event:?}")]
pub struct InvalidTransition {
    pub from: State,
    pub event: Event,
}

/// The next state, or an error for a transition the lifecycle does not allow.
pub fn transition(from: State, event: Event) -> Result<State, InvalidTransition> {
    use Event as E;
    use State as S;
    let to = match (from, event) {
        (S::Pending, E::CreateAccepted) => S::Requested,
        (S::Requested | S::Snapshotting, E::SnapshotRunning) => S::Snapshotting,
        (S::Requested | S::Snapshotting, E::SnapshotFinished) => S::Transferring,
        (S::Transferring, E::TransferDone) => S::Verifying,
        (S::Verifying, E::Verified) => S::Stored,
        (S::Pending, E::Miss) => S::Missed,
        (S::Requested, E::CreateNotFound) => S::Pending,
        (s, E::Fail) if !s.is_terminal() => S::Failed,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use State as S;

    #[test]
    fn transition_table() {
        let allowed = [
            (S::Pending, E::CreateAccepted, S::Requested),
            (S::Requested, E::SnapshotRunning, S::Snapshotting),
            (S::Snapshotting, E::SnapshotRunning, S::Snapshotting),
            (S::Requested, E::SnapshotFinished, S::Transferring),
            (S::Snapshotting, E::SnapshotFinished, S::Transferring),
            (S::Transferring, E::TransferDone, S::Verifying),
            (S::Verifying, E::Verified, S::Stored),
            (S::Pending, E::Miss, S::Missed),
            (S::Requested, E::CreateNotFound, S::Pending),
            (S::Pending, E::Fail, S::Failed),
            (S::Requested, E::Fail, S::Failed),
            (S::Snapshotting, E::Fail, S::Failed),
            (S::Transferring, E::Fail, S::Failed),
            (S::Verifying, E::Fail, S::Failed),
        ];
        let events = [
            E::CreateAccepted,
            E::SnapshotRunning,
            E::SnapshotFinished,
            E::TransferDone,
            E::Verified,
            E::Fail,
            E::Miss,
            E::CreateNotFound,
        ];
        // Every (state, event) pair: allowed ones give the listed state, all others are refused.
        for from in S::ALL {
            for event in events {
                let want = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (transition(from, event), want) {
                    (Ok(to), Some(w)) => assert_eq!(to, w, "{from} on {event:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{from} on {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn terminal_states_never_move() {
        for s in [S::Stored, S::Failed, S::Missed] {
            assert!(s.is_terminal());
            assert!(transition(s, E::Fail).is_err());
        }
        assert!(
            transition(S::Requested, E::Miss).is_err(),
            "only a job that never started is missed"
        );
        assert!(
            transition(S::Pending, E::Verified).is_err(),
            "no skipping to stored"
        );
    }

    #[test]
    fn names_round_trip() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("done".parse::<State>().is_err());
    }
}

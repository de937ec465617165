//! Legal holds against the retention purge: what the auditor placed and
//! released, and what the archive held right before each release and at
//! the end.
//!
//! A purge that starts at `s` deletes rows older than `s - keep`. A hold
//! confirmed at `c` and released at `r` (or still in force at the end)
//! is in force for every purge that starts between them, so every row it
//! covers that is younger than `c - keep` — no purge before the hold
//! could reach it — must still be there at `r`, unless it was younger
//! than `r - keep` (then no purge could reach it at all, and the general
//! check counts it if lost). After the release the next purge deletes
//! those rows as any others: the checker's `unpurged` check exempts only
//! rows a hold covered while that purge ran.

use crate::scenario::Hold;
use holdfast_actors::core::ids::{MessageId, Millis};
use holdfast_actors::core::protocol::{LegalHold, PurgeRecord};
use std::collections::BTreeSet;

/// What the auditor did and was told about one hold.
#[derive(Clone, Debug, Default)]
pub struct HoldLog {
    /// When the last database confirmed the hold (none: some never did).
    pub placed_at: Option<Millis>,
    /// When the release was first sent.
    pub release_sent_at: Option<Millis>,
    /// When the last database confirmed the release.
    pub released_at: Option<Millis>,
    /// A database refused a request for good: why.
    pub refused: Option<String>,
    /// Right before the release: the client ids every database held
    /// durably, and each one's purge record then.
    pub snapshot: Option<(BTreeSet<MessageId>, Vec<PurgeRecord>)>,
}

/// A hold of the scenario with what the auditor saw of it.
#[derive(Clone, Debug)]
pub struct ObservedHold {
    pub hold: Hold,
    pub log: HoldLog,
}

/// Whether a hold the database stored may have been in force at some
/// point of a purge that ran from `start` to `end`, for a row between
/// `from` and `to` at `time` (released or not).
pub fn may_have_held(
    h: &LegalHold,
    from: &str,
    to: &str,
    time: Millis,
    start: Millis,
    end: Millis,
) -> bool {
    (h.users.contains(from) || h.users.contains(to))
        && h.since.is_none_or(|s| time >= s)
        && h.until.is_none_or(|u| time < u)
        && h.placed_at <= end
        && h.released.as_ref().is_none_or(|r| r.at >= start)
}

//! The oracle: compares what clients were told with what the archive holds,
//! in the manner of Jepsen's set checker.
//!
//! * **lost**: accepted and archivable, absent from the archive and from
//!   every queue, and no operator event reported it (of which **expired**:
//!   dropped by a queue's expiry, legal only under ocs2007r2 and still a
//!   loss). Silent loss: always a failure unless a scenario expects it.
//! * **lost_reported**: the same, but after its acceptance an event of
//!   [`REPORTS_LOSS`] (a store found damage and set it aside) was raised on
//!   a node its record passes through (its front end, archiving server or
//!   database): the operator was told, and a scenario bounds how many.
//! * **pending**: accepted and archivable, not archived yet but still held
//!   durably in a queue (a path left broken at the end of the run).
//! * **parked**: accepted and archivable, refused by the database for good
//!   and kept aside durably by the destination queue, with an operator
//!   event (`record_parked`): not archived, not lost; a scenario bounds how
//!   many (0 unless it says otherwise).
//! * **duplicates**: messages archived more than once.
//! * **phantoms**: archived, but never accepted as archivable (rejected,
//!   never submitted, or excluded by policy).
//! * **recovered**: outcome unknown to the client (timeout, crash), archived
//!   anyway: legal.
//! * **delivered_not_archived**: the client was told so explicitly (critical
//!   mode off, the front end's queue store failing): allowed, never `lost`.
//!
//! Archive rows are matched to requests by the client's request id (the
//! workload never reuses one); the archive's own key is the id the front
//! end assigned, which an accepted request's answer names and the row must
//! carry.
//! * **corrupted**: archived with content different from what was sent.
//! * **mistimed**: archived under another message time than the one the
//!   front end stamped when it admitted the message (its answer names it),
//!   or, for an unanswered request, a time before it was submitted. The
//!   time is what retention, holds and every search by range go by: a
//!   message filed under the wrong time is missing from the range an
//!   auditor asks for.
//! * **accepted while shut down**: an IM admitted by a front end inside one
//!   of its critical-mode shutdowns (call records are always taken).
//!
//! Every accepted archivable message is exactly one of archived, pending,
//! parked or lost (or, for a QoE report, dropped).

use super::holds::{may_have_held, ObservedHold};
use crate::scenario::Attack;
use holdfast_actors::archiving::retention::PurgeRecord;
use holdfast_actors::core::ids::{MessageId, Millis};
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::{LegalHold, RecordKind};
use holdfast_actors::core::store_keys::Row;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `at`: when the front end admitted it; `message_id`: the id it
    /// assigned (the archive's key).
    Accepted {
        at: Millis,
        message_id: MessageId,
    },
    /// Delivered, and explicitly not archived (critical mode off).
    DeliveredNotArchived {
        at: Millis,
        message_id: MessageId,
    },
    Rejected(String),
    /// No answer before the client's timeout (or the connection broke).
    Unknown,
}

impl Outcome {
    pub fn accepted(&self) -> bool {
        matches!(self, Outcome::Accepted { .. })
    }
}

/// One IM as the workload saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub id: MessageId,
    pub kind: RecordKind,
    pub from: String,
    pub to: String,
    pub body: String,
    pub front_end: String,
    /// The policy (computed independently of the front end) says archive it.
    pub archivable: bool,
    pub submitted_at: Millis,
    /// When the answer reached the client (none: no answer in time).
    pub answered_at: Option<Millis>,
    pub outcome: Outcome,
}

#[cfg(test)]
impl Op {
    /// An archivable IM from a@ to b@ with its id for its body, sent at
    /// time 0 through `front_end`, with no answer time.
    pub(crate) fn for_test(id: &str, front_end: &str, outcome: Outcome) -> Op {
        Op {
            id: id.into(),
            kind: RecordKind::Im,
            from: "a@corp.example".into(),
            to: "b@corp.example".into(),
            body: id.into(),
            front_end: front_end.into(),
            archivable: true,
            submitted_at: 0,
            answered_at: None,
            outcome,
        }
    }
}

/// A front end's critical-mode shutdown: from, and until (if it resumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub at: Millis,
    pub until: Option<Millis>,
}

/// Everything observed at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub ops: Vec<Op>,
    /// Every row of every archive database.
    pub rows: Vec<Row>,
    /// Client ids of the records still held durably by any queue (stream
    /// or dead-letter queue).
    pub queued: BTreeSet<MessageId>,
    /// Client ids of the records parked by a destination queue.
    pub parked: BTreeSet<MessageId>,
    /// Message ids (the front ends') some queue reported dropping by expiry.
    pub expired: BTreeSet<MessageId>,
    /// Shutdowns per front end.
    pub shutdowns: BTreeMap<String, Vec<Shutdown>>,
    /// When each node raised an event of [`REPORTS_LOSS`].
    pub damage_reports: BTreeMap<String, Vec<Millis>>,
    /// The nodes each front end's records pass through (itself included).
    pub paths: BTreeMap<String, Vec<String>>,
    /// The retention purge's record of each archive database, as durable.
    pub purges: Vec<PurgeRecord>,
    /// The purge record of each archive database that has one.
    pub db_purges: BTreeMap<String, PurgeRecord>,
    /// Which database each run of `rows` comes from, in order:
    /// `(database, number of rows)`.
    pub row_groups: Vec<(String, usize)>,
    /// The purge hour, in ms after midnight UTC.
    pub purge_hour_ms: Millis,
    /// When each archive database last came back from a fault that
    /// stopped it (`None`: still down at the end).
    pub db_back_at: BTreeMap<String, Option<Millis>>,
    /// The retention window the scenario sets: the checker's own cutoff
    /// for a purge that started at `t` is `t - keep`, whatever cutoff the
    /// purge recorded.
    pub keep_ms: Millis,
    /// The scenario's legal holds, with what the auditor saw of each.
    pub holds: Vec<ObservedHold>,
    /// Every hold the archive databases hold durably at the end (released
    /// ones too).
    pub stored_holds: Vec<LegalHold>,
    /// When the run ended (the end of its simulated time).
    pub end_ms: Millis,
}

/// How the workload records a busy answer (`RejectReason::Busy`).
pub const BUSY: &str = "Busy";

/// Client ids of hostile requests start with this: their archive rows are
/// the hostile checker's, not the honest one's.
pub const HOSTILE_PREFIX: &str = "h-";

/// What hostile clients sent and were told (see `sim/src/workload/hostile.rs`).
#[derive(Clone, Debug, Default)]
pub struct HostileLog {
    /// Client id → the attack and the bodies sent under it.
    pub requests: BTreeMap<String, (Attack, Vec<String>)>,
    /// Client id → answers: (accepted or delivered, refused).
    pub answers: BTreeMap<String, (u64, u64)>,
    pub flood_connections: u64,
    pub flood_refused: u64,
}

impl HostileLog {
    pub fn sent(&mut self, id: &str, attack: Attack, body: &str) {
        self.requests
            .entry(id.to_string())
            .or_insert_with(|| (attack, Vec::new()))
            .1
            .push(body.to_string());
    }

    pub fn answered(&mut self, id: &str, taken: bool) {
        let a = self.answers.entry(id.to_string()).or_default();
        if taken {
            a.0 += 1;
        } else {
            a.1 += 1;
        }
    }
}

/// What the hostile checker found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HostileCounts {
    pub requests: u64,
    /// Requests that must have been refused and were taken (an oversize
    /// IM, an IM sent as another user): must be 0.
    pub accepted: u64,
    pub refused: u64,
    /// IMs sent under a reused client id that were taken but are not in
    /// the archive with their own content: must be 0.
    pub reused_unarchived: u64,
    /// Reused-id IMs taken (and so archived, each under its own id).
    pub reused_accepted: u64,
    pub flood_connections: u64,
    pub flood_refused: u64,
}

/// Checks hostile requests against the archive rows of their ids.
pub fn check_hostile(log: &HostileLog, rows: &[Row]) -> HostileCounts {
    let mut c = HostileCounts {
        flood_connections: log.flood_connections,
        flood_refused: log.flood_refused,
        ..Default::default()
    };
    let mut archived: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in rows {
        if r.record.client_id.starts_with(HOSTILE_PREFIX) {
            archived
                .entry(r.record.client_id.as_str())
                .or_default()
                .push(r.record.body.as_str());
        }
    }
    for (id, (attack, bodies)) in &log.requests {
        c.requests += bodies.len() as u64;
        let (taken, refused) = log.answers.get(id).copied().unwrap_or_default();
        c.refused += refused;
        match attack {
            Attack::Oversize
            | Attack::ForgeFrom
            | Attack::Unauthenticated
            | Attack::ResumeAsUser => c.accepted += taken,
            Attack::ReuseId => {
                c.reused_accepted += taken;
                // Each body at most once, and none that was not sent.
                let rows = archived
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let distinct: BTreeSet<&str> = rows
                    .iter()
                    .copied()
                    .filter(|b| bodies.iter().any(|s| s == b))
                    .collect();
                c.reused_unarchived += taken.saturating_sub(distinct.len() as u64);
            }
            Attack::Flood => {}
        }
    }
    c
}

/// Operator events that report loss: a loss after one of these on a node
/// its record passed through is counted as `lost_reported`.
pub const REPORTS_LOSS: &[OperatorEvent] = &[OperatorEvent::StoreDamaged];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Of the rejected, answered busy (the front end past its capacity).
    pub busy: u64,
    pub unknown: u64,
    pub archivable_accepted: u64,
    pub archived: u64,
    pub lost: u64,
    /// Lost, and reported by an operator event (see the module doc).
    pub lost_reported: u64,
    /// Refused by the database for good and parked (see the module doc).
    pub parked: u64,
    pub expired: u64,
    pub pending: u64,
    pub duplicates: u64,
    pub phantoms: u64,
    pub recovered: u64,
    pub corrupted: u64,
    /// Archived under another time than the front end stamped (see the
    /// module doc).
    pub mistimed: u64,
    pub accepted_while_shut_down: u64,
    /// QoE reports accepted but not archived: allowed (not mission
    /// critical), counted apart from `lost`.
    pub qoe_dropped: u64,
    /// Delivered with the explicit answer "not archived": allowed, counted
    /// apart from `lost`.
    pub delivered_not_archived: u64,
    /// Accepted and absent from the archive because a retention purge
    /// deleted it: its message time was before a purge's cutoff. Allowed.
    pub purged: u64,
    /// Rows older than a finished purge's cutoff, archived before that
    /// purge ended, still in the archive: kept past the retention window.
    pub unpurged: u64,
    /// Accepted IMs a legal hold covered, older than the cutoff of a purge
    /// that ran while it was in force, still in the archive when it was
    /// released (or at the end): rows the hold kept.
    pub held: u64,
    /// Accepted IMs a legal hold covered, which no purge before the hold
    /// could reach, gone from the archive while it was in force: deleted
    /// despite the hold (or lost).
    pub held_purged: u64,
    /// Holds (or releases) some database never confirmed, or refused.
    pub holds_unplaced: u64,
    /// Archive databases whose daily purge did not run: a purge hour
    /// passed (while the database was up, or before it came back) and no
    /// purge began at or after it within [`PURGE_GRACE_MS`].
    pub purge_missed: u64,
    /// Accepted and archived per record kind (`im`, `cdr`, `qoe`).
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
    /// When the last accepted archivable message reached the archive.
    pub drained_at: Option<Millis>,
    /// From submission to the "accepted" answer, over accepted messages:
    /// p50, p99 and the maximum, in ms (all 0 without any).
    pub accept_latency_ms: [u64; 3],
    /// A few ids of each anomaly, for the report.
    pub examples: BTreeMap<&'static str, Vec<MessageId>>,
}

fn note(ex: &mut BTreeMap<&'static str, Vec<MessageId>>, what: &'static str, id: &str) {
    super::keep_example(ex, what, id.into());
}

/// Whether an event reported loss on a node `op`'s record passes through,
/// after the front end admitted it.
fn reported(o: &Observed, op: &Op) -> bool {
    let Outcome::Accepted { at, .. } = op.outcome else {
        return false;
    };
    o.paths
        .get(&op.front_end)
        .into_iter()
        .flatten()
        .filter_map(|node| o.damage_reports.get(node))
        .flatten()
        .any(|t| *t >= at)
}

/// The legal holds (see `super::holds`): each one placed (and released)
/// as the scenario says, and every row it covered that a purge in its
/// time could have deleted still there when it was released, or at the
/// end.
fn check_holds(o: &Observed, archive: &BTreeMap<&str, Vec<&Row>>, c: &mut Counts) {
    for oh in &o.holds {
        let (hold, log) = (&oh.hold, &oh.log);
        let unconfirmed = log.refused.is_some()
            || log.placed_at.is_none()
            || (hold.release_ms.is_some() && log.released_at.is_none());
        if unconfirmed {
            c.holds_unplaced += 1;
            note(&mut c.examples, "holds_unplaced", &hold.name);
        }
        let Some(placed) = log.placed_at else {
            continue;
        };
        // Where the archive was observed under the hold: right before its
        // release, or at the end.
        let (seen_at, snapshot, purges) = match (&log.snapshot, log.release_sent_at) {
            (Some((ids, purges)), Some(at)) => (at, Some(ids), purges.as_slice()),
            _ => (o.end_ms, None, o.purges.as_slice()),
        };
        let present = |id: &str| match snapshot {
            Some(ids) => ids.contains(id),
            None => archive.contains_key(id),
        };
        // The furthest cut of a purge that started under the hold.
        let cut = purges
            .iter()
            .filter(|p| p.started_at >= placed)
            .map(|p| p.started_at.saturating_sub(o.keep_ms))
            .max()
            .unwrap_or(0);
        let reachable_from = placed.saturating_sub(o.keep_ms);
        let reachable_to = seen_at.saturating_sub(o.keep_ms);
        for op in o.ops.iter().filter(|op| op.archivable) {
            let Outcome::Accepted { at, .. } = op.outcome else {
                continue;
            };
            // The message time lies between the submission and the front
            // end's admission.
            if !hold.covers(&op.from, &op.to, op.submitted_at, at)
                || op.submitted_at < reachable_from
                || at >= reachable_to
            {
                continue;
            }
            if present(&op.id) {
                if at < cut {
                    c.held += 1;
                }
            } else if !archive.contains_key(op.id.as_str())
                && !o.queued.contains(&op.id)
                && !o.parked.contains(&op.id)
            {
                c.held_purged += 1;
                note(&mut c.examples, "held_purged", &op.id);
            }
        }
    }
}

/// How long after its hour (or after the database came back) a daily
/// purge may take to begin and record itself.
pub const PURGE_GRACE_MS: Millis = 10 * 60_000;

/// Databases whose last purge hour came and went without a purge: the
/// hour that passed at least [`PURGE_GRACE_MS`] before the end, for a
/// database up from at least that long before the end (and, if it never
/// purged, up at that hour).
fn purges_missed(o: &Observed, c: &mut Counts) {
    let horizon = o.end_ms.saturating_sub(PURGE_GRACE_MS);
    for (db, back) in &o.db_back_at {
        // Came back too late to be judged (or never did).
        let Some(back) = back.filter(|b| *b <= horizon) else {
            continue;
        };
        let Some(due) = holdfast_actors::core::daily::last_at(horizon, o.purge_hour_ms) else {
            continue;
        };
        let missed = match o.db_purges.get(db) {
            Some(p) => p.started_at < due,
            // A database that never purged waits for its first hour: it
            // must have purged at the last one if it was up then.
            None => back <= due,
        };
        if missed {
            c.purge_missed += 1;
            note(&mut c.examples, "purge_missed", db);
        }
    }
}

pub fn check(o: &Observed) -> Counts {
    let mut c = Counts::default();
    purges_missed(o, &mut c);
    // What a finished purge must have deleted: rows before its cutoff,
    // archived before it ended (a row archived later with an old time
    // waits for the next purge).
    let cutoff = |p: &PurgeRecord| p.started_at.saturating_sub(o.keep_ms);
    // Each row is judged by its own database's purge (databases purge at
    // different times when one was down over the hour); rows of unknown
    // origin by every purge.
    let row_dbs = o
        .row_groups
        .iter()
        .flat_map(|(db, n)| std::iter::repeat_n(Some(db.as_str()), *n))
        .chain(std::iter::repeat(None));
    for (r, db) in o.rows.iter().zip(row_dbs) {
        let (from, to, time) = (&r.record.from, &r.record.to, r.record.time);
        // A row a hold may have covered while the purge ran may stay.
        let should_be_gone = |p: &PurgeRecord| {
            p.finished_at.is_some_and(|end| {
                time < cutoff(p)
                    && r.archived_at < end
                    && !o
                        .stored_holds
                        .iter()
                        .any(|h| may_have_held(h, from, to, time, p.started_at, end))
            })
        };
        let kept = match db {
            Some(db) => o.db_purges.get(db).is_some_and(should_be_gone),
            None => o.purges.iter().any(should_be_gone),
        };
        if kept {
            c.unpurged += 1;
            note(&mut c.examples, "unpurged", &r.record.client_id);
        }
    }
    let mut archive: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in o
        .rows
        .iter()
        .filter(|r| !r.record.client_id.starts_with(HOSTILE_PREFIX))
    {
        archive
            .entry(r.record.client_id.as_str())
            .or_default()
            .push(r);
    }
    let by_id: BTreeMap<&str, &Op> = o.ops.iter().map(|op| (op.id.as_str(), op)).collect();

    for op in &o.ops {
        c.submitted += 1;
        match op.outcome {
            Outcome::Accepted { at, .. } => {
                c.accepted += 1;
                // Critical mode stops IM; the records of calls that already
                // happened are still taken.
                let shut = op.kind == RecordKind::Im
                    && o.shutdowns.get(&op.front_end).is_some_and(|v| {
                        v.iter()
                            .any(|s| at >= s.at && s.until.is_none_or(|u| at < u))
                    });
                if shut {
                    c.accepted_while_shut_down += 1;
                    note(&mut c.examples, "accepted_while_shut_down", &op.id);
                }
            }
            Outcome::Rejected(ref why) => {
                c.rejected += 1;
                if why == BUSY {
                    c.busy += 1;
                    note(&mut c.examples, "busy", &op.id);
                }
            }
            Outcome::DeliveredNotArchived { .. } => {
                c.delivered_not_archived += 1;
                note(&mut c.examples, "delivered_not_archived", &op.id);
            }
            Outcome::Unknown => {
                c.unknown += 1;
                note(&mut c.examples, "unknown", &op.id);
            }
        }
        if op.outcome.accepted() {
            let k = c.by_kind.entry(op.kind.as_str()).or_insert((0, 0));
            k.0 += 1;
            if archive.contains_key(op.id.as_str()) {
                k.1 += 1;
            }
        }
        if op.outcome.accepted() && op.archivable {
            c.archivable_accepted += 1;
            match archive.get(op.id.as_str()) {
                None if op.kind.droppable() && !o.queued.contains(&op.id) => {
                    c.qoe_dropped += 1;
                }
                None if o.queued.contains(&op.id) => {
                    c.pending += 1;
                    note(&mut c.examples, "pending", &op.id);
                }
                None if o.parked.contains(&op.id) => {
                    c.parked += 1;
                    note(&mut c.examples, "parked", &op.id);
                }
                // Submitted before a purge's cutoff: its message time is
                // too (the front end stamps it after the submission).
                None if o.purges.iter().any(|p| op.submitted_at < cutoff(p)) => {
                    c.purged += 1;
                }
                None if reported(o, op) => {
                    c.lost_reported += 1;
                    note(&mut c.examples, "lost_reported", &op.id);
                }
                None => {
                    c.lost += 1;
                    note(&mut c.examples, "lost", &op.id);
                    if let Outcome::Accepted { message_id, .. } = &op.outcome {
                        if o.expired.contains(message_id) {
                            c.expired += 1;
                        }
                    }
                }
                Some(found) => {
                    let first = found.iter().map(|r| r.archived_at).min().unwrap_or(0);
                    c.drained_at = Some(c.drained_at.unwrap_or(0).max(first));
                }
            }
        }
    }

    check_holds(o, &archive, &mut c);

    let mut latencies: Vec<Millis> = o
        .ops
        .iter()
        .filter(|op| op.outcome.accepted())
        .filter_map(|op| op.answered_at.map(|a| a.saturating_sub(op.submitted_at)))
        .collect();
    latencies.sort_unstable();
    if let Some(&max) = latencies.last() {
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
        c.accept_latency_ms = [at(0.5), at(0.99), max];
    }

    for (id, found) in &archive {
        c.archived += 1;
        if found.len() > 1 {
            c.duplicates += 1;
            note(&mut c.examples, "duplicates", id);
        }
        match by_id.get(id) {
            Some(op) if op.outcome.accepted() && op.archivable => {}
            Some(op) if op.outcome == Outcome::Unknown && op.archivable => {
                c.recovered += 1;
            }
            // Told "not archived", archived after all (the store reported a
            // failure of a write that landed): harmless, counted as recovered.
            Some(op)
                if matches!(op.outcome, Outcome::DeliveredNotArchived { .. }) && op.archivable =>
            {
                c.recovered += 1;
            }
            _ => {
                c.phantoms += 1;
                note(&mut c.examples, "phantoms", id);
            }
        }
        if let Some(op) = by_id.get(id) {
            let r = &found[0].record;
            let assigned = match &op.outcome {
                Outcome::Accepted { message_id, .. }
                | Outcome::DeliveredNotArchived { message_id, .. } => Some(message_id),
                _ => None,
            };
            if assigned.is_some_and(|m| *m != r.id)
                || r.from != op.from
                || r.to != op.to
                || r.body != op.body
                || r.front_end != op.front_end
            {
                c.corrupted += 1;
                note(&mut c.examples, "corrupted", id);
            }
            let stamped = match &op.outcome {
                Outcome::Accepted { at, .. } | Outcome::DeliveredNotArchived { at, .. } => {
                    Some(*at)
                }
                _ => None,
            };
            if found
                .iter()
                .any(|f| stamped.map_or(f.record.time < op.submitted_at, |at| f.record.time != at))
            {
                c.mistimed += 1;
                note(&mut c.examples, "mistimed", id);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::core::protocol::{ArchiveRecord, RecordKind};

    fn op(id: &str, outcome: Outcome, archivable: bool) -> Op {
        // The front end's id of an accepted test op is the op's own.
        let outcome = match outcome {
            Outcome::Accepted { at, .. } => Outcome::Accepted {
                at,
                message_id: id.into(),
            },
            other => other,
        };
        Op {
            body: format!("body of {id}"),
            archivable,
            ..Op::for_test(id, "fe1", outcome)
        }
    }

    fn at(at: Millis) -> Outcome {
        Outcome::Accepted {
            at,
            message_id: MessageId::default(),
        }
    }

    fn ok() -> Outcome {
        Outcome::Accepted {
            at: 10,
            message_id: MessageId::default(),
        }
    }

    fn row(rowid: u64, o: &Op, at: Millis) -> Row {
        Row {
            rowid,
            record: ArchiveRecord {
                kind: RecordKind::Im,
                id: o.id.clone(),
                client_id: o.id.clone(),
                from: o.from.as_str().into(),
                to: o.to.as_str().into(),
                // The time the front end stamped, as a faithful archive
                // keeps it.
                time: match o.outcome {
                    Outcome::Accepted { at, .. } | Outcome::DeliveredNotArchived { at, .. } => at,
                    _ => o.submitted_at,
                },
                body: o.body.clone(),
                external: false,
                front_end: o.front_end.clone(),
            },
            archived_at: at,
        }
    }

    #[test]
    fn clean_history_counts_nothing_wrong() {
        let ops = vec![op("1", ok(), true), op("2", ok(), false)];
        let rows = vec![row(1, &ops[0], 50)];
        let c = check(&Observed {
            ops,
            rows,
            ..Default::default()
        });
        assert_eq!(
            (c.accepted, c.archived, c.lost, c.duplicates, c.phantoms),
            (2, 1, 0, 0, 0)
        );
        assert_eq!(c.drained_at, Some(50));
    }

    #[test]
    fn every_anomaly_is_counted() {
        let ops = vec![
            op("lost1", ok(), true),
            op("lost2", ok(), true),
            op("lost3", ok(), true),
            op("pend", ok(), true),
            op("dup", ok(), true),
            op("rej", Outcome::Rejected("x".into()), true),
            op("nopolicy", ok(), false),
            op("unk", Outcome::Unknown, true),
            op("unk-missing", Outcome::Unknown, true),
        ];
        let mut rows = vec![
            row(1, &ops[4], 1),
            row(2, &ops[4], 1),
            row(3, &ops[5], 1),
            row(4, &ops[6], 1),
            row(5, &ops[7], 1),
        ];
        let mut ghost = row(6, &ops[0], 1);
        ghost.record.id = "never-sent".into();
        ghost.record.client_id = "never-sent".into();
        rows.push(ghost);
        let c = check(&Observed {
            ops,
            rows,
            queued: ["pend".into()].into(),
            expired: ["lost2".into(), "pend".into()].into(),
            ..Default::default()
        });
        assert_eq!(c.lost, 3);
        assert_eq!(c.expired, 1, "only lost ones count as expired");
        assert_eq!(c.pending, 1);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.phantoms, 3, "rejected, excluded by policy, never sent");
        assert_eq!(c.recovered, 1);
        assert_eq!(c.unknown, 2);
        assert_eq!(c.examples["lost"], vec!["lost1", "lost2", "lost3"]);
    }

    /// A loss after a damage report on the record's path is reported; one
    /// before it, or on another path, is silent.
    #[test]
    fn loss_after_a_damage_report_on_the_path_is_reported() {
        let ops = vec![op("before", at(100), true), op("after", at(300), true)];
        let mut other = op("other-path", at(100), true);
        other.front_end = "fe2".into();
        let mut ops = ops;
        ops.push(other);
        let c = check(&Observed {
            ops,
            damage_reports: [("arch1".to_string(), vec![200])].into(),
            paths: [
                (
                    "fe1".to_string(),
                    vec!["fe1".into(), "arch1".into(), "db1".into()],
                ),
                (
                    "fe2".to_string(),
                    vec!["fe2".into(), "arch2".into(), "db1".into()],
                ),
            ]
            .into(),
            ..Default::default()
        });
        assert_eq!((c.lost, c.lost_reported), (2, 1));
        assert_eq!(c.examples["lost_reported"], vec!["before"]);
        assert_eq!(c.examples["lost"], vec!["after", "other-path"]);
    }

    #[test]
    fn accept_latency_percentiles_come_from_answered_accepted_ops() {
        let mut ops: Vec<Op> = (1..=100)
            .map(|i| {
                let mut o = op(&format!("m{i}"), ok(), false);
                o.submitted_at = 1000;
                o.answered_at = Some(1000 + i);
                o
            })
            .collect();
        // Rejected and unanswered ones do not count.
        let mut rejected = op("r", Outcome::Rejected("x".into()), false);
        rejected.answered_at = Some(99_999);
        ops.push(rejected);
        ops.push(op("u", Outcome::Unknown, false));
        let c = check(&Observed {
            ops,
            ..Default::default()
        });
        assert_eq!(c.accept_latency_ms, [50, 99, 100]);
    }

    #[test]
    fn delivered_not_archived_is_counted_apart_from_lost() {
        let told = Outcome::DeliveredNotArchived {
            at: 5,
            message_id: "x".into(),
        };
        let c = check(&Observed {
            ops: vec![op("d", told, true), op("l", ok(), true)],
            ..Default::default()
        });
        assert_eq!((c.lost, c.delivered_not_archived), (1, 1));
        assert_eq!(c.examples["lost"], vec!["l"]);
    }

    /// An accepted request whose row carries another archive id than the
    /// one its answer named (a front end reusing the client's id, say) is
    /// seen.
    #[test]
    fn a_row_under_another_message_id_is_corrupted() {
        let c = check_changed_row(|r| r.record.id = "not-the-assigned-one".into());
        assert_eq!(c.corrupted, 1);
    }

    /// A row filed under another time than the front end stamped (a
    /// queue that re-stamps a record it sends again, say) is seen.
    #[test]
    fn a_row_under_another_time_is_mistimed() {
        let c = check_changed_row(|r| r.record.time += 60_000);
        assert_eq!((c.mistimed, c.corrupted), (1, 0));
        assert_eq!(check_changed_row(|_| {}).mistimed, 0);
    }

    /// Without an answer, the only bound is the submission: a row stamped
    /// before the request was sent cannot be its.
    #[test]
    fn an_unanswered_row_stamped_before_submission_is_mistimed() {
        let mut o = op("u", Outcome::Unknown, true);
        o.submitted_at = 500;
        let mut early = row(1, &o, 900);
        early.record.time = 499;
        let c = check(&Observed {
            ops: vec![o.clone()],
            rows: vec![early],
            ..Default::default()
        });
        assert_eq!((c.mistimed, c.recovered), (1, 1));
        let c = check(&Observed {
            ops: vec![o.clone()],
            rows: vec![row(1, &o, 900)],
            ..Default::default()
        });
        assert_eq!(c.mistimed, 0);
    }

    #[test]
    fn corrupted_content_is_seen() {
        let c = check_changed_row(|r| r.record.to = "mallory@corp.example".into());
        assert_eq!(c.corrupted, 1);
    }

    /// The counts of one accepted request whose row `change` altered.
    fn check_changed_row(change: impl FnOnce(&mut Row)) -> Counts {
        let ops = vec![op("1", ok(), true)];
        let mut r = row(1, &ops[0], 1);
        change(&mut r);
        check(&Observed {
            ops,
            rows: vec![r],
            ..Default::default()
        })
    }

    #[test]
    fn missing_qoe_is_dropped_but_missing_cdr_is_lost() {
        let mut qoe = op("q", ok(), true);
        qoe.kind = RecordKind::Qoe;
        let mut cdr = op("c", ok(), true);
        cdr.kind = RecordKind::Cdr;
        let c = check(&Observed {
            ops: vec![qoe, cdr],
            ..Default::default()
        });
        assert_eq!((c.lost, c.qoe_dropped), (1, 1));
        assert_eq!(c.examples["lost"], vec!["c"]);
        assert_eq!(c.by_kind["cdr"], (1, 0));
    }

    #[test]
    fn admissions_inside_a_shutdown_are_counted() {
        let ops = vec![
            op("before", at(99), false),
            op("inside", at(100), false),
            op("inside2", at(199), false),
            op("after", at(200), false),
            op("open", at(5000), false),
        ];
        let mut shutdowns = BTreeMap::new();
        shutdowns.insert(
            "fe1".to_string(),
            vec![
                Shutdown {
                    at: 100,
                    until: Some(200),
                },
                Shutdown {
                    at: 4000,
                    until: None,
                },
            ],
        );
        let c = check(&Observed {
            ops,
            shutdowns,
            ..Default::default()
        });
        assert_eq!(c.accepted_while_shut_down, 3);
        assert_eq!(
            c.examples["accepted_while_shut_down"],
            vec!["inside", "inside2", "open"]
        );
    }
}

//! The oracle: compares what clients were told with what the archive holds,
//! in the manner of Jepsen's set checker.
//!
//! * **lost**: accepted and archivable, absent from the archive and from
//!   every queue.
//! * **pending**: accepted and archivable, not archived yet but still held
//!   durably in a queue (a path left broken at the end of the run).
//! * **duplicates**: messages archived more than once.
//! * **phantoms**: archived, but never accepted as archivable (rejected,
//!   never submitted, or excluded by policy).
//! * **recovered**: outcome unknown to the client (timeout, crash), archived
//!   anyway: legal.
//! * **corrupted**: archived with content different from what was sent.
//!
//! `lost + pending + archived-once + duplicated = accepted archivable`.

use holdfast_actors::ids::{MessageId, Millis};
use holdfast_actors::store_keys::Row;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected(String),
    /// No answer before the client's timeout (or the connection broke).
    Unknown,
}

/// One IM as the workload saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub id: MessageId,
    pub from: String,
    pub to: String,
    pub body: String,
    pub front_end: String,
    /// The policy (computed independently of the front end) says archive it.
    pub archivable: bool,
    pub submitted_at: Millis,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub submitted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub archivable_accepted: u64,
    pub archived: u64,
    pub lost: u64,
    pub pending: u64,
    pub duplicates: u64,
    pub phantoms: u64,
    pub recovered: u64,
    pub corrupted: u64,
    /// When the last accepted archivable message reached the archive.
    pub drained_at: Option<Millis>,
    /// A few ids of each anomaly, for the report.
    pub examples: BTreeMap<&'static str, Vec<MessageId>>,
}

const EXAMPLES: usize = 5;

fn note(ex: &mut BTreeMap<&'static str, Vec<MessageId>>, what: &'static str, id: &str) {
    let v = ex.entry(what).or_default();
    if v.len() < EXAMPLES {
        v.push(id.to_string());
    }
}

/// `rows`: every row of every archive database; `queued`: ids still held
/// durably by any outgoing or destination queue.
pub fn check(ops: &[Op], rows: &[Row], queued: &BTreeSet<MessageId>) -> Counts {
    let mut c = Counts::default();
    let mut archive: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        archive.entry(r.record.id.as_str()).or_default().push(r);
    }
    let by_id: BTreeMap<&str, &Op> = ops.iter().map(|o| (o.id.as_str(), o)).collect();

    for op in ops {
        c.submitted += 1;
        match op.outcome {
            Outcome::Accepted => c.accepted += 1,
            Outcome::Rejected(_) => c.rejected += 1,
            Outcome::Unknown => {
                c.unknown += 1;
                note(&mut c.examples, "unknown", &op.id);
            }
        }
        if op.outcome == Outcome::Accepted && op.archivable {
            c.archivable_accepted += 1;
            match archive.get(op.id.as_str()) {
                None if queued.contains(&op.id) => {
                    c.pending += 1;
                    note(&mut c.examples, "pending", &op.id);
                }
                None => {
                    c.lost += 1;
                    note(&mut c.examples, "lost", &op.id);
                }
                Some(found) => {
                    let first = found.iter().map(|r| r.archived_at).min().unwrap_or(0);
                    c.drained_at = Some(c.drained_at.unwrap_or(0).max(first));
                }
            }
        }
    }

    for (id, found) in &archive {
        c.archived += 1;
        if found.len() > 1 {
            c.duplicates += 1;
            note(&mut c.examples, "duplicates", id);
        }
        match by_id.get(id) {
            Some(op) if op.outcome == Outcome::Accepted && op.archivable => {}
            Some(op) if op.outcome == Outcome::Unknown && op.archivable => {
                c.recovered += 1;
            }
            _ => {
                c.phantoms += 1;
                note(&mut c.examples, "phantoms", id);
            }
        }
        if let Some(op) = by_id.get(id) {
            let r = &found[0].record;
            if r.from != op.from
                || r.to != op.to
                || r.body != op.body
                || r.front_end != op.front_end
            {
                c.corrupted += 1;
                note(&mut c.examples, "corrupted", id);
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::protocol::{ArchiveRecord, RecordKind};

    fn op(id: &str, outcome: Outcome, archivable: bool) -> Op {
        Op {
            id: id.into(),
            from: "a@corp.example".into(),
            to: "b@corp.example".into(),
            body: format!("body of {id}"),
            front_end: "fe1".into(),
            archivable,
            submitted_at: 0,
            outcome,
        }
    }

    fn row(rowid: u64, o: &Op, at: Millis) -> Row {
        Row {
            rowid,
            record: ArchiveRecord {
                kind: RecordKind::Im,
                id: o.id.clone(),
                from: o.from.clone(),
                to: o.to.clone(),
                time: 0,
                body: o.body.clone(),
                external: false,
                front_end: o.front_end.clone(),
            },
            archived_at: at,
        }
    }

    #[test]
    fn clean_history_counts_nothing_wrong() {
        let ops = vec![
            op("1", Outcome::Accepted, true),
            op("2", Outcome::Accepted, false),
        ];
        let rows = vec![row(1, &ops[0], 50)];
        let c = check(&ops, &rows, &BTreeSet::new());
        assert_eq!(
            (c.accepted, c.archived, c.lost, c.duplicates, c.phantoms),
            (2, 1, 0, 0, 0)
        );
        assert_eq!(c.drained_at, Some(50));
    }

    #[test]
    fn every_anomaly_is_counted() {
        let ops = vec![
            op("lost1", Outcome::Accepted, true),
            op("lost2", Outcome::Accepted, true),
            op("lost3", Outcome::Accepted, true),
            op("pend", Outcome::Accepted, true),
            op("dup", Outcome::Accepted, true),
            op("rej", Outcome::Rejected("x".into()), true),
            op("nopolicy", Outcome::Accepted, false),
            op("unk", Outcome::Unknown, true),
            op("unk-missing", Outcome::Unknown, true),
        ];
        let mut bad = row(9, &ops[4], 1);
        bad.record.body = "tampered".into();
        let rows = vec![
            row(1, &ops[4], 1),
            bad,
            row(3, &ops[5], 1),
            row(4, &ops[6], 1),
            row(5, &ops[7], 1),
        ];
        let mut ghost = row(6, &ops[0], 1);
        ghost.record.id = "never-sent".into();
        let mut rows = rows;
        rows.push(ghost);
        let queued: BTreeSet<_> = ["pend".to_string()].into();
        let c = check(&ops, &rows, &queued);
        assert_eq!(c.lost, 3);
        assert_eq!(c.pending, 1);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.phantoms, 3, "rejected, excluded by policy, never sent");
        assert_eq!(c.recovered, 1);
        assert_eq!(c.corrupted, 0, "the first copy is compared");
        assert_eq!(c.unknown, 2);
        assert_eq!(c.examples["lost"], vec!["lost1", "lost2", "lost3"]);
    }

    #[test]
    fn corrupted_content_is_seen() {
        let ops = vec![op("1", Outcome::Accepted, true)];
        let mut r = row(1, &ops[0], 1);
        r.record.to = "mallory@corp.example".into();
        let c = check(&ops, &[r], &BTreeSet::new());
        assert_eq!(c.corrupted, 1);
    }
}

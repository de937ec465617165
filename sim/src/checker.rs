//! The oracle: compares what clients were told with what the archive holds,
//! in the manner of Jepsen's set checker.
//!
//! * **lost**: accepted and archivable, absent from the archive and from
//!   every queue (of which **expired**: dropped by a queue's expiry, legal
//!   only under ocs2007r2 and still a loss).
//! * **pending**: accepted and archivable, not archived yet but still held
//!   durably in a queue (a path left broken at the end of the run).
//! * **duplicates**: messages archived more than once.
//! * **phantoms**: archived, but never accepted as archivable (rejected,
//!   never submitted, or excluded by policy).
//! * **recovered**: outcome unknown to the client (timeout, crash), archived
//!   anyway: legal.
//! * **corrupted**: archived with content different from what was sent.
//! * **accepted while shut down**: an IM admitted by a front end inside one
//!   of its critical-mode shutdowns (call records are always taken).
//!
//! Every accepted archivable message is exactly one of archived, pending or
//! lost (or, for a QoE report, dropped).

use holdfast_actors::ids::{MessageId, Millis};
use holdfast_actors::protocol::RecordKind;
use holdfast_actors::store_keys::Row;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `at`: when the front end admitted it.
    Accepted {
        at: Millis,
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
    pub outcome: Outcome,
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
    /// Ids still held durably by any queue (stream or dead-letter queue).
    pub queued: BTreeSet<MessageId>,
    /// Ids some queue reported dropping by expiry.
    pub expired: BTreeSet<MessageId>,
    /// Shutdowns per front end.
    pub shutdowns: BTreeMap<String, Vec<Shutdown>>,
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
    pub expired: u64,
    pub pending: u64,
    pub duplicates: u64,
    pub phantoms: u64,
    pub recovered: u64,
    pub corrupted: u64,
    pub accepted_while_shut_down: u64,
    /// QoE reports accepted but not archived: allowed (not mission
    /// critical), counted apart from `lost`.
    pub qoe_dropped: u64,
    /// Accepted and archived per record kind (`im`, `cdr`, `qoe`).
    pub by_kind: BTreeMap<&'static str, (u64, u64)>,
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

pub fn check(o: &Observed) -> Counts {
    let mut c = Counts::default();
    let mut archive: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &o.rows {
        archive.entry(r.record.id.as_str()).or_default().push(r);
    }
    let by_id: BTreeMap<&str, &Op> = o.ops.iter().map(|op| (op.id.as_str(), op)).collect();

    for op in &o.ops {
        c.submitted += 1;
        match op.outcome {
            Outcome::Accepted { at } => {
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
            Outcome::Rejected(_) => c.rejected += 1,
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
                None => {
                    c.lost += 1;
                    note(&mut c.examples, "lost", &op.id);
                    if o.expired.contains(&op.id) {
                        c.expired += 1;
                    }
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
            Some(op) if op.outcome.accepted() && op.archivable => {}
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

    const OK: Outcome = Outcome::Accepted { at: 10 };

    fn op(id: &str, outcome: Outcome, archivable: bool) -> Op {
        Op {
            id: id.into(),
            kind: RecordKind::Im,
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
        let ops = vec![op("1", OK, true), op("2", OK, false)];
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
            op("lost1", OK, true),
            op("lost2", OK, true),
            op("lost3", OK, true),
            op("pend", OK, true),
            op("dup", OK, true),
            op("rej", Outcome::Rejected("x".into()), true),
            op("nopolicy", OK, false),
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
        rows.push(ghost);
        let c = check(&Observed {
            ops,
            rows,
            queued: ["pend".to_string()].into(),
            expired: ["lost2".to_string(), "pend".to_string()].into(),
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

    #[test]
    fn corrupted_content_is_seen() {
        let ops = vec![op("1", OK, true)];
        let mut r = row(1, &ops[0], 1);
        r.record.to = "mallory@corp.example".into();
        let c = check(&Observed {
            ops,
            rows: vec![r],
            ..Default::default()
        });
        assert_eq!(c.corrupted, 1);
    }

    #[test]
    fn missing_qoe_is_dropped_but_missing_cdr_is_lost() {
        let mut qoe = op("q", OK, true);
        qoe.kind = RecordKind::Qoe;
        let mut cdr = op("c", OK, true);
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
            op("before", Outcome::Accepted { at: 99 }, false),
            op("inside", Outcome::Accepted { at: 100 }, false),
            op("inside2", Outcome::Accepted { at: 199 }, false),
            op("after", Outcome::Accepted { at: 200 }, false),
            op("open", Outcome::Accepted { at: 5000 }, false),
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

//! Recovery figures per front end, as the real-network partition suite
//! (`node/tests/real_partitions.rs`) measures them, so that the two can be
//! compared (`sim/src/report/calibration.rs`):
//!
//! * **shutdown**: from the first fault breaking the front end's
//!   archiving path to the first answer refusing one of its IMs for
//!   critical mode (the client's view: an IM submitted after the fault
//!   began, the time its refusal arrived);
//! * **first delivery**: from the end of the last such fault (the heal) to
//!   the first record of the front end's users archived after it;
//! * **resume**: from the heal to the submission of the first IM to the
//!   front end, submitted after the heal, that was accepted.
//!
//! Computed from the clients' history and the archive rows only (times in
//! simulated milliseconds since the start of the run): deterministic.

use crate::oracle::checker::{Op, Outcome};
use crate::oracle::critical;
use crate::scenario::Fault;
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::ids::Millis;
use holdfast_actors::core::protocol::RecordKind;
use holdfast_actors::core::store_keys::Row;
use std::collections::BTreeMap;

/// One front end's recovery from the faults that broke its archiving path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub node: String,
    /// The start of the first fault breaking its path.
    pub first_cut_ms: Millis,
    /// The end of the last one (the heal).
    pub heal_ms: Millis,
    /// First cut → the first critical-mode refusal reached a client.
    pub shutdown_ms: Option<Millis>,
    /// Heal → the first of its records archived after the heal.
    pub first_delivery_ms: Option<Millis>,
    /// Heal → the first IM submitted after the heal and accepted.
    pub resume_ms: Option<Millis>,
}

/// Whether a refusal was for critical mode (the client sees the reason as
/// text, as a real client does).
fn critical_refusal(o: &Outcome) -> bool {
    matches!(o, Outcome::Rejected(reason) if reason.to_ascii_lowercase().contains("critical"))
}

/// The figures of every front end whose archiving path some fault broke,
/// provided every such fault ended (a path never healed has no recovery).
pub fn figures(ops: &[Op], rows: &[Row], faults: &[Fault], cluster: &Cluster) -> Vec<Recovery> {
    let mut spans: BTreeMap<String, Vec<(Millis, Option<Millis>)>> = BTreeMap::new();
    for f in faults {
        for fe in critical::affected(&f.kind, cluster) {
            spans
                .entry(fe)
                .or_default()
                .push((f.start_ms, f.duration_ms.map(|d| f.start_ms + d)));
        }
    }
    let mut out = Vec::new();
    for (node, spans) in spans {
        let Some(first_cut) = spans.iter().map(|s| s.0).min() else {
            continue;
        };
        let Some(ends) = spans.iter().map(|s| s.1).collect::<Option<Vec<_>>>() else {
            continue;
        };
        let Some(heal) = ends.into_iter().max() else {
            continue;
        };
        let ims = || {
            ops.iter()
                .filter(|o| o.front_end == node && o.kind == RecordKind::Im)
        };
        let shutdown_ms = ims()
            .filter(|o| o.submitted_at >= first_cut && critical_refusal(&o.outcome))
            .filter_map(|o| o.answered_at)
            .min()
            .map(|at| at.saturating_sub(first_cut));
        let first_delivery_ms = rows
            .iter()
            .filter(|r| r.archived_at >= heal)
            .filter(|r| r.record.front_end == node)
            .map(|r| r.archived_at - heal)
            .min();
        let resume_ms = ims()
            .filter(|o| o.submitted_at >= heal && o.outcome.accepted())
            .map(|o| o.submitted_at - heal)
            .min();
        out.push(Recovery {
            node,
            first_cut_ms: first_cut,
            heal_ms: heal,
            shutdown_ms,
            first_delivery_ms,
            resume_ms,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FaultKind;
    use holdfast_actors::core::cluster::{ArchiverInfo, FrontEndInfo};
    use holdfast_actors::core::protocol::ArchiveRecord;

    fn cluster() -> Cluster {
        let fe = |n: &str| {
            (
                n.to_string(),
                FrontEndInfo {
                    site: "site1".into(),
                    archiver: "arch1".into(),
                },
            )
        };
        Cluster {
            domain: "corp.example".into(),
            front_ends: [fe("fe1"), fe("fe2")].into_iter().collect(),
            archivers: [(
                "arch1".to_string(),
                ArchiverInfo {
                    database: "db1".into(),
                },
            )]
            .into_iter()
            .collect(),
            databases: vec!["db1".into()],
            users: BTreeMap::new(),
            policy: Default::default(),
        }
    }

    fn op(id: &str, fe: &str, submitted: Millis, answered: Millis, outcome: Outcome) -> Op {
        Op {
            submitted_at: submitted,
            answered_at: Some(answered),
            ..Op::for_test(id, fe, outcome)
        }
    }

    fn accepted(at: Millis) -> Outcome {
        Outcome::Accepted {
            at,
            message_id: format!("m{at}").into(),
        }
    }

    fn row(id: &str, fe: &str, at: Millis) -> Row {
        Row {
            rowid: at,
            record: ArchiveRecord {
                kind: RecordKind::Im,
                id: format!("m-{id}").into(),
                client_id: id.into(),
                from: "a@corp.example".into(),
                to: "b@corp.example".into(),
                time: 0,
                body: id.into(),
                external: false,
                front_end: fe.into(),
            },
            archived_at: at,
        }
    }

    fn cut(start_ms: Millis, ms: Millis) -> Fault {
        Fault {
            kind: FaultKind::Partition {
                a: "fe1".into(),
                b: "arch1".into(),
                one_way: false,
            },
            start_ms,
            duration_ms: Some(ms),
        }
    }

    #[test]
    fn figures_are_measured_from_the_first_cut_and_the_last_heal() {
        let ops = vec![
            op("a", "fe1", 1_000, 1_010, accepted(1_010)),
            // Refused for critical mode 35 s after the first cut.
            op(
                "b",
                "fe1",
                39_990,
                40_005,
                Outcome::Rejected("CriticalMode(\"link\")".into()),
            ),
            // Refused for another reason: not a shutdown.
            op(
                "c",
                "fe1",
                6_000,
                6_001,
                Outcome::Rejected("Invalid(\"x\")".into()),
            ),
            // Submitted before the heal: not a resume.
            op("d", "fe1", 99_000, 101_000, accepted(101_000)),
            op("e", "fe1", 102_500, 102_510, accepted(102_510)),
            // fe2's IM archived right after the heal is not fe1's delivery.
            op("f", "fe2", 99_500, 99_510, accepted(99_510)),
        ];
        let rows = vec![
            row("a", "fe1", 1_500),
            row("f", "fe2", 100_100),
            row("d", "fe1", 101_200),
            row("e", "fe1", 103_000),
        ];
        let faults = vec![cut(5_000, 10_000), cut(20_000, 80_000)];
        let r = figures(&ops, &rows, &faults, &cluster());
        assert_eq!(
            r,
            vec![Recovery {
                node: "fe1".into(),
                first_cut_ms: 5_000,
                heal_ms: 100_000,
                shutdown_ms: Some(35_005),
                first_delivery_ms: Some(1_200),
                resume_ms: Some(2_500),
            }]
        );
    }

    #[test]
    fn a_path_never_healed_has_no_recovery() {
        let mut f = cut(5_000, 1);
        f.duration_ms = None;
        let ops = vec![op("a", "fe1", 1_000, 1_010, accepted(1_010))];
        assert!(figures(&ops, &[], &[f], &cluster()).is_empty());
    }
}

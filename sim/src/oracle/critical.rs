//! Critical-mode accounting: when each front end shut down and resumed, which
//! fault broke its archiving path, and how long it took to stop accepting IM.
//!
//! A fault breaks a front end's archiving path when it cuts, kills, slows or
//! starves anything between that front end's outgoing queue and the archive
//! database: the link to its archiving server or that server's database,
//! those servers themselves, or the disks of any of them.

use crate::oracle::checker::Shutdown;
use crate::oracle::events::EventRecord;
use crate::scenario::{Fault, FaultKind};
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::ids::Millis;
use holdfast_actors::core::operator::OperatorEvent;
use std::collections::BTreeMap;

/// One critical-mode shutdown of a front end.
#[derive(Clone, Debug, PartialEq)]
pub struct CriticalShutdown {
    pub node: String,
    pub at: Millis,
    pub until: Option<Millis>,
    pub reason: String,
    /// The fault that broke this front end's archiving path (the latest one
    /// started before the shutdown), if any.
    pub cause: Option<String>,
    /// From the start of that fault to the shutdown.
    pub latency_ms: Option<Millis>,
}

/// A front end that had to shut down within a bound after a fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Obligation {
    pub node: String,
    pub fault: String,
    pub start: Millis,
    pub bound: Millis,
    /// When it was shut down (possibly already before the fault started).
    pub shut_at: Option<Millis>,
    /// When that shutdown ended (`None`: it never did).
    pub resumed_at: Option<Millis>,
    /// The shutdown must last at least until the fault is over (`Some(None)`:
    /// to the end of the run). `None` for a slow server, which may legally
    /// catch up with a heartbeat while still slow.
    pub must_hold_until: Option<Option<Millis>>,
}

impl Obligation {
    pub fn shut_in_time(&self) -> bool {
        self.shut_at.is_some_and(|at| at <= self.start + self.bound)
    }

    /// Resumed while the fault still broke the path.
    pub fn resumed_early(&self) -> bool {
        match (self.must_hold_until, self.resumed_at) {
            (None, _) | (_, None) => false,
            (Some(None), Some(_)) => true,
            (Some(Some(end)), Some(at)) => at < end,
        }
    }

    pub fn met(&self) -> bool {
        self.shut_in_time() && !self.resumed_early()
    }
}

/// Front ends whose archiving path `fault` breaks.
pub fn affected(fault: &FaultKind, cluster: &Cluster) -> Vec<String> {
    let path_of = |fe: &str| -> (String, String) {
        let arch = cluster
            .front_ends
            .get(fe)
            .map(|f| f.archiver.clone())
            .unwrap_or_default();
        let db = cluster
            .archivers
            .get(&arch)
            .map(|a| a.database.clone())
            .unwrap_or_default();
        (arch, db)
    };
    cluster
        .front_ends
        .keys()
        .filter(|fe| {
            let (arch, db) = path_of(fe);
            match fault {
                FaultKind::Partition { a, b, .. } => {
                    let pair = |x: &str, y: &str| (a == x && b == y) || (a == y && b == x);
                    pair(fe, &arch) || pair(&arch, &db)
                }
                FaultKind::Crash { node }
                | FaultKind::DbDown { node }
                | FaultKind::Corrupt { node, .. }
                | FaultKind::Slow { node, .. }
                | FaultKind::Stall { node } => *node == arch || *node == db,
                FaultKind::DiskFull { node } | FaultKind::IoError { node } => {
                    node == *fe || *node == arch || *node == db
                }
                // The rest of the records goes on: archiving stays healthy.
                FaultKind::DbRefuses { .. } => false,
            }
        })
        .cloned()
        .collect()
}

/// Shutdown intervals (and reasons) per front end, from the event stream.
pub fn shutdowns(events: &[EventRecord]) -> BTreeMap<String, Vec<(Shutdown, String)>> {
    let mut out: BTreeMap<String, Vec<(Shutdown, String)>> = BTreeMap::new();
    for e in events {
        match e.kind {
            OperatorEvent::CriticalShutdown => out.entry(e.node.clone()).or_default().push((
                Shutdown {
                    at: e.at,
                    until: None,
                },
                e.detail.clone(),
            )),
            OperatorEvent::CriticalResume => {
                if let Some((last, _)) = out.get_mut(&e.node).and_then(|v| v.last_mut()) {
                    if last.until.is_none() {
                        last.until = Some(e.at);
                    }
                }
            }
            // A new incarnation: the previous one's shutdown ended with it,
            // unless this one restored it from disk.
            OperatorEvent::FrontEndStarted => {
                let list = out.entry(e.node.clone()).or_default();
                let open = list.last().is_some_and(|(s, _)| s.until.is_none());
                match e.detail.split_once("critical shutdown restored: ") {
                    // The same shutdown, carried across the restart.
                    Some(_) if open => {}
                    Some((_, reason)) => list.push((
                        Shutdown {
                            at: e.at,
                            until: None,
                        },
                        format!("restored after restart: {reason}"),
                    )),
                    // This incarnation accepts: the shutdown ended with the
                    // previous one (its record could not be saved).
                    None => {
                        if let Some((last, _)) = list.last_mut().filter(|_| open) {
                            last.until = Some(e.at);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

pub fn attribute(
    shutdowns: &BTreeMap<String, Vec<(Shutdown, String)>>,
    faults: &[Fault],
    cluster: &Cluster,
) -> Vec<CriticalShutdown> {
    let mut out = Vec::new();
    for (node, list) in shutdowns {
        for (s, reason) in list {
            let cause = faults
                .iter()
                .filter(|f| f.start_ms <= s.at && affected(&f.kind, cluster).contains(node))
                .max_by_key(|f| f.start_ms);
            out.push(CriticalShutdown {
                node: node.clone(),
                at: s.at,
                until: s.until,
                reason: reason.clone(),
                cause: cause.map(|f| f.describe()),
                latency_ms: cause.map(|f| s.at - f.start_ms),
            });
        }
    }
    out.sort_by(|a, b| (a.at, &a.node).cmp(&(b.at, &b.node)));
    out
}

/// Every (front end, fault) pair where the fault breaks the front end's path
/// for longer than `bound`: the front end must be shut down within `bound`.
pub fn obligations(
    bound: Millis,
    shutdowns: &BTreeMap<String, Vec<(Shutdown, String)>>,
    faults: &[Fault],
    cluster: &Cluster,
) -> Vec<Obligation> {
    let mut out = Vec::new();
    for f in faults {
        if f.duration_ms.is_some_and(|d| d <= bound) {
            continue;
        }
        for node in affected(&f.kind, cluster) {
            // The first shutdown still in force at or after the fault's start
            // (one already in force counts from the start).
            let shutdown = shutdowns.get(&node).and_then(|list| {
                list.iter()
                    .map(|(s, _)| s)
                    .find(|s| s.until.is_none_or(|u| u > f.start_ms))
            });
            out.push(Obligation {
                node,
                fault: f.describe(),
                start: f.start_ms,
                bound,
                shut_at: shutdown.map(|s| s.at.max(f.start_ms)),
                resumed_at: shutdown.and_then(|s| s.until),
                must_hold_until: match f.kind {
                    FaultKind::Slow { .. } => None,
                    _ => Some(f.duration_ms.map(|d| f.start_ms + d)),
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::core::cluster::{ArchiverInfo, FrontEndInfo};
    use holdfast_actors::core::policy::Policy;

    fn cluster() -> Cluster {
        let fe = |a: &str| FrontEndInfo {
            site: "s".into(),
            archiver: a.into(),
        };
        Cluster {
            domain: "corp.example".into(),
            front_ends: [
                ("fe1".to_string(), fe("arch1")),
                ("fe2".to_string(), fe("arch2")),
            ]
            .into(),
            archivers: [
                (
                    "arch1".to_string(),
                    ArchiverInfo {
                        database: "db1".into(),
                    },
                ),
                (
                    "arch2".to_string(),
                    ArchiverInfo {
                        database: "db1".into(),
                    },
                ),
            ]
            .into(),
            databases: vec!["db1".into()],
            users: BTreeMap::new(),
            policy: Policy::default(),
        }
    }

    fn fault(kind: FaultKind, start: Millis, dur: Option<Millis>) -> Fault {
        Fault {
            kind,
            start_ms: start,
            duration_ms: dur,
        }
    }

    /// fe1 starts again with its shutdown restored from disk.
    fn restored_at(at: Millis) -> EventRecord {
        EventRecord {
            at,
            node: "fe1".into(),
            kind: OperatorEvent::FrontEndStarted,
            detail: "fe1: critical shutdown restored: quota".into(),
        }
    }

    fn ev(at: Millis, node: &str, kind: OperatorEvent) -> EventRecord {
        EventRecord {
            at,
            node: node.into(),
            kind,
            detail: "why".into(),
        }
    }

    #[test]
    fn a_restart_ends_a_shutdown_unless_it_is_restored() {
        let restored = restored_at(500);
        let events = vec![
            ev(100, "fe1", OperatorEvent::CriticalShutdown),
            ev(300, "fe1", OperatorEvent::FrontEndStarted),
            restored,
        ];
        let sd = shutdowns(&events);
        let list: Vec<Shutdown> = sd["fe1"].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            list,
            vec![
                Shutdown {
                    at: 100,
                    until: Some(300)
                },
                Shutdown {
                    at: 500,
                    until: None
                }
            ]
        );
    }

    #[test]
    fn a_restored_shutdown_continues_across_the_restart() {
        let restored = restored_at(500);
        let events = vec![
            ev(100, "fe1", OperatorEvent::CriticalShutdown),
            restored.clone(),
            ev(900, "fe1", OperatorEvent::CriticalResume),
        ];
        let list: Vec<Shutdown> = shutdowns(&events)["fe1"].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            list,
            vec![Shutdown {
                at: 100,
                until: Some(900)
            }],
            "one shutdown, not two"
        );
        // Restored with nothing open on record: a shutdown from the restart on.
        let list: Vec<Shutdown> = shutdowns(&[restored])["fe1"]
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(
            list,
            vec![Shutdown {
                at: 500,
                until: None
            }]
        );
    }

    #[test]
    fn which_front_ends_a_fault_affects() {
        let c = cluster();
        let part = |a: &str, b: &str| FaultKind::Partition {
            a: a.into(),
            b: b.into(),
            one_way: true,
        };
        assert_eq!(affected(&part("arch1", "fe1"), &c), vec!["fe1"]);
        assert_eq!(affected(&part("fe1", "arch2"), &c), Vec::<String>::new());
        assert_eq!(affected(&part("arch2", "db1"), &c), vec!["fe2"]);
        assert_eq!(
            affected(&FaultKind::Crash { node: "db1".into() }, &c),
            vec!["fe1", "fe2"]
        );
        assert_eq!(
            affected(&FaultKind::Crash { node: "fe1".into() }, &c),
            Vec::<String>::new()
        );
        assert_eq!(
            affected(&FaultKind::DiskFull { node: "fe2".into() }, &c),
            vec!["fe2"]
        );
    }

    #[test]
    fn shutdowns_are_attributed_and_obligations_checked() {
        let c = cluster();
        let faults = vec![
            fault(
                FaultKind::Crash {
                    node: "arch1".into(),
                },
                1_000,
                None,
            ),
            fault(
                FaultKind::Slow {
                    node: "arch2".into(),
                    delay_ms: 5,
                },
                1_000,
                Some(50),
            ),
        ];
        let events = vec![
            ev(1_600, "fe1", OperatorEvent::CriticalShutdown),
            ev(9_000, "fe1", OperatorEvent::CriticalResume),
        ];
        let sd = shutdowns(&events);
        let att = attribute(&sd, &faults, &c);
        assert_eq!(att.len(), 1);
        assert_eq!(att[0].latency_ms, Some(600));
        assert_eq!(att[0].until, Some(9_000));
        assert!(att[0].cause.as_deref().unwrap().starts_with("crash arch1"));
        // bound 500: fe1 was late; the short slow fault creates no obligation
        let ob = obligations(500, &sd, &faults, &c);
        assert_eq!(ob.len(), 1);
        assert!(!ob[0].met());
        let ob = obligations(700, &sd, &faults, &c);
        assert!(ob[0].shut_in_time());
        assert!(
            ob[0].resumed_early(),
            "arch1 never comes back, yet fe1 resumed"
        );
        // no shutdown at all is a failed obligation
        let ob = obligations(700, &BTreeMap::new(), &faults, &c);
        assert!(!ob[0].met());
        // resuming while arch1 is still down (for good) is a failure too
        let ob = obligations(700, &sd, &faults, &c);
        assert!(ob[0].shut_in_time());
        let early = Obligation {
            must_hold_until: Some(Some(20_000)),
            ..ob[0].clone()
        };
        assert!(early.resumed_early() && !early.met());
        let late = Obligation {
            must_hold_until: Some(Some(8_000)),
            ..ob[0].clone()
        };
        assert!(late.met());
    }
}

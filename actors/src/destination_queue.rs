//! Destination queue: the durable queue on the archiving server ("lcslog"
//! in the original). Receives transfers from front ends' outgoing queues,
//! stores each one durably together with the sender's next expected
//! sequence number (one atomic write), acknowledges cumulatively, and feeds
//! the local archiver. A record is deleted only when the archiver reports
//! that the database holds it.

use crate::actor::{Actor, Ctx, Recovered, StoreError, StoreOp, Timer};
use crate::ids::{ActorKind, Addr};
use crate::protocol::{ArchiveRecord, Msg};
use crate::settings::Settings;
use crate::store_keys::{self as keys, DQ_NEXT, DQ_RECORD};
use std::collections::{BTreeMap, BTreeSet};

enum Write {
    Store {
        sender: Addr,
        seq: u64,
        key: u64,
        record: ArchiveRecord,
    },
    Delete {
        keys: Vec<u64>,
    },
}

pub struct DestinationQueue {
    name: String,
    settings: Settings,
    /// Next expected seq per sending front end.
    next: BTreeMap<String, u64>,
    records: BTreeMap<u64, ArchiveRecord>,
    next_key: u64,
    /// Handed to the archiver, not yet consumed.
    in_flight: BTreeSet<u64>,
    /// Highest key handed to the archiver.
    delivered: u64,
    /// Consumed, but the deletion is not durable yet.
    undeleted: BTreeSet<u64>,
    writes: BTreeMap<u64, Write>,
    next_token: u64,
    /// Transfers dropped as already stored (since start).
    duplicates_dropped: u64,
}

impl DestinationQueue {
    pub fn new(name: impl Into<String>, settings: Settings) -> Self {
        DestinationQueue {
            name: name.into(),
            settings,
            next: BTreeMap::new(),
            records: BTreeMap::new(),
            next_key: 1,
            in_flight: BTreeSet::new(),
            delivered: 0,
            undeleted: BTreeSet::new(),
            writes: BTreeMap::new(),
            next_token: 0,
            duplicates_dropped: 0,
        }
    }

    pub fn depth(&self) -> usize {
        self.records.len()
    }

    fn archiver(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::Archiver)
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn pump(&mut self, ctx: &mut Ctx) {
        let window = self.settings.deliver_window as usize;
        let todo: Vec<(u64, ArchiveRecord)> = self
            .records
            .range(self.delivered + 1..)
            .take(window.saturating_sub(self.in_flight.len()))
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        for (key, record) in todo {
            self.delivered = key;
            self.in_flight.insert(key);
            ctx.send(self.archiver(), Msg::Deliver { key, record });
        }
    }

    fn on_transfer(&mut self, from: Addr, seq: u64, record: ArchiveRecord, ctx: &mut Ctx) {
        let expected = *self.next.get(&from.node).unwrap_or(&1);
        if seq < expected {
            self.duplicates_dropped += 1;
        }
        if seq != expected {
            // A duplicate (already stored) or a gap (an earlier transfer was
            // lost with a connection): either way, tell the sender where we
            // are; it goes back to there.
            ctx.send(from, Msg::TransferAck { upto: expected - 1 });
            return;
        }
        let key = self.next_key;
        self.next_key += 1;
        let token = self.token();
        ctx.persist(
            token,
            vec![
                StoreOp::Put {
                    key: keys::key_u64(DQ_RECORD, key),
                    value: keys::encode(&record),
                },
                StoreOp::Put {
                    key: keys::key_str(DQ_NEXT, &from.node),
                    value: (seq + 1).to_be_bytes().to_vec(),
                },
            ],
        );
        self.writes.insert(
            token,
            Write::Store {
                sender: from,
                seq,
                key,
                record,
            },
        );
    }

    fn delete(&mut self, ctx: &mut Ctx) {
        if self.undeleted.is_empty()
            || self
                .writes
                .values()
                .any(|w| matches!(w, Write::Delete { .. }))
        {
            return;
        }
        let keys: Vec<u64> = self.undeleted.iter().copied().collect();
        let ops = keys
            .iter()
            .map(|k| StoreOp::Delete {
                key: keys::key_u64(DQ_RECORD, *k),
            })
            .collect();
        let token = self.token();
        self.writes.insert(token, Write::Delete { keys });
        ctx.persist(token, ops);
    }
}

impl Actor for DestinationQueue {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.records.clear();
        self.next.clear();
        self.in_flight.clear();
        self.undeleted.clear();
        self.delivered = 0;
        for (k, v) in &recovered {
            if let Some(key) = keys::parse_u64(DQ_RECORD, k) {
                match keys::decode::<ArchiveRecord>(v) {
                    Ok(r) => {
                        self.records.insert(key, r);
                    }
                    Err(e) => {
                        ctx.event("store_corrupt", format!("{}: record {key}: {e}", self.name))
                    }
                }
            } else if let Some(sender) = k.strip_prefix(DQ_NEXT) {
                let sender = String::from_utf8_lossy(sender).into_owned();
                match <[u8; 8]>::try_from(v.as_slice()) {
                    Ok(b) => {
                        self.next.insert(sender, u64::from_be_bytes(b));
                    }
                    Err(_) => ctx.event(
                        "store_corrupt",
                        format!("{}: next seq of {sender}", self.name),
                    ),
                }
            }
        }
        self.next_key = self.records.keys().next_back().map_or(1, |k| k + 1);
        self.pump(ctx);
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::Transfer { seq, record } => self.on_transfer(from, seq, record, ctx),
            Msg::Consumed { keys } => {
                for k in keys {
                    if self.in_flight.remove(&k) {
                        self.records.remove(&k);
                        self.undeleted.insert(k);
                    }
                }
                self.delete(ctx);
                self.pump(ctx);
            }
            other => ctx.event(
                "unexpected_message",
                format!(
                    "destination queue {} ignored {} from {from}",
                    self.name,
                    other.name()
                ),
            ),
        }
    }

    fn on_timer(&mut self, _timer: Timer, _ctx: &mut Ctx) {}

    fn on_persisted(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        match (self.writes.remove(&token), result) {
            (
                Some(Write::Store {
                    sender,
                    seq,
                    key,
                    record,
                }),
                Ok(()),
            ) => {
                self.next.insert(sender.node.clone(), seq + 1);
                self.records.insert(key, record);
                ctx.send(sender, Msg::TransferAck { upto: seq });
                self.pump(ctx);
            }
            (Some(Write::Store { sender, seq, .. }), Err(e)) => {
                // Not acknowledged: the sender still holds the record and
                // will resend it.
                ctx.event(
                    "destination_store_failed",
                    format!("{}: storing seq {seq} from {}: {e}", self.name, sender.node),
                );
            }
            (Some(Write::Delete { keys }), Ok(())) => {
                for k in keys {
                    self.undeleted.remove(&k);
                }
                self.delete(ctx);
            }
            (Some(Write::Delete { .. }), Err(e)) => {
                // Retried with the next consumption. A restart before then
                // redelivers them; the database drops the duplicates.
                ctx.event(
                    "destination_store_failed",
                    format!("{}: deleting: {e}", self.name),
                );
            }
            (None, _) => {}
        }
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("destination_depth", self.depth() as u64),
            ("duplicates_dropped", self.duplicates_dropped),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RecordKind;
    use crate::testkit::Harness;

    fn dq() -> Harness<DestinationQueue> {
        Harness::new(
            Addr::new("arch1", ActorKind::DestinationQueue),
            DestinationQueue::new("arch1", Settings::default()),
        )
    }

    fn rec(id: &str) -> ArchiveRecord {
        ArchiveRecord {
            kind: RecordKind::Im,
            id: id.into(),
            from: "a@corp.example".into(),
            to: "b@corp.example".into(),
            time: 0,
            body: "x".into(),
            external: false,
            front_end: "fe1".into(),
        }
    }

    fn oq(n: &str) -> Addr {
        Addr::new(n, ActorKind::OutgoingQueue)
    }

    fn acks(sent: &[(Addr, Msg)]) -> Vec<u64> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::TransferAck { upto } => Some(*upto),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn in_order_transfers_are_stored_acked_and_delivered() {
        let mut h = dq();
        h.start(Recovered::new());
        let sent = h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        assert_eq!(acks(&sent), vec![1]);
        assert!(
            matches!(&sent[1], (to, Msg::Deliver { key: 1, .. }) if to.actor == ActorKind::Archiver)
        );
        assert_eq!(h.store.len(), 2, "record and next-seq mark, in one write");
    }

    #[test]
    fn duplicates_and_gaps_are_dropped_with_a_position_ack() {
        let mut h = dq();
        h.start(Recovered::new());
        h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        let sent = h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        assert_eq!(sent, vec![(oq("fe1"), Msg::TransferAck { upto: 1 })]);
        let sent = h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 3,
                record: rec("m3"),
            },
        );
        assert_eq!(sent, vec![(oq("fe1"), Msg::TransferAck { upto: 1 })]);
        assert_eq!(h.actor.depth(), 1);
        // sequences are per sender
        let sent = h.msg(
            oq("fe2"),
            Msg::Transfer {
                seq: 1,
                record: rec("x1"),
            },
        );
        assert_eq!(acks(&sent), vec![1]);
    }

    #[test]
    fn delete_only_after_consumed_and_redeliver_after_restart() {
        let mut h = dq();
        h.start(Recovered::new());
        h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 2,
                record: rec("m2"),
            },
        );
        h.msg(h.actor.archiver(), Msg::Consumed { keys: vec![1] });
        assert_eq!(h.actor.depth(), 1);
        // crash and restart: m2 is redelivered; the dedupe mark survived
        let mut h2 = dq();
        let sent = h2.start(h.store.clone());
        assert!(matches!(&sent[..], [(_, Msg::Deliver { key: 2, record })] if record.id == "m2"));
        let sent = h2.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 2,
                record: rec("m2"),
            },
        );
        assert_eq!(sent, vec![(oq("fe1"), Msg::TransferAck { upto: 2 })]);
    }

    #[test]
    fn store_failure_means_no_ack() {
        let mut h = dq();
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::Io("EIO".into()));
        let sent = h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        assert!(acks(&sent).is_empty());
        assert_eq!(h.events(), vec!["destination_store_failed"]);
        h.fail_persists = None;
        let sent = h.msg(
            oq("fe1"),
            Msg::Transfer {
                seq: 1,
                record: rec("m1"),
            },
        );
        assert_eq!(acks(&sent), vec![1]);
    }

    #[test]
    fn delivery_window_is_respected() {
        let mut h = Harness::new(
            Addr::new("arch1", ActorKind::DestinationQueue),
            DestinationQueue::new(
                "arch1",
                Settings {
                    deliver_window: 2,
                    ..Settings::default()
                },
            ),
        );
        h.start(Recovered::new());
        let mut delivered = 0;
        for s in 1..=4 {
            let sent = h.msg(
                oq("fe1"),
                Msg::Transfer {
                    seq: s,
                    record: rec(&format!("m{s}")),
                },
            );
            delivered += sent
                .iter()
                .filter(|(_, m)| matches!(m, Msg::Deliver { .. }))
                .count();
        }
        assert_eq!(delivered, 2);
        let sent = h.msg(h.actor.archiver(), Msg::Consumed { keys: vec![1, 2] });
        assert_eq!(
            sent.iter()
                .filter(|(_, m)| matches!(m, Msg::Deliver { .. }))
                .count(),
            2
        );
    }
}

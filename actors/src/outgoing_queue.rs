//! Outgoing queue: the durable store-and-forward queue on a front end
//! (MSMQ's outgoing queue in the original).
//!
//! Every record gets a sequence number on its (front end → destination)
//! link, contiguous from 1 and never reused (the highest acknowledged number
//! is persisted with the deletions). Transfers go out in order inside a
//! window; the destination acknowledges cumulatively once a record is
//! durable there. With no acknowledgement progress for a resend interval
//! the queue goes back to the first unacknowledged record (go-back-N),
//! backing off while the link stays silent. The destination drops what it
//! already has, so the handoff is exactly-once and in order.

use crate::actor::{Actor, Ctx, Recovered, StoreError, StoreOp, Timer};
use crate::cluster::Cluster;
use crate::ids::{ActorKind, Addr, Millis};
use crate::protocol::{ArchiveRecord, Msg};
use crate::settings::Settings;
use crate::store_keys::{self as keys, OQ_ACKED, OQ_RECORD};
use std::collections::BTreeMap;
use std::sync::Arc;

enum Write {
    Enqueue {
        fe_token: u64,
        seq: u64,
        record: ArchiveRecord,
    },
    Delete {
        upto: u64,
    },
}

pub struct OutgoingQueue {
    name: String,
    settings: Settings,
    dest: Addr,
    records: BTreeMap<u64, ArchiveRecord>,
    bytes: u64,
    next_seq: u64,
    /// Highest seq the destination acknowledged.
    acked: u64,
    /// Highest seq whose deletion is durable here.
    deleted: u64,
    /// Highest seq sent in the current round.
    sent: u64,
    acked_at_last_check: u64,
    interval: Millis,
    writes: BTreeMap<u64, Write>,
    next_token: u64,
    /// Go-back-N rounds since start.
    resends: u64,
}

impl OutgoingQueue {
    pub fn new(name: impl Into<String>, cluster: Arc<Cluster>, settings: Settings) -> Self {
        let name = name.into();
        let archiver = cluster
            .front_ends
            .get(&name)
            .map(|f| f.archiver.clone())
            .unwrap_or_default();
        OutgoingQueue {
            dest: Addr::new(archiver, ActorKind::DestinationQueue),
            interval: settings.resend_interval,
            settings,
            name,
            records: BTreeMap::new(),
            bytes: 0,
            next_seq: 1,
            acked: 0,
            deleted: 0,
            sent: 0,
            acked_at_last_check: 0,
            writes: BTreeMap::new(),
            next_token: 1,
            resends: 0,
        }
    }

    /// Records waiting for the destination's acknowledgement.
    pub fn depth(&self) -> usize {
        self.records.len()
    }

    /// Bytes of queued records (what the quota applies to).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn pump(&mut self, ctx: &mut Ctx) {
        let last = self.next_seq - 1;
        while self.sent < last && self.sent - self.acked < self.settings.transfer_window {
            let Some(record) = self.records.get(&(self.sent + 1)).cloned() else {
                // Only a damaged store can leave a hole; say so, never panic.
                ctx.event(
                    "store_corrupt",
                    format!(
                        "{}: record {} missing from the queue",
                        self.name,
                        self.sent + 1
                    ),
                );
                break;
            };
            self.sent += 1;
            ctx.send(
                self.dest.clone(),
                Msg::Transfer {
                    seq: self.sent,
                    record,
                },
            );
        }
    }

    /// Makes the deletion of everything acknowledged durable.
    fn delete_acked(&mut self, ctx: &mut Ctx) {
        if self.deleted >= self.acked
            || self
                .writes
                .values()
                .any(|w| matches!(w, Write::Delete { .. }))
        {
            return;
        }
        let upto = self.acked;
        let mut ops: Vec<StoreOp> = (self.deleted + 1..=upto)
            .map(|s| StoreOp::Delete {
                key: keys::key_u64(OQ_RECORD, s),
            })
            .collect();
        ops.push(StoreOp::Put {
            key: OQ_ACKED.to_vec(),
            value: upto.to_be_bytes().to_vec(),
        });
        let token = self.token();
        self.writes.insert(token, Write::Delete { upto });
        ctx.persist(token, ops);
    }

    fn enqueue(&mut self, from: Addr, fe_token: u64, record: ArchiveRecord, ctx: &mut Ctx) {
        let size = record.queued_size();
        if self.bytes + size > self.settings.queue_quota {
            ctx.event(
                "queue_quota_exceeded",
                format!(
                    "{}: {} of {} bytes used",
                    self.name, self.bytes, self.settings.queue_quota
                ),
            );
            ctx.send(
                from,
                Msg::EnqueueFailed {
                    token: fe_token,
                    reason: "outgoing queue quota exceeded".into(),
                },
            );
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let token = self.token();
        ctx.persist(
            token,
            vec![StoreOp::Put {
                key: keys::key_u64(OQ_RECORD, seq),
                value: keys::encode(&record),
            }],
        );
        self.writes.insert(
            token,
            Write::Enqueue {
                fe_token,
                seq,
                record,
            },
        );
    }

    fn on_ack(&mut self, upto: u64, ctx: &mut Ctx) {
        let last = self.next_seq - 1;
        if upto > last {
            ctx.event(
                "protocol_violation",
                format!(
                    "{} got an acknowledgement for seq {upto}, beyond {last}",
                    self.name
                ),
            );
            return;
        }
        if upto <= self.acked {
            return;
        }
        for s in self.acked + 1..=upto {
            if let Some(r) = self.records.remove(&s) {
                self.bytes -= r.queued_size();
            }
        }
        self.acked = upto;
        self.sent = self.sent.max(upto);
        self.interval = self.settings.resend_interval;
        self.delete_acked(ctx);
        self.pump(ctx);
    }
}

impl Actor for OutgoingQueue {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.acked = recovered
            .get(OQ_ACKED)
            .and_then(|v| v.as_slice().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        self.records.clear();
        self.bytes = 0;
        let mut max = self.acked;
        for (k, v) in recovered.range(OQ_RECORD.to_vec()..) {
            let Some(seq) = keys::parse_u64(OQ_RECORD, k) else {
                break;
            };
            match keys::decode::<ArchiveRecord>(v) {
                Ok(r) if seq > self.acked => {
                    self.bytes += r.queued_size();
                    self.records.insert(seq, r);
                    max = max.max(seq);
                }
                Ok(_) => {} // acknowledged; its deletion is redone below
                Err(e) => ctx.event("store_corrupt", format!("{}: record {seq}: {e}", self.name)),
            }
        }
        self.deleted = recovered
            .range(OQ_RECORD.to_vec()..)
            .map_while(|(k, _)| keys::parse_u64(OQ_RECORD, k))
            .next()
            .map(|first| first.saturating_sub(1))
            .unwrap_or(self.acked)
            .min(self.acked);
        self.next_seq = max + 1;
        self.sent = self.acked;
        self.acked_at_last_check = self.acked;
        self.interval = self.settings.resend_interval;
        self.delete_acked(ctx);
        self.pump(ctx);
        ctx.set_timer(Timer::Resend, self.interval);
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::Enqueue { token, record } => self.enqueue(from, token, record, ctx),
            Msg::TransferAck { upto } => self.on_ack(upto, ctx),
            other => ctx.event(
                "unexpected_message",
                format!(
                    "outgoing queue {} ignored {} from {from}",
                    self.name,
                    other.name()
                ),
            ),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer != Timer::Resend {
            return;
        }
        let outstanding = self.sent > self.acked;
        if outstanding && self.acked == self.acked_at_last_check {
            // No progress for a whole interval: go back to the first
            // unacknowledged record, and wait longer next time.
            self.sent = self.acked;
            self.resends += 1;
            self.interval = (self.interval * 2).min(self.settings.resend_backoff_max);
        } else if !outstanding {
            self.interval = self.settings.resend_interval;
        }
        self.acked_at_last_check = self.acked;
        self.delete_acked(ctx);
        self.pump(ctx);
        ctx.set_timer(Timer::Resend, self.interval);
    }

    fn on_persisted(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        match (self.writes.remove(&token), result) {
            (
                Some(Write::Enqueue {
                    fe_token,
                    seq,
                    record,
                }),
                Ok(()),
            ) => {
                self.bytes += record.queued_size();
                self.records.insert(seq, record);
                let fe = Addr::new(self.name.clone(), ActorKind::FrontEnd);
                ctx.send(fe, Msg::Enqueued { token: fe_token });
                self.pump(ctx);
            }
            (Some(Write::Enqueue { fe_token, seq, .. }), Err(e)) => {
                // The host reports a persist before any other event, so this
                // was the newest seq: give it back, keeping seqs contiguous.
                debug_assert_eq!(seq + 1, self.next_seq);
                self.next_seq = seq;
                ctx.event("queue_store_failed", format!("{}: {e}", self.name));
                let fe = Addr::new(self.name.clone(), ActorKind::FrontEnd);
                ctx.send(
                    fe,
                    Msg::EnqueueFailed {
                        token: fe_token,
                        reason: format!("outgoing queue store failed: {e}"),
                    },
                );
            }
            (Some(Write::Delete { upto }), Ok(())) => {
                self.deleted = self.deleted.max(upto);
                self.delete_acked(ctx);
            }
            (Some(Write::Delete { .. }), Err(e)) => {
                // Retried on the next acknowledgement or resend tick; until
                // then a restart would resend them and the destination would
                // drop the duplicates.
                ctx.event(
                    "queue_store_failed",
                    format!("{}: deleting acknowledged records: {e}", self.name),
                );
            }
            (None, _) => {}
        }
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("outgoing_depth", self.depth() as u64),
            ("outgoing_bytes", self.bytes),
            ("resends", self.resends),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RecordKind;
    use crate::testkit::{cluster, Harness};

    fn oq(settings: Settings) -> Harness<OutgoingQueue> {
        Harness::new(
            Addr::new("fe1", ActorKind::OutgoingQueue),
            OutgoingQueue::new("fe1", cluster(), settings),
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

    fn fe() -> Addr {
        Addr::new("fe1", ActorKind::FrontEnd)
    }

    fn transfers(sent: &[(Addr, Msg)]) -> Vec<u64> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Transfer { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn enqueue_persists_then_confirms_then_transfers() {
        let mut h = oq(Settings::default());
        h.start(Recovered::new());
        let sent = h.msg(
            fe(),
            Msg::Enqueue {
                token: 9,
                record: rec("m1"),
            },
        );
        assert_eq!(sent[0], (fe(), Msg::Enqueued { token: 9 }));
        assert_eq!(transfers(&sent), vec![1]);
        assert_eq!(sent[1].0, Addr::new("arch1", ActorKind::DestinationQueue));
        assert_eq!(h.store.len(), 1, "record is durable");
    }

    #[test]
    fn window_limits_transfers_and_acks_open_it() {
        let mut h = oq(Settings {
            transfer_window: 2,
            ..Settings::default()
        });
        h.start(Recovered::new());
        let mut seqs = Vec::new();
        for i in 0..5 {
            seqs.extend(transfers(&h.msg(
                fe(),
                Msg::Enqueue {
                    token: i,
                    record: rec(&format!("m{i}")),
                },
            )));
        }
        assert_eq!(seqs, vec![1, 2]);
        let sent = h.msg(h.actor.dest.clone(), Msg::TransferAck { upto: 2 });
        assert_eq!(transfers(&sent), vec![3, 4]);
        assert_eq!(h.actor.depth(), 3);
        // deletions of 1 and 2 are durable, with the acked mark
        assert!(!h.store.contains_key(&keys::key_u64(OQ_RECORD, 1)));
        assert_eq!(h.store.get(OQ_ACKED).unwrap(), &2u64.to_be_bytes().to_vec());
    }

    #[test]
    fn no_progress_means_resend_from_first_unacked_with_backoff() {
        let mut h = oq(Settings::default());
        h.start(Recovered::new());
        for i in 0..3 {
            h.msg(
                fe(),
                Msg::Enqueue {
                    token: i,
                    record: rec(&format!("m{i}")),
                },
            );
        }
        h.msg(h.actor.dest.clone(), Msg::TransferAck { upto: 1 });
        // first tick: progress was made since start → no resend
        assert!(transfers(&h.fire(Timer::Resend)).is_empty());
        // second tick: nothing acknowledged → resend 2 and 3
        assert_eq!(transfers(&h.fire(Timer::Resend)), vec![2, 3]);
        assert_eq!(h.timers[&Timer::Resend] - h.now, 10_000, "interval doubled");
    }

    #[test]
    fn recovery_resends_unacked_and_never_reuses_seqs() {
        let mut h = oq(Settings::default());
        h.start(Recovered::new());
        for i in 0..3 {
            h.msg(
                fe(),
                Msg::Enqueue {
                    token: i,
                    record: rec(&format!("m{i}")),
                },
            );
        }
        h.msg(h.actor.dest.clone(), Msg::TransferAck { upto: 3 });
        h.msg(
            fe(),
            Msg::Enqueue {
                token: 4,
                record: rec("m4"),
            },
        );
        // crash: restart from the durable store
        let store = h.store.clone();
        let mut h2 = oq(Settings::default());
        let sent = h2.start(store);
        assert_eq!(
            transfers(&sent),
            vec![4],
            "only the unacknowledged record is resent"
        );
        let sent = h2.msg(
            fe(),
            Msg::Enqueue {
                token: 5,
                record: rec("m5"),
            },
        );
        assert_eq!(transfers(&sent), vec![5], "seq 5, not a reused 1");

        // Even an empty queue remembers its position.
        h2.msg(h2.actor.dest.clone(), Msg::TransferAck { upto: 5 });
        let mut h3 = oq(Settings::default());
        h3.start(h2.store.clone());
        let sent = h3.msg(
            fe(),
            Msg::Enqueue {
                token: 6,
                record: rec("m6"),
            },
        );
        assert_eq!(transfers(&sent), vec![6]);
    }

    #[test]
    fn store_failure_rejects_and_keeps_seqs_contiguous() {
        let mut h = oq(Settings::default());
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = h.msg(
            fe(),
            Msg::Enqueue {
                token: 1,
                record: rec("m1"),
            },
        );
        assert!(matches!(sent[0].1, Msg::EnqueueFailed { token: 1, .. }));
        assert_eq!(h.events(), vec!["queue_store_failed"]);
        h.fail_persists = None;
        let sent = h.msg(
            fe(),
            Msg::Enqueue {
                token: 2,
                record: rec("m2"),
            },
        );
        assert_eq!(transfers(&sent), vec![1]);
    }

    #[test]
    fn quota_is_enforced_with_an_explicit_failure() {
        let size = rec("m1").queued_size();
        let mut h = oq(Settings {
            queue_quota: size * 2,
            ..Settings::default()
        });
        h.start(Recovered::new());
        h.msg(
            fe(),
            Msg::Enqueue {
                token: 1,
                record: rec("m1"),
            },
        );
        h.msg(
            fe(),
            Msg::Enqueue {
                token: 2,
                record: rec("m2"),
            },
        );
        let sent = h.msg(
            fe(),
            Msg::Enqueue {
                token: 3,
                record: rec("m3"),
            },
        );
        assert!(matches!(sent[0].1, Msg::EnqueueFailed { token: 3, .. }));
        assert_eq!(h.events(), vec!["queue_quota_exceeded"]);
        assert_eq!(h.actor.bytes(), size * 2);
    }

    #[test]
    fn ack_beyond_what_was_sent_is_refused() {
        let mut h = oq(Settings::default());
        h.start(Recovered::new());
        h.msg(
            fe(),
            Msg::Enqueue {
                token: 1,
                record: rec("m1"),
            },
        );
        h.msg(h.actor.dest.clone(), Msg::TransferAck { upto: 7 });
        assert_eq!(h.events(), vec!["protocol_violation"]);
        assert_eq!(h.actor.depth(), 1);
    }
}

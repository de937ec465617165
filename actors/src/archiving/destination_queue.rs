//! Destination queue: the durable queue on the archiving server ("lcslog"
//! in the original). Receives the items of front ends' outgoing queues,
//! stores each one durably together with the sender's next expected
//! sequence number (one atomic write), acknowledges cumulatively, and feeds
//! the local archiver in order. An item is deleted only when the archiver
//! reports that it is done with it (records: the database holds them).
//!
//! Under ocs2007r2 a record not processed within the data TTBR is dropped
//! here (and the sender told, as MSMQ's negative acknowledgement would).

use crate::core::actor::{
    authorize, identity_refused, ignored, Actor, Ctx, Recovered, StoreError, StoreOp, Timer,
    Written,
};
use crate::core::cluster::Cluster;
use crate::core::identity::{self, Role};
use crate::core::ids::{ActorKind, Addr, MessageId, Seq};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{ArchiveRecord, ArchivingMsg, Msg, QueueItem, PARKED_RETRY_MAX};
use crate::core::settings::{Semantics, Settings};
use crate::core::store_keys::{self as keys, DQ_NEXT, DQ_PARKED, DQ_RECORD};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

enum Write {
    Store {
        sender: Addr,
        /// The last seq the write takes the link to.
        seq: Seq,
        /// The items stored (tombstones only move the sequence on).
        stored: Vec<(u64, QueueItem)>,
        /// Answer with a `ProbeAck` (for this probe) rather than a
        /// `TransferAck`.
        probe: Option<u64>,
    },
    Delete {
        keys: Vec<u64>,
    },
    Expire {
        keys: Vec<u64>,
        ids: BTreeMap<String, Vec<MessageId>>,
    },
    Park {
        keys: Vec<u64>,
        ids: Vec<MessageId>,
        reason: String,
    },
    /// Parked records back into the queue: `(parked key, new key, item)`.
    Unpark {
        moved: Vec<(u64, u64, QueueItem)>,
        operator: Addr,
    },
}

/// An operator's `ParkedRetry` while its parked records are read back.
struct Retry {
    operator: Addr,
    /// Load token → parked key, for the reads not answered yet.
    loads: BTreeMap<u64, u64>,
    /// What was read: `(parked key, record)`.
    read: Vec<(u64, ArchiveRecord)>,
}

/// The acknowledgement for a transfer, or for a probe.
fn answer(probe: Option<u64>, upto: Seq) -> Msg {
    match probe {
        Some(probe) => Msg::Archiving(ArchivingMsg::ProbeAck { upto, probe }),
        None => Msg::Archiving(ArchivingMsg::TransferAck { upto }),
    }
}

/// The deletions of the records under `keys`.
fn record_deletes(keys: &[u64]) -> Vec<StoreOp> {
    keys.iter()
        .map(|k| StoreOp::Delete {
            key: keys::key_u64(DQ_RECORD, *k),
        })
        .collect()
}

pub struct DestinationQueue {
    name: String,
    cluster: Arc<Cluster>,
    settings: Settings,
    /// Next expected seq per sending front end.
    next: BTreeMap<String, Seq>,
    items: BTreeMap<u64, QueueItem>,
    next_key: u64,
    /// Handed to the archiver, not yet consumed.
    in_flight: BTreeSet<u64>,
    /// Highest key handed to the archiver.
    delivered: u64,
    /// Consumed, but the deletion is not durable yet.
    undeleted: BTreeSet<u64>,
    writes: BTreeMap<u64, Write>,
    /// Whether the expiry check is set: only while items wait here, so an
    /// idle queue sets no timer.
    dlq_armed: bool,
    next_token: u64,
    /// Transfers dropped as already stored (since start).
    duplicates_dropped: u64,
    expired: u64,
    /// Keys of the records parked (kept aside: the database refuses them
    /// for good); the records stay on disk only, read back for a retry.
    parked_keys: BTreeSet<u64>,
    /// An operator's retry under way (one at a time).
    retry: Option<Retry>,
}

impl DestinationQueue {
    pub fn new(name: impl Into<String>, cluster: Arc<Cluster>, settings: Settings) -> Self {
        DestinationQueue {
            cluster,
            name: name.into(),
            settings,
            next: BTreeMap::new(),
            items: BTreeMap::new(),
            next_key: 1,
            in_flight: BTreeSet::new(),
            delivered: 0,
            undeleted: BTreeSet::new(),
            writes: BTreeMap::new(),
            dlq_armed: false,
            next_token: 0,
            duplicates_dropped: 0,
            expired: 0,
            parked_keys: BTreeSet::new(),
            retry: None,
        }
    }

    /// `holdfast parked retry`: reads the parked records back (a `Load`
    /// each), then moves them into the queue under new keys in one write,
    /// and the queue delivers them again. Only an operator may ask.
    fn parked_retry(&mut self, from: Addr, keys: Vec<u64>, ctx: &mut Ctx) {
        if let Err(refusal) = identity::require(&from, &[Role::Operator]) {
            identity_refused(&self.name, &from, "ParkedRetry", &refusal, ctx);
            let reason = refusal.to_string();
            return ctx.send(from, Msg::Forbidden { reason });
        }
        if self.retry.is_some() {
            let reason = "a retry of parked records is under way; ask again".to_string();
            return ctx.send(from, Msg::Forbidden { reason });
        }
        let chosen: Vec<u64> = if keys.is_empty() {
            self.parked_keys
                .iter()
                .copied()
                .take(PARKED_RETRY_MAX)
                .collect()
        } else {
            keys.into_iter()
                .filter(|k| self.parked_keys.contains(k))
                .take(PARKED_RETRY_MAX)
                .collect()
        };
        if chosen.is_empty() {
            let left = self.parked_keys.len() as u64;
            return ctx.send(from, ArchivingMsg::ParkedRetried { retried: 0, left });
        }
        let mut loads = BTreeMap::new();
        for k in chosen {
            self.next_token += 1;
            loads.insert(self.next_token, k);
            ctx.load(self.next_token, keys::key_u64(DQ_PARKED, k));
        }
        self.retry = Some(Retry {
            operator: from,
            loads,
            read: Vec::new(),
        });
    }

    /// Every parked record of a retry is read: one write moves them back.
    fn unpark(&mut self, ctx: &mut Ctx) {
        let Some(retry) = self.retry.as_ref().filter(|r| r.loads.is_empty()) else {
            return;
        };
        let read = retry.read.clone();
        let operator = retry.operator.clone();
        if read.is_empty() {
            self.retry = None;
            let left = self.parked_keys.len() as u64;
            return ctx.send(operator, ArchivingMsg::ParkedRetried { retried: 0, left });
        }
        let mut ops = Vec::new();
        let mut moved = Vec::new();
        for (old, record) in read {
            let key = self.next_key;
            self.next_key += 1;
            let item = QueueItem::Record(record);
            ops.push(StoreOp::Delete {
                key: keys::key_u64(DQ_PARKED, old),
            });
            ops.push(StoreOp::Put {
                key: keys::key_u64(DQ_RECORD, key),
                value: keys::encode(&item),
            });
            moved.push((old, key, item));
        }
        self.persist(Write::Unpark { moved, operator }, ops, ctx);
    }

    pub fn depth(&self) -> usize {
        self.items.len()
    }

    fn archiver(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::Archiver)
    }

    /// Persists `ops` as one write, remembered as `write` until the store
    /// answers.
    fn persist(&mut self, write: Write, ops: Vec<StoreOp>, ctx: &mut Ctx) {
        self.next_token += 1;
        let token = self.next_token;
        self.writes.insert(token, write);
        ctx.persist(token, ops);
    }

    /// Hands the archiver what the window lets out, in one message.
    fn pump(&mut self, ctx: &mut Ctx) {
        let window = self.settings.deliver_window as usize;
        let mut todo: Vec<(u64, QueueItem)> = self
            .items
            .range(self.delivered + 1..)
            .take(window.saturating_sub(self.in_flight.len()))
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        for (key, _) in &todo {
            self.delivered = *key;
            self.in_flight.insert(*key);
        }
        if todo.len() == 1 {
            let (key, item) = todo.pop().expect("one item");
            ctx.send(self.archiver(), ArchivingMsg::Deliver { key, item });
        } else if !todo.is_empty() {
            ctx.send(self.archiver(), ArchivingMsg::DeliverBatch { items: todo });
        }
    }

    /// The items numbered `first`, `first + 1`, … from `from`'s outgoing
    /// queue (a transfer, a batch of them, or a probe): those past what is
    /// stored go in one atomic write with the link's new position, then one
    /// acknowledgement of the last. A frame that starts past the position
    /// (one before it was lost), or that holds nothing new, only tells the
    /// sender where the link stands.
    fn on_transfer(
        &mut self,
        from: Addr,
        first: Seq,
        items: Vec<QueueItem>,
        probe: Option<u64>,
        ctx: &mut Ctx,
    ) {
        // A stored 0 can only come from a damaged store: treat it as 1.
        let expected = (*self.next.get(&from.node).unwrap_or(&Seq::FIRST)).max(Seq::FIRST);
        let held = expected.0.saturating_sub(first.0).min(items.len() as u64);
        if first <= expected {
            self.duplicates_dropped += held;
        }
        if first > expected || held == items.len() as u64 {
            // A duplicate (already stored) or a gap (an earlier transfer was
            // lost with a connection): either way, tell the sender where we
            // are; it goes back to there.
            ctx.send(from, answer(probe, expected.prev()));
            return;
        }
        let seq = Seq(first.0 + items.len() as u64 - 1);
        let mut ops = vec![StoreOp::Put {
            key: keys::key_str(DQ_NEXT, &from.node),
            value: seq.next().0.to_be_bytes().to_vec(),
        }];
        let mut stored = Vec::new();
        for item in items.into_iter().skip(held as usize) {
            // A tombstone only moves the sequence on.
            if item == QueueItem::Tombstone {
                continue;
            }
            let key = self.next_key;
            self.next_key += 1;
            ops.push(StoreOp::Put {
                key: keys::key_u64(DQ_RECORD, key),
                value: keys::encode(&item),
            });
            stored.push((key, item));
        }
        let write = Write::Store {
            sender: from,
            seq,
            stored,
            probe,
        };
        self.persist(write, ops, ctx);
    }

    /// Moves records the database refuses for good out of the queue, into
    /// the parking (one atomic write per request): kept durably for an
    /// operator, never delivered again.
    fn park(&mut self, keys: Vec<u64>, reason: String, ctx: &mut Ctx) {
        let now = ctx.now();
        let mut ops = Vec::new();
        let mut parked = Vec::new();
        let mut ids = Vec::new();
        for k in keys {
            let Some(QueueItem::Record(record)) = self.items.get(&k) else {
                continue;
            };
            if !self.in_flight.contains(&k) {
                continue;
            }
            ids.push(record.id.clone());
            ops.push(StoreOp::Put {
                key: keys::key_u64(DQ_PARKED, k),
                value: keys::encode(&keys::Parked {
                    record: record.clone(),
                    reason: reason.clone(),
                    at: now,
                }),
            });
            ops.push(StoreOp::Delete {
                key: keys::key_u64(DQ_RECORD, k),
            });
            parked.push(k);
        }
        if ops.is_empty() {
            return;
        }
        let write = Write::Park {
            keys: parked,
            ids,
            reason,
        };
        self.persist(write, ops, ctx);
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
        let ops = record_deletes(&keys);
        self.persist(Write::Delete { keys }, ops, ctx);
    }

    /// ocs2007r2: drop records waiting longer than the data TTBR.
    /// Sets the expiry check while items wait (every record under
    /// ocs2007r2, QoE reports always, can expire here).
    fn arm_expiry(&mut self, ctx: &mut Ctx) {
        if !self.dlq_armed && !self.items.is_empty() {
            self.dlq_armed = true;
            ctx.set_timer(ArchivingTimer::DlqCheck, self.settings.dlq_check);
        }
    }

    fn expire(&mut self, ctx: &mut Ctx) {
        let now = ctx.now();
        let ttbr = self.settings.data_ttbr;
        let mut keys = Vec::new();
        let mut ids: BTreeMap<String, Vec<MessageId>> = BTreeMap::new();
        for (k, item) in &self.items {
            if let QueueItem::Record(r) = item {
                let may_drop =
                    self.settings.semantics == Semantics::Ocs2007r2 || r.kind.droppable();
                if may_drop && now >= r.time + ttbr && !self.in_flight.contains(k) {
                    keys.push(*k);
                    ids.entry(r.front_end.clone())
                        .or_default()
                        .push(r.id.clone());
                }
            }
        }
        if keys.is_empty() {
            return;
        }
        let ops = record_deletes(&keys);
        self.persist(Write::Expire { keys, ids }, ops, ctx);
    }
}

impl Actor for DestinationQueue {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.items.clear();
        self.next.clear();
        self.in_flight.clear();
        self.undeleted.clear();
        self.delivered = 0;
        self.parked_keys.clear();
        self.retry = None;
        // Parked keys are never reused: a new record under one would park
        // over it.
        let mut high = 0;
        for (k, v) in &recovered {
            if let Some(key) = keys::parse_u64(DQ_PARKED, k) {
                self.parked_keys.insert(key);
                high = high.max(key);
                continue;
            }
            if let Some(key) = keys::parse_u64(DQ_RECORD, k) {
                match keys::decode_item(v) {
                    Ok(item) => {
                        self.items.insert(key, item);
                    }
                    Err(e) => ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: item {key}: {e}", self.name),
                    ),
                }
            } else if let Some(sender) = k.strip_prefix(DQ_NEXT) {
                let sender = String::from_utf8_lossy(sender).into_owned();
                match <[u8; 8]>::try_from(v.as_slice()) {
                    Ok(b) => {
                        self.next.insert(sender, Seq(u64::from_be_bytes(b)));
                    }
                    Err(_) => ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: next seq of {sender}", self.name),
                    ),
                }
            }
        }
        self.next_key = self
            .items
            .keys()
            .next_back()
            .map_or(1, |k| k + 1)
            .max(high + 1);
        self.pump(ctx);
        self.dlq_armed = false;
        self.arm_expiry(ctx);
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match &msg {
            // Only the outgoing queue of a front end this server archives for.
            Msg::Archiving(
                ArchivingMsg::Transfer { .. }
                | ArchivingMsg::TransferBatch { .. }
                | ArchivingMsg::Probe { .. },
            ) => {
                from.actor == ActorKind::OutgoingQueue
                    && self
                        .cluster
                        .front_ends
                        .get(&from.node)
                        .is_some_and(|f| f.archiver == self.name)
            }
            Msg::Archiving(ArchivingMsg::Consumed { .. } | ArchivingMsg::Park { .. }) => {
                from == self.archiver()
            }
            // An operator, from the command-line tool (checked below).
            Msg::Archiving(ArchivingMsg::ParkedRetry { .. }) => from.actor == ActorKind::Client,
            _ => true,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::Archiving(ArchivingMsg::Transfer { seq, item }) => {
                self.on_transfer(from, seq, vec![item], None, ctx)
            }
            Msg::Archiving(ArchivingMsg::TransferBatch { first, items }) => {
                self.on_transfer(from, first, items, None, ctx)
            }
            Msg::Archiving(ArchivingMsg::Probe { seq, item, probe }) => {
                self.on_transfer(from, seq, vec![item], Some(probe), ctx)
            }
            Msg::Archiving(ArchivingMsg::Consumed { keys }) => {
                for k in keys {
                    if self.in_flight.remove(&k) {
                        self.items.remove(&k);
                        self.undeleted.insert(k);
                    }
                }
                self.delete(ctx);
                self.pump(ctx);
            }
            Msg::Archiving(ArchivingMsg::Park { keys, reason }) => self.park(keys, reason, ctx),
            Msg::Archiving(ArchivingMsg::ParkedRetry { keys }) => {
                self.parked_retry(from, keys, ctx)
            }
            other => ignored("destination queue", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::Archiving(ArchivingTimer::DlqCheck) {
            self.dlq_armed = false;
            self.expire(ctx);
            self.arm_expiry(ctx);
        }
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        match (self.writes.remove(&token), result) {
            (
                Some(Write::Store {
                    sender,
                    seq,
                    stored,
                    probe,
                }),
                Ok(_),
            ) => {
                self.next.insert(sender.node.clone(), seq.next());
                if !stored.is_empty() {
                    self.items.extend(stored);
                    self.arm_expiry(ctx);
                }
                ctx.send(sender, answer(probe, seq));
                self.pump(ctx);
            }
            (Some(Write::Store { sender, seq, .. }), Err(e)) => {
                // Not acknowledged: the sender still holds the item and
                // will resend it.
                ctx.event(
                    OperatorEvent::DestinationStoreFailed,
                    format!("{}: storing seq {seq} from {}: {e}", self.name, sender.node),
                );
            }
            (Some(Write::Delete { keys }), Ok(_)) => {
                for k in keys {
                    self.undeleted.remove(&k);
                }
                self.delete(ctx);
            }
            (Some(Write::Delete { .. }), Err(e)) => {
                // Retried with the next consumption. A restart before then
                // redelivers them; the database drops the duplicates.
                ctx.event(
                    OperatorEvent::DestinationStoreFailed,
                    format!("{}: deleting: {e}", self.name),
                );
            }
            (Some(Write::Expire { keys, ids }), Ok(_)) => {
                for k in keys {
                    self.items.remove(&k);
                }
                for (fe, ids) in ids {
                    self.expired += ids.len() as u64;
                    ctx.event(
                        OperatorEvent::RecordExpired,
                        format!("ids={}", ids.join(",")),
                    );
                    // ocs2007r2: MSMQ's negative acknowledgement to the sender.
                    if self.settings.semantics == Semantics::Ocs2007r2 {
                        ctx.send(
                            Addr::new(fe, ActorKind::OutgoingQueue),
                            ArchivingMsg::Expired { ids },
                        );
                    }
                }
            }
            (Some(Write::Park { keys, ids, reason }), Ok(_)) => {
                for k in &keys {
                    self.items.remove(k);
                    self.in_flight.remove(k);
                    self.parked_keys.insert(*k);
                }
                ctx.event(
                    OperatorEvent::RecordParked,
                    format!(
                        "{}: the database refuses {} record(s) for good; kept aside for an \
                         operator (holdfast parked list): ids={}: {reason}",
                        self.name,
                        ids.len(),
                        ids.join(",")
                    ),
                );
                self.pump(ctx);
            }
            (Some(Write::Park { ids, .. }), Err(e)) => {
                // Still in the queue, still handed out: after a restart the
                // archiver tries them again, and parks them again.
                ctx.event(
                    OperatorEvent::DestinationStoreFailed,
                    format!("{}: parking {}: {e}", self.name, ids.join(",")),
                );
            }
            (Some(Write::Expire { .. }), Err(e)) => {
                ctx.event(
                    OperatorEvent::DestinationStoreFailed,
                    format!("{}: expiring: {e}", self.name),
                );
            }
            (Some(Write::Unpark { moved, operator }), Ok(_)) => {
                let ids: Vec<MessageId> = moved
                    .iter()
                    .filter_map(|(_, _, item)| match item {
                        QueueItem::Record(r) => Some(r.id.clone()),
                        _ => None,
                    })
                    .collect();
                let retried = moved.len() as u64;
                for (old, key, item) in moved {
                    self.parked_keys.remove(&old);
                    self.items.insert(key, item);
                }
                self.retry = None;
                ctx.event(
                    OperatorEvent::ParkedRetried,
                    format!(
                        "{}: {retried} parked record(s) sent back to the database by {}: ids={}",
                        self.name,
                        operator.node,
                        ids.join(",")
                    ),
                );
                let left = self.parked_keys.len() as u64;
                ctx.send(operator, ArchivingMsg::ParkedRetried { retried, left });
                self.arm_expiry(ctx);
                self.pump(ctx);
            }
            (Some(Write::Unpark { moved, operator }), Err(e)) => {
                // Still parked; the keys given out are not reused.
                self.retry = None;
                let reason = format!(
                    "{}: moving {} parked record(s) back: {e}",
                    self.name,
                    moved.len()
                );
                ctx.event(OperatorEvent::DestinationStoreFailed, reason.clone());
                ctx.send(operator, Msg::Forbidden { reason });
            }
            (None, _) => {}
        }
    }

    fn on_loaded(
        &mut self,
        token: u64,
        result: Result<Option<Vec<u8>>, StoreError>,
        ctx: &mut Ctx,
    ) {
        let Some(retry) = self.retry.as_mut() else {
            return;
        };
        let Some(key) = retry.loads.remove(&token) else {
            return;
        };
        match result.map(|v| v.map(|v| keys::decode::<keys::Parked>(&v))) {
            Ok(Some(Ok(p))) => retry.read.push((key, p.record)),
            Ok(None) => {}
            Ok(Some(Err(e))) => ctx.event(
                OperatorEvent::StoreCorrupt,
                format!("{}: parked record {key}: {e}", self.name),
            ),
            Err(e) => ctx.event(
                OperatorEvent::DestinationStoreFailed,
                format!("{}: reading parked record {key}: {e}", self.name),
            ),
        }
        self.unpark(ctx);
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![
            (Gauge::DestinationDepth, self.depth() as u64),
            (Gauge::DuplicatesDropped, self.duplicates_dropped),
            (Gauge::Expired, self.expired),
            (Gauge::ParkedRecords, self.parked_keys.len() as u64),
            (
                Gauge::OldestQueuedAt,
                self.items
                    .values()
                    .find_map(|item| match item {
                        QueueItem::Record(r) => Some(r.time),
                        _ => None,
                    })
                    .unwrap_or(0),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{record, Harness};

    fn dq(settings: Settings) -> Harness<DestinationQueue> {
        Harness::new(
            Addr::new("arch1", ActorKind::DestinationQueue),
            DestinationQueue::new("arch1", crate::testkit::cluster(), settings),
        )
    }

    fn rec(id: &str) -> QueueItem {
        QueueItem::Record(record(id))
    }

    /// arch1's destination queue with `settings`, started afresh.
    fn started(settings: Settings) -> Harness<DestinationQueue> {
        let mut h = dq(settings);
        h.start(Recovered::new());
        h
    }

    fn oq(n: &str) -> Addr {
        Addr::new(n, ActorKind::OutgoingQueue)
    }

    /// The outgoing queue of front end `from` transfers `item` as `seq`.
    fn transfer(
        h: &mut Harness<DestinationQueue>,
        from: &str,
        seq: u64,
        item: QueueItem,
    ) -> Vec<(Addr, Msg)> {
        h.msg(
            oq(from),
            ArchivingMsg::Transfer {
                seq: Seq(seq),
                item,
            },
        )
    }

    /// The outgoing queue of front end `from` probes with `item` as `seq`.
    fn probe(
        h: &mut Harness<DestinationQueue>,
        from: &str,
        seq: u64,
        item: QueueItem,
        probe: u64,
    ) -> Vec<(Addr, Msg)> {
        h.msg(
            oq(from),
            ArchivingMsg::Probe {
                seq: Seq(seq),
                item,
                probe,
            },
        )
    }

    /// The queue acknowledges front end `to`'s transfers up to `upto`.
    fn ack(to: &str, upto: u64) -> (Addr, Msg) {
        let upto = Seq(upto);
        (oq(to), Msg::Archiving(ArchivingMsg::TransferAck { upto }))
    }

    /// The queue answers front end `to`'s probe `probe`, at `upto`.
    fn probe_ack(to: &str, upto: u64, probe: u64) -> (Addr, Msg) {
        let upto = Seq(upto);
        (
            oq(to),
            Msg::Archiving(ArchivingMsg::ProbeAck { upto, probe }),
        )
    }

    fn acks(sent: &[(Addr, Msg)]) -> Vec<u64> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::TransferAck { upto }) => Some(upto.0),
                _ => None,
            })
            .collect()
    }

    /// Keys handed to the archiver, one by one or in batches.
    fn delivered(sent: &[(Addr, Msg)]) -> Vec<u64> {
        sent.iter()
            .flat_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Deliver { key, .. }) => vec![*key],
                Msg::Archiving(ArchivingMsg::DeliverBatch { items }) => {
                    items.iter().map(|(k, _)| *k).collect()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// The outgoing queue of front end `from` transfers `items` as `first`,
    /// `first + 1`, … in one frame.
    fn batch(
        h: &mut Harness<DestinationQueue>,
        from: &str,
        first: u64,
        items: Vec<QueueItem>,
    ) -> Vec<(Addr, Msg)> {
        h.msg(
            oq(from),
            ArchivingMsg::TransferBatch {
                first: Seq(first),
                items,
            },
        )
    }

    fn duplicates(h: &Harness<DestinationQueue>) -> u64 {
        h.actor()
            .gauges()
            .iter()
            .find(|g| g.0 == Gauge::DuplicatesDropped)
            .map_or(0, |g| g.1)
    }

    /// A batch frame is one atomic write (the link's position and every
    /// record; a tombstone only moves the position) and one cumulative
    /// acknowledgement of its last seq; its records reach the archiver in
    /// one message.
    #[test]
    fn a_batch_is_stored_in_one_write_and_acknowledged_once() {
        let mut h = started(Settings::default());
        let items = vec![rec("m1"), rec("m2"), QueueItem::Tombstone, rec("m4")];
        // A failed write stores nothing of it and acknowledges nothing.
        h.fail_persists = Some(StoreError::Io("EIO".into()));
        let sent = batch(&mut h, "fe1", 1, items.clone());
        assert!(acks(&sent).is_empty(), "{sent:?}");
        assert!(h.store.is_empty());
        h.fail_persists = None;
        let sent = batch(&mut h, "fe1", 1, items);
        assert_eq!(acks(&sent), vec![4]);
        assert_eq!(h.store.len(), 4, "three records and the position");
        assert_eq!(h.actor().depth(), 3);
        let batches: Vec<usize> = sent
            .iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::DeliverBatch { items }) => Some(items.len()),
                _ => None,
            })
            .collect();
        assert_eq!(batches, vec![3]);
        // The next frame follows on from 5.
        assert_eq!(acks(&transfer(&mut h, "fe1", 5, rec("m5"))), vec![5]);
    }

    /// After a go-back the sender may cut its frames differently: a frame
    /// that starts inside what is stored adds only its new part; one
    /// entirely stored is a duplicate; one past a gap is dropped. Each is
    /// answered with where the link stands.
    #[test]
    fn a_batch_overlapping_or_past_the_position_stores_only_what_is_new() {
        let mut h = started(Settings::default());
        transfer(&mut h, "fe1", 1, rec("m1"));
        transfer(&mut h, "fe1", 2, rec("m2"));
        let sent = batch(&mut h, "fe1", 1, vec![rec("m1"), rec("m2"), rec("m3")]);
        assert_eq!(acks(&sent), vec![3]);
        assert_eq!(delivered(&sent), vec![3], "only m3 is new");
        assert_eq!(h.actor().depth(), 3);
        assert_eq!(duplicates(&h), 2);
        // Entirely stored: dropped, answered with the position.
        let sent = batch(&mut h, "fe1", 2, vec![rec("m2"), rec("m3")]);
        assert_eq!((acks(&sent), h.actor().depth()), (vec![3], 3));
        assert_eq!(duplicates(&h), 4);
        // Past a gap (4 was lost): nothing stored, the position again.
        let before = h.store.clone();
        let sent = batch(&mut h, "fe1", 5, vec![rec("m5"), rec("m6")]);
        assert_eq!(acks(&sent), vec![3]);
        assert_eq!(h.store, before);
        let sent = batch(&mut h, "fe1", 4, vec![rec("m4"), rec("m5"), rec("m6")]);
        assert_eq!(acks(&sent), vec![6]);
        assert_eq!(h.actor().depth(), 6);
    }

    #[test]
    fn in_order_transfers_are_stored_acked_and_delivered() {
        let mut h = started(Settings::default());
        let sent = transfer(&mut h, "fe1", 1, rec("m1"));
        assert_eq!(acks(&sent), vec![1]);
        assert!(
            matches!(&sent[1], (to, Msg::Archiving(ArchivingMsg::Deliver { key: 1, .. })) if to.actor == ActorKind::Archiver)
        );
        assert_eq!(h.store.len(), 2, "item and next-seq mark, in one write");
    }

    /// A queue that took `m1` and `bad` from fe1, under keys 1 and 2.
    fn holding_bad() -> Harness<DestinationQueue> {
        let mut h = started(Settings::default());
        for (seq, id) in [(1, "m1"), (2, "bad")] {
            transfer(&mut h, "fe1", seq, rec(id));
        }
        h
    }

    #[test]
    fn a_parked_record_is_kept_aside_and_its_key_never_reused() {
        let mut h = holding_bad();
        let arch = h.actor().archiver();
        h.clear_events();
        let sent = h.msg(
            arch.clone(),
            ArchivingMsg::Park {
                keys: vec![2],
                reason: "trigger".into(),
            },
        );
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(h.events(), vec!["record_parked"]);
        assert_eq!(h.actor().depth(), 1);
        let parked = keys::parked_records(&h.store);
        assert_eq!(parked.len(), 1);
        let (key, p) = parked[0].as_ref().unwrap();
        assert_eq!(
            (*key, p.record.id.as_str(), p.reason.as_str()),
            (2, "bad", "trigger")
        );
        assert!(!h.store.contains_key(&keys::key_u64(DQ_RECORD, 2)));
        // Only the archiver parks.
        h.msg(
            oq("fe1"),
            Msg::Archiving(ArchivingMsg::Park {
                keys: vec![1],
                reason: "x".into(),
            }),
        );
        assert_eq!(h.actor().depth(), 1);
        // After a restart: counted, not delivered, and its key not reused.
        let mut h2 = dq(Settings::default());
        h2.store = h.store.clone();
        let sent = h2.start(h.store.clone());
        assert_eq!(delivered(&sent), vec![1]);
        assert_eq!(
            h2.actor()
                .gauges()
                .iter()
                .find(|g| g.0 == Gauge::ParkedRecords)
                .unwrap()
                .1,
            1
        );
        h2.msg(
            h2.actor().archiver(),
            ArchivingMsg::Consumed { keys: vec![1] },
        );
        let sent = transfer(&mut h2, "fe1", 3, rec("m3"));
        assert_eq!(delivered(&sent), vec![3], "key 2 is the parked record's");
    }

    /// `holdfast parked retry`: only an operator may; the parked record
    /// goes back into the queue under a new key (durably, in one write)
    /// and is delivered again; the answer says what is left.
    #[test]
    fn an_operator_sends_parked_records_back_to_the_database() {
        let mut h = holding_bad();
        let arch = h.actor().archiver();
        let park = Msg::Archiving(ArchivingMsg::Park {
            keys: vec![2],
            reason: "trigger".into(),
        });
        h.msg(arch.clone(), park);
        h.msg(arch.clone(), ArchivingMsg::Consumed { keys: vec![1] });
        h.clear_events();
        let retry = Msg::Archiving(ArchivingMsg::ParkedRetry { keys: vec![] });
        let sent = h.msg(crate::testkit::client_of("a@corp.example"), retry.clone());
        assert!(
            matches!(&sent[..], [(_, Msg::Forbidden { .. })]),
            "{sent:?}"
        );
        assert_eq!(keys::parked_records(&h.store).len(), 1, "a user may not");

        let ops = crate::testkit::client_as("ops@corp.example", Role::Operator);
        let sent = h.msg(ops.clone(), retry.clone());
        assert_eq!(delivered(&sent), vec![3], "under a new key");
        assert!(
            sent.contains(&(
                ops.clone(),
                Msg::Archiving(ArchivingMsg::ParkedRetried {
                    retried: 1,
                    left: 0
                })
            )),
            "{sent:?}"
        );
        assert!(h.events().contains(&"parked_retried"));
        assert!(keys::parked_records(&h.store).is_empty());
        assert!(h.store.contains_key(&keys::key_u64(DQ_RECORD, 3)));
        // Nothing left: said so.
        let sent = h.msg(ops, retry);
        assert_eq!(sent.len(), 1);
        assert!(matches!(
            sent[0].1,
            Msg::Archiving(ArchivingMsg::ParkedRetried {
                retried: 0,
                left: 0
            })
        ));
    }

    #[test]
    fn duplicates_and_gaps_are_dropped_with_a_position_ack() {
        let mut h = started(Settings::default());
        transfer(&mut h, "fe1", 1, rec("m1"));
        let sent = transfer(&mut h, "fe1", 1, rec("m1"));
        assert_eq!(sent, vec![ack("fe1", 1)]);
        let sent = transfer(&mut h, "fe1", 3, rec("m3"));
        assert_eq!(sent, vec![ack("fe1", 1)]);
        assert_eq!(h.actor().depth(), 1);
        let sent = transfer(&mut h, "fe2", 1, rec("x1"));
        assert_eq!(acks(&sent), vec![1], "sequences are per sender");
    }

    /// A probe is stored like a transfer when it is new, dropped when it is
    /// a duplicate, and answered with a `ProbeAck` either way: the sender
    /// tells its answer from the transfers' acknowledgements.
    #[test]
    fn a_probe_is_handled_like_a_transfer_and_answered_as_a_probe() {
        let mut h = started(Settings::default());
        let sent = probe(&mut h, "fe1", 1, rec("m1"), 7);
        assert_eq!(sent[0], probe_ack("fe1", 1, 7));
        assert_eq!(delivered(&sent), vec![1], "a new probe is stored");
        transfer(&mut h, "fe1", 2, rec("m2"));
        let sent = probe(&mut h, "fe1", 1, rec("m1"), 8);
        assert_eq!(sent, vec![probe_ack("fe1", 2, 8)]);
        assert_eq!(h.actor().depth(), 2, "the duplicate is not stored again");
    }

    #[test]
    fn a_tombstone_moves_the_sequence_without_storing_anything() {
        let mut h = started(Settings::default());
        let sent = transfer(&mut h, "fe1", 1, QueueItem::Tombstone);
        assert_eq!(sent, vec![ack("fe1", 1)]);
        assert_eq!(h.actor().depth(), 0);
        let sent = transfer(&mut h, "fe1", 2, rec("m2"));
        assert_eq!(acks(&sent), vec![2]);
    }

    #[test]
    fn delete_only_after_consumed_and_redeliver_after_restart() {
        let mut h = started(Settings::default());
        transfer(&mut h, "fe1", 1, rec("m1"));
        transfer(&mut h, "fe1", 2, rec("m2"));
        h.msg(
            h.actor().archiver(),
            ArchivingMsg::Consumed { keys: vec![1] },
        );
        assert_eq!(h.actor().depth(), 1);
        let mut h2 = dq(Settings::default());
        let sent = h2.start(h.store.clone());
        assert_eq!(delivered(&sent), vec![2]);
        let sent = transfer(&mut h2, "fe1", 2, rec("m2"));
        assert_eq!(sent, vec![ack("fe1", 2)], "the dedupe mark survived");
    }

    #[test]
    fn store_failure_means_no_ack() {
        let mut h = started(Settings::default());
        h.fail_persists = Some(StoreError::Io("EIO".into()));
        let sent = transfer(&mut h, "fe1", 1, rec("m1"));
        assert!(acks(&sent).is_empty());
        assert_eq!(h.events(), vec!["destination_store_failed"]);
        h.fail_persists = None;
        let sent = transfer(&mut h, "fe1", 1, rec("m1"));
        assert_eq!(acks(&sent), vec![1]);
    }

    #[test]
    fn delivery_window_is_respected() {
        let mut h = started(Settings {
            deliver_window: 2,
            ..Settings::default()
        });
        let mut n = 0;
        for s in 1..=4 {
            n += delivered(&transfer(&mut h, "fe1", s, rec(&format!("m{s}")))).len();
        }
        assert_eq!(n, 2);
        let sent = h.msg(
            h.actor().archiver(),
            ArchivingMsg::Consumed { keys: vec![1, 2] },
        );
        assert_eq!(delivered(&sent), vec![3, 4]);
    }

    #[test]
    fn ocs2007r2_drops_records_waiting_past_ttbr_and_tells_the_sender() {
        let s = Settings {
            semantics: Semantics::Ocs2007r2,
            deliver_window: 1,
            ..Settings::default()
        };
        let ttbr = s.data_ttbr;
        let mut h = started(s);
        transfer(&mut h, "fe1", 1, rec("m1")); // in flight: kept
        transfer(&mut h, "fe1", 2, rec("m2")); // waiting: dropped
        h.now = ttbr;
        h.set_timer(ArchivingTimer::DlqCheck, ttbr);
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(
            sent,
            vec![(
                oq("fe1"),
                Msg::Archiving(ArchivingMsg::Expired {
                    ids: vec!["m2".into()]
                })
            )]
        );
        assert_eq!(h.events(), vec!["record_expired"]);
        assert_eq!(h.actor().depth(), 1);
    }

    /// The expiry check runs only while items wait: none on an idle
    /// queue, set by the first item stored, lapsing once all are consumed.
    #[test]
    fn the_expiry_check_runs_only_while_items_wait() {
        let s = Settings::default();
        let dlq = s.dlq_check;
        let mut h = started(s);
        assert!(
            h.timer(ArchivingTimer::DlqCheck).is_none(),
            "idle: no check"
        );
        h.now = 1_000;
        transfer(&mut h, "fe1", 1, rec("m1"));
        assert_eq!(h.timer(ArchivingTimer::DlqCheck).unwrap(), 1_000 + dlq);
        h.fire(ArchivingTimer::DlqCheck);
        assert!(h.timer(ArchivingTimer::DlqCheck).is_some(), "still waiting");
        h.msg(
            h.actor().archiver(),
            ArchivingMsg::Consumed { keys: vec![1] },
        );
        assert_eq!(h.actor().depth(), 0);
        h.fire(ArchivingTimer::DlqCheck);
        assert!(h.timer(ArchivingTimer::DlqCheck).is_none(), "empty: lapses");
    }

    #[test]
    fn lync2010_drops_only_qoe_reports() {
        let s = Settings {
            deliver_window: 1,
            ..Settings::default()
        };
        let ttbr = s.data_ttbr;
        let mut h = started(s);
        transfer(&mut h, "fe1", 1, rec("m1"));
        transfer(&mut h, "fe1", 2, rec("m2"));
        let QueueItem::Record(mut qoe) = rec("q3") else {
            unreachable!()
        };
        qoe.kind = crate::core::protocol::RecordKind::Qoe;
        transfer(&mut h, "fe1", 3, QueueItem::Record(qoe));
        h.now = ttbr;
        h.set_timer(ArchivingTimer::DlqCheck, ttbr);
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert!(
            sent.is_empty(),
            "no expiry notice to the sender: nothing that matters was lost"
        );
        assert_eq!(h.events(), vec!["record_expired"]);
        assert_eq!(h.actor().depth(), 2, "m1 and m2 stay");
    }
}

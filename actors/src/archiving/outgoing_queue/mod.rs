//! Outgoing queue: the durable store-and-forward queue on a front end
//! (MSMQ's outgoing queue in the original), with Lync 2010's reliability
//! features.
//!
//! **Handoff.** Every item — an archive record, a heartbeat, or a tombstone
//! standing in for a record that left the stream — gets a sequence number
//! on its (front end → destination) link, contiguous from 1 and never
//! reused (the acknowledged position is persisted with the deletions).
//! Transfers go out in order inside a window; the destination acknowledges
//! cumulatively once an item is durable there. With no acknowledgement
//! progress for a resend interval the queue cannot tell transfers lost on
//! the way (with a connection, or by a destination that crashed before
//! storing them) from transfers a slow destination has not reached yet. It
//! sends the first unacknowledged item again as a *probe*, behind
//! everything in flight, and backs off while the link stays silent. The
//! destination handles a link's frames in order, so the probe's answer
//! says how far it got with everything sent before it: short of that, the
//! rest was lost and the queue goes back to resend it (go-back-N);
//! otherwise nothing is resent. Going back on every timeout instead
//! flooded a destination that was only slow with duplicates of what it
//! already held in its inbox, which slowed it further (congestion
//! collapse). The destination drops what it already has: exactly-once, in
//! order.
//!
//! **Heartbeats** (lync2010) go with the data every heartbeat interval. One
//! not acknowledged by the destination within its TTRQ is a *delivery* NACK
//! (link or queue service down); one delivered but not processed within its
//! TTBR is a *processing* NACK (archiver down or behind). The archiver's
//! ACK of a newer heartbeat makes the link healthy again.
//!
//! **Quota monitoring** (lync2010): a warning at 95 % use, then an
//! information event at every check above 90 %.
//!
//! **Expiry.** A record not acknowledged within the data TTRQ leaves the
//! stream (a tombstone takes its slot): under ocs2007r2 it is dropped, under
//! lync2010 it moves to the dead-letter queue, which is resent (with new
//! sequence numbers) once the link is healthy.
//!
//! The queue tells its front end whether archiving can be guaranteed
//! ([`ArchivingMsg::ArchivingHealth`]); critical mode acts on that.
//!
//! This module is the actor and its wiring (numbering, store writes,
//! recovery, resync after damage, the health report); each concern keeps
//! its own state: the [`Link`] (window, acknowledgements, probes,
//! go-back-N; shared with the compliance outboxes), [`heartbeat`] (beats
//! and the link's health), [`quota`] and [`expiry`] (late records and the
//! dead-letter queue).

mod expiry;
mod heartbeat;
mod quota;

pub use heartbeat::LinkHealth;

use crate::core::actor::{
    authorize, identity_refused, ignored, Actor, Ctx, Recovered, StoreError, StoreOp, Timer,
    Written,
};
use crate::core::cluster::Cluster;
use crate::core::identity::{self, Role};
use crate::core::ids::{ActorKind, Addr, MessageId, Millis, Token};
use crate::core::link::{Acked, Link, Seq};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{ArchiveRecord, ArchivingMsg, EnqueueFailure, Msg, QueueItem};
use crate::core::settings::{Semantics, Settings};
use crate::core::store_keys::{
    self as keys, OQ_ACKED, OQ_DEAD, OQ_ENTERED, OQ_RECORD, OQ_RESYNC, STORE_DAMAGED,
};
use expiry::Expiry;
use heartbeat::Heartbeats;
use quota::{Quota, QuotaNote};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of items in one transfer frame (a frame always takes one item):
/// with the per-message limits, well under the 32 MiB frame limit.
pub const BATCH_BYTES: u64 = 4 << 20;

/// The store key of the item at `seq`.
fn record_key(seq: Seq) -> Vec<u8> {
    keys::key_u64(OQ_RECORD, seq.get())
}

enum Write {
    Enqueue {
        fe_token: Token,
        seq: Seq,
        record: ArchiveRecord,
    },
    Heartbeat {
        seq: Seq,
        id: u64,
        sent_at: Millis,
    },
    Delete {
        upto: Seq,
    },
    /// Records leave the stream: tombstones in their slots, and (lync2010)
    /// copies in the dead-letter queue.
    Expire {
        seqs: Vec<Seq>,
        dead: Vec<(u64, ArchiveRecord)>,
        /// Dropped, not kept: everything under ocs2007r2, QoE always.
        dropped: Vec<MessageId>,
    },
    /// Dead letters go back into the stream.
    Resend {
        moves: Vec<(u64, Seq, ArchiveRecord)>,
        /// The operator who asked (`holdfast dlq resend`), to answer.
        operator: Option<Addr>,
    },
    Probe,
}

pub struct OutgoingQueue {
    /// After damage to the store: the sequence number of the tombstone
    /// sent to learn where the destination's sequence stands. New records
    /// are numbered only once an acknowledgement reaches it (a stale one,
    /// queued for this queue's previous life, does not), so that no number
    /// the destination already holds is reused.
    resync: Option<Seq>,
    /// Records waiting to be numbered (with their front end's token), in
    /// order: during a resync, then one at a time, so that one store
    /// write at most is in flight and a failed one gives back the newest
    /// number only.
    deferred: std::collections::VecDeque<(Addr, Token, ArchiveRecord)>,
    /// Queue bytes the deferred records will take.
    deferred_bytes: u64,
    name: String,
    settings: Settings,
    dest: Addr,
    /// The stream to the destination queue.
    link: Link<QueueItem>,
    /// Bytes held (stream and dead-letter queue): what the quota applies to.
    bytes: u64,
    /// Highest seq whose deletion is durable here.
    deleted: Seq,
    writes: BTreeMap<u64, Write>,
    next_token: u64,
    heartbeats: Heartbeats,
    quota: Quota,
    expiry: Expiry,
    store_failing: bool,
    reported: Option<bool>,
    /// Since (re)start, the destination has answered (or there was nothing
    /// to deliver): until then "healthy" is not reported, so a restarted
    /// front end does not resume on a guess.
    verified: bool,
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
            link: Link::new(
                settings.transfer_window,
                settings.resend_interval,
                settings.resend_backoff_max,
            )
            .with_frames(settings.transfer_frames),
            quota: Quota::new(
                settings.queue_quota,
                settings.quota_warning_pct,
                settings.quota_info_pct,
            ),
            settings,
            name,
            bytes: 0,
            deleted: Seq::default(),
            writes: BTreeMap::new(),
            next_token: 0,
            heartbeats: Heartbeats::default(),
            expiry: Expiry::default(),
            store_failing: false,
            reported: None,
            verified: false,
            resync: None,
            deferred: std::collections::VecDeque::new(),
            deferred_bytes: 0,
        }
    }

    /// Items waiting for the destination's acknowledgement.
    pub fn depth(&self) -> usize {
        self.link.len()
    }

    /// Bytes held (stream and dead-letter queue): what the quota applies to.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn health(&self) -> LinkHealth {
        self.heartbeats.health()
    }

    pub fn dead_letters(&self) -> usize {
        self.expiry.dead_letters()
    }

    fn enhanced(&self) -> bool {
        self.settings.semantics == Semantics::Lync2010
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn fe(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::FrontEnd)
    }

    /// Only a damaged store can leave a hole where an item to send should
    /// be: say so, never panic.
    fn missing(&self, seq: Seq, ctx: &mut Ctx) {
        ctx.event(
            OperatorEvent::StoreCorrupt,
            format!("{}: item {seq} missing from the queue", self.name),
        );
    }

    /// Sends what the window and the frames in flight let out: a frame
    /// (a `Transfer` of one item, a `TransferBatch` of more) takes every
    /// item waiting, up to `transfer_batch` items and [`BATCH_BYTES`]
    /// (always one). While `transfer_frames` frames are unacknowledged,
    /// what comes waits for the next acknowledgement and goes with it in
    /// one frame: one write and one acknowledgement at the destination
    /// for the lot.
    fn pump(&mut self, ctx: &mut Ctx) {
        let most = self.settings.transfer_batch.max(1);
        loop {
            let (mut n, mut bytes) = (0u64, 0u64);
            let sending = self.link.take_frame(|item| {
                let size = item.queued_size();
                let fits = n == 0 || (n < most && bytes + size <= BATCH_BYTES);
                if fits {
                    n += 1;
                    bytes += size;
                }
                fits
            });
            let mut items = sending.items;
            if items.len() == 1 {
                let (seq, item) = items.pop().expect("one item");
                ctx.send(self.dest.clone(), ArchivingMsg::Transfer { seq, item });
            } else if let Some((first, _)) = items.first() {
                let first = *first;
                let items = items.into_iter().map(|(_, item)| item).collect();
                ctx.send(
                    self.dest.clone(),
                    ArchivingMsg::TransferBatch { first, items },
                );
            } else {
                if let Some(seq) = sending.missing {
                    self.missing(seq, ctx);
                }
                break;
            }
            if let Some(seq) = sending.missing {
                self.missing(seq, ctx);
                break;
            }
        }
        self.arm_resend(ctx);
    }

    fn deleting(&self) -> bool {
        self.writes
            .values()
            .any(|w| matches!(w, Write::Delete { .. }))
    }

    /// Whether the resend timer has something to watch: transfers in
    /// flight, or acknowledged items whose deletion failed (it retries).
    fn needs_resend_timer(&self) -> bool {
        self.link.in_flight() || (self.deleted < self.link.acked() && !self.deleting())
    }

    /// Sets the resend timer if there is something to watch and it is not
    /// set; the interval starts afresh.
    fn arm_resend(&mut self, ctx: &mut Ctx) {
        if let Some(after) = self.link.arm(self.needs_resend_timer()) {
            ctx.set_timer(ArchivingTimer::Resend, after);
        }
    }

    /// Sets the expiry check and the quota check when they have something
    /// to look at and are not set. Called at the end of every reaction, so
    /// whatever wakes one (an item stored, a store failure, a legacy
    /// expiry) arms it, and a check that finds nothing lets it lapse.
    fn arm_checks(&mut self, ctx: &mut Ctx) {
        let dlq_needed = !self.link.is_empty()
            || self.expiry.has_dead_letters()
            // It probes a failing store, the only writer left then.
            || self.store_failing
            // ocs2007r2 re-assesses critical mode on this tick.
            || (!self.enhanced() && (self.quota.full() || self.expiry.expired_at.is_some()));
        if dlq_needed && !self.expiry.armed {
            self.expiry.armed = true;
            ctx.set_timer(ArchivingTimer::DlqCheck, self.settings.dlq_check);
        }
        let quota_needed = self.enhanced() && self.quota.watching(self.bytes);
        if quota_needed && !self.quota.armed {
            self.quota.armed = true;
            ctx.set_timer(ArchivingTimer::QuotaCheck, self.settings.quota_check);
        }
    }

    /// Sends the first unacknowledged item again, behind everything in
    /// flight, to learn whether what was sent before it arrived.
    fn send_probe(&mut self, ctx: &mut Ctx) {
        match self.link.probe() {
            Ok(p) => ctx.send(
                self.dest.clone(),
                ArchivingMsg::Probe {
                    seq: p.seq,
                    item: p.item,
                    probe: p.probe,
                },
            ),
            Err(seq) => self.missing(seq, ctx),
        }
    }

    /// The destination has handled a probe: if the link went back to
    /// resend what was lost, send it.
    fn on_probe_answer(&mut self, probe: u64, ctx: &mut Ctx) {
        if self.link.probe_answered(probe) {
            self.pump(ctx);
        }
    }

    /// Whether archiving can be guaranteed now, and if not, why.
    fn assess(&self) -> (bool, String) {
        if self.store_failing {
            return (
                false,
                format!("the queue store on {} is failing", self.name),
            );
        }
        if self.quota.full() {
            return (
                false,
                format!("the outgoing queue on {} is at its quota", self.name),
            );
        }
        if self.enhanced() {
            match self.heartbeats.health() {
                LinkHealth::Healthy => (true, "healthy".into()),
                LinkHealth::DeliveryFailing => (
                    false,
                    format!(
                        "delivery NACK: {} cannot reach the queue on {}",
                        self.name, self.dest.node
                    ),
                ),
                LinkHealth::ProcessingFailing => (
                    false,
                    format!(
                        "processing NACK: the archiver on {} is down or behind",
                        self.dest.node
                    ),
                ),
            }
        } else if self.expiry.expired_at.is_some() {
            (
                false,
                format!(
                    "records from {} expired before they were archived",
                    self.name
                ),
            )
        } else {
            (true, "healthy".into())
        }
    }

    fn report(&mut self, ctx: &mut Ctx) {
        let (ok, reason) = self.assess();
        if ok && !self.verified {
            return;
        }
        if self.reported != Some(ok) {
            self.reported = Some(ok);
            ctx.send(self.fe(), ArchivingMsg::ArchivingHealth { ok, reason });
        }
    }

    /// Makes the deletion of everything acknowledged durable.
    fn delete_acked(&mut self, ctx: &mut Ctx) {
        let upto = self.link.acked();
        if self.deleted >= upto || self.deleting() {
            return;
        }
        let mut ops: Vec<StoreOp> = self
            .deleted
            .after_upto(upto)
            .map(|s| StoreOp::Delete { key: record_key(s) })
            .collect();
        ops.extend(self.expiry.forget_upto(upto));
        ops.push(StoreOp::Put {
            key: OQ_ACKED.to_vec(),
            value: upto.get().to_be_bytes().to_vec(),
        });
        let token = self.token();
        self.writes.insert(token, Write::Delete { upto });
        ctx.persist(token, ops);
    }

    fn enqueue(&mut self, from: Addr, fe_token: Token, record: ArchiveRecord, ctx: &mut Ctx) {
        let size = record.queued_size();
        if !self.quota.fits(self.bytes + self.deferred_bytes, size) {
            if self.quota.refused() {
                ctx.event(
                    OperatorEvent::QueueQuotaExceeded,
                    format!(
                        "{}: {} of {} bytes used",
                        self.name,
                        self.bytes,
                        self.quota.limit()
                    ),
                );
            }
            ctx.send(
                from,
                ArchivingMsg::EnqueueFailed {
                    token: fe_token,
                    cause: EnqueueFailure::QuotaExceeded,
                },
            );
            self.report(ctx);
            return;
        }
        if self.resync.is_some() || !self.deferred.is_empty() {
            self.deferred_bytes += size;
            self.deferred.push_back((from, fe_token, record));
            return self.drain_deferred(ctx);
        }
        self.number(fe_token, record, ctx);
    }

    /// Numbers the next deferred record, unless a resync is on or a record
    /// write is in flight (its completion calls this again).
    fn drain_deferred(&mut self, ctx: &mut Ctx) {
        if self.resync.is_some()
            || self
                .writes
                .values()
                .any(|w| matches!(w, Write::Enqueue { .. }))
        {
            return;
        }
        if let Some((_, fe_token, record)) = self.deferred.pop_front() {
            self.deferred_bytes -= record.queued_size();
            self.number(fe_token, record, ctx);
        }
    }

    /// Gives `record` the next sequence number and writes it.
    fn number(&mut self, fe_token: Token, record: ArchiveRecord, ctx: &mut Ctx) {
        let seq = self.link.number();
        let token = self.token();
        ctx.persist(
            token,
            vec![StoreOp::Put {
                key: record_key(seq),
                value: keys::encode(&QueueItem::Record(record.clone())),
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

    /// Takes in a cumulative acknowledgement; returns whether the probes
    /// were backing off when it came.
    fn on_ack(&mut self, upto: Seq, ctx: &mut Ctx) -> bool {
        self.verified = true;
        if self.resync.is_some_and(|tombstone| upto >= tombstone) {
            self.end_resync(upto, ctx);
            return false;
        }
        let backing_off = match self.link.ack(upto) {
            Acked::Beyond { last } => {
                ctx.event(
                    OperatorEvent::ProtocolViolation,
                    format!(
                        "{} got an acknowledgement for seq {upto}, beyond {last}",
                        self.name
                    ),
                );
                return false;
            }
            Acked::Stale { backing_off } => return backing_off,
            Acked::Advanced { backing_off, items } => {
                for item in items {
                    self.bytes -= item.queued_size();
                }
                backing_off
            }
        };
        self.heartbeats.delivered_upto(upto);
        self.restart_rhythm(backing_off, ctx);
        // ocs2007r2: the stream moves again a while after the last expiry.
        if let Some(at) = self.expiry.expired_at {
            if ctx.now() >= at + self.settings.heartbeat_interval {
                self.expiry.expired_at = None;
            }
        }
        self.delete_acked(ctx);
        self.pump(ctx);
        self.report(ctx);
        backing_off
    }

    /// The normal resend interval again, and a timer set while the probes
    /// backed off set again (see [`Link::restart_rhythm`]): after a
    /// flapping link, 30 s on real processes went unprobed otherwise.
    fn restart_rhythm(&mut self, was_backing_off: bool, ctx: &mut Ctx) {
        if let Some(after) = self.link.restart_rhythm(was_backing_off) {
            ctx.set_timer(ArchivingTimer::Resend, after);
        }
    }

    /// After a silence, with transfers still unacknowledged: a probe now,
    /// and the normal resend rhythm again.
    fn probe_after_silence(&mut self, ctx: &mut Ctx) {
        self.restart_rhythm(true, ctx);
        if self.link.in_flight() {
            self.send_probe(ctx);
            self.link.count_resend();
        }
    }

    fn heartbeat_tick(&mut self, ctx: &mut Ctx) {
        let now = ctx.now();
        let (ttrq, ttbr) = (self.settings.heartbeat_ttrq, self.settings.heartbeat_ttbr);
        for (id, kind) in self.heartbeats.nacks(now, ttrq, ttbr) {
            let (name, what) = match kind {
                LinkHealth::DeliveryFailing => (
                    OperatorEvent::NackDelivery,
                    "not delivered to the destination queue",
                ),
                _ => (
                    OperatorEvent::NackProcessing,
                    "not processed by the archiver",
                ),
            };
            ctx.event(
                name,
                format!(
                    "{} -> {}: heartbeat {id} {what} in time",
                    self.name, self.dest.node
                ),
            );
        }
        // The next heartbeat, in the data stream.
        let id = self.heartbeats.next_id(now);
        let seq = self.link.number();
        let token = self.token();
        let item = QueueItem::Heartbeat {
            id,
            sent_at: now,
            front_end: self.name.clone(),
        };
        ctx.persist(
            token,
            vec![StoreOp::Put {
                key: record_key(seq),
                value: keys::encode(&item),
            }],
        );
        self.writes.insert(
            token,
            Write::Heartbeat {
                seq,
                id,
                sent_at: now,
            },
        );
        self.report(ctx);
        ctx.set_timer(ArchivingTimer::Heartbeat, self.settings.heartbeat_interval);
    }

    fn quota_tick(&mut self, ctx: &mut Ctx) {
        match self.quota.check(self.bytes) {
            Some(QuotaNote::Warning { pct, quota }) => ctx.event(
                OperatorEvent::QuotaWarning,
                format!(
                    "{}: outgoing queue at {pct}% of its {} byte quota",
                    self.name, quota
                ),
            ),
            Some(QuotaNote::Info { pct, quota }) => ctx.event(
                OperatorEvent::QuotaInfo,
                format!(
                    "{}: outgoing queue at {pct}% of its {} byte quota",
                    self.name, quota
                ),
            ),
            None => {}
        }
        self.report(ctx);
    }

    /// Moves a batch of dead letters back into the stream (new sequence
    /// numbers, one write); `operator` is told how it went.
    fn resend_dead_letters(&mut self, operator: Option<Addr>, ctx: &mut Ctx) {
        let link = &mut self.link;
        let resending = self.expiry.resend(ctx.now(), || link.number());
        let token = self.token();
        let moves = resending.moves;
        self.writes.insert(token, Write::Resend { moves, operator });
        ctx.persist(token, resending.ops);
    }

    /// `holdfast dlq resend`: an operator moves the dead letters back into
    /// the stream now, not once heartbeats say the link is healthy.
    fn operator_resend(&mut self, from: Addr, ctx: &mut Ctx) {
        if let Err(refusal) = identity::require(&from, &[Role::Operator]) {
            identity_refused(&self.name, &from, "DeadLettersResend", &refusal, ctx);
            let reason = refusal.to_string();
            return ctx.send(from, Msg::Forbidden { reason });
        }
        if !self.expiry.has_dead_letters() {
            return ctx.send(from, ArchivingMsg::DeadLettersResent { resent: 0, left: 0 });
        }
        self.resend_dead_letters(Some(from), ctx);
    }

    fn dlq_tick(&mut self, ctx: &mut Ctx) {
        let now = ctx.now();
        let ttrq = self.settings.data_ttrq;
        let late = self.expiry.late(now, ttrq, self.link.unacked());
        if !late.is_empty() {
            let expiring = self.expiry.expire(late, self.enhanced());
            let token = self.token();
            self.writes.insert(
                token,
                Write::Expire {
                    seqs: expiring.seqs,
                    dead: expiring.dead,
                    dropped: expiring.dropped,
                },
            );
            ctx.persist(token, expiring.ops);
        } else if self.enhanced() && self.heartbeats.healthy() && self.expiry.has_dead_letters() {
            self.resend_dead_letters(None, ctx);
        } else if self.store_failing {
            // Nothing else writes while the front end is shut down: probe.
            self.probe(ctx);
        }
        if !self.enhanced() {
            // No quota monitoring or heartbeats in ocs2007r2: re-assess here
            // so that critical mode can resume once the trouble is over.
            self.quota.legacy_check(self.bytes);
            let unsent_records = self
                .link
                .unacked()
                .any(|(_, i)| matches!(i, QueueItem::Record(_)));
            if self
                .expiry
                .expired_at
                .is_some_and(|at| now >= at + self.settings.heartbeat_interval)
                && !unsent_records
            {
                self.expiry.expired_at = None;
            }
            self.report(ctx);
        }
    }

    /// A small durable write whose only purpose is to learn whether the
    /// store works.
    fn probe(&mut self, ctx: &mut Ctx) {
        let now = ctx.now();
        let token = self.token();
        self.writes.insert(token, Write::Probe);
        ctx.persist(
            token,
            vec![StoreOp::Put {
                key: b"meta/probe".to_vec(),
                value: now.to_be_bytes().to_vec(),
            }],
        );
    }

    fn persisted_ok(&mut self, write: Write, ctx: &mut Ctx) {
        match write {
            Write::Enqueue {
                fe_token,
                seq,
                record,
            } => {
                self.expiry.entered(record.time);
                let item = QueueItem::Record(record);
                self.bytes += item.queued_size();
                self.link.insert(seq, item);
                ctx.send(self.fe(), ArchivingMsg::Enqueued { token: fe_token });
                self.pump(ctx);
                self.drain_deferred(ctx);
            }
            Write::Heartbeat { seq, id, sent_at } => {
                let item = QueueItem::Heartbeat {
                    id,
                    sent_at,
                    front_end: self.name.clone(),
                };
                self.bytes += item.queued_size();
                self.link.insert(seq, item);
                self.heartbeats.track(id, seq, sent_at);
                self.pump(ctx);
            }
            Write::Delete { upto } => {
                self.deleted = self.deleted.max(upto);
                self.delete_acked(ctx);
            }
            Write::Expire {
                seqs,
                dead,
                dropped,
            } => {
                for seq in seqs {
                    if let Some(old) = self.link.insert(seq, QueueItem::Tombstone) {
                        self.bytes -= old.queued_size();
                        self.bytes += QueueItem::Tombstone.queued_size();
                    }
                }
                if !dead.is_empty() {
                    let n = dead.len();
                    self.bytes += self.expiry.keep(dead);
                    ctx.event(
                        OperatorEvent::DeadLettered,
                        format!(
                            "{}: {n} records not delivered within the data TTRQ, kept for resend",
                            self.name
                        ),
                    );
                }
                if !dropped.is_empty() {
                    self.expiry.count_expired(dropped.len() as u64);
                    if !self.enhanced() {
                        // Only a loss of records that must not be lost
                        // tells critical mode that archiving is failing.
                        self.expiry.expired_at = Some(ctx.now());
                    }
                    ctx.event(
                        OperatorEvent::RecordExpired,
                        format!("ids={}", dropped.join(",")),
                    );
                }
                self.pump(ctx);
            }
            Write::Resend { moves, operator } => {
                let n = moves.len();
                let now = ctx.now();
                for (k, seq, record) in moves {
                    self.bytes -= self.expiry.resent(k, seq, now);
                    let item = QueueItem::Record(record);
                    self.bytes += item.queued_size();
                    self.link.insert(seq, item);
                }
                let by = operator
                    .as_ref()
                    .map(|o| format!(", asked by {}", o.node))
                    .unwrap_or_default();
                ctx.event(
                    OperatorEvent::DeadLetterResent,
                    format!("{}: {n} records resent{by}", self.name),
                );
                if let Some(operator) = operator {
                    let left = self.expiry.dead_letters() as u64;
                    ctx.send(
                        operator,
                        ArchivingMsg::DeadLettersResent {
                            resent: n as u64,
                            left,
                        },
                    );
                }
                self.pump(ctx);
            }
            Write::Probe => {}
        }
    }

    fn persisted_err(&mut self, write: Write, e: StoreError, ctx: &mut Ctx) {
        match write {
            Write::Enqueue { fe_token, seq, .. } => {
                // The host reports a persist before any other event, so this
                // was the newest seq: give it back, keeping seqs contiguous.
                debug_assert_eq!(seq.next(), self.link.next_seq());
                self.link.number_from(seq);
                ctx.event(
                    OperatorEvent::QueueStoreFailed,
                    format!("{}: {e}", self.name),
                );
                ctx.send(
                    self.fe(),
                    ArchivingMsg::EnqueueFailed {
                        token: fe_token,
                        cause: EnqueueFailure::Store(e.to_string()),
                    },
                );
                self.drain_deferred(ctx);
            }
            Write::Heartbeat { seq, .. } => {
                debug_assert_eq!(seq.next(), self.link.next_seq());
                self.link.number_from(seq);
                ctx.event(
                    OperatorEvent::QueueStoreFailed,
                    format!("{}: writing a heartbeat: {e}", self.name),
                );
            }
            Write::Resend { moves, operator } => {
                if let Some((_, first, _)) = moves.first() {
                    self.link.number_from(*first);
                }
                let reason = format!("{}: resending dead letters: {e}", self.name);
                ctx.event(OperatorEvent::QueueStoreFailed, reason.clone());
                if let Some(operator) = operator {
                    ctx.send(operator, Msg::Forbidden { reason });
                }
            }
            // Retried later; until then a restart would resend acknowledged
            // items (dropped by the destination) or keep late records.
            Write::Delete { .. } | Write::Expire { .. } | Write::Probe => {
                ctx.event(
                    OperatorEvent::QueueStoreFailed,
                    format!("{}: {e}", self.name),
                );
                self.arm_resend(ctx);
            }
        }
    }
}

impl OutgoingQueue {
    /// At start after damage: a tombstone at the next number goes out
    /// behind what is held, and new records wait for the destination's
    /// answer. The resync mark is durable, so a crash before the answer
    /// resyncs again (the repaired store no longer says it was damaged).
    fn begin_resync(&mut self, ctx: &mut Ctx) {
        let seq = self.link.number();
        self.link.insert(seq, QueueItem::Tombstone);
        self.bytes += QueueItem::Tombstone.queued_size();
        self.resync = Some(seq);
        ctx.persist(
            self.token(),
            vec![StoreOp::Put {
                key: OQ_RESYNC.to_vec(),
                value: Vec::new(),
            }],
        );
    }

    /// The destination has everything up to `upto`, the resync tombstone
    /// included. Beyond what this queue remembers, it held numbers lost
    /// with the damage: numbering goes on after them.
    fn end_resync(&mut self, upto: Seq, ctx: &mut Ctx) {
        self.resync = None;
        if upto >= self.link.next_seq() {
            ctx.event(
                OperatorEvent::QueueResynced,
                format!(
                    "{}: {} holds up to seq {upto}, beyond this queue's {}; numbering goes on from {}",
                    self.name,
                    self.dest.node,
                    self.link.last(),
                    upto.next()
                ),
            );
            self.link.number_from(upto.next());
        }
        ctx.persist(
            self.token(),
            vec![StoreOp::Delete {
                key: OQ_RESYNC.to_vec(),
            }],
        );
        self.on_ack(upto, ctx);
        self.drain_deferred(ctx);
    }

    /// Slots between the acknowledged point and the last item that the
    /// store gave back empty: only damage the store stepped over makes
    /// them (every slot is written in order, and only acknowledged ones are
    /// deleted). Each is sent as a tombstone, so the link's sequence stays
    /// contiguous and what follows is archived; the event names the slots
    /// (records among them that had not reached the archiving server are
    /// lost, and the store's own event said so).
    fn fill_holes(&mut self, max: Seq, ctx: &mut Ctx) {
        let mut missing: Vec<(Seq, Seq)> = Vec::new();
        for seq in self.link.acked().between(max) {
            if self.link.contains(seq) {
                continue;
            }
            self.link.insert(seq, QueueItem::Tombstone);
            self.bytes += QueueItem::Tombstone.queued_size();
            match missing.last_mut() {
                Some((_, end)) if end.next() == seq => *end = seq,
                _ => missing.push((seq, seq)),
            }
        }
        if !missing.is_empty() {
            let ranges: Vec<String> = missing
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            ctx.event(
                OperatorEvent::QueueItemsMissing,
                format!(
                    "{}: sequence numbers {} were unreadable in the store; sent as tombstones",
                    self.name,
                    ranges.join(", ")
                ),
            );
        }
    }
}

impl OutgoingQueue {
    /// When the record at the head of the stream was created (0: none
    /// waits): how long the oldest record has waited, for monitoring.
    fn oldest_queued_at(&self) -> Millis {
        self.link
            .unacked()
            .find_map(|(_, item)| match item {
                QueueItem::Record(r) => Some(r.time),
                _ => None,
            })
            .unwrap_or(0)
    }
}

impl Actor for OutgoingQueue {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        let acked = recovered
            .get(OQ_ACKED)
            .and_then(|v| v.as_slice().try_into().ok())
            .map(u64::from_be_bytes)
            .map_or(Seq::default(), Seq::new);
        self.link.restart(acked);
        self.expiry.clear();
        self.heartbeats.clear();
        self.bytes = 0;
        let mut max = acked;
        let mut first = None;
        for (k, v) in &recovered {
            if let Some(seq) = keys::parse_u64(OQ_RECORD, k).map(Seq::new) {
                first.get_or_insert(seq);
                if seq <= acked {
                    continue; // acknowledged; its deletion is redone below
                }
                match keys::decode_item(v) {
                    Ok(item) => {
                        if let QueueItem::Heartbeat { id, sent_at, .. } = &item {
                            self.heartbeats.recovered(*id, seq, *sent_at);
                        }
                        self.bytes += item.queued_size();
                        self.link.insert(seq, item);
                        max = max.max(seq);
                    }
                    Err(e) => ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: item {seq}: {e}", self.name),
                    ),
                }
            } else if let Some(seq) = keys::parse_u64(OQ_ENTERED, k).map(Seq::new) {
                match v.as_slice().try_into().map(u64::from_be_bytes) {
                    Ok(at) => self.expiry.recovered_entry(seq, at),
                    // Without it the record's own (older) time rules: it
                    // may expire again early, and is kept again.
                    Err(_) => ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: entry time of {seq}: not 8 bytes", self.name),
                    ),
                }
            } else if let Some(k) = keys::parse_u64(OQ_DEAD, k) {
                match keys::decode_record(v) {
                    Ok(r) => {
                        self.bytes += r.queued_size();
                        self.expiry.recovered(k, r);
                    }
                    Err(e) => ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: dead letter {k}: {e}", self.name),
                    ),
                }
            }
        }
        self.fill_holes(max, ctx);
        let damaged = recovered.contains_key(STORE_DAMAGED) || recovered.contains_key(OQ_RESYNC);
        self.resync = None;
        self.deferred.clear();
        self.deferred_bytes = 0;
        self.deleted = first
            .map(|f| Seq::new(f.get().saturating_sub(1)))
            .unwrap_or(acked)
            .min(acked);
        self.link.recovered(max);
        self.heartbeats.reset_health();
        self.reported = None;
        self.verified = self.link.is_empty() && !self.expiry.has_dead_letters();
        // A queue that comes back (nearly) full is full.
        self.quota.restarted(self.bytes);
        self.delete_acked(ctx);
        if damaged {
            self.begin_resync(ctx);
        }
        self.pump(ctx);
        // Learn whether the store works before saying anything: the probe's
        // completion reports the health.
        self.probe(ctx);
        self.expiry.armed = false;
        self.quota.armed = false;
        self.arm_checks(ctx);
        if self.enhanced() {
            ctx.set_timer(ArchivingTimer::Heartbeat, self.settings.heartbeat_interval);
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match &msg {
            Msg::Archiving(ArchivingMsg::Enqueue { .. }) => from == self.fe(),
            Msg::Archiving(
                ArchivingMsg::TransferAck { .. }
                | ArchivingMsg::ProbeAck { .. }
                | ArchivingMsg::Expired { .. },
            ) => from == self.dest,
            Msg::Archiving(ArchivingMsg::HeartbeatAck { .. }) => {
                from.node == self.dest.node && from.actor == ActorKind::Archiver
            }
            // An operator, from the command-line tool (checked below).
            Msg::Archiving(ArchivingMsg::DeadLettersResend) => from.actor == ActorKind::Client,
            _ => true,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::Archiving(ArchivingMsg::Enqueue { token, record }) => {
                self.enqueue(from, token, record, ctx)
            }
            Msg::Archiving(ArchivingMsg::TransferAck { upto }) => {
                // An answer while the probes back off: the link carries
                // frames again, but what was sent into the cut may be gone
                // (this may answer a transfer past a gap, or a duplicate).
                // Ask at once rather than at the next, backed-off, probe:
                // after a link that flapped, that probe was up to
                // resend_backoff_max away from the heal (16 s on real
                // processes).
                if self.on_ack(upto, ctx) {
                    self.probe_after_silence(ctx);
                }
            }
            Msg::Archiving(ArchivingMsg::ProbeAck { upto, probe }) => {
                self.on_ack(upto, ctx);
                self.on_probe_answer(probe, ctx);
            }
            Msg::Archiving(ArchivingMsg::HeartbeatAck { id }) => {
                self.verified = true;
                if self.heartbeats.processed(id) {
                    ctx.event(
                        OperatorEvent::QueueHealthy,
                        format!(
                            "{} -> {}: heartbeat {id} processed, link healthy again",
                            self.name, self.dest.node
                        ),
                    );
                }
                self.report(ctx);
            }
            Msg::Archiving(ArchivingMsg::DeadLettersResend) => self.operator_resend(from, ctx),
            Msg::Archiving(ArchivingMsg::Expired { ids }) => {
                self.expiry.count_expired(ids.len() as u64);
                self.expiry.expired_at = Some(ctx.now());
                self.report(ctx);
            }
            other => ignored("outgoing queue", &self.name, other.name(), &from, ctx),
        }
        self.arm_checks(ctx);
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Archiving(ArchivingTimer::Resend) => {
                if self.link.silence_check() {
                    // No progress for a whole interval: lost or only slow?
                    // Ask with a probe, and wait longer next time.
                    self.send_probe(ctx);
                    self.link.count_resend();
                    self.link.back_off();
                }
                self.delete_acked(ctx);
                // Still armed here: `pump` leaves the timer to this.
                self.pump(ctx);
                if let Some(after) = self.link.rearm_after_check(self.needs_resend_timer()) {
                    ctx.set_timer(ArchivingTimer::Resend, after);
                }
            }
            Timer::Archiving(ArchivingTimer::Heartbeat) => self.heartbeat_tick(ctx),
            Timer::Archiving(ArchivingTimer::QuotaCheck) => {
                self.quota.armed = false;
                self.quota_tick(ctx);
            }
            Timer::Archiving(ArchivingTimer::DlqCheck) => {
                self.expiry.armed = false;
                self.dlq_tick(ctx);
            }
            Timer::Archiving(
                ArchivingTimer::Flush
                | ArchivingTimer::DbTimeout
                | ArchivingTimer::CriticalResume
                | ArchivingTimer::Purge,
            )
            | Timer::Chat(_)
            | Timer::Compliance(_) => {}
        }
        self.arm_checks(ctx);
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        let Some(write) = self.writes.remove(&token) else {
            return;
        };
        match result {
            Ok(_) => {
                self.store_failing = false;
                self.persisted_ok(write, ctx);
            }
            Err(e) => {
                self.store_failing = true;
                self.persisted_err(write, e, ctx);
            }
        }
        self.report(ctx);
        self.arm_checks(ctx);
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![
            (Gauge::OutgoingDepth, self.depth() as u64),
            (Gauge::OutgoingBytes, self.bytes),
            (Gauge::Resends, self.link.resends()),
            (Gauge::DeadLetterDepth, self.expiry.dead_letters() as u64),
            (Gauge::DeadLettered, self.expiry.dead_lettered()),
            (Gauge::Expired, self.expiry.expired()),
            (Gauge::LinkFailing, u64::from(!self.heartbeats.healthy())),
            (Gauge::OldestQueuedAt, self.oldest_queued_at()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cluster, Harness};

    fn oq(settings: Settings) -> Harness<OutgoingQueue> {
        Harness::new(
            Addr::new("fe1", ActorKind::OutgoingQueue),
            OutgoingQueue::new("fe1", cluster(), settings),
        )
    }

    /// fe1's outgoing queue with `settings`, started afresh.
    fn started(settings: Settings) -> Harness<OutgoingQueue> {
        let mut h = oq(settings);
        h.start(Recovered::new());
        h
    }

    /// The destination queue acknowledges the transfers up to `upto`.
    fn ack(h: &mut Harness<OutgoingQueue>, upto: u64) -> Vec<(Addr, Msg)> {
        h.msg(dest(), ArchivingMsg::TransferAck { upto: Seq(upto) })
    }

    /// The destination queue answers the probe `probe`: it holds all up
    /// to `upto`.
    fn probe_ack(h: &mut Harness<OutgoingQueue>, upto: u64, probe: u64) -> Vec<(Addr, Msg)> {
        h.msg(
            dest(),
            ArchivingMsg::ProbeAck {
                upto: Seq(upto),
                probe,
            },
        )
    }

    /// The usual test record `id`, sent at `time`.
    fn rec(id: &str, time: Millis) -> ArchiveRecord {
        ArchiveRecord {
            time,
            ..crate::testkit::record(id)
        }
    }

    fn fe() -> Addr {
        Addr::new("fe1", ActorKind::FrontEnd)
    }

    fn dest() -> Addr {
        Addr::new("arch1", ActorKind::DestinationQueue)
    }

    fn label(item: &QueueItem) -> String {
        match item {
            QueueItem::Record(r) => r.id.to_string(),
            QueueItem::Heartbeat { .. } => "heartbeat".into(),
            QueueItem::Tombstone => "tombstone".into(),
        }
    }

    /// (seq, "record id" | "heartbeat" | "tombstone") of every item
    /// transferred, alone or in a batch.
    fn transfers(sent: &[(Addr, Msg)]) -> Vec<(u64, String)> {
        sent.iter()
            .flat_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Transfer { seq, item }) => vec![(seq.0, label(item))],
                Msg::Archiving(ArchivingMsg::TransferBatch { first, items }) => (first.0..)
                    .zip(items)
                    .map(|(seq, item)| (seq, label(item)))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The seqs of each transfer frame sent: one per frame.
    fn frames(sent: &[(Addr, Msg)]) -> Vec<Vec<u64>> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Transfer { seq, .. }) => Some(vec![seq.0]),
                Msg::Archiving(ArchivingMsg::TransferBatch { first, items }) => {
                    Some((first.0..first.0 + items.len() as u64).collect())
                }
                _ => None,
            })
            .collect()
    }

    fn framed(frames: u64, batch: u64) -> Settings {
        Settings {
            transfer_frames: frames,
            transfer_batch: batch,
            ..Settings::default()
        }
    }

    /// One frame in flight: the first record goes at once, the ones that
    /// come before its acknowledgement wait and go together in one batch
    /// frame (at most `transfer_batch` items each); the batch's
    /// acknowledgement deletes them all in one write.
    #[test]
    fn records_that_come_while_a_frame_is_in_flight_go_in_one_batch() {
        let mut h = started(framed(1, 3));
        assert_eq!(frames(&enqueue(&mut h, 0, "m0")), vec![vec![1]]);
        for i in 1..=4 {
            let sent = enqueue(&mut h, i, &format!("m{i}"));
            assert!(frames(&sent).is_empty(), "waits for the ack: {sent:?}");
        }
        let sent = ack(&mut h, 1);
        assert_eq!(frames(&sent), vec![vec![2, 3, 4]], "one frame, three items");
        assert_eq!(
            transfers(&sent),
            vec![(2, "m1".into()), (3, "m2".into()), (4, "m3".into())]
        );
        // Acknowledged short of the batch's end: the frame is still in
        // flight.
        assert!(frames(&ack(&mut h, 3)).is_empty());
        let sent = ack(&mut h, 4);
        assert_eq!(frames(&sent), vec![vec![5]]);
        ack(&mut h, 5);
        assert_eq!(h.actor().depth(), 0);
        assert!(keys::queued_records(&h.store).is_empty(), "all deleted");
        assert_eq!(h.store.get(OQ_ACKED).unwrap(), &5u64.to_be_bytes().to_vec());
    }

    /// A batch frame lost on the way: the probe's answer falls short of
    /// it, and the queue sends its items again from the acknowledged
    /// point, in as many frames as are allowed.
    #[test]
    fn a_lost_batch_is_sent_again_after_the_probe_answer() {
        let mut h = started(framed(2, 2));
        enqueue(&mut h, 0, "m0");
        enqueue(&mut h, 1, "m1");
        for i in 2..=5 {
            enqueue(&mut h, i, &format!("m{i}"));
        }
        let sent = ack(&mut h, 1);
        // Frame 2 (seq 2) is in flight; one more frame may go: [3, 4].
        assert_eq!(frames(&sent), vec![vec![3, 4]]);
        let sent = ack(&mut h, 2);
        assert_eq!(frames(&sent), vec![vec![5, 6]]);
        // Frames [3, 4] and [5, 6] are lost with a connection: a whole
        // resend interval without progress, then a probe.
        assert!(probe_seqs(&h.fire(ArchivingTimer::Resend)).is_empty());
        let sent = h.fire(ArchivingTimer::Resend);
        assert_eq!(probe_seqs(&sent), vec![3]);
        assert!(frames(&sent).is_empty());
        let sent = probe_ack(&mut h, 3, 1);
        assert_eq!(frames(&sent), vec![vec![4, 5], vec![6]]);
        let sent = ack(&mut h, 6);
        assert!(frames(&sent).is_empty());
        assert_eq!(h.actor().depth(), 0);
    }

    /// The same for probes.
    fn probes(sent: &[(Addr, Msg)]) -> Vec<(u64, String)> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Probe { seq, item, .. }) => Some((seq.0, label(item))),
                _ => None,
            })
            .collect()
    }

    /// The front end hands the queue record `id` (accepted at time 0).
    /// After damage at the tail of the store (seqs 3 and 4, already at the
    /// destination, are gone), new records wait: a stale acknowledgement
    /// below the resync tombstone does not end the wait, the first one at
    /// or beyond it does, and numbering goes on after what the destination
    /// holds, one record write at a time.
    #[test]
    fn after_damage_no_sequence_number_is_reused() {
        let mut recovered = Recovered::new();
        for seq in 1..=2 {
            recovered.insert(
                keys::key_u64(OQ_RECORD, seq),
                keys::encode(&QueueItem::Record(rec(&format!("m{seq}"), 0))),
            );
        }
        recovered.insert(STORE_DAMAGED.to_vec(), b"tail".to_vec());
        let mut h = oq(Settings::default());
        let sent = h.start(recovered);
        // m1, m2 and the resync tombstone at 3 go out.
        assert_eq!(seqs(&sent), vec![1, 2, 3]);
        let sent = enqueue(&mut h, 10, "new1");
        assert!(
            sent.is_empty(),
            "held until the destination answers: {sent:?}"
        );
        enqueue(&mut h, 11, "new2");
        // A stale acknowledgement (queued for the previous life) below the
        // tombstone does not end the wait.
        let sent = ack(&mut h, 2);
        assert!(
            !sent
                .iter()
                .any(|(_, m)| matches!(m, Msg::Archiving(ArchivingMsg::Enqueued { .. }))),
            "{sent:?}"
        );
        // The destination holds up to 4 (the lost tail): numbering goes on
        // from 5, and both records are numbered, in order.
        let sent = ack(&mut h, 4);
        assert_eq!(h.events(), vec!["queue_resynced"]);
        let enqueued: Vec<u64> = sent
            .iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Enqueued { token }) => Some(token.0),
                _ => None,
            })
            .collect();
        assert_eq!(enqueued, vec![10, 11]);
        assert_eq!(seqs(&sent), vec![5, 6]);
    }

    fn enqueue(h: &mut Harness<OutgoingQueue>, token: u64, id: &str) -> Vec<(Addr, Msg)> {
        h.msg(
            fe(),
            ArchivingMsg::Enqueue {
                token: Token(token),
                record: rec(id, 0),
            },
        )
    }

    /// Records m0, m1, … m(n-1).
    fn enqueue_n(h: &mut Harness<OutgoingQueue>, n: u64) {
        for i in 0..n {
            enqueue(h, i, &format!("m{i}"));
        }
    }

    fn seqs(sent: &[(Addr, Msg)]) -> Vec<u64> {
        transfers(sent).into_iter().map(|(s, _)| s).collect()
    }

    fn probe_seqs(sent: &[(Addr, Msg)]) -> Vec<u64> {
        probes(sent).into_iter().map(|(s, _)| s).collect()
    }

    fn health(sent: &[(Addr, Msg)]) -> Vec<bool> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::ArchivingHealth { ok, .. }) => Some(*ok),
                _ => None,
            })
            .collect()
    }

    fn legacy() -> Settings {
        Settings {
            semantics: Semantics::Ocs2007r2,
            ..Settings::default()
        }
    }

    #[test]
    fn enqueue_persists_then_confirms_then_transfers() {
        let mut h = oq(Settings::default());
        let sent = h.start(Recovered::new());
        assert_eq!(health(&sent), vec![true], "initial health is reported");
        let sent = enqueue(&mut h, 9, "m1");
        assert_eq!(
            sent[0],
            (
                fe(),
                Msg::Archiving(ArchivingMsg::Enqueued { token: Token(9) })
            )
        );
        assert_eq!(transfers(&sent), vec![(1, "m1".to_string())]);
        assert_eq!(sent[1].0, dest());
        assert_eq!(keys::queued_records(&h.store).len(), 1, "record is durable");
    }

    #[test]
    fn window_limits_transfers_and_acks_open_it() {
        let mut h = started(Settings {
            transfer_window: 2,
            ..Settings::default()
        });
        let mut sent_seqs = Vec::new();
        for i in 0..5 {
            sent_seqs.extend(seqs(&enqueue(&mut h, i, &format!("m{i}"))));
        }
        assert_eq!(sent_seqs, vec![1, 2]);
        let sent = ack(&mut h, 2);
        assert_eq!(seqs(&sent), vec![3, 4]);
        assert_eq!(h.actor().depth(), 3);
        assert!(!h.store.contains_key(&keys::key_u64(OQ_RECORD, 1)));
        assert_eq!(h.store.get(OQ_ACKED).unwrap(), &2u64.to_be_bytes().to_vec());
    }

    #[test]
    fn no_progress_means_a_probe_of_the_first_unacked_with_backoff() {
        let mut h = started(Settings::default());
        enqueue_n(&mut h, 3);
        ack(&mut h, 1);
        let sent = h.fire(ArchivingTimer::Resend);
        assert!(
            seqs(&sent).is_empty() && probes(&sent).is_empty(),
            "progress was made: no resend"
        );
        let sent = h.fire(ArchivingTimer::Resend);
        assert_eq!(
            probe_seqs(&sent),
            vec![2],
            "the first unacknowledged item, as a probe"
        );
        assert!(seqs(&sent).is_empty(), "nothing else is sent again yet");
        assert_eq!(
            h.timer(ArchivingTimer::Resend).unwrap() - h.now,
            10_000,
            "interval doubled"
        );
        assert_eq!(
            probe_seqs(&h.fire(ArchivingTimer::Resend)),
            vec![2],
            "still no answer: probe again"
        );
        assert_eq!(h.timer(ArchivingTimer::Resend).unwrap() - h.now, 20_000);
    }

    /// While the probes back off, an answer that brings no progress (the
    /// link carries frames again, what went into the cut is gone) is
    /// followed by a probe at once, not at the next backed-off one; in the
    /// normal rhythm it changes nothing.
    #[test]
    fn an_answer_while_backing_off_probes_at_once() {
        let mut h = started(Settings::default());
        enqueue_n(&mut h, 3);
        ack(&mut h, 1);
        h.fire(ArchivingTimer::Resend);
        // Not backing off yet: a duplicate answer asks for nothing.
        let sent = ack(&mut h, 1);
        assert!(probes(&sent).is_empty(), "{sent:?}");
        h.fire(ArchivingTimer::Resend);
        h.fire(ArchivingTimer::Resend);
        assert_eq!(
            h.timer(ArchivingTimer::Resend).unwrap() - h.now,
            20_000,
            "backing off"
        );
        let sent = ack(&mut h, 1);
        assert_eq!(probe_seqs(&sent), vec![2], "probed at once");
        assert_eq!(
            h.timer(ArchivingTimer::Resend).unwrap() - h.now,
            5_000,
            "the backed-off timer is set again to the normal interval"
        );
        // Once: the rhythm is the normal one again.
        let sent = ack(&mut h, 1);
        assert!(probes(&sent).is_empty(), "{sent:?}");
        // An answer with progress, after another silence, but short of
        // what was sent: the rest is asked for at once too.
        h.fire(ArchivingTimer::Resend);
        h.fire(ArchivingTimer::Resend);
        let sent = ack(&mut h, 2);
        assert_eq!(probe_seqs(&sent), vec![3], "probed at once");
        assert_eq!(h.timer(ArchivingTimer::Resend).unwrap() - h.now, 5_000);
    }

    /// The resend timer runs only while something is in flight: an idle
    /// queue sets none, and a transfer after a quiet spell gets a whole
    /// interval (a timer already running could have probed it at once).
    #[test]
    fn the_resend_timer_runs_only_while_transfers_are_in_flight() {
        let mut h = started(Settings::default());
        assert!(h.timer(ArchivingTimer::Resend).is_none(), "idle: no timer");
        h.now = 60_000;
        enqueue(&mut h, 1, "m1");
        assert_eq!(
            h.timer(ArchivingTimer::Resend).unwrap(),
            65_000,
            "a whole interval"
        );
        ack(&mut h, 1);
        let sent = h.fire(ArchivingTimer::Resend);
        assert!(probes(&sent).is_empty());
        assert!(
            h.timer(ArchivingTimer::Resend).is_none(),
            "nothing in flight: not set again"
        );
    }

    /// A deletion that failed is retried by the resend timer, even with
    /// nothing in flight.
    #[test]
    fn a_failed_deletion_keeps_the_resend_timer_to_retry_it() {
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        h.fail_persists = Some(StoreError::NoSpace);
        ack(&mut h, 1);
        assert!(h.store.contains_key(&keys::key_u64(OQ_RECORD, 1)));
        h.fire(ArchivingTimer::Resend);
        assert!(
            h.timer(ArchivingTimer::Resend).is_some(),
            "the retry failed too: set again"
        );
        h.fail_persists = None;
        h.fire(ArchivingTimer::Resend);
        assert!(
            !h.store.contains_key(&keys::key_u64(OQ_RECORD, 1)),
            "deleted on the retry"
        );
        assert!(h.timer(ArchivingTimer::Resend).is_none(), "then idle");
    }

    /// A destination that was only slow handles the transfers in flight
    /// before the probe: their acknowledgements and the probe's answer
    /// come back, and nothing it has is sent again.
    #[test]
    fn a_probe_behind_transfers_that_arrive_resends_nothing() {
        // One record per frame, frames unbounded: the probe alone.
        let mut h = started(framed(64, 1));
        enqueue_n(&mut h, 6);
        let sent = h.fire(ArchivingTimer::Resend);
        assert_eq!(probe_seqs(&sent), vec![1]);
        assert!(seqs(&sent).is_empty(), "nothing in flight is sent again");
        assert!(seqs(&ack(&mut h, 4)).is_empty());
        // A new record goes out at once: the window is open again.
        let sent = enqueue(&mut h, 7, "m7");
        assert_eq!(seqs(&sent), vec![7]);
        let sent = ack(&mut h, 6);
        assert!(seqs(&sent).is_empty());
        // The probe (a duplicate of 1) is answered after 6: nothing lost.
        let sent = probe_ack(&mut h, 6, 1);
        assert!(seqs(&sent).is_empty() && probes(&sent).is_empty());
        assert_eq!(h.actor().depth(), 1, "only 7 is still unacknowledged");
    }

    /// Transfers lost on the way (with a connection, or by a destination
    /// that crashed before storing them): the probe's answer falls short
    /// of what was sent before it, and the queue resends from there.
    #[test]
    fn a_probe_answered_short_of_what_was_sent_resends_the_rest() {
        // One record per frame, frames unbounded: the probe alone.
        let mut h = started(framed(64, 1));
        enqueue_n(&mut h, 6);
        for _ in 0..3 {
            assert_eq!(probe_seqs(&h.fire(ArchivingTimer::Resend)), vec![1]);
        }
        // Only 1 and 2 arrived (the probe stored 1, or was a duplicate of
        // it). The answer to an earlier probe is not used: later transfers
        // may have followed it.
        let sent = probe_ack(&mut h, 2, 2);
        assert!(seqs(&sent).is_empty());
        assert_eq!(seqs(&probe_ack(&mut h, 2, 3)), vec![3, 4, 5, 6]);
        // Answered once: a repeat changes nothing.
        let sent = probe_ack(&mut h, 2, 3);
        assert!(seqs(&sent).is_empty());
    }

    #[test]
    fn recovery_resends_unacked_and_never_reuses_seqs() {
        let mut h = started(Settings::default());
        enqueue_n(&mut h, 3);
        ack(&mut h, 3);
        enqueue(&mut h, 4, "m4");
        let mut h2 = oq(Settings::default());
        let sent = h2.start(h.store.clone());
        assert_eq!(
            transfers(&sent),
            vec![(4, "m4".to_string())],
            "only the unacknowledged record is resent"
        );
        let sent = enqueue(&mut h2, 5, "m5");
        assert_eq!(seqs(&sent), vec![5], "seq 5, not a reused 1");
        ack(&mut h2, 5);
        let mut h3 = oq(Settings::default());
        h3.start(h2.store.clone());
        let sent = enqueue(&mut h3, 6, "m6");
        assert_eq!(
            seqs(&sent),
            vec![6],
            "even an empty queue remembers its position"
        );
    }

    #[test]
    fn store_failure_fails_the_enqueue_reports_unhealthy_and_a_probe_recovers() {
        let mut h = started(Settings::default());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = enqueue(&mut h, 1, "m1");
        assert!(matches!(
            sent[0].1,
            Msg::Archiving(ArchivingMsg::EnqueueFailed {
                token: Token(1),
                ..
            })
        ));
        assert_eq!(health(&sent), vec![false]);
        assert_eq!(h.events(), vec!["queue_store_failed"]);
        h.fail_persists = None;
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(health(&sent), vec![true], "the probe write succeeded");
        let sent = enqueue(&mut h, 2, "m2");
        assert_eq!(seqs(&sent), vec![1], "seqs stay contiguous");
    }

    #[test]
    fn quota_refusal_reports_unhealthy_until_use_drops_below_info() {
        let size = rec("m1", 0).queued_size();
        let mut h = started(Settings {
            queue_quota: size * 2,
            ..Settings::default()
        });
        enqueue(&mut h, 1, "m1");
        enqueue(&mut h, 2, "m2");
        let sent = enqueue(&mut h, 3, "m3");
        assert!(matches!(
            sent[0].1,
            Msg::Archiving(ArchivingMsg::EnqueueFailed {
                token: Token(3),
                ..
            })
        ));
        assert_eq!(health(&sent), vec![false]);
        assert_eq!(h.events(), vec!["queue_quota_exceeded"]);
        ack(&mut h, 2);
        let sent = h.fire(ArchivingTimer::QuotaCheck);
        assert_eq!(health(&sent), vec![true]);
    }

    #[test]
    fn quota_warning_at_95_then_info_above_90() {
        let size = rec("m00", 0).queued_size();
        let mut h = started(Settings {
            queue_quota: size * 20,
            ..Settings::default()
        });
        for i in 0..17 {
            enqueue(&mut h, i, &format!("m{i:02}"));
        }
        h.fire(ArchivingTimer::QuotaCheck); // 85%: nothing
        enqueue(&mut h, 17, "m17");
        enqueue(&mut h, 18, "m18");
        h.fire(ArchivingTimer::QuotaCheck); // 95%: warning
        h.fire(ArchivingTimer::QuotaCheck); // still 95%: information
        ack(&mut h, 1);
        h.fire(ArchivingTimer::QuotaCheck); // 90%: not above 90, nothing
        ack(&mut h, 3);
        h.fire(ArchivingTimer::QuotaCheck); // 80%: re-arms
        assert_eq!(h.events(), vec!["quota_warning", "quota_info"]);
    }

    #[test]
    fn undelivered_heartbeat_is_a_delivery_nack_and_a_newer_ack_heals() {
        let mut h = started(Settings::default());
        let sent = h.fire(ArchivingTimer::Heartbeat); // t = 1m
        assert_eq!(transfers(&sent), vec![(1, "heartbeat".to_string())]);
        let mut went_bad = Vec::new();
        for _ in 0..10 {
            went_bad.extend(health(&h.fire(ArchivingTimer::Heartbeat)));
        }
        // At t = 11m the first heartbeat is 10 minutes old and undelivered.
        assert_eq!(went_bad, vec![false]);
        assert_eq!(h.actor().health(), LinkHealth::DeliveryFailing);
        assert_eq!(h.events(), vec!["nack_delivery"]);
        // The link is back: everything is acknowledged, then the newest
        // heartbeat is processed.
        ack(&mut h, 11);
        let newest = h.now;
        let sent = h.msg(
            Addr::new("arch1", ActorKind::Archiver),
            Msg::Archiving(ArchivingMsg::HeartbeatAck { id: newest }),
        );
        assert_eq!(health(&sent), vec![true]);
        assert_eq!(h.events(), vec!["nack_delivery", "queue_healthy"]);
    }

    #[test]
    fn stale_ack_of_an_older_heartbeat_does_not_heal() {
        let mut h = started(Settings::default());
        for _ in 0..11 {
            h.fire(ArchivingTimer::Heartbeat);
        }
        assert_eq!(h.actor().health(), LinkHealth::DeliveryFailing);
        // heartbeat 1 (sent at 1m) was the one NACKed; an ack for it is stale
        h.msg(
            Addr::new("arch1", ActorKind::Archiver),
            Msg::Archiving(ArchivingMsg::HeartbeatAck { id: 60_000 }),
        );
        assert_eq!(h.actor().health(), LinkHealth::DeliveryFailing);
    }

    #[test]
    fn delivered_but_unprocessed_heartbeat_is_a_processing_nack() {
        let mut h = started(Settings::default());
        let mut acked = 0;
        let mut events = Vec::new();
        for _ in 0..62 {
            let sent = h.fire(ArchivingTimer::Heartbeat);
            // every heartbeat reaches the destination queue, none is processed
            if let Some(&s) = seqs(&sent).last() {
                acked = s;
                ack(&mut h, acked);
            }
            events.extend(health(&sent));
        }
        assert!(acked > 60);
        assert_eq!(h.actor().health(), LinkHealth::ProcessingFailing);
        assert_eq!(h.events().first(), Some(&"nack_processing"));
        assert_eq!(events, vec![false]);
    }

    #[test]
    fn lync2010_moves_late_records_to_the_dead_letter_queue_and_resends_them() {
        let ttrq = Settings::default().data_ttrq;
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        h.now = ttrq; // never acknowledged for 3 hours
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h.actor().dead_letters(), 1);
        assert_eq!(h.events(), vec!["dead_lettered"]);
        assert!(
            transfers(&sent).is_empty(),
            "the tombstone waits for a go-back"
        );
        // Nothing is lost: the next check resends it under a new seq, after
        // the tombstone that now holds seq 1.
        ack(&mut h, 0);
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h.actor().dead_letters(), 0);
        assert_eq!(h.events(), vec!["dead_lettered", "dead_letter_resent"]);
        let resend = h.fire(ArchivingTimer::Resend);
        let all: Vec<(u64, String)> = transfers(&sent)
            .into_iter()
            .chain(transfers(&resend))
            .chain(probes(&resend))
            .collect();
        assert!(all.contains(&(2, "m1".to_string())), "{all:?}");
        assert!(all.contains(&(1, "tombstone".to_string())), "{all:?}");
        // The dead letter survives a restart.
        let mut h2 = oq(Settings::default());
        h2.start(h.store.clone());
        assert_eq!(h2.actor().depth(), 2);
    }

    /// A resent dead letter keeps the time its front end stamped (the
    /// archive files it under that time; retention and searches by range
    /// go by it) while its new life in the stream counts from the resend:
    /// it is not dead-lettered again at once, it is after a whole TTRQ,
    /// also after a restart, and its entry time leaves the store with it.
    #[test]
    fn a_resent_dead_letter_keeps_its_message_time() {
        let ttrq = Settings::default().data_ttrq;
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        h.now = ttrq;
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        h.fire(ArchivingTimer::DlqCheck);
        ack(&mut h, 0);
        h.now = ttrq + 1_000;
        let sent = h.fire(ArchivingTimer::DlqCheck);
        let resent: Vec<Millis> = sent
            .iter()
            .chain(h.fire(ArchivingTimer::Resend).iter())
            .filter_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Transfer {
                    item: QueueItem::Record(r),
                    ..
                }) => Some(r.time),
                _ => None,
            })
            .collect();
        assert!(!resent.is_empty(), "resent");
        assert!(resent.iter().all(|t| *t == 0), "{resent:?}");
        let resent_at = h.now;
        // Long past its message time plus the TTRQ, inside its new life.
        h.now = resent_at + 1_000;
        h.set_timer(ArchivingTimer::DlqCheck, 0);
        h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h.actor().dead_letters(), 0, "not expired again at once");
        let mut h2 = oq(Settings::default());
        h2.now = resent_at + 2_000;
        h2.start(h.store.clone());
        h2.set_timer(ArchivingTimer::DlqCheck, 0);
        h2.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h2.actor().dead_letters(), 0, "nor after a restart");
        h2.now = resent_at + ttrq;
        h2.set_timer(ArchivingTimer::DlqCheck, 0);
        h2.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h2.actor().dead_letters(), 1, "a whole TTRQ later it is");
        // Acknowledged at last: the entry time goes with the record.
        let mut h3 = oq(Settings::default());
        h3.start(h.store.clone());
        ack(&mut h3, 2);
        assert!(
            !h3.store.keys().any(|k| k.starts_with(OQ_ENTERED)),
            "{:?}",
            h3.store.keys().collect::<Vec<_>>()
        );
    }

    /// The age of the oldest waiting record is what operators watch: the
    /// queue reports when the record at its head was created, and nothing
    /// once it is acknowledged.
    #[test]
    fn the_queue_reports_when_its_oldest_record_was_created() {
        let mut h = started(Settings::default());
        let oldest = |h: &Harness<OutgoingQueue>| {
            h.actor()
                .gauges()
                .into_iter()
                .find(|(g, _)| *g == Gauge::OldestQueuedAt)
                .map(|(_, v)| v)
        };
        assert_eq!(oldest(&h), Some(0), "empty");
        let record = |token, id, time| {
            Msg::Archiving(ArchivingMsg::Enqueue {
                token: Token(token),
                record: rec(id, time),
            })
        };
        h.msg(fe(), record(1, "m1", 5_000));
        assert_eq!(oldest(&h), Some(5_000), "the head record's creation time");
        h.msg(fe(), record(2, "m2", 9_000));
        assert_eq!(oldest(&h), Some(5_000), "still the first one");
        ack(&mut h, 2);
        assert_eq!(oldest(&h), Some(0), "acknowledged: nothing waits");
    }

    /// `holdfast dlq resend`: an operator moves the dead letters back into
    /// the stream at once, though no heartbeat has said the link is
    /// healthy; a user may not.
    #[test]
    fn an_operator_resends_the_dead_letter_queue_now() {
        let ttrq = Settings::default().data_ttrq;
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        h.now = ttrq;
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h.actor().dead_letters(), 1);
        let sent = h.msg(
            crate::testkit::client_of("a@corp.example"),
            Msg::Archiving(ArchivingMsg::DeadLettersResend),
        );
        assert!(
            matches!(&sent[..], [(_, Msg::Forbidden { .. })]),
            "{sent:?}"
        );
        assert_eq!(h.actor().dead_letters(), 1);
        let ops = crate::testkit::client_as("ops@corp.example", Role::Operator);
        let sent = h.msg(ops.clone(), ArchivingMsg::DeadLettersResend);
        assert_eq!(h.actor().dead_letters(), 0);
        assert!(
            sent.contains(&(
                ops.clone(),
                Msg::Archiving(ArchivingMsg::DeadLettersResent { resent: 1, left: 0 })
            )),
            "{sent:?}"
        );
        assert!(h.events().contains(&"dead_letter_resent"));
        let sent = h.msg(ops, ArchivingMsg::DeadLettersResend);
        assert!(matches!(
            &sent[..],
            [(
                _,
                Msg::Archiving(ArchivingMsg::DeadLettersResent { resent: 0, left: 0 })
            )]
        ));
    }

    /// The expiry check may skip its walk over the queue only while no
    /// record can be late: an older record enqueued after a walk, and a
    /// late record whose expiry did not become durable, are both found.
    #[test]
    fn expiry_check_finds_every_late_record_without_walking_the_queue_each_time() {
        let ttrq = Settings::default().data_ttrq;
        let mut h = started(Settings::default());
        let check = |h: &mut Harness<OutgoingQueue>, at: Millis| {
            h.set_timer(ArchivingTimer::DlqCheck, at);
            h.fire(ArchivingTimer::DlqCheck);
        };
        h.msg(
            fe(),
            ArchivingMsg::Enqueue {
                token: Token(1),
                record: rec("m1", 1_000),
            },
        );
        check(&mut h, 1_000 + ttrq - 1);
        assert_eq!(h.actor().dead_letters(), 0);
        // Older than anything the last walk saw.
        enqueue(&mut h, 2, "m0");
        h.fail_persists = Some(StoreError::NoSpace);
        check(&mut h, 1_000 + ttrq - 1);
        assert_eq!(h.actor().dead_letters(), 0, "the expiry was not durable");
        h.fail_persists = None;
        check(&mut h, 1_000 + ttrq - 1);
        assert_eq!(h.actor().dead_letters(), 1, "m0 is found again");
        check(&mut h, 1_000 + ttrq);
        assert_eq!(h.actor().dead_letters(), 2, "m1 in its turn");
    }

    #[test]
    fn ocs2007r2_drops_late_records_and_reports_it() {
        let s = legacy();
        let ttrq = s.data_ttrq;
        let mut h = started(s);
        assert!(
            h.timer(ArchivingTimer::Heartbeat).is_none(),
            "no heartbeats in legacy mode"
        );
        enqueue(&mut h, 1, "m1");
        h.now = ttrq;
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(h.events(), vec!["record_expired"]);
        assert_eq!(health(&sent), vec![false]);
        assert_eq!(h.actor().dead_letters(), 0, "dropped, not kept");
        assert_eq!(
            keys::queued_records(&h.store).len(),
            0,
            "gone from the store"
        );
    }

    #[test]
    fn after_a_restart_with_a_backlog_healthy_waits_for_evidence() {
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        let mut h2 = oq(Settings::default());
        let sent = h2.start(h.store.clone());
        assert!(health(&sent).is_empty(), "no guess");
        let sent = ack(&mut h2, 1);
        assert_eq!(health(&sent), vec![true]);
    }

    #[test]
    fn a_queue_restarted_at_its_quota_reports_it_at_once() {
        let size = rec("m1", 0).queued_size();
        let mut h = started(Settings {
            queue_quota: size,
            ..Settings::default()
        });
        enqueue(&mut h, 1, "m1");
        let mut h2 = oq(Settings {
            queue_quota: size,
            ..Settings::default()
        });
        let sent = h2.start(h.store.clone());
        assert_eq!(health(&sent), vec![false]);
    }

    #[test]
    fn a_forged_acknowledgement_deletes_nothing() {
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        h.msg(
            Addr::new("mallory", ActorKind::Client),
            Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(1) }),
        );
        h.msg(
            Addr::new("fe2", ActorKind::OutgoingQueue),
            Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(1) }),
        );
        assert_eq!(h.actor().depth(), 1);
        assert_eq!(
            h.events(),
            vec!["unauthorized_sender", "unauthorized_sender"]
        );
    }

    #[test]
    fn a_restart_on_a_failing_disk_reports_unhealthy() {
        let mut h = oq(Settings::default());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = h.start(Recovered::new());
        assert_eq!(health(&sent), vec![false]);
    }

    #[test]
    fn ocs2007r2_critical_state_clears_after_expiry_once_nothing_is_waiting() {
        let s = legacy();
        let (ttrq, beat) = (s.data_ttrq, s.heartbeat_interval);
        let mut h = started(s);
        enqueue(&mut h, 1, "m1");
        h.now = ttrq;
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        assert_eq!(health(&h.fire(ArchivingTimer::DlqCheck)), vec![false]);
        ack(&mut h, 1); // the tombstone went through
        h.now = ttrq + beat;
        h.set_timer(ArchivingTimer::DlqCheck, h.now);
        assert_eq!(health(&h.fire(ArchivingTimer::DlqCheck)), vec![true]);
    }

    /// The expiry and quota checks run only while something is held: an
    /// idle front end sets neither, the first record sets both, and a
    /// check that finds the queue empty lets its timer lapse.
    #[test]
    fn the_expiry_and_quota_checks_run_only_while_something_is_held() {
        let s = Settings::default();
        let (dlq, quota) = (s.dlq_check, s.quota_check);
        let mut h = started(s);
        assert!(
            h.timer(ArchivingTimer::DlqCheck).is_none(),
            "idle: no expiry check"
        );
        assert!(
            h.timer(ArchivingTimer::QuotaCheck).is_none(),
            "idle: no quota check"
        );
        h.now = 1_000;
        enqueue(&mut h, 1, "m1");
        assert_eq!(h.timer(ArchivingTimer::DlqCheck).unwrap(), 1_000 + dlq);
        assert_eq!(h.timer(ArchivingTimer::QuotaCheck).unwrap(), 1_000 + quota);
        h.fire(ArchivingTimer::DlqCheck);
        assert!(
            h.timer(ArchivingTimer::DlqCheck).is_some(),
            "still held: set again"
        );
        ack(&mut h, 1);
        h.fire(ArchivingTimer::DlqCheck);
        h.fire(ArchivingTimer::QuotaCheck);
        assert!(h.timer(ArchivingTimer::DlqCheck).is_none(), "empty: lapses");
        assert!(
            h.timer(ArchivingTimer::QuotaCheck).is_none(),
            "empty: lapses"
        );
    }

    /// A failing store keeps the expiry check, which probes the store, the
    /// only write left while the front end is shut down.
    #[test]
    fn a_failing_store_keeps_the_expiry_check_to_probe_it() {
        let mut h = oq(Settings::default());
        h.fail_persists = Some(StoreError::NoSpace);
        h.start(Recovered::new());
        assert!(h
            .timer(Timer::Archiving(ArchivingTimer::DlqCheck))
            .is_some());
        h.fail_persists = None;
        let sent = h.fire(ArchivingTimer::DlqCheck);
        assert_eq!(health(&sent), vec![true], "the probe worked");
        // Set again while the probe was in flight; the next check finds
        // nothing to do.
        h.fire(ArchivingTimer::DlqCheck);
        assert!(h.timer(ArchivingTimer::DlqCheck).is_none(), "then idle");
    }

    /// ocs2007r2 learns on the expiry check that critical mode can end:
    /// the check keeps running after an expiry with the queue empty.
    #[test]
    fn ocs2007r2_keeps_the_expiry_check_until_critical_mode_can_end() {
        let s = legacy();
        let (ttrq, beat) = (s.data_ttrq, s.heartbeat_interval);
        let mut h = started(s);
        assert!(
            h.timer(ArchivingTimer::DlqCheck).is_none(),
            "idle: no check"
        );
        enqueue(&mut h, 1, "m1");
        h.now = ttrq;
        h.set_timer(ArchivingTimer::DlqCheck, ttrq);
        assert_eq!(health(&h.fire(ArchivingTimer::DlqCheck)), vec![false]);
        ack(&mut h, 1);
        assert_eq!(h.actor().depth(), 0);
        let mut reports = Vec::new();
        while let Some(at) = h.timer(ArchivingTimer::DlqCheck) {
            assert!(at <= ttrq + 2 * beat, "the check ran on too long");
            reports.extend(health(&h.fire(ArchivingTimer::DlqCheck)));
        }
        assert_eq!(reports, vec![true], "healthy again, then idle");
    }

    #[test]
    fn ack_beyond_what_was_sent_is_refused() {
        let mut h = started(Settings::default());
        enqueue(&mut h, 1, "m1");
        ack(&mut h, 7);
        assert_eq!(h.events(), vec!["protocol_violation"]);
        assert_eq!(h.actor().depth(), 1);
    }
}

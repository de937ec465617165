//! Archiver (RTCArch in the original): takes records from the local
//! destination queue, writes them to the archive database in batches (one
//! transaction each), and tells the queue to delete them only after the
//! database acknowledged the batch. A batch the database fails or does not
//! answer is retried with backoff; the database's idempotent insert makes a
//! retry harmless. A record the database refuses for good is parked by the
//! destination queue and the rest of its batch sent again.

use crate::core::actor::{authorize, ignored, Actor, Ctx, Recovered, StoreError, Timer, Written};
use crate::core::cluster::Cluster;
use crate::core::ids::{ActorKind, Addr, BatchId, MessageId, Millis};
use crate::core::operator::OperatorEvent;
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{ArchiveRecord, ArchivingMsg, DbError, Msg, QueueItem};
use crate::core::settings::{Sabotage, Settings};
use std::collections::VecDeque;
use std::sync::Arc;

struct Batch {
    id: BatchId,
    keys: Vec<u64>,
    records: Vec<ArchiveRecord>,
}

pub struct Archiver {
    name: String,
    settings: Settings,
    sabotage: Sabotage,
    db: Addr,
    /// Items from the destination queue, in queue order.
    buffer: VecDeque<(u64, QueueItem)>,
    in_flight: Option<Batch>,
    next_batch: u64,
    retry: Millis,
    flush_set: bool,
    /// Records the database confirmed since start.
    pub archived: u64,
}

impl Archiver {
    pub fn new(name: impl Into<String>, cluster: Arc<Cluster>, settings: Settings) -> Self {
        let name = name.into();
        let db = cluster
            .archivers
            .get(&name)
            .map(|a| a.database.clone())
            .unwrap_or_default();
        Archiver {
            sabotage: Sabotage::default(),
            db: Addr::new(db, ActorKind::Database),
            retry: settings.db_timeout,
            settings,
            name,
            buffer: VecDeque::new(),
            in_flight: None,
            next_batch: 1,
            flush_set: false,
            archived: 0,
        }
    }

    /// Turns on the defects of `sabotage` (simulator only).
    pub fn sabotaged(mut self, sabotage: &Sabotage) -> Self {
        self.sabotage = sabotage.clone();
        self
    }

    fn queue(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::DestinationQueue)
    }

    /// Records at the head of the buffer, up to the first heartbeat.
    fn records_ready(&self) -> usize {
        self.buffer
            .iter()
            .take_while(|(_, i)| matches!(i, QueueItem::Record(_)))
            .count()
    }

    /// Processes what is at the head of the queue: a heartbeat is processed
    /// once everything before it is archived, and acknowledged to its
    /// sender's admin queue; records go to the database in batches.
    fn advance(&mut self, force: bool, ctx: &mut Ctx) {
        if self.in_flight.is_some() {
            return;
        }
        let mut consumed = Vec::new();
        while let Some((key, QueueItem::Heartbeat { id, front_end, .. })) =
            self.buffer.front().cloned()
        {
            self.buffer.pop_front();
            consumed.push(key);
            ctx.send(
                Addr::new(front_end, ActorKind::OutgoingQueue),
                ArchivingMsg::HeartbeatAck { id },
            );
        }
        if !consumed.is_empty() {
            ctx.send(self.queue(), ArchivingMsg::Consumed { keys: consumed });
        }
        let ready = self.records_ready();
        if ready == 0 {
            return;
        }
        let batch = self.settings.archiver_batch as usize;
        let blocked_by_heartbeat = ready < self.buffer.len();
        if ready >= batch || force || blocked_by_heartbeat {
            let n = self.batch_len(ready.min(batch.max(1)));
            let mut keys = Vec::with_capacity(n);
            let mut records = Vec::with_capacity(n);
            for (k, item) in self.buffer.drain(..n) {
                if let QueueItem::Record(r) = item {
                    keys.push(k);
                    records.push(r);
                }
            }
            let id = BatchId(self.next_batch);
            self.next_batch += 1;
            ctx.send(
                self.db.clone(),
                ArchivingMsg::LogMessages {
                    batch: id,
                    records: records.clone(),
                },
            );
            ctx.set_timer(ArchivingTimer::DbTimeout, self.retry);
            self.in_flight = Some(Batch { id, keys, records });
        } else if !self.flush_set {
            self.flush_set = true;
            ctx.set_timer(ArchivingTimer::Flush, self.settings.archiver_flush);
        }
    }

    /// Records of the next batch: at most `n`, and no more bytes than
    /// `archiver_batch_bytes` (but always one), so that every batch fits in
    /// a frame whatever the records' sizes.
    fn batch_len(&self, n: usize) -> usize {
        let mut bytes = 0u64;
        let mut len = 0;
        for (_, item) in self.buffer.iter().take(n) {
            bytes += item.queued_size();
            if len > 0 && bytes > self.settings.archiver_batch_bytes {
                break;
            }
            len += 1;
        }
        len
    }

    fn resend(&mut self, ctx: &mut Ctx) {
        if let Some(b) = &self.in_flight {
            ctx.send(
                self.db.clone(),
                ArchivingMsg::LogMessages {
                    batch: b.id,
                    records: b.records.clone(),
                },
            );
            ctx.set_timer(ArchivingTimer::DbTimeout, self.retry);
        }
    }

    /// The database refuses the records `ids` of the batch in flight for
    /// good: they go to the destination queue's parking (kept durably for
    /// an operator), and the rest of the batch is sent again at once, so
    /// that one bad record never blocks the link.
    fn park(&mut self, ids: Vec<MessageId>, reason: String, ctx: &mut Ctx) {
        let Some(b) = self.in_flight.as_mut() else {
            return;
        };
        let mut parked = Vec::new();
        let mut i = 0;
        while i < b.records.len() {
            if ids.contains(&b.records[i].id) {
                b.records.remove(i);
                parked.push(b.keys.remove(i));
            } else {
                i += 1;
            }
        }
        if !parked.is_empty() {
            let msg = if self.sabotage.archiver_drop_refused {
                // Sabotage: the refused records are deleted as if archived.
                Msg::Archiving(ArchivingMsg::Consumed { keys: parked })
            } else {
                Msg::Archiving(ArchivingMsg::Park {
                    keys: parked,
                    reason,
                })
            };
            ctx.send(
                Addr::new(self.name.clone(), ActorKind::DestinationQueue),
                msg,
            );
        }
        if b.records.is_empty() {
            self.in_flight = None;
            ctx.cancel_timer(ArchivingTimer::DbTimeout);
            self.advance(false, ctx);
        } else {
            self.resend(ctx);
        }
    }

    fn backoff(&mut self) {
        self.retry = (self.retry * 2).min(self.settings.db_retry_max.max(self.settings.db_timeout));
    }
}

impl Actor for Archiver {
    fn on_start(&mut self, _recovered: Recovered, ctx: &mut Ctx) {
        // Stateless: the destination queue redelivers whatever was not
        // consumed. Batch ids must not repeat across restarts, or a late
        // answer to a batch of a previous life would confirm a different
        // batch of this one: start from the clock.
        self.next_batch = ctx.now().saturating_mul(1_000_000).max(self.next_batch);
        self.buffer.clear();
        self.in_flight = None;
        self.flush_set = false;
        self.retry = self.settings.db_timeout;
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match &msg {
            Msg::Archiving(ArchivingMsg::Deliver { .. } | ArchivingMsg::DeliverBatch { .. }) => {
                from == self.queue()
            }
            Msg::Archiving(ArchivingMsg::Logged { .. } | ArchivingMsg::LogFailed { .. }) => {
                from == self.db
            }
            _ => true,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::Archiving(ArchivingMsg::Deliver { key, item }) => {
                self.buffer.push_back((key, item));
                self.advance(false, ctx);
            }
            Msg::Archiving(ArchivingMsg::DeliverBatch { items }) => {
                self.buffer.extend(items);
                self.advance(false, ctx);
            }
            Msg::Archiving(ArchivingMsg::Logged { batch }) => {
                if self.in_flight.as_ref().map(|b| b.id) != Some(batch) {
                    return; // a late answer to a batch already confirmed
                }
                let Some(b) = self.in_flight.take() else {
                    return;
                };
                ctx.cancel_timer(ArchivingTimer::DbTimeout);
                self.archived += b.keys.len() as u64;
                self.retry = self.settings.db_timeout;
                ctx.send(self.queue(), ArchivingMsg::Consumed { keys: b.keys });
                // The database is free again: what came while it wrote goes
                // now, whatever its size (group commit), rather than after
                // a flush interval.
                self.advance(true, ctx);
            }
            Msg::Archiving(ArchivingMsg::LogFailed {
                batch,
                error: DbError::Refused { ids, reason },
            }) => {
                if self.in_flight.as_ref().map(|b| b.id) != Some(batch) {
                    return;
                }
                self.park(ids, reason, ctx);
            }
            Msg::Archiving(ArchivingMsg::LogFailed { batch, error }) => {
                if self.in_flight.as_ref().map(|b| b.id) != Some(batch) {
                    return;
                }
                ctx.event(
                    OperatorEvent::DbWriteFailed,
                    format!("{}: batch {batch}: {error:?}", self.name),
                );
                self.backoff();
                ctx.set_timer(ArchivingTimer::DbTimeout, self.retry);
            }
            other => ignored("archiver", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Archiving(ArchivingTimer::Flush) => {
                self.flush_set = false;
                self.advance(true, ctx);
            }
            Timer::Archiving(ArchivingTimer::DbTimeout) if self.in_flight.is_some() => {
                if self.retry == self.settings.db_timeout {
                    ctx.event(
                        OperatorEvent::DbTimeout,
                        format!("{}: database {} did not answer", self.name, self.db.node),
                    );
                }
                self.backoff();
                self.resend(ctx);
            }
            _ => {}
        }
    }

    fn on_persisted(&mut self, _token: u64, _result: Result<Written, StoreError>, _ctx: &mut Ctx) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cluster, record, Harness};

    /// arch1's archiver with `settings`, started afresh.
    fn arch_with(settings: Settings) -> Harness<Archiver> {
        let mut h = Harness::new(
            Addr::new("arch1", ActorKind::Archiver),
            Archiver::new("arch1", cluster(), settings),
        );
        h.start(Recovered::new());
        h
    }

    /// arch1's archiver with batches of `batch` records, started afresh.
    fn arch(batch: u64) -> Harness<Archiver> {
        arch_with(Settings {
            archiver_batch: batch,
            ..Settings::default()
        })
    }

    fn rec(id: &str) -> QueueItem {
        QueueItem::Record(record(id))
    }

    fn beat(id: u64) -> QueueItem {
        QueueItem::Heartbeat {
            id,
            sent_at: 0,
            front_end: "fe1".into(),
        }
    }

    fn dq() -> Addr {
        Addr::new("arch1", ActorKind::DestinationQueue)
    }

    /// fe1's outgoing queue, where the heartbeats come from.
    fn oq() -> Addr {
        Addr::new("fe1", ActorKind::OutgoingQueue)
    }

    fn db() -> Addr {
        Addr::new("db1", ActorKind::Database)
    }

    /// The database refuses the record `id` of `batch` for good.
    fn refused(
        h: &mut Harness<Archiver>,
        batch: BatchId,
        id: &str,
        reason: &str,
    ) -> Vec<(Addr, Msg)> {
        let error = DbError::Refused {
            ids: vec![id.into()],
            reason: reason.into(),
        };
        h.msg(db(), ArchivingMsg::LogFailed { batch, error })
    }

    /// Whether `sent` is the batch `id` going to the database, alone.
    fn sends_batch(sent: &[(Addr, Msg)], id: u64) -> bool {
        matches!(
            sent,
            [(_, Msg::Archiving(ArchivingMsg::LogMessages { batch, .. }))] if *batch == BatchId(id)
        )
    }

    /// The archiver tells the destination queue that `keys` are archived.
    fn consumed(keys: &[u64]) -> (Addr, Msg) {
        (
            dq(),
            Msg::Archiving(ArchivingMsg::Consumed {
                keys: keys.to_vec(),
            }),
        )
    }

    /// The destination queue hands the archiver `item` under `key`.
    fn deliver(h: &mut Harness<Archiver>, key: u64, item: QueueItem) -> Vec<(Addr, Msg)> {
        h.msg(dq(), ArchivingMsg::Deliver { key, item })
    }

    #[test]
    fn consumed_only_after_the_database_acknowledged() {
        let mut h = arch(2);
        assert!(deliver(&mut h, 1, rec("m1")).is_empty());
        let sent = deliver(&mut h, 2, rec("m2"));
        assert!(
            matches!(&sent[..], [(to, Msg::Archiving(ArchivingMsg::LogMessages { batch: BatchId(1), records }))] if *to == db() && records.len() == 2)
        );
        let sent = h.msg(db(), ArchivingMsg::Logged { batch: BatchId(1) });
        assert_eq!(sent, vec![consumed(&[1, 2])]);
    }

    /// Ten records of 1 MiB with a batch of 64 records: the byte bound cuts
    /// the batches at `archiver_batch_bytes`, and a record larger than the
    /// bound still goes, alone.
    #[test]
    fn batches_are_bounded_by_bytes_as_well_as_count() {
        let mut h = arch_with(Settings {
            archiver_batch: 64,
            archiver_batch_bytes: 3 << 20,
            ..Settings::default()
        });
        let big = |id: &str, size: usize| {
            let QueueItem::Record(mut r) = rec(id) else {
                unreachable!()
            };
            r.body = "b".repeat(size);
            QueueItem::Record(r)
        };
        for k in 1..=10 {
            deliver(&mut h, k, big(&format!("m{k}"), 1 << 20));
        }
        deliver(&mut h, 11, big("huge", 4 << 20));
        let mut sizes = Vec::new();
        let mut sent = h.fire(ArchivingTimer::Flush);
        while let [(_, Msg::Archiving(ArchivingMsg::LogMessages { batch, records }))] = &sent[..] {
            let bytes: u64 = records.iter().map(|r| r.queued_size()).sum();
            assert!(
                records.len() == 1 || bytes <= 3 << 20,
                "batch {batch}: {bytes} bytes"
            );
            sizes.push(records.len());
            let batch = *batch;
            sent = h.msg(db(), ArchivingMsg::Logged { batch });
            sent.retain(|(_, m)| matches!(m, Msg::Archiving(ArchivingMsg::LogMessages { .. })));
            if sent.is_empty() && sizes.iter().sum::<usize>() < 11 {
                sent = h.fire(ArchivingTimer::Flush);
            }
        }
        assert_eq!(sizes, vec![2, 2, 2, 2, 2, 1], "{sizes:?}");
    }

    /// Records delivered in a batch while a transaction is in flight go
    /// to the database as soon as it answers, whatever their number: the
    /// database is never left idle for a flush interval while records
    /// wait (group commit).
    #[test]
    fn what_waits_goes_as_soon_as_the_database_answers() {
        let mut h = arch(64);
        deliver(&mut h, 1, rec("m1"));
        let sent = h.fire(ArchivingTimer::Flush);
        assert!(sends_batch(&sent, 1), "{sent:?}");
        let items = vec![(2, rec("m2")), (3, rec("m3")), (4, rec("m4"))];
        let sent = h.msg(dq(), ArchivingMsg::DeliverBatch { items });
        assert!(sent.is_empty(), "one transaction at a time: {sent:?}");
        let mut sent = h.msg(db(), ArchivingMsg::Logged { batch: BatchId(1) });
        assert_eq!(sent.remove(0), consumed(&[1]));
        let [(
            to,
            Msg::Archiving(ArchivingMsg::LogMessages {
                batch: BatchId(2),
                records,
            }),
        )] = &sent[..]
        else {
            panic!("the waiting records go at once: {sent:?}");
        };
        assert_eq!(*to, db());
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, vec!["m2", "m3", "m4"]);
        // A batch from anyone but the local queue is refused.
        let items = vec![(9, rec("m9"))];
        assert!(h
            .msg(oq(), Msg::Archiving(ArchivingMsg::DeliverBatch { items }))
            .is_empty());
        assert_eq!(h.events(), vec!["unauthorized_sender"]);
    }

    #[test]
    fn partial_batch_flushes_on_timer() {
        let mut h = arch(10);
        deliver(&mut h, 1, rec("m1"));
        let sent = h.fire(ArchivingTimer::Flush);
        assert!(matches!(
            &sent[..],
            [(_, Msg::Archiving(ArchivingMsg::LogMessages { .. }))]
        ));
    }

    #[test]
    fn heartbeat_is_acknowledged_only_after_the_records_before_it() {
        let mut h = arch(10);
        deliver(&mut h, 1, rec("m1"));
        // The heartbeat closes the batch: m1 goes to the database now.
        let sent = deliver(&mut h, 2, beat(77));
        assert!(sends_batch(&sent, 1), "{sent:?}");
        let sent = h.msg(db(), ArchivingMsg::Logged { batch: BatchId(1) });
        assert_eq!(
            sent,
            vec![
                consumed(&[1]),
                (oq(), Msg::Archiving(ArchivingMsg::HeartbeatAck { id: 77 })),
                consumed(&[2]),
            ]
        );
    }

    #[test]
    fn heartbeat_with_nothing_before_it_is_acknowledged_at_once() {
        let mut h = arch(10);
        let sent = deliver(&mut h, 5, beat(1));
        assert_eq!(
            sent,
            vec![
                (oq(), Msg::Archiving(ArchivingMsg::HeartbeatAck { id: 1 })),
                consumed(&[5]),
            ]
        );
    }

    #[test]
    fn a_record_refused_for_good_is_parked_and_the_rest_sent_again() {
        let mut h = arch(3);
        for (k, id) in [(1, "m1"), (2, "bad"), (3, "m3")] {
            deliver(&mut h, k, rec(id));
        }
        let batch = match h.actor().in_flight.as_ref() {
            Some(b) => b.id,
            None => panic!("a batch in flight"),
        };
        let sent = refused(&mut h, batch, "bad", "trigger");
        assert_eq!(
            sent[0],
            (
                dq(),
                Msg::Archiving(ArchivingMsg::Park {
                    keys: vec![2],
                    reason: "trigger".into()
                })
            )
        );
        let Some((_, Msg::Archiving(ArchivingMsg::LogMessages { records, .. }))) = sent.get(1)
        else {
            panic!("{sent:?}")
        };
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"], "the rest goes again at once");
        let sent = h.msg(db(), ArchivingMsg::Logged { batch });
        assert_eq!(sent, vec![consumed(&[1, 3])]);

        // A batch of only refused records: parked, and the archiver moves on.
        deliver(&mut h, 4, rec("bad2"));
        h.fire(ArchivingTimer::Flush);
        let batch = h.actor().in_flight.as_ref().map(|b| b.id).unwrap();
        let sent = refused(&mut h, batch, "bad2", "r");
        assert!(
            matches!(&sent[..], [(_, Msg::Archiving(ArchivingMsg::Park { keys, .. }))] if keys == &[4])
        );
        assert!(h.actor().in_flight.is_none());
    }

    #[test]
    fn timeout_and_failure_resend_the_same_batch_with_backoff() {
        let mut h = arch(1);
        deliver(&mut h, 1, rec("m1"));
        let sent = h.fire(ArchivingTimer::DbTimeout);
        assert!(sends_batch(&sent, 1), "{sent:?}");
        assert_eq!(h.events(), vec!["db_timeout"]);
        assert_eq!(h.timer(ArchivingTimer::DbTimeout).unwrap() - h.now, 20_000);
        let sent = h.msg(
            db(),
            ArchivingMsg::LogFailed {
                batch: BatchId(1),
                error: DbError::StoreFailed("disk".into()),
            },
        );
        assert!(sent.is_empty());
        let sent = h.fire(ArchivingTimer::DbTimeout);
        assert!(sends_batch(&sent, 1), "{sent:?}");
        assert!(
            h.msg(db(), ArchivingMsg::Logged { batch: BatchId(7) })
                .is_empty(),
            "a stale answer does nothing"
        );
        let sent = h.msg(db(), ArchivingMsg::Logged { batch: BatchId(1) });
        assert_eq!(sent, vec![consumed(&[1])]);
    }

    #[test]
    fn batch_ids_never_repeat_across_restarts_and_forged_answers_are_dropped() {
        let mut h = arch(1);
        deliver(&mut h, 1, rec("m1"));
        // restart later: a late answer to the old batch must not confirm the new one
        h.now = 60_000;
        h.start(Recovered::new());
        let sent = deliver(&mut h, 1, rec("m1"));
        let Some((_, Msg::Archiving(ArchivingMsg::LogMessages { batch, .. }))) = sent.first()
        else {
            panic!("{sent:?}")
        };
        assert!(*batch > BatchId(1));
        assert!(h
            .msg(
                db(),
                Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(1) })
            )
            .is_empty());
        assert!(h
            .msg(
                Addr::new("db9", ActorKind::Database),
                Msg::Archiving(ArchivingMsg::Logged { batch: *batch })
            )
            .is_empty());
        assert_eq!(h.events(), vec!["unauthorized_sender"]);
        let sent = h.msg(db(), ArchivingMsg::Logged { batch: *batch });
        assert_eq!(sent, vec![consumed(&[1])]);
    }

    #[test]
    fn one_batch_in_flight_at_a_time() {
        let mut h = arch(1);
        deliver(&mut h, 1, rec("m1"));
        assert!(deliver(&mut h, 2, rec("m2")).is_empty());
        let sent = h.msg(db(), ArchivingMsg::Logged { batch: BatchId(1) });
        assert!(matches!(
            &sent[1],
            (
                _,
                Msg::Archiving(ArchivingMsg::LogMessages {
                    batch: BatchId(2),
                    ..
                })
            )
        ));
    }
}

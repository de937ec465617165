//! Expiry. A record not acknowledged within the data TTRQ leaves the
//! stream (a tombstone takes its slot): under ocs2007r2 it is dropped,
//! under lync2010 it moves to the dead-letter queue, which is resent (with
//! new sequence numbers) once the link is healthy.
//!
//! A resent record keeps its message time — the time its front end
//! stamped, which the archive files it under and retention, holds and
//! searches go by. Its new life in the stream is measured from when it
//! was resent, kept beside it (`qe/<seq>`) and deleted with it.

use crate::core::actor::StoreOp;
use crate::core::ids::{MessageId, Millis};
use crate::core::link::Seq;
use crate::core::protocol::{ArchiveRecord, QueueItem};
use crate::core::store_keys::{self as keys, OQ_DEAD, OQ_ENTERED, OQ_RECORD};
use std::collections::BTreeMap;

/// Dead letters resent per check, to keep writes bounded.
pub const RESEND_BATCH: usize = 512;

/// Late records leaving the stream, as one write.
pub struct Expiring {
    pub ops: Vec<StoreOp>,
    /// Their slots, for tombstones.
    pub seqs: Vec<Seq>,
    /// Kept in the dead-letter queue (lync2010), by dead-letter number.
    pub dead: Vec<(u64, ArchiveRecord)>,
    /// Dropped, not kept: everything under ocs2007r2, QoE always.
    pub dropped: Vec<MessageId>,
}

/// Dead letters going back into the stream, as one write.
pub struct Resending {
    pub ops: Vec<StoreOp>,
    /// (dead-letter number, new seq, record).
    pub moves: Vec<(u64, Seq, ArchiveRecord)>,
}

pub struct Expiry {
    dead: BTreeMap<u64, ArchiveRecord>,
    next_dead: u64,
    /// No record waiting here is older than this (a lower bound on their
    /// `time`): the expiry check skips its scan while `now` is below this
    /// plus the TTRQ. Without it every check walked the whole queue, which
    /// grows into the hundreds of thousands during a long outage.
    oldest_floor: Millis,
    /// Whether the expiry check is set (only while it has something to
    /// look at).
    pub armed: bool,
    /// ocs2007r2: when records last expired (critical mode's only signal).
    pub expired_at: Option<Millis>,
    dead_lettered: u64,
    expired: u64,
    /// Resent records still in the stream: when each entered it again.
    reentered: BTreeMap<Seq, Millis>,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry {
            dead: BTreeMap::new(),
            next_dead: 1,
            oldest_floor: 0,
            armed: false,
            expired_at: None,
            dead_lettered: 0,
            expired: 0,
            reentered: BTreeMap::new(),
        }
    }
}

impl Expiry {
    pub fn dead_letters(&self) -> usize {
        self.dead.len()
    }

    pub fn has_dead_letters(&self) -> bool {
        !self.dead.is_empty()
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered
    }

    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// At restart: nothing known until the store is read, and the floor
    /// unknown until the first check has looked.
    pub fn clear(&mut self) {
        self.dead.clear();
        self.reentered.clear();
        self.oldest_floor = 0;
    }

    /// A resent record's entry time found in the store at restart.
    pub fn recovered_entry(&mut self, seq: Seq, at: Millis) {
        self.reentered.insert(seq, at);
    }

    /// When the record at `seq` (message time `time`) entered the stream:
    /// its own time, unless it was resent.
    pub fn entered_at(&self, seq: Seq, time: Millis) -> Millis {
        self.reentered.get(&seq).copied().unwrap_or(time)
    }

    /// The deletions of the entry times of records up to `upto`, which
    /// leave the store with them (the same write).
    pub fn forget_upto(&mut self, upto: Seq) -> Vec<StoreOp> {
        let gone: Vec<Seq> = self.reentered.range(..=upto).map(|(s, _)| *s).collect();
        gone.into_iter()
            .map(|s| {
                self.reentered.remove(&s);
                StoreOp::Delete {
                    key: keys::key_u64(OQ_ENTERED, s.get()),
                }
            })
            .collect()
    }

    /// A dead letter found in the store at restart.
    pub fn recovered(&mut self, k: u64, record: ArchiveRecord) {
        self.dead.insert(k, record);
        self.next_dead = self.next_dead.max(k + 1);
    }

    /// A record entered the stream at `time`.
    pub fn entered(&mut self, time: Millis) {
        self.oldest_floor = self.oldest_floor.min(time);
    }

    /// Records reported expired by the destination, or dropped here.
    pub fn count_expired(&mut self, n: u64) {
        self.expired += n;
    }

    /// The records among `unacked` not acknowledged within `ttrq` at
    /// `now`, unless the floor says none can be.
    pub fn late<'a>(
        &mut self,
        now: Millis,
        ttrq: Millis,
        unacked: impl Iterator<Item = (&'a Seq, &'a QueueItem)>,
    ) -> Vec<(Seq, ArchiveRecord)> {
        let mut late = Vec::new();
        if now >= self.oldest_floor.saturating_add(ttrq) {
            // The floor becomes the oldest record seen, late ones included:
            // if their expiry does not become durable, the next check must
            // find them again.
            let mut oldest = Millis::MAX;
            for (seq, item) in unacked {
                if let QueueItem::Record(r) = item {
                    let entered = self.entered_at(*seq, r.time);
                    oldest = oldest.min(entered);
                    if now >= entered + ttrq {
                        late.push((*seq, r.clone()));
                    }
                }
            }
            self.oldest_floor = oldest;
        }
        late
    }

    /// The write taking `late` records out of the stream; `keep` says
    /// whether dead letters are kept (lync2010).
    pub fn expire(&mut self, late: Vec<(Seq, ArchiveRecord)>, keep: bool) -> Expiring {
        let mut out = Expiring {
            ops: Vec::new(),
            seqs: Vec::new(),
            dead: Vec::new(),
            dropped: Vec::new(),
        };
        for (seq, record) in late {
            out.ops.push(StoreOp::Put {
                key: keys::key_u64(OQ_RECORD, seq.get()),
                value: keys::encode(&QueueItem::Tombstone),
            });
            if keep && !record.kind.droppable() {
                let k = self.next_dead;
                self.next_dead += 1;
                out.ops.push(StoreOp::Put {
                    key: keys::key_u64(OQ_DEAD, k),
                    value: keys::encode(&record),
                });
                out.dead.push((k, record));
            } else {
                out.dropped.push(record.id);
            }
            out.seqs.push(seq);
        }
        out
    }

    /// The expiry is durable: the dead letters are kept. Returns their
    /// bytes.
    pub fn keep(&mut self, dead: Vec<(u64, ArchiveRecord)>) -> u64 {
        let mut bytes = 0;
        self.dead_lettered += dead.len() as u64;
        for (k, r) in dead {
            bytes += r.queued_size();
            self.dead.insert(k, r);
        }
        bytes
    }

    /// The next dead letters to resend, numbered by `number`, as one
    /// write; each starts a new life in the stream at `now`, under the
    /// message time it always had.
    pub fn resend(&self, now: Millis, mut number: impl FnMut() -> Seq) -> Resending {
        let mut out = Resending {
            ops: Vec::new(),
            moves: Vec::new(),
        };
        for (k, record) in self.dead.iter().take(RESEND_BATCH) {
            let seq = number();
            out.ops.push(StoreOp::Delete {
                key: keys::key_u64(OQ_DEAD, *k),
            });
            out.ops.push(StoreOp::Put {
                key: keys::key_u64(OQ_RECORD, seq.get()),
                value: keys::encode(&QueueItem::Record(record.clone())),
            });
            out.ops.push(StoreOp::Put {
                key: keys::key_u64(OQ_ENTERED, seq.get()),
                value: now.to_be_bytes().to_vec(),
            });
            out.moves.push((*k, seq, record.clone()));
        }
        out
    }

    /// Dead letter `k` is back in the stream at `seq` since `now`;
    /// returns its bytes.
    pub fn resent(&mut self, k: u64, seq: Seq, now: Millis) -> u64 {
        self.reentered.insert(seq, now);
        self.entered(now);
        self.dead.remove(&k).map_or(0, |r| r.queued_size())
    }
}

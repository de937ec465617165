//! Key layouts of the cores' durable stores, shared with tools that read a
//! store offline (the simulator's checker, operators' inspection commands).

use crate::actor::Recovered;
use crate::protocol::{ArchiveRecord, QueueItem};
use serde::{Deserialize, Serialize};

/// Outgoing queue: `q/<seq>` → queue item.
pub const OQ_RECORD: &[u8] = b"q/";
/// Outgoing queue: dead-letter queue, `d/<key>` → record.
pub const OQ_DEAD: &[u8] = b"d/";
/// Outgoing queue: highest acknowledged seq (so seqs are never reused).
pub const OQ_ACKED: &[u8] = b"meta/acked";
/// Outgoing queue: present while the queue must learn the destination's
/// position before it numbers new records (after its store was damaged).
pub const OQ_RESYNC: &[u8] = b"meta/resync";
/// Any store: the host's note, in the state it hands a core at start, that
/// damage was found and set aside when the store was opened (never written
/// by a core; the value describes the damage).
pub const STORE_DAMAGED: &[u8] = b"!damaged";
/// Destination queue: `r/<key>` → queue item (record or heartbeat).
pub const DQ_RECORD: &[u8] = b"r/";
/// Destination queue: `n/<front end>` → next expected seq from that sender.
pub const DQ_NEXT: &[u8] = b"n/";
/// Database: `m/<rowid>` → row of the messages table.
pub const DB_ROW: &[u8] = b"m/";

pub fn key_u64(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn key_str(prefix: &[u8], s: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(s.as_bytes());
    k
}

pub fn parse_u64(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(prefix)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("in-memory serialization cannot fail")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// A row of the LcsLog-style `messages` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Auto-increment row id (not the message id: a faulty writer could
    /// insert one message twice, and the checker must be able to see that).
    pub rowid: u64,
    pub record: ArchiveRecord,
    pub archived_at: u64,
}

/// Records held by a queue store (queue items under `q/` or `r/`, dead
/// letters under `d/`), in key order. Undecodable values are returned as
/// errors, never skipped.
pub fn queued_records(recovered: &Recovered) -> Vec<Result<ArchiveRecord, String>> {
    let mut out = Vec::new();
    for (k, v) in recovered {
        if k.starts_with(OQ_RECORD) || k.starts_with(DQ_RECORD) {
            match decode::<QueueItem>(v) {
                Ok(QueueItem::Record(r)) => out.push(Ok(r)),
                Ok(_) => {}
                Err(e) => out.push(Err(format!("key {k:?}: {e}"))),
            }
        } else if k.starts_with(OQ_DEAD) {
            out.push(decode::<ArchiveRecord>(v).map_err(|e| format!("key {k:?}: {e}")));
        }
    }
    out
}

/// Rows of a database store, in rowid order.
pub fn db_rows(recovered: &Recovered) -> Vec<Result<Row, String>> {
    recovered
        .range(DB_ROW.to_vec()..)
        .take_while(|(k, _)| k.starts_with(DB_ROW))
        .map(|(k, v)| decode::<Row>(v).map_err(|e| format!("key {k:?}: {e}")))
        .collect()
}

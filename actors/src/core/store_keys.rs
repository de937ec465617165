//! Key layouts of the cores' durable stores, shared with tools that read a
//! store offline (the simulator's checker, operators' inspection commands).

use crate::core::actor::Recovered;
use crate::core::ids::{MessageId, Millis, UserId};
pub use crate::core::protocol::Row;
use crate::core::protocol::{ArchiveRecord, QueueItem, RecordKind};
use serde::{Deserialize, Serialize};

/// Outgoing queue: `q/<seq>` → queue item.
pub const OQ_RECORD: &[u8] = b"q/";
/// Outgoing queue: dead-letter queue, `d/<key>` → record.
pub const OQ_DEAD: &[u8] = b"d/";
/// Outgoing queue: `qe/<seq>` → when a resent dead letter entered the
/// stream again (8 bytes big-endian), written with it. The record keeps
/// the time its front end stamped (the archive's message time); expiry
/// measures its new life from this.
pub const OQ_ENTERED: &[u8] = b"qe/";
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
/// Destination queue: a record the database refused for good, kept for an
/// operator ([`Parked`]), by its queue key.
pub const DQ_PARKED: &[u8] = b"p/";
/// Database: `m/<message id>` → row of the messages table, inserted (the
/// message id is the unique key) and read on demand, never at start.
pub const DB_ROW: &[u8] = b"m/";
/// Database: the time index, `t/<time, 8 bytes big-endian><message id>`,
/// empty: written with each row, read oldest first by the retention purge
/// (which then reads the rows). An engine answers it from its index on the
/// message time.
pub const DB_TIME: &[u8] = b"t/";
/// Database: the retention purge's record (`archiving::retention::PurgeRecord`):
/// the purge running or the last one, written with every purge transaction.
pub const DB_PURGE: &[u8] = b"meta/purge";
/// Database: `h/<name>` → a legal hold, active or released (kept on
/// record); few, so read at start.
pub const DB_HOLD: &[u8] = b"h/";
/// Database: `x/<manifest SHA-256>` → an export record (few, one per
/// export run, so read at start like the holds; never purged).
pub const DB_EXPORT: &[u8] = b"x/";
/// Database: `a/<seq>` → [`ArchiveRead`](crate::core::protocol::ArchiveRead),
/// the read trail: one entry per client read of the archive, inserted
/// before the answer and read on demand, never at start.
pub const DB_READ: &[u8] = b"a/";

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

/// Decodes a value that must be exactly one `T`: trailing bytes are an
/// error (so that a value of another layout is not half-read as this one).
pub fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes::<T>(bytes)? {
        (v, []) => Ok(v),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

/// The entries of a recovered store whose keys start with `prefix`, in
/// key order.
pub fn under<'a>(
    recovered: &'a Recovered,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
    recovered
        .range(prefix.to_vec()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The legal holds stored under `prefix`, by name. A hold that does not
/// read is passed to `unreadable` with its key, and left out.
pub fn stored_holds(
    recovered: &Recovered,
    prefix: &[u8],
    mut unreadable: impl FnMut(&[u8], postcard::Error),
) -> std::collections::BTreeMap<String, crate::core::protocol::LegalHold> {
    let mut holds = std::collections::BTreeMap::new();
    for (k, v) in under(recovered, prefix) {
        match decode_hold(v) {
            Ok(h) => {
                holds.insert(h.name.clone(), h);
            }
            Err(e) => unreadable(k, e),
        }
    }
    holds
}

/// A stored legal hold: as written now, or as written before holds named
/// rooms (postcard is not self-describing: the older shape lacks the last
/// field, and reads with no rooms).
pub fn decode_hold(bytes: &[u8]) -> Result<crate::core::protocol::LegalHold, postcard::Error> {
    use crate::core::protocol::{HoldRelease, LegalHold};
    #[derive(Deserialize)]
    struct BeforeRooms {
        name: String,
        users: std::collections::BTreeSet<UserId>,
        since: Option<u64>,
        until: Option<u64>,
        reason: String,
        placed_by: String,
        placed_at: u64,
        released: Option<HoldRelease>,
    }
    decode_exact::<LegalHold>(bytes).or_else(|e| {
        let old: BeforeRooms = decode_exact(bytes).map_err(|_| e)?;
        Ok(LegalHold {
            name: old.name,
            users: old.users,
            since: old.since,
            until: old.until,
            reason: old.reason,
            placed_by: old.placed_by,
            placed_at: old.placed_at,
            released: old.released,
            rooms: Default::default(),
        })
    })
}

/// An archive record as written before front ends assigned message ids
/// (no `client_id`). Queues written by that version are still read after
/// an upgrade, so that what they hold drains instead of being lost.
#[derive(Deserialize)]
struct ArchiveRecordV1 {
    kind: RecordKind,
    id: MessageId,
    from: UserId,
    to: UserId,
    time: Millis,
    body: String,
    external: bool,
    front_end: String,
}

impl From<ArchiveRecordV1> for ArchiveRecord {
    fn from(r: ArchiveRecordV1) -> ArchiveRecord {
        ArchiveRecord {
            kind: r.kind,
            client_id: r.id.clone(),
            id: r.id,
            from: r.from,
            to: r.to,
            time: r.time,
            body: r.body,
            external: r.external,
            front_end: r.front_end,
        }
    }
}

/// A queue item as written before front ends assigned message ids.
#[derive(Deserialize)]
enum QueueItemV1 {
    Record(ArchiveRecordV1),
    Heartbeat {
        id: u64,
        sent_at: Millis,
        front_end: String,
    },
    Tombstone,
}

/// A stored archive record (a dead letter), of this version or the one
/// before (see [`ArchiveRecordV1`]).
pub fn decode_record(bytes: &[u8]) -> Result<ArchiveRecord, postcard::Error> {
    decode_exact::<ArchiveRecord>(bytes).or_else(|e| {
        decode_exact::<ArchiveRecordV1>(bytes)
            .map(Into::into)
            .map_err(|_| e)
    })
}

/// A stored queue item, of this version or the one before.
pub fn decode_item(bytes: &[u8]) -> Result<QueueItem, postcard::Error> {
    decode_exact::<QueueItem>(bytes).or_else(|e| {
        match decode_exact::<QueueItemV1>(bytes).map_err(|_| e)? {
            QueueItemV1::Record(r) => Ok(QueueItem::Record(r.into())),
            QueueItemV1::Heartbeat {
                id,
                sent_at,
                front_end,
            } => Ok(QueueItem::Heartbeat {
                id,
                sent_at,
                front_end,
            }),
            QueueItemV1::Tombstone => Ok(QueueItem::Tombstone),
        }
    })
}

/// Why a value of a store could not be read (the store is damaged, or was
/// written by a build with another layout).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The value under `key` does not decode.
    #[error("key {key:?}: {source}")]
    Undecodable {
        key: Vec<u8>,
        source: postcard::Error,
    },
    /// The key does not have the layout its prefix promises.
    #[error("key {key:?}: malformed")]
    MalformedKey { key: Vec<u8> },
}

impl ReadError {
    /// For `map_err`: the decoding error of the value under `key`.
    pub fn undecodable(key: &[u8]) -> impl FnOnce(postcard::Error) -> ReadError + '_ {
        move |source| ReadError::Undecodable {
            key: key.to_vec(),
            source,
        }
    }
}

/// Records held by a queue store (queue items under `q/` or `r/`, dead
/// letters under `d/`), in key order. Undecodable values are returned as
/// errors, never skipped.
pub fn queued_records(recovered: &Recovered) -> Vec<Result<ArchiveRecord, ReadError>> {
    let mut out = Vec::new();
    for (k, v) in recovered {
        if k.starts_with(OQ_RECORD) || k.starts_with(DQ_RECORD) {
            match decode_item(v) {
                Ok(QueueItem::Record(r)) => out.push(Ok(r)),
                Ok(_) => {}
                Err(e) => out.push(Err(ReadError::undecodable(k)(e))),
            }
        } else if k.starts_with(OQ_DEAD) {
            out.push(decode_record(v).map_err(ReadError::undecodable(k)));
        }
    }
    out
}

/// A record the database refused for good, kept by the destination queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub record: ArchiveRecord,
    /// What the database said.
    pub reason: String,
    /// When it was parked (ms since the epoch).
    pub at: u64,
}

/// Records parked in a destination queue's store, in key order.
pub fn parked_records(recovered: &Recovered) -> Vec<Result<(u64, Parked), ReadError>> {
    under(recovered, DQ_PARKED)
        .map(|(k, v)| {
            let key = parse_u64(DQ_PARKED, k)
                .ok_or_else(|| ReadError::MalformedKey { key: k.clone() })?;
            decode::<Parked>(v)
                .map(|p| (key, p))
                .map_err(ReadError::undecodable(k))
        })
        .collect()
}

/// Rows of a database store, in key (message id) order.
pub fn db_rows(recovered: &Recovered) -> Vec<Result<Row, ReadError>> {
    under(recovered, DB_ROW)
        .map(|(k, v)| decode::<Row>(v).map_err(ReadError::undecodable(k)))
        .collect()
}

#[cfg(test)]
mod compat_tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct OldRecord<'a> {
        kind: RecordKind,
        id: &'a str,
        from: &'a str,
        to: &'a str,
        time: u64,
        body: &'a str,
        external: bool,
        front_end: &'a str,
    }

    #[derive(Serialize)]
    enum OldItem<'a> {
        Record(OldRecord<'a>),
    }

    /// Queues written before front ends assigned ids still drain after an
    /// upgrade: their records read back, the client's id standing for both.
    #[test]
    fn records_of_the_previous_version_are_read() {
        let old = OldRecord {
            kind: RecordKind::Im,
            id: "m1",
            from: "a@corp.example",
            to: "b@corp.example",
            time: 7,
            body: "hello",
            external: false,
            front_end: "fe1",
        };
        let QueueItem::Record(r) = decode_item(&encode(&OldItem::Record(old))).unwrap() else {
            panic!("a record")
        };
        assert_eq!(
            (r.id.as_str(), r.client_id.as_str(), r.body.as_str()),
            ("m1", "m1", "hello")
        );
        let new = ArchiveRecord {
            client_id: "c9".into(),
            ..r.clone()
        };
        assert_eq!(decode_record(&encode(&new)).unwrap(), new);
        assert_eq!(
            decode_item(&encode(&QueueItem::Record(new.clone()))).unwrap(),
            QueueItem::Record(new)
        );
        assert!(decode_item(b"\x00garbage").is_err());
    }
}

#[cfg(test)]
mod hold_compat_tests {
    use super::*;
    use crate::core::protocol::LegalHold;

    /// Holds stored before holds named rooms still read, with no rooms;
    /// holds of now read back whole.
    #[test]
    fn a_hold_stored_before_rooms_reads_without_rooms() {
        #[derive(Serialize)]
        struct Old {
            name: String,
            users: std::collections::BTreeSet<String>,
            since: Option<u64>,
            until: Option<u64>,
            reason: String,
            placed_by: String,
            placed_at: u64,
            released: Option<crate::core::protocol::HoldRelease>,
        }
        let old = Old {
            name: "case-1".into(),
            users: ["carol@x".to_string()].into(),
            since: Some(5),
            until: None,
            reason: "r".into(),
            placed_by: "auditor:a".into(),
            placed_at: 9,
            released: None,
        };
        let hold = decode_hold(&encode(&old)).unwrap();
        assert_eq!(
            (hold.name.as_str(), hold.since, hold.rooms.len()),
            ("case-1", Some(5), 0)
        );
        assert!(hold.covers("carol@x", "b@x", 6));
        let now = LegalHold {
            rooms: ["deals".into()].into(),
            ..hold
        };
        assert_eq!(decode_hold(&encode(&now)).unwrap(), now);
        assert!(now.covers_post("deals", "z@x", 6) && !now.covers_post("deals", "z@x", 4));
        assert!(now.covers_post("other", "carol@x", 6) && !now.covers_post("other", "z@x", 6));
    }
}

#[cfg(test)]
mod read_error_tests {
    use super::*;

    #[test]
    fn read_errors_say_which_key() {
        let mut store = Recovered::new();
        store.insert(b"p/x".to_vec(), Vec::new());
        store.insert(key_u64(DB_ROW, 1), vec![0xff]);
        let parked = parked_records(&store);
        assert_eq!(
            parked[0].as_ref().unwrap_err().to_string(),
            "key [112, 47, 120]: malformed"
        );
        let rows = db_rows(&store);
        let err = rows[0].as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("key [109, 47, 0, 0, 0, 0, 0, 0, 0, 1]: "),
            "{err}"
        );
    }
}

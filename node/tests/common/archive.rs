//! Rows written straight into a cluster's live archive, as the database
//! core writes them, for the records management tests.

use super::TestCluster;
use holdfast_actors::archiving::retention::time_key;
use holdfast_actors::core::actor::StoreOp;
use holdfast_actors::core::protocol::{ArchiveRecord, Row};
use holdfast_actors::core::store_keys::{self as keys, DB_ROW};
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, in milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `record` as the database core archives it, 100 ms after it was sent:
/// its row, and its time index entry holding `index`.
pub fn archived(record: ArchiveRecord, index: Vec<u8>) -> Vec<StoreOp> {
    let time = record.time;
    let id = record.id.clone();
    let row = Row {
        rowid: 0,
        record,
        archived_at: time + 100,
    };
    vec![
        StoreOp::Insert {
            key: keys::key_str(DB_ROW, &id),
            value: keys::encode(&row),
        },
        StoreOp::Put {
            key: time_key(time, &id),
            value: index,
        },
    ]
}

/// `archive retention status --json`, as an operator, parsed.
pub fn retention_status(c: &TestCluster) -> serde_json::Value {
    let (code, out, err) = c.cli(&[
        "archive",
        "retention",
        "status",
        "--as",
        "operator",
        "--json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(out.trim()).unwrap()
}

//! Which engine should hold a node's queues? Measures the queue workload —
//! append a record, delete it once acknowledged — with one fsync per group
//! of records (group commit), for the log store the nodes use and for
//! SQLite in WAL mode (the other engine already in the binary).
//!
//! `cargo bench -p holdfast --bench queue_store` prints records per second.

use holdfast::file_disk::{now_or_never, FileDisk};
use holdfast_actors::core::actor::StoreOp;
use holdfast_host::store::LogStore;
use std::time::Instant;

const RECORDS: u64 = 100_000;
const VALUE: usize = 250;

fn key(i: u64) -> Vec<u8> {
    let mut k = b"q/".to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// Log store: one append per record, an fsync per group, deletes once the
/// window of acknowledged records is passed (as the queues do).
fn log_store(group: u64, records: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let disk = FileDisk::new(dir.path()).unwrap();
    let mut store = LogStore::open(&disk, "q.log").unwrap();
    let value = vec![7u8; VALUE];
    let start = Instant::now();
    for i in 0..records {
        let mut ops = vec![StoreOp::Put {
            key: key(i),
            value: value.clone(),
        }];
        if i >= 256 {
            ops.push(StoreOp::Delete { key: key(i - 256) });
        }
        now_or_never(store.apply(&disk, ops)).unwrap().unwrap();
        if (i + 1) % group == 0 {
            disk.sync_handle("q.log").unwrap().sync_data().unwrap();
        }
    }
    records as f64 / start.elapsed().as_secs_f64()
}

/// SQLite (WAL, synchronous=FULL): one transaction per group.
fn sqlite(group: u64, records: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("q.sqlite")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute(
        "CREATE TABLE q (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
        [],
    )
    .unwrap();
    let value = vec![7u8; VALUE];
    let start = Instant::now();
    let mut i = 0;
    while i < records {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..group.min(records - i) {
            tx.execute("INSERT INTO q (k, v) VALUES (?1, ?2)", (key(i), &value))
                .unwrap();
            if i >= 256 {
                tx.execute("DELETE FROM q WHERE k = ?1", [key(i - 256)])
                    .unwrap();
            }
            i += 1;
        }
        tx.commit().unwrap();
    }
    records as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!("queue workload: up to {RECORDS} records of {VALUE} bytes, put + delete after 256, one fsync per group");
    println!(
        "{:>6} {:>16} {:>16}",
        "group", "log store rec/s", "sqlite rec/s"
    );
    for group in [1, 16, 64, 256, 1024] {
        // Fewer records when every few records cost an fsync.
        let records = RECORDS.min(group * 2_000);
        println!(
            "{group:>6} {:>16.0} {:>16.0}",
            log_store(group, records),
            sqlite(group, records)
        );
    }
}

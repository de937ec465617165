//! `holdfast inspect-store`: what a restart would recover from a store log.

use super::common::Failure;
use holdfast_actors::core::protocol::QueueItem;
use holdfast_actors::core::store_keys::{self, DB_ROW, DQ_NEXT, DQ_RECORD, OQ_ACKED, OQ_RECORD};
use holdfast_host::store::replay_log;
use std::path::PathBuf;

pub(crate) fn run(file: &PathBuf) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let replayed = replay_log(&bytes);
    let (state, valid) = (replayed.state, replayed.valid);
    if !bytes.is_empty() && valid == 0 && replayed.damage.is_empty() {
        return Err(Failure::Error(format!(
            "{}: not a store log (no batch in its {} bytes reads back)",
            file.display(),
            bytes.len()
        )));
    }
    println!(
        "{}: {} bytes, {} valid, {} keys",
        file.display(),
        bytes.len(),
        valid,
        state.len()
    );
    for d in &replayed.damage {
        println!(
            "  DAMAGED: {} bytes at offset {} (set aside in .damaged at the next open; the batches after it are read)",
            d.len, d.offset
        );
    }
    if replayed.damage.is_empty() && valid < bytes.len() as u64 {
        println!(
            "  torn tail of {} bytes (cut off at the next open)",
            bytes.len() as u64 - valid
        );
    }
    for (k, v) in &state {
        if let Some(seq) = store_keys::parse_u64(OQ_RECORD, k) {
            match store_keys::decode_item(v) {
                Ok(QueueItem::Record(r)) => println!(
                    "  queued seq {seq}: {} (client id {}) {} -> {}",
                    r.id, r.client_id, r.from, r.to
                ),
                Ok(QueueItem::Heartbeat { id, .. }) => {
                    println!("  queued seq {seq}: heartbeat {id}")
                }
                Ok(QueueItem::Tombstone) => println!("  queued seq {seq}: tombstone"),
                Err(e) => println!("  queued seq {seq}: UNDECODABLE ({e})"),
            }
        } else if k.as_slice() == OQ_ACKED {
            match <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes) {
                Ok(n) => println!("  acknowledged up to seq {n}"),
                Err(_) => println!("  acknowledged up to seq: UNDECODABLE ({} bytes)", v.len()),
            }
        } else if let Some(key) = store_keys::parse_u64(DQ_RECORD, k) {
            match store_keys::decode_item(v) {
                Ok(QueueItem::Record(r)) => {
                    println!("  received {key}: {} from front end {}", r.id, r.front_end)
                }
                Ok(QueueItem::Heartbeat { id, front_end, .. }) => {
                    println!("  received {key}: heartbeat {id} from front end {front_end}")
                }
                Ok(QueueItem::Tombstone) => println!("  received {key}: tombstone"),
                Err(e) => println!("  received {key}: UNDECODABLE ({e})"),
            }
        } else if let Some(sender) = k.strip_prefix(DQ_NEXT) {
            let n = <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes);
            println!(
                "  next expected from {}: {n:?}",
                String::from_utf8_lossy(sender)
            );
        } else if let Some(key) = store_keys::parse_u64(store_keys::DQ_PARKED, k) {
            match store_keys::decode::<store_keys::Parked>(v) {
                Ok(p) => println!(
                    "  parked {key}: {} {} -> {}: {}",
                    p.record.id, p.record.from, p.record.to, p.reason
                ),
                Err(e) => println!("  parked {key}: UNDECODABLE ({e})"),
            }
        } else if let Some(id) = k.strip_prefix(DB_ROW) {
            let id = String::from_utf8_lossy(id);
            match store_keys::decode::<store_keys::Row>(v) {
                Ok(r) => println!(
                    "  row {id}: {} -> {} archived at {} ms",
                    r.record.from, r.record.to, r.archived_at
                ),
                Err(e) => println!("  row {id}: UNDECODABLE ({e})"),
            }
        } else {
            println!("  {:?}: {} bytes", String::from_utf8_lossy(k), v.len());
        }
    }
    if !replayed.damage.is_empty() {
        return Err(Failure::NotWell(format!(
            "{} damaged stretches in {}",
            replayed.damage.len(),
            file.display()
        )));
    }
    Ok(())
}

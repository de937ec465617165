//! A durable key-value store as an append-only log of atomic batches.
//!
//! Each batch is one frame: `u32` length, `u32` CRC-32 of the payload, then
//! the postcard encoding of the batch's [`StoreOp`]s. When the log grows well
//! past the live data it is rewritten as a snapshot with an atomic replace.
//!
//! **Opening tells a torn tail from damage.** A crash can leave only an
//! incomplete last frame (every batch is synced before it is acknowledged),
//! which is cut off silently: nothing acknowledged was in it. A frame that
//! fails its checksum or does not decode is *damage* when intact frames
//! follow it, or when it is complete at the end of the file: its bytes are
//! kept aside in `<file>.damaged`, every intact batch after it is
//! recovered, and [`LogStore::damage`] names what was lost so that the host
//! raises an operator event. A damaged batch cannot be read, so which keys
//! it held is unknown; the cores say what they find missing.

use crate::disk::{Disk, DiskError};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use std::collections::BTreeMap;

const FRAME_HEADER: usize = 8;
/// Bytes each store keeps in `<file>.reserve` while the disk has room:
/// released when a batch that frees space (a deletion) meets a full disk,
/// so that the deletions, and the compaction that gives their space back,
/// can still be written. Without it a queue that filled the disk could
/// never shrink again: deleting is appending.
pub const RESERVE_BYTES: u64 = 32 << 10;
/// Compact when the log is larger than this and than `COMPACT_RATIO` × live data.
const COMPACT_MIN: u64 = 1 << 20;
const COMPACT_RATIO: u64 = 4;

pub struct LogStore {
    file: String,
    state: Recovered,
    log_len: u64,
    live_bytes: u64,
    /// A failed write could not be cut off again: the file may hold a
    /// partial frame that a later append would bury. Refuse every write
    /// until the store is reopened (which cuts the tail off at open).
    poisoned: bool,
    /// `<file>.reserve` holds [`RESERVE_BYTES`] (see there).
    reserve_held: bool,
    /// The reserve was released for a freeing batch and not taken back
    /// yet: growing writes wait until it is.
    reserve_owed: bool,
    /// Damage found at open, until [`LogStore::repair`] set it aside.
    damage: Vec<Damage>,
    /// The damaged bytes, kept for the quarantine file.
    damaged_bytes: Vec<(Damage, Vec<u8>)>,
}

impl From<DiskError> for StoreError {
    fn from(e: DiskError) -> Self {
        match e {
            DiskError::NoSpace => StoreError::NoSpace,
            DiskError::Io(s) => StoreError::Io(s),
        }
    }
}

fn frame(ops: &[StoreOp]) -> Vec<u8> {
    let hint: usize = ops
        .iter()
        .map(|op| match op {
            StoreOp::Put { key, value } | StoreOp::Insert { key, value } => {
                key.len() + value.len() + 8
            }
            StoreOp::Delete { key } => key.len() + 4,
        })
        .sum();
    // The header is filled in after the payload, in the same buffer: one
    // allocation and no copy per batch.
    let mut out = Vec::with_capacity(FRAME_HEADER + hint + 8);
    out.resize(FRAME_HEADER, 0);
    let mut out = postcard::to_extend(ops, out).expect("in-memory serialization cannot fail");
    let len = (out.len() - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&out[FRAME_HEADER..]);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4..FRAME_HEADER].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A stretch of a log that could not be read: `len` bytes at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
}

/// What replaying a log image found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub state: Recovered,
    /// End of the last intact frame: the log's length once a torn tail is
    /// cut off.
    pub valid: u64,
    /// Unreadable stretches (not a torn tail), in file order.
    pub damage: Vec<Damage>,
}

/// The intact frame at `pos`: its ops and where the next frame starts.
fn frame_at(bytes: &[u8], pos: usize) -> Option<(Vec<StoreOp>, usize)> {
    let end = frame_end(bytes, pos)?;
    let crc = u32::from_be_bytes(
        bytes[pos + 4..pos + FRAME_HEADER]
            .try_into()
            .expect("4 bytes"),
    );
    let payload = bytes.get(pos + FRAME_HEADER..end)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let ops = postcard::from_bytes::<Vec<StoreOp>>(payload).ok()?;
    Some((ops, end))
}

/// Where the frame at `pos` ends if its length field is to be believed
/// (`None`: no whole header there). It may lie past the end of the file.
fn frame_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let header = bytes.get(pos..pos.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    pos.checked_add(FRAME_HEADER)?.checked_add(len)
}

/// Whether the bytes at `pos` are a whole frame (header and the payload
/// its length claims, up to the end of the file) that failed its checks:
/// damage, where an incomplete frame is a write torn by a crash.
fn complete_bad_frame(bytes: &[u8], pos: usize) -> bool {
    frame_end(bytes, pos).is_some_and(|end| end <= bytes.len())
}

/// Where the frame at `pos` ends, if that is inside the file.
fn claimed_end(bytes: &[u8], pos: usize) -> Option<usize> {
    frame_end(bytes, pos).filter(|&end| end < bytes.len())
}

/// The file of an actor's log store in its node's data folder.
pub fn store_file(kind: holdfast_actors::core::ids::ActorKind) -> String {
    format!("{}.log", kind.as_str())
}

/// Replays a log image, stepping over damaged stretches to the next intact
/// frame (checksum, length and decoding all hold).
pub fn replay_log(bytes: &[u8]) -> Replayed {
    let mut out = Replayed::default();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if let Some((ops, next)) = frame_at(bytes, pos) {
            // The engines' own semantics. An insert is never logged (see
            // `LogStore::apply`), but a log holding one means what it
            // always means.
            holdfast_actors::core::engine::apply(&mut out.state, ops);
            pos = next;
            out.valid = pos as u64;
            continue;
        }
        // A frame whose header is intact but whose payload is not ends
        // where its length says: look there first, so that a frame hidden
        // in the damaged payload (text a client sent) is never taken for
        // one of the log's.
        let claimed = claimed_end(bytes, pos).filter(|&end| frame_at(bytes, end).is_some());
        match claimed.or_else(|| (pos + 1..bytes.len()).find(|&q| frame_at(bytes, q).is_some())) {
            Some(next) => {
                out.damage.push(Damage {
                    offset: pos as u64,
                    len: (next - pos) as u64,
                });
                pos = next;
            }
            None => {
                if complete_bad_frame(bytes, pos) {
                    out.damage.push(Damage {
                        offset: pos as u64,
                        len: (bytes.len() - pos) as u64,
                    });
                }
                break;
            }
        }
    }
    out
}

/// Replays a log image; returns the state and the end of the last intact
/// frame (see [`replay_log`]).
pub fn replay(bytes: &[u8]) -> (Recovered, u64) {
    let r = replay_log(bytes);
    (r.state, r.valid)
}

impl LogStore {
    /// Opens (or creates) the store in `file`, cutting off a torn tail.
    /// Damage in the log is recovered around and reported by
    /// [`LogStore::damage`]; the host calls [`LogStore::repair`] next.
    pub fn open(disk: &impl Disk, file: &str) -> Result<LogStore, StoreError> {
        let bytes = disk.read(file)?.unwrap_or_default();
        let r = replay_log(&bytes);
        let damaged_end = r.damage.last().map_or(0, |d| d.offset + d.len);
        if r.damage.is_empty() && r.valid < bytes.len() as u64 {
            tracing::warn!(
                file,
                valid = r.valid,
                len = bytes.len(),
                "store log has a torn tail (a write the crash interrupted); cutting it off"
            );
            disk.truncate(file, r.valid)?;
        }
        let damaged_bytes = r
            .damage
            .iter()
            .map(|d| {
                let (a, b) = (d.offset as usize, (d.offset + d.len) as usize);
                (d.clone(), bytes[a..b].to_vec())
            })
            .collect();
        let live_bytes = r
            .state
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        // A reserve file cut short means the reserve was released and not
        // taken back before the process ended: still owed.
        let reserve_owed = disk
            .read(&Self::reserve_file(file))
            .ok()
            .flatten()
            .is_some_and(|b| (b.len() as u64) < RESERVE_BYTES);
        Ok(LogStore {
            file: file.to_string(),
            state: r.state,
            // With damage, the log is rewritten by `repair` before any write.
            log_len: r.valid.max(damaged_end),
            live_bytes,
            poisoned: false,
            reserve_held: false,
            reserve_owed,
            damage: r.damage,
            damaged_bytes,
        })
    }

    /// The damage found at open (empty once repaired, and for a sound log).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Name of the file that holds `file`'s reserve of free space.
    pub fn reserve_file(file: &str) -> String {
        format!("{file}.reserve")
    }

    /// Whether the reserve of free space is held (it is released when a
    /// freeing batch meets a full disk, and taken again after the next
    /// compaction).
    pub fn reserve_held(&self) -> bool {
        self.reserve_held
    }

    /// Takes the reserve of free space if the disk has room for it (best
    /// effort: a full disk leaves the store without one until space comes
    /// back).
    pub async fn take_reserve(&mut self, disk: &impl Disk) {
        if self.reserve_held {
            return;
        }
        let reserve = Self::reserve_file(&self.file);
        let taken = match disk.read(&reserve) {
            Ok(Some(b)) if b.len() as u64 >= RESERVE_BYTES => Ok(()),
            Ok(existing) => {
                let have = existing.map_or(0, |b| b.len() as u64);
                match disk.append(&reserve, &vec![0u8; (RESERVE_BYTES - have) as usize]) {
                    Ok(()) => disk.sync(&reserve).await,
                    Err(e) => {
                        let _ = disk.truncate(&reserve, 0);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e),
        };
        self.reserve_held = taken.is_ok();
        if self.reserve_held {
            self.reserve_owed = false;
        }
    }

    /// Gives the reserve back to the disk, for a batch that frees space.
    fn release_reserve(&mut self, disk: &impl Disk) -> bool {
        if !self.reserve_held {
            return false;
        }
        let released = disk.truncate(&Self::reserve_file(&self.file), 0).is_ok();
        if released {
            self.reserve_held = false;
            self.reserve_owed = true;
            tracing::warn!(file = %self.file, "disk full: the store's reserve is released so that deletions and compaction can free space");
        }
        released
    }

    /// Name of the file damaged stretches of `file` are kept in.
    pub fn quarantine_file(file: &str) -> String {
        format!("{file}.damaged")
    }

    /// Sets damaged stretches aside and rewrites the log without them: the
    /// damaged bytes are appended to `<file>.damaged` (each as `u64` offset,
    /// `u64` length, the bytes; synced), then the log is replaced by a
    /// snapshot of what was recovered. Returns the damage it set aside (the
    /// host reports it). Until it succeeds, writes are refused: an append
    /// after damage would be read back only by a scan.
    pub async fn repair(&mut self, disk: &impl Disk) -> Result<Vec<Damage>, StoreError> {
        if self.damage.is_empty() {
            return Ok(Vec::new());
        }
        let quarantine = Self::quarantine_file(&self.file);
        let mut kept = Vec::new();
        for (d, bytes) in &self.damaged_bytes {
            kept.extend_from_slice(&d.offset.to_be_bytes());
            kept.extend_from_slice(&d.len.to_be_bytes());
            kept.extend_from_slice(bytes);
        }
        disk.append(&quarantine, &kept)?;
        disk.sync(&quarantine).await?;
        let snapshot = self.snapshot();
        disk.replace(&self.file, &snapshot).await?;
        self.log_len = snapshot.len() as u64;
        self.damaged_bytes.clear();
        Ok(std::mem::take(&mut self.damage))
    }

    fn snapshot(&self) -> Vec<u8> {
        let ops: Vec<StoreOp> = self
            .state
            .iter()
            .map(|(k, v)| StoreOp::Put {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        if ops.is_empty() {
            Vec::new()
        } else {
            frame(&ops)
        }
    }

    /// A failed write could not be undone: the store refuses writes until
    /// it is reopened (which cuts the partial frame off).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The state as recovered or as last written.
    pub fn state(&self) -> &Recovered {
        &self.state
    }

    pub fn take_state(&self) -> Recovered {
        self.state.clone()
    }

    /// Bytes the log occupies on disk.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Applies one batch atomically and durably; says how many of its
    /// inserts wrote (the others found their key taken).
    pub async fn apply(
        &mut self,
        disk: &impl Disk,
        ops: Vec<StoreOp>,
    ) -> Result<Written, StoreError> {
        if self.poisoned {
            return Err(StoreError::Io(format!(
                "{}: an earlier failed write could not be undone; the store must be reopened",
                self.file
            )));
        }
        if !self.damage.is_empty() {
            return Err(StoreError::Io(format!(
                "{}: damaged; it must be repaired before it is written",
                self.file
            )));
        }
        // Without its reserve, the store takes no growing write until it
        // has taken the reserve back: what a freeing batch released must
        // stay for deletions and compaction, or the queue would fill it
        // and never shrink again.
        if self.reserve_owed && !self.frees_space(&ops) {
            self.take_reserve(disk).await;
            if self.reserve_owed {
                return Err(StoreError::NoSpace);
            }
        }
        let (ops, inserted) = self.resolve_inserts(ops);
        let bytes = frame(&ops);
        let mut written = match disk.append(&self.file, &bytes) {
            Ok(()) => disk.sync(&self.file).await,
            Err(e) => Err(e),
        };
        // A full disk: space the log holds for dead data is given back
        // first (a compaction, which may use the reserve: it frees space);
        // a batch that frees space may use the reserve itself (and only
        // such a batch, or the queue would fill the reserve too). Then the
        // write is tried once more.
        if written == Err(DiskError::NoSpace) && disk.truncate(&self.file, self.log_len).is_ok() {
            let room = if self.compact_for_space(disk).await {
                true
            } else {
                self.frees_space(&ops) && self.release_reserve(disk)
            };
            if room {
                written = match disk.append(&self.file, &bytes) {
                    Ok(()) => disk.sync(&self.file).await,
                    Err(e) => Err(e),
                };
            }
        }
        if let Err(e) = written {
            // Leave no partial frame behind (a real file system may have
            // written part of it); if even that fails, stop writing.
            if let Err(t) = disk.truncate(&self.file, self.log_len) {
                tracing::error!(file = %self.file, error = %t, "cannot cut off a failed write; refusing further writes");
                self.poisoned = true;
            }
            return Err(e.into());
        }
        self.log_len += bytes.len() as u64;
        for op in ops {
            // One op at a time, so that two ops on one key count right.
            match op {
                StoreOp::Put { key, mut value } => {
                    // Kept for as long as the key lives (a database keeps
                    // every row): not with the spare capacity its
                    // serialiser left, up to half of it.
                    if value.capacity() - value.len() > value.len() / 4 {
                        value = value.as_slice().to_vec();
                    }
                    self.live_bytes += (key.len() + value.len()) as u64;
                    if let Some(old) = self.state.insert(key.clone(), value) {
                        self.live_bytes -= (key.len() + old.len()) as u64;
                    }
                }
                StoreOp::Delete { key } => {
                    if let Some(old) = self.state.remove(&key) {
                        self.live_bytes -= (key.len() + old.len()) as u64;
                    }
                }
                StoreOp::Insert { .. } => unreachable!("resolved into puts before the write"),
            }
        }
        self.maybe_compact(disk).await;
        Ok(Written { inserted })
    }

    /// Turns the batch's inserts into puts where their key is free (in the
    /// state as the batch's earlier ops leave it) and drops the others:
    /// the log holds only puts and deletes.
    fn resolve_inserts(&self, ops: Vec<StoreOp>) -> (Vec<StoreOp>, u64) {
        if !ops.iter().any(|op| matches!(op, StoreOp::Insert { .. })) {
            return (ops, 0);
        }
        // Keys the batch itself has set (true) or deleted (false) so far.
        let mut batch: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let mut out = Vec::with_capacity(ops.len());
        let mut inserted = 0;
        for op in ops {
            match op {
                StoreOp::Insert { key, value } => {
                    let taken = batch
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| self.state.contains_key(&key));
                    if !taken {
                        inserted += 1;
                        batch.insert(key.clone(), true);
                        out.push(StoreOp::Put { key, value });
                    }
                }
                StoreOp::Put { key, value } => {
                    batch.insert(key.clone(), true);
                    out.push(StoreOp::Put { key, value });
                }
                StoreOp::Delete { key } => {
                    batch.insert(key.clone(), false);
                    out.push(StoreOp::Delete { key });
                }
            }
        }
        (out, inserted)
    }

    /// Whether a batch leaves less live data than there is now: only
    /// deletions and overwrites with smaller values.
    fn frees_space(&self, ops: &[StoreOp]) -> bool {
        let mut freed = 0i64;
        for op in ops {
            match op {
                StoreOp::Put { key, value } | StoreOp::Insert { key, value } => {
                    freed -= (key.len() + value.len()) as i64;
                    if let Some(old) = self.state.get(key) {
                        freed += (key.len() + old.len()) as i64;
                    }
                }
                StoreOp::Delete { key } => {
                    if let Some(old) = self.state.get(key) {
                        freed += (key.len() + old.len()) as i64;
                    }
                }
            }
        }
        freed > 0
    }

    /// On a full disk: rewrites the log without its dead data if that
    /// frees at least half of it, using the reserve if need be. The reserve
    /// is taken again by the next compaction that finds room.
    async fn compact_for_space(&mut self, disk: &impl Disk) -> bool {
        if self.log_len <= 2 * self.live_bytes + 2 * FRAME_HEADER as u64 {
            return false;
        }
        let snapshot = self.snapshot();
        let mut done = disk.replace(&self.file, &snapshot).await;
        if done == Err(DiskError::NoSpace) && self.release_reserve(disk) {
            done = disk.replace(&self.file, &snapshot).await;
        }
        match done {
            Ok(()) => {
                tracing::warn!(file = %self.file, from = self.log_len, to = snapshot.len(), "disk full: the store log was compacted to give space back");
                self.log_len = snapshot.len() as u64;
                true
            }
            Err(e) => {
                tracing::warn!(file = %self.file, error = %e, "disk full and the store log could not be compacted");
                false
            }
        }
    }

    async fn maybe_compact(&mut self, disk: &impl Disk) {
        // Without its reserve (the disk was full) the store compacts as
        // soon as half the log is dead: that is what gives space back.
        let due = if self.reserve_held {
            self.log_len >= COMPACT_MIN && self.log_len >= COMPACT_RATIO * self.live_bytes.max(1)
        } else {
            // At least a reserve's worth of dead data, so that a store
            // that cannot take its reserve back does not rewrite its log
            // on every write.
            self.log_len > 2 * self.live_bytes + RESERVE_BYTES
        };
        if !due {
            return;
        }
        let snapshot = self.snapshot();
        match disk.replace(&self.file, &snapshot).await {
            Ok(()) => {
                self.log_len = snapshot.len() as u64;
                if !self.reserve_held {
                    self.take_reserve(disk).await;
                }
            }
            // Not fatal: the log stays valid, just longer.
            Err(e) => tracing::warn!(file = %self.file, error = %e, "store compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Logs written before keys and values were serialized as byte strings
    /// read back unchanged: postcard writes a `Vec<u8>` element by element
    /// and as a byte string with the same bytes.
    #[test]
    fn byte_string_encoding_matches_the_element_wise_one() {
        #[derive(serde::Serialize)]
        enum OldOp {
            Put { key: Vec<u8>, value: Vec<u8> },
            Delete { key: Vec<u8> },
        }
        let long: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        let old = vec![
            OldOp::Put {
                key: b"k1".to_vec(),
                value: long.clone(),
            },
            OldOp::Delete {
                key: b"k0".to_vec(),
            },
        ];
        let new = vec![
            StoreOp::Put {
                key: b"k1".to_vec(),
                value: long,
            },
            StoreOp::Delete {
                key: b"k0".to_vec(),
            },
        ];
        let old_bytes = postcard::to_stdvec(&old).unwrap();
        assert_eq!(old_bytes, postcard::to_stdvec(&new).unwrap());
        assert_eq!(
            postcard::from_bytes::<Vec<StoreOp>>(&old_bytes).unwrap(),
            new
        );
        let (state, valid) = replay(&frame(&new));
        assert_eq!(valid as usize, frame(&new).len());
        assert_eq!(state.len(), 1);
    }
    use std::cell::RefCell;

    /// A disk that appends a partial frame and then fails, and cannot
    /// truncate: the worst a real file system can do.
    #[derive(Default)]
    struct TornDisk {
        data: RefCell<Vec<u8>>,
        fail: RefCell<bool>,
    }

    impl Disk for TornDisk {
        // One file, "f": other files (a reserve) are not there, and what
        // is written to them is dropped.
        fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
            Ok((name == "f").then(|| self.data.borrow().clone()))
        }
        fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
            if name != "f" {
                return Ok(());
            }
            if *self.fail.borrow() {
                self.data
                    .borrow_mut()
                    .extend_from_slice(&data[..data.len() / 2]);
                return Err(DiskError::Io("torn".into()));
            }
            self.data.borrow_mut().extend_from_slice(data);
            Ok(())
        }
        fn truncate(&self, _: &str, len: u64) -> Result<(), DiskError> {
            if *self.fail.borrow() {
                return Err(DiskError::Io("read-only".into()));
            }
            self.data.borrow_mut().truncate(len as usize);
            Ok(())
        }
        async fn sync(&self, _: &str) -> Result<(), DiskError> {
            Ok(())
        }
        async fn replace(&self, _: &str, data: &[u8]) -> Result<(), DiskError> {
            *self.data.borrow_mut() = data.to_vec();
            Ok(())
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        // The futures here never wait: poll once with a no-op waker.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the test disk never waits"),
        }
    }

    /// A write of `k` with the value `v`.
    fn put(k: &str) -> Vec<StoreOp> {
        kv(k, "v")
    }

    #[test]
    fn a_failed_write_that_cannot_be_undone_stops_all_writes_until_reopened() {
        let disk = TornDisk::default();
        let mut store = LogStore::open(&disk, "f").unwrap();
        block_on(store.apply(&disk, put("a"))).unwrap();
        *disk.fail.borrow_mut() = true;
        assert!(block_on(store.apply(&disk, put("b"))).is_err());
        *disk.fail.borrow_mut() = false;
        // Writing on would bury the torn half-frame under a good one, and
        // the next open would stop at the torn frame, losing the good one.
        assert!(block_on(store.apply(&disk, put("c"))).is_err());
        let mut store = LogStore::open(&disk, "f").unwrap();
        assert_eq!(store.state().len(), 1, "the torn tail is cut off at open");
        block_on(store.apply(&disk, put("c"))).unwrap();
        assert_eq!(LogStore::open(&disk, "f").unwrap().state().len(), 2);
    }

    #[test]
    fn live_bytes_count_two_ops_on_one_key() {
        let disk = TornDisk::default();
        let mut store = LogStore::open(&disk, "f").unwrap();
        let ops = vec![
            StoreOp::Put {
                key: b"k".to_vec(),
                value: b"12345".to_vec(),
            },
            StoreOp::Put {
                key: b"k".to_vec(),
                value: b"1".to_vec(),
            },
            StoreOp::Delete { key: b"k".to_vec() },
            StoreOp::Delete { key: b"k".to_vec() },
        ];
        block_on(store.apply(&disk, ops)).unwrap();
        assert_eq!(store.live_bytes, 0);
    }

    #[test]
    fn replay_stops_at_a_torn_or_corrupt_frame() {
        let a = frame(&[StoreOp::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        }]);
        let b = frame(&[
            StoreOp::Put {
                key: b"b".to_vec(),
                value: b"2".to_vec(),
            },
            StoreOp::Delete { key: b"a".to_vec() },
        ]);
        let mut log = a.clone();
        log.extend_from_slice(&b);
        let (state, valid) = replay(&log);
        assert_eq!(valid as usize, log.len());
        assert_eq!(
            state.keys().cloned().collect::<Vec<_>>(),
            vec![b"b".to_vec()]
        );
        // torn: the second batch is not applied at all
        for cut in a.len()..log.len() {
            let (state, valid) = replay(&log[..cut]);
            assert_eq!(valid as usize, a.len());
            assert_eq!(
                state.keys().cloned().collect::<Vec<_>>(),
                vec![b"a".to_vec()]
            );
        }
        // corrupt: a flipped bit in the payload stops the replay there
        let mut bad = log.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(replay(&bad).1 as usize, a.len());
    }
    fn kv(k: &str, v: &str) -> Vec<StoreOp> {
        vec![StoreOp::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }]
    }

    fn three_frames() -> (Vec<u8>, [usize; 3]) {
        let (a, b, c) = (
            frame(&kv("a", "1")),
            frame(&kv("b", "2")),
            frame(&kv("c", "3")),
        );
        let lens = [a.len(), b.len(), c.len()];
        (a.into_iter().chain(b).chain(c).collect::<Vec<u8>>(), lens)
    }

    /// Damage in the middle is not a torn tail: what follows is recovered,
    /// and the damaged stretch is named.
    #[test]
    fn damage_in_the_middle_is_stepped_over_and_named() {
        let (mut log, [a, b, _]) = three_frames();
        for byte in &mut log[a + 2..a + 6] {
            *byte ^= 0x5a;
        }
        let r = replay_log(&log);
        assert_eq!(
            r.state.keys().cloned().collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"c".to_vec()],
            "the batch after the damage is recovered"
        );
        assert_eq!(
            r.damage,
            vec![Damage {
                offset: a as u64,
                len: b as u64
            }]
        );
        assert_eq!(r.valid as usize, log.len());
    }

    /// A frame carried inside a damaged frame's payload (text a client
    /// sent can hold one) is not taken for one of the log's: replay goes on
    /// where the damaged frame's length says it ends.
    #[test]
    fn a_frame_hidden_in_a_damaged_payload_is_not_replayed() {
        let forged = frame(&kv("forged", "evil"));
        let mut value = forged.clone();
        value.extend_from_slice(b"padding");
        let b = frame(&[StoreOp::Put {
            key: b"b".to_vec(),
            value,
        }]);
        let (a, c) = (frame(&kv("a", "1")), frame(&kv("c", "3")));
        let mut log = [a.clone(), b.clone(), c].concat();
        let last_of_b = a.len() + b.len() - 1;
        log[last_of_b] ^= 0xff;
        let r = replay_log(&log);
        assert_eq!(
            r.state.keys().cloned().collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"c".to_vec()]
        );
        assert_eq!(r.damage.len(), 1);
    }

    /// A reserve released and not taken back before a restart is still
    /// owed: growing writes wait for it after the restart too.
    #[test]
    fn a_released_reserve_is_still_owed_after_a_restart() {
        let disk = CapDisk {
            files: RefCell::new(BTreeMap::new()),
            capacity: 64 << 10,
        };
        disk.append("q.reserve", &[0; 100]).unwrap();
        disk.append("filler", &vec![0; (64 << 10) - 200]).unwrap();
        let mut store = LogStore::open(&disk, "q").unwrap();
        assert_eq!(
            block_on(store.apply(&disk, put("k"))),
            Err(StoreError::NoSpace)
        );
        disk.files.borrow_mut().remove("filler");
        block_on(store.apply(&disk, put("k"))).unwrap();
        assert!(store.reserve_held());
    }

    /// A complete last frame that fails its checksum is damage (it was
    /// synced whole); an incomplete one is a torn write, cut silently.
    #[test]
    fn a_bad_complete_tail_is_damage_an_incomplete_one_is_torn() {
        let (log, [a, b, _]) = three_frames();
        let mut bad = log.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let r = replay_log(&bad);
        assert_eq!(r.valid as usize, a + b);
        assert_eq!(r.damage.len(), 1, "{:?}", r.damage);
        let torn = replay_log(&log[..log.len() - 1]);
        assert_eq!(torn.valid as usize, a + b);
        assert!(torn.damage.is_empty());
    }

    #[test]
    fn damage_is_quarantined_and_the_log_rewritten_before_any_write() {
        let (mut log, [a, b, _]) = three_frames();
        log[a + 9] ^= 0xff;
        let damaged = log[a..a + b].to_vec();
        let disk = QuarantineDisk::default();
        *disk.log.borrow_mut() = log;
        let mut store = LogStore::open(&disk, "f").unwrap();
        assert_eq!(store.state().len(), 2);
        assert_eq!(store.damage().len(), 1);
        assert!(
            block_on(store.apply(&disk, put("d"))).is_err(),
            "no write lands behind unrepaired damage"
        );
        let set_aside = block_on(store.repair(&disk)).unwrap();
        assert_eq!(set_aside.len(), 1);
        assert!(store.damage().is_empty());
        let mut quarantined = Vec::new();
        quarantined.extend_from_slice(&(a as u64).to_be_bytes());
        quarantined.extend_from_slice(&(b as u64).to_be_bytes());
        quarantined.extend_from_slice(&damaged);
        assert_eq!(*disk.quarantine.borrow(), quarantined, "the bytes are kept");
        block_on(store.apply(&disk, put("d"))).unwrap();
        let again = LogStore::open(&disk, "f").unwrap();
        assert!(again.damage().is_empty(), "the rewritten log is sound");
        assert_eq!(again.state().len(), 3);
    }

    /// Three files: the log, its quarantine and its reserve.
    #[derive(Default)]
    struct QuarantineDisk {
        log: RefCell<Vec<u8>>,
        quarantine: RefCell<Vec<u8>>,
        reserve: RefCell<Vec<u8>>,
    }

    impl QuarantineDisk {
        fn file(&self, name: &str) -> &RefCell<Vec<u8>> {
            if name.ends_with(".damaged") {
                &self.quarantine
            } else if name.ends_with(".reserve") {
                &self.reserve
            } else {
                &self.log
            }
        }
    }

    impl Disk for QuarantineDisk {
        fn read(&self, f: &str) -> Result<Option<Vec<u8>>, DiskError> {
            Ok(Some(self.file(f).borrow().clone()))
        }
        fn append(&self, f: &str, data: &[u8]) -> Result<(), DiskError> {
            self.file(f).borrow_mut().extend_from_slice(data);
            Ok(())
        }
        fn truncate(&self, f: &str, len: u64) -> Result<(), DiskError> {
            self.file(f).borrow_mut().truncate(len as usize);
            Ok(())
        }
        async fn sync(&self, _: &str) -> Result<(), DiskError> {
            Ok(())
        }
        async fn replace(&self, f: &str, data: &[u8]) -> Result<(), DiskError> {
            *self.file(f).borrow_mut() = data.to_vec();
            Ok(())
        }
    }
    /// Files in memory on a disk of `capacity` bytes.
    struct CapDisk {
        files: RefCell<BTreeMap<String, Vec<u8>>>,
        capacity: usize,
    }

    impl CapDisk {
        fn used(&self) -> usize {
            self.files.borrow().values().map(Vec::len).sum()
        }
    }

    impl Disk for CapDisk {
        fn read(&self, f: &str) -> Result<Option<Vec<u8>>, DiskError> {
            Ok(self.files.borrow().get(f).cloned())
        }
        fn append(&self, f: &str, data: &[u8]) -> Result<(), DiskError> {
            if self.used() + data.len() > self.capacity {
                return Err(DiskError::NoSpace);
            }
            self.files
                .borrow_mut()
                .entry(f.into())
                .or_default()
                .extend_from_slice(data);
            Ok(())
        }
        fn truncate(&self, f: &str, len: u64) -> Result<(), DiskError> {
            if let Some(d) = self.files.borrow_mut().get_mut(f) {
                d.truncate(len as usize);
            }
            Ok(())
        }
        async fn sync(&self, _: &str) -> Result<(), DiskError> {
            Ok(())
        }
        async fn replace(&self, f: &str, data: &[u8]) -> Result<(), DiskError> {
            // The new copy exists beside the old one until the rename.
            if self.used() + data.len() > self.capacity {
                return Err(DiskError::NoSpace);
            }
            self.files.borrow_mut().insert(f.into(), data.to_vec());
            Ok(())
        }
    }

    /// A queue that fills its disk can still delete what was acknowledged
    /// (the reserve takes the deletions), and the compaction that follows
    /// gives the space back; the reserve is taken again afterwards. Without
    /// the reserve the deletions fail and the disk stays full for good.
    #[test]
    fn a_store_that_filled_its_disk_gets_the_space_back_by_itself() {
        let disk = CapDisk {
            files: RefCell::new(BTreeMap::new()),
            capacity: 256 << 10,
        };
        let mut store = LogStore::open(&disk, "q").unwrap();
        block_on(store.take_reserve(&disk));
        assert!(store.reserve_held());
        let value = vec![7u8; 300];
        let mut n = 0u32;
        loop {
            let ops = vec![StoreOp::Put {
                key: n.to_be_bytes().to_vec(),
                value: value.clone(),
            }];
            match block_on(store.apply(&disk, ops)) {
                Ok(_) => n += 1,
                Err(StoreError::NoSpace) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(n > 500, "the disk filled after {n} records");
        assert!(
            store.reserve_held(),
            "a growing write never takes the reserve"
        );
        // Everything is acknowledged: deletions in batches of 50.
        for (i, chunk) in (0..n).collect::<Vec<_>>().chunks(50).enumerate() {
            let ops = chunk
                .iter()
                .map(|k| StoreOp::Delete {
                    key: k.to_be_bytes().to_vec(),
                })
                .collect();
            block_on(store.apply(&disk, ops)).expect("deletion on a full disk");
            if i == 0 {
                // What the reserve gave back is for deletions: a growing
                // write waits until the reserve is taken again.
                assert!(!store.reserve_held());
                assert_eq!(
                    block_on(store.apply(&disk, put("too-early"))),
                    Err(StoreError::NoSpace)
                );
            }
        }
        assert!(store.state().is_empty());
        assert!(
            disk.used() < 64 << 10,
            "space came back: {} bytes used",
            disk.used()
        );
        assert!(store.reserve_held(), "the reserve is taken again");
        // And the queue takes new records.
        block_on(store.apply(&disk, put("again"))).unwrap();
    }
}

//! A durable key-value store as an append-only log of atomic batches.
//!
//! Each batch is one frame: `u32` length, `u32` CRC-32 of the payload, then
//! the postcard encoding of the batch's [`StoreOp`]s. On open the log is
//! replayed up to the first incomplete or corrupt frame (a write torn by a
//! crash), and that tail is cut off, so a batch is applied entirely or not
//! at all. When the log grows well past the live data it is rewritten as a
//! snapshot with an atomic replace.

use crate::disk::{Disk, DiskError};
use holdfast_actors::actor::{Recovered, StoreError, StoreOp};

const FRAME_HEADER: usize = 8;
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
            StoreOp::Put { key, value } => key.len() + value.len() + 8,
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

/// Replays a log image; returns the state and the length of the valid prefix.
pub fn replay(bytes: &[u8]) -> (Recovered, u64) {
    let mut state = Recovered::new();
    let mut pos = 0usize;
    while bytes.len() - pos >= FRAME_HEADER {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let start = pos + FRAME_HEADER;
        if bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(ops) = postcard::from_bytes::<Vec<StoreOp>>(payload) else {
            break;
        };
        apply_ops(&mut state, ops);
        pos = start + len;
    }
    (state, pos as u64)
}

fn apply_ops(state: &mut Recovered, ops: Vec<StoreOp>) {
    for op in ops {
        match op {
            StoreOp::Put { key, value } => {
                state.insert(key, value);
            }
            StoreOp::Delete { key } => {
                state.remove(&key);
            }
        }
    }
}

impl LogStore {
    /// Opens (or creates) the store in `file`, cutting off a torn tail.
    pub fn open(disk: &impl Disk, file: &str) -> Result<LogStore, StoreError> {
        let bytes = disk.read(file)?.unwrap_or_default();
        let (state, valid) = replay(&bytes);
        if valid < bytes.len() as u64 {
            tracing::warn!(
                file,
                valid,
                len = bytes.len(),
                "store log has a torn or corrupt tail; cutting it off"
            );
            disk.truncate(file, valid)?;
        }
        let live_bytes = state.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        Ok(LogStore {
            file: file.to_string(),
            state,
            log_len: valid,
            live_bytes,
            poisoned: false,
        })
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

    /// Applies one batch atomically and durably.
    pub async fn apply(&mut self, disk: &impl Disk, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Io(format!(
                "{}: an earlier failed write could not be undone; the store must be reopened",
                self.file
            )));
        }
        let bytes = frame(&ops);
        let written = match disk.append(&self.file, &bytes) {
            Ok(()) => disk.sync(&self.file).await,
            Err(e) => Err(e),
        };
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
                StoreOp::Put { key, value } => {
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
            }
        }
        self.maybe_compact(disk).await;
        Ok(())
    }

    async fn maybe_compact(&mut self, disk: &impl Disk) {
        if self.log_len < COMPACT_MIN || self.log_len < COMPACT_RATIO * self.live_bytes.max(1) {
            return;
        }
        let ops: Vec<StoreOp> = self
            .state
            .iter()
            .map(|(k, v)| StoreOp::Put {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let snapshot = if ops.is_empty() {
            Vec::new()
        } else {
            frame(&ops)
        };
        match disk.replace(&self.file, &snapshot).await {
            Ok(()) => self.log_len = snapshot.len() as u64,
            // Not fatal: the log stays valid, just longer.
            Err(e) => tracing::warn!(file = %self.file, error = %e, "store compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fn read(&self, _: &str) -> Result<Option<Vec<u8>>, DiskError> {
            Ok(Some(self.data.borrow().clone()))
        }
        fn append(&self, _: &str, data: &[u8]) -> Result<(), DiskError> {
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

    fn put(k: &str) -> Vec<StoreOp> {
        vec![StoreOp::Put {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }]
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
}

//! The simulated disk of one node.
//!
//! madsim's own file system has no crash model and no quota, so the
//! simulator keeps its own: the disk outlives the node (it is owned by the
//! harness, not by the node's tasks), a crash drops everything written since
//! the last sync, a size limit returns ENOSPC, and faults can make the disk
//! full or make every write fail.

use crate::host::bytes::FileBytes;
use holdfast_host::disk::{Disk, DiskError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct File {
    data: FileBytes,
    /// Bytes of `data` that are durable.
    synced: usize,
}

struct State {
    files: BTreeMap<String, File>,
    capacity: u64,
    /// Fault: no free space, whatever this node frees (as if another
    /// process took every byte as soon as it came free). A disk this node
    /// filled itself is `capacity`'s business: what it frees it can use.
    full: bool,
    io_error: bool,
    fsync: Duration,
}

impl State {
    fn used(&self) -> u64 {
        self.files.values().map(|f| f.data.len() as u64).sum()
    }

    /// Whether `more` bytes fit.
    fn fits(&self, more: u64) -> bool {
        !self.full && self.used() + more <= self.capacity
    }
}

/// Cheap to clone: clones share one disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    pub fn new(capacity: u64, fsync: Duration) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                files: BTreeMap::new(),
                capacity,
                full: false,
                io_error: false,
                fsync,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panicking test thread; the state
        // itself is always consistent between calls.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Power loss / process kill: unsynced writes are gone.
    pub fn crash(&self) {
        for f in self.lock().files.values_mut() {
            f.data.truncate(f.synced);
        }
    }

    /// Fault: no free space (as if another process filled the disk).
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// Fault: every write and sync fails with EIO.
    pub fn set_io_error(&self, on: bool) {
        self.lock().io_error = on;
    }

    /// Whether the EIO fault is in force (the database engine's reads
    /// fail under it too).
    pub fn io_error(&self) -> bool {
        self.lock().io_error
    }

    pub fn used(&self) -> u64 {
        self.lock().used()
    }

    /// What a restart would read: the durable bytes of a file.
    pub fn durable(&self, file: &str) -> Vec<u8> {
        self.lock()
            .files
            .get(file)
            .map(|f| f.data[..f.synced].to_vec())
            .unwrap_or_default()
    }

    /// `read` applied to the durable bytes of a file, without copying them
    /// (an archive database's log is most of a run's memory at volume).
    /// The disk is locked meanwhile: `read` must not touch it.
    pub fn with_durable<T>(&self, file: &str, read: impl FnOnce(&[u8]) -> T) -> T {
        let s = self.lock();
        read(s.files.get(file).map_or(&[][..], |f| &f.data[..f.synced]))
    }

    /// Fault: flips `bytes` bytes (each XORed with a nonzero value) at an
    /// offset drawn from `rng`, in `only` if given, else in any file with
    /// the offset drawn over all of them (a file by its size). Only
    /// durable bytes: the node is down when this runs. Only store logs
    /// (`*.log`): export files under `out/` are read by the compliance
    /// checker as the pickup system would, and reserves hold no data.
    /// Returns what it did, for the trace.
    pub fn corrupt(&self, bytes: u64, only: Option<&str>, rng: &mut impl rand::Rng) -> String {
        let mut s = self.lock();
        let candidates: Vec<(String, usize)> = s
            .files
            .iter()
            .filter(|(name, f)| {
                only.is_none_or(|o| *name == o) && name.ends_with(".log") && f.synced > 0
            })
            .map(|(name, f)| (name.clone(), f.synced))
            .collect();
        let total: usize = candidates.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return format!(
                "corrupt: no stored bytes to flip{}",
                only.map(|o| format!(" in {o}")).unwrap_or_default()
            );
        }
        let mut at = rng.gen_range(0..total);
        let (name, len) = candidates
            .iter()
            .find(|(_, n)| {
                if at < *n {
                    true
                } else {
                    at -= n;
                    false
                }
            })
            .expect("offset within the total");
        let n = (bytes as usize).min(*len);
        let start = at.min(len - n);
        let f = s.files.get_mut(name).expect("listed");
        for b in &mut f.data[start..start + n] {
            *b ^= rng.gen_range(1..=255u8);
        }
        format!("corrupt {n} bytes of {name} at offset {start} (of {len})")
    }

    /// Removes `file` (gone already is fine), durably after an fsync
    /// delay (of the folder).
    pub async fn remove(&self, file: &str) -> Result<(), DiskError> {
        let fsync = {
            let s = self.lock();
            if s.io_error {
                return Err(DiskError::Io("injected unlink error".into()));
            }
            s.fsync
        };
        tokio::time::sleep(fsync).await;
        self.lock().files.remove(file);
        Ok(())
    }

    pub fn file_names(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }
}

/// The disk as a group-committing store sees it: appends land at once and
/// `sync` does nothing; the host syncs the file for a whole group of
/// appends later (see the node host), as the production node does.
pub struct Deferred<'a>(&'a SimDisk);

impl SimDisk {
    pub fn deferred(&self) -> Deferred<'_> {
        Deferred(self)
    }
}

impl Disk for Deferred<'_> {
    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.0.read(file)
    }
    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.append(file, data)
    }
    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError> {
        self.0.truncate(file, len)
    }
    async fn sync(&self, _file: &str) -> Result<(), DiskError> {
        Ok(())
    }
    async fn replace(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.replace(file, data).await
    }
}

impl Disk for SimDisk {
    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let s = self.lock();
        if s.io_error {
            return Err(DiskError::Io("injected read error".into()));
        }
        Ok(s.files.get(file).map(|f| f.data.to_vec()))
    }

    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        let mut s = self.lock();
        if s.io_error {
            return Err(DiskError::Io("injected write error".into()));
        }
        if !s.fits(data.len() as u64) {
            return Err(DiskError::NoSpace);
        }
        // Looked up before inserting: no name allocated per append.
        match s.files.get_mut(file) {
            Some(f) => f.data.extend_from_slice(data),
            None => {
                s.files.insert(
                    file.to_string(),
                    File {
                        data: FileBytes::from_slice(data),
                        synced: 0,
                    },
                );
            }
        }
        Ok(())
    }

    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError> {
        let mut s = self.lock();
        if let Some(f) = s.files.get_mut(file) {
            let len = len as usize;
            f.data.truncate(len);
            f.synced = f.synced.min(len);
        }
        Ok(())
    }

    async fn sync(&self, file: &str) -> Result<(), DiskError> {
        let (fsync, len) = {
            let s = self.lock();
            (s.fsync, s.files.get(file).map_or(0, |f| f.data.len()))
        };
        // The window in which a crash loses the write. What is appended
        // meanwhile (group commit) waits for the next sync.
        tokio::time::sleep(fsync).await;
        let mut s = self.lock();
        if s.io_error {
            return Err(DiskError::Io("injected fsync error".into()));
        }
        if let Some(f) = s.files.get_mut(file) {
            f.synced = f.synced.max(len.min(f.data.len()));
        }
        Ok(())
    }

    async fn replace(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        {
            let s = self.lock();
            if s.io_error {
                return Err(DiskError::Io("injected write error".into()));
            }
            // The new copy exists next to the old one until the rename.
            if !s.fits(data.len() as u64) {
                return Err(DiskError::NoSpace);
            }
        }
        let fsync = self.lock().fsync;
        tokio::time::sleep(fsync).await;
        let mut s = self.lock();
        if s.io_error {
            return Err(DiskError::Io("injected fsync error".into()));
        }
        let f = s.files.entry(file.to_string()).or_default();
        // Into the old copy's memory: a queue's log is rewritten at every
        // compaction, and fresh memory each time cost the kernel a zeroed
        // page per 4 KB.
        f.data.truncate(0);
        f.data.extend_from_slice(data);
        f.synced = f.data.len();
        Ok(())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use holdfast_actors::core::actor::{StoreError, StoreOp};
    use holdfast_host::store::LogStore;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn put(k: &str) -> Vec<StoreOp> {
        vec![StoreOp::Put {
            key: k.as_bytes().to_vec(),
            value: vec![7; 10],
        }]
    }

    #[test]
    fn crash_loses_only_unsynced_writes() {
        let disk = SimDisk::new(1 << 20, Duration::from_millis(1));
        disk.append("f", b"abc").unwrap();
        block_on(disk.sync("f")).unwrap();
        disk.append("f", b"def").unwrap();
        disk.crash();
        assert_eq!(disk.read("f").unwrap().unwrap(), b"abc");
    }

    #[test]
    fn quota_and_faults_fail_writes_without_changing_data() {
        let disk = SimDisk::new(10, Duration::from_millis(1));
        disk.append("f", b"12345678").unwrap();
        assert_eq!(disk.append("f", b"xyz"), Err(DiskError::NoSpace));
        disk.set_full(true);
        assert_eq!(disk.append("g", b"1"), Err(DiskError::NoSpace));
        disk.set_full(false);
        disk.set_io_error(true);
        assert!(matches!(disk.append("g", b"1"), Err(DiskError::Io(_))));
        assert!(matches!(block_on(disk.sync("f")), Err(DiskError::Io(_))));
        disk.set_io_error(false);
        assert_eq!(disk.read("f").unwrap().unwrap(), b"12345678");
    }

    #[test]
    fn log_store_survives_crash_and_reports_enospc() {
        let disk = SimDisk::new(200, Duration::from_millis(1));
        let mut store = LogStore::open(&disk, "s").unwrap();
        block_on(store.apply(&disk, put("a"))).unwrap();
        block_on(store.apply(&disk, put("b"))).unwrap();
        // A torn write: bytes appended, never synced, then a crash.
        disk.append("s", &[1, 2, 3]).unwrap();
        disk.crash();
        let store = LogStore::open(&disk, "s").unwrap();
        assert_eq!(store.state().len(), 2);
        let mut store = store;
        let mut n = 0;
        let err = loop {
            match block_on(store.apply(&disk, put(&format!("k{n}")))) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err, StoreError::NoSpace);
        let reopened = LogStore::open(&disk, "s").unwrap();
        assert_eq!(
            reopened.state().len(),
            2 + n,
            "a failed batch leaves nothing behind"
        );
    }
}

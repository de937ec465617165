//! The real file system behind a queue store ([`holdfast_host::store::LogStore`]).
//!
//! Appends go straight to the file (`write(2)`), so a process that is killed
//! keeps them in the page cache; durability against power loss comes from
//! `fsync`, which the node runs for *groups* of appends (see
//! [`crate::node`]): [`Disk::sync`] here is therefore a no-op, and
//! [`FileDisk::sync_handle`] gives the node a handle to sync in the
//! background. An atomic replace (compaction) is durable on its own:
//! temporary file, fsync, rename, fsync of the folder.

use crate::lock;
use holdfast_host::disk::{Disk, DiskError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A folder of store files.
pub struct FileDisk {
    dir: PathBuf,
    open: Mutex<BTreeMap<String, Arc<File>>>,
    /// Set when a replace was done but could not be made durable: the node
    /// must restart the store's actor (see [`FileDisk::take_broken`]).
    broken: Mutex<Option<String>>,
}

fn io_err(e: std::io::Error) -> DiskError {
    // ENOSPC (28) and EDQUOT (122): the disk or the user's quota is full.
    match e.raw_os_error() {
        Some(28) | Some(122) => DiskError::NoSpace,
        _ => DiskError::Io(e.to_string()),
    }
}

impl FileDisk {
    /// Uses `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<FileDisk> {
        std::fs::create_dir_all(dir)?;
        Ok(FileDisk {
            dir: dir.to_path_buf(),
            open: Mutex::new(BTreeMap::new()),
            broken: Mutex::new(None),
        })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn handle(&self, file: &str) -> Result<Arc<File>, DiskError> {
        let mut open = lock(&self.open);
        if let Some(f) = open.get(file) {
            return Ok(f.clone());
        }
        let path = self.path(file);
        let existed = path.exists();
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        if !existed {
            // A new file's name is durable only once its folder is synced.
            sync_dir(&self.dir).map_err(io_err)?;
        }
        let f = Arc::new(f);
        open.insert(file.to_string(), f.clone());
        Ok(f)
    }

    /// A handle to `file` to `fsync` off the actor's thread. Syncing it
    /// makes every append made before the call durable.
    pub fn sync_handle(&self, file: &str) -> Result<Arc<File>, DiskError> {
        self.handle(file)
    }

    /// Why the folder can no longer be trusted, once: a compaction renamed
    /// its snapshot into place but the folder could not be synced, so a
    /// power cut could bring the old file back without the appends made
    /// since. The caller restarts the actor (reopening syncs the folder).
    pub fn take_broken(&self) -> Option<String> {
        lock(&self.broken).take()
    }

    /// Makes the file and its folder durable as they are now — also what a
    /// previous process appended but never synced (it may sit in the page
    /// cache only): a node must not act on state a power cut could undo.
    pub fn sync_file(&self, file: &str) -> Result<(), DiskError> {
        if !self.path(file).exists() {
            return Ok(());
        }
        self.handle(file)?.sync_all().map_err(io_err)?;
        sync_dir(&self.dir).map_err(io_err)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Disk for FileDisk {
    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, DiskError> {
        match std::fs::read(self.path(file)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        let f = self.handle(file)?;
        (&*f).write_all(data).map_err(io_err)
    }

    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError> {
        let f = self.handle(file)?;
        f.set_len(len).map_err(io_err)?;
        f.sync_data().map_err(io_err)
    }

    async fn sync(&self, _file: &str) -> Result<(), DiskError> {
        // Deferred: the node syncs groups of appends (group commit) and
        // holds every message that depends on them until the sync is done.
        Ok(())
    }

    async fn replace(&self, file: &str, data: &[u8]) -> Result<(), DiskError> {
        let tmp = self.path(&format!("{file}.tmp"));
        let target = self.path(file);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        // From the rename on, appends must go to the new file, even if the
        // folder sync below fails.
        lock(&self.open).remove(file);
        if let Err(e) = sync_dir(&self.dir) {
            // The file now is the snapshot, so the store's idea of it is
            // right; but the rename may not survive a power cut.
            *lock(&self.broken) = Some(format!(
                "{}: folder sync after compaction failed: {e}",
                self.dir.display()
            ));
        }
        Ok(())
    }
}

/// Runs a future that never waits (every [`FileDisk`] operation completes
/// at once). Store calls are `async` because the simulator's disk waits.
pub fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::actor::StoreOp;
    use holdfast_host::store::LogStore;

    fn put(k: &str, v: &str) -> Vec<StoreOp> {
        vec![StoreOp::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        }]
    }

    #[test]
    fn a_log_store_on_files_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FileDisk::new(dir.path()).unwrap();
        let mut store = LogStore::open(&disk, "q.log").unwrap();
        // Enough overwrites of one key to pass the compaction threshold.
        let big = "x".repeat(4096);
        for i in 0..600 {
            now_or_never(store.apply(&disk, put("k", &format!("{i}{big}"))))
                .unwrap()
                .unwrap();
        }
        now_or_never(store.apply(&disk, put("last", "1")))
            .unwrap()
            .unwrap();
        assert!(store.log_len() < 1 << 20, "compacted: {}", store.log_len());
        disk.sync_handle("q.log").unwrap().sync_data().unwrap();
        let reopened = LogStore::open(&FileDisk::new(dir.path()).unwrap(), "q.log").unwrap();
        assert_eq!(reopened.state().len(), 2);
        assert!(reopened.state()[b"k".as_slice()].starts_with(b"599"));
    }

    #[test]
    fn a_torn_tail_on_disk_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let disk = FileDisk::new(dir.path()).unwrap();
        let mut store = LogStore::open(&disk, "q.log").unwrap();
        now_or_never(store.apply(&disk, put("a", "1")))
            .unwrap()
            .unwrap();
        disk.append("q.log", &[0, 0, 0, 40, 1, 2]).unwrap();
        let disk = FileDisk::new(dir.path()).unwrap();
        let store = LogStore::open(&disk, "q.log").unwrap();
        assert_eq!(store.state().len(), 1);
        assert_eq!(
            std::fs::metadata(dir.path().join("q.log")).unwrap().len(),
            store.log_len()
        );
    }
}

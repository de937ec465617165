//! The real file system behind a queue store ([`holdfast_host::store::LogStore`]).
//!
//! Appends go straight to the file (`write(2)`), so a process that is killed
//! keeps them in the page cache; durability against power loss comes from
//! `fsync`, which the node runs for *groups* of appends (see
//! the `node` module): [`Disk::sync`] here is therefore a no-op, and
//! [`FileDisk::sync_handle`] gives the node a handle to sync in the
//! background. An atomic replace (compaction) is durable on its own:
//! temporary file, fsync, rename, fsync of the folder.

use crate::lock;
use crate::path_error::PathError;
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
    /// Uses `dir` (created if missing, private to the node's user).
    pub fn new(dir: &Path) -> std::io::Result<FileDisk> {
        create_private_dir(dir)?;
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

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
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

/// Makes every folder and file this process creates private to its user
/// (folders 0700, files 0600): the umask 077. Set at the start of a node
/// (and of `cluster up`, `certs init`), before any thread starts. Files
/// that must be shared (a group-readable compliance export) get their mode
/// set explicitly.
pub fn private_umask() {
    use nix::sys::stat::{umask, Mode};
    umask(Mode::from_bits_truncate(0o077));
}

/// Creates `dir` and its missing parents as private folders (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Sets the permission bits of `path` to `mode` if they differ (keeping
/// set-group-id and sticky bits). Returns the old bits if it changed them.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let old = std::fs::symlink_metadata(path)?.permissions().mode();
    if old & 0o777 == mode {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(old & !0o777 | mode))?;
    Ok(Some(old & 0o777))
}

/// What [`make_private`] changed.
#[derive(Debug, Default)]
pub struct Tightened {
    /// Folders that were open to the group or others: (path, old mode).
    pub folders: Vec<(PathBuf, u32)>,
    /// How many files were.
    pub files: usize,
    /// Entries whose mode could not be changed (another owner): their
    /// paths and the error.
    pub failed: Vec<String>,
}

/// Takes the group's and others' permissions away from the folder `dir`
/// (an older version created data folders 0755 and files 0644), from the
/// files in it, and from its subfolders and their contents. Symbolic links
/// are not followed, and `skip` (e.g. a group-readable export folder kept
/// inside the data folder) is left as it is. A subfolder that already was
/// private is not walked: everything in it was written under the private
/// umask.
pub fn make_private(dir: &Path, skip: Option<&Path>) -> std::io::Result<Tightened> {
    let mut done = Tightened::default();
    tighten(dir, skip, true, &mut done)?;
    Ok(done)
}

fn tighten(
    dir: &Path,
    skip: Option<&Path>,
    top: bool,
    done: &mut Tightened,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(dir)?.permissions().mode() & 0o777;
    let loose = mode & 0o077 != 0;
    if loose {
        match set_mode(dir, mode & !0o077) {
            Ok(_) => done.folders.push((dir.to_path_buf(), mode)),
            Err(e) => done.failed.push(format!("{}: {e}", dir.display())),
        }
    }
    if !loose && !top {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if skip.is_some_and(|s| s == path) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_dir() {
            tighten(&path, skip, false, done)?;
        } else if meta.is_file() {
            let m = meta.permissions().mode() & 0o777;
            if m & 0o077 != 0 {
                match set_mode(&path, m & !0o077) {
                    Ok(_) => done.files += 1,
                    Err(e) => done.failed.push(format!("{}: {e}", path.display())),
                }
            }
        }
    }
    Ok(())
}

/// Checks that files can be created and written in `dir`: a probe file is
/// written, synced and removed. The error is the operating system's.
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(".write-probe");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)?;
    f.write_all(b"holdfast")?;
    f.sync_all()?;
    drop(f);
    std::fs::remove_file(&probe)
}

/// The lock a node holds on its data folder for as long as it runs: an
/// exclusive `flock` on `<data>/LOCK`, released by the kernel when the
/// process ends, however it ends (SIGKILL included).
pub struct FolderLock {
    _file: nix::fcntl::Flock<File>,
}

/// Why a data folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened, written or locked.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Another process holds the folder (its process id when it wrote it).
    #[error(
        "{}: another process{} holds this data folder (its LOCK is locked): \
         a node's data folder serves one process only; stop the other one, or give \
         this node its own data folder",
        .dir.display(),
        .pid.as_ref().map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Held { dir: PathBuf, pid: Option<String> },
}

/// Takes the lock of the data folder `dir`, or says which process holds it.
pub fn lock_folder(dir: &Path) -> Result<FolderLock, LockError> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek};
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| PathError::doing(&path, "cannot open the lock of the data folder", e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            // The holder's process id, for the message of the next one.
            let pid = format!("{}\n", std::process::id());
            let write = |f: &mut File| -> std::io::Result<()> {
                f.set_len(0)?;
                f.rewind()?;
                f.write_all(pid.as_bytes())
            };
            write(&mut locked).map_err(|e| PathError::doing(&path, "cannot write the lock", e))?;
            Ok(FolderLock { _file: locked })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = Some(holder.trim())
                .filter(|pid| !pid.is_empty())
                .map(str::to_string);
            Err(LockError::Held {
                dir: dir.to_path_buf(),
                pid,
            })
        }
        Err((_, e)) => Err(PathError::doing(&path, "cannot lock", e).into()),
    }
}

/// Writes `data` as `path` with permission bits `mode` (whatever the
/// umask): a temporary file next to it, synced, renamed into place, the
/// folder synced. A reader sees the old file or the whole new one, never a
/// file with another mode.
pub fn write_file_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
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
    use holdfast_actors::core::actor::StoreOp;
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
    fn an_older_loose_data_folder_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let files = data.join("files");
        let export = data.join("export");
        for d in [&data, &files, &export] {
            std::fs::create_dir_all(d).unwrap();
            set(d, 0o755);
        }
        for f in [data.join("q.log"), files.join("ab"), export.join("x.xml")] {
            std::fs::write(&f, b"x").unwrap();
            set(&f, 0o644);
        }
        let done = make_private(&data, Some(&export)).unwrap();
        assert_eq!(done.folders.len(), 2, "{done:?}");
        assert_eq!(done.files, 2, "{done:?}");
        assert!(done.failed.is_empty());
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&files), 0o700);
        assert_eq!(mode(&data.join("q.log")), 0o600);
        assert_eq!(mode(&files.join("ab")), 0o600);
        // The skipped folder is left as it is.
        assert_eq!(mode(&export), 0o755);
        assert_eq!(mode(&export.join("x.xml")), 0o644);
        // Nothing more to do the next time.
        let again = make_private(&data, Some(&export)).unwrap();
        assert!(again.folders.is_empty() && again.files == 0, "{again:?}");
    }

    #[test]
    fn a_data_folder_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_folder(dir.path()).unwrap();
        // flock locks belong to an open file: a second open conflicts,
        // even in the same process.
        let e = lock_folder(dir.path()).err().unwrap().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        assert!(
            e.contains(&format!("another process (pid {})", std::process::id())),
            "{e}"
        );
        drop(first);
        let _again = lock_folder(dir.path()).unwrap();
    }

    #[test]
    fn files_are_written_with_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("batch.xml");
        for mode in [0o640, 0o600] {
            write_file_atomically(&f, b"<x/>", mode).unwrap();
            let m = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode);
        }
        assert_eq!(std::fs::read(&f).unwrap(), b"<x/>");
        assert!(!dir.path().join("batch.tmp").exists());
        check_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Not a folder at all: the operating system's error.
        let e = check_writable(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(20), "{e}");
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

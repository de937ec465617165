//! Large values kept one file each, outside the log store: the contents of
//! files posted to chat rooms. The Web core writes them as `b/<id>` keys
//! and reads them back with a `Load` effect, so neither the core nor the
//! log store's in-memory state holds them.
//!
//! A put is crash-safe: the bytes go to a temporary file, which is synced,
//! renamed into place, and the folder synced, before the put returns. A
//! crash leaves either the old state or the whole new file (and perhaps a
//! stray `.tmp`, removed at the next open).

use crate::path_error::PathError;
use holdfast_actors::core::actor::StoreError;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

pub struct BlobFiles {
    dir: PathBuf,
}

fn store_error(path: &Path, e: std::io::Error) -> StoreError {
    // ENOSPC and EDQUOT: the disk or the quota is full.
    if matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == ErrorKind::StorageFull {
        StoreError::NoSpace
    } else {
        StoreError::Io(format!("{}: {e}", path.display()))
    }
}

/// Writes `data` as `path`: a temporary file next to it, synced, renamed
/// into place, the folder synced. A reader sees the old file or the whole
/// new one; a crash leaves at most a stray `.tmp`.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        store_error(path, e)
    })
}

impl BlobFiles {
    /// Opens (creating) the folder and removes temporaries a crash left.
    pub fn open(dir: &Path) -> Result<BlobFiles, PathError> {
        fs::create_dir_all(dir).map_err(|e| PathError::new(dir, e))?;
        let entries = fs::read_dir(dir).map_err(|e| PathError::new(dir, e))?;
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(BlobFiles {
            dir: dir.to_path_buf(),
        })
    }

    /// The file of a key: its bytes in hex, so any key makes a safe name.
    fn path(&self, key: &[u8]) -> PathBuf {
        let mut name = String::with_capacity(key.len() * 2);
        for b in key {
            name.push_str(&format!("{b:02x}"));
        }
        self.dir.join(name)
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        write_atomically(&path, value)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error(&path, e)),
        }
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| store_error(&self.dir, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_reopen_and_temporaries_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        blobs.put(b"b/web1-1", b"content").unwrap();
        blobs.put(b"b/../escape", b"x").unwrap();
        assert_eq!(blobs.get(b"b/missing").unwrap(), None);
        std::fs::write(dir.path().join("leftover.tmp"), b"torn").unwrap();
        let blobs = BlobFiles::open(dir.path()).unwrap();
        assert_eq!(
            blobs.get(b"b/web1-1").unwrap().as_deref(),
            Some(&b"content"[..])
        );
        assert_eq!(
            blobs.get(b"b/../escape").unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert!(!dir.path().join("leftover.tmp").exists());
        // Every file stays inside the folder, whatever the key.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        blobs.delete(b"b/web1-1").unwrap();
        blobs.delete(b"b/web1-1").unwrap();
        assert_eq!(blobs.get(b"b/web1-1").unwrap(), None);
    }
}

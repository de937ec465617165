//! The storage interface a host gives to the log store (`LogStore`): a flat
//! namespace of append-only files with explicit sync and atomic replace.
//! The simulator implements it with a simulated disk (crash loses unsynced
//! writes, quota, injected errors); production with the real file system.

use std::future::Future;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("no space left on device")]
    NoSpace,
    #[error("I/O error: {0}")]
    Io(String),
}

pub trait Disk {
    /// Whole content of a file, `None` if it does not exist.
    fn read(&self, file: &str) -> Result<Option<Vec<u8>>, DiskError>;
    /// Appends to a file (created if missing). Not durable until [`Disk::sync`].
    fn append(&self, file: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Cuts a file to `len` bytes (to drop a torn or failed tail).
    fn truncate(&self, file: &str, len: u64) -> Result<(), DiskError>;
    /// Makes everything appended so far durable.
    fn sync(&self, file: &str) -> impl Future<Output = Result<(), DiskError>>;
    /// Replaces a file's content atomically and durably (write a temporary
    /// file, sync, rename).
    fn replace(&self, file: &str, data: &[u8]) -> impl Future<Output = Result<(), DiskError>>;
}

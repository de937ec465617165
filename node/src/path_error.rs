//! An error about one file or folder: which one, what was being done with
//! it, and the cause — the shape of every storage error an operator reads
//! ("data/fe1/files: cannot create: Permission denied").

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PathError {
    pub path: PathBuf,
    /// What was being done ("cannot sync"), if the cause does not say.
    pub what: Option<&'static str>,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl PathError {
    pub fn new(path: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        PathError {
            path: path.to_path_buf(),
            what: None,
            source: source.into(),
        }
    }

    pub fn doing(
        path: &Path,
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        PathError {
            what: Some(what),
            ..PathError::new(path, source)
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.what {
            Some(what) => write!(f, "{}: {what}: {}", self.path.display(), self.source),
            None => write!(f, "{}: {}", self.path.display(), self.source),
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

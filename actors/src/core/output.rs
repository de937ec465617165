//! Files a core asks its host to write (the compliance export): the
//! payload of `Effect::Output` (the actor contract).

use serde::{Deserialize, Serialize};

/// A file the host writes atomically into the output folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputFile {
    pub name: String,
    pub data: Vec<u8>,
}

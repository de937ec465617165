//! Where a production core's durable state lives: a log store (with the
//! Web service's file contents beside it) committed in groups, or the
//! engine of the archive or the chat store (SQLite or PostgreSQL),
//! durable at each commit.

use super::{store_file, NodeError};
use crate::archive_db::{ArchiveDb, ArchiveDbError};
use crate::blob_files::BlobFiles;
use crate::chat_db::ChatDb;
use crate::config::{NodeConfig, StoreEngine};
use crate::engines::postgres::{PgArchive, PgChat};
use crate::engines::{Engine, EngineError};
use crate::file_disk::{now_or_never, FileDisk};
use crate::path_error::PathError;
use holdfast_actors::chat::web_files::FILE_BLOB;
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{self, Answer, Query};
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::store_keys::STORE_DAMAGED;
use holdfast_host::store::LogStore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Archive(#[from] ArchiveDbError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where a core's durable state lives.
pub(crate) enum Storage {
    /// A queue store: log on disk, fsync by group commit.
    Log {
        store: LogStore,
        disk: Arc<FileDisk>,
        /// The Web service's file contents (`b/` keys), one file each.
        blobs: Option<BlobFiles>,
        /// What opening found damaged and set aside (empty for a sound
        /// log): told to the core and to the operator at its start.
        damaged: String,
    },
    /// The archive database or the chat store: SQLite or PostgreSQL,
    /// durable at each commit.
    Engine(Box<dyn Engine>),
}

impl Storage {
    pub(crate) fn open(node: &NodeConfig, kind: ActorKind) -> Result<Storage, StorageError> {
        if kind == ActorKind::Database {
            let engine: Box<dyn Engine> = match &node.archive_engine {
                StoreEngine::Sqlite => Box::new(ArchiveDb::open(&node.archive_path())?),
                StoreEngine::Postgres(target) => Box::new(PgArchive::connect(target)?),
            };
            return Ok(Storage::Engine(engine));
        }
        if kind == ActorKind::ChatStore {
            let engine: Box<dyn Engine> = match &node.chat_engine {
                StoreEngine::Sqlite => Box::new(ChatDb::open(&node.chat_path())?),
                StoreEngine::Postgres(target) => Box::new(PgChat::connect(target)?),
            };
            return Ok(Storage::Engine(engine));
        }
        let disk = FileDisk::new(&node.data)
            .map_err(|e| PathError::doing(&node.data, "cannot use data folder", e))?;
        let file = store_file(kind);
        let mut store = LogStore::open(&disk, &file)
            .map_err(|e| PathError::new(&node.data.join(&file), e.to_string()))?;
        // Damage is set aside (kept in `<file>.damaged`) and the log
        // rewritten without it before the core starts; then the store takes
        // its reserve of free space, if the disk has room.
        let damage = now_or_never(store.repair(&disk))
            .unwrap_or_else(|| Err(StoreError::Io("the store would block".into())))
            .map_err(|e| {
                PathError::doing(
                    &node.data.join(&file),
                    "cannot set damage aside",
                    e.to_string(),
                )
            })?;
        let damaged = if damage.is_empty() {
            String::new()
        } else {
            // The damaged bytes are kept for the investigation: make them
            // as durable as the log rewritten without them.
            let quarantine = LogStore::quarantine_file(&file);
            disk.sync_file(&quarantine).map_err(|e| {
                PathError::doing(&node.data.join(&quarantine), "cannot sync", e.to_string())
            })?;
            let stretches: Vec<String> = damage
                .iter()
                .map(|d| format!("{} bytes at {}", d.len, d.offset))
                .collect();
            format!(
                "{}: {} unreadable, kept in {}; the batches after it were recovered",
                node.data.join(&file).display(),
                stretches.join(", "),
                LogStore::quarantine_file(&file)
            )
        };
        let _ = now_or_never(store.take_reserve(&disk));
        // What a previous process appended may be in the page cache only:
        // make it durable before acting on it.
        disk.sync_file(&file)
            .map_err(|e| PathError::doing(&node.data.join(&file), "cannot sync", e.to_string()))?;
        let blobs = if kind == ActorKind::Web {
            Some(BlobFiles::open(&node.data.join("files"))?)
        } else {
            None
        };
        Ok(Storage::Log {
            store,
            disk: Arc::new(disk),
            blobs,
            damaged,
        })
    }

    pub(crate) fn recovered(&mut self) -> Result<Recovered, StorageError> {
        match self {
            Storage::Log { store, damaged, .. } => {
                let mut state = store.take_state();
                if !damaged.is_empty() {
                    state.insert(STORE_DAMAGED.to_vec(), damaged.clone().into_bytes());
                }
                Ok(state)
            }
            Storage::Engine(engine) => Ok(engine.recovered()?),
        }
    }

    /// Reads one key (a `Load` effect).
    pub(crate) fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Storage::Log {
                blobs: Some(blobs), ..
            } if key.starts_with(FILE_BLOB) => blobs.get(key),
            Storage::Log { store, .. } => Ok(store.state().get(key).cloned()),
            Storage::Engine(_) => Err(StoreError::Io("this store does not serve loads".into())),
        }
    }

    /// Answers a core's query from committed rows.
    pub(crate) fn query(&mut self, query: &Query) -> Result<Answer, StoreError> {
        match self {
            Storage::Log { store, .. } => Ok(engine::answer(store.state(), query)),
            Storage::Engine(e) => e.answer(query),
        }
    }

    /// Applies a batch.
    pub(crate) fn apply(&mut self, mut ops: Vec<StoreOp>) -> Applied {
        if let Storage::Log {
            blobs: Some(blobs), ..
        } = self
        {
            // File contents first, each durable on its own, so that the
            // log never names a file that is not on disk.
            let (blob_ops, rest): (Vec<StoreOp>, Vec<StoreOp>) =
                ops.into_iter().partition(|op| match op {
                    StoreOp::Put { key, .. }
                    | StoreOp::Insert { key, .. }
                    | StoreOp::Delete { key } => key.starts_with(FILE_BLOB),
                });
            let mut written = Vec::new();
            for op in blob_ops {
                let result = match &op {
                    StoreOp::Put { key, value } => blobs.put(key, value).map(|()| {
                        written.push(key.clone());
                    }),
                    StoreOp::Delete { key } => blobs.delete(key),
                    StoreOp::Insert { key, .. } => Err(StoreError::Io(format!(
                        "file contents are put, not inserted ({key:?})"
                    ))),
                };
                if let Err(e) = result {
                    // Nothing of the batch is acknowledged: drop what it
                    // wrote, so that a refused upload leaves no file.
                    for key in written {
                        let _ = blobs.delete(&key);
                    }
                    return Applied::Failed(e);
                }
            }
            if rest.is_empty() {
                return Applied::Done {
                    written: Written::default(),
                    fsync_owed: false,
                };
            }
            ops = rest;
        }
        match self {
            Storage::Log { store, disk, .. } => {
                let result = now_or_never(store.apply(disk.as_ref(), ops))
                    .unwrap_or_else(|| Err(StoreError::Io("the store would block".into())));
                if let Some(why) = disk.take_broken() {
                    return Applied::Fatal(why);
                }
                if store.is_poisoned() {
                    return Applied::Fatal(
                        "a failed write could not be cut off; the store must be reopened".into(),
                    );
                }
                match result {
                    Ok(written) => Applied::Done {
                        written,
                        fsync_owed: true,
                    },
                    Err(e) => Applied::Failed(e),
                }
            }
            Storage::Engine(e) => match e.apply(&ops) {
                Ok(written) => Applied::Done {
                    written,
                    fsync_owed: false,
                },
                Err(e) => Applied::Failed(e),
            },
        }
    }
}

pub(crate) enum Applied {
    Done {
        written: Written,
        fsync_owed: bool,
    },
    /// Reported to the core (a full disk, an I/O error it can react to).
    Failed(StoreError),
    /// The store cannot be trusted until reopened: restart the node's cores.
    Fatal(String),
}

/// Every store of a node, opened, with what each recovered.
pub struct OpenedStores(pub(crate) BTreeMap<ActorKind, (Storage, Recovered)>);

/// Opens every store of the node, as its cores will use them: a store that
/// cannot be opened, read or written stops the start here, with its path
/// and the operating system's error, before the node listens.
pub fn open_stores(node: &NodeConfig) -> Result<OpenedStores, NodeError> {
    let mut stores = BTreeMap::new();
    for kind in node.actors() {
        let opened = Storage::open(node, kind)
            .and_then(|mut s| s.recovered().map(|r| (s, r)))
            .map_err(|e| NodeError::Store {
                kind: kind.as_str(),
                source: e,
            })?;
        stores.insert(kind, opened);
    }
    Ok(OpenedStores(stores))
}

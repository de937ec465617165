//! The engines that keep the rows of the archive database and the chat
//! store, behind one small interface: SQLite (a file in the node's data
//! folder, [`crate::archive_db`] and [`crate::chat_db`]) or PostgreSQL
//! ([`postgres`]). Every engine answers the same [`Query`]s and applies
//! the same [`StoreOp`] batches with the semantics of
//! [`holdfast_actors::core::engine`].

pub mod postgres;

use crate::archive_db::{ArchiveDb, ArchiveDbError};
use crate::chat_db::ChatDb;
use crate::path_error::PathError;
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{Answer, Query};

/// Why an engine could not be opened or read at start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQLite archive.
    #[error(transparent)]
    Archive(#[from] ArchiveDbError),
    /// The SQLite chat store's file.
    #[error(transparent)]
    Chat(#[from] PathError),
    /// The PostgreSQL server, its URL, its TLS or its schema.
    #[error(transparent)]
    Postgres(#[from] postgres::PgLinkError),
    /// A store's read of its state failed.
    #[error("{0}")]
    Store(StoreError),
}

/// What the node asks of the engine of a database or chat store core.
pub trait Engine: Send {
    /// Applies one `Persist` batch in one transaction: all of it or
    /// nothing.
    fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError>;
    /// Answers a core's read of committed rows.
    fn answer(&mut self, query: &Query) -> Result<Answer, StoreError>;
    /// The core's state at start: every key outside the rows the core
    /// reads on demand.
    fn recovered(&mut self) -> Result<Recovered, EngineError>;
}

impl Engine for ArchiveDb {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError> {
        ArchiveDb::apply(self, ops)
    }
    fn answer(&mut self, query: &Query) -> Result<Answer, StoreError> {
        ArchiveDb::answer(self, query)
    }
    fn recovered(&mut self) -> Result<Recovered, EngineError> {
        Ok(ArchiveDb::recovered(self)?)
    }
}

impl Engine for ChatDb {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError> {
        ChatDb::apply(self, ops)
    }
    fn answer(&mut self, query: &Query) -> Result<Answer, StoreError> {
        ChatDb::answer(self, query)
    }
    fn recovered(&mut self) -> Result<Recovered, EngineError> {
        Ok(ChatDb::recovered(self)?)
    }
}

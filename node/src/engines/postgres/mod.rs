//! PostgreSQL as the engine of the archive and the chat store: the same
//! tables as the SQLite files (so an operator's SQL works on both), kept
//! by numbered migrations ([`schema`]), reached over one connection per
//! store that a thread of its own drives ([`link`]).
//!
//! - [`archive`]: [`PgArchive`], the twin of [`crate::archive_db::ArchiveDb`];
//! - [`chat`]: [`PgChat`], the twin of [`crate::chat_db::ChatDb`];
//! - [`target`]: where to connect, never shown with its password.

pub mod archive;
pub mod chat;
pub mod link;
pub mod schema;
pub mod target;

pub use archive::PgArchive;
pub use chat::PgChat;
pub use link::{check_target, PgLinkError};
pub use target::PgTarget;

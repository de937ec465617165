//! Persistent group chat: the [`pool`] description shared by its cores,
//! the [`lookup`] service, the [`channel`] servers, the [`chat_store`] and
//! the [`web_files`] service. Chat depends on [`crate::compliance`] for
//! the events it records, never the other way.

pub mod channel;
pub mod chat_store;
pub mod lookup;
pub mod pool;
pub mod web_files;

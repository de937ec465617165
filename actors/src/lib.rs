//! holdfast actor cores: deterministic, sans-IO state machines and the typed
//! protocol they exchange.
//!
//! The archiving path, in the order a message travels it:
//! [`front_end`] (archiving agent) → [`outgoing_queue`] (durable, on the front
//! end) → [`destination_queue`] (durable, on the archiving server) →
//! [`archiver`] → [`database`].
//!
//! Cores never touch sockets, clocks, threads or files: they react to a
//! message, a timer or a persistence completion and record effects in a
//! [`actor::Ctx`]. Hosts (the madsim simulator, the production node) execute
//! those effects in order.

pub mod actor;
pub mod archiver;
pub mod channel;
pub mod chat;
pub mod chat_store;
pub mod cluster;
pub mod compliance;
pub mod compliance_export;
pub mod contract;
pub mod database;
pub mod destination_queue;
pub mod frame;
pub mod front_end;
pub mod identity;
pub mod ids;
pub mod lookup;
pub mod outgoing_queue;
pub mod policy;
pub mod protocol;
pub mod reactor;
pub mod roster;
pub mod settings;
pub mod store_keys;
pub mod units;
pub mod web_files;

#[cfg(test)]
pub(crate) mod testkit;

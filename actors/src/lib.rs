//! holdfast actor cores: deterministic, sans-IO state machines and the typed
//! protocol they exchange.
//!
//! Three services share one [`core`](crate::core) (the actor contract, ids, the protocol):
//! - [`archiving`]: the path an instant message travels to the archive;
//! - [`chat`]: persistent group chat;
//! - [`compliance`]: every chat event, exported exactly once.
//!
//! Dependencies go one way: `chat` → `compliance` → `core`, and
//! `archiving` → `core`.
//!
//! Cores never touch sockets, clocks, threads or files: they react to a
//! message, a timer or a persistence completion and record effects in a
//! [`core::actor::Ctx`]. Hosts (the madsim simulator, the production node) execute
//! those effects in order.

pub mod archiving;
pub mod chat;
pub mod compliance;
pub mod core;
pub mod roster;

#[cfg(test)]
pub(crate) mod testkit;

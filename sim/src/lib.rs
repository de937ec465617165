//! The holdfast simulator: scenario files, simulated disks, the madsim host
//! for the actor cores, fault injection and the checker.
//!
//! Parsing and checking compile in every build; running a simulation needs
//! `--cfg madsim` (use `cargo sim`, which sets it up in `target/sim`).

pub mod host;
pub mod oracle;
pub mod report;
pub mod scenario;
pub mod seeds;
pub mod trace;

/// The paths `node.rs` names the host's modules by, until it moves into
/// `host/` beside them.
#[cfg(madsim)]
use host::{alarm, disk, tcp_flow};

/// Locks harness state shared between simulated nodes. A poisoned lock
/// only means a panicking test thread; the data is consistent between
/// calls, so it is used anyway rather than panicking a second time.
#[cfg(madsim)]
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(madsim)]
pub mod node;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod sweep;
#[cfg(madsim)]
pub mod workload;

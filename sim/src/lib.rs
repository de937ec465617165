//! The holdfast simulator: scenario files, simulated disks, the madsim host
//! for the actor cores, fault injection and the checker.
//!
//! Parsing and checking compile in every build; running a simulation needs
//! `--cfg madsim` (use `cargo sim`, which sets it up in `target/sim`).

#![recursion_limit = "256"]
pub mod host;
pub mod oracle;
pub mod report;
pub mod scenario;
pub mod seeds;
pub mod trace;
pub mod usage;

#[cfg(madsim)]
pub(crate) use holdfast_host::lock;

#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod sweep;
#[cfg(madsim)]
pub mod workload;

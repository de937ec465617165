//! Host plumbing shared by the simulator and production nodes.
//!
//! Written against `madsim-tokio` (imported as `tokio`): in a normal build it
//! is real tokio on real sockets; under `--cfg madsim` the same code runs on
//! madsim's simulated TCP and clock.

pub mod disk;
pub mod liveness;
pub mod store;
pub mod transport;

//! The simulated host: `node.rs` runs a node's cores in the shared reactor
//! over the machinery madsim lacks or gets wrong — disks, TCP flow control,
//! timers and client connections.

mod bytes;
pub mod disk;

#[cfg(madsim)]
pub mod alarm;
#[cfg(madsim)]
pub mod connections;
#[cfg(madsim)]
pub mod node;
#[cfg(madsim)]
pub mod tcp_flow;

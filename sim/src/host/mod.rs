//! The simulated machinery under the nodes and clients: disks, TCP flow
//! control, timers and client connections — what madsim lacks or gets
//! wrong. (The host of the actor cores, `node.rs`, uses it.)

pub mod disk;

#[cfg(madsim)]
pub mod alarm;
#[cfg(madsim)]
pub mod connections;
#[cfg(madsim)]
pub mod tcp_flow;

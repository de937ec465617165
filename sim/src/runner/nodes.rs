//! The simulated cluster as the runner holds it: each server's madsim node,
//! address and shared state, and the fault effects in force.

use crate::host::node::NodeShared;
use crate::host::tcp_flow::FlowLink;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub(super) struct Nodes {
    pub(super) ids: BTreeMap<String, NodeId>,
    pub(super) ips: BTreeMap<String, IpAddr>,
    pub(super) shared: BTreeMap<String, NodeShared>,
    /// The simulated TCP, told of every cut link.
    pub(super) link: Arc<FlowLink>,
    /// Fault effects in force, with the value of each fault causing them.
    pub(super) active: Mutex<BTreeMap<Effect, Vec<u64>>>,
}

/// One effect a fault has on the simulated world. Overlapping faults with
/// the same effect are counted, so the end of one does not undo another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Effect {
    Clog(String, String),
    Down(String),
    Slow(String),
    Stall(String),
    Full(String),
    Eio(String),
    Refuse(String),
}

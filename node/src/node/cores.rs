//! A node's cores, running: what they share (configuration, network,
//! metrics, the node's incarnation) and how the node starts them.

use super::adapter::{CoreActor, Deliver};
use super::storage::OpenedStores;
use crate::config::{Config, NodeConfig};
use crate::metrics::Metrics;
use actix::prelude::*;
use holdfast_actors::ids::ActorKind;
use holdfast_actors::protocol::Envelope;
use holdfast_actors::roster::Cores;
use holdfast_host::transport::Network;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// What every actor of a node shares.
pub struct NodeShared {
    pub config: Arc<Config>,
    pub node: NodeConfig,
    pub net: Arc<Network>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: clients are turned away, the node drains and exits.
    pub stopping: AtomicBool,
    /// Incarnation of the node's cores; a crash of one bumps it and every
    /// core restarts.
    pub generation: AtomicU64,
    /// `Deliver` messages sent to cores and not yet handled.
    pub in_flight: AtomicU64,
    /// The cores, for delivering local messages without the network.
    pub cores: OnceLock<BTreeMap<ActorKind, actix::Addr<CoreActor>>>,
    /// What the node's cores are built from.
    pub roster: Arc<dyn Cores>,
}

impl NodeShared {
    /// Hands `env` to the core it is for, stamped with `generation`.
    pub(crate) fn deliver(&self, env: Envelope, generation: u64) {
        match self.cores.get().and_then(|c| c.get(&env.to.actor)) {
            Some(a) => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                a.do_send(Deliver(env, generation));
            }
            None => {
                tracing::warn!(node = %self.node.name, to = %env.to, from = %env.from, "no such actor on this node; message dropped")
            }
        }
    }
}

/// A node's cores, running in the current actix system.
pub struct Running {
    pub shared: Arc<NodeShared>,
    pendings: Vec<Arc<AtomicU64>>,
    _arbiters: Vec<Arbiter>,
}

impl Running {
    /// Messages held for an fsync, fsyncs owed and messages between cores:
    /// zero when the node may stop without leaving work behind.
    pub fn pending(&self) -> u64 {
        self.pendings
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.shared.in_flight.load(Ordering::Relaxed)
    }
}

/// Starts the cores of `node`, built by `cores`, each supervised on its
/// own arbiter, over `net` and the stores [`open_stores`] opened. What
/// `run` does before it listens; the contract suite starts probe cores
/// with it.
pub fn start_cores(
    config: Arc<Config>,
    node: NodeConfig,
    net: Arc<Network>,
    cores: Arc<dyn Cores>,
    OpenedStores(mut stores): OpenedStores,
) -> Running {
    let metrics = Arc::new(Metrics::new(&node, &config.settings, net.clone()));
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        node: node.clone(),
        net: net.clone(),
        metrics,
        stopping: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        cores: OnceLock::new(),
        roster: cores,
    });
    let mut actors: BTreeMap<ActorKind, actix::Addr<CoreActor>> = BTreeMap::new();
    let mut pendings = Vec::new();
    let mut arbiters = Vec::new();
    for kind in node.actors() {
        let pending = Arc::new(AtomicU64::new(0));
        pendings.push(pending.clone());
        let s = shared.clone();
        let opened = stores.remove(&kind);
        let arbiter = Arbiter::new();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            CoreActor::new(s, kind, pending, opened)
        });
        arbiters.push(arbiter);
        actors.insert(kind, addr);
    }
    let _ = shared.cores.set(actors);
    Running {
        shared,
        pendings,
        _arbiters: arbiters,
    }
}

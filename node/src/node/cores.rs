//! What a node's cores share: configuration, network, metrics, the node's
//! incarnation, and the way to each other (local messages skip the
//! network).

use crate::config::{Config, NodeConfig};
use crate::metrics::Metrics;
use actix::prelude::*;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::Envelope;
use holdfast_actors::core::reactor::Cores;
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
    pub(crate) cores: OnceLock<BTreeMap<ActorKind, Recipient<Deliver>>>,
    /// What the node's cores are built from.
    pub roster: Arc<dyn Cores>,
}

impl NodeShared {
    /// Hands `env` to the core it is for, stamped with `generation` and
    /// when it arrived from the network (`None`: local).
    pub(crate) fn deliver(
        &self,
        env: Envelope,
        generation: u64,
        arrived: Option<tokio::time::Instant>,
    ) {
        match self.cores.get().and_then(|c| c.get(&env.to.actor)) {
            Some(a) => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                a.do_send(Deliver(env, generation, arrived));
            }
            None => {
                tracing::warn!(node = %self.node.name, to = %env.to, from = %env.from, "no such actor on this node; message dropped")
            }
        }
    }
}

/// An envelope for one core, from the node incarnation that routed it.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(
    pub(crate) Envelope,
    pub(crate) u64,
    pub(crate) Option<tokio::time::Instant>,
);

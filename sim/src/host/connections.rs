//! The client connections of one simulated client machine: one connection
//! identity per name, as on real clusters, where a connection proves one
//! principal (its credential) and speaks only under a name that carries it
//! (see `holdfast_actors::identity`). A simulated client that sends as
//! several users holds one connection per user.

use crate::host::tcp_flow::FlowLink;
use crate::lock;
use holdfast_actors::core::protocol::Envelope;
use holdfast_host::transport::{Network, TransportError, DEFAULT_OUTBOUND_CAPACITY};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub struct Connections {
    peers: BTreeMap<String, SocketAddr>,
    link: Arc<FlowLink>,
    /// Answers of every connection arrive here.
    answers: mpsc::UnboundedSender<Envelope>,
    /// Made on first use, by name (a `BTreeMap`: no order reaches output).
    nets: Mutex<BTreeMap<String, Arc<Network>>>,
}

impl Connections {
    pub fn new(
        peers: BTreeMap<String, SocketAddr>,
        link: Arc<FlowLink>,
        answers: mpsc::UnboundedSender<Envelope>,
    ) -> Connections {
        Connections {
            peers,
            link,
            answers,
            nets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sends `env` on the connection named `env.from.node`.
    pub fn send(&self, env: Envelope) -> Result<(), TransportError> {
        self.named(&env.from.node).send(env)
    }

    fn named(&self, name: &str) -> Arc<Network> {
        let mut nets = lock(&self.nets);
        if let Some(net) = nets.get(name) {
            return net.clone();
        }
        let net = Network::forwarding_to(
            name,
            self.peers.clone(),
            self.link.clone(),
            DEFAULT_OUTBOUND_CAPACITY,
            self.answers.clone(),
        );
        nets.insert(name.to_string(), net.clone());
        net
    }
}

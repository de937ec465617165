//! One request of an operator or an auditor to one actor of the cluster,
//! and its answer: the connection carries the principal's credential, and
//! a refusal for who asked comes back as its own outcome. Used by
//! `holdfast compliance`, `holdfast critical` and `holdfast archive`.

use crate::client::{client_identity, connection_name};
use crate::config::Config;
use crate::reach::{answer_from, CannotReach};
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, CLIENT_OUTBOUND_CAPACITY};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;

/// Why a request got no answer it could use.
#[derive(Debug, Error)]
pub enum AskError {
    /// The config names no such node.
    #[error("the config has no node {0:?}")]
    NoSuchNode(String),
    /// The config gives no node the compliance role.
    #[error("the config has no node with the compliance role")]
    NoComplianceNode,
    /// No credential for the user, or one for another role.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The transport would not take the request: nothing was sent.
    #[error(transparent)]
    Transport(holdfast_host::transport::TransportError),
    /// The node refused the request for who asked.
    #[error("{node} refused: {reason}")]
    Refused { node: String, reason: String },
    /// The connection to the node could not be made (`connection
    /// refused: 127.0.0.1:8101 (fe1)`, said at once), or no answer came.
    #[error(transparent)]
    CannotReach(#[from] CannotReach),
}

/// Sends `request` to `actor` on `node` as `user` (who must hold one of
/// `roles`) and returns the first answer `wanted` accepts. Inside a
/// runtime.
pub async fn ask(
    config: &Config,
    user: &str,
    roles: &[Role],
    (node, actor): (&str, ActorKind),
    request: Msg,
    timeout: Duration,
    wanted: impl Fn(&Msg) -> bool,
) -> Result<Msg, AskError> {
    let mut session = Session::open(config, user, roles, node)?;
    session.ask(actor, request, timeout, wanted).await
}

/// One connection of a principal to one node, for several requests in
/// turn (the pages of a long answer).
pub struct Session {
    node: String,
    me: String,
    net: std::sync::Arc<Network>,
    rx: mpsc::UnboundedReceiver<Envelope>,
}

impl Session {
    /// Sets up the connection to `node` as `user` (who must hold one of
    /// `roles`; on plain links the first is claimed). Inside a runtime.
    pub fn open(
        config: &Config,
        user: &str,
        roles: &[Role],
        node: &str,
    ) -> Result<Session, AskError> {
        let addr = config
            .node(node)
            .map(|n| n.listen)
            .ok_or_else(|| AskError::NoSuchNode(node.to_string()))?;
        let (principal, link) = client_identity(config, user, roles)?;
        let me = connection_name(&principal);
        let (tx, rx) = mpsc::unbounded_channel();
        let net = Network::with_link(
            me.clone(),
            [(node.to_string(), addr)].into_iter().collect(),
            tx,
            link,
            CLIENT_OUTBOUND_CAPACITY,
        );
        Ok(Session {
            node: node.to_string(),
            me,
            net,
            rx,
        })
    }

    /// Sends `request` to `actor` and returns the first answer `wanted`
    /// accepts (a `Forbidden` is a refusal).
    pub async fn ask(
        &mut self,
        actor: ActorKind,
        request: Msg,
        timeout: Duration,
        wanted: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, AskError> {
        let request_name = request.name();
        self.net
            .send(Envelope {
                from: Addr::new(self.me.clone(), ActorKind::Client),
                to: Addr::new(self.node.clone(), actor),
                id: 0,
                msg: request,
            })
            .map_err(AskError::Transport)?;
        let what = request_name;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = answer_from(&self.net, &self.node, deadline, self.rx.recv()).await?;
            let Some(env) = got else {
                return Err(CannotReach::NoAnswer {
                    node: self.node.clone(),
                    what: what.to_string(),
                    timeout,
                }
                .into());
            };
            self.net.consumed(&env);
            match env.msg {
                Msg::Forbidden { reason } => {
                    let node = self.node.clone();
                    return Err(AskError::Refused { node, reason });
                }
                msg if wanted(&msg) => return Ok(msg),
                _ => {}
            }
        }
    }
}

//! `holdfast compliance status|run-now`: asks the Compliance service for
//! its status (staged events, last batch and run, last error), or to
//! export now.

use crate::client::{client_identity, connection_name};
use crate::config::Config;
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::compliance::ComplianceStatus;
use holdfast_actors::core::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, CLIENT_OUTBOUND_CAPACITY};
use std::time::Duration;
use tokio::sync::mpsc;

/// Sends `request` (`ComplianceStatusQuery` or `ComplianceRunNow`) to the
/// config's Compliance node as `user` (an operator, or for the status an
/// auditor) and returns its report. Inside a runtime.
pub async fn ask(
    config: &Config,
    user: &str,
    request: Msg,
    timeout: Duration,
) -> Result<ComplianceStatus, String> {
    let node = config
        .pool
        .compliance
        .clone()
        .ok_or("the config has no node with the compliance role")?;
    let addr = config
        .node(&node)
        .map(|n| n.listen)
        .ok_or("the compliance node has no address")?;
    let roles: &[Role] = match request {
        Msg::ComplianceRunNow => &[Role::Operator],
        _ => &[Role::Operator, Role::Auditor],
    };
    let (principal, link) = client_identity(config, user, roles)?;
    let me = connection_name(&principal);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let net = Network::with_link(
        me.clone(),
        [(node.clone(), addr)].into_iter().collect(),
        tx,
        link,
        CLIENT_OUTBOUND_CAPACITY,
    );
    net.send(Envelope {
        from: Addr::new(me, ActorKind::Client),
        to: Addr::new(node.clone(), ActorKind::Compliance),
        id: 0,
        msg: request,
    })
    .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Ok(Some(env)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return Err(format!("{node} did not answer in time"));
        };
        net.consumed(&env);
        match env.msg {
            Msg::ComplianceReport(status) => return Ok(status),
            Msg::Forbidden { reason } => return Err(format!("{node} refused: {reason}")),
            _ => {}
        }
    }
}

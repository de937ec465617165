//! `holdfast compliance status|run-now`: asks the Compliance service for
//! its status (staged events, last batch and run, last error), or to
//! export now.

use crate::client::client_link;
use crate::config::Config;
use holdfast_actors::compliance::ComplianceStatus;
use holdfast_actors::ids::{ActorKind, Addr};
use holdfast_actors::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, CLIENT_OUTBOUND_CAPACITY};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::sync::mpsc;

/// Sends `request` (`ComplianceStatusQuery` or `ComplianceRunNow`) to the
/// config's Compliance node and returns its report. Inside a runtime.
pub async fn ask(
    config: &Config,
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
    let suffix: u128 = rand::rngs::StdRng::from_entropy().gen();
    let me = format!("operator-{suffix:032x}");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let net = Network::with_link(
        me.clone(),
        [(node.clone(), addr)].into_iter().collect(),
        tx,
        client_link(config)?,
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
        if let Msg::ComplianceReport(status) = env.msg {
            return Ok(status);
        }
    }
}

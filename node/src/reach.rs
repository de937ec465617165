//! When a client cannot reach the cluster: one typed error every client
//! (IM, operator, auditor, chat, file) returns for it — the command line
//! maps it, and only it, to exit 3 — and the wait for an answer that gives
//! up at once when the connection cannot be made.

use holdfast_host::transport::{ConnectFailure, Network};
use std::future::Future;
use std::time::Duration;
use thiserror::Error;

/// The cluster could not be reached: the request did not arrive, or no
/// answer came (what was asked may or may not have happened).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CannotReach {
    /// The connection to `node` could not be made: `connection refused:
    /// 127.0.0.1:8101 (fe1)`.
    #[error("{failure} ({node})")]
    Connect {
        node: String,
        failure: ConnectFailure,
    },
    /// Connected (or still trying), but `node` did not answer `what` in
    /// time.
    #[error("{node} did not answer {what} within {}", humantime::format_duration(*.timeout))]
    NoAnswer {
        node: String,
        what: String,
        timeout: Duration,
    },
    /// Several nodes could be asked and none could be reached: why, for
    /// each.
    #[error("{what}: {}", .each.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    NoneOf {
        what: String,
        each: Vec<CannotReach>,
    },
    /// Nodes read over HTTP (their metrics addresses) that did not answer.
    #[error("{0}")]
    Nodes(String),
}

/// Waits for `answer` until `deadline`. `Ok(None)` when it did not come in
/// time (or its sender is gone); an error at once when an attempt to
/// connect to `node` on `net` fails, rather than at the deadline: a
/// request that cannot arrive has no answer to wait for.
pub async fn answer_from<T>(
    net: &Network,
    node: &str,
    deadline: tokio::time::Instant,
    answer: impl Future<Output = Option<T>>,
) -> Result<Option<T>, CannotReach> {
    tokio::select! {
        biased;
        got = tokio::time::timeout_at(deadline, answer) => Ok(got.ok().flatten()),
        failure = net.connect_failure(node) => Err(CannotReach::Connect {
            node: node.to_string(),
            failure,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::core::ids::{ActorKind, Addr};
    use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Msg};

    /// A request to an address where nothing listens is answered with
    /// the refusal at once, not after the deadline.
    #[tokio::test]
    async fn a_refused_connection_ends_the_wait_at_once() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let net = Network::new("me", [("fe1".to_string(), addr)].into(), tx);
        net.send(Envelope {
            from: Addr::new("me", ActorKind::Client),
            to: Addr::new("fe1", ActorKind::FrontEnd),
            id: 0,
            msg: Msg::Archiving(ArchivingMsg::OperatorResume),
        })
        .unwrap();
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(30);
        let got = answer_from(&net, "fe1", deadline, rx.recv()).await;
        assert_eq!(
            got.unwrap_err().to_string(),
            format!("connection refused: {addr} (fe1)")
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}

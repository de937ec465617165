//! Hostile clients, beside the honest workload: requests over the limits,
//! client ids used for several messages, IMs sent as another user (by an
//! authenticated client, and by one with no principal at all), and
//! connections opened and held silent. What they get is logged here and checked by
//! [`crate::oracle::checker::check_hostile`]; the honest traffic is checked as
//! always, and must not suffer.
//!
//! Every hostile request carries a client id starting with
//! [`crate::oracle::checker::HOSTILE_PREFIX`], so that the honest checker leaves
//! their archive rows to the hostile one.

use crate::host::connections::Connections;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
use crate::oracle::checker::{HostileLog, HOSTILE_PREFIX};
use crate::scenario::{Attack, HostileWorkload};
use crate::seeds::{self, Purpose};
use crate::workload::im::next_arrival;
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Im, Msg};
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const HOSTILE_NODE: &str = "hostile";

pub struct HostileSpec {
    /// Front ends (requests, flood) and archiving servers (flood).
    pub front_ends: BTreeMap<String, SocketAddr>,
    pub archivers: Vec<SocketAddr>,
    pub workloads: Vec<HostileWorkload>,
    /// Honest users to send as (valid senders, so that only the attack
    /// itself can be the reason for a refusal).
    pub users: Vec<String>,
    pub cluster: Arc<Cluster>,
    pub im_max_bytes: u64,
    pub seed: u64,
    pub epoch: Instant,
    pub link: Arc<FlowLink>,
}

pub type SharedHostileLog = Arc<Mutex<HostileLog>>;

pub async fn run_hostile(spec: Arc<HostileSpec>, log: SharedHostileLog) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let net = Arc::new(Connections::new(
        spec.front_ends.clone(),
        spec.link.clone(),
        tx,
    ));
    {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let mut log = lock(&log);
                match env.msg {
                    Msg::Archiving(
                        ArchivingMsg::ImAccepted { id, .. }
                        | ArchivingMsg::ImDeliveredNotArchived { id, .. },
                    ) => log.answered(&id, true),
                    Msg::Archiving(ArchivingMsg::ImRejected { id, .. }) => log.answered(&id, false),
                    // An operator control's answer: its request id is the
                    // nonce of the connection it was sent on.
                    Msg::Archiving(ArchivingMsg::OperatorResumed { .. })
                    | Msg::Forbidden { .. } => {
                        if let Some(id) = env.to.node.rsplit('/').next() {
                            log.answered(
                                id,
                                matches!(
                                    env.msg,
                                    Msg::Archiving(ArchivingMsg::OperatorResumed { .. })
                                ),
                            );
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    let mut tasks = Vec::new();
    for (w, wl) in spec.workloads.iter().enumerate() {
        for attack in &wl.attacks {
            let (spec, wl, net, log) = (spec.clone(), wl.clone(), net.clone(), log.clone());
            let attack = *attack;
            tasks.push(tokio::spawn(async move {
                match attack {
                    Attack::Flood => flood(spec, w, wl, log).await,
                    _ => requests(spec, w, wl, attack, net, log).await,
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    std::future::pending::<()>().await;
}

/// Oversize, reused-id, forged and unauthenticated requests at the
/// workload's rate.
async fn requests(
    spec: Arc<HostileSpec>,
    w: usize,
    wl: HostileWorkload,
    attack: Attack,
    net: Arc<Connections>,
    log: SharedHostileLog,
) {
    let mut rng = seeds::stream(spec.seed, Purpose::Hostile, w, attack as usize);
    let mut t = wl.start_ms as f64;
    let mut n = 0u64;
    if spec.users.len() < 2 {
        return;
    }
    while next_arrival(&mut rng, &mut t, wl.rate, wl.stop_ms, spec.epoch).await {
        n += 1;
        let from = spec.users[rng.gen_range(0..spec.users.len())].clone();
        let to = loop {
            let u = &spec.users[rng.gen_range(0..spec.users.len())];
            if *u != from {
                break u.clone();
            }
        };
        let Some(fe) = spec.cluster.home(&from).map(str::to_string) else {
            continue;
        };
        if attack == Attack::ResumeAsUser {
            // An honest user's own credential, asking what only an
            // operator may: one connection per request, named after it.
            let id = format!("{HOSTILE_PREFIX}resume-w{w}-{n}");
            lock(&log).sent(&id, attack, "OperatorResume");
            let env = Envelope {
                from: Addr::new(
                    Principal::new(from.clone(), Role::User).client_name(&id),
                    ActorKind::Client,
                ),
                to: Addr::new(fe, ActorKind::FrontEnd),
                id: n,
                msg: Msg::Archiving(ArchivingMsg::OperatorResume),
            };
            if let Err(e) = net.send(env) {
                tracing::debug!(error = %e, "hostile client could not send");
            }
            continue;
        }
        // Who the connection proves to be: the sender itself (an
        // authenticated client misbehaving), another user, or no one.
        let connection = match attack {
            Attack::ForgeFrom => {
                Principal::new(format!("mallory@{}", spec.cluster.domain), Role::User)
                    .client_name(HOSTILE_NODE)
            }
            Attack::Unauthenticated => format!("{HOSTILE_NODE}-anonymous"),
            _ => Principal::new(from.clone(), Role::User).client_name(HOSTILE_NODE),
        };
        let (id, bodies) = match attack {
            Attack::Oversize => (
                format!("{HOSTILE_PREFIX}big-w{w}-{n}"),
                vec!["x".repeat(spec.im_max_bytes as usize + 1)],
            ),
            Attack::ForgeFrom | Attack::Unauthenticated => {
                let id = format!("{HOSTILE_PREFIX}{}-w{w}-{n}", attack.name());
                let body = format!("{id}: sent as {from} by someone else");
                (id, vec![body])
            }
            _ => {
                let id = format!("{HOSTILE_PREFIX}reuse-w{w}-{n}");
                let bodies = (1..=3).map(|k| format!("{id} message {k} of 3")).collect();
                (id, bodies)
            }
        };
        for body in bodies {
            lock(&log).sent(&id, attack, &body);
            let env = Envelope {
                from: Addr::new(connection.clone(), ActorKind::Client),
                to: Addr::new(fe.clone(), ActorKind::FrontEnd),
                id: n,
                msg: Msg::Archiving(ArchivingMsg::SubmitIm {
                    im: Im {
                        id: id.as_str().into(),
                        from: from.as_str().into(),
                        to: to.as_str().into(),
                        body,
                    },
                }),
            };
            if let Err(e) = net.send(env) {
                tracing::debug!(error = %e, "hostile client could not send");
            }
        }
    }
}

/// `clients` connections to the front ends and archiving servers, each
/// opened and held without a byte sent; one the server closes is opened
/// again a second later, until the workload stops.
async fn flood(spec: Arc<HostileSpec>, w: usize, wl: HostileWorkload, log: SharedHostileLog) {
    let targets: Vec<SocketAddr> = spec
        .front_ends
        .values()
        .copied()
        .chain(spec.archivers.iter().copied())
        .collect();
    let stop = spec.epoch + Duration::from_millis(wl.stop_ms);
    let start = spec.epoch + Duration::from_millis(wl.start_ms);
    let mut tasks = Vec::new();
    for i in 0..wl.clients as usize {
        let addr = targets[i % targets.len()];
        let log = log.clone();
        let mut rng = seeds::stream(spec.seed, Purpose::Hostile, w, 1000 + i);
        tasks.push(tokio::spawn(async move {
            // Spread the first connections over a second.
            tokio::time::sleep_until(start + Duration::from_millis(rng.gen_range(0..1000))).await;
            while Instant::now() < stop {
                match TcpStream::connect(addr).await {
                    Ok(mut s) => {
                        lock(&log).flood_connections += 1;
                        let mut byte = [0u8; 1];
                        // Held until the server closes it (or the run ends).
                        let left = stop.saturating_duration_since(Instant::now());
                        let _ = tokio::time::timeout(left, s.read(&mut byte)).await;
                    }
                    Err(_) => lock(&log).flood_refused += 1,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

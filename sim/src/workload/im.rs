//! The IM workload: clients on their own simulated node submit IMs to the
//! senders' home front ends at a Poisson rate and record every outcome —
//! accepted, rejected (explicit error) or unknown (no answer in time).

use crate::host::connections::Connections;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
use crate::oracle::checker::{Op, Outcome};
use crate::scenario::{Archive, ImWorkload};
use crate::seeds::{self, Purpose};
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr, MessageId, UserId};
use holdfast_actors::core::protocol::{ArchivingMsg, CallReport, Envelope, Im, Msg, RecordKind};
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const CLIENT_NODE: &str = "client";
/// How long a client waits for the front end's answer before it records
/// the outcome as unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ClientSpec {
    pub peers: BTreeMap<String, SocketAddr>,
    pub workloads: Vec<ImWorkload>,
    /// Users of each workload, in the same order.
    pub users: Vec<Vec<String>>,
    pub cluster: Arc<Cluster>,
    pub seed: u64,
    pub epoch: Instant,
    pub link: Arc<FlowLink>,
}

pub type History = Arc<Mutex<BTreeMap<String, Op>>>;
/// Requests without an answer yet, with the time after which an answer no
/// longer counts (the client has given up: the outcome stays unknown).
/// Answers are matched here rather than by a task and a timer per request,
/// which cost as much as the request itself in the simulator.
type Waiting = Arc<Mutex<BTreeMap<MessageId, Instant>>>;

/// Name of the `k`-th external (federated) partner.
pub fn external_user(k: u64) -> String {
    format!("partner{k}@partner.example")
}

/// Users of workload `w`: `w<w>u<i>@corp.example`.
pub fn workload_users(w: usize, n: u64, domain: &str) -> Vec<String> {
    (1..=n).map(|i| format!("w{w}u{i}@{domain}")).collect()
}

/// Whether the scenario's policy archives an IM from user `from` to user
/// `to` of the same workload (`None`: a federated partner). Each user's
/// switches follow from `archive`; either party's switch for the kind of
/// conversation (internal or external) is enough.
pub fn expect_archived(w: &ImWorkload, from: usize, to: Option<usize>) -> bool {
    let switches = |i: usize| -> (bool, bool) {
        match w.archive {
            Archive::All => (true, true),
            Archive::None => (false, false),
            Archive::Internal => (true, false),
            Archive::External => (false, true),
            Archive::Fraction(f) => {
                let on = (i as f64) < (w.users as f64 * f).ceil();
                (on, on)
            }
        }
    };
    match to {
        None => switches(from).1,
        Some(to) => switches(from).0 || switches(to).0,
    }
}

pub async fn run_client(spec: Arc<ClientSpec>, history: History) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let net = Arc::new(Connections::new(spec.peers.clone(), spec.link.clone(), tx));
    let waiting: Waiting = Arc::new(Mutex::new(BTreeMap::new()));
    {
        let waiting = waiting.clone();
        let history = history.clone();
        let epoch = spec.epoch;
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let (id, outcome) = match env.msg {
                    Msg::Archiving(ArchivingMsg::ImAccepted { id, at, message_id }) => {
                        (id, Outcome::Accepted { at, message_id })
                    }
                    Msg::Archiving(ArchivingMsg::ImDeliveredNotArchived {
                        id,
                        at,
                        message_id,
                        ..
                    }) => (id, Outcome::DeliveredNotArchived { at, message_id }),
                    Msg::Archiving(ArchivingMsg::ImRejected { id, reason }) => {
                        (id, Outcome::Rejected(format!("{reason:?}")))
                    }
                    other => {
                        tracing::warn!(msg = other.name(), "client got an unexpected message");
                        continue;
                    }
                };
                let Some(give_up) = lock(&waiting).remove(&id) else {
                    continue;
                };
                let now = Instant::now();
                if now <= give_up {
                    if let Some(op) = lock(&history).get_mut(id.as_str()) {
                        op.outcome = outcome;
                        op.answered_at = Some(now.duration_since(epoch).as_millis() as u64);
                    }
                }
            }
        });
    }
    let mut tasks = Vec::new();
    for (w, workload) in spec.workloads.iter().enumerate() {
        let spec = spec.clone();
        let workload = workload.clone();
        let (net, history, waiting) = (net.clone(), history.clone(), waiting.clone());
        tasks.push(tokio::spawn(async move {
            generate(spec, w, workload, net, history, waiting).await
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // madsim stops a node whose main task returns: stay up so the answers
    // to the last requests are still received.
    std::future::pending::<()>().await;
}

/// Waits for the next arrival of a Poisson process of `rate` per second
/// (exponential inter-arrival times drawn from `rng`); `t` is the time of
/// the previous one in ms after `epoch`. False once it would fall at or
/// after `stop_ms`.
pub async fn next_arrival(
    rng: &mut impl Rng,
    t: &mut f64,
    rate: f64,
    stop_ms: u64,
    epoch: Instant,
) -> bool {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    *t += -u.ln() / rate * 1000.0;
    if *t >= stop_ms as f64 {
        return false;
    }
    let at = epoch + Duration::from_millis(*t as u64);
    // madsim's sleep_until waits at least 1 ms: arrivals closer than that
    // would drift behind their drawn times.
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
    true
}

async fn generate(
    spec: Arc<ClientSpec>,
    w: usize,
    workload: ImWorkload,
    net: Arc<Connections>,
    history: History,
    waiting: Waiting,
) {
    let mut rng = seeds::stream(spec.seed, Purpose::ImWorkload, w, 0);
    let users = &spec.users[w];
    let mut t = workload.start_ms as f64;
    let mut n = 0u64;
    while next_arrival(
        &mut rng,
        &mut t,
        workload.rate,
        workload.stop_ms,
        spec.epoch,
    )
    .await
    {
        n += 1;
        let from_i = rng.gen_range(0..users.len());
        let from = UserId::from(&users[from_i]);
        let (to, to_i) = if rng.gen_bool(workload.external) {
            (UserId::from(external_user(rng.gen_range(1..=10))), None)
        } else {
            loop {
                let j = rng.gen_range(0..users.len());
                if j != from_i {
                    break (UserId::from(&users[j]), Some(j));
                }
            }
        };
        let id = MessageId::from(format!("w{w}-{n}"));
        let mut body = format!("{id} from {from} to {to}: ");
        while body.len() < workload.size {
            body.push_str("lorem ipsum ");
        }
        body.truncate(workload.size.max(id.len()));
        let Some(fe) = spec.cluster.home(&from).map(str::to_string) else {
            continue;
        };
        let op = Op {
            id: id.clone(),
            from: from.to_string(),
            to: to.to_string(),
            body: body.clone(),
            front_end: fe.clone(),
            // Calls are always recorded; IMs as the scenario's policy says,
            // worked out here from the scenario itself rather than by the
            // front end's policy code, so that a bug there shows up.
            archivable: workload.kind != RecordKind::Im || expect_archived(&workload, from_i, to_i),
            kind: workload.kind,
            submitted_at: t as u64,
            answered_at: None,
            outcome: Outcome::Unknown,
        };
        lock(&history).insert(id.to_string(), op);
        lock(&waiting).insert(id.clone(), Instant::now() + REQUEST_TIMEOUT);
        let env = Envelope {
            // Each sender's own connection, named after its principal.
            from: Addr::new(
                Principal::new(from.clone(), Role::User).client_name(CLIENT_NODE),
                ActorKind::Client,
            ),
            to: Addr::new(fe, ActorKind::FrontEnd),
            id: n,
            msg: match workload.kind {
                RecordKind::Im => Msg::Archiving(ArchivingMsg::SubmitIm {
                    im: Im {
                        id: id.clone(),
                        from,
                        to,
                        body,
                    },
                }),
                kind => Msg::Archiving(ArchivingMsg::ReportCall {
                    report: CallReport {
                        id: id.clone(),
                        kind,
                        from,
                        to,
                        body,
                    },
                }),
            },
        };
        if let Err(e) = net.send(env) {
            tracing::warn!(error = %e, "client could not send");
        }
    }
}

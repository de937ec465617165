//! Starting a run: one madsim node per server of the topology, then the
//! client machines (honest IM clients, hostile clients, chat clients), in
//! that order — the order is part of what a seed replays.

use super::cluster::{build_cluster, build_pool, DOMAIN};
use super::nodes::Nodes;
use crate::host::disk::SimDisk;
use crate::host::node::{run_node, Control, NodeShared, NodeSpec};
use crate::host::tcp_flow::FlowLink;
use crate::oracle::chat_log::{ChatLog, SharedChatLog};
use crate::oracle::events::EventRecord;
use crate::scenario::Scenario;
use crate::trace::Trace;
use crate::workload::auditor::{run_auditor, AuditorSpec, SharedAuditLog, AUDITOR_NODE};
use crate::workload::chat::{run_chat_clients, ChatClientSpec, CHAT_CLIENT_NODE};
use crate::workload::hostile::{run_hostile, HostileSpec, SharedHostileLog, HOSTILE_NODE};
use crate::workload::im::{self, run_client, ClientSpec, CLIENT_NODE};
use crate::workload::pickup::{run_pickup, PickupSpec, SharedPickupLog, PICKUP_NODE};
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::roster::Roster;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep a human timeline of every traced event.
    pub timeline: bool,
    /// Keep every gauge sample (for a plot).
    pub series: bool,
}

const PORT: u16 = 5061;

/// The operator events every node records into.
type Events = Arc<Mutex<Vec<EventRecord>>>;

/// A run once started: its nodes and clients, and where they record.
pub(super) struct Started {
    pub(super) epoch: Instant,
    pub(super) link: Arc<FlowLink>,
    pub(super) cluster: Arc<Cluster>,
    pub(super) trace: Arc<Mutex<Trace>>,
    pub(super) events: Events,
    pub(super) nodes: Arc<Nodes>,
    /// The client machines' nodes.
    pub(super) clients: Vec<NodeId>,
    pub(super) history: im::History,
    pub(super) hostile_log: SharedHostileLog,
    pub(super) chat_log: SharedChatLog,
    pub(super) pickup_log: SharedPickupLog,
    pub(super) audit_log: SharedAuditLog,
}

pub(super) fn boot(scn: &Scenario, seed: u64, opts: &RunOptions) -> Started {
    let epoch = Instant::now();
    // One flow control for the whole simulated network: it pairs the two
    // ends of every connection.
    let link = FlowLink::new();
    // What the hosts set as TCP_USER_TIMEOUT on real sockets.
    link.set_user_timeout(Duration::from_millis(scn.settings.link_timeout));
    let (cluster, users) = build_cluster(scn);
    let honest_users: Vec<String> = users.iter().flatten().cloned().collect();
    let cluster = Arc::new(cluster);
    let pool = Arc::new(build_pool(scn));
    let trace = Arc::new(Mutex::new(Trace::new(opts.timeline)));
    let events: Events = Arc::new(Mutex::new(Vec::new()));

    let servers: Vec<String> = scn.topology.servers().cloned().collect();
    let addrs: BTreeMap<String, SocketAddr> = servers
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), SocketAddr::new(ip(i), PORT)))
        .collect();

    let nodes = start_servers(
        scn,
        seed,
        opts,
        &addrs,
        (&cluster, &pool, &link),
        (&trace, &events, epoch),
    );
    let (history, client_node) = start_im_clients(scn, seed, &addrs, users, &cluster, &link, epoch);
    let mut clients = vec![client_node];
    let hostile_log: SharedHostileLog = Arc::default();
    if !scn.hostile.is_empty() {
        let spec = Arc::new(HostileSpec {
            front_ends: front_ends(scn, &addrs),
            archivers: scn.topology.archivers.iter().map(|n| addrs[n]).collect(),
            workloads: scn.hostile.clone(),
            users: honest_users,
            cluster: cluster.clone(),
            im_max_bytes: scn.settings.im_max_bytes,
            seed,
            epoch,
            link: link.clone(),
        });
        clients.push(start_hostile_clients(
            spec,
            hostile_log.clone(),
            addrs.len(),
        ));
    }
    let chat_log: SharedChatLog = Arc::new(Mutex::new(ChatLog::default()));
    if !scn.chat.is_empty() {
        clients.push(start_chat_clients(
            scn,
            seed,
            &addrs,
            &link,
            epoch,
            chat_log.clone(),
        ));
    }
    let pickup_log: SharedPickupLog = Arc::default();
    if let (Some(comp), Some(period_ms)) = (&scn.topology.compliance, scn.pickup_ms) {
        let spec = Arc::new(PickupSpec {
            compliance: comp.clone(),
            addr: addrs[comp],
            disk: nodes.shared[comp].disk.clone(),
            period_ms,
            epoch,
            link: link.clone(),
        });
        let log = pickup_log.clone();
        clients.push(client_machine(
            PICKUP_NODE,
            ip(addrs.len() + 3),
            move || run_pickup(spec.clone(), log.clone()),
        ));
    }
    let audit_log: SharedAuditLog = Arc::default();
    if !scn.holds.is_empty() {
        let spec = Arc::new(AuditorSpec {
            databases: scn
                .topology
                .databases
                .iter()
                .map(|n| (n.clone(), addrs[n], nodes.shared[n].disk.clone()))
                .collect(),
            holds: scn.holds.clone(),
            epoch,
            link: link.clone(),
        });
        let log = audit_log.clone();
        clients.push(client_machine(
            AUDITOR_NODE,
            ip(addrs.len() + 4),
            move || run_auditor(spec.clone(), log.clone()),
        ));
    }
    Started {
        epoch,
        link,
        cluster,
        trace,
        events,
        nodes: Arc::new(nodes),
        clients,
        history,
        hostile_log,
        chat_log,
        pickup_log,
        audit_log,
    }
}

/// Every server of the topology, on its own madsim node.
fn start_servers(
    scn: &Scenario,
    seed: u64,
    opts: &RunOptions,
    addrs: &BTreeMap<String, SocketAddr>,
    (cluster, pool, link): (
        &Arc<Cluster>,
        &Arc<holdfast_actors::chat::pool::ChatPool>,
        &Arc<FlowLink>,
    ),
    (trace, events, epoch): (&Arc<Mutex<Trace>>, &Events, Instant),
) -> Nodes {
    let handle = Handle::current();
    let mut nodes = Nodes {
        ids: BTreeMap::new(),
        ips: addrs.iter().map(|(n, a)| (n.clone(), a.ip())).collect(),
        shared: BTreeMap::new(),
        link: link.clone(),
        active: Mutex::new(BTreeMap::new()),
    };
    for name in scn.topology.servers() {
        let t = &scn.topology;
        let roles = if t.front_ends.contains(name) {
            vec![ActorKind::FrontEnd, ActorKind::OutgoingQueue]
        } else if t.archivers.contains(name) {
            vec![ActorKind::DestinationQueue, ActorKind::Archiver]
        } else if t.channels.contains(name) {
            vec![ActorKind::Channel]
        } else if t.lookups.contains(name) {
            vec![ActorKind::Lookup]
        } else if t.chat_store.as_ref() == Some(name) {
            vec![ActorKind::ChatStore]
        } else if t.web.contains(name) {
            vec![ActorKind::Web]
        } else if t.compliance.as_ref() == Some(name) {
            vec![ActorKind::Compliance]
        } else {
            vec![ActorKind::Database]
        };
        let spec = Arc::new(NodeSpec {
            name: name.clone(),
            roles,
            addr: addrs[name],
            peers: addrs
                .iter()
                .filter(|(n, _)| *n != name)
                .map(|(n, a)| (n.clone(), *a))
                .collect(),
            settings: scn.settings.clone(),
            sabotage: scn.sabotage.clone(),
            seed,
            cores: Arc::new(Roster {
                node: name.clone(),
                cluster: cluster.clone(),
                settings: scn.settings.clone(),
                pool: pool.clone(),
                sabotage: scn.sabotage.clone(),
            }),
            link: link.clone(),
            group_commit: scn.topology.group_commit,
        });
        let shared = NodeShared {
            disk: SimDisk::new(
                scn.topology
                    .disk_sizes
                    .get(name.as_str())
                    .copied()
                    .unwrap_or(scn.topology.disk_size),
                Duration::from_millis(scn.topology.fsync_ms),
            ),
            control: Arc::new(Mutex::new(Control::default())),
            trace: trace.clone(),
            events: events.clone(),
            gauges: Arc::default(),
            series: opts.series.then(Arc::default),
            epoch,
            incarnation: Arc::default(),
        };
        let s = shared.clone();
        let node = handle
            .create_node()
            .name(name.clone())
            .ip(addrs[name].ip())
            .init(move || run_node(spec.clone(), s.clone()))
            .build();
        nodes.ids.insert(name.clone(), node.id());
        nodes.shared.insert(name.clone(), shared);
    }

    nodes
}

/// The front ends' addresses, by name.
fn front_ends(
    scn: &Scenario,
    addrs: &BTreeMap<String, SocketAddr>,
) -> BTreeMap<String, SocketAddr> {
    addrs
        .iter()
        .filter(|(n, _)| scn.topology.front_ends.contains(n))
        .map(|(n, a)| (n.clone(), *a))
        .collect()
}

/// The honest IM, CDR and QoE clients, on one client machine; what they
/// were told goes to the returned history.
fn start_im_clients(
    scn: &Scenario,
    seed: u64,
    addrs: &BTreeMap<String, SocketAddr>,
    users: Vec<Vec<String>>,
    cluster: &Arc<Cluster>,
    link: &Arc<FlowLink>,
    epoch: Instant,
) -> (im::History, NodeId) {
    let history: im::History = Arc::new(Mutex::new(BTreeMap::new()));
    let client = Arc::new(ClientSpec {
        peers: front_ends(scn, addrs),
        workloads: scn.workloads.clone(),
        users,
        cluster: cluster.clone(),
        seed,
        epoch,
        link: link.clone(),
    });
    let h = history.clone();
    let client_node = client_machine(CLIENT_NODE, ip(addrs.len()), move || {
        run_client(client.clone(), h.clone())
    });
    (history, client_node)
}

/// The hostile clients, on their own client machine.
fn start_hostile_clients(spec: Arc<HostileSpec>, log: SharedHostileLog, servers: usize) -> NodeId {
    client_machine(HOSTILE_NODE, ip(servers + 2), move || {
        run_hostile(spec.clone(), log.clone())
    })
}

/// The chat and file clients, on their own client machine.
fn start_chat_clients(
    scn: &Scenario,
    seed: u64,
    addrs: &BTreeMap<String, SocketAddr>,
    link: &Arc<FlowLink>,
    epoch: Instant,
    log: SharedChatLog,
) -> NodeId {
    let t = &scn.topology;
    let spec = Arc::new(ChatClientSpec {
        lookups: t.lookups.iter().map(|n| addrs[n]).collect(),
        lookup_names: t.lookups.clone(),
        channels: t
            .channels
            .iter()
            .chain(&t.web)
            .map(|n| (n.clone(), addrs[n]))
            .collect(),
        workloads: scn.chat.clone(),
        web: t.web.clone(),
        domain: DOMAIN.into(),
        seed,
        epoch,
        link: link.clone(),
    });
    client_machine(CHAT_CLIENT_NODE, ip(addrs.len() + 1), move || {
        run_chat_clients(spec.clone(), log.clone())
    })
}

/// A client machine of the run: the madsim node `name` at `ip`, running
/// `task`.
fn client_machine<F: std::future::Future + 'static>(
    name: &str,
    ip: IpAddr,
    task: impl Fn() -> F + Send + Sync + 'static,
) -> NodeId {
    Handle::current()
        .create_node()
        .name(name)
        .ip(ip)
        .init(task)
        .build()
        .id()
}

fn ip(i: usize) -> IpAddr {
    // Simulated addresses only: no packet ever leaves the process.
    IpAddr::V4(Ipv4Addr::new(10, 77, (i / 200) as u8, (i % 200 + 1) as u8))
}

//! Runs one scenario with one seed inside a fresh madsim runtime: builds the
//! cluster, starts the workload, injects the faults on schedule, then reads
//! every node's durable state and hands it to the checker.

use crate::chat::{run_chat_clients, ChatClientSpec, CHAT_CLIENT_NODE};
use crate::chat_checker::{self, chat_rooms, chat_users, ChatLog};
use crate::checker::{self, Observed, Op, Shutdown};
use crate::compliance_checker::{self, ComplianceInput};
use crate::critical;
use crate::disk::SimDisk;
use crate::hostile::{run_hostile, HostileSpec, SharedHostileLog, HOSTILE_NODE};
use crate::lock;
use crate::node::{run_node, store_file, Control, NodeShared, NodeSpec, OUTPUT_DIR};
use crate::report::{EventRecord, RunResult};
use crate::scenario::{Archive, FaultKind, Scenario};
use crate::seeds::{self, Purpose};
use crate::tcp_flow::FlowLink;
use crate::trace::Trace;
use crate::workload::{self, run_client, ClientSpec, CLIENT_NODE};
use holdfast_actors::chat::chat_store;
use holdfast_actors::chat::pool::{Category, ChatPool};
use holdfast_actors::chat::web_files;
use holdfast_actors::compliance::service;
use holdfast_actors::core::actor::Recovered;
use holdfast_actors::core::cluster::{ArchiverInfo, Cluster, FrontEndInfo};
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::policy::{ArchiveSwitch, Policy};
use holdfast_actors::core::protocol::chat::Room;
use holdfast_actors::core::store_keys;
use holdfast_host::store::replay;
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use madsim::task::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub const DOMAIN: &str = "corp.example";
const PORT: u16 = 5061;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep a human timeline of every traced event.
    pub timeline: bool,
    /// Keep every gauge sample (for a plot).
    pub series: bool,
}

pub struct RunOutput {
    pub result: RunResult,
    pub timeline: Vec<String>,
    /// Per node, every gauge sample `(time, gauge, value)` (with `series`).
    pub series: BTreeMap<String, Vec<(u64, &'static str, u64)>>,
    /// The concrete scenario this seed ran (ranges drawn, faults expanded).
    pub scenario: Scenario,
    /// Simulated tasks still alive after the run was torn down: each one
    /// holds memory a sweep of many seeds would never get back.
    pub tasks_left: usize,
}

/// Users of the whole scenario, their homes, and the archiving policy their
/// workloads ask for.
pub fn build_cluster(scn: &Scenario) -> (Cluster, Vec<Vec<String>>) {
    let t = &scn.topology;
    let mut front_ends = BTreeMap::new();
    for (i, fe) in t.front_ends.iter().enumerate() {
        front_ends.insert(
            fe.clone(),
            FrontEndInfo {
                site: "site1".into(),
                archiver: t.archivers[i % t.archivers.len()].clone(),
            },
        );
    }
    let archivers = t
        .archivers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                a.clone(),
                ArchiverInfo {
                    database: t.databases[i % t.databases.len()].clone(),
                },
            )
        })
        .collect();
    let mut users = BTreeMap::new();
    let mut policy = Policy {
        global: ArchiveSwitch::NONE,
        ..Default::default()
    };
    let mut per_workload = Vec::new();
    for (w, wl) in scn.workloads.iter().enumerate() {
        let names = workload::workload_users(w, wl.users, DOMAIN);
        let archiving = (wl.users as f64
            * match wl.archive {
                Archive::Fraction(f) => f,
                _ => 1.0,
            })
        .ceil() as usize;
        let homes = if wl.front_ends.is_empty() {
            &t.front_ends
        } else {
            &wl.front_ends
        };
        for (i, u) in names.iter().enumerate() {
            users.insert(u.clone(), homes[i % homes.len()].clone());
            let switch = match wl.archive {
                Archive::All => ArchiveSwitch::ALL,
                Archive::None => ArchiveSwitch::NONE,
                Archive::Internal => ArchiveSwitch {
                    internal: true,
                    external: false,
                },
                Archive::External => ArchiveSwitch {
                    internal: false,
                    external: true,
                },
                Archive::Fraction(_) if i < archiving => ArchiveSwitch::ALL,
                Archive::Fraction(_) => ArchiveSwitch::NONE,
            };
            policy.users.insert(u.clone(), switch);
        }
        per_workload.push(names);
    }
    let cluster = Cluster {
        domain: DOMAIN.into(),
        front_ends,
        archivers,
        databases: t.databases.clone(),
        users,
        policy,
    };
    (cluster, per_workload)
}

/// The group chat pool: Channel servers, Lookup instances, the store, and
/// the rooms of every chat workload (all its users members; the last
/// `walled` of them walled off).
pub fn build_pool(scn: &Scenario) -> ChatPool {
    let t = &scn.topology;
    let mut rooms = std::collections::BTreeMap::new();
    let mut categories = std::collections::BTreeMap::new();
    for (w, wl) in scn.chat.iter().enumerate() {
        let users = chat_users(w, wl.users, DOMAIN);
        let denied: BTreeSet<String> = users[(wl.users - wl.walled) as usize..]
            .iter()
            .cloned()
            .collect();
        if wl.managed {
            // Rooms come at run time, from the first user; the wall is the
            // category's.
            categories.insert(
                managed_category(w),
                Category {
                    allowed: users.iter().cloned().collect(),
                    denied: denied.clone(),
                    creators: BTreeSet::from([users[0].clone()]),
                },
            );
            continue;
        }
        for room in chat_rooms(w, wl.rooms) {
            rooms.insert(
                room,
                Room {
                    members: users.iter().cloned().collect(),
                    denied: denied.clone(),
                    presenters: None,
                    ..Default::default()
                },
            );
        }
    }
    ChatPool {
        channels: t.channels.clone(),
        lookups: t.lookups.clone(),
        store: t.chat_store.clone().unwrap_or_default(),
        rooms,
        categories,
        compliance: t.compliance.clone(),
        export: scn.export.clone(),
        web: t.web.clone(),
        // Any key will do in a closed world; production reads its own.
        token_key: b"simulated pool key".to_vec(),
    }
}

/// The category of chat workload `w`'s rooms when they are created at run
/// time.
/// Events still in a compliance outbox of a store.
fn outbox_len(state: &Recovered) -> u64 {
    state
        .keys()
        .filter(|k| k.starts_with(service::OUTBOX) && k.len() == service::OUTBOX.len() + 8)
        .count() as u64
}

pub fn managed_category(w: usize) -> String {
    format!("workload{w}")
}

fn ip(i: usize) -> IpAddr {
    // Simulated addresses only: no packet ever leaves the process.
    IpAddr::V4(Ipv4Addr::new(10, 77, (i / 200) as u8, (i % 200 + 1) as u8))
}

pub fn run(scn: &Scenario, seed: u64, opts: &RunOptions) -> RunOutput {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    // Ranges and random faults become concrete for this seed.
    let (scn, drawn) = scn.resolve(seed);
    let opts = opts.clone();
    let mut out = rt.block_on(async move { supervise(scn, seed, opts).await });
    out.result.drawn = drawn;
    out
}

struct Nodes {
    ids: BTreeMap<String, NodeId>,
    ips: BTreeMap<String, IpAddr>,
    shared: BTreeMap<String, NodeShared>,
    /// The simulated TCP, told of every cut link.
    link: Arc<FlowLink>,
    /// Fault effects in force, with the value of each fault causing them.
    active: Mutex<BTreeMap<Effect, Vec<u64>>>,
}

async fn supervise(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let handle = Handle::current();
    let epoch = Instant::now();
    // One flow control for the whole simulated network: it pairs the two
    // ends of every connection.
    let link = FlowLink::new();
    // What the hosts set as TCP_USER_TIMEOUT on real sockets.
    link.set_user_timeout(Duration::from_millis(scn.settings.link_timeout));
    let (cluster, users) = build_cluster(&scn);
    let honest_users: Vec<String> = users.iter().flatten().cloned().collect();
    let cluster = Arc::new(cluster);
    let pool = Arc::new(build_pool(&scn));
    let trace = Arc::new(Mutex::new(Trace::new(opts.timeline)));
    let events: Arc<Mutex<Vec<EventRecord>>> = Arc::new(Mutex::new(Vec::new()));

    let servers: Vec<String> = scn.topology.servers().cloned().collect();
    let addrs: BTreeMap<String, SocketAddr> = servers
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), SocketAddr::new(ip(i), PORT)))
        .collect();

    let mut nodes = Nodes {
        ids: BTreeMap::new(),
        ips: addrs.iter().map(|(n, a)| (n.clone(), a.ip())).collect(),
        shared: BTreeMap::new(),
        link: link.clone(),
        active: Mutex::new(BTreeMap::new()),
    };
    for name in &servers {
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
            cluster: cluster.clone(),
            settings: scn.settings.clone(),
            sabotage: scn.sabotage.clone(),
            seed,
            pool: pool.clone(),
            link: link.clone(),
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

    let history: workload::History = Arc::new(Mutex::new(BTreeMap::new()));
    let client = Arc::new(ClientSpec {
        peers: addrs
            .iter()
            .filter(|(n, _)| scn.topology.front_ends.contains(n))
            .map(|(n, a)| (n.clone(), *a))
            .collect(),
        workloads: scn.workloads.clone(),
        users,
        cluster: cluster.clone(),
        seed,
        epoch,
        link: link.clone(),
    });
    let h = history.clone();
    let mut clients = Vec::new();
    let client_node = handle
        .create_node()
        .name(CLIENT_NODE)
        .ip(ip(servers.len()))
        .init(move || run_client(client.clone(), h.clone()))
        .build();
    clients.push(client_node.id());

    let hostile_log: SharedHostileLog = Arc::default();
    if !scn.hostile.is_empty() {
        let spec = Arc::new(HostileSpec {
            front_ends: addrs
                .iter()
                .filter(|(n, _)| scn.topology.front_ends.contains(n))
                .map(|(n, a)| (n.clone(), *a))
                .collect(),
            archivers: scn.topology.archivers.iter().map(|n| addrs[n]).collect(),
            workloads: scn.hostile.clone(),
            users: honest_users,
            cluster: cluster.clone(),
            im_max_bytes: scn.settings.im_max_bytes,
            seed,
            epoch,
            link: link.clone(),
        });
        let log = hostile_log.clone();
        let node = handle
            .create_node()
            .name(HOSTILE_NODE)
            .ip(ip(servers.len() + 2))
            .init(move || run_hostile(spec.clone(), log.clone()))
            .build();
        clients.push(node.id());
    }

    let chat_log = Arc::new(Mutex::new(ChatLog::default()));
    if !scn.chat.is_empty() {
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
        let log = chat_log.clone();
        let chat_node = handle
            .create_node()
            .name(CHAT_CLIENT_NODE)
            .ip(ip(servers.len() + 1))
            .init(move || run_chat_clients(spec.clone(), log.clone()))
            .build();
        clients.push(chat_node.id());
    }

    let nodes = Arc::new(nodes);
    // TCP aborts connections that stay cut off for a quarter of an hour.
    let mut fault_tasks = vec![tokio::spawn(link.clone().retransmission_timeouts())];
    for (fi, fault) in scn.faults.clone().into_iter().enumerate() {
        let nodes = nodes.clone();
        let trace = trace.clone();
        fault_tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(epoch + Duration::from_millis(fault.start_ms)).await;
            lock(&trace).record(
                fault.start_ms,
                "nemesis",
                &format!("begin {}", fault.describe()),
                &(),
            );
            apply(&nodes, &fault.kind, true);
            if let FaultKind::Corrupt { node, bytes, file } = &fault.kind {
                // Drawn from the run's seed and the fault's place in the
                // file: the same bytes flip on every replay.
                let mut rng = seeds::stream(seed, Purpose::Corrupt, fi, 0);
                let what = nodes.shared[node].disk.corrupt(
                    *bytes,
                    file.as_deref().map(|f| format!("{f}.log")).as_deref(),
                    &mut rng,
                );
                lock(&trace).record(fault.start_ms, "nemesis", &what, &());
            }
            if let Some(d) = fault.duration_ms {
                tokio::time::sleep(Duration::from_millis(d)).await;
                lock(&trace).record(
                    fault.start_ms + d,
                    "nemesis",
                    &format!("end {}", fault.describe()),
                    &(),
                );
                apply(&nodes, &fault.kind, false);
            }
        }));
    }

    tokio::time::sleep_until(epoch + Duration::from_millis(scn.duration_ms)).await;
    // A fault still pending must not restart a node after the run (nor
    // the retransmission check tick through the teardown's year).
    for t in &fault_tasks {
        t.abort();
    }

    // Read the outcome: what survives a crash right now.
    let ops: Vec<Op> = std::mem::take(&mut *lock(&history)).into_values().collect();
    let mut rows = Vec::new();
    let mut queued = BTreeSet::new();
    let mut parked = BTreeSet::new();
    let mut read_errors = Vec::new();
    for (name, shared) in &nodes.shared {
        let state = |kind| -> Recovered { replay(&shared.disk.durable(&store_file(kind))).0 };
        if scn.topology.databases.contains(name) {
            for r in store_keys::db_rows(&state(ActorKind::Database)) {
                match r {
                    Ok(row) => rows.push(row),
                    Err(e) => read_errors.push(format!("{name}: {e}")),
                }
            }
        }
        for r in store_keys::parked_records(&state(ActorKind::DestinationQueue)) {
            match r {
                Ok((_, p)) => {
                    parked.insert(p.record.client_id);
                }
                Err(e) => read_errors.push(format!("{name}: {e}")),
            }
        }
        for kind in [ActorKind::OutgoingQueue, ActorKind::DestinationQueue] {
            for r in store_keys::queued_records(&state(kind)) {
                match r {
                    Ok(rec) => {
                        queued.insert(rec.client_id);
                    }
                    Err(e) => read_errors.push(format!("{name}: {e}")),
                }
            }
        }
    }
    let chat = scn.topology.chat_store.as_ref().map(|store| {
        let shared = &nodes.shared[store];
        let state = replay(&shared.disk.durable(&store_file(ActorKind::ChatStore))).0;
        let mut posts = Vec::new();
        for entry in chat_store::stored_posts(&state) {
            match entry {
                Ok(p) => posts.push(p),
                Err(e) => read_errors.push(format!("{store}: {e}")),
            }
        }
        let mut files = BTreeMap::new();
        let mut file_owners = BTreeMap::new();
        let mut pending = 0u64;
        for web in &scn.topology.web {
            let state = replay(&nodes.shared[web].disk.durable(&store_file(ActorKind::Web))).0;
            for (k, v) in state.range(web_files::FILE.to_vec()..) {
                if !k.starts_with(web_files::FILE) {
                    break;
                }
                match store_keys::decode::<web_files::FileMeta>(v) {
                    // A description without its content is a lost file.
                    Ok(f) => match state.get(&web_files::blob_key(&f.id)) {
                        Some(data) => {
                            file_owners.insert(f.id.clone(), (f.room.clone(), f.uploader.clone()));
                            files.insert(f.id, data.len() as u64);
                        }
                        None => read_errors.push(format!("{web}: file {} has no content", f.id)),
                    },
                    Err(e) => read_errors.push(format!("{web}: {e}")),
                }
            }
            pending += outbox_len(&state);
        }
        let log = lock(&chat_log);
        let mut counts = chat_checker::check(&log, &posts, &files);
        if let Some(comp) = &scn.topology.compliance {
            pending += outbox_len(&state);
            let comp_disk = &nodes.shared[comp].disk;
            let staged = replay(&comp_disk.durable(&store_file(ActorKind::Compliance))).0;
            pending += staged
                .keys()
                .filter(|k| k.starts_with(service::STAGED))
                .count() as u64;
            let outputs: Vec<(String, Vec<u8>)> = comp_disk
                .file_names()
                .into_iter()
                .filter_map(|n| {
                    let name = n.strip_prefix(OUTPUT_DIR)?.to_string();
                    Some((name, comp_disk.durable(&n)))
                })
                .collect();
            let rooms_saved: Vec<String> = state
                .keys()
                .filter_map(|k| k.strip_prefix(chat_store::CHAT_ROOM))
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            counts.compliance = Some(compliance_checker::check(&ComplianceInput {
                format: scn.export.format,
                outputs: &outputs,
                posts: &posts,
                files: &file_owners,
                rooms_saved: &rooms_saved,
                log: &log,
                pending,
            }));
        }
        counts
    });
    let events = lock(&events).clone();
    let expired = events
        .iter()
        .filter(|e| e.kind == OperatorEvent::RecordExpired)
        .filter_map(|e| e.detail.strip_prefix("ids="))
        .flat_map(|ids| ids.split(',').map(str::to_string))
        .collect();
    let shutdowns = critical::shutdowns(&events);
    // Operator events that report data lost to damage, per node; and the
    // nodes each front end's records pass through.
    let mut damage_reports: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| checker::REPORTS_LOSS.contains(&e.kind))
    {
        damage_reports.entry(e.node.clone()).or_default().push(e.at);
    }
    let paths = cluster
        .front_ends
        .iter()
        .map(|(fe, info)| {
            let db = cluster
                .archivers
                .get(&info.archiver)
                .map(|a| a.database.clone())
                .unwrap_or_default();
            (fe.clone(), vec![fe.clone(), info.archiver.clone(), db])
        })
        .collect();
    let observed = Observed {
        ops,
        rows,
        queued,
        parked,
        expired,
        damage_reports,
        paths,
        shutdowns: shutdowns
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.iter().map(|(s, _)| *s).collect::<Vec<Shutdown>>(),
                )
            })
            .collect(),
    };
    let counts = checker::check(&observed);
    let recovery = crate::recovery::figures(&observed.ops, &observed.rows, &scn.faults, &cluster);
    let hostile = (!scn.hostile.is_empty())
        .then(|| checker::check_hostile(&lock(&hostile_log), &observed.rows));
    let (trace_hash, trace_len, timeline) = {
        let t = lock(&trace);
        (t.hash(), t.len(), t.lines().to_vec())
    };
    let result = RunResult {
        scenario: scn.name.clone(),
        file: scn.file.clone(),
        seed,
        semantics: scn.semantics.as_str(),
        simulated_ms: scn.duration_ms,
        counts,
        chat,
        hostile,
        critical: critical::attribute(&shutdowns, &scn.faults, &cluster),
        obligations: scn
            .expect
            .critical_shutdown_within_ms
            .map(|bound| critical::obligations(bound, &shutdowns, &scn.faults, &cluster))
            .unwrap_or_default(),
        events,
        faults: scn.faults.iter().map(|f| f.describe()).collect(),
        trace_hash,
        trace_len,
        read_errors,
        drawn: Vec::new(),
        gauges: nodes
            .shared
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    lock(&s.gauges)
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                )
            })
            .collect(),
        recovery,
    };
    let mut out = RunOutput {
        tasks_left: 0,
        result,
        timeline,
        series: nodes
            .shared
            .iter()
            .filter_map(|(n, s)| s.series.as_ref().map(|v| (n.clone(), lock(v).clone())))
            .collect(),
        scenario: scn,
    };
    out.tasks_left = tear_down(&nodes, &clients).await;
    out
}

/// Ends every simulated task, so that the run's memory is freed.
///
/// madsim's runtime has no drop that cancels the tasks still pending at
/// the end of a run: a task waiting on a timer is owned by the timer heap,
/// which its sleep keeps alive, so each run of a sweep kept its nodes, its
/// disks and its queues (tens of MB) until the process ran out of memory.
/// Killing every node and letting simulated time run past every pending
/// timer wakes each task once more, and a killed node's task is dropped
/// instead of polled. Runs after the outcome is read: nothing here reaches
/// the result or the trace. Returns the tasks still alive on the
/// simulated nodes (none, unless something escaped the teardown).
async fn tear_down(nodes: &Nodes, clients: &[NodeId]) -> usize {
    let handle = Handle::current();
    for id in nodes.ids.values().chain(clients) {
        handle.kill(*id);
    }
    // Longer than any timer a core can set (the longest setting is 30 days).
    tokio::time::sleep(Duration::from_secs(366 * 24 * 3600)).await;
    let names: BTreeSet<String> = nodes
        .ids
        .keys()
        .cloned()
        .chain([CLIENT_NODE.to_string(), CHAT_CLIENT_NODE.to_string()])
        .collect();
    handle
        .metrics()
        .num_tasks_by_node()
        .into_iter()
        .filter(|(node, _)| names.contains(node))
        .map(|(_, n)| n)
        .sum()
}

/// One effect a fault has on the simulated world. Overlapping faults with
/// the same effect are counted, so the end of one does not undo another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    Clog(String, String),
    Down(String),
    Slow(String),
    Full(String),
    Eio(String),
    Refuse(String),
}

fn effects(kind: &FaultKind) -> Vec<(Effect, u64)> {
    match kind {
        FaultKind::Partition { a, b, one_way } => {
            let mut v = vec![(Effect::Clog(a.clone(), b.clone()), 0)];
            if !one_way {
                v.push((Effect::Clog(b.clone(), a.clone()), 0));
            }
            v
        }
        FaultKind::Crash { node }
        | FaultKind::DbDown { node }
        | FaultKind::Corrupt { node, .. } => {
            vec![(Effect::Down(node.clone()), 0)]
        }
        FaultKind::Slow { node, delay_ms } => vec![(Effect::Slow(node.clone()), *delay_ms)],
        FaultKind::DiskFull { node } => vec![(Effect::Full(node.clone()), 0)],
        FaultKind::IoError { node } => vec![(Effect::Eio(node.clone()), 0)],
        FaultKind::DbRefuses { node, one_in } => vec![(Effect::Refuse(node.clone()), *one_in)],
    }
}

fn apply(nodes: &Nodes, kind: &FaultKind, on: bool) {
    let handle = Handle::current();
    let net = NetSim::current();
    for (effect, value) in effects(kind) {
        // The values of every active fault with this effect.
        let remaining = {
            let mut active = lock(&nodes.active);
            let list = active.entry(effect.clone()).or_default();
            if on {
                list.push(value);
                if list.len() > 1 && !matches!(effect, Effect::Slow(_) | Effect::Refuse(_)) {
                    continue; // already in force
                }
            } else {
                if let Some(i) = list.iter().position(|v| *v == value) {
                    list.remove(i);
                }
                if !list.is_empty() && !matches!(effect, Effect::Slow(_) | Effect::Refuse(_)) {
                    continue; // another fault keeps it in force
                }
            }
            list.clone()
        };
        match &effect {
            Effect::Clog(a, b) => {
                let (ip_a, ip_b) = (nodes.ips[a], nodes.ips[b]);
                let (a, b) = (nodes.ids[a], nodes.ids[b]);
                if on {
                    net.clog_link(a, b);
                    nodes.link.cut(ip_a, ip_b);
                } else {
                    net.unclog_link(a, b);
                    nodes.link.heal(ip_a, ip_b);
                }
            }
            Effect::Down(node) => {
                if on {
                    handle.kill(nodes.ids[node]);
                    nodes.shared[node].disk.crash();
                } else {
                    handle.restart(nodes.ids[node]);
                }
            }
            Effect::Slow(node) => {
                let delay = remaining.iter().copied().max().unwrap_or(0);
                lock(&nodes.shared[node].control).slow = Duration::from_millis(delay);
            }
            Effect::Refuse(node) => {
                // The most refusing of the faults in force (0: none).
                let one_in = remaining.iter().copied().min().unwrap_or(0);
                lock(&nodes.shared[node].control).refuse_one_in = one_in;
            }
            Effect::Full(node) => nodes.shared[node].disk.set_full(on),
            Effect::Eio(node) => nodes.shared[node].disk.set_io_error(on),
        }
    }
}

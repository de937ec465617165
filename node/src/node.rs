//! A production node: the actor cores of one server, each hosted by a
//! supervised actix actor, on the TCP frame transport, with stores on disk.
//!
//! The cores run in the one reactor every host shares
//! ([`holdfast_actors::core::reactor`]), which keeps the guarantees of
//! [`holdfast_actors::core::actor`]; this folder gives it production I/O:
//! - `storage`: log stores and the engines of the archive and chat store;
//! - `folders`: the data folder and the compliance export folder;
//! - `cores`: what the cores share;
//! - `adapter`: one actix actor per core, the reactor's `Io`, and how the
//!   node starts them.
//!
//! Queue stores use **group commit**: a persist is appended
//! to its log at once (a killed process keeps it in the page cache) and
//! reported to the core, but every message the actor sends from then on is
//! *held* until an `fsync` covering that append has finished. While one
//! fsync runs, the actor goes on appending; the next fsync covers them all.
//! Nothing leaves the node that depends on data a power cut could lose. If
//! an fsync fails, the actor is restarted from what is on disk and its held
//! messages are dropped, as if the node had crashed just then.
//!
//! A core that panics, a store that cannot be trusted any more, or an fsync
//! that fails restarts **every core of the node** (each by its actix
//! supervisor) from disk, as a crash of the whole server would — the unit of
//! failure the simulator checks. Messages of the previous incarnation still
//! in a mailbox are dropped; timers and held messages are gone; the
//! protocols recover (resends, client retries). Restarts back off.
//!
//! Each core runs on its own actix arbiter (thread), so the front end and
//! its queue, or the archiver and the database, use both cores of a machine.

use crate::config::{Config, LinkMode, NodeConfig};
use crate::file_disk::private_umask;
use crate::path_error::PathError;
use crate::tls::{TlsError, TlsLink};
use holdfast_actors::core::ids::MessageId;
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Msg, RejectReason};
use holdfast_actors::core::settings::Sabotage;
use holdfast_actors::roster::Roster;
use holdfast_host::transport::{outbound_capacity, Link, Network, PlainLink};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use storage::StorageError;
use thiserror::Error;

mod adapter;
mod cores;
mod folders;
mod storage;

pub use adapter::{start_cores, Running};
pub use cores::NodeShared;
pub use folders::export_modes;
use folders::prepare_data_folder;
pub use storage::{open_stores, OpenedStores};

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("node {0:?} is not in the config")]
    UnknownNode(String),
    #[error(transparent)]
    Folder(#[from] PathError),
    /// Another process holds the data folder (or its lock cannot be taken).
    #[error(transparent)]
    Locked(#[from] crate::file_disk::LockError),
    #[error(transparent)]
    Link(#[from] TlsError),
    #[error("cannot open the {kind} store: {source}")]
    Store {
        kind: &'static str,
        source: StorageError,
    },
    #[error("metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Milliseconds since the UNIX epoch: the production clock of the cores.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use holdfast_host::store::store_file;

/// The link a node's config asks for.
pub fn node_link(config: &Config, node: &str) -> Result<Arc<dyn Link>, TlsError> {
    match config.links {
        LinkMode::Plain => Ok(Arc::new(PlainLink)),
        LinkMode::Tls => {
            TlsLink::for_node(&config.certs, node).map(|l| Arc::new(l) as Arc<dyn Link>)
        }
    }
}

/// How long a starting node waits for its cores before it listens anyway.
const CORES_START_WAIT: Duration = Duration::from_secs(10);

/// Client-originated requests a front end that cannot take them turns
/// away with an answer rather than leaving the client to its timeout.
fn client_request(env: &Envelope) -> Option<MessageId> {
    match &env.msg {
        Msg::Archiving(ArchivingMsg::SubmitIm { im }) => Some(im.id.clone()),
        Msg::Archiving(ArchivingMsg::ReportCall { report }) => Some(report.id.clone()),
        _ => None,
    }
}

/// If `env` is a client's IM or call report, answers it refused for
/// `reason` (nothing of it was taken) and says so; anything else is left
/// to the caller.
fn turn_away(net: &Arc<Network>, env: &Envelope, reason: RejectReason) -> bool {
    let Some(id) = client_request(env) else {
        return false;
    };
    let reply = Envelope {
        from: env.to.clone(),
        to: env.from.clone(),
        id: 0,
        msg: Msg::Archiving(ArchivingMsg::ImRejected { id, reason }),
    };
    if let Err(e) = net.send(reply) {
        tracing::debug!(error = %e, "refusal not sent");
    }
    true
}

/// Raises the soft limit on open files to the hard one: every client and
/// peer is a socket, and a soft limit of 1,024 would refuse connections
/// long before the transport's own bounds (1,024 clients, 256 pending,
/// every server peer) are reached.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
            }
        }
    }
}

/// Runs the node `name` of `config` until SIGTERM or SIGINT. Blocks.
///
/// Before it listens, the node makes what it writes private to its user
/// (umask 077), takes the lock of its data folder, checks the folder is
/// writable and opens every store: any of these failing is an error, with
/// the path and the operating system's error.
pub fn run(config: Config, name: &str) -> Result<(), NodeError> {
    let node = config
        .node(name)
        .cloned()
        .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
    private_umask();
    raise_open_files_limit();
    // Held until the process ends; the kernel releases it on any exit.
    let _lock = prepare_data_folder(&config, &node)?;
    let link = node_link(&config, name)?;
    let stores = open_stores(&node)?;
    let system = actix::System::new();
    system.block_on(async move { serve(Arc::new(config), node, link, stores).await })
}

async fn serve(
    config: Arc<Config>,
    node: NodeConfig,
    link: Arc<dyn Link>,
    stores: OpenedStores,
) -> Result<(), NodeError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let net = Network::with_link(
        node.name.clone(),
        config.addresses(),
        tx,
        link,
        outbound_capacity(config.settings.transfer_window),
    );
    net.apply_settings(&config.settings);
    net.set_roles(
        config
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.actors()))
            .collect(),
    );
    let roster = Arc::new(Roster {
        node: node.name.clone(),
        cluster: config.cluster.clone(),
        settings: config.settings.clone(),
        pool: config.pool.clone(),
        sabotage: Sabotage::default(),
    });
    let running = start_cores(config.clone(), node.clone(), net.clone(), roster, stores);
    let (shared, metrics) = (running.shared.clone(), running.shared.metrics.clone());
    if let Some(addr) = node.metrics {
        crate::metrics::serve(addr, metrics.clone(), config.clone())
            .map_err(|source| NodeError::Metrics { addr, source })?;
    }
    // A message that reaches a core before it has started on its store is
    // dropped: a client's request would get no answer at all. The cores
    // start a few milliseconds after they are spawned (later on a loaded
    // machine), so the node listens only once every one of them has. A
    // core that cannot open its store retries for as long as it takes; the
    // node does not wait for it past a bound, so that its other cores
    // serve, and meanwhile that core answers clients busy.
    let waiting_since = std::time::Instant::now();
    while !metrics.all_started() {
        if waiting_since.elapsed() > CORES_START_WAIT {
            tracing::warn!(node = %node.name, "listening before every core started (see /readyz); clients of a core not started are answered busy");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    net.listen(node.listen)
        .await
        .map_err(|source| NodeError::Listen {
            addr: node.listen,
            source,
        })?;
    let metrics = node.metrics.map_or("none".to_string(), |a| a.to_string());
    let roles: Vec<&str> = node.roles.iter().map(|r| r.as_str()).collect();
    let links = match config.links {
        LinkMode::Plain => "plain",
        LinkMode::Tls => "tls",
    };
    tracing::info!(node = %node.name, listen = %node.listen, metrics, roles = %roles.join(","), links, "node started");
    // Whatever the log level: `cluster up` and supervisors wait for it.
    println!("{}", crate::cluster_up::ready_line(&node.name, node.listen));

    // Route every inbound envelope to its core.
    let router_shared = shared.clone();
    actix_rt::spawn(async move {
        while let Some(env) = rx.recv().await {
            let arrived = router_shared.net.consumed(&env);
            if router_shared.stopping.load(Ordering::Relaxed)
                && turn_away(&router_shared.net, &env, RejectReason::NodeStopping)
            {
                continue;
            }
            let generation = router_shared.generation.load(Ordering::SeqCst);
            router_shared.deliver(env, generation, arrived);
        }
    });

    wait_for_stop_signal().await;
    tracing::info!(node = %node.name, "stopping: turning clients away and flushing");
    shared.stopping.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut quiet = 0;
    loop {
        let pending = running.pending();
        // Quiet for several samples in a row: a message between two cores
        // is not mistaken for the end.
        quiet = if pending == 0 { quiet + 1 } else { 0 };
        if quiet >= 5 || tokio::time::Instant::now() > deadline {
            if pending > 0 {
                tracing::warn!(node = %node.name, pending, "stopping with messages still held; peers recover them");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the connection writers hand the last frames to the kernel.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tracing::info!(node = %node.name, "stopped");
    actix::System::current().stop();
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop the node with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

//! The production adapter of the reactor: one actix actor per core, on its
//! own arbiter, whose [`Io`] is the node's disk and network.
//!
//! The reactor ([`holdfast_actors::reactor`]) runs the core and keeps the
//! contract; this file only executes I/O and turns the reactor's requests
//! into actix terms: one actix timer armed for the reactor's earliest
//! deadline, an fsync on a blocking thread when the reactor asks for one
//! (group commit), and a restart of every core of the node when the
//! reactor stops (a panic, a store that cannot be trusted, a failed fsync).

use super::cores::{Deliver, NodeShared};
use super::folders::{remove_export, write_export};
use super::storage::OpenedStores;
use super::storage::{Applied, Storage};
use super::{now_ms, store_file};
use crate::config::{Config, NodeConfig};
use crate::metrics::Metrics;
use actix::prelude::*;
use holdfast_actors::core::actor::{Actor as Core, Event, Recovered, StoreError, StoreOp};
use holdfast_actors::core::engine::{Answer, Query};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::operator::{OperatorEvent, Severity};
use holdfast_actors::core::output::OutputFile;
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Msg, RejectReason};
use holdfast_actors::core::reactor::Cores;
use holdfast_actors::core::reactor::{ready, Input, Io, Persisted, Reactor};
use holdfast_actors::core::store_keys::STORE_DAMAGED;
use holdfast_host::transport::Network;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

/// Hosts one core: a one-slot reactor on its own arbiter, over the node's
/// disk and network.
pub struct CoreActor {
    shared: Arc<NodeShared>,
    kind: ActorKind,
    reactor: Reactor<Box<dyn Core>>,
    storage: Option<Storage>,
    /// The actix timer armed for the reactor's earliest deadline.
    alarm: Option<(u64, SpawnHandle)>,
    /// Held messages + owed fsyncs, for the graceful stop.
    pending: Arc<AtomicU64>,
    /// The node incarnation this core belongs to.
    generation: u64,
    /// The store as the node opened it before listening, for the first
    /// start (a restart opens it again).
    opened: Option<(Storage, Recovered)>,
    /// Restarts in a row, for the backoff.
    restarts: u32,
    started_at: std::time::Instant,
}

/// A fresh one-slot reactor for a core of `kind` (at start and after a
/// restart): catches a core's panic (the node restarts), seeds the core's
/// random numbers from the OS.
fn reactor(shared: &NodeShared, kind: ActorKind) -> Reactor<Box<dyn Core>> {
    let mut r = Reactor::new(true);
    r.add(
        Addr::new(shared.node.name.clone(), kind),
        shared.roster.core(kind),
        SmallRng::from_entropy(),
    );
    r
}

/// The production node's side of the reactor for one core.
struct NodeIo<'a> {
    shared: &'a NodeShared,
    kind: ActorKind,
    storage: &'a mut Option<Storage>,
    generation: u64,
}

impl Io for NodeIo<'_> {
    fn now(&mut self) -> u64 {
        now_ms()
    }

    fn send(&mut self, env: Envelope) {
        if env.to.node == self.shared.node.name {
            // Local: straight to the sibling core, stamped with this
            // incarnation (a message of a crashed incarnation is dropped).
            self.shared.deliver(env, self.generation, None);
            return;
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(node = %self.shared.node.name, to = %env.to, msg = %brief(&env.msg), "send");
        }
        let metrics = &self.shared.metrics;
        metrics.count_answer(&env.to.node, &env.msg);
        if let Msg::Archiving(ArchivingMsg::LogMessages { batch, records }) = &env.msg {
            metrics.batch_sent(*batch, records.len());
        }
        if let Err(e) = self.shared.net.send(env) {
            tracing::debug!(node = %self.shared.node.name, error = %e, "message not sent");
        }
    }

    async fn persist(&mut self, _slot: usize, ops: Vec<StoreOp>) -> Persisted {
        let applied = match self.storage.as_mut() {
            Some(s) => s.apply(ops),
            None => Applied::Failed(StoreError::Io("store not open".into())),
        };
        match applied {
            Applied::Done {
                written,
                fsync_owed: true,
            } => Persisted::Appended(written),
            Applied::Done {
                written,
                fsync_owed: false,
            } => Persisted::Durable(written),
            Applied::Failed(e) => {
                self.shared.metrics.count_store_error();
                tracing::warn!(node = %self.shared.node.name, actor = self.kind.as_str(), error = %e, "persist failed");
                Persisted::Failed(e)
            }
            Applied::Fatal(why) => Persisted::Fatal(why),
        }
    }

    async fn load(&mut self, _slot: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        match self.storage.as_ref() {
            Some(s) => s.load(&key),
            None => Err(StoreError::Io("store not open".into())),
        }
    }

    async fn query(&mut self, _slot: usize, query: Query) -> Result<Answer, StoreError> {
        match self.storage.as_mut() {
            Some(s) => s.query(&query),
            None => Err(StoreError::Io("store not open".into())),
        }
    }

    async fn output(&mut self, _slot: usize, files: Vec<OutputFile>) -> Result<(), StoreError> {
        let result = write_export(&self.shared.config, &files);
        if let Err(e) = &result {
            tracing::warn!(node = %self.shared.node.name, error = %e, "compliance export not written");
        }
        result
    }

    async fn remove_output(&mut self, _slot: usize, names: Vec<String>) -> Result<(), StoreError> {
        let result = remove_export(&self.shared.config, &names);
        if let Err(e) = &result {
            tracing::warn!(node = %self.shared.node.name, error = %e, "acknowledged compliance batch not removed");
        }
        result
    }

    fn event(&mut self, _slot: usize, ev: Event) {
        self.shared.metrics.count_event(ev.kind);
        log_event(&self.shared.node.name, ev.kind, &ev.detail);
    }
}

impl CoreActor {
    pub(crate) fn new(
        shared: Arc<NodeShared>,
        kind: ActorKind,
        pending: Arc<AtomicU64>,
        opened: Option<(Storage, Recovered)>,
    ) -> CoreActor {
        CoreActor {
            reactor: reactor(&shared, kind),
            shared,
            kind,
            storage: None,
            alarm: None,
            pending,
            generation: 0,
            opened,
            restarts: 0,
            started_at: std::time::Instant::now(),
        }
    }

    /// Whether another core of the node crashed since this one started.
    fn stale(&self) -> bool {
        self.shared.generation.load(Ordering::SeqCst) != self.generation
    }

    fn name(&self) -> &str {
        &self.shared.node.name
    }

    fn io(&mut self) -> (&mut Reactor<Box<dyn Core>>, NodeIo<'_>) {
        (
            &mut self.reactor,
            NodeIo {
                shared: &self.shared,
                kind: self.kind,
                storage: &mut self.storage,
                generation: self.generation,
            },
        )
    }

    /// Runs one reaction of the core (or the timers due) through the
    /// reactor. The production I/O never waits; a reactor that would, or
    /// that stops (a panic, a store that cannot be trusted), restarts the
    /// node's cores from disk.
    fn react(&mut self, ctx: &mut Context<Self>, input: Option<Input>) {
        if self.stale() {
            ctx.stop();
            return;
        }
        let (reactor, mut io) = self.io();
        let done = match input {
            Some(input) => ready(reactor.react(0, input, &mut io)),
            None => ready(reactor.fire_due(now_ms(), &mut io)),
        };
        match done {
            Some(Ok(())) => self.after(ctx),
            Some(Err(stop)) => self.crashed(ctx, &stop.to_string()),
            None => self.crashed(ctx, "the store would block"),
        }
    }

    /// After a reaction: start a group-commit fsync if one is owed, arm the
    /// actix timer for the reactor's earliest deadline, publish what is
    /// pending.
    fn after(&mut self, ctx: &mut Context<Self>) {
        self.start_sync(ctx);
        let next = self.reactor.next_timer().map(|(at, ..)| at);
        if self.alarm.as_ref().map(|(at, _)| *at) != next {
            if let Some((_, h)) = self.alarm.take() {
                ctx.cancel_future(h);
            }
            if let Some(at) = next {
                let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                let h = ctx.run_later(wait, |act, ctx| {
                    act.alarm = None;
                    act.react(ctx, None);
                });
                self.alarm = Some((at, h));
            }
        }
        self.pending
            .store(self.reactor.pending(0), Ordering::Relaxed);
    }

    /// Starts an fsync for everything appended so far, unless one runs.
    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        let Some(Storage::Log { disk, .. }) = &self.storage else {
            return;
        };
        let file = store_file(self.kind);
        let handle = disk.sync_handle(&file);
        let Some(upto) = self.reactor.sync_wanted(0) else {
            return;
        };
        let handle = match handle {
            Ok(h) => h,
            Err(e) => {
                self.crashed(ctx, &format!("cannot open the store for fsync: {e}"));
                return;
            }
        };
        let fut = async move {
            match tokio::task::spawn_blocking(move || handle.sync_data()).await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            if act.stale() {
                ctx.stop();
                return;
            }
            match result {
                Ok(()) => {
                    act.shared.metrics.count_fsync();
                    let (reactor, mut io) = act.io();
                    reactor.synced(0, upto, &mut io);
                    act.after(ctx);
                }
                Err(e) => act.crashed(ctx, &format!("fsync failed: {e}")),
            }
        }));
    }

    /// Restarts every core of the node from disk: this one now, the others
    /// as soon as they notice the new incarnation.
    fn crashed(&mut self, ctx: &mut Context<Self>, why: &str) {
        tracing::error!(node = %self.name(), actor = self.kind.as_str(), why, "the node's cores restart from their persisted state");
        self.shared.metrics.count_restart();
        let _ = self.shared.generation.compare_exchange(
            self.generation,
            self.generation + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        ctx.stop();
    }

    /// Opens the store and starts the core (at start and after a restart).
    fn open_and_start(&mut self, ctx: &mut Context<Self>) {
        if self.shared.cores.get().is_none() {
            // The node is still starting its other cores: a message this
            // core sends at start must find them.
            ctx.run_later(Duration::from_millis(5), |act, ctx| act.open_and_start(ctx));
            return;
        }
        self.generation = self.shared.generation.load(Ordering::SeqCst);
        self.started_at = std::time::Instant::now();
        let opened = match self.opened.take() {
            Some(opened) => Ok(opened),
            None => Storage::open(&self.shared.node, self.kind)
                .and_then(|mut s| s.recovered().map(|r| (s, r))),
        };
        let (storage, recovered) = match opened {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(node = %self.name(), actor = self.kind.as_str(), error = %e, "cannot open store; retrying");
                ctx.stop();
                return;
            }
        };
        if let Some(detail) = recovered.get(STORE_DAMAGED) {
            // An operator event like the cores' (counted, logged at WARN):
            // the store found damage, kept its bytes and recovered the rest.
            let kind = OperatorEvent::StoreDamaged;
            self.shared.metrics.count_event(kind);
            log_event(self.name(), kind, &String::from_utf8_lossy(detail));
        }
        self.storage = Some(storage);
        self.react(ctx, Some(Input::Start(recovered)));
        if self.storage.is_some() && !self.stale() {
            self.shared.metrics.set_started(self.kind, true);
        }
    }
}

impl Actor for CoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // After a restart, wait a little longer each time in a row, so that
        // a core that fails at start does not spin.
        if self.restarts == 0 {
            self.open_and_start(ctx);
        } else {
            let delay =
                Duration::from_millis(50u64 << self.restarts.min(7)).min(Duration::from_secs(5));
            ctx.run_later(delay, |act, ctx| act.open_and_start(ctx));
        }
        let metrics = self.shared.metrics.clone();
        let actor = self.kind;
        ctx.run_interval(Duration::from_secs(1), move |act, _| {
            metrics.set_gauges(actor, act.reactor.core(0).gauges());
        });
        // An idle core must notice a sibling's crash too.
        ctx.run_interval(Duration::from_millis(50), |act, ctx| {
            if act.storage.is_some() && act.stale() {
                ctx.stop();
            }
        });
    }
}

impl Supervised for CoreActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // A core that ran a while before failing starts its backoff afresh.
        if self.started_at.elapsed() > Duration::from_secs(30) {
            self.restarts = 0;
        }
        self.restarts += 1;
        // A fresh core and reactor: timers and held messages are gone.
        self.reactor = reactor(&self.shared, self.kind);
        self.shared.metrics.set_started(self.kind, false);
        self.storage = None;
        self.alarm = None;
        self.pending.store(0, Ordering::Relaxed);
    }
}

impl Handler<Deliver> for CoreActor {
    type Result = ();

    fn handle(&mut self, Deliver(env, generation, arrived): Deliver, ctx: &mut Context<Self>) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if generation < self.generation {
            // Sent by a crashed incarnation of a sibling: its sender is gone.
            return;
        }
        if self.storage.is_none() {
            // Between a failed open and the retry, or while the core
            // restarts after a crash. A client's request is answered busy
            // (nothing of it was taken; it may send again) rather than left
            // to its timeout; a peer's protocol resends the rest.
            if super::turn_away(&self.shared.net, &env, RejectReason::Busy) {
                tracing::debug!(node = %self.name(), msg = env.msg.name(), "core not started; client answered busy");
            } else {
                tracing::debug!(node = %self.name(), msg = env.msg.name(), "core not started; message dropped");
            }
            return;
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(node = %self.name(), from = %env.from, msg = %brief(&env.msg), "receive");
        }
        match &env.msg {
            Msg::Archiving(ArchivingMsg::SubmitIm { im }) => {
                self.shared.metrics.im_submitted(&env.from.node, &im.id)
            }
            Msg::Archiving(
                ArchivingMsg::Logged { batch } | ArchivingMsg::LogFailed { batch, .. },
            ) => self.shared.metrics.batch_answered(*batch),
            _ => {}
        }
        self.react(
            ctx,
            Some(Input::Msg {
                from: env.from,
                msg: env.msg,
                // The inbox and this core's mailbox: where a saturated
                // node's backlog waits.
                waited: arrived.map_or(0, |at| at.elapsed().as_millis() as u64),
            }),
        );
    }
}

/// A message in a trace line: its name and its sequence numbers, never its
/// content.
fn brief(msg: &holdfast_actors::core::protocol::Msg) -> String {
    use holdfast_actors::core::protocol::{ArchivingMsg, Msg};
    match msg {
        Msg::Archiving(ArchivingMsg::Transfer { seq, .. }) => format!("Transfer {seq}"),
        Msg::Archiving(ArchivingMsg::Probe { seq, probe, .. }) => format!("Probe {seq} #{probe}"),
        Msg::Archiving(ArchivingMsg::TransferAck { upto }) => format!("TransferAck {upto}"),
        Msg::Archiving(ArchivingMsg::ProbeAck { upto, probe }) => {
            format!("ProbeAck {upto} #{probe}")
        }
        Msg::Archiving(ArchivingMsg::HeartbeatAck { id }) => format!("HeartbeatAck {id}"),
        other => other.name().to_string(),
    }
}

/// A node's cores, running in the current actix system.
pub struct Running {
    pub shared: Arc<NodeShared>,
    pendings: Vec<Arc<AtomicU64>>,
    _arbiters: Vec<Arbiter>,
}

impl Running {
    /// Messages held for an fsync, fsyncs owed and messages between cores:
    /// zero when the node may stop without leaving work behind.
    pub fn pending(&self) -> u64 {
        self.pendings
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.shared.in_flight.load(Ordering::Relaxed)
    }
}

/// Starts the cores of `node`, built by `cores`, each supervised on its
/// own arbiter, over `net` and the stores [`open_stores`] opened. What
/// `run` does before it listens; the contract suite starts probe cores
/// with it.
pub fn start_cores(
    config: Arc<Config>,
    node: NodeConfig,
    net: Arc<Network>,
    cores: Arc<dyn Cores>,
    OpenedStores(mut stores): OpenedStores,
) -> Running {
    let metrics = Arc::new(Metrics::new(
        &node,
        &config.settings,
        net.clone(),
        config.ready_peers(&node),
    ));
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        node: node.clone(),
        net: net.clone(),
        metrics,
        stopping: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        cores: OnceLock::new(),
        roster: cores,
    });
    let mut actors: BTreeMap<ActorKind, Recipient<Deliver>> = BTreeMap::new();
    let mut pendings = Vec::new();
    let mut arbiters = Vec::new();
    for kind in node.actors() {
        let pending = Arc::new(AtomicU64::new(0));
        pendings.push(pending.clone());
        let s = shared.clone();
        let opened = stores.remove(&kind);
        let arbiter = Arbiter::new();
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| {
            CoreActor::new(s, kind, pending, opened)
        });
        arbiters.push(arbiter);
        actors.insert(kind, addr.recipient());
    }
    let _ = shared.cores.set(actors);
    Running {
        shared,
        pendings,
        _arbiters: arbiters,
    }
}

/// An operator event in the log, at the level its severity says, with the
/// stable name in the `event` field.
fn log_event(node: &str, kind: OperatorEvent, detail: &str) {
    let event = kind.name();
    match kind.severity() {
        Severity::Info => tracing::info!(node, event, detail, "operator event"),
        Severity::Warn => tracing::warn!(node, event, detail, "operator event"),
        Severity::Error => tracing::error!(node, event, detail, "operator event"),
    }
}

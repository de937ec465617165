//! A production node: the actor cores of one server, each hosted by a
//! supervised actix actor, on the TCP frame transport, with stores on disk.
//!
//! The host keeps the guarantees of [`holdfast_actors::core::actor`]: effects of a
//! reaction run in order, and a persist's result reaches the core before
//! anything else. Queue stores use **group commit**: a persist is appended
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

use crate::archive_db::ArchiveDb;
use crate::blob_files::BlobFiles;
use crate::chat_db::ChatDb;
use crate::config::{Config, LinkMode, NodeConfig, Role};
use crate::file_disk::{
    check_writable, create_private_dir, lock_folder, make_private, now_or_never, private_umask,
    set_mode, write_file_atomically, FileDisk, FolderLock, Tightened,
};
use crate::metrics::Metrics;
use crate::tls::TlsLink;
use actix::prelude::*;
use holdfast_actors::archiving::archiver::Archiver;
use holdfast_actors::archiving::database::Database;
use holdfast_actors::archiving::destination_queue::DestinationQueue;
use holdfast_actors::archiving::front_end::FrontEnd;
use holdfast_actors::archiving::outgoing_queue::OutgoingQueue;
use holdfast_actors::chat::channel::Channel;
use holdfast_actors::chat::chat_store::ChatStore;
use holdfast_actors::chat::lookup::Lookup;
use holdfast_actors::chat::web_files::{WebFiles, FILE_BLOB};
use holdfast_actors::compliance::service::Compliance;
use holdfast_actors::core::actor::{
    Actor as Core, Ctx, Effect, Recovered, StoreError, StoreOp, Timer,
};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::{Envelope, Msg, RejectReason};
use holdfast_actors::core::settings::Sabotage;
use holdfast_actors::core::store_keys::STORE_DAMAGED;
use holdfast_host::liveness::Liveness;
use holdfast_host::store::LogStore;
use holdfast_host::transport::{outbound_capacity, Link, Network, PlainLink};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("node {0:?} is not in the config")]
    UnknownNode(String),
    #[error("{0}")]
    Setup(String),
}

/// Milliseconds since the UNIX epoch: the production clock of the cores.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// File of an actor's queue store in the node's data folder.
pub fn store_file(kind: ActorKind) -> String {
    format!("{}.log", kind.as_str())
}

/// Where a core's durable state lives.
enum Storage {
    /// A queue store: log on disk, fsync by group commit.
    Log {
        store: LogStore,
        disk: Arc<FileDisk>,
        /// The Web service's file contents (`b/` keys), one file each.
        blobs: Option<BlobFiles>,
        /// What opening found damaged and set aside (empty for a sound
        /// log): told to the core and to the operator at its start.
        damaged: String,
    },
    /// The archive database: SQLite, durable at each commit.
    Archive(ArchiveDb),
    /// The chat store: SQLite, durable at each commit.
    Chat(ChatDb),
}

impl Storage {
    fn open(node: &NodeConfig, kind: ActorKind) -> Result<Storage, String> {
        if kind == ActorKind::Database {
            let path = node.archive_path();
            return ArchiveDb::open(&path)
                .map(Storage::Archive)
                .map_err(|e| e.to_string());
        }
        if kind == ActorKind::ChatStore {
            return ChatDb::open(&node.chat_path()).map(Storage::Chat);
        }
        let disk = FileDisk::new(&node.data)
            .map_err(|e| format!("{}: cannot use data folder: {e}", node.data.display()))?;
        let file = store_file(kind);
        let mut store = LogStore::open(&disk, &file)
            .map_err(|e| format!("{}: {e}", node.data.join(&file).display()))?;
        // Damage is set aside (kept in `<file>.damaged`) and the log
        // rewritten without it before the core starts; then the store takes
        // its reserve of free space, if the disk has room.
        let damage = now_or_never(store.repair(&disk))
            .unwrap_or_else(|| Err(StoreError::Io("the store would block".into())))
            .map_err(|e| {
                format!(
                    "{}: cannot set damage aside: {e}",
                    node.data.join(&file).display()
                )
            })?;
        let damaged = if damage.is_empty() {
            String::new()
        } else {
            // The damaged bytes are kept for the investigation: make them
            // as durable as the log rewritten without them.
            let quarantine = LogStore::quarantine_file(&file);
            disk.sync_file(&quarantine).map_err(|e| {
                format!(
                    "{}: cannot sync: {e}",
                    node.data.join(&quarantine).display()
                )
            })?;
            let stretches: Vec<String> = damage
                .iter()
                .map(|d| format!("{} bytes at {}", d.len, d.offset))
                .collect();
            format!(
                "{}: {} unreadable, kept in {}; the batches after it were recovered",
                node.data.join(&file).display(),
                stretches.join(", "),
                LogStore::quarantine_file(&file)
            )
        };
        let _ = now_or_never(store.take_reserve(&disk));
        // What a previous process appended may be in the page cache only:
        // make it durable before acting on it.
        disk.sync_file(&file)
            .map_err(|e| format!("{}: cannot sync: {e}", node.data.join(&file).display()))?;
        let blobs = if kind == ActorKind::Web {
            Some(BlobFiles::open(&node.data.join("files"))?)
        } else {
            None
        };
        Ok(Storage::Log {
            store,
            disk: Arc::new(disk),
            blobs,
            damaged,
        })
    }

    fn recovered(&self) -> Result<Recovered, String> {
        match self {
            Storage::Log { store, damaged, .. } => {
                let mut state = store.take_state();
                if !damaged.is_empty() {
                    state.insert(STORE_DAMAGED.to_vec(), damaged.clone().into_bytes());
                }
                Ok(state)
            }
            Storage::Archive(db) => db.recovered().map_err(|e| e.to_string()),
            Storage::Chat(db) => db.recovered(),
        }
    }

    /// Reads one key (a `Load` effect).
    fn load(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Storage::Log {
                blobs: Some(blobs), ..
            } if key.starts_with(FILE_BLOB) => blobs.get(key),
            Storage::Log { store, .. } => Ok(store.state().get(key).cloned()),
            Storage::Archive(_) | Storage::Chat(_) => {
                Err(StoreError::Io("this store does not serve loads".into()))
            }
        }
    }

    /// Applies a batch.
    fn apply(&mut self, mut ops: Vec<StoreOp>) -> Applied {
        if let Storage::Log {
            blobs: Some(blobs), ..
        } = self
        {
            // File contents first, each durable on its own, so that the
            // log never names a file that is not on disk.
            let (blob_ops, rest): (Vec<StoreOp>, Vec<StoreOp>) =
                ops.into_iter().partition(|op| match op {
                    StoreOp::Put { key, .. } | StoreOp::Delete { key } => {
                        key.starts_with(FILE_BLOB)
                    }
                });
            let mut written = Vec::new();
            for op in blob_ops {
                let result = match &op {
                    StoreOp::Put { key, value } => blobs.put(key, value).map(|()| {
                        written.push(key.clone());
                    }),
                    StoreOp::Delete { key } => blobs.delete(key),
                };
                if let Err(e) = result {
                    // Nothing of the batch is acknowledged: drop what it
                    // wrote, so that a refused upload leaves no file.
                    for key in written {
                        let _ = blobs.delete(&key);
                    }
                    return Applied::Failed(e);
                }
            }
            if rest.is_empty() {
                return Applied::Done { fsync_owed: false };
            }
            ops = rest;
        }
        match self {
            Storage::Log { store, disk, .. } => {
                let result = now_or_never(store.apply(disk.as_ref(), ops))
                    .unwrap_or_else(|| Err(StoreError::Io("the store would block".into())));
                if let Some(why) = disk.take_broken() {
                    return Applied::Fatal(why);
                }
                if store.is_poisoned() {
                    return Applied::Fatal(
                        "a failed write could not be cut off; the store must be reopened".into(),
                    );
                }
                match result {
                    Ok(()) => Applied::Done { fsync_owed: true },
                    Err(e) => Applied::Failed(e),
                }
            }
            Storage::Archive(db) => match db.apply(&ops) {
                Ok(()) => Applied::Done { fsync_owed: false },
                Err(e) => Applied::Failed(e),
            },
            Storage::Chat(db) => match db.apply(&ops) {
                Ok(()) => Applied::Done { fsync_owed: false },
                Err(e) => Applied::Failed(e),
            },
        }
    }
}

enum Applied {
    Done {
        fsync_owed: bool,
    },
    /// Reported to the core (a full disk, an I/O error it can react to).
    Failed(StoreError),
    /// The store cannot be trusted until reopened: restart the node's cores.
    Fatal(String),
}

/// What every actor of a node shares.
pub struct NodeShared {
    pub config: Arc<Config>,
    pub node: NodeConfig,
    pub net: Arc<Network>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: clients are turned away, the node drains and exits.
    pub stopping: AtomicBool,
    /// Incarnation of the node's cores; a crash of one bumps it and every
    /// core restarts.
    pub generation: AtomicU64,
    /// `Deliver` messages sent to cores and not yet handled.
    pub in_flight: AtomicU64,
    /// The cores, for delivering local messages without the network.
    pub cores: OnceLock<BTreeMap<ActorKind, actix::Addr<CoreActor>>>,
}

impl NodeShared {
    /// Hands `env` to the core it is for, stamped with `generation`.
    fn deliver(&self, env: Envelope, generation: u64) {
        match self.cores.get().and_then(|c| c.get(&env.to.actor)) {
            Some(a) => {
                self.in_flight.fetch_add(1, Ordering::Relaxed);
                a.do_send(Deliver(env, generation));
            }
            None => {
                tracing::warn!(node = %self.node.name, to = %env.to, from = %env.from, "no such actor on this node; message dropped")
            }
        }
    }
}

/// What a core reacts to. Short-lived (one per reaction, on the stack):
/// its size does not matter, and boxing the envelope would cost an
/// allocation per message.
#[allow(clippy::large_enum_variant)]
enum Input {
    Start(Recovered),
    Msg(Envelope),
    Timer(Timer),
}

/// An envelope for one core, from the node incarnation that routed it.
#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(Envelope, u64);

/// Hosts one core.
pub struct CoreActor {
    shared: Arc<NodeShared>,
    kind: ActorKind,
    me: Addr,
    core: Box<dyn Core>,
    storage: Option<Storage>,
    rng: SmallRng,
    timers: BTreeMap<Timer, SpawnHandle>,
    /// Messages waiting for an fsync: `(append generation, envelope)`.
    held: VecDeque<(u64, Envelope)>,
    appended: u64,
    synced: u64,
    syncing: bool,
    /// Held messages + owed fsyncs, for the graceful stop.
    pending: Arc<AtomicU64>,
    envelope_seq: u64,
    /// The node incarnation this core belongs to.
    generation: u64,
    /// The store as the node opened it before listening, for the first
    /// start (a restart opens it again).
    opened: Option<(Storage, Recovered)>,
    /// Restarts in a row, for the backoff.
    restarts: u32,
    started_at: std::time::Instant,
}

fn make_core(shared: &NodeShared, kind: ActorKind) -> Box<dyn Core> {
    let n = shared.node.name.clone();
    let c = shared.config.cluster.clone();
    let s = shared.config.settings.clone();
    match kind {
        ActorKind::FrontEnd => Box::new(FrontEnd::new(n, c, s)),
        ActorKind::OutgoingQueue => Box::new(OutgoingQueue::new(n, c, s)),
        ActorKind::DestinationQueue => Box::new(DestinationQueue::new(n, c, s)),
        ActorKind::Archiver => Box::new(Archiver::new(n, c, s)),
        ActorKind::Database => Box::new(Database::new(n, Sabotage::default())),
        ActorKind::Lookup => Box::new(Lookup::new(n, shared.config.pool.clone(), s)),
        ActorKind::Channel => Box::new(Channel::new(n, shared.config.pool.clone(), s)),
        ActorKind::ChatStore => Box::new(
            ChatStore::new(n, shared.config.pool.rooms.clone())
                .with_compliance(shared.config.pool.compliance.clone()),
        ),
        ActorKind::Web => Box::new(
            WebFiles::new(n, shared.config.pool.clone(), s)
                .with_compliance(shared.config.pool.compliance.clone()),
        ),
        ActorKind::Compliance => Box::new(Compliance::new(
            n,
            shared.config.pool.export.clone(),
            s.compliance_interval,
        )),
        ActorKind::Client => unreachable!("clients are not hosted by server nodes"),
    }
}

impl CoreActor {
    fn new(
        shared: Arc<NodeShared>,
        kind: ActorKind,
        pending: Arc<AtomicU64>,
        opened: Option<(Storage, Recovered)>,
    ) -> CoreActor {
        let me = Addr::new(shared.node.name.clone(), kind);
        CoreActor {
            core: make_core(&shared, kind),
            shared,
            kind,
            me,
            storage: None,
            rng: SmallRng::from_entropy(),
            timers: BTreeMap::new(),
            held: VecDeque::new(),
            appended: 0,
            synced: 0,
            syncing: false,
            pending,
            envelope_seq: 0,
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

    fn update_pending(&self) {
        let owed = u64::from(self.appended > self.synced);
        self.pending
            .store(self.held.len() as u64 + owed, Ordering::Relaxed);
    }

    fn send(&mut self, to: Addr, msg: Msg) {
        self.envelope_seq += 1;
        let env = Envelope {
            from: self.me.clone(),
            to,
            id: self.envelope_seq,
            msg,
        };
        if self.appended > self.synced || !self.held.is_empty() {
            self.held.push_back((self.appended, env));
        } else {
            self.transmit(env);
        }
    }

    fn transmit(&self, env: Envelope) {
        if env.to.node == self.me.node {
            // Local: straight to the sibling core, stamped with this
            // incarnation (a message of a crashed incarnation is dropped).
            self.shared.deliver(env, self.generation);
            return;
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(node = %self.name(), to = %env.to, msg = %brief(&env.msg), "send");
        }
        if let Err(e) = self.shared.net.send(env) {
            tracing::debug!(node = %self.name(), error = %e, "message not sent");
        }
    }

    /// Runs one reaction of the core and executes its effects in order. A
    /// panic in the core stops this actor; the supervisor restarts it from
    /// disk.
    fn react(&mut self, ctx: &mut Context<Self>, input: Input) {
        if self.stale() {
            ctx.stop();
            return;
        }
        let now = now_ms();
        let effects = {
            let (core, me, rng) = (&mut self.core, &self.me, &mut self.rng);
            catch_unwind(AssertUnwindSafe(|| {
                let mut c = Ctx::new(now, me, rng);
                match input {
                    Input::Start(recovered) => core.on_start(recovered, &mut c),
                    Input::Msg(env) => core.on_msg(env.from, env.msg, &mut c),
                    Input::Timer(t) => core.on_timer(t, &mut c),
                }
                c.into_effects()
            }))
        };
        let Ok(effects) = effects else {
            self.crashed(ctx, "the core panicked");
            return;
        };
        let mut queue: VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Send { to, msg } => self.send(to, msg),
                Effect::SetTimer { timer, after } => {
                    if let Some(h) = self.timers.remove(&timer) {
                        ctx.cancel_future(h);
                    }
                    let h = ctx.run_later(Duration::from_millis(after), move |act, ctx| {
                        act.timers.remove(&timer);
                        act.react(ctx, Input::Timer(timer));
                    });
                    self.timers.insert(timer, h);
                }
                Effect::CancelTimer { timer } => {
                    if let Some(h) = self.timers.remove(&timer) {
                        ctx.cancel_future(h);
                    }
                }
                Effect::Persist { token, ops } => {
                    let applied = match self.storage.as_mut() {
                        Some(s) => s.apply(ops),
                        None => Applied::Failed(StoreError::Io("store not open".into())),
                    };
                    let result = match applied {
                        Applied::Done { fsync_owed } => {
                            if fsync_owed {
                                self.appended += 1;
                            }
                            Ok(())
                        }
                        Applied::Failed(e) => Err(e),
                        Applied::Fatal(why) => {
                            self.crashed(ctx, &why);
                            return;
                        }
                    };
                    if let Err(e) = &result {
                        self.shared.metrics.count_store_error();
                        tracing::warn!(node = %self.name(), actor = self.kind.as_str(), error = %e, "persist failed");
                    }
                    let done =
                        |core: &mut Box<dyn Core>, c: &mut Ctx| core.on_persisted(token, result, c);
                    if !self.complete(ctx, &mut queue, done) {
                        return;
                    }
                }
                Effect::Output { token, files } => {
                    let config = &self.shared.config;
                    let result = match &config.compliance_output {
                        Some(dir) => {
                            let (_, file_mode) = export_modes(config.compliance_group_read);
                            export_folder(dir, config.compliance_group_read)
                                .map_err(|e| export_error(dir, e))
                                .and_then(|()| {
                                    // In order: the manifest comes last.
                                    files.iter().try_for_each(|f| {
                                        let path = dir.join(&f.name);
                                        write_file_atomically(&path, &f.data, file_mode)
                                            .map_err(|e| export_error(&path, e))
                                    })
                                })
                        }
                        None => Err(StoreError::Io("no [compliance] output folder".into())),
                    };
                    if let Err(e) = &result {
                        tracing::warn!(node = %self.name(), error = %e, "compliance export not written");
                    }
                    let done =
                        |core: &mut Box<dyn Core>, c: &mut Ctx| core.on_output(token, result, c);
                    if !self.complete(ctx, &mut queue, done) {
                        return;
                    }
                }
                Effect::Load { token, key } => {
                    let result = match self.storage.as_ref() {
                        Some(s) => s.load(&key),
                        None => Err(StoreError::Io("store not open".into())),
                    };
                    let done =
                        |core: &mut Box<dyn Core>, c: &mut Ctx| core.on_loaded(token, result, c);
                    if !self.complete(ctx, &mut queue, done) {
                        return;
                    }
                }
                Effect::Event(ev) => {
                    self.shared.metrics.count_event(ev.kind);
                    tracing::info!(node = %self.name(), event = ev.kind.name(), detail = %ev.detail, "operator event");
                }
            }
        }
        self.start_sync(ctx);
        self.update_pending();
    }

    /// Reports a completion (persist, load, output) to the core; its
    /// effects run before the rest of the reaction's, and before any other
    /// event. `false` if the core panicked (the node is restarting).
    fn complete(
        &mut self,
        ctx: &mut Context<Self>,
        queue: &mut VecDeque<Effect>,
        done: impl FnOnce(&mut Box<dyn Core>, &mut Ctx),
    ) -> bool {
        let now = now_ms();
        let (core, me, rng) = (&mut self.core, &self.me, &mut self.rng);
        let more = catch_unwind(AssertUnwindSafe(|| {
            let mut c = Ctx::new(now, me, rng);
            done(core, &mut c);
            c.into_effects()
        }));
        let Ok(more) = more else {
            self.crashed(ctx, "the core panicked");
            return false;
        };
        for e in more.into_iter().rev() {
            queue.push_front(e);
        }
        true
    }

    /// Starts an fsync for everything appended so far, unless one runs.
    fn start_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || self.appended == self.synced {
            return;
        }
        let Some(Storage::Log { disk, .. }) = &self.storage else {
            return;
        };
        let handle = match disk.sync_handle(&store_file(self.kind)) {
            Ok(h) => h,
            Err(e) => {
                self.crashed(ctx, &format!("cannot open the store for fsync: {e}"));
                return;
            }
        };
        self.syncing = true;
        let generation = self.appended;
        let fut = async move {
            match tokio::task::spawn_blocking(move || handle.sync_data()).await {
                Ok(r) => r,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.syncing = false;
            if act.stale() {
                ctx.stop();
                return;
            }
            match result {
                Ok(()) => {
                    act.shared.metrics.count_fsync();
                    act.synced = generation;
                    while act.held.front().is_some_and(|(g, _)| *g <= act.synced) {
                        let (_, env) = act.held.pop_front().expect("front exists");
                        act.transmit(env);
                    }
                    act.start_sync(ctx);
                    act.update_pending();
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
                .and_then(|s| s.recovered().map(|r| (s, r))),
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
            tracing::warn!(node = %self.name(), event = kind.name(), detail = %String::from_utf8_lossy(detail), "operator event");
        }
        self.storage = Some(storage);
        self.react(ctx, Input::Start(recovered));
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
            metrics.set_gauges(actor, act.core.gauges());
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
        self.core = make_core(&self.shared, self.kind);
        self.storage = None;
        self.timers.clear();
        self.held.clear();
        self.appended = 0;
        self.synced = 0;
        self.syncing = false;
        self.update_pending();
    }
}

impl Handler<Deliver> for CoreActor {
    type Result = ();

    fn handle(&mut self, Deliver(env, generation): Deliver, ctx: &mut Context<Self>) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if generation < self.generation {
            // Sent by a crashed incarnation of a sibling: its sender is gone.
            return;
        }
        if self.storage.is_none() {
            // Between a failed open and the retry: the sender's protocol
            // (resend, client timeout) recovers this message.
            tracing::debug!(node = %self.name(), msg = env.msg.name(), "actor not started; message dropped");
            return;
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(node = %self.name(), from = %env.from, msg = %brief(&env.msg), "receive");
        }
        self.react(ctx, Input::Msg(env));
    }
}

/// The link a node's config asks for.
pub fn node_link(config: &Config, node: &str) -> Result<Arc<dyn Link>, String> {
    match config.links {
        LinkMode::Plain => Ok(Arc::new(PlainLink)),
        LinkMode::Tls => TlsLink::for_node(&config.certs, node)
            .map(|l| Arc::new(l) as Arc<dyn Link>)
            .map_err(|e| e.to_string()),
    }
}

/// Client-originated requests a stopping front end turns away.
fn client_request(env: &Envelope) -> Option<String> {
    match &env.msg {
        Msg::SubmitIm { im } => Some(im.id.clone()),
        Msg::ReportCall { report } => Some(report.id.clone()),
        _ => None,
    }
}

/// Permission bits of the compliance export folder and of its files:
/// private (0700, 0600), or readable by the node user's group (0750, 0640)
/// with `[compliance] group_read`, for a pickup system in that group.
pub fn export_modes(group_read: bool) -> (u32, u32) {
    if group_read {
        (0o750, 0o640)
    } else {
        (0o700, 0o600)
    }
}

/// Creates the export folder if missing, with its mode (see
/// [`export_modes`]). A folder the node does not own keeps its mode.
fn export_folder(dir: &Path, group_read: bool) -> std::io::Result<()> {
    create_private_dir(dir)?;
    if group_read {
        let _ = set_mode(dir, export_modes(true).0);
    }
    Ok(())
}

fn export_error(path: &Path, e: std::io::Error) -> StoreError {
    // ENOSPC and EDQUOT: the disk or the quota is full.
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        StoreError::NoSpace
    } else {
        StoreError::Io(format!("{}: {e}", path.display()))
    }
}

/// Readies the node's data folder before anything else uses it: created
/// private (0700) if missing, locked against a second process for as long
/// as this one runs, checked writable, and made private if an older version
/// left it (or files in it) open to other users. Errors name the folder
/// and carry the operating system's error.
fn prepare_data_folder(config: &Config, node: &NodeConfig) -> Result<FolderLock, NodeError> {
    let data = &node.data;
    let fail = |what: &str, e: std::io::Error| {
        NodeError::Setup(format!("{}: {what}: {e}", data.display()))
    };
    create_private_dir(data).map_err(|e| fail("cannot create the data folder", e))?;
    let lock = lock_folder(data).map_err(NodeError::Setup)?;
    check_writable(data).map_err(|e| fail("the data folder is not writable", e))?;
    // A group-readable export folder inside the data folder keeps its mode.
    let skip = config
        .compliance_output
        .as_deref()
        .filter(|_| config.compliance_group_read);
    match make_private(data, skip) {
        Ok(done) => {
            for (folder, old) in &done.folders {
                tracing::info!(node = %node.name, folder = %folder.display(), old_mode = format!("{old:o}"), "folder was open to other users: made private to the node's user");
            }
            if done.files > 0 {
                tracing::info!(node = %node.name, folder = %data.display(), files = done.files, "files were open to other users: made private to the node's user");
            }
            for f in &done.failed {
                tracing::warn!(node = %node.name, error = %f, "cannot make private");
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.name, folder = %data.display(), error = %e, "cannot make the data folder private")
        }
    }
    if node.has(Role::Compliance) {
        if let Some(dir) = &config.compliance_output {
            prepare_export_folder(node, dir, config.compliance_group_read);
        }
    }
    Ok(lock)
}

/// The compliance export folder at start: created, and given its mode. A
/// problem here is not fatal: the export keeps its batch staged and raises
/// `compliance_export_failed` until the folder can be written.
fn prepare_export_folder(node: &NodeConfig, dir: &Path, group_read: bool) {
    let (folder_mode, _) = export_modes(group_read);
    if let Err(e) = create_private_dir(dir) {
        tracing::warn!(node = %node.name, folder = %dir.display(), error = %e, "cannot create the compliance output folder");
        return;
    }
    let changed = if group_read {
        set_mode(dir, folder_mode).map(|old| Tightened {
            folders: old.map(|o| (dir.to_path_buf(), o)).into_iter().collect(),
            ..Default::default()
        })
    } else {
        make_private(dir, None)
    };
    match changed {
        Ok(done) => {
            for (folder, old) in done.folders {
                tracing::info!(node = %node.name, folder = %folder.display(), old_mode = format!("{old:o}"), new_mode = format!("{folder_mode:o}"), "compliance output folder mode set");
            }
            if done.files > 0 {
                tracing::info!(node = %node.name, folder = %dir.display(), files = done.files, "export files were open to other users: made private to the node's user");
            }
            for f in &done.failed {
                tracing::warn!(node = %node.name, error = %f, "cannot make private");
            }
        }
        Err(e) => {
            tracing::warn!(node = %node.name, folder = %dir.display(), error = %e, "cannot set the compliance output folder's mode")
        }
    }
}

/// Opens every store of the node, as its cores will use them: a store that
/// cannot be opened, read or written stops the start here, with its path
/// and the operating system's error, before the node listens.
fn open_stores(node: &NodeConfig) -> Result<BTreeMap<ActorKind, (Storage, Recovered)>, NodeError> {
    let mut stores = BTreeMap::new();
    for kind in node.actors() {
        let opened = Storage::open(node, kind)
            .and_then(|s| s.recovered().map(|r| (s, r)))
            .map_err(|e| {
                NodeError::Setup(format!("cannot open the {} store: {e}", kind.as_str()))
            })?;
        stores.insert(kind, opened);
    }
    Ok(stores)
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
    let link = node_link(&config, name).map_err(NodeError::Setup)?;
    let stores = open_stores(&node)?;
    let system = actix::System::new();
    system.block_on(async move { serve(Arc::new(config), node, link, stores).await })
}

async fn serve(
    config: Arc<Config>,
    node: NodeConfig,
    link: Arc<dyn Link>,
    mut stores: BTreeMap<ActorKind, (Storage, Recovered)>,
) -> Result<(), NodeError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let net = Network::with_link(
        node.name.clone(),
        config.addresses(),
        tx,
        link,
        outbound_capacity(config.settings.transfer_window),
    );
    net.set_liveness(Liveness::new(Duration::from_millis(
        config.settings.link_timeout,
    )));
    net.set_roles(
        config
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.actors()))
            .collect(),
    );
    let metrics = Arc::new(Metrics::new(&node, &config.settings, net.clone()));
    let shared = Arc::new(NodeShared {
        config: config.clone(),
        node: node.clone(),
        net: net.clone(),
        metrics: metrics.clone(),
        stopping: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        cores: OnceLock::new(),
    });
    let mut actors: BTreeMap<ActorKind, actix::Addr<CoreActor>> = BTreeMap::new();
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
        actors.insert(kind, addr);
    }
    let _ = shared.cores.set(actors);
    if let Some(addr) = node.metrics {
        crate::metrics::serve(addr, metrics.clone())
            .map_err(|e| NodeError::Setup(format!("metrics on {addr}: {e}")))?;
    }
    net.listen(node.listen)
        .await
        .map_err(|e| NodeError::Setup(format!("cannot listen on {}: {e}", node.listen)))?;
    tracing::info!(node = %node.name, listen = %node.listen, metrics = ?node.metrics, roles = ?node.roles, links = ?config.links, "node started");
    // Whatever the log level: `cluster up` and supervisors wait for it.
    println!("{}", crate::cluster_up::ready_line(&node.name, node.listen));

    // Route every inbound envelope to its core.
    let router_shared = shared.clone();
    actix_rt::spawn(async move {
        while let Some(env) = rx.recv().await {
            router_shared.net.consumed(&env);
            if router_shared.stopping.load(Ordering::Relaxed) {
                if let Some(id) = client_request(&env) {
                    let reply = Envelope {
                        from: env.to.clone(),
                        to: env.from.clone(),
                        id: 0,
                        msg: Msg::ImRejected {
                            id,
                            reason: RejectReason::NodeStopping,
                        },
                    };
                    let _ = router_shared.net.send(reply);
                    continue;
                }
            }
            let generation = router_shared.generation.load(Ordering::SeqCst);
            router_shared.deliver(env, generation);
        }
    });

    wait_for_stop_signal().await;
    tracing::info!(node = %node.name, "stopping: turning clients away and flushing");
    shared.stopping.store(true, Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut quiet = 0;
    loop {
        let pending: u64 = pendings
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
            + shared.in_flight.load(Ordering::Relaxed);
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

/// A message in a trace line: its name and its sequence numbers, never its
/// content.
fn brief(msg: &holdfast_actors::core::protocol::Msg) -> String {
    use holdfast_actors::core::protocol::Msg;
    match msg {
        Msg::Transfer { seq, .. } => format!("Transfer {seq}"),
        Msg::Probe { seq, probe, .. } => format!("Probe {seq} #{probe}"),
        Msg::TransferAck { upto } => format!("TransferAck {upto}"),
        Msg::ProbeAck { upto, probe } => format!("ProbeAck {upto} #{probe}"),
        Msg::HeartbeatAck { id } => format!("HeartbeatAck {id}"),
        other => other.name().to_string(),
    }
}

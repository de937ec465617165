//! The simulated node host: runs the actor cores of one server inside a
//! madsim node, executes their effects in order, and recovers them from the
//! node's simulated disk after a restart.

use crate::host::alarm::Alarm;
use crate::host::disk::SimDisk;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
use crate::oracle::events::EventRecord;
use crate::trace::Trace;
use fnv::FnvHasher;
use holdfast_actors::core::actor::{Actor, Event, StoreError, StoreOp, Timer};
use holdfast_actors::core::engine::{self, Answer, Query};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::operator::{OperatorEvent, Severity};
use holdfast_actors::core::output::OutputFile;
use holdfast_actors::core::protocol::Envelope;
use holdfast_actors::core::reactor::{Cores, Input, Io, Persisted, Reactor, Stop};
use holdfast_actors::core::settings::{Sabotage, Settings};
use holdfast_actors::core::store_keys::{self, Row, DB_ROW, STORE_DAMAGED};
use holdfast_host::disk::{Disk, DiskError};
pub use holdfast_host::store::store_file;
use holdfast_host::store::{Damage, LogStore};
use holdfast_host::transport::{outbound_capacity, Network};
use madsim::time::TimeHandle;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a node runs; fixed for the whole simulation.
pub struct NodeSpec {
    pub name: String,
    pub roles: Vec<ActorKind>,
    pub addr: SocketAddr,
    pub peers: BTreeMap<String, SocketAddr>,
    pub settings: Settings,
    pub sabotage: Sabotage,
    pub seed: u64,
    /// What builds the node's cores (the real ones: a `Roster`).
    pub cores: Arc<dyn Cores>,
    /// The simulated network's flow control (shared by every node).
    pub link: Arc<FlowLink>,
    /// Commit the queue stores in groups, as the production node does:
    /// a persist is appended at once and what the core sends after it is
    /// held until one sync covers the group (`topology.group_commit`).
    pub group_commit: bool,
}

/// Fault switches the harness flips on a node.
pub struct Control {
    /// Extra processing time per message (the `slow` fault).
    pub slow: Duration,
    /// The database refuses one record in this many for good (the
    /// `db_refuses` fault; 0: none).
    pub refuse_one_in: u64,
    /// Whether the node's cores are stalled (the `stall` fault); its
    /// loop waits on this before each message and timer.
    stalled: tokio::sync::watch::Sender<bool>,
}

impl Default for Control {
    fn default() -> Control {
        Control {
            slow: Duration::ZERO,
            refuse_one_in: 0,
            stalled: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Control {
    pub fn set_stalled(&self, on: bool) {
        self.stalled.send_replace(on);
    }
}

/// State owned by the harness that outlives the node's restarts.
#[derive(Clone)]
pub struct NodeShared {
    pub disk: SimDisk,
    pub control: Arc<Mutex<Control>>,
    pub trace: Arc<Mutex<Trace>>,
    pub events: Arc<Mutex<Vec<EventRecord>>>,
    /// Highest value seen of each gauge of this node's actors.
    pub gauges: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    /// Every sample `(time, gauge, value)`, when a plot was asked for.
    pub series: Option<Arc<Mutex<Samples>>>,
    pub epoch: Instant,
    /// How many times the node has started: each life draws its actors'
    /// random numbers afresh (a real process seeds from the OS at every
    /// start; the same stream in every life would, for one, hand out the
    /// same message ids again).
    pub incarnation: Arc<Mutex<u64>>,
}

/// Gauge samples: `(time in ms, gauge, value)`.
pub type Samples = Vec<(u64, &'static str, u64)>;

/// How often the host samples its actors' gauges.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(10);

/// Folder (file name prefix) of a node's export files on its disk.
pub const OUTPUT_DIR: &str = "out/";

/// The simulated node's side of the reactor: its disk, its network, its
/// trace and the harness's records. The reactor owns the cores; this owns
/// their stores (one per slot, in slot order).
struct SimIo<'a> {
    spec: &'a NodeSpec,
    shared: &'a NodeShared,
    net: &'a Arc<Network>,
    stores: &'a mut [LogStore],
    clock: &'a TimeHandle,
}

impl SimIo<'_> {
    fn time(&self) -> u64 {
        since_epoch(self.clock, self.shared)
    }
}

/// Milliseconds of simulated time since the run began.
fn since_epoch(clock: &TimeHandle, shared: &NodeShared) -> u64 {
    clock.now_instant().duration_since(shared.epoch).as_millis() as u64
}

impl Io for SimIo<'_> {
    fn now(&mut self) -> u64 {
        self.time()
    }

    fn send(&mut self, env: Envelope) {
        if let Err(e) = self.net.send(env) {
            tracing::warn!(node = %self.spec.name, error = %e, "message not sent");
        }
    }

    async fn persist(&mut self, slot: usize, ops: Vec<StoreOp>) -> Persisted {
        let disk = &self.shared.disk;
        let one_in = lock(&self.shared.control).refuse_one_in;
        let kind = self.spec.roles[slot];
        if kind == ActorKind::Database && one_in > 0 {
            if let Some(e) = refused_row(&ops, one_in) {
                // Refused by the engine: nothing of the batch written.
                return Persisted::Failed(e);
            }
        }
        let store = &mut self.stores[slot];
        if self.spec.group_commit && group_committed(kind) {
            // Appended now, made durable by a sync the host runs for the
            // whole group (see `run_node`).
            match store.apply(&disk.deferred(), ops).await {
                Ok(w) => Persisted::Appended(w),
                Err(e) => Persisted::Failed(e),
            }
        } else {
            match store.apply(disk, ops).await {
                Ok(w) => Persisted::Durable(w),
                Err(e) => Persisted::Failed(e),
            }
        }
    }

    async fn load(&mut self, slot: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.stores[slot].state().get(&key).cloned())
    }

    async fn query(&mut self, slot: usize, query: Query) -> Result<Answer, StoreError> {
        // The engine's rows are the store's replayed log: what the
        // simulated disk holds, not what the core remembers. Under the EIO
        // fault the engine cannot read its pages either.
        if self.shared.disk.io_error() {
            return Err(StoreError::Io(
                "simulated EIO: the engine cannot read".into(),
            ));
        }
        Ok(engine::answer(self.stores[slot].state(), &query))
    }

    async fn output(&mut self, _slot: usize, files: Vec<OutputFile>) -> Result<(), StoreError> {
        // Each file written atomically (after an fsync delay) under `out/`;
        // a crash after the last one and before the core's deletion is
        // durable is the window the export intent covers.
        for f in files {
            self.shared
                .disk
                .replace(&format!("{OUTPUT_DIR}{}", f.name), &f.data)
                .await?;
        }
        Ok(())
    }

    async fn remove_output(&mut self, _slot: usize, names: Vec<String>) -> Result<(), StoreError> {
        for n in names {
            self.shared.disk.remove(&format!("{OUTPUT_DIR}{n}")).await?;
        }
        Ok(())
    }

    fn event(&mut self, _slot: usize, ev: Event) {
        let now = self.time();
        let (node, event, detail) = (&*self.spec.name, ev.kind.name(), &*ev.detail);
        match ev.kind.severity() {
            Severity::Info => tracing::info!(node, event, detail, "operator event"),
            Severity::Warn => tracing::warn!(node, event, detail, "operator event"),
            Severity::Error => tracing::error!(node, event, detail, "operator event"),
        }
        lock(&self.shared.trace).record_noted(
            now,
            &self.spec.name,
            ev.kind.name(),
            String::new,
            ev.detail.as_bytes(),
        );
        lock(&self.shared.events).push(EventRecord {
            at: now,
            node: self.spec.name.clone(),
            kind: ev.kind,
            detail: ev.detail,
        });
    }

    fn firing(&mut self, addr: &Addr, timer: Timer) {
        let actor = addr.actor;
        lock(&self.shared.trace).record_noted(
            self.time(),
            &self.spec.name,
            "timer",
            || format!("{actor:?} {timer:?}"),
            &(actor, timer),
        );
    }
}

/// Whether the production node commits `kind`'s store in groups: the queue
/// stores do; the archive and chat databases commit each transaction.
fn group_committed(kind: ActorKind) -> bool {
    !matches!(kind, ActorKind::Database | ActorKind::ChatStore)
}

/// A sync of a group of appends finished: `(slot, appends covered, result)`.
type SyncDone = (usize, u64, Result<(), DiskError>);

struct Host {
    spec: Arc<NodeSpec>,
    shared: NodeShared,
    net: Arc<Network>,
    reactor: Reactor<Box<dyn Actor>>,
    stores: Vec<LogStore>,
    /// Where group-commit syncs report (a channel per life: a sync of a
    /// life that ended reports to no one).
    synced: mpsc::UnboundedSender<SyncDone>,
    synced_rx: mpsc::UnboundedReceiver<SyncDone>,
    /// The simulation's clock, held rather than looked up: `Instant::now`
    /// reaches it through madsim's `clock_gettime` shim, a context lookup
    /// and two conversions, several percent of a run at once per event.
    clock: TimeHandle,
    /// The `stall` fault's switch, subscribed once per life rather than
    /// before every message and timer.
    stalled: tokio::sync::watch::Receiver<bool>,
}

impl Host {
    fn io(&mut self) -> (&mut Reactor<Box<dyn Actor>>, SimIo<'_>) {
        (
            &mut self.reactor,
            SimIo {
                spec: &self.spec,
                shared: &self.shared,
                net: &self.net,
                stores: &mut self.stores,
                clock: &self.clock,
            },
        )
    }

    fn now(&self) -> u64 {
        since_epoch(&self.clock, &self.shared)
    }

    fn trace(&self, what: &str, detail: &(impl std::hash::Hash + ?Sized)) {
        lock(&self.shared.trace).record_noted(
            self.now(),
            &self.spec.name,
            what,
            String::new,
            detail,
        );
    }

    /// After a reaction: starts a sync for every slot with appends that
    /// are not durable yet (group commit), one running per slot.
    fn start_syncs(&mut self) {
        if !self.spec.group_commit {
            return;
        }
        for slot in 0..self.reactor.len() {
            if let Some(upto) = self.reactor.sync_wanted(slot) {
                let disk = self.shared.disk.clone();
                let file = store_file(self.spec.roles[slot]);
                let done = self.synced.clone();
                tokio::spawn(async move {
                    let result = disk.sync(&file).await;
                    let _ = done.send((slot, upto, result));
                });
            }
        }
    }

    /// `arrived`: when the network put `env` in the inbox (none: local).
    async fn deliver(
        &mut self,
        env: Envelope,
        arrived: Option<tokio::time::Instant>,
    ) -> Result<(), Stop> {
        self.wait_unstalled().await;
        let slow = lock(&self.shared.control).slow;
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        let Some(i) = self.reactor.slot_of(env.to.actor) else {
            tracing::warn!(node = %self.spec.name, to = %env.to, from = %env.from, "no such actor on this node; message dropped");
            self.trace("misrouted", env.msg.name().as_bytes());
            return Ok(());
        };
        self.trace(env.msg.name(), &(&env.from, &env.to, &env.msg));
        let (reactor, mut io) = self.io();
        let waited = arrived.map_or(0, |at| at.elapsed().as_millis() as u64);
        let input = Input::Msg {
            from: env.from,
            msg: env.msg,
            waited,
        };
        reactor.react(i, input, &mut io).await?;
        self.start_syncs();
        Ok(())
    }

    /// Under the `stall` fault: waits until the cores get the processor
    /// back (the connections meanwhile go on reading into the inbox).
    async fn wait_unstalled(&mut self) {
        // Closed only with the node's shared state, which outlives this.
        let _ = self.stalled.wait_for(|on| !*on).await;
    }

    async fn fire_due(&mut self) -> Result<(), Stop> {
        self.wait_unstalled().await;
        let due = self.now();
        let (reactor, mut io) = self.io();
        reactor.fire_due(due, &mut io).await?;
        self.start_syncs();
        Ok(())
    }

    fn synced(&mut self, (slot, upto, result): SyncDone) -> Result<(), Stop> {
        if let Err(e) = result {
            // As production: the node's cores restart from what is on
            // disk, and the messages that waited for this sync are gone.
            return Err(Stop::Fatal(format!("fsync failed: {e}")));
        }
        let (reactor, mut io) = self.io();
        reactor.synced(slot, upto, &mut io);
        self.start_syncs();
        Ok(())
    }

    /// The operator event for damage a store found and set aside: which
    /// file, which stretches, and where their bytes are kept.
    fn store_damaged(&mut self, file: &str, damage: &[Damage]) {
        let stretches: Vec<String> = damage
            .iter()
            .map(|d| format!("{} bytes at {}", d.len, d.offset))
            .collect();
        let detail = format!(
            "{}: {file}: {} unreadable, kept in {}; the batches after it were recovered",
            self.spec.name,
            stretches.join(", "),
            LogStore::quarantine_file(file)
        );
        let (_, mut io) = self.io();
        io.event(
            0,
            Event {
                kind: OperatorEvent::StoreDamaged,
                detail,
            },
        );
    }

    fn sample_gauges(&self) {
        let now = self.now();
        let mut g = lock(&self.shared.gauges);
        let mut series = self.shared.series.as_ref().map(|s| lock(s));
        for (_, gauges) in self.reactor.gauges() {
            for (gauge, value) in gauges {
                let name = gauge.name();
                let max = g.entry(name).or_insert(0);
                *max = (*max).max(value);
                if let Some(series) = series.as_mut() {
                    series.push((now, name, value));
                }
            }
        }
    }
}

/// Opens a store and sets any damage aside (see `LogStore::repair`);
/// returns the damage for the operator event. Under the sabotage
/// `store_cut_silently` it does what a store that mistakes damage for a
/// torn tail would: cuts the log at the first damage and says nothing.
async fn open_store(
    spec: &NodeSpec,
    disk: &SimDisk,
    file: &str,
) -> Result<(LogStore, Vec<Damage>), StoreError> {
    let mut store = LogStore::open(disk, file)?;
    if spec.sabotage.store_cut_silently {
        if let Some(first) = store.damage().first() {
            disk.truncate(file, first.offset)?;
            return Ok((LogStore::open(disk, file)?, Vec::new()));
        }
    }
    let damage = store.repair(disk).await?;
    store.take_reserve(disk).await;
    Ok((store, damage))
}

fn actor_seed(seed: u64, node: &str, kind: ActorKind, incarnation: u64) -> u64 {
    let mut h = FnvHasher::default();
    (seed, node, kind, incarnation).hash(&mut h);
    h.finish()
}

/// The node's main task; madsim calls it again after every restart.
pub async fn run_node(spec: Arc<NodeSpec>, shared: NodeShared) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let net = Network::with_link(
        spec.name.clone(),
        spec.peers.clone(),
        tx,
        spec.link.clone(),
        outbound_capacity(spec.settings.transfer_window),
    );
    net.apply_settings(&spec.settings);
    let mut listening = false;
    loop {
        // Open every store first: a node that cannot read its disk does
        // not come up half-way (it retries, as a service manager would).
        let (stores, damaged) = open_stores(&spec, &shared).await;
        if !listening {
            if let Err(e) = net.listen(spec.addr).await {
                tracing::error!(node = %spec.name, error = %e, "cannot listen; node stops");
                return;
            }
            listening = true;
        }
        let mut host = boot(&spec, &shared, &net, stores, &damaged).await;
        match serve(&mut host, &mut rx, &damaged).await {
            Ok(()) => return,
            Err(stop) => {
                // As the production node: every core restarts from what
                // is on disk; what it held for a sync is gone.
                tracing::error!(node = %spec.name, why = %stop, "the node's cores restart from their persisted state");
                host.trace("cores_restart", stop.to_string().as_bytes());
            }
        }
    }
}

/// Opens the store of every actor of the node, retrying each until it
/// opens; returns them with the damage each set aside.
async fn open_stores(
    spec: &NodeSpec,
    shared: &NodeShared,
) -> (Vec<LogStore>, Vec<(String, Vec<Damage>)>) {
    let mut stores = Vec::new();
    let mut damaged = Vec::new();
    for &kind in &spec.roles {
        let file = store_file(kind);
        let store = loop {
            match open_store(spec, &shared.disk, &file).await {
                Ok((s, damage)) => {
                    if !damage.is_empty() {
                        damaged.push((file.clone(), damage));
                    }
                    break s;
                }
                Err(e) => {
                    tracing::warn!(node = %spec.name, error = %e, "cannot open store; retrying in 1s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        stores.push(store);
    }
    (stores, damaged)
}

/// Builds this life's reactor over the opened stores and starts each core
/// with what its store recovered.
async fn boot(
    spec: &Arc<NodeSpec>,
    shared: &NodeShared,
    net: &Arc<Network>,
    stores: Vec<LogStore>,
    damaged: &[(String, Vec<Damage>)],
) -> Host {
    let incarnation = {
        let mut n = lock(&shared.incarnation);
        *n += 1;
        *n
    };
    let mut reactor = Reactor::new(false).sabotaged(&spec.sabotage);
    for &kind in &spec.roles {
        reactor.add(
            Addr::new(spec.name.clone(), kind),
            spec.cores.core(kind),
            SmallRng::seed_from_u64(actor_seed(spec.seed, &spec.name, kind, incarnation)),
        );
    }
    let (synced, synced_rx) = mpsc::unbounded_channel();
    let mut host = Host {
        spec: spec.clone(),
        shared: shared.clone(),
        net: net.clone(),
        reactor,
        stores,
        synced,
        synced_rx,
        clock: TimeHandle::current(),
        stalled: lock(&shared.control).stalled.subscribe(),
    };
    host.trace("start", &());
    for (file, damage) in damaged {
        host.store_damaged(file, damage);
    }
    host
}

/// Starts the cores, then runs the node until its network closes (`Ok`)
/// or its cores must restart (`Err`).
async fn serve(
    host: &mut Host,
    rx: &mut mpsc::UnboundedReceiver<Envelope>,
    damaged: &[(String, Vec<Damage>)],
) -> Result<(), Stop> {
    for i in 0..host.reactor.len() {
        let mut recovered = host.stores[i].take_state();
        let file = store_file(host.spec.roles[i]);
        if let Some((_, damage)) = damaged.iter().find(|(f, _)| *f == file) {
            recovered.insert(STORE_DAMAGED.to_vec(), format!("{damage:?}").into_bytes());
        }
        let (reactor, mut io) = host.io();
        reactor.react(i, Input::Start(recovered), &mut io).await?;
        host.start_syncs();
    }
    let mut next_sample = Instant::now() + GAUGE_INTERVAL;
    // One alarm for the earlier of the next gauge sample and the next timer:
    // a single clock read per turn of the loop (madsim's clock takes a lock).
    let mut alarm = Alarm::new();
    loop {
        let next_timer = host.reactor.next_timer().map(|(at, ..)| at);
        let wake = next_timer.map_or(next_sample, |at| {
            next_sample.min(host.shared.epoch + Duration::from_millis(at))
        });
        tokio::select! {
            biased;
            _ = alarm.until(wake) => {
                // The sample first when both are due, as before.
                if wake == next_sample {
                    host.sample_gauges();
                    next_sample += GAUGE_INTERVAL;
                } else {
                    host.fire_due().await?;
                }
            }
            Some(done) = host.synced_rx.recv() => host.synced(done)?,
            env = rx.recv() => match env {
                Some(env) => {
                    let arrived = host.net.consumed(&env);
                    host.deliver(env, arrived).await?
                }
                None => return Ok(()),
            },
        }
    }
}

/// The first row of a database batch that a `db_refuses` fault refuses:
/// one record in `one_in`, chosen by its message id, so that a record sent
/// again is refused again (as a constraint or a trigger would refuse it).
fn refused_row(ops: &[StoreOp], one_in: u64) -> Option<StoreError> {
    use std::hash::Hasher;
    ops.iter().find_map(|op| {
        let StoreOp::Insert { key, value } = op else {
            return None;
        };
        if !key.starts_with(DB_ROW) {
            return None;
        }
        let row = store_keys::decode::<Row>(value).ok()?;
        let mut h = FnvHasher::default();
        h.write(row.record.id.as_bytes());
        (h.finish() % one_in == 0).then(|| StoreError::Refused {
            key: key.clone(),
            reason: format!(
                "message {}: refused by the scenario's db_refuses fault",
                row.record.id
            ),
        })
    })
}

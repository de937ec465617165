//! The simulated node host: runs the actor cores of one server inside a
//! madsim node, executes their effects in order, and recovers them from the
//! node's simulated disk after a restart.

use crate::alarm::Alarm;
use crate::disk::SimDisk;
use crate::lock;
use crate::report::EventRecord;
use crate::tcp_flow::FlowLink;
use crate::trace::Trace;
use fnv::FnvHasher;
use holdfast_actors::archiving::archiver::Archiver;
use holdfast_actors::archiving::database::Database;
use holdfast_actors::archiving::destination_queue::DestinationQueue;
use holdfast_actors::archiving::front_end::FrontEnd;
use holdfast_actors::archiving::outgoing_queue::OutgoingQueue;
use holdfast_actors::chat::channel::Channel;
use holdfast_actors::chat::chat_store::ChatStore;
use holdfast_actors::chat::lookup::Lookup;
use holdfast_actors::chat::pool::ChatPool;
use holdfast_actors::chat::web_files::WebFiles;
use holdfast_actors::compliance::service::Compliance;
use holdfast_actors::core::actor::{Actor, Ctx, Effect, StoreError, StoreOp, Timer};
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::Envelope;
use holdfast_actors::core::settings::{Sabotage, Settings};
use holdfast_actors::core::store_keys::{self, Row, DB_ROW, STORE_DAMAGED};
use holdfast_host::disk::Disk;
use holdfast_host::liveness::Liveness;
use holdfast_host::store::{Damage, LogStore};
use holdfast_host::transport::{outbound_capacity, Network};
use madsim::time::TimeHandle;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, VecDeque};
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
    pub cluster: Arc<Cluster>,
    pub settings: Settings,
    pub sabotage: Sabotage,
    pub seed: u64,
    /// The group chat pool (empty without Channel servers).
    pub pool: Arc<ChatPool>,
    /// The simulated network's flow control (shared by every node).
    pub link: Arc<FlowLink>,
}

/// Fault switches the harness flips on a node.
#[derive(Default)]
pub struct Control {
    /// Extra processing time per message (the `slow` fault).
    pub slow: Duration,
    /// The database refuses one record in this many for good (the
    /// `db_refuses` fault; 0: none).
    pub refuse_one_in: u64,
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

/// File on the node's disk that holds an actor's store.
pub fn store_file(kind: ActorKind) -> String {
    format!("{}.log", kind.as_str())
}

struct Slot {
    addr: Addr,
    actor: Box<dyn Actor>,
    store: LogStore,
    rng: SmallRng,
}

struct Host {
    spec: Arc<NodeSpec>,
    shared: NodeShared,
    net: Arc<Network>,
    slots: Vec<Slot>,
    timers: BTreeMap<(u64, u64), (usize, Timer)>,
    timer_keys: BTreeMap<(usize, Timer), (u64, u64)>,
    timer_seq: u64,
    envelope_seq: u64,
    /// The simulation's clock, held rather than looked up: `Instant::now`
    /// reaches it through madsim's `clock_gettime` shim, a context lookup
    /// and two conversions, several percent of a run at once per event.
    clock: TimeHandle,
}

fn make_actor(spec: &NodeSpec, kind: ActorKind) -> Box<dyn Actor> {
    let n = spec.name.clone();
    let c = spec.cluster.clone();
    let s = spec.settings.clone();
    match kind {
        ActorKind::FrontEnd => Box::new(FrontEnd::new(n, c, s).sabotaged(&spec.sabotage)),
        ActorKind::OutgoingQueue => Box::new(OutgoingQueue::new(n, c, s)),
        ActorKind::DestinationQueue => Box::new(DestinationQueue::new(n, c, s)),
        ActorKind::Archiver => Box::new(Archiver::new(n, c, s).sabotaged(&spec.sabotage)),
        ActorKind::Database => Box::new(Database::new(n, spec.sabotage.clone())),
        ActorKind::Lookup => Box::new(Lookup::new(n, spec.pool.clone(), s)),
        ActorKind::Channel if spec.sabotage.no_relay => {
            Box::new(Channel::new(n, spec.pool.clone(), s).without_relay())
        }
        ActorKind::Channel => Box::new(Channel::new(n, spec.pool.clone(), s)),
        ActorKind::ChatStore => Box::new(
            ChatStore::new(n, spec.pool.rooms.clone())
                .with_compliance(spec.pool.compliance.clone()),
        ),
        ActorKind::Web => Box::new(
            WebFiles::new(n, spec.pool.clone(), s).with_compliance(spec.pool.compliance.clone()),
        ),
        ActorKind::Compliance => {
            let c = Compliance::new(n, spec.pool.export.clone(), s.compliance_interval);
            if spec.sabotage.compliance_delete_first {
                Box::new(c.deleting_first())
            } else {
                Box::new(c)
            }
        }
        ActorKind::Client => unreachable!("clients are not hosted by server nodes"),
    }
}

impl Host {
    fn now(&self) -> u64 {
        self.clock
            .now_instant()
            .duration_since(self.shared.epoch)
            .as_millis() as u64
    }

    fn trace(&self, what: &str, detail: &(impl std::hash::Hash + ?Sized)) {
        self.trace_noted(self.now(), what, String::new, detail);
    }

    /// As `trace`, at `now` (the current time, already read: madsim's
    /// clock is a lock and a system call shim, and the host reads it once
    /// per event rather than once per use), with a note for the timeline
    /// only (see `Trace`).
    fn trace_noted(
        &self,
        now: u64,
        what: &str,
        note: impl FnOnce() -> String,
        detail: &(impl std::hash::Hash + ?Sized),
    ) {
        lock(&self.shared.trace).record_noted(now, &self.spec.name, what, note, detail);
    }

    /// Runs one reaction of actor `i`, starting at `now` (the current
    /// time), and executes its effects in order. The time is read again
    /// only after an effect that waits (a write to disk); returns it.
    async fn react(
        &mut self,
        i: usize,
        mut now: u64,
        f: impl FnOnce(&mut dyn Actor, &mut Ctx),
    ) -> u64 {
        let effects = {
            let slot = &mut self.slots[i];
            let mut ctx = Ctx::new(now, &slot.addr, &mut slot.rng);
            f(slot.actor.as_mut(), &mut ctx);
            ctx.into_effects()
        };
        // Each effect with the time of the reaction that asked for it: a
        // timer runs from then, not from when the effects before it (a
        // disk write) have finished.
        let mut queue: VecDeque<(u64, Effect)> = effects.into_iter().map(|e| (now, e)).collect();
        while let Some((asked_at, effect)) = queue.pop_front() {
            match effect {
                Effect::Send { to, msg } => {
                    self.envelope_seq += 1;
                    let env = Envelope {
                        from: self.slots[i].addr.clone(),
                        to,
                        id: self.envelope_seq,
                        msg,
                    };
                    if let Err(e) = self.net.send(env) {
                        tracing::warn!(node = %self.spec.name, error = %e, "message not sent");
                    }
                }
                Effect::SetTimer { timer, after } => {
                    if let Some(key) = self.timer_keys.remove(&(i, timer)) {
                        self.timers.remove(&key);
                    }
                    self.timer_seq += 1;
                    let key = (asked_at + after, self.timer_seq);
                    self.timers.insert(key, (i, timer));
                    self.timer_keys.insert((i, timer), key);
                }
                Effect::CancelTimer { timer } => {
                    if let Some(key) = self.timer_keys.remove(&(i, timer)) {
                        self.timers.remove(&key);
                    }
                }
                Effect::Persist { token, ops } => {
                    let disk = self.shared.disk.clone();
                    let one_in = lock(&self.shared.control).refuse_one_in;
                    let refused = match self.slots[i].addr.actor {
                        ActorKind::Database if one_in > 0 => refused_row(&ops, one_in),
                        _ => None,
                    };
                    let result = match refused {
                        // Refused by the engine: nothing of the batch written.
                        Some(e) => Err(e),
                        None => self.slots[i].store.apply(&disk, ops).await,
                    };
                    now = self.now();
                    let slot = &mut self.slots[i];
                    let mut ctx = Ctx::new(now, &slot.addr, &mut slot.rng);
                    slot.actor.on_persisted(token, result, &mut ctx);
                    // The completion's effects run before the rest of this
                    // reaction's, and before any other event.
                    for e in ctx.into_effects().into_iter().rev() {
                        queue.push_front((now, e));
                    }
                }
                Effect::Output { token, files } => {
                    // Each file written atomically (after an fsync delay)
                    // under `out/`; a crash after the last one and before
                    // the core's deletion is durable is the window the
                    // export intent covers.
                    let disk = self.shared.disk.clone();
                    let mut result = Ok(());
                    for f in files {
                        if let Err(e) = disk
                            .replace(&format!("{OUTPUT_DIR}{}", f.name), &f.data)
                            .await
                        {
                            result = Err(StoreError::from(e));
                            break;
                        }
                    }
                    now = self.now();
                    let slot = &mut self.slots[i];
                    let mut ctx = Ctx::new(now, &slot.addr, &mut slot.rng);
                    slot.actor.on_output(token, result, &mut ctx);
                    for e in ctx.into_effects().into_iter().rev() {
                        queue.push_front((now, e));
                    }
                }
                Effect::Load { token, key } => {
                    let result = Ok(self.slots[i].store.state().get(&key).cloned());
                    let slot = &mut self.slots[i];
                    let mut ctx = Ctx::new(now, &slot.addr, &mut slot.rng);
                    slot.actor.on_loaded(token, result, &mut ctx);
                    for e in ctx.into_effects().into_iter().rev() {
                        queue.push_front((now, e));
                    }
                }
                Effect::Event(ev) => {
                    tracing::info!(node = %self.spec.name, event = ev.kind.name(), detail = %ev.detail, "operator event");
                    self.trace_noted(now, ev.kind.name(), String::new, ev.detail.as_bytes());
                    lock(&self.shared.events).push(EventRecord {
                        at: now,
                        node: self.spec.name.clone(),
                        kind: ev.kind,
                        detail: ev.detail,
                    });
                }
            }
        }
        now
    }

    async fn deliver(&mut self, env: Envelope) {
        let slow = lock(&self.shared.control).slow;
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        let Some(i) = self.slots.iter().position(|s| s.addr.actor == env.to.actor) else {
            tracing::warn!(node = %self.spec.name, to = %env.to, from = %env.from, "no such actor on this node; message dropped");
            self.trace("misrouted", env.msg.name().as_bytes());
            return;
        };
        let now = self.now();
        self.trace_noted(
            now,
            env.msg.name(),
            String::new,
            &(&env.from, &env.to, &env.msg),
        );
        self.react(i, now, |a, ctx| a.on_msg(env.from, env.msg, ctx))
            .await;
    }

    /// The operator event for damage a store found and set aside: which
    /// file, which stretches, and where their bytes are kept.
    fn store_damaged(&self, file: &str, damage: &[Damage]) {
        let now = self.now();
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
        let kind = OperatorEvent::StoreDamaged;
        tracing::warn!(node = %self.spec.name, event = kind.name(), %detail, "operator event");
        self.trace_noted(now, kind.name(), String::new, detail.as_bytes());
        lock(&self.shared.events).push(EventRecord {
            at: now,
            node: self.spec.name.clone(),
            kind,
            detail,
        });
    }

    fn sample_gauges(&self) {
        let now = self.now();
        let mut g = lock(&self.shared.gauges);
        let mut series = self.shared.series.as_ref().map(|s| lock(s));
        for slot in &self.slots {
            for (gauge, value) in slot.actor.gauges() {
                let name = gauge.name();
                let max = g.entry(name).or_insert(0);
                *max = (*max).max(value);
                if let Some(series) = series.as_mut() {
                    series.push((now, name, value));
                }
            }
        }
    }

    async fn fire_due(&mut self) {
        let due = self.now();
        // The current time: `due` until a reaction waits.
        let mut now = due;
        while let Some((&key, &(i, timer))) = self.timers.iter().next() {
            if key.0 > due {
                break;
            }
            self.timers.remove(&key);
            self.timer_keys.remove(&(i, timer));
            let actor = self.slots[i].addr.actor;
            self.trace_noted(
                now,
                "timer",
                || format!("{actor:?} {timer:?}"),
                &(actor, timer),
            );
            now = self.react(i, now, |a, ctx| a.on_timer(timer, ctx)).await;
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
    net.set_liveness(Liveness::new(Duration::from_millis(
        spec.settings.link_timeout,
    )));
    // Open every store first: a node that cannot read its disk does not
    // come up half-way (it retries, as a service manager would).
    let incarnation = {
        let mut n = lock(&shared.incarnation);
        *n += 1;
        *n
    };
    let mut slots = Vec::new();
    let mut damaged = Vec::new();
    for &kind in &spec.roles {
        let file = store_file(kind);
        let store = loop {
            match open_store(&spec, &shared.disk, &file).await {
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
        slots.push(Slot {
            addr: Addr::new(spec.name.clone(), kind),
            actor: make_actor(&spec, kind),
            store,
            rng: SmallRng::seed_from_u64(actor_seed(spec.seed, &spec.name, kind, incarnation)),
        });
    }
    if let Err(e) = net.listen(spec.addr).await {
        tracing::error!(node = %spec.name, error = %e, "cannot listen; node stops");
        return;
    }
    let mut host = Host {
        spec,
        shared,
        net,
        slots,
        timers: BTreeMap::new(),
        timer_keys: BTreeMap::new(),
        timer_seq: 0,
        envelope_seq: 0,
        clock: TimeHandle::current(),
    };
    host.trace("start", &());
    for (file, damage) in &damaged {
        host.store_damaged(file, damage);
    }
    for i in 0..host.slots.len() {
        let mut recovered = host.slots[i].store.take_state();
        let file = store_file(host.slots[i].addr.actor);
        if let Some((_, damage)) = damaged.iter().find(|(f, _)| *f == file) {
            recovered.insert(STORE_DAMAGED.to_vec(), format!("{damage:?}").into_bytes());
        }
        let now = host.now();
        host.react(i, now, |a, ctx| a.on_start(recovered, ctx))
            .await;
    }
    let mut next_sample = Instant::now() + GAUGE_INTERVAL;
    // One alarm for the earlier of the next gauge sample and the next timer:
    // a single clock read per turn of the loop (madsim's clock takes a lock).
    let mut alarm = Alarm::new();
    loop {
        let next_timer = host.timers.keys().next().map(|k| k.0);
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
                    host.fire_due().await;
                }
            }
            env = rx.recv() => match env {
                Some(env) => {
                    host.net.consumed(&env);
                    host.deliver(env).await
                }
                None => return,
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
        let StoreOp::Put { key, value } = op else {
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

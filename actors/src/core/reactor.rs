//! The reactor: the one executor of cores' effects, shared by every host.
//!
//! A host — the simulator, the production node, the unit-test kit — owns
//! sockets, disks and a clock; the reactor owns everything between those
//! and the cores: the cores themselves (one [`Slot`] each), their timers,
//! their random number generators, the order in which effects and
//! completions run, and group commit. The host hands it an [`Io`] for each
//! call. Because the three hosts run this same code, what the simulator
//! proves about effect order is what production runs.
//!
//! # The contract (what [`crate::actor`] promises cores)
//! 1. The effects of one reaction run in the order recorded.
//! 2. A completion (`Persist`, `Load`, `Query`, `Output`, `RemoveOutput`) is reported to the core
//!    that asked for it before the rest of that reaction's effects, and
//!    before any other event; the completion's own effects run first.
//! 3. A timer is per slot and per [`Timer`] value: setting it again moves
//!    it; it is due `after` milliseconds from **the time of the reaction
//!    that set it** (the `now` its `Ctx` carried), not from when the effect
//!    was executed — a timer set after a slow disk write is not pushed back
//!    by the write. Timers due at the same instant fire in the order they
//!    were set.
//! 4. A message a core sends after a persist that is not yet durable (group
//!    commit, [`Persisted::Appended`]) is held until a sync covering that
//!    persist completes; messages leave in the order they were sent.
//! 5. Time never goes backwards within a reaction: each completion reads
//!    the clock again.
//!
//! The reactor is sans-IO: [`Io`]'s futures are awaited in place, so a host
//! whose I/O never waits (production, the test kit) can drive it with
//! [`ready`], and the simulator awaits its simulated disk.

use crate::core::actor::{
    Actor, Ctx, Effect, Event, Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::engine::{without_prefixes, Answer, Query};
use crate::core::ids::{ActorKind, Addr, Millis};
use crate::core::operator::Gauge;
use crate::core::output::OutputFile;
use crate::core::protocol::{Envelope, Msg};
use rand::rngs::SmallRng;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a persist did.
#[derive(Debug)]
pub enum Persisted {
    /// Written and durable.
    Durable(Written),
    /// Written, durable once the next sync completes (group commit): the
    /// core is told it succeeded, and what it sends from now on is held
    /// until [`Reactor::synced`] covers it.
    Appended(Written),
    /// Not written; the core is told why.
    Failed(StoreError),
    /// The store can no longer be trusted: the node must restart.
    Fatal(String),
}

/// Why a reactor stopped: the host restarts the node's cores from disk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    #[error("the {0} core panicked")]
    Panicked(&'static str),
    #[error("{0}")]
    Fatal(String),
}

/// The I/O a host gives the reactor. Futures may wait (the simulator's
/// disk) or be ready at once (production, the test kit).
#[allow(async_fn_in_trait)]
pub trait Io {
    /// The host's clock, in milliseconds.
    fn now(&mut self) -> Millis;
    /// Hands an envelope to the network (or to a sibling core).
    fn send(&mut self, env: Envelope);
    /// Applies `ops` to slot `slot`'s store, atomically.
    async fn persist(&mut self, slot: usize, ops: Vec<StoreOp>) -> Persisted;
    /// Reads one key of slot `slot`'s store.
    async fn load(&mut self, slot: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError>;
    /// Answers a query against slot `slot`'s engine from committed rows
    /// (see [`crate::core::engine`] for the semantics).
    async fn query(&mut self, slot: usize, query: Query) -> Result<Answer, StoreError>;
    /// Writes files into slot `slot`'s output folder, each atomically.
    async fn output(&mut self, slot: usize, files: Vec<OutputFile>) -> Result<(), StoreError>;
    /// Removes files from slot `slot`'s output folder (a file already gone
    /// is not an error), durably.
    async fn remove_output(&mut self, slot: usize, names: Vec<String>) -> Result<(), StoreError>;
    /// An operator event of slot `slot`.
    fn event(&mut self, slot: usize, event: Event);
    /// A timer of `addr` is about to fire (the simulator traces it).
    fn firing(&mut self, _addr: &Addr, _timer: Timer) {}
}

/// What a reaction is a reaction to.
pub enum Input {
    Start(Recovered),
    /// `waited`: ms the message spent in the host before this reaction.
    Msg {
        from: Addr,
        msg: Msg,
        waited: Millis,
    },
    Timer(Timer),
}

/// One core and what belongs to it alone.
pub struct Slot<A> {
    addr: Addr,
    core: A,
    rng: SmallRng,
    commit: Commit,
}

/// Group commit state of one slot.
#[derive(Default)]
struct Commit {
    /// Persists reported `Appended` so far.
    appended: u64,
    /// Appends known durable.
    synced: u64,
    /// A sync has been asked of the host and has not completed.
    syncing: bool,
    /// Messages waiting for a sync: `(appends they depend on, to, msg)`.
    held: VecDeque<(u64, Addr, Msg)>,
}

/// The cores of one host and their timers.
pub struct Reactor<A> {
    slots: Vec<Slot<A>>,
    /// Deadline → slot and timer; the second key orders timers due at the
    /// same instant by when they were set.
    timers: BTreeMap<(Millis, u64), (usize, Timer)>,
    timer_keys: BTreeMap<(usize, Timer), (Millis, u64)>,
    timer_seq: u64,
    envelope_seq: u64,
    /// Catch a core's panic and report it as [`Stop::Panicked`] (the
    /// production node restarts); otherwise let it unwind (the simulator
    /// and the tests treat it as the bug it is).
    catch_panics: bool,
    /// Sabotage `send_before_sync`: messages are not held for a sync.
    send_before_sync: bool,
}

impl<A: Actor> Reactor<A> {
    pub fn new(catch_panics: bool) -> Self {
        Reactor {
            slots: Vec::new(),
            timers: BTreeMap::new(),
            timer_keys: BTreeMap::new(),
            timer_seq: 0,
            envelope_seq: 0,
            catch_panics,
            send_before_sync: false,
        }
    }

    /// Applies the sabotages that concern the reactor (for the checkers to
    /// find; production never calls it).
    pub fn sabotaged(mut self, sabotage: &crate::core::settings::Sabotage) -> Self {
        self.send_before_sync = sabotage.send_before_sync;
        self
    }

    /// Adds a core; returns its slot number.
    pub fn add(&mut self, addr: Addr, core: A, rng: SmallRng) -> usize {
        self.slots.push(Slot {
            addr,
            core,
            rng,
            commit: Commit::default(),
        });
        self.slots.len() - 1
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn addr(&self, slot: usize) -> &Addr {
        &self.slots[slot].addr
    }

    pub fn core(&self, slot: usize) -> &A {
        &self.slots[slot].core
    }

    pub fn core_mut(&mut self, slot: usize) -> &mut A {
        &mut self.slots[slot].core
    }

    /// The slot hosting actor `kind`.
    pub fn slot_of(&self, kind: ActorKind) -> Option<usize> {
        self.slots.iter().position(|s| s.addr.actor == kind)
    }

    /// Every slot's gauges.
    pub fn gauges(&self) -> impl Iterator<Item = (usize, Vec<(Gauge, u64)>)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.core.gauges()))
    }

    /// The earliest timer: its deadline, slot and kind.
    pub fn next_timer(&self) -> Option<(Millis, usize, Timer)> {
        self.timers
            .iter()
            .next()
            .map(|(&(at, _), &(slot, timer))| (at, slot, timer))
    }

    /// When `timer` of `slot` is due, if it is set.
    pub fn deadline(&self, slot: usize, timer: Timer) -> Option<Millis> {
        self.timer_keys.get(&(slot, timer)).map(|k| k.0)
    }

    /// Sets `timer` of `slot` to fire at `at`, as a core's `SetTimer` would
    /// (for tests that move time by hand).
    pub fn set_deadline(&mut self, slot: usize, timer: Timer, at: Millis) {
        self.cancel(slot, timer);
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, (slot, timer));
        self.timer_keys.insert((slot, timer), key);
    }

    fn cancel(&mut self, slot: usize, timer: Timer) -> bool {
        match self.timer_keys.remove(&(slot, timer)) {
            Some(key) => {
                self.timers.remove(&key);
                true
            }
            None => false,
        }
    }

    /// Runs one reaction of `slot` to `input` and everything it leads to.
    pub async fn react(&mut self, slot: usize, input: Input, io: &mut impl Io) -> Result<(), Stop> {
        let now = io.now();
        let waited = match &input {
            Input::Msg { waited, .. } => *waited,
            _ => 0,
        };
        let effects = self.call_waited(slot, now, waited, |core, ctx| match input {
            Input::Start(recovered) => {
                // What the engine keeps, the core reads on demand: a host
                // that loaded it anyway does not hand it over.
                let recovered = without_prefixes(recovered, core.engine_prefixes());
                core.on_start(recovered, ctx)
            }
            Input::Msg { from, msg, .. } => core.on_msg(from, msg, ctx),
            Input::Timer(timer) => core.on_timer(timer, ctx),
        })?;
        self.execute(slot, now, effects, io).await
    }

    /// Fires `timer` of `slot` now, if it is set; `false` if it was not.
    pub async fn fire(
        &mut self,
        slot: usize,
        timer: Timer,
        io: &mut impl Io,
    ) -> Result<bool, Stop> {
        if !self.cancel(slot, timer) {
            return Ok(false);
        }
        self.react(slot, Input::Timer(timer), io).await?;
        Ok(true)
    }

    /// Fires, one reaction each and in deadline order, every timer due at
    /// `due` or before — also those the reactions set that are due by then.
    pub async fn fire_due(&mut self, due: Millis, io: &mut impl Io) -> Result<(), Stop> {
        while let Some((at, slot, timer)) = self.next_timer() {
            if at > due {
                break;
            }
            self.cancel(slot, timer);
            io.firing(&self.slots[slot].addr, timer);
            self.react(slot, Input::Timer(timer), io).await?;
        }
        Ok(())
    }

    /// Calls the core with a fresh context at `now`; its effects.
    fn call(
        &mut self,
        slot: usize,
        now: Millis,
        f: impl FnOnce(&mut A, &mut Ctx),
    ) -> Result<Vec<Effect>, Stop> {
        self.call_waited(slot, now, 0, f)
    }

    /// [`Reactor::call`] for a message that waited `waited` ms in the host.
    fn call_waited(
        &mut self,
        slot: usize,
        now: Millis,
        waited: Millis,
        f: impl FnOnce(&mut A, &mut Ctx),
    ) -> Result<Vec<Effect>, Stop> {
        let s = &mut self.slots[slot];
        let (core, addr, rng) = (&mut s.core, &s.addr, &mut s.rng);
        let run = move || {
            let mut ctx = Ctx::waited(now, waited, addr, rng);
            f(core, &mut ctx);
            ctx.into_effects()
        };
        if self.catch_panics {
            catch_unwind(AssertUnwindSafe(run)).map_err(|_| Stop::Panicked(s.addr.actor.as_str()))
        } else {
            Ok(run())
        }
    }

    async fn execute(
        &mut self,
        slot: usize,
        now: Millis,
        effects: Vec<Effect>,
        io: &mut impl Io,
    ) -> Result<(), Stop> {
        // Each effect with the time of the reaction that recorded it: a
        // timer runs from then (contract 3).
        let mut queue: VecDeque<(Millis, Effect)> = effects.into_iter().map(|e| (now, e)).collect();
        while let Some((asked_at, effect)) = queue.pop_front() {
            let more = match effect {
                Effect::Send { to, msg } => {
                    self.send(slot, to, msg, io);
                    continue;
                }
                Effect::SetTimer { timer, after } => {
                    self.set_deadline(slot, timer, asked_at + after);
                    continue;
                }
                Effect::CancelTimer { timer } => {
                    self.cancel(slot, timer);
                    continue;
                }
                Effect::Event(ev) => {
                    io.event(slot, ev);
                    continue;
                }
                Effect::Persist { token, ops } => {
                    let result = match io.persist(slot, ops).await {
                        Persisted::Durable(w) => Ok(w),
                        Persisted::Appended(w) => {
                            self.slots[slot].commit.appended += 1;
                            Ok(w)
                        }
                        Persisted::Failed(e) => Err(e),
                        Persisted::Fatal(why) => return Err(Stop::Fatal(why)),
                    };
                    let now = io.now();
                    (
                        now,
                        self.call(slot, now, |c, ctx| c.on_persisted(token, result, ctx))?,
                    )
                }
                Effect::Load { token, key } => {
                    let result = io.load(slot, key).await;
                    let now = io.now();
                    (
                        now,
                        self.call(slot, now, |c, ctx| c.on_loaded(token, result, ctx))?,
                    )
                }
                Effect::Query { token, query } => {
                    let result = io.query(slot, query).await;
                    let now = io.now();
                    (
                        now,
                        self.call(slot, now, |c, ctx| c.on_queried(token, result, ctx))?,
                    )
                }
                Effect::Output { token, files } => {
                    let result = io.output(slot, files).await;
                    let now = io.now();
                    (
                        now,
                        self.call(slot, now, |c, ctx| c.on_output(token, result, ctx))?,
                    )
                }
                Effect::RemoveOutput { token, names } => {
                    let result = io.remove_output(slot, names).await;
                    let now = io.now();
                    (
                        now,
                        self.call(slot, now, |c, ctx| c.on_output(token, result, ctx))?,
                    )
                }
            };
            // The completion's effects before the rest (contract 2).
            let (at, effects) = more;
            for e in effects.into_iter().rev() {
                queue.push_front((at, e));
            }
        }
        Ok(())
    }

    fn send(&mut self, slot: usize, to: Addr, msg: Msg, io: &mut impl Io) {
        let c = &mut self.slots[slot].commit;
        if (c.appended > c.synced || !c.held.is_empty()) && !self.send_before_sync {
            c.held.push_back((c.appended, to, msg));
        } else {
            self.transmit(slot, to, msg, io);
        }
    }

    fn transmit(&mut self, slot: usize, to: Addr, msg: Msg, io: &mut impl Io) {
        self.envelope_seq += 1;
        io.send(Envelope {
            from: self.slots[slot].addr.clone(),
            to,
            id: self.envelope_seq,
            msg,
        });
    }

    /// Group commit: if `slot` has appends not yet durable and no sync is
    /// running, marks one running and returns how many appends it must
    /// cover. The host syncs the store and reports to [`Reactor::synced`].
    pub fn sync_wanted(&mut self, slot: usize) -> Option<u64> {
        let c = &mut self.slots[slot].commit;
        if c.syncing || c.appended == c.synced {
            return None;
        }
        c.syncing = true;
        Some(c.appended)
    }

    /// A sync asked by [`Reactor::sync_wanted`] completed: the first
    /// `upto` appends are durable; the messages that waited for them leave.
    pub fn synced(&mut self, slot: usize, upto: u64, io: &mut impl Io) {
        let c = &mut self.slots[slot].commit;
        if !c.syncing {
            // Not a sync this reactor asked for (one of a core's earlier
            // life, reporting late): it covers nothing here.
            return;
        }
        c.syncing = false;
        c.synced = c.synced.max(upto.min(c.appended));
        let synced = c.synced;
        while self.slots[slot]
            .commit
            .held
            .front()
            .is_some_and(|(g, ..)| *g <= synced)
        {
            let (_, to, msg) = self.slots[slot]
                .commit
                .held
                .pop_front()
                .expect("front exists");
            self.transmit(slot, to, msg, io);
        }
    }

    /// Messages held for a sync, plus one for a sync owed: zero when
    /// nothing of `slot` waits for the disk (a graceful stop waits for it).
    pub fn pending(&self, slot: usize) -> u64 {
        let c = &self.slots[slot].commit;
        c.held.len() as u64 + u64::from(c.appended > c.synced)
    }
}

/// Polls a future once: its output if it is ready at once, `None` if it
/// would wait. Hosts whose [`Io`] never waits drive the reactor with it.
pub fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// What builds a node's cores: the `Roster` of real cores, or a test
/// double (the contract suite's probes, see the `contract` module beside this one).
pub trait Cores: Send + Sync {
    /// A fresh core of `kind`, as at a (re)start.
    fn core(&self, kind: ActorKind) -> Box<dyn Actor>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::ActorKind;
    use crate::core::protocol::ArchivingMsg;
    use rand::SeedableRng;

    /// A core that persists, then sends, on every message.
    struct PersistThenSend;

    impl Actor for PersistThenSend {
        fn on_start(&mut self, _: Recovered, _: &mut Ctx) {}
        fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
            ctx.persist(1, vec![]);
            ctx.send(from, msg);
        }
        fn on_timer(&mut self, _: Timer, _: &mut Ctx) {}
        fn on_persisted(&mut self, _: u64, _: Result<Written, StoreError>, _: &mut Ctx) {}
    }

    /// Every persist appended, never synced by itself.
    #[derive(Default)]
    struct Appending {
        sent: Vec<Msg>,
    }

    impl Io for Appending {
        fn now(&mut self) -> Millis {
            0
        }
        fn send(&mut self, env: Envelope) {
            self.sent.push(env.msg);
        }
        async fn persist(&mut self, _: usize, _: Vec<StoreOp>) -> Persisted {
            Persisted::Appended(Written::default())
        }
        async fn query(&mut self, _: usize, _: Query) -> Result<Answer, StoreError> {
            Ok(Answer::Rows(Vec::new()))
        }
        async fn load(&mut self, _: usize, _: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        async fn output(&mut self, _: usize, _: Vec<OutputFile>) -> Result<(), StoreError> {
            Ok(())
        }
        async fn remove_output(&mut self, _: usize, _: Vec<String>) -> Result<(), StoreError> {
            Ok(())
        }
        fn event(&mut self, _: usize, _: Event) {}
    }

    fn reactor() -> Reactor<PersistThenSend> {
        let mut r = Reactor::new(false);
        r.add(
            Addr::new("n1", ActorKind::FrontEnd),
            PersistThenSend,
            SmallRng::seed_from_u64(1),
        );
        r
    }

    fn msg(r: &mut Reactor<PersistThenSend>, io: &mut Appending, id: u64) {
        let input = Input::Msg {
            from: Addr::new("n2", ActorKind::FrontEnd),
            msg: Msg::Archiving(ArchivingMsg::HeartbeatAck { id }),
            waited: 0,
        };
        ready(r.react(0, input, io)).unwrap().unwrap();
    }

    fn ids(io: &Appending) -> Vec<u64> {
        io.sent
            .iter()
            .map(|m| match m {
                Msg::Archiving(ArchivingMsg::HeartbeatAck { id }) => *id,
                _ => unreachable!(),
            })
            .collect()
    }

    /// Group commit: what a core sends after an appended persist leaves
    /// only when a sync covering that persist completes, in order; a sync
    /// covers only the appends made before it was asked for.
    #[test]
    fn messages_after_an_append_wait_for_the_sync_that_covers_it() {
        let (mut r, mut io) = (reactor(), Appending::default());
        msg(&mut r, &mut io, 1);
        assert!(io.sent.is_empty(), "held until synced");
        let upto = r.sync_wanted(0).expect("a sync is owed");
        assert_eq!(r.sync_wanted(0), None, "one sync at a time");
        msg(&mut r, &mut io, 2);
        r.synced(0, upto, &mut io);
        assert_eq!(ids(&io), [1], "the second waits for the next sync");
        assert_eq!(r.pending(0), 2, "one held, one sync owed");
        let upto = r.sync_wanted(0).unwrap();
        r.synced(0, upto, &mut io);
        assert_eq!(ids(&io), [1, 2]);
        assert_eq!(r.pending(0), 0);
    }

    /// A sync that this reactor did not ask for (reported late, from a
    /// core's earlier life) releases nothing.
    #[test]
    fn a_sync_not_asked_for_releases_nothing() {
        let (mut r, mut io) = (reactor(), Appending::default());
        msg(&mut r, &mut io, 1);
        r.synced(0, 57, &mut io);
        assert!(io.sent.is_empty());
        let upto = r.sync_wanted(0).unwrap();
        r.synced(0, upto + 100, &mut io);
        assert_eq!(ids(&io), [1]);
        msg(&mut r, &mut io, 2);
        assert_eq!(
            ids(&io),
            [1],
            "the next append is not covered by a sync claiming more"
        );
    }
}

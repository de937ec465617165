//! The actor contract.
//!
//! A core is a deterministic state machine. It is started with what its
//! durable store held ([`Recovered`]), then reacts to messages, timers and
//! the completion of its own persistence requests. Every reaction records
//! [`Effect`]s in a [`Ctx`]; the host executes them **in order**.
//!
//! Host guarantees every host (simulator, production, test kit) keeps — all
//! three run the one executor of [`crate::reactor`], which states them in
//! full and where `host/tests/contract.rs` checks them:
//! 1. Effects of one reaction are executed in the order recorded.
//! 2. A [`Effect::Persist`] is applied before any later effect of the same
//!    reaction runs, and its result is reported through
//!    [`Actor::on_persisted`] *before any other event* reaches the actor.
//!    Cores rely on this to keep their in-memory state equal to what is on
//!    disk plus the one write in flight. Nothing the core sends after it
//!    leaves the node before it is durable (a host may sync groups of
//!    writes at once and hold those messages meanwhile).
//! 3. Timers are per actor and per [`Timer`] value: setting a timer that is
//!    already set moves it. A timer is due `after` from the time of the
//!    reaction that set it.
//! 4. A [`Effect::Load`] reads one key of the actor's store (what earlier
//!    persists left there) and reports it through [`Actor::on_loaded`],
//!    like a persist, before any other event. It lets a core keep large
//!    values (file contents) out of memory: a host may keep such keys
//!    outside the state it hands to [`Actor::on_start`].
//! 5. A [`Effect::Query`] reads committed rows of the actor's engine
//!    (see [`crate::core::engine`]) and is reported through
//!    [`Actor::on_queried`] like a load: before any other event, so a core
//!    that queries and then writes sees no other write in between.

use crate::core::engine::{Answer, Query};
pub use crate::core::engine::{Recovered, StoreError, StoreOp, Written};
use crate::core::ids::{Addr, Millis};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::compliance::ComplianceTimer;
use crate::core::protocol::{Msg, RecordsMsg};
use rand::rngs::SmallRng;

/// Timers a core can set. One type for all cores keeps hosts simple; each
/// domain has its own ([`ArchivingTimer`], [`ChatTimer`],
/// [`ComplianceTimer`]), so that a core matches only its service's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    Archiving(ArchivingTimer),
    Chat(ChatTimer),
    Compliance(ComplianceTimer),
}

impl From<ArchivingTimer> for Timer {
    fn from(t: ArchivingTimer) -> Timer {
        Timer::Archiving(t)
    }
}

/// An operator event: its kind (whose stable name dashboards and scenario
/// expectations know) and a human detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: OperatorEvent,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Send {
        to: Addr,
        msg: Msg,
    },
    SetTimer {
        timer: Timer,
        after: Millis,
    },
    CancelTimer {
        timer: Timer,
    },
    Persist {
        token: u64,
        ops: Vec<StoreOp>,
    },
    Load {
        token: u64,
        key: Vec<u8>,
    },
    /// Reads committed rows of the actor's engine; reported through
    /// [`Actor::on_queried`], like a persist, before any other event.
    Query {
        token: u64,
        query: Query,
    },
    /// Write files into the actor's output folder (compliance export),
    /// each atomically; reported through [`Actor::on_output`].
    Output {
        token: u64,
        files: Vec<crate::core::output::OutputFile>,
    },
    /// Remove files from the actor's output folder (a missing one is not
    /// an error), the removals durable; reported through
    /// [`Actor::on_output`].
    RemoveOutput {
        token: u64,
        names: Vec<String>,
    },
    Event(Event),
}

/// The context of one reaction: the current time, a seeded RNG, and the
/// effects recorded so far.
pub struct Ctx<'a> {
    now: Millis,
    waited: Millis,
    me: &'a Addr,
    rng: &'a mut SmallRng,
    effects: Vec<Effect>,
}

impl<'a> Ctx<'a> {
    pub fn new(now: Millis, me: &'a Addr, rng: &'a mut SmallRng) -> Self {
        Ctx {
            now,
            waited: 0,
            me,
            rng,
            effects: Vec::new(),
        }
    }

    /// The same, for a message that waited `waited` ms in its host (its
    /// inbox, a saturated processor) before the core got it.
    pub fn waited(now: Millis, waited: Millis, me: &'a Addr, rng: &'a mut SmallRng) -> Self {
        Ctx {
            waited,
            ..Ctx::new(now, me, rng)
        }
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// How long the message being handled waited in its host before it
    /// reached the core (0 for timers, completions and local messages): a
    /// host falling behind shows here before anything the core holds does.
    pub fn waited_ms(&self) -> Millis {
        self.waited
    }
    pub fn me(&self) -> &Addr {
        self.me
    }
    /// The actor's deterministic RNG (seeded by the host from the run seed).
    pub fn rng(&mut self) -> &mut SmallRng {
        self.rng
    }
    /// Sends `msg`: a [`Msg`], or a domain's message
    /// ([`ArchivingMsg`](crate::core::protocol::ArchivingMsg), …).
    pub fn send(&mut self, to: Addr, msg: impl Into<Msg>) {
        let msg = msg.into();
        self.effects.push(Effect::Send { to, msg });
    }
    /// Sets `timer`: a [`Timer`], or a domain's timer ([`ArchivingTimer`], …).
    pub fn set_timer(&mut self, timer: impl Into<Timer>, after: Millis) {
        let timer = timer.into();
        self.effects.push(Effect::SetTimer { timer, after });
    }
    pub fn cancel_timer(&mut self, timer: impl Into<Timer>) {
        let timer = timer.into();
        self.effects.push(Effect::CancelTimer { timer });
    }
    pub fn persist(&mut self, token: u64, ops: Vec<StoreOp>) {
        self.effects.push(Effect::Persist { token, ops });
    }
    /// Reads `key` of this actor's store; the answer comes to
    /// [`Actor::on_loaded`] with `token`.
    pub fn load(&mut self, token: u64, key: Vec<u8>) {
        self.effects.push(Effect::Load { token, key });
    }
    /// Reads rows of this actor's engine; the answer comes to
    /// [`Actor::on_queried`] with `token`.
    pub fn query(&mut self, token: u64, query: Query) {
        self.effects.push(Effect::Query { token, query });
    }
    /// Writes `files` into the actor's output folder; the result comes to
    /// [`Actor::on_output`] with `token`.
    pub fn output(&mut self, token: u64, files: Vec<crate::core::output::OutputFile>) {
        self.effects.push(Effect::Output { token, files });
    }
    /// Removes `names` from the actor's output folder; the result comes to
    /// [`Actor::on_output`] with `token`.
    pub fn remove_output(&mut self, token: u64, names: Vec<String>) {
        self.effects.push(Effect::RemoveOutput { token, names });
    }
    pub fn event(&mut self, kind: OperatorEvent, detail: impl Into<String>) {
        self.effects.push(Effect::Event(Event {
            kind,
            detail: detail.into(),
        }));
    }
    /// Hands the recorded effects to the host.
    pub fn into_effects(self) -> Vec<Effect> {
        self.effects
    }
}

/// Drops a message from a sender the protocol does not allow, with an
/// operator event; returns whether the message may be processed. Cores call
/// it first thing in `on_msg`: a forged acknowledgement must never delete a
/// record.
pub fn authorize(ok: bool, me: &str, from: &Addr, msg: &Msg, ctx: &mut Ctx) -> bool {
    if !ok {
        ctx.event(
            OperatorEvent::UnauthorizedSender,
            format!(
                "{me} dropped {} from {from}: not a sender the protocol allows",
                msg.name()
            ),
        );
    }
    ok
}

/// Records a message this core has no use for: an operator event naming
/// the core (`what` and `me`, say "archiver arch1"), the message and
/// whence it came.
pub fn ignored(what: &str, me: &str, msg: &str, from: impl std::fmt::Display, ctx: &mut Ctx) {
    ctx.event(
        OperatorEvent::UnexpectedMessage,
        format!("{what} {me} ignored {msg} from {from}"),
    );
}

/// Records that a client's request was refused for who sent it: an
/// operator event naming the request, the sender and the reason.
pub fn identity_refused(
    me: &str,
    from: &Addr,
    what: &str,
    refusal: &crate::core::identity::Refusal,
    ctx: &mut Ctx,
) {
    ctx.event(
        OperatorEvent::IdentityRefused,
        format!("{me} refused {what} from {from}: {refusal}"),
    );
}

/// The principal (`<role>:<user>`) of a records request (a read of the
/// archive, a hold, a purge) from `from` if it has one of `roles`;
/// otherwise the request is answered `Forbidden` and recorded as
/// `identity_refused`. The database and the chat store both ask it.
pub fn records_principal(
    me: &str,
    from: &Addr,
    token: crate::core::ids::Token,
    what: &str,
    roles: &[crate::core::identity::Role],
    ctx: &mut Ctx,
) -> Option<String> {
    use crate::core::protocol::ArchiveRefusal;
    match crate::core::identity::require(from, roles) {
        Ok(p) => Some(format!("{}:{}", p.role, p.user)),
        Err(refusal) => {
            identity_refused(me, from, what, &refusal, ctx);
            let refusal = ArchiveRefusal::Forbidden(refusal.to_string());
            ctx.send(from.clone(), RecordsMsg::ArchiveRefused { token, refusal });
            None
        }
    }
}

/// Answers a records request that cannot be done as asked (a hold that
/// exists already, one to release that does not).
pub fn records_invalid(from: Addr, token: crate::core::ids::Token, why: String, ctx: &mut Ctx) {
    let refusal = crate::core::protocol::ArchiveRefusal::Invalid(why);
    ctx.send(from, RecordsMsg::ArchiveRefused { token, refusal });
}

/// A core. Hosts own one `Box<dyn Actor>` per actor of a node.
pub trait Actor {
    /// Called once at (re)start with the durable state.
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx);
    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx);
    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx);
    /// Result of the `Persist` effect carrying `token`.
    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx);
    /// Result of the `Load` effect carrying `token`: the value, `None` if
    /// the key holds nothing. Cores that never load need not implement it.
    fn on_loaded(
        &mut self,
        _token: u64,
        _result: Result<Option<Vec<u8>>, StoreError>,
        _ctx: &mut Ctx,
    ) {
    }
    /// Result of the `Query` effect carrying `token`. Cores that never
    /// query need not implement it.
    fn on_queried(&mut self, _token: u64, _result: Result<Answer, StoreError>, _ctx: &mut Ctx) {}
    /// Result of the `Output` (or `RemoveOutput`) effect carrying
    /// `token`: every file written (or removed) and synced, or why not.
    fn on_output(&mut self, _token: u64, _result: Result<(), StoreError>, _ctx: &mut Ctx) {}
    /// Key prefixes whose rows the engine keeps and the core reads on
    /// demand ([`Query`]): a host leaves them out of what it hands
    /// [`Actor::on_start`], so that starting does not read the archive.
    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[]
    }
    /// Gauges for monitoring (queue depth, …), sampled by the host.
    fn gauges(&self) -> Vec<(Gauge, u64)> {
        Vec::new()
    }
}

/// A boxed core is a core: hosts keep cores of several kinds in one
/// reactor as `Box<dyn Actor>`.
impl<T: Actor + ?Sized> Actor for Box<T> {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        (**self).on_start(recovered, ctx)
    }
    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        (**self).on_msg(from, msg, ctx)
    }
    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        (**self).on_timer(timer, ctx)
    }
    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        (**self).on_persisted(token, result, ctx)
    }
    fn on_loaded(
        &mut self,
        token: u64,
        result: Result<Option<Vec<u8>>, StoreError>,
        ctx: &mut Ctx,
    ) {
        (**self).on_loaded(token, result, ctx)
    }
    fn on_queried(&mut self, token: u64, result: Result<Answer, StoreError>, ctx: &mut Ctx) {
        (**self).on_queried(token, result, ctx)
    }
    fn on_output(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        (**self).on_output(token, result, ctx)
    }
    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        (**self).engine_prefixes()
    }
    fn gauges(&self) -> Vec<(Gauge, u64)> {
        (**self).gauges()
    }
}

//! Test helpers: a tiny synchronous host for driving one core.

use crate::core::actor::{Actor, Event, Recovered, StoreError, StoreOp, Timer};
use crate::core::cluster::{ArchiverInfo, Cluster, FrontEndInfo};
use crate::core::engine::{self, Answer, Query};
use crate::core::ids::{Addr, Millis};
use crate::core::policy::{ArchiveSwitch, Policy};
use crate::core::protocol::{ArchiveRecord, Envelope, Msg, RecordKind};
use crate::core::reactor::{ready, Input, Io, Persisted, Reactor};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// fe1 homes a@, c@ and d@, fe2 homes b@; archive everything except c@ and d@.
/// The address of a client connection authenticated as `user` (role user).
pub fn client_of(user: &str) -> Addr {
    client_as(user, crate::core::identity::Role::User)
}

/// The address of a client connection authenticated as `user` in `role`.
pub fn client_as(user: &str, role: crate::core::identity::Role) -> Addr {
    let p = crate::core::identity::Principal::new(user, role);
    Addr::new(p.client_name("t"), crate::core::ids::ActorKind::Client)
}

/// An IM record from a@ to b@ through fe1 whose id and client id are `id`:
/// the archiving cores' tests' usual record.
pub fn record(id: &str) -> ArchiveRecord {
    ArchiveRecord {
        kind: RecordKind::Im,
        id: id.into(),
        client_id: id.into(),
        from: "a@corp.example".into(),
        to: "b@corp.example".into(),
        time: 0,
        body: "x".into(),
        external: false,
        front_end: "fe1".into(),
    }
}

pub fn cluster() -> Arc<Cluster> {
    let mut front_ends = BTreeMap::new();
    for fe in ["fe1", "fe2"] {
        front_ends.insert(
            fe.to_string(),
            FrontEndInfo {
                site: "hq".into(),
                archiver: "arch1".into(),
            },
        );
    }
    let mut archivers = BTreeMap::new();
    archivers.insert(
        "arch1".to_string(),
        ArchiverInfo {
            database: "db1".into(),
        },
    );
    let mut users = BTreeMap::new();
    users.insert("a@corp.example".into(), "fe1".to_string());
    users.insert("c@corp.example".into(), "fe1".to_string());
    users.insert("d@corp.example".into(), "fe1".to_string());
    users.insert("b@corp.example".into(), "fe2".to_string());
    let mut policy = Policy {
        global: ArchiveSwitch::ALL,
        ..Default::default()
    };
    policy
        .users
        .insert("c@corp.example".into(), ArchiveSwitch::NONE);
    policy
        .users
        .insert("d@corp.example".into(), ArchiveSwitch::NONE);
    Arc::new(Cluster {
        domain: "corp.example".into(),
        front_ends,
        archivers,
        databases: vec!["db1".into()],
        users,
        policy,
    })
}

/// Drives one actor through the shared [`Reactor`], applies its persists to
/// an in-memory store (or fails them on demand), and returns what it sent.
pub struct Harness<A: Actor> {
    reactor: Reactor<A>,
    pub now: Millis,
    pub store: Recovered,
    pub fail_persists: Option<StoreError>,
    /// Set: queries fail with this (the engine is unreachable).
    pub fail_queries: Option<StoreError>,
    /// Every `Output` effect's files, in order.
    pub outputs: Vec<Vec<crate::core::output::OutputFile>>,
    /// Set: outputs fail with this (a full or unwritable folder).
    pub fail_outputs: Option<StoreError>,
    /// Every `RemoveOutput` effect's names, in order (failing like
    /// outputs with `fail_outputs`).
    pub removed: Vec<Vec<String>>,
    events: Vec<&'static str>,
}

/// The test kit's I/O: an in-memory store, a clock moved by hand, and
/// everything sent collected in order.
struct KitIo<'a> {
    now: Millis,
    store: &'a mut Recovered,
    fail_persists: &'a Option<StoreError>,
    fail_queries: &'a Option<StoreError>,
    outputs: &'a mut Vec<Vec<crate::core::output::OutputFile>>,
    fail_outputs: &'a Option<StoreError>,
    removed: &'a mut Vec<Vec<String>>,
    events: &'a mut Vec<&'static str>,
    sent: Vec<(Addr, Msg)>,
}

impl Io for KitIo<'_> {
    fn now(&mut self) -> Millis {
        self.now
    }
    fn send(&mut self, env: Envelope) {
        self.sent.push((env.to, env.msg));
    }
    async fn persist(&mut self, _slot: usize, ops: Vec<StoreOp>) -> Persisted {
        if let Some(err) = self.fail_persists {
            return Persisted::Failed(err.clone());
        }
        Persisted::Durable(engine::apply(self.store, ops))
    }
    async fn query(&mut self, _slot: usize, query: Query) -> Result<Answer, StoreError> {
        match self.fail_queries {
            Some(err) => Err(err.clone()),
            None => Ok(engine::answer(self.store, &query)),
        }
    }
    async fn load(&mut self, _slot: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        match self.fail_persists {
            Some(err) => Err(err.clone()),
            None => Ok(self.store.get(&key).cloned()),
        }
    }
    async fn output(
        &mut self,
        _slot: usize,
        files: Vec<crate::core::output::OutputFile>,
    ) -> Result<(), StoreError> {
        self.outputs.push(files);
        match self.fail_outputs {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
    async fn remove_output(&mut self, _slot: usize, names: Vec<String>) -> Result<(), StoreError> {
        self.removed.push(names);
        match self.fail_outputs {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
    fn event(&mut self, _slot: usize, event: Event) {
        self.events.push(event.kind.name());
    }
}

impl<A: Actor> Harness<A> {
    pub fn new(me: Addr, actor: A) -> Self {
        let mut reactor = Reactor::new(false);
        reactor.add(me, actor, SmallRng::seed_from_u64(1));
        Harness {
            reactor,
            now: 0,
            store: Recovered::new(),
            fail_persists: None,
            fail_queries: None,
            outputs: Vec::new(),
            fail_outputs: None,
            removed: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn actor(&self) -> &A {
        self.reactor.core(0)
    }

    /// When `timer` is due, if it is set.
    pub fn timer(&self, timer: impl Into<Timer>) -> Option<Millis> {
        self.reactor.deadline(0, timer.into())
    }

    /// Sets `timer` to be due at `at`, as if the core had set it.
    pub fn set_timer(&mut self, timer: impl Into<Timer>, at: Millis) {
        self.reactor.set_deadline(0, timer.into(), at);
    }

    pub fn events(&self) -> Vec<&'static str> {
        self.events.clone()
    }

    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    fn run(&mut self, input: Option<Input>, timer: Option<Timer>) -> Vec<(Addr, Msg)> {
        let mut io = KitIo {
            now: self.now,
            store: &mut self.store,
            fail_persists: &self.fail_persists,
            fail_queries: &self.fail_queries,
            outputs: &mut self.outputs,
            fail_outputs: &self.fail_outputs,
            removed: &mut self.removed,
            events: &mut self.events,
            sent: Vec::new(),
        };
        let done = match (input, timer) {
            (Some(input), _) => ready(self.reactor.react(0, input, &mut io)).map(|r| r.map(|_| ())),
            (None, Some(t)) => ready(self.reactor.fire(0, t, &mut io)).map(|r| r.map(|_| ())),
            (None, None) => unreachable!("an input or a timer"),
        };
        match done {
            Some(Ok(())) => io.sent,
            Some(Err(stop)) => panic!("the reactor stopped: {stop}"),
            None => unreachable!("the test kit's I/O never waits"),
        }
    }

    pub fn start(&mut self, recovered: Recovered) -> Vec<(Addr, Msg)> {
        self.run(Some(Input::Start(recovered)), None)
    }

    pub fn msg(&mut self, from: Addr, msg: impl Into<Msg>) -> Vec<(Addr, Msg)> {
        self.msg_waited(from, msg, 0)
    }

    /// A message that waited `waited` ms in the host before the core.
    pub fn msg_waited(
        &mut self,
        from: Addr,
        msg: impl Into<Msg>,
        waited: Millis,
    ) -> Vec<(Addr, Msg)> {
        let msg = msg.into();
        self.run(Some(Input::Msg { from, msg, waited }), None)
    }

    /// Advances time to the timer's deadline and fires it.
    pub fn fire(&mut self, timer: impl Into<Timer>) -> Vec<(Addr, Msg)> {
        let timer = timer.into();
        let at = self.timer(timer).expect("timer is set");
        self.now = self.now.max(at);
        self.run(None, Some(timer))
    }
}

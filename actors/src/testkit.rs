//! Test helpers: a tiny synchronous host for driving one core.

use crate::core::actor::{Actor, Ctx, Effect, Recovered, StoreError, StoreOp, Timer};
use crate::core::cluster::{ArchiverInfo, Cluster, FrontEndInfo};
use crate::core::ids::{Addr, Millis};
use crate::core::policy::{ArchiveSwitch, Policy};
use crate::core::protocol::Msg;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// fe1 homes a@, c@ and d@, fe2 homes b@; archive everything except c@ and d@.
/// The address of a client connection authenticated as `user` (role user).
pub fn client_of(user: &str) -> Addr {
    let p = crate::core::identity::Principal::new(user, crate::core::identity::Role::User);
    Addr::new(p.client_name("t"), crate::core::ids::ActorKind::Client)
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
    users.insert("a@corp.example".to_string(), "fe1".to_string());
    users.insert("c@corp.example".to_string(), "fe1".to_string());
    users.insert("d@corp.example".to_string(), "fe1".to_string());
    users.insert("b@corp.example".to_string(), "fe2".to_string());
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

/// Drives one actor, applies its persists to an in-memory store (or fails
/// them on demand), and returns what it sent.
pub struct Harness<A: Actor> {
    pub actor: A,
    pub me: Addr,
    pub now: Millis,
    pub store: Recovered,
    pub timers: BTreeMap<Timer, Millis>,
    pub fail_persists: Option<StoreError>,
    /// Every `Output` effect's files, in order.
    pub outputs: Vec<Vec<crate::core::output::OutputFile>>,
    /// Set: outputs fail with this (a full or unwritable folder).
    pub fail_outputs: Option<StoreError>,
    events: Vec<&'static str>,
    rng: SmallRng,
}

impl<A: Actor> Harness<A> {
    pub fn new(me: Addr, actor: A) -> Self {
        Harness {
            actor,
            me,
            now: 0,
            store: Recovered::new(),
            timers: BTreeMap::new(),
            fail_persists: None,
            outputs: Vec::new(),
            fail_outputs: None,
            events: Vec::new(),
            rng: SmallRng::seed_from_u64(1),
        }
    }

    pub fn events(&self) -> Vec<&'static str> {
        self.events.clone()
    }

    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    fn run(&mut self, f: impl FnOnce(&mut A, &mut Ctx)) -> Vec<(Addr, Msg)> {
        let me = self.me.clone();
        let mut ctx = Ctx::new(self.now, &me, &mut self.rng);
        f(&mut self.actor, &mut ctx);
        let effects = ctx.into_effects();
        self.execute(effects)
    }

    fn execute(&mut self, effects: Vec<Effect>) -> Vec<(Addr, Msg)> {
        let mut sent = Vec::new();
        for e in effects {
            match e {
                Effect::Send { to, msg } => sent.push((to, msg)),
                Effect::SetTimer { timer, after } => {
                    self.timers.insert(timer, self.now + after);
                }
                Effect::CancelTimer { timer } => {
                    self.timers.remove(&timer);
                }
                Effect::Event(ev) => self.events.push(ev.kind.name()),
                Effect::Output { token, files } => {
                    self.outputs.push(files);
                    let result = match &self.fail_outputs {
                        Some(err) => Err(err.clone()),
                        None => Ok(()),
                    };
                    let more = self.run(|a, ctx| a.on_output(token, result, ctx));
                    sent.extend(more);
                }
                Effect::Load { token, key } => {
                    let result = match &self.fail_persists {
                        Some(err) => Err(err.clone()),
                        None => Ok(self.store.get(&key).cloned()),
                    };
                    let more = self.run(|a, ctx| a.on_loaded(token, result, ctx));
                    sent.extend(more);
                }
                Effect::Persist { token, ops } => {
                    let result = match &self.fail_persists {
                        Some(err) => Err(err.clone()),
                        None => {
                            for op in ops {
                                match op {
                                    StoreOp::Put { key, value } => {
                                        self.store.insert(key, value);
                                    }
                                    StoreOp::Delete { key } => {
                                        self.store.remove(&key);
                                    }
                                }
                            }
                            Ok(())
                        }
                    };
                    let more = self.run(|a, ctx| a.on_persisted(token, result, ctx));
                    sent.extend(more);
                }
            }
        }
        sent
    }

    pub fn start(&mut self, recovered: Recovered) -> Vec<(Addr, Msg)> {
        self.run(|a, ctx| a.on_start(recovered, ctx))
    }

    pub fn msg(&mut self, from: Addr, msg: Msg) -> Vec<(Addr, Msg)> {
        self.run(|a, ctx| a.on_msg(from, msg, ctx))
    }

    /// Advances time to the timer's deadline and fires it.
    pub fn fire(&mut self, timer: Timer) -> Vec<(Addr, Msg)> {
        let at = self.timers.remove(&timer).expect("timer is set");
        self.now = self.now.max(at);
        self.run(|a, ctx| a.on_timer(timer, ctx))
    }
}

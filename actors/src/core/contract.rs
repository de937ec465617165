//! The host contract as a test every host adapter runs.
//!
//! A node hosting two [`Probe`] cores — a *driver* in the front end's slot
//! and a *sink* in the outgoing queue's — is started on a fresh store, left
//! to run for a few simulated or real seconds, restarted from its disk, and
//! left to run again. The driver plays a fixed script through every kind
//! of effect; both write what they saw into a shared [`Journal`]. Then
//! [`check`] reads the journal against the contract of
//! [`crate::reactor`]. The same script and the same check run over the test
//! kit, the simulated node and the production node, so a host that breaks
//! a guarantee fails here whichever it is.
//!
//! The script (first life, started on an empty store):
//! - start: persist `a` and insert the engine row `e/1` twice (token 1),
//!   send marker 1 to the sink, set `Flush` to 50 ms, load `a` (token 2),
//!   query the engine rows under `e/` (token 5);
//! - persist 1 done: send marker 2; load 2 and query 5 done: note them;
//! - `Flush`: set `Resend` to 10 ms and move it to 30 ms, set and cancel
//!   `Heartbeat`, persist `b` (token 3), output two files (token 4),
//!   send marker 3;
//! - persist 3 done: send marker 4; output 4 done: send marker 5, remove
//!   the second file and one that is not there (token 7); removal 7 done:
//!   note it;
//! - `Resend`: note it (and, where the host restarts on a panic, panic).
//!
//! In its second life the driver is started with `a` and `b` — not with
//! `e/1`, which the engine keeps — and queries `e/` again (token 6).

use crate::core::actor::{Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written};
use crate::core::engine::{Answer, Query};
use crate::core::ids::{ActorKind, Addr, Millis};
use crate::core::output::OutputFile;
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{ArchivingMsg, Msg};
use crate::core::reactor::Cores;
use std::sync::{Arc, Mutex};

/// What a probe saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A probe started: the driver or the sink, with its store's keys.
    Started {
        driver: bool,
        keys: Vec<Vec<u8>>,
        now: Millis,
    },
    Persisted {
        token: u64,
        ok: bool,
        /// How many inserts the host said wrote.
        inserted: u64,
        now: Millis,
    },
    /// The values a query's rows held.
    Queried {
        token: u64,
        values: Vec<Vec<u8>>,
    },
    Loaded {
        token: u64,
        value: Option<Vec<u8>>,
    },
    Output {
        token: u64,
        ok: bool,
        now: Millis,
    },
    Timer {
        timer: Timer,
        now: Millis,
    },
    /// The sink received marker `n`.
    Marker {
        n: u64,
    },
}

/// Shared between the probes and the test.
pub type Journal = Arc<Mutex<Vec<Seen>>>;

/// The probe's file, written by the `Output` effect.
pub const PROBE_FILE: &str = "contract-probe.txt";
/// The probe's second file, written with the first and then removed by
/// the `RemoveOutput` effect: it must be gone.
pub const PROBE_GONE: &str = "contract-probe-gone.txt";

/// The driver's timer and its delay.
const FLUSH_AFTER: Millis = 50;
/// The moved timer's final delay.
const RESEND_AFTER: Millis = 30;

/// A core that plays the contract script (the driver) or records what it
/// receives (the sink).
pub struct Probe {
    journal: Journal,
    sink: Option<Addr>,
    /// Panic when the script is over: a host that restarts on a panic
    /// (production) is restarted that way.
    panic_at_end: bool,
    /// Reactions of the first life; the second does nothing.
    scripted: bool,
}

impl Probe {
    fn note(&self, seen: Seen) {
        lock(&self.journal).push(seen);
    }

    fn marker(&self, n: u64, ctx: &mut Ctx) {
        if let Some(sink) = &self.sink {
            ctx.send(sink.clone(), ArchivingMsg::HeartbeatAck { id: n });
        }
    }
}

impl Actor for Probe {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        let keys: Vec<Vec<u8>> = recovered.keys().cloned().collect();
        self.note(Seen::Started {
            driver: self.sink.is_some(),
            keys: keys.clone(),
            now: ctx.now(),
        });
        self.scripted = self.sink.is_some() && keys.is_empty();
        if !self.scripted {
            if self.sink.is_some() {
                ctx.query(6, engine_rows());
            }
            return;
        }
        let mut ops = put(b"a", b"1");
        for value in [b"x", b"y"] {
            ops.push(StoreOp::Insert {
                key: ENGINE_ROW.to_vec(),
                value: value.to_vec(),
            });
        }
        ctx.persist(1, ops);
        self.marker(1, ctx);
        ctx.set_timer(ArchivingTimer::Flush, FLUSH_AFTER);
        ctx.load(2, b"a".to_vec());
        ctx.query(5, engine_rows());
    }

    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[ENGINE_PREFIX]
    }

    fn on_queried(&mut self, token: u64, result: Result<Answer, StoreError>, _ctx: &mut Ctx) {
        let values = match result {
            Ok(a) => a.into_rows().into_iter().map(|(_, v)| v).collect(),
            Err(e) => vec![format!("error: {e}").into_bytes()],
        };
        self.note(Seen::Queried { token, values });
    }

    fn on_msg(&mut self, _from: Addr, msg: Msg, _ctx: &mut Ctx) {
        if let Msg::Archiving(ArchivingMsg::HeartbeatAck { id }) = msg {
            self.note(Seen::Marker { n: id });
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        self.note(Seen::Timer {
            timer,
            now: ctx.now(),
        });
        if !self.scripted {
            return;
        }
        match timer {
            Timer::Archiving(ArchivingTimer::Flush) => {
                ctx.set_timer(ArchivingTimer::Resend, 10);
                ctx.set_timer(ArchivingTimer::Resend, RESEND_AFTER);
                ctx.set_timer(ArchivingTimer::Heartbeat, 5);
                ctx.cancel_timer(ArchivingTimer::Heartbeat);
                ctx.persist(3, put(b"b", b"2"));
                ctx.output(
                    4,
                    vec![
                        OutputFile {
                            name: PROBE_FILE.into(),
                            data: b"probe".to_vec(),
                        },
                        OutputFile {
                            name: PROBE_GONE.into(),
                            data: b"gone".to_vec(),
                        },
                    ],
                );
                self.marker(3, ctx);
            }
            Timer::Archiving(ArchivingTimer::Resend) if self.panic_at_end => {
                panic!("the contract probe ends its first life")
            }
            _ => {}
        }
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        self.note(Seen::Persisted {
            token,
            ok: result.is_ok(),
            inserted: result.map_or(0, |w| w.inserted),
            now: ctx.now(),
        });
        match token {
            1 => self.marker(2, ctx),
            3 => self.marker(4, ctx),
            _ => {}
        }
    }

    fn on_loaded(
        &mut self,
        token: u64,
        result: Result<Option<Vec<u8>>, StoreError>,
        _ctx: &mut Ctx,
    ) {
        self.note(Seen::Loaded {
            token,
            value: result.ok().flatten(),
        });
    }

    fn on_output(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        self.note(Seen::Output {
            token,
            ok: result.is_ok(),
            now: ctx.now(),
        });
        if token == 4 {
            self.marker(5, ctx);
            let names = vec![PROBE_GONE.into(), "contract-probe-never-written.txt".into()];
            ctx.remove_output(7, names);
        }
    }
}

fn lock(journal: &Journal) -> std::sync::MutexGuard<'_, Vec<Seen>> {
    // A poisoned lock means a probe panicked on purpose (`panic_at_end`):
    // the journal is whole.
    journal.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the driver keeps its engine rows, and its one row.
const ENGINE_PREFIX: &[u8] = b"e/";
const ENGINE_ROW: &[u8] = b"e/1";

fn engine_rows() -> Query {
    Query::Scan {
        prefix: ENGINE_PREFIX.to_vec(),
        from: None,
        reverse: false,
        limit: 10,
    }
}

fn put(key: &[u8], value: &[u8]) -> Vec<StoreOp> {
    vec![StoreOp::Put {
        key: key.to_vec(),
        value: value.to_vec(),
    }]
}

/// The probes of one node: the driver as its front end, the sink as its
/// outgoing queue (the two actors of a front-end node).
pub struct Probes {
    pub node: String,
    pub journal: Journal,
    pub panic_at_end: bool,
}

impl Probes {
    pub fn new(node: &str, panic_at_end: bool) -> Self {
        Probes {
            node: node.into(),
            journal: Journal::default(),
            panic_at_end,
        }
    }

    /// What the probes saw so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.journal).clone()
    }

    /// A fresh probe for `kind`'s slot.
    pub fn probe(&self, kind: ActorKind) -> Probe {
        Probe {
            journal: self.journal.clone(),
            sink: (kind == ActorKind::FrontEnd)
                .then(|| Addr::new(self.node.clone(), ActorKind::OutgoingQueue)),
            panic_at_end: self.panic_at_end,
            scripted: false,
        }
    }
}

impl Cores for Probes {
    fn core(&self, kind: ActorKind) -> Box<dyn Actor> {
        Box::new(self.probe(kind))
    }
}

/// How late a host may fire a timer (the production clock and scheduler
/// are not exact; the simulator and the test kit are).
#[derive(Clone, Copy, Debug)]
pub struct Slack(pub Millis);

/// Checks a journal of the script against the contract; returns every
/// guarantee broken, in words (empty: the host keeps the contract).
pub fn check(seen: &[Seen], slack: Slack) -> Vec<String> {
    let mut broken = Vec::new();
    let mut fail = |what: String| broken.push(what);
    let starts: Vec<(&Vec<Vec<u8>>, Millis)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Started {
                driver: true,
                keys,
                now,
            } => Some((keys, *now)),
            _ => None,
        })
        .collect();
    if starts.len() != 2 {
        fail(format!(
            "restart from recovered state: expected the driver to start twice (two lives), it started {} times",
            starts.len()
        ));
        return broken;
    }
    let t0 = starts[0].1;
    // 1 + 2: effects in order; a completion's effects before the rest of
    // the reaction's.
    let markers: Vec<u64> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Marker { n } => Some(*n),
            _ => None,
        })
        .collect();
    if markers != [2, 1, 4, 5, 3] {
        fail(format!(
            "effect order: the sink should receive markers [2, 1, 4, 5, 3] (a completion's sends before the rest of the reaction's), received {markers:?}"
        ));
    }
    // 2: a persist's result before any other event of the driver; a load
    // after a persist reads it.
    let first_life: Vec<&Seen> = seen
        .iter()
        .filter(|s| !matches!(s, Seen::Started { .. } | Seen::Marker { .. }))
        .collect();
    let expect_kinds = [
        "persisted 1",
        "loaded 2",
        "queried 5",
        "timer Archiving(Flush)",
        "persisted 3",
        "output 4",
        "output 7",
        "timer Archiving(Resend)",
        "queried 6",
    ];
    let kinds: Vec<String> = first_life
        .iter()
        .map(|s| match s {
            Seen::Persisted { token, .. } => format!("persisted {token}"),
            Seen::Loaded { token, .. } => format!("loaded {token}"),
            Seen::Queried { token, .. } => format!("queried {token}"),
            Seen::Output { token, .. } => format!("output {token}"),
            Seen::Timer { timer, .. } => format!("timer {timer:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    if kinds != expect_kinds {
        fail(format!(
            "completions and timers: expected {expect_kinds:?}, saw {kinds:?}"
        ));
    }
    for s in &first_life {
        match s {
            Seen::Persisted {
                token, ok: false, ..
            } => fail(format!("persist {token} failed on a healthy store")),
            Seen::Output {
                token, ok: false, ..
            } => fail(format!("output {token} failed on a healthy folder")),
            Seen::Loaded { value, .. } if value.as_deref() != Some(b"1") => fail(format!(
                "a load after a persist must read what it wrote: read {value:?}"
            )),
            Seen::Persisted {
                token: 1, inserted, ..
            } if *inserted != 1 => fail(format!(
                "an insert writes only a free key: two inserts of e/1 should write once, the host said {inserted}"
            )),
            // Engine rows are read on demand, in their first life and
            // after a restart alike, and an insert never overwrites.
            Seen::Queried { token, values } if values != &[b"x".to_vec()] => fail(format!(
                "engine rows: query {token} should read e/1 = \"x\", read {:?}",
                values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect::<Vec<_>>()
            )),
            _ => {}
        }
    }
    // 3: timers run from the reaction that set them, never early, moved by
    // a second set, gone when cancelled. A timer cannot interrupt a
    // reaction: one due while the core still waits for a completion of
    // the reaction that set it fires when that reaction ends.
    let timer_at = |t: Timer| {
        first_life.iter().find_map(|s| match s {
            Seen::Timer { timer, now } if *timer == t => Some(*now),
            _ => None,
        })
    };
    let done_at = |token: u64| {
        first_life.iter().find_map(|s| match s {
            Seen::Persisted { token: t, now, .. } | Seen::Output { token: t, now, .. }
                if *t == token =>
            {
                Some(*now)
            }
            _ => None,
        })
    };
    let mut on_time = |name: &str,
                       set_at: Millis,
                       after: Millis,
                       busy: Option<Millis>,
                       at: Millis| {
        let due = set_at + after;
        let latest = due.max(busy.unwrap_or(0)) + slack.0;
        if at < due || at > latest {
            fail(format!(
                "timer semantics: {name} set at {set_at} for {after} ms fired at {at} (due {due}, at the latest {latest}): a timer runs from the reaction that set it"
            ));
        }
    };
    if let Some(flush) = timer_at(Timer::Archiving(ArchivingTimer::Flush)) {
        on_time("Flush", t0, FLUSH_AFTER, done_at(1), flush);
        if let Some(resend) = timer_at(Timer::Archiving(ArchivingTimer::Resend)) {
            let busy = done_at(4).max(done_at(7));
            on_time("Resend", flush, RESEND_AFTER, busy, resend);
        }
    }
    let fired = |t: Timer| {
        seen.iter()
            .filter(|s| matches!(s, Seen::Timer { timer, .. } if *timer == t))
            .count()
    };
    if fired(Timer::Archiving(ArchivingTimer::Resend)) != 1 {
        fail(format!(
            "timer semantics: a timer set twice fires once, Resend fired {} times",
            fired(Timer::Archiving(ArchivingTimer::Resend))
        ));
    }
    if fired(Timer::Archiving(ArchivingTimer::Heartbeat)) != 0 {
        fail("timer semantics: a cancelled timer (Heartbeat) fired".into());
    }
    // Restart: the second life starts with what the first persisted,
    // except the engine's rows.
    let want = vec![b"a".to_vec(), b"b".to_vec()];
    if starts.len() < 2 {
        fail("restart from recovered state: the driver did not start twice".into());
    } else if *starts[1].0 != want {
        fail(format!(
            "restart from recovered state: the driver's second life should start with keys a and b (not the engine's e/1), it started with {:?}",
            starts[1].0
        ));
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Harness;

    /// The test kit's adapter: two harnesses, the sink fed what the driver
    /// sends, time moved to each timer in turn, restarted from the
    /// driver's store.
    fn kit(probes: &Probes, lose_store: bool) -> Vec<Seen> {
        let driver_addr = Addr::new(probes.node.clone(), ActorKind::FrontEnd);
        let sink_addr = Addr::new(probes.node.clone(), ActorKind::OutgoingQueue);
        let mut store = Recovered::new();
        for _life in 0..2 {
            let mut d = Harness::new(driver_addr.clone(), probes.probe(ActorKind::FrontEnd));
            let mut s = Harness::new(sink_addr.clone(), probes.probe(ActorKind::OutgoingQueue));
            d.now = 1_000;
            s.start(Recovered::new());
            d.store = store.clone();
            let mut sent = d.start(store.clone());
            loop {
                for (to, msg) in sent.drain(..) {
                    assert_eq!(to, sink_addr);
                    s.msg(driver_addr.clone(), msg);
                }
                let next = [
                    Timer::Archiving(ArchivingTimer::Flush),
                    Timer::Archiving(ArchivingTimer::Resend),
                    Timer::Archiving(ArchivingTimer::Heartbeat),
                ]
                .into_iter()
                .filter_map(|t| d.timer(t).map(|at| (at, t)))
                .min();
                match next {
                    Some((_, t)) => sent = d.fire(t),
                    None => break,
                }
            }
            store = if lose_store {
                Recovered::new()
            } else {
                d.store.clone()
            };
        }
        probes.seen()
    }

    #[test]
    fn the_test_kit_keeps_the_contract() {
        let probes = Probes::new("n1", false);
        let seen = kit(&probes, false);
        assert_eq!(check(&seen, Slack(0)), Vec::<String>::new(), "{seen:?}");
    }

    /// The check is not blind: a host that loses the store across a
    /// restart, or reorders what a sink receives, or fires a timer late,
    /// is caught.
    #[test]
    fn the_check_sees_a_broken_host() {
        let probes = Probes::new("n1", false);
        let broken = check(&kit(&probes, true), Slack(0));
        assert!(
            broken
                .iter()
                .any(|b| b.starts_with("restart from recovered state")),
            "{broken:?}"
        );

        let probes = Probes::new("n1", false);
        let mut seen = kit(&probes, false);
        let i = seen
            .iter()
            .position(|s| *s == Seen::Marker { n: 2 })
            .unwrap();
        let j = seen
            .iter()
            .position(|s| *s == Seen::Marker { n: 1 })
            .unwrap();
        seen.swap(i, j);
        let broken = check(&seen, Slack(0));
        assert!(
            broken.iter().any(|b| b.starts_with("effect order")),
            "{broken:?}"
        );

        let probes = Probes::new("n1", false);
        let mut seen = kit(&probes, false);
        for s in &mut seen {
            if let Seen::Timer {
                timer: Timer::Archiving(ArchivingTimer::Flush),
                now,
            } = s
            {
                *now += 20;
            }
        }
        let broken = check(&seen, Slack(0));
        assert!(
            broken.iter().any(|b| b.starts_with("timer semantics")),
            "{broken:?}"
        );
    }
}

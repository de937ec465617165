//! Compliance: every chat event, exported exactly once.
//!
//! The cores where chat events become durable keep an **outbox** in their
//! own store, written in the same atomic batch as the event itself: the
//! chat store (posts, room changes, and the joins, reads and leaves the
//! Channel servers record there before they answer the client) and the
//! Web service (uploads, downloads). An event is therefore queued if and
//! only if it happened. Each outbox numbers its events contiguously and
//! forwards them, in order, to the Compliance service, resending until the
//! service says how far it has staged; the number survives restarts (it is
//! stored with every event), so a resent event is recognised and staged
//! once.
//!
//! The Compliance service stages what it receives, durably, and every
//! `compliance_interval` exports the staged events: it first records which
//! events make the batch and its number (the *intent*), then asks the host
//! to write the batch's files (see [`crate::compliance::export`]), and
//! deletes the events only after the host reports the files written. A
//! crash between writing and deleting finds the intent at restart and
//! writes the same files under the same names again: never a duplicate,
//! never a gap. A failed write (a full or unwritable folder) keeps the
//! batch staged, raises `compliance_export_failed`, and is retried at the
//! next interval.

use crate::compliance::export::{render, ExportFormat};
use crate::core::actor::{
    authorize, identity_refused, Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::identity::{self, Role};
use crate::core::ids::{ActorKind, Addr, Millis, UserId};
use crate::core::link::{Acked, Link, Seq};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::compliance::{ComplianceEvent, ComplianceStatus, EventKind};
use crate::core::protocol::Msg;
use crate::core::store_keys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A compliance event as stored before events carried details: outboxes
/// and staging stores written by that version still drain after an
/// upgrade.
#[derive(Deserialize)]
struct ComplianceEventV1 {
    source: String,
    seq: u64,
    kind: EventKind,
    room: String,
    user: UserId,
    at: Millis,
    item: String,
    text: String,
}

/// A stored compliance event, of this version or the one before.
pub fn decode_event(bytes: &[u8]) -> Result<ComplianceEvent, postcard::Error> {
    store_keys::decode_exact::<ComplianceEvent>(bytes).or_else(|e| {
        let v = store_keys::decode_exact::<ComplianceEventV1>(bytes).map_err(|_| e)?;
        Ok(ComplianceEvent {
            source: v.source,
            seq: v.seq,
            kind: v.kind,
            room: v.room,
            user: v.user,
            at: v.at,
            item: v.item,
            text: v.text,
            details: BTreeMap::new(),
        })
    })
}

/// What a core asks its outbox to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub room: String,
    pub user: UserId,
    pub at: Millis,
    pub item: String,
    pub text: String,
    /// See [`ComplianceEvent::details`].
    pub details: BTreeMap<String, String>,
}

/// Key prefix of an outbox event: `o/<seq, 8 bytes big-endian>`.
pub const OUTBOX: &[u8] = b"o/";
/// Key of the outbox's next sequence number.
pub const OUTBOX_NEXT: &[u8] = b"on";
/// Events per batch sent to the Compliance service.
pub const OUTBOX_BATCH: usize = 500;
/// Bytes of events per batch (always at least one event): with the post
/// size limit, what keeps every batch inside a frame.
pub const OUTBOX_BATCH_BYTES: u64 = 8 << 20;

/// The compliance outbox a core embeds. Every method is pure: the core
/// persists the ops it returns and sends the messages. Numbering, what is
/// in flight, cumulative confirmation and resending are a [`Link`] with a
/// window of one batch.
#[derive(Debug)]
pub struct Outbox {
    me: String,
    /// The Compliance service, if the pool has one (no outbox otherwise).
    target: Option<String>,
    /// The events committed and not yet staged, by number.
    link: Link<ComplianceEvent>,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::new(String::new(), None)
    }
}

impl Outbox {
    pub fn new(me: impl Into<String>, target: Option<String>) -> Outbox {
        Outbox {
            me: me.into(),
            target,
            link: Link::new(OUTBOX_BATCH as u64, OUTBOX_RESEND, OUTBOX_RESEND),
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    pub fn len(&self) -> usize {
        self.link.len()
    }

    pub fn is_empty(&self) -> bool {
        self.link.is_empty()
    }

    /// Rebuilds the outbox from the core's recovered store.
    pub fn recover(&mut self, recovered: &Recovered) -> Vec<String> {
        let mut errors = Vec::new();
        let mut next = recovered
            .get(OUTBOX_NEXT)
            .and_then(|v| store_keys::decode::<u64>(v).ok())
            .unwrap_or(1);
        let mut pending = BTreeMap::new();
        for (k, v) in recovered.range(OUTBOX.to_vec()..) {
            if !k.starts_with(OUTBOX) {
                break;
            }
            match decode_event(v) {
                Ok(e) => {
                    next = next.max(e.seq + 1);
                    pending.insert(e.seq, e);
                }
                Err(e) => errors.push(format!("outbox key {k:?}: {e}")),
            }
        }
        // Everything before the first event held was staged (its deletion
        // is what removed it).
        let staged = pending
            .keys()
            .next()
            .map_or(next - 1, |first| first.saturating_sub(1));
        self.link.restart(Seq::new(staged));
        for (seq, e) in pending {
            self.link.insert(Seq::new(seq), e);
        }
        self.link.recovered(Seq::new(next - 1));
        errors
    }

    /// The ops that queue `events`, to be written in the same batch as what
    /// they record; `None` when the pool has no Compliance service. Call
    /// [`Outbox::committed`] with the events once the batch is durable, or
    /// [`Outbox::rolled_back`] if it failed.
    pub fn record(&mut self, events: Vec<NewEvent>) -> (Vec<ComplianceEvent>, Vec<StoreOp>) {
        if self.target.is_none() || events.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let mut ops = Vec::new();
        let mut out = Vec::new();
        for e in events {
            let event = ComplianceEvent {
                source: self.me.clone(),
                seq: self.link.number().get(),
                kind: e.kind,
                room: e.room,
                user: e.user,
                at: e.at,
                item: e.item,
                text: e.text,
                details: e.details,
            };
            ops.push(StoreOp::Put {
                key: store_keys::key_u64(OUTBOX, event.seq),
                value: store_keys::encode(&event),
            });
            out.push(event);
        }
        ops.push(StoreOp::Put {
            key: OUTBOX_NEXT.to_vec(),
            value: store_keys::encode(&self.link.next_seq().get()),
        });
        (out, ops)
    }

    pub fn committed(&mut self, events: Vec<ComplianceEvent>, ctx: &mut Ctx) {
        for e in events {
            self.link.insert(Seq::new(e.seq), e);
        }
        self.pump(ctx);
    }

    /// The batch failed: its numbers are given out again (the host runs
    /// one persist at a time, so nothing was numbered after them).
    pub fn rolled_back(&mut self, events: &[ComplianceEvent]) {
        if let Some(first) = events.first() {
            self.link.number_from(Seq::new(first.seq));
        }
    }

    /// Sends the next batch if none is in flight.
    pub fn pump(&mut self, ctx: &mut Ctx) {
        let Some(target) = &self.target else { return };
        if self.link.in_flight() {
            return;
        }
        // At most OUTBOX_BATCH events (the window) and OUTBOX_BATCH_BYTES,
        // but always one.
        let mut bytes = 0u64;
        let mut first = true;
        let sending = self.link.take_sendable_while(|e| {
            bytes += e.weight();
            let fits = first || bytes <= OUTBOX_BATCH_BYTES;
            first = false;
            fits
        });
        if sending.items.is_empty() {
            return;
        }
        let events = sending.items.into_iter().map(|(_, e)| e).collect();
        ctx.send(
            Addr::new(target.clone(), ActorKind::Compliance),
            Msg::ComplianceBatch { events },
        );
        ctx.set_timer(Timer::ComplianceResend, OUTBOX_RESEND);
    }

    /// The service has staged everything up to `upto`: forget it (the
    /// returned ops delete it) and send what follows.
    pub fn staged(&mut self, from: &Addr, upto: u64, ctx: &mut Ctx) -> Vec<StoreOp> {
        if self.target.as_deref() != Some(from.node.as_str()) {
            return Vec::new();
        }
        let done = match self.link.ack(Seq::new(upto).min(self.link.last())) {
            Acked::Advanced { items, .. } if !items.is_empty() => items,
            _ => {
                // The service is missing something before what was sent:
                // send again from the first event it lacks.
                self.link.go_back();
                Vec::new()
            }
        };
        // Confirmed up to the end of the batch in flight: the next one
        // goes; confirmed short of it, the rest is awaited.
        self.pump(ctx);
        done.into_iter()
            .map(|e| StoreOp::Delete {
                key: store_keys::key_u64(OUTBOX, e.seq),
            })
            .collect()
    }

    /// The resend timer fired: nothing confirmed in time, send again.
    pub fn resend(&mut self, ctx: &mut Ctx) {
        self.link.go_back();
        self.pump(ctx);
    }
}

/// An outbox resends a batch not confirmed within this.
pub const OUTBOX_RESEND: Millis = 5_000;

/// Key prefix of a staged event: `s/<source>\0<seq, 8 bytes big-endian>`.
pub const STAGED: &[u8] = b"s/";
/// Key prefix of a source's highest contiguous staged number: `h/<source>`.
pub const HIGH: &[u8] = b"h/";
/// Key of the export in progress (the intent).
pub const INTENT: &[u8] = b"x";
/// Key of the number of the last batch exported.
pub const LAST_BATCH: &[u8] = b"xn";

fn staged_key(source: &str, seq: u64) -> Vec<u8> {
    let mut k = STAGED.to_vec();
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn high_key(source: &str) -> Vec<u8> {
    let mut k = HIGH.to_vec();
    k.extend_from_slice(source.as_bytes());
    k
}

/// A batch being exported: its number and its events' keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub batch: u64,
    pub events: Vec<(String, u64)>,
}

/// What the Compliance service is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplianceConfig {
    pub format: ExportFormat,
    /// Export only these rooms (empty: all).
    pub rooms: Vec<String>,
    /// Export only events of these users (empty: all).
    pub users: Vec<String>,
}

impl Default for ComplianceConfig {
    fn default() -> Self {
        ComplianceConfig {
            format: ExportFormat::Xml,
            rooms: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// Events per exported batch at most (the rest waits for the next run).
pub const EXPORT_BATCH_MAX: usize = 20_000;

enum Write {
    /// Staging events from a source, then acknowledging `upto`.
    Stage {
        from: Addr,
        events: Vec<ComplianceEvent>,
        upto: u64,
    },
    Intent(Intent),
    Done(Intent),
    /// Sabotage only: the batch deleted before its files are written.
    EarlyDelete(Intent),
}

pub struct Compliance {
    name: String,
    config: ComplianceConfig,
    interval: Millis,
    staged: BTreeMap<(String, u64), ComplianceEvent>,
    high: BTreeMap<String, u64>,
    intent: Option<Intent>,
    last_batch: u64,
    writing: BTreeMap<u64, Write>,
    exporting: bool,
    next_token: u64,
    status: ComplianceStatus,
    /// Sabotage: delete before writing (for proving the checker).
    delete_first: bool,
}

impl Compliance {
    pub fn new(name: impl Into<String>, config: ComplianceConfig, interval: Millis) -> Self {
        Compliance {
            name: name.into(),
            config,
            interval,
            staged: BTreeMap::new(),
            high: BTreeMap::new(),
            intent: None,
            last_batch: 0,
            writing: BTreeMap::new(),
            exporting: false,
            next_token: 0,
            status: ComplianceStatus::default(),
            delete_first: false,
        }
    }

    /// Sabotage for checker tests only: delete each batch's staged events
    /// before writing its files, so that a crash in between loses them.
    pub fn deleting_first(mut self) -> Self {
        self.delete_first = true;
        self
    }

    fn deletion(intent: &Intent) -> Vec<StoreOp> {
        let mut ops: Vec<StoreOp> = intent
            .events
            .iter()
            .map(|(s, n)| StoreOp::Delete {
                key: staged_key(s, *n),
            })
            .collect();
        ops.push(StoreOp::Delete {
            key: INTENT.to_vec(),
        });
        ops.push(StoreOp::Put {
            key: LAST_BATCH.to_vec(),
            value: store_keys::encode(&intent.batch),
        });
        ops
    }

    fn write(&mut self, w: Write, ops: Vec<StoreOp>, ctx: &mut Ctx) {
        self.next_token += 1;
        self.writing.insert(self.next_token, w);
        ctx.persist(self.next_token, ops);
    }

    fn in_scope(&self, e: &ComplianceEvent) -> bool {
        (self.config.rooms.is_empty() || self.config.rooms.contains(&e.room))
            && (self.config.users.is_empty() || self.config.users.contains(&e.user))
    }

    /// Starts an export: the intent first (or the one a crash left).
    fn run(&mut self, ctx: &mut Ctx) {
        if self.exporting {
            return;
        }
        if let Some(intent) = self.intent.clone() {
            return self.output(intent, ctx);
        }
        if self.staged.is_empty() {
            return;
        }
        let intent = Intent {
            batch: self.last_batch + 1,
            events: self.staged.keys().take(EXPORT_BATCH_MAX).cloned().collect(),
        };
        self.exporting = true;
        let op = StoreOp::Put {
            key: INTENT.to_vec(),
            value: store_keys::encode(&intent),
        };
        self.write(Write::Intent(intent), vec![op], ctx);
    }

    /// Asks the host to write the intent's files.
    fn output(&mut self, intent: Intent, ctx: &mut Ctx) {
        self.exporting = true;
        let events: Vec<&ComplianceEvent> = intent
            .events
            .iter()
            .filter_map(|k| self.staged.get(k))
            .filter(|e| self.in_scope(e))
            .collect();
        let files = render(self.config.format, intent.batch, &events);
        self.next_token += 1;
        self.writing.insert(self.next_token, Write::Done(intent));
        ctx.output(self.next_token, files);
    }
}

impl Actor for Compliance {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.staged.clear();
        self.high.clear();
        self.writing.clear();
        self.exporting = false;
        self.intent = None;
        self.last_batch = 0;
        for (k, v) in &recovered {
            let bad = |e: String| format!("{}: key {k:?}: {e}", self.name);
            if k.starts_with(STAGED) {
                match decode_event(v) {
                    Ok(e) => {
                        self.staged.insert((e.source.clone(), e.seq), e);
                    }
                    Err(e) => ctx.event(OperatorEvent::StoreCorrupt, bad(e.to_string())),
                }
            } else if let Some(source) = k.strip_prefix(HIGH) {
                match store_keys::decode::<u64>(v) {
                    Ok(h) => {
                        self.high
                            .insert(String::from_utf8_lossy(source).into_owned(), h);
                    }
                    Err(e) => ctx.event(OperatorEvent::StoreCorrupt, bad(e.to_string())),
                }
            } else if k == INTENT {
                match store_keys::decode::<Intent>(v) {
                    Ok(i) => self.intent = Some(i),
                    Err(e) => ctx.event(OperatorEvent::StoreCorrupt, bad(e.to_string())),
                }
            } else if k == LAST_BATCH {
                if let Ok(n) = store_keys::decode::<u64>(v) {
                    self.last_batch = n;
                }
            }
        }
        self.status.staged = self.staged.len() as u64;
        self.status.last_batch = self.last_batch;
        ctx.set_timer(Timer::ComplianceRun, self.interval);
        if let Some(intent) = &self.intent {
            // A crash came between recording a batch and deleting it: write
            // the same batch (same names, same bytes) again now.
            ctx.event(
                OperatorEvent::ComplianceExportResumed,
                format!("{}: batch {} is written again", self.name, intent.batch),
            );
            self.run(ctx);
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match (&from.actor, &msg) {
            (ActorKind::ChatStore | ActorKind::Web, Msg::ComplianceBatch { .. }) => true,
            // Operators, from the command-line tool.
            (ActorKind::Client, Msg::ComplianceRunNow | Msg::ComplianceStatusQuery) => true,
            _ => false,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::ComplianceBatch { events } => {
                let mut high = self.high.get(&from.node).copied().unwrap_or(0);
                let mut fresh = Vec::new();
                for e in events {
                    // In order, from the next one: anything else is a
                    // resend (staged already) or comes after a gap.
                    if e.source == from.node && e.seq == high + 1 {
                        high = e.seq;
                        fresh.push(e);
                    }
                }
                if fresh.is_empty() {
                    ctx.send(from, Msg::ComplianceStaged { upto: high });
                    return;
                }
                let mut ops: Vec<StoreOp> = fresh
                    .iter()
                    .map(|e| StoreOp::Put {
                        key: staged_key(&e.source, e.seq),
                        value: store_keys::encode(e),
                    })
                    .collect();
                ops.push(StoreOp::Put {
                    key: high_key(&from.node),
                    value: store_keys::encode(&high),
                });
                let w = Write::Stage {
                    from,
                    events: fresh,
                    upto: high,
                };
                self.write(w, ops, ctx);
            }
            Msg::ComplianceRunNow | Msg::ComplianceStatusQuery => {
                let roles: &[Role] = match msg {
                    Msg::ComplianceRunNow => &[Role::Operator],
                    _ => &[Role::Operator, Role::Auditor],
                };
                if let Err(refusal) = identity::require(&from, roles) {
                    identity_refused(&self.name, &from, msg.name(), &refusal, ctx);
                    let reason = refusal.to_string();
                    return ctx.send(from, Msg::Forbidden { reason });
                }
                if matches!(msg, Msg::ComplianceRunNow) {
                    self.run(ctx);
                }
                ctx.send(from, Msg::ComplianceReport(self.status.clone()));
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::ComplianceRun {
            ctx.set_timer(Timer::ComplianceRun, self.interval);
            self.run(ctx);
        }
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        let Some(w) = self.writing.remove(&token) else {
            return;
        };
        match (w, result) {
            (Write::Stage { from, events, upto }, Ok(_)) => {
                self.high.insert(from.node.clone(), upto);
                for e in events {
                    self.staged.insert((e.source.clone(), e.seq), e);
                }
                self.status.staged = self.staged.len() as u64;
                ctx.send(from, Msg::ComplianceStaged { upto });
            }
            // Not staged: the source resends.
            (Write::Stage { .. }, Err(e)) => {
                ctx.event(
                    OperatorEvent::ComplianceStageFailed,
                    format!("{}: {e}", self.name),
                );
            }
            (Write::Intent(intent), Ok(_)) if self.delete_first => {
                // Sabotage: the deletion first, but the intent stays on
                // disk so a restart writes the (now empty) batch.
                let mut ops = Self::deletion(&intent);
                ops.retain(|op| !matches!(op, StoreOp::Delete { key } if key == INTENT));
                self.intent = Some(intent.clone());
                self.write(Write::EarlyDelete(intent), ops, ctx);
            }
            (Write::EarlyDelete(intent), Ok(_)) => {
                self.output(intent, ctx);
            }
            (Write::EarlyDelete(_), Err(_)) => self.exporting = false,
            (Write::Intent(intent), Ok(_)) => {
                self.intent = Some(intent.clone());
                self.output(intent, ctx);
            }
            (Write::Intent(_), Err(e)) => {
                self.exporting = false;
                self.status.last_error = Some(format!("cannot record the export: {e}"));
                ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!("{}: {e}", self.name),
                );
            }
            (Write::Done(intent), Ok(_)) => {
                // The batch's files and its deletion are both durable.
                for k in &intent.events {
                    self.staged.remove(k);
                }
                self.last_batch = intent.batch;
                self.intent = None;
                self.exporting = false;
                self.status.staged = self.staged.len() as u64;
                self.status.last_batch = intent.batch;
                self.status.last_run = ctx.now();
                self.status.last_error = None;
                ctx.event(
                    OperatorEvent::ComplianceExported,
                    format!(
                        "{}: batch {} with {} events",
                        self.name,
                        intent.batch,
                        intent.events.len()
                    ),
                );
                if self.staged.len() >= EXPORT_BATCH_MAX {
                    self.run(ctx);
                }
            }
            (Write::Done(_), Err(e)) => {
                // The files are written; the deletion is not. Leave the
                // intent: the next run writes the same files again.
                self.exporting = false;
                self.status.last_error = Some(format!("cannot delete an exported batch: {e}"));
                ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!("{}: {e}", self.name),
                );
            }
        }
    }

    fn on_output(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        let Some(Write::Done(intent)) = self.writing.remove(&token) else {
            return;
        };
        match result {
            Ok(()) => {
                let filtered = intent
                    .events
                    .iter()
                    .filter(|k| self.staged.get(*k).is_some_and(|e| !self.in_scope(e)))
                    .count() as u64;
                self.status.filtered += filtered;
                let ops = Self::deletion(&intent);
                self.write(Write::Done(intent), ops, ctx);
            }
            Err(e) => {
                // The folder is full or unwritable: keep the batch staged
                // and try again at the next interval.
                self.exporting = false;
                self.status.last_error = Some(e.to_string());
                ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!("{}: batch {}: {e}", self.name, intent.batch),
                );
            }
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![
            (Gauge::ComplianceStaged, self.staged.len() as u64),
            (Gauge::ComplianceBatches, self.last_batch),
            (Gauge::ComplianceLastExportAt, self.status.last_run),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::export::{parse, ExportFormat};
    use crate::testkit::Harness;

    fn ev(source: &str, seq: u64, room: &str) -> ComplianceEvent {
        ComplianceEvent {
            source: source.into(),
            seq,
            kind: EventKind::Post,
            room: room.into(),
            user: "ann@corp.example".into(),
            at: seq,
            item: format!("p{seq}"),
            text: format!("text {seq}"),
            details: BTreeMap::new(),
        }
    }

    fn store() -> Addr {
        Addr::new("chatdb", ActorKind::ChatStore)
    }

    fn service(config: ComplianceConfig) -> Harness<Compliance> {
        let mut h = Harness::new(
            Addr::new("comp1", ActorKind::Compliance),
            Compliance::new("comp1", config, 60_000),
        );
        h.start(Recovered::new());
        h
    }

    fn batch(h: &mut Harness<Compliance>, seqs: &[u64]) -> Vec<Msg> {
        let events = seqs.iter().map(|s| ev("chatdb", *s, "general")).collect();
        h.msg(store(), Msg::ComplianceBatch { events })
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    }

    fn exported_events(h: &Harness<Compliance>) -> u64 {
        h.actor().status.last_batch
    }

    #[test]
    fn operators_export_and_auditors_read_the_status() {
        let mut h = service(ComplianceConfig::default());
        let who = |s: &str| Addr::new(s, ActorKind::Client);
        let answer = |h: &mut Harness<Compliance>, c: &str, m: Msg| {
            let sent = h.msg(who(c), m);
            let events = h.events().len();
            h.clear_events();
            (sent.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), events)
        };
        let forbidden =
            |r: &(Vec<Msg>, usize)| matches!(&r.0[..], [Msg::Forbidden { .. }]) && r.1 == 1;
        let report = |r: &(Vec<Msg>, usize)| matches!(&r.0[..], [Msg::ComplianceReport(_)]);
        for c in ["user:alice/1", "auditor:carol/1", "client-1"] {
            assert!(forbidden(&answer(&mut h, c, Msg::ComplianceRunNow)), "{c}");
        }
        for c in ["user:alice/1", "client-1"] {
            assert!(
                forbidden(&answer(&mut h, c, Msg::ComplianceStatusQuery)),
                "{c}"
            );
        }
        assert!(report(&answer(
            &mut h,
            "auditor:carol/1",
            Msg::ComplianceStatusQuery
        )));
        assert!(report(&answer(
            &mut h,
            "operator:ops/1",
            Msg::ComplianceStatusQuery
        )));
        assert!(report(&answer(
            &mut h,
            "operator:ops/1",
            Msg::ComplianceRunNow
        )));
    }

    #[test]
    fn events_are_staged_in_order_once_and_acknowledged() {
        let mut h = service(ComplianceConfig::default());
        assert_eq!(
            batch(&mut h, &[1, 2, 3]),
            vec![Msg::ComplianceStaged { upto: 3 }]
        );
        // A resend of staged events is acknowledged again, not staged again.
        assert_eq!(
            batch(&mut h, &[2, 3]),
            vec![Msg::ComplianceStaged { upto: 3 }]
        );
        // After a gap nothing is taken: the outbox resends from 4.
        assert_eq!(
            batch(&mut h, &[5, 6]),
            vec![Msg::ComplianceStaged { upto: 3 }]
        );
        assert_eq!(
            batch(&mut h, &[4, 5]),
            vec![Msg::ComplianceStaged { upto: 5 }]
        );
        assert_eq!(h.actor().staged.len(), 5);
        // Staging survives a restart, and so does the high mark.
        let mut h2 = service(ComplianceConfig::default());
        h2.store = h.store.clone();
        h2.start(h.store.clone());
        assert_eq!(h2.actor().staged.len(), 5);
        assert_eq!(
            batch(&mut h2, &[5]),
            vec![Msg::ComplianceStaged { upto: 5 }]
        );
        assert_eq!(exported_events(&h2), 0);
    }

    /// Outboxes and staging stores written before events carried details
    /// still drain after an upgrade.
    #[test]
    fn events_of_the_previous_version_are_read() {
        #[derive(serde::Serialize)]
        struct Old<'a> {
            source: &'a str,
            seq: u64,
            kind: EventKind,
            room: &'a str,
            user: &'a str,
            at: u64,
            item: &'a str,
            text: &'a str,
        }
        let old = Old {
            source: "chatdb",
            seq: 4,
            kind: EventKind::Upload,
            room: "r",
            user: "u",
            at: 9,
            item: "f1",
            text: "plan.txt",
        };
        let e = decode_event(&store_keys::encode(&old)).unwrap();
        assert_eq!((e.seq, e.item.as_str(), e.details.len()), (4, "f1", 0));
        let mut new = e.clone();
        new.details.insert("size".into(), "3".into());
        assert_eq!(decode_event(&store_keys::encode(&new)).unwrap(), new);
    }

    #[test]
    fn an_outbox_resends_until_staged_and_numbers_survive_restarts() {
        let me = Addr::new("chatdb", ActorKind::ChatStore);
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
        let mut ob = Outbox::new("chatdb", Some("comp1".into()));
        let new = |n: u64| NewEvent {
            kind: EventKind::Join,
            room: "r".into(),
            user: "u".into(),
            at: n,
            item: String::new(),
            text: String::new(),
            details: BTreeMap::new(),
        };
        let (evs, ops) = ob.record(vec![new(1), new(2)]);
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        // A failed write gives its numbers out again.
        ob.rolled_back(&evs);
        let (evs, ops2) = ob.record(vec![new(1), new(2)]);
        assert_eq!(evs[0].seq, 1);
        assert_eq!(ops.len(), ops2.len());
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.committed(evs, &mut ctx);
        let sent = ctx.into_effects();
        assert!(sent.iter().any(|e| matches!(e, crate::core::actor::Effect::Send { msg: Msg::ComplianceBatch { events }, .. } if events.len() == 2)));
        // Recovered from its ops: the next number goes on from 3 even once
        // every event is confirmed and deleted.
        let mut recovered = Recovered::new();
        for op in ops2 {
            if let StoreOp::Put { key, value } = op {
                recovered.insert(key, value);
            }
        }
        let mut ctx = Ctx::new(0, &me, &mut rng);
        let deletes = ob.staged(&Addr::new("comp1", ActorKind::Compliance), 2, &mut ctx);
        for op in deletes {
            if let StoreOp::Delete { key } = op {
                recovered.remove(&key);
            }
        }
        assert!(ob.is_empty());
        let mut again = Outbox::new("chatdb", Some("comp1".into()));
        assert!(again.recover(&recovered).is_empty());
        assert_eq!(again.record(vec![new(3)]).0[0].seq, 3);
    }

    /// A confirmation of part of the batch in flight waits for the rest;
    /// one that confirms nothing new, or the resend timer, sends again from
    /// the first event not staged.
    #[test]
    fn an_outbox_keeps_one_batch_in_flight_and_goes_back_when_nothing_is_confirmed() {
        let me = Addr::new("chatdb", ActorKind::ChatStore);
        let comp = Addr::new("comp1", ActorKind::Compliance);
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
        let mut ob = Outbox::new("chatdb", Some("comp1".into()));
        let new = |n: u64| NewEvent {
            kind: EventKind::Post,
            room: "r".into(),
            user: "u".into(),
            at: n,
            item: format!("p{n}"),
            text: String::new(),
            details: BTreeMap::new(),
        };
        let batches = |ctx: Ctx| -> Vec<Vec<u64>> {
            ctx.into_effects()
                .into_iter()
                .filter_map(|e| match e {
                    crate::core::actor::Effect::Send {
                        msg: Msg::ComplianceBatch { events },
                        ..
                    } => Some(events.iter().map(|e| e.seq).collect()),
                    _ => None,
                })
                .collect()
        };
        let (evs, _) = ob.record(vec![new(1), new(2), new(3)]);
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.committed(evs, &mut ctx);
        assert_eq!(batches(ctx), vec![vec![1, 2, 3]]);
        // Committed while a batch is in flight: it waits.
        let (evs, _) = ob.record(vec![new(4)]);
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.committed(evs, &mut ctx);
        assert!(batches(ctx).is_empty());
        // Part of the batch staged: deleted, the rest awaited.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert_eq!(ob.staged(&comp, 2, &mut ctx).len(), 2);
        assert!(batches(ctx).is_empty());
        // Nothing new: the service lacks 3; send again from there.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert!(ob.staged(&comp, 2, &mut ctx).is_empty());
        assert_eq!(batches(ctx), vec![vec![3, 4]]);
        // No answer in time: the same again.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.resend(&mut ctx);
        assert_eq!(batches(ctx), vec![vec![3, 4]]);
        // A confirmation from elsewhere is ignored.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert!(ob.staged(&me, 4, &mut ctx).is_empty());
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert_eq!(ob.staged(&comp, 4, &mut ctx).len(), 2);
        assert!(batches(ctx).is_empty());
        assert!(ob.is_empty());
    }

    /// Runs an export (the timer), its output answered with `written`;
    /// returns the files asked for.
    fn export(h: &mut Harness<Compliance>, written: Result<(), StoreError>) -> Vec<OutputFile> {
        h.fail_outputs = written.err();
        let before = h.outputs.len();
        h.fire(Timer::ComplianceRun);
        assert_eq!(h.outputs.len(), before + 1, "one output per run");
        h.outputs.last().cloned().unwrap_or_default()
    }

    use crate::core::output::OutputFile;

    #[test]
    fn a_batch_is_deleted_only_after_its_files_are_written_and_rewritten_the_same_after_a_crash() {
        let mut h = service(ComplianceConfig {
            format: ExportFormat::JsonLines,
            ..Default::default()
        });
        batch(&mut h, &[1, 2, 3]);
        // The folder is full: nothing is deleted, the error is reported.
        let files = export(&mut h, Err(StoreError::NoSpace));
        assert_eq!(files.len(), 2);
        assert_eq!(h.actor().staged.len(), 3);
        assert!(h.actor().status.last_error.is_some());
        assert!(h.events().contains(&"compliance_export_failed"));
        // More events arrive; then the process dies after writing the files
        // but before deleting the batch: the intent is on disk.
        batch(&mut h, &[4]);
        let crashed = h.store.clone();
        assert!(crashed.contains_key(INTENT));
        let mut h2 = service(ComplianceConfig {
            format: ExportFormat::JsonLines,
            ..Default::default()
        });
        h2.store = crashed.clone();
        h2.start(crashed);
        // The restart rewrites exactly the same batch at once, then the
        // next run exports what came after.
        assert_eq!(
            h2.outputs,
            vec![files],
            "same names, same bytes: no duplicate"
        );
        assert_eq!(h2.actor().staged.len(), 1);
        let ids = |f: &[OutputFile]| -> Vec<String> {
            parse(ExportFormat::JsonLines, &f[0].data)
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        let next = export(&mut h2, Ok(()));
        assert_eq!(ids(&next), vec!["chatdb-4"]);
        assert!(next[0].name.contains("00000002"));
        assert!(h2.actor().staged.is_empty());
        assert!(!h2.store.contains_key(INTENT));
        assert_eq!(h2.actor().status.last_batch, 2);
    }

    #[test]
    fn scoping_keeps_only_the_rooms_and_users_asked_for() {
        let mut h = service(ComplianceConfig {
            format: ExportFormat::Csv,
            rooms: vec!["deals".into()],
            users: Vec::new(),
        });
        let events = vec![ev("chatdb", 1, "general"), ev("chatdb", 2, "deals")];
        h.msg(store(), Msg::ComplianceBatch { events });
        let files = export(&mut h, Ok(()));
        let got = parse(ExportFormat::Csv, &files[0].data).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].room, "deals");
        assert_eq!(h.actor().status.filtered, 1);
        assert!(h.actor().staged.is_empty());
    }

    #[test]
    fn only_outboxes_deliver_events_and_only_clients_ask_for_exports() {
        let mut h = service(ComplianceConfig::default());
        let sent = h.msg(
            Addr::new("ch1", ActorKind::Channel),
            Msg::ComplianceBatch {
                events: vec![ev("ch1", 1, "r")],
            },
        );
        assert!(sent.is_empty());
        assert!(h.actor().staged.is_empty());
        assert!(h.events().contains(&"unauthorized_sender"));
    }
}

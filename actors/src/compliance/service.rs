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

use crate::compliance::export::{
    batch_stem, render_batch, sha256_hex, upload_entry, upload_path, ExportFormat, UploadEntry,
};
use crate::core::actor::{
    authorize, identity_refused, Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::identity::{self, Role};
use crate::core::ids::{ActorKind, Addr, Millis, RoomId, Seq, UserId};
use crate::core::link::{Acked, Link};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::output::OutputFile;
use crate::core::protocol::compliance::ComplianceMsg;
use crate::core::protocol::compliance::ComplianceTimer;
use crate::core::protocol::compliance::{ComplianceEvent, ComplianceStatus, EventKind};
use crate::core::protocol::Msg;
use crate::core::store_keys;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A compliance event as stored before events carried details: outboxes
/// and staging stores written by that version still drain after an
/// upgrade.
#[derive(Deserialize)]
struct ComplianceEventV1 {
    source: String,
    seq: Seq,
    kind: EventKind,
    room: RoomId,
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
    pub room: RoomId,
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

    /// The Compliance service's node, if the pool has one.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
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
        for (k, v) in store_keys::under(recovered, OUTBOX) {
            match decode_event(v) {
                Ok(e) => {
                    next = next.max(e.seq.0 + 1);
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
            .map_or(Seq(next - 1), |first| first.prev());
        self.link.restart(staged);
        for (seq, e) in pending {
            self.link.insert(seq, e);
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
                seq: self.link.number(),
                kind: e.kind,
                room: e.room,
                user: e.user,
                at: e.at,
                item: e.item,
                text: e.text,
                details: e.details,
            };
            ops.push(StoreOp::Put {
                key: store_keys::key_u64(OUTBOX, event.seq.0),
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
            self.link.insert(e.seq, e);
        }
        self.pump(ctx);
    }

    /// The batch failed: its numbers are given out again (the host runs
    /// one persist at a time, so nothing was numbered after them).
    pub fn rolled_back(&mut self, events: &[ComplianceEvent]) {
        if let Some(first) = events.first() {
            self.link.number_from(first.seq);
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
            Msg::Compliance(ComplianceMsg::ComplianceBatch { events }),
        );
        ctx.set_timer(
            Timer::Compliance(ComplianceTimer::ComplianceResend),
            OUTBOX_RESEND,
        );
    }

    /// The service has staged everything up to `upto`: forget it (the
    /// returned ops delete it) and send what follows.
    pub fn staged(&mut self, from: &Addr, upto: Seq, ctx: &mut Ctx) -> Vec<StoreOp> {
        if self.target.as_deref() != Some(from.node.as_str()) {
            return Vec::new();
        }
        let done = match self.link.ack(upto.min(self.link.last())) {
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
                key: store_keys::key_u64(OUTBOX, e.seq.0),
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
/// Key prefix of a batch written and waiting for the pickup system's
/// acknowledgement: `p/<batch, 8 bytes big-endian>` → [`Pickup`].
pub const AWAITING: &[u8] = b"p/";
/// Key prefix of a batch acknowledged whose files are being removed:
/// `d/<batch, 8 bytes big-endian>` → [`Pickup`]. Written with the
/// acknowledgement, deleted once the files are gone: a restart in between
/// removes them again.
pub const ACKED: &[u8] = b"d/";
/// A file asked of the Web service is asked again after this.
pub const FETCH_RETRY: Millis = 10_000;

/// What a batch left in the output folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pickup {
    pub batch: u64,
    /// Its events file and manifest.
    pub names: Vec<String>,
    /// SHA-256 of each uploaded file it wrote (`files/<sha256>`), which it
    /// shares with any other batch that uploaded the same content.
    pub uploads: Vec<String>,
}

fn staged_key(source: &str, seq: Seq) -> Vec<u8> {
    let mut k = STAGED.to_vec();
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.0.to_be_bytes());
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
    pub events: Vec<(String, Seq)>,
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
        upto: Seq,
    },
    Intent(Intent),
    /// Writing the batch's events file and manifest (an output), then
    /// deleting its staged events (a persist).
    Done(Intent, Pickup),
    /// Writing one uploaded file of the export in progress.
    Upload,
    /// Recording a pickup acknowledgement.
    Ack {
        from: Addr,
        batch: u64,
    },
    /// Removing an acknowledged batch's files, then forgetting it.
    Remove(u64),
    Forget(u64),
    /// Sabotage only: a batch's files removed without an acknowledgement.
    Unpicked,
    /// Sabotage only: the batch deleted before its files are written.
    EarlyDelete(Intent),
}

pub struct Compliance {
    name: String,
    config: ComplianceConfig,
    interval: Millis,
    staged: BTreeMap<(String, Seq), ComplianceEvent>,
    high: BTreeMap<String, Seq>,
    intent: Option<Intent>,
    last_batch: u64,
    /// Events written in export batches since the core started.
    exported_events: u64,
    writing: BTreeMap<u64, Write>,
    exporting: bool,
    next_token: u64,
    status: ComplianceStatus,
    /// The uploaded files of the export in progress being fetched.
    fetch: Option<Fetch>,
    /// Batches waiting for the pickup system.
    awaiting: BTreeMap<u64, Pickup>,
    /// Batches acknowledged whose files are being removed.
    acked: BTreeMap<u64, Pickup>,
    /// Of those, the ones with a removal in flight.
    removing: BTreeSet<u64>,
    /// Sabotage: delete before writing (for proving the checker).
    delete_first: bool,
    /// Sabotage: export no uploaded files.
    skip_files: bool,
    /// Sabotage: remove a batch's files as soon as it is written.
    delete_unpicked: bool,
}

/// The uploaded files of a batch being fetched from the Web services, one
/// at a time and a chunk at a time (a file's content in memory at most).
struct Fetch {
    intent: Intent,
    /// One per upload event of the batch, in order, with the node that
    /// recorded it (the Web service holding the file).
    entries: Vec<(UploadEntry, String)>,
    /// Distinct contents still to fetch: SHA-256 → the entries uploading
    /// it (any of them will do).
    todo: VecDeque<(String, Vec<usize>)>,
    /// Which of the head's entries is being asked.
    candidate: usize,
    /// What arrived of it so far.
    buf: Vec<u8>,
    /// Contents done: SHA-256 → `None` written, `Some(why)` missing.
    done: BTreeMap<String, Option<String>>,
    /// The head is being written (not waiting for the Web service).
    writing: bool,
    /// Retries of the current request without an answer.
    tries: u32,
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
            exported_events: 0,
            writing: BTreeMap::new(),
            exporting: false,
            next_token: 0,
            status: ComplianceStatus::default(),
            fetch: None,
            awaiting: BTreeMap::new(),
            acked: BTreeMap::new(),
            removing: BTreeSet::new(),
            delete_first: false,
            skip_files: false,
            delete_unpicked: false,
        }
    }

    /// Sabotage for checker tests only: export the events without the
    /// uploaded files.
    pub fn skipping_files(mut self) -> Self {
        self.skip_files = true;
        self
    }

    /// Sabotage for checker tests only: remove each batch's files as soon
    /// as it is written, before any acknowledgement.
    pub fn deleting_unpicked(mut self) -> Self {
        self.delete_unpicked = true;
        self
    }

    /// The status as reported, with the batches waiting for pickup.
    fn report(&self) -> ComplianceStatus {
        let mut s = self.status.clone();
        s.awaiting_pickup = self.awaiting.keys().copied().collect();
        s
    }

    /// SHA-256 of the uploaded files the batch in progress (if any) uses.
    fn intent_uploads(&self) -> BTreeSet<String> {
        self.intent
            .iter()
            .flat_map(|i| i.events.iter())
            .filter_map(|k| self.staged.get(k))
            .filter_map(upload_entry)
            .map(|u| u.sha256)
            .collect()
    }

    /// Removes acknowledged batch `batch`'s files: its events file and
    /// manifest, and its uploaded files no other batch waiting for pickup
    /// (or being written) names.
    fn remove(&mut self, batch: u64, ctx: &mut Ctx) {
        let Some(p) = self.acked.get(&batch) else {
            return;
        };
        if self.removing.contains(&batch) {
            return;
        }
        let mut kept: BTreeSet<String> = self.intent_uploads();
        for other in self.awaiting.values() {
            kept.extend(other.uploads.iter().cloned());
        }
        let mut names = p.names.clone();
        names.extend(
            p.uploads
                .iter()
                .filter(|sha| !kept.contains(*sha))
                .map(|sha| upload_path(sha)),
        );
        self.removing.insert(batch);
        self.next_token += 1;
        self.writing.insert(self.next_token, Write::Remove(batch));
        ctx.remove_output(self.next_token, names);
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
        (self.config.rooms.is_empty() || self.config.rooms.iter().any(|r| e.room == *r))
            && (self.config.users.is_empty() || self.config.users.iter().any(|u| e.user == *u))
    }

    /// Starts an export: the intent first (or the one a crash left).
    fn run(&mut self, ctx: &mut Ctx) {
        if self.exporting {
            return;
        }
        if let Some(intent) = self.intent.clone() {
            return self.fetch_uploads(intent, ctx);
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

    /// The intent's events in scope.
    fn batch_events(&self, intent: &Intent) -> Vec<&ComplianceEvent> {
        intent
            .events
            .iter()
            .filter_map(|k| self.staged.get(k))
            .filter(|e| self.in_scope(e))
            .collect()
    }

    /// Fetches the intent's uploaded files from the Web services and
    /// writes each into the output folder, then the batch.
    fn fetch_uploads(&mut self, intent: Intent, ctx: &mut Ctx) {
        self.exporting = true;
        let entries: Vec<(UploadEntry, String)> = if self.skip_files {
            Vec::new()
        } else {
            self.batch_events(&intent)
                .into_iter()
                .filter_map(|e| upload_entry(e).map(|u| (u, e.source.clone())))
                .collect()
        };
        let mut todo: VecDeque<(String, Vec<usize>)> = VecDeque::new();
        for (i, (u, _)) in entries.iter().enumerate() {
            match todo.iter_mut().find(|(sha, _)| *sha == u.sha256) {
                Some((_, c)) => c.push(i),
                None => todo.push_back((u.sha256.clone(), vec![i])),
            }
        }
        self.fetch = Some(Fetch {
            intent,
            entries,
            todo,
            candidate: 0,
            buf: Vec::new(),
            done: BTreeMap::new(),
            writing: false,
            tries: 0,
        });
        self.ask(ctx);
    }

    /// Asks for the next chunk of the file being fetched, or, with every
    /// file done, writes the batch.
    fn ask(&mut self, ctx: &mut Ctx) {
        let Some(f) = &mut self.fetch else { return };
        let Some((_, cands)) = f.todo.front() else {
            let f = self.fetch.take().expect("fetching");
            let uploads = f
                .entries
                .into_iter()
                .map(|(mut u, _)| {
                    if let Some(Some(why)) = f.done.get(&u.sha256) {
                        u.missing = true;
                        u.reason = Some(why.clone());
                    }
                    u
                })
                .collect();
            return self.output(f.intent, uploads, ctx);
        };
        let (u, web) = &f.entries[cands[f.candidate]];
        ctx.send(
            Addr::new(web.clone(), ActorKind::Web),
            Msg::Compliance(ComplianceMsg::ComplianceFileFetch {
                file: u.file_id.as_str().into(),
                offset: f.buf.len() as u64,
            }),
        );
        ctx.set_timer(
            Timer::Compliance(ComplianceTimer::ComplianceResend),
            FETCH_RETRY,
        );
    }

    /// The entry being fetched, if `from` and `file` are what was asked.
    fn asked(&self, from: &Addr, file: &str) -> bool {
        self.fetch.as_ref().is_some_and(|f| {
            !f.writing
                && f.todo.front().is_some_and(|(_, c)| {
                    let (u, web) = &f.entries[c[f.candidate]];
                    u.file_id == file && *web == from.node
                })
        })
    }

    fn on_chunk(
        &mut self,
        from: &Addr,
        file: &str,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        ctx: &mut Ctx,
    ) {
        if !self.asked(from, file) {
            return;
        }
        let f = self.fetch.as_mut().expect("asked");
        if offset != f.buf.len() as u64 {
            return; // a stale answer: the one asked for follows
        }
        let (u, _) = &f.entries[f.todo[0].1[f.candidate]];
        let expected = u.size;
        if total != expected || f.buf.len() as u64 + data.len() as u64 > total {
            let why = format!("the Web service holds {total} bytes, the upload had {expected}");
            return self.candidate_failed(why, ctx);
        }
        if data.is_empty() && (f.buf.len() as u64) < total {
            return; // asked again at the retry
        }
        f.tries = 0;
        f.buf.extend_from_slice(&data);
        if (f.buf.len() as u64) < total {
            return self.ask(ctx);
        }
        let sha = f.todo[0].0.clone();
        if sha256_hex(&f.buf) != sha {
            return self.candidate_failed("the content differs from the upload".into(), ctx);
        }
        f.writing = true;
        let data = std::mem::take(&mut f.buf);
        ctx.cancel_timer(Timer::Compliance(ComplianceTimer::ComplianceResend));
        self.next_token += 1;
        self.writing.insert(self.next_token, Write::Upload);
        ctx.output(
            self.next_token,
            vec![OutputFile {
                name: upload_path(&sha),
                data,
            }],
        );
    }

    /// The entry asked for cannot give its file: try another upload of
    /// the same content, or list it as missing.
    fn candidate_failed(&mut self, why: String, ctx: &mut Ctx) {
        let Some(f) = self.fetch.as_mut() else { return };
        f.buf.clear();
        f.tries = 0;
        f.candidate += 1;
        if f.candidate >= f.todo[0].1.len() {
            let (sha, cands) = f.todo.pop_front().expect("a head");
            f.candidate = 0;
            let (u, web) = &f.entries[cands[0]];
            ctx.event(
                OperatorEvent::ComplianceFileMissing,
                format!(
                    "{}: batch {}: file {} ({}) from {web} is listed as missing: {why}",
                    self.name, f.intent.batch, u.file_id, u.file_name
                ),
            );
            f.done.insert(sha, Some(why));
        }
        self.ask(ctx);
    }

    /// The pickup system has taken batch `batch`: record it, answer, then
    /// remove the batch's files.
    fn ack(&mut self, from: Addr, batch: u64, ctx: &mut Ctx) {
        if let Some(p) = self.awaiting.get(&batch) {
            let ops = vec![
                StoreOp::Delete {
                    key: store_keys::key_u64(AWAITING, batch),
                },
                StoreOp::Put {
                    key: store_keys::key_u64(ACKED, batch),
                    value: store_keys::encode(p),
                },
            ];
            return self.write(Write::Ack { from, batch }, ops, ctx);
        }
        if batch >= 1 && batch <= self.last_batch {
            // Acknowledged already (or written before batches awaited
            // their pickup): nothing left to do.
            return ctx.send(
                from,
                Msg::Compliance(ComplianceMsg::ComplianceReport(self.report())),
            );
        }
        let reason = format!(
            "batch {batch} has not been exported (the last batch is {})",
            self.last_batch
        );
        ctx.send(
            from,
            Msg::Compliance(ComplianceMsg::ComplianceAckRefused { batch, reason }),
        );
    }

    /// Asks the host to write the batch's events file and manifest.
    fn output(&mut self, intent: Intent, uploads: Vec<UploadEntry>, ctx: &mut Ctx) {
        self.exporting = true;
        let mut written: Vec<String> = uploads
            .iter()
            .filter(|u| !u.missing)
            .map(|u| u.sha256.clone())
            .collect();
        written.sort();
        written.dedup();
        let events = self.batch_events(&intent);
        let files = render_batch(self.config.format, intent.batch, &events, uploads);
        let pickup = Pickup {
            batch: intent.batch,
            names: files.iter().map(|f| f.name.clone()).collect(),
            uploads: written,
        };
        self.next_token += 1;
        self.writing
            .insert(self.next_token, Write::Done(intent, pickup));
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
        self.fetch = None;
        self.awaiting.clear();
        self.acked.clear();
        self.removing.clear();
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
                match store_keys::decode::<Seq>(v) {
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
            } else if k.starts_with(AWAITING) || k.starts_with(ACKED) {
                match store_keys::decode::<Pickup>(v) {
                    Ok(p) if k.starts_with(AWAITING) => {
                        self.awaiting.insert(p.batch, p);
                    }
                    Ok(p) => {
                        self.acked.insert(p.batch, p);
                    }
                    Err(e) => ctx.event(OperatorEvent::StoreCorrupt, bad(e.to_string())),
                }
            }
        }
        self.status.staged = self.staged.len() as u64;
        self.status.last_batch = self.last_batch;
        ctx.set_timer(
            Timer::Compliance(ComplianceTimer::ComplianceRun),
            self.interval,
        );
        if let Some(intent) = &self.intent {
            // A crash came between recording a batch and deleting it: write
            // the same batch (same names, same bytes) again now.
            ctx.event(
                OperatorEvent::ComplianceExportResumed,
                format!("{}: batch {} is written again", self.name, intent.batch),
            );
            self.run(ctx);
        }
        // Acknowledged before a crash: finish removing their files.
        for batch in self.acked.keys().copied().collect::<Vec<_>>() {
            self.remove(batch, ctx);
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match (&from.actor, &msg) {
            (
                ActorKind::ChatStore | ActorKind::Web,
                Msg::Compliance(ComplianceMsg::ComplianceBatch { .. }),
            ) => true,
            // Operators, from the command-line tool.
            (
                ActorKind::Client,
                Msg::Compliance(ComplianceMsg::ComplianceRunNow)
                | Msg::Compliance(ComplianceMsg::ComplianceStatusQuery)
                | Msg::Compliance(ComplianceMsg::ComplianceAck { .. }),
            ) => true,
            (
                ActorKind::Web,
                Msg::Compliance(ComplianceMsg::ComplianceFileChunk { .. })
                | Msg::Compliance(ComplianceMsg::ComplianceFileMissing { .. }),
            ) => true,
            _ => false,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        // Only the service's own messages pass the check above.
        let Msg::Compliance(msg) = msg else {
            return;
        };
        match msg {
            ComplianceMsg::ComplianceBatch { events } => {
                let mut high = self.high.get(&from.node).copied().unwrap_or(Seq::ZERO);
                let mut fresh = Vec::new();
                for e in events {
                    // In order, from the next one: anything else is a
                    // resend (staged already) or comes after a gap.
                    if e.source == from.node && e.seq == high.next() {
                        high = e.seq;
                        fresh.push(e);
                    }
                }
                if fresh.is_empty() {
                    ctx.send(
                        from,
                        Msg::Compliance(ComplianceMsg::ComplianceStaged { upto: high }),
                    );
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
            ComplianceMsg::ComplianceFileChunk {
                file,
                offset,
                total,
                data,
            } => self.on_chunk(&from, &file, offset, total, data, ctx),
            ComplianceMsg::ComplianceFileMissing { file, reason } if self.asked(&from, &file) => {
                self.candidate_failed(reason, ctx);
            }
            ComplianceMsg::ComplianceRunNow
            | ComplianceMsg::ComplianceStatusQuery
            | ComplianceMsg::ComplianceAck { .. } => {
                let roles: &[Role] = match msg {
                    ComplianceMsg::ComplianceRunNow => &[Role::Operator],
                    _ => &[Role::Operator, Role::Auditor],
                };
                if let Err(refusal) = identity::require(&from, roles) {
                    identity_refused(&self.name, &from, msg.name(), &refusal, ctx);
                    let reason = refusal.to_string();
                    return ctx.send(from, Msg::Forbidden { reason });
                }
                match msg {
                    ComplianceMsg::ComplianceRunNow => self.run(ctx),
                    ComplianceMsg::ComplianceAck { batch } => return self.ack(from, batch, ctx),
                    _ => {}
                }
                ctx.send(
                    from,
                    Msg::Compliance(ComplianceMsg::ComplianceReport(self.report())),
                );
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Compliance(ComplianceTimer::ComplianceRun) => {
                ctx.set_timer(
                    Timer::Compliance(ComplianceTimer::ComplianceRun),
                    self.interval,
                );
                self.run(ctx);
                // Removals that failed are tried again.
                for batch in self.acked.keys().copied().collect::<Vec<_>>() {
                    self.remove(batch, ctx);
                }
            }
            Timer::Compliance(ComplianceTimer::ComplianceResend) => {
                // The Web service did not answer: ask again (the batch
                // waits; it never goes out without its files).
                let Some(f) = self.fetch.as_mut().filter(|f| !f.writing) else {
                    return;
                };
                f.tries += 1;
                if f.tries == 3 {
                    let (u, web) = &f.entries[f.todo[0].1[f.candidate]];
                    let why = format!(
                        "batch {} waits for file {} from {web}, which does not answer",
                        f.intent.batch, u.file_id
                    );
                    self.status.last_error = Some(why.clone());
                    ctx.event(
                        OperatorEvent::ComplianceExportFailed,
                        format!("{}: {why}", self.name),
                    );
                }
                self.ask(ctx);
            }
            _ => {}
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
                ctx.send(
                    from,
                    Msg::Compliance(ComplianceMsg::ComplianceStaged { upto }),
                );
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
                self.fetch_uploads(intent, ctx);
            }
            (Write::EarlyDelete(_), Err(_)) => self.exporting = false,
            (Write::Intent(intent), Ok(_)) => {
                self.intent = Some(intent.clone());
                self.fetch_uploads(intent, ctx);
            }
            (Write::Intent(_), Err(e)) => {
                self.exporting = false;
                self.status.last_error = Some(format!("cannot record the export: {e}"));
                ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!("{}: {e}", self.name),
                );
            }
            (Write::Done(intent, pickup), Ok(_)) => {
                // The batch's files and its deletion are both durable.
                if self.delete_unpicked {
                    let mut names = pickup.names.clone();
                    names.extend(pickup.uploads.iter().map(|s| upload_path(s)));
                    self.next_token += 1;
                    self.writing.insert(self.next_token, Write::Unpicked);
                    ctx.remove_output(self.next_token, names);
                } else {
                    self.awaiting.insert(pickup.batch, pickup);
                }
                for k in &intent.events {
                    self.staged.remove(k);
                }
                self.exported_events += intent.events.len() as u64;
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
            (Write::Ack { from, batch }, Ok(_)) => {
                if let Some(p) = self.awaiting.remove(&batch) {
                    self.acked.insert(batch, p);
                }
                ctx.send(
                    from,
                    Msg::Compliance(ComplianceMsg::ComplianceReport(self.report())),
                );
                self.remove(batch, ctx);
            }
            (Write::Ack { from, batch }, Err(e)) => {
                let reason = format!("the acknowledgement could not be recorded: {e}");
                ctx.send(
                    from,
                    Msg::Compliance(ComplianceMsg::ComplianceAckRefused { batch, reason }),
                );
            }
            (Write::Forget(batch), result) => {
                self.removing.remove(&batch);
                if result.is_ok() {
                    self.acked.remove(&batch);
                }
            }
            (Write::Upload | Write::Remove(_) | Write::Unpicked, _) => {}
            (Write::Done(..), Err(e)) => {
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
        let intent = match (self.writing.remove(&token), result) {
            (Some(Write::Done(intent, pickup)), result) => (intent, pickup, result),
            (Some(Write::Upload), Ok(())) => {
                let Some(f) = self.fetch.as_mut() else { return };
                let (sha, _) = f.todo.pop_front().expect("a head");
                f.done.insert(sha, None);
                f.candidate = 0;
                f.writing = false;
                return self.ask(ctx);
            }
            (Some(Write::Upload), Err(e)) => {
                // The folder is full or unwritable: the batch waits for
                // the next interval.
                self.fetch = None;
                self.exporting = false;
                self.status.last_error = Some(e.to_string());
                return ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!("{}: an uploaded file: {e}", self.name),
                );
            }
            (Some(Write::Remove(batch)), Ok(())) => {
                self.status.picked_up += 1;
                ctx.event(
                    OperatorEvent::ComplianceBatchPickedUp,
                    format!(
                        "{}: batch {batch} ({}) acknowledged and removed",
                        self.name,
                        batch_stem(batch)
                    ),
                );
                let op = StoreOp::Delete {
                    key: store_keys::key_u64(ACKED, batch),
                };
                return self.write(Write::Forget(batch), vec![op], ctx);
            }
            (Some(Write::Remove(batch)), Err(e)) => {
                // Tried again at the next interval (and at a restart).
                self.removing.remove(&batch);
                self.status.last_error = Some(format!("cannot remove batch {batch}: {e}"));
                return ctx.event(
                    OperatorEvent::ComplianceExportFailed,
                    format!(
                        "{}: cannot remove acknowledged batch {batch}: {e}",
                        self.name
                    ),
                );
            }
            _ => return,
        };
        let (intent, pickup, result) = intent;
        match result {
            Ok(()) => {
                let filtered = intent
                    .events
                    .iter()
                    .filter(|k| self.staged.get(*k).is_some_and(|e| !self.in_scope(e)))
                    .count() as u64;
                self.status.filtered += filtered;
                let mut ops = Self::deletion(&intent);
                ops.push(StoreOp::Put {
                    key: store_keys::key_u64(AWAITING, intent.batch),
                    value: store_keys::encode(&pickup),
                });
                self.write(Write::Done(intent, pickup), ops, ctx);
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
            (Gauge::ComplianceExportedEvents, self.exported_events),
            (Gauge::ComplianceBatches, self.last_batch),
            (Gauge::ComplianceAwaitingPickup, self.awaiting.len() as u64),
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
            seq: Seq(seq),
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
        h.msg(
            store(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch { events }),
        )
        .into_iter()
        .map(|(_, m)| m)
        .collect()
    }

    /// The service's answer to a batch: staged up to `upto`.
    fn staged(upto: u64) -> Vec<Msg> {
        let upto = Seq(upto);
        vec![Msg::Compliance(ComplianceMsg::ComplianceStaged { upto })]
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
        let report = |r: &(Vec<Msg>, usize)| {
            matches!(
                &r.0[..],
                [Msg::Compliance(ComplianceMsg::ComplianceReport(_))]
            )
        };
        for c in ["user:alice/1", "auditor:carol/1", "client-1"] {
            assert!(
                forbidden(&answer(
                    &mut h,
                    c,
                    Msg::Compliance(ComplianceMsg::ComplianceRunNow)
                )),
                "{c}"
            );
        }
        for c in ["user:alice/1", "client-1"] {
            assert!(
                forbidden(&answer(
                    &mut h,
                    c,
                    Msg::Compliance(ComplianceMsg::ComplianceStatusQuery)
                )),
                "{c}"
            );
        }
        assert!(report(&answer(
            &mut h,
            "auditor:carol/1",
            Msg::Compliance(ComplianceMsg::ComplianceStatusQuery)
        )));
        assert!(report(&answer(
            &mut h,
            "operator:ops/1",
            Msg::Compliance(ComplianceMsg::ComplianceStatusQuery)
        )));
        assert!(report(&answer(
            &mut h,
            "operator:ops/1",
            Msg::Compliance(ComplianceMsg::ComplianceRunNow)
        )));
    }

    #[test]
    fn events_are_staged_in_order_once_and_acknowledged() {
        let mut h = service(ComplianceConfig::default());
        assert_eq!(batch(&mut h, &[1, 2, 3]), staged(3));
        // A resend of staged events is acknowledged again, not staged again.
        assert_eq!(batch(&mut h, &[2, 3]), staged(3));
        // After a gap nothing is taken: the outbox resends from 4.
        assert_eq!(batch(&mut h, &[5, 6]), staged(3));
        assert_eq!(batch(&mut h, &[4, 5]), staged(5));
        assert_eq!(h.actor().staged.len(), 5);
        // Staging survives a restart, and so does the high mark.
        let mut h2 = service(ComplianceConfig::default());
        h2.store = h.store.clone();
        h2.start(h.store.clone());
        assert_eq!(h2.actor().staged.len(), 5);
        assert_eq!(batch(&mut h2, &[5]), staged(5));
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
        assert_eq!((e.seq.0, e.item.as_str(), e.details.len()), (4, "f1", 0));
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
        assert_eq!(evs.iter().map(|e| e.seq.0).collect::<Vec<_>>(), vec![1, 2]);
        // A failed write gives its numbers out again.
        ob.rolled_back(&evs);
        let (evs, ops2) = ob.record(vec![new(1), new(2)]);
        assert_eq!(evs[0].seq, Seq(1));
        assert_eq!(ops.len(), ops2.len());
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.committed(evs, &mut ctx);
        let sent = ctx.into_effects();
        assert!(sent.iter().any(|e| matches!(e, crate::core::actor::Effect::Send { msg: Msg::Compliance(ComplianceMsg::ComplianceBatch { events }), .. } if events.len() == 2)));
        // Recovered from its ops: the next number goes on from 3 even once
        // every event is confirmed and deleted.
        let mut recovered = Recovered::new();
        for op in ops2 {
            if let StoreOp::Put { key, value } = op {
                recovered.insert(key, value);
            }
        }
        let mut ctx = Ctx::new(0, &me, &mut rng);
        let deletes = ob.staged(&Addr::new("comp1", ActorKind::Compliance), Seq(2), &mut ctx);
        for op in deletes {
            if let StoreOp::Delete { key } = op {
                recovered.remove(&key);
            }
        }
        assert!(ob.is_empty());
        let mut again = Outbox::new("chatdb", Some("comp1".into()));
        assert!(again.recover(&recovered).is_empty());
        assert_eq!(again.record(vec![new(3)]).0[0].seq, Seq(3));
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
                        msg: Msg::Compliance(ComplianceMsg::ComplianceBatch { events }),
                        ..
                    } => Some(events.iter().map(|e| e.seq.0).collect()),
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
        assert_eq!(ob.staged(&comp, Seq(2), &mut ctx).len(), 2);
        assert!(batches(ctx).is_empty());
        // Nothing new: the service lacks 3; send again from there.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert!(ob.staged(&comp, Seq(2), &mut ctx).is_empty());
        assert_eq!(batches(ctx), vec![vec![3, 4]]);
        // No answer in time: the same again.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        ob.resend(&mut ctx);
        assert_eq!(batches(ctx), vec![vec![3, 4]]);
        // A confirmation from elsewhere is ignored.
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert!(ob.staged(&me, Seq(4), &mut ctx).is_empty());
        let mut ctx = Ctx::new(0, &me, &mut rng);
        assert_eq!(ob.staged(&comp, Seq(4), &mut ctx).len(), 2);
        assert!(batches(ctx).is_empty());
        assert!(ob.is_empty());
    }

    /// Runs an export (the timer), its output answered with `written`;
    /// returns the files asked for.
    fn export(h: &mut Harness<Compliance>, written: Result<(), StoreError>) -> Vec<OutputFile> {
        h.fail_outputs = written.err();
        let before = h.outputs.len();
        h.fire(Timer::Compliance(ComplianceTimer::ComplianceRun));
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

    fn web() -> Addr {
        Addr::new("web1", ActorKind::Web)
    }

    /// An upload event of `data` as the Web service records it.
    fn upload(seq: u64, file: &str, data: &[u8]) -> ComplianceEvent {
        ComplianceEvent {
            source: "web1".into(),
            seq: Seq(seq),
            kind: EventKind::Upload,
            room: "general".into(),
            user: "ann@corp.example".into(),
            at: seq,
            item: file.into(),
            text: format!("{file}.txt"),
            details: crate::chat::web_files::file_details(data),
        }
    }

    /// Plays the Web service for the fetches sent: answers each with a
    /// chunk of `files` (or as missing), until the service stops asking.
    /// Returns the fetches answered.
    fn serve(
        h: &mut Harness<Compliance>,
        mut sent: Vec<(Addr, Msg)>,
        files: &BTreeMap<&str, Vec<u8>>,
        chunk: usize,
    ) -> usize {
        let mut n = 0;
        while let Some(pos) = sent.iter().position(|(_, m)| {
            matches!(
                m,
                Msg::Compliance(ComplianceMsg::ComplianceFileFetch { .. })
            )
        }) {
            let (to, m) = sent.remove(pos);
            assert_eq!(to, web());
            let Msg::Compliance(ComplianceMsg::ComplianceFileFetch { file, offset }) = m else {
                unreachable!()
            };
            n += 1;
            let reply = match files.get(file.as_str()) {
                Some(d) => {
                    let start = offset as usize;
                    let end = (start + chunk).min(d.len());
                    Msg::Compliance(ComplianceMsg::ComplianceFileChunk {
                        file,
                        offset,
                        total: d.len() as u64,
                        data: d[start..end].to_vec(),
                    })
                }
                None => Msg::Compliance(ComplianceMsg::ComplianceFileMissing {
                    file,
                    reason: "the Web service has no such file".into(),
                }),
            };
            sent = h.msg(web(), reply);
        }
        n
    }

    fn manifest_of(h: &Harness<Compliance>) -> crate::compliance::export::Manifest {
        let last = h.outputs.last().unwrap();
        serde_json::from_slice(&last[1].data).unwrap()
    }

    /// Uploaded files are fetched in chunks, written content-addressed
    /// (once for two uploads of the same bytes) before the manifest, which
    /// lists each with its size, hash, room and uploader; one the Web
    /// service no longer has is listed as missing.
    #[test]
    fn a_batch_carries_its_uploaded_files() {
        let mut h = service(ComplianceConfig {
            format: ExportFormat::JsonLines,
            ..Default::default()
        });
        let plan = b"the plan, in more than one chunk".to_vec();
        let events = vec![
            upload(1, "f1", &plan),
            upload(2, "f2", &plan),
            upload(3, "gone", b"lost"),
        ];
        h.msg(
            web(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch { events }),
        );
        let sent = h.fire(Timer::Compliance(ComplianceTimer::ComplianceRun));
        assert!(h.outputs.is_empty(), "nothing written before the files");
        let files: BTreeMap<&str, Vec<u8>> = [("f1", plan.clone()), ("f2", plan.clone())].into();
        let asked = serve(&mut h, sent, &files, 8);
        assert_eq!(
            asked,
            plan.len().div_ceil(8) + 1,
            "f1 once, in chunks; gone once"
        );
        // One content file, then the batch (events, manifest last).
        assert_eq!(h.outputs.len(), 2);
        let sha = sha256_hex(&plan);
        assert_eq!(
            h.outputs[0],
            vec![OutputFile {
                name: upload_path(&sha),
                data: plan.clone()
            }]
        );
        let m = manifest_of(&h);
        assert_eq!(m.uploads.len(), 3);
        assert!(m.uploads[..2].iter().all(|u| u.name == upload_path(&sha)
            && u.size == plan.len() as u64
            && u.room == "general"
            && u.uploader == "ann@corp.example"
            && !u.missing));
        assert!(m.uploads[2].missing && m.uploads[2].reason.is_some());
        assert_eq!(m.uploads[2].sha256, sha256_hex(b"lost"));
        assert_eq!(m.interval.as_ref().map(|i| (i.first, i.last)), Some((1, 3)));
        assert_eq!(m.event_files[0].name, m.file);
        assert!(h.events().contains(&"compliance_file_missing"));
        assert!(h.actor().staged.is_empty());
        assert_eq!(h.actor().report().awaiting_pickup, vec![1]);
    }

    /// A Web service that does not answer delays the batch: it is asked
    /// again, and no manifest goes out until the file has come.
    #[test]
    fn a_file_that_cannot_be_fetched_delays_the_batch() {
        let mut h = service(ComplianceConfig::default());
        let data = b"content".to_vec();
        h.msg(
            web(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch {
                events: vec![upload(1, "f1", &data)],
            }),
        );
        let first = h.fire(Timer::Compliance(ComplianceTimer::ComplianceRun));
        assert_eq!(first.len(), 1);
        for _ in 0..3 {
            let again = h.fire(Timer::Compliance(ComplianceTimer::ComplianceResend));
            assert!(matches!(
                &again[..],
                [(
                    _,
                    Msg::Compliance(ComplianceMsg::ComplianceFileFetch { offset: 0, .. })
                )]
            ));
        }
        assert!(h.outputs.is_empty());
        assert!(h.actor().status.last_error.is_some());
        // Another run meanwhile does not start a second export.
        assert!(h
            .fire(Timer::Compliance(ComplianceTimer::ComplianceRun))
            .is_empty());
        let files: BTreeMap<&str, Vec<u8>> = [("f1", data)].into();
        let again = h.fire(Timer::Compliance(ComplianceTimer::ComplianceResend));
        serve(&mut h, again, &files, 1 << 20);
        assert_eq!(h.outputs.len(), 2);
        assert!(!manifest_of(&h).uploads[0].missing);
    }

    /// An acknowledgement is recorded before anything is removed; the
    /// batch's files go, but not a content another waiting batch names; a
    /// crash between the record and the removal removes them at restart.
    #[test]
    fn an_acknowledged_batch_is_removed_and_only_then() {
        let mut h = service(ComplianceConfig::default());
        let shared = b"shared".to_vec();
        let own = b"own".to_vec();
        let files: BTreeMap<&str, Vec<u8>> = [
            ("s1", shared.clone()),
            ("s2", shared.clone()),
            ("o1", own.clone()),
        ]
        .into();
        h.msg(
            web(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch {
                events: vec![upload(1, "s1", &shared), upload(2, "o1", &own)],
            }),
        );
        let sent = h.fire(Timer::Compliance(ComplianceTimer::ComplianceRun));
        serve(&mut h, sent, &files, 1 << 20);
        h.msg(
            web(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch {
                events: vec![upload(3, "s2", &shared)],
            }),
        );
        let sent = h.fire(Timer::Compliance(ComplianceTimer::ComplianceRun));
        serve(&mut h, sent, &files, 1 << 20);
        assert_eq!(h.actor().report().awaiting_pickup, vec![1, 2]);
        assert!(
            h.removed.is_empty(),
            "nothing removed without an acknowledgement"
        );
        let op = || Addr::new("operator:ops/1", ActorKind::Client);
        // Only operators and auditors; only batches that exist.
        let sent = h.msg(
            Addr::new("user:alice/1", ActorKind::Client),
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 1 }),
        );
        assert!(matches!(&sent[..], [(_, Msg::Forbidden { .. })]));
        let sent = h.msg(
            op(),
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 9 }),
        );
        assert!(matches!(
            &sent[..],
            [(
                _,
                Msg::Compliance(ComplianceMsg::ComplianceAckRefused { batch: 9, .. })
            )]
        ));
        // The acknowledgement is durable, then the process dies before
        // the removal: the restart removes.
        h.fail_outputs = Some(StoreError::Io("crash".into()));
        let sent = h.msg(
            Addr::new("auditor:carol/1", ActorKind::Client),
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 1 }),
        );
        assert!(
            matches!(&sent[..], [(_, Msg::Compliance(ComplianceMsg::ComplianceReport(s)))] if s.awaiting_pickup == vec![2])
        );
        assert!(h.store.contains_key(&store_keys::key_u64(ACKED, 1)));
        h.fail_outputs = None;
        let crashed = h.store.clone();
        let mut h2 = service(ComplianceConfig::default());
        h2.store = crashed.clone();
        h2.start(crashed);
        let want = vec![
            format!("{}.xml", batch_stem(1)),
            format!("{}.manifest.json", batch_stem(1)),
            upload_path(&sha256_hex(&own)),
        ];
        assert_eq!(
            h2.removed,
            vec![want],
            "the shared content stays for batch 2"
        );
        assert!(!h2.store.contains_key(&store_keys::key_u64(ACKED, 1)));
        assert!(h2.events().contains(&"compliance_batch_picked_up"));
        assert_eq!(h2.actor().status.picked_up, 1);
        // Acknowledged again: nothing to do. Batch 2 takes the shared file.
        let sent = h2.msg(
            op(),
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 1 }),
        );
        assert!(matches!(
            &sent[..],
            [(_, Msg::Compliance(ComplianceMsg::ComplianceReport(_)))]
        ));
        h2.msg(
            op(),
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch: 2 }),
        );
        assert_eq!(h2.removed.len(), 2);
        assert!(h2.removed[1].contains(&upload_path(&sha256_hex(&shared))));
        assert!(h2.actor().report().awaiting_pickup.is_empty());
    }

    #[test]
    fn scoping_keeps_only_the_rooms_and_users_asked_for() {
        let mut h = service(ComplianceConfig {
            format: ExportFormat::Csv,
            rooms: vec!["deals".into()],
            users: Vec::new(),
        });
        let events = vec![ev("chatdb", 1, "general"), ev("chatdb", 2, "deals")];
        h.msg(
            store(),
            Msg::Compliance(ComplianceMsg::ComplianceBatch { events }),
        );
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
            Msg::Compliance(ComplianceMsg::ComplianceBatch {
                events: vec![ev("ch1", 1, "r")],
            }),
        );
        assert!(sent.is_empty());
        assert!(h.actor().staged.is_empty());
        assert!(h.events().contains(&"unauthorized_sender"));
    }
}

//! Archive database: the LcsLog `messages` table. The rows live in the
//! engine, not in this core: a row is inserted under its message id with
//! [`StoreOp::Insert`], which writes only if the id is not archived yet —
//! the engine's unique key makes inserts idempotent, so a batch retried by
//! the archiver never archives a message twice, and starting reads no row.
//! A batch is one transaction: one durable write, then the answer.

use crate::archiving::retention::{self, Holds, Retention, Step};
use crate::core::actor::{
    authorize, identity_refused, ignored, records_invalid, records_principal, Actor, Ctx,
    Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::engine::{Answer, Query};
use crate::core::identity;
use crate::core::ids::{ActorKind, Addr, BatchId, MessageId, Token};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{
    read_bytes, row_bytes, ArchiveRead, ArchiveRefusal, ArchivingMsg, DbError, Msg, ReadWhat,
    RecordsMsg, Row, Search, SearchAfter, SEARCH_MAX_BYTES, SEARCH_PAGE_MAX, SEARCH_USERS_MAX,
};
use crate::core::protocol::{ExportRecord, LegalHold};
use crate::core::settings::{Sabotage, Settings};
use crate::core::store_keys::{self as keys, DB_EXPORT, DB_HOLD, DB_READ, DB_ROW, DB_TIME};
use std::collections::BTreeMap;

struct Txn {
    from: Addr,
    batch: BatchId,
}

/// What a token stands for while the engine works on it.
enum Pending {
    /// A batch of the archiver's, being written.
    Log { from: Addr, batch: BatchId },
    /// A client's read, being answered by the engine.
    Read {
        from: Addr,
        token: Token,
        entry: ArchiveRead,
    },
    /// A hold placed or released, being written.
    Hold {
        from: Addr,
        token: Token,
        hold: LegalHold,
    },
    /// An export's record, being written.
    Export {
        from: Addr,
        token: Token,
        export: ExportRecord,
    },
    /// A read's entry in the trail, being written: the answer waits for it.
    Audit {
        from: Addr,
        who: String,
        answer: Msg,
    },
}

/// The token of the query that counts the archived rows at start (write
/// tokens start at 2).
const COUNT: u64 = 0;
/// The token of the query that finds the read trail's last entry, asked
/// before the first read after a start is recorded (not at start: a
/// database no client reads starts as it did before it kept a trail).
const LAST_READ: u64 = 1;
/// The token of the purge's reads and writes.
const PURGE: u64 = u64::MAX;

/// Client reads in flight at most; beyond, a read is refused as busy.
pub const READS_IN_FLIGHT_MAX: usize = 64;

/// One page of a read: the engine's `rows` (one more than `limit` asks,
/// to tell whether more follow) decoded until the page is full or holds
/// [`SEARCH_MAX_BYTES`] (at least one item whatever its size), and whether
/// the page was cut before the end. The first row that does not decode
/// fails the page with why.
fn page_of<T>(
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    limit: u32,
    size: impl Fn(&T) -> u64,
    decode: impl Fn(&[u8], &[u8]) -> Result<T, String>,
) -> Result<(Vec<T>, bool), String> {
    let page = limit.clamp(1, SEARCH_PAGE_MAX) as usize;
    let mut items = Vec::with_capacity(rows.len().min(page));
    let mut bytes = 0;
    let mut cut = rows.len() > page;
    for (key, value) in rows.into_iter().take(page) {
        let item = decode(&key, &value)?;
        bytes += size(&item);
        if !items.is_empty() && bytes > SEARCH_MAX_BYTES {
            cut = true;
            break;
        }
        items.push(item);
    }
    Ok((items, cut))
}

pub struct Database {
    name: String,
    sabotage: Sabotage,
    /// Records seen (drives the sabotage counters).
    seen: u64,
    /// Rows in the archive: counted by the engine at start, then kept up
    /// to date with what each transaction inserted (`None` until counted).
    rows: Option<u64>,
    /// The number of the next entry of the read trail (`None` until the
    /// engine has found the last one).
    next_read: Option<u64>,
    /// Reads to record once the engine has found the trail's last entry
    /// (a [`LAST_READ`] query is in flight while there are any).
    unnumbered: Vec<(Addr, ArchiveRead, Msg)>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    retention: Retention,
    /// Every legal hold, active or released, by name (read at start).
    holds: BTreeMap<String, LegalHold>,
    /// A stored hold could not be read: it may cover anything, so the
    /// purge keeps every row until an operator has repaired it.
    holds_unreadable: bool,
    /// `purge_exported_only`: the purge keeps rows no export covers.
    exported_only: bool,
    /// Every export recorded, by manifest SHA-256 (read at start).
    exports: BTreeMap<String, ExportRecord>,
}

/// The active holds decide what the purge keeps (everything, if one of
/// them could not be read); with `purge_exported_only`, so do the exports.
struct ActiveHolds<'a> {
    holds: &'a BTreeMap<String, LegalHold>,
    unreadable: bool,
    /// `None`: every row counts as exported (`purge_exported_only` off).
    exports: Option<&'a BTreeMap<String, ExportRecord>>,
}

impl Holds for ActiveHolds<'_> {
    fn held(&self, from: &str, to: &str, time: u64) -> bool {
        self.unreadable || self.holds.values().any(|h| h.covers(from, to, time))
    }

    fn exported(&self, row: &Row) -> bool {
        let r = &row.record;
        self.exports.is_none_or(|exports| {
            exports
                .values()
                .any(|x| x.covers(&r.from, &r.to, r.time, row.archived_at))
        })
    }
}

impl Database {
    pub fn new(name: impl Into<String>, sabotage: Sabotage) -> Self {
        Database {
            name: name.into(),
            sabotage,
            seen: 0,
            rows: None,
            next_read: None,
            unnumbered: Vec::new(),
            pending: BTreeMap::new(),
            next_token: LAST_READ,
            retention: Retention::new(&Settings::default()),
            holds: BTreeMap::new(),
            holds_unreadable: false,
            exported_only: false,
            exports: BTreeMap::new(),
        }
    }

    /// Places a hold (auditors only): durable before it is answered, and
    /// from then on the purge keeps what it covers.
    fn place_hold(&mut self, from: Addr, token: Token, hold: LegalHold, ctx: &mut Ctx) {
        let Some(who) = records_principal(
            &self.name,
            &from,
            token,
            "HoldPlace",
            identity::HOLD_KEEPERS,
            ctx,
        ) else {
            return;
        };
        if let Some(why) = hold.incomplete() {
            return records_invalid(from, token, why, ctx);
        }
        if self
            .holds
            .get(&hold.name)
            .is_some_and(|h| h.released.is_none())
        {
            let why = format!("hold {:?} exists and is active", hold.name);
            return records_invalid(from, token, why, ctx);
        }
        let hold = hold.placed(who, ctx.now());
        self.write_hold(from, token, hold, ctx);
    }

    /// Releases a hold (auditors only); it stays on record.
    fn release_hold(
        &mut self,
        from: Addr,
        token: Token,
        name: String,
        reason: String,
        ctx: &mut Ctx,
    ) {
        let Some(who) = records_principal(
            &self.name,
            &from,
            token,
            "HoldRelease",
            identity::HOLD_KEEPERS,
            ctx,
        ) else {
            return;
        };
        match LegalHold::release(&self.holds, &name, who, ctx.now(), reason) {
            Ok(hold) => self.write_hold(from, token, hold, ctx),
            Err(why) => records_invalid(from, token, why, ctx),
        }
    }

    fn write_hold(&mut self, from: Addr, token: Token, hold: LegalHold, ctx: &mut Ctx) {
        let op = StoreOp::Put {
            key: keys::key_str(DB_HOLD, &hold.name),
            value: keys::encode(&hold),
        };
        let t = self.token();
        self.pending.insert(t, Pending::Hold { from, token, hold });
        ctx.persist(t, vec![op]);
    }

    /// Records an export that wrote every row of its query (auditors
    /// only): durable before it is answered; from then on, with
    /// `purge_exported_only`, the purge may delete what it covers.
    fn record_export(&mut self, from: Addr, token: Token, mut export: ExportRecord, ctx: &mut Ctx) {
        let Some(who) = records_principal(
            &self.name,
            &from,
            token,
            "ExportDone",
            identity::ARCHIVE_READERS,
            ctx,
        ) else {
            return;
        };
        let sha = &export.manifest_sha256;
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            let why =
                format!("an export names its manifest by SHA-256 (64 hex digits), not {sha:?}");
            return records_invalid(from, token, why, ctx);
        }
        if export.users.len() > SEARCH_USERS_MAX {
            let why = format!("an export names at most {SEARCH_USERS_MAX} users");
            return records_invalid(from, token, why, ctx);
        }
        if export.as_of > ctx.now() {
            let why = "an export cannot have begun after now".to_string();
            return records_invalid(from, token, why, ctx);
        }
        if let Some(known) = self.exports.get(sha) {
            // Reported again (an answer lost): the first record stands.
            ctx.send(
                from,
                RecordsMsg::ExportRecorded {
                    token,
                    export: Box::new(known.clone()),
                },
            );
            return;
        }
        export.recorded_by = who;
        export.recorded_at = ctx.now();
        let op = StoreOp::Put {
            key: keys::key_str(DB_EXPORT, &export.manifest_sha256),
            value: keys::encode(&export),
        };
        let t = self.token();
        self.pending.insert(
            t,
            Pending::Export {
                from,
                token,
                export,
            },
        );
        ctx.persist(t, vec![op]);
    }

    fn retention_status(&mut self, from: Addr, token: Token, ctx: &mut Ctx) {
        if records_principal(
            &self.name,
            &from,
            token,
            "RetentionStatus",
            identity::RETENTION_VIEWERS,
            ctx,
        )
        .is_none()
        {
            return;
        }
        let (keep_days, purge_hour) = self.retention.policy();
        ctx.send(
            from,
            RecordsMsg::RetentionState {
                token,
                keep_days,
                purge_hour,
                purge: self.retention.record_now().map(Box::new),
                holds: self.holds.values().cloned().collect(),
                at: ctx.now(),
                exported_only: self.exported_only,
                exports: self.exports_by_time(),
            },
        );
    }

    /// The export records, oldest first (ties by manifest hash: stable).
    fn exports_by_time(&self) -> Vec<ExportRecord> {
        let mut v: Vec<ExportRecord> = self.exports.values().cloned().collect();
        v.sort_by(|a, b| {
            (a.recorded_at, &a.manifest_sha256).cmp(&(b.recorded_at, &b.manifest_sha256))
        });
        v
    }

    /// Purges by the retention settings of `settings`.
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.retention = Retention::new(settings).sabotaged(&self.sabotage);
        self.exported_only = settings.purge_exported_only;
        self
    }

    fn purge_step(&mut self, step: Step, ctx: &mut Ctx) {
        match step {
            Step::Read(query) => ctx.query(PURGE, query),
            Step::Delete(ops) => ctx.persist(PURGE, ops),
            Step::Wait => {}
        }
    }

    /// Rows in the archive, once the engine has counted them.
    pub fn rows(&self) -> Option<u64> {
        self.rows
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn reads_in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| !matches!(p, Pending::Log { .. }))
            .count()
            + self.unnumbered.len()
    }

    fn log(
        &mut self,
        from: Addr,
        batch: BatchId,
        records: Vec<crate::core::protocol::ArchiveRecord>,
        ctx: &mut Ctx,
    ) {
        let mut ops = Vec::with_capacity(records.len());
        for record in records {
            self.seen += 1;
            let s = &self.sabotage;
            if s.db_drop_every > 0 && self.seen.is_multiple_of(s.db_drop_every) {
                continue; // sabotage: acknowledged but never written
            }
            let duplicate =
                s.db_duplicate_every > 0 && self.seen.is_multiple_of(s.db_duplicate_every);
            let row = Row {
                // The engine numbers its rows; a core never sees them.
                rowid: 0,
                record,
                archived_at: ctx.now(),
            };
            let key = keys::key_str(DB_ROW, &row.record.id);
            let value = keys::encode(&row);
            // The time index entry, written with the row (a retry writes
            // the same entry again): what the purge reads oldest first. It
            // carries nothing: the purge reads the row itself.
            let index = StoreOp::Put {
                key: retention::time_key(row.record.time, &row.record.id),
                value: Vec::new(),
            };
            if duplicate {
                // Sabotage: the same message again under another key, past
                // the unique key.
                let mut twin = key.clone();
                twin.extend_from_slice(b"\0twin");
                ops.push(StoreOp::Insert {
                    key: twin,
                    value: value.clone(),
                });
            }
            ops.push(StoreOp::Insert { key, value });
            ops.push(index);
        }
        if ops.is_empty() {
            ctx.send(from, ArchivingMsg::Logged { batch });
            return;
        }
        let token = self.token();
        self.pending.insert(token, Pending::Log { from, batch });
        ctx.persist(token, ops);
    }

    /// A client's read of the archive or of its trail: only an auditor may
    /// (see [`identity::ARCHIVE_READERS`]). Every read, refused or not, is
    /// recorded in the trail before it is answered.
    fn read(&mut self, from: Addr, token: Token, what: ReadWhat, ctx: &mut Ctx) {
        let request = match what {
            ReadWhat::Messages(_) => "ArchiveSearch",
            ReadWhat::Trail { .. } => "ArchiveTrail",
        };
        let principal = identity::Principal::of(&from);
        let who = principal
            .as_ref()
            .map_or_else(|| from.node.clone(), |p| format!("{}:{}", p.role, p.user));
        let entry = ArchiveRead {
            at: ctx.now(),
            who,
            what,
            rows: 0,
            refused: None,
        };
        if self.reads_in_flight() >= READS_IN_FLIGHT_MAX {
            ctx.send(
                from,
                RecordsMsg::ArchiveRefused {
                    token,
                    refusal: ArchiveRefusal::Busy,
                },
            );
            return;
        }
        if let Err(refusal) = identity::require(&from, identity::ARCHIVE_READERS) {
            identity_refused(&self.name, &from, request, &refusal, ctx);
            let reason = refusal.to_string();
            let answer = Msg::Records(RecordsMsg::ArchiveRefused {
                token,
                refusal: ArchiveRefusal::Forbidden(reason.clone()),
            });
            let entry = ArchiveRead {
                refused: Some(reason),
                ..entry
            };
            self.record(from, entry, answer, ctx);
            return;
        }
        if let ReadWhat::Messages(s) = &entry.what {
            if s.users.len() > SEARCH_USERS_MAX {
                let refusal = ArchiveRefusal::Invalid(format!(
                    "a search names at most {SEARCH_USERS_MAX} users, not {}",
                    s.users.len()
                ));
                let entry = ArchiveRead {
                    refused: Some(refusal.to_string()),
                    ..entry
                };
                self.record(
                    from,
                    entry,
                    Msg::Records(RecordsMsg::ArchiveRefused { token, refusal }),
                    ctx,
                );
                return;
            }
        }
        let query = match &entry.what {
            ReadWhat::Messages(search) => Query::Search {
                prefix: DB_ROW.to_vec(),
                search: Search {
                    // One more than answered: whether there is more.
                    limit: search.limit.clamp(1, SEARCH_PAGE_MAX) + 1,
                    ..search.clone()
                },
            },
            ReadWhat::Trail { after, limit } => Query::Scan {
                prefix: DB_READ.to_vec(),
                from: after.map(|a| a.to_be_bytes().to_vec()),
                reverse: false,
                limit: (*limit).clamp(1, SEARCH_PAGE_MAX) + 1,
            },
        };
        let t = self.token();
        self.pending.insert(t, Pending::Read { from, token, entry });
        ctx.query(t, query);
    }

    /// The engine answered a client's read: record it, then answer.
    fn found(
        &mut self,
        from: Addr,
        token: Token,
        mut entry: ArchiveRead,
        result: Result<Answer, StoreError>,
        ctx: &mut Ctx,
    ) {
        let rows = match result {
            Ok(answer) => answer.into_rows(),
            Err(e) => {
                ctx.event(
                    OperatorEvent::DbStoreFailed,
                    format!("{}: a read of the archive failed: {e}", self.name),
                );
                return self.refuse_read(from, entry, token, e.to_string(), ctx);
            }
        };
        let answer = match &entry.what {
            ReadWhat::Messages(search) => {
                let paged = page_of(rows, search.limit, row_bytes, |key, value| {
                    keys::decode::<Row>(value)
                        .map_err(|e| format!("row {key:?} does not decode: {e}"))
                });
                let (decoded, cut) = match paged {
                    Ok(paged) => paged,
                    Err(why) => return self.refuse_read(from, entry, token, why, ctx),
                };
                let next = cut.then(|| {
                    let last = &decoded[decoded.len() - 1].record;
                    SearchAfter {
                        time: last.time,
                        id: last.id.clone(),
                    }
                });
                entry.rows = decoded.len() as u64;
                Msg::Records(RecordsMsg::ArchiveFound {
                    token,
                    rows: decoded,
                    next,
                })
            }
            ReadWhat::Trail { limit, .. } => {
                let paged = page_of(
                    rows,
                    *limit,
                    |(_, read): &(u64, ArchiveRead)| read_bytes(read),
                    |key, value| {
                        keys::parse_u64(DB_READ, key)
                            .zip(keys::decode::<ArchiveRead>(value).ok())
                            .ok_or_else(|| format!("trail entry {key:?} does not decode"))
                    },
                );
                let (reads, cut) = match paged {
                    Ok(paged) => paged,
                    Err(why) => return self.refuse_read(from, entry, token, why, ctx),
                };
                let next = cut.then(|| reads[reads.len() - 1].0);
                entry.rows = reads.len() as u64;
                Msg::Records(RecordsMsg::ArchiveReads {
                    token,
                    reads,
                    // Filled in by `record`.
                    recorded: 0,
                    next,
                })
            }
        };
        self.record(from, entry, answer, ctx);
    }

    /// A hold or an export record the store did not write: an event, and
    /// the request refused.
    fn unwritten(&self, from: Addr, token: Token, what: &str, e: &StoreError, ctx: &mut Ctx) {
        ctx.event(
            OperatorEvent::DbStoreFailed,
            format!("{}: {what} not written: {e}", self.name),
        );
        ctx.send(
            from,
            RecordsMsg::ArchiveRefused {
                token,
                refusal: ArchiveRefusal::StoreFailed(e.to_string()),
            },
        );
    }

    /// Refuses a read the store could not serve: the refusal is recorded
    /// in the trail like any answer.
    fn refuse_read(
        &mut self,
        from: Addr,
        mut entry: ArchiveRead,
        token: Token,
        why: String,
        ctx: &mut Ctx,
    ) {
        let refusal = ArchiveRefusal::StoreFailed(why);
        entry.refused = Some(refusal.to_string());
        self.record(
            from,
            entry,
            Msg::Records(RecordsMsg::ArchiveRefused { token, refusal }),
            ctx,
        );
    }

    /// Writes `entry` to the read trail, then (in `on_persisted`) sends
    /// `answer`. A read that cannot be recorded is not answered: it is
    /// refused.
    fn record(&mut self, from: Addr, entry: ArchiveRead, mut answer: Msg, ctx: &mut Ctx) {
        let Some(seq) = self.next_read else {
            if self.unnumbered.is_empty() {
                ctx.query(
                    LAST_READ,
                    Query::Scan {
                        prefix: DB_READ.to_vec(),
                        from: None,
                        reverse: true,
                        limit: 1,
                    },
                );
            }
            self.unnumbered.push((from, entry, answer));
            return;
        };
        self.next_read = Some(seq + 1);
        if let Msg::Records(RecordsMsg::ArchiveReads { recorded, .. }) = &mut answer {
            *recorded = seq;
        }
        let token = self.token();
        let who = entry.who.clone();
        self.pending
            .insert(token, Pending::Audit { from, who, answer });
        ctx.persist(
            token,
            vec![StoreOp::Insert {
                key: keys::key_u64(DB_READ, seq),
                value: keys::encode(&entry),
            }],
        );
    }

    /// A read whose entry could not be written: an event, and a refusal
    /// instead of any rows.
    fn unrecorded(&self, to: &Addr, who: &str, why: &str, answer: Msg, ctx: &mut Ctx) {
        ctx.event(
            OperatorEvent::DbStoreFailed,
            format!(
                "{}: a read of the archive by {who} was not recorded, so not answered: {why}",
                self.name
            ),
        );
        let answer = match answer {
            // Already a refusal: it stands.
            refused @ Msg::Records(RecordsMsg::ArchiveRefused { .. }) => refused,
            Msg::Records(
                RecordsMsg::ArchiveFound { token, .. } | RecordsMsg::ArchiveReads { token, .. },
            ) => Msg::Records(RecordsMsg::ArchiveRefused {
                token,
                refusal: ArchiveRefusal::AuditFailed(why.to_string()),
            }),
            other => other,
        };
        ctx.send(to.clone(), answer);
    }
}

impl Actor for Database {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.pending.clear();
        self.rows = None;
        self.next_read = None;
        self.unnumbered.clear();
        self.holds.clear();
        self.holds_unreadable = false;
        self.exports.clear();
        for (k, v) in keys::under(&recovered, DB_EXPORT) {
            match keys::decode::<ExportRecord>(v) {
                Ok(x) => {
                    self.exports.insert(x.manifest_sha256.clone(), x);
                }
                // An unreadable export record covers nothing: the purge
                // keeps what only it covered (never deletes unexported).
                Err(e) => ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!(
                        "{}: export record {k:?} unreadable ({e}): the rows it covered are kept",
                        self.name
                    ),
                ),
            }
        }
        let mut unreadable = false;
        self.holds = keys::stored_holds(&recovered, DB_HOLD, |k, e| {
            // An unreadable hold may cover anything: the purge keeps
            // every row until an operator has repaired it.
            unreadable = true;
            ctx.event(
                OperatorEvent::StoreCorrupt,
                format!(
                    "{}: legal hold {k:?} unreadable ({e}): the purge keeps every row until it is repaired",
                    self.name
                ),
            )
        });
        self.holds_unreadable = unreadable;
        self.retention.start(&recovered, ctx);
        ctx.query(
            COUNT,
            Query::Count {
                prefix: DB_ROW.to_vec(),
            },
        );
    }

    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[DB_ROW, DB_READ, DB_TIME]
    }

    fn on_queried(&mut self, token: u64, result: Result<Answer, StoreError>, ctx: &mut Ctx) {
        match token {
            PURGE => {
                let step = match result {
                    Ok(answer) => {
                        let holds = ActiveHolds {
                            holds: &self.holds,
                            unreadable: self.holds_unreadable,
                            exports: self.exported_only.then_some(&self.exports),
                        };
                        // A scan answers rows; the check of a batch's rows
                        // answers values (empty: no row), one per key.
                        let rows = match answer {
                            Answer::Values(values) => values
                                .into_iter()
                                .map(|v| (Vec::new(), v.unwrap_or_default()))
                                .collect(),
                            other => other.into_rows(),
                        };
                        self.retention.on_rows(rows, &holds, ctx)
                    }
                    Err(e) => {
                        self.retention.on_read_failed(&e, ctx);
                        Step::Wait
                    }
                };
                self.purge_step(step, ctx);
            }
            COUNT => match result {
                Ok(answer) => self.rows = Some(answer.count()),
                // Only the gauge waits for it: archiving goes on.
                Err(e) => ctx.event(
                    OperatorEvent::DbStoreFailed,
                    format!("{}: cannot count the archived rows: {e}", self.name),
                ),
            },
            LAST_READ => {
                let waiting = std::mem::take(&mut self.unnumbered);
                match result {
                    Ok(answer) => {
                        let last = answer
                            .into_rows()
                            .first()
                            .and_then(|(k, _)| keys::parse_u64(DB_READ, k));
                        self.next_read = Some(last.map_or(1, |n| n + 1));
                        for (from, entry, answer) in waiting {
                            self.record(from, entry, answer, ctx);
                        }
                    }
                    // Not recorded, so not answered; the next read asks again.
                    Err(e) => {
                        let why = format!("cannot find the read trail's end: {e}");
                        for (from, entry, answer) in waiting {
                            self.unrecorded(&from, &entry.who, &why, answer, ctx);
                        }
                    }
                }
            }
            _ => {
                if let Some(Pending::Read { from, token, entry }) = self.pending.remove(&token) {
                    self.found(from, token, entry, result, ctx);
                }
            }
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let client = from.actor == ActorKind::Client;
        let allowed = match &msg {
            Msg::Archiving(ArchivingMsg::LogMessages { .. }) => from.actor == ActorKind::Archiver,
            Msg::Records(
                RecordsMsg::ArchiveSearch { .. }
                | RecordsMsg::ArchiveTrail { .. }
                | RecordsMsg::HoldPlace { .. }
                | RecordsMsg::HoldRelease { .. }
                | RecordsMsg::RetentionStatus { .. }
                | RecordsMsg::PurgeNow { .. }
                | RecordsMsg::ExportDone { .. },
            ) => client,
            _ => true,
        };
        if !authorize(allowed, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::Archiving(ArchivingMsg::LogMessages { batch, records }) => {
                self.log(from, batch, records, ctx)
            }
            Msg::Records(RecordsMsg::ArchiveSearch { token, search }) => {
                self.read(from, token, ReadWhat::Messages(search), ctx)
            }
            Msg::Records(RecordsMsg::ArchiveTrail {
                token,
                after,
                limit,
            }) => self.read(from, token, ReadWhat::Trail { after, limit }, ctx),
            Msg::Records(RecordsMsg::HoldPlace { token, hold }) => {
                self.place_hold(from, token, *hold, ctx)
            }
            Msg::Records(RecordsMsg::HoldRelease {
                token,
                name,
                reason,
            }) => self.release_hold(from, token, name, reason, ctx),
            Msg::Records(RecordsMsg::RetentionStatus { token }) => {
                self.retention_status(from, token, ctx)
            }
            Msg::Records(RecordsMsg::ExportDone { token, export }) => {
                self.record_export(from, token, *export, ctx)
            }
            Msg::Records(RecordsMsg::PurgeNow { token }) => {
                if records_principal(
                    &self.name,
                    &from,
                    token,
                    "PurgeNow",
                    identity::PURGE_STARTERS,
                    ctx,
                )
                .is_some()
                {
                    self.retention.start_now(ctx);
                    self.retention_status(from, token, ctx);
                }
            }
            msg => ignored("database", &self.name, msg.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::Archiving(ArchivingTimer::Purge) {
            let step = self.retention.on_timer(ctx);
            self.purge_step(step, ctx);
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        let mut gauges = self
            .rows
            .map(|n| vec![(Gauge::ArchivedRows, n)])
            .unwrap_or_default();
        gauges.extend(self.retention.gauges());
        gauges
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        if token == PURGE {
            let deleted = self.retention.on_written(result, ctx);
            if let Some(rows) = &mut self.rows {
                *rows = rows.saturating_sub(deleted);
            }
            return;
        }
        let txn = match self.pending.remove(&token) {
            Some(Pending::Log { from, batch }) => Txn { from, batch },
            Some(Pending::Audit { from, who, answer }) => {
                match result {
                    Ok(w) if w.inserted == 1 => ctx.send(from, answer),
                    Ok(_) => {
                        let why = "its trail entry's number was taken";
                        self.unrecorded(&from, &who, why, answer, ctx)
                    }
                    Err(e) => self.unrecorded(&from, &who, &e.to_string(), answer, ctx),
                }
                return;
            }
            Some(Pending::Hold { from, token, hold }) => {
                match result {
                    Ok(_) => {
                        self.holds.insert(hold.name.clone(), hold.clone());
                        ctx.send(
                            from,
                            RecordsMsg::HoldDone {
                                token,
                                hold: Box::new(hold),
                            },
                        );
                    }
                    Err(e) => {
                        let what = format!("legal hold {:?}", hold.name);
                        self.unwritten(from, token, &what, &e, ctx);
                    }
                }
                return;
            }
            Some(Pending::Export {
                from,
                token,
                export,
            }) => {
                match result {
                    Ok(_) => {
                        self.exports
                            .insert(export.manifest_sha256.clone(), export.clone());
                        ctx.send(
                            from,
                            RecordsMsg::ExportRecorded {
                                token,
                                export: Box::new(export),
                            },
                        );
                    }
                    Err(e) => {
                        let what = format!("export record {}", export.manifest_sha256);
                        self.unwritten(from, token, &what, &e, ctx);
                    }
                }
                return;
            }
            Some(read @ Pending::Read { .. }) => {
                self.pending.insert(token, read);
                return;
            }
            None => return,
        };
        match result {
            Ok(written) => {
                if let Some(rows) = &mut self.rows {
                    *rows += written.inserted;
                }
                ctx.send(txn.from, ArchivingMsg::Logged { batch: txn.batch });
            }
            Err(StoreError::Refused { key, reason }) => {
                // The engine refuses one row for good: name its message, so
                // that the archiver parks it and sends the rest again.
                let refused: Option<MessageId> = key
                    .strip_prefix(DB_ROW)
                    .and_then(|id| String::from_utf8(id.to_vec()).ok())
                    .map(MessageId::from);
                let error = match refused {
                    Some(id) => {
                        ctx.event(
                            OperatorEvent::DbRecordRefused,
                            format!(
                                "{}: batch {}: message {id} refused for good: {reason}",
                                self.name, txn.batch
                            ),
                        );
                        DbError::Refused {
                            ids: vec![id],
                            reason,
                        }
                    }
                    // Not a row: nothing to park, retry.
                    None => DbError::StoreFailed(reason),
                };
                ctx.send(
                    txn.from,
                    ArchivingMsg::LogFailed {
                        batch: txn.batch,
                        error,
                    },
                );
            }
            Err(e) => {
                ctx.event(
                    OperatorEvent::DbStoreFailed,
                    format!("{}: batch {}: {e}", self.name, txn.batch),
                );
                ctx.send(
                    txn.from,
                    ArchivingMsg::LogFailed {
                        batch: txn.batch,
                        error: DbError::StoreFailed(e.to_string()),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::{Principal, Role};
    use crate::core::protocol::{ArchiveRecord, ArchiveRefusal, LegalHold, PurgeRecord};
    use crate::testkit::{record as rec, Harness};

    fn db(sabotage: Sabotage) -> Harness<Database> {
        Harness::new(
            Addr::new("db1", ActorKind::Database),
            Database::new("db1", sabotage),
        )
    }

    fn arch() -> Addr {
        Addr::new("arch1", ActorKind::Archiver)
    }

    /// The archiver sends batch `batch` of the records named by `ids`.
    fn log(h: &mut Harness<Database>, batch: u64, ids: &[&str]) -> Vec<(Addr, Msg)> {
        let records = ids.iter().map(|id| rec(id)).collect();
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(batch),
                records,
            },
        )
    }

    fn stored_ids(h: &Harness<Database>) -> Vec<MessageId> {
        keys::db_rows(&h.store)
            .into_iter()
            .map(|r| r.unwrap().record.id)
            .collect()
    }

    #[test]
    fn insert_is_idempotent_across_retries_and_restarts() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        let sent = log(&mut h, 1, &["m1", "m2"]);
        assert_eq!(
            sent,
            vec![(
                arch(),
                Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(1) })
            )]
        );
        log(&mut h, 1, &["m1", "m2"]);
        let mut h2 = db(Sabotage::default());
        h2.store = h.store.clone();
        h2.start(h.store.clone());
        let sent = log(&mut h2, 2, &["m2", "m3", "m3"]);
        assert_eq!(
            sent,
            vec![(
                arch(),
                Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(2) })
            )]
        );
        assert_eq!(stored_ids(&h2), vec!["m1", "m2", "m3"]);
        // The engine counted two rows at start; one more was new.
        assert_eq!(h2.actor().rows(), Some(3));
    }

    #[test]
    fn a_row_the_engine_refuses_for_good_is_named() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::Refused {
            key: keys::key_str(DB_ROW, "bad"),
            reason: "trigger poison".into(),
        });
        let sent = log(&mut h, 1, &["m1", "bad"]);
        assert_eq!(
            sent,
            vec![(
                arch(),
                Msg::Archiving(ArchivingMsg::LogFailed {
                    batch: BatchId(1),
                    error: DbError::Refused {
                        ids: vec!["bad".into()],
                        reason: "trigger poison".into()
                    }
                })
            )]
        );
        assert!(h.events().contains(&"db_record_refused"));
        assert!(
            stored_ids(&h).is_empty(),
            "nothing of the batch was written"
        );
    }

    #[test]
    fn failed_transaction_is_refused_not_acknowledged() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = log(&mut h, 1, &["m1"]);
        assert!(matches!(
            &sent[..],
            [(
                _,
                Msg::Archiving(ArchivingMsg::LogFailed {
                    batch: BatchId(1),
                    ..
                })
            )]
        ));
        h.fail_persists = None;
        let sent = log(&mut h, 1, &["m1"]);
        assert_eq!(
            sent,
            vec![(
                arch(),
                Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(1) })
            )]
        );
        assert_eq!(stored_ids(&h), vec!["m1"]);
    }

    #[test]
    fn sabotage_drops_and_duplicates_for_checker_tests() {
        let mut h = db(Sabotage {
            db_drop_every: 3,
            db_duplicate_every: 4,
            ..Sabotage::default()
        });
        h.start(Recovered::new());
        let records = (1..=8).map(|i| rec(&format!("m{i}"))).collect();
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(1),
                records,
            },
        );
        assert_eq!(
            stored_ids(&h),
            vec!["m1", "m2", "m4", "m4", "m5", "m7", "m8", "m8"]
        );
        assert_eq!(h.actor().rows(), Some(8), "twins are rows too");
    }

    fn client(role: Role, user: &str) -> Addr {
        Addr::new(
            Principal::new(user, role).client_name("n1"),
            ActorKind::Client,
        )
    }

    fn auditor() -> Addr {
        client(Role::Auditor, "carol@corp.example")
    }

    /// A database holding `n` messages m000… of a@ to b@, every one at
    /// time 5 (many rows share one timestamp), plus `late` at time 9.
    fn seeded(n: usize) -> Harness<Database> {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        let mut records: Vec<_> = (0..n)
            .map(|i| ArchiveRecord {
                time: 5,
                ..rec(&format!("m{i:03}"))
            })
            .collect();
        records.push(ArchiveRecord {
            time: 9,
            to: "z@corp.example".into(),
            body: "Late HELLO".into(),
            ..rec("late")
        });
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(1),
                records,
            },
        );
        h
    }

    fn search(h: &mut Harness<Database>, from: Addr, s: Search) -> Msg {
        let sent = h.msg(
            from.clone(),
            RecordsMsg::ArchiveSearch {
                token: Token(7),
                search: s,
            },
        );
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, from);
        sent.into_iter().next().unwrap().1
    }

    fn trail(h: &Harness<Database>) -> Vec<(u64, ArchiveRead)> {
        keys::under(&h.store, DB_READ)
            .map(|(k, v)| {
                (
                    keys::parse_u64(DB_READ, k).unwrap(),
                    keys::decode(v).unwrap(),
                )
            })
            .collect()
    }

    fn all(limit: u32) -> Search {
        Search {
            limit,
            ..Search::default()
        }
    }

    #[test]
    fn an_auditor_searches_and_the_read_is_recorded_before_the_answer() {
        let mut h = seeded(3);
        h.now = 1_000;
        let s = Search {
            users: vec!["z@corp.example".into()],
            text: Some("hello".into()),
            ..all(10)
        };
        let Msg::Records(RecordsMsg::ArchiveFound { token, rows, next }) =
            search(&mut h, auditor(), s.clone())
        else {
            panic!("found")
        };
        assert_eq!((token, next), (Token(7), None));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].record.id, "late");
        assert_eq!(
            trail(&h),
            vec![(
                1,
                ArchiveRead {
                    at: 1_000,
                    who: "auditor:carol@corp.example".into(),
                    what: ReadWhat::Messages(s),
                    rows: 1,
                    refused: None,
                }
            )]
        );
        assert!(h.events().is_empty(), "{:?}", h.events());
    }

    #[test]
    fn users_and_operators_may_not_read_the_archive_not_even_their_own() {
        let mut h = seeded(3);
        let own = Search {
            users: vec!["a@corp.example".into()],
            ..all(10)
        };
        let anonymous = Addr::new("client-7", ActorKind::Client);
        for from in [
            client(Role::User, "a@corp.example"),
            client(Role::Operator, "ops"),
            anonymous,
        ] {
            h.clear_events();
            let Msg::Records(RecordsMsg::ArchiveRefused {
                token: Token(7),
                refusal,
            }) = search(&mut h, from.clone(), own.clone())
            else {
                panic!("refused")
            };
            assert!(
                matches!(refusal, ArchiveRefusal::Forbidden(_)),
                "{refusal:?}"
            );
            assert_eq!(h.events(), ["identity_refused"], "{from}");
        }
        // Each refusal is in the trail, with no rows.
        let reads = trail(&h);
        let who: Vec<&str> = reads.iter().map(|(_, r)| r.who.as_str()).collect();
        assert_eq!(who, ["user:a@corp.example", "operator:ops", "client-7"]);
        assert!(reads
            .iter()
            .all(|(_, r)| r.rows == 0 && r.refused.is_some()));
        assert!(reads[0].1.refused.as_ref().unwrap().contains("auditor"));
        // The trail too is for auditors only.
        let sent = h.msg(
            client(Role::User, "a@corp.example"),
            Msg::Records(RecordsMsg::ArchiveTrail {
                token: Token(3),
                after: None,
                limit: 10,
            }),
        );
        assert!(matches!(
            &sent[..],
            [(
                _,
                Msg::Records(RecordsMsg::ArchiveRefused {
                    token: Token(3),
                    refusal: ArchiveRefusal::Forbidden(_)
                })
            )]
        ));
    }

    #[test]
    fn a_read_that_cannot_be_recorded_is_refused_not_answered() {
        let mut h = seeded(3);
        h.fail_persists = Some(StoreError::NoSpace);
        let answer = search(&mut h, auditor(), all(10));
        assert!(
            matches!(refusal(&answer), Some(ArchiveRefusal::AuditFailed(_))),
            "{answer:?}"
        );
        assert!(h.events().contains(&"db_store_failed"));
        assert!(trail(&h).is_empty());
        // Once the trail takes writes again, the same read is answered
        // (under the next number: a number is never used twice).
        h.fail_persists = None;
        let Msg::Records(RecordsMsg::ArchiveFound { rows, .. }) =
            search(&mut h, auditor(), all(10))
        else {
            panic!("found")
        };
        assert_eq!(rows.len(), 4);
        assert_eq!(trail(&h).len(), 1);
    }

    #[test]
    fn an_engine_that_cannot_answer_is_a_recorded_refusal() {
        let mut h = seeded(3);
        // Before the first read the trail's end is not known: not
        // recorded, so not answered.
        h.fail_queries = Some(StoreError::Io("gone".into()));
        let answer = search(&mut h, auditor(), all(10));
        assert!(
            matches!(refusal(&answer), Some(ArchiveRefusal::StoreFailed(_))),
            "{answer:?}"
        );
        assert!(trail(&h).is_empty());
        h.fail_queries = None;
        assert!(matches!(
            search(&mut h, auditor(), all(10)),
            Msg::Records(RecordsMsg::ArchiveFound { .. })
        ));
        h.fail_queries = Some(StoreError::Io("gone".into()));
        let answer = search(&mut h, auditor(), all(10));
        assert!(
            matches!(refusal(&answer), Some(ArchiveRefusal::StoreFailed(_))),
            "{answer:?}"
        );
        let reads = trail(&h);
        assert_eq!(reads.len(), 2);
        assert!(reads[1].1.refused.as_ref().unwrap().contains("gone"));
    }

    #[test]
    fn pages_cover_every_row_once_when_many_rows_share_a_timestamp() {
        let mut h = seeded(250);
        let mut s = all(7);
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let Msg::Records(RecordsMsg::ArchiveFound { rows, next, .. }) =
                search(&mut h, auditor(), s.clone())
            else {
                panic!("found")
            };
            assert!(rows.len() <= 7);
            seen.extend(rows.into_iter().map(|r| r.record.id));
            pages += 1;
            match next {
                Some(after) => s.after = Some(after),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..250).map(|i| format!("m{i:03}")).collect();
        expected.push("late".into());
        assert_eq!(seen, expected, "every row once, in (time, id) order");
        assert_eq!(pages, 36);
        assert_eq!(trail(&h).len(), 36, "every page is a recorded read");
    }

    #[test]
    fn an_answer_is_bounded_in_bytes_but_holds_at_least_one_row() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        let big = "x".repeat(3 << 20);
        let records = (0..5)
            .map(|i| ArchiveRecord {
                body: big.clone(),
                ..rec(&format!("b{i}"))
            })
            .collect();
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(1),
                records,
            },
        );
        let mut s = all(SEARCH_PAGE_MAX);
        let mut sizes = Vec::new();
        loop {
            let Msg::Records(RecordsMsg::ArchiveFound { rows, next, .. }) =
                search(&mut h, auditor(), s.clone())
            else {
                panic!("found")
            };
            sizes.push(rows.len());
            let bytes: u64 = rows.iter().map(row_bytes).sum();
            assert!(rows.len() == 1 || bytes <= SEARCH_MAX_BYTES, "{bytes}");
            match next {
                Some(after) => s.after = Some(after),
                None => break,
            }
        }
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn the_trail_is_listed_in_pages_and_numbered_across_restarts() {
        let mut h = seeded(2);
        search(&mut h, auditor(), all(1));
        search(&mut h, client(Role::User, "b@corp.example"), all(1));
        // A restart: numbering goes on after the last entry.
        let mut h2 = db(Sabotage::default());
        h2.store = h.store.clone();
        h2.start(without_rows(&h.store));
        let sent = h2.msg(
            auditor(),
            RecordsMsg::ArchiveTrail {
                token: Token(4),
                after: None,
                limit: 1,
            },
        );
        let [(
            _,
            Msg::Records(RecordsMsg::ArchiveReads {
                token: Token(4),
                reads,
                recorded,
                next,
            }),
        )] = &sent[..]
        else {
            panic!("{sent:?}")
        };
        assert_eq!(
            (reads.len(), reads[0].0, *recorded, *next),
            (1, 1, 3, Some(1))
        );
        let sent = h2.msg(
            auditor(),
            RecordsMsg::ArchiveTrail {
                token: Token(5),
                after: Some(1),
                limit: 10,
            },
        );
        let [(
            _,
            Msg::Records(RecordsMsg::ArchiveReads {
                reads,
                recorded,
                next,
                ..
            }),
        )] = &sent[..]
        else {
            panic!("{sent:?}")
        };
        let seqs: Vec<u64> = reads.iter().map(|(n, _)| *n).collect();
        assert_eq!((seqs, *recorded, *next), (vec![2, 3], 4, None));
        assert!(reads[0].1.refused.is_some(), "the user's refused read");
        assert_eq!(
            reads[1].1.what,
            ReadWhat::Trail {
                after: None,
                limit: 1
            }
        );
    }

    #[test]
    fn only_clients_read_and_only_the_archiver_writes() {
        let mut h = seeded(1);
        let sent = h.msg(
            auditor(),
            ArchivingMsg::LogMessages {
                batch: BatchId(9),
                records: vec![rec("forged")],
            },
        );
        assert!(sent.is_empty());
        assert_eq!(h.events(), ["unauthorized_sender"]);
        let sent = h.msg(
            arch(),
            RecordsMsg::ArchiveSearch {
                token: Token(1),
                search: all(1),
            },
        );
        assert!(sent.is_empty());
        assert!(trail(&h).is_empty());
    }

    fn without_rows(store: &Recovered) -> Recovered {
        crate::core::engine::without_prefixes(store.clone(), &[DB_ROW, DB_READ])
    }

    const DAY: u64 = 86_400_000;
    const HOUR: u64 = 3_600_000;

    /// A database keeping one day, purging at 02:00 two rows at a time.
    fn purging() -> Harness<Database> {
        let settings = Settings {
            archive_keep_days: 1,
            archive_purge_hour: 2,
            archive_purge_batch: 2,
            archive_purge_pause: 100,
            ..Settings::default()
        };
        Harness::new(
            Addr::new("db1", ActorKind::Database),
            Database::new("db1", Sabotage::default()).with_settings(&settings),
        )
    }

    fn log_at(h: &mut Harness<Database>, batch: u64, rows: &[(&str, u64)]) {
        let batch = BatchId(batch);
        let records = rows
            .iter()
            .map(|(id, time)| ArchiveRecord {
                time: *time,
                ..rec(id)
            })
            .collect();
        let sent = h.msg(arch(), ArchivingMsg::LogMessages { batch, records });
        assert_eq!(
            sent,
            vec![(arch(), Msg::Archiving(ArchivingMsg::Logged { batch }))]
        );
    }

    /// Fires the purge timer until the purge has finished (or `max` times).
    fn purge(h: &mut Harness<Database>, max: usize) -> usize {
        let mut fired = 0;
        while fired < max {
            h.fire(ArchivingTimer::Purge);
            fired += 1;
            if h.events().contains(&"archive_purged") {
                break;
            }
        }
        fired
    }

    fn gauge(h: &Harness<Database>, g: Gauge) -> u64 {
        h.actor()
            .gauges()
            .into_iter()
            .find(|(k, _)| *k == g)
            .unwrap()
            .1
    }

    #[test]
    fn the_purge_deletes_rows_past_the_window_in_batches_and_keeps_the_rest() {
        let mut h = purging();
        h.start(Recovered::new());
        // The first purge is set for 02:00.
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(2 * HOUR));
        log_at(
            &mut h,
            1,
            &[
                ("old1", HOUR),
                ("old2", 90 * 60_000),
                ("old3", 3 * HOUR / 2 + 1),
            ],
        );
        log_at(&mut h, 2, &[("new1", DAY + 3 * HOUR), ("edge", 2 * HOUR)]);
        // 02:00 on day 0: nothing is a day old yet.
        purge(&mut h, 5);
        assert_eq!(stored_ids(&h).len(), 5);
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 0);
        h.clear_events();
        // 02:00 on day 1: the cutoff is 02:00 on day 0; three rows go, in
        // two transactions of at most two rows, the one at the cutoff stays.
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(DAY + 2 * HOUR));
        let fired = purge(&mut h, 10);
        assert_eq!(fired, 3, "two batches, then the read that meets the window");
        assert_eq!(stored_ids(&h), vec!["edge", "new1"]);
        assert!(
            !h.store
                .keys()
                .any(|k| k.starts_with(DB_TIME) && k.ends_with(b"old1")),
            "the index entry goes with its row"
        );
        assert_eq!(h.actor().rows(), Some(2));
        assert_eq!(gauge(&h, Gauge::ArchivePurged), 3);
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 2 * HOUR);
        assert_eq!(gauge(&h, Gauge::ArchiveLastPurgeAt), h.now);
        assert_eq!(h.events(), vec!["archive_purged"]);
        // The next purge is set for 02:00 the day after.
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(2 * DAY + 2 * HOUR));
    }

    #[test]
    fn a_failed_purge_transaction_is_said_and_tried_again() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(&mut h, 1, &[("old1", HOUR), ("old2", HOUR + 1)]);
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        h.fail_persists = Some(StoreError::Io("disk gone".into()));
        h.fire(ArchivingTimer::Purge);
        assert_eq!(h.events(), vec!["archive_purge_failed"]);
        assert_eq!(stored_ids(&h).len(), 2, "nothing deleted");
        h.fail_persists = None;
        h.clear_events();
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        assert_eq!(h.events(), vec!["archive_purged"]);
    }

    #[test]
    fn a_purge_cut_off_by_a_crash_resumes_at_start_with_its_cutoff() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(
            &mut h,
            1,
            &[("old1", HOUR), ("old2", HOUR + 1), ("old3", HOUR + 2)],
        );
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        h.fire(ArchivingTimer::Purge);
        assert_eq!(stored_ids(&h), vec!["old3"], "one batch of two deleted");
        let record: retention::PurgeRecord =
            keys::decode(&h.store[&crate::core::store_keys::DB_PURGE.to_vec()]).unwrap();
        assert_eq!(
            (record.cutoff, record.deleted, record.finished_at),
            (2 * HOUR, 2, None)
        );
        // A crash; an hour later the core starts again, and goes on at once.
        h.now += HOUR;
        h.start(h.store.clone());
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(h.now));
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        let record: retention::PurgeRecord =
            keys::decode(&h.store[&crate::core::store_keys::DB_PURGE.to_vec()]).unwrap();
        assert_eq!((record.cutoff, record.deleted), (2 * HOUR, 3));
        assert_eq!(record.finished_at, Some(h.now));
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 2 * HOUR);
    }

    #[test]
    fn a_purge_whose_reads_fail_is_said_and_tried_again_the_same_day() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(&mut h, 1, &[("old1", HOUR), ("old2", HOUR + 1)]);
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        // The engine is down at the purge hour.
        h.fail_queries = Some(StoreError::Io("database down".into()));
        h.fire(ArchivingTimer::Purge);
        assert_eq!(h.events(), vec!["archive_purge_failed"]);
        let retry = h
            .timer(Timer::Archiving(ArchivingTimer::Purge))
            .expect("tried again");
        assert!(retry < 2 * DAY, "not put off to the next day: {retry}");
        // Back: the same purge (cutoff of 02:00) deletes both rows.
        h.fail_queries = None;
        h.clear_events();
        h.now = retry;
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 2 * HOUR);
        assert_eq!(h.events(), vec!["archive_purged"]);
    }

    #[test]
    fn a_purge_hour_missed_while_down_is_made_up_at_start_and_said() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(&mut h, 1, &[("day0", HOUR), ("day1", DAY + HOUR)]);
        // Day 1's purge runs at 02:00 (cutoff day 0 02:00).
        h.now = DAY + 2 * HOUR;
        purge(&mut h, 5);
        assert_eq!(stored_ids(&h), vec!["day1"]);
        h.clear_events();
        // Down from day 2 01:00 to day 2 01:30: no hour passed, nothing
        // is late.
        h.now = 2 * DAY + 90 * 60_000;
        h.start(h.store.clone());
        assert!(h.events().is_empty(), "{:?}", h.events());
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(2 * DAY + 2 * HOUR));
        // Down again over day 2's hour, back at 05:00: the purge runs at
        // once, with the cutoff of now, and says it is late.
        h.now = 2 * DAY + 5 * HOUR;
        h.start(h.store.clone());
        assert_eq!(h.events(), vec!["archive_purge_late"]);
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(h.now));
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty(), "day 1's row is past the window");
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), DAY + 5 * HOUR);
        // Then the daily hour again.
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(3 * DAY + 2 * HOUR));
    }

    /// `who` asks with `token` that `hold` be placed: what is sent.
    fn place(
        h: &mut Harness<Database>,
        who: Addr,
        token: u64,
        hold: LegalHold,
    ) -> Vec<(Addr, Msg)> {
        let hold = Box::new(hold);
        h.msg(
            who,
            RecordsMsg::HoldPlace {
                token: Token(token),
                hold,
            },
        )
    }

    /// Why `m` refuses a request, if it is a refusal.
    fn refusal(m: &Msg) -> Option<&ArchiveRefusal> {
        match m {
            Msg::Records(RecordsMsg::ArchiveRefused { refusal, .. }) => Some(refusal),
            _ => None,
        }
    }

    fn hold(name: &str, users: &[&str]) -> LegalHold {
        LegalHold {
            name: name.into(),
            users: users.iter().map(|u| (*u).into()).collect(),
            reason: "litigation 2026-17".into(),
            ..LegalHold::default()
        }
    }

    #[test]
    fn held_rows_survive_the_purge_until_the_hold_is_released() {
        let mut h = purging();
        h.start(Recovered::new());
        let mut held = rec("held1");
        held.from = "carol@corp.example".into();
        held.time = HOUR;
        let records = vec![
            held,
            ArchiveRecord {
                time: HOUR + 1,
                ..rec("free1")
            },
        ];
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(1),
                records,
            },
        );
        let sent = place(
            &mut h,
            auditor(),
            3,
            hold("case-17", &["carol@corp.example"]),
        );
        let Msg::Records(RecordsMsg::HoldDone {
            token: Token(3),
            hold: placed,
        }) = &sent[0].1
        else {
            panic!("{sent:?}")
        };
        assert_eq!(placed.placed_by, "auditor:carol@corp.example");
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 5);
        assert_eq!(stored_ids(&h), vec!["held1"], "the held row survives");
        // The hold outlives a restart; released, its rows go at the next
        // purge, and it stays on record.
        h.start(h.store.clone());
        let sent = h.msg(
            auditor(),
            RecordsMsg::HoldRelease {
                token: Token(4),
                name: "case-17".into(),
                reason: "settled".into(),
            },
        );
        assert!(
            matches!(&sent[0].1, Msg::Records(RecordsMsg::HoldDone { hold, .. }) if hold.released.is_some())
        );
        h.clear_events();
        h.now += DAY;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        let sent = h.msg(auditor(), RecordsMsg::RetentionStatus { token: Token(5) });
        let Msg::Records(RecordsMsg::RetentionState {
            keep_days,
            holds,
            purge,
            ..
        }) = &sent[0].1
        else {
            panic!("{sent:?}")
        };
        assert_eq!(*keep_days, 1);
        assert_eq!(holds.len(), 1, "a released hold stays on record");
        assert_eq!(holds[0].released.as_ref().unwrap().reason, "settled");
        assert_eq!(purge.as_ref().unwrap().deleted, 1);
    }

    #[test]
    fn only_auditors_place_holds_and_only_sane_ones() {
        let mut h = purging();
        h.start(Recovered::new());
        let user = Addr::new("user:bob@corp.example/1", ActorKind::Client);
        let operator = Addr::new("operator:olga@corp.example/1", ActorKind::Client);
        for who in [user.clone(), operator.clone()] {
            let sent = place(&mut h, who, 1, hold("x", &["a@corp.example"]));
            assert!(matches!(
                refusal(&sent[0].1),
                Some(ArchiveRefusal::Forbidden(_))
            ));
        }
        assert!(h.events().iter().all(|e| *e == "identity_refused"));
        // An operator may see the retention state, a user may not.
        let sent = h.msg(operator, RecordsMsg::RetentionStatus { token: Token(2) });
        assert!(matches!(
            &sent[0].1,
            Msg::Records(RecordsMsg::RetentionState { .. })
        ));
        let sent = h.msg(user, RecordsMsg::RetentionStatus { token: Token(2) });
        assert!(refusal(&sent[0].1).is_some());
        // No reason, no users, or twice: refused.
        let mut no_reason = hold("x", &["a@corp.example"]);
        no_reason.reason.clear();
        for bad in [no_reason, hold("x", &[])] {
            let sent = place(&mut h, auditor(), 3, bad);
            assert!(matches!(
                refusal(&sent[0].1),
                Some(ArchiveRefusal::Invalid(_))
            ));
        }
        place(&mut h, auditor(), 4, hold("x", &["a@corp.example"]));
        let sent = place(&mut h, auditor(), 5, hold("x", &["a@corp.example"]));
        assert!(refusal(&sent[0].1).is_some());
    }

    #[test]
    fn an_unreadable_hold_keeps_every_row() {
        let mut h = purging();
        h.store
            .insert(keys::key_str(DB_HOLD, "broken"), vec![0xff, 0xff]);
        h.start(h.store.clone());
        log_at(&mut h, 1, &[("old1", HOUR)]);
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 5);
        assert_eq!(stored_ids(&h), vec!["old1"]);
        assert!(h.events().contains(&"store_corrupt"));
    }

    /// A dead letter resent starts a new life with a new time: the archive
    /// may get the same message twice, at two times. The row keeps the
    /// time it was first archived with; an index entry at the other time
    /// must never delete it early.
    #[test]
    fn an_index_entry_at_another_time_than_its_row_deletes_nothing_early() {
        let mut h = purging();
        h.start(Recovered::new());
        // The resent copy (new time, inside the window) arrives first; the
        // original (old time) second: its insert is skipped, its index
        // entry stays.
        log_at(&mut h, 1, &[("m1", DAY + 3 * HOUR)]);
        log_at(&mut h, 2, &[("m1", HOUR)]);
        assert_eq!(
            h.store.keys().filter(|k| k.starts_with(DB_TIME)).count(),
            2,
            "two index entries for one row"
        );
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 5);
        assert_eq!(
            stored_ids(&h),
            vec!["m1"],
            "its own time is inside the window"
        );
        assert_eq!(
            h.store.keys().filter(|k| k.starts_with(DB_TIME)).count(),
            1,
            "the stray entry is gone, the row's own stays"
        );
        assert_eq!(gauge(&h, Gauge::ArchivePurged), 0);
    }

    /// A database keeping one day and purging only exported rows.
    fn exported_only() -> Harness<Database> {
        let settings = Settings {
            archive_keep_days: 1,
            archive_purge_hour: 2,
            archive_purge_batch: 2,
            archive_purge_pause: 100,
            purge_exported_only: true,
            ..Settings::default()
        };
        Harness::new(
            Addr::new("db1", ActorKind::Database),
            Database::new("db1", Sabotage::default()).with_settings(&settings),
        )
    }

    fn export(users: &[&str], since: Option<u64>, until: Option<u64>, as_of: u64) -> ExportRecord {
        let sha = format!(
            "{:064x}",
            as_of ^ since.unwrap_or(7) ^ (users.len() as u64) << 40
        );
        ExportRecord {
            manifest_sha256: sha,
            users: users.iter().map(|u| (*u).into()).collect(),
            since,
            until,
            as_of,
            rows: 1,
            format: "jsonl".into(),
            ..ExportRecord::default()
        }
    }

    fn report(h: &mut Harness<Database>, x: ExportRecord) -> Msg {
        let sent = h.msg(
            auditor(),
            RecordsMsg::ExportDone {
                token: Token(8),
                export: Box::new(x),
            },
        );
        assert_eq!(sent.len(), 1, "{sent:?}");
        sent.into_iter().next().unwrap().1
    }

    fn status(h: &mut Harness<Database>) -> (Option<PurgeRecord>, Vec<ExportRecord>, bool) {
        let sent = h.msg(auditor(), RecordsMsg::RetentionStatus { token: Token(9) });
        let Msg::Records(RecordsMsg::RetentionState {
            purge,
            exports,
            exported_only,
            ..
        }) = sent.into_iter().next().unwrap().1
        else {
            panic!("not a state")
        };
        (purge.map(|p| *p), exports, exported_only)
    }

    #[test]
    fn with_purge_exported_only_the_purge_deletes_only_rows_an_export_covered() {
        let mut h = exported_only();
        h.start(Recovered::new());
        let row = |id: &str, from: &str, to: &str, time: u64| ArchiveRecord {
            from: from.into(),
            to: to.into(),
            time,
            ..rec(id)
        };
        // Archived at time 0 (the harness's clock).
        let records = vec![
            // Covered: carol as sender, in range.
            row("sent", "carol@corp.example", "dan@corp.example", HOUR),
            // Covered: carol as recipient.
            row("got", "erin@corp.example", "carol@corp.example", HOUR + 1),
            // Not covered: nobody the export named.
            row("other", "erin@corp.example", "dan@corp.example", HOUR + 2),
            // Not covered: carol's, but before the export's range.
            row("early", "carol@corp.example", "dan@corp.example", 10),
            // Not covered: carol's, in range, but at the range's end.
            row("edge", "carol@corp.example", "dan@corp.example", 2 * HOUR),
        ];
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(1),
                records,
            },
        );
        h.now = 5;
        let x = export(&["carol@corp.example"], Some(HOUR), Some(2 * HOUR), 5);
        let Msg::Records(RecordsMsg::ExportRecorded {
            export: recorded, ..
        }) = report(&mut h, x.clone())
        else {
            panic!("not recorded")
        };
        assert_eq!(recorded.recorded_by, "auditor:carol@corp.example");
        // Archived after the export began: its cursor may have passed it.
        h.now = 6;
        h.msg(
            arch(),
            ArchivingMsg::LogMessages {
                batch: BatchId(2),
                records: vec![row(
                    "late",
                    "carol@corp.example",
                    "dan@corp.example",
                    HOUR + 3,
                )],
            },
        );
        h.now = DAY + 3 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 10);
        assert_eq!(stored_ids(&h), vec!["early", "edge", "late", "other"]);
        let (record, exports, on) = status(&mut h);
        let record = record.unwrap();
        assert_eq!((record.deleted, record.unexported, record.held), (2, 4, 0));
        assert!(on);
        assert_eq!(exports.len(), 1);
        // The record survives a restart (and is not a row: never purged);
        // an export of every user covers the rest that it read.
        h.start(h.store.clone());
        assert_eq!(status(&mut h).1.len(), 1);
        let now = h.now;
        report(&mut h, export(&[], None, None, now));
        h.clear_events();
        h.now += DAY;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 10);
        assert!(stored_ids(&h).is_empty());
        assert_eq!(status(&mut h).1.len(), 2, "export records are never purged");
    }

    #[test]
    fn without_purge_exported_only_exports_change_nothing() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(&mut h, 1, &[("old1", HOUR)]);
        h.now = DAY + 2 * HOUR;
        h.set_timer(ArchivingTimer::Purge, h.now);
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        assert_eq!(status(&mut h).0.unwrap().unexported, 0);
        assert!(!status(&mut h).2);
    }

    #[test]
    fn export_records_are_checked_and_idempotent() {
        let mut h = exported_only();
        h.start(Recovered::new());
        h.now = 100;
        // A user may not report an export.
        let user = Addr::new("user:bob@corp.example/1", ActorKind::Client);
        let sent = h.msg(
            user,
            RecordsMsg::ExportDone {
                token: Token(1),
                export: Box::new(export(&[], None, None, 1)),
            },
        );
        assert!(matches!(
            refusal(&sent[0].1),
            Some(ArchiveRefusal::Forbidden(_))
        ));
        // Not a SHA-256, or begun in the future: refused.
        let mut bad = export(&[], None, None, 1);
        bad.manifest_sha256 = "abc".into();
        let future = export(&[], None, None, 101);
        for x in [bad, future] {
            assert!(matches!(
                refusal(&report(&mut h, x)),
                Some(ArchiveRefusal::Invalid(_))
            ));
        }
        let x = export(&["a@corp.example"], None, None, 50);
        let Msg::Records(RecordsMsg::ExportRecorded { export: first, .. }) =
            report(&mut h, x.clone())
        else {
            panic!()
        };
        h.now = 200;
        let Msg::Records(RecordsMsg::ExportRecorded { export: again, .. }) = report(&mut h, x)
        else {
            panic!()
        };
        assert_eq!(
            again.recorded_at, first.recorded_at,
            "the first record stands"
        );
        assert_eq!(status(&mut h).1.len(), 1);
        // A store failure is a refusal, not a record.
        h.fail_persists = Some(StoreError::Io("disk gone".into()));
        assert!(matches!(
            refusal(&report(&mut h, export(&["z@corp.example"], None, None, 60))),
            Some(ArchiveRefusal::StoreFailed(_))
        ));
        assert_eq!(status(&mut h).1.len(), 1);
    }

    #[test]
    fn a_purge_record_written_before_unexported_was_counted_is_read() {
        #[derive(serde::Serialize)]
        struct Old {
            cutoff: u64,
            started_at: u64,
            finished_at: Option<u64>,
            deleted: u64,
            held: u64,
            range: Option<(u64, u64)>,
        }
        let old = Old {
            cutoff: 2 * HOUR,
            started_at: DAY,
            finished_at: None,
            deleted: 3,
            held: 1,
            range: Some((1, 2)),
        };
        let mut store = Recovered::new();
        store.insert(
            crate::core::store_keys::DB_PURGE.to_vec(),
            keys::encode(&old),
        );
        let mut h = purging();
        h.now = DAY + HOUR;
        h.start(store);
        // Cut off by a crash: it resumes at once with its counts.
        assert_eq!(h.timer(ArchivingTimer::Purge), Some(h.now));
        let (record, _, _) = status(&mut h);
        assert_eq!(record.unwrap().deleted, 3);
        assert!(h.events().is_empty(), "{:?}", h.events());
    }

    #[test]
    fn a_search_names_several_users_up_to_a_bound() {
        let mut h = seeded(3);
        let ids = |m: Msg| match m {
            Msg::Records(RecordsMsg::ArchiveFound { rows, .. }) => {
                rows.into_iter().map(|r| r.record.id).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        let users = |u: &[&str]| Search {
            users: u.iter().map(|u| (*u).into()).collect(),
            ..all(10)
        };
        let found = search(&mut h, auditor(), users(&["z@corp.example", "nobody@x"]));
        assert_eq!(ids(found), ["late"]);
        let found = search(
            &mut h,
            auditor(),
            users(&["b@corp.example", "z@corp.example"]),
        );
        assert_eq!(ids(found), ["m000", "m001", "m002", "late"]);
        let many: Vec<crate::core::ids::UserId> = (0..=SEARCH_USERS_MAX)
            .map(|i| format!("u{i}@x").into())
            .collect();
        let refused = search(
            &mut h,
            auditor(),
            Search {
                users: many,
                ..all(10)
            },
        );
        assert!(
            matches!(
                refused,
                Msg::Records(RecordsMsg::ArchiveRefused {
                    refusal: ArchiveRefusal::Invalid(_),
                    ..
                })
            ),
            "{refused:?}"
        );
        let last = trail(&h).pop().unwrap().1;
        assert!(last.refused.is_some(), "the refused search is in the trail");
    }

    #[test]
    fn a_search_of_one_user_in_the_trail_reads_as_before() {
        // The trail's entries written when a search named one optional
        // user decode as a list of none or one.
        #[derive(serde::Serialize)]
        struct OldSearch {
            user: Option<String>,
            id: Option<String>,
            since: Option<u64>,
            until: Option<u64>,
            text: Option<String>,
            after: Option<SearchAfter>,
            limit: u32,
        }
        for user in [None, Some("a@corp.example".to_string())] {
            let old = OldSearch {
                user: user.clone(),
                id: None,
                since: Some(3),
                until: None,
                text: Some("hi".into()),
                after: None,
                limit: 10,
            };
            let new: Search = keys::decode_exact(&keys::encode(&old)).unwrap();
            assert_eq!(new.users, user.into_iter().collect::<Vec<_>>());
            assert_eq!(
                (new.since, new.text.as_deref(), new.limit),
                (Some(3), Some("hi"), 10)
            );
        }
    }
}

//! Legal holds and retention in the chat store.
//!
//! *Holds.* An auditor's [`LegalHold`] names users, rooms or both; a post
//! is held while an active hold names its room or its author and its own
//! time is in the hold's range. The chat store keeps every hold (active
//! and released: they are few) under its own key prefix ([`CHAT_HOLD`]),
//! read at start; a hold that cannot be read makes every clear and purge
//! keep every row, because an unreadable hold might cover anything. Placing
//! and releasing a hold is a record of its own: a compliance event
//! (`hold_placed`, `hold_released`) in the same write.
//!
//! *Retention.* Once a day at `chat_purge_hour` (UTC) the store purges the
//! posts older than their room's window (`chat_keep_days`, or the room
//! category's `chat_retention` entry; 0 keeps for ever). A purge is, per
//! room, a clear with a `before` time: the durable [`ChatPurgeRecord`]
//! written at its start names each room's cutoff and last number, and from
//! that write on members never read a post it covers. The rows are then
//! deleted [`PURGE_BATCH`] at a time, [`PURGE_PAUSE`] apart, each post's
//! own time checked against its room's cutoff, held posts kept (and still
//! hidden); the record, written with every batch, says how far it got, so
//! a restart resumes it. Numbers are never given out again: a room's last
//! number never goes below the record's `through`.

use super::{Ask, ChatStore, Clear, Write, PURGE_BATCH};
use crate::compliance::service::NewEvent;
use crate::core::actor::{
    records_invalid, records_principal, Ctx, Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::engine::Query;
use crate::core::identity;
use crate::core::ids::{Addr, Millis, Token, UserId};
use crate::core::operator::OperatorEvent;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::chat::{Post, RoomId};
use crate::core::protocol::compliance::EventKind;
use crate::core::protocol::{ChatPurgeRecord, LegalHold, Msg, RecordsMsg, RoomPurge};
use crate::core::settings::Settings;
use crate::core::store_keys;
use std::collections::BTreeMap;

/// Key prefix of a legal hold: `l/<name>` → [`LegalHold`].
pub const CHAT_HOLD: &[u8] = b"l/";
/// Key of the retention purge's record ([`ChatPurgeRecord`]).
pub const CHAT_PURGE: &[u8] = b"q/purge";
/// The pause between two retention batches, so that posts keep their
/// latency while a large purge runs.
pub const PURGE_PAUSE: Millis = 100;
/// A batch that failed is tried again after this.
const RETRY: Millis = 10_000;
use crate::core::daily::{self, DAY, HOUR};
/// Who a retention purge's compliance events name.
pub const RETENTION: &str = "retention";

/// Sabotages of the purge, for the checkers to find (production never
/// sets them).
#[derive(Clone, Copy, Debug, Default)]
pub struct PurgeSabotage {
    pub ignores_window: bool,
    pub stops_early: bool,
}

/// The retention policy: days per room (0: for ever).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_days: u64,
    pub hour: u64,
    pub by_category: BTreeMap<String, u64>,
}

impl Policy {
    pub fn new(settings: &Settings) -> Policy {
        Policy {
            keep_days: settings.chat_keep_days,
            hour: settings.chat_purge_hour.min(23),
            by_category: settings.chat_retention.clone(),
        }
    }

    /// Whether any room may have a window.
    pub fn any(&self) -> bool {
        self.keep_days > 0 || self.by_category.values().any(|d| *d > 0)
    }

    /// The window of a room of `category`, in days (0: kept for ever).
    pub fn days(&self, category: &str) -> u64 {
        self.by_category
            .get(category)
            .copied()
            .unwrap_or(self.keep_days)
    }
}

impl ChatStore {
    /// Purges by the chat retention settings of `settings`.
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.policy = Policy::new(settings);
        self
    }

    /// Whether a legal hold keeps this post's row through every clear and
    /// purge: the one place that asks the holds. A held row is counted in
    /// the purge's `held`, kept, and still never shown to members.
    pub fn held(&self, room: &str, _seq: u64, post: &Post) -> bool {
        self.holds_unreadable
            || self
                .holds
                .values()
                .any(|h| h.covers_post(room, &post.author, post.at))
    }

    /// Whether the retention purge covers the post: never shown again.
    pub(super) fn expired(&self, room: &str, seq: u64, post: &Post) -> bool {
        self.purge
            .as_ref()
            .and_then(|p| p.rooms.get(room))
            .is_some_and(|r| seq <= r.through && post.at < r.cutoff)
    }

    /// The room's last number when the retention purge began: given out.
    pub(super) fn purge_floor(&self, room: &str) -> u64 {
        self.purge
            .as_ref()
            .and_then(|p| p.rooms.get(room))
            .map_or(0, |r| r.through)
    }

    /// Reads the holds and the purge's record; resumes a purge a restart
    /// cut off, or waits for the next purge hour.
    pub(super) fn start_retention(&mut self, recovered: &Recovered, ctx: &mut Ctx) {
        self.holds.clear();
        self.holds_unreadable = false;
        let mut unreadable = false;
        self.holds = store_keys::stored_holds(recovered, CHAT_HOLD, |k, e| {
            unreadable = true;
            ctx.event(
                OperatorEvent::StoreCorrupt,
                format!(
                    "{}: legal hold {k:?} unreadable ({e}): clears and purges keep every post until it is repaired",
                    self.name
                ),
            );
        });
        self.holds_unreadable = unreadable;
        self.purge = None;
        match recovered
            .get(CHAT_PURGE)
            .map(|v| store_keys::decode::<ChatPurgeRecord>(v))
        {
            Some(Ok(r)) => {
                let running = r.finished_at.is_none();
                let started_at = r.started_at;
                self.last_purge_at = r.finished_at.unwrap_or(0);
                self.purge = Some(r);
                if running {
                    // Cut off by a restart: it goes on at once.
                    return ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), 0);
                }
                let hour = self.policy.hour * HOUR;
                let due = daily::missed(started_at, ctx.now(), hour);
                if let Some(due) = due.filter(|_| self.policy.any()) {
                    // Waiting for tomorrow's hour would keep a day of posts
                    // past the window, and say nothing.
                    ctx.event(
                        OperatorEvent::ChatPurgeLate,
                        format!(
                            "{}: the chat purge due at {due} ms ({:02}:00 UTC) did not run, the node was down; it runs now",
                            self.name, self.policy.hour
                        ),
                    );
                    return ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), 0);
                }
            }
            // Without the record the rooms' cutoffs are unknown: the next
            // purge runs afresh (it deletes what this one would have).
            Some(Err(e)) => ctx.event(
                OperatorEvent::StoreCorrupt,
                format!(
                    "{}: the chat purge's record is unreadable ({e}): the next purge runs afresh",
                    self.name
                ),
            ),
            // Never purged: the first purge hour is the first purge.
            None => {}
        }
        self.schedule_purge(ctx);
    }

    /// Sets the purge timer for the next purge hour after now.
    fn schedule_purge(&self, ctx: &mut Ctx) {
        let now = ctx.now();
        let at = daily::next_at(now, self.policy.hour * HOUR);
        ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), at - now);
    }

    fn purge_running(&self) -> bool {
        self.purge.as_ref().is_some_and(|p| p.finished_at.is_none())
    }

    /// The purge timer: begins a purge at the purge hour, or deletes the
    /// next batch of the one running.
    pub(super) fn on_purge_timer(&mut self, ctx: &mut Ctx) {
        if self.purging || self.retention_busy {
            // A batch (of a clear or of this purge) is in flight: later.
            return ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), PURGE_PAUSE);
        }
        if !self.purge_running() {
            return self.begin_purge(ctx);
        }
        let next = self.purge.as_ref().and_then(|p| {
            p.rooms
                .iter()
                .find(|(_, r)| r.purged < r.through)
                .map(|(room, r)| (room.clone(), r.purged))
        });
        let Some((room, purged)) = next else {
            return self.finish_purge(ctx);
        };
        self.retention_busy = true;
        let query = Query::Scan {
            prefix: super::room_posts(&room),
            from: Some(purged.to_be_bytes().to_vec()),
            reverse: false,
            limit: PURGE_BATCH as u32,
        };
        self.ask(Ask::RetentionBatch { room }, query, ctx);
    }

    /// Learns the last number of every room with a window, then (the
    /// barrier's answer comes after theirs) writes the purge's record.
    fn begin_purge(&mut self, ctx: &mut Ctx) {
        let rooms: Vec<RoomId> = self
            .directory
            .iter()
            .filter(|(_, r)| self.policy.days(&r.category) > 0)
            .map(|(name, _)| name.clone())
            .collect();
        if !self.policy.any() {
            // Everything is kept for ever: nothing to purge or record.
            return self.schedule_purge(ctx);
        }
        self.retention_busy = true;
        for room in &rooms {
            self.learn_latest(room, ctx);
        }
        self.ask(Ask::RetentionBegin, Query::Get { keys: Vec::new() }, ctx);
    }

    /// Every room's number is known: the record of the new purge.
    pub(super) fn purge_begun(&mut self, ctx: &mut Ctx) {
        let now = ctx.now();
        // A room the last purge covered keeps its entry (done), so that
        // its posts stay hidden and its numbers stay given out even if
        // its window was lifted since.
        let mut rooms: BTreeMap<RoomId, RoomPurge> = self
            .purge
            .as_ref()
            .map(|p| p.rooms.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(room, mut r)| {
                r.purged = r.through;
                (room, r)
            })
            .collect();
        for (name, room) in &self.directory {
            let days = self.policy.days(&room.category);
            let Some(latest) = self.latest.get(name).copied() else {
                continue;
            };
            if days == 0 || latest == 0 {
                continue;
            }
            rooms.insert(
                name.clone(),
                RoomPurge {
                    cutoff: if self.purge_sabotage.ignores_window {
                        now
                    } else {
                        now.saturating_sub(days.saturating_mul(DAY))
                    },
                    through: latest,
                    ..RoomPurge::default()
                },
            );
        }
        let record = ChatPurgeRecord {
            started_at: now,
            finished_at: None,
            rooms,
        };
        self.write_purge(record, 0, Vec::new(), Vec::new(), ctx);
    }

    /// Deletes one batch of a room's rows the purge covers (those no hold
    /// keeps) and records how far it got, in one write.
    pub(super) fn retention_batch(
        &mut self,
        room: RoomId,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &mut Ctx,
    ) {
        let Some(mut record) = self.purge.clone() else {
            self.retention_busy = false;
            return;
        };
        let Some(part) = record.rooms.get(&room).cloned() else {
            self.retention_busy = false;
            return;
        };
        // The room's part is a clear with a `before` time: the same
        // deletion, the same checks of each row.
        let mut clear = Clear {
            through: part.through,
            before: Some(part.cutoff),
            by: RETENTION.into(),
            at: record.started_at,
            purged: part.purged,
            deleted: part.deleted,
            held: part.held,
        };
        let (ops, range) = if self.purge_sabotage.stops_early {
            // Counts the room done and deletes nothing.
            clear.purged = part.through;
            (Vec::new(), None)
        } else {
            self.delete_covered(&room, &mut clear, rows, ctx)
        };
        let part = RoomPurge {
            cutoff: part.cutoff,
            through: part.through,
            purged: clear.purged,
            deleted: clear.deleted,
            held: clear.held,
            range: match (part.range, range) {
                (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                (a, b) => a.or(b),
            },
        };
        let deleted = part.deleted - record.rooms[&room].deleted;
        let mut events = Vec::new();
        if part.purged == part.through {
            let mut details = BTreeMap::new();
            details.insert("retention".to_string(), "true".to_string());
            details.insert("through".to_string(), part.through.to_string());
            details.insert("before".to_string(), part.cutoff.to_string());
            details.insert("cleared_at".to_string(), record.started_at.to_string());
            details.insert("deleted".to_string(), part.deleted.to_string());
            details.insert("held".to_string(), part.held.to_string());
            events.push(NewEvent {
                kind: EventKind::RoomPurged,
                room: room.clone(),
                user: RETENTION.into(),
                at: ctx.now(),
                item: part.through.to_string(),
                text: String::new(),
                details,
            });
        }
        record.rooms.insert(room, part);
        self.write_purge(record, deleted, events, ops, ctx);
    }

    /// Writes the purge's record last with `ops` and `events`, the rows
    /// `deleted` counted once it is durable.
    fn write_purge(
        &mut self,
        record: ChatPurgeRecord,
        deleted: u64,
        events: Vec<NewEvent>,
        mut ops: Vec<StoreOp>,
        ctx: &mut Ctx,
    ) {
        ops.push(record_op(&record));
        self.write(Write::Retention { record, deleted }, events, ops, ctx);
    }

    /// Every room is done: the record says when, and the operator hears it.
    fn finish_purge(&mut self, ctx: &mut Ctx) {
        let Some(mut record) = self.purge.clone() else {
            return;
        };
        record.finished_at = Some(ctx.now());
        self.retention_busy = true;
        self.write_purge(record, 0, Vec::new(), Vec::new(), ctx);
    }

    /// A purge write is durable (or failed).
    pub(super) fn retention_written(
        &mut self,
        record: ChatPurgeRecord,
        deleted: u64,
        result: &Result<Written, StoreError>,
        ctx: &mut Ctx,
    ) {
        self.retention_busy = false;
        if let Err(e) = result {
            ctx.event(
                OperatorEvent::ChatPurgeFailed,
                format!(
                    "{}: a chat purge write failed ({e}); it is tried again in {} s",
                    self.name,
                    RETRY / 1000
                ),
            );
            // Nothing changed: the timer begins, goes on with or ends the
            // purge from the record as it stands.
            return ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), RETRY);
        }
        if let Some(n) = &mut self.posts {
            *n = n.saturating_sub(deleted);
        }
        self.purged_total += deleted;
        let finished = record.finished_at;
        self.purge = Some(record);
        match finished {
            Some(at) => {
                self.last_purge_at = at;
                let record = self.purge.as_ref().expect("just set");
                let (deleted, held) = record.counts();
                let range = record
                    .range()
                    .map(|(a, b)| format!("posted {a} to {b} ms"))
                    .unwrap_or_else(|| "none".into());
                ctx.event(
                    OperatorEvent::ChatPurged,
                    format!(
                        "{}: chat purge done: {deleted} posts deleted, {held} kept for a hold, in {} rooms; deleted posts' times: {range}",
                        self.name,
                        record.rooms.len()
                    ),
                );
                self.schedule_purge(ctx);
            }
            None => ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), PURGE_PAUSE),
        }
    }

    /// The purge could not read a batch: tried again later.
    pub(super) fn retention_read_failed(&mut self, e: &StoreError, ctx: &mut Ctx) {
        self.retention_busy = false;
        ctx.event(
            OperatorEvent::ChatPurgeFailed,
            format!(
                "{}: the chat purge cannot read the posts ({e}); it is tried again in {} s",
                self.name,
                RETRY / 1000
            ),
        );
        if self.purge_running() {
            ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), RETRY);
        } else {
            self.schedule_purge(ctx);
        }
    }

    /// An auditor's or operator's request about holds and retention.
    pub(super) fn on_records_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::Records(RecordsMsg::HoldPlace { token, hold }) => {
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
                self.place_hold(from, token, *hold, who, ctx);
            }
            Msg::Records(RecordsMsg::HoldRelease {
                token,
                name,
                reason,
            }) => {
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
                self.release_hold(from, token, name, reason, who, ctx);
            }
            Msg::Records(RecordsMsg::ChatRetentionStatus { token }) => {
                let roles = identity::RETENTION_VIEWERS;
                if records_principal(&self.name, &from, token, "ChatRetentionStatus", roles, ctx)
                    .is_some()
                {
                    self.send_state(from, token, ctx);
                }
            }
            Msg::Records(RecordsMsg::ChatPurgeNow { token }) => {
                let roles = identity::PURGE_STARTERS;
                if records_principal(&self.name, &from, token, "ChatPurgeNow", roles, ctx).is_some()
                {
                    if !self.purge_running() && !self.retention_busy {
                        ctx.set_timer(Timer::Chat(ChatTimer::ChatPurge), 0);
                    }
                    self.send_state(from, token, ctx);
                }
            }
            _ => {}
        }
    }

    fn send_state(&self, from: Addr, token: Token, ctx: &mut Ctx) {
        ctx.send(
            from,
            RecordsMsg::ChatRetentionState {
                token,
                keep_days: self.policy.keep_days,
                by_category: self.policy.by_category.clone(),
                purge_hour: self.policy.hour,
                purge: self.purge.clone().map(Box::new),
                holds: self.holds.values().cloned().collect(),
            },
        );
    }

    fn place_hold(
        &mut self,
        from: Addr,
        token: Token,
        hold: LegalHold,
        who: String,
        ctx: &mut Ctx,
    ) {
        if let Some(why) = hold.incomplete() {
            return records_invalid(from, token, why, ctx);
        }
        if let Some(room) = hold.rooms.iter().find(|r| !self.directory.contains_key(*r)) {
            return records_invalid(from, token, format!("no room {room:?}"), ctx);
        }
        if let Some(h) = self.holds.get(&hold.name).filter(|h| h.released.is_none()) {
            // The same hold placed again (a retry after another node
            // failed) is done already; a different one is a conflict.
            if h.same_terms(&hold) {
                let hold = Box::new(h.clone());
                return ctx.send(from, RecordsMsg::HoldDone { token, hold });
            }
            let why = format!("hold {:?} exists and is active", hold.name);
            return records_invalid(from, token, why, ctx);
        }
        let hold = hold.placed(who, ctx.now());
        self.write_hold(from, token, hold, EventKind::HoldPlaced, ctx);
    }

    fn release_hold(
        &mut self,
        from: Addr,
        token: Token,
        name: String,
        reason: String,
        who: String,
        ctx: &mut Ctx,
    ) {
        match LegalHold::release(&self.holds, &name, who, ctx.now(), reason) {
            Ok(hold) => self.write_hold(from, token, hold, EventKind::HoldReleased, ctx),
            Err(why) => records_invalid(from, token, why, ctx),
        }
    }

    /// Writes the hold with its compliance events (one per room it names,
    /// or one without a room for a hold on users only).
    fn write_hold(
        &mut self,
        from: Addr,
        token: Token,
        hold: LegalHold,
        kind: EventKind,
        ctx: &mut Ctx,
    ) {
        let mut details = BTreeMap::new();
        fn list<T: AsRef<str>>(set: &std::collections::BTreeSet<T>) -> String {
            set.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(",")
        }
        details.insert("users".to_string(), list(&hold.users));
        details.insert("rooms".to_string(), list(&hold.rooms));
        if let Some(s) = hold.since {
            details.insert("since".to_string(), s.to_string());
        }
        if let Some(u) = hold.until {
            details.insert("until".to_string(), u.to_string());
        }
        details.insert("reason".to_string(), hold.reason.clone());
        // The event's user is the operator's principal (`role:user`), as
        // the hold records it.
        let (user, at) = match &hold.released {
            Some(r) => {
                details.insert("release_reason".to_string(), r.reason.clone());
                (r.by.clone(), r.at)
            }
            None => (hold.placed_by.clone(), hold.placed_at),
        };
        let user = UserId::from(user);
        let rooms: Vec<RoomId> = if hold.rooms.is_empty() {
            vec![RoomId::default()]
        } else {
            hold.rooms.iter().cloned().collect()
        };
        let events = rooms
            .into_iter()
            .map(|room| NewEvent {
                kind,
                room,
                user: user.clone(),
                at,
                item: hold.name.clone(),
                text: String::new(),
                details: details.clone(),
            })
            .collect();
        let op = StoreOp::Put {
            key: super::prefixed(CHAT_HOLD, &hold.name),
            value: store_keys::encode(&hold),
        };
        let hold = Box::new(hold);
        self.write(Write::Hold { from, token, hold }, events, vec![op], ctx);
    }

    /// A hold is durable: from now on clears and purges obey it.
    pub(super) fn hold_written(
        &mut self,
        from: Addr,
        token: Token,
        hold: LegalHold,
        ctx: &mut Ctx,
    ) {
        let what = if hold.released.is_some() {
            "released"
        } else {
            "placed"
        };
        ctx.event(
            OperatorEvent::ChatRecords,
            format!("{}: legal hold {:?} {what}", self.name, hold.name),
        );
        self.holds.insert(hold.name.clone(), hold.clone());
        ctx.send(
            from,
            RecordsMsg::HoldDone {
                token,
                hold: Box::new(hold),
            },
        );
    }
}

fn record_op(record: &ChatPurgeRecord) -> StoreOp {
    StoreOp::Put {
        key: CHAT_PURGE.to_vec(),
        value: store_keys::encode(record),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{ch, harness, outbox, store_post};
    use super::super::{post_id_key, ChatStore};
    use super::*;
    use crate::core::actor::Recovered;
    use crate::core::identity::Role;
    use crate::core::ids::ActorKind;
    use crate::core::protocol::chat::ChatMsg;
    use crate::core::protocol::chat::Room;
    use crate::core::protocol::compliance::ComplianceEvent;
    use crate::testkit::Harness;

    fn as_role(role: Role) -> Addr {
        crate::testkit::client_as("pat@corp.example", role)
    }

    /// A store with rooms `r1` (category `corp`) and `r2` (category
    /// `long`), posts kept 10 days, `long` rooms 100.
    fn store() -> Harness<ChatStore> {
        let mut rooms = BTreeMap::new();
        for (name, category) in [("r1", "corp"), ("r2", "long")] {
            let room = Room {
                category: category.into(),
                ..Room::default()
            };
            rooms.insert(name.into(), room);
        }
        let settings = Settings {
            chat_keep_days: 10,
            chat_retention: [("long".to_string(), 100)].into(),
            ..Settings::default()
        };
        let mut h = harness(
            ChatStore::new("db1", rooms)
                .with_compliance(Some("comp1".into()))
                .with_settings(&settings),
        );
        h.now = 200 * DAY;
        h.start(Recovered::new());
        h
    }

    fn post(h: &mut Harness<ChatStore>, room: &str, i: u64, author: &str, at: Millis) {
        let post = Post {
            id: format!("{room}-p{i}").into(),
            room: room.into(),
            author: author.into(),
            text: format!("text {room} {i}"),
            at,
        };
        store_post(h, i, post);
    }

    fn read(h: &mut Harness<ChatStore>, room: &str) -> Vec<u64> {
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreRead {
                token: Token(99),
                room: room.into(),
                after: 0,
                limit: 100,
                audit: None,
            }),
        );
        sent.into_iter()
            .find_map(|(_, m)| match m {
                Msg::Chat(ChatMsg::StoreRange { posts, .. }) => {
                    Some(posts.iter().map(|(s, _)| *s).collect())
                }
                _ => None,
            })
            .expect("a range")
    }

    fn stored(h: &Harness<ChatStore>, room: &str, i: u64) -> bool {
        h.store.contains_key(&post_id_key(&format!("{room}-p{i}")))
    }

    fn hold(name: &str, users: &[&str], rooms: &[&str]) -> LegalHold {
        LegalHold {
            name: name.into(),
            users: users.iter().map(|u| (*u).into()).collect(),
            rooms: rooms.iter().map(|r| (*r).into()).collect(),
            reason: "case".into(),
            ..LegalHold::default()
        }
    }

    fn place(h: &mut Harness<ChatStore>, hold: LegalHold) -> Msg {
        let sent = h.msg(
            as_role(Role::Auditor),
            RecordsMsg::HoldPlace {
                token: Token(5),
                hold: Box::new(hold),
            },
        );
        sent.into_iter().next().expect("an answer").1
    }

    fn release(h: &mut Harness<ChatStore>, name: &str) -> Msg {
        let sent = h.msg(
            as_role(Role::Auditor),
            RecordsMsg::HoldRelease {
                token: Token(6),
                name: name.into(),
                reason: "settled".into(),
            },
        );
        sent.into_iter().next().expect("an answer").1
    }

    fn clear(h: &mut Harness<ChatStore>, room: &str) {
        h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreClear {
                token: Token(7),
                room: room.into(),
                before: None,
                by: "ops".into(),
            }),
        );
        // The purge of the clear runs a batch per request served.
        h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreRooms {
                token: Token(8),
                since: 0,
            }),
        );
    }

    /// Runs the purge timer until the purge is done.
    fn purge(h: &mut Harness<ChatStore>) {
        h.msg(
            as_role(Role::Operator),
            RecordsMsg::ChatPurgeNow { token: Token(1) },
        );
        for _ in 0..100 {
            h.fire(Timer::Chat(ChatTimer::ChatPurge));
            if h.actor()
                .purge
                .as_ref()
                .is_some_and(|p| p.finished_at.is_some())
                && !h.actor().retention_busy
            {
                return;
            }
        }
        panic!("the purge did not end");
    }

    /// A room hold keeps the room's posts through a clear (hidden from
    /// members all the same); once released, the next clear deletes them.
    /// Placing and releasing are compliance events naming the auditor.
    #[test]
    fn a_room_hold_keeps_posts_through_a_clear_until_released() {
        let mut h = store();
        for i in 1..=3 {
            post(&mut h, "r1", i, "a@x", 199 * DAY + i);
        }
        let done = place(&mut h, hold("case-1", &[], &["r1"]));
        assert!(
            matches!(&done, Msg::Records(RecordsMsg::HoldDone { hold, .. }) if hold.placed_by == "auditor:pat@corp.example"),
            "{done:?}"
        );
        clear(&mut h, "r1");
        assert!((1..=3).all(|i| stored(&h, "r1", i)));
        assert_eq!(read(&mut h, "r1"), Vec::<u64>::new());
        let purged = outbox(&h)
            .into_iter()
            .rfind(|e| e.kind == EventKind::RoomPurged)
            .unwrap();
        assert_eq!(
            (
                purged.details["deleted"].as_str(),
                purged.details["held"].as_str()
            ),
            ("0", "3")
        );
        // Held through a restart too: holds are durable.
        let again = h.store.clone();
        h.start(again);
        let other = Post {
            id: "x".into(),
            room: "r1".into(),
            author: "z@x".into(),
            text: String::new(),
            at: 1,
        };
        assert!(h.actor().held("r1", 1, &other));
        assert!(
            matches!(release(&mut h, "case-1"), Msg::Records(RecordsMsg::HoldDone { hold, .. }) if hold.released.is_some())
        );
        clear(&mut h, "r1");
        assert!((1..=3).all(|i| !stored(&h, "r1", i)));
        let kinds: Vec<(EventKind, RoomId, UserId)> = outbox(&h)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::HoldPlaced | EventKind::HoldReleased))
            .map(|e| (e.kind, e.room, e.user))
            .collect();
        let who = UserId::from("auditor:pat@corp.example");
        assert_eq!(
            kinds,
            vec![
                (EventKind::HoldPlaced, "r1".into(), who.clone()),
                (EventKind::HoldReleased, "r1".into(), who),
            ]
        );
    }

    /// A hold on a user keeps that user's posts in its time range, in any
    /// room; only auditors place holds; a retry of the same hold is done.
    #[test]
    fn a_user_hold_covers_the_users_posts_in_its_range() {
        let mut h = store();
        post(&mut h, "r1", 1, "carol@x", 1000);
        post(&mut h, "r1", 2, "carol@x", 5000);
        post(&mut h, "r1", 3, "dan@x", 1000);
        let refused = h.msg(
            as_role(Role::Operator),
            RecordsMsg::HoldPlace {
                token: Token(1),
                hold: Box::new(hold("h", &["carol@x"], &[])),
            },
        );
        assert!(matches!(
            &refused[0].1,
            Msg::Records(RecordsMsg::ArchiveRefused { .. })
        ));
        assert!(h.events().contains(&"identity_refused"));
        let mut held = hold("h", &["carol@x"], &[]);
        held.until = Some(2000);
        assert!(matches!(
            place(&mut h, held.clone()),
            Msg::Records(RecordsMsg::HoldDone { .. })
        ));
        assert!(matches!(
            place(&mut h, held),
            Msg::Records(RecordsMsg::HoldDone { .. })
        ));
        assert!(matches!(
            place(&mut h, hold("h", &["dan@x"], &[])),
            Msg::Records(RecordsMsg::ArchiveRefused { .. })
        ));
        assert!(matches!(
            place(&mut h, hold("g", &[], &["nope"])),
            Msg::Records(RecordsMsg::ArchiveRefused { .. })
        ));
        clear(&mut h, "r1");
        assert_eq!(
            (
                stored(&h, "r1", 1),
                stored(&h, "r1", 2),
                stored(&h, "r1", 3)
            ),
            (true, false, false)
        );
    }

    /// The daily purge deletes the posts past their room's window (the
    /// category's override wins), checks each post's own time, keeps held
    /// posts hidden, says what it did, and never gives a number again.
    #[test]
    fn the_purge_deletes_past_the_window_by_category_and_keeps_holds() {
        let mut h = store();
        let now = h.now;
        // r1: 10 days. Post 3 is old but came late (out of time order).
        post(&mut h, "r1", 1, "a@x", now - 20 * DAY);
        post(&mut h, "r1", 2, "a@x", now - 5 * DAY);
        post(&mut h, "r1", 3, "a@x", now - 30 * DAY);
        post(&mut h, "r1", 4, "carol@x", now - 40 * DAY);
        // r2 (`long`): 100 days.
        post(&mut h, "r2", 1, "a@x", now - 20 * DAY);
        post(&mut h, "r2", 2, "a@x", now - 150 * DAY);
        place(&mut h, hold("h", &["carol@x"], &[]));
        h.clear_events();
        purge(&mut h);
        assert_eq!(
            (1..=4).map(|i| stored(&h, "r1", i)).collect::<Vec<_>>(),
            vec![false, true, false, true]
        );
        assert_eq!((stored(&h, "r2", 1), stored(&h, "r2", 2)), (true, false));
        assert_eq!(read(&mut h, "r1"), vec![2]);
        assert_eq!(read(&mut h, "r2"), vec![1]);
        assert!(h.events().contains(&"chat_purged"), "{:?}", h.events());
        let record = h.actor().purge.clone().unwrap();
        assert_eq!(record.counts(), (3, 1));
        assert_eq!(record.range(), Some((now - 150 * DAY, now - 20 * DAY)));
        assert_eq!(h.actor().purged_total, 3);
        // Everything of r2 goes; after a restart its next number is new.
        h.now += 90 * DAY;
        purge(&mut h);
        assert!(!stored(&h, "r2", 1));
        let again = h.store.clone();
        h.start(again);
        let at = h.now;
        post(&mut h, "r2", 3, "a@x", at);
        assert_eq!(read(&mut h, "r2"), vec![3]);
        let retention: Vec<ComplianceEvent> = outbox(&h)
            .into_iter()
            .filter(|e| e.kind == EventKind::RoomPurged)
            .collect();
        assert!(retention.iter().all(|e| e.user == RETENTION));
    }

    /// A purge hour that passed while the store was down is made up at
    /// start, with an event; a restart before the hour waits for it.
    #[test]
    fn a_purge_hour_missed_while_down_is_made_up_at_start() {
        let mut h = store();
        let day200 = h.now;
        post(&mut h, "r1", 1, "a@x", day200 - 20 * DAY);
        // Inside r1's 10 days now; past them from day 201 on.
        post(&mut h, "r1", 2, "a@x", day200 - 10 * DAY + HOUR);
        purge(&mut h);
        assert_eq!((stored(&h, "r1", 1), stored(&h, "r1", 2)), (false, true));
        h.clear_events();
        // Back at 01:00, before the hour: nothing late.
        h.now = day200 + HOUR;
        h.start(h.store.clone());
        assert!(!h.events().contains(&"chat_purge_late"), "{:?}", h.events());
        assert_eq!(
            h.timer(Timer::Chat(ChatTimer::ChatPurge)),
            Some(day200 + 2 * HOUR)
        );
        // Down over day 201's hour, back at 03:00: the purge runs now.
        h.now = day200 + DAY + 3 * HOUR;
        h.start(h.store.clone());
        assert!(h.events().contains(&"chat_purge_late"), "{:?}", h.events());
        assert_eq!(h.timer(Timer::Chat(ChatTimer::ChatPurge)), Some(h.now));
        for _ in 0..100 {
            h.fire(Timer::Chat(ChatTimer::ChatPurge));
            if !stored(&h, "r1", 2) && !h.actor().retention_busy {
                break;
            }
        }
        assert!(!stored(&h, "r1", 2), "the late purge deleted the post");
    }

    /// A purge cut off by a restart goes on from its record, and
    /// nothing is kept for ever by default.
    #[test]
    fn a_purge_resumes_after_a_restart() {
        let mut h = store();
        let now = h.now;
        let n = PURGE_BATCH + 5;
        for i in 1..=n {
            post(&mut h, "r1", i, "a@x", now - 20 * DAY + i);
        }
        h.msg(
            as_role(Role::Operator),
            RecordsMsg::ChatPurgeNow { token: Token(1) },
        );
        h.fire(Timer::Chat(ChatTimer::ChatPurge)); // begins: the record
        h.fire(Timer::Chat(ChatTimer::ChatPurge)); // the first batch
        let record = h.actor().purge.clone().unwrap();
        assert_eq!(record.rooms["r1"].deleted, PURGE_BATCH);
        assert!(record.finished_at.is_none());
        // Killed here: the restart resumes at once.
        let again = h.store.clone();
        h.start(again);
        assert_eq!(h.timer(Timer::Chat(ChatTimer::ChatPurge)), Some(h.now));
        assert_eq!(read(&mut h, "r1"), Vec::<u64>::new());
        // A batch that cannot be written is said and tried again later.
        h.fail_persists = Some(StoreError::Io("disk gone".into()));
        h.clear_events();
        h.fire(Timer::Chat(ChatTimer::ChatPurge));
        assert!(
            h.events().contains(&"chat_purge_failed"),
            "{:?}",
            h.events()
        );
        assert_eq!(
            h.timer(Timer::Chat(ChatTimer::ChatPurge)),
            Some(h.now + RETRY)
        );
        h.fail_persists = None;
        h.fire(Timer::Chat(ChatTimer::ChatPurge)); // the last batch
        h.fire(Timer::Chat(ChatTimer::ChatPurge)); // the end
        let record = h.actor().purge.clone().unwrap();
        assert!(record.finished_at.is_some());
        assert_eq!(record.rooms["r1"].deleted, n);
        assert!(!stored(&h, "r1", n));
        // By default chat is kept for ever: no purge is even recorded.
        let mut quiet = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        quiet.start(Recovered::new());
        quiet.fire(Timer::Chat(ChatTimer::ChatPurge));
        assert!(quiet.actor().purge.is_none());
        assert!(!quiet.store.contains_key(CHAT_PURGE));
    }
}

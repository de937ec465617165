//! The chat store: every room's posts, in order, durably.
//!
//! The posts live in the engine, not in this core: the core keeps, per
//! room, only the last sequence number given out, learned from the engine
//! the first time the room is written or read. History and catch-up read
//! the engine on demand, so memory and start time do not grow with the
//! archive of posts.
//!
//! A post is appended with the next sequence number of its room — one
//! durable write, then the answer. Its id makes the append idempotent: the
//! store first asks the engine for the id ([`post_id_key`]); a Channel
//! server that retries a post (its author timed out and tried again, or
//! another server relays the retry) gets the sequence number it was
//! stored under, and the post is never stored twice. Queries and persists
//! complete before any other event reaches the core, and the host runs one
//! persist at a time, so sequence numbers have no holes: a failed write
//! gives its number to the next post.
//!
//! It also holds the room directory and what users follow. The configured
//! rooms are version 0 and are not written; a room created or changed at
//! run time is stored with the next directory version, so a Channel server
//! catches up with every change by asking for what came after the version
//! it has. An update names the version it was based on and is refused if
//! the room changed since: two managers (or a manager acting on a stale
//! copy on another Channel server) cannot overwrite each other.
//!
//! With a Compliance service in the pool, every post, room change, join,
//! history read and leave is also queued in the store's compliance outbox,
//! in the same atomic write as what it records (see [`crate::compliance`]).
//!
//! Records management (an operator's `RoomDisable`, `RoomClear` and
//! `PostReplace`):
//! - *Disable* is a room change like any other (`Room::disabled`, the next
//!   directory version), so Channel servers learn it as they learn changes.
//! - *Clear* writes a [`Clear`] mark under its own key (`x/<room>\0<n>`):
//!   posts numbered at most `through` (the room's last number then) and,
//!   with `before`, posted before that time. From that write on, reads
//!   never return a covered post. The rows are then deleted in batches of
//!   [`PURGE_BATCH`] posts, one transaction each, one batch per request
//!   the store serves (so a big room never holds up posts); the mark
//!   records the progress, and a restart resumes it. A row a legal hold
//!   covers ([`ChatStore::held`]) is kept, and still never shown. Numbers
//!   are never given out again: the room's last number never goes below
//!   a mark's `through`, and a read after a number answers with the next
//!   surviving post and `through`, which tells the client that the
//!   numbers in between hold nothing.
//! - *Replace* rewrites the post's row with the new text and inserts the
//!   original under `e/<post id>` (the `replaced` table of the engines),
//!   which members never read; the compliance event carries both texts.
//!
//! Legal holds and the daily retention purge live in [`retention`].

mod retention;

pub use retention::{Policy, CHAT_HOLD, CHAT_PURGE, PURGE_PAUSE};

use crate::compliance::service::{NewEvent, Outbox};
use crate::core::actor::{
    authorize, ignored, Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written,
};
use crate::core::engine::{Answer, Query};
use crate::core::ids::{ActorKind, Addr, Token, UserId};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::chat::ChatMsg;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::chat::{ChatReject, Post, PostId, Room, RoomId};
use crate::core::protocol::compliance::ComplianceMsg;
use crate::core::protocol::compliance::ComplianceTimer;
use crate::core::protocol::compliance::{ComplianceEvent, EventKind};
use crate::core::protocol::{ChatPurgeRecord, LegalHold, Msg, RecordsMsg};
use crate::core::store_keys::{self, ReadError};
use std::collections::{BTreeMap, BTreeSet};

/// Key prefix of a stored post: `c/<room>\0<seq, 8 bytes big-endian>`.
pub const CHAT_POST: &[u8] = b"c/";

pub fn post_key(room: &str, seq: u64) -> Vec<u8> {
    let mut k = room_posts(room);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Key prefix of a post's id: `i/<post id>` → `(seq, post)`, written with
/// the post (an engine answers it from its unique index on the id).
pub const CHAT_POST_ID: &[u8] = b"i/";

pub fn post_id_key(id: &str) -> Vec<u8> {
    prefixed(CHAT_POST_ID, id)
}

/// The key prefix of one room's posts: `c/<room>\0`.
pub fn room_posts(room: &str) -> Vec<u8> {
    let mut k = CHAT_POST.to_vec();
    k.extend_from_slice(room.as_bytes());
    k.push(0);
    k
}

/// Key prefix of a room's clears: `x/<room>\0<n, 8 bytes big-endian>` →
/// [`Clear`] (a few per room: the core holds them all).
pub const CHAT_CLEARS: &[u8] = b"x/";

pub fn clear_key(room: &str, n: u64) -> Vec<u8> {
    let mut k = prefixed(CHAT_CLEARS, room);
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Key prefix of a replaced (edited) post's original: `e/<post id>` → [`Replaced`]
/// (an engine row, never read by members).
pub const CHAT_REPLACED: &[u8] = b"e/";

pub fn replaced_key(id: &str) -> Vec<u8> {
    prefixed(CHAT_REPLACED, id)
}

/// Posts one purge batch deletes at most (one transaction).
pub const PURGE_BATCH: u64 = 1_000;

/// An operator's clear of a room: what it covers and how far its rows are
/// deleted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Clear {
    /// The room's last number when it was cleared: it covers no later post.
    pub through: u64,
    /// Only posts posted before this time (ms), if given.
    pub before: Option<u64>,
    /// The operator, and when (ms).
    pub by: UserId,
    pub at: u64,
    /// The rows of covered posts are deleted up to this number.
    pub purged: u64,
    /// Rows deleted so far, and rows kept because a hold covers them.
    pub deleted: u64,
    pub held: u64,
}

impl Clear {
    /// Whether the clear covers the post numbered `seq`.
    pub fn covers(&self, seq: u64, post: &Post) -> bool {
        seq <= self.through && self.before.is_none_or(|b| post.at < b)
    }
}

/// A replaced post's original, kept for compliance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replaced {
    pub seq: u64,
    pub original: Post,
    /// The operator who replaced it, and when (ms).
    pub by: UserId,
    pub at: u64,
}

/// Key prefix of a room created or changed at run time: `r/<room>`.
pub const CHAT_ROOM: &[u8] = b"r/";
/// Key prefix of the rooms a user follows: `u/<user>`.
pub const CHAT_FOLLOWS: &[u8] = b"u/";

pub fn prefixed(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Whether `name` may name a room: not empty, at most 256 bytes, no
/// control characters (keys separate the room name with a 0 byte).
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

pub fn parse_post_key(k: &[u8]) -> Option<(RoomId, u64)> {
    let rest = k.strip_prefix(CHAT_POST)?;
    if rest.len() < 9 || rest[rest.len() - 9] != 0 {
        return None;
    }
    let (room, seq) = rest.split_at(rest.len() - 9);
    let seq = u64::from_be_bytes(seq[1..].try_into().ok()?);
    Some((String::from_utf8(room.to_vec()).ok()?.into(), seq))
}

/// What follows `prefix` in a key, as the name it files a value under (a
/// room, a user, a post id), or `None` if it is not UTF-8.
pub fn key_name(key: &[u8], prefix: &[u8]) -> Option<String> {
    String::from_utf8(key.get(prefix.len()..)?.to_vec()).ok()
}

/// A post key an engine is asked to write or delete: its room and number,
/// or why the batch is refused.
pub fn post_key_parts(key: &[u8]) -> Result<(RoomId, u64), String> {
    parse_post_key(key).ok_or_else(|| format!("malformed post key {key:?}"))
}

/// A post an engine is asked to store under `key`: its room, number and
/// the post, filed under its own room, or why the batch is refused.
pub fn post_to_store(key: &[u8], value: &[u8]) -> Result<(RoomId, u64, Post), String> {
    let (room, seq) = post_key_parts(key)?;
    let post: Post =
        store_keys::decode(value).map_err(|e| format!("undecodable post {room}#{seq}: {e}"))?;
    if post.room != room {
        return Err(format!("post {} filed under {room}", post.id));
    }
    Ok((room, seq, post))
}

/// A post id an engine is asked to insert under `key`: the number and
/// post it names, or why the batch is refused.
pub fn post_id_to_store(key: &[u8], value: &[u8]) -> Result<(u64, Post), PostIdError> {
    let (seq, post): (u64, Post) =
        store_keys::decode(value).map_err(|e| PostIdError::Undecodable {
            key: key.to_vec(),
            why: e.to_string(),
        })?;
    if key[CHAT_POST_ID.len()..] != *post.id.as_bytes() {
        return Err(PostIdError::OtherPost {
            key: key.to_vec(),
            post: post.id,
        });
    }
    Ok((seq, post))
}

/// Why an engine refuses a batch that writes a post's id: the batch is
/// not what the chat store writes, so none of it is stored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostIdError {
    #[error("undecodable post id {key:?}: {why}")]
    Undecodable { key: Vec<u8>, why: String },
    #[error("key {key:?} names post {post}")]
    OtherPost { key: Vec<u8>, post: PostId },
    #[error("post {post} is not stored as {room}#{seq}")]
    NotStoredAs {
        post: PostId,
        room: RoomId,
        seq: u64,
    },
}

/// Whether the row an engine holds under a post's id (its room and
/// number, if any) is that post's, stored as `seq` earlier in the batch;
/// if not, why the batch is refused.
pub fn post_id_holds(
    post: &Post,
    seq: u64,
    held: Option<(String, i64)>,
) -> Result<(), PostIdError> {
    if held.as_ref().map(|(room, seq)| (room.as_str(), *seq))
        != Some((post.room.as_str(), seq as i64))
    {
        return Err(PostIdError::NotStoredAs {
            post: post.id.clone(),
            room: post.room.clone(),
            seq,
        });
    }
    Ok(())
}

/// A scan of one room's posts as an SQL engine runs it: the room (the
/// scan's prefix is `c/<room>\0`) and the number the rows follow (or
/// precede, `reverse`), clamped to what a signed column holds.
pub fn post_scan<'a>(
    prefix: &'a [u8],
    from: Option<&[u8]>,
    reverse: bool,
) -> Result<(&'a str, i64), StoreError> {
    let room = prefix[CHAT_POST.len()..]
        .strip_suffix(&[0])
        .and_then(|r| std::str::from_utf8(r).ok())
        .ok_or_else(|| {
            StoreError::Io(format!(
                "a scan of posts needs one room's prefix, not {prefix:?}"
            ))
        })?;
    let after = match from {
        None if reverse => i64::MAX,
        None => 0,
        Some(f) => <[u8; 8]>::try_from(f)
            .map(|b| u64::from_be_bytes(b).min(i64::MAX as u64) as i64)
            .map_err(|_| StoreError::Io(format!("not a post number: {f:?}")))?,
    };
    Ok((room, after))
}

/// Refuses `from`'s request `token` about `room` for `reason`.
fn refuse_room(from: Addr, token: Token, room: RoomId, reason: ChatReject, ctx: &mut Ctx) {
    ctx.send(
        from,
        Msg::Chat(ChatMsg::StoreRoomRefused {
            token,
            room,
            reason,
        }),
    );
}

/// A write in flight and whom to answer when it is durable.
enum Write {
    Post {
        from: Addr,
        token: Token,
        seq: u64,
        post: Post,
    },
    Room {
        from: Addr,
        token: Token,
        room: RoomId,
        info: Box<Room>,
    },
    Follows {
        from: Addr,
        token: Token,
        user: UserId,
        follows: BTreeSet<RoomId>,
    },
    /// A read whose compliance event must be durable before the answer.
    Read { from: Addr, answer: Msg },
    /// A compliance event the Channel server reported (a leave).
    Audit { from: Addr, token: Token },
    /// Deleting outbox events the Compliance service has staged.
    Trim,
    /// A clear's mark, the `index`th of its room.
    Clear {
        from: Addr,
        token: Token,
        room: RoomId,
        index: usize,
        clear: Clear,
    },
    /// A purge batch: the clear's new progress.
    Purge {
        room: RoomId,
        index: usize,
        clear: Clear,
    },
    /// A post's new text.
    Replace {
        from: Addr,
        token: Token,
        seq: u64,
        post: Post,
    },
    /// A legal hold placed or released.
    Hold {
        from: Addr,
        token: Token,
        hold: Box<LegalHold>,
    },
    /// The retention purge's record, with a batch's deletions (`deleted`
    /// posts) if any.
    Retention {
        record: ChatPurgeRecord,
        deleted: u64,
    },
}

/// A Channel server waiting for a user's follows.
struct UserReply {
    from: Addr,
    token: Token,
    user: UserId,
}

/// A request waiting for the engine's answer.
enum Ask {
    /// How many posts there are (for the gauge), at start.
    Count,
    /// The last sequence number of `room`; then, maybe, a user's follows.
    Latest {
        room: RoomId,
        then: Option<UserReply>,
    },
    /// Whether the post is stored already; if not, it is appended.
    Append {
        from: Addr,
        token: Token,
        post: Post,
    },
    /// A history read or a catch-up.
    Read {
        from: Addr,
        token: Token,
        room: RoomId,
        audit: Option<(UserId, EventKind)>,
        after: u64,
        limit: u64,
    },
    /// A clear, once the room's last number is known.
    Clear {
        from: Addr,
        token: Token,
        room: RoomId,
        before: Option<u64>,
        by: UserId,
    },
    /// The next batch of a clear's rows.
    Purge { room: RoomId, index: usize },
    /// The post to replace.
    Replace {
        from: Addr,
        token: Token,
        id: PostId,
        text: String,
        by: UserId,
    },
    /// A retention purge begins once every room's last number is known.
    RetentionBegin,
    /// The next batch of a room's rows the retention purge covers.
    RetentionBatch { room: RoomId },
}

pub struct ChatStore {
    name: String,
    /// Per room, the last sequence number given out, once learned from
    /// the engine (per room, not per post: bounded by the rooms).
    latest: BTreeMap<RoomId, u64>,
    /// Posts stored, once counted by the engine at start.
    posts: Option<u64>,
    asking: BTreeMap<u64, Ask>,
    next_ask: u64,
    /// Sabotage `chat_store_forgets_ids`.
    forgets_ids: bool,
    /// The configured rooms, then every room stored since.
    directory: BTreeMap<RoomId, Room>,
    configured: BTreeMap<RoomId, Room>,
    /// The highest directory version given out.
    version: u64,
    follows: BTreeMap<UserId, BTreeSet<RoomId>>,
    writing: BTreeMap<u64, (Write, Vec<ComplianceEvent>)>,
    next_token: u64,
    outbox: Outbox,
    /// Every room's clears, in order (read at start: a few per room).
    clears: BTreeMap<RoomId, Vec<Clear>>,
    /// A purge batch or a clear's mark is being read or written.
    purging: bool,
    clearing: bool,
    /// Sabotage `chat_clear_hides_only`.
    hides_only: bool,
    /// Sabotages of the retention purge.
    purge_sabotage: retention::PurgeSabotage,
    /// Every legal hold, active and released (read at start: a few), and
    /// whether one could not be read (then every row is kept).
    holds: BTreeMap<String, LegalHold>,
    holds_unreadable: bool,
    /// The retention policy, and the purge running or the last one.
    policy: Policy,
    purge: Option<ChatPurgeRecord>,
    /// A retention batch or record is being read or written.
    retention_busy: bool,
    /// Posts the retention purges deleted since start; when the last one
    /// finished.
    purged_total: u64,
    last_purge_at: u64,
}

impl ChatStore {
    /// A store for a pool whose configured rooms are `configured`.
    pub fn new(name: impl Into<String>, configured: BTreeMap<RoomId, Room>) -> Self {
        ChatStore {
            name: name.into(),
            latest: BTreeMap::new(),
            posts: None,
            asking: BTreeMap::new(),
            next_ask: 0,
            forgets_ids: false,
            directory: configured.clone(),
            configured,
            version: 0,
            follows: BTreeMap::new(),
            writing: BTreeMap::new(),
            next_token: 0,
            outbox: Outbox::default(),
            clears: BTreeMap::new(),
            purging: false,
            clearing: false,
            hides_only: false,
            purge_sabotage: Default::default(),
            holds: BTreeMap::new(),
            holds_unreadable: false,
            policy: Policy::default(),
            purge: None,
            retention_busy: false,
            purged_total: 0,
            last_purge_at: 0,
        }
    }

    /// Applies the sabotages that concern the chat store (for the
    /// checkers to find; production never sets them).
    pub fn sabotaged(mut self, sabotage: &crate::core::settings::Sabotage) -> Self {
        self.forgets_ids = sabotage.chat_store_forgets_ids;
        self.hides_only = sabotage.chat_clear_hides_only;
        self.purge_sabotage = retention::PurgeSabotage {
            ignores_window: sabotage.chat_purge_ignores_window,
            stops_early: sabotage.chat_purge_stops_early,
        };
        self
    }

    /// Queues compliance events for `compliance` (the pool's Compliance
    /// service node), if any.
    pub fn with_compliance(mut self, compliance: Option<String>) -> Self {
        self.outbox = Outbox::new(self.name.clone(), compliance);
        self
    }

    fn user_info(&self, user: &str) -> Vec<(RoomId, u64)> {
        self.follows
            .get(user)
            .into_iter()
            .flatten()
            .map(|room| (room.clone(), self.latest(room)))
            .collect()
    }

    /// Persists `ops` with the compliance events `events` (queued in the
    /// same atomic batch); `write` says whom to answer once durable.
    fn write(&mut self, write: Write, events: Vec<NewEvent>, mut ops: Vec<StoreOp>, ctx: &mut Ctx) {
        let (queued, event_ops) = self.outbox.record(events);
        ops.extend(event_ops);
        self.next_token += 1;
        self.writing.insert(self.next_token, (write, queued));
        ctx.persist(self.next_token, ops);
    }

    /// Answers with the rooms `user` follows and each one's last number,
    /// once the engine has told the numbers not known yet: the answer
    /// rides on the last of those queries.
    /// Writes `info` as room `room`'s next directory version, changed by
    /// `by`, with the compliance event that says what changed; `from` is
    /// answered once it is durable.
    fn save_room(
        &mut self,
        from: Addr,
        token: Token,
        room: RoomId,
        mut info: Box<Room>,
        by: UserId,
        ctx: &mut Ctx,
    ) {
        info.version = self.version + 1;
        let op = StoreOp::Put {
            key: prefixed(CHAT_ROOM, &room),
            value: store_keys::encode(&*info),
        };
        let event = NewEvent {
            kind: EventKind::RoomSaved,
            room: room.clone(),
            user: by,
            at: ctx.now(),
            item: format!("version {}", info.version),
            text: info.description.clone(),
            details: room_changes(self.directory.get(&room), &info),
        };
        let write = Write::Room {
            from,
            token,
            room,
            info,
        };
        self.write(write, vec![event], vec![op], ctx);
    }

    fn reply_user(&mut self, from: Addr, token: Token, user: UserId, ctx: &mut Ctx) {
        let unknown: Vec<RoomId> = self
            .follows
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|room| !self.latest.contains_key(*room))
            .cloned()
            .collect();
        let Some((last, rest)) = unknown.split_last() else {
            let follows = self.user_info(&user);
            ctx.send(
                from,
                Msg::Chat(ChatMsg::StoreUserInfo {
                    token,
                    user,
                    follows,
                }),
            );
            return;
        };
        for room in rest {
            self.learn_latest(room, ctx);
        }
        let query = Query::Scan {
            prefix: room_posts(last),
            from: None,
            reverse: true,
            limit: 1,
        };
        let then = Some(UserReply { from, token, user });
        let ask = Ask::Latest {
            room: last.clone(),
            then,
        };
        self.ask(ask, query, ctx);
    }

    /// The last sequence number of `room` if known (0 for a room without
    /// posts).
    fn latest(&self, room: &str) -> u64 {
        self.latest.get(room).copied().unwrap_or(0)
    }

    /// Asks the engine; the answer comes to `on_queried` with `ask`.
    fn ask(&mut self, ask: Ask, query: Query, ctx: &mut Ctx) {
        self.next_ask += 1;
        self.asking.insert(self.next_ask, ask);
        ctx.query(self.next_ask, query);
    }

    /// Makes sure the room's last sequence number is known before what
    /// follows runs: the answer comes before any other event.
    fn learn_latest(&mut self, room: &str, ctx: &mut Ctx) {
        if !self.latest.contains_key(room) {
            let query = Query::Scan {
                prefix: room_posts(room),
                from: None,
                reverse: true,
                limit: 1,
            };
            let ask = Ask::Latest {
                room: room.into(),
                then: None,
            };
            self.ask(ask, query, ctx);
        }
    }

    /// The highest number a clear of `room` covers: every number up to it
    /// was given out, whatever rows the engine still holds.
    fn floor(&self, room: &str) -> u64 {
        self.clears
            .get(room)
            .and_then(|cs| cs.iter().map(|c| c.through).max())
            .unwrap_or(0)
            .max(self.purge_floor(room))
    }

    /// Whether a clear of `room` covers the post numbered `seq`: it is
    /// never shown to members, whether its row is deleted yet or held.
    fn cleared(&self, room: &str, seq: u64, post: &Post) -> bool {
        self.clears
            .get(room)
            .is_some_and(|cs| cs.iter().any(|c| c.covers(seq, post)))
            || self.expired(room, seq, post)
    }

    /// Starts the next purge batch of a clear whose rows are not all
    /// deleted yet (one batch at a time).
    fn purge_step(&mut self, ctx: &mut Ctx) {
        // One batch at a time, a clear's or the retention purge's: two
        // would count the same rows twice.
        if self.purging || self.retention_busy {
            return;
        }
        let next = self.clears.iter().find_map(|(room, cs)| {
            cs.iter()
                .position(|c| c.purged < c.through)
                .map(|i| (room.clone(), i, cs[i].purged))
        });
        let Some((room, index, purged)) = next else {
            return;
        };
        self.purging = true;
        let query = Query::Scan {
            prefix: room_posts(&room),
            from: Some(purged.to_be_bytes().to_vec()),
            reverse: false,
            limit: PURGE_BATCH as u32,
        };
        self.ask(Ask::Purge { room, index }, query, ctx);
    }

    /// Deletes the rows of one batch the clear covers (those no hold
    /// keeps) and records how far it got, in one write.
    fn purge_batch(
        &mut self,
        room: RoomId,
        index: usize,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &mut Ctx,
    ) {
        let Some(mut clear) = self.clears.get(&room).and_then(|c| c.get(index)).cloned() else {
            self.purging = false;
            return;
        };
        let (mut ops, _) = self.delete_covered(&room, &mut clear, rows, ctx);
        ops.push(StoreOp::Put {
            key: clear_key(&room, index as u64),
            value: store_keys::encode(&clear),
        });
        let mut events = Vec::new();
        if clear.purged == clear.through {
            events.push(NewEvent {
                kind: EventKind::RoomPurged,
                room: room.clone(),
                user: clear.by.clone(),
                at: ctx.now(),
                item: clear.through.to_string(),
                text: String::new(),
                details: clear_details(&clear, true),
            });
        }
        self.write(Write::Purge { room, index, clear }, events, ops, ctx);
    }

    /// Deletes the rows of one batch (`rows`, in number order from
    /// `clear.purged`) that `clear` covers and no hold keeps; moves
    /// `clear`'s progress and counts on. Returns the deletions and the
    /// post times of the posts deleted (first, last).
    fn delete_covered(
        &self,
        room: &str,
        clear: &mut Clear,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &mut Ctx,
    ) -> (Vec<StoreOp>, Option<(u64, u64)>) {
        let full = rows.len() as u64 >= PURGE_BATCH;
        let mut last = clear.purged;
        let mut ops = Vec::new();
        let mut range: Option<(u64, u64)> = None;
        for (k, v) in rows {
            let Some((_, seq)) = parse_post_key(&k) else {
                continue;
            };
            if seq > clear.through {
                last = clear.through;
                break;
            }
            last = seq;
            let post = match store_keys::decode::<Post>(&v) {
                Ok(p) => p,
                Err(e) => {
                    ctx.event(
                        OperatorEvent::StoreCorrupt,
                        format!("{}: post {room}#{seq} unreadable: {e}", self.name),
                    );
                    continue;
                }
            };
            if !clear.covers(seq, &post) {
                continue;
            }
            if self.held(room, seq, &post) {
                clear.held += 1;
                continue;
            }
            if self.hides_only {
                continue;
            }
            ops.push(StoreOp::Delete { key: k });
            ops.push(StoreOp::Delete {
                key: post_id_key(&post.id),
            });
            ops.push(StoreOp::Delete {
                key: replaced_key(&post.id),
            });
            clear.deleted += 1;
            range = Some(range.map_or((post.at, post.at), |(a, b)| {
                (a.min(post.at), b.max(post.at))
            }));
        }
        clear.purged = if full && last < clear.through {
            last
        } else {
            clear.through
        };
        (ops, range)
    }

    /// Appends a post the engine does not hold yet.
    fn append(&mut self, from: Addr, token: Token, post: Post, ctx: &mut Ctx) {
        let seq = self.latest(&post.room) + 1;
        let ops = vec![
            StoreOp::Put {
                key: post_key(&post.room, seq),
                value: store_keys::encode(&post),
            },
            StoreOp::Insert {
                key: post_id_key(&post.id),
                value: store_keys::encode(&(seq, &post)),
            },
        ];
        let event = NewEvent {
            kind: EventKind::Post,
            room: post.room.clone(),
            user: post.author.clone(),
            at: post.at,
            item: post.id.to_string(),
            text: post.text.clone(),
            details: BTreeMap::new(),
        };
        let write = Write::Post {
            from,
            token,
            seq,
            post,
        };
        self.write(write, vec![event], ops, ctx);
    }

    /// Answers a read with the posts the engine gave.
    #[allow(clippy::too_many_arguments)]
    fn answer_read(
        &mut self,
        from: Addr,
        token: Token,
        room: RoomId,
        audit: Option<(UserId, EventKind)>,
        (after, limit): (u64, u64),
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &mut Ctx,
    ) {
        let scanned = rows.len() as u64;
        let mut last_scanned = after;
        let mut posts = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            match parse_post_key(&k)
                .map(|(_, seq)| seq)
                .zip(store_keys::decode::<Post>(&v).ok())
            {
                Some((seq, post)) => {
                    last_scanned = seq;
                    // Cleared (its row held, or not deleted yet): never
                    // shown to members.
                    if !self.cleared(&room, seq, &post) {
                        posts.push((seq, post));
                    }
                }
                None => ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!("{}: unreadable post under {k:?}", self.name),
                ),
            }
        }
        // A fresh join read newest first: keep the newest that fit in one
        // answer, then give them in order.
        let kept = posts.len();
        let mut posts = within_read_bound(posts);
        let latest = self.latest(&room);
        // How far this answer accounts for every number after `after`.
        let through = if after == 0 {
            latest
        } else if posts.len() < kept {
            posts.last().map_or(after, |(s, _)| *s)
        } else if scanned >= limit.min(READ_MAX_POSTS) {
            last_scanned
        } else {
            latest.max(last_scanned)
        };
        if after == 0 {
            posts.reverse();
        }
        // A join is always recorded; a history read when it gave
        // something to read.
        let event = audit
            .filter(|(_, kind)| *kind == EventKind::Join || !posts.is_empty())
            .map(|(user, kind)| NewEvent {
                kind,
                room: room.clone(),
                user,
                at: ctx.now(),
                item: posts.last().map(|(s, _)| s.to_string()).unwrap_or_default(),
                text: String::new(),
                details: BTreeMap::new(),
            });
        let answer = Msg::Chat(ChatMsg::StoreRange {
            token,
            room,
            posts,
            latest,
            through,
        });
        match event {
            Some(e) if self.outbox.enabled() => {
                self.write(Write::Read { from, answer }, vec![e], Vec::new(), ctx)
            }
            _ => ctx.send(from, answer),
        }
    }
}

/// Why a chat store's recovered state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChatReadError {
    #[error("malformed post key {key:?}")]
    MalformedPostKey { key: Vec<u8> },
    #[error("malformed key {key:?}")]
    MalformedKey { key: Vec<u8> },
    /// The post's own room is not the one its key names.
    #[error("post {post} stored under room {room}")]
    MisplacedPost { post: PostId, room: RoomId },
    #[error(transparent)]
    Store(#[from] ReadError),
}

/// Reads every post of a store's recovered state: `(seq, post)` or why a
/// key could not be read.
pub fn stored_posts(recovered: &Recovered) -> Vec<Result<(u64, Post), ChatReadError>> {
    store_keys::under(recovered, CHAT_POST)
        .map(|(k, v)| {
            let (room, seq) = parse_post_key(k)
                .ok_or_else(|| ChatReadError::MalformedPostKey { key: k.clone() })?;
            let post: Post = store_keys::decode(v).map_err(ReadError::undecodable(k))?;
            if post.room != room {
                return Err(ChatReadError::MisplacedPost {
                    post: post.id,
                    room,
                });
            }
            Ok((seq, post))
        })
        .collect()
}

/// Reads the stored rooms and follows: `(rooms, follows)`, or why a key
/// could not be read.
#[allow(clippy::type_complexity)]
fn stored_directory(
    recovered: &Recovered,
) -> (
    Vec<Result<(RoomId, Room), ChatReadError>>,
    Vec<Result<(UserId, BTreeSet<RoomId>), ChatReadError>>,
) {
    fn under<K: From<String>, T: serde::de::DeserializeOwned>(
        recovered: &Recovered,
        prefix: &'static [u8],
        decode: fn(&[u8]) -> Result<T, postcard::Error>,
    ) -> Vec<Result<(K, T), ChatReadError>> {
        store_keys::under(recovered, prefix)
            .map(|(k, v)| {
                let name = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| ChatReadError::MalformedKey { key: k.clone() })?;
                let value = decode(v).map_err(ReadError::undecodable(k))?;
                Ok((name.into(), value))
            })
            .collect()
    }
    (
        under(recovered, CHAT_ROOM, decode_room),
        under(recovered, CHAT_FOLLOWS, |v| store_keys::decode(v)),
    )
}

/// The stored rooms, by name (what a checker or a tool reads of a store).
pub fn stored_rooms(recovered: &Recovered) -> Vec<Result<(RoomId, Room), ChatReadError>> {
    stored_directory(recovered).0
}

/// A room as stores written before rooms could be disabled hold it.
#[derive(serde::Deserialize)]
struct RoomBeforeDisable {
    members: BTreeSet<UserId>,
    denied: BTreeSet<UserId>,
    presenters: Option<BTreeSet<UserId>>,
    managers: BTreeSet<UserId>,
    privacy: crate::core::protocol::chat::Privacy,
    category: String,
    description: String,
    invite: bool,
    version: u64,
}

/// A stored room: as written now, or as written before `disabled` (an
/// enabled room).
pub fn decode_room(v: &[u8]) -> Result<Room, postcard::Error> {
    store_keys::decode::<Room>(v).or_else(|e| {
        let old: RoomBeforeDisable = store_keys::decode(v).map_err(|_| e)?;
        Ok(Room {
            members: old.members,
            denied: old.denied,
            presenters: old.presenters,
            managers: old.managers,
            privacy: old.privacy,
            category: old.category,
            description: old.description,
            invite: old.invite,
            version: old.version,
            disabled: false,
        })
    })
}

impl Actor for ChatStore {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.latest.clear();
        self.posts = None;
        self.asking.clear();
        self.writing.clear();
        self.directory = self.configured.clone();
        self.follows.clear();
        self.version = 0;
        for e in self.outbox.recover(&recovered) {
            ctx.event(OperatorEvent::StoreCorrupt, format!("{}: {e}", self.name));
        }
        self.outbox.pump(ctx);
        let (rooms, follows) = stored_directory(&recovered);
        for entry in rooms {
            match entry {
                Ok((name, room)) => {
                    self.version = self.version.max(room.version);
                    self.directory.insert(name, room);
                }
                Err(e) => ctx.event(OperatorEvent::StoreCorrupt, format!("{}: {e}", self.name)),
            }
        }
        for entry in follows {
            match entry {
                Ok((user, rooms)) => {
                    self.follows.insert(user, rooms);
                }
                Err(e) => ctx.event(OperatorEvent::StoreCorrupt, format!("{}: {e}", self.name)),
            }
        }
        self.clears.clear();
        self.purging = false;
        self.clearing = false;
        for (k, v) in store_keys::under(&recovered, CHAT_CLEARS) {
            let rest = &k[CHAT_CLEARS.len()..];
            let parsed = (rest.len() > 9 && rest[rest.len() - 9] == 0)
                .then(|| String::from_utf8(rest[..rest.len() - 9].to_vec()).ok())
                .flatten()
                .map(RoomId::from)
                .zip(store_keys::decode::<Clear>(v).ok());
            match parsed {
                Some((room, clear)) => self.clears.entry(room).or_default().push(clear),
                None => ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!("{}: unreadable clear under {k:?}", self.name),
                ),
            }
        }
        self.retention_busy = false;
        self.start_retention(&recovered, ctx);
        let count = Query::Count {
            prefix: CHAT_POST.to_vec(),
        };
        self.ask(Ask::Count, count, ctx);
        // A purge a restart interrupted goes on.
        self.purge_step(ctx);
    }

    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[CHAT_POST, CHAT_POST_ID, CHAT_REPLACED]
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        // Holds and retention are asked for by principals (auditors,
        // operators) from the command-line tool; their roles are checked
        // per request.
        let records = matches!(
            msg,
            Msg::Records(
                RecordsMsg::HoldPlace { .. }
                    | RecordsMsg::HoldRelease { .. }
                    | RecordsMsg::ChatRetentionStatus { .. }
                    | RecordsMsg::ChatPurgeNow { .. }
            )
        );
        let ok = (from.actor == ActorKind::Channel && !records)
            || (from.actor == ActorKind::Client && records)
            || (from.actor == ActorKind::Compliance
                && matches!(msg, Msg::Compliance(ComplianceMsg::ComplianceStaged { .. })));
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        if records {
            return self.on_records_msg(from, msg, ctx);
        }
        // A clear's rows are deleted a batch per request served.
        self.purge_step(ctx);
        match msg {
            Msg::Chat(ChatMsg::StoreRoomDisable {
                token,
                room,
                disabled,
                by,
            }) => {
                let Some(current) = self.directory.get(&room) else {
                    return refuse_room(from, token, room, ChatReject::NoSuchRoom, ctx);
                };
                let mut info = Box::new(current.clone());
                if info.disabled == disabled {
                    return ctx.send(
                        from,
                        Msg::Chat(ChatMsg::StoreRoomSaved { token, room, info }),
                    );
                }
                info.disabled = disabled;
                self.save_room(from, token, room, info, by, ctx);
            }
            Msg::Chat(ChatMsg::StoreClear {
                token,
                room,
                before,
                by,
            }) => {
                if !self.directory.contains_key(&room) {
                    return refuse_room(from, token, room, ChatReject::NoSuchRoom, ctx);
                }
                if self.clearing {
                    // One clear at a time: the operator retries.
                    return ctx.send(from, Msg::Chat(ChatMsg::StoreFailed { token }));
                }
                self.clearing = true;
                // The room's last number first: the clear covers up to it.
                self.learn_latest(&room, ctx);
                let ask = Ask::Clear {
                    from,
                    token,
                    room,
                    before,
                    by,
                };
                self.ask(ask, Query::Get { keys: Vec::new() }, ctx);
            }
            Msg::Chat(ChatMsg::StoreReplace {
                token,
                post,
                text,
                by,
            }) => {
                let query = Query::Get {
                    keys: vec![post_id_key(&post)],
                };
                let ask = Ask::Replace {
                    from,
                    token,
                    id: post,
                    text,
                    by,
                };
                self.ask(ask, query, ctx);
            }
            Msg::Compliance(ComplianceMsg::ComplianceStaged { upto }) => {
                let ops = self.outbox.staged(&from, upto, ctx);
                if !ops.is_empty() {
                    self.write(Write::Trim, Vec::new(), ops, ctx);
                }
            }
            Msg::Chat(ChatMsg::StoreAudit {
                token,
                room,
                user,
                kind,
            }) => {
                let event = NewEvent {
                    kind,
                    room,
                    user,
                    at: ctx.now(),
                    item: String::new(),
                    text: String::new(),
                    details: BTreeMap::new(),
                };
                if self.outbox.enabled() {
                    self.write(Write::Audit { from, token }, vec![event], Vec::new(), ctx);
                } else {
                    ctx.send(from, Msg::Chat(ChatMsg::StoreAudited { token }));
                }
            }
            Msg::Chat(ChatMsg::StoreAppend { token, post }) => {
                // The room's number first, then whether the post is stored:
                // both answers come before any other event.
                self.learn_latest(&post.room, ctx);
                let query = Query::Get {
                    keys: vec![post_id_key(&post.id)],
                };
                self.ask(Ask::Append { from, token, post }, query, ctx);
            }
            Msg::Chat(ChatMsg::StoreRooms { token, since }) => {
                let rooms = self
                    .directory
                    .iter()
                    .filter(|(_, r)| r.version > since)
                    .map(|(n, r)| (n.clone(), r.clone()))
                    .collect();
                ctx.send(
                    from,
                    Msg::Chat(ChatMsg::StoreRoomList {
                        token,
                        rooms,
                        version: self.version,
                    }),
                );
            }
            Msg::Chat(ChatMsg::StoreRoomSave {
                token,
                room,
                info,
                create,
                by,
            }) => {
                let refused = match self.directory.get(&room) {
                    _ if !valid_room_name(&room) => Some(ChatReject::NoSuchRoom),
                    Some(_) if create => Some(ChatReject::RoomExists),
                    None if !create => Some(ChatReject::NoSuchRoom),
                    Some(current) if current.version != info.version => Some(ChatReject::Conflict),
                    _ => None,
                };
                if let Some(reason) = refused {
                    return refuse_room(from, token, room, reason, ctx);
                }
                self.save_room(from, token, room, info, by, ctx);
            }
            Msg::Chat(ChatMsg::StoreUser { token, user }) => {
                self.reply_user(from, token, user, ctx);
            }
            Msg::Chat(ChatMsg::StoreFollow {
                token,
                user,
                room,
                follow,
            }) => {
                let mut follows = self.follows.get(&user).cloned().unwrap_or_default();
                let changed = if follow {
                    follows.insert(room)
                } else {
                    follows.remove(&room)
                };
                if !changed {
                    self.reply_user(from, token, user, ctx);
                    return;
                }
                let op = StoreOp::Put {
                    key: prefixed(CHAT_FOLLOWS, &user),
                    value: store_keys::encode(&follows),
                };
                let write = Write::Follows {
                    from,
                    token,
                    user,
                    follows,
                };
                self.write(write, Vec::new(), vec![op], ctx);
            }
            Msg::Chat(ChatMsg::StoreRead {
                token,
                room,
                after,
                limit,
                audit,
            }) => {
                self.learn_latest(&room, ctx);
                // `after = 0`: a fresh join, the last `limit` posts (as many
                // of them as fit in one answer). Otherwise a catch-up: the
                // client reads again from where this answer ends until it
                // reaches `latest`.
                let query = Query::Scan {
                    prefix: room_posts(&room),
                    from: (after > 0).then(|| after.to_be_bytes().to_vec()),
                    reverse: after == 0,
                    limit: limit.min(READ_MAX_POSTS) as u32,
                };
                let ask = Ask::Read {
                    from,
                    token,
                    room,
                    audit,
                    after,
                    limit,
                };
                self.ask(ask, query, ctx);
            }
            other => ignored("chat store", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        match timer {
            Timer::Compliance(ComplianceTimer::ComplianceResend) => self.outbox.resend(ctx),
            Timer::Chat(ChatTimer::ChatPurge) => self.on_purge_timer(ctx),
            _ => {}
        }
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        let Some((write, queued)) = self.writing.remove(&token) else {
            return;
        };
        if let Err(e) = &result {
            self.outbox.rolled_back(&queued);
            let (from, token, what) = match &write {
                Write::Post {
                    from, token, post, ..
                } => (from, *token, format!("post {}", post.id)),
                Write::Room {
                    from, token, room, ..
                } => (from, *token, format!("room {room}")),
                Write::Follows {
                    from, token, user, ..
                } => (from, *token, format!("follows of {user}")),
                Write::Audit { from, token } => (from, *token, "a compliance event".into()),
                Write::Read { from, answer } => match answer {
                    Msg::Chat(ChatMsg::StoreRange { token, .. }) => {
                        (from, *token, "a compliance event".into())
                    }
                    _ => return,
                },
                // Still in the outbox: deleted again after the next
                // confirmation.
                Write::Trim => return,
                // Tried again at the next request.
                Write::Purge { .. } => {
                    self.purging = false;
                    ctx.event(
                        OperatorEvent::ChatStoreFailed,
                        format!("{}: a purge batch not written: {e}", self.name),
                    );
                    return;
                }
                Write::Clear {
                    from, token, room, ..
                } => {
                    self.clearing = false;
                    (from, *token, format!("the clear of {room}"))
                }
                Write::Replace {
                    from, token, post, ..
                } => (from, *token, format!("the replacement of post {}", post.id)),
                Write::Hold {
                    from, token, hold, ..
                } => (from, *token, format!("legal hold {:?}", hold.name)),
                Write::Retention { record, deleted } => {
                    let (record, deleted) = (record.clone(), *deleted);
                    return self.retention_written(record, deleted, &result, ctx);
                }
            };
            ctx.event(
                OperatorEvent::ChatStoreFailed,
                format!("{}: {what} not stored: {e}", self.name),
            );
            ctx.send(from.clone(), Msg::Chat(ChatMsg::StoreFailed { token }));
            return;
        }
        self.outbox.committed(queued, ctx);
        match write {
            Write::Trim => {}
            Write::Hold { from, token, hold } => self.hold_written(from, token, *hold, ctx),
            Write::Retention { record, deleted } => {
                self.retention_written(record, deleted, &result, ctx)
            }
            Write::Clear {
                from,
                token,
                room,
                index,
                clear,
            } => {
                self.clearing = false;
                ctx.event(
                    OperatorEvent::ChatRecords,
                    format!(
                        "{}: {} cleared {room} through #{}{}",
                        self.name,
                        clear.by,
                        clear.through,
                        clear
                            .before
                            .map(|b| format!(" (posts before {b} ms)"))
                            .unwrap_or_default()
                    ),
                );
                let through = clear.through;
                let cs = self.clears.entry(room.clone()).or_default();
                if cs.len() == index {
                    cs.push(clear);
                }
                let floor = self.floor(&room);
                if let Some(l) = self.latest.get_mut(&room) {
                    *l = (*l).max(floor);
                }
                ctx.send(
                    from,
                    Msg::Chat(ChatMsg::StoreCleared {
                        token,
                        room,
                        through,
                    }),
                );
                self.purge_step(ctx);
            }
            Write::Purge { room, index, clear } => {
                self.purging = false;
                if let Some(c) = self.clears.get_mut(&room).and_then(|c| c.get_mut(index)) {
                    let deleted = clear.deleted - c.deleted.min(clear.deleted);
                    if let Some(n) = &mut self.posts {
                        *n = n.saturating_sub(deleted);
                    }
                    if clear.purged == clear.through {
                        ctx.event(
                            OperatorEvent::ChatRecords,
                            format!(
                                "{}: the clear of {room} through #{} is purged: {} posts deleted, {} held",
                                self.name, clear.through, clear.deleted, clear.held
                            ),
                        );
                    }
                    *c = clear;
                }
            }
            Write::Replace {
                from,
                token,
                seq,
                post,
            } => {
                ctx.event(
                    OperatorEvent::ChatRecords,
                    format!(
                        "{}: post {} ({}#{seq}) replaced",
                        self.name, post.id, post.room
                    ),
                );
                ctx.send(from, Msg::Chat(ChatMsg::StoreReplaced { token, seq, post }));
            }
            Write::Read { from, answer } => ctx.send(from, answer),
            Write::Audit { from, token } => {
                ctx.send(from, Msg::Chat(ChatMsg::StoreAudited { token }))
            }
            Write::Post {
                from,
                token,
                seq,
                post,
            } => {
                self.latest.insert(post.room.clone(), seq);
                if let Some(n) = &mut self.posts {
                    *n += 1;
                }
                ctx.send(from, Msg::Chat(ChatMsg::StoreAppended { token, seq, post }));
            }
            Write::Room {
                from,
                token,
                room,
                info,
            } => {
                if self.directory.get(&room).map(|r| r.disabled) == Some(!info.disabled) {
                    let what = if info.disabled { "disabled" } else { "enabled" };
                    ctx.event(
                        OperatorEvent::ChatRecords,
                        format!("{}: room {room} {what}", self.name),
                    );
                }
                self.version = info.version;
                self.directory.insert(room.clone(), (*info).clone());
                ctx.send(
                    from,
                    Msg::Chat(ChatMsg::StoreRoomSaved { token, room, info }),
                );
            }
            Write::Follows {
                from,
                token,
                user,
                follows,
            } => {
                self.follows.insert(user.clone(), follows);
                self.reply_user(from, token, user, ctx);
            }
        }
    }

    fn on_queried(&mut self, ask: u64, result: Result<Answer, StoreError>, ctx: &mut Ctx) {
        let Some(ask) = self.asking.remove(&ask) else {
            return;
        };
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => {
                // The engine cannot be read: refuse what waited for it (the
                // Channel server retries), never guess.
                let (what, from, token) = match ask {
                    Ask::Count => ("the post count".to_string(), None, Token(0)),
                    Ask::Latest { room, then } => (
                        format!("the last post of {room}"),
                        then.as_ref().map(|t| t.from.clone()),
                        then.map_or(Token(0), |t| t.token),
                    ),
                    Ask::Append { from, token, post } => {
                        (format!("post {}", post.id), Some(from), token)
                    }
                    Ask::Read {
                        from, token, room, ..
                    } => (format!("the posts of {room}"), Some(from), token),
                    Ask::Clear {
                        from, token, room, ..
                    } => {
                        self.clearing = false;
                        (format!("the last post of {room}"), Some(from), token)
                    }
                    Ask::Purge { room, .. } => {
                        self.purging = false;
                        (format!("the posts of {room} to purge"), None, Token(0))
                    }
                    Ask::Replace {
                        from, token, id, ..
                    } => (format!("post {id}"), Some(from), token),
                    Ask::RetentionBegin | Ask::RetentionBatch { .. } => {
                        return self.retention_read_failed(&e, ctx);
                    }
                };
                ctx.event(
                    OperatorEvent::ChatStoreFailed,
                    format!("{}: cannot read {what}: {e}", self.name),
                );
                if let Some(from) = from {
                    ctx.send(from, Msg::Chat(ChatMsg::StoreFailed { token }));
                }
                return;
            }
        };
        match ask {
            Ask::Count => self.posts = Some(answer.count()),
            Ask::Latest { room, then } => {
                let last = answer
                    .into_rows()
                    .first()
                    .and_then(|(k, _)| parse_post_key(k))
                    .map_or(0, |(_, seq)| seq);
                // Numbers a clear covers were given out: never again.
                let last = last.max(self.floor(&room));
                self.latest.insert(room, last);
                if let Some(UserReply { from, token, user }) = then {
                    self.reply_user(from, token, user, ctx);
                }
            }
            Ask::Append { from, token, post } => {
                let stored = answer.into_values().into_iter().next().flatten();
                match stored.map(|v| store_keys::decode::<(u64, Post)>(&v)) {
                    // Stored already: the same answer again.
                    Some(Ok(_)) if self.forgets_ids && self.latest.contains_key(&post.room) => {
                        self.append(from, token, post, ctx)
                    }
                    Some(Ok((seq, post))) => {
                        ctx.send(from, Msg::Chat(ChatMsg::StoreAppended { token, seq, post }))
                    }
                    Some(Err(e)) => {
                        ctx.event(
                            OperatorEvent::StoreCorrupt,
                            format!("{}: post {} unreadable: {e}", self.name, post.id),
                        );
                        ctx.send(from, Msg::Chat(ChatMsg::StoreFailed { token }));
                    }
                    None if !self.latest.contains_key(&post.room) => {
                        // The room's number could not be learned.
                        ctx.send(from, Msg::Chat(ChatMsg::StoreFailed { token }));
                    }
                    None => self.append(from, token, post, ctx),
                }
            }
            Ask::Read {
                from,
                token,
                room,
                audit,
                after,
                limit,
            } => self.answer_read(
                from,
                token,
                room,
                audit,
                (after, limit),
                answer.into_rows(),
                ctx,
            ),
            Ask::Clear {
                from,
                token,
                room,
                before,
                by,
            } => {
                if !self.latest.contains_key(&room) {
                    // The room's number could not be learned.
                    self.clearing = false;
                    return ctx.send(from, Msg::Chat(ChatMsg::StoreFailed { token }));
                }
                let through = self.latest(&room);
                let index = self.clears.get(&room).map_or(0, Vec::len);
                let clear = Clear {
                    through,
                    before,
                    by: by.clone(),
                    at: ctx.now(),
                    purged: 0,
                    deleted: 0,
                    held: 0,
                };
                let op = StoreOp::Put {
                    key: clear_key(&room, index as u64),
                    value: store_keys::encode(&clear),
                };
                let event = NewEvent {
                    kind: EventKind::RoomCleared,
                    room: room.clone(),
                    user: by,
                    at: ctx.now(),
                    item: through.to_string(),
                    text: String::new(),
                    details: clear_details(&clear, false),
                };
                let write = Write::Clear {
                    from,
                    token,
                    room,
                    index,
                    clear,
                };
                self.write(write, vec![event], vec![op], ctx);
            }
            Ask::Purge { room, index } => self.purge_batch(room, index, answer.into_rows(), ctx),
            Ask::RetentionBegin => self.purge_begun(ctx),
            Ask::RetentionBatch { room } => self.retention_batch(room, answer.into_rows(), ctx),
            Ask::Replace {
                from,
                token,
                id,
                text,
                by,
            } => {
                let stored = answer.into_values().into_iter().next().flatten();
                let found = stored.and_then(|v| store_keys::decode::<(u64, Post)>(&v).ok());
                let Some((seq, original)) =
                    found.filter(|(seq, p)| !self.cleared(&p.room, *seq, p))
                else {
                    return refuse_room(
                        from,
                        token,
                        RoomId::default(),
                        ChatReject::NoSuchPost,
                        ctx,
                    );
                };
                let post = Post {
                    text: text.clone(),
                    ..original.clone()
                };
                let mut details = BTreeMap::new();
                details.insert("original".to_string(), original.text.clone());
                details.insert("author".to_string(), original.author.to_string());
                details.insert("seq".to_string(), seq.to_string());
                let event = NewEvent {
                    kind: EventKind::PostReplaced,
                    room: post.room.clone(),
                    user: by.clone(),
                    at: ctx.now(),
                    item: id.to_string(),
                    text,
                    details,
                };
                // The id's row is written again with the post (an engine
                // answers it from the post's row); the original goes
                // beside it, where members never read.
                let ops = vec![
                    StoreOp::Delete {
                        key: post_id_key(&id),
                    },
                    StoreOp::Put {
                        key: post_key(&post.room, seq),
                        value: store_keys::encode(&post),
                    },
                    StoreOp::Insert {
                        key: post_id_key(&id),
                        value: store_keys::encode(&(seq, &post)),
                    },
                    StoreOp::Insert {
                        key: replaced_key(&id),
                        value: store_keys::encode(&Replaced {
                            seq,
                            original,
                            by,
                            at: ctx.now(),
                        }),
                    },
                ];
                let write = Write::Replace {
                    from,
                    token,
                    seq,
                    post,
                };
                self.write(write, vec![event], ops, ctx);
            }
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        let mut gauges = vec![
            (Gauge::ChatRooms, self.directory.len() as u64),
            (Gauge::ComplianceOutbox, self.outbox.len() as u64),
            (Gauge::ChatPurged, self.purged_total),
            (Gauge::ChatLastPurgeAt, self.last_purge_at),
        ];
        if let Some(n) = self.posts {
            gauges.insert(0, (Gauge::ChatPosts, n));
        }
        gauges
    }
}

/// Posts one read asks the engine for at most (a catch-up reads again
/// from where an answer ends, so this bounds the work, not what is read).
pub const READ_MAX_POSTS: u64 = 10_000;

/// Bytes of posts one read answers with (at least one post): with the
/// post size limit, what keeps every answer inside a frame.
pub const READ_MAX_BYTES: u64 = 8 << 20;

/// The first of `posts`, in their order, up to [`READ_MAX_BYTES`]
/// (always the first one).
fn within_read_bound(posts: Vec<(u64, Post)>) -> Vec<(u64, Post)> {
    let mut bytes = 0u64;
    let mut out = Vec::with_capacity(posts.len());
    for (seq, post) in posts {
        bytes += post_bytes(&post);
        if !out.is_empty() && bytes > READ_MAX_BYTES {
            break;
        }
        out.push((seq, post));
    }
    out
}

pub fn post_bytes(p: &Post) -> u64 {
    (p.text.len() + p.author.len() + p.room.len() + p.id.len()) as u64 + 32
}

/// What a room change changed, for compliance: `created` for a new room;
/// otherwise each part that differs (member, manager and wall lists as the
/// users added and removed, comma-separated; the new category, privacy,
/// invitation setting; `description` when it changed, the new text being
/// the event's text).
pub fn room_changes(before: Option<&Room>, after: &Room) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    let Some(before) = before else {
        d.insert("created".into(), "true".into());
        let list =
            |s: &BTreeSet<UserId>| s.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(",");
        if !after.members.is_empty() {
            d.insert("members_added".into(), list(&after.members));
        }
        if !after.managers.is_empty() {
            d.insert("managers_added".into(), list(&after.managers));
        }
        if !after.denied.is_empty() {
            d.insert("walled_added".into(), list(&after.denied));
        }
        d.insert("category".into(), after.category.clone());
        d.insert(
            "privacy".into(),
            format!("{:?}", after.privacy).to_lowercase(),
        );
        return d;
    };
    let mut sets = |name: &str, old: &BTreeSet<UserId>, new: &BTreeSet<UserId>| {
        let added: Vec<&str> = new.difference(old).map(UserId::as_str).collect();
        let removed: Vec<&str> = old.difference(new).map(UserId::as_str).collect();
        if !added.is_empty() {
            d.insert(format!("{name}_added"), added.join(","));
        }
        if !removed.is_empty() {
            d.insert(format!("{name}_removed"), removed.join(","));
        }
    };
    sets("members", &before.members, &after.members);
    sets("managers", &before.managers, &after.managers);
    sets("walled", &before.denied, &after.denied);
    if before.presenters != after.presenters {
        let p = after
            .presenters
            .as_ref()
            .map_or("none (not an auditorium)".to_string(), |p| {
                p.iter().cloned().collect::<Vec<_>>().join(",")
            });
        d.insert("presenters".into(), p);
    }
    if before.category != after.category {
        d.insert("category".into(), after.category.clone());
    }
    if before.privacy != after.privacy {
        d.insert(
            "privacy".into(),
            format!("{:?}", after.privacy).to_lowercase(),
        );
    }
    if before.invite != after.invite {
        d.insert("invite".into(), after.invite.to_string());
    }
    if before.description != after.description {
        d.insert("description".into(), "changed".into());
    }
    if before.disabled != after.disabled {
        d.insert("disabled".into(), after.disabled.to_string());
    }
    d
}

/// What a clear's compliance event says of it: the range, and once purged
/// how many rows were deleted and how many a hold kept.
fn clear_details(clear: &Clear, purged: bool) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    d.insert("through".to_string(), clear.through.to_string());
    if let Some(b) = clear.before {
        d.insert("before".to_string(), b.to_string());
    }
    d.insert("cleared_at".to_string(), clear.at.to_string());
    if purged {
        d.insert("deleted".to_string(), clear.deleted.to_string());
        d.insert("held".to_string(), clear.held.to_string());
    }
    d
}

#[cfg(test)]
mod room_change_tests {
    use super::*;
    use crate::core::protocol::chat::Privacy;

    fn room(members: &[&str]) -> Room {
        Room {
            members: members.iter().map(|m| (*m).into()).collect(),
            ..Room::default()
        }
    }

    /// A room change says what it changed: users added and removed, and
    /// each setting that differs; a new room says it was created.
    #[test]
    fn a_room_change_names_what_changed() {
        let before = room(&["a@x", "b@x"]);
        let mut after = room(&["b@x", "c@x"]);
        after.privacy = Privacy::Secret;
        after.description = "new".into();
        let d = room_changes(Some(&before), &after);
        assert_eq!(d["members_added"], "c@x");
        assert_eq!(d["members_removed"], "a@x");
        assert_eq!(d["privacy"], "secret");
        assert_eq!(d["description"], "changed");
        assert!(!d.contains_key("category") && !d.contains_key("managers_added"));
        let created = room_changes(None, &after);
        assert_eq!(created["created"], "true");
        assert_eq!(created["members_added"], "b@x,c@x");
        assert!(room_changes(Some(&after), &after).is_empty());
    }
}

/// What the tests below drive the store with: a store started as `db1`,
/// written by the channel server `ch1`, in room `r1`.
#[cfg(test)]
mod fixture {
    use super::*;
    use crate::compliance::service::OUTBOX;
    use crate::testkit::Harness;

    pub fn ch() -> Addr {
        Addr::new("ch1", ActorKind::Channel)
    }

    /// `store` as `db1`, not yet started.
    pub fn harness(store: ChatStore) -> Harness<ChatStore> {
        Harness::new(Addr::new("db1", ActorKind::ChatStore), store)
    }

    /// `store` as `db1`, started with nothing recovered.
    pub fn started(store: ChatStore) -> Harness<ChatStore> {
        let mut h = harness(store);
        h.start(Recovered::new());
        h
    }

    pub fn append(token: u64, post: Post) -> Msg {
        Msg::Chat(ChatMsg::StoreAppend {
            token: Token(token),
            post,
        })
    }

    /// The channel server appends `post` with `token`; the store must
    /// confirm it.
    pub fn store_post(h: &mut Harness<ChatStore>, token: u64, post: Post) {
        let sent = h.msg(ch(), append(token, post));
        assert!(
            sent.iter()
                .any(|(_, m)| matches!(m, Msg::Chat(ChatMsg::StoreAppended { .. }))),
            "{sent:?}"
        );
    }

    /// A read of room `r1`.
    pub fn read(token: u64, after: u64, limit: u64, audit: Option<(UserId, EventKind)>) -> Msg {
        Msg::Chat(ChatMsg::StoreRead {
            token: Token(token),
            room: "r1".into(),
            after,
            limit,
            audit,
        })
    }

    /// A clear of room `r1` by `ops`.
    pub fn clear(token: u64, before: Option<u64>) -> Msg {
        Msg::Chat(ChatMsg::StoreClear {
            token: Token(token),
            room: "r1".into(),
            before,
            by: "ops".into(),
        })
    }

    /// The compliance events the store holds in its outbox.
    pub fn outbox(h: &Harness<ChatStore>) -> Vec<ComplianceEvent> {
        h.store
            .iter()
            .filter(|(k, _)| k.starts_with(OUTBOX) && k.len() == OUTBOX.len() + 8)
            .map(|(_, v)| store_keys::decode(v).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{append, ch, harness, outbox, read, started};
    use super::*;
    use crate::core::ids::Seq;
    use crate::testkit::Harness;

    fn post(id: &str, room: &str) -> Post {
        Post {
            id: id.into(),
            room: room.into(),
            author: "a@corp.example".into(),
            text: format!("text of {id}"),
            at: 0,
        }
    }

    fn store() -> Harness<ChatStore> {
        started(ChatStore::new("db1", BTreeMap::new()))
    }

    fn appended(sent: &[(Addr, Msg)]) -> Vec<(u64, u64)> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::Chat(ChatMsg::StoreAppended { token, seq, .. }) => Some((token.0, *seq)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn posts_get_contiguous_numbers_per_room_and_retries_are_idempotent() {
        let mut h = store();
        let mut got = Vec::new();
        for (t, (id, room)) in [("p1", "r1"), ("p2", "r1"), ("q1", "r2"), ("p1", "r1")]
            .iter()
            .enumerate()
        {
            got.extend(appended(&h.msg(ch(), append(t as u64, post(id, room)))));
        }
        assert_eq!(got, vec![(0, 1), (1, 2), (2, 1), (3, 1)]);
        // Recovery gives the same numbers, and the next post continues.
        let recovered = h.store.clone();
        let mut h2 = harness(ChatStore::new("db1", BTreeMap::new()));
        // The posts stay in the engine; the core is handed none of them.
        h2.store = recovered.clone();
        h2.start(recovered);
        let sent = h2.msg(ch(), append(9, post("p3", "r1")));
        assert_eq!(appended(&sent), vec![(9, 3)]);
        assert!(h2.events().is_empty());
        assert_eq!(h2.actor().gauges()[0], (Gauge::ChatPosts, 4));
    }

    #[test]
    fn a_failed_write_is_refused_and_leaves_no_hole() {
        let mut h = store();
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = h.msg(ch(), append(1, post("p1", "r1")));
        assert!(matches!(
            sent[0].1,
            Msg::Chat(ChatMsg::StoreFailed { token: Token(1) })
        ));
        h.fail_persists = None;
        let sent = h.msg(ch(), append(2, post("p2", "r1")));
        assert_eq!(appended(&sent), vec![(2, 1)]);
    }

    #[test]
    fn compliance_events_are_written_with_what_they_record_or_not_at_all() {
        let mut h =
            started(ChatStore::new("db1", BTreeMap::new()).with_compliance(Some("comp1".into())));
        // A failed append queues nothing, and gives no number away.
        h.fail_persists = Some(StoreError::NoSpace);
        h.msg(ch(), append(1, post("p1", "r1")));
        assert!(outbox(&h).is_empty());
        h.fail_persists = None;
        let sent = h.msg(ch(), append(2, post("p2", "r1")));
        // Stored, acknowledged, and its event queued and sent at once.
        assert_eq!(appended(&sent), vec![(2, 1)]);
        let queued = outbox(&h);
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].seq.0, queued[0].kind), (1, EventKind::Post));
        assert_eq!(queued[0].item, "p2");
        assert!(sent.iter().any(|(a, m)| a.node == "comp1"
            && matches!(m, Msg::Compliance(ComplianceMsg::ComplianceBatch { events }) if events.len() == 1)));
        // A retried post is not a second event.
        h.msg(ch(), append(3, post("p2", "r1")));
        assert_eq!(outbox(&h).len(), 1);
        // A join is recorded before the posts are sent; a read that found
        // nothing is not recorded.
        let audited = |t, kind| read(t, 1, 10, Some(("bob".into(), kind)));
        let sent = h.msg(ch(), audited(4, EventKind::Join));
        assert!(sent.iter().any(|(_, m)| matches!(
            m,
            Msg::Chat(ChatMsg::StoreRange {
                token: Token(4),
                ..
            })
        )));
        h.msg(ch(), audited(5, EventKind::Read));
        let kinds: Vec<EventKind> = outbox(&h).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::Post, EventKind::Join]);
        // Once staged, the outbox forgets them.
        h.msg(
            Addr::new("comp1", ActorKind::Compliance),
            Msg::Compliance(ComplianceMsg::ComplianceStaged { upto: Seq(2) }),
        );
        assert!(outbox(&h).is_empty());
    }

    #[test]
    fn reads_give_the_backchat_or_what_follows_a_number() {
        let mut h = store();
        for i in 1..=5 {
            h.msg(ch(), append(i, post(&format!("p{i}"), "r1")));
        }
        let numbers = |h: &mut Harness<ChatStore>, after, limit| -> (Vec<u64>, u64) {
            let sent = h.msg(ch(), read(7, after, limit, None));
            match &sent[0].1 {
                Msg::Chat(ChatMsg::StoreRange { posts, latest, .. }) => {
                    (posts.iter().map(|(s, _)| *s).collect(), *latest)
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(numbers(&mut h, 0, 2), (vec![4, 5], 5));
        assert_eq!(numbers(&mut h, 2, 2), (vec![3, 4], 5));
        assert_eq!(numbers(&mut h, 5, 2), (vec![], 5));
        // After a restart the core knows no post: it reads the engine.
        let follow = Msg::Chat(ChatMsg::StoreFollow {
            token: Token(8),
            user: "bob".into(),
            room: "r1".into(),
            follow: true,
        });
        h.msg(ch(), follow);
        let store = h.store.clone();
        h.start(store);
        assert_eq!(numbers(&mut h, 0, 3), (vec![3, 4, 5], 5));
        h.start(h.store.clone());
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreUser {
                token: Token(9),
                user: "bob".into(),
            }),
        );
        assert_eq!(
            sent,
            vec![(
                ch(),
                Msg::Chat(ChatMsg::StoreUserInfo {
                    token: Token(9),
                    user: "bob".into(),
                    follows: vec![("r1".into(), 5)]
                })
            )]
        );
        // An engine that cannot be read: refused, never guessed.
        h.start(h.store.clone());
        h.fail_queries = Some(StoreError::Io("engine down".into()));
        let sent = h.msg(ch(), append(10, post("p6", "r1")));
        assert_eq!(
            sent,
            vec![(ch(), Msg::Chat(ChatMsg::StoreFailed { token: Token(10) }))]
        );
        h.fail_queries = None;
        let sent = h.msg(ch(), append(11, post("p6", "r1")));
        assert_eq!(appended(&sent), vec![(11, 6)]);
    }

    #[test]
    fn only_channel_servers_may_write() {
        let mut h = store();
        let sent = h.msg(
            Addr::new("c", ActorKind::Client),
            append(1, post("p1", "r1")),
        );
        assert!(sent.is_empty());
        assert_eq!(h.events(), vec!["unauthorized_sender"]);
    }
}

#[cfg(test)]
mod records_tests {
    use super::*;

    /// Rooms stored before rooms could be disabled still read, enabled.
    #[test]
    fn a_room_stored_before_disable_reads_as_enabled() {
        #[derive(serde::Serialize)]
        struct Old {
            members: BTreeSet<String>,
            denied: BTreeSet<String>,
            presenters: Option<BTreeSet<String>>,
            managers: BTreeSet<String>,
            privacy: crate::core::protocol::chat::Privacy,
            category: String,
            description: String,
            invite: bool,
            version: u64,
        }
        let old = Old {
            members: ["a@x".to_string()].into(),
            denied: BTreeSet::new(),
            presenters: None,
            managers: BTreeSet::new(),
            privacy: crate::core::protocol::chat::Privacy::Secret,
            category: "corp".into(),
            description: "d".into(),
            invite: true,
            version: 7,
        };
        let room = decode_room(&store_keys::encode(&old)).unwrap();
        assert_eq!((room.version, room.disabled, room.invite), (7, false, true));
        let now = Room {
            disabled: true,
            ..room.clone()
        };
        assert_eq!(decode_room(&store_keys::encode(&now)).unwrap(), now);
    }
    use super::fixture::{
        append, ch, clear, outbox as events, read as read_msg, started, store_post,
    };
    use crate::compliance::service::OUTBOX;
    use crate::testkit::Harness;

    fn store() -> Harness<ChatStore> {
        sabotaged(false)
    }

    fn sabotaged(hides_only: bool) -> Harness<ChatStore> {
        let mut rooms = BTreeMap::new();
        rooms.insert("r1".into(), Room::default());
        let sabotage = crate::core::settings::Sabotage {
            chat_clear_hides_only: hides_only,
            ..Default::default()
        };
        started(
            ChatStore::new("db1", rooms)
                .with_compliance(Some("comp1".into()))
                .sabotaged(&sabotage),
        )
    }

    fn post(h: &mut Harness<ChatStore>, i: u64, at: u64) {
        let post = Post {
            id: format!("p{i}").into(),
            room: "r1".into(),
            author: "a@x".into(),
            text: format!("secret text {i}"),
            at,
        };
        store_post(h, i, post);
    }

    fn read(h: &mut Harness<ChatStore>, after: u64) -> (Vec<u64>, u64, u64) {
        let sent = h.msg(ch(), read_msg(99, after, 100, None));
        sent.into_iter()
            .find_map(|(_, m)| match m {
                Msg::Chat(ChatMsg::StoreRange {
                    posts,
                    latest,
                    through,
                    ..
                }) => Some((posts.iter().map(|(s, _)| *s).collect(), latest, through)),
                _ => None,
            })
            .expect("a range")
    }

    fn holds_text(h: &Harness<ChatStore>, text: &str) -> bool {
        h.store
            .iter()
            .filter(|(k, _)| !k.starts_with(OUTBOX))
            .any(|(_, v)| v.windows(text.len()).any(|w| w == text.as_bytes()))
    }

    /// A clear before a time hides the older posts at once, deletes their
    /// rows (ids and all), keeps the numbering, and reads after a cleared
    /// number answer with the next survivor and how far they account.
    #[test]
    fn a_clear_deletes_the_rows_it_covers_and_never_reuses_numbers() {
        let mut h = store();
        for i in 1..=5 {
            post(&mut h, i, i * 1000);
        }
        let sent = h.msg(ch(), clear(7, Some(3500)));
        assert!(
            sent.iter().any(|(_, m)| matches!(
                m,
                Msg::Chat(ChatMsg::StoreCleared {
                    token: Token(7),
                    through: 5,
                    ..
                })
            )),
            "{sent:?}"
        );
        // The purge ran (one batch) with the mark: the rows are gone.
        for i in 1..=3 {
            assert!(!holds_text(&h, &format!("secret text {i}")), "post {i}");
            assert!(!h.store.contains_key(&post_id_key(&format!("p{i}"))));
        }
        assert!(holds_text(&h, "secret text 4"));
        assert_eq!(read(&mut h, 0), (vec![4, 5], 5, 5));
        assert_eq!(read(&mut h, 1), (vec![4, 5], 5, 5));
        // Everything cleared: a restart keeps the last number.
        h.msg(ch(), clear(8, None));
        h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreRooms {
                token: Token(9),
                since: 0,
            }),
        );
        assert!(!holds_text(&h, "secret text 5"));
        let again = h.store.clone();
        h.start(again);
        assert_eq!(read(&mut h, 2), (vec![], 5, 5));
        post(&mut h, 6, 9000);
        assert_eq!(read(&mut h, 0), (vec![6], 6, 6));
        let kinds: Vec<(EventKind, String)> = events(&h)
            .into_iter()
            .filter(|e| e.kind != EventKind::Post)
            .map(|e| {
                (
                    e.kind,
                    e.details.get("deleted").cloned().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::RoomCleared, String::new()),
                (EventKind::RoomPurged, "3".to_string()),
                (EventKind::RoomCleared, String::new()),
                (EventKind::RoomPurged, "2".to_string()),
            ]
        );
        assert!(events(&h)
            .iter()
            .all(|e| e.kind != EventKind::RoomCleared
                || e.user == "ops" && e.details["through"] == "5"));
    }

    /// A sabotaged store that only hides cleared posts keeps their text.
    #[test]
    fn a_store_that_only_hides_keeps_the_text() {
        let mut h = sabotaged(true);
        post(&mut h, 1, 1000);
        h.msg(ch(), clear(7, None));
        assert_eq!(read(&mut h, 0), (vec![], 1, 1));
        assert!(holds_text(&h, "secret text 1"));
    }

    /// A replace shows members the new text and keeps the original beside
    /// it (and in the compliance event); a cleared post cannot be replaced.
    #[test]
    fn a_replace_keeps_the_original_for_compliance() {
        let mut h = store();
        post(&mut h, 1, 1000);
        post(&mut h, 2, 2000);
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreReplace {
                token: Token(5),
                post: "p2".into(),
                text: "redacted".into(),
                by: "ops".into(),
            }),
        );
        assert!(
            sent.iter().any(|(_, m)| matches!(m, Msg::Chat(ChatMsg::StoreReplaced { seq: 2, post, .. }) if post.text == "redacted")),
            "{sent:?}"
        );
        let sent = h.msg(ch(), read_msg(6, 1, 10, None));
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::StoreRange { posts, .. }) if posts[0].1.text == "redacted"),
            "{sent:?}"
        );
        let original: Replaced = store_keys::decode(&h.store[&replaced_key("p2")]).unwrap();
        assert_eq!(
            (original.original.text.as_str(), original.seq),
            ("secret text 2", 2)
        );
        let e = events(&h).pop().unwrap();
        assert_eq!(e.kind, EventKind::PostReplaced);
        assert_eq!(
            (e.text.as_str(), e.details["original"].as_str()),
            ("redacted", "secret text 2")
        );
        // A retry of the post is answered with the stored (new) content.
        let retry = Post {
            id: "p2".into(),
            room: "r1".into(),
            author: "a@x".into(),
            text: "secret text 2".into(),
            at: 2000,
        };
        let sent = h.msg(ch(), append(8, retry));
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::StoreAppended { seq: 2, post, .. }) if post.text == "redacted")
        );
        h.msg(ch(), clear(9, None));
        assert!(!h.store.contains_key(&replaced_key("p2")));
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreReplace {
                token: Token(10),
                post: "p1".into(),
                text: "x".into(),
                by: "ops".into(),
            }),
        );
        assert!(matches!(
            &sent[0].1,
            Msg::Chat(ChatMsg::StoreRoomRefused {
                reason: ChatReject::NoSuchPost,
                ..
            })
        ));
    }

    /// Disabling is a room change: a new directory version, recorded.
    #[test]
    fn a_disable_is_a_room_change() {
        let mut h = store();
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreRoomDisable {
                token: Token(1),
                room: "r1".into(),
                disabled: true,
                by: "ops".into(),
            }),
        );
        assert!(
            sent.iter().any(|(_, m)| matches!(m, Msg::Chat(ChatMsg::StoreRoomSaved { info, .. }) if info.disabled && info.version == 1)),
            "{sent:?}"
        );
        let e = events(&h).pop().unwrap();
        assert_eq!(
            (e.kind, e.details["disabled"].as_str()),
            (EventKind::RoomSaved, "true")
        );
        assert_eq!(h.events(), vec!["chat_records"]);
        let sent = h.msg(
            ch(),
            Msg::Chat(ChatMsg::StoreRoomDisable {
                token: Token(2),
                room: "nope".into(),
                disabled: true,
                by: "ops".into(),
            }),
        );
        assert!(matches!(
            &sent[0].1,
            Msg::Chat(ChatMsg::StoreRoomRefused {
                reason: ChatReject::NoSuchRoom,
                ..
            })
        ));
    }
}

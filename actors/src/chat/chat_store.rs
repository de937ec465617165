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

use crate::compliance::service::{NewEvent, Outbox};
use crate::core::actor::{authorize, Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written};
use crate::core::engine::{Answer, Query};
use crate::core::ids::{ActorKind, Addr};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::chat::{ChatReject, Post, PostId, Room, RoomId};
use crate::core::protocol::compliance::{ComplianceEvent, EventKind};
use crate::core::protocol::Msg;
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

pub fn parse_post_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(CHAT_POST)?;
    if rest.len() < 9 || rest[rest.len() - 9] != 0 {
        return None;
    }
    let (room, seq) = rest.split_at(rest.len() - 9);
    let seq = u64::from_be_bytes(seq[1..].try_into().ok()?);
    Some((String::from_utf8(room.to_vec()).ok()?, seq))
}

/// A write in flight and whom to answer when it is durable.
enum Write {
    Post {
        from: Addr,
        token: u64,
        seq: u64,
        post: Post,
    },
    Room {
        from: Addr,
        token: u64,
        room: RoomId,
        info: Box<Room>,
    },
    Follows {
        from: Addr,
        token: u64,
        user: String,
        follows: BTreeSet<RoomId>,
    },
    /// A read whose compliance event must be durable before the answer.
    Read { from: Addr, answer: Msg },
    /// A compliance event the Channel server reported (a leave).
    Audit { from: Addr, token: u64 },
    /// Deleting outbox events the Compliance service has staged.
    Trim,
}

/// A Channel server waiting for a user's follows.
struct UserReply {
    from: Addr,
    token: u64,
    user: String,
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
    Append { from: Addr, token: u64, post: Post },
    /// A history read or a catch-up.
    Read {
        from: Addr,
        token: u64,
        room: RoomId,
        audit: Option<(String, EventKind)>,
        after: u64,
    },
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
    follows: BTreeMap<String, BTreeSet<RoomId>>,
    writing: BTreeMap<u64, (Write, Vec<ComplianceEvent>)>,
    next_token: u64,
    outbox: Outbox,
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
        }
    }

    /// Applies the sabotages that concern the chat store (for the
    /// checkers to find; production never sets them).
    pub fn sabotaged(mut self, sabotage: &crate::core::settings::Sabotage) -> Self {
        self.forgets_ids = sabotage.chat_store_forgets_ids;
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
    fn reply_user(&mut self, from: Addr, token: u64, user: String, ctx: &mut Ctx) {
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
                Msg::StoreUserInfo {
                    token,
                    user,
                    follows,
                },
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

    /// Appends a post the engine does not hold yet.
    fn append(&mut self, from: Addr, token: u64, post: Post, ctx: &mut Ctx) {
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
            item: post.id.clone(),
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
        token: u64,
        room: RoomId,
        audit: Option<(String, EventKind)>,
        after: u64,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        ctx: &mut Ctx,
    ) {
        let mut posts = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            match parse_post_key(&k)
                .map(|(_, seq)| seq)
                .zip(store_keys::decode::<Post>(&v).ok())
            {
                Some(p) => posts.push(p),
                None => ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!("{}: unreadable post under {k:?}", self.name),
                ),
            }
        }
        // A fresh join read newest first: keep the newest that fit in one
        // answer, then give them in order.
        let mut posts = within_read_bound(posts);
        if after == 0 {
            posts.reverse();
        }
        let latest = self.latest(&room);
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
        let answer = Msg::StoreRange {
            token,
            room,
            posts,
            latest,
        };
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
    recovered
        .range(CHAT_POST.to_vec()..)
        .take_while(|(k, _)| k.starts_with(CHAT_POST))
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
    Vec<Result<(String, BTreeSet<RoomId>), ChatReadError>>,
) {
    fn under<T: serde::de::DeserializeOwned>(
        recovered: &Recovered,
        prefix: &'static [u8],
    ) -> Vec<Result<(String, T), ChatReadError>> {
        recovered
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| {
                let name = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| ChatReadError::MalformedKey { key: k.clone() })?;
                let value = store_keys::decode(v).map_err(ReadError::undecodable(k))?;
                Ok((name, value))
            })
            .collect()
    }
    (under(recovered, CHAT_ROOM), under(recovered, CHAT_FOLLOWS))
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
        let count = Query::Count {
            prefix: CHAT_POST.to_vec(),
        };
        self.ask(Ask::Count, count, ctx);
    }

    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[CHAT_POST, CHAT_POST_ID]
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = from.actor == ActorKind::Channel
            || (from.actor == ActorKind::Compliance && matches!(msg, Msg::ComplianceStaged { .. }));
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::ComplianceStaged { upto } => {
                let ops = self.outbox.staged(&from, upto, ctx);
                if !ops.is_empty() {
                    self.write(Write::Trim, Vec::new(), ops, ctx);
                }
            }
            Msg::StoreAudit {
                token,
                room,
                user,
                kind,
            } => {
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
                    ctx.send(from, Msg::StoreAudited { token });
                }
            }
            Msg::StoreAppend { token, post } => {
                // The room's number first, then whether the post is stored:
                // both answers come before any other event.
                self.learn_latest(&post.room, ctx);
                let query = Query::Get {
                    keys: vec![post_id_key(&post.id)],
                };
                self.ask(Ask::Append { from, token, post }, query, ctx);
            }
            Msg::StoreRooms { token, since } => {
                let rooms = self
                    .directory
                    .iter()
                    .filter(|(_, r)| r.version > since)
                    .map(|(n, r)| (n.clone(), r.clone()))
                    .collect();
                ctx.send(
                    from,
                    Msg::StoreRoomList {
                        token,
                        rooms,
                        version: self.version,
                    },
                );
            }
            Msg::StoreRoomSave {
                token,
                room,
                mut info,
                create,
                by,
            } => {
                let refused = match self.directory.get(&room) {
                    _ if !valid_room_name(&room) => Some(ChatReject::NoSuchRoom),
                    Some(_) if create => Some(ChatReject::RoomExists),
                    None if !create => Some(ChatReject::NoSuchRoom),
                    Some(current) if current.version != info.version => Some(ChatReject::Conflict),
                    _ => None,
                };
                if let Some(reason) = refused {
                    ctx.send(
                        from,
                        Msg::StoreRoomRefused {
                            token,
                            room,
                            reason,
                        },
                    );
                    return;
                }
                info.version = self.version + 1;
                let op = StoreOp::Put {
                    key: prefixed(CHAT_ROOM, &room),
                    value: store_keys::encode(&info),
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
            Msg::StoreUser { token, user } => {
                self.reply_user(from, token, user, ctx);
            }
            Msg::StoreFollow {
                token,
                user,
                room,
                follow,
            } => {
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
            Msg::StoreRead {
                token,
                room,
                after,
                limit,
                audit,
            } => {
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
                };
                self.ask(ask, query, ctx);
            }
            other => ctx.event(
                OperatorEvent::UnexpectedMessage,
                format!(
                    "chat store {} ignored {} from {from}",
                    self.name,
                    other.name()
                ),
            ),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::ComplianceResend {
            self.outbox.resend(ctx);
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
                    Msg::StoreRange { token, .. } => (from, *token, "a compliance event".into()),
                    _ => return,
                },
                // Still in the outbox: deleted again after the next
                // confirmation.
                Write::Trim => return,
            };
            ctx.event(
                OperatorEvent::ChatStoreFailed,
                format!("{}: {what} not stored: {e}", self.name),
            );
            ctx.send(from.clone(), Msg::StoreFailed { token });
            return;
        }
        self.outbox.committed(queued, ctx);
        match write {
            Write::Trim => {}
            Write::Read { from, answer } => ctx.send(from, answer),
            Write::Audit { from, token } => ctx.send(from, Msg::StoreAudited { token }),
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
                ctx.send(from, Msg::StoreAppended { token, seq, post });
            }
            Write::Room {
                from,
                token,
                room,
                info,
            } => {
                self.version = info.version;
                self.directory.insert(room.clone(), (*info).clone());
                ctx.send(from, Msg::StoreRoomSaved { token, room, info });
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
                    Ask::Count => ("the post count".to_string(), None, 0),
                    Ask::Latest { room, then } => (
                        format!("the last post of {room}"),
                        then.as_ref().map(|t| t.from.clone()),
                        then.map_or(0, |t| t.token),
                    ),
                    Ask::Append { from, token, post } => {
                        (format!("post {}", post.id), Some(from), token)
                    }
                    Ask::Read {
                        from, token, room, ..
                    } => (format!("the posts of {room}"), Some(from), token),
                };
                ctx.event(
                    OperatorEvent::ChatStoreFailed,
                    format!("{}: cannot read {what}: {e}", self.name),
                );
                if let Some(from) = from {
                    ctx.send(from, Msg::StoreFailed { token });
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
                        ctx.send(from, Msg::StoreAppended { token, seq, post })
                    }
                    Some(Err(e)) => {
                        ctx.event(
                            OperatorEvent::StoreCorrupt,
                            format!("{}: post {} unreadable: {e}", self.name, post.id),
                        );
                        ctx.send(from, Msg::StoreFailed { token });
                    }
                    None if !self.latest.contains_key(&post.room) => {
                        // The room's number could not be learned.
                        ctx.send(from, Msg::StoreFailed { token });
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
            } => self.answer_read(from, token, room, audit, after, answer.into_rows(), ctx),
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        let mut gauges = vec![
            (Gauge::ChatRooms, self.directory.len() as u64),
            (Gauge::ComplianceOutbox, self.outbox.len() as u64),
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
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
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
    let mut sets = |name: &str, old: &BTreeSet<String>, new: &BTreeSet<String>| {
        let added: Vec<&str> = new.difference(old).map(String::as_str).collect();
        let removed: Vec<&str> = old.difference(new).map(String::as_str).collect();
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
    d
}

#[cfg(test)]
mod room_change_tests {
    use super::*;
    use crate::core::protocol::chat::Privacy;

    fn room(members: &[&str]) -> Room {
        Room {
            members: members.iter().map(|m| m.to_string()).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
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

    fn ch() -> Addr {
        Addr::new("ch1", ActorKind::Channel)
    }

    fn appended(sent: &[(Addr, Msg)]) -> Vec<(u64, u64)> {
        sent.iter()
            .filter_map(|(_, m)| match m {
                Msg::StoreAppended { token, seq, .. } => Some((*token, *seq)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn posts_get_contiguous_numbers_per_room_and_retries_are_idempotent() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        h.start(Recovered::new());
        let mut got = Vec::new();
        for (t, (id, room)) in [("p1", "r1"), ("p2", "r1"), ("q1", "r2"), ("p1", "r1")]
            .iter()
            .enumerate()
        {
            got.extend(appended(&h.msg(
                ch(),
                Msg::StoreAppend {
                    token: t as u64,
                    post: post(id, room),
                },
            )));
        }
        assert_eq!(got, vec![(0, 1), (1, 2), (2, 1), (3, 1)]);
        // Recovery gives the same numbers, and the next post continues.
        let recovered = h.store.clone();
        let mut h2 = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        // The posts stay in the engine; the core is handed none of them.
        h2.store = recovered.clone();
        h2.start(recovered);
        let sent = h2.msg(
            ch(),
            Msg::StoreAppend {
                token: 9,
                post: post("p3", "r1"),
            },
        );
        assert_eq!(appended(&sent), vec![(9, 3)]);
        assert!(h2.events().is_empty());
        assert_eq!(h2.actor().gauges()[0], (Gauge::ChatPosts, 4));
    }

    #[test]
    fn a_failed_write_is_refused_and_leaves_no_hole() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = h.msg(
            ch(),
            Msg::StoreAppend {
                token: 1,
                post: post("p1", "r1"),
            },
        );
        assert!(matches!(sent[0].1, Msg::StoreFailed { token: 1 }));
        h.fail_persists = None;
        let sent = h.msg(
            ch(),
            Msg::StoreAppend {
                token: 2,
                post: post("p2", "r1"),
            },
        );
        assert_eq!(appended(&sent), vec![(2, 1)]);
    }

    #[test]
    fn compliance_events_are_written_with_what_they_record_or_not_at_all() {
        use crate::compliance::service::OUTBOX;
        use crate::core::protocol::compliance::{ComplianceEvent, EventKind};
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()).with_compliance(Some("comp1".into())),
        );
        h.start(Recovered::new());
        let outbox = |h: &Harness<ChatStore>| -> Vec<ComplianceEvent> {
            h.store
                .iter()
                .filter(|(k, _)| k.starts_with(OUTBOX) && k.len() == OUTBOX.len() + 8)
                .map(|(_, v)| store_keys::decode(v).unwrap())
                .collect()
        };
        // A failed append queues nothing, and gives no number away.
        h.fail_persists = Some(StoreError::NoSpace);
        let append = |t, id: &str| Msg::StoreAppend {
            token: t,
            post: post(id, "r1"),
        };
        h.msg(ch(), append(1, "p1"));
        assert!(outbox(&h).is_empty());
        h.fail_persists = None;
        let sent = h.msg(ch(), append(2, "p2"));
        // Stored, acknowledged, and its event queued and sent at once.
        assert_eq!(appended(&sent), vec![(2, 1)]);
        let queued = outbox(&h);
        assert_eq!(queued.len(), 1);
        assert_eq!((queued[0].seq, queued[0].kind), (1, EventKind::Post));
        assert_eq!(queued[0].item, "p2");
        assert!(sent.iter().any(|(a, m)| a.node == "comp1"
            && matches!(m, Msg::ComplianceBatch { events } if events.len() == 1)));
        // A retried post is not a second event.
        h.msg(ch(), append(3, "p2"));
        assert_eq!(outbox(&h).len(), 1);
        // A join is recorded before the posts are sent; a read that found
        // nothing is not recorded.
        let read = |t, kind| Msg::StoreRead {
            token: t,
            room: "r1".into(),
            after: 1,
            limit: 10,
            audit: Some(("bob".into(), kind)),
        };
        let sent = h.msg(ch(), read(4, EventKind::Join));
        assert!(sent
            .iter()
            .any(|(_, m)| matches!(m, Msg::StoreRange { token: 4, .. })));
        h.msg(ch(), read(5, EventKind::Read));
        let kinds: Vec<EventKind> = outbox(&h).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::Post, EventKind::Join]);
        // Once staged, the outbox forgets them.
        h.msg(
            Addr::new("comp1", ActorKind::Compliance),
            Msg::ComplianceStaged { upto: 2 },
        );
        assert!(outbox(&h).is_empty());
    }

    #[test]
    fn reads_give_the_backchat_or_what_follows_a_number() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        h.start(Recovered::new());
        for i in 1..=5 {
            h.msg(
                ch(),
                Msg::StoreAppend {
                    token: i,
                    post: post(&format!("p{i}"), "r1"),
                },
            );
        }
        let read = |h: &mut Harness<ChatStore>, after, limit| -> (Vec<u64>, u64) {
            let sent = h.msg(
                ch(),
                Msg::StoreRead {
                    token: 7,
                    room: "r1".into(),
                    after,
                    limit,
                    audit: None,
                },
            );
            match &sent[0].1 {
                Msg::StoreRange { posts, latest, .. } => {
                    (posts.iter().map(|(s, _)| *s).collect(), *latest)
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(read(&mut h, 0, 2), (vec![4, 5], 5));
        assert_eq!(read(&mut h, 2, 2), (vec![3, 4], 5));
        assert_eq!(read(&mut h, 5, 2), (vec![], 5));
        // After a restart the core knows no post: it reads the engine.
        let follow = Msg::StoreFollow {
            token: 8,
            user: "bob".into(),
            room: "r1".into(),
            follow: true,
        };
        h.msg(ch(), follow);
        let store = h.store.clone();
        h.start(store);
        assert_eq!(read(&mut h, 0, 3), (vec![3, 4, 5], 5));
        h.start(h.store.clone());
        let sent = h.msg(
            ch(),
            Msg::StoreUser {
                token: 9,
                user: "bob".into(),
            },
        );
        assert_eq!(
            sent,
            vec![(
                ch(),
                Msg::StoreUserInfo {
                    token: 9,
                    user: "bob".into(),
                    follows: vec![("r1".into(), 5)]
                }
            )]
        );
        // An engine that cannot be read: refused, never guessed.
        h.start(h.store.clone());
        h.fail_queries = Some(StoreError::Io("engine down".into()));
        let sent = h.msg(
            ch(),
            Msg::StoreAppend {
                token: 10,
                post: post("p6", "r1"),
            },
        );
        assert_eq!(sent, vec![(ch(), Msg::StoreFailed { token: 10 })]);
        h.fail_queries = None;
        let sent = h.msg(
            ch(),
            Msg::StoreAppend {
                token: 11,
                post: post("p6", "r1"),
            },
        );
        assert_eq!(appended(&sent), vec![(11, 6)]);
    }

    #[test]
    fn only_channel_servers_may_write() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1", BTreeMap::new()),
        );
        h.start(Recovered::new());
        let sent = h.msg(
            Addr::new("c", ActorKind::Client),
            Msg::StoreAppend {
                token: 1,
                post: post("p1", "r1"),
            },
        );
        assert!(sent.is_empty());
        assert_eq!(h.events(), vec!["unauthorized_sender"]);
    }
}

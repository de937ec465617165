//! A Channel server: client sessions, room subscriptions, posts, fan-out
//! and relay to the other Channel servers of the pool, and the room
//! directory (create, change, search, follow).
//!
//! A post is appended to the chat store first; only then is it
//! acknowledged to its author (`ChatPosted`) and fanned out — to the
//! subscribers on this server and, through a relay, to every other Channel
//! server, which fans it out to theirs. Sequence numbers are per room and
//! contiguous, so a client that sees a gap, reconnects, or syncs
//! periodically asks for what it missed (`ChatSync`, `ChatJoin { after }`)
//! and gets it from the store: a lost relay or a failed server delays a
//! post, never loses it.
//!
//! Rooms and follows are durable in the store too. A server keeps a copy
//! of the directory: the configured rooms, then every change, learnt from
//! the server that made it (`RoomChanged`) or, if that relay is lost, from
//! the store at the next load-report tick (`StoreRooms { since }`). Access
//! is decided on that copy; a change that walls a user off a room ends the
//! user's subscription at once. Nothing here is durable: the store is.

use crate::chat::chat_store::valid_room_name;
use crate::chat::pool::{sign_grant, ChatPool, Directory, FileGrant, FileOp};
use crate::core::actor::{
    authorize, identity_refused, ignored, Actor, Ctx, Recovered, StoreError, Timer, Written,
};
use crate::core::identity::{self, Role};
use crate::core::ids::{ActorKind, Addr, Millis, Token, UserId};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::chat::ChatMsg;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::chat::{ChatReject, Post, PostId, Room, RoomId};
use crate::core::protocol::compliance::EventKind;
use crate::core::protocol::Msg;
use crate::core::settings::Settings;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Posts sent per catch-up read; a client further behind syncs again.
pub const CATCH_UP_LIMIT: u64 = 500;

struct Session {
    user: UserId,
    rooms: BTreeSet<RoomId>,
    /// Rooms the user follows (known after `ChatHello`), and whether the
    /// session was told of new content there since it last joined.
    follows: BTreeMap<RoomId, bool>,
    last_heard: Millis,
}

enum Pending {
    Post {
        client: Addr,
        post: Post,
        since: Millis,
    },
    Read {
        client: Addr,
        /// A join answers `ChatJoined` after the posts.
        join: bool,
        /// The number the read is after (0: the backchat).
        after: u64,
        since: Millis,
    },
    /// An operator's records request (a clear or a replace): the client
    /// is answered `RoomCleared` or `PostReplaced`, or refused.
    Records {
        client: Addr,
        room: RoomId,
        post: Option<PostId>,
        since: Millis,
    },
    /// A room save: the client is answered `RoomSaved` or refused.
    Room {
        client: Addr,
        room: RoomId,
        since: Millis,
    },
    /// A hello or a follow: the client is answered with the follows.
    User {
        client: Addr,
        follow: Option<(RoomId, bool)>,
        since: Millis,
    },
    /// A refresh of the directory copy.
    Directory { since: Millis },
    /// A leave being recorded: the client is answered `ChatLeft`.
    Leave {
        client: Addr,
        room: RoomId,
        since: Millis,
    },
}

impl Pending {
    fn since(&self) -> Millis {
        match self {
            Pending::Post { since, .. }
            | Pending::Read { since, .. }
            | Pending::Room { since, .. }
            | Pending::User { since, .. }
            | Pending::Leave { since, .. }
            | Pending::Records { since, .. }
            | Pending::Directory { since } => *since,
        }
    }
}

/// Who another Channel server said is in which room, and when.
struct RemotePresence {
    heard: Millis,
    rooms: BTreeMap<RoomId, BTreeSet<UserId>>,
}

pub struct Channel {
    name: String,
    pool: Arc<ChatPool>,
    settings: Settings,
    directory: Directory,
    /// The store's directory version this copy is complete up to.
    directory_version: u64,
    /// Client sessions by client node.
    sessions: BTreeMap<String, Session>,
    subscribers: BTreeMap<RoomId, BTreeSet<String>>,
    /// Sessions following a room (told of new posts if not subscribed).
    followers: BTreeMap<RoomId, BTreeSet<String>>,
    presence: BTreeMap<String, RemotePresence>,
    pending: BTreeMap<Token, Pending>,
    next_token: u64,
    /// Relaying switched off (a test sabotage: the checker must notice).
    relay: bool,
    relayed: u64,
    /// Posts sent to client sessions since the core started.
    delivered: u64,
    /// The store timeout timer is set (it is not moved by later requests,
    /// so that steady traffic cannot postpone it for ever).
    timeout_armed: bool,
}

impl Channel {
    pub fn new(name: impl Into<String>, pool: Arc<ChatPool>, settings: Settings) -> Self {
        Channel {
            name: name.into(),
            directory: Directory {
                categories: pool.categories.clone(),
                rooms: pool.rooms.clone(),
            },
            pool,
            settings,
            directory_version: 0,
            sessions: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            followers: BTreeMap::new(),
            presence: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_token: 0,
            relay: true,
            relayed: 0,
            delivered: 0,
            timeout_armed: false,
        }
    }

    /// Turns relaying to the other Channel servers off (sabotage for
    /// checker tests only).
    pub fn without_relay(mut self) -> Self {
        self.relay = false;
        self
    }

    fn store(&self) -> Addr {
        Addr::new(self.pool.store.clone(), ActorKind::ChatStore)
    }

    fn others(&self) -> impl Iterator<Item = Addr> + '_ {
        self.pool
            .channels
            .iter()
            .filter(|c| **c != self.name)
            .map(|c| Addr::new(c.clone(), ActorKind::Channel))
    }

    fn arm_timeout(&mut self, ctx: &mut Ctx) {
        if !self.timeout_armed {
            self.timeout_armed = true;
            ctx.set_timer(
                Timer::Chat(ChatTimer::StoreTimeout),
                self.settings.chat_store_timeout,
            );
        }
    }

    /// Sends `msg` (made with a fresh token) to the store and remembers
    /// what to do with the answer.
    fn ask_store(&mut self, pending: Pending, msg: impl FnOnce(Token) -> Msg, ctx: &mut Ctx) {
        self.next_token += 1;
        let token = Token(self.next_token);
        self.pending.insert(token, pending);
        ctx.send(self.store(), msg(token));
        self.arm_timeout(ctx);
    }

    fn reject(ctx: &mut Ctx, client: Addr, room: RoomId, post: Option<PostId>, reason: ChatReject) {
        ctx.send(
            client,
            Msg::Chat(ChatMsg::ChatRejected { room, post, reason }),
        );
    }

    /// The store failed or did not answer a request: tell the client.
    fn store_unavailable(pending: Pending, ctx: &mut Ctx) {
        let unavailable = ChatReject::StoreUnavailable;
        match pending {
            Pending::Post { client, post, .. } => {
                Self::reject(ctx, client, post.room, Some(post.id), unavailable)
            }
            Pending::Room { client, room, .. } | Pending::Leave { client, room, .. } => {
                Self::reject(ctx, client, room, None, unavailable)
            }
            Pending::Records {
                client, room, post, ..
            } => Self::reject(ctx, client, room, post, unavailable),
            Pending::User { client, follow, .. } => {
                let room = follow.map(|(r, _)| r).unwrap_or_default();
                Self::reject(ctx, client, room, None, unavailable)
            }
            // The client syncs again later; the directory is asked again
            // at the next tick.
            Pending::Read { .. } | Pending::Directory { .. } => {}
        }
    }

    fn report_load(&self, ctx: &mut Ctx) {
        for lookup in &self.pool.lookups {
            ctx.send(
                Addr::new(lookup.clone(), ActorKind::Lookup),
                Msg::Chat(ChatMsg::LoadReport {
                    sessions: self.sessions.len() as u64,
                    capacity: self.settings.chat_capacity,
                }),
            );
        }
    }

    /// The users subscribed to `room` on this server.
    fn local_presence(&self, room: &str) -> Vec<UserId> {
        let users: BTreeSet<UserId> = self
            .subscribers
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|c| self.sessions.get(c).map(|s| s.user.clone()))
            .collect();
        users.into_iter().collect()
    }

    /// Tells the other servers who is in `rooms` here (all rooms if `None`).
    fn share_presence(&self, rooms: Option<Vec<RoomId>>, ctx: &mut Ctx) {
        let full = rooms.is_none();
        let rooms = rooms.unwrap_or_else(|| self.subscribers.keys().cloned().collect());
        let rooms: Vec<(RoomId, Vec<UserId>)> = rooms
            .into_iter()
            .map(|r| {
                let users = self.local_presence(&r);
                (r, users)
            })
            .collect();
        for other in self.others().collect::<Vec<_>>() {
            ctx.send(
                other,
                Msg::Chat(ChatMsg::Presence {
                    rooms: rooms.clone(),
                    full,
                }),
            );
        }
    }

    /// Answers `client` that the store holds `post` as `seq` (`answer`
    /// builds the message from the post's id, room and number), then sends
    /// the post to this server's members ([`Self::fan_out`]) and, when
    /// relaying, to the other servers.
    fn publish(
        &mut self,
        client: Addr,
        answer: fn(PostId, RoomId, u64) -> ChatMsg,
        seq: u64,
        post: &Post,
        ctx: &mut Ctx,
    ) {
        ctx.send(
            client,
            Msg::Chat(answer(post.id.clone(), post.room.clone(), seq)),
        );
        self.fan_out(seq, post, ctx);
        if self.relay {
            for other in self.others().collect::<Vec<_>>() {
                self.relayed += 1;
                ctx.send(
                    other,
                    Msg::Chat(ChatMsg::Relay {
                        seq,
                        post: post.clone(),
                    }),
                );
            }
        }
    }

    /// Sends `post` to this server's subscribers of its room, and tells
    /// followers who have not joined it that there is something new.
    fn fan_out(&mut self, seq: u64, post: &Post, ctx: &mut Ctx) {
        let subs = self.subscribers.get(&post.room);
        for client in subs.into_iter().flatten() {
            self.delivered += 1;
            ctx.send(
                Addr::new(client.clone(), ActorKind::Client),
                Msg::Chat(ChatMsg::ChatMessage {
                    seq,
                    post: post.clone(),
                }),
            );
        }
        let Some(followers) = self.followers.get(&post.room) else {
            return;
        };
        for client in followers {
            if subs.is_some_and(|s| s.contains(client)) {
                continue;
            }
            let Some(told) = self
                .sessions
                .get_mut(client)
                .and_then(|s| s.follows.get_mut(&post.room))
            else {
                continue;
            };
            if !*told {
                *told = true;
                ctx.send(
                    Addr::new(client.clone(), ActorKind::Client),
                    Msg::Chat(ChatMsg::ChatNotify {
                        room: post.room.clone(),
                        seq,
                    }),
                );
            }
        }
    }

    /// Reads `room` after `after` for `client` (a join answers
    /// `ChatJoined` after the posts); `audit` is what compliance records.
    fn read(
        &mut self,
        client: Addr,
        room: RoomId,
        after: u64,
        join: bool,
        audit: (UserId, EventKind),
        ctx: &mut Ctx,
    ) {
        let limit = if after == 0 {
            self.settings.chat_backchat
        } else {
            CATCH_UP_LIMIT
        };
        let since = ctx.now();
        self.ask_store(
            Pending::Read {
                client,
                join,
                after,
                since,
            },
            |token| {
                Msg::Chat(ChatMsg::StoreRead {
                    token,
                    room,
                    after,
                    limit,
                    audit: Some(audit),
                })
            },
            ctx,
        );
    }

    /// The session of `from` for `user`, opened if need be: refused when
    /// the server is full (503) or the connection speaks for another user.
    fn session(&mut self, from: &Addr, user: &str, now: Millis) -> Result<(), ChatReject> {
        match self.sessions.get(&from.node) {
            // One user per client connection.
            Some(s) if s.user != user => Err(ChatReject::NotAllowed),
            Some(_) => Ok(()),
            None if self.sessions.len() as u64 >= self.settings.chat_capacity => {
                Err(ChatReject::Busy)
            }
            None => {
                self.sessions.insert(
                    from.node.clone(),
                    Session {
                        user: user.into(),
                        rooms: BTreeSet::new(),
                        follows: BTreeMap::new(),
                        last_heard: now,
                    },
                );
                Ok(())
            }
        }
    }

    fn join(&mut self, from: Addr, user: UserId, room: RoomId, after: u64, ctx: &mut Ctx) {
        let Some(info) = self.directory.rooms.get(&room) else {
            return Self::reject(ctx, from, room, None, ChatReject::NoSuchRoom);
        };
        if info.disabled && self.directory.may_see(&room, &user) {
            return Self::reject(ctx, from, room, None, ChatReject::RoomDisabled);
        }
        if !self.directory.may_read(&room, &user) {
            ctx.event(
                OperatorEvent::ChatJoinRefused,
                format!("{}: {user} may not read {room}", self.name),
            );
            return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
        }
        if let Err(reason) = self.session(&from, &user, ctx.now()) {
            return Self::reject(ctx, from, room, None, reason);
        }
        let session = self.sessions.get_mut(&from.node).expect("opened above");
        session.rooms.insert(room.clone());
        if let Some(told) = session.follows.get_mut(&room) {
            *told = false;
        }
        let new = self
            .subscribers
            .entry(room.clone())
            .or_default()
            .insert(from.node.clone());
        if new {
            self.share_presence(Some(vec![room.clone()]), ctx);
        }
        // A new subscription is a join; a join again (a keep-alive) reads.
        let kind = if new {
            EventKind::Join
        } else {
            EventKind::Read
        };
        self.read(from, room, after, true, (user, kind), ctx);
    }

    fn leave(&mut self, client: &str, room: &str) -> bool {
        if let Some(s) = self.sessions.get_mut(client) {
            s.rooms.remove(room);
        }
        self.subscribers
            .get_mut(room)
            .is_some_and(|subs| subs.remove(client))
    }

    /// Records the follows the store reported for a session.
    fn set_follows(&mut self, client: &str, follows: &[(RoomId, u64)]) {
        let Some(session) = self.sessions.get_mut(client) else {
            return;
        };
        for room in session.follows.keys() {
            if let Some(f) = self.followers.get_mut(room) {
                f.remove(client);
            }
        }
        let old = std::mem::take(&mut session.follows);
        for (room, _) in follows {
            let told = old.get(room).copied().unwrap_or(false);
            session.follows.insert(room.clone(), told);
            self.followers
                .entry(room.clone())
                .or_default()
                .insert(client.to_string());
        }
    }

    /// Takes a created or changed room into the directory copy (if newer
    /// than the one held) and ends the subscriptions it no longer allows.
    fn apply_room(&mut self, room: RoomId, info: Room, ctx: &mut Ctx) {
        if self
            .directory
            .rooms
            .get(&room)
            .is_some_and(|r| r.version >= info.version)
        {
            return;
        }
        let disabled = info.disabled;
        self.directory.rooms.insert(room.clone(), info);
        let walled: Vec<String> = self
            .subscribers
            .get(&room)
            .into_iter()
            .flatten()
            .filter(|c| {
                self.sessions
                    .get(*c)
                    .is_none_or(|s| disabled || !self.directory.may_read(&room, &s.user))
            })
            .cloned()
            .collect();
        for client in &walled {
            self.leave(client, &room);
            let reason = if disabled {
                ChatReject::RoomDisabled
            } else {
                ctx.event(
                    OperatorEvent::ChatAccessRevoked,
                    format!("{}: {client} may no longer read {room}", self.name),
                );
                ChatReject::NotAllowed
            };
            Self::reject(
                ctx,
                Addr::new(client.clone(), ActorKind::Client),
                room.clone(),
                None,
                reason,
            );
        }
        if !walled.is_empty() {
            self.share_presence(Some(vec![room]), ctx);
        }
    }

    fn refresh_directory(&mut self, ctx: &mut Ctx) {
        let since = self.directory_version;
        let now = ctx.now();
        self.ask_store(
            Pending::Directory { since: now },
            |token| Msg::Chat(ChatMsg::StoreRooms { token, since }),
            ctx,
        );
    }

    /// An operator's records request: disable or enable a room, clear
    /// it, replace a post. Only the operator role may (as Lync's
    /// administrator cmdlets): a room manager could otherwise erase what
    /// compliance must see.
    fn records_msg(&mut self, from: Addr, msg: ChatMsg, ctx: &mut Ctx) {
        let (room, post) = match &msg {
            ChatMsg::RoomDisable { room, .. } | ChatMsg::RoomClear { room, .. } => {
                (room.clone(), None)
            }
            ChatMsg::PostReplace { post, .. } => (RoomId::default(), Some(post.clone())),
            _ => return,
        };
        let by = match identity::require(&from, &[Role::Operator]) {
            Ok(p) => p.user,
            Err(refusal) => {
                identity_refused(&self.name, &from, msg.name(), &refusal, ctx);
                let reason = ChatReject::Forbidden(refusal.to_string());
                return Self::reject(ctx, from, room, post, reason);
            }
        };
        let since = ctx.now();
        match msg {
            ChatMsg::RoomDisable { room, disabled } => {
                let pending = Pending::Room {
                    client: from,
                    room: room.clone(),
                    since,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreRoomDisable {
                            token,
                            room,
                            disabled,
                            by,
                        })
                    },
                    ctx,
                );
            }
            ChatMsg::RoomClear { room, before } => {
                let pending = Pending::Records {
                    client: from,
                    room: room.clone(),
                    post: None,
                    since,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreClear {
                            token,
                            room,
                            before,
                            by,
                        })
                    },
                    ctx,
                );
            }
            ChatMsg::PostReplace { post, text } => {
                let limit = self.settings.chat_post_max_bytes;
                if text.len() as u64 > limit {
                    let reason = ChatReject::TooLarge { limit };
                    return Self::reject(ctx, from, room, Some(post), reason);
                }
                let pending = Pending::Records {
                    client: from,
                    room,
                    post: Some(post.clone()),
                    since,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreReplace {
                            token,
                            post,
                            text,
                            by,
                        })
                    },
                    ctx,
                );
            }
            _ => {}
        }
    }

    /// A message of another service from a sender the protocol allows:
    /// ignored, as each of the handlers below ignores what it does not know
    /// (a client is checked, and heard, first).
    fn foreign_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let from_what = match from.actor {
            ActorKind::Client => {
                if let Err(refusal) = identity::require(&from, &[Role::User]) {
                    identity_refused(&self.name, &from, msg.name(), &refusal, ctx);
                    let reason = ChatReject::Forbidden(refusal.to_string());
                    return Self::reject(ctx, from, RoomId::default(), None, reason);
                }
                let now = ctx.now();
                if let Some(s) = self.sessions.get_mut(&from.node) {
                    s.last_heard = now;
                }
                from.to_string()
            }
            ActorKind::ChatStore => "the store".to_string(),
            _ => from.to_string(),
        };
        ignored("channel", &self.name, msg.name(), &from_what, ctx);
    }

    fn client_msg(&mut self, from: Addr, msg: ChatMsg, ctx: &mut Ctx) {
        if matches!(
            msg,
            ChatMsg::RoomDisable { .. } | ChatMsg::RoomClear { .. } | ChatMsg::PostReplace { .. }
        ) {
            return self.records_msg(from, msg, ctx);
        }
        // Every request comes from a user principal; the ones that open a
        // session name their user, who must be that principal. The session
        // then carries the user for every later request of the connection.
        let checked = match &msg {
            ChatMsg::ChatJoin { user, .. }
            | ChatMsg::ChatBulkJoin { user, .. }
            | ChatMsg::ChatHello { user } => identity::require_user(&from, user),
            _ => identity::require(&from, &[Role::User]),
        };
        if let Err(refusal) = checked {
            identity_refused(&self.name, &from, msg.name(), &refusal, ctx);
            let room = match msg {
                ChatMsg::ChatJoin { room, .. }
                | ChatMsg::ChatLeave { room }
                | ChatMsg::ChatPost { room, .. }
                | ChatMsg::ChatSync { room, .. }
                | ChatMsg::ChatFollow { room, .. }
                | ChatMsg::ChatWho { room }
                | ChatMsg::RoomSave { room, .. }
                | ChatMsg::RoomGet { room }
                | ChatMsg::FileTokenRequest { room, .. } => room,
                _ => RoomId::default(),
            };
            let reason = ChatReject::Forbidden(refusal.to_string());
            return Self::reject(ctx, from, room, None, reason);
        }
        let now = ctx.now();
        if let Some(s) = self.sessions.get_mut(&from.node) {
            s.last_heard = now;
        }
        // The session's user, cloned only by the requests that need it
        // (not on the path of every post).
        let user_of = |sessions: &BTreeMap<String, Session>| sessions[&from.node].user.clone();
        match msg {
            ChatMsg::ChatJoin { user, room, after } => self.join(from, user, room, after, ctx),
            ChatMsg::ChatBulkJoin { user, rooms } => {
                for (room, after) in rooms {
                    self.join(from.clone(), user.clone(), room, after, ctx);
                }
            }
            ChatMsg::ChatHello { user } => {
                if let Err(reason) = self.session(&from, &user, now) {
                    return Self::reject(ctx, from, RoomId::default(), None, reason);
                }
                let pending = Pending::User {
                    client: from,
                    follow: None,
                    since: now,
                };
                self.ask_store(
                    pending,
                    |token| Msg::Chat(ChatMsg::StoreUser { token, user }),
                    ctx,
                );
            }
            ChatMsg::ChatLeave { room } => {
                if !self.leave(&from.node, &room) {
                    return ctx.send(from, Msg::Chat(ChatMsg::ChatLeft { room }));
                }
                self.share_presence(Some(vec![room.clone()]), ctx);
                // Answered once the leave is recorded.
                let user = user_of(&self.sessions); // subscribed, so a session
                let pending = Pending::Leave {
                    client: from,
                    room: room.clone(),
                    since: now,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreAudit {
                            token,
                            room,
                            user,
                            kind: EventKind::Leave,
                        })
                    },
                    ctx,
                );
            }
            ChatMsg::ChatSync { room, after } => {
                let joined = self
                    .sessions
                    .get(&from.node)
                    .is_some_and(|s| s.rooms.contains(&room));
                if !joined {
                    return Self::reject(ctx, from, room, None, ChatReject::NotJoined);
                }
                let user = user_of(&self.sessions); // joined, so a session
                self.read(from, room, after, false, (user, EventKind::Read), ctx);
            }
            ChatMsg::FileTokenRequest { room, download } => {
                let Some(session) = self.sessions.get(&from.node) else {
                    return Self::reject(ctx, from, room, None, ChatReject::NotJoined);
                };
                // Upload: a member who may post; download: one who may read.
                let allowed = match download {
                    None => self.directory.may_post(&room, &session.user),
                    Some(_) => self.directory.may_read(&room, &session.user),
                };
                if !allowed || !session.rooms.contains(&room) {
                    return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
                }
                let grant = FileGrant {
                    user: session.user.clone(),
                    room: room.clone(),
                    op: match download.clone() {
                        None => FileOp::Upload,
                        Some(file) => FileOp::Download { file },
                    },
                    expires: now + self.settings.chat_token_ttl,
                };
                let token = sign_grant(&self.pool.token_key, &grant);
                ctx.send(
                    from,
                    Msg::Chat(ChatMsg::FileToken {
                        room,
                        download,
                        token,
                    }),
                );
            }
            ChatMsg::ChatPost { post, room, text } => {
                let limit = self.settings.chat_post_max_bytes;
                if text.len() as u64 > limit {
                    return Self::reject(
                        ctx,
                        from,
                        room,
                        Some(post),
                        ChatReject::TooLarge { limit },
                    );
                }
                let Some(session) = self.sessions.get(&from.node) else {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotJoined);
                };
                if !session.rooms.contains(&room) {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotJoined);
                }
                if self.directory.rooms.get(&room).is_some_and(|r| r.disabled) {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::RoomDisabled);
                }
                if !self.directory.may_post(&room, &session.user) {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotAllowed);
                }
                let post = Post {
                    id: post,
                    room,
                    author: session.user.clone(),
                    text,
                    at: now,
                };
                let pending = Pending::Post {
                    client: from,
                    post: post.clone(),
                    since: now,
                };
                self.ask_store(
                    pending,
                    |token| Msg::Chat(ChatMsg::StoreAppend { token, post }),
                    ctx,
                );
            }
            // Everything below needs a session (a hello or a join first).
            _ if !self.sessions.contains_key(&from.node) => {
                let room = match &msg {
                    ChatMsg::ChatFollow { room, .. }
                    | ChatMsg::ChatWho { room }
                    | ChatMsg::RoomSave { room, .. }
                    | ChatMsg::RoomGet { room } => room.clone(),
                    _ => RoomId::default(),
                };
                Self::reject(ctx, from, room, None, ChatReject::NotJoined);
            }
            ChatMsg::ChatFollow { room, follow } => {
                let user = user_of(&self.sessions);
                if follow && !self.directory.may_read(&room, &user) {
                    return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
                }
                let pending = Pending::User {
                    client: from,
                    follow: Some((room.clone(), follow)),
                    since: now,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreFollow {
                            token,
                            user,
                            room,
                            follow,
                        })
                    },
                    ctx,
                );
            }
            ChatMsg::ChatWho { room } => {
                let user = user_of(&self.sessions);
                if !self.directory.may_read(&room, &user) {
                    return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
                }
                // Servers silent for three report periods are gone.
                let fresh = 3 * self.settings.chat_load_report;
                let mut users: BTreeSet<UserId> = self.local_presence(&room).into_iter().collect();
                for p in self.presence.values() {
                    if now.saturating_sub(p.heard) <= fresh {
                        users.extend(p.rooms.get(&room).into_iter().flatten().cloned());
                    }
                }
                let users = users.into_iter().collect();
                ctx.send(from, Msg::Chat(ChatMsg::ChatParticipants { room, users }));
            }
            ChatMsg::RoomGet { room } => {
                let user = user_of(&self.sessions);
                match self.directory.rooms.get(&room) {
                    Some(info) if self.directory.may_see(&room, &user) => {
                        let mut info = info.clone();
                        if !info.is_member(&user) {
                            // Who is in it, or walled off, is for members.
                            info.members.clear();
                            info.managers.clear();
                            info.denied.clear();
                            info.presenters = info.presenters.map(|_| BTreeSet::new());
                        }
                        ctx.send(
                            from,
                            Msg::Chat(ChatMsg::RoomInfo {
                                room,
                                info: Box::new(info),
                            }),
                        );
                    }
                    // A secret room the user may not know of does not exist.
                    _ => Self::reject(ctx, from, room, None, ChatReject::NoSuchRoom),
                }
            }
            ChatMsg::RoomFind { query } => {
                let user = user_of(&self.sessions);
                let follows = self.sessions[&from.node].follows.keys().cloned().collect();
                let rooms = self.directory.query(&user, &query, &follows);
                ctx.send(from, Msg::Chat(ChatMsg::RoomFound { query, rooms }));
            }
            ChatMsg::RoomSave {
                room,
                mut info,
                create,
            } => {
                let user = user_of(&self.sessions);
                let checked = if !valid_room_name(&room) {
                    Err(ChatReject::NoSuchRoom)
                } else if create {
                    // The creator manages the room.
                    info.managers.insert(user.clone());
                    self.directory.check_create(&user, &room, &info)
                } else {
                    self.directory.check_update(&user, &room, &info)
                };
                if let Err(reason) = checked {
                    ctx.event(
                        OperatorEvent::ChatRoomRefused,
                        format!("{}: {user} may not save {room}: {reason:?}", self.name),
                    );
                    return Self::reject(ctx, from, room, None, reason);
                }
                let pending = Pending::Room {
                    client: from,
                    room: room.clone(),
                    since: now,
                };
                self.ask_store(
                    pending,
                    |token| {
                        Msg::Chat(ChatMsg::StoreRoomSave {
                            token,
                            room,
                            info,
                            create,
                            by: user,
                        })
                    },
                    ctx,
                );
            }
            other => ignored("channel", &self.name, other.name(), &from, ctx),
        }
    }

    fn store_msg(&mut self, msg: ChatMsg, ctx: &mut Ctx) {
        match msg {
            ChatMsg::StoreAppended { token, seq, post } => {
                let Some(Pending::Post { client, .. }) = self.pending.remove(&token) else {
                    return; // timed out already: the author retries
                };
                let posted = |post, room, seq| ChatMsg::ChatPosted { post, room, seq };
                self.publish(client, posted, seq, &post, ctx);
            }
            ChatMsg::StoreRange {
                token,
                room,
                posts,
                latest,
                through,
            } => {
                let Some(Pending::Read {
                    client,
                    join,
                    after,
                    ..
                }) = self.pending.remove(&token)
                else {
                    return;
                };
                // A catch-up: the numbers the answer accounts for that hold
                // no post are cleared; the client counts them as read.
                if after > 0 {
                    let ranges = cleared_ranges(after, through, &posts);
                    if !ranges.is_empty() {
                        let room = room.clone();
                        ctx.send(
                            client.clone(),
                            Msg::Chat(ChatMsg::ChatCleared { room, ranges }),
                        );
                    }
                }
                for (seq, post) in posts {
                    self.delivered += 1;
                    ctx.send(
                        client.clone(),
                        Msg::Chat(ChatMsg::ChatMessage { seq, post }),
                    );
                }
                if join {
                    ctx.send(client, Msg::Chat(ChatMsg::ChatJoined { room, latest }));
                }
            }
            ChatMsg::StoreRoomList {
                token,
                rooms,
                version,
            } => {
                if !matches!(self.pending.remove(&token), Some(Pending::Directory { .. })) {
                    return;
                }
                for (room, info) in rooms {
                    self.apply_room(room, info, ctx);
                }
                self.directory_version = self.directory_version.max(version);
            }
            ChatMsg::StoreRoomSaved { token, room, info } => {
                let Some(Pending::Room { client, .. }) = self.pending.remove(&token) else {
                    return;
                };
                let version = info.version;
                self.apply_room(room.clone(), (*info).clone(), ctx);
                ctx.send(
                    client,
                    Msg::Chat(ChatMsg::RoomSaved {
                        room: room.clone(),
                        version,
                    }),
                );
                for other in self.others().collect::<Vec<_>>() {
                    ctx.send(
                        other,
                        Msg::Chat(ChatMsg::RoomChanged {
                            room: room.clone(),
                            info: info.clone(),
                        }),
                    );
                }
            }
            ChatMsg::StoreRoomRefused {
                token,
                room,
                reason,
            } => match self.pending.remove(&token) {
                Some(Pending::Room { client, .. }) => Self::reject(ctx, client, room, None, reason),
                Some(Pending::Records {
                    client, room, post, ..
                }) => Self::reject(ctx, client, room, post, reason),
                _ => {}
            },
            ChatMsg::StoreCleared {
                token,
                room,
                through,
            } => {
                if let Some(Pending::Records { client, .. }) = self.pending.remove(&token) {
                    ctx.send(client, Msg::Chat(ChatMsg::RoomCleared { room, through }));
                }
            }
            ChatMsg::StoreReplaced { token, seq, post } => {
                let Some(Pending::Records { client, .. }) = self.pending.remove(&token) else {
                    return;
                };
                // Joined members get the new text at once (a copy of a
                // number they have: a client takes it as a correction).
                let replaced = |post, room, seq| ChatMsg::PostReplaced { post, room, seq };
                self.publish(client, replaced, seq, &post, ctx);
            }
            ChatMsg::StoreUserInfo { token, follows, .. } => {
                let Some(Pending::User { client, follow, .. }) = self.pending.remove(&token) else {
                    return;
                };
                self.set_follows(&client.node, &follows);
                match follow {
                    Some((room, follow)) => {
                        ctx.send(client, Msg::Chat(ChatMsg::ChatFollowed { room, follow }))
                    }
                    None => {
                        let user = self.sessions.get(&client.node).map(|s| s.user.clone());
                        let follows = follows
                            .into_iter()
                            .filter(|(r, _)| {
                                user.as_ref().is_some_and(|u| self.directory.may_read(r, u))
                            })
                            .collect();
                        ctx.send(client, Msg::Chat(ChatMsg::ChatWelcome { follows }));
                    }
                }
            }
            ChatMsg::StoreAudited { token } => {
                if let Some(Pending::Leave { client, room, .. }) = self.pending.remove(&token) {
                    ctx.send(client, Msg::Chat(ChatMsg::ChatLeft { room }));
                }
            }
            ChatMsg::StoreFailed { token } => {
                if let Some(p) = self.pending.remove(&token) {
                    Self::store_unavailable(p, ctx);
                }
            }
            other => ignored("channel", &self.name, other.name(), "the store", ctx),
        }
    }

    fn channel_msg(&mut self, from: Addr, msg: ChatMsg, ctx: &mut Ctx) {
        match msg {
            ChatMsg::Relay { seq, post } => self.fan_out(seq, &post, ctx),
            ChatMsg::RoomChanged { room, info } => self.apply_room(room, *info, ctx),
            ChatMsg::Presence { rooms, full } => {
                let now = ctx.now();
                let p = self
                    .presence
                    .entry(from.node.clone())
                    .or_insert_with(|| RemotePresence {
                        heard: now,
                        rooms: BTreeMap::new(),
                    });
                p.heard = now;
                if full {
                    p.rooms.clear();
                }
                for (room, users) in rooms {
                    if users.is_empty() {
                        p.rooms.remove(&room);
                    } else {
                        p.rooms.insert(room, users.into_iter().collect());
                    }
                }
            }
            other => ignored("channel", &self.name, other.name(), &from, ctx),
        }
    }
}

/// The numbers in `(after, through]` that hold none of `posts`, as
/// inclusive ranges.
pub fn cleared_ranges(after: u64, through: u64, posts: &[(u64, Post)]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut next = after + 1;
    for (seq, _) in posts {
        if *seq > through {
            break;
        }
        if *seq > next {
            ranges.push((next, seq - 1));
        }
        next = next.max(seq + 1);
    }
    if next <= through {
        ranges.push((next, through));
    }
    ranges
}

impl Actor for Channel {
    fn on_start(&mut self, _recovered: Recovered, ctx: &mut Ctx) {
        self.sessions.clear();
        self.subscribers.clear();
        self.followers.clear();
        self.presence.clear();
        self.pending.clear();
        self.timeout_armed = false;
        self.report_load(ctx);
        self.refresh_directory(ctx);
        ctx.set_timer(
            Timer::Chat(ChatTimer::LoadReport),
            self.settings.chat_load_report,
        );
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match from.actor {
            ActorKind::Client => true,
            ActorKind::ChatStore => from.node == self.pool.store,
            ActorKind::Channel => self.pool.channels.contains(&from.node),
            _ => false,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        let msg = match msg {
            Msg::Chat(msg) => msg,
            other => return self.foreign_msg(from, other, ctx),
        };
        match from.actor {
            ActorKind::Client => self.client_msg(from, msg, ctx),
            ActorKind::ChatStore => self.store_msg(msg, ctx),
            _ => self.channel_msg(from, msg, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        let now = ctx.now();
        match timer {
            Timer::Chat(ChatTimer::LoadReport) => {
                // Sessions silent for three periods are gone (the client
                // moved to another server, or away).
                let idle = 3 * self.settings.chat_load_report;
                let gone: Vec<String> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| now.saturating_sub(s.last_heard) > idle)
                    .map(|(c, _)| c.clone())
                    .collect();
                for client in gone {
                    if let Some(s) = self.sessions.remove(&client) {
                        for room in s.rooms {
                            if let Some(subs) = self.subscribers.get_mut(&room) {
                                subs.remove(&client);
                            }
                        }
                        for room in s.follows.keys() {
                            if let Some(f) = self.followers.get_mut(room) {
                                f.remove(&client);
                            }
                        }
                    }
                }
                self.subscribers.retain(|_, subs| !subs.is_empty());
                self.followers.retain(|_, f| !f.is_empty());
                self.report_load(ctx);
                self.share_presence(None, ctx);
                self.refresh_directory(ctx);
                ctx.set_timer(
                    Timer::Chat(ChatTimer::LoadReport),
                    self.settings.chat_load_report,
                );
            }
            Timer::Chat(ChatTimer::StoreTimeout) => {
                self.timeout_armed = false;
                let limit = self.settings.chat_store_timeout;
                let expired: Vec<Token> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| now.saturating_sub(p.since()) >= limit)
                    .map(|(t, _)| *t)
                    .collect();
                for token in expired {
                    if let Some(p) = self.pending.remove(&token) {
                        Self::store_unavailable(p, ctx);
                    }
                }
                if !self.pending.is_empty() {
                    self.arm_timeout(ctx);
                }
            }
            _ => {}
        }
    }

    fn on_persisted(&mut self, _token: u64, _result: Result<Written, StoreError>, _ctx: &mut Ctx) {}

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![
            (Gauge::ChatSessions, self.sessions.len() as u64),
            (Gauge::ChatRelayed, self.relayed),
            (Gauge::ChatDelivered, self.delivered),
            (Gauge::ChatRooms, self.directory.rooms.len() as u64),
        ]
    }
}

#[cfg(test)]
#[path = "channel_rooms_test.rs"]
mod rooms_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::protocol::chat::Room;
    use crate::testkit::Harness;

    fn pool() -> Arc<ChatPool> {
        let mut rooms: BTreeMap<RoomId, Room> = BTreeMap::new();
        rooms.insert(
            "general".into(),
            Room {
                members: ["a", "b", "w"].iter().map(|u| (*u).into()).collect(),
                denied: BTreeSet::from(["w".into()]),
                presenters: None,
                ..Default::default()
            },
        );
        rooms.insert(
            "town-hall".into(),
            Room {
                members: ["a", "b"].iter().map(|u| (*u).into()).collect(),
                denied: BTreeSet::new(),
                presenters: Some(BTreeSet::from(["a".into()])),
                ..Default::default()
            },
        );
        Arc::new(ChatPool {
            channels: vec!["ch1".into(), "ch2".into()],
            lookups: vec!["lk1".into()],
            store: "chatdb".into(),
            rooms,
            token_key: b"test key".to_vec(),
            ..Default::default()
        })
    }

    fn channel(settings: Settings) -> Harness<Channel> {
        let mut h = Harness::new(
            Addr::new("ch1", ActorKind::Channel),
            Channel::new("ch1", pool(), settings),
        );
        h.start(Recovered::new());
        h
    }

    /// A channel server where `a` (client `user:a/1`) has joined `general`.
    fn joined(settings: Settings) -> Harness<Channel> {
        let mut h = channel(settings);
        join(&mut h, "user:a/1", "a", "general");
        h
    }

    fn client(n: &str) -> Addr {
        Addr::new(n, ActorKind::Client)
    }

    fn store() -> Addr {
        Addr::new("chatdb", ActorKind::ChatStore)
    }

    /// The chat store confirms the post of `token` as number `seq`.
    fn appended(h: &mut Harness<Channel>, token: Token, seq: u64, post: Post) -> Vec<(Addr, Msg)> {
        h.msg(
            store(),
            Msg::Chat(ChatMsg::StoreAppended { token, seq, post }),
        )
    }

    /// Asserts that the first answer in `sent` is a join's.
    fn assert_joined(sent: &[(Addr, Msg)]) {
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::ChatJoined { .. })),
            "{sent:?}"
        );
    }

    /// Asserts that the first answer in `sent` refuses the request for
    /// `reason`.
    fn assert_refused(sent: &[(Addr, Msg)], reason: ChatReject) {
        assert!(
            matches!(&sent[0].1, Msg::Chat(ChatMsg::ChatRejected { reason: r, .. }) if *r == reason),
            "{sent:?}"
        );
    }

    /// Joins `user` from client `c` and answers the store read with nothing.
    fn join(h: &mut Harness<Channel>, c: &str, user: &str, room: &str) -> Vec<(Addr, Msg)> {
        let sent = h.msg(
            client(c),
            Msg::Chat(ChatMsg::ChatJoin {
                user: user.into(),
                room: room.into(),
                after: 0,
            }),
        );
        let Some(token) = sent.iter().find_map(|(_, m)| match m {
            Msg::Chat(ChatMsg::StoreRead { token, .. }) => Some(*token),
            _ => None,
        }) else {
            return sent;
        };
        h.msg(
            store(),
            Msg::Chat(ChatMsg::StoreRange {
                token,
                room: room.into(),
                posts: vec![],
                latest: 0,
                through: 0,
            }),
        )
    }

    fn post(h: &mut Harness<Channel>, c: &str, id: &str, room: &str) -> Vec<(Addr, Msg)> {
        h.msg(
            client(c),
            Msg::Chat(ChatMsg::ChatPost {
                post: id.into(),
                room: room.into(),
                text: "hi".into(),
            }),
        )
    }

    #[test]
    fn a_post_is_stored_then_acknowledged_fanned_out_and_relayed() {
        let mut h = channel(Settings::default());
        assert_eq!(
            join(&mut h, "user:a/1", "a", "general")[0].1,
            Msg::Chat(ChatMsg::ChatJoined {
                room: "general".into(),
                latest: 0
            })
        );
        join(&mut h, "user:b/2", "b", "general");
        let sent = post(&mut h, "user:a/1", "p1", "general");
        let Msg::Chat(ChatMsg::StoreAppend { token, post: p }) = &sent[0].1 else {
            panic!("{sent:?}")
        };
        assert_eq!(sent[0].0, store());
        assert_eq!(p.author, "a");
        let sent = appended(&mut h, *token, 1, p.clone());
        let to: Vec<(String, &str)> = sent
            .iter()
            .map(|(a, m)| (a.node.clone(), m.name()))
            .collect();
        assert_eq!(
            to,
            vec![
                ("user:a/1".to_string(), "ChatPosted"),
                ("user:a/1".to_string(), "ChatMessage"),
                ("user:b/2".to_string(), "ChatMessage"),
                ("ch2".to_string(), "Relay"),
            ]
        );
        // A relay from ch2 reaches the local subscribers only.
        let sent = h.msg(
            Addr::new("ch2", ActorKind::Channel),
            Msg::Chat(ChatMsg::Relay {
                seq: 2,
                post: p.clone(),
            }),
        );
        assert_eq!(sent.len(), 2);
        assert!(sent
            .iter()
            .all(|(_, m)| matches!(m, Msg::Chat(ChatMsg::ChatMessage { seq: 2, .. }))));
    }

    #[test]
    fn an_ethical_wall_keeps_a_member_out() {
        let mut h = channel(Settings::default());
        let sent = join(&mut h, "user:w/3", "w", "general");
        assert_refused(&sent, ChatReject::NotAllowed);
        join(&mut h, "user:a/1", "a", "general");
        let sent = post(&mut h, "user:a/1", "p1", "general");
        let Msg::Chat(ChatMsg::StoreAppend { token, post: p }) = &sent[0].1 else {
            panic!()
        };
        let sent = appended(&mut h, *token, 1, p.clone());
        assert!(sent.iter().all(|(a, _)| a.node != "user:w/3"));
        // Not joined: a post is refused too.
        let sent = post(&mut h, "user:w/3", "p2", "general");
        assert_refused(&sent, ChatReject::NotJoined);
    }

    #[test]
    fn file_tokens_go_only_to_members_allowed_in_the_room() {
        use crate::chat::pool::verify_grant;
        let mut h = joined(Settings::default());
        let sent = h.msg(
            client("user:a/1"),
            Msg::Chat(ChatMsg::FileTokenRequest {
                room: "general".into(),
                download: None,
            }),
        );
        let Msg::Chat(ChatMsg::FileToken { token, .. }) = &sent[0].1 else {
            panic!("{sent:?}")
        };
        let grant = verify_grant(b"test key", token).expect("signed with the pool key");
        assert_eq!((grant.user.as_str(), grant.op), ("a", FileOp::Upload));
        // Not joined (the walled user could not join): no token.
        let sent = h.msg(
            client("user:w/3"),
            Msg::Chat(ChatMsg::FileTokenRequest {
                room: "general".into(),
                download: Some("f1".into()),
            }),
        );
        assert!(matches!(sent[0].1, Msg::Chat(ChatMsg::ChatRejected { .. })));
        // An auditorium listener may download but not upload.
        join(&mut h, "user:b/2", "b", "town-hall");
        let ask = |h: &mut Harness<Channel>, download: Option<crate::core::ids::FileId>| {
            h.msg(
                client("user:b/2"),
                Msg::Chat(ChatMsg::FileTokenRequest {
                    room: "town-hall".into(),
                    download,
                }),
            )
            .remove(0)
            .1
        };
        assert!(matches!(
            ask(&mut h, None),
            Msg::Chat(ChatMsg::ChatRejected { .. })
        ));
        assert!(matches!(
            ask(&mut h, Some("f1".into())),
            Msg::Chat(ChatMsg::FileToken { .. })
        ));
    }

    #[test]
    fn only_presenters_post_in_an_auditorium() {
        let mut h = channel(Settings::default());
        join(&mut h, "user:b/2", "b", "town-hall");
        let sent = post(&mut h, "user:b/2", "p1", "town-hall");
        assert_refused(&sent, ChatReject::NotAllowed);
        join(&mut h, "user:a/1", "a", "town-hall");
        assert!(matches!(
            post(&mut h, "user:a/1", "p2", "town-hall")[0].1,
            Msg::Chat(ChatMsg::StoreAppend { .. })
        ));
    }

    #[test]
    fn a_client_chats_only_as_its_principal() {
        let mut h = channel(Settings::default());
        // mallory, authenticated, joins as a; an unauthenticated client
        // posts; an auditor says hello.
        for (c, msg) in [
            (
                "user:mallory/1",
                Msg::Chat(ChatMsg::ChatJoin {
                    user: "a".into(),
                    room: "general".into(),
                    after: 0,
                }),
            ),
            (
                "user:mallory/1",
                Msg::Chat(ChatMsg::ChatHello { user: "a".into() }),
            ),
            (
                "client-9",
                Msg::Chat(ChatMsg::ChatPost {
                    post: "p".into(),
                    room: "general".into(),
                    text: "x".into(),
                }),
            ),
            (
                "auditor:a/2",
                Msg::Chat(ChatMsg::ChatHello { user: "a".into() }),
            ),
        ] {
            let sent = h.msg(client(c), msg);
            assert!(
                matches!(&sent[..], [(to, Msg::Chat(ChatMsg::ChatRejected { reason: ChatReject::Forbidden(_), .. }))] if to.node == c),
                "{c}: {sent:?}"
            );
            assert_eq!(h.events(), vec![OperatorEvent::IdentityRefused.name()]);
            h.clear_events();
        }
        assert_joined(&join(&mut h, "user:a/1", "a", "general"));
    }

    /// Only an operator disables, clears or replaces; a disabled room
    /// takes no joins and no posts and ends its subscriptions.
    #[test]
    fn records_requests_are_for_operators_and_a_disabled_room_is_closed() {
        let mut h = joined(Settings::default());
        for msg in [
            Msg::Chat(ChatMsg::RoomClear {
                room: "general".into(),
                before: None,
            }),
            Msg::Chat(ChatMsg::PostReplace {
                post: "p1".into(),
                text: "x".into(),
            }),
            Msg::Chat(ChatMsg::RoomDisable {
                room: "general".into(),
                disabled: true,
            }),
        ] {
            let sent = h.msg(client("user:a/1"), msg);
            assert!(
                matches!(
                    &sent[..],
                    [(
                        _,
                        Msg::Chat(ChatMsg::ChatRejected {
                            reason: ChatReject::Forbidden(_),
                            ..
                        })
                    )]
                ),
                "{sent:?}"
            );
        }
        let sent = h.msg(
            client("operator:ops/1"),
            Msg::Chat(ChatMsg::RoomDisable {
                room: "general".into(),
                disabled: true,
            }),
        );
        let Msg::Chat(ChatMsg::StoreRoomDisable { token, by, .. }) = &sent[0].1 else {
            panic!("{sent:?}")
        };
        assert_eq!(by, "ops");
        let info = Room {
            members: ["a", "b"].iter().map(|u| (*u).into()).collect(),
            disabled: true,
            version: 1,
            ..Default::default()
        };
        let sent = h.msg(
            store(),
            Msg::Chat(ChatMsg::StoreRoomSaved {
                token: *token,
                room: "general".into(),
                info: Box::new(info),
            }),
        );
        assert!(sent.iter().any(|(a, m)| a.node == "user:a/1"
            && matches!(
                m,
                Msg::Chat(ChatMsg::ChatRejected {
                    reason: ChatReject::RoomDisabled,
                    ..
                })
            )));
        assert!(sent.iter().any(|(a, m)| a.node == "operator:ops/1"
            && matches!(m, Msg::Chat(ChatMsg::RoomSaved { version: 1, .. }))));
        let sent = join(&mut h, "user:b/2", "b", "general");
        assert_refused(&sent, ChatReject::RoomDisabled);
        assert_eq!(
            cleared_ranges(
                2,
                9,
                &[(4, post_of("p4")), (5, post_of("p5")), (8, post_of("p8"))]
            ),
            vec![(3, 3), (6, 7), (9, 9)]
        );
        assert_eq!(cleared_ranges(2, 3, &[(3, post_of("p3"))]), vec![]);
    }

    fn post_of(id: &str) -> Post {
        Post {
            id: id.into(),
            room: "general".into(),
            author: "a".into(),
            text: String::new(),
            at: 0,
        }
    }

    #[test]
    fn over_capacity_new_sessions_are_told_busy() {
        let mut h = joined(Settings {
            chat_capacity: 1,
            ..Settings::default()
        });
        let sent = join(&mut h, "user:b/2", "b", "general");
        assert_refused(&sent, ChatReject::Busy);
        // The existing session may still join more rooms.
        assert_joined(&join(&mut h, "user:a/1", "a", "town-hall"));
    }

    #[test]
    fn a_post_the_store_does_not_confirm_in_time_is_refused_and_later_answers_ignored() {
        let mut h = joined(Settings::default());
        let sent = post(&mut h, "user:a/1", "p1", "general");
        let Msg::Chat(ChatMsg::StoreAppend { token, post: p }) = sent[0].1.clone() else {
            panic!()
        };
        let sent = h.fire(Timer::Chat(ChatTimer::StoreTimeout));
        assert_refused(&sent, ChatReject::StoreUnavailable);
        let sent = appended(&mut h, token, 1, p);
        assert!(sent.is_empty());
    }

    #[test]
    fn steady_traffic_does_not_postpone_the_store_timeout() {
        let mut h = joined(Settings::default());
        post(&mut h, "user:a/1", "p1", "general");
        let deadline = h.timer(Timer::Chat(ChatTimer::StoreTimeout)).unwrap();
        h.now += 1_000;
        post(&mut h, "user:a/1", "p2", "general");
        assert_eq!(
            h.timer(Timer::Chat(ChatTimer::StoreTimeout)).unwrap(),
            deadline
        );
    }

    #[test]
    fn silent_sessions_are_closed_and_load_is_reported() {
        let mut h = joined(Settings::default());
        h.now += 40_000;
        let sent = h.fire(Timer::Chat(ChatTimer::LoadReport));
        assert!(sent.iter().any(|(_, m)| *m
            == Msg::Chat(ChatMsg::LoadReport {
                sessions: 0,
                capacity: 10_000
            })));
    }
}

//! A Channel server: client sessions, room subscriptions, posts, fan-out
//! and relay to the other Channel servers of the pool.
//!
//! A post is appended to the chat store first; only then is it
//! acknowledged to its author (`ChatPosted`) and fanned out — to the
//! subscribers on this server and, through a relay, to every other Channel
//! server, which fans it out to theirs. Sequence numbers are per room and
//! contiguous, so a client that sees a gap, reconnects, or syncs
//! periodically asks for what it missed (`ChatSync`, `ChatJoin { after }`)
//! and gets it from the store: a lost relay or a failed server delays a
//! post, never loses it. Nothing here is durable: the store is.

use crate::actor::{authorize, Actor, Ctx, Recovered, StoreError, Timer};
use crate::chat::{sign_grant, ChatPool, ChatReject, FileGrant, FileOp, Post, RoomId};
use crate::ids::{ActorKind, Addr, Millis};
use crate::protocol::Msg;
use crate::settings::Settings;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Posts sent per catch-up read; a client further behind syncs again.
pub const CATCH_UP_LIMIT: u64 = 500;

struct Session {
    user: String,
    rooms: BTreeSet<RoomId>,
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
        since: Millis,
    },
}

pub struct Channel {
    name: String,
    pool: Arc<ChatPool>,
    settings: Settings,
    /// Client sessions by client node.
    sessions: BTreeMap<String, Session>,
    subscribers: BTreeMap<RoomId, BTreeSet<String>>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    /// Relaying switched off (a test sabotage: the checker must notice).
    relay: bool,
    relayed: u64,
    /// The store timeout timer is set (it is not moved by later requests,
    /// so that steady traffic cannot postpone it for ever).
    timeout_armed: bool,
}

impl Channel {
    pub fn new(name: impl Into<String>, pool: Arc<ChatPool>, settings: Settings) -> Self {
        Channel {
            name: name.into(),
            pool,
            settings,
            sessions: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            pending: BTreeMap::new(),
            next_token: 0,
            relay: true,
            relayed: 0,
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

    fn arm_timeout(&mut self, ctx: &mut Ctx) {
        if !self.timeout_armed {
            self.timeout_armed = true;
            ctx.set_timer(Timer::StoreTimeout, self.settings.chat_store_timeout);
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn reject(ctx: &mut Ctx, client: Addr, room: RoomId, post: Option<String>, reason: ChatReject) {
        ctx.send(client, Msg::ChatRejected { room, post, reason });
    }

    fn report_load(&self, ctx: &mut Ctx) {
        for lookup in &self.pool.lookups {
            ctx.send(
                Addr::new(lookup.clone(), ActorKind::Lookup),
                Msg::LoadReport {
                    sessions: self.sessions.len() as u64,
                    capacity: self.settings.chat_capacity,
                },
            );
        }
    }

    /// Sends `post` to this server's subscribers of its room.
    fn fan_out(&self, seq: u64, post: &Post, ctx: &mut Ctx) {
        if let Some(subs) = self.subscribers.get(&post.room) {
            for client in subs {
                ctx.send(
                    Addr::new(client.clone(), ActorKind::Client),
                    Msg::ChatMessage {
                        seq,
                        post: post.clone(),
                    },
                );
            }
        }
    }

    fn read(&mut self, client: Addr, room: RoomId, after: u64, join: bool, ctx: &mut Ctx) {
        let limit = if after == 0 {
            self.settings.chat_backchat
        } else {
            CATCH_UP_LIMIT
        };
        let token = self.token();
        self.pending.insert(
            token,
            Pending::Read {
                client,
                join,
                since: ctx.now(),
            },
        );
        ctx.send(
            self.store(),
            Msg::StoreRead {
                token,
                room,
                after,
                limit,
            },
        );
        self.arm_timeout(ctx);
    }

    fn client_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let now = ctx.now();
        if let Some(s) = self.sessions.get_mut(&from.node) {
            s.last_heard = now;
        }
        match msg {
            Msg::ChatJoin { user, room, after } => {
                let Some(info) = self.pool.rooms.get(&room) else {
                    return Self::reject(ctx, from, room, None, ChatReject::NoSuchRoom);
                };
                if !info.may_read(&user) {
                    ctx.event(
                        "chat_join_refused",
                        format!("{}: {user} may not read {room}", self.name),
                    );
                    return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
                }
                match self.sessions.get_mut(&from.node) {
                    Some(s) if s.user != user => {
                        // One user per client connection.
                        return Self::reject(ctx, from, room, None, ChatReject::NotAllowed);
                    }
                    Some(s) => {
                        s.rooms.insert(room.clone());
                    }
                    None => {
                        if self.sessions.len() as u64 >= self.settings.chat_capacity {
                            return Self::reject(ctx, from, room, None, ChatReject::Busy);
                        }
                        self.sessions.insert(
                            from.node.clone(),
                            Session {
                                user,
                                rooms: BTreeSet::from([room.clone()]),
                                last_heard: now,
                            },
                        );
                    }
                }
                self.subscribers
                    .entry(room.clone())
                    .or_default()
                    .insert(from.node.clone());
                self.read(from, room, after, true, ctx);
            }
            Msg::ChatLeave { room } => {
                if let Some(s) = self.sessions.get_mut(&from.node) {
                    s.rooms.remove(&room);
                }
                if let Some(subs) = self.subscribers.get_mut(&room) {
                    subs.remove(&from.node);
                }
            }
            Msg::ChatSync { room, after } => {
                let joined = self
                    .sessions
                    .get(&from.node)
                    .is_some_and(|s| s.rooms.contains(&room));
                if !joined {
                    return Self::reject(ctx, from, room, None, ChatReject::NotJoined);
                }
                self.read(from, room, after, false, ctx);
            }
            Msg::FileTokenRequest { room, download } => {
                let Some(session) = self.sessions.get(&from.node) else {
                    return Self::reject(ctx, from, room, None, ChatReject::NotJoined);
                };
                let info = self.pool.rooms.get(&room);
                // Upload: a member who may post; download: one who may read.
                let allowed = info.is_some_and(|r| match download {
                    None => r.may_post(&session.user),
                    Some(_) => r.may_read(&session.user),
                });
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
                    Msg::FileToken {
                        room,
                        download,
                        token,
                    },
                );
            }
            Msg::ChatPost { post, room, text } => {
                let Some(session) = self.sessions.get(&from.node) else {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotJoined);
                };
                if !session.rooms.contains(&room) {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotJoined);
                }
                let allowed = self
                    .pool
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.may_post(&session.user));
                if !allowed {
                    return Self::reject(ctx, from, room, Some(post), ChatReject::NotAllowed);
                }
                let post = Post {
                    id: post,
                    room,
                    author: session.user.clone(),
                    text,
                    at: now,
                };
                let token = self.token();
                ctx.send(
                    self.store(),
                    Msg::StoreAppend {
                        token,
                        post: post.clone(),
                    },
                );
                self.pending.insert(
                    token,
                    Pending::Post {
                        client: from,
                        post,
                        since: now,
                    },
                );
                self.arm_timeout(ctx);
            }
            other => ctx.event(
                "unexpected_message",
                format!("channel {} ignored {} from {from}", self.name, other.name()),
            ),
        }
    }

    fn store_msg(&mut self, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::StoreAppended { token, seq, post } => {
                let Some(Pending::Post { client, .. }) = self.pending.remove(&token) else {
                    return; // timed out already: the author retries
                };
                ctx.send(
                    client,
                    Msg::ChatPosted {
                        post: post.id.clone(),
                        room: post.room.clone(),
                        seq,
                    },
                );
                self.fan_out(seq, &post, ctx);
                if self.relay {
                    for other in self.pool.channels.iter().filter(|c| **c != self.name) {
                        self.relayed += 1;
                        ctx.send(
                            Addr::new(other.clone(), ActorKind::Channel),
                            Msg::Relay {
                                seq,
                                post: post.clone(),
                            },
                        );
                    }
                }
            }
            Msg::StoreRange {
                token,
                room,
                posts,
                latest,
            } => {
                let Some(Pending::Read { client, join, .. }) = self.pending.remove(&token) else {
                    return;
                };
                for (seq, post) in posts {
                    ctx.send(client.clone(), Msg::ChatMessage { seq, post });
                }
                if join {
                    ctx.send(client, Msg::ChatJoined { room, latest });
                }
            }
            Msg::StoreFailed { token } => match self.pending.remove(&token) {
                Some(Pending::Post { client, post, .. }) => Self::reject(
                    ctx,
                    client,
                    post.room,
                    Some(post.id),
                    ChatReject::StoreUnavailable,
                ),
                Some(Pending::Read { .. }) | None => {}
            },
            other => ctx.event(
                "unexpected_message",
                format!(
                    "channel {} ignored {} from the store",
                    self.name,
                    other.name()
                ),
            ),
        }
    }
}

impl Actor for Channel {
    fn on_start(&mut self, _recovered: Recovered, ctx: &mut Ctx) {
        self.sessions.clear();
        self.subscribers.clear();
        self.pending.clear();
        self.timeout_armed = false;
        self.report_load(ctx);
        ctx.set_timer(Timer::LoadReport, self.settings.chat_load_report);
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
        match from.actor {
            ActorKind::Client => self.client_msg(from, msg, ctx),
            ActorKind::ChatStore => self.store_msg(msg, ctx),
            _ => match msg {
                Msg::Relay { seq, post } => self.fan_out(seq, &post, ctx),
                other => ctx.event(
                    "unexpected_message",
                    format!("channel {} ignored {} from {from}", self.name, other.name()),
                ),
            },
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        let now = ctx.now();
        match timer {
            Timer::LoadReport => {
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
                    }
                }
                self.report_load(ctx);
                ctx.set_timer(Timer::LoadReport, self.settings.chat_load_report);
            }
            Timer::StoreTimeout => {
                self.timeout_armed = false;
                let limit = self.settings.chat_store_timeout;
                let expired: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| {
                        let since = match p {
                            Pending::Post { since, .. } | Pending::Read { since, .. } => *since,
                        };
                        now.saturating_sub(since) >= limit
                    })
                    .map(|(t, _)| *t)
                    .collect();
                for token in expired {
                    match self.pending.remove(&token) {
                        Some(Pending::Post { client, post, .. }) => Self::reject(
                            ctx,
                            client,
                            post.room,
                            Some(post.id),
                            ChatReject::StoreUnavailable,
                        ),
                        // The client syncs again later.
                        Some(Pending::Read { .. }) | None => {}
                    }
                }
                if !self.pending.is_empty() {
                    self.arm_timeout(ctx);
                }
            }
            _ => {}
        }
    }

    fn on_persisted(&mut self, _token: u64, _result: Result<(), StoreError>, _ctx: &mut Ctx) {}

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("chat_sessions", self.sessions.len() as u64),
            ("chat_relayed", self.relayed),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Room;
    use crate::testkit::Harness;

    fn pool() -> Arc<ChatPool> {
        let mut rooms = BTreeMap::new();
        rooms.insert(
            "general".to_string(),
            Room {
                members: ["a", "b", "w"].iter().map(|u| u.to_string()).collect(),
                denied: BTreeSet::from(["w".to_string()]),
                presenters: None,
            },
        );
        rooms.insert(
            "town-hall".to_string(),
            Room {
                members: ["a", "b"].iter().map(|u| u.to_string()).collect(),
                denied: BTreeSet::new(),
                presenters: Some(BTreeSet::from(["a".to_string()])),
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

    fn client(n: &str) -> Addr {
        Addr::new(n, ActorKind::Client)
    }

    fn store() -> Addr {
        Addr::new("chatdb", ActorKind::ChatStore)
    }

    /// Joins `user` from client `c` and answers the store read with nothing.
    fn join(h: &mut Harness<Channel>, c: &str, user: &str, room: &str) -> Vec<(Addr, Msg)> {
        let sent = h.msg(
            client(c),
            Msg::ChatJoin {
                user: user.into(),
                room: room.into(),
                after: 0,
            },
        );
        let Some((_, Msg::StoreRead { token, .. })) = sent.first() else {
            return sent;
        };
        h.msg(
            store(),
            Msg::StoreRange {
                token: *token,
                room: room.into(),
                posts: vec![],
                latest: 0,
            },
        )
    }

    fn post(h: &mut Harness<Channel>, c: &str, id: &str, room: &str) -> Vec<(Addr, Msg)> {
        h.msg(
            client(c),
            Msg::ChatPost {
                post: id.into(),
                room: room.into(),
                text: "hi".into(),
            },
        )
    }

    #[test]
    fn a_post_is_stored_then_acknowledged_fanned_out_and_relayed() {
        let mut h = channel(Settings::default());
        assert_eq!(
            join(&mut h, "c1", "a", "general")[0].1,
            Msg::ChatJoined {
                room: "general".into(),
                latest: 0
            }
        );
        join(&mut h, "c2", "b", "general");
        let sent = post(&mut h, "c1", "p1", "general");
        let Msg::StoreAppend { token, post: p } = &sent[0].1 else {
            panic!("{sent:?}")
        };
        assert_eq!(sent[0].0, store());
        assert_eq!(p.author, "a");
        let sent = h.msg(
            store(),
            Msg::StoreAppended {
                token: *token,
                seq: 1,
                post: p.clone(),
            },
        );
        let to: Vec<(String, &str)> = sent
            .iter()
            .map(|(a, m)| (a.node.clone(), m.name()))
            .collect();
        assert_eq!(
            to,
            vec![
                ("c1".to_string(), "ChatPosted"),
                ("c1".to_string(), "ChatMessage"),
                ("c2".to_string(), "ChatMessage"),
                ("ch2".to_string(), "Relay"),
            ]
        );
        // A relay from ch2 reaches the local subscribers only.
        let sent = h.msg(
            Addr::new("ch2", ActorKind::Channel),
            Msg::Relay {
                seq: 2,
                post: p.clone(),
            },
        );
        assert_eq!(sent.len(), 2);
        assert!(sent
            .iter()
            .all(|(_, m)| matches!(m, Msg::ChatMessage { seq: 2, .. })));
    }

    #[test]
    fn an_ethical_wall_keeps_a_member_out() {
        let mut h = channel(Settings::default());
        let sent = join(&mut h, "c3", "w", "general");
        assert!(matches!(
            sent[0].1,
            Msg::ChatRejected {
                reason: ChatReject::NotAllowed,
                ..
            }
        ));
        join(&mut h, "c1", "a", "general");
        let sent = post(&mut h, "c1", "p1", "general");
        let Msg::StoreAppend { token, post: p } = &sent[0].1 else {
            panic!()
        };
        let sent = h.msg(
            store(),
            Msg::StoreAppended {
                token: *token,
                seq: 1,
                post: p.clone(),
            },
        );
        assert!(sent.iter().all(|(a, _)| a.node != "c3"));
        // Not joined: a post is refused too.
        let sent = post(&mut h, "c3", "p2", "general");
        assert!(matches!(
            sent[0].1,
            Msg::ChatRejected {
                reason: ChatReject::NotJoined,
                ..
            }
        ));
    }

    #[test]
    fn file_tokens_go_only_to_members_allowed_in_the_room() {
        use crate::chat::verify_grant;
        let mut h = channel(Settings::default());
        join(&mut h, "c1", "a", "general");
        let sent = h.msg(
            client("c1"),
            Msg::FileTokenRequest {
                room: "general".into(),
                download: None,
            },
        );
        let Msg::FileToken { token, .. } = &sent[0].1 else {
            panic!("{sent:?}")
        };
        let grant = verify_grant(b"test key", token).expect("signed with the pool key");
        assert_eq!((grant.user.as_str(), grant.op), ("a", FileOp::Upload));
        // Not joined (the walled user could not join): no token.
        let sent = h.msg(
            client("c3"),
            Msg::FileTokenRequest {
                room: "general".into(),
                download: Some("f1".into()),
            },
        );
        assert!(matches!(sent[0].1, Msg::ChatRejected { .. }));
        // An auditorium listener may download but not upload.
        join(&mut h, "c2", "b", "town-hall");
        let ask = |h: &mut Harness<Channel>, download: Option<String>| {
            h.msg(
                client("c2"),
                Msg::FileTokenRequest {
                    room: "town-hall".into(),
                    download,
                },
            )
            .remove(0)
            .1
        };
        assert!(matches!(ask(&mut h, None), Msg::ChatRejected { .. }));
        assert!(matches!(
            ask(&mut h, Some("f1".into())),
            Msg::FileToken { .. }
        ));
    }

    #[test]
    fn only_presenters_post_in_an_auditorium() {
        let mut h = channel(Settings::default());
        join(&mut h, "c2", "b", "town-hall");
        let sent = post(&mut h, "c2", "p1", "town-hall");
        assert!(matches!(
            sent[0].1,
            Msg::ChatRejected {
                reason: ChatReject::NotAllowed,
                ..
            }
        ));
        join(&mut h, "c1", "a", "town-hall");
        assert!(matches!(
            post(&mut h, "c1", "p2", "town-hall")[0].1,
            Msg::StoreAppend { .. }
        ));
    }

    #[test]
    fn over_capacity_new_sessions_are_told_busy() {
        let mut h = channel(Settings {
            chat_capacity: 1,
            ..Settings::default()
        });
        join(&mut h, "c1", "a", "general");
        let sent = join(&mut h, "c2", "b", "general");
        assert!(matches!(
            sent[0].1,
            Msg::ChatRejected {
                reason: ChatReject::Busy,
                ..
            }
        ));
        // The existing session may still join more rooms.
        assert!(matches!(
            join(&mut h, "c1", "a", "town-hall")[0].1,
            Msg::ChatJoined { .. }
        ));
    }

    #[test]
    fn a_post_the_store_does_not_confirm_in_time_is_refused_and_later_answers_ignored() {
        let mut h = channel(Settings::default());
        join(&mut h, "c1", "a", "general");
        let sent = post(&mut h, "c1", "p1", "general");
        let Msg::StoreAppend { token, post: p } = sent[0].1.clone() else {
            panic!()
        };
        let sent = h.fire(Timer::StoreTimeout);
        assert!(matches!(
            sent[0].1,
            Msg::ChatRejected {
                reason: ChatReject::StoreUnavailable,
                ..
            }
        ));
        let sent = h.msg(
            store(),
            Msg::StoreAppended {
                token,
                seq: 1,
                post: p,
            },
        );
        assert!(sent.is_empty());
    }

    #[test]
    fn steady_traffic_does_not_postpone_the_store_timeout() {
        let mut h = channel(Settings::default());
        join(&mut h, "c1", "a", "general");
        post(&mut h, "c1", "p1", "general");
        let deadline = h.timers[&Timer::StoreTimeout];
        h.now += 1_000;
        post(&mut h, "c1", "p2", "general");
        assert_eq!(h.timers[&Timer::StoreTimeout], deadline);
    }

    #[test]
    fn silent_sessions_are_closed_and_load_is_reported() {
        let mut h = channel(Settings::default());
        join(&mut h, "c1", "a", "general");
        h.now += 40_000;
        let sent = h.fire(Timer::LoadReport);
        assert!(sent.iter().any(|(_, m)| *m
            == Msg::LoadReport {
                sessions: 0,
                capacity: 10_000
            }));
    }
}

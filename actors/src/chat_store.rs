//! The chat store: every room's posts, in order, durably.
//!
//! A post is appended with the next sequence number of its room — one
//! durable write, then the answer. Its id makes the append idempotent: a
//! Channel server that retries a post (its author timed out and tried
//! again, or another server relays the retry) gets the sequence number it
//! was stored under, and the post is never stored twice. The host runs one
//! persist at a time per actor, so sequence numbers have no holes: a failed
//! write gives its number to the next post.

use crate::actor::{authorize, Actor, Ctx, Recovered, StoreError, StoreOp, Timer};
use crate::chat::{Post, PostId, RoomId};
use crate::ids::{ActorKind, Addr};
use crate::protocol::Msg;
use crate::store_keys;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Key prefix of a stored post: `c/<room>\0<seq, 8 bytes big-endian>`.
pub const CHAT_POST: &[u8] = b"c/";

pub fn post_key(room: &str, seq: u64) -> Vec<u8> {
    let mut k = CHAT_POST.to_vec();
    k.extend_from_slice(room.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn parse_post_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(CHAT_POST)?;
    if rest.len() < 9 || rest[rest.len() - 9] != 0 {
        return None;
    }
    let (room, seq) = rest.split_at(rest.len() - 9);
    let seq = u64::from_be_bytes(seq[1..].try_into().ok()?);
    Some((String::from_utf8(room.to_vec()).ok()?, seq))
}

struct Append {
    from: Addr,
    token: u64,
    seq: u64,
    post: Post,
}

pub struct ChatStore {
    name: String,
    rooms: BTreeMap<RoomId, BTreeMap<u64, Post>>,
    by_id: BTreeMap<PostId, (RoomId, u64)>,
    writing: BTreeMap<u64, Append>,
    next_token: u64,
}

impl ChatStore {
    pub fn new(name: impl Into<String>) -> Self {
        ChatStore {
            name: name.into(),
            rooms: BTreeMap::new(),
            by_id: BTreeMap::new(),
            writing: BTreeMap::new(),
            next_token: 0,
        }
    }

    fn latest(&self, room: &str) -> u64 {
        self.rooms
            .get(room)
            .and_then(|r| r.keys().next_back().copied())
            .unwrap_or(0)
    }
}

/// Reads every post of a store's recovered state: `(seq, post)` or why a
/// key could not be read.
pub fn stored_posts(recovered: &Recovered) -> Vec<Result<(u64, Post), String>> {
    recovered
        .range(CHAT_POST.to_vec()..)
        .take_while(|(k, _)| k.starts_with(CHAT_POST))
        .map(|(k, v)| {
            let (room, seq) =
                parse_post_key(k).ok_or_else(|| format!("malformed post key {k:?}"))?;
            let post: Post = store_keys::decode(v).map_err(|e| format!("key {k:?}: {e}"))?;
            if post.room != room {
                return Err(format!("post {} stored under room {room}", post.id));
            }
            Ok((seq, post))
        })
        .collect()
}

impl Actor for ChatStore {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        self.rooms.clear();
        self.by_id.clear();
        self.writing.clear();
        for entry in stored_posts(&recovered) {
            match entry {
                Ok((seq, post)) => {
                    self.by_id.insert(post.id.clone(), (post.room.clone(), seq));
                    self.rooms
                        .entry(post.room.clone())
                        .or_default()
                        .insert(seq, post);
                }
                Err(e) => ctx.event("store_corrupt", format!("{}: {e}", self.name)),
            }
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        if !authorize(
            from.actor == ActorKind::Channel,
            &self.name,
            &from,
            &msg,
            ctx,
        ) {
            return;
        }
        match msg {
            Msg::StoreAppend { token, post } => {
                if let Some((room, seq)) = self.by_id.get(&post.id) {
                    // Stored already: the same answer again.
                    let stored = self.rooms[room][seq].clone();
                    ctx.send(
                        from,
                        Msg::StoreAppended {
                            token,
                            seq: *seq,
                            post: stored,
                        },
                    );
                    return;
                }
                let seq = self.latest(&post.room) + 1;
                self.next_token += 1;
                let key = post_key(&post.room, seq);
                let value = store_keys::encode(&post);
                self.writing.insert(
                    self.next_token,
                    Append {
                        from,
                        token,
                        seq,
                        post,
                    },
                );
                ctx.persist(self.next_token, vec![StoreOp::Put { key, value }]);
            }
            Msg::StoreRead {
                token,
                room,
                after,
                limit,
            } => {
                let latest = self.latest(&room);
                let posts: Vec<(u64, Post)> = match self.rooms.get(&room) {
                    None => Vec::new(),
                    // `after = 0`: a fresh join, the last `limit` posts.
                    Some(r) if after == 0 => {
                        let skip = r.len().saturating_sub(limit as usize);
                        r.iter().skip(skip).map(|(s, p)| (*s, p.clone())).collect()
                    }
                    Some(r) => r
                        .range((Bound::Excluded(after), Bound::Unbounded))
                        .take(limit as usize)
                        .map(|(s, p)| (*s, p.clone()))
                        .collect(),
                };
                ctx.send(
                    from,
                    Msg::StoreRange {
                        token,
                        room,
                        posts,
                        latest,
                    },
                );
            }
            other => ctx.event(
                "unexpected_message",
                format!(
                    "chat store {} ignored {} from {from}",
                    self.name,
                    other.name()
                ),
            ),
        }
    }

    fn on_timer(&mut self, _timer: Timer, _ctx: &mut Ctx) {}

    fn on_persisted(&mut self, token: u64, result: Result<(), StoreError>, ctx: &mut Ctx) {
        let Some(a) = self.writing.remove(&token) else {
            return;
        };
        match result {
            Ok(()) => {
                self.by_id
                    .insert(a.post.id.clone(), (a.post.room.clone(), a.seq));
                self.rooms
                    .entry(a.post.room.clone())
                    .or_default()
                    .insert(a.seq, a.post.clone());
                ctx.send(
                    a.from,
                    Msg::StoreAppended {
                        token: a.token,
                        seq: a.seq,
                        post: a.post,
                    },
                );
            }
            Err(e) => {
                ctx.event(
                    "chat_store_failed",
                    format!("{}: post {} not stored: {e}", self.name, a.post.id),
                );
                ctx.send(a.from, Msg::StoreFailed { token: a.token });
            }
        }
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        vec![("chat_posts", self.by_id.len() as u64)]
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
            ChatStore::new("db1"),
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
            ChatStore::new("db1"),
        );
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
    }

    #[test]
    fn a_failed_write_is_refused_and_leaves_no_hole() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1"),
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
    fn reads_give_the_backchat_or_what_follows_a_number() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1"),
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
    }

    #[test]
    fn only_channel_servers_may_write() {
        let mut h = Harness::new(
            Addr::new("db1", ActorKind::ChatStore),
            ChatStore::new("db1"),
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

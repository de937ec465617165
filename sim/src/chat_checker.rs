//! The group chat checker: compares what the chat clients saw with the
//! chat store's durable posts — every accepted post stored exactly once,
//! in per-room order, and delivered exactly once, in order, to every member
//! subscribed when it was posted; nothing reaching anyone behind an
//! ethical wall.

use holdfast_actors::chat::Post;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Users and rooms of chat workload `w`: `c<w>u<i>@corp.example`,
/// `c<w>-room<j>`; the last `walled` users are members walled off every room.
pub fn chat_users(w: usize, n: u64, domain: &str) -> Vec<String> {
    (1..=n).map(|i| format!("c{w}u{i}@{domain}")).collect()
}
pub fn chat_rooms(w: usize, n: u64) -> Vec<String> {
    (1..=n).map(|j| format!("c{w}-room{j}")).collect()
}

/// What one post became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    Accepted { seq: u64 },
    Rejected(String),
    Unknown,
}

#[derive(Clone, Debug)]
pub struct PostOp {
    pub room: String,
    pub author: String,
    pub text: String,
    pub outcome: PostOutcome,
}

/// What one user saw of one room.
#[derive(Clone, Debug, Default)]
pub struct RoomView {
    /// The room's latest sequence number when the user first joined: every
    /// later post is owed to the user.
    pub baseline: Option<u64>,
    /// Delivered posts: sequence number → post id.
    pub delivered: BTreeMap<u64, String>,
    /// Post copies that arrived again (dropped by the client: informative).
    pub redundant: u64,
    /// Copies received at all while walled off (must stay 0).
    pub received_while_walled: u64,
}

/// Everything the chat clients observed.
#[derive(Default)]
pub struct ChatLog {
    pub posts: BTreeMap<String, PostOp>,
    pub views: BTreeMap<(String, String), RoomView>,
    pub walled: BTreeSet<(String, String)>,
    pub refused_joins: u64,
    pub busy: u64,
    pub reconnects: u64,
}

pub type SharedChatLog = Arc<Mutex<ChatLog>>;

/// The chat checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatCounts {
    pub posts: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub stored: u64,
    /// Accepted but not in the store.
    pub lost: u64,
    /// A post id stored under two sequence numbers.
    pub duplicates: u64,
    /// Stored but never posted.
    pub phantoms: u64,
    /// Holes in a room's sequence, a post stored under another number than
    /// its author was told, or stored content that differs from what was sent.
    pub order_errors: u64,
    /// Owed deliveries that never happened (member subscribed, post after
    /// its baseline).
    pub missed: u64,
    /// Deliveries owed and made.
    pub delivered: u64,
    /// A delivery whose post differs from the store's at that number.
    pub wrong_deliveries: u64,
    /// Copies received by someone walled off the room.
    pub wall_breaches: u64,
    pub refused_joins: u64,
    pub busy: u64,
    pub reconnects: u64,
    /// Copies that arrived again and were dropped by the client.
    pub redundant: u64,
    pub examples: BTreeMap<&'static str, Vec<String>>,
}

/// Compares what the chat clients saw with the store's durable posts.
pub fn check(log: &ChatLog, stored: &[(u64, Post)]) -> ChatCounts {
    let mut c = ChatCounts::default();
    let example = |c: &mut ChatCounts, what: &'static str, s: String| {
        let v = c.examples.entry(what).or_default();
        if v.len() < 5 {
            v.push(s);
        }
    };
    // room → seq → post
    let mut rooms: BTreeMap<&str, BTreeMap<u64, &Post>> = BTreeMap::new();
    let mut by_id: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (seq, post) in stored {
        c.stored += 1;
        rooms.entry(&post.room).or_default().insert(*seq, post);
        by_id.entry(&post.id).or_default().push((&post.room, *seq));
    }
    for (room, posts) in &rooms {
        for (i, seq) in posts.keys().enumerate() {
            if *seq != i as u64 + 1 {
                c.order_errors += 1;
                example(
                    &mut c,
                    "order_errors",
                    format!("{room}: seq {seq} at position {}", i + 1),
                );
                break;
            }
        }
    }
    for (id, places) in &by_id {
        if places.len() > 1 {
            c.duplicates += places.len() as u64 - 1;
            example(&mut c, "duplicates", format!("{id} at {places:?}"));
        }
        if !log.posts.contains_key(*id) {
            c.phantoms += 1;
            example(&mut c, "phantoms", id.to_string());
        }
    }
    for (id, op) in &log.posts {
        c.posts += 1;
        match &op.outcome {
            PostOutcome::Accepted { seq } => {
                c.accepted += 1;
                match by_id.get(id.as_str()) {
                    None => {
                        c.lost += 1;
                        example(&mut c, "lost", id.clone());
                    }
                    Some(places) => {
                        let post = rooms[places[0].0][&places[0].1];
                        if places[0] != (op.room.as_str(), *seq)
                            || post.text != op.text
                            || post.author != op.author
                        {
                            c.order_errors += 1;
                            example(
                                &mut c,
                                "order_errors",
                                format!("{id}: told {}#{seq}, stored {places:?}", op.room),
                            );
                        }
                    }
                }
            }
            PostOutcome::Rejected(_) => c.rejected += 1,
            PostOutcome::Unknown => c.unknown += 1,
        }
    }
    for ((user, room), view) in &log.views {
        c.redundant += view.redundant;
        c.wall_breaches += view.received_while_walled;
        if view.received_while_walled > 0 {
            example(
                &mut c,
                "wall_breaches",
                format!("{user} got {} posts of {room}", view.received_while_walled),
            );
        }
        if log.walled.contains(&(user.clone(), room.clone())) {
            continue;
        }
        let Some(baseline) = view.baseline else {
            continue;
        };
        let Some(posts) = rooms.get(room.as_str()) else {
            continue;
        };
        for (seq, post) in posts.range(baseline + 1..) {
            match view.delivered.get(seq) {
                None => {
                    c.missed += 1;
                    example(
                        &mut c,
                        "missed",
                        format!("{user}: {room}#{seq} ({})", post.id),
                    );
                }
                Some(id) if *id != post.id => {
                    c.wrong_deliveries += 1;
                    example(
                        &mut c,
                        "wrong_deliveries",
                        format!("{user}: {room}#{seq} got {id}, stored {}", post.id),
                    );
                }
                Some(_) => c.delivered += 1,
            }
        }
    }
    c.refused_joins = log.refused_joins;
    c.busy = log.busy;
    c.reconnects = log.reconnects;
    c
}

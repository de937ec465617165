//! Persistent group chat: the shared types of the Lookup, Channel and chat
//! store cores.
//!
//! A **pool** is a set of Channel servers sharing one chat store, found
//! through one or more Lookup instances. A post is appended to the store
//! (which gives it the next sequence number of its room), acknowledged to
//! its author, then fanned out to every subscriber of the room — on this
//! Channel server directly, on the others through a relay. Clients track
//! the last sequence number they have seen per room and ask for the rest
//! after a reconnect or a gap, so a lost relay or a failed server delays a
//! post but never loses it.

use crate::ids::UserId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A room's name, unique in the pool.
pub type RoomId = String;

/// A post's id, chosen by the posting client (unique, like a message id):
/// the store keys posts by it, which makes a retried post idempotent.
pub type PostId = String;

/// Who may see a room: members only, minus anyone in a denied category
/// (an ethical wall).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub members: BTreeSet<UserId>,
    /// Users walled off from this room whatever the membership says.
    pub denied: BTreeSet<UserId>,
    /// Auditorium: only presenters may post.
    pub presenters: Option<BTreeSet<UserId>>,
}

impl Room {
    pub fn may_read(&self, user: &str) -> bool {
        self.members.contains(user) && !self.denied.contains(user)
    }
    pub fn may_post(&self, user: &str) -> bool {
        self.may_read(user) && self.presenters.as_ref().is_none_or(|p| p.contains(user))
    }
}

/// The pool every chat core is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatPool {
    pub channels: Vec<String>,
    pub lookups: Vec<String>,
    /// The node hosting the chat store.
    pub store: String,
    pub rooms: BTreeMap<RoomId, Room>,
}

/// A stored post.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Post {
    pub id: PostId,
    pub room: RoomId,
    pub author: UserId,
    pub text: String,
    /// When the Channel server received it.
    pub at: u64,
}

/// Why a chat request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatReject {
    /// 503: the Channel server is over its load; retry with backoff
    /// (through Lookup).
    Busy,
    NoSuchRoom,
    /// Not a member, walled off, or not a presenter of an auditorium.
    NotAllowed,
    /// The chat store did not answer in time: nothing was stored; retry.
    StoreUnavailable,
    /// The request names a room the client has not joined.
    NotJoined,
}

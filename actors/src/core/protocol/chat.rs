//! The chat types the protocol carries: rooms, posts and why a chat
//! request was refused.

use crate::core::ids::UserId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A room's name, unique in the pool.
pub type RoomId = String;

/// A post's id, chosen by the posting client (unique, like a message id):
/// the store keys posts by it, which makes a retried post idempotent.
pub type PostId = String;

/// Who may find and enter a room (the Lync room privacy setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Privacy {
    /// Anyone its category allows may find, read and post.
    Open,
    /// Anyone its category allows may find it; only members enter.
    #[default]
    Closed,
    /// Only members and managers know it exists.
    Secret,
}

impl Privacy {
    pub fn parse(s: &str) -> Option<Privacy> {
        match s {
            "open" => Some(Privacy::Open),
            "closed" => Some(Privacy::Closed),
            "secret" => Some(Privacy::Secret),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Open => "open",
            Privacy::Closed => "closed",
            Privacy::Secret => "secret",
        }
    }
}

/// Who may see a room: its members and managers (everyone its category
/// allows, for an open room), minus anyone denied by the room or its
/// category (an ethical wall).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Room {
    pub members: BTreeSet<UserId>,
    /// Users walled off from this room whatever the membership says.
    pub denied: BTreeSet<UserId>,
    /// Auditorium: only presenters may post.
    pub presenters: Option<BTreeSet<UserId>>,
    /// May change the room; a manager is a member too.
    pub managers: BTreeSet<UserId>,
    pub privacy: Privacy,
    /// The category the room belongs to ("" = none: no category limits).
    pub category: String,
    pub description: String,
    /// New members are invited (they find the room in `getinv` until they
    /// follow it).
    pub invite: bool,
    /// Directory version of the last change (0 = as configured). An update
    /// names the version it was based on; a stale one is refused.
    pub version: u64,
    /// Disabled by an operator (`holdfast chat room disable`): no joins, no
    /// posts; its history is kept. Changed only with `RoomDisable`.
    pub disabled: bool,
}

impl Room {
    pub fn is_member(&self, user: &str) -> bool {
        self.members.contains(user) || self.managers.contains(user)
    }
}
/// One room as a search or association query shows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoomSummary {
    pub name: RoomId,
    pub description: String,
    pub privacy: Privacy,
    pub category: String,
    pub member: bool,
    pub manager: bool,
}

/// What a client asks of the room directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomQuery {
    /// `chansrch`: rooms the user may know of whose name or description
    /// contains the text (case-insensitive).
    Search(String),
    /// `getassociations`: rooms the user is a member or manager of.
    Associations,
    /// `getinv`: rooms with invitations on that the user is a member of
    /// and does not follow yet.
    Invitations,
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
    /// The request does not match the authenticated client: it speaks for
    /// another user, or the client's role may not chat.
    Forbidden(String),
    /// 503: the Channel server is over its load; retry with backoff
    /// (through Lookup).
    Busy,
    NoSuchRoom,
    /// Not a member, walled off, or not a presenter of an auditorium.
    NotAllowed,
    /// The chat store failed the write or did not answer in time. After a
    /// timeout the post may still be stored: retry with the same post id
    /// (the store answers a retry with the number it was stored under).
    StoreUnavailable,
    /// The request names a room the client has not joined.
    NotJoined,
    /// A room of that name exists already.
    RoomExists,
    /// The room changed since the version the update was based on: read
    /// it again and retry.
    Conflict,
    /// The post's text is longer than `chat_post_max_bytes` (`limit`).
    TooLarge {
        limit: u64,
    },
    /// An operator disabled the room: no joins and no posts until it is
    /// enabled again.
    RoomDisabled,
    /// No post of that id is stored (never posted, or cleared).
    NoSuchPost,
}

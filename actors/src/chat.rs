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
    /// Web service nodes (file upload and download).
    pub web: Vec<String>,
    /// Key shared by Channel servers (which grant file access) and the Web
    /// service (which checks it).
    pub token_key: Vec<u8>,
}

/// What a file token allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    Upload,
    Download { file: String },
}

/// A grant a Channel server gives a member: `user` may do `op` in `room`
/// until `expires` (ms). Signed with the pool's token key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileGrant {
    pub user: UserId,
    pub room: RoomId,
    pub op: FileOp,
    pub expires: u64,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The token for `grant`: the grant, then its HMAC-SHA256.
pub fn sign_grant(key: &[u8], grant: &FileGrant) -> Vec<u8> {
    use hmac::Mac;
    let mut token = postcard::to_allocvec(grant).expect("in-memory serialization cannot fail");
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&token);
    token.extend_from_slice(&mac.finalize().into_bytes());
    token
}

/// The grant a token carries, if its signature is right (constant-time
/// comparison); expiry and operation are the caller's to check.
pub fn verify_grant(key: &[u8], token: &[u8]) -> Option<FileGrant> {
    use hmac::Mac;
    if token.len() < 32 {
        return None;
    }
    let (body, tag) = token.split_at(token.len() - 32);
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(body);
    mac.verify_slice(tag).ok()?;
    postcard::from_bytes(body).ok()
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

//! Persistent group chat: the pool and the room directory shared by the
//! Lookup, Channel and chat store cores (the rooms and posts themselves
//! travel in messages: see [`crate::core::protocol::chat`]).
//!
//! A **pool** is a set of Channel servers sharing one chat store, found
//! through one or more Lookup instances. A post is appended to the store
//! (which gives it the next sequence number of its room), acknowledged to
//! its author, then fanned out to every subscriber of the room — on this
//! Channel server directly, on the others through a relay. Clients track
//! the last sequence number they have seen per room and ask for the rest
//! after a reconnect or a gap, so a lost relay or a failed server delays a
//! post but never loses it.

use crate::core::ids::{FileId, UserId};
use crate::core::protocol::chat::{ChatReject, Privacy, Room, RoomId, RoomQuery, RoomSummary};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A category: the users its rooms may ever hold, those walled off from
/// them, and who may create rooms in it. `"*"` in `allowed` or `creators`
/// stands for every user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub allowed: BTreeSet<UserId>,
    pub denied: BTreeSet<UserId>,
    pub creators: BTreeSet<UserId>,
}

fn names(set: &BTreeSet<UserId>, user: &str) -> bool {
    set.contains(user) || set.contains("*")
}

impl Category {
    pub fn admits(&self, user: &str) -> bool {
        names(&self.allowed, user) && !self.denied.contains(user)
    }
    pub fn may_create(&self, user: &str) -> bool {
        self.admits(user) && names(&self.creators, user)
    }
}

/// The rooms of a pool and the categories they live in: every access
/// decision of the Channel servers is made here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    pub categories: BTreeMap<String, Category>,
    pub rooms: BTreeMap<RoomId, Room>,
}

impl Directory {
    /// The room's category, if it has one; `Err` if it names a category
    /// that does not exist (nobody is admitted: fail closed).
    fn category(&self, room: &Room) -> Result<Option<&Category>, ()> {
        if room.category.is_empty() {
            return Ok(None);
        }
        self.categories.get(&room.category).map(Some).ok_or(())
    }

    fn admitted(&self, room: &Room, user: &str) -> bool {
        if room.denied.contains(user) {
            return false;
        }
        match self.category(room) {
            Ok(None) => true,
            Ok(Some(c)) => c.admits(user),
            Err(()) => false,
        }
    }

    pub fn may_read(&self, room: &str, user: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            self.admitted(r, user) && (r.privacy == Privacy::Open || r.is_member(user))
        })
    }

    /// May the user post (or upload) to the room? Not while it is
    /// disabled.
    pub fn may_post(&self, room: &str, user: &str) -> bool {
        self.may_read(room, user)
            && !self.rooms[room].disabled
            && self.rooms[room]
                .presenters
                .as_ref()
                .is_none_or(|p| p.contains(user))
    }

    /// May the user learn that the room exists?
    pub fn may_see(&self, room: &str, user: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            self.admitted(r, user) && (r.privacy != Privacy::Secret || r.is_member(user))
        })
    }

    pub fn may_manage(&self, room: &str, user: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.managers.contains(user) && self.admitted(r, user))
    }

    /// Why `user` may not create `room` as described, if not.
    pub fn check_create(&self, user: &str, name: &str, room: &Room) -> Result<(), ChatReject> {
        if self.rooms.contains_key(name) {
            return Err(ChatReject::RoomExists);
        }
        match self.category(room) {
            Ok(Some(c)) if c.may_create(user) => Ok(()),
            // Rooms without a category come from the configuration only.
            _ => Err(ChatReject::NotAllowed),
        }
    }

    /// Why `user` may not change `name` into `room`, if not.
    pub fn check_update(&self, user: &str, name: &str, room: &Room) -> Result<(), ChatReject> {
        let Some(current) = self.rooms.get(name) else {
            return Err(ChatReject::NoSuchRoom);
        };
        if !self.may_manage(name, user) {
            return Err(ChatReject::NotAllowed);
        }
        if room.version != current.version {
            return Err(ChatReject::Conflict);
        }
        // Moving a room to another category needs the right to create there.
        if room.category != current.category {
            match self.category(room) {
                Ok(Some(c)) if c.may_create(user) => {}
                _ => return Err(ChatReject::NotAllowed),
            }
        }
        Ok(())
    }

    pub fn summary(&self, name: &str, user: &str) -> Option<RoomSummary> {
        let r = self.rooms.get(name)?;
        Some(RoomSummary {
            name: name.into(),
            description: r.description.clone(),
            privacy: r.privacy,
            category: r.category.clone(),
            member: r.is_member(user),
            manager: r.managers.contains(user),
        })
    }

    /// Answers a query for `user`, who follows `follows`, in name order.
    pub fn query(
        &self,
        user: &str,
        query: &RoomQuery,
        follows: &BTreeSet<RoomId>,
    ) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .filter(|(name, r)| match query {
                RoomQuery::Search(text) => {
                    let text = text.to_lowercase();
                    self.may_see(name, user)
                        && (name.to_lowercase().contains(&text)
                            || r.description.to_lowercase().contains(&text))
                }
                RoomQuery::Associations => r.is_member(user) && self.admitted(r, user),
                RoomQuery::Invitations => {
                    r.invite
                        && r.is_member(user)
                        && self.admitted(r, user)
                        && !follows.contains(*name)
                }
            })
            .filter_map(|(name, _)| self.summary(name, user))
            .collect()
    }
}

/// The pool every chat core is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChatPool {
    pub channels: Vec<String>,
    pub lookups: Vec<String>,
    /// The node hosting the chat store.
    pub store: String,
    /// The configured rooms (version 0); rooms created or changed at run
    /// time live in the chat store.
    pub rooms: BTreeMap<RoomId, Room>,
    pub categories: BTreeMap<String, Category>,
    /// Web service nodes (file upload and download).
    pub web: Vec<String>,
    /// Key shared by Channel servers (which grant file access) and the Web
    /// service (which checks it).
    pub token_key: Vec<u8>,
    /// The Compliance service node, if the pool has one: the chat store
    /// and the Web service then queue compliance events for it.
    pub compliance: Option<String>,
    pub export: crate::compliance::service::ComplianceConfig,
}

/// What a file token allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    Upload,
    Download { file: FileId },
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

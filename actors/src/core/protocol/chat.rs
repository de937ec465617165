//! The chat types the protocol carries: rooms, posts and why a chat
//! request was refused.

use crate::core::ids::{FileId, Millis, Token, UserId};
use crate::core::protocol::compliance::EventKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub use crate::core::ids::{PostId, RoomId};

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

/// The messages of group chat: chat clients, Lookup instances, Channel
/// servers, the chat store and the Web service. Travels as
/// [`Msg::Chat`](crate::core::protocol::Msg::Chat).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChatMsg {
    // ---- chat client ↔ Lookup ---------------------------------------------
    /// Which Channel server should this client use?
    FindChannel,
    ChannelAssigned {
        channel: String,
    },
    /// No Channel server is in rotation; ask again later.
    NoChannel,
    // ---- Channel server → Lookup -------------------------------------------
    /// Sent every few seconds; a server that stops reporting leaves the
    /// rotation.
    LoadReport {
        sessions: u64,
        capacity: u64,
    },
    // ---- chat client ↔ Channel server ---------------------------------------
    /// Subscribe `user` to `room` and send every post after `after`.
    ChatJoin {
        user: UserId,
        room: RoomId,
        after: u64,
    },
    /// Everything up to `latest` has been sent; live posts follow.
    ChatJoined {
        room: RoomId,
        latest: u64,
    },
    ChatLeave {
        room: RoomId,
    },
    /// The leave is recorded (for compliance, if the pool has it).
    ChatLeft {
        room: RoomId,
    },
    ChatPost {
        post: PostId,
        room: RoomId,
        text: String,
    },
    /// Stored with sequence number `seq`: it will reach every subscriber.
    ChatPosted {
        post: PostId,
        room: RoomId,
        seq: u64,
    },
    ChatRejected {
        room: RoomId,
        post: Option<PostId>,
        reason: ChatReject,
    },
    /// A post of a room the client is subscribed to.
    ChatMessage {
        seq: u64,
        post: Post,
    },
    /// The client has everything of `room` up to `after`; the server sends
    /// what is missing (after a gap, or periodically).
    ChatSync {
        room: RoomId,
        after: u64,
    },
    /// Opens a session for `user` without joining a room; answered with
    /// the rooms the user follows.
    ChatHello {
        user: UserId,
    },
    /// The rooms the user follows, each with its latest sequence number
    /// (the client compares with what it has read: new content).
    ChatWelcome {
        follows: Vec<(RoomId, u64)>,
    },
    /// `bjoin`: joins several rooms at once, each after what the client has.
    ChatBulkJoin {
        user: UserId,
        rooms: Vec<(RoomId, u64)>,
    },
    /// Follow (or stop following) a room: durable, per user.
    ChatFollow {
        room: RoomId,
        follow: bool,
    },
    ChatFollowed {
        room: RoomId,
        follow: bool,
    },
    /// A followed room the session has not joined has a new post.
    ChatNotify {
        room: RoomId,
        seq: u64,
    },
    /// Who is in the room now, across the pool?
    ChatWho {
        room: RoomId,
    },
    ChatParticipants {
        room: RoomId,
        users: Vec<UserId>,
    },
    /// Creates a room (`create`) or changes one; an update carries the
    /// version it was based on.
    RoomSave {
        room: RoomId,
        info: Box<Room>,
        create: bool,
    },
    RoomSaved {
        room: RoomId,
        version: u64,
    },
    /// The full description of a room (to change it, or to see members).
    RoomGet {
        room: RoomId,
    },
    RoomInfo {
        room: RoomId,
        info: Box<Room>,
    },
    /// `chansrch`, `getassociations`, `getinv`.
    RoomFind {
        query: RoomQuery,
    },
    RoomFound {
        query: RoomQuery,
        rooms: Vec<RoomSummary>,
    },
    // ---- records management: operator client ↔ Channel server ----------------
    /// An operator disables a room (no joins, no posts; history kept) or
    /// enables it again; answered `RoomSaved`.
    RoomDisable {
        room: RoomId,
        disabled: bool,
    },
    /// An operator clears a room's posts: all of them, or those posted
    /// before `before` (ms since the epoch).
    RoomClear {
        room: RoomId,
        before: Option<Millis>,
    },
    /// The clear is durable: members no longer read the posts it covers,
    /// all numbered at most `through`; their rows are being deleted.
    RoomCleared {
        room: RoomId,
        through: u64,
    },
    /// An operator replaces a post's text (the original is kept for
    /// compliance, never shown to members).
    PostReplace {
        post: PostId,
        text: String,
    },
    PostReplaced {
        post: PostId,
        room: RoomId,
        seq: u64,
    },
    /// Numbers of `room` (inclusive ranges) that hold no post any more
    /// (cleared): a client catching up counts them as read, not as lost.
    ChatCleared {
        room: RoomId,
        ranges: Vec<(u64, u64)>,
    },
    // ---- Channel server ↔ chat store ----------------------------------------
    /// Rooms created or changed after directory version `since`.
    StoreRooms {
        token: Token,
        since: u64,
    },
    /// The rooms asked for, and the directory version they bring the
    /// asker up to.
    StoreRoomList {
        token: Token,
        rooms: Vec<(RoomId, Room)>,
        version: u64,
    },
    StoreRoomSave {
        token: Token,
        room: RoomId,
        info: Box<Room>,
        create: bool,
        /// The user saving it (for compliance).
        by: UserId,
    },
    /// Stored; `info.version` is its new directory version.
    StoreRoomSaved {
        token: Token,
        room: RoomId,
        info: Box<Room>,
    },
    StoreRoomRefused {
        token: Token,
        room: RoomId,
        reason: ChatReject,
    },
    /// Disables or enables a room (answered `StoreRoomSaved`).
    StoreRoomDisable {
        token: Token,
        room: RoomId,
        disabled: bool,
        /// The operator (for compliance).
        by: UserId,
    },
    /// Clears a room's posts (before `before`, if given).
    StoreClear {
        token: Token,
        room: RoomId,
        before: Option<Millis>,
        by: UserId,
    },
    StoreCleared {
        token: Token,
        room: RoomId,
        through: u64,
    },
    /// Replaces a post's text.
    StoreReplace {
        token: Token,
        post: PostId,
        text: String,
        by: UserId,
    },
    /// Replaced: `post` carries the new text.
    StoreReplaced {
        token: Token,
        seq: u64,
        post: Post,
    },
    StoreUser {
        token: Token,
        user: UserId,
    },
    StoreFollow {
        token: Token,
        user: UserId,
        room: RoomId,
        follow: bool,
    },
    /// A user's followed rooms, each with its latest sequence number.
    StoreUserInfo {
        token: Token,
        user: UserId,
        follows: Vec<(RoomId, u64)>,
    },
    StoreAppend {
        token: Token,
        post: Post,
    },
    /// Stored (or found stored already, for a retried post) as `seq`.
    StoreAppended {
        token: Token,
        seq: u64,
        post: Post,
    },
    StoreRead {
        token: Token,
        room: RoomId,
        after: u64,
        limit: u64,
        /// Who reads, and whether it is a join or a history read: recorded
        /// for compliance (when the pool has a Compliance service) before
        /// the posts are sent.
        audit: Option<(UserId, EventKind)>,
    },
    /// Records a compliance event the Channel server saw (a leave);
    /// answered `StoreAudited` once it is durable.
    StoreAudit {
        token: Token,
        room: RoomId,
        user: UserId,
        kind: EventKind,
    },
    StoreAudited {
        token: Token,
    },
    /// Posts after the requested one, in order, and the room's latest seq.
    StoreRange {
        token: Token,
        room: RoomId,
        posts: Vec<(u64, Post)>,
        latest: u64,
        /// For a read after a number: every number after it up to
        /// `through` that is not among `posts` holds no post (cleared).
        through: u64,
    },
    StoreFailed {
        token: Token,
    },
    // ---- Channel server ↔ Channel server (relay) ----------------------------
    Relay {
        seq: u64,
        post: Post,
    },
    /// A room was created or changed (the directory version is in `info`).
    RoomChanged {
        room: RoomId,
        info: Box<Room>,
    },
    /// Who is in which room on the sending server: every room it hosts
    /// (`full`), or just the rooms listed.
    Presence {
        rooms: Vec<(RoomId, Vec<UserId>)>,
        full: bool,
    },
    // ---- files: client ↔ Channel server, client ↔ Web service --------------
    /// A token to upload to `room`, or to download `file` from it.
    FileTokenRequest {
        room: RoomId,
        download: Option<FileId>,
    },
    /// The token asked for (`download` echoes the request).
    FileToken {
        room: RoomId,
        download: Option<FileId>,
        #[serde(with = "serde_bytes")]
        token: Vec<u8>,
    },
    FileUpload {
        #[serde(with = "serde_bytes")]
        token: Vec<u8>,
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    FileStored {
        file: FileId,
        name: String,
        size: u64,
    },
    FileDownload {
        #[serde(with = "serde_bytes")]
        token: Vec<u8>,
    },
    FileData {
        file: FileId,
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    FileRefused {
        reason: String,
    },
}

impl ChatMsg {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ChatMsg::FindChannel => "FindChannel",
            ChatMsg::ChannelAssigned { .. } => "ChannelAssigned",
            ChatMsg::NoChannel => "NoChannel",
            ChatMsg::LoadReport { .. } => "LoadReport",
            ChatMsg::ChatJoin { .. } => "ChatJoin",
            ChatMsg::ChatJoined { .. } => "ChatJoined",
            ChatMsg::ChatLeave { .. } => "ChatLeave",
            ChatMsg::ChatLeft { .. } => "ChatLeft",
            ChatMsg::ChatPost { .. } => "ChatPost",
            ChatMsg::ChatPosted { .. } => "ChatPosted",
            ChatMsg::ChatRejected { .. } => "ChatRejected",
            ChatMsg::ChatMessage { .. } => "ChatMessage",
            ChatMsg::ChatSync { .. } => "ChatSync",
            ChatMsg::ChatHello { .. } => "ChatHello",
            ChatMsg::ChatWelcome { .. } => "ChatWelcome",
            ChatMsg::ChatBulkJoin { .. } => "ChatBulkJoin",
            ChatMsg::ChatFollow { .. } => "ChatFollow",
            ChatMsg::ChatFollowed { .. } => "ChatFollowed",
            ChatMsg::ChatNotify { .. } => "ChatNotify",
            ChatMsg::ChatWho { .. } => "ChatWho",
            ChatMsg::ChatParticipants { .. } => "ChatParticipants",
            ChatMsg::RoomSave { .. } => "RoomSave",
            ChatMsg::RoomSaved { .. } => "RoomSaved",
            ChatMsg::RoomGet { .. } => "RoomGet",
            ChatMsg::RoomInfo { .. } => "RoomInfo",
            ChatMsg::RoomFind { .. } => "RoomFind",
            ChatMsg::RoomFound { .. } => "RoomFound",
            ChatMsg::RoomDisable { .. } => "RoomDisable",
            ChatMsg::RoomClear { .. } => "RoomClear",
            ChatMsg::RoomCleared { .. } => "RoomCleared",
            ChatMsg::PostReplace { .. } => "PostReplace",
            ChatMsg::PostReplaced { .. } => "PostReplaced",
            ChatMsg::ChatCleared { .. } => "ChatCleared",
            ChatMsg::StoreRooms { .. } => "StoreRooms",
            ChatMsg::StoreRoomList { .. } => "StoreRoomList",
            ChatMsg::StoreRoomSave { .. } => "StoreRoomSave",
            ChatMsg::StoreRoomSaved { .. } => "StoreRoomSaved",
            ChatMsg::StoreRoomRefused { .. } => "StoreRoomRefused",
            ChatMsg::StoreRoomDisable { .. } => "StoreRoomDisable",
            ChatMsg::StoreClear { .. } => "StoreClear",
            ChatMsg::StoreCleared { .. } => "StoreCleared",
            ChatMsg::StoreReplace { .. } => "StoreReplace",
            ChatMsg::StoreReplaced { .. } => "StoreReplaced",
            ChatMsg::StoreUser { .. } => "StoreUser",
            ChatMsg::StoreFollow { .. } => "StoreFollow",
            ChatMsg::StoreUserInfo { .. } => "StoreUserInfo",
            ChatMsg::StoreAppend { .. } => "StoreAppend",
            ChatMsg::StoreAppended { .. } => "StoreAppended",
            ChatMsg::StoreRead { .. } => "StoreRead",
            ChatMsg::StoreAudit { .. } => "StoreAudit",
            ChatMsg::StoreAudited { .. } => "StoreAudited",
            ChatMsg::StoreRange { .. } => "StoreRange",
            ChatMsg::StoreFailed { .. } => "StoreFailed",
            ChatMsg::Relay { .. } => "Relay",
            ChatMsg::RoomChanged { .. } => "RoomChanged",
            ChatMsg::Presence { .. } => "Presence",
            ChatMsg::FileTokenRequest { .. } => "FileTokenRequest",
            ChatMsg::FileToken { .. } => "FileToken",
            ChatMsg::FileUpload { .. } => "FileUpload",
            ChatMsg::FileStored { .. } => "FileStored",
            ChatMsg::FileDownload { .. } => "FileDownload",
            ChatMsg::FileData { .. } => "FileData",
            ChatMsg::FileRefused { .. } => "FileRefused",
        }
    }
}

/// The timers of group chat's cores (in the actor contract's `Timer::Chat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChatTimer {
    /// Channel server: report load to the Lookup instances.
    LoadReport,
    /// Lookup: drop Channel servers that stopped reporting.
    Rotation,
    /// Channel server: the chat store did not answer in time.
    StoreTimeout,
    /// Chat store: start or continue the retention purge.
    ChatPurge,
}

//! Names of nodes, actors, users and messages.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kind of actor; together with a node name it forms an [`Addr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActorKind {
    /// An IM client (not hosted by a node; replies go back on its connection).
    Client,
    FrontEnd,
    OutgoingQueue,
    DestinationQueue,
    Archiver,
    Database,
    /// Group chat: assigns clients to Channel servers.
    Lookup,
    /// Group chat: rooms, posts, fan-out and relay.
    Channel,
    /// Group chat: the durable store of rooms' posts.
    ChatStore,
    /// Group chat: the Web service and file store.
    Web,
    /// Group chat: the Compliance service (staging and export).
    Compliance,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Client => "client",
            ActorKind::FrontEnd => "front_end",
            ActorKind::OutgoingQueue => "outgoing_queue",
            ActorKind::DestinationQueue => "destination_queue",
            ActorKind::Archiver => "archiver",
            ActorKind::Database => "database",
            ActorKind::Lookup => "lookup",
            ActorKind::Channel => "channel",
            ActorKind::ChatStore => "chat_store",
            ActorKind::Web => "web",
            ActorKind::Compliance => "compliance",
        }
    }
}

/// Address of one actor: the node that hosts it and its kind (a node hosts
/// at most one actor of each kind).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Addr {
    pub node: String,
    pub actor: ActorKind,
}

impl Addr {
    pub fn new(node: impl Into<String>, actor: ActorKind) -> Self {
        Addr {
            node: node.into(),
            actor,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.actor.as_str())
    }
}

/// A SIP URI-like user name, `alice@corp.example`.
pub type UserId = String;

/// Globally unique message id, chosen by the sending client (like a SIP
/// Call-ID + CSeq). The archive is keyed by it, which makes every hop
/// idempotent.
pub type MessageId = String;

/// Simulated or real time in milliseconds since the cluster epoch.
pub type Millis = u64;

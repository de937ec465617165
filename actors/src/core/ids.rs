//! Names of nodes, actors, users and messages, and the numbers that pair
//! one message with another: link sequence numbers and request tokens.

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

/// Declares a name that is a string on the wire and in the stores but a
/// type of its own in the code, so that a user cannot be passed where a
/// message id is expected. Transparent to serde: the bytes are those of
/// the plain string. `Borrow<str>` lets maps keyed by the name be read
/// with a `&str`.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        /// As the plain string: logs, error texts and reports that quote a
        /// name read as they did when names were strings.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                $name(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(s: &String) -> Self {
                $name(s.clone())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        /// Reads as a `str` wherever text is wanted (formatting, byte
        /// keys, length checks); the reverse, a string where a name is
        /// wanted, takes an explicit conversion.
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        #[cfg(feature = "sql")]
        impl rusqlite::types::FromSql for $name {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                String::column_result(v).map($name)
            }
        }

        #[cfg(feature = "sql")]
        impl postgres_types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.0.to_sql(ty, out)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <String as postgres_types::ToSql>::accepts(ty)
            }

            postgres_types::to_sql_checked!();
        }

        #[cfg(feature = "sql")]
        impl<'a> postgres_types::FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                String::from_sql(ty, raw).map($name)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <String as postgres_types::FromSql>::accepts(ty)
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// A SIP URI-like user name, `alice@corp.example`.
    UserId
);

string_id!(
    /// Globally unique message id, chosen by the sending client (like a
    /// SIP Call-ID + CSeq). The archive is keyed by it, which makes every
    /// hop idempotent.
    MessageId
);

string_id!(
    /// A chat room's name, unique in the pool.
    RoomId
);

string_id!(
    /// A file's id, given by the Web service that stores it when the file
    /// is uploaded; downloads, file tokens and the compliance export name
    /// the file by it.
    FileId
);

string_id!(
    /// A post's id, chosen by the posting client (unique, like a message
    /// id): the chat store keys posts by it, which makes a retried post
    /// idempotent.
    PostId
);

/// Simulated or real time in milliseconds since the cluster epoch.
pub type Millis = u64;

/// A sequence number on a reliable link (an outgoing queue's link to a
/// destination queue, a compliance outbox's to the Compliance service):
/// it numbers the items the link carries, contiguous from 1 per link and
/// never reused; 0 stands before the first ([`Seq::ZERO`]), so that a
/// cumulative acknowledgement of 0 acknowledges nothing. Only the link's
/// own arithmetic (the next, the last) applies to it. Transparent on the
/// wire and in the stores: the bytes are those of the plain number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    /// Before the first number: nothing sent, nothing acknowledged.
    pub const ZERO: Seq = Seq(0);
    /// The first number a link gives out.
    pub const FIRST: Seq = Seq(1);

    pub const fn new(n: u64) -> Seq {
        Seq(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number after this one.
    pub const fn next(self) -> Seq {
        Seq(self.0 + 1)
    }

    /// The number before this one (`ZERO` stays `ZERO`).
    pub const fn prev(self) -> Seq {
        Seq(self.0.saturating_sub(1))
    }

    /// The numbers after this one up to `last`, in order.
    pub fn after_upto(self, last: Seq) -> impl Iterator<Item = Seq> {
        (self.0 + 1..=last.0).map(Seq)
    }

    /// The numbers strictly between this one and `end`, in order.
    pub fn between(self, end: Seq) -> impl Iterator<Item = Seq> {
        (self.0 + 1..end.0).map(Seq)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request token: chosen by the asker, echoed in the answer, so that an
/// answer is paired with its request (a front end's `Enqueue` with its
/// `Enqueued`, a client's read of the records with its page). Only
/// equality means anything: it is never counted with, and each asker keeps
/// its own tokens unique among its requests in flight. Transparent on the
/// wire: the bytes are those of the plain number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The number of a batch the archiver hands the database
/// (`LogMessages`), echoed in the answer (`Logged`, `LogFailed`) so that
/// a late answer to an earlier batch is told apart. Unique per archiver
/// across restarts (it starts past the clock's reading): never reused, but
/// not contiguous. Transparent on the wire: the bytes are those of the
/// plain number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct BatchId(pub u64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers travel and are stored as the plain numbers they wrap:
    /// the newtypes change no byte of a frame or of a store.
    #[test]
    fn the_numbers_encode_as_plain_numbers() {
        for n in [0, 1, 127, 128, 300, u64::MAX] {
            let plain = postcard::to_allocvec(&n).unwrap();
            assert_eq!(postcard::to_allocvec(&Seq(n)).unwrap(), plain);
            assert_eq!(postcard::to_allocvec(&Token(n)).unwrap(), plain);
            assert_eq!(postcard::to_allocvec(&BatchId(n)).unwrap(), plain);
            assert_eq!(postcard::from_bytes::<Seq>(&plain).unwrap(), Seq(n));
            assert_eq!(
                serde_json::to_string(&Token(n)).unwrap(),
                serde_json::to_string(&n).unwrap()
            );
        }
        assert_eq!(Seq::ZERO.next(), Seq::FIRST);
        assert_eq!(Seq::ZERO.prev(), Seq::ZERO);
    }

    /// The names travel and are stored as the plain strings they wrap.
    #[test]
    fn the_names_encode_as_plain_strings() {
        for s in ["", "alice@corp.example", "m-1-2", "room ü"] {
            let plain = postcard::to_allocvec(&s).unwrap();
            assert_eq!(postcard::to_allocvec(&MessageId::new(s)).unwrap(), plain);
            assert_eq!(postcard::to_allocvec(&UserId::new(s)).unwrap(), plain);
            assert_eq!(postcard::to_allocvec(&RoomId::new(s)).unwrap(), plain);
            assert_eq!(postcard::to_allocvec(&PostId::new(s)).unwrap(), plain);
            assert_eq!(
                postcard::from_bytes::<MessageId>(&plain).unwrap(),
                MessageId::new(s)
            );
            assert_eq!(
                serde_json::to_string(&UserId::new(s)).unwrap(),
                serde_json::to_string(s).unwrap()
            );
            assert_eq!(format!("{:?}", RoomId::new(s)), format!("{s:?}"));
            assert_eq!(format!("{}", PostId::new(s)), s);
        }
    }
}

//! The typed protocol: every message any actor or client sends, the
//! envelope it travels in, and the archiving records. Each domain has its
//! own message enum: archiving in [`archiving`] ([`ArchivingMsg`], in
//! [`Msg::Archiving`], and [`RecordsMsg`], in [`Msg::Records`]); group
//! chat and compliance, with the types they carry, in [`chat`]
//! ([`ChatMsg`], in [`Msg::Chat`]) and [`compliance`] ([`ComplianceMsg`],
//! in [`Msg::Compliance`]): a core of one service matches its service's
//! enum, not every message of the cluster.

pub mod archiving;
pub mod chat;
pub mod compliance;

pub use self::archiving::{ArchivingMsg, RecordsMsg};
pub use self::chat::ChatMsg;
use self::chat::RoomId;
pub use self::compliance::ComplianceMsg;
use crate::core::ids::{Addr, MessageId, Millis, UserId};
use serde::{Deserialize, Serialize};

/// One message on the wire: who sent it, to whom, and the sender's
/// per-connection sequence number (for tracing; reliability is end to end).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Envelope {
    pub from: Addr,
    pub to: Addr,
    pub id: u64,
    pub msg: Msg,
}

/// An instant message as submitted by a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Im {
    pub id: MessageId,
    pub from: UserId,
    pub to: UserId,
    pub body: String,
}

/// What kind of record travels the archiving queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    /// Instant-message content (the LcsLog "messages" table). Never lost.
    Im,
    /// Call detail record. Never lost.
    Cdr,
    /// Quality-of-experience report: not mission critical, may be dropped
    /// when it expires.
    Qoe,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Im => "im",
            RecordKind::Cdr => "cdr",
            RecordKind::Qoe => "qoe",
        }
    }
    /// Whether expiry may drop it even under lync2010 semantics.
    pub fn droppable(self) -> bool {
        self == RecordKind::Qoe
    }
}

/// The end of a call, reported by the client: the front end's CDR agent
/// queues a call detail record, its QoE agent a quality report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallReport {
    pub id: MessageId,
    pub kind: RecordKind,
    pub from: UserId,
    pub to: UserId,
    pub body: String,
}

/// A record handed to the archiving pipeline by a front end's archiving agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArchiveRecord {
    pub kind: RecordKind,
    /// The cluster-wide id the front end assigned when it admitted the
    /// message: the archive's key. Clients cannot choose it, so no client
    /// can make two messages share one archive row.
    pub id: MessageId,
    /// The id the client gave its request, kept for correlation (a client
    /// may reuse it: it is never a key).
    pub client_id: MessageId,
    pub from: UserId,
    pub to: UserId,
    /// When the front end accepted the message.
    pub time: Millis,
    pub body: String,
    /// True when one side is outside the organisation (federated).
    pub external: bool,
    /// The front end that accepted it.
    pub front_end: String,
}

impl ArchiveRecord {
    /// Bytes this record occupies in a queue, for quota accounting.
    pub fn queued_size(&self) -> u64 {
        (self.id.len()
            + self.client_id.len()
            + self.from.len()
            + self.to.len()
            + self.body.len()
            + self.front_end.len()) as u64
            + 32
    }
}

/// A row of the LcsLog-style `messages` table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Row {
    /// Auto-increment row id (not the message id: a faulty writer could
    /// insert one message twice, and the checker must be able to see that).
    /// Engines without row ids (the ordered map) leave it 0.
    pub rowid: u64,
    pub record: ArchiveRecord,
    pub archived_at: u64,
}

/// Where a page of archive search results ends: the next page holds the
/// rows strictly after `(time, id)` in `(time, message id)` order. Many
/// rows share one timestamp, so the message id breaks ties: every row is
/// in exactly one page.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SearchAfter {
    pub time: Millis,
    pub id: MessageId,
}

/// A search of the archive: every criterion given must hold. Results come
/// in `(time, message id)` order, at most `limit` of them, after `after`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Search {
    /// Sender or recipient is one of these (exact match); empty: anyone.
    /// Stored in the read trail: postcard writes an `Option` tag and a
    /// `Vec` length alike, so entries written when this was one optional
    /// user read as a list of none or one.
    pub users: Vec<UserId>,
    /// The message id, or the id its client gave the request.
    pub id: Option<MessageId>,
    /// `time >= since`.
    pub since: Option<Millis>,
    /// `time < until`.
    pub until: Option<Millis>,
    /// Contained in the body, case-insensitive (Unicode lower case);
    /// wildcard characters are literal.
    pub text: Option<String>,
    /// Only rows after this one.
    pub after: Option<SearchAfter>,
    /// At most this many rows.
    pub limit: u32,
}

impl Search {
    /// Whether `r` meets every criterion but the page bounds (`after`,
    /// `limit`): the reference semantics every engine follows.
    pub fn matches(&self, r: &ArchiveRecord) -> bool {
        (self.users.is_empty() || self.users.iter().any(|u| r.from == *u || r.to == *u))
            && self
                .id
                .as_ref()
                .is_none_or(|i| r.id == *i || r.client_id == *i)
            && self.since.is_none_or(|s| r.time >= s)
            && self.until.is_none_or(|u| r.time < u)
            && self
                .text
                .as_ref()
                .is_none_or(|t| r.body.to_lowercase().contains(&t.to_lowercase()))
    }

    /// Whether `r` comes after this search's page key.
    pub fn is_after(&self, r: &ArchiveRecord) -> bool {
        self.after
            .as_ref()
            .is_none_or(|a| (r.time, r.id.as_str()) > (a.time, a.id.as_str()))
    }
}

/// What a client read of the archive asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadWhat {
    /// Archived messages.
    Messages(Search),
    /// The read trail itself, after entry `after`.
    Trail { after: Option<u64>, limit: u32 },
}

/// One entry of the archive's read trail: who asked what, when, and how
/// it was answered. Written before the answer leaves the database.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArchiveRead {
    /// When the database took the request.
    pub at: Millis,
    /// The principal (`<role>:<user>`), or the connection's name when it
    /// carries none.
    pub who: String,
    pub what: ReadWhat,
    /// Rows answered (0 when refused).
    pub rows: u64,
    /// Why the read was refused, if it was.
    pub refused: Option<String>,
}

/// A legal hold: the rows of its users (as sender or recipient) in its
/// time range survive every retention purge, and so do the chat posts of
/// its rooms, or by its users, in that range (a room clear and the chat
/// purge keep them). A released hold stays on record, with who released
/// it, when and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LegalHold {
    pub name: String,
    pub users: std::collections::BTreeSet<UserId>,
    /// Message time from (inclusive); none: from the beginning.
    pub since: Option<Millis>,
    /// Message time up to (exclusive); none: without end.
    pub until: Option<Millis>,
    pub reason: String,
    /// The principal that placed it (filled in by the database).
    pub placed_by: String,
    pub placed_at: Millis,
    pub released: Option<HoldRelease>,
    /// Chat rooms whose posts are held, whoever wrote them. Last, so that
    /// holds stored before it are told apart ([`LegalHold::decode`]).
    pub rooms: std::collections::BTreeSet<RoomId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HoldRelease {
    pub by: String,
    pub at: Millis,
    pub reason: String,
}

impl LegalHold {
    /// Whether the hold is active and covers a message between `from`
    /// and `to` at `time`.
    pub fn covers(&self, from: &str, to: &str, time: Millis) -> bool {
        self.released.is_none()
            && (self.users.contains(from) || self.users.contains(to))
            && self.in_range(time)
    }

    /// Whether the hold is active and covers a chat post in `room` by
    /// `author` at `time`: its room is named, or its author is.
    pub fn covers_post(&self, room: &str, author: &str, time: Millis) -> bool {
        self.released.is_none()
            && (self.rooms.contains(room) || self.users.contains(author))
            && self.in_range(time)
    }

    fn in_range(&self, time: Millis) -> bool {
        self.since.is_none_or(|s| time >= s) && self.until.is_none_or(|u| time < u)
    }

    /// Whether `other` holds the same things for the same reason (who
    /// placed either, and when, aside): placing it again is no change.
    pub fn same_terms(&self, other: &LegalHold) -> bool {
        (
            &self.users,
            &self.rooms,
            self.since,
            self.until,
            &self.reason,
        ) == (
            &other.users,
            &other.rooms,
            other.since,
            other.until,
            &other.reason,
        )
    }

    /// Why the hold cannot be placed as asked, if it lacks what every
    /// hold needs: a name, at least one user or room, and a reason.
    pub fn incomplete(&self) -> Option<String> {
        (self.name.is_empty()
            || (self.users.is_empty() && self.rooms.is_empty())
            || self.reason.trim().is_empty())
        .then(|| "a hold needs a name, at least one user or room and a reason".to_string())
    }

    /// The hold as placed by `who` at `at`: active.
    pub fn placed(self, who: String, at: Millis) -> LegalHold {
        LegalHold {
            placed_by: who,
            placed_at: at,
            released: None,
            ..self
        }
    }

    /// The active hold `name` of `holds`, released by `by` at `at` for
    /// `reason` (it stays on record), or why it cannot be released.
    pub fn release(
        holds: &std::collections::BTreeMap<String, LegalHold>,
        name: &str,
        by: String,
        at: Millis,
        reason: String,
    ) -> Result<LegalHold, String> {
        let mut hold = match holds.get(name) {
            Some(h) if h.released.is_none() => h.clone(),
            Some(_) => return Err(format!("hold {name:?} is released already")),
            None => return Err(format!("no hold {name:?}")),
        };
        if reason.trim().is_empty() {
            return Err("a release needs a reason".into());
        }
        hold.released = Some(HoldRelease { by, at, reason });
        Ok(hold)
    }
}

/// What a retention purge did, kept by the database (and written with
/// every purge transaction): after a crash the purge resumes at once, and
/// an operator reads what was cut and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PurgeRecord {
    /// Rows whose message time is before this go.
    pub cutoff: Millis,
    pub started_at: Millis,
    /// `None` while the purge runs (or was cut off by a crash).
    pub finished_at: Option<Millis>,
    pub deleted: u64,
    /// Rows past the window kept for a legal hold.
    pub held: u64,
    /// Message times of the rows deleted: the first and the last.
    pub range: Option<(Millis, Millis)>,
    /// Rows past the window kept because no export covered them yet
    /// (`purge_exported_only`).
    pub unexported: u64,
}

/// A purge record as written before `unexported` was counted: still read
/// after an upgrade, so that a purge a crash cut off resumes.
#[derive(Deserialize)]
pub struct PurgeRecordV1 {
    cutoff: Millis,
    started_at: Millis,
    finished_at: Option<Millis>,
    deleted: u64,
    held: u64,
    range: Option<(Millis, Millis)>,
}

impl From<PurgeRecordV1> for PurgeRecord {
    fn from(r: PurgeRecordV1) -> PurgeRecord {
        PurgeRecord {
            cutoff: r.cutoff,
            started_at: r.started_at,
            finished_at: r.finished_at,
            deleted: r.deleted,
            held: r.held,
            range: r.range,
            unexported: 0,
        }
    }
}

/// An eDiscovery export that wrote every row of its query, as the
/// database keeps it: with `purge_exported_only` the purge deletes only
/// rows an export covers. Exports are records too: never purged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExportRecord {
    /// The SHA-256 (hex) of the export's manifest: its name, so that the
    /// same export reported twice is one record.
    pub manifest_sha256: String,
    /// Sender or recipient among these; empty: every user.
    pub users: std::collections::BTreeSet<UserId>,
    /// Message time from (inclusive); none: from the beginning.
    pub since: Option<Millis>,
    /// Message time up to (exclusive); none: without end.
    pub until: Option<Millis>,
    /// The database's time before the export's first read: a row archived
    /// at or after it may have been archived behind the export's cursor,
    /// so it is not covered, whatever its message time. A row archived
    /// before it was committed before the export read anything (a write's
    /// result reaches the core before any later message does).
    pub as_of: Millis,
    /// Rows the export wrote.
    pub rows: u64,
    /// `eml`, `jsonl` or `csv`.
    pub format: String,
    /// The principal that reported it (filled in by the database).
    pub recorded_by: String,
    pub recorded_at: Millis,
}

impl ExportRecord {
    /// Whether the export wrote the row of a message between `from` and
    /// `to` at `time`, archived at `archived_at`.
    pub fn covers(&self, from: &str, to: &str, time: Millis, archived_at: Millis) -> bool {
        archived_at < self.as_of
            && (self.users.is_empty() || self.users.contains(from) || self.users.contains(to))
            && self.since.is_none_or(|s| time >= s)
            && self.until.is_none_or(|u| time < u)
    }
}

/// What a chat retention purge did, kept by the chat store (written with
/// every purge transaction): a restart resumes it, and an operator reads
/// what was cut and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatPurgeRecord {
    pub started_at: Millis,
    /// `None` while the purge runs (or was cut off by a crash).
    pub finished_at: Option<Millis>,
    /// Each room with a retention window and posts when the purge began.
    pub rooms: std::collections::BTreeMap<RoomId, RoomPurge>,
}

impl ChatPurgeRecord {
    /// Posts deleted and kept for a hold, over every room.
    pub fn counts(&self) -> (u64, u64) {
        self.rooms
            .values()
            .fold((0, 0), |(d, h), r| (d + r.deleted, h + r.held))
    }

    /// The post times of the posts deleted: the first and the last.
    pub fn range(&self) -> Option<(Millis, Millis)> {
        self.rooms
            .values()
            .filter_map(|r| r.range)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
    }
}

/// One room's part of a chat retention purge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoomPurge {
    /// Posts whose own time is before this go.
    pub cutoff: Millis,
    /// The room's last number when the purge began: no later post is
    /// touched (a post that comes during the purge is inside the window).
    pub through: u64,
    /// Rows read up to this number.
    pub purged: u64,
    pub deleted: u64,
    /// Posts past the window kept for a legal hold.
    pub held: u64,
    /// Post times of the posts deleted: the first and the last.
    pub range: Option<(Millis, Millis)>,
}

/// Why the database did not answer a read of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArchiveRefusal {
    /// The principal may not read the archive (only auditors may), or the
    /// client is not authenticated.
    Forbidden(String),
    /// The read could not be recorded in the read trail: nothing is
    /// answered unrecorded. A retry may succeed.
    AuditFailed(String),
    /// The engine could not answer. A retry may succeed.
    StoreFailed(String),
    /// Too many reads in flight; a retry may succeed.
    Busy,
    /// The request cannot be done as asked (a hold that exists already,
    /// one to release that does not).
    Invalid(String),
}

impl std::fmt::Display for ArchiveRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveRefusal::Forbidden(why) => write!(f, "forbidden: {why}"),
            ArchiveRefusal::AuditFailed(why) => {
                write!(
                    f,
                    "the read could not be recorded, so it is not answered: {why}"
                )
            }
            ArchiveRefusal::StoreFailed(why) => write!(f, "the archive could not be read: {why}"),
            ArchiveRefusal::Busy => write!(f, "too many reads in flight; try again"),
            ArchiveRefusal::Invalid(why) => write!(f, "{why}"),
        }
    }
}

/// Rows one archive search answers at most; a client pages for more.
pub const SEARCH_PAGE_MAX: u32 = 1_000;

/// Users one archive search or export record names at most: each is a
/// condition of the engine's query, and a case's custodians are far fewer.
pub const SEARCH_USERS_MAX: usize = 1_000;

/// Bytes of rows one archive read answers with (at least one row, which
/// may pass it). A row holds at most `MAX_MESSAGE_BYTES` (4 MiB) of body
/// plus its names, so an answer stays near 12 MiB at worst: inside a
/// frame (`MAX_FRAME`, 32 MiB).
pub const SEARCH_MAX_BYTES: u64 = 8 << 20;

/// Bytes an archived row takes in an answer, roughly.
pub fn row_bytes(r: &Row) -> u64 {
    r.record.queued_size() + 16
}

/// Bytes a read trail entry takes in an answer, roughly.
pub fn read_bytes(r: &ArchiveRead) -> u64 {
    let what = match &r.what {
        ReadWhat::Messages(s) => {
            s.users.iter().map(|u| u.len()).sum::<usize>()
                + s.id.as_ref().map_or(0, |id| id.len())
                + s.text.as_ref().map_or(0, String::len)
                + s.after.as_ref().map_or(0, |a| a.id.len())
        }
        ReadWhat::Trail { .. } => 0,
    };
    (r.who.len() + what + r.refused.as_ref().map_or(0, String::len)) as u64 + 64
}

/// One item of an outgoing queue's sequenced stream. Heartbeats travel with
/// the data (and are processed in order with it); a tombstone fills the
/// sequence slot of a record that expired or was moved to the dead-letter
/// queue, so sequence numbers stay contiguous.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueItem {
    Record(ArchiveRecord),
    Heartbeat {
        id: u64,
        sent_at: Millis,
        front_end: String,
    },
    Tombstone,
}

impl QueueItem {
    /// Bytes this item occupies in a queue, for quota accounting.
    pub fn queued_size(&self) -> u64 {
        match self {
            QueueItem::Record(r) => r.queued_size(),
            QueueItem::Heartbeat { .. } => 16,
            QueueItem::Tombstone => 8,
        }
    }
}

/// Why a front end refused an IM. The client always gets one of these
/// explicitly instead of a timeout when the front end is able to answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// The sender is not homed on this front end.
    NotHomed,
    /// The recipient is not a known user of the organisation.
    UnknownRecipient,
    /// The archiving queue could not store the record durably.
    ArchivingUnavailable(String),
    /// The message is malformed (empty id, empty body, …).
    Invalid(String),
    /// The message is larger than the front end takes: `what` names the
    /// part and the setting, `limit` is that setting's value in bytes.
    TooLarge { what: String, limit: u64 },
    /// Critical mode: archiving cannot be guaranteed, messaging is stopped.
    CriticalMode(String),
    /// The front end is shutting down (graceful stop); try again later.
    NodeStopping,
    /// The request does not match the authenticated sender (another user's
    /// IM, a role that may not send, no principal at all).
    Forbidden(String),
    /// The front end is past its capacity: IMs admitted earlier still wait
    /// for their records to be queued (`admission_wait`, `admission_queue`).
    /// Nothing was kept; try again shortly. Answered at once, so that a
    /// client under overload learns the outcome instead of timing out.
    Busy,
}

impl RejectReason {
    /// A stable name for counting refusals (metrics labels).
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::NotHomed => "not_homed",
            RejectReason::UnknownRecipient => "unknown_recipient",
            RejectReason::ArchivingUnavailable(_) => "archiving_unavailable",
            RejectReason::Invalid(_) => "invalid",
            RejectReason::TooLarge { .. } => "too_large",
            RejectReason::CriticalMode(_) => "critical_mode",
            RejectReason::NodeStopping => "node_stopping",
            RejectReason::Forbidden(_) => "forbidden",
            RejectReason::Busy => "busy",
        }
    }
}

/// Why an outgoing queue could not take a record: the front end answers
/// each cause differently when critical mode is off.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EnqueueFailure {
    /// The queue's quota is used up: the IM is refused (the quota exists
    /// so that nothing is dropped).
    QuotaExceeded,
    /// The queue store failed to write (full disk, I/O error).
    Store(String),
}

impl std::fmt::Display for EnqueueFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnqueueFailure::QuotaExceeded => write!(f, "outgoing queue quota exceeded"),
            EnqueueFailure::Store(e) => write!(f, "outgoing queue store failed: {e}"),
        }
    }
}

/// Why the database refused a batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DbError {
    /// The write failed; a retry may succeed.
    StoreFailed(String),
    /// The database refuses these records for good (nothing of the batch
    /// was written): the archiver parks them and sends the rest again.
    Refused { ids: Vec<MessageId>, reason: String },
}

/// Parked records one `ParkedRetry` sends back at most when it names none.
pub const PARKED_RETRY_MAX: usize = 1_000;

/// Every message of the cluster. Each service's messages are in its own
/// enum, so that a core matches its domain's messages only; what no one
/// domain owns stays here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Msg {
    // ---- the services' own messages ----------------------------------------------
    /// The archiving pipeline: clients, front ends, queues, the archiver,
    /// the database.
    Archiving(ArchivingMsg),
    /// The records kept: reads, holds, retention and exports of the archive
    /// and of the chat store.
    Records(RecordsMsg),
    /// Group chat: clients, Lookup, Channel servers, the chat store, Web.
    Chat(ChatMsg),
    /// Compliance: the outbox, the Compliance service, its clients.
    Compliance(ComplianceMsg),

    // ---- operator or auditor client ↔ any core ---------------------------------
    /// An operator's or auditor's request refused for who sent it (the
    /// role does not allow it, or the client is not authenticated).
    Forbidden { reason: String },
}

impl From<ArchivingMsg> for Msg {
    fn from(m: ArchivingMsg) -> Msg {
        Msg::Archiving(m)
    }
}

impl From<RecordsMsg> for Msg {
    fn from(m: RecordsMsg) -> Msg {
        Msg::Records(m)
    }
}

impl Msg {
    /// The answer a node gives at once, without handing the request to a
    /// core, when it cannot take the request in now (its inbox is nearly
    /// full): `busy` for an IM submission, which the client may retry and
    /// which nothing was kept of. `None` for every other message: those
    /// wait for room (a call report is taken whatever the load; node
    /// traffic is paced end to end).
    pub fn busy_answer(&self) -> Option<Msg> {
        match self {
            Msg::Archiving(ArchivingMsg::SubmitIm { im }) => {
                Some(Msg::Archiving(ArchivingMsg::ImRejected {
                    id: im.id.clone(),
                    reason: RejectReason::Busy,
                }))
            }
            _ => None,
        }
    }

    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Archiving(m) => m.name(),
            Msg::Records(m) => m.name(),
            Msg::Chat(m) => m.name(),
            Msg::Compliance(m) => m.name(),
            Msg::Forbidden { .. } => "Forbidden",
        }
    }
}

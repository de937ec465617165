//! The compliance types the protocol carries: the events the outboxes
//! forward to the Compliance service, and the status it reports.

use crate::core::ids::{FileId, Millis, RoomId, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Join,
    Leave,
    /// A history read (a join's backchat or a catch-up).
    Read,
    Post,
    Upload,
    Download,
    /// A room created or changed (disabled and enabled too).
    RoomSaved,
    /// An operator cleared a room's posts (all, or those before a time):
    /// `item` is the last number cleared, `details` the range and who.
    RoomCleared,
    /// The cleared posts' rows are deleted (the end of a clear): `details`
    /// say how many were deleted and how many a hold kept.
    RoomPurged,
    /// An operator replaced a post's text: `text` is the new text,
    /// `details.original` the text it replaced.
    PostReplaced,
    /// An auditor placed a legal hold naming the room (or, with no room,
    /// only users): `item` is the hold's name, `details` what it covers.
    HoldPlaced,
    /// An auditor released that hold: `details.reason` says why.
    HoldReleased,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::Read => "read",
            EventKind::Post => "post",
            EventKind::Upload => "upload",
            EventKind::Download => "download",
            EventKind::RoomSaved => "room_saved",
            EventKind::RoomCleared => "room_cleared",
            EventKind::RoomPurged => "room_purged",
            EventKind::PostReplaced => "post_replaced",
            EventKind::HoldPlaced => "hold_placed",
            EventKind::HoldReleased => "hold_released",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Join,
            EventKind::Leave,
            EventKind::Read,
            EventKind::Post,
            EventKind::Upload,
            EventKind::Download,
            EventKind::RoomSaved,
            EventKind::RoomCleared,
            EventKind::RoomPurged,
            EventKind::PostReplaced,
            EventKind::HoldPlaced,
            EventKind::HoldReleased,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One compliance event. `(source, seq)` identifies it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComplianceEvent {
    /// The node whose outbox queued it.
    pub source: String,
    /// Its number on the outbox's link to the service.
    pub seq: Seq,
    pub kind: EventKind,
    pub room: RoomId,
    pub user: UserId,
    /// When it happened (ms since the epoch).
    pub at: Millis,
    /// The post id, the file id, or for a read the last number sent.
    pub item: String,
    /// The post text, the file name, or the room's new description.
    pub text: String,
    /// What else a pickup system needs to know of it: a file's `size` and
    /// `sha256`; what a room change changed (`created`, `members_added`,
    /// `members_removed`, `managers_added`, `managers_removed`,
    /// `walled_added`, `walled_removed`, `presenters`, `category`,
    /// `privacy`, `description`, `invite`, `disabled`); for a clear, `through`
    /// (the last number it covers), `before` (ms, when only older posts
    /// are cleared), and once purged `deleted` and `held`; for a replace,
    /// `original`, `author` and `seq`. Empty for the other kinds.
    pub details: BTreeMap<String, String>,
}

impl ComplianceEvent {
    /// The event's id in export files: `<source>-<seq>`.
    pub fn id(&self) -> String {
        format!("{}-{}", self.source, self.seq)
    }

    /// What the event weighs in a frame, roughly (its strings, plus a
    /// margin for the numbers).
    pub fn weight(&self) -> u64 {
        (self.source.len()
            + self.room.len()
            + self.user.len()
            + self.item.len()
            + self.text.len()
            + self
                .details
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()) as u64
            + 32
    }
}

/// The status the service reports (`holdfast compliance status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComplianceStatus {
    pub staged: u64,
    pub last_batch: u64,
    /// When the last batch was written (ms), 0 if none since start.
    pub last_run: Millis,
    pub last_error: Option<String>,
    /// Events left out by the scoping.
    pub filtered: u64,
    /// Batches written and not yet acknowledged by the pickup system.
    pub awaiting_pickup: Vec<u64>,
    /// Batches acknowledged and removed since the service started.
    pub picked_up: u64,
}

/// Bytes of an uploaded file per [`crate::core::protocol::Msg::ComplianceFileChunk`]:
/// well inside a frame ([`crate::core::frame::MAX_FRAME`]) whatever the
/// file size limit.
pub const FILE_CHUNK: u64 = 1 << 20;

/// The messages of compliance: the outbox, the Compliance service, the Web
/// service's file content, and the service's clients. Travels as
/// [`Msg::Compliance`](crate::core::protocol::Msg::Compliance).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ComplianceMsg {
    // ---- compliance ------------------------------------------------------------
    /// Outbox → Compliance service: events in order of their numbers.
    ComplianceBatch {
        events: Vec<ComplianceEvent>,
    },
    /// Compliance service → outbox: everything up to `upto` is staged.
    ComplianceStaged {
        upto: Seq,
    },
    /// Operator → Compliance service: export now.
    ComplianceRunNow,
    ComplianceStatusQuery,
    ComplianceReport(ComplianceStatus),
    /// Compliance service → Web service: the content of uploaded `file`
    /// from byte `offset`, for an export.
    ComplianceFileFetch {
        file: FileId,
        offset: u64,
    },
    /// Web service → Compliance service: at most
    /// [`FILE_CHUNK`] bytes of `file` from `offset`, of
    /// `total`.
    ComplianceFileChunk {
        file: FileId,
        offset: u64,
        total: u64,
        data: Vec<u8>,
    },
    /// Web service → Compliance service: `file` is not there (deleted, or
    /// its content lost).
    ComplianceFileMissing {
        file: FileId,
        reason: String,
    },
    /// Operator or auditor → Compliance service: the pickup system has
    /// taken batch `batch`; its files may go. Answered with a report once
    /// the acknowledgement is durable.
    ComplianceAck {
        batch: u64,
    },
    /// The acknowledgement names no batch that was exported.
    ComplianceAckRefused {
        batch: u64,
        reason: String,
    },
}

impl ComplianceMsg {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ComplianceMsg::ComplianceBatch { .. } => "ComplianceBatch",
            ComplianceMsg::ComplianceStaged { .. } => "ComplianceStaged",
            ComplianceMsg::ComplianceRunNow => "ComplianceRunNow",
            ComplianceMsg::ComplianceStatusQuery => "ComplianceStatusQuery",
            ComplianceMsg::ComplianceReport(_) => "ComplianceReport",
            ComplianceMsg::ComplianceFileFetch { .. } => "ComplianceFileFetch",
            ComplianceMsg::ComplianceFileChunk { .. } => "ComplianceFileChunk",
            ComplianceMsg::ComplianceFileMissing { .. } => "ComplianceFileMissing",
            ComplianceMsg::ComplianceAck { .. } => "ComplianceAck",
            ComplianceMsg::ComplianceAckRefused { .. } => "ComplianceAckRefused",
        }
    }
}

/// The timers of compliance's cores (in
/// the actor contract's `Timer::Compliance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComplianceTimer {
    /// Compliance outbox: a batch was not confirmed in time; Compliance
    /// service: a file asked of the Web service did not come in time.
    ComplianceResend,
    /// Compliance service: export the staged events.
    ComplianceRun,
}

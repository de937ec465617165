//! The archiving domain's messages: the IM and call-record path from the
//! client through the front end, the outgoing and destination queues and
//! the archiver to the database ([`ArchivingMsg`], in
//! [`Msg::Archiving`](crate::core::protocol::Msg::Archiving)), and the
//! records held once archived, read, held, purged and exported by
//! auditors and operators, in the archive and in the chat store
//! ([`RecordsMsg`], in [`Msg::Records`](crate::core::protocol::Msg::Records)).
//! The types they carry are in [`crate::core::protocol`].

use super::{
    ArchiveRead, ArchiveRecord, ArchiveRefusal, CallReport, ChatPurgeRecord, DbError,
    EnqueueFailure, ExportRecord, Im, LegalHold, PurgeRecord, QueueItem, RejectReason, Row, Search,
    SearchAfter,
};
use crate::core::ids::{BatchId, MessageId, Millis, Seq, Token};
use serde::{Deserialize, Serialize};

/// The messages of the archiving pipeline: clients and front ends, the
/// outgoing and destination queues, the archiver and the database, and
/// the operator's controls of the queues and of critical mode. Travels as
/// [`Msg::Archiving`](crate::core::protocol::Msg::Archiving).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ArchivingMsg {
    // ---- client ↔ front end -------------------------------------------
    /// A client submits an IM to its home front end.
    SubmitIm {
        im: Im,
    },
    /// The front end took responsibility for the IM (and, if it must be
    /// archived, holds it durably in its outgoing queue). `id` is the
    /// client's id of the request; `message_id` the cluster-wide id the
    /// front end assigned (the archive's key). `at`: when the front end
    /// took responsibility for it.
    ImAccepted {
        id: MessageId,
        message_id: MessageId,
        at: Millis,
    },
    /// Without critical mode, when the record could not be queued (the
    /// queue store failed: full disk, I/O error): the IM was delivered but
    /// is **not** archived. Never the same answer as `ImAccepted`, so no
    /// client is told "archived" about a message that is not.
    ImDeliveredNotArchived {
        id: MessageId,
        message_id: MessageId,
        at: Millis,
        reason: String,
    },
    ImRejected {
        id: MessageId,
        reason: RejectReason,
    },

    /// A client reports a finished call (CDR or QoE); answered like an IM.
    ReportCall {
        report: CallReport,
    },

    // ---- front end ↔ front end ------------------------------------------
    /// Route an accepted IM to the recipient's home front end.
    DeliverIm {
        im: Im,
    },
    ImDelivered {
        id: MessageId,
    },

    // ---- front end ↔ its outgoing queue (same node) ---------------------
    Enqueue {
        token: Token,
        record: ArchiveRecord,
    },
    Enqueued {
        token: Token,
    },
    EnqueueFailed {
        token: Token,
        cause: EnqueueFailure,
    },

    // ---- outgoing queue → destination queue (store and forward) ---------
    /// Sequence numbers are per (front end → destination) link, contiguous
    /// from 1, never reused.
    Transfer {
        seq: Seq,
        item: QueueItem,
    },
    /// Cumulative: every seq ≤ `upto` is durably stored at the destination.
    TransferAck {
        upto: Seq,
    },
    /// After a resend interval without progress: the first unacknowledged
    /// item again, sent behind everything already in flight on the link.
    /// Handled like a `Transfer`, but answered with a `ProbeAck`; `probe`
    /// numbers the sender's probes.
    Probe {
        seq: Seq,
        item: QueueItem,
        probe: u64,
    },
    /// The answer to a `Probe`. The destination handles one link's frames
    /// in the order they were sent, so every transfer sent before the probe
    /// that was not lost on the way has been stored by now: `upto` below
    /// the highest seq sent before the probe means the rest were lost.
    ProbeAck {
        upto: Seq,
        probe: u64,
    },
    /// Outgoing queue → destination queue: the items numbered `first`,
    /// `first + 1`, … in one frame. Sequence numbers stay per item: the
    /// destination stores the items it does not hold yet in one atomic
    /// write (skipping a leading part it already has, dropping the frame
    /// if it starts past its position) and acknowledges the last with one
    /// `TransferAck`.
    TransferBatch {
        first: Seq,
        items: Vec<QueueItem>,
    },

    // ---- destination queue ↔ archiver (same node) -----------------------
    /// An item for the archiver; `key` identifies it in the destination queue.
    Deliver {
        key: u64,
        item: QueueItem,
    },
    /// Destination queue → archiver: items in queue order, each with its
    /// key, as `Deliver` would hand them one by one.
    DeliverBatch {
        items: Vec<(u64, QueueItem)>,
    },
    /// The database holds these records: the queue may delete them.
    Consumed {
        keys: Vec<u64>,
    },
    /// The database refuses these records for good: the queue keeps them
    /// aside, durably, for an operator (see `holdfast parked list`) and
    /// stops delivering them, so that they no longer block the link.
    Park {
        keys: Vec<u64>,
        reason: String,
    },

    // ---- archiving server → front end's admin queue ----------------------
    /// A heartbeat was processed (everything sent before it is archived).
    HeartbeatAck {
        id: u64,
    },
    /// Legacy semantics: records dropped by expiry at the destination.
    Expired {
        ids: Vec<MessageId>,
    },

    // ---- outgoing queue → front end (same node) --------------------------
    /// Whether archiving can currently be guaranteed; drives critical mode.
    ArchivingHealth {
        ok: bool,
        reason: String,
    },

    // ---- operator ↔ the queues and the front end -------------------------
    /// An operator resends a front end's dead-letter queue now
    /// (`holdfast dlq resend`), whatever the link's health.
    DeadLettersResend,
    /// The outgoing queue's answer: records moved back into the stream,
    /// and how many stay (at most `RESEND_BATCH` per request).
    DeadLettersResent {
        resent: u64,
        left: u64,
    },
    /// An operator sends parked records back to the database
    /// (`holdfast parked retry`): those under `keys`, or up to
    /// [`PARKED_RETRY_MAX`](super::PARKED_RETRY_MAX) of them if `keys` is empty.
    ParkedRetry {
        keys: Vec<u64>,
    },
    /// The destination queue's answer: how many went back into the queue
    /// (each under a new key) and how many stay parked.
    ParkedRetried {
        retried: u64,
        left: u64,
    },
    /// An operator ends a critical-mode shutdown by hand: from the node
    /// itself, or from a client authenticated with the operator role
    /// (`holdfast critical resume`).
    OperatorResume,
    /// The front end's answer to an operator's `OperatorResume`: why it was
    /// shut down, or `None` if it was not.
    OperatorResumed {
        was_shut_down: Option<String>,
    },

    // ---- archiver ↔ database ----------------------------------------------
    LogMessages {
        batch: BatchId,
        records: Vec<ArchiveRecord>,
    },
    Logged {
        batch: BatchId,
    },
    LogFailed {
        batch: BatchId,
        error: DbError,
    },
}

impl ArchivingMsg {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ArchivingMsg::SubmitIm { .. } => "SubmitIm",
            ArchivingMsg::ImAccepted { .. } => "ImAccepted",
            ArchivingMsg::ImDeliveredNotArchived { .. } => "ImDeliveredNotArchived",
            ArchivingMsg::ImRejected { .. } => "ImRejected",
            ArchivingMsg::ReportCall { .. } => "ReportCall",
            ArchivingMsg::DeliverIm { .. } => "DeliverIm",
            ArchivingMsg::ImDelivered { .. } => "ImDelivered",
            ArchivingMsg::Enqueue { .. } => "Enqueue",
            ArchivingMsg::Enqueued { .. } => "Enqueued",
            ArchivingMsg::EnqueueFailed { .. } => "EnqueueFailed",
            ArchivingMsg::Transfer { .. } => "Transfer",
            ArchivingMsg::TransferAck { .. } => "TransferAck",
            ArchivingMsg::Probe { .. } => "Probe",
            ArchivingMsg::ProbeAck { .. } => "ProbeAck",
            ArchivingMsg::TransferBatch { .. } => "TransferBatch",
            ArchivingMsg::Deliver { .. } => "Deliver",
            ArchivingMsg::DeliverBatch { .. } => "DeliverBatch",
            ArchivingMsg::Consumed { .. } => "Consumed",
            ArchivingMsg::Park { .. } => "Park",
            ArchivingMsg::HeartbeatAck { .. } => "HeartbeatAck",
            ArchivingMsg::Expired { .. } => "Expired",
            ArchivingMsg::ArchivingHealth { .. } => "ArchivingHealth",
            ArchivingMsg::DeadLettersResend => "DeadLettersResend",
            ArchivingMsg::DeadLettersResent { .. } => "DeadLettersResent",
            ArchivingMsg::ParkedRetry { .. } => "ParkedRetry",
            ArchivingMsg::ParkedRetried { .. } => "ParkedRetried",
            ArchivingMsg::OperatorResume => "OperatorResume",
            ArchivingMsg::OperatorResumed { .. } => "OperatorResumed",
            ArchivingMsg::LogMessages { .. } => "LogMessages",
            ArchivingMsg::Logged { .. } => "Logged",
            ArchivingMsg::LogFailed { .. } => "LogFailed",
        }
    }
}

/// The messages of the records kept: reads of the archive and of its read
/// trail, legal holds, retention (the archive's and the chat store's) and
/// exports, between auditor or operator clients and the database or the
/// chat store. Travels as
/// [`Msg::Records`](crate::core::protocol::Msg::Records).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordsMsg {
    // ---- auditor or operator ↔ database, chat store (over the network) -----
    /// A client searches the archive (auditors only); answered
    /// `ArchiveFound` once the read is recorded, or `ArchiveRefused`.
    ArchiveSearch {
        token: Token,
        search: Search,
    },
    /// A page of rows in `(time, message id)` order. `next` is where the
    /// next page starts when there may be more (the search's limit or the
    /// byte bound cut this one short), `None` when the search is done.
    ArchiveFound {
        token: Token,
        rows: Vec<Row>,
        next: Option<SearchAfter>,
    },
    /// A client reads the read trail (auditors only), entries after
    /// `after`; the read is recorded too.
    ArchiveTrail {
        token: Token,
        after: Option<u64>,
        limit: u32,
    },
    /// A page of the read trail, in order; `recorded` is the entry this
    /// read itself was recorded as, `next` where the next page starts
    /// (`None`: the trail ends here).
    ArchiveReads {
        token: Token,
        reads: Vec<(u64, ArchiveRead)>,
        recorded: u64,
        next: Option<u64>,
    },
    /// A read of the archive or of its trail not answered.
    ArchiveRefused {
        token: Token,
        refusal: ArchiveRefusal,
    },
    /// An auditor places a legal hold (`placed_by`, `placed_at` and
    /// `released` are the database's to fill in); answered `HoldDone` once
    /// durable, or `ArchiveRefused`.
    HoldPlace {
        token: Token,
        hold: Box<LegalHold>,
    },
    /// An auditor releases a hold; it stays on record as released.
    HoldRelease {
        token: Token,
        name: String,
        reason: String,
    },
    HoldDone {
        token: Token,
        hold: Box<LegalHold>,
    },
    /// An auditor or an operator asks what retention did and what holds.
    RetentionStatus {
        token: Token,
    },
    /// An operator starts the retention purge now (if none is running);
    /// answered with the state, the purge running.
    PurgeNow {
        token: Token,
    },
    /// An auditor or an operator asks the chat store what its retention
    /// did and which holds it keeps.
    ChatRetentionStatus {
        token: Token,
    },
    /// An operator starts the chat store's retention purge now (if none
    /// is running); answered with the state, the purge running.
    ChatPurgeNow {
        token: Token,
    },
    ChatRetentionState {
        token: Token,
        /// `chat_keep_days` (0: for ever) and the per-category overrides.
        keep_days: u64,
        by_category: std::collections::BTreeMap<String, u64>,
        purge_hour: u64,
        /// The purge running, or the last one (none since the store began).
        purge: Option<Box<ChatPurgeRecord>>,
        /// Every hold the chat store keeps, active and released.
        holds: Vec<LegalHold>,
    },
    RetentionState {
        token: Token,
        keep_days: u64,
        purge_hour: u64,
        /// The purge running, or the last one (none since the archive
        /// began).
        purge: Option<Box<PurgeRecord>>,
        /// Every hold, active and released.
        holds: Vec<LegalHold>,
        /// The database's time of this answer (an export's `as_of`).
        at: Millis,
        /// Whether the purge keeps rows no export covers.
        exported_only: bool,
        /// Every export recorded, oldest first.
        exports: Vec<ExportRecord>,
    },
    /// An auditor's export wrote every row of its query: the database
    /// records it (durably, then answers `ExportRecorded`, or refuses).
    ExportDone {
        token: Token,
        export: Box<ExportRecord>,
    },
    ExportRecorded {
        token: Token,
        export: Box<ExportRecord>,
    },
}

impl RecordsMsg {
    /// A short name for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RecordsMsg::ArchiveSearch { .. } => "ArchiveSearch",
            RecordsMsg::ArchiveFound { .. } => "ArchiveFound",
            RecordsMsg::ArchiveTrail { .. } => "ArchiveTrail",
            RecordsMsg::ArchiveReads { .. } => "ArchiveReads",
            RecordsMsg::ArchiveRefused { .. } => "ArchiveRefused",
            RecordsMsg::HoldPlace { .. } => "HoldPlace",
            RecordsMsg::HoldRelease { .. } => "HoldRelease",
            RecordsMsg::HoldDone { .. } => "HoldDone",
            RecordsMsg::RetentionStatus { .. } => "RetentionStatus",
            RecordsMsg::PurgeNow { .. } => "PurgeNow",
            RecordsMsg::ChatRetentionStatus { .. } => "ChatRetentionStatus",
            RecordsMsg::ChatPurgeNow { .. } => "ChatPurgeNow",
            RecordsMsg::ChatRetentionState { .. } => "ChatRetentionState",
            RecordsMsg::RetentionState { .. } => "RetentionState",
            RecordsMsg::ExportDone { .. } => "ExportDone",
            RecordsMsg::ExportRecorded { .. } => "ExportRecorded",
        }
    }
}

/// The timers of the archiving cores (in the actor contract's
/// `Timer::Archiving`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchivingTimer {
    /// Outgoing queue: check for unacknowledged transfers.
    Resend,
    /// Archiver: send the partly filled batch.
    Flush,
    /// Archiver: the database did not answer in time.
    DbTimeout,
    /// Outgoing queue: send a heartbeat and check heartbeat timeouts.
    Heartbeat,
    /// Outgoing queue: check quota use.
    QuotaCheck,
    /// Queues: check data expiry and the dead-letter queue.
    DlqCheck,
    /// Front end: archiving has been healthy for `critical_resume_after`.
    CriticalResume,
    /// Database: start or continue the retention purge.
    Purge,
}

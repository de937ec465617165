//! What cores tell operators: operator events and gauges, each one
//! variant of a closed set with a stable name. Hosts, checkers and
//! metrics match the variants; the names are for what lies outside the
//! code (dashboards, metric labels, traces, scenario files).

use std::fmt;

/// The kind of an operator event (the `Event` of the actor contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperatorEvent {
    /// A front end could not hand a record to archiving.
    ArchivingFailed,
    /// An operator sent parked records back to the database.
    ParkedRetried,
    /// Lookup: a Channel server reported and is in rotation.
    ChannelInRotation,
    /// Lookup: a Channel server stopped reporting and left the rotation.
    ChannelOutOfRotation,
    /// Channel server: a member lost access to a room they had joined.
    ChatAccessRevoked,
    /// Channel server: a join was refused.
    ChatJoinRefused,
    /// Channel server: a room change was refused.
    ChatRoomRefused,
    /// Chat store: an operator disabled, enabled or cleared a room or
    /// replaced a post (records management), or a clear's purge ended.
    ChatRecords,
    /// The chat store failed a write or did not answer.
    ChatStoreFailed,
    /// Compliance service: an acknowledged batch's files were removed from
    /// the output folder.
    ComplianceBatchPickedUp,
    /// Compliance service: a batch's files could not be written.
    ComplianceExportFailed,
    /// Compliance service: export works again after a failure.
    ComplianceExportResumed,
    /// Compliance service: a batch was exported.
    ComplianceExported,
    /// Compliance service: an uploaded file of a batch is gone from the
    /// Web service; the manifest lists it as missing.
    ComplianceFileMissing,
    /// Compliance service: staging received events failed.
    ComplianceStageFailed,
    /// Front end: critical mode ended; messaging resumes.
    CriticalResume,
    /// Front end: critical mode stopped messaging.
    CriticalShutdown,
    /// Front end: the critical-mode state could not be saved.
    CriticalStateNotSaved,
    /// Database: the retention purge deleted the rows past the window.
    ArchivePurged,
    /// Database: the retention purge failed or could not run.
    ArchivePurgeFailed,
    /// Database: a purge hour passed while the node was down; the purge
    /// runs late, at start.
    ArchivePurgeLate,
    /// Chat store: the retention purge deleted the posts past the window.
    ChatPurged,
    /// Chat store: a retention purge batch failed (it is tried again).
    ChatPurgeFailed,
    /// Chat store: a purge hour passed while the node was down; the purge
    /// runs late, at start.
    ChatPurgeLate,
    /// Database: a record was refused for good.
    DbRecordRefused,
    /// Database: a write failed.
    DbStoreFailed,
    /// Archiver: the database did not answer in time.
    DbTimeout,
    /// Archiver: the database failed a batch.
    DbWriteFailed,
    /// Outgoing queue: a dead-lettered record was sent again.
    DeadLetterResent,
    /// Outgoing queue: a record moved to the dead-letter queue.
    DeadLettered,
    /// Front end: an IM was delivered but not archived.
    DeliveredNotArchived,
    /// Destination queue: a write failed.
    DestinationStoreFailed,
    /// Web service: a file request was refused.
    FileRefused,
    /// Web service: a file could not be stored.
    FileStoreFailed,
    /// Front end: it answered IMs busy (past its capacity); raised when
    /// that begins and at most once a minute while it lasts, with counts.
    FrontEndBusy,
    /// Front end: an incarnation started (the detail says whether it restored a shutdown).
    FrontEndStarted,
    /// A client's request was refused for who sent it.
    IdentityRefused,
    /// Outgoing queue: a heartbeat was not delivered to the destination queue in time.
    NackDelivery,
    /// Outgoing queue: a heartbeat was not processed by the archiver in time.
    NackProcessing,
    /// A peer broke the protocol.
    ProtocolViolation,
    /// A quality report was dropped.
    QoeDropped,
    /// Outgoing queue: the link is healthy again.
    QueueHealthy,
    /// Outgoing queue: items of the stream are missing.
    QueueItemsMissing,
    /// Outgoing queue: the quota is used up.
    QueueQuotaExceeded,
    /// Outgoing queue: it learnt the destination's position again.
    QueueResynced,
    /// A queue's store failed a write.
    QueueStoreFailed,
    /// Outgoing queue: quota use passed the information level.
    QuotaInfo,
    /// Outgoing queue: quota use passed the warning level.
    QuotaWarning,
    /// A queue dropped a record by expiry.
    RecordExpired,
    /// Destination queue: a record the database refused was parked.
    RecordParked,
    /// A core found a value of its store it cannot read.
    StoreCorrupt,
    /// Host: damage was found and set aside when a store was opened.
    StoreDamaged,
    /// A message from a sender the protocol does not allow was dropped.
    UnauthorizedSender,
    /// A core got a message it does not handle.
    UnexpectedMessage,
}

/// How much an operator event asks of an operator: what log level it is
/// written at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Things going as they should (a start, a recovery, an export).
    Info,
    /// Something an operator should look at: a failing link, a refused
    /// request, a quota filling up; the system copes for now.
    Warn,
    /// Messaging stopped, data set aside or lost, or a write failed.
    Error,
}

impl OperatorEvent {
    /// What the event asks of an operator (its log level).
    pub fn severity(self) -> Severity {
        use OperatorEvent::*;
        match self {
            ChannelInRotation
            | ChatRecords
            | ParkedRetried
            | ComplianceBatchPickedUp
            | ComplianceExportResumed
            | ComplianceExported
            | ArchivePurged
            | ChatPurged
            | CriticalResume
            | DeadLetterResent
            | FrontEndStarted
            | QueueHealthy
            | QuotaInfo
            | QueueResynced => Severity::Info,
            ArchivingFailed
            | ArchivePurgeFailed
            | ChatPurgeFailed
            | ChatStoreFailed
            | ComplianceExportFailed
            | ComplianceFileMissing
            | ComplianceStageFailed
            | CriticalShutdown
            | CriticalStateNotSaved
            | DbStoreFailed
            | DbWriteFailed
            | DestinationStoreFailed
            | FileStoreFailed
            | QueueItemsMissing
            | QueueStoreFailed
            | RecordExpired
            | RecordParked
            | StoreCorrupt
            | StoreDamaged
            | DbRecordRefused => Severity::Error,
            ChannelOutOfRotation | ChatAccessRevoked | ChatJoinRefused | ChatRoomRefused
            | DbTimeout | DeadLettered | DeliveredNotArchived | FileRefused | FrontEndBusy
            | IdentityRefused | ArchivePurgeLate | ChatPurgeLate | NackDelivery
            | NackProcessing | ProtocolViolation | QoeDropped | QueueQuotaExceeded
            | QuotaWarning | UnauthorizedSender | UnexpectedMessage => Severity::Warn,
        }
    }

    /// Every operator event, in declaration order.
    pub const ALL: [OperatorEvent; 54] = [
        OperatorEvent::ArchivingFailed,
        OperatorEvent::ArchivePurged,
        OperatorEvent::ArchivePurgeFailed,
        OperatorEvent::ArchivePurgeLate,
        OperatorEvent::ParkedRetried,
        OperatorEvent::ChannelInRotation,
        OperatorEvent::ChannelOutOfRotation,
        OperatorEvent::ChatAccessRevoked,
        OperatorEvent::ChatJoinRefused,
        OperatorEvent::ChatRoomRefused,
        OperatorEvent::ChatRecords,
        OperatorEvent::ChatPurged,
        OperatorEvent::ChatPurgeFailed,
        OperatorEvent::ChatPurgeLate,
        OperatorEvent::ChatStoreFailed,
        OperatorEvent::ComplianceBatchPickedUp,
        OperatorEvent::ComplianceExportFailed,
        OperatorEvent::ComplianceExportResumed,
        OperatorEvent::ComplianceExported,
        OperatorEvent::ComplianceFileMissing,
        OperatorEvent::ComplianceStageFailed,
        OperatorEvent::CriticalResume,
        OperatorEvent::CriticalShutdown,
        OperatorEvent::CriticalStateNotSaved,
        OperatorEvent::DbRecordRefused,
        OperatorEvent::DbStoreFailed,
        OperatorEvent::DbTimeout,
        OperatorEvent::DbWriteFailed,
        OperatorEvent::DeadLetterResent,
        OperatorEvent::DeadLettered,
        OperatorEvent::DeliveredNotArchived,
        OperatorEvent::DestinationStoreFailed,
        OperatorEvent::FileRefused,
        OperatorEvent::FileStoreFailed,
        OperatorEvent::FrontEndBusy,
        OperatorEvent::FrontEndStarted,
        OperatorEvent::IdentityRefused,
        OperatorEvent::NackDelivery,
        OperatorEvent::NackProcessing,
        OperatorEvent::ProtocolViolation,
        OperatorEvent::QoeDropped,
        OperatorEvent::QueueHealthy,
        OperatorEvent::QueueItemsMissing,
        OperatorEvent::QueueQuotaExceeded,
        OperatorEvent::QueueResynced,
        OperatorEvent::QueueStoreFailed,
        OperatorEvent::QuotaInfo,
        OperatorEvent::QuotaWarning,
        OperatorEvent::RecordExpired,
        OperatorEvent::RecordParked,
        OperatorEvent::StoreCorrupt,
        OperatorEvent::StoreDamaged,
        OperatorEvent::UnauthorizedSender,
        OperatorEvent::UnexpectedMessage,
    ];

    /// The stable name: what dashboards, metrics, traces and scenario
    /// files know it by. Never change one.
    pub fn name(self) -> &'static str {
        match self {
            OperatorEvent::ArchivingFailed => "archiving_failed",
            OperatorEvent::ParkedRetried => "parked_retried",
            OperatorEvent::ChannelInRotation => "channel_in_rotation",
            OperatorEvent::ChannelOutOfRotation => "channel_out_of_rotation",
            OperatorEvent::ChatAccessRevoked => "chat_access_revoked",
            OperatorEvent::ChatJoinRefused => "chat_join_refused",
            OperatorEvent::ChatRoomRefused => "chat_room_refused",
            OperatorEvent::ChatRecords => "chat_records",
            OperatorEvent::ChatPurged => "chat_purged",
            OperatorEvent::ChatPurgeFailed => "chat_purge_failed",
            OperatorEvent::ChatPurgeLate => "chat_purge_late",
            OperatorEvent::ChatStoreFailed => "chat_store_failed",
            OperatorEvent::ComplianceBatchPickedUp => "compliance_batch_picked_up",
            OperatorEvent::ComplianceExportFailed => "compliance_export_failed",
            OperatorEvent::ComplianceExportResumed => "compliance_export_resumed",
            OperatorEvent::ComplianceExported => "compliance_exported",
            OperatorEvent::ComplianceFileMissing => "compliance_file_missing",
            OperatorEvent::ComplianceStageFailed => "compliance_stage_failed",
            OperatorEvent::CriticalResume => "critical_resume",
            OperatorEvent::CriticalShutdown => "critical_shutdown",
            OperatorEvent::CriticalStateNotSaved => "critical_state_not_saved",
            OperatorEvent::DbRecordRefused => "db_record_refused",
            OperatorEvent::DbStoreFailed => "db_store_failed",
            OperatorEvent::ArchivePurged => "archive_purged",
            OperatorEvent::ArchivePurgeFailed => "archive_purge_failed",
            OperatorEvent::ArchivePurgeLate => "archive_purge_late",
            OperatorEvent::DbTimeout => "db_timeout",
            OperatorEvent::DbWriteFailed => "db_write_failed",
            OperatorEvent::DeadLetterResent => "dead_letter_resent",
            OperatorEvent::DeadLettered => "dead_lettered",
            OperatorEvent::DeliveredNotArchived => "delivered_not_archived",
            OperatorEvent::DestinationStoreFailed => "destination_store_failed",
            OperatorEvent::FileRefused => "file_refused",
            OperatorEvent::FileStoreFailed => "file_store_failed",
            OperatorEvent::FrontEndBusy => "front_end_busy",
            OperatorEvent::FrontEndStarted => "front_end_started",
            OperatorEvent::IdentityRefused => "identity_refused",
            OperatorEvent::NackDelivery => "nack_delivery",
            OperatorEvent::NackProcessing => "nack_processing",
            OperatorEvent::ProtocolViolation => "protocol_violation",
            OperatorEvent::QoeDropped => "qoe_dropped",
            OperatorEvent::QueueHealthy => "queue_healthy",
            OperatorEvent::QueueItemsMissing => "queue_items_missing",
            OperatorEvent::QueueQuotaExceeded => "queue_quota_exceeded",
            OperatorEvent::QueueResynced => "queue_resynced",
            OperatorEvent::QueueStoreFailed => "queue_store_failed",
            OperatorEvent::QuotaInfo => "quota_info",
            OperatorEvent::QuotaWarning => "quota_warning",
            OperatorEvent::RecordExpired => "record_expired",
            OperatorEvent::RecordParked => "record_parked",
            OperatorEvent::StoreCorrupt => "store_corrupt",
            OperatorEvent::StoreDamaged => "store_damaged",
            OperatorEvent::UnauthorizedSender => "unauthorized_sender",
            OperatorEvent::UnexpectedMessage => "unexpected_message",
        }
    }

    /// The operator event of that stable name, if any.
    pub fn from_name(name: &str) -> Option<OperatorEvent> {
        OperatorEvent::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for OperatorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value a core reports for monitoring (`Actor::gauges` in the actor contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gauge {
    /// Queues: when the record at the head of the queue (the oldest
    /// waiting) was created, in ms since the epoch; 0 when none waits.
    OldestQueuedAt,
    /// Compliance service: when the last export was written (ms since the
    /// epoch; 0 if none since start).
    ComplianceLastExportAt,
    /// Database: rows in the messages table.
    ArchivedRows,
    /// Database: when the last retention purge finished (ms since the
    /// epoch; 0 if none since start).
    ArchiveLastPurgeAt,
    /// Database: the message time before which the last purge deleted
    /// every row not under a hold (ms since the epoch; 0 if none).
    ArchivePurgeCutoff,
    /// Database: rows deleted by retention purges.
    ArchivePurged,
    /// Lookup: Channel servers in rotation.
    ChannelsKnown,
    /// Chat store: posts stored.
    ChatPosts,
    /// Chat store: posts deleted by retention purges.
    ChatPurged,
    /// Chat store: when the last retention purge finished (ms since the
    /// epoch; 0 if none since start).
    ChatLastPurgeAt,
    /// Channel server: posts relayed to other servers.
    ChatRelayed,
    /// Channel server: posts sent to its clients' sessions (live and on
    /// catch-up).
    ChatDelivered,
    /// Rooms known (chat store, Channel server).
    ChatRooms,
    /// Channel server: client sessions.
    ChatSessions,
    /// Compliance service: batches written and waiting for the pickup
    /// system's acknowledgement.
    ComplianceAwaitingPickup,
    /// Compliance service: the last batch number.
    ComplianceBatches,
    /// Compliance events waiting in an outbox.
    ComplianceOutbox,
    /// Compliance service: events staged for export.
    ComplianceStaged,
    /// Compliance service: events written in export batches.
    ComplianceExportedEvents,
    /// Front end: 1 while critical mode stops messaging.
    CriticalShutdown,
    /// Front end: admitted IMs waiting for their records to be queued.
    AdmissionWaiting,
    /// Front end: IMs answered busy.
    BusyAnswers,
    /// Outgoing queue: records in the dead-letter queue.
    DeadLetterDepth,
    /// Outgoing queue: records moved to the dead-letter queue.
    DeadLettered,
    /// Destination queue: items held.
    DestinationDepth,
    /// Destination queue: duplicate transfers dropped.
    DuplicatesDropped,
    /// Records dropped by expiry.
    Expired,
    /// Outgoing queue: 1 while heartbeats fail.
    LinkFailing,
    /// Outgoing queue: bytes held.
    OutgoingBytes,
    /// Outgoing queue: items held.
    OutgoingDepth,
    /// Destination queue: records parked for an operator.
    ParkedRecords,
    /// Outgoing queue: transfers sent again.
    Resends,
}

impl Gauge {
    /// Whether the value only ever grows while the core runs (a count of
    /// things done): exposed as a counter, not a gauge.
    pub fn cumulative(self) -> bool {
        matches!(
            self,
            Gauge::ChatRelayed
                | Gauge::ChatDelivered
                | Gauge::ComplianceExportedEvents
                | Gauge::BusyAnswers
                | Gauge::ArchivePurged
                | Gauge::ChatPurged
                | Gauge::DeadLettered
                | Gauge::DuplicatesDropped
                | Gauge::Expired
                | Gauge::Resends
        )
    }

    /// Every gauge, in declaration order.
    pub const ALL: [Gauge; 32] = [
        Gauge::OldestQueuedAt,
        Gauge::ComplianceLastExportAt,
        Gauge::ArchivedRows,
        Gauge::ArchiveLastPurgeAt,
        Gauge::ArchivePurgeCutoff,
        Gauge::ArchivePurged,
        Gauge::ChannelsKnown,
        Gauge::ChatPosts,
        Gauge::ChatPurged,
        Gauge::ChatLastPurgeAt,
        Gauge::ChatRelayed,
        Gauge::ChatDelivered,
        Gauge::ChatRooms,
        Gauge::ChatSessions,
        Gauge::ComplianceAwaitingPickup,
        Gauge::ComplianceBatches,
        Gauge::ComplianceOutbox,
        Gauge::ComplianceStaged,
        Gauge::ComplianceExportedEvents,
        Gauge::CriticalShutdown,
        Gauge::AdmissionWaiting,
        Gauge::BusyAnswers,
        Gauge::DeadLetterDepth,
        Gauge::DeadLettered,
        Gauge::DestinationDepth,
        Gauge::DuplicatesDropped,
        Gauge::Expired,
        Gauge::LinkFailing,
        Gauge::OutgoingBytes,
        Gauge::OutgoingDepth,
        Gauge::ParkedRecords,
        Gauge::Resends,
    ];

    /// The stable name: what dashboards, metrics, traces and scenario
    /// files know it by. Never change one.
    pub fn name(self) -> &'static str {
        match self {
            Gauge::OldestQueuedAt => "oldest_queued_at",
            Gauge::ComplianceLastExportAt => "compliance_last_export_at",
            Gauge::ArchivedRows => "archived_rows",
            Gauge::ArchiveLastPurgeAt => "archive_last_purge_at",
            Gauge::ArchivePurgeCutoff => "archive_purge_cutoff",
            Gauge::ArchivePurged => "archive_purged",
            Gauge::ChannelsKnown => "channels_known",
            Gauge::ChatPosts => "chat_posts",
            Gauge::ChatPurged => "chat_purged",
            Gauge::ChatLastPurgeAt => "chat_last_purge_at",
            Gauge::ChatRelayed => "chat_relayed",
            Gauge::ChatDelivered => "chat_delivered",
            Gauge::ChatRooms => "chat_rooms",
            Gauge::ChatSessions => "chat_sessions",
            Gauge::ComplianceAwaitingPickup => "compliance_awaiting_pickup",
            Gauge::ComplianceBatches => "compliance_batches",
            Gauge::ComplianceOutbox => "compliance_outbox",
            Gauge::ComplianceStaged => "compliance_staged",
            Gauge::ComplianceExportedEvents => "compliance_exported_events",
            Gauge::CriticalShutdown => "critical_shutdown",
            Gauge::AdmissionWaiting => "admission_waiting",
            Gauge::BusyAnswers => "busy_answers",
            Gauge::DeadLetterDepth => "dead_letter_depth",
            Gauge::DeadLettered => "dead_lettered",
            Gauge::DestinationDepth => "destination_depth",
            Gauge::DuplicatesDropped => "duplicates_dropped",
            Gauge::Expired => "expired",
            Gauge::LinkFailing => "link_failing",
            Gauge::OutgoingBytes => "outgoing_bytes",
            Gauge::OutgoingDepth => "outgoing_depth",
            Gauge::ParkedRecords => "parked_records",
            Gauge::Resends => "resends",
        }
    }

    /// The gauge of that stable name, if any.
    /// Whether the value is a moment (ms since the epoch, 0 for none), not
    /// an amount: hosts expose it as seconds (an age, or a timestamp).
    pub fn moment(self) -> bool {
        matches!(
            self,
            Gauge::OldestQueuedAt
                | Gauge::ComplianceLastExportAt
                | Gauge::ArchiveLastPurgeAt
                | Gauge::ArchivePurgeCutoff
                | Gauge::ChatLastPurgeAt
        )
    }

    pub fn from_name(name: &str) -> Option<Gauge> {
        Gauge::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_parse_back() {
        let names: BTreeSet<_> = OperatorEvent::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), OperatorEvent::ALL.len());
        for e in OperatorEvent::ALL {
            assert_eq!(OperatorEvent::from_name(e.name()), Some(e));
        }
        let names: BTreeSet<_> = Gauge::ALL.iter().map(|g| g.name()).collect();
        assert_eq!(names.len(), Gauge::ALL.len());
        for g in Gauge::ALL {
            assert_eq!(Gauge::from_name(g.name()), Some(g));
        }
        assert_eq!(OperatorEvent::from_name("no_such_event"), None);
    }
}

//! Tunable settings of the archiving path, with defaults.
//!
//! Every field can be overridden in a scenario's `[settings]` table and in a
//! production config; durations and sizes are human strings there.

use crate::core::ids::Millis;
use crate::core::units::{de_ms, de_size};
use serde::{Deserialize, Serialize};

/// Which product's queueing semantics the pipeline follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Semantics {
    /// Lync Server 2010: heartbeats, queue health, quota monitoring,
    /// dead-letter resend; data never expires.
    #[default]
    Lync2010,
    /// OCS 2007 R2: data expires (TIME_TO_REACH_QUEUE / TIME_TO_BE_RECEIVED)
    /// and is dropped; archiving waits for the recipient's response.
    Ocs2007r2,
}

impl Semantics {
    pub fn as_str(self) -> &'static str {
        match self {
            Semantics::Lync2010 => "lync2010",
            Semantics::Ocs2007r2 => "ocs2007r2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub semantics: Semantics,
    /// Stop accepting IM when archiving cannot be guaranteed.
    pub critical_mode: bool,
    /// Resume automatically once archiving is healthy again (otherwise an
    /// operator must resume).
    pub critical_auto_resume: bool,
    /// Automatic resume waits until archiving has stayed healthy this
    /// long, so that a link that heals and fails again does not make
    /// messaging flap.
    #[serde(deserialize_with = "de_ms")]
    pub critical_resume_after: Millis,
    /// Heartbeats are sent, and their timeouts checked, this often.
    #[serde(deserialize_with = "de_ms")]
    pub heartbeat_interval: Millis,
    /// A heartbeat must reach the destination queue within this.
    #[serde(deserialize_with = "de_ms")]
    pub heartbeat_ttrq: Millis,
    /// A heartbeat must be processed by the archiver within this.
    #[serde(deserialize_with = "de_ms")]
    pub heartbeat_ttbr: Millis,
    /// A data record must reach the destination queue within this (legacy:
    /// dropped after; enhanced: moved to the dead-letter queue and resent).
    #[serde(deserialize_with = "de_ms")]
    pub data_ttrq: Millis,
    /// A data record must be processed within this (legacy: dropped after).
    #[serde(deserialize_with = "de_ms")]
    pub data_ttbr: Millis,
    /// How often the dead-letter queue (and data expiry) is checked.
    #[serde(deserialize_with = "de_ms")]
    pub dlq_check: Millis,
    /// How often the queue quota is checked.
    #[serde(deserialize_with = "de_ms")]
    pub quota_check: Millis,
    /// Percentage of the quota that raises the warning event.
    pub quota_warning_pct: u64,
    /// Percentage above which information events follow the warning.
    pub quota_info_pct: u64,
    /// Quota of a front end's outgoing queue (MSMQ default: 1 GiB). An IM
    /// whose record would not fit is rejected explicitly, never dropped.
    #[serde(deserialize_with = "de_size")]
    pub queue_quota: u64,
    /// Transfers in flight from an outgoing queue before an acknowledgement.
    pub transfer_window: u64,
    /// Items (records, heartbeats, tombstones) an outgoing queue sends in
    /// one transfer frame at most.
    pub transfer_batch: u64,
    /// Transfer frames an outgoing queue has unacknowledged at most; what
    /// comes meanwhile goes together in the next frame.
    pub transfer_frames: u64,
    /// How long an outgoing queue waits for acknowledgement progress before
    /// resending the unacknowledged transfers.
    #[serde(deserialize_with = "de_ms")]
    pub resend_interval: Millis,
    /// The resend interval doubles while no progress is made, up to this.
    #[serde(deserialize_with = "de_ms")]
    pub resend_backoff_max: Millis,
    /// A connection between nodes with data unacknowledged this long (or,
    /// idle, with its keep-alive probes unanswered this long) is closed
    /// and reconnected; a connect is retried after at most 1.5 s.
    #[serde(deserialize_with = "de_ms")]
    pub link_timeout: Millis,
    /// Records a destination queue hands to its archiver before consumption.
    pub deliver_window: u64,
    /// Records per database transaction.
    pub archiver_batch: u64,
    /// Bytes of records per database transaction (at least one record):
    /// with the per-message limits, what keeps every batch inside a frame.
    #[serde(deserialize_with = "de_size")]
    pub archiver_batch_bytes: u64,
    /// Largest IM (or call report) body a front end takes.
    #[serde(deserialize_with = "de_size")]
    pub im_max_bytes: u64,
    /// A partly filled batch is written after this long.
    #[serde(deserialize_with = "de_ms")]
    pub archiver_flush: Millis,
    /// The archiver retries a batch the database did not acknowledge in time.
    #[serde(deserialize_with = "de_ms")]
    pub db_timeout: Millis,
    /// The database retry interval doubles up to this.
    #[serde(deserialize_with = "de_ms")]
    pub db_retry_max: Millis,
    /// Group chat: how often a Channel server reports its load to Lookup;
    /// a server silent for three periods leaves the rotation, and client
    /// sessions silent for three periods are closed.
    #[serde(deserialize_with = "de_ms")]
    pub chat_load_report: Millis,
    /// Group chat: client sessions a Channel server takes before it answers
    /// busy (503).
    pub chat_capacity: u64,
    /// Group chat: posts a client gets when it joins a room afresh.
    pub chat_backchat: u64,
    /// Group chat: a post the chat store has not confirmed in this time is
    /// refused to its author (who may retry; the post id makes it
    /// idempotent).
    #[serde(deserialize_with = "de_ms")]
    pub chat_store_timeout: Millis,
    /// Group chat: largest post text a Channel server takes.
    #[serde(deserialize_with = "de_size")]
    pub chat_post_max_bytes: u64,
    /// Group chat: largest file the Web service takes.
    #[serde(deserialize_with = "de_size")]
    pub chat_file_max: u64,
    /// Group chat: how long a file token is valid.
    #[serde(deserialize_with = "de_ms")]
    pub chat_token_ttl: Millis,
    /// Compliance: staged events are exported this often (1 minute to 30
    /// days).
    #[serde(deserialize_with = "de_ms")]
    pub compliance_interval: Millis,
    /// Archive retention: rows whose message time is older than this many
    /// days are purged (1 to 2562, as Lync's KeepArchivingDataForDays).
    pub archive_keep_days: u64,
    /// Archive retention: the hour of the day (UTC, 0-23) the purge runs.
    pub archive_purge_hour: u64,
    /// Archive retention: rows deleted per purge transaction.
    pub archive_purge_batch: u64,
    /// Archive retention: the pause between two purge transactions, so that
    /// ingest keeps its latency while a large purge runs.
    #[serde(deserialize_with = "de_ms")]
    pub archive_purge_pause: Millis,
    /// Archive retention: the share (percent) of the database's time the
    /// purge may take: after a batch that took `t`, it pauses at least
    /// `t * (100 - share) / share`.
    pub archive_purge_share: u64,
    /// Front end: a new IM is answered busy when it waited this long in
    /// the node, or the oldest IM admitted before it has waited this long
    /// for its record to be queued (0: no time bound).
    #[serde(deserialize_with = "de_ms")]
    pub admission_wait: Millis,
    /// Front end: new IMs are answered busy while this many admitted IMs
    /// wait for their records to be queued.
    pub admission_queue: u64,
    /// Archive retention: the purge keeps a row past the window until an
    /// export has covered it.
    pub purge_exported_only: bool,
    /// Chat retention: posts older than this many days are purged (0:
    /// kept for ever, the default: chat history is the product, and Lync's
    /// Persistent Chat purges nothing unless told to).
    pub chat_keep_days: u64,
    /// Chat retention: the hour of the day (UTC, 0-23) the purge runs.
    pub chat_purge_hour: u64,
    /// Chat retention per room category (`category = days`, 0: for ever),
    /// overriding `chat_keep_days` for the rooms of that category.
    pub chat_retention: std::collections::BTreeMap<String, u64>,
}

/// The most `im_max_bytes` and `chat_post_max_bytes` may be set to.
pub const MAX_MESSAGE_BYTES: u64 = 4 << 20;
/// The most `archiver_batch_bytes` may be set to. A batch holds at most
/// this plus one record, and one record at most `MAX_MESSAGE_BYTES` plus
/// its names: well under the 32 MiB frame limit.
pub const MAX_BATCH_BYTES: u64 = 16 << 20;

impl Settings {
    /// Refuses values that would make a core spin or stall: periodic
    /// checks of 0 ms, windows and batches of 0, percentages over 100.
    /// Returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_ttrq", self.heartbeat_ttrq),
            ("heartbeat_ttbr", self.heartbeat_ttbr),
            ("dlq_check", self.dlq_check),
            ("quota_check", self.quota_check),
            ("resend_interval", self.resend_interval),
            ("link_timeout", self.link_timeout),
            ("db_timeout", self.db_timeout),
            ("chat_load_report", self.chat_load_report),
            ("chat_capacity", self.chat_capacity),
            ("chat_store_timeout", self.chat_store_timeout),
            ("transfer_window", self.transfer_window),
            ("transfer_batch", self.transfer_batch),
            ("transfer_frames", self.transfer_frames),
            ("deliver_window", self.deliver_window),
            ("archiver_batch", self.archiver_batch),
            ("archiver_batch_bytes", self.archiver_batch_bytes),
            ("im_max_bytes", self.im_max_bytes),
            ("chat_post_max_bytes", self.chat_post_max_bytes),
            ("queue_quota", self.queue_quota),
            ("admission_queue", self.admission_queue),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        // Whatever a client may send, and any batch of it, must fit in one
        // frame: a record of the largest message, and a batch of the
        // largest size plus one such record, stay under the frame limit.
        for (key, value, max) in [
            ("im_max_bytes", self.im_max_bytes, MAX_MESSAGE_BYTES),
            (
                "chat_post_max_bytes",
                self.chat_post_max_bytes,
                MAX_MESSAGE_BYTES,
            ),
            (
                "archiver_batch_bytes",
                self.archiver_batch_bytes,
                MAX_BATCH_BYTES,
            ),
        ] {
            if value > max {
                return Err((key, format!("must be at most {max} bytes")));
            }
        }
        if self.resend_backoff_max < self.resend_interval {
            return Err((
                "resend_backoff_max",
                "must not be below resend_interval".into(),
            ));
        }
        if !(1..=2562).contains(&self.archive_keep_days) {
            return Err(("archive_keep_days", "must be from 1 to 2562 days".into()));
        }
        if self.archive_purge_hour > 23 {
            return Err(("archive_purge_hour", "must be an hour from 0 to 23".into()));
        }
        if !(1..=100_000).contains(&self.archive_purge_batch) {
            return Err((
                "archive_purge_batch",
                "must be from 1 to 100000 rows".into(),
            ));
        }
        if !(1..=100).contains(&self.archive_purge_share) {
            return Err((
                "archive_purge_share",
                "must be a percentage from 1 to 100".into(),
            ));
        }
        if self.chat_keep_days > 2562 {
            return Err(("chat_keep_days", "must be from 0 to 2562 days".into()));
        }
        if self.chat_purge_hour > 23 {
            return Err(("chat_purge_hour", "must be an hour from 0 to 23".into()));
        }
        if let Some((category, _)) = self.chat_retention.iter().find(|(_, d)| **d > 2562) {
            return Err((
                "chat_retention",
                format!("category {category:?}: must be from 0 to 2562 days"),
            ));
        }
        if !(60_000..=30 * 86_400_000).contains(&self.compliance_interval) {
            return Err((
                "compliance_interval",
                "must be from 1 minute to 30 days".into(),
            ));
        }
        if self.db_retry_max < self.db_timeout {
            return Err(("db_retry_max", "must not be below db_timeout".into()));
        }
        for (key, value) in [
            ("quota_warning_pct", self.quota_warning_pct),
            ("quota_info_pct", self.quota_info_pct),
        ] {
            if value > 100 {
                return Err((key, "is a percentage: at most 100".into()));
            }
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            semantics: Semantics::Lync2010,
            critical_mode: false,
            critical_auto_resume: true,
            critical_resume_after: 30_000,
            heartbeat_interval: 60_000,
            heartbeat_ttrq: 10 * 60_000,
            heartbeat_ttbr: 60 * 60_000,
            data_ttrq: 3 * 3_600_000,
            data_ttbr: 4 * 3_600_000,
            dlq_check: 10_000,
            quota_check: 15_000,
            quota_warning_pct: 95,
            quota_info_pct: 90,
            queue_quota: 1 << 30,
            transfer_window: 4096,
            transfer_batch: 512,
            transfer_frames: 4,
            resend_interval: 5_000,
            resend_backoff_max: 60_000,
            link_timeout: 5_000,
            deliver_window: 4096,
            archiver_batch: 1000,
            archiver_batch_bytes: 4 << 20,
            im_max_bytes: 64 << 10,
            archiver_flush: 200,
            db_timeout: 10_000,
            db_retry_max: 60_000,
            chat_load_report: 10_000,
            chat_capacity: 10_000,
            chat_backchat: 30,
            chat_store_timeout: 5_000,
            chat_post_max_bytes: 64 << 10,
            chat_file_max: 20_000 * 1024,
            chat_token_ttl: 5 * 60_000,
            compliance_interval: 15 * 60_000,
            archive_keep_days: 14,
            archive_purge_hour: 2,
            archive_purge_batch: 1_000,
            archive_purge_pause: 100,
            archive_purge_share: 10,
            admission_wait: 100,
            admission_queue: 10_000,
            purge_exported_only: false,
            chat_keep_days: 0,
            chat_purge_hour: 2,
            chat_retention: std::collections::BTreeMap::new(),
        }
    }
}

/// Every setting with its default (as written in a config file) and what
/// it does: the source of `holdfast settings` and `docs/settings.md`.
pub const SETTINGS_DOC: &[(&str, &str, &str)] = &[
    ("semantics", "\"lync2010\"", "`lync2010`: heartbeats, queue health, quota monitoring, dead-letter resend, data never expires. `ocs2007r2`: data expires and is dropped, archiving waits for the recipient's response (the legacy behaviour, for comparison)."),
    ("critical_mode", "false", "Stop accepting IM (explicit rejection) when archiving cannot be guaranteed: a delivery or processing NACK, the queue quota full, the queue store failing. Off by default, as in the original: then messaging stays available, and an IM whose record the queue store cannot write (full disk, I/O error) is delivered with the distinct answer \"delivered, not archived\" (`ImDeliveredNotArchived`, event `delivered_not_archived` at WARN), never \"accepted\"; a full quota refuses the IM either way."),
    ("critical_auto_resume", "true", "Resume accepting IM automatically once archiving is healthy again; when false an operator must resume (`holdfast critical resume --node FE`)."),
    ("critical_resume_after", "\"30s\"", "Automatic resume waits until archiving has stayed healthy this long (0: at once), so that a link that heals and fails again does not make messaging flap."),
    ("heartbeat_interval", "\"1m\"", "Heartbeats are sent with the data stream, and their timeouts checked, this often."),
    ("heartbeat_ttrq", "\"10m\"", "A heartbeat that has not reached the destination queue in this time yields a delivery NACK (link or queue service down)."),
    ("heartbeat_ttbr", "\"1h\"", "A heartbeat that has not been processed in this time yields a processing NACK (archiver down or behind)."),
    ("data_ttrq", "\"3h\"", "A record that has not reached the destination queue in this time is dropped (ocs2007r2) or moved to the dead-letter queue and resent (lync2010)."),
    ("data_ttbr", "\"4h\"", "A record not processed in this time is dropped at the destination (ocs2007r2 only)."),
    ("dlq_check", "\"10s\"", "How often data expiry and the dead-letter queue are checked, while a queue holds anything."),
    ("quota_check", "\"15s\"", "How often the outgoing queue's quota use is checked, while it holds anything."),
    ("quota_warning_pct", "95", "Quota use (percent) that raises the `quota_warning` event."),
    ("quota_info_pct", "90", "After the warning, every check above this use (percent) raises `quota_info`; below it the warning re-arms."),
    ("queue_quota", "\"1GiB\"", "Quota of a front end's outgoing queue (MSMQ default). An IM whose record would not fit is rejected explicitly (`ArchivingUnavailable`), with or without critical mode, never accepted and dropped."),
    ("transfer_window", "4096", "Transfers in flight from an outgoing queue to its destination queue before an acknowledgement."),
    ("transfer_batch", "512", "Items an outgoing queue sends in one transfer frame at most (and at most 4 MiB of them, always one): the destination queue stores a frame in one write and acknowledges it once. 1: one record per frame."),
    ("transfer_frames", "4", "Transfer frames an outgoing queue has unacknowledged at most. While that many are in flight, the records that come wait for the next acknowledgement and go with it in one frame (group commit across the link): a light load sends each record at once, a heavy one in batches."),
    ("resend_interval", "\"5s\"", "Without acknowledgement progress for this long, an outgoing queue sends its first unacknowledged record again as a probe, and resends from there if the probe's answer shows transfers were lost."),
    ("resend_backoff_max", "\"1m\"", "The resend interval doubles while no progress is made, up to this."),
    ("link_timeout", "\"5s\"", "A connection between nodes whose data has gone unacknowledged this long (`TCP_USER_TIMEOUT`), or which has been idle this long and then left its keep-alive probes unanswered as long again, is closed and reconnected; connects that do not complete within 1.5 s are retried, with a backoff of at most 2 s. Without it a connection stalled by a network cut resumed only at the kernel's next retransmission, up to two minutes after the heal."),
    ("deliver_window", "4096", "Records a destination queue hands to its archiver before they are consumed."),
    ("archiver_batch", "1000", "Records per database transaction at most: a transaction takes what came while the one before it was written (group commit), up to this many."),
    ("archiver_batch_bytes", "\"4MiB\"", "Bytes of records per database transaction (a batch always takes at least one record). At most 16 MiB, so that every batch fits in one frame."),
    ("im_max_bytes", "\"64KiB\"", "Largest IM or call-report body a front end takes; a larger one is refused with `TooLarge` naming this setting. At most 4 MiB."),
    ("archiver_flush", "\"200ms\"", "A record that reaches an idle archiver waits at most this long for others to join its transaction (a full batch or a heartbeat sends it sooner); while a transaction is being written, what comes goes as soon as the database answers."),
    ("db_timeout", "\"10s\"", "The archiver resends a batch the database did not acknowledge within this time."),
    ("db_retry_max", "\"1m\"", "The database retry interval doubles up to this."),
    ("chat_load_report", "\"10s\"", "Group chat: a Channel server reports its load to Lookup this often; one silent for three periods leaves the rotation, and client sessions silent for three periods are closed."),
    ("chat_capacity", "10000", "Group chat: client sessions a Channel server takes before it answers busy (503); clients retry through Lookup."),
    ("chat_backchat", "30", "Group chat: posts a client gets when it joins a room afresh (backchat)."),
    ("chat_post_max_bytes", "\"64KiB\"", "Group chat: the largest post text a Channel server takes; a larger one is refused with `TooLarge`. At most 4 MiB."),
    ("chat_file_max", "\"20000KiB\"", "Group chat: the largest file the Web service takes (20,000 KB as in the original)."),
    ("chat_token_ttl", "\"5m\"", "Group chat: how long a file token a Channel server issues stays valid."),
    ("chat_store_timeout", "\"5s\"", "Group chat: a post the chat store has not confirmed in this time is refused to its author, who may retry (the post id makes it idempotent)."),
    ("admission_wait", "\"100ms\"", "Front end: a new IM is answered `Busy` at once, and nothing of it kept, when it waited this long in the node before the front end got it (a saturated processor, a full inbox) or the oldest IM admitted before it has waited this long for its record to be queued (the queue's disk cannot keep up); 0: no time bound. Past capacity, clients then learn the outcome at once instead of waiting into their timeout, and what admitted IMs wait stays bounded; a client told busy may try again. The node's connection readers already answer IMs busy, without handing them on, while the oldest request in the inbox has waited half this long and the node is still taking from its inbox (a node that took nothing for as long, paused or without a processor, is not behind a backlog: its readers then refuse only when the inbox is nearly full). Call reports are always taken."),
    ("admission_queue", "10000", "Front end: while this many admitted IMs wait for their records to be queued, new IMs are answered `Busy` (at least 1): a bound on the memory an overload takes."),
    ("archive_keep_days", "14", "Archive retention: rows whose message time is older than this many days (1 to 2562) are purged, except rows under a legal hold. Deleted rows are gone from the engine, not hidden."),
    ("archive_purge_hour", "2", "Archive retention: the hour of the day (UTC) the daily purge starts; it raises `archive_purged` with what it deleted, or `archive_purge_failed`."),
    ("archive_purge_batch", "1000", "Archive retention: rows deleted per purge transaction (at most 100,000)."),
    ("archive_purge_pause", "\"100ms\"", "Archive retention: the least pause between two purge transactions, so that ingest keeps its latency while a large purge runs."),
    ("archive_purge_share", "10", "Archive retention: the share (percent, 1 to 100) of the database's time the purge may take: after a batch (reading the index, checking the rows, deleting them) that took `t`, it pauses at least `t × (100 − share) / share`. The database serves one request at a time, so a purge that took more would hold up ingest; at 10 % a purge of a million rows takes about ten times its own work, spread out."),
    ("purge_exported_only", "false", "Archive retention: when true, the purge keeps a row past the window until an eDiscovery export (`holdfast archive export`) has covered it — its users, its time range, archived before the export began; rows kept so are counted as `unexported` in the purge record. Export records are never purged."),
    ("chat_keep_days", "0", "Chat retention: posts older than this many days (0 to 2562) are purged from the chat store, except posts under a legal hold; 0 keeps them for ever (the default: chat history is the product, and Lync's Persistent Chat purges nothing unless told to). Posts are exported to compliance when posted, so a purge takes nothing from the compliance record."),
    ("chat_purge_hour", "2", "Chat retention: the hour of the day (UTC) the daily chat purge starts; it raises `chat_purged` with what it deleted, or `chat_purge_failed`."),
    ("chat_retention", "{}", "Chat retention per room category, `{ category = days }` (0: for ever), overriding `chat_keep_days` for that category's rooms; rooms without a category follow `chat_keep_days`."),
    ("compliance_interval", "\"15m\"", "Compliance: the Compliance service exports its staged events this often (from 1 minute to 30 days); they are deleted only once the export files are written."),
];

/// The settings reference as a Markdown table.
pub fn settings_markdown() -> String {
    let mut s = String::from("| setting | default | meaning |\n|---|---|---|\n");
    for (name, default, doc) in SETTINGS_DOC {
        s.push_str(&format!("| `{name}` | `{default}` | {doc} |\n"));
    }
    s
}

/// Deliberate defects, for proving that the checker sees loss and
/// duplication. Off unless a scenario's `[sabotage]` table turns them on;
/// production configs have no way to set them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sabotage {
    /// The database acknowledges but silently skips every n-th new record.
    pub db_drop_every: u64,
    /// The database inserts every n-th new record twice.
    pub db_duplicate_every: u64,
    /// Channel servers do not relay posts to each other (group chat).
    pub no_relay: bool,
    /// The Compliance service deletes a batch's staged events before it
    /// writes the batch's files (the wrong order: a crash in between loses
    /// them).
    pub compliance_delete_first: bool,
    /// The Compliance service exports events only, without the uploaded
    /// files (the behaviour before batches carried them).
    pub compliance_skip_files: bool,
    /// The Compliance service removes a batch's files as soon as they are
    /// written, without waiting for the pickup system's acknowledgement.
    pub compliance_delete_unpicked: bool,
    /// Front ends answer "accepted" for an IM whose record could not be
    /// queued (the old behaviour without critical mode: the record is
    /// lost, and the client believes it archived).
    pub fe_accept_unqueued: bool,
    /// Stores mistake damage for a torn tail: the log is cut at the first
    /// unreadable frame, everything after it is dropped, and no event is
    /// raised (the behaviour before damage was told apart).
    pub store_cut_silently: bool,
    /// Front ends key the archive by the client's id (the behaviour before
    /// they assigned ids): a reused id hides messages from the archive.
    pub fe_client_ids: bool,
    /// Front ends take bodies of any size (the behaviour before
    /// `im_max_bytes`).
    pub fe_no_size_limit: bool,
    /// Front ends believe an IM's sender whoever sends it (the behaviour
    /// before client identities): anyone can send as anyone.
    pub fe_trust_sender: bool,
    /// Archivers delete the records the database refuses for good, as if
    /// archived, instead of parking them.
    pub archiver_drop_refused: bool,
    /// Hosts that commit in groups let a core's messages leave before the
    /// sync covering the persist before them (the bug the reactor's
    /// holding prevents): a crash loses what was acknowledged.
    pub send_before_sync: bool,
    /// Front ends end a critical-mode shutdown for any client that asks,
    /// whatever its role (the behaviour before operator controls checked
    /// the principal).
    pub fe_resume_anyone: bool,
    /// The chat store appends a post sent again under its id as a new post
    /// instead of answering with the number it holds it under (a store
    /// without a unique key on the post id).
    pub chat_store_forgets_ids: bool,
    /// The retention purge cuts at the purge's own time instead of the
    /// window's end: it deletes rows the policy keeps.
    pub purge_ignores_window: bool,
    /// The retention purge stops after its first batch and records itself
    /// finished: rows past the window stay.
    pub purge_stops_early: bool,
    /// The retention purge deletes rows past the window whatever legal
    /// holds cover them (the behaviour before holds existed).
    pub purge_ignores_holds: bool,
    /// A purge hour that passed while the database was down is not made
    /// up at start: the next purge waits for the next day's hour.
    pub purge_waits_for_the_hour: bool,
    /// A purge whose read fails gives up until the next day's hour.
    pub purge_gives_up_on_failed_read: bool,
    /// The chat store hides the posts a clear covers from members but
    /// never deletes their rows: the content stays in the store.
    pub chat_clear_hides_only: bool,
    /// The chat retention purge cuts at its own start instead of the
    /// window's end: it deletes posts the policy keeps.
    pub chat_purge_ignores_window: bool,
    /// The chat retention purge counts each room done without deleting
    /// anything: posts past the window stay.
    pub chat_purge_stops_early: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let toml: String = SETTINGS_DOC
            .iter()
            .map(|(k, v, _)| format!("{k} = {v}\n"))
            .collect();
        let parsed: Settings = toml::from_str(&toml).expect("documented defaults parse");
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn every_setting_is_documented() {
        let fields: Vec<String> = match serde_json::to_value(Settings::default()).unwrap() {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            _ => unreachable!(),
        };
        let mut documented: Vec<String> =
            SETTINGS_DOC.iter().map(|(k, _, _)| k.to_string()).collect();
        documented.sort();
        let mut fields = fields;
        fields.sort();
        assert_eq!(fields, documented);
    }
}

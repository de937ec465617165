//! Tunable settings of the archiving path, with defaults.
//!
//! Every field can be overridden in a scenario's `[settings]` table and in a
//! production config; durations and sizes are human strings there.

use crate::ids::Millis;
use crate::units::{de_ms, de_size};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Quota of a front end's outgoing queue (MSMQ default: 1 GiB). An IM
    /// whose record would not fit is rejected explicitly, never dropped.
    #[serde(deserialize_with = "de_size")]
    pub queue_quota: u64,
    /// Transfers in flight from an outgoing queue before an acknowledgement.
    pub transfer_window: u64,
    /// How long an outgoing queue waits for acknowledgement progress before
    /// resending the unacknowledged transfers.
    #[serde(deserialize_with = "de_ms")]
    pub resend_interval: Millis,
    /// The resend interval doubles while no progress is made, up to this.
    #[serde(deserialize_with = "de_ms")]
    pub resend_backoff_max: Millis,
    /// Records a destination queue hands to its archiver before consumption.
    pub deliver_window: u64,
    /// Records per database transaction.
    pub archiver_batch: u64,
    /// A partly filled batch is written after this long.
    #[serde(deserialize_with = "de_ms")]
    pub archiver_flush: Millis,
    /// The archiver retries a batch the database did not acknowledge in time.
    #[serde(deserialize_with = "de_ms")]
    pub db_timeout: Millis,
    /// The database retry interval doubles up to this.
    #[serde(deserialize_with = "de_ms")]
    pub db_retry_max: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            queue_quota: 1 << 30,
            transfer_window: 256,
            resend_interval: 5_000,
            resend_backoff_max: 60_000,
            deliver_window: 256,
            archiver_batch: 64,
            archiver_flush: 200,
            db_timeout: 10_000,
            db_retry_max: 60_000,
        }
    }
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
}

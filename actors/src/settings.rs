//! Tunable settings of the archiving path, with defaults.
//!
//! Every field can be overridden in a scenario's `[settings]` table and in a
//! production config; durations and sizes are human strings there.

use crate::ids::Millis;
use crate::units::{de_ms, de_size};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
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

/// Every setting with its default (as written in a config file) and what
/// it does: the source of `holdfast settings` and `docs/settings.md`.
pub const SETTINGS_DOC: &[(&str, &str, &str)] = &[
    ("queue_quota", "\"1GiB\"", "Quota of a front end's outgoing queue (MSMQ default). An IM whose record would not fit is rejected explicitly, never dropped."),
    ("transfer_window", "256", "Transfers in flight from an outgoing queue to its destination queue before an acknowledgement."),
    ("resend_interval", "\"5s\"", "Without acknowledgement progress for this long, an outgoing queue resends from the first unacknowledged record."),
    ("resend_backoff_max", "\"1m\"", "The resend interval doubles while no progress is made, up to this."),
    ("deliver_window", "256", "Records a destination queue hands to its archiver before they are consumed."),
    ("archiver_batch", "64", "Records per database transaction."),
    ("archiver_flush", "\"200ms\"", "A partly filled batch is written after this long."),
    ("db_timeout", "\"10s\"", "The archiver resends a batch the database did not acknowledge within this time."),
    ("db_retry_max", "\"1m\"", "The database retry interval doubles up to this."),
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

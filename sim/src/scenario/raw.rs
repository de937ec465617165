//! What a scenario file says: the TOML tables as serde reads them, with
//! the spans that error messages point at. Nothing here is checked beyond
//! the types; the section validators turn it into a [`super::model::Scenario`].

use holdfast_actors::core::settings::{Sabotage, Semantics, Settings};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default = "default_seed")]
    pub(super) seed: u64,
    #[serde(default)]
    pub(super) semantics: Option<Spanned<Semantics>>,
    pub(super) duration: Spanned<String>,
    #[serde(default)]
    pub(super) topology: RawTopology,
    #[serde(default)]
    pub(super) settings: Settings,
    #[serde(default)]
    pub(super) sabotage: Sabotage,
    #[serde(default)]
    pub(super) workload: Vec<RawWorkload>,
    #[serde(default)]
    pub(super) fault: Vec<RawFault>,
    #[serde(default)]
    pub(super) expect: RawExpect,
    #[serde(default)]
    pub(super) compliance: Option<RawCompliance>,
    #[serde(default)]
    pub(super) hold: Vec<RawHold>,
}

/// `[[hold]]`: a legal hold a simulated auditor places on every database
/// at `place` and, with `release`, releases later.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHold {
    pub(super) name: Spanned<String>,
    pub(super) users: Spanned<Vec<String>>,
    /// Message times covered, as simulated times (default: from the start,
    /// without end).
    #[serde(default)]
    pub(super) since: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) until: Option<Spanned<String>>,
    pub(super) place: Spanned<String>,
    #[serde(default)]
    pub(super) release: Option<Spanned<String>>,
}

/// `[compliance]`: how the Compliance service exports.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompliance {
    /// `xml` (default), `jsonl` or `csv`.
    #[serde(default)]
    pub(super) format: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rooms: Vec<String>,
    #[serde(default)]
    pub(super) users: Vec<String>,
    /// A pickup system: every this often it copies the complete batches
    /// out of the output folder and acknowledges them (`ComplianceAck`).
    #[serde(default)]
    pub(super) pickup: Option<Spanned<String>>,
}

pub(super) fn default_seed() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTopology {
    #[serde(default = "one")]
    pub(super) front_ends: Spanned<i64>,
    #[serde(default = "one")]
    pub(super) archivers: Spanned<i64>,
    #[serde(default = "one")]
    pub(super) databases: Spanned<i64>,
    /// Size of every node's simulated disk.
    #[serde(default)]
    pub(super) disk_size: Option<Spanned<String>>,
    /// Sizes of some nodes' disks, overriding `disk_size`.
    #[serde(default)]
    pub(super) disk_sizes: BTreeMap<String, Spanned<String>>,
    /// Simulated fsync latency.
    #[serde(default)]
    pub(super) fsync: Option<Spanned<String>>,
    /// Commit the queue stores in groups, as the production node does.
    #[serde(default)]
    pub(super) group_commit: Option<Spanned<bool>>,
    /// Group chat: Channel servers `ch1..` and Lookup instances
    /// `lookup1..` (with a chat store `chatdb` when there are channels).
    #[serde(default = "zero")]
    pub(super) channels: Spanned<i64>,
    #[serde(default = "zero")]
    pub(super) lookups: Spanned<i64>,
    /// Group chat: Web service nodes `web1..` (files).
    #[serde(default = "zero")]
    pub(super) web: Spanned<i64>,
    /// Group chat: a Compliance service node `comp1`.
    #[serde(default)]
    pub(super) compliance: Option<Spanned<bool>>,
}

impl Default for RawTopology {
    fn default() -> Self {
        RawTopology {
            front_ends: one(),
            archivers: one(),
            databases: one(),
            disk_size: None,
            disk_sizes: BTreeMap::new(),
            fsync: None,
            group_commit: None,
            channels: zero(),
            lookups: zero(),
            web: zero(),
            compliance: None,
        }
    }
}

pub(super) fn one() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}

pub(super) fn zero() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) kind: Spanned<String>,
    pub(super) users: Spanned<NumOrRange>,
    pub(super) rate: Spanned<NumOrRange>,
    #[serde(default)]
    pub(super) size: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) start: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) stop: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) archive: Option<Spanned<ArchiveSpec>>,
    /// Fraction of messages sent to federated (external) recipients.
    #[serde(default)]
    pub(super) external: Option<Spanned<f64>>,
    /// im, cdr, qoe: the front ends the workload's users are homed on,
    /// round-robin (default: every front end).
    #[serde(default)]
    pub(super) front_ends: Option<Spanned<Vec<String>>>,
    /// chat: rooms every user of the workload is a member of.
    #[serde(default)]
    pub(super) rooms: Option<Spanned<i64>>,
    /// chat: the last users of the workload are walled off every room.
    #[serde(default)]
    pub(super) walled: Option<Spanned<i64>>,
    /// chat: keep-alive and catch-up period of a client.
    #[serde(default)]
    pub(super) sync: Option<Spanned<String>>,
    /// chat: whether clients repair gaps (false only to prove the checker).
    #[serde(default)]
    pub(super) repair: Option<bool>,
    /// chat: rooms are not configured but created at run time by the
    /// workload's first user, in a category walling off the `walled` users.
    #[serde(default)]
    pub(super) managed: Option<Spanned<bool>>,
    /// chat: at each keep-alive, the chance that a client leaves one room
    /// for a period (then rejoins and catches up).
    #[serde(default)]
    pub(super) churn: Option<Spanned<f64>>,
    /// chat: a client sends each of its posts that has no answer by its
    /// next keep-alive again, under the same id, to the server it has then.
    #[serde(default)]
    pub(super) retry_posts: Option<Spanned<bool>>,
    /// chat: an operator disables the workload's last room at this time.
    #[serde(default)]
    pub(super) disable_at: Option<Spanned<String>>,
    /// chat: an operator clears the workload's first room at this time
    /// (of posts before `clear_before`, if given).
    #[serde(default)]
    pub(super) clear_at: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) clear_before: Option<Spanned<String>>,
    /// chat: an operator replaces the text of a post of the first room at
    /// this time.
    #[serde(default)]
    pub(super) replace_at: Option<Spanned<String>>,
    /// hostile: the attacks its clients make.
    #[serde(default)]
    pub(super) attacks: Option<Spanned<Vec<String>>>,
}

/// A number, or a range `"lo..hi"` drawn per seed.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum NumOrRange {
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum ArchiveSpec {
    Word(String),
    Fraction(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) between: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) one_way: bool,
    #[serde(default)]
    pub(super) node: Option<Spanned<String>>,
    pub(super) start: Spanned<String>,
    #[serde(default)]
    pub(super) duration: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) delay: Option<Spanned<String>>,
    /// random: the fault kinds to draw from (default: all).
    #[serde(default)]
    pub(super) kinds: Option<Spanned<Vec<String>>>,
    /// random, swizzle: `"one"`, `"minority"` or a list of nodes.
    #[serde(default)]
    pub(super) targets: Option<Spanned<TargetSpec>>,
    /// random: mean time between faults.
    #[serde(default)]
    pub(super) every: Option<Spanned<String>>,
    /// random: no new fault after this.
    #[serde(default)]
    pub(super) stop: Option<Spanned<String>>,
    /// swizzle: how many links to clog.
    #[serde(default)]
    pub(super) links: Option<Spanned<i64>>,
    /// corrupt: how many bytes to flip (default 16).
    #[serde(default)]
    pub(super) bytes: Option<Spanned<i64>>,
    /// corrupt: which store (`outgoing_queue`, `destination_queue`,
    /// `database`, …); default: any of the node's files, drawn by size.
    #[serde(default)]
    pub(super) file: Option<Spanned<String>>,
    /// db_refuses: the database refuses one record in this many (default
    /// 50).
    #[serde(default)]
    pub(super) one_in: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum TargetSpec {
    Word(String),
    Nodes(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    pub(super) lost: Option<u64>,
    pub(super) lost_min: Option<u64>,
    pub(super) lost_reported_max: Option<u64>,
    pub(super) parked_max: Option<u64>,
    pub(super) parked_min: Option<u64>,
    pub(super) duplicates: Option<u64>,
    pub(super) phantoms: Option<u64>,
    pub(super) accepted_min: Option<u64>,
    pub(super) rejected_min: Option<u64>,
    pub(super) unknown_max: Option<u64>,
    pub(super) busy_min: Option<u64>,
    pub(super) busy_max: Option<u64>,
    pub(super) pending_min: Option<u64>,
    pub(super) qoe_dropped_min: Option<u64>,
    pub(super) delivered_not_archived: Option<u64>,
    pub(super) delivered_not_archived_min: Option<u64>,
    pub(super) accept_p99_max: Option<Spanned<String>>,
    pub(super) drained_by: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) events_include: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) gauge_min: BTreeMap<String, Spanned<u64>>,
    pub(super) critical_shutdown_within: Option<Spanned<String>>,
    pub(super) critical_shutdowns: Option<u64>,
    pub(super) shutdowns_end_by: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) no_accept_while_shut_down: bool,
    pub(super) chat_lost: Option<u64>,
    pub(super) chat_missed: Option<u64>,
    pub(super) chat_missed_min: Option<u64>,
    pub(super) chat_accepted_min: Option<u64>,
    pub(super) chat_busy_min: Option<u64>,
    pub(super) chat_reconnects_min: Option<u64>,
    /// At least this many accepted messages deleted by a retention purge.
    pub(super) purged_min: Option<u64>,
    /// At least this many rows a purge would have deleted kept by a hold.
    pub(super) held_min: Option<u64>,
    /// At least this many posts sent again for want of an answer.
    pub(super) chat_post_retries_min: Option<u64>,
    pub(super) chat_refused_joins_min: Option<u64>,
    pub(super) compliance_exported_min: Option<u64>,
    #[serde(default)]
    pub(super) events_order: Vec<Spanned<String>>,
}

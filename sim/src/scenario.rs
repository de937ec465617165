//! Scenario files: TOML descriptions of a cluster, its workload, the faults
//! to inject and what must hold afterwards (see `docs/scenarios.md`).
//!
//! Parsing is strict: an unknown key, an unknown node, a bad duration or a
//! negative rate is an error naming the file, the line and the key, never
//! silently ignored.

use holdfast_actors::compliance::export::ExportFormat;
use holdfast_actors::compliance::service::ComplianceConfig;
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::RecordKind;
use holdfast_actors::core::settings::{Sabotage, Settings};
use holdfast_actors::core::units;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// A scenario file that could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

pub use holdfast_actors::core::settings::Semantics;

// ---------------------------------------------------------------- raw file

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default)]
    semantics: Option<Spanned<Semantics>>,
    duration: Spanned<String>,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    sabotage: Sabotage,
    #[serde(default)]
    workload: Vec<RawWorkload>,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    expect: RawExpect,
    #[serde(default)]
    compliance: Option<RawCompliance>,
}

/// `[compliance]`: how the Compliance service exports.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompliance {
    /// `xml` (default), `jsonl` or `csv`.
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

fn default_seed() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default = "one")]
    front_ends: Spanned<i64>,
    #[serde(default = "one")]
    archivers: Spanned<i64>,
    #[serde(default = "one")]
    databases: Spanned<i64>,
    /// Size of every node's simulated disk.
    #[serde(default)]
    disk_size: Option<Spanned<String>>,
    /// Sizes of some nodes' disks, overriding `disk_size`.
    #[serde(default)]
    disk_sizes: BTreeMap<String, Spanned<String>>,
    /// Simulated fsync latency.
    #[serde(default)]
    fsync: Option<Spanned<String>>,
    /// Group chat: Channel servers `ch1..` and Lookup instances
    /// `lookup1..` (with a chat store `chatdb` when there are channels).
    #[serde(default = "zero")]
    channels: Spanned<i64>,
    #[serde(default = "zero")]
    lookups: Spanned<i64>,
    /// Group chat: Web service nodes `web1..` (files).
    #[serde(default = "zero")]
    web: Spanned<i64>,
    /// Group chat: a Compliance service node `comp1`.
    #[serde(default)]
    compliance: Option<Spanned<bool>>,
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
            channels: zero(),
            lookups: zero(),
            web: zero(),
            compliance: None,
        }
    }
}

fn one() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}

fn zero() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: Spanned<String>,
    users: Spanned<NumOrRange>,
    rate: Spanned<NumOrRange>,
    #[serde(default)]
    size: Option<Spanned<i64>>,
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    stop: Option<Spanned<String>>,
    #[serde(default)]
    archive: Option<Spanned<ArchiveSpec>>,
    /// Fraction of messages sent to federated (external) recipients.
    #[serde(default)]
    external: Option<Spanned<f64>>,
    /// im, cdr, qoe: the front ends the workload's users are homed on,
    /// round-robin (default: every front end).
    #[serde(default)]
    front_ends: Option<Spanned<Vec<String>>>,
    /// chat: rooms every user of the workload is a member of.
    #[serde(default)]
    rooms: Option<Spanned<i64>>,
    /// chat: the last users of the workload are walled off every room.
    #[serde(default)]
    walled: Option<Spanned<i64>>,
    /// chat: keep-alive and catch-up period of a client.
    #[serde(default)]
    sync: Option<Spanned<String>>,
    /// chat: whether clients repair gaps (false only to prove the checker).
    #[serde(default)]
    repair: Option<bool>,
    /// chat: rooms are not configured but created at run time by the
    /// workload's first user, in a category walling off the `walled` users.
    #[serde(default)]
    managed: Option<Spanned<bool>>,
    /// chat: at each keep-alive, the chance that a client leaves one room
    /// for a period (then rejoins and catches up).
    #[serde(default)]
    churn: Option<Spanned<f64>>,
    /// hostile: the attacks its clients make.
    #[serde(default)]
    attacks: Option<Spanned<Vec<String>>>,
}

/// A number, or a range `"lo..hi"` drawn per seed.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum NumOrRange {
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum ArchiveSpec {
    Word(String),
    Fraction(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: Spanned<String>,
    #[serde(default)]
    between: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    one_way: bool,
    #[serde(default)]
    node: Option<Spanned<String>>,
    start: Spanned<String>,
    #[serde(default)]
    duration: Option<Spanned<String>>,
    #[serde(default)]
    delay: Option<Spanned<String>>,
    /// random: the fault kinds to draw from (default: all).
    #[serde(default)]
    kinds: Option<Spanned<Vec<String>>>,
    /// random, swizzle: `"one"`, `"minority"` or a list of nodes.
    #[serde(default)]
    targets: Option<Spanned<TargetSpec>>,
    /// random: mean time between faults.
    #[serde(default)]
    every: Option<Spanned<String>>,
    /// random: no new fault after this.
    #[serde(default)]
    stop: Option<Spanned<String>>,
    /// swizzle: how many links to clog.
    #[serde(default)]
    links: Option<Spanned<i64>>,
    /// corrupt: how many bytes to flip (default 16).
    #[serde(default)]
    bytes: Option<Spanned<i64>>,
    /// corrupt: which store (`outgoing_queue`, `destination_queue`,
    /// `database`, …); default: any of the node's files, drawn by size.
    #[serde(default)]
    file: Option<Spanned<String>>,
    /// db_refuses: the database refuses one record in this many (default
    /// 50).
    #[serde(default)]
    one_in: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum TargetSpec {
    Word(String),
    Nodes(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    lost: Option<u64>,
    lost_min: Option<u64>,
    lost_reported_max: Option<u64>,
    parked_max: Option<u64>,
    parked_min: Option<u64>,
    duplicates: Option<u64>,
    phantoms: Option<u64>,
    accepted_min: Option<u64>,
    rejected_min: Option<u64>,
    pending_min: Option<u64>,
    qoe_dropped_min: Option<u64>,
    delivered_not_archived: Option<u64>,
    delivered_not_archived_min: Option<u64>,
    accept_p99_max: Option<Spanned<String>>,
    drained_by: Option<Spanned<String>>,
    #[serde(default)]
    events_include: Vec<Spanned<String>>,
    #[serde(default)]
    gauge_min: BTreeMap<String, Spanned<u64>>,
    critical_shutdown_within: Option<Spanned<String>>,
    critical_shutdowns: Option<u64>,
    shutdowns_end_by: Option<Spanned<String>>,
    #[serde(default)]
    no_accept_while_shut_down: bool,
    chat_lost: Option<u64>,
    chat_missed: Option<u64>,
    chat_missed_min: Option<u64>,
    chat_accepted_min: Option<u64>,
    chat_busy_min: Option<u64>,
    chat_reconnects_min: Option<u64>,
    chat_refused_joins_min: Option<u64>,
    compliance_exported_min: Option<u64>,
    #[serde(default)]
    events_order: Vec<Spanned<String>>,
}

// ----------------------------------------------------------- validated form

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Values drawn per seed (`"lo..hi"` in the file); the fields above
    /// hold the low end until [`Scenario::resolve`] draws them.
    pub draws: Vec<Draw>,
    /// Faults generated per seed (`random`, `swizzle`).
    pub generators: Vec<Generator>,
    pub file: String,
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub semantics: Semantics,
    pub duration_ms: u64,
    pub topology: Topology,
    pub settings: Settings,
    pub sabotage: Sabotage,
    pub workloads: Vec<ImWorkload>,
    pub chat: Vec<ChatWorkload>,
    /// Hostile clients beside the honest ones (see `sim/src/hostile.rs`).
    pub hostile: Vec<HostileWorkload>,
    pub faults: Vec<Fault>,
    pub expect: Expect,
    /// How the Compliance service exports (with `topology.compliance`).
    pub export: ComplianceConfig,
}

/// A value of the scenario that each seed draws from a range.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub target: DrawTarget,
    pub lo: f64,
    pub hi: f64,
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DrawTarget {
    WorkloadUsers(usize),
    WorkloadRate(usize),
    WorkloadStart(usize),
    WorkloadStop(usize),
    FaultStart(usize),
    FaultDuration(usize),
    FaultDelay(usize),
}

/// Faults drawn per seed.
#[derive(Clone, Debug, PartialEq)]
pub enum Generator {
    /// Poisson-distributed faults of random kinds on random targets.
    Random {
        /// Position of the `[[fault]]` entry in the file.
        entry: usize,
        kinds: Vec<String>,
        targets: Vec<String>,
        /// Hit a minority of the targets at once instead of one.
        minority: bool,
        /// First possible fault time (a range: drawn per seed).
        start: (u64, u64),
        stop_ms: u64,
        every_ms: u64,
        duration: (u64, u64),
        delay: (u64, u64),
        databases: Vec<String>,
    },
    /// Clog a random subset of links one by one, unclog in random order.
    Swizzle {
        entry: usize,
        targets: Vec<String>,
        start: (u64, u64),
        /// The whole clog-and-unclog cycle (a range: drawn per seed).
        duration: (u64, u64),
        run_ms: u64,
        links: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub front_ends: Vec<String>,
    pub archivers: Vec<String>,
    pub databases: Vec<String>,
    pub disk_size: u64,
    /// Nodes whose disk is not `disk_size`.
    pub disk_sizes: BTreeMap<String, u64>,
    pub fsync_ms: u64,
    pub channels: Vec<String>,
    pub lookups: Vec<String>,
    /// The chat store's node, when there are Channel servers.
    pub chat_store: Option<String>,
    pub web: Vec<String>,
    /// The Compliance service's node, if any.
    pub compliance: Option<String>,
}

/// The Compliance service's node name.
pub const COMPLIANCE_NODE: &str = "comp1";

/// The chat store's node name.
pub const CHAT_STORE_NODE: &str = "chatdb";

impl Topology {
    pub fn servers(&self) -> impl Iterator<Item = &String> {
        self.front_ends
            .iter()
            .chain(&self.archivers)
            .chain(&self.databases)
            .chain(&self.channels)
            .chain(&self.lookups)
            .chain(&self.chat_store)
            .chain(&self.web)
            .chain(&self.compliance)
    }
    pub fn has(&self, node: &str) -> bool {
        self.servers().any(|n| n == node)
    }
}

/// Which of a workload's users have archiving switched on.
#[derive(Clone, Debug, PartialEq)]
pub enum Archive {
    All,
    None,
    Internal,
    External,
    /// The first `fraction × users` users archive everything, the rest nothing.
    Fraction(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImWorkload {
    /// `Im`: instant messages; `Cdr`/`Qoe`: finished calls reported by
    /// clients, recorded by the front end's CDR or QoE agent.
    pub kind: RecordKind,
    pub users: u64,
    pub rate: f64,
    pub size: usize,
    pub start_ms: u64,
    pub stop_ms: u64,
    pub archive: Archive,
    pub external: f64,
    /// The front ends its users are homed on, round-robin (empty: every
    /// front end of the topology).
    pub front_ends: Vec<String>,
}

/// What a hostile client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    /// An IM one byte over `im_max_bytes`: must be refused.
    Oversize,
    /// Three different IMs under one client id: each accepted one must be
    /// archived with its own content.
    ReuseId,
    /// Connections opened and held silent, to the front ends and the
    /// archiving servers: honest traffic must not suffer.
    Flood,
    /// IMs sent as an honest user by another authenticated user: must be
    /// refused.
    ForgeFrom,
    /// IMs sent as an honest user by a client whose connection carries no
    /// principal: must be refused.
    Unauthenticated,
}

/// Attack names in scenario files.
pub const ATTACKS: &[(&str, Attack)] = &[
    ("oversize", Attack::Oversize),
    ("reuse_id", Attack::ReuseId),
    ("flood", Attack::Flood),
    ("forge_from", Attack::ForgeFrom),
    ("unauthenticated", Attack::Unauthenticated),
];

impl Attack {
    /// The attack's name in scenario files.
    pub fn name(self) -> &'static str {
        ATTACKS
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("attack")
    }
}

/// Hostile clients (see `sim/src/hostile.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostileWorkload {
    pub attacks: Vec<Attack>,
    /// Hostile clients: for `flood`, the connections held open at once.
    pub clients: u64,
    /// Requests per simulated second, of each request attack.
    pub rate: f64,
    pub start_ms: u64,
    pub stop_ms: u64,
}

/// Group chat users posting in rooms (see `sim/src/chat.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct ChatWorkload {
    pub users: u64,
    pub rooms: u64,
    /// Of the users, this many (the last) are walled off every room.
    pub walled: u64,
    /// Posts per simulated second, over all users.
    pub rate: f64,
    pub size: usize,
    pub start_ms: u64,
    pub stop_ms: u64,
    pub sync_ms: u64,
    pub repair: bool,
    /// `kind = "file"`: each post is a file uploaded to the Web service
    /// (and announced in the room); members download what is announced.
    pub files: bool,
    /// Rooms are created at run time by the first user (see `managed`).
    pub managed: bool,
    /// Chance per keep-alive that a client leaves a room for a period.
    pub churn: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Cut the link between two nodes (one direction with `one_way`).
    Partition { a: String, b: String, one_way: bool },
    /// Kill a node; restart it after the duration (never, if none).
    Crash { node: String },
    /// Delay every message a node processes.
    Slow { node: String, delay_ms: u64 },
    /// The node's disk has no free space left.
    DiskFull { node: String },
    /// Every write and sync on the node's disk fails.
    IoError { node: String },
    /// The database server is down (killed, restarted after the duration).
    DbDown { node: String },
    /// Kill a node, flip `bytes` bytes at a seed-drawn offset of one of
    /// its stored files (of `file`'s store when given), restart it after
    /// the duration.
    Corrupt {
        node: String,
        bytes: u64,
        file: Option<String>,
    },
    /// The archive database refuses one record in `one_in` for good (as a
    /// constraint or trigger would): which ones follows from the record's
    /// id. Such records must be parked, not lost, and must not block the
    /// rest.
    DbRefuses { node: String, one_in: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub start_ms: u64,
    /// `None`: until the end of the run.
    pub duration_ms: Option<u64>,
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self.kind {
            FaultKind::Partition { .. } => "partition",
            FaultKind::Crash { .. } => "crash",
            FaultKind::Slow { .. } => "slow",
            FaultKind::DiskFull { .. } => "disk_full",
            FaultKind::IoError { .. } => "io_error",
            FaultKind::DbDown { .. } => "db_down",
            FaultKind::Corrupt { .. } => "corrupt",
            FaultKind::DbRefuses { .. } => "db_refuses",
        }
    }
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            FaultKind::Partition { a, b, one_way } => {
                format!("partition {a} {} {b}", if *one_way { "->" } else { "<->" })
            }
            FaultKind::Crash { node } => format!("crash {node}"),
            FaultKind::Slow { node, delay_ms } => {
                format!("slow {node} by {}", units::fmt_ms(*delay_ms))
            }
            FaultKind::DiskFull { node } => format!("disk_full {node}"),
            FaultKind::IoError { node } => format!("io_error {node}"),
            FaultKind::DbDown { node } => format!("db_down {node}"),
            FaultKind::Corrupt { node, bytes, file } => match file {
                Some(f) => format!("corrupt {bytes} bytes of {node}'s {f} store"),
                None => format!("corrupt {bytes} bytes of {node}'s disk"),
            },
            FaultKind::DbRefuses { node, one_in } => {
                format!("{node} refuses one record in {one_in} for good")
            }
        };
        let until = match self.duration_ms {
            Some(d) => format!("for {}", units::fmt_ms(d)),
            None => "until the end".into(),
        };
        format!("{what} at {} {until}", units::fmt_ms(self.start_ms))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    pub lost: Option<u64>,
    pub lost_min: Option<u64>,
    /// At most this many lost messages an operator event reported (0
    /// unless the file says otherwise).
    pub lost_reported_max: Option<u64>,
    /// At most this many accepted records parked (the database refused
    /// them for good; 0 unless the file says otherwise).
    pub parked_max: Option<u64>,
    pub parked_min: Option<u64>,
    pub duplicates: Option<u64>,
    pub phantoms: Option<u64>,
    pub accepted_min: Option<u64>,
    pub rejected_min: Option<u64>,
    pub pending_min: Option<u64>,
    pub qoe_dropped_min: Option<u64>,
    /// IMs delivered with the explicit answer "not archived": exactly
    /// this many (0 unless the file says otherwise: a front end that
    /// should have refused or queued must not quietly choose this).
    pub delivered_not_archived: Option<u64>,
    pub delivered_not_archived_min: Option<u64>,
    /// The 99th percentile of the time from submitting an IM to its
    /// "accepted" answer is at most this.
    pub accept_p99_max_ms: Option<u64>,
    pub drained_by_ms: Option<u64>,
    pub events_include: Vec<OperatorEvent>,
    /// `(node, gauge)` → the least maximum the gauge must reach: proof that
    /// a fault had the effect the scenario is about.
    pub gauge_min: Vec<(String, String, u64)>,
    /// Every front end whose archiving path a fault breaks for longer than
    /// this must have stopped accepting IM within it.
    pub critical_shutdown_within_ms: Option<u64>,
    /// Exactly this many critical-mode shutdowns happen.
    pub critical_shutdowns: Option<u64>,
    /// Every critical-mode shutdown has ended by then (messaging comes
    /// back without an operator once the fault is over).
    pub shutdowns_end_by_ms: Option<u64>,
    /// No IM is admitted by a front end while it is shut down.
    pub no_accept_while_shut_down: bool,
    /// These events first happen in this order (each at least once).
    pub events_order: Vec<OperatorEvent>,
    pub chat_lost: Option<u64>,
    pub chat_missed: Option<u64>,
    pub chat_missed_min: Option<u64>,
    pub chat_accepted_min: Option<u64>,
    pub chat_busy_min: Option<u64>,
    pub chat_reconnects_min: Option<u64>,
    pub chat_refused_joins_min: Option<u64>,
    /// With a Compliance service: at least this many events exported.
    pub compliance_exported_min: Option<u64>,
}

/// Gauges the actors report (see `Actor::gauges`).
pub const GAUGES: &[&str] = &[
    "outgoing_depth",
    "outgoing_bytes",
    "resends",
    "destination_depth",
    "duplicates_dropped",
    "archived_rows",
    "dead_letter_depth",
    "dead_lettered",
    "expired",
    "link_failing",
    "critical_shutdown",
    "chat_posts",
    "chat_sessions",
    "chat_relayed",
    "channels_known",
];

// ------------------------------------------------------------- validation

struct Ctx<'a> {
    file: &'a str,
    src: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> Option<usize> {
        if span.start == 0 && span.end == 0 {
            return None;
        }
        Some(
            self.src[..span.start.min(self.src.len())]
                .matches('\n')
                .count()
                + 1,
        )
    }
    fn err(&self, span: &Range<usize>, key: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_string(),
            line: self.line(span),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
    /// Operator events named by their stable names.
    fn events(
        &self,
        names: &[Spanned<String>],
        key: &str,
    ) -> Result<Vec<OperatorEvent>, ScenarioError> {
        let event = |n: &Spanned<String>| {
            OperatorEvent::from_name(n.get_ref()).ok_or_else(|| {
                let msg = format!("{:?} is not the name of an operator event", n.get_ref());
                self.err(&n.span(), key, msg)
            })
        };
        names.iter().map(event).collect()
    }
    fn dur(&self, v: &Spanned<String>, key: &str) -> Result<u64, ScenarioError> {
        if v.get_ref().contains("..") {
            return Err(self.err(&v.span(), key, "a range is not allowed here"));
        }
        units::duration_ms(v.get_ref()).map_err(|m| self.err(&v.span(), key, m))
    }
    /// A duration or a range of durations `"lo..hi"`.
    fn dur_range(&self, v: &Spanned<String>, key: &str) -> Result<(u64, u64), ScenarioError> {
        let parse = |s: &str| units::duration_ms(s).map_err(|m| self.err(&v.span(), key, m));
        match v.get_ref().split_once("..") {
            None => parse(v.get_ref()).map(|d| (d, d)),
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi {
                    return Err(self.err(&v.span(), key, "a range must go from low to high"));
                }
                Ok((lo, hi))
            }
        }
    }
    /// A number or a range of numbers `"lo..hi"`.
    fn num_range(&self, v: &Spanned<NumOrRange>, key: &str) -> Result<(f64, f64), ScenarioError> {
        let parse = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| self.err(&v.span(), key, format!("{s:?} is not a number")))
        };
        let (lo, hi) = match v.get_ref() {
            NumOrRange::Int(i) => (*i as f64, *i as f64),
            NumOrRange::Float(f) => (*f, *f),
            NumOrRange::Text(t) => match t.split_once("..") {
                Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                None => {
                    return Err(self.err(
                        &v.span(),
                        key,
                        format!("expected a number or a range like \"5..20\", got {t:?}"),
                    ))
                }
            },
        };
        if lo > hi || !lo.is_finite() || !hi.is_finite() {
            return Err(self.err(&v.span(), key, "a range must go from low to high"));
        }
        Ok((lo, hi))
    }
    fn count(&self, v: &Spanned<i64>, key: &str, min: i64) -> Result<u64, ScenarioError> {
        if *v.get_ref() < min {
            return Err(self.err(
                &v.span(),
                key,
                format!("must be at least {min}, got {}", v.get_ref()),
            ));
        }
        Ok(*v.get_ref() as u64)
    }
}

/// The dotted key (`settings.resend_interval`) of the line holding byte
/// `pos`: the table header above it, then the key left of `=`.
fn key_at(src: &str, pos: usize) -> Option<String> {
    let pos = pos.min(src.len());
    let line_start = src[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = src[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))?;
    let table = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// Node names generated from the topology: `fe1..`, `arch1..`, `db1..`.
pub fn node_names(prefix: &str, n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&file, &src)
}

pub fn parse(file: &str, src: &str) -> Result<Scenario, ScenarioError> {
    let cx = Ctx { file, src };
    let raw: RawScenario = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ScenarioError {
            file: file.to_string(),
            line: cx.line(&span).or(Some(1)),
            key: key_at(src, span.start),
            message: e.message().to_string(),
        }
    })?;

    let duration_ms = cx.dur(&raw.duration, "duration")?;
    if duration_ms == 0 {
        return Err(cx.err(&raw.duration.span(), "duration", "must be longer than 0s"));
    }
    let mut settings = raw.settings.clone();
    if let Some(sem) = &raw.semantics {
        if settings.semantics != Semantics::default() && settings.semantics != *sem.get_ref() {
            return Err(cx.err(
                &sem.span(),
                "semantics",
                "contradicts `settings.semantics`; set it in one place",
            ));
        }
        settings.semantics = *sem.get_ref();
    }
    if let Err((key, msg)) = settings.validate() {
        // Point at the line that sets it, if the file sets it.
        let at = src
            .find(&format!("\n{key}"))
            .map(|i| i + 1..i + 2)
            .unwrap_or(0..0);
        return Err(cx.err(&at, &format!("settings.{key}"), msg));
    }
    let t = &raw.topology;
    let topology = Topology {
        front_ends: node_names("fe", cx.count(&t.front_ends, "topology.front_ends", 1)?),
        archivers: node_names("arch", cx.count(&t.archivers, "topology.archivers", 1)?),
        databases: node_names("db", cx.count(&t.databases, "topology.databases", 1)?),
        disk_size: match &t.disk_size {
            Some(s) => units::parse_size(s.get_ref())
                .map_err(|m| cx.err(&s.span(), "topology.disk_size", m))?,
            None => 16 << 30,
        },
        disk_sizes: BTreeMap::new(),
        fsync_ms: match &t.fsync {
            Some(s) => cx.dur(s, "topology.fsync")?,
            None => 1,
        },
        channels: node_names("ch", cx.count(&t.channels, "topology.channels", 0)?),
        lookups: node_names("lookup", cx.count(&t.lookups, "topology.lookups", 0)?),
        chat_store: None,
        web: node_names("web", cx.count(&t.web, "topology.web", 0)?),
        compliance: None,
    };
    let mut topology = topology;
    if !topology.channels.is_empty() {
        if topology.lookups.is_empty() {
            return Err(cx.err(
                &t.channels.span(),
                "topology.lookups",
                "Channel servers need at least one Lookup instance",
            ));
        }
        topology.chat_store = Some(CHAT_STORE_NODE.to_string());
    }
    if let Some(c) = t.compliance.as_ref().filter(|c| *c.get_ref()) {
        if topology.channels.is_empty() {
            return Err(cx.err(
                &c.span(),
                "topology.compliance",
                "the Compliance service serves group chat: set topology.channels too",
            ));
        }
        topology.compliance = Some(COMPLIANCE_NODE.to_string());
    }
    if !topology.web.is_empty() && topology.channels.is_empty() {
        return Err(cx.err(
            &t.web.span(),
            "topology.web",
            "a Web service serves group chat: set topology.channels too",
        ));
    }
    if topology.channels.len() > 16 || topology.lookups.len() > 8 || topology.web.len() > 8 {
        return Err(cx.err(
            &t.channels.span(),
            "topology.channels",
            "at most 16 Channel servers and 8 Lookup instances",
        ));
    }
    for (node, size) in &t.disk_sizes {
        let key = format!("topology.disk_sizes.{node}");
        if !topology.has(node) {
            return Err(cx.err(
                &size.span(),
                &key,
                format!(
                    "unknown node {node:?}; this topology has {}",
                    topology.servers().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let bytes = units::parse_size(size.get_ref()).map_err(|m| cx.err(&size.span(), &key, m))?;
        topology.disk_sizes.insert(node.clone(), bytes);
    }
    if topology.front_ends.len() > 64
        || topology.archivers.len() > 16
        || topology.databases.len() > 16
    {
        return Err(cx.err(
            &(0..0),
            "topology",
            "at most 64 front ends, 16 archivers and 16 databases",
        ));
    }

    let mut workloads = Vec::new();
    let mut chat = Vec::new();
    let mut hostile = Vec::new();
    let mut draws = Vec::new();
    for w in &raw.workload {
        let kind = w.kind.get_ref().as_str();
        if kind == "hostile" {
            hostile.push(hostile_workload(&cx, w, duration_ms)?);
            continue;
        }
        if let Some(a) = &w.attacks {
            return Err(cx.err(
                &a.span(),
                "workload.attacks",
                "only a hostile workload takes this key",
            ));
        }
        if kind == "chat" || kind == "file" {
            chat.push(chat_workload(
                &cx,
                w,
                duration_ms,
                &topology,
                kind == "file",
            )?);
            continue;
        }
        for (key, given) in [
            ("rooms", w.rooms.as_ref().map(|r| r.span())),
            ("walled", w.walled.as_ref().map(|r| r.span())),
            ("sync", w.sync.as_ref().map(|r| r.span())),
            ("managed", w.managed.as_ref().map(|r| r.span())),
            ("churn", w.churn.as_ref().map(|r| r.span())),
        ] {
            if let Some(span) = given {
                return Err(cx.err(
                    &span,
                    &format!("workload.{key}"),
                    "only a chat workload takes this key",
                ));
            }
        }
        let record_kind = match kind {
            "im" => RecordKind::Im,
            "cdr" => RecordKind::Cdr,
            "qoe" => RecordKind::Qoe,
            other => {
                return Err(cx.err(
                    &w.kind.span(),
                    "workload.kind",
                    format!("unknown workload kind {other:?}; expected \"im\", \"cdr\", \"qoe\", \"chat\", \"file\" or \"hostile\""),
                ))
            }
        };
        if let (false, Some(a)) = (record_kind == RecordKind::Im, &w.archive) {
            return Err(cx.err(
                &a.span(),
                "workload.archive",
                "only an im workload has an archiving policy; every call is recorded",
            ));
        }
        let wi = workloads.len();
        let (users_lo, users_hi) = cx.num_range(&w.users, "workload.users")?;
        if users_lo < 2.0 || users_lo.fract() != 0.0 || users_hi.fract() != 0.0 {
            return Err(cx.err(
                &w.users.span(),
                "workload.users",
                format!("must be whole numbers of at least 2, got {users_lo}..{users_hi}"),
            ));
        }
        let users = users_lo as u64;
        if users_hi > users_lo {
            draws.push(Draw {
                target: DrawTarget::WorkloadUsers(wi),
                lo: users_lo,
                hi: users_hi,
                label: format!("workload[{wi}].users"),
            });
        }
        let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
        if rate_hi > rate {
            draws.push(Draw {
                target: DrawTarget::WorkloadRate(wi),
                lo: rate,
                hi: rate_hi,
                label: format!("workload[{wi}].rate"),
            });
        }
        if rate_hi > 10_000.0 {
            return Err(cx.err(
                &w.rate.span(),
                "workload.rate",
                "at most 10000 messages per second",
            ));
        }
        if !(rate.is_finite() && rate > 0.0) {
            return Err(cx.err(
                &w.rate.span(),
                "workload.rate",
                format!("must be a positive number of messages per simulated second, got {rate}"),
            ));
        }
        if rate > 10_000.0 {
            return Err(cx.err(
                &w.rate.span(),
                "workload.rate",
                "at most 10000 messages per second",
            ));
        }
        let size = match &w.size {
            Some(s) => cx.count(s, "workload.size", 1)? as usize,
            None => 200,
        };
        if size > 1 << 20 {
            return Err(cx.err(
                &w.size.as_ref().expect("some").span(),
                "workload.size",
                "at most 1 MiB per message body",
            ));
        }
        let (start_ms, start_hi) = w
            .start
            .as_ref()
            .map(|s| cx.dur_range(s, "workload.start"))
            .transpose()?
            .unwrap_or((0, 0));
        let (stop_ms, stop_hi) = w
            .stop
            .as_ref()
            .map(|s| cx.dur_range(s, "workload.stop"))
            .transpose()?
            .unwrap_or((duration_ms, duration_ms));
        if start_hi > start_ms {
            draws.push(Draw {
                target: DrawTarget::WorkloadStart(wi),
                lo: start_ms as f64,
                hi: start_hi as f64,
                label: format!("workload[{wi}].start"),
            });
        }
        if stop_hi > stop_ms {
            draws.push(Draw {
                target: DrawTarget::WorkloadStop(wi),
                lo: stop_ms as f64,
                hi: stop_hi as f64,
                label: format!("workload[{wi}].stop"),
            });
        }
        if stop_ms <= start_hi || stop_hi > duration_ms {
            let span = w.stop.as_ref().map(|s| s.span()).unwrap_or(w.kind.span());
            return Err(cx.err(
                &span,
                "workload.stop",
                format!(
                    "must be after start ({}) and within the run's duration ({})",
                    units::fmt_ms(start_ms),
                    units::fmt_ms(duration_ms)
                ),
            ));
        }
        let archive = match &w.archive {
            None => Archive::All,
            Some(a) => match a.get_ref() {
                ArchiveSpec::Word(s) => match s.as_str() {
                    "all" => Archive::All,
                    "none" => Archive::None,
                    "internal" => Archive::Internal,
                    "external" => Archive::External,
                    other => return Err(cx.err(&a.span(), "workload.archive", format!(
                        "unknown value {other:?}; expected \"all\", \"none\", \"internal\", \"external\" or a fraction like 0.5"))),
                },
                ArchiveSpec::Fraction(f) if (0.0..=1.0).contains(f) => Archive::Fraction(*f),
                ArchiveSpec::Fraction(f) => return Err(cx.err(&a.span(), "workload.archive", format!("a fraction must be between 0 and 1, got {f}"))),
            },
        };
        let external = match &w.external {
            Some(e) if (0.0..=1.0).contains(e.get_ref()) => *e.get_ref(),
            Some(e) => {
                return Err(cx.err(
                    &e.span(),
                    "workload.external",
                    format!("must be a fraction between 0 and 1, got {}", e.get_ref()),
                ))
            }
            None => 0.0,
        };
        let mut homes = Vec::new();
        if let Some(list) = &w.front_ends {
            if list.get_ref().is_empty() {
                return Err(cx.err(
                    &list.span(),
                    "workload.front_ends",
                    "name at least one front end (or leave the key out: every front end)",
                ));
            }
            for fe in list.get_ref() {
                if !topology.front_ends.contains(fe) {
                    return Err(cx.err(
                        &list.span(),
                        "workload.front_ends",
                        format!(
                            "{fe:?} is not a front end; this topology has {}",
                            topology.front_ends.join(", ")
                        ),
                    ));
                }
            }
            homes = list.get_ref().clone();
        }
        workloads.push(ImWorkload {
            kind: record_kind,
            users,
            rate,
            size,
            start_ms,
            stop_ms,
            archive,
            external,
            front_ends: homes,
        });
    }

    let mut faults = Vec::new();
    let mut generators = Vec::new();
    for (ri, f) in raw.fault.iter().enumerate() {
        // `fi`: index among the concrete faults; `ri`: the entry in the file.
        let fi = faults.len();
        let (start_ms, start_hi) = cx.dur_range(&f.start, "fault.start")?;
        let duration_range = f
            .duration
            .as_ref()
            .map(|d| cx.dur_range(d, "fault.duration"))
            .transpose()?;
        let mut fault_duration = duration_range.map(|(lo, _)| lo);
        // A corrupted node comes back after a second unless told otherwise.
        if f.kind.get_ref() == "corrupt" && fault_duration.is_none() {
            fault_duration = Some(1000);
        }
        if start_hi >= duration_ms {
            return Err(cx.err(
                &f.start.span(),
                "fault.start",
                format!("starts after the run ends ({})", units::fmt_ms(duration_ms)),
            ));
        }
        if matches!(f.kind.get_ref().as_str(), "random" | "swizzle") {
            generators.push(generator(
                &cx,
                f,
                &topology,
                (start_ms, start_hi),
                duration_ms,
                duration_range,
                ri,
            )?);
            continue;
        }
        for (key, v) in [
            ("kinds", f.kinds.is_some()),
            ("targets", f.targets.is_some()),
            ("every", f.every.is_some()),
            ("stop", f.stop.is_some()),
            ("links", f.links.is_some()),
        ] {
            if v {
                return Err(cx.err(
                    &f.kind.span(),
                    &format!("fault.{key}"),
                    "only a random or swizzle fault takes this key",
                ));
            }
        }
        if start_hi > start_ms {
            draws.push(Draw {
                target: DrawTarget::FaultStart(fi),
                lo: start_ms as f64,
                hi: start_hi as f64,
                label: format!("fault[{ri}].start"),
            });
        }
        if let Some((lo, hi)) = duration_range.filter(|(lo, hi)| hi > lo) {
            draws.push(Draw {
                target: DrawTarget::FaultDuration(fi),
                lo: lo as f64,
                hi: hi as f64,
                label: format!("fault[{ri}].duration"),
            });
        }
        if fault_duration == Some(0) {
            return Err(cx.err(
                &f.duration.as_ref().expect("some").span(),
                "fault.duration",
                "must be longer than 0s (omit it for a fault that lasts until the end)",
            ));
        }
        let node = |key: &str| -> Result<String, ScenarioError> {
            let n = f.node.as_ref().ok_or_else(|| {
                cx.err(
                    &f.kind.span(),
                    key,
                    format!("fault {:?} needs `node`", f.kind.get_ref()),
                )
            })?;
            if !topology.has(n.get_ref()) {
                return Err(cx.err(
                    &n.span(),
                    key,
                    format!(
                        "unknown node {:?}; this topology has {}",
                        n.get_ref(),
                        topology.servers().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Ok(n.get_ref().clone())
        };
        // A database fault's node: the one named, which must be a
        // database, or the first database.
        let database = || -> Result<String, ScenarioError> {
            let Some(named) = &f.node else {
                return Ok(topology.databases[0].clone());
            };
            let n = node("fault.node")?;
            if !topology.databases.contains(&n) {
                return Err(cx.err(
                    &named.span(),
                    "fault.node",
                    format!("{n:?} is not a database node"),
                ));
            }
            Ok(n)
        };
        let kind = match f.kind.get_ref().as_str() {
            "partition" => {
                let b = f.between.as_ref().ok_or_else(|| cx.err(&f.kind.span(), "fault.between", "a partition needs `between = [\"node\", \"node\"]`"))?;
                if b.get_ref().len() != 2 || b.get_ref()[0] == b.get_ref()[1] {
                    return Err(cx.err(&b.span(), "fault.between", "needs exactly two different nodes"));
                }
                for n in b.get_ref() {
                    if !topology.has(n) {
                        return Err(cx.err(&b.span(), "fault.between", format!(
                            "unknown node {n:?}; this topology has {}",
                            topology.servers().cloned().collect::<Vec<_>>().join(", "))));
                    }
                }
                FaultKind::Partition { a: b.get_ref()[0].clone(), b: b.get_ref()[1].clone(), one_way: f.one_way }
            }
            "crash" => FaultKind::Crash { node: node("fault.node")? },
            "slow" => {
                let d = f.delay.as_ref().ok_or_else(|| cx.err(&f.kind.span(), "fault.delay", "a slow fault needs `delay`, like \"200ms\""))?;
                let (lo, hi) = cx.dur_range(d, "fault.delay")?;
                if hi > lo {
                    draws.push(Draw { target: DrawTarget::FaultDelay(fi), lo: lo as f64, hi: hi as f64, label: format!("fault[{ri}].delay") });
                }
                FaultKind::Slow { node: node("fault.node")?, delay_ms: lo }
            }
            "disk_full" => FaultKind::DiskFull { node: node("fault.node")? },
            "io_error" => FaultKind::IoError { node: node("fault.node")? },
            "db_down" => FaultKind::DbDown { node: database()? },
            "corrupt" => {
                let bytes = match &f.bytes {
                    None => 16,
                    Some(b) if (1..=4096).contains(b.get_ref()) => *b.get_ref() as u64,
                    Some(b) => return Err(cx.err(&b.span(), "fault.bytes", "must be from 1 to 4096")),
                };
                let file = match &f.file {
                    None => None,
                    Some(name) => {
                        if !CORRUPTIBLE_STORES.contains(&name.get_ref().as_str()) {
                            return Err(cx.err(&name.span(), "fault.file", format!(
                                "unknown store {:?}; expected one of {}",
                                name.get_ref(),
                                CORRUPTIBLE_STORES.join(", "))));
                        }
                        Some(name.get_ref().clone())
                    }
                };
                FaultKind::Corrupt { node: node("fault.node")?, bytes, file }
            }
            "db_refuses" => {
                let n = database()?;
                let one_in = match &f.one_in {
                    None => 50,
                    Some(k) if (2..=1_000_000).contains(k.get_ref()) => *k.get_ref() as u64,
                    Some(k) => return Err(cx.err(&k.span(), "fault.one_in", "must be from 2 to 1000000")),
                };
                FaultKind::DbRefuses { node: n, one_in }
            }
            other => return Err(cx.err(&f.kind.span(), "fault.kind", format!(
                "unknown fault kind {other:?}; expected partition, crash, slow, disk_full, io_error, db_down, corrupt, db_refuses, random or swizzle"))),
        };
        if let (false, Some(k)) = (matches!(kind, FaultKind::DbRefuses { .. }), &f.one_in) {
            return Err(cx.err(
                &k.span(),
                "fault.one_in",
                "only a db_refuses fault takes this key",
            ));
        }
        for (key, given) in [("bytes", f.bytes.is_some()), ("file", f.file.is_some())] {
            if given && !matches!(kind, FaultKind::Corrupt { .. }) {
                return Err(cx.err(
                    &f.kind.span(),
                    &format!("fault.{key}"),
                    "only a corrupt fault takes this key",
                ));
            }
        }
        if let (false, Some(b)) = (matches!(kind, FaultKind::Partition { .. }), &f.between) {
            return Err(cx.err(
                &b.span(),
                "fault.between",
                "only a partition takes `between`",
            ));
        }
        faults.push(Fault {
            kind,
            start_ms,
            duration_ms: fault_duration,
        });
    }

    let e = &raw.expect;
    let mut gauge_min = Vec::new();
    for (key, min) in &e.gauge_min {
        let bad = |m: String| cx.err(&min.span(), &format!("expect.gauge_min.{key}"), m);
        let (node, gauge) = key
            .split_once('.')
            .ok_or_else(|| bad("expected a key like \"fe1.outgoing_depth\"".into()))?;
        if !topology.has(node) {
            return Err(bad(format!("unknown node {node:?}")));
        }
        if !GAUGES.contains(&gauge) {
            return Err(bad(format!(
                "unknown gauge {gauge:?}; known: {}",
                GAUGES.join(", ")
            )));
        }
        gauge_min.push((node.to_string(), gauge.to_string(), *min.get_ref()));
    }
    let mut export = ComplianceConfig::default();
    if let Some(c) = &raw.compliance {
        if topology.compliance.is_none() {
            return Err(cx.err(
                &(0..0),
                "compliance",
                "a [compliance] table needs topology.compliance = true",
            ));
        }
        if let Some(f) = &c.format {
            export.format = ExportFormat::parse(f.get_ref())
                .ok_or_else(|| cx.err(&f.span(), "compliance.format", "one of xml, jsonl, csv"))?;
        }
        export.rooms = c.rooms.clone();
        export.users = c.users.clone();
    }
    let expect = Expect {
        compliance_exported_min: e.compliance_exported_min,
        gauge_min,
        critical_shutdown_within_ms: e
            .critical_shutdown_within
            .as_ref()
            .map(|d| cx.dur(d, "expect.critical_shutdown_within"))
            .transpose()?,
        critical_shutdowns: e.critical_shutdowns,
        shutdowns_end_by_ms: e
            .shutdowns_end_by
            .as_ref()
            .map(|d| cx.dur(d, "expect.shutdowns_end_by"))
            .transpose()?,
        no_accept_while_shut_down: e.no_accept_while_shut_down,
        events_order: cx.events(&e.events_order, "expect.events_order")?,
        // With a chat workload, nothing accepted may be lost or missed
        // unless the file says otherwise.
        chat_lost: e.chat_lost.or((!chat.is_empty()).then_some(0)),
        chat_missed: if e.chat_missed_min.is_some() {
            e.chat_missed
        } else {
            e.chat_missed.or((!chat.is_empty()).then_some(0))
        },
        chat_missed_min: e.chat_missed_min,
        chat_accepted_min: e.chat_accepted_min,
        chat_busy_min: e.chat_busy_min,
        chat_reconnects_min: e.chat_reconnects_min,
        chat_refused_joins_min: e.chat_refused_joins_min,
        lost: if e.lost_min.is_some() {
            e.lost
        } else {
            Some(e.lost.unwrap_or(0))
        },
        lost_min: e.lost_min,
        lost_reported_max: Some(e.lost_reported_max.unwrap_or(0)),
        parked_max: Some(e.parked_max.unwrap_or(0)),
        parked_min: e.parked_min,
        duplicates: Some(e.duplicates.unwrap_or(0)),
        phantoms: Some(e.phantoms.unwrap_or(0)),
        accepted_min: e.accepted_min,
        rejected_min: e.rejected_min,
        pending_min: e.pending_min,
        qoe_dropped_min: e.qoe_dropped_min,
        delivered_not_archived: if e.delivered_not_archived_min.is_some() {
            e.delivered_not_archived
        } else {
            Some(e.delivered_not_archived.unwrap_or(0))
        },
        delivered_not_archived_min: e.delivered_not_archived_min,
        accept_p99_max_ms: e
            .accept_p99_max
            .as_ref()
            .map(|d| cx.dur(d, "expect.accept_p99_max"))
            .transpose()?,
        drained_by_ms: e
            .drained_by
            .as_ref()
            .map(|d| cx.dur(d, "expect.drained_by"))
            .transpose()?,
        events_include: cx.events(&e.events_include, "expect.events_include")?,
    };
    Ok(Scenario {
        file: file.to_string(),
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        semantics: settings.semantics,
        duration_ms,
        topology,
        settings,
        sabotage: raw.sabotage,
        export,
        workloads,
        chat,
        hostile,
        faults,
        expect,
        draws,
        generators,
    })
}

/// A `kind = "hostile"` workload.
fn hostile_workload(
    cx: &Ctx,
    w: &RawWorkload,
    duration_ms: u64,
) -> Result<HostileWorkload, ScenarioError> {
    let names = w.attacks.as_ref().ok_or_else(|| {
        cx.err(
            &w.kind.span(),
            "workload.attacks",
            "a hostile workload needs `attacks`, like [\"oversize\", \"flood\"]",
        )
    })?;
    let mut attacks = Vec::new();
    for name in names.get_ref() {
        match ATTACKS.iter().find(|(n, _)| n == name) {
            Some((_, a)) => attacks.push(*a),
            None => {
                return Err(cx.err(
                    &names.span(),
                    "workload.attacks",
                    format!(
                        "unknown attack {name:?}; expected {}",
                        ATTACKS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    attacks.sort();
    attacks.dedup();
    if attacks.is_empty() {
        return Err(cx.err(
            &names.span(),
            "workload.attacks",
            "needs at least one attack",
        ));
    }
    let (clients, hi) = cx.num_range(&w.users, "workload.users")?;
    if hi > clients || !(1.0..=5000.0).contains(&clients) {
        return Err(cx.err(
            &w.users.span(),
            "workload.users",
            "hostile clients: one number from 1 to 5000",
        ));
    }
    let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
    if rate_hi > rate || !(rate > 0.0 && rate <= 1000.0) {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "one number of requests per second, over 0 and at most 1000",
        ));
    }
    let start_ms = w
        .start
        .as_ref()
        .map(|d| cx.dur(d, "workload.start"))
        .transpose()?
        .unwrap_or(0);
    let stop_ms = w
        .stop
        .as_ref()
        .map(|d| cx.dur(d, "workload.stop"))
        .transpose()?
        .unwrap_or(duration_ms);
    if stop_ms <= start_ms || stop_ms > duration_ms {
        return Err(cx.err(
            &w.kind.span(),
            "workload.stop",
            "must be after start and within the run",
        ));
    }
    for (key, given) in [
        ("size", w.size.is_some()),
        ("archive", w.archive.is_some()),
        ("external", w.external.is_some()),
        ("front_ends", w.front_ends.is_some()),
        ("rooms", w.rooms.is_some()),
        ("walled", w.walled.is_some()),
        ("sync", w.sync.is_some()),
        ("managed", w.managed.is_some()),
        ("churn", w.churn.is_some()),
        ("repair", w.repair.is_some()),
    ] {
        if given {
            return Err(cx.err(
                &w.kind.span(),
                &format!("workload.{key}"),
                "a hostile workload does not take this key",
            ));
        }
    }
    Ok(HostileWorkload {
        attacks,
        clients: clients as u64,
        rate,
        start_ms,
        stop_ms,
    })
}

/// A `kind = "chat"` workload.
fn chat_workload(
    cx: &Ctx,
    w: &RawWorkload,
    duration_ms: u64,
    topology: &Topology,
    files: bool,
) -> Result<ChatWorkload, ScenarioError> {
    if files && topology.web.is_empty() {
        return Err(cx.err(
            &w.kind.span(),
            "workload.kind",
            "a file workload needs a Web service: set topology.web",
        ));
    }
    if topology.channels.is_empty() {
        return Err(cx.err(
            &w.kind.span(),
            "workload.kind",
            "a chat workload needs Channel servers: set topology.channels (and topology.lookups)",
        ));
    }
    for (key, given) in [
        ("archive", w.archive.as_ref().map(|a| a.span())),
        ("external", w.external.as_ref().map(|e| e.span())),
        ("front_ends", w.front_ends.as_ref().map(|e| e.span())),
    ] {
        if let Some(span) = given {
            return Err(cx.err(
                &span,
                &format!("workload.{key}"),
                "a chat workload does not take this key",
            ));
        }
    }
    let (users, users_hi) = cx.num_range(&w.users, "workload.users")?;
    let (rate, rate_hi) = cx.num_range(&w.rate, "workload.rate")?;
    if users_hi > users || rate_hi > rate {
        return Err(cx.err(
            &w.users.span(),
            "workload",
            "ranges are not supported in chat workloads yet",
        ));
    }
    if users < 2.0 || users.fract() != 0.0 || users > 5000.0 {
        return Err(cx.err(
            &w.users.span(),
            "workload.users",
            "must be a whole number from 2 to 5000",
        ));
    }
    if !(rate.is_finite() && rate > 0.0 && rate <= 1000.0) {
        return Err(cx.err(
            &w.rate.span(),
            "workload.rate",
            "must be a positive number of posts per simulated second, at most 1000",
        ));
    }
    let rooms = match &w.rooms {
        Some(r) => cx.count(r, "workload.rooms", 1)?,
        None => 1,
    };
    let walled = match &w.walled {
        Some(r) => cx.count(r, "workload.walled", 0)?,
        None => 0,
    };
    if walled + 2 > users as u64 {
        return Err(cx.err(
            &w.walled.as_ref().expect("walled given").span(),
            "workload.walled",
            "at least two users must remain outside the wall",
        ));
    }
    let size = match &w.size {
        Some(s) => cx.count(s, "workload.size", 1)? as usize,
        None => 100,
    };
    let start_ms = match &w.start {
        Some(s) => cx.dur(s, "workload.start")?,
        None => 0,
    };
    let stop_ms = match &w.stop {
        Some(s) => cx.dur(s, "workload.stop")?,
        None => duration_ms,
    };
    if stop_ms <= start_ms || stop_ms > duration_ms {
        return Err(cx.err(
            &w.stop.as_ref().map(|s| s.span()).unwrap_or(w.kind.span()),
            "workload.stop",
            "must be after start and within the run's duration",
        ));
    }
    let sync_ms = match &w.sync {
        Some(s) => cx.dur(s, "workload.sync")?,
        None => 10_000,
    };
    if sync_ms == 0 {
        return Err(cx.err(
            &w.sync.as_ref().expect("sync given").span(),
            "workload.sync",
            "must be longer than 0s",
        ));
    }
    let churn = match &w.churn {
        Some(c) if !(0.0..=1.0).contains(c.get_ref()) => {
            return Err(cx.err(
                &c.span(),
                "workload.churn",
                "must be a probability from 0 to 1",
            ))
        }
        Some(c) => *c.get_ref(),
        None => 0.0,
    };
    Ok(ChatWorkload {
        users: users as u64,
        rooms,
        walled,
        rate,
        size,
        start_ms,
        stop_ms,
        sync_ms,
        repair: w.repair.unwrap_or(true),
        files,
        managed: w.managed.as_ref().is_some_and(|m| *m.get_ref()),
        churn,
    })
}

/// Stores a `corrupt` fault may name in `file`.
const CORRUPTIBLE_STORES: &[&str] = &[
    "front_end",
    "outgoing_queue",
    "destination_queue",
    "archiver",
    "database",
    "chat_store",
    "channel",
    "web",
    "compliance",
];

const FAULT_KINDS: &[&str] = &[
    "partition",
    "crash",
    "slow",
    "disk_full",
    "io_error",
    "db_down",
];

/// Parses a `random` or `swizzle` fault.
fn generator(
    cx: &Ctx,
    f: &RawFault,
    topology: &Topology,
    start: (u64, u64),
    run_ms: u64,
    duration: Option<(u64, u64)>,
    entry: usize,
) -> Result<Generator, ScenarioError> {
    let start_ms = start.0;
    let servers: Vec<String> = topology.servers().cloned().collect();
    let swizzle = f.kind.get_ref() == "swizzle";
    // Keys that mean nothing for this kind are errors, not silently ignored.
    let unused: &[(&str, bool)] = if swizzle {
        &[
            ("kinds", f.kinds.is_some()),
            ("every", f.every.is_some()),
            ("stop", f.stop.is_some()),
            ("delay", f.delay.is_some()),
            ("node", f.node.is_some()),
            ("between", f.between.is_some()),
            ("one_way", f.one_way),
        ]
    } else {
        &[
            ("links", f.links.is_some()),
            ("node", f.node.is_some()),
            ("between", f.between.is_some()),
            ("one_way", f.one_way),
        ]
    };
    if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
        return Err(cx.err(
            &f.kind.span(),
            &format!("fault.{key}"),
            format!("a {} fault does not take `{key}`", f.kind.get_ref()),
        ));
    }
    let (targets, minority) = match f.targets.as_ref().map(|t| (t.get_ref(), t.span())) {
        None => (servers.clone(), false),
        Some((TargetSpec::Word(w), _)) if w == "one" => (servers.clone(), false),
        Some((TargetSpec::Word(w), _)) if w == "minority" => (servers.clone(), true),
        Some((TargetSpec::Word(w), span)) => {
            return Err(cx.err(
                &span,
                "fault.targets",
                format!("{w:?}: expected \"one\", \"minority\" or a list of nodes"),
            ))
        }
        Some((TargetSpec::Nodes(list), span)) => {
            for n in list {
                if !topology.has(n) {
                    return Err(cx.err(
                        &span,
                        "fault.targets",
                        format!(
                            "unknown node {n:?}; this topology has {}",
                            servers.join(", ")
                        ),
                    ));
                }
            }
            if list.is_empty() {
                return Err(cx.err(&span, "fault.targets", "needs at least one node"));
            }
            let mut distinct = list.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() != list.len() {
                return Err(cx.err(&span, "fault.targets", "names a node twice"));
            }
            (list.clone(), false)
        }
    };
    if swizzle {
        if minority {
            return Err(cx.err(
                &f.kind.span(),
                "fault.targets",
                "a swizzle takes \"one\" or a list of nodes, not \"minority\"",
            ));
        }
        let total = duration.ok_or_else(|| {
            cx.err(
                &f.kind.span(),
                "fault.duration",
                "a swizzle needs `duration` (the whole clog-and-unclog cycle)",
            )
        })?;
        if total.0 < 2_000 {
            return Err(cx.err(
                &f.kind.span(),
                "fault.duration",
                "a swizzle needs at least 2s",
            ));
        }
        let pairs = targets.len() * (targets.len() - 1) / 2;
        let links = match &f.links {
            Some(l) if *l.get_ref() >= 1 && (*l.get_ref() as usize) <= pairs => {
                *l.get_ref() as usize
            }
            Some(l) => {
                return Err(cx.err(
                    &l.span(),
                    "fault.links",
                    format!("must be between 1 and {pairs} (the links between the targets)"),
                ))
            }
            None => pairs.div_ceil(2).max(1),
        };
        if pairs == 0 {
            return Err(cx.err(
                &f.kind.span(),
                "fault.targets",
                "a swizzle needs at least two nodes",
            ));
        }
        return Ok(Generator::Swizzle {
            entry,
            targets,
            start,
            duration: total,
            run_ms,
            links,
        });
    }
    let kinds = match &f.kinds {
        None => FAULT_KINDS.iter().map(|k| k.to_string()).collect(),
        Some(k) => {
            for kind in k.get_ref() {
                if !FAULT_KINDS.contains(&kind.as_str()) {
                    return Err(cx.err(
                        &k.span(),
                        "fault.kinds",
                        format!(
                            "unknown fault kind {kind:?}; expected some of {}",
                            FAULT_KINDS.join(", ")
                        ),
                    ));
                }
            }
            if k.get_ref().is_empty() {
                return Err(cx.err(&k.span(), "fault.kinds", "needs at least one kind"));
            }
            k.get_ref().clone()
        }
    };
    let every = f.every.as_ref().ok_or_else(|| {
        cx.err(
            &f.kind.span(),
            "fault.every",
            "a random fault needs `every`, the mean time between faults, like \"20m\"",
        )
    })?;
    let every_ms = cx.dur(every, "fault.every")?;
    if every_ms == 0 {
        return Err(cx.err(&every.span(), "fault.every", "must be longer than 0s"));
    }
    let stop_ms = f
        .stop
        .as_ref()
        .map(|s| cx.dur(s, "fault.stop"))
        .transpose()?
        .unwrap_or(run_ms);
    if stop_ms <= start_ms || stop_ms > run_ms {
        return Err(cx.err(
            &f.kind.span(),
            "fault.stop",
            "must be after `start` and within the run",
        ));
    }
    let delay = f
        .delay
        .as_ref()
        .map(|d| cx.dur_range(d, "fault.delay"))
        .transpose()?
        .unwrap_or((20, 200));
    // A kind that can never hit any of the targets would make seeds pass
    // without testing anything.
    for kind in &kinds {
        let possible = match kind.as_str() {
            "db_down" => targets.iter().any(|t| topology.databases.contains(t)),
            "partition" => targets.len() >= 2,
            _ => true,
        };
        if !possible {
            return Err(cx.err(
                &f.kind.span(),
                "fault.kinds",
                format!("{kind:?} can never hit these targets"),
            ));
        }
    }
    Ok(Generator::Random {
        entry,
        kinds,
        targets,
        minority,
        start,
        stop_ms,
        every_ms,
        duration: duration.unwrap_or((60_000, 600_000)),
        delay,
        databases: topology.databases.clone(),
    })
}

impl Scenario {
    /// The concrete scenario that `seed` runs, and the values it drew (in
    /// the order drawn). The draws use their own RNG, seeded from the seed:
    /// the same seed always gives the same scenario.
    pub fn resolve(&self, seed: u64) -> (Scenario, Vec<(String, String)>) {
        use rand::{Rng, SeedableRng};
        // ChaCha8: the same numbers on every platform and rand release.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut s = self.clone();
        s.draws.clear();
        s.generators.clear();
        let mut drawn = Vec::new();
        // Times are drawn to the second (milliseconds only add noise) when
        // the range is wide enough, and always stay inside it.
        let ms_in = |v: f64, lo: f64, hi: f64| -> u64 {
            let v = if hi - lo >= 2000.0 {
                (v / 1000.0).round() * 1000.0
            } else {
                v.round()
            };
            (v.clamp(lo, hi)) as u64
        };
        for d in &self.draws {
            let ms = |v: f64| ms_in(v, d.lo, d.hi);
            let v = if d.hi > d.lo {
                rng.gen_range(d.lo..=d.hi)
            } else {
                d.lo
            };
            let shown = match d.target {
                DrawTarget::WorkloadUsers(i) => {
                    s.workloads[i].users = v.round() as u64;
                    s.workloads[i].users.to_string()
                }
                DrawTarget::WorkloadRate(i) => {
                    s.workloads[i].rate = v;
                    format!("{v:.3}/s")
                }
                DrawTarget::WorkloadStart(i) => {
                    s.workloads[i].start_ms = ms(v);
                    units::fmt_ms(ms(v))
                }
                DrawTarget::WorkloadStop(i) => {
                    s.workloads[i].stop_ms = ms(v);
                    units::fmt_ms(ms(v))
                }
                DrawTarget::FaultStart(i) => {
                    s.faults[i].start_ms = ms(v);
                    units::fmt_ms(ms(v))
                }
                DrawTarget::FaultDuration(i) => {
                    s.faults[i].duration_ms = Some(ms(v).max(1));
                    units::fmt_ms(ms(v).max(1))
                }
                DrawTarget::FaultDelay(i) => {
                    if let FaultKind::Slow { delay_ms, .. } = &mut s.faults[i].kind {
                        *delay_ms = v.round() as u64;
                    }
                    units::fmt_ms(v.round() as u64)
                }
            };
            drawn.push((d.label.clone(), shown));
        }
        for w in &mut s.workloads {
            // Validation guarantees stop > start at the extremes; keep it.
            w.stop_ms = w.stop_ms.max(w.start_ms + 1).min(self.duration_ms);
        }
        for g in &self.generators {
            let before = s.faults.len();
            match g {
                Generator::Random {
                    entry,
                    kinds,
                    targets,
                    minority,
                    start,
                    stop_ms,
                    every_ms,
                    duration,
                    delay,
                    databases,
                } => {
                    let first = ms_in(
                        rng.gen_range(start.0 as f64..=start.1 as f64),
                        start.0 as f64,
                        start.1 as f64,
                    );
                    if start.1 > start.0 {
                        drawn.push((format!("fault[{entry}].start"), units::fmt_ms(first)));
                    }
                    let mut t = first as f64;
                    loop {
                        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                        t += -u.ln() * *every_ms as f64;
                        let at = ms_in(t, 0.0, f64::MAX);
                        if at >= *stop_ms {
                            break;
                        }
                        let kind = kinds[rng.gen_range(0..kinds.len())].as_str();
                        let (dlo, dhi) = (duration.0 as f64, duration.1 as f64);
                        let dur = ms_in(rng.gen_range(dlo..=dhi), dlo, dhi).max(1);
                        let dur = Some(dur.min(self.duration_ms.saturating_sub(at)).max(1));
                        let pool: Vec<&String> = if kind == "db_down" {
                            targets.iter().filter(|n| databases.contains(n)).collect()
                        } else {
                            targets.iter().collect()
                        };
                        if pool.is_empty() || (kind == "partition" && pool.len() < 2) {
                            continue;
                        }
                        let n = if *minority {
                            ((pool.len() - 1) / 2).max(1)
                        } else {
                            1
                        };
                        let mut picked: Vec<&String> = Vec::new();
                        while picked.len() < n {
                            let c = pool[rng.gen_range(0..pool.len())];
                            if !picked.contains(&c) {
                                picked.push(c);
                            }
                        }
                        let mut add = |kind: FaultKind| {
                            s.faults.push(Fault {
                                kind,
                                start_ms: at,
                                duration_ms: dur,
                            })
                        };
                        match kind {
                            "partition" if *minority => {
                                for m in &picked {
                                    for o in pool.iter().filter(|o| !picked.contains(o)) {
                                        add(FaultKind::Partition {
                                            a: (*m).clone(),
                                            b: (*o).clone(),
                                            one_way: false,
                                        });
                                    }
                                }
                            }
                            "partition" => {
                                let other = loop {
                                    let c = pool[rng.gen_range(0..pool.len())];
                                    if c != picked[0] {
                                        break c;
                                    }
                                };
                                add(FaultKind::Partition {
                                    a: picked[0].clone(),
                                    b: other.clone(),
                                    one_way: false,
                                });
                            }
                            _ => {
                                for node in picked {
                                    let node = node.clone();
                                    add(match kind {
                                        "crash" => FaultKind::Crash { node },
                                        "slow" => FaultKind::Slow {
                                            node,
                                            delay_ms: rng.gen_range(delay.0..=delay.1),
                                        },
                                        "disk_full" => FaultKind::DiskFull { node },
                                        "io_error" => FaultKind::IoError { node },
                                        _ => FaultKind::DbDown { node },
                                    });
                                }
                            }
                        }
                    }
                }
                Generator::Swizzle {
                    entry,
                    targets,
                    start,
                    duration,
                    run_ms,
                    links,
                } => {
                    let start_ms = ms_in(
                        rng.gen_range(start.0 as f64..=start.1 as f64),
                        start.0 as f64,
                        start.1 as f64,
                    );
                    let total = ms_in(
                        rng.gen_range(duration.0 as f64..=duration.1 as f64),
                        duration.0 as f64,
                        duration.1 as f64,
                    );
                    if start.1 > start.0 {
                        drawn.push((format!("fault[{entry}].start"), units::fmt_ms(start_ms)));
                    }
                    if duration.1 > duration.0 {
                        drawn.push((format!("fault[{entry}].duration"), units::fmt_ms(total)));
                    }
                    let start_ms = &start_ms;
                    let duration_ms = &total.min(run_ms.saturating_sub(*start_ms)).max(2);
                    let mut pairs: Vec<(String, String)> = Vec::new();
                    for (i, a) in targets.iter().enumerate() {
                        for b in &targets[i + 1..] {
                            pairs.push((a.clone(), b.clone()));
                        }
                    }
                    // Fisher-Yates with the scenario RNG.
                    for i in (1..pairs.len()).rev() {
                        pairs.swap(i, rng.gen_range(0..=i));
                    }
                    pairs.truncate(*links);
                    let half = duration_ms / 2;
                    let step = half / (*links as u64).max(1);
                    let mut order: Vec<usize> = (0..pairs.len()).collect();
                    for i in (1..order.len()).rev() {
                        order.swap(i, rng.gen_range(0..=i));
                    }
                    for (i, (a, b)) in pairs.iter().enumerate() {
                        let clog = start_ms + i as u64 * step;
                        let j = order.iter().position(|&k| k == i).unwrap_or(0) as u64;
                        let unclog = start_ms + half + j * step;
                        s.faults.push(Fault {
                            kind: FaultKind::Partition {
                                a: a.clone(),
                                b: b.clone(),
                                one_way: false,
                            },
                            start_ms: clog,
                            duration_ms: Some((unclog - clog).max(1000)),
                        });
                    }
                }
            }
            for f in &s.faults[before..] {
                drawn.push(("fault".into(), f.describe()));
            }
        }
        s.faults.sort_by_key(|f| f.start_ms);
        (s, drawn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
name = "ranged"
duration = "2h"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = "10..20"
rate = "1.0..5.0"
start = "0s..10m"
stop = "1h..1h 30m"
[[fault]]
kind = "crash"
node = "arch1"
start = "10m..40m"
duration = "1m..5m"
[[fault]]
kind = "random"
every = "10m"
start = "5m"
duration = "1m..2m"
targets = "minority"
"#;

    #[test]
    fn a_swizzle_draws_its_start_and_sub_second_ranges_stay_inside() {
        let src = r#"
name = "sw"
duration = "2h"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 10
rate = 1.0
[[fault]]
kind = "swizzle"
targets = ["fe1", "fe2", "arch1"]
start = "10m..30m"
duration = "20m..40m"
[[fault]]
kind = "slow"
node = "arch1"
delay = "100ms..900ms"
start = "0ms..400ms"
duration = "1h"
"#;
        let s = parse("sw.toml", src).unwrap();
        let starts: std::collections::BTreeSet<u64> = (0..20)
            .map(|seed| {
                s.resolve(seed)
                    .0
                    .faults
                    .iter()
                    .filter(|f| matches!(f.kind, FaultKind::Partition { .. }))
                    .map(|f| f.start_ms)
                    .min()
                    .unwrap()
            })
            .collect();
        assert!(starts.len() > 5, "the swizzle start is drawn: {starts:?}");
        for seed in 0..20 {
            let (r, drawn) = s.resolve(seed);
            let slow = r
                .faults
                .iter()
                .find(|f| matches!(f.kind, FaultKind::Slow { .. }))
                .unwrap();
            assert!(slow.start_ms <= 400);
            let FaultKind::Slow { delay_ms, .. } = slow.kind else {
                unreachable!()
            };
            assert!((100..=900).contains(&delay_ms));
            assert!(
                drawn.iter().any(|(k, _)| k == "fault[0].start"),
                "{drawn:?}"
            );
        }
    }

    #[test]
    fn a_seed_always_draws_the_same_scenario_and_another_seed_another() {
        let s = parse("ranged.toml", SRC).unwrap();
        let (a, da) = s.resolve(7);
        let (b, db) = s.resolve(7);
        let (c, _) = s.resolve(8);
        assert_eq!(a, b);
        assert_eq!(da, db);
        assert_ne!(a, c);
        let w = &a.workloads[0];
        assert!((10..=20).contains(&w.users));
        assert!((1.0..=5.0).contains(&w.rate));
        assert!(w.start_ms <= 600_000 && (3_600_000..=5_400_000).contains(&w.stop_ms));
        assert!(a.faults.len() > 1, "the random generator produced faults");
        assert!(
            a.faults.windows(2).all(|p| p[0].start_ms <= p[1].start_ms),
            "sorted by start"
        );
        assert!(da.iter().any(|(k, _)| k == "workload[0].rate"));
        assert!(
            a.faults.iter().all(|f| f.start_ms < a.duration_ms),
            "no fault after the end"
        );
        assert!(
            a.draws.is_empty() && a.generators.is_empty(),
            "resolved for good"
        );
    }
}

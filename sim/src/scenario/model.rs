//! The validated scenario: what a run simulates, with every value checked
//! and every default filled in.

use holdfast_actors::compliance::service::ComplianceConfig;
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::RecordKind;
use holdfast_actors::core::settings::{Sabotage, Semantics, Settings};
use holdfast_actors::core::units;
use std::collections::BTreeMap;

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
    /// Hostile clients beside the honest ones (see `sim/src/workload/hostile.rs`).
    pub hostile: Vec<HostileWorkload>,
    pub faults: Vec<Fault>,
    pub expect: Expect,
    /// How the Compliance service exports (with `topology.compliance`).
    pub export: ComplianceConfig,
    /// With a Compliance service: how often a simulated pickup system
    /// copies the complete batches and acknowledges them.
    pub pickup_ms: Option<u64>,
    /// Legal holds a simulated auditor places and releases.
    pub holds: Vec<Hold>,
}

/// A legal hold of the scenario: placed on every database at `place_ms`
/// (and released at `release_ms`), sent until each database answers.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    pub name: String,
    pub users: Vec<String>,
    /// Message times covered: from (inclusive), until (exclusive).
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub place_ms: u64,
    pub release_ms: Option<u64>,
}

impl Hold {
    /// Whether the hold covers a message between `from` and `to` whose
    /// time is surely within `[earliest, latest]`.
    pub fn covers(&self, from: &str, to: &str, earliest: u64, latest: u64) -> bool {
        self.users.iter().any(|u| u == from || u == to)
            && self.since_ms.is_none_or(|s| earliest >= s)
            && self.until_ms.is_none_or(|u| latest < u)
    }
}

/// A value of the scenario that each seed draws from a range.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    pub target: DrawTarget,
    pub lo: f64,
    pub hi: f64,
    pub label: String,
}

impl Draw {
    /// Adds to `draws` the draw of `target` (called `label`) from `lo..hi`,
    /// when that is a range rather than a single value.
    pub(super) fn add_range(
        draws: &mut Vec<Draw>,
        target: DrawTarget,
        lo: f64,
        hi: f64,
        label: String,
    ) {
        if hi > lo {
            draws.push(Draw {
                target,
                lo,
                hi,
                label,
            });
        }
    }
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
    /// Queue stores commit in groups: a persist is appended at once and
    /// what the core sends after it waits for one sync covering the group
    /// (the production node's policy); off, each persist syncs on its own.
    pub group_commit: bool,
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
    /// A user (not an operator) asks a front end to end its critical-mode
    /// shutdown (`OperatorResume`): must be refused.
    ResumeAsUser,
}

/// Attack names in scenario files.
pub const ATTACKS: &[(&str, Attack)] = &[
    ("oversize", Attack::Oversize),
    ("reuse_id", Attack::ReuseId),
    ("flood", Attack::Flood),
    ("forge_from", Attack::ForgeFrom),
    ("unauthenticated", Attack::Unauthenticated),
    ("resume_as_user", Attack::ResumeAsUser),
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

/// Hostile clients (see `sim/src/workload/hostile.rs`).
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

/// Group chat users posting in rooms (see `sim/src/workload/chat.rs`).
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
    /// A post without an answer by the client's next keep-alive is sent
    /// again under the same id (a client retrying after a timeout).
    pub retry_posts: bool,
    /// Records management an operator does during the run.
    pub records: ChatRecords,
}

/// What an operator does to a chat workload's rooms and posts (times in
/// ms of the run): disable the last room, clear the first (of posts
/// before `clear_before_ms`, if given), replace a post of the first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRecords {
    pub disable_ms: Option<u64>,
    pub clear_ms: Option<u64>,
    pub clear_before_ms: Option<u64>,
    pub replace_ms: Option<u64>,
}

impl ChatRecords {
    pub fn any(&self) -> bool {
        self.disable_ms.is_some() || self.clear_ms.is_some() || self.replace_ms.is_some()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Cut the link between two nodes (one direction with `one_way`).
    Partition { a: String, b: String, one_way: bool },
    /// Kill a node; restart it after the duration (never, if none).
    Crash { node: String },
    /// Delay every message a node processes.
    Slow { node: String, delay_ms: u64 },
    /// The node's cores get no processor for the fault's duration (a
    /// machine whose other processes take both cores, a long pause of
    /// the process): they handle nothing, timers included, while its
    /// connections go on reading into the inbox, and they resume where
    /// they were. Nothing is lost; what a front end admits waits.
    Stall { node: String },
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
            FaultKind::Stall { .. } => "stall",
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
            FaultKind::Stall { node } => format!("stall {node}"),
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
    /// At most this many requests went unanswered (no bound unless set).
    pub unknown_max: Option<u64>,
    /// At least this many IMs were answered busy.
    pub busy_min: Option<u64>,
    /// At most this many IMs were answered busy (a front end below its
    /// capacity has no reason to refuse).
    pub busy_max: Option<u64>,
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
    /// At least this many accepted messages deleted by a retention purge.
    pub purged_min: Option<u64>,
    /// At least this many rows past a purge's cutoff kept by a hold.
    pub held_min: Option<u64>,
    /// At least this many posts sent again for want of an answer.
    pub chat_post_retries_min: Option<u64>,
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

/// Node names generated from the topology: `fe1..`, `arch1..`, `db1..`.
pub fn node_names(prefix: &str, n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i}")).collect()
}

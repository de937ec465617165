//! Scenario files: TOML descriptions of a cluster, its workload, the faults
//! to inject and what must hold afterwards (see `docs/scenarios.md`).
//!
//! Parsing is strict: an unknown key, an unknown node, a bad duration or a
//! negative rate is an error naming the file, the line and the key, never
//! silently ignored.

use holdfast_actors::protocol::RecordKind;
use holdfast_actors::settings::{Sabotage, Settings};
use holdfast_actors::units;
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

pub use holdfast_actors::settings::Semantics;

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
    /// Simulated fsync latency.
    #[serde(default)]
    fsync: Option<Spanned<String>>,
}

impl Default for RawTopology {
    fn default() -> Self {
        RawTopology {
            front_ends: one(),
            archivers: one(),
            databases: one(),
            disk_size: None,
            fsync: None,
        }
    }
}

fn one() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    kind: Spanned<String>,
    users: Spanned<i64>,
    rate: Spanned<f64>,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    lost: Option<u64>,
    lost_min: Option<u64>,
    duplicates: Option<u64>,
    phantoms: Option<u64>,
    accepted_min: Option<u64>,
    rejected_min: Option<u64>,
    pending_min: Option<u64>,
    qoe_dropped_min: Option<u64>,
    drained_by: Option<Spanned<String>>,
    #[serde(default)]
    events_include: Vec<String>,
    #[serde(default)]
    gauge_min: BTreeMap<String, Spanned<u64>>,
    critical_shutdown_within: Option<Spanned<String>>,
    critical_shutdowns: Option<u64>,
    #[serde(default)]
    no_accept_while_shut_down: bool,
    #[serde(default)]
    events_order: Vec<String>,
}

// ----------------------------------------------------------- validated form

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
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
    pub faults: Vec<Fault>,
    pub expect: Expect,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub front_ends: Vec<String>,
    pub archivers: Vec<String>,
    pub databases: Vec<String>,
    pub disk_size: u64,
    pub fsync_ms: u64,
}

impl Topology {
    pub fn servers(&self) -> impl Iterator<Item = &String> {
        self.front_ends
            .iter()
            .chain(&self.archivers)
            .chain(&self.databases)
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
    pub duplicates: Option<u64>,
    pub phantoms: Option<u64>,
    pub accepted_min: Option<u64>,
    pub rejected_min: Option<u64>,
    pub pending_min: Option<u64>,
    pub qoe_dropped_min: Option<u64>,
    pub drained_by_ms: Option<u64>,
    pub events_include: Vec<String>,
    /// `(node, gauge)` → the least maximum the gauge must reach: proof that
    /// a fault had the effect the scenario is about.
    pub gauge_min: Vec<(String, String, u64)>,
    /// Every front end whose archiving path a fault breaks for longer than
    /// this must have stopped accepting IM within it.
    pub critical_shutdown_within_ms: Option<u64>,
    /// Exactly this many critical-mode shutdowns happen.
    pub critical_shutdowns: Option<u64>,
    /// No IM is admitted by a front end while it is shut down.
    pub no_accept_while_shut_down: bool,
    /// These events first happen in this order (each at least once).
    pub events_order: Vec<String>,
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
    fn dur(&self, v: &Spanned<String>, key: &str) -> Result<u64, ScenarioError> {
        units::duration_ms(v.get_ref()).map_err(|m| self.err(&v.span(), key, m))
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
        fsync_ms: match &t.fsync {
            Some(s) => cx.dur(s, "topology.fsync")?,
            None => 1,
        },
    };
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
    for w in &raw.workload {
        let kind = w.kind.get_ref().as_str();
        let record_kind = match kind {
            "im" => RecordKind::Im,
            "cdr" => RecordKind::Cdr,
            "qoe" => RecordKind::Qoe,
            "chat" | "file" => {
                return Err(cx.err(
                    &w.kind.span(),
                    "workload.kind",
                    format!("workload kind {kind:?} is not implemented yet; supported: \"im\", \"cdr\", \"qoe\""),
                ))
            }
            other => {
                return Err(cx.err(
                    &w.kind.span(),
                    "workload.kind",
                    format!("unknown workload kind {other:?}; expected \"im\", \"cdr\" or \"qoe\""),
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
        let users = cx.count(&w.users, "workload.users", 2)?;
        let rate = *w.rate.get_ref();
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
        let start_ms = w
            .start
            .as_ref()
            .map(|s| cx.dur(s, "workload.start"))
            .transpose()?
            .unwrap_or(0);
        let stop_ms = w
            .stop
            .as_ref()
            .map(|s| cx.dur(s, "workload.stop"))
            .transpose()?
            .unwrap_or(duration_ms);
        if stop_ms <= start_ms || stop_ms > duration_ms {
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
        workloads.push(ImWorkload {
            kind: record_kind,
            users,
            rate,
            size,
            start_ms,
            stop_ms,
            archive,
            external,
        });
    }

    let mut faults = Vec::new();
    for f in &raw.fault {
        let start_ms = cx.dur(&f.start, "fault.start")?;
        let fault_duration = f
            .duration
            .as_ref()
            .map(|d| cx.dur(d, "fault.duration"))
            .transpose()?;
        if fault_duration == Some(0) {
            return Err(cx.err(
                &f.duration.as_ref().expect("some").span(),
                "fault.duration",
                "must be longer than 0s (omit it for a fault that lasts until the end)",
            ));
        }
        if start_ms >= duration_ms {
            return Err(cx.err(
                &f.start.span(),
                "fault.start",
                format!("starts after the run ends ({})", units::fmt_ms(duration_ms)),
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
                FaultKind::Slow { node: node("fault.node")?, delay_ms: cx.dur(d, "fault.delay")? }
            }
            "disk_full" => FaultKind::DiskFull { node: node("fault.node")? },
            "io_error" => FaultKind::IoError { node: node("fault.node")? },
            "db_down" => {
                let n = match &f.node {
                    Some(_) => node("fault.node")?,
                    None => topology.databases[0].clone(),
                };
                if !topology.databases.contains(&n) {
                    return Err(cx.err(&f.node.as_ref().expect("some").span(), "fault.node", format!("{n:?} is not a database node")));
                }
                FaultKind::DbDown { node: n }
            }
            other => return Err(cx.err(&f.kind.span(), "fault.kind", format!(
                "unknown fault kind {other:?}; expected partition, crash, slow, disk_full, io_error or db_down"))),
        };
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
    let expect = Expect {
        gauge_min,
        critical_shutdown_within_ms: e
            .critical_shutdown_within
            .as_ref()
            .map(|d| cx.dur(d, "expect.critical_shutdown_within"))
            .transpose()?,
        critical_shutdowns: e.critical_shutdowns,
        no_accept_while_shut_down: e.no_accept_while_shut_down,
        events_order: e.events_order.clone(),
        lost: if e.lost_min.is_some() {
            e.lost
        } else {
            Some(e.lost.unwrap_or(0))
        },
        lost_min: e.lost_min,
        duplicates: Some(e.duplicates.unwrap_or(0)),
        phantoms: Some(e.phantoms.unwrap_or(0)),
        accepted_min: e.accepted_min,
        rejected_min: e.rejected_min,
        pending_min: e.pending_min,
        qoe_dropped_min: e.qoe_dropped_min,
        drained_by_ms: e
            .drained_by
            .as_ref()
            .map(|d| cx.dur(d, "expect.drained_by"))
            .transpose()?,
        events_include: e.events_include.clone(),
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
        workloads,
        faults,
        expect,
    })
}

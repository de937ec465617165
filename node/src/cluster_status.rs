//! The state of every node of a cluster, read from their metrics and
//! readiness endpoints: what `holdfast status` prints and what each node's
//! status page (`/` on its metrics address) shows.

use crate::config::{Config, NodeConfig, Role};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A front end's queue and link, from its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontEndFigures {
    pub depth: u64,
    pub bytes: u64,
    pub quota_percent: u64,
    pub link_failing: bool,
    pub shut_down: bool,
    pub dead_letters: u64,
}

impl FrontEndFigures {
    /// The link's health as `holdfast status` and the status page word it.
    pub fn link(&self) -> &'static str {
        if self.link_failing {
            "FAILING"
        } else {
            "healthy"
        }
    }
}

/// What one node said, or why it said nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The config gives the node no metrics address.
    NoMetricsAddress,
    Unreachable(String),
    Read {
        /// `Err`: why `/readyz` said not ready (its first reason).
        ready: Result<(), String>,
        /// On a front end.
        front_end: Option<FrontEndFigures>,
        /// What the node's roles hold: `(label, value)`.
        holds: Vec<(&'static str, u64)>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    /// Role names, comma-separated.
    pub roles: String,
    pub reading: Reading,
}

impl NodeStatus {
    /// A front end with a failing link or shut down, or a node not ready.
    pub fn not_well(&self) -> bool {
        match &self.reading {
            Reading::Read {
                ready, front_end, ..
            } => {
                ready.is_err()
                    || front_end
                        .as_ref()
                        .is_some_and(|f| f.link_failing || f.shut_down)
            }
            _ => false,
        }
    }

    pub fn unreachable(&self) -> bool {
        matches!(self.reading, Reading::Unreachable(_))
    }
}

/// What each role's line shows: `(metric, label)`.
const HOLDS: &[(Role, &[(&str, &str)])] = &[
    (
        Role::Archiver,
        &[
            ("holdfast_destination_depth", "queued"),
            ("holdfast_parked_records", "parked"),
        ],
    ),
    (
        Role::Database,
        &[("holdfast_archived_rows", "archived rows")],
    ),
    (
        Role::Lookup,
        &[("holdfast_channels_known", "channel servers in rotation")],
    ),
    (
        Role::Channel,
        &[
            ("holdfast_chat_sessions", "sessions"),
            ("holdfast_chat_rooms", "rooms"),
        ],
    ),
    (
        Role::ChatStore,
        &[
            ("holdfast_chat_posts", "posts"),
            ("holdfast_compliance_outbox", "compliance outbox"),
        ],
    ),
    (
        Role::Web,
        &[("holdfast_compliance_outbox", "compliance outbox")],
    ),
    (
        Role::Compliance,
        &[
            ("holdfast_compliance_staged", "staged"),
            ("holdfast_compliance_batches", "last batch"),
            ("holdfast_compliance_awaiting_pickup", "for pickup"),
        ],
    ),
];

/// Reads every node of `config`, front ends first, in config order.
pub fn collect(config: &Config) -> Vec<NodeStatus> {
    let (front_ends, others): (Vec<&NodeConfig>, Vec<&NodeConfig>) =
        config.nodes.iter().partition(|n| n.has(Role::FrontEnd));
    front_ends.into_iter().chain(others).map(read).collect()
}

fn read(n: &NodeConfig) -> NodeStatus {
    let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
    let reading = match n.metrics {
        None => Reading::NoMetricsAddress,
        Some(addr) => match (fetch(addr, "/metrics"), fetch(addr, "/readyz")) {
            (Ok((_, text)), Ok((code, why))) => figures(n, &text, code, &why),
            (Err(e), _) | (_, Err(e)) => Reading::Unreachable(e.to_string()),
        },
    };
    NodeStatus {
        name: n.name.clone(),
        roles: roles.join(","),
        reading,
    }
}

fn figures(n: &NodeConfig, text: &str, ready_code: u16, why: &str) -> Reading {
    let samples = parse(text);
    let get = |name: &str| {
        samples
            .iter()
            .filter(|(s, _, _)| s == name)
            .map(|(_, _, v)| *v as u64)
            .sum::<u64>()
    };
    let front_end = n.has(Role::FrontEnd).then(|| {
        let bytes = get("holdfast_outgoing_bytes");
        FrontEndFigures {
            depth: get("holdfast_outgoing_depth"),
            bytes,
            quota_percent: bytes * 100 / get("holdfast_queue_quota_bytes").max(1),
            link_failing: get("holdfast_link_failing") > 0,
            shut_down: get("holdfast_critical_shutdown") > 0,
            dead_letters: get("holdfast_dead_letter_depth"),
        }
    });
    let mut holds = Vec::new();
    for (role, what) in HOLDS {
        if n.has(*role) {
            for (metric, label) in *what {
                holds.push((*label, get(metric)));
            }
        }
    }
    let ready = if ready_code == 200 {
        Ok(())
    } else {
        Err(why.lines().next().unwrap_or("").trim().to_string())
    };
    Reading::Read {
        ready,
        front_end,
        holds,
    }
}

/// Why a node's endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The answer's body could not be read.
    #[error(transparent)]
    Body(#[from] std::io::Error),
    #[error("connection refused: {0}")]
    Refused(SocketAddr),
    #[error(transparent)]
    Other(Box<ureq::Error>),
}

/// `GET http://addr{path}`: the status code and body (a 503 is an answer).
fn fetch(addr: SocketAddr, path: &str) -> Result<(u16, String), FetchError> {
    let call = ureq::get(&format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(3))
        .call();
    match call {
        Ok(r) => Ok((r.status(), r.into_string()?)),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        // Name the address that refused, not ureq's chain of causes.
        Err(ureq::Error::Transport(t))
            if t.to_string().to_lowercase().contains("connection refused") =>
        {
            Err(FetchError::Refused(addr))
        }
        Err(e) => Err(FetchError::Other(Box::new(e))),
    }
}

/// One sample parsed back from the text format: `(name, labels, value)`.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format (the subset
/// the metrics endpoint writes): comment lines skipped, `name{k="v",…} value`.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                map.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        out.push((name.to_string(), map, value));
    }
    out
}

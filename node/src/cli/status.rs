//! `holdfast status`: per front end, queue depth, quota use, link health
//! and critical mode; then every other node with its readiness and what
//! its role holds (an archiving server's queue and parked records, the
//! archive's rows, the chat pool's sessions and posts, the compliance
//! staging).

use super::common::Failure;
use holdfast::config::{Config, Role};
use std::time::Duration;

pub(crate) fn run(config: &Config) -> Result<(), Failure> {
    println!(
        "{:<10} {:>8} {:>12} {:>7} {:<10} {:<10} {:>10}",
        "front end", "depth", "bytes", "quota%", "link", "critical", "dead-letter"
    );
    let mut unreachable = 0;
    let mut not_well = 0;
    for fe in config.front_ends() {
        let Some(addr) = fe.metrics else {
            println!("{:<10} (no metrics address in the config)", fe.name);
            continue;
        };
        let text = match ureq::get(&format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(3))
            .call()
        {
            Ok(r) => r.into_string().map_err(|e| e.to_string())?,
            Err(e) => {
                println!("{:<10} unreachable ({e})", fe.name);
                unreachable += 1;
                continue;
            }
        };
        let samples = holdfast::metrics::parse(&text);
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v as u64)
        };
        let bytes = get("holdfast_outgoing_bytes").unwrap_or(0);
        let quota = get("holdfast_queue_quota_bytes").unwrap_or(0).max(1);
        if get("holdfast_link_failing") == Some(1) || get("holdfast_critical_shutdown") == Some(1) {
            not_well += 1;
        }
        println!(
            "{:<10} {:>8} {:>12} {:>6}% {:<10} {:<10} {:>10}",
            fe.name,
            get("holdfast_outgoing_depth").unwrap_or(0),
            bytes,
            bytes * 100 / quota,
            if get("holdfast_link_failing") == Some(1) {
                "FAILING"
            } else {
                "healthy"
            },
            if get("holdfast_critical_shutdown") == Some(1) {
                "SHUT DOWN"
            } else {
                "accepting"
            },
            get("holdfast_dead_letter_depth").unwrap_or(0),
        );
    }
    let others: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| !n.has(Role::FrontEnd))
        .collect();
    if !others.is_empty() {
        println!();
        println!("{:<10} {:<12} {:<9} holds", "node", "roles", "ready");
    }
    for n in others {
        let roles: Vec<&str> = n.roles.iter().map(|r| r.as_str()).collect();
        let roles = roles.join(",");
        let Some(addr) = n.metrics else {
            println!(
                "{:<10} {roles:<12} (no metrics address in the config)",
                n.name
            );
            continue;
        };
        let (text, ready) = match (fetch(addr, "/metrics"), fetch(addr, "/readyz")) {
            (Ok((_, text)), Ok((code, why))) => (text, (code == 200).then_some(()).ok_or(why)),
            (Err(e), _) | (_, Err(e)) => {
                println!("{:<10} {roles:<12} unreachable ({e})", n.name);
                unreachable += 1;
                continue;
            }
        };
        let samples = holdfast::metrics::parse(&text);
        let get = |name: &str| {
            samples
                .iter()
                .filter(|(s, _, _)| s == name)
                .map(|(_, _, v)| *v as u64)
                .sum::<u64>()
        };
        let mut holds = Vec::new();
        for (role, what) in HOLDS {
            if n.has(*role) {
                for (metric, label) in *what {
                    holds.push(format!("{label} {}", get(metric)));
                }
            }
        }
        let ready = match ready {
            Ok(()) => "ready".to_string(),
            Err(why) => {
                not_well += 1;
                format!("NOT READY: {}", why.lines().next().unwrap_or("").trim())
            }
        };
        println!("{:<10} {roles:<12} {ready:<9} {}", n.name, holds.join(", "));
    }
    if unreachable > 0 {
        return Err(Failure::Error(format!("{unreachable} nodes unreachable")));
    }
    if not_well > 0 {
        return Err(Failure::NotWell(format!(
            "{not_well} nodes not well (a front end with a failing link or shut down, or a node not ready)"
        )));
    }
    Ok(())
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
        ],
    ),
];

/// `GET http://addr{path}`: the status code and body (a 503 is an answer).
fn fetch(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    let call = ureq::get(&format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(3))
        .call();
    match call {
        Ok(r) => Ok((r.status(), r.into_string().map_err(|e| e.to_string())?)),
        Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

//! `holdfast status`: per front end, queue depth, quota use, link health
//! and critical mode; then every other node with its readiness and what
//! its role holds (an archiving server's queue and parked records, the
//! archive's rows, the chat pool's sessions and posts, the compliance
//! staging).

use super::common::Failure;
use holdfast::cluster_status::{collect, Reading};
use holdfast::config::Config;
use holdfast::reach::CannotReach;

pub(crate) fn run(config: &Config) -> Result<(), Failure> {
    let nodes = collect(config);
    println!(
        "{:<10} {:>8} {:>12} {:>7} {:<10} {:<10} {:>10}",
        "front end", "depth", "bytes", "quota%", "link", "critical", "dead-letter"
    );
    let mut others_header = false;
    for n in &nodes {
        let fe = match &n.reading {
            Reading::Read {
                front_end: Some(fe),
                ..
            } => Some(fe),
            _ => None,
        };
        if fe.is_none() && !n.roles.contains("front_end") && !others_header {
            println!();
            println!("{:<10} {:<12} {:<9} holds", "node", "roles", "ready");
            others_header = true;
        }
        let name = &n.name;
        match (&n.reading, fe) {
            (Reading::NoMetricsAddress, _) => {
                println!("{name:<10} (no metrics address in the config)")
            }
            (Reading::Unreachable(e), _) => println!("{name:<10} unreachable ({e})"),
            (_, Some(fe)) => println!(
                "{name:<10} {:>8} {:>12} {:>6}% {:<10} {:<10} {:>10}",
                fe.depth,
                fe.bytes,
                fe.quota_percent,
                fe.link(),
                if fe.shut_down {
                    "SHUT DOWN"
                } else {
                    "accepting"
                },
                fe.dead_letters,
            ),
            (Reading::Read { ready, holds, .. }, None) => {
                let ready = match ready {
                    Ok(()) => "ready".to_string(),
                    Err(why) => format!("NOT READY: {why}"),
                };
                let holds: Vec<String> = holds.iter().map(|(l, v)| format!("{l} {v}")).collect();
                println!("{name:<10} {:<12} {ready:<9} {}", n.roles, holds.join(", "));
            }
        }
    }
    let unreachable = nodes.iter().filter(|n| n.unreachable()).count();
    let not_well = nodes.iter().filter(|n| n.not_well()).count();
    // No node could be read: the cluster cannot be reached (exit 3). Some
    // could: the cluster answered, and a node of it that cannot be
    // reached is a cluster not well (exit 1), as a failing one is.
    if unreachable > 0 && unreachable == nodes.len() {
        return Err(Failure::Unreachable(CannotReach::Nodes(format!(
            "none of the {unreachable} nodes could be reached"
        ))));
    }
    let mut why = Vec::new();
    if unreachable > 0 {
        why.push(format!("{unreachable} nodes unreachable"));
    }
    if not_well > 0 {
        why.push(format!(
            "{not_well} nodes not well (a front end with a failing link or shut down, or a node not ready)"
        ));
    }
    if !why.is_empty() {
        return Err(Failure::NotWell(why.join("; ")));
    }
    Ok(())
}

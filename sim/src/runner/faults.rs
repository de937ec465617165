//! Injecting the scenario's faults on schedule: a task per fault turns
//! its effects on at its start and off at its end, counting overlapping
//! faults so that the end of one does not undo another.

use super::boot::Started;
use super::nodes::{Effect, Nodes};
use crate::lock;
use crate::scenario::{FaultKind, Scenario};
use crate::seeds::{self, Purpose};
use madsim::net::NetSim;
use madsim::runtime::Handle;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Starts the fault tasks (and TCP's retransmission timeouts, which the
/// faults' cut links set off); each must be aborted at the end of the run.
pub(super) fn start(scn: &Scenario, run: &Started, seed: u64) -> Vec<JoinHandle<()>> {
    let epoch = run.epoch;
    // TCP aborts connections that stay cut off for a quarter of an hour.
    let mut fault_tasks = vec![tokio::spawn(run.link.clone().retransmission_timeouts())];
    for (fi, fault) in scn.faults.clone().into_iter().enumerate() {
        let nodes = run.nodes.clone();
        let trace = run.trace.clone();
        fault_tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(epoch + Duration::from_millis(fault.start_ms)).await;
            lock(&trace).record(
                fault.start_ms,
                "nemesis",
                &format!("begin {}", fault.describe()),
                &(),
            );
            apply(&nodes, &fault.kind, true);
            if let FaultKind::Corrupt { node, bytes, file } = &fault.kind {
                // Drawn from the run's seed and the fault's place in the
                // file: the same bytes flip on every replay.
                let mut rng = seeds::stream(seed, Purpose::Corrupt, fi, 0);
                let what = nodes.shared[node].disk.corrupt(
                    *bytes,
                    file.as_deref().map(|f| format!("{f}.log")).as_deref(),
                    &mut rng,
                );
                lock(&trace).record(fault.start_ms, "nemesis", &what, &());
            }
            if let Some(d) = fault.duration_ms {
                tokio::time::sleep(Duration::from_millis(d)).await;
                lock(&trace).record(
                    fault.start_ms + d,
                    "nemesis",
                    &format!("end {}", fault.describe()),
                    &(),
                );
                apply(&nodes, &fault.kind, false);
            }
        }));
    }
    fault_tasks
}

fn effects(kind: &FaultKind) -> Vec<(Effect, u64)> {
    match kind {
        FaultKind::Partition { a, b, one_way } => {
            let mut v = vec![(Effect::Clog(a.clone(), b.clone()), 0)];
            if !one_way {
                v.push((Effect::Clog(b.clone(), a.clone()), 0));
            }
            v
        }
        FaultKind::Crash { node }
        | FaultKind::DbDown { node }
        | FaultKind::Corrupt { node, .. } => {
            vec![(Effect::Down(node.clone()), 0)]
        }
        FaultKind::Slow { node, delay_ms } => vec![(Effect::Slow(node.clone()), *delay_ms)],
        FaultKind::Stall { node } => vec![(Effect::Stall(node.clone()), 0)],
        FaultKind::DiskFull { node } => vec![(Effect::Full(node.clone()), 0)],
        FaultKind::IoError { node } => vec![(Effect::Eio(node.clone()), 0)],
        FaultKind::DbRefuses { node, one_in } => vec![(Effect::Refuse(node.clone()), *one_in)],
    }
}

fn apply(nodes: &Nodes, kind: &FaultKind, on: bool) {
    let handle = Handle::current();
    let net = NetSim::current();
    for (effect, value) in effects(kind) {
        // The values of every active fault with this effect.
        let remaining = {
            let mut active = lock(&nodes.active);
            let list = active.entry(effect.clone()).or_default();
            if on {
                list.push(value);
                if list.len() > 1 && !matches!(effect, Effect::Slow(_) | Effect::Refuse(_)) {
                    continue; // already in force
                }
            } else {
                if let Some(i) = list.iter().position(|v| *v == value) {
                    list.remove(i);
                }
                if !list.is_empty() && !matches!(effect, Effect::Slow(_) | Effect::Refuse(_)) {
                    continue; // another fault keeps it in force
                }
            }
            list.clone()
        };
        match &effect {
            Effect::Clog(a, b) => {
                let (ip_a, ip_b) = (nodes.ips[a], nodes.ips[b]);
                let (a, b) = (nodes.ids[a], nodes.ids[b]);
                if on {
                    net.clog_link(a, b);
                    nodes.link.cut(ip_a, ip_b);
                } else {
                    net.unclog_link(a, b);
                    nodes.link.heal(ip_a, ip_b);
                }
            }
            Effect::Down(node) => {
                if on {
                    handle.kill(nodes.ids[node]);
                    nodes.shared[node].disk.crash();
                } else {
                    handle.restart(nodes.ids[node]);
                }
            }
            Effect::Slow(node) => {
                let delay = remaining.iter().copied().max().unwrap_or(0);
                lock(&nodes.shared[node].control).slow = Duration::from_millis(delay);
            }
            Effect::Refuse(node) => {
                // The most refusing of the faults in force (0: none).
                let one_in = remaining.iter().copied().min().unwrap_or(0);
                lock(&nodes.shared[node].control).refuse_one_in = one_in;
            }
            Effect::Stall(node) => lock(&nodes.shared[node].control).set_stalled(on),
            Effect::Full(node) => nodes.shared[node].disk.set_full(on),
            Effect::Eio(node) => nodes.shared[node].disk.set_io_error(on),
        }
    }
}

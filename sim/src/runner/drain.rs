//! The end of a run: the faults stop at the deadline, and once the outcome
//! is read every simulated task is ended.

use super::nodes::Nodes;
use crate::workload::auditor::AUDITOR_NODE;
use crate::workload::chat::CHAT_CLIENT_NODE;
use crate::workload::im::CLIENT_NODE;
use crate::workload::pickup::PICKUP_NODE;
use madsim::runtime::Handle;
use madsim::task::NodeId;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Lets the run go on to its end, then stops the faults.
pub(super) async fn run_to_end(epoch: Instant, duration_ms: u64, fault_tasks: &[JoinHandle<()>]) {
    tokio::time::sleep_until(epoch + Duration::from_millis(duration_ms)).await;
    // A fault still pending must not restart a node after the run (nor
    // the retransmission check tick through the teardown's year).
    for t in fault_tasks {
        t.abort();
    }
}

/// Ends every simulated task, so that the run's memory is freed.
///
/// madsim's runtime has no drop that cancels the tasks still pending at
/// the end of a run: a task waiting on a timer is owned by the timer heap,
/// which its sleep keeps alive, so each run of a sweep kept its nodes, its
/// disks and its queues (tens of MB) until the process ran out of memory.
/// Killing every node and letting simulated time run past every pending
/// timer wakes each task once more, and a killed node's task is dropped
/// instead of polled. Runs after the outcome is read: nothing here reaches
/// the result or the trace. Returns the tasks still alive on the
/// simulated nodes (none, unless something escaped the teardown).
pub(super) async fn tear_down(nodes: &Nodes, clients: &[NodeId]) -> usize {
    let handle = Handle::current();
    for id in nodes.ids.values().chain(clients) {
        handle.kill(*id);
    }
    // Longer than any timer a core can set (the longest setting is 30 days).
    tokio::time::sleep(Duration::from_secs(366 * 24 * 3600)).await;
    let names: BTreeSet<String> = nodes
        .ids
        .keys()
        .cloned()
        .chain([
            CLIENT_NODE.to_string(),
            CHAT_CLIENT_NODE.to_string(),
            PICKUP_NODE.to_string(),
            AUDITOR_NODE.to_string(),
        ])
        .collect();
    handle
        .metrics()
        .num_tasks_by_node()
        .into_iter()
        .filter(|(node, _)| names.contains(node))
        .map(|(_, n)| n)
        .sum()
}

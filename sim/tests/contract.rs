//! The host contract on the simulated node: the contract suite's probe
//! cores (`holdfast_actors::contract`) run in a madsim node over the
//! simulated disk — each fsync 20 ms, so that a timer set after a write
//! shows whether it runs from the reaction or from the write — are killed
//! with the node (unsynced writes lost) and restarted from the disk, and
//! what they saw must keep every guarantee of the reactor. The production
//! node and the test kit run the same script and check.
#![cfg(madsim)]

use holdfast_actors::core::contract::{check, Probes, Seen, Slack, PROBE_FILE, PROBE_GONE};
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::settings::{Sabotage, Settings};
use holdfast_sim::host::disk::SimDisk;
use holdfast_sim::host::node::{run_node, Control, NodeShared, NodeSpec, OUTPUT_DIR};
use holdfast_sim::host::tcp_flow::FlowLink;
use holdfast_sim::trace::Trace;
use madsim::runtime::{Handle, Runtime};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs the script on a simulated front-end node; what the probes saw and
/// the file they wrote.
fn run(group_commit: bool) -> (Vec<Seen>, Vec<u8>) {
    let rt = Runtime::with_seed_and_config(7, madsim::Config::default());
    rt.block_on(async move {
        let handle = Handle::current();
        let probes = Arc::new(Probes::new("fe1", false));
        let spec = Arc::new(NodeSpec {
            name: "fe1".into(),
            roles: vec![ActorKind::FrontEnd, ActorKind::OutgoingQueue],
            addr: "10.0.0.1:7000".parse().unwrap(),
            peers: BTreeMap::new(),
            settings: Settings::default(),
            sabotage: Sabotage::default(),
            seed: 7,
            cores: probes.clone(),
            link: FlowLink::new(),
            group_commit,
        });
        let shared = NodeShared {
            disk: SimDisk::new(1 << 30, Duration::from_millis(20)),
            control: Arc::new(Mutex::new(Control::default())),
            trace: Arc::new(Mutex::new(Trace::new(false))),
            events: Arc::default(),
            gauges: Arc::default(),
            series: None,
            epoch: tokio::time::Instant::now(),
            incarnation: Arc::default(),
        };
        let s = shared.clone();
        let node = handle
            .create_node()
            .name("fe1")
            .ip("10.0.0.1".parse().unwrap())
            .init(move || run_node(spec.clone(), s.clone()))
            .build();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A crash: the process is killed and what was not synced is gone.
        handle.kill(node.id());
        shared.disk.crash();
        handle.restart(node.id());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let file = shared.disk.durable(&format!("{OUTPUT_DIR}{PROBE_FILE}"));
        let gone = format!("{OUTPUT_DIR}{PROBE_GONE}");
        assert!(
            !shared.disk.file_names().contains(&gone),
            "a removed file is gone"
        );
        handle.kill(node.id());
        (probes.seen(), file)
    })
}

/// Without group commit each persist waits for its 20 ms fsync (a timer
/// set after one shows where it runs from); with it, the persist is
/// appended at once and the messages after it wait for the sync.
#[test]
fn the_simulated_node_keeps_the_contract() {
    for group_commit in [false, true] {
        let (seen, file) = run(group_commit);
        let broken = check(&seen, Slack(0));
        assert!(
            broken.is_empty(),
            "group_commit = {group_commit}: {broken:#?}\nsaw: {seen:#?}"
        );
        assert_eq!(file, b"probe");
    }
}

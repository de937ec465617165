//! The host contract on the production node: the contract suite's probe
//! cores (`holdfast_actors::contract`) run on real arbiters, a real data
//! folder with group commit and a real clock, are restarted by a core's
//! panic as a crashed node would be, and what they saw must keep every
//! guarantee of the reactor. The simulated node and the test kit run the
//! same script and check.

use holdfast::cluster_up::loopback_config;
use holdfast::config::Config;
use holdfast::node::{open_stores, start_cores};
use holdfast_actors::core::contract::{check, Probes, Slack, PROBE_FILE, PROBE_GONE};
use holdfast_host::transport::{Network, PlainLink};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How late the production host may fire a timer: its clock and its
/// scheduler are real, and the test shares two cores with others.
const SLACK: Slack = Slack(1_000);

#[test]
fn the_production_node_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let text = loopback_config("plain", "");
    let mut config = Config::parse(&text, &dir.path().join("cluster.toml"), dir.path()).unwrap();
    let out = dir.path().join("out");
    config.compliance_output = Some(out.clone());
    let node = config.node("fe1").cloned().unwrap();
    std::fs::create_dir_all(&node.data).unwrap();
    let probes = Arc::new(Probes::new("fe1", true));
    let stores = open_stores(&node).unwrap();
    let system = actix::System::new();
    let seen = system.block_on({
        let probes = probes.clone();
        async move {
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let net = Network::with_link(
                node.name.clone(),
                config.addresses(),
                tx,
                Arc::new(PlainLink),
                64,
            );
            let _running = start_cores(Arc::new(config), node, net, probes.clone(), stores);
            // The script takes about 80 ms, the restart after the probe's
            // panic about 100 ms more; wait until the second life started.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let starts = probes
                    .seen()
                    .iter()
                    .filter(|s| {
                        matches!(
                            s,
                            holdfast_actors::core::contract::Seen::Started { driver: true, .. }
                        )
                    })
                    .count();
                if starts >= 2 || std::time::Instant::now() > deadline {
                    break;
                }
            }
            // Anything late (a second restart, a timer firing twice).
            tokio::time::sleep(Duration::from_millis(300)).await;
            probes.seen()
        }
    });
    let broken = check(&seen, SLACK);
    assert!(broken.is_empty(), "{broken:#?}\nsaw: {seen:#?}");
    assert_file(&out.join(PROBE_FILE));
    assert!(!out.join(PROBE_GONE).exists(), "a removed file is gone");
}

fn assert_file(path: &Path) {
    assert_eq!(
        std::fs::read(path).unwrap_or_default(),
        b"probe",
        "{} holds what the probe output",
        path.display()
    );
}

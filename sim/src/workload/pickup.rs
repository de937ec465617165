//! The compliance pickup system (`[compliance] pickup`): every period it
//! reads the Compliance service's output folder, copies each complete
//! batch (its manifest, its events file and every uploaded file the
//! manifest lists as present, each matching its SHA-256) and acknowledges
//! it with `ComplianceAck`, as an operator; unconfirmed acknowledgements
//! are sent again the next period. What it copied and which
//! acknowledgements the service confirmed go to the compliance checker.

use crate::host::disk::SimDisk;
use crate::host::node::OUTPUT_DIR;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
use holdfast_actors::compliance::export::{manifest_name, sha256_hex, Manifest};
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::compliance::ComplianceMsg;
use holdfast_actors::core::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, DEFAULT_OUTBOUND_CAPACITY};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The simulated node the pickup system runs on.
pub const PICKUP_NODE: &str = "pickup";

pub struct PickupSpec {
    pub compliance: String,
    pub addr: SocketAddr,
    /// The Compliance node's disk, whose `out/` is the output folder.
    pub disk: SimDisk,
    pub period_ms: u64,
    pub epoch: Instant,
    pub link: Arc<FlowLink>,
}

#[derive(Default)]
pub struct PickupLog {
    /// Every file copied out of the folder: name → content.
    pub picked: BTreeMap<String, Vec<u8>>,
    /// Batches copied.
    pub batches: BTreeSet<u64>,
    /// Batches whose acknowledgement the service confirmed.
    pub acked: BTreeSet<u64>,
    /// Batches acknowledged at least once (confirmed or not).
    pub sent: BTreeSet<u64>,
}

pub type SharedPickupLog = Arc<Mutex<PickupLog>>;

/// Batch `m`'s files as the folder holds them, if all are there and match
/// the manifest.
fn complete(disk: &SimDisk, names: &BTreeSet<String>, m: &Manifest) -> Option<Vec<String>> {
    let mut want: Vec<(String, String)> = vec![(m.file.clone(), m.sha256.clone())];
    for u in m.uploads.iter().filter(|u| !u.missing) {
        want.push((u.name.clone(), u.sha256.clone()));
    }
    let mut got = Vec::new();
    for (name, sha) in want {
        let path = format!("{OUTPUT_DIR}{name}");
        if !names.contains(&path) || sha256_hex(&disk.durable(&path)) != sha {
            return None;
        }
        got.push(name);
    }
    Some(got)
}

pub async fn run_pickup(spec: Arc<PickupSpec>, log: SharedPickupLog) {
    let me = Principal::new("pickup@corp.example".to_string(), Role::Operator).client_name("pk1");
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let net = Network::with_link(
        me.clone(),
        [(spec.compliance.clone(), spec.addr)].into_iter().collect(),
        tx,
        spec.link.clone(),
        DEFAULT_OUTBOUND_CAPACITY,
    );
    let period = Duration::from_millis(spec.period_ms);
    let mut next = spec.epoch + period;
    loop {
        tokio::select! {
            biased;
            env = rx.recv() => {
                let Some(env) = env else { return };
                net.consumed(&env);
                if let Msg::Compliance(ComplianceMsg::ComplianceReport(s)) = env.msg {
                    let mut l = lock(&log);
                    let confirmed: Vec<u64> = l
                        .batches
                        .iter()
                        .copied()
                        .filter(|b| *b <= s.last_batch && !s.awaiting_pickup.contains(b))
                        .collect();
                    l.acked.extend(confirmed);
                }
            }
            _ = tokio::time::sleep_until(next) => {
                next += period;
                let names: BTreeSet<String> = spec
                    .disk
                    .file_names()
                    .into_iter()
                    .filter(|n| n.starts_with(OUTPUT_DIR))
                    .collect();
                let mut l = lock(&log);
                for path in &names {
                    let Some(name) = path.strip_prefix(OUTPUT_DIR) else { continue };
                    if !name.ends_with(".manifest.json") {
                        continue;
                    }
                    let data = spec.disk.durable(path);
                    let Ok(m) = serde_json::from_slice::<Manifest>(&data) else { continue };
                    if l.batches.contains(&m.batch) || manifest_name(m.batch) != name {
                        continue;
                    }
                    if let Some(files) = complete(&spec.disk, &names, &m) {
                        for f in files {
                            let content = spec.disk.durable(&format!("{OUTPUT_DIR}{f}"));
                            l.picked.insert(f, content);
                        }
                        l.picked.insert(name.to_string(), data);
                        l.batches.insert(m.batch);
                    }
                }
                let unconfirmed: Vec<u64> = l.batches.difference(&l.acked).copied().collect();
                l.sent.extend(unconfirmed.iter().copied());
                drop(l);
                for batch in unconfirmed {
                    let env = Envelope {
                        from: Addr::new(me.clone(), ActorKind::Client),
                        to: Addr::new(spec.compliance.clone(), ActorKind::Compliance),
                        id: 0,
                        msg: Msg::Compliance(ComplianceMsg::ComplianceAck { batch }),
                    };
                    if let Err(e) = net.send(env) {
                        tracing::debug!(error = %e, "pickup could not send");
                    }
                }
            }
        }
    }
}

//! Per-node metrics, served at `/metrics` in the Prometheus text format.
//!
//! The cores' own gauges (queue depth, bytes held, link health, critical
//! state, archived rows, …) are sampled every second; operator events are
//! counted by their stable name; the host adds fsyncs, actor restarts,
//! store errors and the transport's dropped and refused counts.
//! `holdfast status` reads the same endpoint.

use crate::config::NodeConfig;
use crate::lock;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::operator::{Gauge as CoreGauge, OperatorEvent};
use holdfast_actors::core::settings::Settings;
use holdfast_host::transport::Network;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub struct Metrics {
    node: String,
    queue_quota: u64,
    net: Arc<Network>,
    gauges: Mutex<BTreeMap<(ActorKind, CoreGauge), u64>>,
    events: Mutex<BTreeMap<OperatorEvent, u64>>,
    fsyncs: AtomicU64,
    restarts: AtomicU64,
    store_errors: AtomicU64,
}

type Labels = Vec<(String, String)>;

impl Metrics {
    pub fn new(node: &NodeConfig, settings: &Settings, net: Arc<Network>) -> Metrics {
        Metrics {
            node: node.name.clone(),
            queue_quota: settings.queue_quota,
            net,
            gauges: Mutex::new(BTreeMap::new()),
            events: Mutex::new(BTreeMap::new()),
            fsyncs: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
        }
    }

    pub fn set_gauges(&self, actor: ActorKind, values: Vec<(CoreGauge, u64)>) {
        let mut g = lock(&self.gauges);
        for (gauge, v) in values {
            g.insert((actor, gauge), v);
        }
    }

    pub fn count_event(&self, kind: OperatorEvent) {
        *lock(&self.events).entry(kind).or_insert(0) += 1;
    }
    pub fn count_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    pub fn count_store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of this node.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_labels(
            [(Cow::Borrowed("node"), Cow::Owned(self.node.clone()))].into_iter(),
        );
        let gauges = lock(&self.gauges).clone();
        let mut by_name: BTreeMap<&'static str, Vec<(ActorKind, u64)>> = BTreeMap::new();
        for ((actor, gauge), v) in gauges {
            by_name.entry(gauge.name()).or_default().push((actor, v));
        }
        for (name, values) in by_name {
            let fam = Family::<Labels, Gauge>::default();
            for (actor, v) in values {
                fam.get_or_create(&vec![("actor".into(), actor.as_str().into())])
                    .set(v as i64);
            }
            registry.register(
                format!("holdfast_{name}"),
                format!("{name} as reported by the actor core"),
                fam,
            );
        }
        let quota = Gauge::<i64>::default();
        quota.set(self.queue_quota as i64);
        registry.register(
            "holdfast_queue_quota_bytes",
            "quota of a front end's outgoing queue",
            quota,
        );
        let events = Family::<Labels, Counter>::default();
        // By stable name, as before the events were typed.
        let counts: BTreeMap<&'static str, u64> = lock(&self.events)
            .iter()
            .map(|(kind, n)| (kind.name(), *n))
            .collect();
        for (name, n) in counts {
            events
                .get_or_create(&vec![("event".into(), name.into())])
                .inc_by(n);
        }
        registry.register(
            "holdfast_operator_events",
            "operator events by stable name",
            events,
        );
        for (name, help, value) in [
            ("holdfast_fsyncs", "group-commit fsyncs", &self.fsyncs),
            (
                "holdfast_actor_restarts",
                "actors restarted from disk",
                &self.restarts,
            ),
            (
                "holdfast_store_errors",
                "failed persists reported to a core",
                &self.store_errors,
            ),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(value.load(Ordering::Relaxed));
            registry.register(name, help, c);
        }
        for (name, help, v) in [
            (
                "holdfast_frames_dropped",
                "envelopes dropped at a full outbound queue",
                self.net.dropped(),
            ),
            (
                "holdfast_connections_refused",
                "inbound connections refused (handshake, frame, identity)",
                self.net.refused(),
            ),
        ] {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            registry.register(name, help, c);
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` from a background thread.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    let header = tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    )
                    .expect("static header");
                    tiny_http::Response::from_string(metrics.render()).with_header(header)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                if let Err(e) = req.respond(resp) {
                    tracing::debug!(error = %e, "metrics response failed");
                }
            }
        })?;
    Ok(())
}

/// One sample parsed back from the text format: `(name, labels, value)`.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format (the subset [`Metrics::render`]
/// writes): comment lines skipped, `name{k="v",…} value`.
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

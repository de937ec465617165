//! Per-node metrics, served at `/metrics` in the OpenMetrics text format
//! (which Prometheus reads), with `/healthz` and `/readyz` beside them.
//!
//! The cores' own values (queue depth, bytes held, link health, critical
//! state, archived rows, …) are sampled every second: levels as gauges,
//! counts of things done (resends, duplicates dropped, …) as counters
//! (`…_total`). Operator events are counted by their stable name; answers
//! to IM submissions by outcome and reason; the host adds fsyncs, actor
//! restarts, store errors and the transport's dropped and refused counts.
//! `holdfast status` reads the same endpoint.

use crate::config::{Config, NodeConfig};
use crate::lock;
use holdfast_actors::core::ids::{ActorKind, BatchId};
use holdfast_actors::core::operator::{Gauge as CoreGauge, OperatorEvent};
use holdfast_actors::core::protocol::{ArchivingMsg, Msg};
use holdfast_actors::core::settings::Settings;
use holdfast_host::transport::Network;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub struct Metrics {
    node: String,
    queue_quota: u64,
    net: Arc<Network>,
    gauges: Mutex<BTreeMap<(ActorKind, CoreGauge), u64>>,
    events: Mutex<BTreeMap<OperatorEvent, u64>>,
    fsyncs: AtomicU64,
    restarts: AtomicU64,
    store_errors: AtomicU64,
    /// Answers to IM submissions: (outcome, reason) → count.
    answers: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The node's actors, and those whose core has started on an open
    /// store (readiness).
    actors: Vec<ActorKind>,
    started: Mutex<BTreeSet<ActorKind>>,
    /// The server peers this node's role cannot work without: a front
    /// end's archiving server, an archiving server's database.
    needs: Vec<String>,
    /// IMs submitted and not yet answered: (client, id) → when.
    submitted: Mutex<BTreeMap<(String, String), Instant>>,
    /// Database batches sent and not yet answered: batch → when.
    batches: Mutex<BTreeMap<BatchId, Instant>>,
    accept_seconds: Histogram,
    batch_seconds: Histogram,
    batch_records: Histogram,
}

/// Requests timed at once, at most: past it (an overload, a database that
/// stopped answering) the oldest are forgotten rather than memory grown.
const TIMED_MAX: usize = 100_000;

/// Seconds from 0.5 ms to about 16 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

type Labels = Vec<(String, String)>;

impl Metrics {
    /// `needs`: the peers the node must reach to be ready
    /// ([`crate::config::Config::ready_peers`]).
    pub fn new(
        node: &NodeConfig,
        settings: &Settings,
        net: Arc<Network>,
        needs: Vec<String>,
    ) -> Metrics {
        Metrics {
            node: node.name.clone(),
            queue_quota: settings.queue_quota,
            net,
            gauges: Mutex::new(BTreeMap::new()),
            events: Mutex::new(BTreeMap::new()),
            fsyncs: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            answers: Mutex::new(BTreeMap::new()),
            actors: node.actors(),
            started: Mutex::new(BTreeSet::new()),
            needs,
            submitted: Mutex::new(BTreeMap::new()),
            batches: Mutex::new(BTreeMap::new()),
            accept_seconds: seconds_histogram(),
            batch_seconds: seconds_histogram(),
            batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
        }
    }

    /// A front end received an IM from `client`: its answer is timed.
    pub fn im_submitted(&self, client: &str, id: &str) {
        let mut s = lock(&self.submitted);
        if s.len() >= TIMED_MAX {
            s.pop_first();
        }
        s.insert((client.to_string(), id.to_string()), Instant::now());
    }

    /// An archiver sent the database a batch of `records`.
    pub fn batch_sent(&self, batch: BatchId, records: usize) {
        self.batch_records.observe(records as f64);
        let mut b = lock(&self.batches);
        if b.len() >= TIMED_MAX {
            b.pop_first();
        }
        b.insert(batch, Instant::now());
    }

    /// The database answered a batch (done or failed).
    pub fn batch_answered(&self, batch: BatchId) {
        if let Some(at) = lock(&self.batches).remove(&batch) {
            self.batch_seconds.observe(at.elapsed().as_secs_f64());
        }
    }

    /// A core started on its open store (`true`), or is restarting.
    pub fn set_started(&self, actor: ActorKind, started: bool) {
        let mut s = lock(&self.started);
        if started {
            s.insert(actor);
        } else {
            s.remove(&actor);
        }
    }

    /// Counts a front end's answer to an IM submission (other messages
    /// are not answers and are not counted).
    pub fn count_answer(&self, client: &str, msg: &Msg) {
        let (key, id) = match msg {
            Msg::Archiving(ArchivingMsg::ImAccepted { id, .. }) => (("accepted", ""), id),
            Msg::Archiving(ArchivingMsg::ImDeliveredNotArchived { id, .. }) => {
                (("delivered_not_archived", ""), id)
            }
            Msg::Archiving(ArchivingMsg::ImRejected { reason, id }) => {
                (("rejected", reason.label()), id)
            }
            _ => return,
        };
        *lock(&self.answers).entry(key).or_insert(0) += 1;
        let key = (client.to_string(), id.to_string());
        if let Some(at) = lock(&self.submitted).remove(&key) {
            self.accept_seconds.observe(at.elapsed().as_secs_f64());
        }
    }

    /// Whether every core of the node has started on its store.
    pub fn all_started(&self) -> bool {
        let started = lock(&self.started);
        self.actors.iter().all(|a| started.contains(a))
    }

    /// Why the node should not take traffic now, if it should not: a core
    /// not started on its store (opening, or restarting after a crash), a
    /// peer the role needs that the last connection attempt could not
    /// reach (a front end's archiving server, an archiving server's
    /// database), or — on a front end — archiving that cannot be
    /// guaranteed (its link's heartbeats failing, or critical mode
    /// stopping IMs).
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        let started = lock(&self.started).clone();
        for a in &self.actors {
            if !started.contains(a) {
                why.push(format!("the {} core has not started", a.as_str()));
            }
        }
        for peer in &self.needs {
            if self.net.unreachable(peer) {
                why.push(format!("cannot reach {peer}"));
            }
        }
        let gauges = lock(&self.gauges);
        let on = |a: ActorKind, g: CoreGauge| gauges.get(&(a, g)).is_some_and(|v| *v > 0);
        if on(ActorKind::OutgoingQueue, CoreGauge::LinkFailing) {
            why.push("the link to the archiving server is failing".into());
        }
        if on(ActorKind::FrontEnd, CoreGauge::CriticalShutdown) {
            why.push("critical mode stops IMs".into());
        }
        why
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
        // Moments (ms since the epoch) as seconds: the head of a queue as
        // its age, the last export as a timestamp.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut moments: BTreeMap<CoreGauge, Vec<(ActorKind, f64)>> = BTreeMap::new();
        for ((actor, gauge), at) in gauges.iter().filter(|((_, g), _)| g.moment()) {
            let seconds = match gauge {
                CoreGauge::OldestQueuedAt if *at > 0 => now_ms.saturating_sub(*at) as f64 / 1000.0,
                CoreGauge::OldestQueuedAt => 0.0,
                _ => *at as f64 / 1000.0,
            };
            moments.entry(*gauge).or_default().push((*actor, seconds));
        }
        for (gauge, values) in moments {
            let (name, help) = moment_family(gauge);
            let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for (actor, v) in values {
                fam.get_or_create(&vec![("actor".into(), actor.as_str().into())])
                    .set(v);
            }
            registry.register(name, help, fam);
        }
        let mut by_name: BTreeMap<(&'static str, bool), Vec<(ActorKind, u64)>> = BTreeMap::new();
        for ((actor, gauge), v) in gauges.into_iter().filter(|((_, g), _)| !g.moment()) {
            by_name
                .entry((gauge.name(), gauge.cumulative()))
                .or_default()
                .push((actor, v));
        }
        for ((name, cumulative), values) in by_name {
            let labels = |actor: ActorKind| vec![("actor".into(), actor.as_str().into())];
            let name_ = format!("holdfast_{name}");
            if cumulative {
                let fam = Family::<Labels, Counter>::default();
                for (actor, v) in values {
                    fam.get_or_create(&labels(actor)).inc_by(v);
                }
                let help = format!("{name} since the core started, as it counts them");
                registry.register(name_, help, fam);
            } else {
                let fam = Family::<Labels, Gauge>::default();
                for (actor, v) in values {
                    fam.get_or_create(&labels(actor)).set(v as i64);
                }
                registry.register(name_, format!("{name} as reported by the actor core"), fam);
            }
        }
        // A family is written only with samples: an empty one says
        // nothing, and parsers disagree on reading it.
        let answers = Family::<Labels, Counter>::default();
        let answered = lock(&self.answers).clone();
        for ((outcome, reason), n) in answered.iter() {
            let mut labels: Labels = vec![("outcome".into(), (*outcome).into())];
            if !reason.is_empty() {
                labels.push(("reason".into(), (*reason).into()));
            }
            answers.get_or_create(&labels).inc_by(*n);
        }
        for (name, help, h) in [
            (
                "holdfast_im_answer_seconds",
                "time from an IM's arrival at a front end to its answer",
                &self.accept_seconds,
            ),
            (
                "holdfast_db_batch_seconds",
                "time from an archiver's batch to the database's answer",
                &self.batch_seconds,
            ),
            (
                "holdfast_db_batch_records",
                "records per batch an archiver sends the database",
                &self.batch_records,
            ),
        ] {
            // Only where it is measured (front ends, archiving servers).
            let measured = match name {
                "holdfast_im_answer_seconds" => self.actors.contains(&ActorKind::FrontEnd),
                _ => self.actors.contains(&ActorKind::Archiver),
            };
            if measured {
                registry.register(name, help, h.clone());
            }
        }
        if !answered.is_empty() {
            registry.register(
                "holdfast_im_answers",
                "answers to IM submissions, by outcome (and reason of a rejection)",
                answers,
            );
        }
        // Only where there is such a queue: on other nodes the figure
        // would read as a quota of theirs.
        if self.actors.contains(&ActorKind::OutgoingQueue) {
            let quota = Gauge::<i64>::default();
            quota.set(self.queue_quota as i64);
            registry.register(
                "holdfast_queue_quota_bytes",
                "quota of a front end's outgoing queue",
                quota,
            );
        }
        let events = Family::<Labels, Counter>::default();
        // By stable name, as before the events were typed.
        let counts: BTreeMap<&'static str, u64> = lock(&self.events)
            .iter()
            .map(|(kind, n)| (kind.name(), *n))
            .collect();
        let counts_empty = counts.is_empty();
        for (name, n) in counts {
            events
                .get_or_create(&vec![("event".into(), name.into())])
                .inc_by(n);
        }
        if !counts_empty {
            registry.register(
                "holdfast_operator_events",
                "operator events by stable name",
                events,
            );
        }
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        for (name, help, v) in [
            ("holdfast_fsyncs", "group-commit fsyncs", count(&self.fsyncs)),
            (
                "holdfast_actor_restarts",
                "actors restarted from disk",
                count(&self.restarts),
            ),
            (
                "holdfast_store_errors",
                "failed persists reported to a core",
                count(&self.store_errors),
            ),
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
            (
                "holdfast_ims_shed",
                "IMs answered busy by a connection reader before the front end saw them (inbox nearly full, or its oldest request waited half of admission_wait)",
                self.net.shed(),
            ),
            (
                "holdfast_connections_refused_version",
                "inbound connections refused for another protocol version (counted in connections_refused too)",
                self.net.version_refused(),
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

/// Serves on `addr`, from a background thread (each request on a thread
/// of its own: the status page reads this very endpoint too):
/// `GET /metrics` (the exposition), `/healthz` (200 while the process
/// serves at all), `/readyz` (200 when the node should take traffic, else
/// 503 with the reasons, one per line: see [`Metrics::not_ready`]) and `/`
/// (the cluster's status page, see [`crate::status_page`]).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>, config: Arc<Config>) -> std::io::Result<()> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let (metrics, config) = (metrics.clone(), config.clone());
                let spawned = std::thread::Builder::new()
                    .name("metrics request".into())
                    .spawn(move || answer(req, &metrics, &config));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot answer a metrics request");
                }
            }
        })?;
    Ok(())
}

fn answer(req: tiny_http::Request, metrics: &Metrics, config: &Config) {
    let header = |value: &str| {
        tiny_http::Header::from_bytes(&b"Content-Type"[..], value.as_bytes())
            .expect("static header")
    };
    let text = "text/plain; charset=utf-8";
    let resp = match req.url() {
        "/metrics" => tiny_http::Response::from_string(metrics.render()).with_header(header(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )),
        "/healthz" => tiny_http::Response::from_string("ok\n").with_header(header(text)),
        "/readyz" => {
            let why = metrics.not_ready();
            if why.is_empty() {
                tiny_http::Response::from_string("ready\n").with_header(header(text))
            } else {
                tiny_http::Response::from_string(why.join("\n") + "\n")
                    .with_header(header(text))
                    .with_status_code(503)
            }
        }
        "/" => {
            let nodes = crate::cluster_status::collect(config);
            tiny_http::Response::from_string(crate::status_page::render(&metrics.node, &nodes))
                .with_header(header("text/html; charset=utf-8"))
        }
        _ => tiny_http::Response::from_string("see /, /metrics, /healthz, /readyz\n")
            .with_status_code(404),
    };
    if let Err(e) = req.respond(resp) {
        tracing::debug!(error = %e, "metrics response failed");
    }
}

/// The family a moment gauge is exposed as, and its help.
fn moment_family(gauge: CoreGauge) -> (&'static str, &'static str) {
    match gauge {
        CoreGauge::OldestQueuedAt => (
            "holdfast_oldest_queued_seconds",
            "age of the record at the head of the queue (0: the queue is empty)",
        ),
        CoreGauge::ArchiveLastPurgeAt => (
            "holdfast_archive_last_purge_timestamp_seconds",
            "when the last retention purge of the archive finished (0: none since start)",
        ),
        CoreGauge::ArchivePurgeCutoff => (
            "holdfast_archive_purge_cutoff_timestamp_seconds",
            "message time before which the last purge deleted every row not held (0: none since start)",
        ),
        CoreGauge::ChatLastPurgeAt => (
            "holdfast_chat_last_purge_timestamp_seconds",
            "when the last retention purge of the chat store finished (0: none since start)",
        ),
        _ => (
            "holdfast_compliance_last_export_timestamp_seconds",
            "when the last compliance export was written (0: none since start)",
        ),
    }
}

/// Every metric family a node may expose, as Prometheus names its samples
/// (`…_total` for counters): what dashboards may query.
pub fn family_names() -> Vec<String> {
    let mut names: Vec<String> = CoreGauge::ALL
        .iter()
        .map(|g| {
            if g.moment() {
                return moment_family(*g).0.to_string();
            }
            let suffix = if g.cumulative() { "_total" } else { "" };
            format!("holdfast_{}{suffix}", g.name())
        })
        .collect();
    names.extend(
        [
            "holdfast_queue_quota_bytes",
            "holdfast_im_answers_total",
            "holdfast_operator_events_total",
            "holdfast_fsyncs_total",
            "holdfast_actor_restarts_total",
            "holdfast_store_errors_total",
            "holdfast_frames_dropped_total",
            "holdfast_connections_refused_total",
            "holdfast_ims_shed_total",
            "holdfast_connections_refused_version_total",
            "holdfast_im_answer_seconds_bucket",
            "holdfast_im_answer_seconds_sum",
            "holdfast_im_answer_seconds_count",
            "holdfast_db_batch_seconds_bucket",
            "holdfast_db_batch_seconds_sum",
            "holdfast_db_batch_seconds_count",
            "holdfast_db_batch_records_bucket",
            "holdfast_db_batch_records_sum",
            "holdfast_db_batch_records_count",
        ]
        .map(String::from),
    );
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Grafana dashboard in the repository queries only metrics that
    /// nodes expose, by the names they expose them under.
    #[test]
    fn the_dashboard_names_only_metrics_that_exist() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../ops/grafana-dashboard.json")).unwrap();
        let known = family_names();
        let mut used = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("holdfast_") {
                        used += 1;
                        assert!(known.iter().any(|k| k == word), "{word} in {expr:?}");
                    }
                }
            }
        }
        assert!(used > 20, "the dashboard queries {used} metrics");
    }

    /// docs/operations.md names every metric family a node may expose
    /// (a histogram by its own name, not its `_bucket` samples), and no
    /// other.
    #[test]
    fn the_operations_guide_documents_every_metric() {
        let doc = include_str!("../../docs/operations.md");
        let mut missing: Vec<String> = family_names()
            .into_iter()
            .map(|n| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s));
                base.map_or(n.clone(), str::to_string)
            })
            .filter(|n| !doc.contains(&format!("`{n}`")) && !doc.contains(&format!("`{n}{{")))
            .collect();
        missing.dedup();
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
        // And names no metric that does not exist.
        let known: Vec<String> = family_names();
        let unknown: Vec<&str> = doc
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|code| code.split('{').next().unwrap_or(code))
            .filter(|name| name.starts_with("holdfast_"))
            .filter(|name| {
                !known
                    .iter()
                    .any(|k| k == name || k.strip_suffix("_bucket") == Some(name))
            })
            .collect();
        assert!(unknown.is_empty(), "docs/operations.md names {unknown:?}");
    }

    /// docs/operations.md lists every operator event with the level it is
    /// logged at.
    #[test]
    fn the_operations_guide_lists_every_operator_event_and_its_level() {
        use holdfast_actors::core::operator::Severity;
        let doc = include_str!("../../docs/operations.md");
        let missing: Vec<String> = OperatorEvent::ALL
            .iter()
            .map(|e| {
                let level = match e.severity() {
                    Severity::Info => "INFO",
                    Severity::Warn => "WARN",
                    Severity::Error => "ERROR",
                };
                format!("| `{}` | {level} |", e.name())
            })
            .filter(|row| !doc.contains(row.as_str()))
            .collect();
        assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
    }
}

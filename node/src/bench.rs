//! `holdfast bench`: end-to-end throughput and latency of the archiving
//! path on loopback — real node processes, queues fsynced by group commit,
//! the SQLite archive — measured from a client's point of view.
//!
//! Figures: accepted and archived IM per second, send→accepted and
//! send→archived latency percentiles. Archived throughput counts from the
//! first send to the moment the archive holds every accepted IM.

use crate::archive_db::{ArchiveDb, Query};
pub use crate::bench_error::BenchError;
use crate::client::{self, Client, Outcome};
use crate::cluster_up::{loopback_config, spawn_node, NodeProcess};
use crate::config::Config;
use crate::operator_client::Session;
use crate::path_error::PathError;
use hdrhistogram::Histogram;
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::{ActorKind, Token};
use holdfast_actors::core::protocol::{Msg, PurgeRecord, RecordsMsg};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub rate: f64,
    pub duration: Duration,
    /// "tls" or "plain".
    pub links: String,
    pub body_size: usize,
    /// Extra `[settings]` lines.
    pub settings: String,
    /// Show progress bars on stderr (for a person at a terminal).
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub offered_rate: f64,
    pub links: String,
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Of the rejected, answered busy (past capacity).
    pub busy: u64,
    pub unknown: u64,
    /// Of the unanswered, never sent: the load generator's own queue to a
    /// front end was full.
    pub not_sent: u64,
    pub accepted_per_s: f64,
    pub archived: u64,
    pub archived_per_s: f64,
    /// send → accepted, µs: p50, p99, max.
    pub accept_us: [u64; 3],
    /// send → archived (committed in SQLite), ms: p50, p99, max.
    pub archive_ms: [u64; 3],
}

impl BenchReport {
    /// What makes the run a failure rather than a measurement: no IM
    /// accepted, or accepted IMs missing from the archive when the wait
    /// for them ended.
    pub fn shortfall(&self) -> Option<String> {
        if self.accepted == 0 {
            return Some(format!("none of {} IMs was accepted", self.sent));
        }
        (self.archived < self.accepted).then(|| {
            format!(
                "{} of {} accepted IMs are not in the archive",
                self.accepted - self.archived,
                self.accepted
            )
        })
    }
}

fn pct(h: &Histogram<u64>) -> [u64; 3] {
    if h.is_empty() {
        return [0; 3];
    }
    [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
}

/// A loopback cluster started for a benchmark (stopped when dropped).
struct Bench {
    /// Holds the config, the certificates and every node's data.
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    exe: std::path::PathBuf,
    nodes: Vec<NodeProcess>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.stop(Duration::from_secs(15));
        }
    }
}

/// Writes the config, lets `prepare` fill stores before any node opens
/// them, and starts every node.
fn start(
    opts: &BenchOptions,
    prepare: impl FnOnce(&Config) -> Result<(), BenchError>,
) -> Result<Bench, BenchError> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, loopback_config(&opts.links, &opts.settings))?;
    let config = Arc::new(Config::load(&file)?);
    if opts.links == "tls" {
        crate::tls::certs_init(&config, false)?;
    }
    prepare(&config)?;
    let exe = std::env::current_exe()?;
    let starting = opts
        .progress
        .then(|| spinner(&format!("starting {} nodes", config.nodes.len())));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut bench = Bench {
        _dir: dir,
        config,
        exe,
        nodes: Vec::new(),
        rt,
    };
    for n in &bench.config.nodes {
        let node = spawn_node(&bench.exe, &bench.config, &n.name)?;
        bench.nodes.push(node);
    }
    for n in &mut bench.nodes {
        n.wait_ready(Duration::from_secs(60))?;
    }
    if let Some(s) = starting {
        s.finish_and_clear();
    }
    Ok(bench)
}

fn spinner(what: &str) -> indicatif::ProgressBar {
    let s = indicatif::ProgressBar::new_spinner();
    s.set_message(what.to_string());
    s.enable_steady_tick(Duration::from_millis(100));
    s
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One measured window: the load at the offered rate, then the wait until
/// the archive holds every accepted IM (counting only rows from `since`,
/// ms since the UNIX epoch: an archive may hold older ones). `at_start`
/// runs as the load begins. Returns the figures and the accepted ids.
fn measure(
    b: &Bench,
    opts: &BenchOptions,
    since: u64,
    at_start: impl FnOnce(),
) -> Result<(BenchReport, Vec<String>), BenchError> {
    let start = Instant::now();
    at_start();
    let (report, sent) = b.rt.block_on(async {
        let c = Arc::new(Client::new(b.config.clone())?);
        client::load_showing(
            c,
            opts.rate,
            opts.duration,
            Duration::from_secs(30),
            opts.body_size,
            opts.progress
                .then(|| client::load_bar(opts.rate, opts.duration)),
        )
        .await
    })?;
    let accepted_done = start.elapsed();
    let accepted: BTreeMap<&str, &client::Sent> = sent
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Accepted { .. }))
        .map(|s| (s.id.as_str(), s))
        .collect();
    let db_path = db_path(&b.config);
    let deadline = Instant::now() + Duration::from_secs(120);
    let archiving = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(accepted.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed:>4} [{bar:40}] {pos}/{len} accepted IMs archived",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let archived_done = loop {
        let count = ArchiveDb::open_read_only(&db_path)
            .and_then(|db| db.count_since(since))
            .unwrap_or(0);
        if let Some(bar) = &archiving {
            bar.set_position(count.min(accepted.len() as u64));
        }
        if count >= accepted.len() as u64 || Instant::now() > deadline {
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Some(bar) = archiving {
        bar.finish_and_clear();
    }
    let rows = ArchiveDb::open_read_only(&db_path).and_then(|db| {
        db.query(&Query {
            since: Some(since),
            ..Query::default()
        })
    })?;
    let mut archive_ms = Histogram::<u64>::new(3).expect("valid precision");
    let mut archived = 0;
    for r in &rows {
        if let Some(s) = accepted.get(r.client_id.as_str()) {
            archived += 1;
            let _ = archive_ms.record(r.archived_at.saturating_sub(s.sent_at).max(1));
        }
    }
    let mut accept_us = Histogram::<u64>::new(3).expect("valid precision");
    for s in accepted.values() {
        let _ = accept_us.record(s.latency_us.max(1));
    }
    let ids = accepted.keys().map(|k| k.to_string()).collect();
    Ok((
        BenchReport {
            offered_rate: opts.rate,
            links: opts.links.clone(),
            sent: report.sent,
            accepted: report.accepted,
            rejected: report.rejected,
            busy: report.busy,
            unknown: report.unknown,
            not_sent: report.not_sent,
            accepted_per_s: report.accepted as f64 / accepted_done.as_secs_f64(),
            archived,
            archived_per_s: archived as f64 / archived_done.as_secs_f64(),
            accept_us: pct(&accept_us),
            archive_ms: pct(&archive_ms),
        },
        ids,
    ))
}

fn db_path(config: &Config) -> std::path::PathBuf {
    config
        .node("db1")
        .expect("loopback config has db1")
        .archive_path()
}

pub fn run(opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let b = start(opts, |_| Ok(()))?;
    Ok(measure(&b, opts, 0, || {})?.0)
}

/// `holdfast bench --purge-rows N`: ingest with and without a retention
/// purge of `N` rows running, at the same offered rate and duration.
#[derive(Debug, Serialize)]
pub struct PurgeBenchReport {
    pub bench: &'static str,
    /// Rows put in the archive before the nodes start, all older than the
    /// retention window.
    pub prefilled_rows: u64,
    /// Seconds the fill took.
    pub fill_s: f64,
    pub duration_s: f64,
    /// The window without a purge, then the one with a purge started
    /// (`archive retention purge-now`) as its load began.
    pub without_purge: BenchReport,
    pub with_purge: BenchReport,
    /// What the purge's record says: rows deleted, from start to finish.
    pub purge_deleted: u64,
    pub purge_held: u64,
    pub purge_s: f64,
    /// Rows in the archive at the end, and how many of them are rows the
    /// benchmark sent and saw accepted.
    pub rows_after: u64,
    pub benchmark_rows_kept: u64,
    pub benchmark_rows_accepted: u64,
    /// The node's own count of its rows (`holdfast_archived_rows`) at the
    /// end.
    pub reported_rows: Option<u64>,
    /// The purge deleted exactly the pre-filled rows, kept every row the
    /// benchmark sent, and the node's count agrees.
    pub verified: bool,
    /// What did not hold, if anything.
    pub problems: Vec<String>,
}

pub fn run_purge(opts: &BenchOptions, rows: u64) -> Result<PurgeBenchReport, BenchError> {
    let mut fill_s = 0.0;
    let b = start(opts, |config| {
        let file = db_path(config);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| PathError::new(parent, e))?;
        }
        let filling = opts
            .progress
            .then(|| spinner(&format!("filling the archive with {rows} old rows")));
        let t = Instant::now();
        crate::bench_start::fill_archive(&file, rows)?;
        fill_s = t.elapsed().as_secs_f64();
        if let Some(s) = filling {
            s.finish_and_clear();
        }
        Ok(())
    })?;
    let first = now_ms();
    let (without_purge, mut ids) = measure(&b, opts, first, || {})?;
    // The purge is started as an operator starts it (the request `holdfast
    // archive retention purge-now` sends) and runs beside the load; the
    // thread returns its record once it has finished.
    let mut purge = None;
    let second = now_ms();
    let (with_purge, more) = measure(&b, opts, second, || {
        let config = b.config.clone();
        purge = Some(std::thread::spawn(move || purge_now(&config)));
    })?;
    ids.extend(more);
    let p = purge
        .expect("the purge was started")
        .join()
        .map_err(|_| BenchError::PurgePanicked)??;
    let purge_deleted = p.deleted;
    let purge_held = p.held;
    let purge_s = p.finished_at.unwrap_or(0).saturating_sub(p.started_at) as f64 / 1000.0;

    // What the archive holds now: nothing of the pre-filled rows, every
    // row the benchmark sent and saw accepted.
    let db = ArchiveDb::open_read_only(&db_path(&b.config))?;
    let rows_after = db.count()?;
    let held = db.client_id_counts()?;
    let benchmark_rows_kept = ids.iter().filter(|id| held.contains_key(*id)).count() as u64;
    let metrics = b.config.node("db1").and_then(|n| n.metrics);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    let reported_rows = metrics.and_then(|m| {
        // The node publishes its gauges every second: the count after the
        // purge's last batch is there within two.
        std::thread::sleep(Duration::from_secs(2));
        crate::bench_start::reported_size(&agent, m, "holdfast_archived_rows")
    });
    let mut problems = Vec::new();
    if purge_deleted != rows {
        problems.push(format!(
            "the purge deleted {purge_deleted} rows, not the {rows} pre-filled"
        ));
    }
    if benchmark_rows_kept != ids.len() as u64 {
        problems.push(format!(
            "{} of the {} accepted benchmark rows are missing",
            ids.len() as u64 - benchmark_rows_kept,
            ids.len()
        ));
    }
    if rows_after != ids.len() as u64 {
        problems.push(format!(
            "the archive holds {rows_after} rows, not the {} the benchmark sent",
            ids.len()
        ));
    }
    if reported_rows != Some(rows_after) {
        problems.push(format!(
            "the node counts {reported_rows:?} rows, the archive holds {rows_after}"
        ));
    }
    drop(b);
    Ok(PurgeBenchReport {
        bench: "purge",
        prefilled_rows: rows,
        fill_s,
        duration_s: opts.duration.as_secs_f64(),
        without_purge,
        with_purge,
        purge_deleted,
        purge_held,
        purge_s,
        rows_after,
        benchmark_rows_kept,
        benchmark_rows_accepted: ids.len() as u64,
        reported_rows,
        verified: problems.is_empty(),
        problems,
    })
}

/// Starts the retention purge on db1 as an operator and waits until a
/// purge that began then has finished: its record.
fn purge_now(config: &Config) -> Result<PurgeRecord, BenchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut session = Session::open(config, crate::tls::OPERATOR, &[Role::Operator], "db1")?;
        let begun = retention(
            &mut session,
            Msg::Records(RecordsMsg::PurgeNow { token: Token(1) }),
            Token(1),
        )
        .await?
        .ok_or(BenchError::NoPurge)?;
        let mut token = Token(1);
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            token = Token(token.0 + 1);
            let status = Msg::Records(RecordsMsg::RetentionStatus { token });
            if let Some(p) = retention(&mut session, status, token).await? {
                if p.started_at >= begun.started_at && p.finished_at.is_some() {
                    return Ok(*p);
                }
            }
            if Instant::now() > deadline {
                return Err(BenchError::PurgeTooLong);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Sends `request` (token `t`) to db1 and returns the purge its state
/// names.
async fn retention(
    session: &mut Session,
    request: Msg,
    t: Token,
) -> Result<Option<Box<PurgeRecord>>, BenchError> {
    let answer = session
        .ask(ActorKind::Database, request, Duration::from_secs(30), |m| {
            matches!(m,
                Msg::Records(RecordsMsg::RetentionState { token, .. }
                | RecordsMsg::ArchiveRefused { token, .. }) if *token == t)
        })
        .await?;
    match answer {
        Msg::Records(RecordsMsg::RetentionState { purge, .. }) => Ok(purge),
        other => Err(BenchError::Refused(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::BenchReport;

    fn report(sent: u64, accepted: u64, archived: u64) -> BenchReport {
        BenchReport {
            offered_rate: 100.0,
            links: "plain".into(),
            sent,
            accepted,
            rejected: sent - accepted,
            busy: 0,
            unknown: 0,
            not_sent: 0,
            accepted_per_s: 0.0,
            archived,
            archived_per_s: 0.0,
            accept_us: [0; 3],
            archive_ms: [0; 3],
        }
    }

    /// Busy answers under overload are a measurement; an accepted IM not
    /// archived, or nothing accepted at all, is a failure.
    #[test]
    fn a_run_fails_when_accepted_ims_are_not_archived_or_none_was_accepted() {
        assert_eq!(report(100, 60, 60).shortfall(), None);
        assert_eq!(
            report(100, 60, 59).shortfall().as_deref(),
            Some("1 of 60 accepted IMs are not in the archive")
        );
        assert_eq!(
            report(100, 0, 0).shortfall().as_deref(),
            Some("none of 100 IMs was accepted")
        );
    }
}

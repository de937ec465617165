//! `holdfast bench`: end-to-end throughput and latency of the archiving
//! path on loopback — real node processes, queues fsynced by group commit,
//! the SQLite archive — measured from a client's point of view.
//!
//! Figures: accepted and archived IM per second, send→accepted and
//! send→archived latency percentiles. Archived throughput counts from the
//! first send to the moment the archive holds every accepted IM.

use crate::archive_db::{ArchiveDb, Query};
use crate::client::{self, Client, Outcome};
use crate::cluster_up::{loopback_config, spawn_node, NodeProcess};
use crate::config::Config;
use hdrhistogram::Histogram;
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
    pub accepted_per_s: f64,
    pub archived: u64,
    pub archived_per_s: f64,
    /// send → accepted, µs: p50, p99, max.
    pub accept_us: [u64; 3],
    /// send → archived (committed in SQLite), ms: p50, p99, max.
    pub archive_ms: [u64; 3],
}

fn pct(h: &Histogram<u64>) -> [u64; 3] {
    if h.is_empty() {
        return [0; 3];
    }
    [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
}

pub fn run(opts: &BenchOptions) -> Result<BenchReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, loopback_config(&opts.links, &opts.settings))
        .map_err(|e| e.to_string())?;
    let config = Arc::new(Config::load(&file).map_err(|e| e.to_string())?);
    if opts.links == "tls" {
        crate::tls::certs_init(&config, false).map_err(|e| e.to_string())?;
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spinner = |what: &str| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message(what.to_string());
        s.enable_steady_tick(Duration::from_millis(100));
        s
    };
    let starting = opts
        .progress
        .then(|| spinner(&format!("starting {} nodes", config.nodes.len())));
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for n in &config.nodes {
        nodes.push(spawn_node(&exe, &config, &n.name)?);
    }
    for n in &mut nodes {
        n.wait_ready(Duration::from_secs(20))?;
    }
    if let Some(s) = starting {
        s.finish_and_clear();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let (report, sent) = rt.block_on(async {
        let c = Arc::new(Client::new(config.clone())?);
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
    let db_path = config
        .node("db1")
        .expect("loopback config has db1")
        .archive_path();
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
            .and_then(|db| db.count())
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
    let rows = ArchiveDb::open_read_only(&db_path)
        .and_then(|db| db.query(&Query::default()))
        .map_err(|e| e.to_string())?;
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
    for n in &mut nodes {
        n.stop(Duration::from_secs(15));
    }
    Ok(BenchReport {
        offered_rate: opts.rate,
        links: opts.links.clone(),
        sent: report.sent,
        accepted: report.accepted,
        rejected: report.rejected,
        busy: report.busy,
        unknown: report.unknown,
        accepted_per_s: report.accepted as f64 / accepted_done.as_secs_f64(),
        archived,
        archived_per_s: archived as f64 / archived_done.as_secs_f64(),
        accept_us: pct(&accept_us),
        archive_ms: pct(&archive_ms),
    })
}

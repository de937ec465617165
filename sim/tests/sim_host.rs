//! The simulated node host: a node whose inbox never empties still runs
//! its timers when they are due, a timer runs from the reaction that set
//! it, and a finished run leaves nothing behind.
//!
//! madsim's `sleep_until` waits at least 1 ms even for a deadline already
//! past, so a host loop that `select!`s over a fresh sleep and its inbox
//! never sees a due timer while messages keep arriving: the timers of a
//! saturated node starved for hours (the archiver's database timeouts, the
//! queue's expiry checks, the gauge samples). This test saturates the
//! archiving server and checks that its periodic work keeps its schedule.
#![cfg(madsim)]

mod common;

use holdfast_actors::core::operator::Gauge;
use holdfast_sim::host::node::GAUGE_INTERVAL;
use holdfast_sim::runner::{self, RunOptions};
use holdfast_sim::scenario;
use std::collections::BTreeSet;

/// The slow fault delays each message; batched transfers and 1,000-row
/// transactions carry many records per message, so the per-record
/// settings of before batching keep the slowed archiver saturated.
const SRC: &str = r#"
name = "saturated"
duration = "25m"
[settings]
transfer_batch = 1
transfer_frames = 256
transfer_window = 256
deliver_window = 256
archiver_batch = 64
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 40
rate = 20.0
stop = "20m"
[[fault]]
kind = "slow"
node = "arch1"
delay = "80ms"
start = "2m"
duration = "20m"
"#;

#[test]
fn a_saturated_node_still_fires_its_timers_on_time() {
    let out = common::run_with_series("saturated.toml", SRC, 1);
    let scn = &out.scenario;
    let depth = common::gauge_samples(&out, "arch1", Gauge::DestinationDepth)
        .into_iter()
        .max()
        .unwrap_or(0);
    assert!(depth > 1000, "arch1 fell behind: {depth} records waiting");
    // Gauges are sampled by the host's own timer: one sample per interval,
    // each at most one slowed message (80 ms) late.
    let times: BTreeSet<u64> = out.series["arch1"].iter().map(|(t, _, _)| *t).collect();
    let times: Vec<u64> = times.into_iter().collect();
    let interval = GAUGE_INTERVAL.as_millis() as u64;
    let worst = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        worst <= interval + 200,
        "samples of the saturated node {worst} ms apart (every {interval} ms expected)"
    );
    assert!(
        times.len() as u64 >= scn.duration_ms / interval - 1,
        "{} samples in {} ms",
        times.len(),
        scn.duration_ms
    );
}

/// A sweep runs thousands of seeds in one process: every run must free
/// what it built. madsim does not cancel pending tasks when its runtime is
/// dropped, so the runner tears the run down; a crash still in force at
/// the end must not bring its node back during the teardown.
#[test]
fn a_finished_run_leaves_no_task_behind() {
    let scn = scenario::parse(
        "teardown.toml",
        r#"
name = "teardown"
duration = "5m"
[topology]
front_ends = 2
channels = 2
lookups = 1
[[workload]]
kind = "im"
users = 20
rate = 5.0
[[workload]]
kind = "chat"
users = 6
rooms = 2
rate = 1.0
[[fault]]
kind = "crash"
node = "fe1"
start = "4m"
duration = "10m"
"#,
    )
    .unwrap();
    let out = runner::run(&scn, 1, &RunOptions::default());
    assert!(out.result.trace_len > 1000, "the run did something");
    assert_eq!(out.tasks_left, 0, "tasks still alive after the run");
}

/// A timer runs from the reaction that set it. A queue arms its resend,
/// expiry and quota checks when its first record is durable: with a slow
/// disk (500 ms per sync) they must run from that moment, not from the
/// arrival of the request whose write it was (half a second early, a
/// resend before the transfer had been out for its interval).
#[test]
fn a_timer_set_after_a_disk_write_runs_from_the_write() {
    const SLOW_DISK: &str = r#"
name = "slow-disk"
duration = "1m"
[topology]
front_ends = 1
fsync = "500ms"
[[workload]]
kind = "im"
users = 10
rate = 0.05
stop = "30s"
"#;
    let scn = scenario::parse("slow-disk.toml", SLOW_DISK).unwrap();
    let out = runner::run(
        &scn,
        1,
        &RunOptions {
            timeline: true,
            series: false,
        },
    );
    // Timeline lines: "<seconds>s <node> <what> [<note>]".
    let first = |what: &str| -> u64 {
        out.timeline
            .iter()
            .find_map(|line| {
                let (at, rest) = line.trim_start().split_once("s ")?;
                let rest = rest.trim_start();
                let rest = rest.strip_prefix("fe1")?.trim_start();
                (rest == what).then(|| (at.parse::<f64>().unwrap() * 1000.0).round() as u64)
            })
            .unwrap_or_else(|| panic!("no {what:?} in the timeline"))
    };
    // The record is durable when the queue answers the front end.
    let durable = first("Enqueued");
    assert!(durable >= first("Enqueue") + 500, "the write took the sync");
    let s = &scn.settings;
    assert_eq!(
        first("timer OutgoingQueue Archiving(Resend)"),
        durable + s.resend_interval
    );
    assert_eq!(
        first("timer OutgoingQueue Archiving(DlqCheck)"),
        durable + s.dlq_check
    );
    assert_eq!(
        first("timer OutgoingQueue Archiving(QuotaCheck)"),
        durable + s.quota_check
    );
}

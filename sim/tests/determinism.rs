//! The same scenario and seed give the same trace, bit for bit; another
//! seed gives another trace.
#![cfg(madsim)]

mod common;

use holdfast_sim::report::RunResult;
use holdfast_sim::runner::{self, RunOptions};
use holdfast_sim::scenario;

const SRC: &str = r#"
name = "determinism"
duration = "30m"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 40
rate = 4.0
stop = "25m"
external = 0.2
archive = 0.7
[[fault]]
kind = "partition"
between = ["fe2", "arch1"]
start = "5m"
duration = "5m"
[[fault]]
kind = "crash"
node = "arch1"
start = "12m"
duration = "2m"
"#;

/// `src`, parsed under the file name `name`, run once with each seed.
fn results<const N: usize>(name: &str, src: &str, seeds: [u64; N]) -> [RunResult; N] {
    let scn = scenario::parse(name, src).unwrap();
    seeds.map(|seed| runner::run(&scn, seed, &RunOptions::default()).result)
}

#[test]
fn replay_check_determinism_from_the_command_line() {
    let (_dir, file) = common::scenario_file("determinism.toml", SRC);
    let out = common::sim_cli()
        .args([
            "replay",
            file.to_str().unwrap(),
            "--seed",
            "3",
            "--check-determinism",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("deterministic (trace"), "{text}");
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let [a, b, c] = results("determinism.toml", SRC, [9, 9, 10]);
    assert!(a.trace_len > 10_000, "a real trace: {} events", a.trace_len);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.trace_len, b.trace_len);
    assert_eq!(a.counts, b.counts);
    assert_ne!(a.trace_hash, c.trace_hash);
}

/// Group chat too: Lookup, Channel servers with relay, the chat store and
/// clients that reconnect after a crash replay bit for bit.
#[test]
fn chat_runs_are_deterministic() {
    let src = r#"
name = "chat-determinism"
duration = "6m"
[topology]
channels = 2
lookups = 2
[[workload]]
kind = "chat"
users = 20
rooms = 2
rate = 4.0
stop = "5m"
walled = 1
[[fault]]
kind = "crash"
node = "ch1"
start = "2m"
duration = "1m"
"#;
    let [a, b, c] = results("chat-determinism.toml", src, [5, 5, 6]);
    assert!(a.trace_len > 5_000, "a real trace: {} events", a.trace_len);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.chat, b.chat);
    assert!(a.chat.as_ref().is_some_and(|c| c.accepted > 500));
    assert_ne!(a.trace_hash, c.trace_hash);
}

/// Compliance as well: outboxes, staging, export files and a crash of the
/// Compliance service replay bit for bit, export files included.
#[test]
fn compliance_runs_are_deterministic() {
    let src = common::library_source("compliance-crash.toml");
    let [a, b] = results("compliance-crash.toml", &src, [3, 3]);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.chat, b.chat);
    let exported = a
        .chat
        .as_ref()
        .and_then(|c| c.compliance.as_ref())
        .map(|c| c.exported);
    assert!(exported.is_some_and(|n| n > 500), "exported {exported:?}");
}

/// Legal holds as well: the auditor's requests, resent across a crash of
/// the database, and the purges they bear on replay bit for bit.
#[test]
fn hold_runs_are_deterministic() {
    let src = r#"
name = "hold-determinism"
duration = "1d 2h 20m"
[settings]
archive_keep_days = 1
archive_purge_hour = 2
[[workload]]
kind = "im"
users = 20
rate = 0.02
stop = "1d 2h 10m"
[[hold]]
name = "h"
users = ["w0u1@corp.example", "w0u2@corp.example"]
place = "1h"
release = "1d 2h 5m"
[[fault]]
kind = "crash"
node = "db1"
start = "59m 58s"
duration = "10s"
"#;
    let [a, b] = results("hold-determinism.toml", src, [4, 4]);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.counts, b.counts);
    assert!(a.counts.held > 0, "held {}", a.counts.held);
    assert_eq!(a.counts.holds_unplaced, 0);
}

//! The checker is not blind: a database that drops or duplicates inserts on
//! purpose (sabotage, enabled only here) makes the report say so and the
//! run fail, both through the library and through the CLI's exit code.
#![cfg(madsim)]

use holdfast_sim::report;
use holdfast_sim::runner::{self, RunOptions};
use holdfast_sim::scenario;
use std::process::Command;

const BASE: &str = r#"
name = "sabotaged"
duration = "20m"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 50
rate = 5.0
stop = "15m"
"#;

fn run(sabotage: &str) -> (holdfast_sim::report::RunResult, Vec<String>) {
    let src = format!("{BASE}\n[sabotage]\n{sabotage}\n");
    let scn = scenario::parse("sabotaged.toml", &src).expect("valid scenario");
    let out = runner::run(&scn, 42, &RunOptions::default());
    let failures = report::evaluate(&scn, &out.result);
    (out.result, failures)
}

#[test]
fn dropped_inserts_are_reported_as_lost() {
    let (r, failures) = run("db_drop_every = 100");
    let expected = r.counts.archivable_accepted / 100;
    assert!(
        r.counts.accepted > 1000,
        "the workload ran: {}",
        r.counts.accepted
    );
    // Every 100th new record is dropped; nothing else is lost.
    assert!(
        r.counts.lost >= expected.saturating_sub(1) && r.counts.lost <= expected + 1,
        "lost = {}, expected about {expected}",
        r.counts.lost
    );
    assert_eq!(r.counts.duplicates, 0);
    assert!(
        failures.iter().any(|f| f.starts_with("lost = ")),
        "{failures:?}"
    );
}

#[test]
fn duplicated_inserts_are_reported() {
    let (r, failures) = run("db_duplicate_every = 50");
    assert!(
        r.counts.duplicates > 10,
        "duplicates = {}",
        r.counts.duplicates
    );
    assert_eq!(r.counts.lost, 0);
    assert!(
        failures.iter().any(|f| f.starts_with("duplicates = ")),
        "{failures:?}"
    );
}

#[test]
fn the_cli_exits_non_zero_and_reports_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sabotaged.toml");
    std::fs::write(&file, format!("{BASE}\n[sabotage]\ndb_drop_every = 100\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast-sim"))
        .args(["run", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["lost"].as_u64().unwrap() > 0);
    assert_eq!(v["pass"], false);
    assert!(!v["failures"].as_array().unwrap().is_empty());
}

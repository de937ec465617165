//! Every scenario in `scenarios/` passes under its own expectations.
#![cfg(madsim)]

mod common;

use holdfast_sim::report;
use std::path::PathBuf;

fn library() -> Vec<PathBuf> {
    let dir = common::repo_root().join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn library_is_not_empty() {
    let names: Vec<String> = library()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in [
        "steady",
        "archiver-crash",
        "wan-outage",
        "db-down",
        "fe-crash",
        "chat-channel-crash",
        "chat-lookup-crash",
        "chat-relay-partition",
        "chat-overload",
        "chat-ethical-wall",
        "chat-files",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "scenarios/{required}.toml is missing"
        );
    }
}

/// Runs the library on every core (each run in its own madsim runtime).
#[test]
fn every_scenario_passes() {
    let scenarios: Vec<_> = library().iter().map(|f| common::load_scenario(f)).collect();
    let mut failed = Vec::new();
    for o in common::run_each_on_every_core(&scenarios) {
        let mut failures = o.failures.clone();
        // A scenario whose workload accepted nothing would pass vacuously.
        let chat_accepted = o.result.chat.as_ref().map_or(0, |c| c.accepted);
        if o.result.counts.accepted == 0 && chat_accepted == 0 {
            failures.push("nothing accepted".into());
        }
        eprint!("{}", report::summary(&o.result, &failures));
        if !failures.is_empty() {
            failed.push(format!("{}: {}", o.result.scenario, failures.join("; ")));
        }
    }
    assert!(
        failed.is_empty(),
        "failing scenarios:\n{}",
        failed.join("\n")
    );
}

//! Every scenario in `scenarios/` passes under its own expectations.
#![cfg(madsim)]

use holdfast_sim::report;
use holdfast_sim::runner::{self, RunOptions};
use holdfast_sim::scenario;
use std::path::PathBuf;

fn library() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
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
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "scenarios/{required}.toml is missing"
        );
    }
}

#[test]
fn every_scenario_passes() {
    let mut failed = Vec::new();
    for file in library() {
        let scn = scenario::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let out = runner::run(&scn, scn.seed, &RunOptions::default());
        let failures = report::evaluate(&scn, &out.result);
        eprint!("{}", report::summary(&out.result, &failures));
        // A scenario whose workload accepted nothing would pass vacuously.
        assert!(
            out.result.counts.accepted > 0,
            "{}: nothing accepted",
            scn.name
        );
        if !failures.is_empty() {
            failed.push(format!("{}: {}", scn.name, failures.join("; ")));
        }
    }
    assert!(
        failed.is_empty(),
        "failing scenarios:\n{}",
        failed.join("\n")
    );
}

//! Every scenario in `scenarios/` passes under its own expectations.
#![cfg(madsim)]

use holdfast_sim::report;
use holdfast_sim::runner::{self, RunOptions};
use holdfast_sim::scenario;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Runs the library on every core: each simulation has its own madsim
/// runtime on its own thread, so runs cannot influence each other.
#[test]
fn every_scenario_passes() {
    let files = library();
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(file) = files.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let scn = scenario::load(file).unwrap_or_else(|e| panic!("{e}"));
                let out = runner::run(&scn, scn.seed, &RunOptions::default());
                let mut failures = report::evaluate(&scn, &out.result);
                // A scenario whose workload accepted nothing would pass vacuously.
                if out.result.counts.accepted == 0 {
                    failures.push("nothing accepted".into());
                }
                eprint!("{}", report::summary(&out.result, &failures));
                if !failures.is_empty() {
                    failed
                        .lock()
                        .unwrap()
                        .push(format!("{}: {}", scn.name, failures.join("; ")));
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "failing scenarios:\n{}",
        failed.join("\n")
    );
}

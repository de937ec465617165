//! Calibration, kept: every case of the real-network partition suite
//! (`node/tests/real_partitions.rs`) is also a scenario file,
//! `scenarios/calibration/<case>.toml`, and the figures of the two —
//! critical shutdown after the cut, heal → first delivery, heal → resume,
//! duplicates dropped by the archiving server's queue — must agree within
//! the tolerances of `holdfast_sim::report::calibration::TOLERANCES`.
//!
//! The real figures come from the file the real suite writes under
//! `target/tmp` (it needs root and about 5 minutes), so the comparison is
//! ignored in a plain `cargo sim-test` (cargo lists it as ignored, with
//! the reason) and run by `scripts/test.sh` right after the real suite,
//! with `--ignored`: there a missing, partial or unreadable file fails it.
//! `HOLDFAST_REAL_FIGURES=FILE` compares against another file.
//!
//! The calibration scenarios sit in their own folder, out of the library
//! that `every_scenario_passes` and the sweep run: they carry the real
//! suite's 50 IM/s rather than the library's light load, and how fast they
//! recover is judged here, against the real network, where a scenario's
//! own expectations failing is reported as a difference too.
#![cfg(madsim)]

mod common;

use holdfast_sim::report;
use holdfast_sim::report::calibration::{self, Figures, REAL_FIGURES_FILE, TOLERANCES};
use holdfast_sim::scenario::{self, Scenario};
use std::path::PathBuf;

/// The real suite's cases, in its order.
const CASES: [&str; 5] = [
    "short-cut",
    "long-cut",
    "one-way-cut",
    "four-minute-cut",
    "flapping",
];

fn scenario_file(case: &str) -> PathBuf {
    common::repo_root().join(format!("scenarios/calibration/{case}.toml"))
}

fn load(case: &str) -> Scenario {
    common::load_scenario(&scenario_file(case))
}

/// Runs the scenarios (each with its own seed, on every core); the
/// simulator's figures for fe1 and arch1, and each run's failures.
fn simulate(scenarios: &[Scenario]) -> Vec<(Figures, Vec<String>)> {
    common::run_each_on_every_core(scenarios)
        .into_iter()
        .map(|o| {
            eprint!("{}", report::summary(&o.result, &o.failures));
            (
                calibration::sim_figures(&o.result, "fe1", "arch1"),
                o.failures,
            )
        })
        .collect()
}

/// The calibration case with one setting changed (the settings table of
/// every calibration scenario names each one it uses).
fn variant(case: &str, setting: &str, value: &str) -> Scenario {
    let path = scenario_file(case);
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{setting} = ")))
        .unwrap_or_else(|| panic!("{} sets no {setting}", path.display()));
    let changed = text.replace(line, &format!("{setting} = {value}"));
    scenario::parse(&path.display().to_string(), &changed).unwrap_or_else(|e| panic!("{e}"))
}

/// Where the real suite wrote its figures: cargo's `target/tmp` of the
/// normal build (this build's target directory is `target/sim`).
fn real_figures_path() -> PathBuf {
    if let Ok(f) = std::env::var("HOLDFAST_REAL_FIGURES") {
        return PathBuf::from(f);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| common::repo_root().join("target"));
    target.join("tmp").join(REAL_FIGURES_FILE)
}

#[test]
fn every_real_case_is_a_scenario() {
    let src = std::fs::read_to_string(common::repo_root().join("node/tests/real_partitions.rs"))
        .expect("the real partition suite");
    let real: Vec<&str> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: \""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        real, CASES,
        "the real suite's cases changed: give each a scenarios/calibration/<case>.toml and list it here"
    );
    for case in CASES {
        let s = load(case);
        assert_eq!(s.topology.front_ends, ["fe1", "fe2"], "{case}");
        assert_eq!(s.topology.archivers, ["arch1"], "{case}");
    }
}

/// The comparison can fail: the simulator with its heartbeat TTRQ set to
/// 45 s instead of the real suite's 30 s shuts fe1 down more than the
/// tolerance later, and the same comparison that holds the simulator to
/// the real network reports it.
#[test]
fn a_simulator_set_differently_is_told_apart() {
    let runs = simulate(&[
        load("long-cut"),
        variant("long-cut", "heartbeat_ttrq", "\"45s\""),
    ]);
    let (right, wrong) = (&runs[0].0, &runs[1].0);
    assert!(right.shutdown_secs.is_some(), "{right:?}");
    let d = calibration::compare("long-cut", right, wrong, &TOLERANCES);
    assert!(
        d.iter().any(|d| d.contains("critical shutdown")),
        "a TTRQ of 45 s went unnoticed: {d:?} ({right:?} against {wrong:?})"
    );
}

#[test]
#[ignore = "needs the real figures of `cargo test --release -p holdfast --test real_partitions` (root, about 5 minutes); scripts/test.sh runs it after them"]
fn simulator_matches_the_real_network() {
    let path = real_figures_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "CALIBRATION NOT RUN: no real figures at {} ({e}). Run \
             `cargo test --release -p holdfast --test real_partitions` (as root) first, \
             or point HOLDFAST_REAL_FIGURES at a file of its JSON lines.",
            path.display()
        )
    });
    let real = calibration::parse_real(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let missing: Vec<&str> = CASES
        .iter()
        .copied()
        .filter(|c| !real.contains_key(*c))
        .collect();
    assert!(
        missing.is_empty(),
        "{} has no figures for {missing:?} (a run of only some cases?): run the whole real suite",
        path.display()
    );
    let mut scenarios: Vec<Scenario> = CASES.iter().map(|c| load(c)).collect();
    // The simulator set wrong must differ from the real network too: the
    // real figures tell a wrong simulator apart.
    scenarios.push(variant("long-cut", "heartbeat_ttrq", "\"45s\""));
    let runs = simulate(&scenarios);
    let mut rows = Vec::new();
    let mut differences = Vec::new();
    for (case, (sim, failures)) in CASES.iter().zip(&runs) {
        for f in failures {
            differences.push(format!("{case}: the scenario fails: {f}"));
        }
        differences.extend(calibration::compare(case, &real[*case], sim, &TOLERANCES));
        rows.push((case.to_string(), real[*case].clone(), sim.clone()));
    }
    eprintln!(
        "calibration against {}:\n{}",
        path.display(),
        calibration::table(&rows)
    );
    eprintln!("tolerances: {TOLERANCES:?}");
    let wrong = calibration::compare(
        "long-cut",
        &real["long-cut"],
        &runs[CASES.len()].0,
        &TOLERANCES,
    );
    assert!(
        !wrong.is_empty(),
        "the simulator with a 45 s TTRQ agrees with the real network: the comparison cannot tell"
    );
    assert!(
        differences.is_empty(),
        "the simulator differs from the real network:\n{}",
        differences.join("\n")
    );
}

//! What the simulator's integration tests share: the scenario library,
//! the command-line binary, and running a scenario to judge it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// The repository's root, above this crate.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The text of the library scenario `scenarios/{file}`.
pub fn library_source(file: &str) -> String {
    let path = repo_root().join("scenarios").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The scenario in the file at `path`; its error, if any, is the panic.
pub fn load_scenario(path: &Path) -> holdfast_sim::scenario::Scenario {
    holdfast_sim::scenario::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// The simulator's command-line binary, ready for its arguments.
pub fn sim_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast-sim"))
}

/// `src` written to a file called `name` in a fresh folder (removed with
/// the returned guard): the guard and the file's path.
pub fn scenario_file(name: &str, src: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, src).unwrap();
    (dir, file)
}

/// Asserts that one of the run's `failures` starts with `prefix`.
pub fn assert_failure(failures: &[String], prefix: &str) {
    assert!(
        failures.iter().any(|f| f.starts_with(prefix)),
        "{failures:?}"
    );
}

/// Asserts that one of the run's `failures` says `text`.
pub fn assert_failure_mentions(failures: &[String], text: &str) {
    assert!(failures.iter().any(|f| f.contains(text)), "{failures:?}");
}

/// `src`, parsed under the file name `name`, run with `seed`: the result
/// and the failures the report finds in it.
#[cfg(madsim)]
pub fn run_judged(
    name: &str,
    src: &str,
    seed: u64,
) -> (holdfast_sim::report::RunResult, Vec<String>) {
    use holdfast_sim::runner::{self, RunOptions};
    let scn = holdfast_sim::scenario::parse(name, src).expect("valid scenario");
    let out = runner::run(&scn, seed, &RunOptions::default());
    let failures = holdfast_sim::report::evaluate(&scn, &out.result);
    (out.result, failures)
}

/// Runs every scenario once, with its own seed, on every core.
#[cfg(madsim)]
pub fn run_each_on_every_core(
    scenarios: &[holdfast_sim::scenario::Scenario],
) -> Vec<holdfast_sim::sweep::Outcome> {
    use holdfast_sim::sweep;
    sweep::run_all(
        scenarios,
        &sweep::own_seeds(scenarios),
        sweep::every_core(),
        false,
    )
}

/// `src`, parsed under the file name `name`, run with `seed`, keeping
/// every gauge sample.
#[cfg(madsim)]
pub fn run_with_series(name: &str, src: &str, seed: u64) -> holdfast_sim::runner::RunOutput {
    let scn = holdfast_sim::scenario::parse(name, src).expect("valid scenario");
    let options = holdfast_sim::runner::RunOptions {
        timeline: false,
        series: true,
    };
    holdfast_sim::runner::run(&scn, seed, &options)
}

/// The samples of `gauge` on `node` in a run kept with its series, in time
/// order.
#[cfg(madsim)]
pub fn gauge_samples(
    out: &holdfast_sim::runner::RunOutput,
    node: &str,
    gauge: holdfast_actors::core::operator::Gauge,
) -> Vec<u64> {
    out.series[node]
        .iter()
        .filter(|(_, g, _)| *g == gauge.name())
        .map(|(_, _, v)| *v)
        .collect()
}

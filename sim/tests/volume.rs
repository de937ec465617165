//! The volume scenario (`scenarios/volume/two-hours.toml`): the realistic
//! load the simulator's speed is measured at, out of the library that the
//! sweep runs for many seeds. It says what the docs say it does, and it
//! passes: every IM accepted is archived exactly once through the crash
//! and the slow database. How fast it runs is measured, not tested (see
//! "Simulator speed" in docs/architecture.md).

mod common;

use holdfast_sim::scenario::{FaultKind, Scenario};

fn volume() -> Scenario {
    let file = common::repo_root().join("scenarios/volume/two-hours.toml");
    common::load_scenario(&file)
}

#[test]
fn the_volume_scenario_is_two_hours_of_60_ims_a_second_on_four_front_ends() {
    let s = volume();
    assert_eq!(s.duration_ms, 2 * 3_600_000);
    assert_eq!(s.topology.front_ends.len(), 4);
    let rate: f64 = s.workloads.iter().map(|w| w.rate).sum();
    assert_eq!(rate, 60.0);
    // Offered for the first hour: about 216,000 IMs.
    assert!(s
        .workloads
        .iter()
        .all(|w| w.start_ms == 0 && w.stop_ms == 3_600_000 && w.front_ends.is_empty()));
    assert!(s
        .faults
        .iter()
        .any(|f| matches!(&f.kind, FaultKind::Crash { node } if node == "arch1")));
    assert!(s
        .faults
        .iter()
        .any(|f| matches!(&f.kind, FaultKind::Slow { node, .. } if node == "db1")));
    assert_eq!(s.expect.lost, Some(0));
    assert_eq!(s.expect.duplicates, Some(0));
}

#[cfg(madsim)]
#[test]
fn the_volume_scenario_passes() {
    use holdfast_sim::report;
    use holdfast_sim::runner::{self, RunOptions};
    let s = volume();
    let out = runner::run(&s, s.seed, &RunOptions::default());
    let failures = report::evaluate(&s, &out.result);
    eprint!("{}", report::summary(&out.result, &failures));
    assert!(failures.is_empty(), "{failures:?}");
    let c = &out.result.counts;
    assert!(c.accepted > 200_000, "{c:?}");
    assert_eq!(c.archived, c.archivable_accepted);
    assert_eq!((c.lost, c.duplicates, c.pending, c.corrupted), (0, 0, 0, 0));
}

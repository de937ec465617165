//! `--plot` draws the run: the fault window and the queue that grew during
//! it are in the picture.
#![cfg(madsim)]

mod common;

use holdfast_actors::core::operator::Gauge;
use holdfast_sim::report::plot;
use holdfast_sim::scenario;

const SRC: &str = r#"
name = "plotted"
duration = "1h"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 40
rate = 4.0
[[fault]]
kind = "partition"
between = ["fe2", "arch1"]
start = "15m"
duration = "20m"
"#;

#[test]
fn the_plot_shows_the_outage_and_the_queue() {
    let scn = scenario::parse("plotted.toml", SRC).unwrap();
    let out = common::run_with_series(&scn, 1);
    let fe2 = common::gauge_samples(&out, "fe2", Gauge::OutgoingDepth);
    assert!(fe2.len() > 300, "a sample every 10 s: {}", fe2.len());
    assert!(
        *fe2.iter().max().unwrap() > 1000,
        "the queue grew during the outage"
    );
    assert!(*fe2.last().unwrap() < 10, "and drained after it");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.svg");
    plot::draw(&path, &out.scenario, &out.result, &out.series).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.contains("fe2 outgoing") && svg.contains("queue depth"),
        "labelled"
    );
    assert!(
        svg.matches("<rect").count() >= 3,
        "the fault window is shaded in each panel"
    );
    assert!(svg.contains("<polyline"), "series are drawn");
}

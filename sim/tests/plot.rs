//! `--plot` draws the run: the fault window and the queue that grew during
//! it are in the picture; with group chat and compliance, the posts
//! delivered and the events exported too; the time axis's ticks fall on
//! round clock steps.
#![cfg(madsim)]

mod common;

use holdfast_actors::core::operator::Gauge;
use holdfast_sim::report::plot;

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
    let out = common::run_with_series("plotted.toml", SRC, 1);
    let fe2 = common::gauge_samples(&out, "fe2", Gauge::OutgoingDepth);
    assert!(fe2.len() > 300, "a sample every 10 s: {}", fe2.len());
    assert!(
        *fe2.iter().max().unwrap() > 1000,
        "the queue grew during the outage"
    );
    assert!(*fe2.last().unwrap() < 10, "and drained after it");

    let svg = drawn(&out);
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

/// The SVG `plot::draw` writes of the run `out`.
fn drawn(out: &holdfast_sim::runner::RunOutput) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.svg");
    plot::draw(&path, &out.scenario, &out.result, &out.series).unwrap();
    std::fs::read_to_string(&path).unwrap()
}

/// The texts of an SVG the plot wrote (titles, legends, tick labels).
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..t.find("</text>")?];
            Some(body.trim().to_string())
        })
        .collect()
}

/// The time axis's labels, in order, of the first panel.
fn time_labels(svg: &str) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for t in texts(svg) {
        let clock = t.split_once(':').is_some_and(|(a, b)| {
            !a.is_empty() && a.chars().all(|c| c.is_ascii_digit()) && b.len() == 2
        });
        if clock {
            if labels.contains(&t) {
                break; // the next panel's axis
            }
            labels.push(t);
        }
    }
    labels
}

const CHAT: &str = r#"
name = "plotted-chat"
duration = "10m"
[topology]
channels = 2
lookups = 1
compliance = true
[settings]
compliance_interval = "2m"
[[workload]]
kind = "chat"
users = 8
rooms = 2
rate = 0.5
stop = "9m"
sync = "30s"
"#;

#[test]
fn the_chat_plot_shows_deliveries_and_exports_on_clock_ticks() {
    let out = common::run_with_series("plotted-chat.toml", CHAT, 1);
    let delivered = common::gauge_samples(&out, "ch1", Gauge::ChatDelivered);
    assert!(
        *delivered.last().unwrap() > 50,
        "posts reached the clients: {delivered:?}"
    );
    let exported = common::gauge_samples(&out, "comp1", Gauge::ComplianceExportedEvents);
    assert!(
        *exported.last().unwrap() > 50,
        "events were exported: {exported:?}"
    );

    let svg = drawn(&out);
    let texts = texts(&svg);
    for label in [
        "chatdb posts stored",
        "ch1 posts delivered",
        "ch2 posts delivered",
        "comp1 events staged",
        "comp1 events exported",
    ] {
        assert!(texts.iter().any(|t| t == label), "{label} in {texts:?}");
    }
    // Ten minutes: a tick each minute, as a clock reads (not where a
    // plain number axis would put them: 1:40, 3:20, …).
    let want: Vec<String> = (0..=10).map(|m| format!("{m}:00")).collect();
    assert_eq!(time_labels(&svg), want);
}

#[test]
fn long_runs_tick_on_round_hours_and_minutes() {
    let src = SRC
        .replace("\"1h\"", "\"2h\"")
        .replace("rate = 4.0", "rate = 0.2");
    let out = common::run_with_series("plotted.toml", &src, 1);
    let svg = drawn(&out);
    let want: Vec<&str> = vec![
        "0:00", "0:15", "0:30", "0:45", "1:00", "1:15", "1:30", "1:45", "2:00",
    ];
    assert_eq!(time_labels(&svg), want);
}

//! `holdfast bench --sweep FROM..TO`: the benchmark at evenly spaced
//! offered rates, a fresh cluster for each, so the knee where a front end
//! starts answering busy and archiving falls behind shows as a curve.
//! The chart is hand-written SVG: two panels sharing the offered-rate
//! axis, throughput above and p99 latency below.

use crate::bench::BenchReport;
use std::fmt::Write as _;

/// Why `--sweep` and `--steps` name no sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("--sweep {0:?}: expected FROM..TO in IM/s, e.g. 5000..60000")]
    Usage(String),
    #[error("--sweep {0:?}: rates must be positive")]
    NotPositive(String),
    #[error("--sweep {0:?}: FROM must be below TO (the sweep goes up)")]
    Downwards(String),
    #[error("--steps {0}: a sweep needs at least 2 rates")]
    TooFewSteps(usize),
}

/// Parses `FROM..TO` (IM/s, FROM < TO, both positive) into the `steps`
/// rates from FROM to TO inclusive, evenly spaced and rounded to whole
/// IM/s.
pub fn rates(range: &str, steps: usize) -> Result<Vec<f64>, SweepError> {
    let usage = || SweepError::Usage(range.to_string());
    let (from, to) = range.split_once("..").ok_or_else(usage)?;
    let parse = |s: &str| -> Result<f64, SweepError> {
        let v: f64 = s.trim().parse().map_err(|_| usage())?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(SweepError::NotPositive(range.to_string()))
        }
    };
    let (from, to) = (parse(from)?, parse(to)?);
    if from >= to {
        return Err(SweepError::Downwards(range.to_string()));
    }
    if steps < 2 {
        return Err(SweepError::TooFewSteps(steps));
    }
    Ok((0..steps)
        .map(|i| (from + (to - from) * i as f64 / (steps - 1) as f64).round())
        .collect())
}

/// A tick step of 1, 2 or 5 × 10^k giving about five ticks up to `max`,
/// never below 1 so every label is an integer.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Axis end: the first tick at or above `max`.
fn axis_max(max: f64) -> (f64, f64) {
    let step = tick_step(max);
    let top = ((max / step).ceil() * step).max(step);
    (top, step)
}

struct Series<'a> {
    class: &'a str,
    label: &'a str,
    colour: &'a str,
    values: Vec<f64>,
}

const W: f64 = 760.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 200.0;
const PANEL_H: f64 = 240.0;
const TOP: f64 = 50.0;
const GAP: f64 = 80.0;

/// One panel: axes, integer ticks, a polyline and a point per rate per
/// series, and a legend at the right.
fn panel(
    out: &mut String,
    y0: f64,
    x: &[f64],
    (x_top, x_step): (f64, f64),
    y_label: &str,
    series: &[Series],
) {
    let plot_w = W - LEFT - RIGHT;
    let y_max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let (y_top, y_step) = axis_max(y_max);
    let px = |v: f64| LEFT + v / x_top * plot_w;
    let py = |v: f64| y0 + PANEL_H - v / y_top * PANEL_H;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
    );
    let mut t = 0.0;
    while t <= y_top + y_step / 2.0 {
        let y = py(t);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            t as u64
        );
        t += y_step;
    }
    let mut t = 0.0;
    while t <= x_top + x_step / 2.0 {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            px(t),
            y0 + PANEL_H + 16.0,
            t as u64
        );
        t += x_step;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">offered rate (IM/s)</text>"#,
        LEFT + plot_w / 2.0,
        y0 + PANEL_H + 36.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="13">{y_label}</text>"#,
        LEFT - 60.0,
        y0 + PANEL_H / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = x
            .iter()
            .zip(&s.values)
            .map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.colour,
            points.join(" ")
        );
        for (a, b) in x.iter().zip(&s.values) {
            let _ = writeln!(
                out,
                r#"<circle class="pt {}" cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: {} at {} IM/s offered</title></circle>"#,
                s.class,
                px(*a),
                py(*b),
                s.colour,
                s.label,
                b.round() as u64,
                a.round() as u64
            );
        }
        let ly = y0 + 20.0 + 22.0 * i as f64;
        let lx = LEFT + plot_w + 20.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            lx + 24.0,
            s.colour,
            lx + 30.0,
            ly + 4.0,
            s.label
        );
    }
}

/// The sweep's chart: throughput (accepted, archived IM/s) and p99
/// latency (send→accepted, send→archived, ms) against offered rate.
pub fn svg(reports: &[BenchReport], title: &str) -> String {
    let x: Vec<f64> = reports.iter().map(|r| r.offered_rate).collect();
    let x_axis = axis_max(x.iter().copied().fold(0.0, f64::max));
    let h = TOP + 2.0 * PANEL_H + GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="26" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    panel(
        &mut out,
        TOP,
        &x,
        x_axis,
        "throughput (IM/s)",
        &[
            Series {
                class: "accepted",
                label: "accepted",
                colour: "#1f77b4",
                values: reports.iter().map(|r| r.accepted_per_s).collect(),
            },
            Series {
                class: "archived",
                label: "archived",
                colour: "#2ca02c",
                values: reports.iter().map(|r| r.archived_per_s).collect(),
            },
        ],
    );
    panel(
        &mut out,
        TOP + PANEL_H + GAP,
        &x,
        x_axis,
        "p99 latency (ms)",
        &[
            Series {
                class: "accept-p99",
                label: "send→accepted p99",
                colour: "#ff7f0e",
                values: reports
                    .iter()
                    .map(|r| r.accept_us[1] as f64 / 1000.0)
                    .collect(),
            },
            Series {
                class: "archive-p99",
                label: "send→archived p99",
                colour: "#d62728",
                values: reports.iter().map(|r| r.archive_ms[1] as f64).collect(),
            },
        ],
    );
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_even_and_inclusive() {
        assert_eq!(
            rates("5000..60000", 6).unwrap(),
            vec![5000.0, 16000.0, 27000.0, 38000.0, 49000.0, 60000.0]
        );
        assert_eq!(rates("50..100", 2).unwrap(), vec![50.0, 100.0]);
    }

    #[test]
    fn bad_sweeps_are_refused() {
        for bad in [
            "60000..5000",
            "5000..5000",
            "5000",
            "a..b",
            "0..10",
            "-5..10",
        ] {
            assert!(rates(bad, 6).is_err(), "{bad}");
        }
        assert!(rates("1..10", 1).is_err());
    }

    #[test]
    fn ticks_are_integers() {
        assert_eq!(tick_step(60000.0), 20000.0);
        assert_eq!(tick_step(3.0), 1.0);
        assert_eq!(axis_max(17961.0), (20000.0, 5000.0));
        assert_eq!(axis_max(0.0), (1.0, 1.0));
    }
}

//! Pictures of a run: over simulated time, each front end's outgoing queue
//! and each archiving server's queue, quota use, link health and
//! critical-mode state, with the fault windows shaded.

use crate::report::RunResult;
use crate::scenario::Scenario;
use holdfast_actors::core::operator::Gauge;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Per node, gauge samples `(time in ms, gauge, value)`.
pub type Series = BTreeMap<String, Vec<(u64, &'static str, u64)>>;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

fn points(series: &Series, node: &str, gauge: Gauge, scale: f64) -> Vec<(f64, f64)> {
    series
        .get(node)
        .map(|v| {
            v.iter()
                .filter(|(_, g, _)| *g == gauge.name())
                .map(|(t, _, value)| (*t as f64 / 3_600_000.0, *value as f64 * scale))
                .collect()
        })
        .unwrap_or_default()
}

/// Draws the run into an SVG file.
pub fn draw(
    path: &Path,
    scn: &Scenario,
    result: &RunResult,
    series: &Series,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: cannot draw the plot: {e}", path.display());
    let hours = scn.duration_ms as f64 / 3_600_000.0;
    let windows: Vec<(f64, f64, String)> = scn
        .faults
        .iter()
        .map(|f| {
            let a = f.start_ms as f64 / 3_600_000.0;
            let b = f
                .duration_ms
                .map_or(hours, |d| (f.start_ms + d) as f64 / 3_600_000.0);
            (a, b.min(hours), f.describe())
        })
        .collect();
    let root = SVGBackend::new(path, (1200, 960)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (title, body) = root.split_vertically(40);
    title
        .draw_text(
            &format!(
                "{} — seed {}, {}",
                result.scenario, result.seed, result.semantics
            ),
            &("sans-serif", 22).into_font().color(&BLACK),
            (20, 10),
        )
        .map_err(|e| err(&e))?;
    let panels = body.split_evenly((3, 1));

    // 1. Queue depths.
    let fes = &scn.topology.front_ends;
    let archs = &scn.topology.archivers;
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for fe in fes {
        lines.push((
            format!("{fe} outgoing"),
            points(series, fe, Gauge::OutgoingDepth, 1.0),
        ));
    }
    for a in archs {
        lines.push((
            format!("{a} destination"),
            points(series, a, Gauge::DestinationDepth, 1.0),
        ));
    }
    panel(&panels[0], "queue depth (records)", hours, &windows, &lines).map_err(|e| err(&e))?;

    // 2. Quota use.
    let quota = scn.settings.queue_quota.max(1) as f64;
    let lines: Vec<(String, Vec<(f64, f64)>)> = fes
        .iter()
        .map(|fe| {
            (
                format!("{fe} quota use"),
                points(series, fe, Gauge::OutgoingBytes, 100.0 / quota),
            )
        })
        .collect();
    panel(
        &panels[1],
        "outgoing queue quota use (%)",
        hours,
        &windows,
        &lines,
    )
    .map_err(|e| err(&e))?;

    // 3. Link health and critical mode, one band per front end.
    let mut lines = Vec::new();
    for (i, fe) in fes.iter().enumerate() {
        let base = i as f64 * 2.5;
        let shift = |v: Vec<(f64, f64)>| {
            v.into_iter()
                .map(|(t, y)| (t, base + y))
                .collect::<Vec<_>>()
        };
        lines.push((
            format!("{fe} link failing"),
            shift(points(series, fe, Gauge::LinkFailing, 1.0)),
        ));
        lines.push((
            format!("{fe} critical shutdown"),
            shift(points(series, fe, Gauge::CriticalShutdown, 1.2)),
        ));
    }
    panel(
        &panels[2],
        "link failing / critical shutdown (per front end, low = fine)",
        hours,
        &windows,
        &lines,
    )
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    hours: f64,
    windows: &[(f64, f64, String)],
    lines: &[(String, Vec<(f64, f64)>)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = lines
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hours.max(0.01), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("simulated hours")
        .light_line_style(WHITE)
        .draw()?;
    chart.draw_series(
        windows
            .iter()
            .map(|(a, b, _)| Rectangle::new([(*a, 0.0), (*b, top)], RED.mix(0.12).filled())),
    )?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

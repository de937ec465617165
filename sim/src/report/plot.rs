//! Pictures of a run: over simulated time, each front end's outgoing queue
//! and each archiving server's queue (and, with group chat and compliance,
//! posts stored and delivered, sessions, events staged and exported),
//! quota use, link health and critical-mode state, with the fault windows
//! shaded. The time axis reads as a clock, its ticks on round steps.

use crate::report::RunResult;
use crate::scenario::Scenario;
use holdfast_actors::core::operator::Gauge;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Per node, gauge samples `(time in ms, gauge, value)`.
pub type Series = BTreeMap<String, Vec<(u64, &'static str, u64)>>;

const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// The time unit the axis is read in, from the run's length.
#[derive(Clone, Copy)]
struct Clock {
    /// Milliseconds per axis unit.
    ms: f64,
    /// The axis's caption: how its clock-like ticks read.
    name: &'static str,
}

impl Clock {
    fn for_run(duration_ms: u64) -> Clock {
        if duration_ms <= 20 * 60_000 {
            Clock {
                ms: 1_000.0,
                name: "time (minutes:seconds)",
            }
        } else if duration_ms <= 6 * 3_600_000 {
            Clock {
                ms: 60_000.0,
                name: "time (hours:minutes)",
            }
        } else {
            Clock {
                ms: 3_600_000.0,
                name: "time (hours:minutes)",
            }
        }
    }

    /// Where the time axis's ticks fall for a run of `duration_ms`: on
    /// whole clock steps (1, 2, 5, 10, 15 or 30 seconds or minutes, or 1,
    /// 2, 3, 6 or 12 hours, or days), the shortest step that gives at most
    /// ten ticks after 0. In axis units.
    fn ticks(self, duration_ms: u64) -> Vec<f64> {
        const S: u64 = 1_000;
        const M: u64 = 60 * S;
        const H: u64 = 60 * M;
        const STEPS: [u64; 19] = [
            S,
            2 * S,
            5 * S,
            10 * S,
            15 * S,
            30 * S,
            M,
            2 * M,
            5 * M,
            10 * M,
            15 * M,
            30 * M,
            H,
            2 * H,
            3 * H,
            6 * H,
            12 * H,
            24 * H,
            48 * H,
        ];
        let step = STEPS
            .into_iter()
            .find(|step| duration_ms / step <= 10)
            .unwrap_or_else(|| (duration_ms / 10).div_ceil(24 * H).max(1) * 24 * H);
        (0..=duration_ms / step)
            .map(|k| self.at(k * step))
            .collect()
    }

    fn at(self, ms: u64) -> f64 {
        ms as f64 / self.ms
    }

    /// A tick as on a clock: `m:ss` for seconds, `h:mm` for minutes and
    /// hours.
    fn label(self, x: f64) -> String {
        let ms = (x * self.ms).round() as u64;
        let secs = ms / 1000;
        if self.ms <= 1_000.0 {
            format!("{}:{:02}", secs / 60, secs % 60)
        } else {
            format!("{}:{:02}", secs / 3600, secs / 60 % 60)
        }
    }
}

fn points(series: &Series, node: &str, gauge: Gauge, scale: f64, clock: Clock) -> Vec<(f64, f64)> {
    series
        .get(node)
        .map(|v| {
            v.iter()
                .filter(|(_, g, _)| *g == gauge.name())
                .map(|(t, _, value)| (clock.at(*t), *value as f64 * scale))
                .collect()
        })
        .unwrap_or_default()
}

/// How a panel's values read.
#[derive(Clone, Copy, PartialEq)]
enum Values {
    /// Whole numbers of things.
    Count,
    /// 0 to 100.
    Percent,
}

/// A front end's state at a sample: 0 healthy, 1 link failing, 2 shut
/// down by critical mode.
fn states(series: &Series, fe: &str, clock: Clock) -> Vec<(f64, u8)> {
    let Some(v) = series.get(fe) else {
        return Vec::new();
    };
    let mut by_time: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (t, g, value) in v {
        let e = by_time.entry(*t).or_default();
        if *g == Gauge::LinkFailing.name() {
            e.0 = *value;
        } else if *g == Gauge::CriticalShutdown.name() {
            e.1 = *value;
        }
    }
    by_time
        .into_iter()
        .map(|(t, (failing, shut))| {
            let state = if shut > 0 {
                2
            } else if failing > 0 {
                1
            } else {
                0
            };
            (clock.at(t), state)
        })
        .collect()
}

const STATE_COLOURS: [RGBColor; 3] = [
    RGBColor(44, 160, 44),
    RGBColor(255, 159, 28),
    RGBColor(214, 39, 40),
];
const STATE_NAMES: [&str; 3] = ["healthy", "link failing", "shut down (critical mode)"];

/// Draws the run into an SVG file.
pub fn draw(
    path: &Path,
    scn: &Scenario,
    result: &RunResult,
    series: &Series,
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: cannot draw the plot: {e}", path.display());
    let clock = Clock::for_run(scn.duration_ms);
    let end = clock.at(scn.duration_ms);
    let ticks = clock.ticks(scn.duration_ms);
    let windows: Vec<(f64, f64, String)> = scn
        .faults
        .iter()
        .map(|f| {
            let a = clock.at(f.start_ms);
            let b = f.duration_ms.map_or(end, |d| clock.at(f.start_ms + d));
            (a, b.min(end), f.describe())
        })
        .collect();
    let chat = scn.topology.chat_store.is_some() || scn.topology.compliance.is_some();
    let height = if chat { 1300 } else { 1000 };
    let root = SVGBackend::new(path, (1200, height)).into_drawing_area();
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
    let panels = body.split_evenly((if chat { 4 } else { 3 }, 1));
    let mut panels = panels.iter();
    let mut next = || panels.next().expect("a panel for each picture");
    // Every panel but the last plots lines over the same time axis and
    // fault windows.
    let mut plot = |title: &str, lines: &[Line], values: Values| {
        panel(next(), title, clock, &ticks, end, &windows, lines, values).map_err(|e| err(&e))
    };
    // One line for `node`: its `gauge` as counted, labelled with `what`.
    let line = |node: &str, what: &str, gauge: Gauge| -> Line {
        (
            format!("{node} {what}"),
            points(series, node, gauge, 1.0, clock),
        )
    };

    // 1. What is held: queue depths, and for group chat and compliance the
    //    sessions open and the events staged for export.
    let fes = &scn.topology.front_ends;
    let mut lines: Vec<Line> = Vec::new();
    for fe in fes {
        lines.push(line(fe, "outgoing", Gauge::OutgoingDepth));
    }
    for a in &scn.topology.archivers {
        lines.push(line(a, "destination", Gauge::DestinationDepth));
    }
    for ch in &scn.topology.channels {
        lines.push(line(ch, "sessions", Gauge::ChatSessions));
    }
    if let Some(comp) = &scn.topology.compliance {
        lines.push(line(comp, "events staged", Gauge::ComplianceStaged));
    }
    lines.retain(|(_, pts)| !pts.is_empty());
    let title = match (scn.topology.chat_store.is_some(), &scn.topology.compliance) {
        (_, Some(_)) => "held: queued records, chat sessions, compliance events staged",
        (true, None) => "held: queued records, chat sessions",
        (false, None) => "queue depth (records)",
    };
    plot(title, &lines, Values::Count)?;

    // 2. For group chat and compliance, what went through since the start:
    //    posts stored and delivered, events exported.
    if chat {
        let mut lines: Vec<Line> = Vec::new();
        if let Some(store) = &scn.topology.chat_store {
            lines.push(line(store, "posts stored", Gauge::ChatPosts));
        }
        for ch in &scn.topology.channels {
            lines.push(line(ch, "posts delivered", Gauge::ChatDelivered));
        }
        if let Some(comp) = &scn.topology.compliance {
            lines.push(line(
                comp,
                "events exported",
                Gauge::ComplianceExportedEvents,
            ));
        }
        lines.retain(|(_, pts)| !pts.is_empty());
        let title = match (scn.topology.chat_store.is_some(), &scn.topology.compliance) {
            (true, Some(_)) => {
                "through so far: chat posts stored, posts delivered to clients, compliance events exported"
            }
            (true, None) => "through so far: chat posts stored, posts delivered to clients",
            (false, _) => "through so far: compliance events exported",
        };
        plot(title, &lines, Values::Count)?;
    }

    // 3. Quota use.
    let quota = scn.settings.queue_quota.max(1) as f64;
    let lines: Vec<Line> = fes
        .iter()
        .map(|fe| {
            let pts = points(series, fe, Gauge::OutgoingBytes, 100.0 / quota, clock);
            (format!("{fe} quota use"), pts)
        })
        .collect();
    plot(
        "outgoing queue quota use (% of the quota)",
        &lines,
        Values::Percent,
    )?;

    // 4. Each front end's state as a lane of a timeline.
    lanes(next(), fes, series, clock, &ticks, end, &windows).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The time axis: simulated time in the clock's unit, its ticks on round
/// clock steps (not where plotters would put them for a plain number
/// range), labelled as a clock reads.
struct TimeAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
    clock: Clock,
}

fn time_axis(end: f64, ticks: &[f64], clock: Clock) -> TimeAxis {
    TimeAxis {
        inner: (0f64..end.max(0.01)).into(),
        ticks: ticks.to_vec(),
        clock,
    }
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }
}

impl ValueFormatter<f64> for TimeAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.clock.label(*value)
    }
}

/// A plotted line: its label and its points.
type Line = (String, Vec<(f64, f64)>);

#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    clock: Clock,
    ticks: &[f64],
    end: f64,
    windows: &[(f64, f64, String)],
    lines: &[Line],
    values: Values,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let top = match values {
        Values::Percent => 100.0,
        Values::Count => {
            let max = lines
                .iter()
                .flat_map(|(_, v)| v.iter().map(|(_, y)| *y))
                .fold(1.0f64, f64::max);
            (max * 1.15).ceil()
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .margin_right(28)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(time_axis(end, ticks, clock), 0f64..top)?;
    let y_label = |y: &f64| match values {
        Values::Percent => format!("{y:.0}%"),
        Values::Count => format!("{y:.0}"),
    };
    chart
        .configure_mesh()
        .x_desc(clock.name)
        .y_label_formatter(&y_label)
        .light_line_style(WHITE)
        .draw()?;
    shade(&mut chart, windows, top)?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if !lines.is_empty() {
        legend(&mut chart)?;
    }
    Ok(())
}

/// The legend: the same box at the upper right on every panel.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<TimeAxis, RangedCoordf64>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
}

/// The fault windows, shaded, each labelled with what it was.
fn shade<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<TimeAxis, RangedCoordf64>>,
    windows: &[(f64, f64, String)],
    top: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart.draw_series(
        windows
            .iter()
            .map(|(a, b, _)| Rectangle::new([(*a, 0.0), (*b, top)], RED.mix(0.12).filled())),
    )?;
    chart.draw_series(windows.iter().enumerate().map(|(i, (a, _, what))| {
        // Staggered, so that windows close together stay readable.
        let y = top * (0.95 - 0.08 * (i % 4) as f64);
        Text::new(
            what.clone(),
            (*a, y),
            ("sans-serif", 12).into_font().color(&RED.mix(0.8)),
        )
    }))?;
    Ok(())
}

/// One lane per front end, coloured by its state over time.
fn lanes<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    fes: &[String],
    series: &Series,
    clock: Clock,
    ticks: &[f64],
    end: f64,
    windows: &[(f64, f64, String)],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = fes.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "front end state: healthy / link failing / shut down by critical mode",
            ("sans-serif", 16),
        )
        .margin(8)
        .margin_right(28)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(time_axis(end, ticks, clock), 0f64..n)?;
    let lane_name = |y: &f64| {
        let i = y.floor() as usize;
        if (y - y.floor() - 0.5).abs() < 0.01 {
            fes.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(clock.name)
        .y_labels(fes.len().max(1) * 2 + 1)
        .y_label_formatter(&lane_name)
        .disable_y_mesh()
        .light_line_style(WHITE)
        .draw()?;
    for (i, fe) in fes.iter().enumerate() {
        let y0 = i as f64 + 0.15;
        let y1 = i as f64 + 0.85;
        let samples = states(series, fe, clock);
        let spans = samples.iter().enumerate().map(|(k, (t, state))| {
            let next = samples.get(k + 1).map_or(end, |(t2, _)| *t2);
            Rectangle::new(
                [(*t, y0), (next, y1)],
                STATE_COLOURS[*state as usize].mix(0.85).filled(),
            )
        });
        chart.draw_series(spans)?;
    }
    for (state, name) in STATE_NAMES.iter().enumerate() {
        let colour = STATE_COLOURS[state];
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], colour.filled()));
    }
    shade(&mut chart, windows, n)?;
    legend(&mut chart)
}

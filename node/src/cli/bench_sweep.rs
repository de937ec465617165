//! `holdfast bench --sweep FROM..TO`: the benchmark at each of `--steps`
//! offered rates, a fresh cluster each, a table, one JSON line per rate
//! and an SVG chart.

use super::common::Failure;
use holdfast::bench::{BenchOptions, BenchReport};
use std::path::PathBuf;

pub(crate) fn run(
    range: &str,
    steps: usize,
    svg: Option<PathBuf>,
    opts: BenchOptions,
    json: bool,
) -> Result<(), Failure> {
    let rates = holdfast::bench_sweep::rates(range, steps)?;
    if opts.links != "tls" && opts.links != "plain" {
        return Err(format!("--links {:?}: expected tls or plain", opts.links).into());
    }
    let svg = svg.unwrap_or_else(|| PathBuf::from("bench-sweep.svg"));
    // A path that cannot be written fails now, not after minutes of runs.
    std::fs::write(&svg, "").map_err(|e| format!("--svg {}: {e}", svg.display()))?;
    let mut reports: Vec<BenchReport> = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        if opts.progress {
            eprintln!("rate {}/{}: {rate} IM/s", i + 1, rates.len());
        }
        reports.push(holdfast::bench::run(&BenchOptions {
            rate: *rate,
            ..opts.clone()
        })?);
    }
    if !json {
        println!(
            "{} rates for {} each over {} links, {} byte bodies, a fresh cluster each",
            rates.len(),
            humantime::format_duration(opts.duration),
            opts.links,
            opts.body_size
        );
        println!(
            "{:>8} {:>11} {:>11} {:>7} {:>7} {:>21} {:>21}",
            "offered",
            "accepted/s",
            "archived/s",
            "busy",
            "unknown",
            "accept p50/p99 (ms)",
            "archived p50/p99 (ms)"
        );
        for r in &reports {
            println!(
                "{:>8} {:>11.0} {:>11.0} {:>7} {:>7} {:>21} {:>21}",
                r.offered_rate,
                r.accepted_per_s,
                r.archived_per_s,
                r.busy,
                r.unknown,
                format!(
                    "{:.1} / {:.1}",
                    r.accept_us[0] as f64 / 1000.0,
                    r.accept_us[1] as f64 / 1000.0
                ),
                format!("{} / {}", r.archive_ms[0], r.archive_ms[1])
            );
        }
    }
    for r in &reports {
        println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
    }
    let title = format!(
        "holdfast bench: {} links, {} byte bodies, {} per rate",
        opts.links,
        opts.body_size,
        humantime::format_duration(opts.duration)
    );
    std::fs::write(&svg, holdfast::bench_sweep::svg(&reports, &title))
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    if !json {
        println!("chart: {}", svg.display());
    }
    Ok(())
}

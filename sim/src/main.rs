//! `holdfast-sim`: run scenario files in the deterministic simulator.
//!
//! Exit codes: 0 every expectation holds, 1 an expectation failed,
//! 2 a scenario file (or the command line) is wrong.

use clap::{Parser, Subcommand};
use holdfast_sim::scenario::{self, Scenario, ScenarioError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "holdfast-sim",
    version,
    about = "Replay holdfast fault scenarios in a deterministic simulation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one scenario file and check its expectations.
    Run {
        file: PathBuf,
        /// Seed of the run (default: the scenario's `seed`).
        #[arg(long)]
        seed: Option<u64>,
        /// Print one JSON object instead of the human summary.
        #[arg(long)]
        json: bool,
        /// Print the timeline of every simulated event (long).
        #[arg(long)]
        timeline: bool,
    },
    /// Run every scenario of the given files and folders and print a table.
    Suite {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print one JSON object per scenario instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Run every scenario under both semantics (lync2010 and ocs2007r2) and
    /// print a Markdown comparison (the source of docs/semantics.md).
    Compare {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Measure the simulator: run every scenario for several seeds on every
    /// core and print simulated time per wall second (table and one JSON line).
    Bench {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seeds per scenario (1..=N).
        #[arg(long, default_value_t = 3)]
        seeds: u64,
    },
    /// Validate scenario files without running them.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Scenario files named by `paths`: files as given, folders' `*.toml` sorted.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: cannot list the folder: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(format!(
                    "{}: no .toml scenario files in this folder",
                    p.display()
                ));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn load_all(files: &[PathBuf]) -> Result<Vec<Scenario>, ScenarioError> {
    files.iter().map(|f| scenario::load(Path::new(f))).collect()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.cmd {
        Cmd::Check { paths } => {
            let files = match collect(&paths) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut bad = false;
            for f in &files {
                match scenario::load(f) {
                    Ok(s) => println!("ok   {} ({})", f.display(), s.name),
                    Err(e) => {
                        eprintln!("error: {e}");
                        bad = true;
                    }
                }
            }
            ExitCode::from(if bad { 2 } else { 0 })
        }
        Cmd::Run {
            file,
            seed,
            json,
            timeline,
        } => {
            let scn = match scenario::load(&file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            sim::run_one(&scn, seed.unwrap_or(scn.seed), json, timeline)
        }
        Cmd::Bench { paths, seeds } => {
            let scenarios = match collect(&paths)
                .map_err(|e| e.to_string())
                .and_then(|f| load_all(&f).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            sim::bench(&scenarios, seeds.max(1))
        }
        Cmd::Compare { paths } => {
            let scenarios = match collect(&paths)
                .map_err(|e| e.to_string())
                .and_then(|f| load_all(&f).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            sim::compare(&scenarios)
        }
        Cmd::Suite { paths, json } => {
            let scenarios = match collect(&paths)
                .map_err(|e| e.to_string())
                .and_then(|f| load_all(&f).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            sim::run_suite(&scenarios, json)
        }
    }
}

#[cfg(madsim)]
mod sim {
    use holdfast_actors::units::fmt_ms;
    use holdfast_sim::report;
    use holdfast_sim::runner::{self, RunOptions};
    use holdfast_sim::scenario::{Scenario, Semantics};
    use std::process::ExitCode;
    use std::time::Instant;

    pub fn run_one(scn: &Scenario, seed: u64, json: bool, timeline: bool) -> ExitCode {
        let out = runner::run(scn, seed, &RunOptions { timeline });
        let failures = report::evaluate(scn, &out.result);
        if timeline {
            for line in &out.timeline {
                println!("{line}");
            }
        }
        if json {
            println!("{}", report::to_json(&out.result, &failures));
        } else {
            print!("{}", report::summary(&out.result, &failures));
        }
        ExitCode::from(if failures.is_empty() { 0 } else { 1 })
    }

    /// One cell: lost (and expired), and critical-mode shutdown latency.
    fn outcome(scn: &Scenario, semantics: Semantics) -> (String, String) {
        let mut s = scn.clone();
        s.settings.semantics = semantics;
        s.semantics = semantics;
        let r = runner::run(&s, s.seed, &RunOptions::default()).result;
        let c = &r.counts;
        let lost = if c.expired > 0 {
            format!("{} ({} expired)", c.lost, c.expired)
        } else {
            c.lost.to_string()
        };
        let latency = if !s.settings.critical_mode {
            "off".to_string()
        } else {
            let worst = r.critical.iter().filter_map(|sd| sd.latency_ms).max();
            match worst {
                // Whole seconds: the milliseconds are simulated network noise.
                Some(ms) => fmt_ms(ms / 1000 * 1000),
                None => "no shutdown".into(),
            }
        };
        (lost, latency)
    }

    pub fn bench(scenarios: &[Scenario], seeds: u64) -> ExitCode {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let jobs: Vec<(usize, u64)> = (0..scenarios.len())
            .flat_map(|i| (1..=seeds).map(move |s| (i, s)))
            .collect();
        let next = AtomicUsize::new(0);
        // Per scenario: wall seconds, traced events, failed runs.
        let results = Mutex::new(vec![(0.0f64, 0u64, 0u64); scenarios.len()]);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let Some(&(i, seed)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let t = Instant::now();
                    let out = runner::run(&scenarios[i], seed, &RunOptions::default());
                    let wall = t.elapsed().as_secs_f64();
                    let failed = !report::evaluate(&scenarios[i], &out.result).is_empty();
                    let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                    r[i].0 += wall;
                    r[i].1 += out.result.trace_len;
                    r[i].2 += u64::from(failed);
                });
            }
        });
        let elapsed = started.elapsed().as_secs_f64();
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        println!(
            "{:<28} {:>5} {:>10} {:>9} {:>12} {:>12} {:>6}",
            "scenario", "runs", "simulated", "wall", "sim s/wall s", "events/s", "failed"
        );
        let (mut sim_total, mut wall_total, mut events_total, mut failed_total) =
            (0.0, 0.0, 0u64, 0u64);
        for (scn, (wall, events, failed)) in scenarios.iter().zip(&results) {
            let simulated = scn.duration_ms as f64 / 1000.0 * seeds as f64;
            sim_total += simulated;
            wall_total += wall;
            events_total += events;
            failed_total += failed;
            println!(
                "{:<28} {:>5} {:>9.0}s {:>8.2}s {:>12.0} {:>12.0} {:>6}",
                scn.name,
                seeds,
                simulated,
                wall,
                simulated / wall.max(1e-9),
                *events as f64 / wall.max(1e-9),
                failed
            );
        }
        let runs = scenarios.len() as u64 * seeds;
        println!(
            "{runs} runs on {workers} threads in {elapsed:.1}s: {:.0} simulated seconds per wall second per thread, {:.1} runs per minute",
            sim_total / wall_total.max(1e-9),
            runs as f64 / elapsed.max(1e-9) * 60.0
        );
        println!(
            "{}",
            serde_json::json!({
                "bench": "simulator",
                "scenarios": scenarios.len(),
                "seeds": seeds,
                "runs": runs,
                "threads": workers,
                "failed_runs": failed_total,
                "simulated_secs": sim_total,
                "cpu_secs": wall_total,
                "elapsed_secs": elapsed,
                "sim_secs_per_cpu_sec": sim_total / wall_total.max(1e-9),
                "events_per_cpu_sec": events_total as f64 / wall_total.max(1e-9),
                "runs_per_minute": runs as f64 / elapsed.max(1e-9) * 60.0,
            })
        );
        ExitCode::from(if failed_total == 0 { 0 } else { 1 })
    }

    pub fn compare(scenarios: &[Scenario]) -> ExitCode {
        println!(
            "# Legacy (OCS 2007 R2) and enhanced (Lync Server 2010) semantics, side by side\n"
        );
        println!("Every scenario of the library, run with its own seed under both semantics;");
        println!("the other settings are the scenario's. *Lost* counts accepted archivable");
        println!("IMs that never reached the archive (of which *expired*: dropped by a");
        println!("queue's expiry). *Shutdown* is the worst critical-mode shutdown latency,");
        println!("from the fault that broke a front end's archiving path to the moment it");
        println!("stopped accepting IM (`off`: the scenario runs without critical mode).\n");
        println!("Generated by `cargo sim compare scenarios`; do not edit by hand.\n");
        println!("| scenario | lync2010 lost | lync2010 shutdown | ocs2007r2 lost | ocs2007r2 shutdown |");
        println!("|---|---|---|---|---|");
        for scn in scenarios {
            let (el, es) = outcome(scn, Semantics::Lync2010);
            let (ll, ls) = outcome(scn, Semantics::Ocs2007r2);
            println!("| {} | {el} | {es} | {ll} | {ls} |", scn.name);
        }
        ExitCode::SUCCESS
    }

    pub fn run_suite(scenarios: &[Scenario], json: bool) -> ExitCode {
        if !json {
            println!(
                "{:<28} {:>6} {:>9} {:>9} {:>8} {:>7} {:>9} {:>6} {:>6} {:>6} {:>8}  result",
                "scenario",
                "seed",
                "simulated",
                "accepted",
                "rejected",
                "unknown",
                "archived",
                "lost",
                "dups",
                "pend",
                "wall"
            );
        }
        let mut failed = 0;
        for scn in scenarios {
            let started = Instant::now();
            let out = runner::run(scn, scn.seed, &RunOptions::default());
            let wall = started.elapsed().as_secs_f64();
            let failures = report::evaluate(scn, &out.result);
            if !failures.is_empty() {
                failed += 1;
            }
            let r = &out.result;
            if json {
                let mut v = report::to_json(r, &failures);
                v["wall_secs"] = serde_json::json!(wall);
                println!("{v}");
            } else {
                let c = &r.counts;
                println!(
                    "{:<28} {:>6} {:>9} {:>9} {:>8} {:>7} {:>9} {:>6} {:>6} {:>6} {:>7.1}s  {}",
                    r.scenario,
                    r.seed,
                    holdfast_actors::units::fmt_ms(r.simulated_ms),
                    c.accepted,
                    c.rejected,
                    c.unknown,
                    c.archived,
                    c.lost,
                    c.duplicates,
                    c.pending,
                    wall,
                    if failures.is_empty() {
                        "PASS".to_string()
                    } else {
                        format!("FAIL: {}", failures.join("; "))
                    }
                );
            }
        }
        if !json {
            println!(
                "{} scenarios, {} passed, {} failed",
                scenarios.len(),
                scenarios.len() - failed,
                failed
            );
        }
        ExitCode::from(if failed == 0 { 0 } else { 1 })
    }
}

#[cfg(not(madsim))]
mod sim {
    pub fn bench(_: &[Scenario], _: u64) -> ExitCode {
        needs_madsim()
    }
    pub fn compare(_: &[Scenario]) -> ExitCode {
        needs_madsim()
    }
    use holdfast_sim::scenario::Scenario;
    use std::process::ExitCode;

    fn needs_madsim() -> ExitCode {
        eprintln!("error: this binary was built without the simulator; run it through `cargo sim ...`, which builds it with --cfg madsim in target/sim");
        ExitCode::from(2)
    }
    pub fn run_one(_: &Scenario, _: u64, _: bool, _: bool) -> ExitCode {
        needs_madsim()
    }
    pub fn run_suite(_: &[Scenario], _: bool) -> ExitCode {
        needs_madsim()
    }
}

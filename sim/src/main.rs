//! `holdfast-sim`: run scenario files in the deterministic simulator.
//!
//! Exit codes: 0 every expectation holds, 1 an expectation failed (or a
//! replay diverged), 2 a scenario file (or the command line) is wrong,
//! 141 standard output was closed before everything was written (`| head`;
//! the status a shell shows for a program killed by SIGPIPE).

use clap::{Parser, Subcommand};
use holdfast_sim::scenario::{self, Scenario};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The simulator allocates and frees a message's buffers at every hop;
// mimalloc's thread-local free lists cost a fraction of glibc's. The
// allocator is process plumbing: nothing in a run depends on addresses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` for the results: when the reader of standard output has gone
/// (`holdfast-sim run FILE --timeline | head`), stop quietly with exit code
/// 141 rather than panic.
macro_rules! out {
    ($($arg:tt)*) => {
        crate::write_out(format_args!($($arg)*), true)
    };
}

/// `print!`, the same way.
#[cfg(madsim)]
macro_rules! out_part {
    ($($arg:tt)*) => {
        crate::write_out(format_args!($($arg)*), false)
    };
}

fn write_out(args: std::fmt::Arguments, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_fmt(args).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

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
        /// Draw queue depth, quota use, link health, critical mode and the
        /// fault windows over simulated time into this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Rerun one seed exactly: what a failing sweep run tells you to do.
    Replay {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        /// Print the timeline of messages, timers, faults and operator events.
        #[arg(long)]
        trace: bool,
        /// Run twice and fail if the two traces differ.
        #[arg(long)]
        check_determinism: bool,
        #[arg(long)]
        json: bool,
        /// Draw the run into this SVG file (see `run --plot`).
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Run every scenario for many seeds and print a table per scenario.
    Sweep {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Seeds per scenario.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// First seed (seeds run from here upwards).
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Parallel runs (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run every n-th run a second time and fail if its trace differs.
        #[arg(long, value_name = "N")]
        check_determinism_every: Option<usize>,
        /// One JSON object per run, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Run every scenario of the given files and folders with its own seed
    /// and print a table.
    Suite {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print one JSON object per scenario instead of the table.
        #[arg(long)]
        json: bool,
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
    /// Run every scenario under both semantics (lync2010 and ocs2007r2) and
    /// print a Markdown comparison (the source of docs/semantics.md).
    Compare {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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

/// Loads every scenario named by `paths`, or says what is wrong.
fn load_all(paths: &[PathBuf]) -> Result<Vec<Scenario>, String> {
    let files = collect(paths)?;
    files
        .iter()
        .map(|f| scenario::load(Path::new(f)).map_err(|e| e.to_string()))
        .collect()
}

fn init_logging() {
    // Without RUST_LOG no subscriber is installed at all: span bookkeeping
    // for every simulated task would otherwise cost several percent.
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
}

fn bad_input(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.cmd {
        Cmd::Check { paths } => {
            let files = match collect(&paths) {
                Ok(f) => f,
                Err(e) => return bad_input(e),
            };
            let mut bad = false;
            for f in &files {
                match scenario::load(f) {
                    Ok(s) => out!("ok   {} ({})", f.display(), s.name),
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
            plot,
        } => match scenario::load(&file) {
            Ok(scn) => sim::run_one(
                &scn,
                seed.unwrap_or(scn.seed),
                json,
                timeline,
                plot.as_deref(),
            ),
            Err(e) => bad_input(e),
        },
        Cmd::Replay {
            file,
            seed,
            trace,
            check_determinism,
            json,
            plot,
        } => match scenario::load(&file) {
            Ok(scn) if check_determinism => sim::check_determinism(&scn, seed),
            Ok(scn) => sim::run_one(&scn, seed, json, trace, plot.as_deref()),
            Err(e) => bad_input(e),
        },
        Cmd::Sweep {
            paths,
            seeds,
            first_seed,
            jobs,
            check_determinism_every,
            json,
        } => match load_all(&paths) {
            Ok(s) => sim::sweep(
                &s,
                first_seed,
                seeds.max(1),
                jobs,
                check_determinism_every,
                json,
            ),
            Err(e) => bad_input(e),
        },
        Cmd::Compare { paths } => match load_all(&paths) {
            Ok(s) => sim::compare(&s),
            Err(e) => bad_input(e),
        },
        Cmd::Bench { paths, seeds } => match load_all(&paths) {
            Ok(s) => sim::bench(&s, seeds.max(1)),
            Err(e) => bad_input(e),
        },
        Cmd::Suite { paths, json } => match load_all(&paths) {
            Ok(s) => sim::run_suite(&s, json),
            Err(e) => bad_input(e),
        },
    }
}

#[cfg(madsim)]
mod sim {
    use holdfast_actors::core::units::fmt_ms;
    use holdfast_sim::report;
    use holdfast_sim::runner::{self, RunOptions};
    use holdfast_sim::scenario::{Scenario, Semantics};
    use holdfast_sim::sweep::{self, max_queue_depth, replay_command, worst_latency};
    use holdfast_sim::usage;
    use std::collections::BTreeMap;
    use std::io::IsTerminal;
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::Instant;

    fn workers(jobs: Option<usize>) -> usize {
        jobs.unwrap_or_else(sweep::every_core)
    }

    pub fn run_one(
        scn: &Scenario,
        seed: u64,
        json: bool,
        timeline: bool,
        plot: Option<&Path>,
    ) -> ExitCode {
        let before = usage::process();
        let out = runner::run(
            scn,
            seed,
            &RunOptions {
                timeline,
                series: plot.is_some(),
            },
        );
        let failures = report::evaluate(scn, &out.result);
        let after = usage::process();
        if let Some(path) = plot {
            if let Err(e) =
                holdfast_sim::report::plot::draw(path, &out.scenario, &out.result, &out.series)
            {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            eprintln!("plot written to {}", path.display());
        }
        if timeline {
            for line in &out.timeline {
                out!("{line}");
            }
        }
        if json {
            out!("{}", report::to_json(&out.result, &failures));
        } else {
            out_part!("{}", report::summary(&out.result, &failures));
            // The simulator's own cost (not part of the result: it varies
            // with the machine, the result does not).
            let cpu = after.cpu_secs - before.cpu_secs;
            out!(
                "  simulator: {} events in {cpu:.2} CPU s ({:.0} events per CPU second), peak memory {:.0} MB",
                out.result.trace_len,
                out.result.trace_len as f64 / cpu.max(1e-9),
                usage::mb(after.max_rss)
            );
        }
        ExitCode::from(if failures.is_empty() { 0 } else { 1 })
    }

    pub fn check_determinism(scn: &Scenario, seed: u64) -> ExitCode {
        let opts = RunOptions {
            timeline: true,
            series: false,
        };
        let a = runner::run(scn, seed, &opts);
        let b = runner::run(scn, seed, &opts);
        let (ha, hb) = (a.result.trace_hash, b.result.trace_hash);
        if ha == hb && a.timeline == b.timeline {
            out!(
                "{} seed {seed}: deterministic (trace {ha:016x}, {} events)",
                scn.name,
                a.result.trace_len
            );
            return ExitCode::SUCCESS;
        }
        let at = a.timeline.iter().zip(&b.timeline).position(|(x, y)| x != y);
        out!(
            "{} seed {seed}: NOT deterministic: trace {ha:016x} vs {hb:016x}",
            scn.name
        );
        if let Some(i) = at {
            out!(
                "first difference at event {i}:\n  {}\n  {}",
                a.timeline[i],
                b.timeline[i]
            );
        }
        ExitCode::from(1)
    }

    pub fn sweep(
        scenarios: &[Scenario],
        first_seed: u64,
        seeds: u64,
        jobs: Option<usize>,
        determinism_every: Option<usize>,
        json: bool,
    ) -> ExitCode {
        let job_list = sweep::every_seed(scenarios, first_seed..first_seed + seeds);
        let started = Instant::now();
        let progress = !json && std::io::stderr().is_terminal();
        let outcomes = sweep::run_all(scenarios, &job_list, workers(jobs), progress);
        // Determinism: rerun a sample and compare traces.
        let mut diverged = Vec::new();
        if let Some(every) = determinism_every.filter(|n| *n > 0) {
            let sample: Vec<(usize, u64)> = job_list.iter().copied().step_by(every).collect();
            let again = sweep::run_all(scenarios, &sample, workers(jobs), progress);
            for o in again {
                let first = outcomes
                    .iter()
                    .find(|x| x.scenario == o.scenario && x.seed == o.seed);
                if first.map(|f| f.result.trace_hash) != Some(o.result.trace_hash) {
                    diverged.push((o.scenario, o.seed));
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        if json {
            for o in &outcomes {
                let mut v = report::to_json(&o.result, &o.failures);
                v["wall_secs"] = serde_json::json!(o.wall_secs);
                out!("{v}");
            }
        }
        // Per scenario: runs, failures, worst latency, deepest queue, and
        // for group chat and compliance the posts accepted and the events
        // exported over every run.
        let mut table: BTreeMap<usize, SweepRow> = BTreeMap::new();
        for o in &outcomes {
            let row = table.entry(o.scenario).or_default();
            row.runs += 1;
            row.failures += u64::from(!o.failures.is_empty());
            row.worst_latency = row.worst_latency.max(worst_latency(&o.result));
            row.depth = row.depth.max(max_queue_depth(&o.result));
            if let Some(c) = &o.result.chat {
                *row.posts.get_or_insert(0) += c.accepted;
                if let Some(k) = &c.compliance {
                    *row.exported.get_or_insert(0) += k.exported;
                }
            }
        }
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
        let simulated: f64 = outcomes
            .iter()
            .map(|o| o.result.simulated_ms as f64 / 1000.0)
            .sum();
        if json {
            out!(
                "{}",
                serde_json::json!({
                    "sweep": true,
                    "runs": outcomes.len(),
                    "failed_runs": failed.len(),
                    "nondeterministic_runs": diverged.len(),
                    "nondeterministic": diverged.iter().map(|(i, seed)| serde_json::json!({
                        "scenario": scenarios[*i].name,
                        "seed": seed,
                        "check": format!("cargo sim replay {} --seed {seed} --check-determinism", scenarios[*i].file),
                    })).collect::<Vec<_>>(),
                    "elapsed_secs": elapsed,
                    "simulated_secs": simulated,
                    "replay": failed.iter().map(|o| replay_command(&scenarios[o.scenario].file, o.seed)).collect::<Vec<_>>(),
                })
            );
        } else {
            out!(
                "{:<28} {:>6} {:>8} {:>16} {:>11} {:>9} {:>9}",
                "scenario",
                "runs",
                "failures",
                "worst shutdown",
                "max depth",
                "posts",
                "exported"
            );
            let or_dash = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
            for (i, row) in &table {
                out!(
                    "{:<28} {:>6} {:>8} {:>16} {:>11} {:>9} {:>9}",
                    scenarios[*i].name,
                    row.runs,
                    row.failures,
                    row.worst_latency
                        .map(|l| fmt_ms(l / 1000 * 1000))
                        .unwrap_or_else(|| "-".into()),
                    row.depth,
                    or_dash(row.posts),
                    or_dash(row.exported)
                );
            }
            for o in &failed {
                out!(
                    "\nFAIL {} seed {}: {}",
                    scenarios[o.scenario].name,
                    o.seed,
                    o.failures.join("; ")
                );
                out!(
                    "  replay: {}",
                    replay_command(&scenarios[o.scenario].file, o.seed)
                );
            }
            for (i, seed) in &diverged {
                out!("\nNONDETERMINISTIC {} seed {seed}", scenarios[*i].name);
                out!(
                    "  check: cargo sim replay {} --seed {seed} --check-determinism",
                    scenarios[*i].file
                );
            }
            out!(
                "\n{} runs in {elapsed:.1}s ({:.0} simulated seconds per wall second): {} failed, {} nondeterministic",
                outcomes.len(),
                simulated / elapsed.max(1e-9),
                failed.len(),
                diverged.len()
            );
        }
        ExitCode::from(if failed.is_empty() && diverged.is_empty() {
            0
        } else {
            1
        })
    }

    /// One scenario's line of the sweep table.
    #[derive(Default)]
    struct SweepRow {
        runs: u64,
        failures: u64,
        worst_latency: Option<u64>,
        depth: u64,
        /// Chat posts accepted, over every run (group chat scenarios).
        posts: Option<u64>,
        /// Compliance events exported, over every run.
        exported: Option<u64>,
    }

    pub fn run_suite(scenarios: &[Scenario], json: bool) -> ExitCode {
        let jobs = sweep::own_seeds(scenarios);
        let outcomes = sweep::run_all(
            scenarios,
            &jobs,
            workers(None),
            !json && std::io::stderr().is_terminal(),
        );
        if !json {
            out!(
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
        for o in &outcomes {
            let r = &o.result;
            if !o.failures.is_empty() {
                failed += 1;
            }
            if json {
                let mut v = report::to_json(r, &o.failures);
                v["wall_secs"] = serde_json::json!(o.wall_secs);
                out!("{v}");
            } else {
                let c = &r.counts;
                out!(
                    "{:<28} {:>6} {:>9} {:>9} {:>8} {:>7} {:>9} {:>6} {:>6} {:>6} {:>7.1}s  {}",
                    r.scenario,
                    r.seed,
                    fmt_ms(r.simulated_ms),
                    c.accepted,
                    c.rejected,
                    c.unknown,
                    c.archived,
                    c.lost,
                    c.duplicates,
                    c.pending,
                    o.wall_secs,
                    if o.failures.is_empty() {
                        "PASS".to_string()
                    } else {
                        format!("FAIL: {}", o.failures.join("; "))
                    }
                );
                // Chat and compliance scenarios run few or no IMs: their
                // own figures, on a line of their own.
                if let Some(line) = chat_line(r) {
                    out!("  {line}");
                }
            }
        }
        if !json {
            out!(
                "{} scenarios, {} passed, {} failed",
                scenarios.len(),
                scenarios.len() - failed,
                failed
            );
        }
        ExitCode::from(if failed == 0 { 0 } else { 1 })
    }

    /// The group chat and compliance figures of a run, if it had any.
    fn chat_line(r: &report::RunResult) -> Option<String> {
        let c = r.chat.as_ref()?;
        let mut line = format!(
            "chat: {} posts accepted, {} stored, {} lost; {} deliveries, {} missed",
            c.accepted, c.stored, c.lost, c.delivered, c.missed
        );
        if let Some(k) = &c.compliance {
            line += &format!(
                "; compliance: {} events exported in {} batches, {} missing, {} duplicated",
                k.exported, k.batches, k.missing, k.duplicates
            );
        }
        Some(line)
    }

    pub fn bench(scenarios: &[Scenario], seeds: u64) -> ExitCode {
        let jobs = sweep::every_seed(scenarios, 1..=seeds);
        let threads = workers(None);
        let started = Instant::now();
        let outcomes = sweep::run_all(scenarios, &jobs, threads, false);
        let elapsed = started.elapsed().as_secs_f64();
        out!(
            "{:<28} {:>5} {:>10} {:>9} {:>12} {:>12} {:>6}",
            "scenario",
            "runs",
            "simulated",
            "cpu",
            "sim s/cpu s",
            "events/s",
            "failed"
        );
        let (mut sim_total, mut cpu_total, mut events_total, mut failed_total) =
            (0.0, 0.0, 0u64, 0u64);
        for (i, scn) in scenarios.iter().enumerate() {
            let mine: Vec<_> = outcomes.iter().filter(|o| o.scenario == i).collect();
            let simulated = scn.duration_ms as f64 / 1000.0 * mine.len() as f64;
            let cpu: f64 = mine.iter().map(|o| o.cpu_secs).sum();
            let events: u64 = mine.iter().map(|o| o.result.trace_len).sum();
            let failed = mine.iter().filter(|o| !o.failures.is_empty()).count() as u64;
            sim_total += simulated;
            cpu_total += cpu;
            events_total += events;
            failed_total += failed;
            out!(
                "{:<28} {:>5} {:>9.0}s {:>8.2}s {:>12.0} {:>12.0} {:>6}",
                scn.name,
                mine.len(),
                simulated,
                cpu,
                simulated / cpu.max(1e-9),
                events as f64 / cpu.max(1e-9),
                failed
            );
        }
        let runs = jobs.len();
        // What a sweep of these scenarios over 100 seeds would take at this
        // rate: the figure the simulator's speed target is stated in.
        let per_100_seeds = elapsed / seeds as f64 * 100.0;
        out!(
            "{runs} runs on {threads} threads in {elapsed:.1}s: {:.0} simulated seconds per CPU second, {:.1} runs per minute, {:.2} seeds of every scenario per minute",
            sim_total / cpu_total.max(1e-9),
            runs as f64 / elapsed.max(1e-9) * 60.0,
            seeds as f64 / elapsed.max(1e-9) * 60.0,
        );
        out!(
            "these {} scenarios × 100 seeds would take about {:.0} minutes on {threads} threads",
            scenarios.len(),
            per_100_seeds / 60.0
        );
        // Every run of the bench shares the process: with several threads
        // this is the peak of the runs that were in memory together.
        let max_rss = usage::process().max_rss;
        out!(
            "peak memory {:.0} MB (up to {threads} runs at a time)",
            usage::mb(max_rss)
        );
        out!(
            "{}",
            serde_json::json!({
                "bench": "simulator",
                "scenarios": scenarios.len(),
                "seeds": seeds,
                "runs": runs,
                "threads": threads,
                "failed_runs": failed_total,
                "simulated_secs": sim_total,
                "cpu_secs": cpu_total,
                "elapsed_secs": elapsed,
                "sim_secs_per_cpu_sec": sim_total / cpu_total.max(1e-9),
                "events_per_cpu_sec": events_total as f64 / cpu_total.max(1e-9),
                "runs_per_minute": runs as f64 / elapsed.max(1e-9) * 60.0,
                "seeds_per_minute": seeds as f64 / elapsed.max(1e-9) * 60.0,
                "projected_100_seeds_secs": per_100_seeds,
                "max_rss_bytes": max_rss,
            })
        );
        ExitCode::from(if failed_total == 0 { 0 } else { 1 })
    }

    /// The scenario as it would run under `semantics`.
    fn under(scn: &Scenario, semantics: Semantics) -> Scenario {
        let mut s = scn.clone();
        s.settings.semantics = semantics;
        s.semantics = semantics;
        s
    }

    /// One cell: lost (and expired), and critical-mode shutdown latency.
    fn outcome(s: &Scenario, r: &report::RunResult) -> (String, String) {
        let c = &r.counts;
        let lost = if c.expired > 0 {
            format!("{} ({} expired)", c.lost, c.expired)
        } else {
            c.lost.to_string()
        };
        let latency = if !s.settings.critical_mode {
            "off".to_string()
        } else {
            match worst_latency(r) {
                // Whole seconds: the milliseconds are simulated network noise.
                Some(ms) => fmt_ms(ms / 1000 * 1000),
                None => "no shutdown".into(),
            }
        };
        (lost, latency)
    }

    /// Group chat and compliance, for a scenario with Channel servers:
    /// posts lost and deliveries missed; events and files missing from the
    /// compliance export. `—` where the scenario has neither.
    fn chat_outcome(r: &report::RunResult) -> (String, String) {
        let Some(ch) = &r.chat else {
            return ("—".into(), "—".into());
        };
        let chat = format!(
            "{} posts: {} lost, {} missed",
            ch.accepted, ch.lost, ch.missed
        );
        let compliance = ch.compliance.as_ref().map_or("—".into(), |c| {
            format!(
                "{} events: {} missing; {} files: {} missing",
                c.exported, c.missing, c.files_exported, c.files_missing
            )
        });
        (chat, compliance)
    }

    /// `a`, or `a / b` when the two semantics differ.
    fn both_ways(a: String, b: String) -> String {
        if a == b {
            a
        } else {
            format!("{a} / {b}")
        }
    }

    pub fn compare(scenarios: &[Scenario]) -> ExitCode {
        out!("# Legacy (OCS 2007 R2) and enhanced (Lync Server 2010) semantics, side by side\n");
        out!("Every scenario of the library, run with its own seed under both semantics;");
        out!("the other settings are the scenario's. *Lost* counts accepted archivable");
        out!("IMs that never reached the archive (of which *expired*: dropped by a");
        out!("queue's expiry; under OCS 2007 R2 the rest are IMs whose recipient's");
        out!("answer never came, which a legacy front end does not archive, as when");
        out!("a link between front ends is cut for longer than TCP retransmits).");
        out!("*Shutdown* is the worst critical-mode shutdown latency,");
        out!("from the fault that broke a front end's archiving path to the moment it");
        out!("stopped accepting IM (`off`: the scenario runs without critical mode).");
        out!("*Chat* counts the posts accepted, those missing from the chat store and");
        out!("the deliveries members were owed and never got; *compliance*, the events");
        out!("and uploaded files exported and those missing from the export (one figure");
        out!("when both semantics agree, `lync2010 / ocs2007r2` when they differ).\n");
        out!("Generated by `cargo sim compare scenarios`; do not edit by hand.\n");
        out!("| scenario | lync2010 lost | lync2010 shutdown | ocs2007r2 lost | ocs2007r2 shutdown | chat | compliance |");
        out!("|---|---|---|---|---|---|---|");
        // Both semantics of every scenario, on every core.
        let both: Vec<Scenario> = scenarios
            .iter()
            .flat_map(|s| {
                [
                    under(s, Semantics::Lync2010),
                    under(s, Semantics::Ocs2007r2),
                ]
            })
            .collect();
        let jobs = sweep::own_seeds(&both);
        let runs = sweep::run_all(&both, &jobs, workers(None), std::io::stderr().is_terminal());
        for pair in runs.chunks(2) {
            let (el, es) = outcome(&both[pair[0].scenario], &pair[0].result);
            let (ll, ls) = outcome(&both[pair[1].scenario], &pair[1].result);
            let (ec, ep) = chat_outcome(&pair[0].result);
            let (lc, lp) = chat_outcome(&pair[1].result);
            out!(
                "| {} | {el} | {es} | {ll} | {ls} | {} | {} |",
                pair[0].result.scenario,
                both_ways(ec, lc),
                both_ways(ep, lp)
            );
        }
        ExitCode::SUCCESS
    }
}

#[cfg(not(madsim))]
mod sim {
    use holdfast_sim::scenario::Scenario;
    use std::process::ExitCode;

    fn needs_madsim() -> ExitCode {
        eprintln!("error: this binary was built without the simulator; run it through `cargo sim ...`, which builds it with --cfg madsim in target/sim");
        ExitCode::from(2)
    }
    pub fn run_one(
        _: &Scenario,
        _: u64,
        _: bool,
        _: bool,
        _: Option<&std::path::Path>,
    ) -> ExitCode {
        needs_madsim()
    }
    pub fn check_determinism(_: &Scenario, _: u64) -> ExitCode {
        needs_madsim()
    }
    pub fn sweep(
        _: &[Scenario],
        _: u64,
        _: u64,
        _: Option<usize>,
        _: Option<usize>,
        _: bool,
    ) -> ExitCode {
        needs_madsim()
    }
    pub fn run_suite(_: &[Scenario], _: bool) -> ExitCode {
        needs_madsim()
    }
    pub fn bench(_: &[Scenario], _: u64) -> ExitCode {
        needs_madsim()
    }
    pub fn compare(_: &[Scenario]) -> ExitCode {
        needs_madsim()
    }
}

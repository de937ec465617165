//! Many runs at once: a worker per core, each run in its own madsim runtime
//! on its own thread (runs share nothing, so the order they finish in
//! changes no result). Used by `sweep`, `bench`, `suite` and the tests.

use crate::report::{self, RunResult};
use crate::runner::{self, RunOptions};
use crate::scenario::Scenario;
use crate::usage;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One finished run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub scenario: usize,
    pub seed: u64,
    pub result: RunResult,
    pub failures: Vec<String>,
    pub wall_secs: f64,
    /// CPU seconds (user + system) of the thread that ran it: what a run
    /// costs, whatever else the machine was doing meanwhile.
    pub cpu_secs: f64,
}

/// The jobs that run each of `scenarios` once, with its own seed.
pub fn own_seeds(scenarios: &[Scenario]) -> Vec<(usize, u64)> {
    scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| (i, s.seed))
        .collect()
}

/// The jobs that run each of `scenarios` with every seed of `seeds`.
pub fn every_seed(
    scenarios: &[Scenario],
    seeds: impl Iterator<Item = u64> + Clone,
) -> Vec<(usize, u64)> {
    (0..scenarios.len())
        .flat_map(|i| seeds.clone().map(move |s| (i, s)))
        .collect()
}

/// A worker for each core of the machine.
pub fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs every `(scenario index, seed)` job on `workers` threads; results come
/// back in job order. `progress` shows a bar on a terminal.
pub fn run_all(
    scenarios: &[Scenario],
    jobs: &[(usize, u64)],
    workers: usize,
    progress: bool,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
    let failed = AtomicUsize::new(0);
    let simulated = Mutex::new(0.0f64);
    // Wall-clock time only feeds the progress bar and reported speed; no
    // run reads it (runs see only madsim's simulated clock).
    let started = Instant::now();
    let bar = if progress {
        let b = ProgressBar::new(jobs.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} runs  {msg}  [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(scn, seed)) = jobs.get(i) else {
                    return;
                };
                let t = Instant::now();
                let cpu = usage::thread().cpu_secs;
                // A panicking run is a failure of that seed, reported with
                // its replay command like any other, not the end of the sweep.
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let out = runner::run(&scenarios[scn], seed, &RunOptions::default());
                    let failures = report::evaluate(&scenarios[scn], &out.result);
                    (out, failures)
                }));
                let (result, failures) = match run {
                    Ok((out, failures)) => (out.result, failures),
                    Err(panic) => {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        (
                            RunResult::empty(&scenarios[scn], seed),
                            vec![format!("the run panicked: {what}")],
                        )
                    }
                };
                let wall_secs = t.elapsed().as_secs_f64();
                let cpu_secs = usage::thread().cpu_secs - cpu;
                if !failures.is_empty() {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                let sim_total = {
                    let mut sim = simulated.lock().unwrap_or_else(|p| p.into_inner());
                    *sim += result.simulated_ms as f64 / 1000.0;
                    *sim
                };
                bar.set_message(format!(
                    "{} failed, {:.0} simulated s/s",
                    failed.load(Ordering::SeqCst),
                    sim_total / started.elapsed().as_secs_f64().max(1e-9)
                ));
                bar.inc(1);
                done.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(Outcome {
                    scenario: scn,
                    seed,
                    result,
                    failures,
                    wall_secs,
                    cpu_secs,
                });
            });
        }
    });
    bar.finish_and_clear();
    done.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|o| o.expect("every job ran"))
        .collect()
}

/// The deepest any queue got in a run.
pub fn max_queue_depth(r: &RunResult) -> u64 {
    r.gauges
        .values()
        .flat_map(|g| {
            g.iter()
                .filter(|(k, _)| k.ends_with("_depth"))
                .map(|(_, v)| *v)
        })
        .max()
        .unwrap_or(0)
}

/// The worst critical-mode shutdown latency of a run.
pub fn worst_latency(r: &RunResult) -> Option<u64> {
    r.critical.iter().filter_map(|s| s.latency_ms).max()
}

/// The command that replays one run exactly.
pub fn replay_command(file: &str, seed: u64) -> String {
    let file = if file.contains(char::is_whitespace) {
        format!("'{file}'")
    } else {
        file.to_string()
    };
    format!("cargo sim replay {file} --seed {seed} --trace")
}

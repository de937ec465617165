//! Runs one scenario with one seed inside a fresh madsim runtime: builds the
//! cluster, starts the workload, injects the faults on schedule, then reads
//! every node's durable state and hands it to the checker: `boot` starts
//! the nodes and clients, `faults` injects the faults, `drain` ends the
//! run and `collect` reads its outcome; `cluster` is the cluster a
//! scenario describes, as the cores are configured.

mod boot;
mod cluster;
mod collect;
mod drain;
mod faults;
mod nodes;

pub use boot::RunOptions;
pub use cluster::{build_cluster, build_pool, DOMAIN};
pub use collect::RunOutput;

use crate::scenario::Scenario;
use madsim::runtime::Runtime;

pub fn run(scn: &Scenario, seed: u64, opts: &RunOptions) -> RunOutput {
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    // Ranges and random faults become concrete for this seed.
    let (scn, drawn) = scn.resolve(seed);
    let opts = opts.clone();
    let mut out = rt.block_on(async move { supervise(scn, seed, opts).await });
    out.result.drawn = drawn;
    out
}

async fn supervise(scn: Scenario, seed: u64, opts: RunOptions) -> RunOutput {
    let run = boot::boot(&scn, seed, &opts);
    let fault_tasks = faults::start(&scn, &run, seed);
    drain::run_to_end(run.epoch, scn.duration_ms, &fault_tasks).await;
    let mut out = collect::collect(scn, seed, &run);
    out.tasks_left = drain::tear_down(&run.nodes, &run.clients).await;
    out
}

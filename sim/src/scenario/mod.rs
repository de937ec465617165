//! Scenario files: TOML descriptions of a cluster, its workload, the faults
//! to inject and what must hold afterwards (see `docs/scenarios.md`).
//!
//! Parsing is strict: an unknown key, an unknown node, a bad duration or a
//! negative rate is an error naming the file, the line and the key, never
//! silently ignored.
//!
//! `raw` is what the file says, `model` the validated scenario; each
//! section of the file has its validator (`settings`, `topology`,
//! `workload`, `faults` with `generator`, `expect`, `compliance`), and
//! `resolve` draws what a seed runs.

mod compliance;
mod error;
mod expect;
mod faults;
mod generator;
mod holds;
mod model;
mod raw;
mod resolve;
mod settings;
mod topology;
mod workload;

pub use error::ScenarioError;
pub use holdfast_actors::core::settings::Semantics;
pub use model::{
    node_names, Archive, Attack, ChatRecords, ChatWorkload, Draw, DrawTarget, Expect, Fault,
    FaultKind, Generator, Hold, HostileWorkload, ImWorkload, Scenario, Topology, ATTACKS,
    CHAT_STORE_NODE, COMPLIANCE_NODE, GAUGES,
};

use error::{key_at, Ctx};
use raw::RawScenario;
use std::path::Path;

pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&file, &src)
}

/// Reads the file as TOML into the raw form, then validates it section by
/// section; the first error found is the one reported.
pub fn parse(file: &str, src: &str) -> Result<Scenario, ScenarioError> {
    let cx = Ctx { file, src };
    let raw: RawScenario = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        ScenarioError {
            file: file.to_string(),
            line: cx.line(&span).or(Some(1)),
            key: key_at(src, span.start),
            message: e.message().to_string(),
        }
    })?;

    let duration_ms = settings::duration(&cx, &raw.duration)?;
    let settings = settings::settings(&cx, &raw.settings, raw.semantics.as_ref())?;
    let topology = topology::topology(&cx, &raw.topology)?;
    let mut draws = Vec::new();
    let workloads = workload::workloads(&cx, &raw.workload, duration_ms, &topology, &mut draws)?;
    let (faults, generators) = faults::faults(&cx, &raw.fault, duration_ms, &topology, &mut draws)?;
    let gauge_min = expect::gauge_min(&cx, &raw.expect, &topology)?;
    let export = compliance::export(&cx, raw.compliance.as_ref(), &topology)?;
    let pickup_ms = compliance::pickup(&cx, raw.compliance.as_ref())?;
    let holds = holds::holds(&cx, &raw.hold, duration_ms)?;
    let expect = expect::expect(&cx, &raw.expect, gauge_min, !workloads.chat.is_empty())?;
    Ok(Scenario {
        file: file.to_string(),
        name: raw.name,
        description: raw.description,
        seed: raw.seed,
        semantics: settings.semantics,
        duration_ms,
        topology,
        settings,
        sabotage: raw.sabotage,
        export,
        pickup_ms,
        holds,
        workloads: workloads.im,
        chat: workloads.chat,
        hostile: workloads.hostile,
        faults,
        expect,
        draws,
        generators,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
name = "ranged"
duration = "2h"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = "10..20"
rate = "1.0..5.0"
start = "0s..10m"
stop = "1h..1h 30m"
[[fault]]
kind = "crash"
node = "arch1"
start = "10m..40m"
duration = "1m..5m"
[[fault]]
kind = "random"
every = "10m"
start = "5m"
duration = "1m..2m"
targets = "minority"
"#;

    #[test]
    fn a_swizzle_draws_its_start_and_sub_second_ranges_stay_inside() {
        let src = r#"
name = "sw"
duration = "2h"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 10
rate = 1.0
[[fault]]
kind = "swizzle"
targets = ["fe1", "fe2", "arch1"]
start = "10m..30m"
duration = "20m..40m"
[[fault]]
kind = "slow"
node = "arch1"
delay = "100ms..900ms"
start = "0ms..400ms"
duration = "1h"
"#;
        let s = parse("sw.toml", src).unwrap();
        let starts: std::collections::BTreeSet<u64> = (0..20)
            .map(|seed| {
                s.resolve(seed)
                    .0
                    .faults
                    .iter()
                    .filter(|f| matches!(f.kind, FaultKind::Partition { .. }))
                    .map(|f| f.start_ms)
                    .min()
                    .unwrap()
            })
            .collect();
        assert!(starts.len() > 5, "the swizzle start is drawn: {starts:?}");
        for seed in 0..20 {
            let (r, drawn) = s.resolve(seed);
            let slow = r
                .faults
                .iter()
                .find(|f| matches!(f.kind, FaultKind::Slow { .. }))
                .unwrap();
            assert!(slow.start_ms <= 400);
            let FaultKind::Slow { delay_ms, .. } = slow.kind else {
                unreachable!()
            };
            assert!((100..=900).contains(&delay_ms));
            assert!(
                drawn.iter().any(|(k, _)| k == "fault[0].start"),
                "{drawn:?}"
            );
        }
    }

    #[test]
    fn a_seed_always_draws_the_same_scenario_and_another_seed_another() {
        let s = parse("ranged.toml", SRC).unwrap();
        let (a, da) = s.resolve(7);
        let (b, db) = s.resolve(7);
        let (c, _) = s.resolve(8);
        assert_eq!(a, b);
        assert_eq!(da, db);
        assert_ne!(a, c);
        let w = &a.workloads[0];
        assert!((10..=20).contains(&w.users));
        assert!((1.0..=5.0).contains(&w.rate));
        assert!(w.start_ms <= 600_000 && (3_600_000..=5_400_000).contains(&w.stop_ms));
        assert!(a.faults.len() > 1, "the random generator produced faults");
        assert!(
            a.faults.windows(2).all(|p| p[0].start_ms <= p[1].start_ms),
            "sorted by start"
        );
        assert!(da.iter().any(|(k, _)| k == "workload[0].rate"));
        assert!(
            a.faults.iter().all(|f| f.start_ms < a.duration_ms),
            "no fault after the end"
        );
        assert!(
            a.draws.is_empty() && a.generators.is_empty(),
            "resolved for good"
        );
    }
}

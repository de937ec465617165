//! `random` and `swizzle` faults: generators that draw faults per seed.

use super::error::{Ctx, ScenarioError};
use super::model::{Generator, Topology};
use super::raw::{RawFault, TargetSpec};

const FAULT_KINDS: &[&str] = &[
    "partition",
    "crash",
    "slow",
    "disk_full",
    "io_error",
    "db_down",
];

/// Parses a `random` or `swizzle` fault.
pub(super) fn generator(
    cx: &Ctx,
    f: &RawFault,
    topology: &Topology,
    start: (u64, u64),
    run_ms: u64,
    duration: Option<(u64, u64)>,
    entry: usize,
) -> Result<Generator, ScenarioError> {
    let start_ms = start.0;
    let servers: Vec<String> = topology.servers().cloned().collect();
    let swizzle = f.kind.get_ref() == "swizzle";
    // Keys that mean nothing for this kind are errors, not silently ignored.
    let unused: &[(&str, bool)] = if swizzle {
        &[
            ("kinds", f.kinds.is_some()),
            ("every", f.every.is_some()),
            ("stop", f.stop.is_some()),
            ("delay", f.delay.is_some()),
            ("node", f.node.is_some()),
            ("between", f.between.is_some()),
            ("one_way", f.one_way),
        ]
    } else {
        &[
            ("links", f.links.is_some()),
            ("node", f.node.is_some()),
            ("between", f.between.is_some()),
            ("one_way", f.one_way),
        ]
    };
    if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
        return Err(cx.err(
            &f.kind.span(),
            &format!("fault.{key}"),
            format!("a {} fault does not take `{key}`", f.kind.get_ref()),
        ));
    }
    let (targets, minority) = match f.targets.as_ref().map(|t| (t.get_ref(), t.span())) {
        None => (servers.clone(), false),
        Some((TargetSpec::Word(w), _)) if w == "one" => (servers.clone(), false),
        Some((TargetSpec::Word(w), _)) if w == "minority" => (servers.clone(), true),
        Some((TargetSpec::Word(w), span)) => {
            return Err(cx.err(
                &span,
                "fault.targets",
                format!("{w:?}: expected \"one\", \"minority\" or a list of nodes"),
            ))
        }
        Some((TargetSpec::Nodes(list), span)) => {
            for n in list {
                if !topology.has(n) {
                    return Err(cx.err(
                        &span,
                        "fault.targets",
                        format!(
                            "unknown node {n:?}; this topology has {}",
                            servers.join(", ")
                        ),
                    ));
                }
            }
            if list.is_empty() {
                return Err(cx.err(&span, "fault.targets", "needs at least one node"));
            }
            let mut distinct = list.clone();
            distinct.sort();
            distinct.dedup();
            if distinct.len() != list.len() {
                return Err(cx.err(&span, "fault.targets", "names a node twice"));
            }
            (list.clone(), false)
        }
    };
    if swizzle {
        if minority {
            return Err(cx.err(
                &f.kind.span(),
                "fault.targets",
                "a swizzle takes \"one\" or a list of nodes, not \"minority\"",
            ));
        }
        let total = cx.needs(
            duration,
            &f.kind,
            "fault.duration",
            "a swizzle needs `duration` (the whole clog-and-unclog cycle)",
        )?;
        if total.0 < 2_000 {
            return Err(cx.err(
                &f.kind.span(),
                "fault.duration",
                "a swizzle needs at least 2s",
            ));
        }
        let pairs = targets.len() * (targets.len() - 1) / 2;
        let links = match &f.links {
            Some(l) if *l.get_ref() >= 1 && (*l.get_ref() as usize) <= pairs => {
                *l.get_ref() as usize
            }
            Some(l) => {
                return Err(cx.err(
                    &l.span(),
                    "fault.links",
                    format!("must be between 1 and {pairs} (the links between the targets)"),
                ))
            }
            None => pairs.div_ceil(2).max(1),
        };
        if pairs == 0 {
            return Err(cx.err(
                &f.kind.span(),
                "fault.targets",
                "a swizzle needs at least two nodes",
            ));
        }
        return Ok(Generator::Swizzle {
            entry,
            targets,
            start,
            duration: total,
            run_ms,
            links,
        });
    }
    let kinds = match &f.kinds {
        None => FAULT_KINDS.iter().map(|k| k.to_string()).collect(),
        Some(k) => {
            for kind in k.get_ref() {
                if !FAULT_KINDS.contains(&kind.as_str()) {
                    return Err(cx.err(
                        &k.span(),
                        "fault.kinds",
                        format!(
                            "unknown fault kind {kind:?}; expected some of {}",
                            FAULT_KINDS.join(", ")
                        ),
                    ));
                }
            }
            if k.get_ref().is_empty() {
                return Err(cx.err(&k.span(), "fault.kinds", "needs at least one kind"));
            }
            k.get_ref().clone()
        }
    };
    let every = cx.needs(
        f.every.as_ref(),
        &f.kind,
        "fault.every",
        "a random fault needs `every`, the mean time between faults, like \"20m\"",
    )?;
    let every_ms = cx.dur(every, "fault.every")?;
    if every_ms == 0 {
        return Err(cx.err(&every.span(), "fault.every", "must be longer than 0s"));
    }
    let stop_ms = cx.opt_dur(&f.stop, "fault.stop")?.unwrap_or(run_ms);
    if stop_ms <= start_ms || stop_ms > run_ms {
        return Err(cx.err(
            &f.kind.span(),
            "fault.stop",
            "must be after `start` and within the run",
        ));
    }
    let delay = cx
        .opt_dur_range(&f.delay, "fault.delay")?
        .unwrap_or((20, 200));
    // A kind that can never hit any of the targets would make seeds pass
    // without testing anything.
    for kind in &kinds {
        let possible = match kind.as_str() {
            "db_down" => targets.iter().any(|t| topology.databases.contains(t)),
            "partition" => targets.len() >= 2,
            _ => true,
        };
        if !possible {
            return Err(cx.err(
                &f.kind.span(),
                "fault.kinds",
                format!("{kind:?} can never hit these targets"),
            ));
        }
    }
    Ok(Generator::Random {
        entry,
        kinds,
        targets,
        minority,
        start,
        stop_ms,
        every_ms,
        duration: duration.unwrap_or((60_000, 600_000)),
        delay,
        databases: topology.databases.clone(),
    })
}

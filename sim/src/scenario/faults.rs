//! `[[fault]]` entries: the concrete faults, and the generators they hand
//! `random` and `swizzle` entries to.

use super::error::{Ctx, ScenarioError};
use super::generator::generator;
use super::model::{Draw, DrawTarget, Fault, FaultKind, Generator, Topology};
use super::raw::RawFault;
use holdfast_actors::core::units;

/// Stores a `corrupt` fault may name in `file`.
const CORRUPTIBLE_STORES: &[&str] = &[
    "front_end",
    "outgoing_queue",
    "destination_queue",
    "archiver",
    "database",
    "chat_store",
    "channel",
    "web",
    "compliance",
];

/// Every `[[fault]]` entry: the concrete faults and the generators; the
/// values drawn per seed go to `draws`.
pub(super) fn faults(
    cx: &Ctx,
    raw: &[RawFault],
    duration_ms: u64,
    topology: &Topology,
    draws: &mut Vec<Draw>,
) -> Result<(Vec<Fault>, Vec<Generator>), ScenarioError> {
    let mut faults = Vec::new();
    let mut generators = Vec::new();
    for (ri, f) in raw.iter().enumerate() {
        // `fi`: index among the concrete faults; `ri`: the entry in the file.
        let fi = faults.len();
        let (start_ms, start_hi) = cx.dur_range(&f.start, "fault.start")?;
        let duration_range = cx.opt_dur_range(&f.duration, "fault.duration")?;
        if start_hi >= duration_ms {
            return Err(cx.err(
                &f.start.span(),
                "fault.start",
                format!("starts after the run ends ({})", units::fmt_ms(duration_ms)),
            ));
        }
        if matches!(f.kind.get_ref().as_str(), "random" | "swizzle") {
            generators.push(generator(
                cx,
                f,
                topology,
                (start_ms, start_hi),
                duration_ms,
                duration_range,
                ri,
            )?);
            continue;
        }
        faults.push(fault(
            cx,
            f,
            (ri, fi),
            (start_ms, start_hi),
            duration_range,
            topology,
            draws,
        )?);
    }
    Ok((faults, generators))
}

/// A concrete fault: entry `ri` of the file, `fi`th of the concrete ones.
fn fault(
    cx: &Ctx,
    f: &RawFault,
    (ri, fi): (usize, usize),
    (start_ms, start_hi): (u64, u64),
    duration_range: Option<(u64, u64)>,
    topology: &Topology,
    draws: &mut Vec<Draw>,
) -> Result<Fault, ScenarioError> {
    let mut fault_duration = duration_range.map(|(lo, _)| lo);
    // A corrupted node comes back after a second unless told otherwise.
    if f.kind.get_ref() == "corrupt" && fault_duration.is_none() {
        fault_duration = Some(1000);
    }
    let at_kind = |given: bool| given.then(|| f.kind.span());
    cx.refuse_given(
        "fault",
        [
            ("kinds", at_kind(f.kinds.is_some())),
            ("targets", at_kind(f.targets.is_some())),
            ("every", at_kind(f.every.is_some())),
            ("stop", at_kind(f.stop.is_some())),
            ("links", at_kind(f.links.is_some())),
        ],
        "only a random or swizzle fault takes this key",
    )?;
    let (lo, hi) = (start_ms as f64, start_hi as f64);
    let label = format!("fault[{ri}].start");
    Draw::add_range(draws, DrawTarget::FaultStart(fi), lo, hi, label);
    if let Some((lo, hi)) = duration_range {
        let label = format!("fault[{ri}].duration");
        Draw::add_range(
            draws,
            DrawTarget::FaultDuration(fi),
            lo as f64,
            hi as f64,
            label,
        );
    }
    if fault_duration == Some(0) {
        return Err(cx.err(
            &f.duration.as_ref().expect("some").span(),
            "fault.duration",
            "must be longer than 0s (omit it for a fault that lasts until the end)",
        ));
    }
    let node = |key: &str| -> Result<String, ScenarioError> {
        let n = cx.needs(
            f.node.as_ref(),
            &f.kind,
            key,
            format!("fault {:?} needs `node`", f.kind.get_ref()),
        )?;
        if !topology.has(n.get_ref()) {
            return Err(cx.err(
                &n.span(),
                key,
                format!(
                    "unknown node {:?}; this topology has {}",
                    n.get_ref(),
                    topology.servers().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(n.get_ref().clone())
    };
    // A database fault's node: the one named, which must be a
    // database, or the first database.
    let database = || -> Result<String, ScenarioError> {
        let Some(named) = &f.node else {
            return Ok(topology.databases[0].clone());
        };
        let n = node("fault.node")?;
        if !topology.databases.contains(&n) {
            return Err(cx.err(
                &named.span(),
                "fault.node",
                format!("{n:?} is not a database node"),
            ));
        }
        Ok(n)
    };
    let kind = match f.kind.get_ref().as_str() {
        "partition" => {
            let b = cx.needs(f.between.as_ref(), &f.kind, "fault.between", "a partition needs `between = [\"node\", \"node\"]`")?;
            if b.get_ref().len() != 2 || b.get_ref()[0] == b.get_ref()[1] {
                return Err(cx.err(&b.span(), "fault.between", "needs exactly two different nodes"));
            }
            for n in b.get_ref() {
                if !topology.has(n) {
                    return Err(cx.err(&b.span(), "fault.between", format!(
                        "unknown node {n:?}; this topology has {}",
                        topology.servers().cloned().collect::<Vec<_>>().join(", "))));
                }
            }
            FaultKind::Partition { a: b.get_ref()[0].clone(), b: b.get_ref()[1].clone(), one_way: f.one_way }
        }
        "crash" => FaultKind::Crash { node: node("fault.node")? },
        "slow" => {
            let d = cx.needs(f.delay.as_ref(), &f.kind, "fault.delay", "a slow fault needs `delay`, like \"200ms\"")?;
            let (lo, hi) = cx.dur_range(d, "fault.delay")?;
            Draw::add_range(draws, DrawTarget::FaultDelay(fi), lo as f64, hi as f64, format!("fault[{ri}].delay"));
            FaultKind::Slow { node: node("fault.node")?, delay_ms: lo }
        }
        "stall" => FaultKind::Stall { node: node("fault.node")? },
        "disk_full" => FaultKind::DiskFull { node: node("fault.node")? },
        "io_error" => FaultKind::IoError { node: node("fault.node")? },
        "db_down" => FaultKind::DbDown { node: database()? },
        "corrupt" => {
            let bytes = match &f.bytes {
                None => 16,
                Some(b) if (1..=4096).contains(b.get_ref()) => *b.get_ref() as u64,
                Some(b) => return Err(cx.err(&b.span(), "fault.bytes", "must be from 1 to 4096")),
            };
            let file = match &f.file {
                None => None,
                Some(name) => {
                    if !CORRUPTIBLE_STORES.contains(&name.get_ref().as_str()) {
                        return Err(cx.err(&name.span(), "fault.file", format!(
                            "unknown store {:?}; expected one of {}",
                            name.get_ref(),
                            CORRUPTIBLE_STORES.join(", "))));
                    }
                    Some(name.get_ref().clone())
                }
            };
            FaultKind::Corrupt { node: node("fault.node")?, bytes, file }
        }
        "db_refuses" => {
            let n = database()?;
            let one_in = match &f.one_in {
                None => 50,
                Some(k) if (2..=1_000_000).contains(k.get_ref()) => *k.get_ref() as u64,
                Some(k) => return Err(cx.err(&k.span(), "fault.one_in", "must be from 2 to 1000000")),
            };
            FaultKind::DbRefuses { node: n, one_in }
        }
        other => return Err(cx.err(&f.kind.span(), "fault.kind", format!(
            "unknown fault kind {other:?}; expected partition, crash, slow, stall, disk_full, io_error, db_down, corrupt, db_refuses, random or swizzle"))),
    };
    if let (false, Some(k)) = (matches!(kind, FaultKind::DbRefuses { .. }), &f.one_in) {
        return Err(cx.err(
            &k.span(),
            "fault.one_in",
            "only a db_refuses fault takes this key",
        ));
    }
    if !matches!(kind, FaultKind::Corrupt { .. }) {
        let at_kind = |given: bool| given.then(|| f.kind.span());
        cx.refuse_given(
            "fault",
            [
                ("bytes", at_kind(f.bytes.is_some())),
                ("file", at_kind(f.file.is_some())),
            ],
            "only a corrupt fault takes this key",
        )?;
    }
    if let (false, Some(b)) = (matches!(kind, FaultKind::Partition { .. }), &f.between) {
        return Err(cx.err(
            &b.span(),
            "fault.between",
            "only a partition takes `between`",
        ));
    }
    Ok(Fault {
        kind,
        start_ms,
        duration_ms: fault_duration,
    })
}

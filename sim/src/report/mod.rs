//! A run's result: expectations evaluated, the JSON object and the human
//! summary.

pub mod calibration;
pub mod plot;

use crate::oracle::chat_checker::ChatCounts;
use crate::oracle::checker::{Counts, HostileCounts};
use crate::oracle::critical::{CriticalShutdown, Obligation};
pub use crate::oracle::events::EventRecord;
use crate::oracle::recovery::Recovery;
use crate::scenario::Scenario;
use holdfast_actors::core::ids::Millis;
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::units::fmt_ms;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub struct RunResult {
    pub scenario: String,
    pub file: String,
    pub seed: u64,
    pub semantics: &'static str,
    pub simulated_ms: Millis,
    pub counts: Counts,
    /// Group chat findings, when the scenario has Channel servers.
    pub chat: Option<ChatCounts>,
    /// What hostile clients got, when the scenario has them.
    pub hostile: Option<HostileCounts>,
    pub events: Vec<EventRecord>,
    pub faults: Vec<String>,
    pub trace_hash: u64,
    pub trace_len: u64,
    /// Problems reading the final state (undecodable store entries…).
    pub read_errors: Vec<String>,
    /// Critical-mode shutdowns, attributed to faults.
    pub critical: Vec<CriticalShutdown>,
    /// Shutdowns `critical_shutdown_within` requires (empty without it).
    pub obligations: Vec<Obligation>,
    /// Values this seed drew from the scenario's ranges and random faults.
    pub drawn: Vec<(String, String)>,
    /// Per node, the highest value each gauge reached (queue depths…).
    pub gauges: BTreeMap<String, BTreeMap<String, u64>>,
    /// Per front end whose archiving path faults broke and healed: the
    /// recovery figures the real-network partition suite measures.
    pub recovery: Vec<Recovery>,
}

impl RunResult {
    /// The result of a run that produced nothing (it panicked).
    pub fn empty(scn: &Scenario, seed: u64) -> RunResult {
        RunResult {
            scenario: scn.name.clone(),
            file: scn.file.clone(),
            seed,
            semantics: scn.semantics.as_str(),
            simulated_ms: 0,
            counts: Counts::default(),
            chat: None,
            hostile: None,
            events: Vec::new(),
            faults: Vec::new(),
            trace_hash: 0,
            trace_len: 0,
            read_errors: Vec::new(),
            critical: Vec::new(),
            obligations: Vec::new(),
            drawn: Vec::new(),
            gauges: BTreeMap::new(),
            recovery: Vec::new(),
        }
    }

    /// Highest value of `gauge` on `node` (0 if never sampled).
    pub fn gauge_max(&self, node: &str, gauge: &str) -> u64 {
        self.gauges
            .get(node)
            .and_then(|g| g.get(gauge))
            .copied()
            .unwrap_or(0)
    }
}

impl RunResult {
    /// Per front end: heartbeat NACKs and the last known link state.
    pub fn queue_health(&self) -> BTreeMap<&str, Value> {
        let mut out: BTreeMap<&str, (u64, u64, &str)> = BTreeMap::new();
        for e in &self.events {
            let slot = match e.kind {
                OperatorEvent::NackDelivery
                | OperatorEvent::NackProcessing
                | OperatorEvent::QueueHealthy => {
                    out.entry(e.node.as_str()).or_insert((0, 0, "healthy"))
                }
                _ => continue,
            };
            match e.kind {
                OperatorEvent::NackDelivery => {
                    slot.0 += 1;
                    slot.2 = "delivery_failing";
                }
                OperatorEvent::NackProcessing => {
                    slot.1 += 1;
                    if slot.2 != "delivery_failing" {
                        slot.2 = "processing_failing";
                    }
                }
                _ => slot.2 = "healthy",
            }
        }
        out.into_iter()
            .map(|(k, (d, p, state))| {
                (
                    k,
                    json!({"nack_delivery": d, "nack_processing": p, "final": state}),
                )
            })
            .collect()
    }

    pub fn event_counts(&self) -> BTreeMap<&str, u64> {
        let mut m = BTreeMap::new();
        for e in &self.events {
            *m.entry(e.kind.name()).or_insert(0) += 1;
        }
        m
    }
}

/// Every expectation that does not hold, as a sentence.
pub fn evaluate(scn: &Scenario, r: &RunResult) -> Vec<String> {
    let e = &scn.expect;
    let c = &r.counts;
    let mut f = Vec::new();
    // The examples the checker kept of a count, by its key.
    let ex = |k: &str| c.examples.get(k).cloned().unwrap_or_default();
    // A bound on a count with kept examples: the report names the count by
    // that same key.
    let exact_kept = |f: &mut Vec<String>, what: &str, got: u64, expected: Option<u64>| {
        exact(f, what, got, expected, c.examples.get(what))
    };
    let at_most_kept = |f: &mut Vec<String>, what: &str, got: u64, max: Option<u64>| {
        at_most(f, what, got, max, c.examples.get(what))
    };
    if !scn.workloads.is_empty() && c.accepted == 0 {
        f.push("the workload had no message accepted: the run proves nothing".to_string());
    }
    if let Some(ch) = &r.chat {
        chat_failures(e, ch, !scn.chat.is_empty(), &mut f);
    }
    exact_kept(&mut f, "lost", c.lost, e.lost);
    if let Some(bound) = e.accept_p99_max_ms {
        if c.accept_latency_ms[1] > bound {
            f.push(format!(
                "accept latency p99 {} (expected at most {})",
                fmt_ms(c.accept_latency_ms[1]),
                fmt_ms(bound)
            ));
        }
    }
    if let Some(h) = &r.hostile {
        if h.accepted > 0 {
            f.push(format!(
                "hostile_accepted = {}: requests over a limit were taken",
                h.accepted
            ));
        }
        if h.reused_unarchived > 0 {
            f.push(format!(
                "hostile_reused_unarchived = {}: IMs taken under a reused client id are not all in the archive",
                h.reused_unarchived
            ));
        }
    }
    at_most_kept(&mut f, "parked", c.parked, e.parked_max);
    at_least(&mut f, "parked", c.parked, e.parked_min);
    at_most_kept(
        &mut f,
        "lost_reported",
        c.lost_reported,
        e.lost_reported_max,
    );
    at_least(&mut f, "lost", c.lost, e.lost_min);
    exact_kept(&mut f, "unpurged", c.unpurged, Some(0));
    at_least(&mut f, "purged", c.purged, e.purged_min);
    exact_kept(&mut f, "purge_missed", c.purge_missed, Some(0));
    exact_kept(&mut f, "held_purged", c.held_purged, Some(0));
    exact_kept(&mut f, "holds_unplaced", c.holds_unplaced, Some(0));
    at_least(&mut f, "held", c.held, e.held_min);
    exact_kept(&mut f, "duplicates", c.duplicates, e.duplicates);
    exact_kept(&mut f, "phantoms", c.phantoms, e.phantoms);
    if c.corrupted > 0 {
        f.push(format!(
            "corrupted = {}: archived content differs from what was sent; e.g. {:?}",
            c.corrupted,
            ex("corrupted")
        ));
    }
    if c.mistimed > 0 {
        f.push(format!(
            "mistimed = {}: archived under another time than the front end stamped; e.g. {:?}",
            c.mistimed,
            ex("mistimed")
        ));
    }
    at_least(&mut f, "accepted", c.accepted, e.accepted_min);
    at_least(&mut f, "rejected", c.rejected, e.rejected_min);
    at_least(&mut f, "busy", c.busy, e.busy_min);
    at_most(&mut f, "busy", c.busy, e.busy_max, c.examples.get("busy"));
    if let Some(max) = e.unknown_max {
        if c.unknown > max {
            f.push(format!(
                "unknown = {}: requests without an answer (expected at most {max}); e.g. {:?}",
                c.unknown,
                ex("unknown")
            ));
        }
    }
    at_least(&mut f, "qoe_dropped", c.qoe_dropped, e.qoe_dropped_min);
    at_least(
        &mut f,
        "delivered_not_archived",
        c.delivered_not_archived,
        e.delivered_not_archived_min,
    );
    exact_kept(
        &mut f,
        "delivered_not_archived",
        c.delivered_not_archived,
        e.delivered_not_archived,
    );
    at_least(&mut f, "pending", c.pending, e.pending_min);
    if let Some(by) = e.drained_by_ms {
        if c.archivable_accepted == 0 {
            f.push("drained_by: nothing archivable was accepted, so nothing could drain".into());
        } else if c.pending > 0 {
            f.push(format!(
                "{} accepted messages still queued at the end (expected everything archived by {})",
                c.pending,
                fmt_ms(by)
            ));
        } else if let Some(at) = c.drained_at {
            if at > by {
                f.push(format!(
                    "archive drained at {} (expected by {})",
                    fmt_ms(at),
                    fmt_ms(by)
                ));
            }
        }
    }
    if let Some(by) = e.shutdowns_end_by_ms {
        for sd in &r.critical {
            if sd.until.is_none_or(|u| u > by) {
                f.push(format!(
                    "{}'s critical shutdown at {} {} (expected every shutdown over by {})",
                    sd.node,
                    fmt_ms(sd.at),
                    match sd.until {
                        Some(u) => format!("ended only at {}", fmt_ms(u)),
                        None => "never ended".into(),
                    },
                    fmt_ms(by)
                ));
            }
        }
    }
    if let Some(n) = e.critical_shutdowns {
        if r.critical.len() as u64 != n {
            f.push(format!(
                "{} critical-mode shutdowns (expected {n})",
                r.critical.len()
            ));
        }
    }
    for ob in &r.obligations {
        if ob.shut_in_time() && ob.resumed_early() {
            f.push(format!(
                "{} resumed at {} while {} still broke its archiving path",
                ob.node,
                fmt_ms(ob.resumed_at.unwrap_or(0)),
                ob.fault
            ));
        } else if !ob.met() {
            f.push(match ob.shut_at {
                Some(at) => format!(
                    "{} stopped accepting IM {} after {} (expected within {})",
                    ob.node,
                    fmt_ms(at - ob.start),
                    ob.fault,
                    fmt_ms(ob.bound)
                ),
                None => format!(
                    "{} never stopped accepting IM after {} (expected within {})",
                    ob.node,
                    ob.fault,
                    fmt_ms(ob.bound)
                ),
            });
        }
    }
    if e.no_accept_while_shut_down && c.accepted_while_shut_down > 0 {
        f.push(format!(
            "{} IMs accepted while their front end was shut down; e.g. {:?}",
            c.accepted_while_shut_down,
            ex("accepted_while_shut_down")
        ));
    }
    let first = |kind: OperatorEvent| r.events.iter().find(|ev| ev.kind == kind).map(|ev| ev.at);
    for pair in e.events_order.windows(2) {
        match (first(pair[0]), first(pair[1])) {
            (Some(a), Some(b)) if a <= b => {}
            (Some(a), Some(b)) => f.push(format!(
                "event {:?} (first at {}) came after {:?} (first at {})",
                pair[0].name(),
                fmt_ms(a),
                pair[1].name(),
                fmt_ms(b)
            )),
            _ => f.push(format!(
                "events {:?} and {:?} must both be raised",
                pair[0].name(),
                pair[1].name()
            )),
        }
    }
    for &kind in &e.events_include {
        if !r.events.iter().any(|ev| ev.kind == kind) {
            f.push(format!("event {:?} was never raised", kind.name()));
        }
    }
    for (node, gauge, min) in &e.gauge_min {
        let got = r.gauge_max(node, gauge);
        if got < *min {
            f.push(format!(
                "{node}.{gauge} reached {got} (expected at least {min})"
            ));
        }
    }
    for err in &r.read_errors {
        f.push(format!("final state unreadable: {err}"));
    }
    f
}

fn chat_failures(e: &crate::scenario::Expect, c: &ChatCounts, workload: bool, f: &mut Vec<String>) {
    let ex = |k: &str| c.examples.get(k).cloned().unwrap_or_default();
    if workload && c.accepted == 0 {
        f.push("the chat workload had no post accepted: the run proves nothing".to_string());
    }
    exact(f, "chat lost", c.lost, e.chat_lost, c.examples.get("lost"));
    for (n, what, why, key) in [
        (
            c.duplicates,
            "chat duplicates",
            ": a post stored twice",
            "duplicates",
        ),
        (
            c.phantoms,
            "chat phantoms",
            ": stored but never posted",
            "phantoms",
        ),
        (c.order_errors, "chat order errors", "", "order_errors"),
        (
            c.records_errors,
            "chat records errors",
            ": records management not done as it must be",
            "records",
        ),
        (
            c.unpurged,
            "chat unpurged",
            ": posts past their room's window kept by a finished purge",
            "unpurged",
        ),
        (
            c.records_failed,
            "chat records actions failed",
            "",
            "records_failed",
        ),
        (
            c.wrong_deliveries,
            "chat wrong deliveries",
            "",
            "wrong_deliveries",
        ),
    ] {
        if n > 0 {
            f.push(format!("{what} = {n}{why}; e.g. {:?}", ex(key)));
        }
    }
    if c.files_lost > 0 || c.files_corrupt > 0 || c.file_refusals > 0 {
        f.push(format!(
            "files: {} lost, {} corrupt downloads, {} refusals; e.g. {:?} {:?} {:?}",
            c.files_lost,
            c.files_corrupt,
            c.file_refusals,
            ex("files_lost"),
            ex("files_corrupt"),
            ex("file_refusals")
        ));
    }
    if let Some(cc) = &c.compliance {
        let cex = |k: &str| cc.examples.get(k).cloned().unwrap_or_default();
        for (what, n, key) in [
            ("missing", cc.missing, "missing"),
            ("duplicated", cc.duplicates, "duplicates"),
            ("wrong or unreadable", cc.wrong, "wrong"),
        ] {
            if n > 0 {
                f.push(format!(
                    "compliance: {n} events {what} (pending at the end: {}); e.g. {:?}",
                    cc.pending,
                    cex(key)
                ));
            }
        }
        for (what, n, key) in [
            ("uploaded files missing", cc.files_missing, "files_missing"),
            ("uploaded files listed wrong", cc.files_wrong, "files_wrong"),
            (
                "files kept after or removed before their acknowledgement",
                cc.pickup_wrong,
                "pickup_wrong",
            ),
        ] {
            if n > 0 {
                f.push(format!("compliance: {n} {what}; e.g. {:?}", cex(key)));
            }
        }
        at_least(
            f,
            "compliance exported",
            cc.exported,
            e.compliance_exported_min,
        );
    }
    if c.wall_breaches > 0 {
        f.push(format!(
            "ethical wall breached {} times; e.g. {:?}",
            c.wall_breaches,
            ex("wall_breaches")
        ));
    }
    exact(
        f,
        "chat missed deliveries",
        c.missed,
        e.chat_missed,
        c.examples.get("missed"),
    );
    for (what, got, min) in [
        ("chat missed deliveries", c.missed, e.chat_missed_min),
        ("chat accepted", c.accepted, e.chat_accepted_min),
        ("chat busy answers", c.busy, e.chat_busy_min),
        ("chat reconnects", c.reconnects, e.chat_reconnects_min),
        ("chat post retries", c.post_retries, e.chat_post_retries_min),
        (
            "chat refused joins",
            c.refused_joins,
            e.chat_refused_joins_min,
        ),
    ] {
        at_least(f, what, got, min);
    }
}

/// A count the file expects to be exactly `expected`: the sentence when it
/// is not, with the `examples` of it the checker kept.
fn exact<T: Clone + std::fmt::Debug>(
    f: &mut Vec<String>,
    what: &str,
    got: u64,
    expected: Option<u64>,
    examples: Option<&Vec<T>>,
) {
    if let Some(n) = expected.filter(|&n| got != n) {
        missed_bound(f, what, got, &n.to_string(), examples);
    }
}

/// A count the file bounds from above by `max`: the sentence when it goes
/// over, with the `examples` of it the checker kept.
fn at_most<T: Clone + std::fmt::Debug>(
    f: &mut Vec<String>,
    what: &str,
    got: u64,
    max: Option<u64>,
    examples: Option<&Vec<T>>,
) {
    if let Some(n) = max.filter(|&n| got > n) {
        missed_bound(f, what, got, &format!("at most {n}"), examples);
    }
}

/// The sentence for a count `got` that is not what the file `expected`,
/// with the `examples` of it the checker kept.
fn missed_bound<T: Clone + std::fmt::Debug>(
    f: &mut Vec<String>,
    what: &str,
    got: u64,
    expected: &str,
    examples: Option<&Vec<T>>,
) {
    let examples = examples.cloned().unwrap_or_default();
    f.push(format!(
        "{what} = {got} (expected {expected}); e.g. {examples:?}"
    ));
}

/// A count the file bounds from below by `min`: the sentence when it falls
/// short.
fn at_least(f: &mut Vec<String>, what: &str, got: u64, min: Option<u64>) {
    if let Some(n) = min {
        if got < n {
            f.push(format!("{what} = {got} (expected at least {n})"));
        }
    }
}

pub fn to_json(r: &RunResult, failures: &[String]) -> Value {
    let c = &r.counts;
    let mut v = json!({
        "scenario": r.scenario,
        "file": r.file,
        "seed": r.seed,
        "semantics": r.semantics,
        "simulated_secs": r.simulated_ms as f64 / 1000.0,
        "submitted": c.submitted,
        "accepted": c.accepted,
        "rejected": c.rejected,
        "unknown": c.unknown,
        "busy": c.busy,
        "archivable_accepted": c.archivable_accepted,
        "archived": c.archived,
        "lost": c.lost,
        "lost_reported": c.lost_reported,
        "parked": c.parked,
        "pending": c.pending,
        "duplicates": c.duplicates,
        "phantoms": c.phantoms,
        "recovered": c.recovered,
        "corrupted": c.corrupted,
        "mistimed": c.mistimed,
        "expired": c.expired,
        "accepted_while_shut_down": c.accepted_while_shut_down,
        "qoe_dropped": c.qoe_dropped,
        "delivered_not_archived": c.delivered_not_archived,
        "accept_latency_ms": {
            "p50": c.accept_latency_ms[0],
            "p99": c.accept_latency_ms[1],
            "max": c.accept_latency_ms[2],
        },
        "chat": r.chat,
        "hostile": r.hostile,
        "by_kind": c.by_kind.iter().map(|(k, (a, ar))| (*k, json!({"accepted": a, "archived": ar}))).collect::<BTreeMap<_, _>>(),
        "drained_at_secs": c.drained_at.map(|ms| ms as f64 / 1000.0),
        "critical_shutdowns": r.critical.iter().map(|s| json!({
            "node": s.node,
            "at_secs": s.at as f64 / 1000.0,
            "resumed_at_secs": s.until.map(|u| u as f64 / 1000.0),
            "reason": s.reason,
            "cause": s.cause,
            "latency_secs": s.latency_ms.map(|l| l as f64 / 1000.0),
        })).collect::<Vec<_>>(),
        "recovery": r.recovery.iter().map(|v| json!({
            "node": v.node,
            "first_cut_secs": v.first_cut_ms as f64 / 1000.0,
            "heal_secs": v.heal_ms as f64 / 1000.0,
            "shutdown_secs": v.shutdown_ms.map(|ms| ms as f64 / 1000.0),
            "first_delivery_secs": v.first_delivery_ms.map(|ms| ms as f64 / 1000.0),
            "resume_secs": v.resume_ms.map(|ms| ms as f64 / 1000.0),
        })).collect::<Vec<_>>(),
        "queue_health": r.queue_health(),
        "events": r.event_counts(),
        "faults": r.faults,
        "gauges_max": r.gauges,
        "drawn": r.drawn.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "examples": c.examples,
        "trace_hash": format!("{:016x}", r.trace_hash),
        "trace_events": r.trace_len,
        "pass": failures.is_empty(),
        "failures": failures,
    });
    // Retention and legal holds, added after: one more key in the object
    // above would pass the macro's recursion limit.
    for (key, n) in [
        ("purged", c.purged),
        ("unpurged", c.unpurged),
        ("held", c.held),
        ("held_purged", c.held_purged),
        ("holds_unplaced", c.holds_unplaced),
        ("purge_missed", c.purge_missed),
    ] {
        v[key] = json!(n);
    }
    v
}

pub fn summary(r: &RunResult, failures: &[String]) -> String {
    let c = &r.counts;
    let mut s = String::new();
    s.push_str(&format!(
        "{} (seed {}, {}, {} simulated)\n",
        r.scenario,
        r.seed,
        r.semantics,
        fmt_ms(r.simulated_ms)
    ));
    for (k, v) in r.drawn.iter().filter(|(k, _)| k != "fault") {
        s.push_str(&format!("  drawn: {k} = {v}\n"));
    }
    for f in &r.faults {
        s.push_str(&format!("  fault: {f}\n"));
    }
    s.push_str(&format!(
        "  submitted {}  accepted {}  rejected {}  unknown {}\n",
        c.submitted, c.accepted, c.rejected, c.unknown
    ));
    if c.purged > 0 || c.unpurged > 0 || c.held > 0 || c.held_purged > 0 {
        s.push_str(&format!(
            "  retention: purged {}  kept past the window {}  kept for a hold {}  deleted under a hold {}\n",
            c.purged, c.unpurged, c.held, c.held_purged
        ));
    }
    if c.holds_unplaced > 0 {
        s.push_str(&format!(
            "  legal holds not confirmed: {}\n",
            c.holds_unplaced
        ));
    }
    s.push_str(&format!(
        "  archivable {}  archived {}  lost {}  pending {}  duplicates {}  phantoms {}  recovered {}\n",
        c.archivable_accepted, c.archived, c.lost, c.pending, c.duplicates, c.phantoms, c.recovered
    ));
    if let Some(ch) = &r.chat {
        s.push_str(&format!(
            "  chat: posts {}  accepted {}  rejected {}  unknown {}  stored {}  lost {}  duplicates {}  missed {}  delivered {}\n",
            ch.posts, ch.accepted, ch.rejected, ch.unknown, ch.stored, ch.lost, ch.duplicates, ch.missed, ch.delivered
        ));
        s.push_str(&format!(
            "  chat: wall breaches {}  refused joins {}  busy {}  reconnects {}  retried posts {}  leaves {}  redundant copies {}\n",
            ch.wall_breaches, ch.refused_joins, ch.busy, ch.reconnects, ch.post_retries, ch.leaves, ch.redundant
        ));
        if ch.cleared + ch.replaced + ch.disabled + ch.records_errors + ch.records_failed > 0 {
            s.push_str(&format!(
                "  chat records: cleared {}  replaced {}  disabled {}  skipped in catch-ups {}  errors {}  failed actions {}\n",
                ch.cleared, ch.replaced, ch.disabled, ch.skipped, ch.records_errors, ch.records_failed
            ));
        }
        if ch.purged + ch.unpurged > 0 {
            s.push_str(&format!(
                "  chat retention: purged {}  kept past the window {}\n",
                ch.purged, ch.unpurged
            ));
        }
        if ch.files_stored > 0 {
            s.push_str(&format!(
                "  files: stored {}  lost {}  downloaded {}  corrupt {}  refused {}\n",
                ch.files_stored,
                ch.files_lost,
                ch.files_downloaded,
                ch.files_corrupt,
                ch.file_refusals
            ));
        }
        if let Some(cc) = &ch.compliance {
            let kinds: Vec<String> = cc.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            s.push_str(&format!(
                "  compliance: exported {} in {} batches ({})  missing {}  duplicates {}  wrong {}  pending {}\n",
                cc.exported,
                cc.batches,
                kinds.join(", "),
                cc.missing,
                cc.duplicates,
                cc.wrong,
                cc.pending
            ));
            s.push_str(&format!(
                "  compliance files: exported {}  missing {}  wrong {}  batches acknowledged {}  kept or removed wrongly {}\n",
                cc.files_exported, cc.files_missing, cc.files_wrong, cc.acked, cc.pickup_wrong
            ));
        }
    }
    if let Some(at) = c.drained_at {
        s.push_str(&format!(
            "  last archivable message archived at {}\n",
            fmt_ms(at)
        ));
    }
    if c.accepted > 0 {
        let [p50, p99, max] = c.accept_latency_ms;
        s.push_str(&format!(
            "  accept latency: p50 {}  p99 {}  max {}\n",
            fmt_ms(p50),
            fmt_ms(p99),
            fmt_ms(max)
        ));
    }
    if let Some(h) = &r.hostile {
        s.push_str(&format!(
            "  hostile: requests {}  accepted over a limit {}  refused {}  reused-id taken {} (unarchived {})  flood connections {} (refused {})\n",
            h.requests, h.accepted, h.refused, h.reused_accepted, h.reused_unarchived, h.flood_connections, h.flood_refused
        ));
    }
    // Counts named only when there are any.
    for (n, what) in [
        (
            c.lost_reported,
            "lost and reported by an operator event (store damage)",
        ),
        (
            c.parked,
            "refused by the database for good and parked for an operator",
        ),
        (
            c.delivered_not_archived,
            "delivered and told \"not archived\" (critical mode off, store failing)",
        ),
    ] {
        if n > 0 {
            s.push_str(&format!("  {what}: {n}\n"));
        }
    }
    if c.expired > 0 {
        s.push_str(&format!(
            "  of the lost, {} were dropped by expiry\n",
            c.expired
        ));
    }
    if c.by_kind.len() > 1 || c.qoe_dropped > 0 {
        let kinds: Vec<String> = c
            .by_kind
            .iter()
            .map(|(k, (a, ar))| format!("{k} {ar}/{a}"))
            .collect();
        s.push_str(&format!(
            "  archived/accepted by kind: {}; QoE reports dropped (allowed): {}\n",
            kinds.join(", "),
            c.qoe_dropped
        ));
    }
    for sd in &r.critical {
        s.push_str(&format!(
            "  critical shutdown: {} at {}{}{}\n",
            sd.node,
            fmt_ms(sd.at),
            match (&sd.cause, sd.latency_ms) {
                (Some(c), Some(l)) => format!(", {} after {c}", fmt_ms(l)),
                _ => String::new(),
            },
            match sd.until {
                Some(u) => format!(", resumed at {}", fmt_ms(u)),
                None => ", never resumed".into(),
            }
        ));
    }
    for v in &r.recovery {
        let secs = |ms: Option<Millis>| ms.map_or("-".to_string(), fmt_ms);
        s.push_str(&format!(
            "  recovery of {}: shutdown {} after the first cut, first delivery {} and resume {} after the heal at {}\n",
            v.node,
            secs(v.shutdown_ms),
            secs(v.first_delivery_ms),
            secs(v.resume_ms),
            fmt_ms(v.heal_ms)
        ));
    }
    let ev = r.event_counts();
    if !ev.is_empty() {
        let list: Vec<String> = ev.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        s.push_str(&format!("  events: {}\n", list.join(" ")));
    }
    let depths: Vec<String> = r
        .gauges
        .iter()
        .flat_map(|(node, g)| {
            g.iter()
                .filter(|(k, v)| k.ends_with("_depth") && **v > 0)
                .map(move |(k, v)| format!("{node} {}={v}", k.trim_end_matches("_depth")))
        })
        .collect();
    if !depths.is_empty() {
        s.push_str(&format!("  max queue depth: {}\n", depths.join(", ")));
    }
    s.push_str(&format!(
        "  trace {:016x} ({} events)\n",
        r.trace_hash, r.trace_len
    ));
    if failures.is_empty() {
        s.push_str("  PASS\n");
    } else {
        for f in failures {
            s.push_str(&format!("  FAIL: {f}\n"));
        }
    }
    s
}

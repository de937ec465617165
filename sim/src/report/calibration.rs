//! Calibration against a real network: the figures the real-network
//! partition suite (`node/tests/real_partitions.rs`) measures on real
//! processes, compared with the same figures of the same cases run as
//! scenario files (`scenarios/calibration/*.toml`), within stated
//! tolerances. `sim/tests/calibration.rs` runs the comparison.
//!
//! The real suite writes one JSON line per case (`case`, `shutdown_secs`,
//! `first_delivery_secs`, `resume_secs`, `duplicates_dropped`, …; a figure
//! that did not happen is `null`) to `calibration/real-partitions.jsonl`
//! under cargo's target temporary folder (`target/tmp`).

use crate::report::RunResult;
use holdfast_actors::core::ids::Millis;
use holdfast_actors::core::operator::Gauge;
use serde_json::Value;
use std::collections::BTreeMap;

/// Where the real suite writes its figures, under cargo's `target/tmp`.
pub const REAL_FIGURES_FILE: &str = "calibration/real-partitions.jsonl";

/// What both sides measure of one case. `None`: it did not happen (no
/// critical shutdown after a short cut) or was not measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// First cut → the first critical-mode refusal a client received.
    pub shutdown_secs: Option<f64>,
    /// Last heal → the first record of the cut front end archived.
    pub first_delivery_secs: Option<f64>,
    /// Last heal → the first IM to the cut front end submitted after the
    /// heal and accepted.
    pub resume_secs: Option<f64>,
    /// Transfers the archiving server's destination queue dropped as
    /// already stored (its `duplicates_dropped` gauge at the end).
    pub duplicates_dropped: Option<u64>,
}

/// How far the simulator may be from a real network, figure by figure.
/// The simulator's timers are exact; real processes add scheduling
/// jitter, a client that polls the archive every 100 ms, a load that is
/// periodic where the simulated one is Poisson, and phases (where in its
/// heartbeat period a cut falls) that the simulator draws from its seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerances {
    /// Seconds either way. The shutdown comes when a heartbeat sent after
    /// the cut misses its TTRQ (30 s), noticed at a heartbeat tick: where
    /// the cut falls in the 5 s heartbeat period moves it by up to one
    /// period, on both sides independently. One period, plus 1 s for
    /// scheduling.
    pub shutdown_secs: f64,
    /// Seconds either way. After the heal the connection is re-made
    /// (reconnect backoff of at most 2 s on both sides, a connect across a
    /// cut abandoned after 1.5 s on real nodes) and the queue's probe
    /// answered; the bound the real suite asserts is the resend interval
    /// (2 s) + 3 s. Half of that bound, so that a simulator twice as fast
    /// or as slow as the real network is caught.
    pub first_delivery_secs: f64,
    /// Seconds either way. Resume follows the first delivery by a
    /// processed heartbeat (up to a 5 s heartbeat period behind the
    /// backlog) and `critical_resume_after` (2 s); what varies between the
    /// two sides is the heartbeat phase. 3 s: more than the first
    /// delivery's jitter, less than a heartbeat period plus it.
    pub resume_secs: f64,
    /// Transfers either way, absolute. Which in-flight transfers are
    /// resent depends on how much a connection held when it was cut
    /// (segments in flight, the kernel's buffers): the simulator models a
    /// window, not a kernel.
    pub duplicates_dropped: u64,
    /// And as a fraction of the larger count: past the absolute slack,
    /// counts that differ by less than this agree.
    pub duplicates_dropped_fraction: f64,
}

/// The tolerances the test suite holds the simulator to (see
/// `docs/architecture.md`, "Calibration against a real network").
pub const TOLERANCES: Tolerances = Tolerances {
    shutdown_secs: 6.0,
    first_delivery_secs: 2.5,
    resume_secs: 3.0,
    duplicates_dropped: 10,
    duplicates_dropped_fraction: 0.5,
};

fn secs(ms: Option<Millis>) -> Option<f64> {
    ms.map(|ms| ms as f64 / 1000.0)
}

/// The simulator's figures for the front end `front_end` and its archiving
/// server `archiver` (`None` figures if the run had no recovery for it).
pub fn sim_figures(r: &RunResult, front_end: &str, archiver: &str) -> Figures {
    let rec = r.recovery.iter().find(|v| v.node == front_end);
    Figures {
        shutdown_secs: rec.and_then(|v| secs(v.shutdown_ms)),
        first_delivery_secs: rec.and_then(|v| secs(v.first_delivery_ms)),
        resume_secs: rec.and_then(|v| secs(v.resume_ms)),
        duplicates_dropped: r
            .gauges
            .get(archiver)
            .and_then(|g| g.get(Gauge::DuplicatesDropped.name()))
            .copied(),
    }
}

/// The real suite's figures by case, from its JSON lines (blank lines
/// skipped; a later line for a case replaces an earlier one).
pub fn parse_real(text: &str) -> Result<BTreeMap<String, Figures>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}: {line}", i + 1))?;
        let case = v
            .get("case")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {}: no \"case\": {line}", i + 1))?;
        let num = |k: &str| -> Result<Option<f64>, String> {
            match v.get(k) {
                None => Err(format!("line {}: no {k:?}: {line}", i + 1)),
                Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("line {}: {k:?} is not a number: {line}", i + 1)),
            }
        };
        out.insert(
            case.to_string(),
            Figures {
                shutdown_secs: num("shutdown_secs")?,
                first_delivery_secs: num("first_delivery_secs")?,
                resume_secs: num("resume_secs")?,
                duplicates_dropped: num("duplicates_dropped")?.map(|n| n as u64),
            },
        );
    }
    Ok(out)
}

/// Every difference beyond the tolerances between the real and the
/// simulated figures of `case`, as a sentence. A figure that happened on
/// one side only (a shutdown in one and not the other) is a difference; a
/// figure missing on both sides is not.
pub fn compare(case: &str, real: &Figures, sim: &Figures, tol: &Tolerances) -> Vec<String> {
    let mut out = Vec::new();
    let show = |v: Option<f64>| v.map_or("none".to_string(), |s| format!("{s:.1} s"));
    for (what, r, s, slack) in [
        (
            "critical shutdown after the cut",
            real.shutdown_secs,
            sim.shutdown_secs,
            tol.shutdown_secs,
        ),
        (
            "heal -> first delivery",
            real.first_delivery_secs,
            sim.first_delivery_secs,
            tol.first_delivery_secs,
        ),
        (
            "heal -> resume",
            real.resume_secs,
            sim.resume_secs,
            tol.resume_secs,
        ),
    ] {
        let ok = match (r, s) {
            (None, None) => true,
            (Some(r), Some(s)) => (r - s).abs() <= slack,
            _ => false,
        };
        if !ok {
            out.push(format!(
                "{case}: {what}: real {}, simulator {} (tolerance {slack:.1} s)",
                show(r),
                show(s)
            ));
        }
    }
    match (real.duplicates_dropped, sim.duplicates_dropped) {
        (Some(r), Some(s)) => {
            let slack = tol
                .duplicates_dropped
                .max((r.max(s) as f64 * tol.duplicates_dropped_fraction) as u64);
            if r.abs_diff(s) > slack {
                out.push(format!(
                    "{case}: duplicates dropped: real {r}, simulator {s} (tolerance {slack})"
                ));
            }
        }
        (r, s) => out.push(format!(
            "{case}: duplicates dropped not measured on both sides: real {r:?}, simulator {s:?}"
        )),
    }
    out
}

/// A side-by-side table of the figures of every case.
pub fn table(rows: &[(String, Figures, Figures)]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.1}"));
    let n = |v: Option<u64>| v.map_or("-".to_string(), |d| d.to_string());
    let mut s = format!(
        "{:<17} {:>17} {:>17} {:>17} {:>17}\n",
        "case (real / sim)", "shutdown s", "first delivery s", "resume s", "duplicates"
    );
    for (case, r, m) in rows {
        s.push_str(&format!(
            "{:<17} {:>17} {:>17} {:>17} {:>17}\n",
            case,
            format!("{} / {}", f(r.shutdown_secs), f(m.shutdown_secs)),
            format!(
                "{} / {}",
                f(r.first_delivery_secs),
                f(m.first_delivery_secs)
            ),
            format!("{} / {}", f(r.resume_secs), f(m.resume_secs)),
            format!("{} / {}", n(r.duplicates_dropped), n(m.duplicates_dropped)),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The long cut as the real suite measured it.
    fn real() -> Figures {
        Figures {
            shutdown_secs: Some(35.0),
            first_delivery_secs: Some(1.1),
            resume_secs: Some(3.1),
            duplicates_dropped: Some(4),
        }
    }

    #[test]
    fn figures_within_the_tolerances_agree() {
        let sim = Figures {
            shutdown_secs: Some(31.0),
            first_delivery_secs: Some(2.9),
            resume_secs: Some(5.5),
            duplicates_dropped: Some(12),
        };
        assert_eq!(
            compare("long-cut", &real(), &sim, &TOLERANCES),
            Vec::<String>::new()
        );
    }

    /// `compare` finds one difference, in case `case`, between the long
    /// cut's real figures and `sim`, and it says each of `words`.
    fn one_difference(case: &str, sim: Figures, words: &[&str]) {
        let d = compare(case, &real(), &sim, &TOLERANCES);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(words.iter().all(|w| d[0].contains(w)), "{d:?}");
    }

    #[test]
    fn each_figure_beyond_its_tolerance_is_reported() {
        // The simulator before the liveness work: recovery left to a
        // madsim retry capped at 10 s, 8.6 s after the heal.
        let sim = Figures {
            first_delivery_secs: Some(8.6),
            ..real()
        };
        one_difference("long-cut", sim, &["first delivery", "8.6"]);
        // A shutdown late by more than a heartbeat period.
        let sim = Figures {
            shutdown_secs: Some(42.0),
            ..real()
        };
        one_difference("long-cut", sim, &["critical shutdown"]);
        let sim = Figures {
            resume_secs: Some(0.0),
            ..real()
        };
        one_difference("long-cut", sim, &["resume"]);
        let sim = Figures {
            duplicates_dropped: Some(261),
            ..real()
        };
        one_difference("one-way-cut", sim, &["duplicates"]);
    }

    #[test]
    fn a_figure_on_one_side_only_is_a_difference() {
        let sim = Figures {
            shutdown_secs: None,
            ..real()
        };
        one_difference("long-cut", sim, &["simulator none"]);
        let sim = Figures {
            duplicates_dropped: None,
            ..real()
        };
        one_difference("long-cut", sim, &["not measured"]);
        // Neither side shut down: that agrees.
        let short = Figures {
            shutdown_secs: None,
            ..real()
        };
        assert!(compare("short-cut", &short, &short, &TOLERANCES).is_empty());
    }

    #[test]
    fn a_tolerance_of_nothing_reports_any_difference() {
        let exact = Tolerances {
            shutdown_secs: 0.0,
            first_delivery_secs: 0.0,
            resume_secs: 0.0,
            duplicates_dropped: 0,
            duplicates_dropped_fraction: 0.0,
        };
        let sim = Figures {
            shutdown_secs: Some(35.1),
            first_delivery_secs: Some(1.0),
            resume_secs: Some(3.2),
            duplicates_dropped: Some(5),
        };
        assert_eq!(compare("long-cut", &real(), &sim, &exact).len(), 4);
    }

    #[test]
    fn the_real_suite_lines_parse() {
        let text = r#"{"case":"short-cut","cut_secs":20,"shutdown_secs":null,"first_delivery_secs":0.912,"resume_secs":0.004,"accepted":1200,"rejected":0,"unknown":0,"lost":0,"duplicated":0,"duplicates_dropped":3}

{"case":"long-cut","cut_secs":90,"shutdown_secs":35.012,"first_delivery_secs":1.1,"resume_secs":3.1,"accepted":1,"rejected":1,"unknown":0,"lost":0,"duplicated":0,"duplicates_dropped":null}
"#;
        let m = parse_real(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["short-cut"].shutdown_secs, None);
        assert_eq!(m["short-cut"].duplicates_dropped, Some(3));
        assert_eq!(m["long-cut"].shutdown_secs, Some(35.012));
        assert_eq!(m["long-cut"].duplicates_dropped, None);
        let e = parse_real("{\"case\":\"x\",\"first_delivery_secs\":1}").unwrap_err();
        assert!(e.contains("shutdown_secs"), "{e}");
        assert!(parse_real("not json").is_err());
    }
}

//! Overload on real processes: a load far past what the front ends take.
//! Every request gets an answer — accepted or busy, at once — none is left
//! to time out, and every IM accepted is archived exactly once. The test
//! asserts outcomes, never a speed: the offered rate is simply more than
//! two front-end processes of this build can take on any machine the suite
//! runs on (the `front-end-overload` and `front-end-inbox-full` scenarios
//! check the same in the simulator).

mod common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn past_capacity_every_request_is_answered_and_what_is_accepted_is_archived() {
    // The production admission budget, not the functional tests' 2 s.
    let c = TestCluster::start("plain", "admission_wait = \"100ms\"\n");
    let dir = tempfile::tempdir().unwrap();
    let outcomes = dir.path().join("outcomes.jsonl");
    let outcomes_arg = outcomes.to_str().unwrap();
    let (code, out, err) = c.cli(&[
        "load",
        "--rate",
        "40000",
        "--duration",
        "3s",
        "--timeout",
        "30s",
        "--json",
        "--outcomes",
        outcomes_arg,
    ]);
    // Not every IM was accepted: `load` says so with exit 1.
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("load --json printed no report ({e}): {out}{err}"));
    let field = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in {report}"))
    };
    let (sent, accepted, busy) = (field("sent"), field("accepted"), field("busy"));
    let (unknown, not_sent) = (field("unknown"), field("not_sent"));
    eprintln!("load at 40,000 IM/s for 3 s: {report}");
    // Past capacity: the front ends said busy, and took some.
    assert!(busy > 0, "no busy answer at 40,000 IM/s offered: {report}");
    assert!(accepted > 0, "nothing accepted: {report}");
    // Every request that left the generator was answered: none waited
    // unseen into the client's timeout. (`not_sent`: dropped in the
    // generator's own full queue, never offered to the cluster.)
    assert_eq!(
        unknown - not_sent,
        0,
        "requests the cluster left unanswered: {report}"
    );
    // The outcomes file agrees with the report, and names the accepted.
    let lines = std::fs::read_to_string(&outcomes).unwrap();
    let mut by_outcome: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_outcome
            .entry(v["outcome"].as_str().unwrap().to_string())
            .or_default()
            .push(v["id"].as_str().unwrap().to_string());
    }
    let count = |k: &str| by_outcome.get(k).map_or(0, |v| v.len() as u64);
    assert_eq!(count("accepted"), accepted, "{by_outcome:?}");
    assert_eq!(count("busy"), busy);
    assert_eq!(lines.lines().count() as u64, sent);
    // What was accepted is archived, once each; nothing refused is.
    let accepted_ids = by_outcome.remove("accepted").unwrap_or_default();
    let archive = c.wait_archive(Duration::from_secs(60), |a| {
        accepted_ids.iter().all(|id| a.contains_key(id))
    });
    let missing = accepted_ids
        .iter()
        .filter(|id| !archive.contains_key(*id))
        .count();
    assert_eq!(missing, 0, "accepted but not archived");
    let twice: Vec<_> = archive.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "archived more than once: {twice:?}");
    let refused_archived: Vec<&String> = by_outcome
        .get("busy")
        .into_iter()
        .flatten()
        .filter(|id| archive.contains_key(*id))
        .collect();
    assert!(
        refused_archived.is_empty(),
        "answered busy but archived: {refused_archived:?}"
    );
}

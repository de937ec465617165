//! Records management on real processes: a legal hold placed by an
//! auditor keeps its rows through a purge an operator starts; rows past
//! the retention window and not held are deleted; the hold, released,
//! stays on record and its rows go at the next purge.

mod common;

use common::archive::{archived, now_ms, retention_status};
use common::TestCluster;
use holdfast::archive_db::ArchiveDb;
use holdfast_actors::core::actor::StoreOp;
use holdfast_actors::core::protocol::{ArchiveRecord, RecordKind};
use holdfast_actors::core::store_keys as keys;
use std::time::Duration;

const ALICE: &str = "alice@corp.example";
const BOB: &str = "bob@corp.example";
const CAROL: &str = "carol@corp.example";
const DAN: &str = "dan@corp.example";

/// An IM archived `days` ago, written into the live archive as the
/// database core writes it (the row and its time index entry).
fn old_row(id: &str, from: &str, to: &str, days: u64) -> Vec<StoreOp> {
    let time = now_ms() - days * 86_400_000;
    archived(
        ArchiveRecord {
            kind: RecordKind::Im,
            id: id.into(),
            client_id: id.into(),
            from: from.into(),
            to: to.into(),
            time,
            body: format!("{id} from long ago"),
            external: false,
            front_end: "fe1".into(),
        },
        keys::encode(&(from.to_string(), to.to_string())),
    )
}

fn archived_ids(c: &TestCluster) -> Vec<String> {
    let (code, out, err) = c.cli(&["archive", "query", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["client_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_hold_keeps_its_rows_through_a_purge_and_its_release_lets_them_go() {
    let c = TestCluster::start("tls", "archive_keep_days = 1");
    let (code, out, err) = c.cli(&[
        "im", "send", "--from", ALICE, "--to", BOB, "--id", "new-1", "hi",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    c.wait_archive(Duration::from_secs(30), |a| !a.is_empty());
    // Two IMs three days old: one of Carol's, one of Dan's.
    let mut db = ArchiveDb::open(&c.archive_path()).unwrap();
    let mut ops = old_row("old-carol", CAROL, BOB, 3);
    ops.extend(old_row("old-dan", DAN, BOB, 3));
    db.apply(&ops).unwrap();
    drop(db);
    assert_eq!(archived_ids(&c), ["new-1", "old-carol", "old-dan"]);

    // Only an auditor places a hold.
    let add = |who: &str| {
        c.cli(&[
            "archive",
            "hold",
            "add",
            "--as",
            who,
            "--name",
            "case-17",
            "--users",
            CAROL,
            "--reason",
            "litigation 2026-17",
        ])
    };
    let (code, out, err) = add(ALICE);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("needs the auditor role"), "{err}");
    let (code, out, err) = add("auditor");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("hold case-17 placed by auditor:auditor"),
        "{out}"
    );

    // Only an operator starts a purge; it deletes Dan's old IM, keeps
    // Carol's for the hold, and the new one for the window.
    let (code, _, err) = c.cli(&["archive", "retention", "purge-now", "--as", "auditor"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = c.cli(&["archive", "retention", "purge-now", "--as", "operator"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 rows deleted, 1 kept for a hold"), "{out}");
    assert_eq!(archived_ids(&c), ["new-1", "old-carol"]);
    assert!(c.log("db1").contains("archive_purged"), "{}", c.log("db1"));

    // Released, the hold stays on record and its rows go at the next purge.
    let (code, out, err) = c.cli(&[
        "archive",
        "hold",
        "release",
        "--name",
        "case-17",
        "--reason",
        "case settled",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = c.cli(&["archive", "retention", "purge-now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(archived_ids(&c), ["new-1"]);
    let state = retention_status(&c);
    assert_eq!(state["keep_days"], 1);
    assert_eq!(state["purge"]["deleted"], 1);
    assert!(state["purge"]["finished_at"].is_u64(), "{state}");
    let hold = &state["holds"][0];
    assert_eq!(hold["name"], "case-17");
    assert_eq!(hold["released"]["reason"], "case settled");
    assert_eq!(hold["released"]["by"], "auditor:auditor");
    // As text, for a person.
    let (code, out, err) = c.cli(&["archive", "hold", "list"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("case-17  RELEASED") && out.contains("case settled"),
        "{out}"
    );
}

//! eDiscovery export on real processes: an auditor exports the messages
//! of some users in EML, JSON lines and CSV; every file is read back with
//! an independent parser and compared field by field with `archive query
//! --json`; the manifest's SHA-256s are recomputed; the files are private.
//! With `purge_exported_only` a purge deletes the old rows an export
//! covered and keeps the others.

mod common;

use common::archive::{archived, now_ms, retention_status};
use common::TestCluster;
use holdfast::archive_db::ArchiveDb;
use holdfast_actors::core::actor::StoreOp;
use holdfast_actors::core::protocol::{ArchiveRecord, RecordKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const ALICE: &str = "alice@corp.example";
const BOB: &str = "bob@corp.example";
const CAROL: &str = "carol@corp.example";
const DAN: &str = "dan@corp.example";
const ERIN: &str = "erin@corp.example";

/// A row archived at `time`, written into the live archive as the
/// database core writes it (the row and its time index entry).
fn old_row(
    id: &str,
    kind: RecordKind,
    from: &str,
    to: &str,
    time: u64,
    body: &str,
) -> Vec<StoreOp> {
    archived(
        ArchiveRecord {
            kind,
            id: id.into(),
            client_id: format!("c-{id}").into(),
            from: from.into(),
            to: to.into(),
            time,
            body: body.into(),
            external: id.ends_with('x'),
            front_end: "fe1".into(),
        },
        Vec::new(),
    )
}

/// The rows `archive query` answers for these users, as JSON objects.
fn query(c: &TestCluster, users: &str) -> Vec<Value> {
    let (code, out, err) = c.cli(&["archive", "query", "--users", users, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, relative, with `/`.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Checks the manifest against the folder (every file named, sizes and
/// SHA-256s recomputed) and returns it.
fn manifest(dir: &Path) -> Value {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut named: Vec<String> = Vec::new();
    for f in m["files"].as_array().unwrap() {
        let path = dir.join(f["path"].as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(f["bytes"].as_u64(), Some(bytes.len() as u64), "{f}");
        let sha = holdfast::archive_export::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        assert_eq!(f["sha256"].as_str(), Some(sha.as_str()), "{f}");
        named.push(f["path"].as_str().unwrap().to_string());
    }
    named.push("manifest.json".into());
    named.sort();
    assert_eq!(files(dir), named, "the manifest names every file");
    m
}

/// The fields `archive query --json` prints, as strings, per row id.
type Rows = BTreeMap<String, BTreeMap<String, String>>;

fn json_rows(rows: &[Value]) -> Rows {
    rows.iter()
        .map(|r| {
            let fields = r
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect();
            (r["id"].as_str().unwrap().to_string(), fields)
        })
        .collect()
}

fn csv_rows(path: &Path) -> Rows {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let fields: BTreeMap<String, String> = header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect();
            (fields["id"].clone(), fields)
        })
        .collect()
}

fn eml_rows(dir: &Path) -> Rows {
    let mut rows = Rows::new();
    for f in files(dir).iter().filter(|f| f.ends_with(".eml")) {
        assert!(f.starts_with("messages/000000/"), "{f}");
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let m = mail_parser::MessageParser::default()
            .parse(&bytes)
            .unwrap_or_else(|| panic!("{f} does not parse"));
        let text = |h: &str| {
            m.header(h)
                .and_then(|v| v.as_text())
                .unwrap_or_else(|| panic!("{f}: no {h}"))
                .to_string()
        };
        let id = text("X-Holdfast-Id");
        let time: u64 = text("X-Holdfast-Time").parse().unwrap();
        assert_eq!(
            m.date().unwrap().to_timestamp(),
            (time / 1000) as i64,
            "{f}: Date"
        );
        assert_eq!(
            m.message_id(),
            Some(format!("{id}@archive.holdfast").as_str())
        );
        let addr = |a: Option<&mail_parser::Address>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap()
                .to_string()
        };
        let mut body = m.body_text(0).unwrap().into_owned();
        if m.header_raw("Content-Transfer-Encoding").map(str::trim) == Some("7bit") {
            // The line break that ends a 7bit body is the message's.
            body = body.strip_suffix("\r\n").unwrap_or(&body).to_string();
        }
        let fields = BTreeMap::from([
            ("id".to_string(), id.clone()),
            ("kind".into(), text("X-Holdfast-Kind")),
            ("from".into(), addr(m.from())),
            ("to".into(), addr(m.to())),
            ("time".into(), time.to_string()),
            ("body".into(), body),
            ("external".into(), text("X-Holdfast-External")),
            ("front_end".into(), text("X-Holdfast-Front-End")),
            ("archived_at".into(), text("X-Holdfast-Archived-At")),
            ("client_id".into(), text("X-Holdfast-Client-Id")),
            ("rowid".into(), text("X-Holdfast-Rowid")),
        ]);
        rows.insert(id, fields);
    }
    rows
}

#[test]
fn an_export_in_every_format_reads_back_as_the_query_and_the_purge_waits_for_it() {
    let c = TestCluster::start("tls", "archive_keep_days = 1\npurge_exported_only = true");
    let multi = "Grüße aus Köln\r\nzweite Zeile: 日本語\n\tund ein Tab";
    for (id, from, to, body) in [
        ("new-1", ALICE, BOB, "plain hello"),
        ("new-2", BOB, ALICE, multi),
        (
            "new-3",
            "user1@corp.example",
            "user21@corp.example",
            "not exported",
        ),
    ] {
        let (code, out, err) = c.cli(&["im", "send", "--from", from, "--to", to, "--id", id, body]);
        assert_eq!(code, 0, "{out}{err}");
    }
    c.wait_archive(Duration::from_secs(30), |a| a.len() >= 3);
    // Old rows (three days): three at one timestamp, a call record, a
    // long line, and rows of users nobody exports.
    let t = now_ms() - 3 * 86_400_000;
    let long = format!("{}é", "x".repeat(2000));
    let mut ops = Vec::new();
    for (id, kind, from, to, time, body) in [
        ("old-a", RecordKind::Im, CAROL, BOB, t, "same time 1"),
        (
            "old-b",
            RecordKind::Im,
            BOB,
            ALICE,
            t,
            "same time 2 = \"quoted\", comma",
        ),
        (
            "old-c",
            RecordKind::Im,
            DAN,
            ERIN,
            t,
            "same time, not exported",
        ),
        ("old-dx", RecordKind::Cdr, ALICE, DAN, t + 5, "call 42s"),
        ("old-e", RecordKind::Im, ALICE, CAROL, t + 9, long.as_str()),
        (
            "old-f",
            RecordKind::Im,
            ERIN,
            DAN,
            t + 10,
            "also not exported",
        ),
    ] {
        ops.extend(old_row(id, kind, from, to, time, body));
    }
    let mut db = ArchiveDb::open(&c.archive_path()).unwrap();
    db.apply(&ops).unwrap();
    drop(db);

    let users = format!("{ALICE},{CAROL}");
    let expected = json_rows(&query(&c, &users));
    let ids: Vec<&str> = expected.keys().map(String::as_str).collect();
    // Archive ids of the IMs sent are the front end's; the old rows' are
    // their own.
    assert_eq!(
        ids.iter().filter(|i| i.starts_with("old-")).count(),
        4,
        "{ids:?}"
    );
    assert_eq!(expected.len(), 6, "{ids:?}");

    let out = tempfile::tempdir().unwrap();
    for format in ["eml", "jsonl", "csv"] {
        let dir = out.path().join(format);
        let export = || {
            c.cli(&[
                "archive",
                "export",
                "--users",
                &users,
                "--format",
                format,
                "--out",
                dir.to_str().unwrap(),
            ])
        };
        let (code, stdout, err) = export();
        assert_eq!(code, 0, "{stdout}{err}");
        assert!(stdout.contains("recorded by db1"), "{stdout}");
        let m = manifest(&dir);
        // The export's count is the query's.
        assert_eq!(
            m["counts"]["rows"].as_u64(),
            Some(expected.len() as u64),
            "{m}"
        );
        assert_eq!(m["counts"]["kinds"]["cdr"], 1, "{m}");
        assert_eq!(m["counts"]["kinds"]["im"], 5, "{m}");
        assert_eq!(m["query"]["users"], serde_json::json!([ALICE, CAROL]));
        assert_eq!(m["query"]["format"], format);
        assert!(m["holdfast_version"].is_string());
        let got = match format {
            "eml" => eml_rows(&dir),
            "jsonl" => json_rows(
                &std::fs::read_to_string(dir.join("messages.jsonl"))
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>(),
            ),
            _ => csv_rows(&dir.join("messages.csv")),
        };
        assert_eq!(got, expected, "{format}");
        // Refused into a folder that is not empty (a usage error).
        let (code, _, err) = export();
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("not empty"), "{err}");
    }
    // An empty list is not "everyone": that takes --all-users.
    let (code, _, err) = c.cli(&[
        "archive",
        "export",
        "--users",
        "",
        "--format",
        "csv",
        "--out",
        out.path().join("empty").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!out.path().join("empty").exists());
    // A user may not export; the folder stays as it was.
    let (code, _, err) = c.cli(&[
        "archive",
        "export",
        "--as",
        ALICE,
        "--users",
        ALICE,
        "--format",
        "jsonl",
        "--out",
        out.path().join("refused").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");

    // The exports are on record; the purge deletes the old rows they
    // covered and keeps the others (Dan's and Erin's).
    let state = retention_status(&c);
    assert_eq!(state["purge_exported_only"], true);
    assert_eq!(state["exports"].as_array().unwrap().len(), 3, "{state}");
    let (code, stdout, err) = c.cli(&["archive", "retention", "purge-now", "--as", "operator"]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        stdout.contains("4 rows deleted, 0 kept for a hold, 2 kept as not exported"),
        "{stdout}"
    );
    let left: Vec<String> = query(&c, &format!("{ALICE},{BOB},{CAROL},{DAN},{ERIN}"))
        .iter()
        .map(|r| r["client_id"].as_str().unwrap().to_string())
        .filter(|i| i.starts_with("c-old"))
        .collect();
    assert_eq!(left, ["c-old-c", "c-old-f"]);

    // A cluster out of reach: exit 3, and no folder to clean up.
    let mut c = c;
    c.stop_all();
    let dir = out.path().join("unreachable");
    let (code, _, err) = c.cli(&[
        "archive",
        "export",
        "--all-users",
        "--format",
        "csv",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(!dir.exists());
}

//! Reading the archive over the network: `holdfast archive query` asks
//! the database node as an auditor, from a machine that holds no archive;
//! a user is refused; `holdfast archive audit` shows both reads.

mod common;

use common::{exe, TestCluster};
use std::path::Path;
use std::time::Duration;

const ALICE: &str = "alice@corp.example";
const BOB: &str = "bob@corp.example";

/// Runs the command-line tool with the config `config`.
fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(exe())
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cluster's config as another machine has it: the same nodes and
/// certificates, its own (empty) data folder.
fn elsewhere(c: &TestCluster) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(c.dir.path().join("cluster.toml")).unwrap();
    let text = text.replacen(
        "[cluster]\n",
        &format!(
            "[cluster]\ncerts = {:?}\ndata = {:?}\n",
            c.config.certs,
            dir.path().join("data")
        ),
        1,
    );
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

#[test]
fn an_auditor_reads_the_archive_over_the_network_a_user_is_refused_and_both_are_recorded() {
    let c = TestCluster::start("tls", "");
    for (id, body) in [("r-1", "hello one"), ("r-2", "hello two"), ("r-3", "other")] {
        let (code, out, err) =
            c.cli(&["im", "send", "--from", ALICE, "--to", BOB, "--id", id, body]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let archived = c.wait_archive(Duration::from_secs(30), |a| a.len() >= 3);
    assert_eq!(archived.len(), 3, "{archived:?}");

    let (_far, config) = elsewhere(&c);
    let here = holdfast::config::Config::load(&config).unwrap();
    let archive = here.node("db1").unwrap().archive_path();
    assert!(!archive.exists() && !archive.parent().unwrap().exists());

    // An auditor (the default credential) gets the rows, in pages.
    let (code, out, err) = cli(&config, &["archive", "query", "--user", ALICE, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<&str> = rows
        .iter()
        .map(|r| r["client_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["r-1", "r-2", "r-3"]);
    assert!(rows
        .iter()
        .all(|r| r["from"] == ALICE && r["rowid"].as_u64() > Some(0)));
    let (code, out, err) = cli(
        &config,
        &[
            "archive", "query", "--text", "HELLO", "--limit", "1", "--wait", "r-3",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("alice@corp.example -> bob@corp.example") && out.contains("hello"));
    assert!(err.lines().any(|l| l == "1 message"), "{err}");

    // A user without the auditor role is refused by the database.
    let (code, out, err) = cli(
        &config,
        &["archive", "query", "--as", ALICE, "--user", ALICE],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("db1 refused: forbidden") && err.contains("needs the auditor role"),
        "{err}"
    );
    assert!(
        c.log("db1").contains("identity_refused"),
        "{}",
        c.log("db1")
    );
    let (code, _, err) = cli(&config, &["archive", "audit", "--as", ALICE]);
    assert_eq!(code, 2, "{err}");

    // The read trail: every read above, the refused ones too, then this one.
    let (code, out, err) = cli(&config, &["archive", "audit", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let reads: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<u64> = reads.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{out}");
    let first = &reads[0];
    assert_eq!(first["who"], "auditor:auditor", "{out}");
    assert_eq!(
        first["what"]["Messages"]["users"],
        serde_json::json!([ALICE]),
        "{out}"
    );
    assert_eq!(
        (first["rows"].as_u64(), &first["refused"]),
        (Some(3), &serde_json::Value::Null)
    );
    let refused: Vec<&serde_json::Value> = reads
        .iter()
        .filter(|r| r["who"] == format!("user:{ALICE}"))
        .collect();
    assert_eq!(refused.len(), 2, "the query and the audit: {out}");
    assert!(refused
        .iter()
        .all(|r| r["rows"] == 0 && r["refused"].as_str().unwrap().contains("auditor")));
    let last = reads.last().unwrap();
    assert!(last["what"]["Trail"].is_object(), "this read itself: {out}");
    // As text, for a person.
    let (code, out, err) = cli(&config, &["archive", "audit"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("user:alice@corp.example") && out.contains("REFUSED"),
        "{out}"
    );
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("search users=alice@corp.example"),
        "{out}"
    );
    assert!(!archive.exists(), "nothing was read or written here");
}

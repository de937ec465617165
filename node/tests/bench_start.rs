//! `holdfast bench-start` builds its stores, starts a node on each and
//! reports every figure as one JSON line; a store built once is reused.
//! No figure is judged here: timings belong to the machine.

mod common;

use std::process::Command;

fn bench_start(dir: &std::path::Path, rows: &str, posts: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["bench-start", "--rows", rows, "--posts", posts, "--json"])
        .args(["--idle", "0s", "--timeout", "60s", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    common::one_json_line("bench-start", &out)
}

fn check(figures: &serde_json::Value, unit: &str, sizes: &[u64]) {
    let figures = figures.as_array().unwrap();
    let got: Vec<u64> = figures.iter().map(|f| f[unit].as_u64().unwrap()).collect();
    assert_eq!(got, sizes);
    for f in figures {
        for field in ["start_s", "rss_mib", "peak_mib", "file_mib", "build_s"] {
            assert!(f[field].as_f64().is_some(), "{field} in {f}");
        }
        assert!(f["rss_mib"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["file_mib"].as_f64().unwrap() > 0.0, "{f}");
        assert!(f["within_bounds"].is_boolean(), "{f}");
        // The node counts its store from the engine at start, rows unread.
        assert_eq!(f["reported"].as_u64(), f[unit].as_u64(), "{f}");
    }
}

#[test]
fn reports_start_time_and_memory_per_store_size_as_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = bench_start(dir.path(), "0,1000", "0,1000");
    assert_eq!(r["bench"], "start");
    check(&r["archive"], "rows", &[0, 1000]);
    check(&r["chat"], "posts", &[0, 1000]);
    // The stores hold what was asked: rows the node's code reads, posts
    // numbered 1, 2, 3, ... in every room.
    let archive = holdfast::archive_db::ArchiveDb::open_read_only(
        &dir.path().join("archive-1000/archive.sqlite"),
    )
    .unwrap();
    assert_eq!(archive.count().unwrap(), 1000);
    let chat = rusqlite::Connection::open(dir.path().join("chat-1000/chat.sqlite")).unwrap();
    let (posts, gapped): (u64, u64) = chat
        .query_row(
            "SELECT (SELECT count(*) FROM posts), (SELECT count(*) FROM (SELECT room FROM posts \
             GROUP BY room HAVING min(seq) != 1 OR max(seq) != count(*)))",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((posts, gapped), (1000, 0));
    // The stores are kept in --dir and used again, not rebuilt.
    let again = bench_start(dir.path(), "1000", "1000");
    assert_eq!(again["archive"][0]["build_s"], 0.0);
    assert_eq!(again["chat"][0]["build_s"], 0.0);
}

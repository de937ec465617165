//! `holdfast bench --purge-rows`: the archive pre-filled with old rows,
//! ingest measured without a purge and with one running, and the verdict
//! that the purge deleted exactly the pre-filled rows and kept every row
//! the benchmark sent. No figure is judged here: timings belong to the
//! machine.

mod common;

use std::process::Command;

#[test]
fn the_purge_bench_deletes_the_old_rows_and_keeps_the_new() {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["bench", "--purge-rows", "3000", "--rate", "100"])
        .args(["--duration", "2s", "--links", "plain", "--json"])
        // Small batches: the purge takes several, with ingest between.
        .args(["--set", "archive_purge_batch=500"])
        .output()
        .unwrap();
    let r = common::one_json_line("bench", &out);
    assert_eq!(r["bench"], "purge");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["prefilled_rows"], 3000);
    assert_eq!(r["purge_deleted"], 3000, "{r}");
    let accepted = r["benchmark_rows_accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{r}");
    assert_eq!(r["benchmark_rows_kept"].as_u64(), Some(accepted));
    assert_eq!(r["rows_after"].as_u64(), Some(accepted));
    assert_eq!(r["reported_rows"].as_u64(), Some(accepted));
    for window in ["without_purge", "with_purge"] {
        let w = &r[window];
        assert!(w["accepted"].as_u64().unwrap() > 0, "{window}: {w}");
        assert_eq!(w["archived"], w["accepted"], "{window}: {w}");
        assert!(w["archive_ms"].as_array().is_some_and(|a| a.len() == 3));
    }
}

//! `holdfast bench-start`: start time and memory of a database node and a
//! chat store against the size of their store.

use super::common::Failure;
use holdfast::bench_start::{StartFigure, StartOptions, RSS_BOUND_MIB, START_BOUND_S};
use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn run(
    rows: Vec<u64>,
    posts: Vec<u64>,
    dir: Option<PathBuf>,
    keep: bool,
    timeout: Duration,
    idle: Duration,
    json: bool,
) -> Result<(), Failure> {
    // Without --dir: a scratch folder, removed at the end unless --keep.
    let scratch = match &dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("holdfast-bench-start-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary folder: {e}"))?,
        ),
    };
    let dir = match (&dir, &scratch) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a scratch folder without --dir"),
    };
    let opts = StartOptions {
        rows,
        posts,
        dir: dir.clone(),
        timeout,
        idle,
        // What is being built and started, for a person at a terminal.
        progress: !json && {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
        },
    };
    let result = holdfast::bench_start::run(&opts);
    // Kept (or removed, when dropped) whether the run succeeded or not.
    let kept = scratch.filter(|_| keep).map(|t| t.keep());
    let say_kept = || {
        if let Some(dir) = &kept {
            eprintln!("stores kept in {}", dir.display());
        }
    };
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            say_kept();
            return Err(e.into());
        }
    };
    let line = serde_json::to_string(&r).map_err(|e| e.to_string())?;
    if !json {
        println!(
            "{:<8} {:>14} {:>9} {:>9} {:>9} {:>9} {:>10}  verdict (start < {START_BOUND_S} s, RSS < {RSS_BOUND_MIB} MiB, count = size)",
            "store", "size", "start s", "RSS MiB", "peak MiB", "file MiB", "counted"
        );
        for (store, unit, figures) in [("database", "rows", &r.archive), ("chat", "posts", &r.chat)]
        {
            for f in figures {
                println!(
                    "{:<8} {:>14} {:>9.3} {:>9.1} {:>9.1} {:>9.1} {:>10}  {}",
                    store,
                    format!("{} {unit}", f.size),
                    f.start_s,
                    f.rss_mib,
                    f.peak_mib,
                    f.file_mib,
                    f.reported.map_or("-".into(), |n| n.to_string()),
                    verdict(f)
                );
            }
        }
    }
    println!("{line}");
    say_kept();
    Ok(())
}

fn verdict(f: &StartFigure) -> String {
    if let Some(why) = &f.stopped {
        return format!("STOPPED: {why}");
    }
    let mut over = Vec::new();
    if f.start_s >= START_BOUND_S {
        over.push("start");
    }
    if f.rss_mib >= RSS_BOUND_MIB {
        over.push("RSS");
    }
    if f.reported != Some(f.size) {
        over.push("count");
    }
    if over.is_empty() {
        "ok".into()
    } else {
        format!("OVER: {}", over.join(", "))
    }
}

//! `holdfast load` shows its progress to a person at a terminal, and
//! nothing more than its report to a pipe.

mod common;

use common::TestCluster;
use std::process::Command;

/// Runs `holdfast ARGS` at a terminal (a pseudo-terminal from util-linux
/// `script`) and checks that it succeeds and draws a progress bar;
/// returns what it wrote there. `None`, and the part skipped, without
/// `script`.
fn at_a_terminal(args: &[&str]) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!(
            "no `script` to run {} at a terminal: that part is skipped",
            args[0]
        );
        return None;
    }
    let line = format!("{} {} 2>&1", common::exe().display(), args.join(" "));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("IMs answered"), "no progress bar: {text:?}");
    Some(text)
}

/// At a terminal (a pseudo-terminal from util-linux `script`), load draws
/// a progress bar on stderr: before, it showed nothing until the report.
/// Through pipes its output is the report alone, as before.
#[test]
fn load_shows_progress_at_a_terminal_only() {
    let c = TestCluster::start("plain", "");
    let args = [
        "load",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--timeout",
        "2s",
    ];
    let (code, out, err) = c.cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("sent 40 in"), "{out}");
    assert!(!err.contains("answered") && !err.contains('\r'), "{err:?}");

    let config = c.dir.path().join("cluster.toml");
    let args = [&args[..], &["-c", config.to_str().unwrap()]].concat();
    if let Some(text) = at_a_terminal(&args) {
        assert!(text.contains("sent 40 in"), "{text}");
    }
}

/// `bench` draws the same progress bars at a terminal (IMs answered, then
/// accepted IMs archived), and none through a pipe.
#[test]
fn bench_shows_progress_at_a_terminal_only() {
    let args = [
        "bench",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--links",
        "plain",
    ];
    let out = Command::new(common::exe()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("answered") && !err.contains('\r'), "{err:?}");

    if let Some(text) = at_a_terminal(&args) {
        assert!(text.contains("sent 40:"), "{text}");
    }
}

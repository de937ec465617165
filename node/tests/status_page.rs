//! The status page each node serves at `/` on its metrics address, as a
//! real browser renders it: Debian's Chromium, headless, dumping the DOM
//! it built. Ignored in a plain `cargo test` (it needs `chromium`); the
//! test command installs Chromium and runs it with `--ignored`.

mod common;

use common::TestCluster;
use std::process::Command;
use std::time::{Duration, Instant};

/// The DOM Chromium builds from `url`.
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=2000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs (the test command installs Debian's chromium package)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs chromium: run by scripts/test.sh"]
fn the_status_page_shows_the_whole_cluster_in_a_browser() {
    let mut c = TestCluster::start("plain", "critical_mode = true");
    let fe2 = c.config.node("fe2").unwrap().metrics.unwrap();
    let url = format!("http://{fe2}/");
    // Every node listed from fe2's page, all well once every core started.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dom = loop {
        let dom = rendered(&url);
        if dom.contains("all 4 nodes well") || Instant::now() > deadline {
            break dom;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(dom.contains("all 4 nodes well"), "{dom}");
    for node in ["fe1", "fe2", "arch1", "db1"] {
        assert!(
            dom.contains(&format!("<td class=\"node\">{node}</td>")),
            "{node} missing: {dom}"
        );
    }
    assert!(dom.contains("archived rows"), "{dom}");

    // A node goes: the page says which, seen from another node.
    c.kill("db1");
    let dom = rendered(&url);
    assert!(dom.contains("need attention"), "{dom}");
    let db1_row = dom
        .lines()
        .find(|l| l.contains("<td class=\"node\">db1</td>"))
        .unwrap_or_else(|| panic!("{dom}"));
    assert!(db1_row.contains("unreachable"), "{db1_row}");
}

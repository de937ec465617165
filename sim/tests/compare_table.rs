//! `cargo sim compare` gives group chat and compliance their own columns:
//! posts lost and deliveries missed, events and files missing from the
//! export; `—` for a scenario with neither.
#![cfg(madsim)]

mod common;

/// IMs only, and short.
const IM_ONLY: &str = r#"
name = "im-only"
duration = "5m"
[topology]
front_ends = 1
[[workload]]
kind = "im"
users = 10
rate = 2.0
"#;

#[test]
fn compare_shows_chat_and_compliance_columns() {
    let (_dir, im_only) = common::scenario_file("im-only.toml", IM_ONLY);
    let out = common::sim_cli()
        .arg("compare")
        .arg(common::repo_root().join("scenarios/compliance-files.toml"))
        .arg(&im_only)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("| scenario |")
                && l.trim_end().ends_with("| chat | compliance |")),
        "{text}"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_string()
    };
    let files = row("compliance-files");
    assert!(
        files.contains("posts: 0 lost, 0 missed") && files.contains("files: 0 missing"),
        "{files}"
    );
    assert!(row("im-only").trim_end().ends_with("| — | — |"), "{text}");
}

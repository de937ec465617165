//! Every command explains itself: each flag has a line of help, and each
//! subcommand's `--help` ends with an example to copy.

use std::process::Command;

fn help(path: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists (without clap's own `help`).
fn subcommands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                inside = !line.trim().is_empty() && line.starts_with(' ');
                if line.trim().is_empty() {
                    break;
                }
                continue;
            }
            // A command's name is indented by two spaces; its help's
            // continuation lines by more.
            if line.starts_with("   ") {
                continue;
            }
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Flags of a help text that have no help line: clap puts the help on
/// the flag's line or, in `--help`, indented on the lines after it.
fn flags_without_help(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut bare = Vec::new();
    let mut inside = false;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("Options:") || line.starts_with("Arguments:") {
            inside = true;
            continue;
        }
        if !line.starts_with(' ') {
            inside = false;
            continue;
        }
        let t = line.trim_start();
        if !inside || !(t.starts_with('-') || t.starts_with('<') || t.starts_with('[')) {
            continue;
        }
        let indent = line.len() - t.len();
        if indent > 6 {
            continue; // a continuation line, not a flag
        }
        // Only "[default: …]" or "[env: …]" after a flag is no help.
        let same_line = t
            .split_once("  ")
            .map(|(_, d)| d.trim())
            .is_some_and(|d| !d.is_empty() && !d.starts_with('['));
        let next = lines.get(i + 1).copied().unwrap_or("");
        let next_t = next.trim_start();
        let next_is_help = !next_t.is_empty()
            && next.len() - next_t.len() > indent
            && !(next.len() - next_t.len() <= 6 && next_t.starts_with('-'));
        if !same_line && !next_is_help {
            bare.push(t.to_string());
        }
    }
    bare
}

#[test]
fn every_subcommand_has_help_for_each_flag_and_ends_with_an_example() {
    let mut problems = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        let text = help(&path);
        let subs = subcommands(&text);
        for s in &subs {
            let mut p = path.clone();
            p.push(s.clone());
            todo.push(p);
        }
        if path.is_empty() {
            continue;
        }
        seen += 1;
        let name = format!("holdfast {}", path.join(" "));
        let last = text.trim_end().lines().last().unwrap_or("").trim();
        if !last.starts_with("Example: holdfast ") {
            problems.push(format!(
                "{name} --help does not end with an example: {last:?}"
            ));
        }
        for flag in flags_without_help(&text) {
            problems.push(format!("{name}: {flag} has no help"));
        }
    }
    assert!(seen > 30, "only {seen} subcommands found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

//! Group chat clusters for the integration tests: the loopback cluster
//! over mutual TLS with chat nodes added, and room `general` for alice and
//! bob.

use super::postgres::PgServer;
use super::TestCluster;
use holdfast::cluster_up::{free_port, loopback_config};
use holdfast_actors::compliance::export::{parse, ExportFormat, ExportedEvent};
use std::path::Path;
use std::time::{Duration, Instant};

pub const ALICE: &str = "alice@corp.example";
pub const BOB: &str = "bob@corp.example";

/// The nodes of every chat cluster: a Channel server, Lookup and the
/// chat store.
pub const CHAT_NODES: [(&str, &str); 3] = [
    ("ch1", "channel"),
    ("lookup1", "lookup"),
    ("chatdb", "chat_store"),
];

/// [`loopback_config`] with `links` and `settings`, one `[[node]]` for
/// each of [`CHAT_NODES`] and each (name, role) of `more` on a free port
/// (those named in `metrics` with a metrics listener too), and room
/// `general` for alice and bob. With a `web` node, file tokens are signed
/// with a key of the test cluster.
pub fn chat_config(links: &str, settings: &str, more: &[(&str, &str)], metrics: &[&str]) -> String {
    let nodes = [&CHAT_NODES[..], more].concat();
    let mut text = loopback_config(links, settings);
    if nodes.iter().any(|(_, role)| *role == "web") {
        let mode = format!("links = \"{links}\"");
        text = text.replace(
            &mode,
            &format!("{mode}\nfile_token_key = \"a secret of the test cluster\""),
        );
    }
    for (name, role) in &nodes {
        let port = unused_port(&text);
        text.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\nlisten = \"127.0.0.1:{port}\"\n"
        ));
        if metrics.contains(name) {
            let port = unused_port(&text);
            text.push_str(&format!("metrics = \"127.0.0.1:{port}\"\n"));
        }
    }
    text.push_str(&format!(
        "\n[[room]]\nname = \"general\"\nmembers = [\"{ALICE}\", \"{BOB}\"]\n"
    ));
    text
}

/// A free port on loopback that `text` gives no node yet: a port is free
/// only until it is taken, and two draws can return the same one.
fn unused_port(text: &str) -> u16 {
    loop {
        let port = free_port().unwrap();
        if !text.contains(&format!("127.0.0.1:{port}\"")) {
            return port;
        }
    }
}

/// The `[chat_store]` section that puts the chat store in `pg`'s
/// database; nothing (SQLite) without one.
pub fn chat_store_on(pg: Option<&PgServer>) -> String {
    pg.map(|pg| {
        format!(
            "\n[chat_store]\nengine = \"postgres\"\nurl = \"{}\"\n",
            pg.url("holdfast")
        )
    })
    .unwrap_or_default()
}

/// The standard output of a command that must succeed.
pub fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    r.1
}

/// `holdfast file upload` of `file` to room `general` as `user`, with
/// `more` arguments; returns (exit code, stdout, stderr).
pub fn upload(c: &TestCluster, user: &str, file: &Path, more: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "file",
        "upload",
        "--user",
        user,
        "--room",
        "general",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    c.cli(&args)
}

/// Every event the Compliance service exported so far (as XML, under
/// `compliance-out`).
pub fn exported(c: &TestCluster) -> Vec<ExportedEvent> {
    let out = c.dir.path().join("compliance-out");
    let mut events = Vec::new();
    for entry in std::fs::read_dir(&out).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "xml") {
            let data = std::fs::read(&path).unwrap();
            events.extend(parse(ExportFormat::Xml, &data).unwrap());
        }
    }
    events
}

/// Runs compliance exports until what was exported satisfies `done` (or
/// `within` has passed); returns every event exported.
pub fn exported_once(
    c: &TestCluster,
    within: Duration,
    done: impl Fn(&[ExportedEvent]) -> bool,
) -> Vec<ExportedEvent> {
    let deadline = Instant::now() + within;
    loop {
        ok(c.cli(&["compliance", "run-now"]));
        let events = exported(c);
        if done(&events) || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

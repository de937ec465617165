//! The client commands an operator and a user run every day, as a new
//! operator tries them: on a cluster with group chat and files, over
//! mutual TLS.

mod common;

use common::chat::{chat_config, ok, ALICE, BOB};
use common::TestCluster;
use std::path::Path;
use std::time::{Duration, Instant};

fn config_text() -> String {
    let mut text = chat_config("tls", "", &[("web1", "web")], &[]);
    text.push_str(
        "\n[[category]]\nname = \"corp\"\nallowed = [\"*\"]\ncreators = [\"alice@corp.example\"]\n",
    );
    text
}

/// `chat <cmd> --user USER --channel ch1 REST…`
fn chat<'a>(cmd: &'a str, user: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["chat", cmd, "--user", user, "--channel", "ch1"];
    v.extend_from_slice(rest);
    v
}

/// Uploads `file` to room `general` as alice; returns the file's id.
fn upload(c: &TestCluster, file: &Path) -> String {
    let out = ok(common::chat::upload(c, ALICE, file, &["--channel", "ch1"]));
    // "uploaded report.txt (10 bytes) as ID; posted to general as #N"
    out.split(" as ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no file id in {out:?}"))
        .to_string()
}

/// `file download` never overwrites a local file unless told to: before,
/// it wrote over whatever was there.
#[test]
fn file_download_keeps_an_existing_file_unless_forced() {
    let c = TestCluster::start_with("tls", config_text);
    let file = c.dir.path().join("report.txt");
    std::fs::write(&file, "the report").unwrap();
    let id = upload(&c, &file);
    let mine = c.dir.path().join("mine.txt");
    std::fs::write(&mine, "my own notes").unwrap();
    let download = |force: bool| {
        let mut args = vec![
            "file",
            "download",
            "--user",
            BOB,
            "--channel",
            "ch1",
            "--room",
            "general",
            "--file",
            &id,
            "--out",
            mine.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        c.cli(&args)
    };
    let (code, out, err) = download(false);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(mine.to_str().unwrap()), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my own notes");
    ok(download(true));
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "the report");
}

/// Other users' text reaches the terminal with its control characters
/// escaped: before, `chat history` and `chat join` printed a post's
/// escape sequences raw, so a post could clear the screen or recolour it.
/// Ordinary text, non-ASCII letters included, stays as it is.
#[test]
fn chat_shows_other_users_control_characters_escaped() {
    let c = TestCluster::start_with("tls", config_text);
    let text = "\u{1b}[2J\u{1b}[31mred\u{1b}[0m Grüße aus Zürich";
    ok(c.cli(&chat("post", BOB, &["--room", "general", text])));
    let check = |out: &str| {
        assert!(!out.contains('\u{1b}'), "raw escape: {out:?}");
        assert!(
            out.contains("\\u{1b}[2J\\u{1b}[31mred\\u{1b}[0m Grüße aus Zürich"),
            "{out:?}"
        );
    };
    check(&ok(c.cli(&chat("history", ALICE, &["--room", "general"]))));
    check(&ok(c.cli(&chat(
        "join",
        ALICE,
        &["--room", "general", "--for", "1s"],
    ))));
}

/// `chat join --for 2s` stops after about two seconds: before, it waited
/// for the next post up to the whole --timeout (10 s) past --for.
#[test]
fn chat_join_stops_when_for_is_over() {
    let c = TestCluster::start_with("tls", config_text);
    let t = Instant::now();
    ok(c.cli(&chat("join", ALICE, &["--room", "general", "--for", "2s"])));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "join --for 2s took {took:?}");
}

/// `archive query --wait ID` waits for an IM just accepted to reach the
/// archive, and counts in good English: before, a query right after `im
/// send` could find nothing, and one message was "1 messages".
#[test]
fn archive_query_waits_for_a_message_and_counts_in_english() {
    let c = TestCluster::start_with("tls", config_text);
    let out = ok(c.cli(&[
        "im", "send", "--from", ALICE, "--to", BOB, "--id", "daily-1", "hello",
    ]));
    assert!(out.contains("accepted daily-1"), "{out}");
    let (code, out, err) = c.cli(&[
        "archive",
        "query",
        "--user",
        ALICE,
        "--wait",
        "daily-1",
        "--timeout",
        "20s",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[daily-1]") || out.contains("hello"), "{out}");
    assert!(err.lines().any(|l| l == "1 message"), "{err}");
    // Never archived: not well, once --timeout is over.
    let t = Instant::now();
    let (code, out, err) = c.cli(&["archive", "query", "--wait", "nothing", "--timeout", "1s"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing is not in the archive"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// `chat create` names the room it created: before, it printed only
/// "created (directory version N)".
#[test]
fn chat_create_names_the_room() {
    let c = TestCluster::start_with("tls", config_text);
    let out = ok(c.cli(&chat(
        "create",
        ALICE,
        &["--room", "daily-standup", "--category", "corp"],
    )));
    assert!(out.contains("created room daily-standup"), "{out}");
}

/// A node that cannot be reached is exit 3, and the message names the
/// address that refused: before, `im send` to a front end that is down
/// said "no answer for … within 10s" and exited 2, like a refusal.
/// `status` reads the whole cluster: a node down among others that
/// answer is a cluster not well (exit 1); none answering, exit 3.
#[test]
fn a_node_that_cannot_be_reached_is_exit_3_naming_its_address() {
    let mut c = TestCluster::start("tls", "");
    let fe1 = c.config.node("fe1").unwrap().listen;
    c.kill("fe1");
    let refused = format!("connection refused: {fe1}");
    let (code, out, err) = c.cli(&[
        "im",
        "send",
        "--from",
        ALICE,
        "--to",
        BOB,
        "--timeout",
        "2s",
        "x",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains(&refused), "{err}");
    let (code, out, err) = c.cli(&["critical", "resume", "--node", "fe1"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains(&refused), "{err}");
    // `status`: the other nodes answer, so the cluster is reachable and
    // not well (1), naming what refused; with no node answering, 3.
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    let metrics = c.config.node("fe1").unwrap().metrics.unwrap();
    assert!(
        out.contains(&format!("connection refused: {metrics}")),
        "{out}"
    );
    let names: Vec<String> = c.nodes.keys().cloned().collect();
    for name in names {
        c.kill(&name);
    }
    let (code, out, err) = c.cli(&["status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("none of the"), "{err}");
}

/// A chat command whose Channel server is down is exit 3 naming its
/// address: before, `chat history` said "ch1 did not answer in time" and
/// exited 2, like a refusal.
#[test]
fn a_chat_server_that_cannot_be_reached_is_exit_3_naming_its_address() {
    let mut c = TestCluster::start_with("tls", config_text);
    let ch1 = c.config.node("ch1").unwrap().listen;
    c.kill("ch1");
    let (code, out, err) = c.cli(&chat(
        "history",
        ALICE,
        &["--room", "general", "--timeout", "2s"],
    ));
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains(&format!("connection refused: {ch1}")), "{err}");
}

/// A connection that cannot be made is reported at once, naming the
/// address, with exit 3: before, every client sent its request, waited the
/// whole answer timeout (10 s by default) and only then tried the address
/// to say why nothing came.
#[test]
fn a_refused_connection_is_reported_at_once() {
    let mut c = TestCluster::start_with("tls", config_text);
    let upload = c.dir.path().join("report.txt");
    std::fs::write(&upload, "the report").unwrap();
    let upload = upload.to_str().unwrap().to_string();
    let down = ["fe1", "arch1", "db1", "ch1", "lookup1"];
    let addr: std::collections::BTreeMap<&str, std::net::SocketAddr> = down
        .iter()
        .map(|n| (*n, c.config.node(n).unwrap().listen))
        .collect();
    for n in down {
        c.kill(n);
    }
    let at_once = |args: &[&str], node: &str| {
        let t = Instant::now();
        let (code, out, err) = c.cli(args);
        let took = t.elapsed();
        assert_eq!(code, 3, "{args:?}: {out}{err}");
        let refused = format!("connection refused: {} ({node})", addr[node]);
        assert!(err.contains(&refused), "{args:?}: {err}");
        assert!(
            took < Duration::from_secs(5),
            "{args:?} took {took:?} to say: {err}"
        );
    };
    at_once(&["im", "send", "--from", ALICE, "--to", BOB, "x"], "fe1");
    at_once(&["critical", "resume", "--node", "fe1"], "fe1");
    at_once(&["dlq", "resend", "--node", "fe1"], "fe1");
    at_once(&["parked", "retry", "--node", "arch1"], "arch1");
    at_once(
        &["archive", "query", "--user", ALICE, "--since", "1h"],
        "db1",
    );
    at_once(&chat("history", ALICE, &["--room", "general"]), "ch1");
    at_once(
        &[
            "chat",
            "room",
            "disable",
            "--channel",
            "ch1",
            "--room",
            "general",
        ],
        "ch1",
    );
    at_once(
        &[
            "file",
            "upload",
            "--user",
            ALICE,
            "--channel",
            "ch1",
            "--room",
            "general",
            &upload,
        ],
        "ch1",
    );
    // Without --channel, the Lookup instance is asked first.
    at_once(&["chat", "rooms", "--user", ALICE], "lookup1");
}

/// A downloaded file keeps the name its uploader gave it, and that name is
/// another user's text: `file download` prints it escaped. Before, an
/// escape sequence in a file's name reached the terminal raw.
#[test]
fn file_download_shows_the_uploaders_file_name_escaped() {
    let c = TestCluster::start_with("tls", config_text);
    let name = "a\u{1b}[2Jb.txt";
    let file = c.dir.path().join(name);
    std::fs::write(&file, "x").unwrap();
    let id = upload(&c, &file);
    // Without --out it writes the file's own name in the current folder.
    let here = tempfile::tempdir().unwrap();
    let down = std::process::Command::new(common::exe())
        .args(["file", "download", "--user", BOB, "--channel", "ch1"])
        .args(["--room", "general", "--file", &id, "-c"])
        .arg(c.dir.path().join("cluster.toml"))
        .current_dir(here.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&down.stdout);
    assert!(down.status.success(), "{out}");
    assert!(!out.contains('\u{1b}'), "raw escape: {out:?}");
    assert!(out.contains("a\\u{1b}[2Jb.txt"), "{out:?}");
    assert!(here.path().join(name).exists());
}

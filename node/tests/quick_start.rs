//! The README's quick start, as written, on a copy of examples/cluster.toml
//! (with free ports, so that it can run beside other tests): `cluster up`
//! creates the certificates and starts four nodes, `im send` is accepted,
//! `archive query` finds the message, `status` reports both front ends,
//! and SIGTERM to `cluster up` stops every node.

use holdfast::cluster_up::free_port;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn holdfast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the command, which must succeed; its output.
fn succeeds(args: &[&str]) -> String {
    let out = holdfast(args);
    assert!(
        out.status.success(),
        "holdfast {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the command, which must fail; what it said on stderr.
fn fails(args: &[&str]) -> String {
    let out = holdfast(args);
    assert!(
        !out.status.success(),
        "holdfast {} succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn quick_start_as_written() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/cluster.toml"
    ))
    .unwrap();
    // A port is free only until someone takes it (another test's node, an
    // outgoing connection): a node that cannot bind its port fails the
    // start, and the quick start runs again on fresh ports.
    let mut attempt = 1;
    let (dir, cfg, mut up, lines) = loop {
        let (dir, cfg) = copy_with_free_ports(&example);
        let mut up = Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["cluster", "up", "-c", &cfg])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_lines(up.stdout.take().unwrap());
        let mut table = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !table.contains("cluster up;") {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => table.push_str(&(line + "\n")),
                Err(_) => break,
            }
        }
        if table.contains("cluster up;") && !table.contains("NOT LISTENING") {
            break (dir, cfg, up, lines);
        }
        let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM);
        let out = up.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            attempt < 3 && err.contains("cannot listen"),
            "cluster up did not start every node:\n{table}{err}"
        );
        attempt += 1;
    };
    let cfg = cfg.as_str();
    assert!(dir.path().join("certs/ca.pem").exists());

    let (alice, bob) = ("alice@corp.example", "bob@corp.example");
    let text = "hello from the quick start";
    let out = succeeds(&["im", "send", "-c", cfg, "--from", alice, "--to", bob, text]);
    assert!(out.starts_with("accepted"), "{out}");

    // Archiving is asynchronous: poll the archive for a little while.
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let q = holdfast(&[
            "archive", "query", "-c", cfg, "--user", alice, "--since", "1h",
        ]);
        let out = String::from_utf8_lossy(&q.stdout).to_string();
        if out.contains("hello from the quick start") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        found.contains("alice@corp.example -> bob@corp.example"),
        "{found}"
    );

    let out = succeeds(&["status", "-c", cfg]);
    for fe in ["fe1", "fe2"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(fe) && l.contains("healthy") && l.contains("accepting")),
            "{out}"
        );
    }

    // Group chat: a post is stored and shows in the room's history; a
    // walled-off member is refused.
    let chat = |verb: &str, user: &str, room: &str, rest: &[&str]| {
        let mut args = vec!["chat", verb, "-c", cfg, "--user", user, "--room", room];
        args.extend_from_slice(rest);
        holdfast(&args)
    };
    let posted = chat("post", alice, "general", &["hello room"]);
    let out = String::from_utf8_lossy(&posted.stdout);
    assert!(
        posted.status.success() && out.starts_with("posted to general as #1"),
        "{out}"
    );
    let history = chat("history", bob, "general", &[]);
    let out = String::from_utf8_lossy(&history.stdout);
    assert!(
        out.contains("#1") && out.contains("alice@corp.example: hello room"),
        "{out}"
    );
    let walled = chat("history", "user95@corp.example", "deals", &[]);
    assert_eq!(walled.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&walled.stderr).contains("not allowed"));

    // A room created at run time: its member finds it, others do not.
    let created = chat(
        "create",
        alice,
        "project-x",
        &[
            "--category",
            "corp",
            "--privacy",
            "secret",
            "--members",
            bob,
        ],
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    for (user, finds) in [("bob@corp.example", true), ("user1@corp.example", false)] {
        let found = holdfast(&["chat", "search", "-c", cfg, "--user", user, "project"]);
        let out = String::from_utf8_lossy(&found.stdout);
        assert!(found.status.success());
        assert_eq!(out.contains("project-x"), finds, "{user}: {out}");
    }

    // A file: uploaded by one member, downloaded by another.
    let src = dir.path().join("notes.txt");
    std::fs::write(&src, "the quarterly plan").unwrap();
    let src_path = src.to_str().unwrap();
    let out = succeeds(&[
        "file", "upload", "-c", cfg, "--user", alice, "--room", "general", src_path,
    ]);
    let id = out
        .split_whitespace()
        .skip_while(|w| *w != "as")
        .nth(1)
        .unwrap()
        .trim_end_matches(';')
        .to_string();
    let dst = dir.path().join("copy.txt");
    let dst_path = dst.to_str().unwrap();
    let room = ["--user", bob, "--room", "general"];
    succeeds(
        &[
            &["file", "download", "-c", cfg][..],
            &room,
            &["--file", &id, "--out", dst_path],
        ]
        .concat(),
    );
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "the quarterly plan");

    // Compliance: an export now writes a batch and its manifest.
    let out_dir = dir.path().join("compliance-out");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        succeeds(&["compliance", "run-now", "-c", cfg]);
        let manifests = std::fs::read_dir(&out_dir)
            .into_iter()
            .flatten()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
            })
            .count();
        if manifests > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no export appeared");
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = holdfast(&["compliance", "status", "-c", cfg, "--as", "auditor"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && out.contains("last batch:"),
        "{out}"
    );

    // A new auditor gets a credential; it may read the status, not export.
    let carol = "carol@corp.example";
    succeeds(&["certs", "user", "-c", cfg, carol, "--role", "auditor"]);
    succeeds(&["compliance", "status", "-c", cfg, "--as", carol]);
    let refused = fails(&["compliance", "run-now", "-c", cfg, "--as", carol]);
    assert!(refused.contains("needs operator"), "{refused}");
    // A user without a credential is told how to get one.
    std::fs::remove_file(dir.path().join("certs/users/user7@corp.example.pem")).unwrap();
    let (from, to) = ("user7@corp.example", "bob@corp.example");
    let none = fails(&["im", "send", "-c", cfg, "--from", from, "--to", to, "x"]);
    assert!(
        none.contains("holdfast certs user user7@corp.example"),
        "{none}"
    );

    // An unknown recipient is refused explicitly (exit code 2).
    let refused = holdfast(&[
        "im",
        "send",
        "-c",
        cfg,
        "--from",
        "alice@corp.example",
        "--to",
        "nobody@corp.example",
        "x",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown recipient"));

    kill(Pid::from_raw(up.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cluster up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    up.wait().unwrap();
    let stdout: String = lines.iter().map(|l| l + "\n").collect();
    assert_eq!(stdout.matches(" stopped").count(), 10, "{stdout}");
}

/// A copy of the example config with free ports, in a temporary folder.
fn copy_with_free_ports(example: &str) -> (tempfile::TempDir, String) {
    let mut text = example.to_string();
    let ports = [
        "7101", "7102", "7201", "7301", "7401", "7402", "7501", "7601", "7701", "7801", "9101",
        "9102", "9201", "9301", "9401", "9402", "9501", "9601", "9701", "9801",
    ];
    // Each port becomes a placeholder first: a free port written in place
    // of one must never contain another one still to be replaced (a free
    // port 39201 would turn into 3xxxxx when 9201 is replaced next).
    for (i, port) in ports.iter().enumerate() {
        assert!(
            text.contains(port),
            "the example no longer uses port {port}"
        );
        text = text.replace(port, &format!("<port{i}>"));
    }
    for i in 0..ports.len() {
        text = text.replace(&format!("<port{i}>"), &free_port().unwrap().to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, &text).unwrap();
    let cfg = file.to_str().unwrap().to_string();
    (dir, cfg)
}

/// The lines `out` will print, as they come.
fn read_lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

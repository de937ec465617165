//! Trust at the edge, on real processes: what a node writes is private to
//! its user (folders 0700, files 0600); one process per data folder; and a
//! node that cannot use its data folder says so and exits (code 2) before
//! it listens, instead of reporting ready and failing every write.

mod common;

use common::TestCluster;
use holdfast::cluster_up::{free_port, loopback_config, spawn_node};
use holdfast::config::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the command-line tool against the cluster's config; returns (exit
/// code, stdout, stderr).
fn holdfast(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::exe())
        .args(args)
        .arg("-c")
        .arg(c.dir.path().join("cluster.toml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How a `holdfast node` process ended: its exit code (`None`: still
/// running after the timeout, then killed), stdout and stderr.
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `holdfast node --name NAME` of the config file `cfg` for up to
/// `timeout`, its output in files of `scratch`.
fn run_node(cfg: &Path, name: &str, scratch: &Path, timeout: Duration) -> Ended {
    let out_file = scratch.join(format!("{name}.stdout"));
    let err_file = scratch.join(format!("{name}.stderr"));
    let mut child = Command::new(common::exe())
        .args(["node", "--name", name, "-c"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ended {
        code,
        stdout: std::fs::read_to_string(&out_file).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_file).unwrap_or_default(),
    }
}

/// A loopback cluster with group chat, the Web service and the Compliance
/// service, so that every kind of data file gets written.
fn chat_config() -> String {
    let mut text = loopback_config("plain", "").replace(
        "links = \"plain\"",
        "links = \"plain\"\nfile_token_key = \"a secret of the test cluster\"",
    );
    for (name, role) in [
        ("ch1", "channel"),
        ("lookup1", "lookup"),
        ("chatdb", "chat_store"),
        ("web1", "web"),
        ("comp1", "compliance"),
    ] {
        text.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\nlisten = \"127.0.0.1:{}\"\n",
            free_port().unwrap()
        ));
    }
    text.push_str(
        "\n[[room]]\nname = \"general\"\nmembers = [\"alice@corp.example\", \"bob@corp.example\"]\n",
    );
    text.push_str("\n[compliance]\noutput = \"compliance-out\"\n");
    text
}

/// Every folder and file under `root` (itself included), with its mode.
fn walk(root: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    let meta = std::fs::symlink_metadata(root).unwrap();
    out.push((root.to_path_buf(), meta.is_dir(), meta.permissions().mode()));
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            walk(&entry.unwrap().path(), out);
        }
    }
}

#[test]
fn data_files_are_private() {
    let c = TestCluster::start_with("plain", chat_config);
    // An IM, archived.
    let (code, out, err) = holdfast(
        &c,
        &[
            "im",
            "send",
            "--from",
            "alice@corp.example",
            "--to",
            "bob@corp.example",
            "a private message",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let archived = c.wait_archive(Duration::from_secs(20), |a| !a.is_empty());
    assert!(!archived.is_empty(), "nothing archived");
    // A post and an uploaded file.
    let src = c.dir.path().join("plan.txt");
    std::fs::write(&src, "the quarterly plan").unwrap();
    let (code, out, err) = holdfast(
        &c,
        &[
            "file",
            "upload",
            "--user",
            "alice@corp.example",
            "--room",
            "general",
            src.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    // A compliance export.
    let export = c.dir.path().join("compliance-out");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = holdfast(&c, &["compliance", "run-now"]);
        assert_eq!(code, 0, "{out}{err}");
        let manifests = std::fs::read_dir(&export)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".manifest.json"))
            .count();
        if manifests > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no compliance export appeared");
        std::thread::sleep(Duration::from_millis(300));
    }

    let mut all = Vec::new();
    for n in &c.config.nodes {
        walk(&n.data, &mut all);
    }
    walk(&export, &mut all);
    let loose: Vec<String> = all
        .iter()
        .filter(|(_, dir, mode)| mode & 0o777 != if *dir { 0o700 } else { 0o600 })
        .map(|(p, dir, mode)| {
            format!(
                "{} {} {:o}",
                if *dir { "folder" } else { "file" },
                p.display(),
                mode & 0o777
            )
        })
        .collect();
    assert!(
        loose.is_empty(),
        "not private to the node's user:\n{}",
        loose.join("\n")
    );
    // The walk saw every kind of data file.
    let names: Vec<String> = all
        .iter()
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    for want in [
        "archive.sqlite",
        "archive.sqlite-wal",
        "chat.sqlite",
        "outgoing_queue.log",
        "destination_queue.log",
        "web.log",
        "/files/",
        ".manifest.json",
        "node.log",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "no {want} among {names:#?}"
        );
    }
}

#[test]
fn second_process_on_a_data_folder_exits() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    // db2 is configured with fe1's data folder by mistake.
    let text = format!(
        "{}\n[[node]]\nname = \"db2\"\nroles = [\"database\"]\nlisten = \"127.0.0.1:{}\"\ndata = \"data/fe1\"\n",
        loopback_config("plain", ""),
        free_port().unwrap()
    );
    std::fs::write(&cfg, text).unwrap();
    let config = Config::load(&cfg).unwrap();
    let data = config.node("fe1").unwrap().data.clone();
    let mut first = spawn_node(&common::exe(), &config, "fe1").unwrap();
    first.wait_ready(Duration::from_secs(20)).unwrap();

    // The same node started twice, and another node on the same folder.
    for name in ["fe1", "db2"] {
        let second = run_node(&cfg, name, dir.path(), Duration::from_secs(20));
        assert_eq!(
            second.code,
            Some(2),
            "{name}: a second process on {} must exit with code 2\nstdout:\n{}\nstderr:\n{}",
            data.display(),
            second.stdout,
            second.stderr
        );
        assert!(
            second.stderr.contains(&data.display().to_string())
                && second.stderr.contains("another process"),
            "{name}: the message names the folder and its holder:\n{}",
            second.stderr
        );
        assert!(
            !second.stdout.contains("listening"),
            "{name}: {}",
            second.stdout
        );
    }
    // The first process is untouched.
    assert!(first.child.try_wait().unwrap().is_none(), "fe1 exited");
    assert!(first.stop(Duration::from_secs(15)), "fe1 did not stop");
    // Once it is gone, the folder is free again.
    let mut again = spawn_node(&common::exe(), &config, "fe1").unwrap();
    again.wait_ready(Duration::from_secs(20)).unwrap();
}

#[test]
fn unwritable_data_folder_exits_with_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    // Node data folders under `nodes`; tests run as root too, which
    // ignores permissions, so every case here is one root cannot write
    // through either.
    let text = loopback_config("plain", "")
        .replace("links = \"plain\"", "links = \"plain\"\ndata = \"nodes\"");
    std::fs::write(&cfg, text).unwrap();
    let nodes = dir.path().join("nodes");
    let fe1 = nodes.join("fe1");
    let check = |why: &str, name: &str, path: &Path, os_error: &str| {
        let ended = run_node(&cfg, name, dir.path(), Duration::from_secs(20));
        assert_eq!(
            ended.code,
            Some(2),
            "{why}: exit code 2\nstdout:\n{}\nstderr:\n{}",
            ended.stdout,
            ended.stderr
        );
        assert!(
            ended.stderr.contains(&path.display().to_string()) && ended.stderr.contains(os_error),
            "{why}: the message names {} and says {os_error:?}:\n{}",
            path.display(),
            ended.stderr
        );
        assert!(
            !ended.stdout.contains("listening"),
            "{why}: it must not say it listens:\n{}",
            ended.stdout
        );
    };

    // The data folder cannot be created: its parent is a file.
    std::fs::write(&nodes, b"not a folder").unwrap();
    check(
        "data folder under a file",
        "fe1",
        &fe1,
        "Not a directory (os error 20)",
    );
    std::fs::remove_file(&nodes).unwrap();

    // The data folder exists, but the queue store in it cannot be
    // written: its log is a folder.
    std::fs::create_dir_all(fe1.join("outgoing_queue.log")).unwrap();
    check(
        "a store that cannot be written",
        "fe1",
        &fe1.join("outgoing_queue.log"),
        "Is a directory (os error 21)",
    );
    std::fs::remove_dir(fe1.join("outgoing_queue.log")).unwrap();

    // A read-only data folder: EACCES, unless this runs as root (which
    // writes anyway).
    let db1 = nodes.join("db1");
    std::fs::create_dir_all(&db1).unwrap();
    std::fs::set_permissions(&db1, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(db1.join("probe"), b"").is_err() {
        check(
            "a read-only data folder",
            "db1",
            &db1,
            "Permission denied (os error 13)",
        );
    } else {
        eprintln!("running as root: the read-only folder case is skipped");
    }
    std::fs::set_permissions(&db1, std::fs::Permissions::from_mode(0o700)).unwrap();
}

//! `holdfast cluster up` with a node that cannot listen: every node it
//! started is stopped again and it fails, unless --keep-going.

use holdfast::cluster_up::loopback_config;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The address a loopback config gives node `name`.
fn listen_of(config: &str, name: &str) -> std::net::SocketAddr {
    config
        .split(&format!("name = \"{name}\""))
        .nth(1)
        .and_then(|s| s.split("listen = \"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .parse()
        .unwrap()
}

/// `holdfast cluster up` on `config`, written to `cluster.toml` in `dir`;
/// its output piped.
fn cluster_up(dir: &std::path::Path, config: &str) -> std::process::Child {
    let file = dir.join("cluster.toml");
    std::fs::write(&file, config).unwrap();
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["cluster", "up", "-c"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits up to `within` for `cluster up` to exit (then SIGTERMs it, and
/// it stops the nodes it started, and fails the test: still running
/// `while`), and checks that it failed, saying that every node is
/// stopped. Returns its standard error.
fn failed_and_stopped(mut up: std::process::Child, within: Duration, while_: &str) -> String {
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let pid = nix::unistd::Pid::from_raw(up.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let out = up.wait_with_output().unwrap();
            panic!(
                "cluster up still running {while_}; it exited with {:?}:\n{}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = up.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("every node is stopped"), "{err}");
    err
}

/// Nothing listens at `addr` (a node's address) any more.
fn assert_gone(addr: std::net::SocketAddr) {
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "{addr} still listens"
    );
}

/// Before, `cluster up` printed "NOT LISTENING" for the node and ran on
/// with the others until interrupted.
#[test]
fn cluster_up_stops_every_node_when_one_cannot_listen() {
    let dir = tempfile::tempdir().unwrap();
    let text = loopback_config("plain", "");
    // Another process holds arch1's port.
    let arch1 = listen_of(&text, "arch1");
    let _taken = std::net::TcpListener::bind(arch1).unwrap();
    let fe1 = listen_of(&text, "fe1");
    let up = cluster_up(dir.path(), &text);
    let err = failed_and_stopped(up, Duration::from_secs(90), "with a node down");
    assert!(err.contains("arch1"), "{err}");
    // fe1 came up, and is gone again.
    assert_gone(fe1);
}

/// The pid of the `holdfast node` process running `name` of the config
/// `file` (a child of `cluster up`).
fn node_pid(file: &std::path::Path, name: &str) -> Option<i32> {
    let file = file.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let has = |a: &str, b: &str| args.windows(2).any(|w| w[0] == a && w[1] == b);
        if args.iter().any(|a| a == "node") && args.iter().any(|a| a == file) && has("--name", name)
        {
            return Some(pid);
        }
    }
    None
}

/// A node that exits while the cluster runs (killed, crashed) stops the
/// others and fails `cluster up`: before, it printed "node arch1 exited"
/// and ran on with the others until interrupted, then exited 0.
#[test]
fn cluster_up_stops_every_node_when_one_exits_while_it_runs() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let text = loopback_config("plain", "");
    let fe1 = listen_of(&text, "fe1");
    let mut up = cluster_up(dir.path(), &text);
    let stdout = up.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut seen = String::new();
    while !seen.contains("cluster up; Ctrl-C") {
        match lines.next() {
            Some(Ok(l)) => seen.push_str(&(l + "\n")),
            _ => panic!("cluster up ended before the cluster was up: {seen}"),
        }
    }
    let arch1 = node_pid(&dir.path().join("cluster.toml"), "arch1").expect("arch1's process");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(arch1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = failed_and_stopped(up, Duration::from_secs(60), "with arch1 gone");
    assert!(err.contains("node arch1 exited"), "{err}");
    assert_gone(fe1);
}

//! `holdfast cluster up` with a node that cannot listen: every node it
//! started is stopped again and it fails, unless --keep-going.

use holdfast::cluster_up::loopback_config;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Before, `cluster up` printed "NOT LISTENING" for the node and ran on
/// with the others until interrupted.
#[test]
fn cluster_up_stops_every_node_when_one_cannot_listen() {
    let dir = tempfile::tempdir().unwrap();
    let text = loopback_config("plain", "");
    // Another process holds arch1's port.
    let arch1: std::net::SocketAddr = text
        .split("name = \"arch1\"")
        .nth(1)
        .and_then(|s| s.split("listen = \"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let _taken = std::net::TcpListener::bind(arch1).unwrap();
    let fe1: std::net::SocketAddr = text
        .split("name = \"fe1\"")
        .nth(1)
        .and_then(|s| s.split("listen = \"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, text).unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["cluster", "up", "-c"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM: it stops the nodes it started.
            let pid = nix::unistd::Pid::from_raw(up.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let out = up.wait_with_output().unwrap();
            panic!(
                "cluster up still running with a node down:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = up.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("arch1"), "{err}");
    assert!(err.contains("every node is stopped"), "{err}");
    // fe1 came up, and is gone again.
    assert!(
        std::net::TcpStream::connect_timeout(&fe1, Duration::from_secs(1)).is_err(),
        "fe1 still listens"
    );
}

//! Starting a node: a node is ready when it says it listens, not when its
//! port answers. A port held by another process answers too, while the node
//! itself could not bind it and exited; starting must say so.

use holdfast::cluster_up::{loopback_config, spawn_node};
use holdfast::config::Config;
use std::time::Duration;

fn exe() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

fn config() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, loopback_config("plain", "")).unwrap();
    let config = Config::load(&file).unwrap();
    (dir, config)
}

#[test]
fn a_node_whose_port_is_taken_is_reported_not_ready() {
    let (_dir, config) = config();
    let fe1 = config.node("fe1").unwrap().listen;
    // Someone else listens on fe1's port: it accepts connections.
    let squatter = std::net::TcpListener::bind(fe1).unwrap();
    let mut p = spawn_node(&exe(), &config, "fe1").unwrap();
    let err = p.wait_ready(Duration::from_secs(20)).unwrap_err();
    assert!(err.contains("fe1 exited"), "{err}");
    assert!(err.contains(&format!("cannot listen on {fe1}")), "{err}");
    drop(squatter);
}

#[test]
fn a_node_is_ready_once_it_listens() {
    let (_dir, config) = config();
    let mut p = spawn_node(&exe(), &config, "fe1").unwrap();
    p.wait_ready(Duration::from_secs(20)).unwrap();
    let addr = config.node("fe1").unwrap().listen;
    assert!(std::net::TcpStream::connect(addr).is_ok());
    // A restart appends to the same log, which already says "listening":
    // the new process is ready only when it says so itself.
    p.kill();
    let squatter = std::net::TcpListener::bind(addr).unwrap();
    let mut again = spawn_node(&exe(), &config, "fe1").unwrap();
    let err = again.wait_ready(Duration::from_secs(20)).unwrap_err();
    assert!(err.contains("cannot listen"), "{err}");
    drop(squatter);
}

//! Starting a node: a node is ready when it says it listens, not when its
//! port answers. A port held by another process answers too, while the node
//! itself could not bind it and exited; starting must say so.

use holdfast::cluster_up::{loopback_config, spawn_node, NodeProcess};
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

/// Why a node started did not come up (it must not).
fn not_ready(p: &mut NodeProcess) -> String {
    p.wait_ready(Duration::from_secs(20))
        .expect_err("the node must not come up")
        .to_string()
}

#[test]
fn a_node_whose_port_is_taken_is_reported_not_ready() {
    let (_dir, config) = config();
    let fe1 = config.node("fe1").unwrap().listen;
    // Someone else listens on fe1's port: it accepts connections.
    let squatter = std::net::TcpListener::bind(fe1).unwrap();
    let mut p = spawn_node(&exe(), &config, "fe1").unwrap();
    let err = not_ready(&mut p);
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
    let err = not_ready(&mut again);
    assert!(err.contains("cannot listen"), "{err}");
    drop(squatter);
}

/// A database node whose PostgreSQL server cannot be reached does not
/// start, says which server (its password hidden) and why.
#[test]
fn a_database_node_without_its_postgresql_says_so_and_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    let nobody = holdfast::cluster_up::free_port().unwrap();
    let text = format!(
        "{}\n[archive]\nengine = \"postgres\"\nurl = \"postgres://holdfast:pg-s3cret@127.0.0.1:{nobody}/archive\"\nconnect_timeout = \"2s\"\n",
        loopback_config("plain", "")
    );
    std::fs::write(&file, text).unwrap();
    let config = Config::load(&file).unwrap();
    let mut p = spawn_node(&exe(), &config, "db1").unwrap();
    let err = not_ready(&mut p);
    assert!(err.contains("db1 exited"), "{err}");
    assert!(
        err.contains(&format!(
            "postgres://holdfast:***@127.0.0.1:{nobody}/archive: cannot connect"
        )),
        "{err}"
    );
    let log = std::fs::read_to_string(config.node("db1").unwrap().data.join("node.log")).unwrap();
    assert!(
        !log.contains("pg-s3cret") && !err.contains("pg-s3cret"),
        "{log}"
    );
}

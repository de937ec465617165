//! `holdfast cluster up`: every node of a config as a child process on this
//! machine, for a laptop, a lab or a test. Each node logs to
//! `<data>/node.log`; Ctrl-C (or SIGTERM) stops them all gracefully.

use crate::config::{Config, LinkMode};
use crate::path_error::PathError;
use crate::tls::TlsError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Why a node could not be started, or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterUpError {
    /// The node exited before it listened; the end of its log says why.
    #[error("{name} exited ({status}) before listening on {listen}; its log ends:\n{log_end}")]
    Exited {
        name: String,
        status: ExitStatus,
        listen: std::net::SocketAddr,
        log_end: String,
    },
    /// The node runs but did not say it listens in time.
    #[error("{name} is not listening on {listen} after {secs} s; see {}", .log.display())]
    NotListening {
        name: String,
        listen: std::net::SocketAddr,
        secs: u64,
        log: PathBuf,
    },
    #[error("node {0:?} is not in the config")]
    NotInConfig(String),
    /// The node's data folder or log.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The executable could not be run.
    #[error("cannot start {}: {source}", .exe.display())]
    Start {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cluster's certificates could not be made.
    #[error(transparent)]
    Certs(#[from] TlsError),
    /// This process's own resources: its executable's path, a runtime,
    /// signal handlers, a log handle.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A node process started by [`spawn_node`].
pub struct NodeProcess {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// The address the node must listen on.
    pub listen: std::net::SocketAddr,
    /// Length of the log when this process started: its own lines follow.
    log_start: u64,
}

/// The line a node writes to its standard output once it listens on its
/// address. A port that merely accepts connections proves nothing: another
/// process may hold it while this node failed to bind and exited.
pub fn ready_line(name: &str, listen: std::net::SocketAddr) -> String {
    format!("node {name} listening on {listen}")
}

impl NodeProcess {
    /// Waits until the node says it listens, up to `timeout`. Fails at once
    /// if it exits first, with the end of its log (a port taken by another
    /// process, a bad data folder, ...).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), ClusterUpError> {
        let want = ready_line(&self.name, self.listen);
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.child.try_wait().ok().flatten();
            let log = self.own_log();
            if log.contains(&want) {
                return Ok(());
            }
            if let Some(status) = exited {
                return Err(ClusterUpError::Exited {
                    name: self.name.clone(),
                    status,
                    listen: self.listen,
                    log_end: last_lines(&log, 8),
                });
            }
            if Instant::now() >= deadline {
                return Err(ClusterUpError::NotListening {
                    name: self.name.clone(),
                    listen: self.listen,
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What this process wrote to the (appended) log.
    pub fn own_log(&self) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            if f.seek(SeekFrom::Start(self.log_start)).is_ok() {
                let mut bytes = Vec::new();
                let _ = f.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        text
    }

    /// Asks the node to stop (SIGTERM) and waits up to `grace`; kills it
    /// after that. Returns whether it stopped by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `holdfast node` for `name` with the given executable, logging
/// (appending) to `<data>/node.log`.
pub fn spawn_node(exe: &Path, config: &Config, name: &str) -> Result<NodeProcess, ClusterUpError> {
    spawn_node_under(&[], exe, config, name)
}

/// [`spawn_node`] with the node's command run by `wrapper` (for example
/// `ip netns exec NAME`, which puts it in a network namespace and then
/// becomes the node: the process is still the node's).
pub fn spawn_node_under(
    wrapper: &[&str],
    exe: &Path,
    config: &Config,
    name: &str,
) -> Result<NodeProcess, ClusterUpError> {
    let node = config
        .node(name)
        .ok_or_else(|| ClusterUpError::NotInConfig(name.to_string()))?;
    std::fs::create_dir_all(&node.data).map_err(|e| PathError::new(&node.data, e))?;
    let log = node.data.join("node.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| PathError::new(&log, e))?;
    let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
    let err = out.try_clone()?;
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let child = command
        .arg("node")
        .arg("--config")
        .arg(&config.file)
        .arg("--name")
        .arg(name)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| ClusterUpError::Start {
            exe: exe.to_path_buf(),
            source,
        })?;
    Ok(NodeProcess {
        name: name.to_string(),
        child,
        log,
        listen: node.listen,
        log_start,
    })
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Creates the cluster's certificates if TLS links are configured and none
/// exist yet.
pub fn ensure_certs(config: &Config) -> Result<(), ClusterUpError> {
    if config.links == LinkMode::Tls && !config.certs.join("ca.pem").exists() {
        let files = crate::tls::certs_init(config, false)?;
        println!(
            "created a cluster CA and {} files in {}",
            files.len(),
            config.certs.display()
        );
    }
    Ok(())
}

/// Why `cluster up` ended badly.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// It could not start: certificates, the executable, a node's folder.
    #[error(transparent)]
    Setup(#[from] ClusterUpError),
    /// A node did not come up (every node it started is stopped again,
    /// unless `keep_going`), or every node exited.
    #[error("{0}")]
    Nodes(String),
}

impl From<std::io::Error> for UpError {
    fn from(e: std::io::Error) -> UpError {
        UpError::Setup(e.into())
    }
}

/// Starts every node of the config and runs until SIGTERM or Ctrl-C. A
/// node that does not listen, or exits while the cluster runs, stops
/// every node started and fails, unless `keep_going`: then the others run
/// on without it, and the command fails when they are stopped.
pub fn up(config: &Config, keep_going: bool) -> Result<(), UpError> {
    ensure_certs(config)?;
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for n in &config.nodes {
        nodes.push(spawn_node(&exe, config, &n.name)?);
    }
    println!(
        "{:<10} {:<28} {:<22} {:<22} log",
        "node", "roles", "listen", "metrics"
    );
    let mut failed = Vec::new();
    // The nodes that did not come up or exited: with --keep-going the
    // command still fails in the end.
    let mut lost: Vec<String> = Vec::new();
    for (n, p) in config.nodes.iter().zip(nodes.iter_mut()) {
        let roles: Vec<String> = n.roles.iter().map(|r| format!("{r:?}")).collect();
        let ready = p.wait_ready(Duration::from_secs(30));
        println!(
            "{:<10} {:<28} {:<22} {:<22} {}{}",
            n.name,
            roles.join(","),
            n.listen.to_string(),
            n.metrics
                .map(|m| format!("http://{m}/metrics"))
                .unwrap_or("-".into()),
            n.data.join("node.log").display(),
            if ready.is_ok() {
                ""
            } else {
                "  (NOT LISTENING: see below)"
            }
        );
        if let Err(e) = ready {
            failed.push(e);
            lost.push(n.name.clone());
        }
    }
    for e in &failed {
        eprintln!("{e}");
    }
    if !failed.is_empty() && !keep_going {
        return Err(stop_every_node(
            &mut nodes,
            format!(
                "{} of {} nodes did not come up; every node is stopped",
                failed.len(),
                config.nodes.len()
            ),
        ));
    }
    println!("cluster up; Ctrl-C stops every node");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {
                    let mut exited = Vec::new();
                    for n in &mut nodes {
                        if let Ok(Some(status)) = n.child.try_wait() {
                            eprintln!("node {} exited ({status}); see {}", n.name, n.log.display());
                            exited.push(n.name.clone());
                        }
                    }
                    nodes.retain_mut(|n| !matches!(n.child.try_wait(), Ok(Some(_))));
                    if nodes.is_empty() {
                        return Err(UpError::Nodes("every node has exited".to_string()));
                    }
                    if !exited.is_empty() && !keep_going {
                        return Err(stop_every_node(
                            &mut nodes,
                            format!(
                                "{} exited while the cluster ran; every node is stopped",
                                exited.join(", ")
                            ),
                        ));
                    }
                    lost.extend(exited);
                }
            }
        }
        Ok::<(), UpError>(())
    })?;
    println!("stopping {} nodes", nodes.len());
    for n in &mut nodes {
        let clean = n.stop(Duration::from_secs(15));
        println!(
            "  {} {}",
            n.name,
            if clean {
                "stopped"
            } else {
                "killed after 15 s"
            }
        );
    }
    if !lost.is_empty() {
        return Err(UpError::Nodes(format!(
            "the cluster ran without {}",
            lost.join(", ")
        )));
    }
    Ok(())
}

/// Stops every node still running once one has failed (without
/// `--keep-going`): the error `up` returns, saying `why`.
fn stop_every_node(nodes: &mut [NodeProcess], why: String) -> UpError {
    eprintln!("stopping every node (--keep-going runs the others without them)");
    for n in nodes {
        n.stop(Duration::from_secs(15));
    }
    UpError::Nodes(why)
}

/// A free TCP port on loopback (bound once and released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A config for a 2-front-end cluster on loopback with free ports: fe1
/// homes alice and user1..20, fe2 bob and user21..40; one archiver, one
/// database; every node serves metrics. For tests and the benchmark.
pub fn loopback_config(links: &str, settings: &str) -> String {
    // Eight different ports (a listen and a metrics port per node): a
    // port the system just called free may be handed out again by the
    // next draw.
    let mut p: Vec<u16> = Vec::with_capacity(8);
    while p.len() < 8 {
        let port = free_port().unwrap_or(0);
        if port == 0 || !p.contains(&port) {
            p.push(port);
        }
    }
    let node = |i: usize, name: &str, role: &str, extra: &str| {
        let (listen, metrics) = (p[2 * i], p[2 * i + 1]);
        format!("\n[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\nlisten = \"127.0.0.1:{listen}\"\nmetrics = \"127.0.0.1:{metrics}\"\n{extra}\n")
    };
    let users = |first: &str, from: u32| {
        format!(
            "archiver = \"arch1\"\nusers = [\"{first}@corp.example\", \"user{{{from}..{}}}@corp.example\"]",
            from + 19
        )
    };
    let mut text = format!(
        "[cluster]\ndomain = \"corp.example\"\nlinks = \"{links}\"\n\n[settings]\n{settings}\n"
    );
    text += &node(0, "fe1", "front_end", &users("alice", 1));
    text += &node(1, "fe2", "front_end", &users("bob", 21));
    text += &node(2, "arch1", "archiver", "database = \"db1\"");
    text += &node(3, "db1", "database", "");
    text
}

//! Real-process clusters on loopback for the integration tests: a config
//! with free ports in a temporary folder, `holdfast node` child processes (killed
//! when the test ends, whatever happens).

#![allow(dead_code)]

pub mod archive;
pub mod chat;
pub mod outcomes;
pub mod postgres;

use holdfast::archive_db::ArchiveDb;
use holdfast::cluster_up::{last_lines, loopback_config, spawn_node, NodeProcess};
use holdfast::config::{Config, StoreEngine};
use holdfast::engines::postgres::PgArchive;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cluster from [`loopback_config`]: fe1 (alice, user1..20), fe2 (bob,
/// user21..40), arch1, db1.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config: Arc<Config>,
    pub nodes: BTreeMap<String, NodeProcess>,
}

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

/// The settings of a functional test: `settings`, with an admission
/// budget of 2 s unless they set one. These tests check what a cluster
/// does with an IM (refuse a forgery, archive the largest one, keep ids
/// apart), and they share two cores with the whole test suite, debug
/// builds and other tests' clusters: under that load a request waits past
/// the production default (100 ms) often enough that the front end
/// answers busy, a correct answer but not the one under test. Overload is
/// tested where it is the subject (the transport's own tests, the
/// simulator's inbox and overload scenarios, `bench`).
pub fn functional_settings(settings: &str) -> String {
    if settings.contains("admission_wait") {
        settings.to_string()
    } else {
        format!("admission_wait = \"2s\"\n{settings}")
    }
}

impl TestCluster {
    pub fn start(links: &str, settings: &str) -> TestCluster {
        let settings = functional_settings(settings);
        TestCluster::start_with(links, || loopback_config(links, &settings))
    }

    /// A cluster from a whole config text, which `make_text` draws with
    /// free ports. A port is only free until someone takes it: another
    /// test's cluster may bind it, or use it for an outgoing connection,
    /// before this cluster's node starts. A node that cannot bind its port
    /// fails the start, and the cluster starts again on fresh ports.
    pub fn start_with(links: &str, make_text: impl Fn() -> String) -> TestCluster {
        let mut attempt = 1;
        loop {
            match TestCluster::try_start(links, &make_text()) {
                Ok(c) => return c,
                // The listen port, or the metrics port: either may have
                // been taken since it was drawn.
                Err(e)
                    if attempt < 3
                        && (e.contains("cannot listen")
                            || e.contains("Address already in use")
                            // Two ports drawn free one after the other
                            // may be the same one.
                            || e.contains("is also")) =>
                {
                    eprintln!("attempt {attempt}: {e}; starting again on other ports");
                    attempt += 1;
                }
                Err(e) => panic!("the cluster did not start: {e}"),
            }
        }
    }

    fn try_start(links: &str, text: &str) -> Result<TestCluster, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        let config = Arc::new(Config::load(&file).map_err(|e| e.to_string())?);
        if links == "tls" {
            holdfast::tls::certs_init(&config, false).unwrap();
        }
        let mut c = TestCluster {
            dir,
            config,
            nodes: BTreeMap::new(),
        };
        for n in c.config.nodes.clone() {
            c.try_start_node(&n.name)?;
        }
        Ok(c)
    }

    /// Starts (or restarts) a node and waits until it listens.
    pub fn start_node(&mut self, name: &str) {
        if let Err(e) = self.try_start_node(name) {
            panic!("{e}");
        }
    }

    fn try_start_node(&mut self, name: &str) -> Result<(), String> {
        let mut p = spawn_node(&exe(), &self.config, name).unwrap();
        let ready = p.wait_ready(Duration::from_secs(20));
        self.nodes.insert(name.to_string(), p);
        ready.map_err(|e| e.to_string())
    }

    pub fn kill(&mut self, name: &str) {
        self.nodes.get_mut(name).unwrap().kill();
    }

    /// Runs the command-line tool on this cluster's config: (exit code,
    /// stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(exe())
            .args(args)
            .arg("-c")
            .arg(self.dir.path().join("cluster.toml"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `holdfast im send` of `text` from `from` to `to` on this cluster:
    /// (exit code, stdout, stderr).
    pub fn send_im(&self, from: &str, to: &str, text: &str) -> (i32, String, String) {
        self.cli(&["im", "send", "--from", from, "--to", to, text])
    }

    /// What `node`'s metrics address answers at `path`: the status, the
    /// content type (empty with an error status) and the body.
    pub fn http_get(&self, node: &str, path: &str) -> (u16, String, String) {
        let addr = self
            .config
            .node(node)
            .unwrap()
            .metrics
            .expect("a metrics address");
        match ureq::get(&format!("http://{addr}{path}")).call() {
            Ok(r) => (
                r.status(),
                r.content_type().to_string(),
                r.into_string().unwrap(),
            ),
            Err(ureq::Error::Status(code, r)) => (code, String::new(), r.into_string().unwrap()),
            Err(e) => panic!("{node}{path}: {e}"),
        }
    }

    /// Asks `node` for `path` until it answers `want`, for `within` at the
    /// most (the test fails after that): the body of that answer.
    pub fn http_wait(&self, node: &str, path: &str, want: u16, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (code, _, body) = self.http_get(node, path);
            if code == want {
                return body;
            }
            assert!(Instant::now() < deadline, "{node}{path}: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self, name: &str) -> String {
        let path = self.config.node(name).unwrap().data.join("node.log");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    pub fn archive_path(&self) -> PathBuf {
        self.config.node("db1").unwrap().archive_path()
    }

    /// Client request id → rows archived for it (empty until the database
    /// node has created its file or tables, or while its PostgreSQL server
    /// is down).
    pub fn archived(&self) -> BTreeMap<String, u64> {
        if let StoreEngine::Postgres(target) = &self.config.node("db1").unwrap().archive_engine {
            return PgArchive::connect(target)
                .and_then(|mut db| {
                    db.client_id_counts()
                        .map_err(holdfast::engines::EngineError::Store)
                })
                .unwrap_or_default();
        }
        let path = self.archive_path();
        if !Path::new(&path).exists() {
            return BTreeMap::new();
        }
        match ArchiveDb::open_read_only(&path) {
            Ok(db) => db.client_id_counts().unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Polls the archive until `done` holds for it, up to `timeout`.
    pub fn wait_archive(
        &self,
        timeout: Duration,
        done: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> BTreeMap<String, u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.archived();
            if done(&a) || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to every node; returns the nodes that did not stop in time.
    pub fn stop_all(&mut self) -> Vec<String> {
        let mut slow = Vec::new();
        for (name, p) in self.nodes.iter_mut() {
            if !p.stop(Duration::from_secs(15)) {
                slow.push(name.clone());
            }
        }
        slow
    }
}

/// A failed test shows the end of every node's log: a node that did not
/// answer says why in its own log, not in the test's.
impl Drop for TestCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, p) in self.nodes.iter_mut() {
            let state = match p.child.try_wait() {
                Ok(Some(status)) => format!("exited: {status}"),
                _ => "running".to_string(),
            };
            eprintln!(
                "---- {name} ({state}), the end of its log ----\n{}",
                last_lines(&p.own_log(), 30)
            );
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A TLS client of the cluster whose CA is in `certs` that presents no
/// certificate (what a client without a credential would be).
pub fn anonymous_tls(certs: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(certs.join("ca.pem")).unwrap())
        .unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(anonymous))
}

/// The type of each metric family in `node`'s `/metrics` `text`, as a
/// real OpenMetrics parser reads it (the test fails if it cannot). Every
/// node counts its fsyncs, as a counter.
pub fn metric_types(
    node: &str,
    text: &str,
) -> BTreeMap<String, openmetrics_parser::OpenMetricsType> {
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(text)
        .unwrap_or_else(|e| panic!("{node}: not OpenMetrics: {e:?}\n{text}"));
    let types: BTreeMap<_, _> = parsed
        .families
        .iter()
        .map(|(name, f)| (name.clone(), f.family_type))
        .collect();
    assert_eq!(
        types.get("holdfast_fsyncs"),
        Some(&openmetrics_parser::OpenMetricsType::Counter),
        "{node}"
    );
    types
}

/// The one line a command run with `--json` printed, read as JSON; the
/// test fails (naming the command `what`) if it failed or printed more.
pub fn one_json_line(what: &str, out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one line: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

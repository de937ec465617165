//! Real partitions on real processes: every node of a cluster (fe1, fe2,
//! arch1, db1) and the test's client in a network namespace of its own,
//! joined by veth pairs to a bridge in a further namespace that plays the
//! network. A cut is an nftables rule in that bridge's namespace dropping
//! the packets between fe1 and arch1 (both ways, or only arch1 → fe1: the
//! acknowledgements are lost); fe2 is never cut. The test creates every
//! namespace itself, under names unique to its process, and removes them
//! when a case ends, whether it passes or panics; it never touches the
//! machine's own interfaces or firewall. It needs root, `ip` (iproute2) and
//! `nft` (nftables).
//!
//! The cases run at the same time, each in its own namespaces: a short cut
//! (no critical shutdown), a 90 s two-way cut, a 90 s one-way cut, a
//! 4-minute cut and a flapping link. Each asserts that the archive holds
//! every accepted IM exactly once (nothing lost, duplicated or never sent),
//! that fe2 was never refused, and the recovery bound: the first delivery
//! from fe1's queue within `resend_interval` + 3 s of the (last) heal, and
//! messaging resumed within the resume rule after that. Left to the
//! kernel, a stalled connection resumed at its next retransmission, 94 s
//! after the heal of a 4-minute cut.
//!
//! Each case prints a table row and one JSON line of its figures, and
//! writes the line to `calibration/real-partitions.jsonl` under cargo's
//! `target/tmp` (the file is rewritten by every run): `sim/tests/calibration.rs`
//! compares them with the same cases run as scenario files in the
//! simulator. The archiving server serves its metrics, so that the
//! duplicates its destination queue dropped are among the figures.
//!
//! `HOLDFAST_PARTITION_CASES=flapping` runs only the cases named (comma-
//! separated); `HOLDFAST_PARTITION_LOGS=DIR` writes every node's log there.

mod common;

use common::outcomes::{Told, Verdict};
use holdfast::archive_db::ArchiveDb;
use holdfast::client::{Client, Outcome};
use holdfast::cluster_up::{last_lines, spawn_node_under, NodeProcess};
use holdfast::config::Config;
use holdfast_actors::core::protocol::Im;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The settings of the fidelity experiment: heartbeat 5 s, TTRQ 30 s,
/// resend 2 s, critical mode on; resume 2 s after the link is healthy.
/// The five cases' clusters share the machine, so a front end's process
/// can wait for a core far longer than its default admission budget
/// (100 ms, which answers busy once a request has waited half of it):
/// what is tested here is the partition, not admission, so the budget is
/// 2 s as in the other functional tests (`node/tests/common`).
const SETTINGS: &str = r#"
admission_wait = "2s"
critical_mode = true
critical_auto_resume = true
critical_resume_after = "2s"
heartbeat_interval = "5s"
heartbeat_ttrq = "30s"
resend_interval = "2s"
"#;
const RESEND_INTERVAL: Duration = Duration::from_secs(2);
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
const RESUME_AFTER: Duration = Duration::from_secs(2);
const HEARTBEAT_TTRQ: Duration = Duration::from_secs(30);

/// Item 1's bound: the first delivery after a heal within the resend
/// interval + 3 s.
const FIRST_DELIVERY_BOUND: Duration = RESEND_INTERVAL.saturating_add(secs(3));
/// Messaging resumes once a heartbeat sent after the heal is processed
/// (within a heartbeat interval of the first delivery, behind the backlog)
/// and the link has stayed healthy for `critical_resume_after`; 3 s more
/// for a loaded machine running five clusters.
const RESUME_BOUND: Duration = FIRST_DELIVERY_BOUND
    .saturating_add(HEARTBEAT_INTERVAL)
    .saturating_add(RESUME_AFTER)
    .saturating_add(secs(3));
/// Critical shutdown after a cut: the heartbeat TTRQ, noticed at the next
/// heartbeat check, plus scheduling slack.
const SHUTDOWN_BOUND: Duration = HEARTBEAT_TTRQ
    .saturating_add(HEARTBEAT_INTERVAL)
    .saturating_add(secs(3));

/// Which packets a cut drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// Both ways between fe1 and arch1.
    Both,
    /// Only arch1 → fe1: fe1's data arrives, its acknowledgements do not.
    AcksLost,
}

struct Case {
    name: &'static str,
    cut: Cut,
    /// (cut for, then healed for): the last heal is the one measured.
    periods: Vec<(Duration, Duration)>,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "short-cut",
            cut: Cut::Both,
            periods: vec![(secs(20), secs(0))],
        },
        Case {
            name: "long-cut",
            cut: Cut::Both,
            periods: vec![(secs(90), secs(0))],
        },
        Case {
            name: "one-way-cut",
            cut: Cut::AcksLost,
            periods: vec![(secs(90), secs(0))],
        },
        Case {
            name: "four-minute-cut",
            cut: Cut::Both,
            periods: vec![(secs(240), secs(0))],
        },
        Case {
            name: "flapping",
            cut: Cut::Both,
            periods: [7, 3, 12, 1, 9, 2, 40, 4, 15]
                .chunks(2)
                .map(|p| (secs(p[0]), secs(p.get(1).copied().unwrap_or(0))))
                .collect(),
        },
    ]
}

/// Runs a command to completion; its error output on failure.
fn run(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (is it installed?)", args.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The prefix of every namespace this test creates: the process id keeps
/// concurrent runs apart, and tells a leftover of a killed run.
const PREFIX: &str = "hfpart";

fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let Ok(out) = out else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Removes namespaces left by an earlier run of this test that was killed
/// before its guards ran (its process is gone).
fn remove_leftovers() {
    for name in netns_list() {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", &name], None);
        }
    }
}

/// The namespaces of one case; deleting them deletes their interfaces.
/// Dropped after the node processes (see [`Partitioned`]).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn add(&mut self, name: &str) -> Result<(), String> {
        run(&["ip", "netns", "add", name], None)?;
        self.names.push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", name], None) {
                eprintln!("cleaning up: {e}");
            }
        }
    }
}

const NODES: [(&str, u8); 4] = [("fe1", 1), ("fe2", 2), ("arch1", 3), ("db1", 4)];
const CLIENT_HOST: u8 = 10;
const PORT: u16 = 7000;
/// The archiving server's metrics port (on its own address).
const METRICS_PORT: u16 = 9100;

/// One case's cluster: its namespaces, its nodes in them, its config.
struct Partitioned {
    // Fields drop in order: the nodes are killed before their namespaces
    // go, and the folder last.
    nodes: BTreeMap<String, NodeProcess>,
    net: Namespaces,
    prefix: String,
    subnet: u8,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
}

impl Partitioned {
    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn ip_of(&self, host: u8) -> String {
        format!("10.231.{}.{host}", self.subnet)
    }

    fn start(case: usize) -> Result<Partitioned, String> {
        let prefix = format!("{PREFIX}{}c{case}", std::process::id());
        let subnet = case as u8 + 1;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut text = format!(
            "[cluster]\ndomain = \"corp.example\"\nlinks = \"plain\"\n\n[settings]\n{SETTINGS}\n"
        );
        for (name, host) in NODES {
            let extra = match name {
                "fe1" => "archiver = \"arch1\"\nusers = [\"alice@corp.example\", \"user{1..20}@corp.example\"]".to_string(),
                "fe2" => "archiver = \"arch1\"\nusers = [\"bob@corp.example\", \"user{21..40}@corp.example\"]".to_string(),
                "arch1" => format!(
                    "database = \"db1\"\nmetrics = \"10.231.{subnet}.{host}:{METRICS_PORT}\""
                ),
                _ => String::new(),
            };
            let role = match name {
                "fe1" | "fe2" => "front_end",
                "arch1" => "archiver",
                _ => "database",
            };
            text.push_str(&format!(
                "[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\nlisten = \"10.231.{subnet}.{host}:{PORT}\"\n{extra}\n\n"
            ));
        }
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let config = Arc::new(Config::load(&file).map_err(|e| e.to_string())?);
        let mut c = Partitioned {
            nodes: BTreeMap::new(),
            net: Namespaces { names: Vec::new() },
            prefix,
            subnet,
            config,
            _dir: dir,
        };
        let hub = c.ns("hub");
        c.net.add(&hub)?;
        run(
            &["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"],
            None,
        )?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"], None)?;
        let hosts = NODES
            .iter()
            .copied()
            .chain(std::iter::once(("cli", CLIENT_HOST)));
        for (name, host) in hosts {
            let ns = c.ns(name);
            c.net.add(&ns)?;
            let port = format!("h-{name}");
            run(
                &[
                    "ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
                None,
            )?;
            run(
                &["ip", "-n", &hub, "link", "set", &port, "master", "br0"],
                None,
            )?;
            run(&["ip", "-n", &hub, "link", "set", &port, "up"], None)?;
            let addr = format!("{}/24", c.ip_of(host));
            run(
                &["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"],
                None,
            )?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"], None)?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"], None)?;
        }
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_holdfast"));
        for (name, _) in NODES {
            let ns = c.ns(name);
            let p = spawn_node_under(&["ip", "netns", "exec", &ns], &exe, &c.config, name)
                .map_err(|e| e.to_string())?;
            c.nodes.insert(name.to_string(), p);
        }
        for p in c.nodes.values_mut() {
            p.wait_ready(Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
        }
        Ok(c)
    }

    /// Drops the packets between fe1 and arch1 in the network's namespace.
    fn cut(&self, cut: Cut) -> Result<(), String> {
        let (fe1, arch1) = (self.ip_of(1), self.ip_of(3));
        let mut rules = format!("    ip saddr {arch1} ip daddr {fe1} drop\n");
        if cut == Cut::Both {
            rules.push_str(&format!("    ip saddr {fe1} ip daddr {arch1} drop\n"));
        }
        let script = format!(
            "table bridge holdfast_cut {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        run(
            &["ip", "netns", "exec", &self.ns("hub"), "nft", "-f", "-"],
            Some(&script),
        )
    }

    fn heal(&self) -> Result<(), String> {
        run(
            &[
                "ip",
                "netns",
                "exec",
                &self.ns("hub"),
                "nft",
                "delete",
                "table",
                "bridge",
                "holdfast_cut",
            ],
            None,
        )
    }

    /// Client request id → rows archived for it.
    fn archived(&self) -> BTreeMap<String, u64> {
        let path = self.config.node("db1").expect("db1").archive_path();
        if !path.exists() {
            return BTreeMap::new();
        }
        match ArchiveDb::open_read_only(&path) {
            Ok(db) => db.client_id_counts().unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Transfers the archiving server's destination queue dropped as
    /// already stored, from its metrics (`None`: unreadable).
    fn duplicates_dropped(&self) -> Option<u64> {
        let addr = self.config.node("arch1")?.metrics?;
        let text = ureq::get(&format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(3))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        holdfast::cluster_status::parse(&text)
            .into_iter()
            .find(|(name, labels, _)| {
                name == "holdfast_duplicates_dropped_total"
                    && labels.get("actor").map(String::as_str) == Some("destination_queue")
            })
            .map(|(_, _, v)| v as u64)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (name, p) in &self.nodes {
            s.push_str(&format!(
                "---- {name}, the end of its log ----\n{}\n",
                last_lines(&p.own_log(), 25)
            ));
        }
        s
    }
}

/// Puts the calling thread (and the sockets it opens from now on) into a
/// network namespace.
fn enter_namespace(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))
}

/// One IM the client sent.
struct Sent {
    id: String,
    from_fe1: bool,
    sent: Instant,
    answered: Instant,
    outcome: Outcome,
}

/// What one case measured.
#[derive(Debug, Default)]
struct Figures {
    name: &'static str,
    cut_secs: u64,
    /// Cut → fe1's first critical-mode rejection.
    shutdown: Option<Duration>,
    /// Last heal → the first record from fe1's queue in the archive.
    first_delivery: Option<Duration>,
    /// Last heal → the first IM to fe1 sent after the heal and accepted.
    resume: Option<Duration>,
    sent: usize,
    accepted: usize,
    rejected: usize,
    unknown: usize,
    fe2_refused: usize,
    /// How fe2's refused or unanswered IMs were answered, by outcome.
    fe2_refused_how: BTreeMap<String, usize>,
    lost: Vec<String>,
    duplicated: Vec<String>,
    phantoms: Vec<String>,
    archived_rejected: Vec<String>,
    /// arch1's destination queue: transfers dropped as already stored.
    duplicates_dropped: Option<u64>,
}

/// The load: every 20 ms one IM (50 IM/s), four in five from fe1's users.
async fn load(client: Arc<Client>, log: Arc<Mutex<Vec<Sent>>>, stop: Arc<Mutex<bool>>) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut tasks = Vec::new();
    while !*stop.lock().unwrap() {
        tick.tick().await;
        n += 1;
        let from_fe1 = !n.is_multiple_of(5);
        let (from, to) = if from_fe1 {
            ("alice@corp.example", "bob@corp.example")
        } else {
            ("bob@corp.example", "alice@corp.example")
        };
        let im = Im {
            id: holdfast::client::new_id("part").into(),
            from: from.into(),
            to: to.into(),
            body: format!("partition test message {n}"),
        };
        let (c, log) = (client.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let id = im.id.to_string();
            let sent = Instant::now();
            let outcome = c
                .send_im(im, Duration::from_secs(5))
                .await
                .unwrap_or(Outcome::Unknown);
            log.lock().unwrap().push(Sent {
                id,
                from_fe1,
                sent,
                answered: Instant::now(),
                outcome,
            });
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn run_case(index: usize, case: &Case) -> Result<Figures, String> {
    let c = Partitioned::start(index)?;
    enter_namespace(&c.ns("cli"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(drive(&c, case));
    result.map_err(|e| format!("{e}\n{}", c.logs()))
}

async fn drive(c: &Partitioned, case: &Case) -> Result<Figures, String> {
    let client = Arc::new(Client::new(c.config.clone()).map_err(|e| e.to_string())?);
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(Mutex::new(false));
    let load_task = tokio::spawn(load(client, log.clone(), stop.clone()));
    let mut f = Figures {
        name: case.name,
        cut_secs: case.periods.iter().map(|p| p.0.as_secs()).sum(),
        ..Figures::default()
    };
    tokio::time::sleep(secs(5)).await;
    let first_cut = Instant::now();
    let mut heal = first_cut;
    let mut before_heal = BTreeMap::new();
    for (i, (down, up)) in case.periods.iter().enumerate() {
        c.cut(case.cut)?;
        tokio::time::sleep(*down).await;
        if i + 1 == case.periods.len() {
            before_heal = c.archived();
        }
        c.heal()?;
        heal = Instant::now();
        tokio::time::sleep(*up).await;
    }
    // The first record from fe1's queue to reach the archive after the
    // heal (any fe1 IM not archived before it).
    let fe1_ids = |log: &[Sent]| -> BTreeSet<String> {
        log.iter()
            .filter(|s| s.from_fe1)
            .map(|s| s.id.clone())
            .collect()
    };
    let deadline = heal + secs(150);
    while Instant::now() < deadline {
        let a = c.archived();
        let ids = fe1_ids(&log.lock().unwrap());
        if a.keys()
            .any(|k| !before_heal.contains_key(k) && ids.contains(k))
        {
            f.first_delivery = Some(heal.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Resume: an IM to fe1 sent after the heal and accepted.
    while Instant::now() < deadline {
        let resumed = log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.from_fe1 && s.sent >= heal)
            .filter(|s| matches!(s.outcome, Outcome::Accepted { .. }))
            .map(|s| s.sent)
            .min();
        if let Some(t) = resumed {
            f.resume = Some(t.duration_since(heal));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(secs(3)).await;
    *stop.lock().unwrap() = true;
    let _ = load_task.await;
    let log = std::mem::take(&mut *log.lock().unwrap());
    // For an investigation: every node's log, and how long ago the heal was.
    if let Ok(dir) = std::env::var("HOLDFAST_PARTITION_LOGS") {
        for (name, p) in &c.nodes {
            let _ = std::fs::write(format!("{dir}/{}-{name}.log", case.name), p.own_log());
        }
        let since = format!("{:?} since the heal\n", heal.elapsed());
        let _ = std::fs::write(format!("{dir}/{}-heal.txt", case.name), since);
    }
    f.shutdown = log
        .iter()
        .filter(|s| s.from_fe1 && s.sent >= first_cut)
        .filter(
            |s| matches!(&s.outcome, Outcome::Rejected { reason } if reason.contains("critical")),
        )
        .map(|s| s.answered.duration_since(first_cut))
        .min();
    let told = Told::new(log.iter().map(|s| (s.id.as_str(), &s.outcome)));
    f.sent = log.len();
    f.accepted = told.accepted.len();
    f.rejected = told.rejected.len();
    f.unknown = log
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Unknown))
        .count();
    for s in log
        .iter()
        .filter(|s| !s.from_fe1 && !matches!(s.outcome, Outcome::Accepted { .. }))
    {
        f.fe2_refused += 1;
        let how = match &s.outcome {
            Outcome::Rejected { reason } => format!("rejected ({reason})"),
            other => format!("{other:?}"),
        };
        *f.fe2_refused_how.entry(how).or_default() += 1;
    }
    let settle = Instant::now() + secs(60);
    let archive = loop {
        let a = c.archived();
        if told.accepted.iter().all(|id| a.contains_key(id)) || Instant::now() > settle {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let verdict = Verdict::new(&told, &archive);
    f.lost = verdict.lost;
    f.duplicated = verdict.duplicated;
    f.phantoms = verdict.phantoms;
    f.archived_rejected = verdict.archived_rejected;
    // The cores' gauges reach the metrics once a second.
    tokio::time::sleep(secs(2)).await;
    f.duplicates_dropped = c.duplicates_dropped();
    Ok(f)
}

fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// Every way a case's figures break its promises.
fn failures(f: &Figures, case: &Case) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            out.push(format!("{}: {what}", f.name));
        }
    };
    // 50 IM/s for at least 5 s before the cut: not vacuous.
    check(
        f.accepted >= 200,
        format!(
            "only {} of {} IMs accepted: the load did not run",
            f.accepted, f.sent
        ),
    );
    check(
        f.lost.is_empty(),
        format!(
            "{} accepted IMs not archived: {:?}",
            f.lost.len(),
            f.lost.iter().take(5).collect::<Vec<_>>()
        ),
    );
    check(
        f.duplicated.is_empty(),
        format!("archived twice: {:?}", f.duplicated),
    );
    check(
        f.phantoms.is_empty(),
        format!("archived but never sent: {:?}", f.phantoms),
    );
    check(
        f.archived_rejected.is_empty(),
        format!("rejected but archived: {:?}", f.archived_rejected),
    );
    check(
        f.fe2_refused == 0,
        format!(
            "fe2 (never cut) refused or did not answer {} IMs: {:?}",
            f.fe2_refused, f.fe2_refused_how
        ),
    );
    check(
        f.first_delivery.is_some_and(|d| d <= FIRST_DELIVERY_BOUND),
        format!(
            "first delivery {} s after the heal, bound {} s",
            ms(f.first_delivery),
            FIRST_DELIVERY_BOUND.as_secs()
        ),
    );
    check(
        f.resume.is_some_and(|d| d <= RESUME_BOUND),
        format!(
            "resumed {} s after the heal, bound {} s",
            ms(f.resume),
            RESUME_BOUND.as_secs()
        ),
    );
    let longest = case.periods.iter().map(|p| p.0).max().unwrap_or_default();
    if longest + FIRST_DELIVERY_BOUND < HEARTBEAT_TTRQ {
        check(
            f.shutdown.is_none(),
            format!(
                "critical shutdown {} s after a cut shorter than the heartbeat TTRQ",
                ms(f.shutdown)
            ),
        );
    }
    if longest > HEARTBEAT_TTRQ + HEARTBEAT_INTERVAL + secs(3) && case.periods.len() == 1 {
        check(
            f.shutdown.is_some_and(|d| d <= SHUTDOWN_BOUND),
            format!(
                "critical shutdown {} s after the cut, bound {} s",
                ms(f.shutdown),
                SHUTDOWN_BOUND.as_secs()
            ),
        );
    }
    out
}

/// Timing bounds hold for the build operators run: in a debug build the
/// test is left out (`scripts/test.sh` runs it with `--release`).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "timing test: cargo test --release -p holdfast --test real_partitions"
)]
fn partitions_heal_within_seconds_and_lose_nothing() {
    remove_leftovers();
    // HOLDFAST_PARTITION_CASES=name,name runs only those cases.
    let only = std::env::var("HOLDFAST_PARTITION_CASES").unwrap_or_default();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| only.is_empty() || only.split(',').any(|n| n == c.name))
        .collect();
    assert!(
        !cases.is_empty(),
        "no case named in HOLDFAST_PARTITION_CASES={only}"
    );
    let handles: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let case = Case {
                name: case.name,
                cut: case.cut,
                periods: case.periods.clone(),
            };
            std::thread::Builder::new()
                .name(case.name.into())
                .spawn(move || run_case(i, &case))
                .expect("thread")
        })
        .collect();
    let mut problems = Vec::new();
    // The figures for the simulator's calibration (sim/tests/calibration.rs),
    // rewritten by every run.
    let figures_file =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("calibration/real-partitions.jsonl");
    if let Some(dir) = figures_file.parent() {
        std::fs::create_dir_all(dir).expect("calibration folder");
    }
    std::fs::write(&figures_file, "").expect("calibration figures file");
    eprintln!("case              cut s  shutdown s  heal->first delivery s  heal->resume s  accepted  rejected  unknown");
    for (case, h) in cases.iter().zip(handles) {
        match h.join() {
            Ok(Ok(f)) => {
                eprintln!(
                    "{:<17} {:>5}  {:>10}  {:>22}  {:>14}  {:>8}  {:>8}  {:>7}",
                    f.name,
                    f.cut_secs,
                    ms(f.shutdown),
                    ms(f.first_delivery),
                    ms(f.resume),
                    f.accepted,
                    f.rejected,
                    f.unknown
                );
                let line = format!(
                    "{{\"case\":\"{}\",\"cut_secs\":{},\"shutdown_secs\":{},\"first_delivery_secs\":{},\"resume_secs\":{},\"accepted\":{},\"rejected\":{},\"unknown\":{},\"lost\":{},\"duplicated\":{},\"duplicates_dropped\":{}}}",
                    f.name,
                    f.cut_secs,
                    json(f.shutdown),
                    json(f.first_delivery),
                    json(f.resume),
                    f.accepted,
                    f.rejected,
                    f.unknown,
                    f.lost.len(),
                    f.duplicated.len(),
                    f.duplicates_dropped
                        .map_or_else(|| "null".to_string(), |n| n.to_string())
                );
                println!("{line}");
                let appended = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&figures_file)
                    .and_then(|mut file| writeln!(file, "{line}"));
                if let Err(e) = appended {
                    problems.push(format!("{}: {}: {e}", f.name, figures_file.display()));
                }
                problems.extend(failures(&f, case));
            }
            Ok(Err(e)) => problems.push(format!("{}: {e}", case.name)),
            Err(_) => problems.push(format!("{}: panicked", case.name)),
        }
    }
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{PREFIX}{}c", std::process::id())))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn json(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64()))
        .unwrap_or_else(|| "null".into())
}

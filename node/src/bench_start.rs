//! `holdfast bench-start`: what a restart costs against the size of the
//! store — a database node over archives of 0, 1 M and 10 M rows, a chat
//! store over 0, 100 k and 1 M posts — measured on a real node process.
//!
//! For each size the store is built once (and reused from `--dir` on the
//! next run): opened with the node's own code, so the schema is exactly
//! the node's, then filled with synthetic rows straight through SQLite.
//! A node is started on it alone; the figures are the time from spawning
//! the process to its `/readyz` answering 200, then the resident memory
//! (VmRSS) after a few idle seconds and its peak (VmHWM) since start.
//!
//! The bounds a store must meet to be called cheap to restart: started in
//! under [`START_BOUND_S`] and under [`RSS_BOUND_MIB`] resident at idle.

use crate::archive_db::ArchiveDb;
use crate::bench_error::BenchError;
use crate::chat_db::ChatDb;
use crate::cluster_up::{free_port, last_lines, spawn_node};
use crate::config::Config;
use crate::path_error::PathError;
use holdfast_actors::chat::chat_store::{prefixed, CHAT_FOLLOWS, CHAT_ROOM};
use holdfast_actors::core::actor::StoreOp;
use holdfast_actors::core::ids::UserId;
use holdfast_actors::core::protocol::chat::{Privacy, Room};
use holdfast_actors::core::store_keys as keys;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A store starts cheaply if its node is ready within this many seconds…
pub const START_BOUND_S: f64 = 2.0;
/// … and stays under this many MiB resident at idle.
pub const RSS_BOUND_MIB: f64 = 100.0;

/// How long the node idles by default after it is ready before its
/// memory is read: what start-up allocated and freed is returned by then,
/// what it keeps is not.
pub const IDLE: Duration = Duration::from_secs(3);

/// Users that send and post (a few thousand), and chat rooms.
const USERS: u64 = 3000;
const ROOMS: u64 = 300;
/// Synthetic times spread over 14 days from this moment (ms since the
/// epoch, 2026-06-01): fixed, so that a store rebuilt is the same store.
const EPOCH_MS: u64 = 1_780_272_000_000;
const SPAN_MS: u64 = 14 * 24 * 3600 * 1000;
/// Rows per fill transaction.
const FILL_BATCH: u64 = 100_000;

#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Archive sizes (rows) to measure a database node on.
    pub rows: Vec<u64>,
    /// Chat store sizes (posts) to measure a chat store on.
    pub posts: Vec<u64>,
    /// Where the stores are built and kept, one folder per size.
    pub dir: PathBuf,
    /// How long a node may take to become ready before it counts as failed.
    pub timeout: Duration,
    /// How long a ready node idles before its memory is read ([`IDLE`]).
    pub idle: Duration,
    /// Say on stderr what is being built and started.
    pub progress: bool,
}

/// One node started on one store.
#[derive(Clone, Debug, Serialize)]
pub struct StartFigure {
    /// Archive rows or chat posts in the store.
    #[serde(skip)]
    pub size: u64,
    /// The size, as archive rows (a database node) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// ... or as chat posts (a chat store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posts: Option<u64>,
    /// Spawn → `/readyz` 200, in seconds.
    pub start_s: f64,
    /// VmRSS after idling ([`IDLE`] unless told otherwise), MiB.
    pub rss_mib: f64,
    /// VmHWM (the peak resident set since the process started), MiB.
    pub peak_mib: f64,
    /// The SQLite file, MiB.
    pub file_mib: f64,
    /// Seconds it took to build the store, 0 when reused from the folder.
    pub build_s: f64,
    /// What the node's `/metrics` said the store holds once started (it
    /// counts without reading the rows): must equal the size.
    pub reported: Option<u64>,
    /// Started under [`START_BOUND_S`], idle under [`RSS_BOUND_MIB`], and
    /// reporting the store's size.
    pub within_bounds: bool,
    /// Why the node was stopped before it was ready (too slow, or taking
    /// the machine's memory): then `start_s` and the memory figures are
    /// those at the moment it was stopped, lower bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StartReport {
    pub bench: &'static str,
    pub start_bound_s: f64,
    pub rss_bound_mib: f64,
    /// A database node per archive size (`size` is rows).
    pub archive: Vec<StartFigure>,
    /// A chat store per size (`size` is posts).
    pub chat: Vec<StartFigure>,
}

/// Which store a figure is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Archive,
    Chat,
}

impl Store {
    fn folder(self, size: u64) -> String {
        match self {
            Store::Archive => format!("archive-{size}"),
            Store::Chat => format!("chat-{size}"),
        }
    }
    fn file(self) -> &'static str {
        match self {
            Store::Archive => "archive.sqlite",
            Store::Chat => "chat.sqlite",
        }
    }
    fn config_file(self) -> &'static str {
        match self {
            Store::Archive => "archive.toml",
            Store::Chat => "chat.toml",
        }
    }
    fn node(self) -> &'static str {
        match self {
            Store::Archive => "db1",
            Store::Chat => "chatdb",
        }
    }
}

pub fn run(opts: &StartOptions) -> Result<StartReport, BenchError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| PathError::new(&opts.dir, e))?;
    let mut report = StartReport {
        bench: "start",
        start_bound_s: START_BOUND_S,
        rss_bound_mib: RSS_BOUND_MIB,
        archive: Vec::new(),
        chat: Vec::new(),
    };
    for &rows in &opts.rows {
        report.archive.push(measure(opts, Store::Archive, rows)?);
    }
    for &posts in &opts.posts {
        report.chat.push(measure(opts, Store::Chat, posts)?);
    }
    Ok(report)
}

fn say(opts: &StartOptions, what: String) {
    if opts.progress {
        eprintln!("{what}");
    }
}

/// Builds (or reuses) the store of `size`, starts a node on it, measures.
fn measure(opts: &StartOptions, store: Store, size: u64) -> Result<StartFigure, BenchError> {
    let data = opts.dir.join(store.folder(size));
    let file = data.join(store.file());
    let mut build_s = 0.0;
    if !file.is_file() {
        say(opts, format!("building {} ...", data.display()));
        let t = Instant::now();
        build(store, size, &data)?;
        build_s = t.elapsed().as_secs_f64();
        say(opts, format!("  built in {build_s:.1} s"));
    }
    let file_mib = mib(std::fs::metadata(&file)?.len());
    let (config, metrics) = node_config(opts, store, &data)?;
    say(opts, format!("starting a {} node on {size}", store.node()));
    let gauge = match store {
        Store::Archive => "holdfast_archived_rows",
        Store::Chat => "holdfast_chat_posts",
    };
    let s = start_node(&config, store.node(), metrics, gauge, opts)?;
    if let Some(why) = &s.stopped {
        say(opts, format!("  {why}"));
    }
    Ok(StartFigure {
        size,
        rows: (store == Store::Archive).then_some(size),
        posts: (store == Store::Chat).then_some(size),
        start_s: s.start_s,
        rss_mib: s.rss_mib,
        peak_mib: s.peak_mib,
        file_mib,
        build_s,
        within_bounds: s.stopped.is_none()
            && s.start_s < START_BOUND_S
            && s.rss_mib < RSS_BOUND_MIB
            && s.reported == Some(size),
        reported: s.reported,
        stopped: s.stopped,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A config with the one node to start (and, for the chat store, the
/// Channel and Lookup nodes a chat pool must name; they are not started).
/// Its data folder is the store's folder. Plain links: nothing is sent.
fn node_config(
    opts: &StartOptions,
    store: Store,
    data: &Path,
) -> Result<(Config, SocketAddr), BenchError> {
    let mut ports = Vec::new();
    while ports.len() < 4 {
        let p = free_port()?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let metrics: SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    let mut text = format!(
        "[cluster]\ndomain = \"corp.example\"\nlinks = \"plain\"\n\n\
         [[node]]\nname = \"{}\"\nroles = [\"{}\"]\nlisten = \"127.0.0.1:{}\"\n\
         metrics = \"{metrics}\"\ndata = {}\n",
        store.node(),
        match store {
            Store::Archive => "database",
            Store::Chat => "chat_store",
        },
        ports[0],
        quoted(data),
    );
    if store == Store::Chat {
        text += &format!(
            "\n[[node]]\nname = \"ch1\"\nroles = [\"channel\"]\nlisten = \"127.0.0.1:{}\"\n\
             \n[[node]]\nname = \"lk1\"\nroles = [\"lookup\"]\nlisten = \"127.0.0.1:{}\"\n",
            ports[2], ports[3]
        );
    }
    let path = opts.dir.join(store.config_file());
    std::fs::write(&path, text).map_err(|e| PathError::new(&path, e))?;
    let config = Config::load(&path)?;
    Ok((config, metrics))
}

/// What one node start measured.
struct Started {
    start_s: f64,
    rss_mib: f64,
    peak_mib: f64,
    /// Why the node was stopped before it was ready, if it was.
    stopped: Option<String>,
    /// The rows (posts) the node's `/metrics` said the store holds.
    reported: Option<u64>,
}

/// The share of the machine's memory left to others: a node that would
/// take more before it is ready (a large store read whole) is stopped
/// rather than left to exhaust the machine, and reported as stopped.
const MEMORY_LEFT: f64 = 0.25;

/// `MemAvailable` and `MemTotal` from `/proc/meminfo`, MiB.
fn memory() -> Option<(f64, f64)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some((
        kib_field(&info, "MemAvailable:")?,
        kib_field(&info, "MemTotal:")?,
    ))
}

/// A `Name:   1234 kB` field of a `/proc` file, in MiB.
fn kib_field(text: &str, field: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|k| k as f64 / 1024.0)
}

/// The node's resident memory now and its peak (VmRSS, VmHWM), MiB.
fn node_memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        kib_field(&status, "VmRSS:").unwrap_or(0.0),
        kib_field(&status, "VmHWM:").unwrap_or(0.0),
    )
}

/// Starts the node, waits until it is ready, idles, reads its memory and
/// stops it.
///
/// "Started and serving" is `/readyz` answering 200. For a database node
/// and a chat store that means every core of the node has started on its
/// opened store (each has recovered what it needs from SQLite): neither
/// role names a peer it needs, so readiness waits for no other node. The
/// metrics server itself answers before the stores are open; a 503 is
/// polled through.
fn start_node(
    config: &Config,
    name: &str,
    metrics: SocketAddr,
    gauge: &str,
    opts: &StartOptions,
) -> Result<Started, BenchError> {
    let exe = std::env::current_exe()?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(1))
        .build();
    let url = format!("http://{metrics}/readyz");
    let t0 = Instant::now();
    let mut node = spawn_node(&exe, config, name)?;
    let pid = node.child.id();
    let stopped = loop {
        if let Ok(resp) = agent.get(&url).call() {
            if resp.status() == 200 {
                break None;
            }
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            return Err(BenchError::NotReady {
                name: name.to_string(),
                status,
                log_end: last_lines(&node.own_log(), 8),
            });
        }
        if t0.elapsed() > opts.timeout {
            break Some(format!("not ready after {} s", opts.timeout.as_secs()));
        }
        if let Some((available, total)) = memory() {
            if available < total * MEMORY_LEFT {
                break Some(format!(
                    "stopped before it was ready: {available:.0} MiB of the machine's \
                     {total:.0} MiB left"
                ));
            }
        }
        // Fine steps while a small store may be about to be ready; then
        // fewer requests, not to compete with the node for the cores.
        let step = if t0.elapsed() < Duration::from_secs(1) {
            5
        } else {
            50
        };
        std::thread::sleep(Duration::from_millis(step));
    };
    let start_s = t0.elapsed().as_secs_f64();
    if stopped.is_none() {
        std::thread::sleep(opts.idle);
    }
    let (rss_mib, peak_mib) = node_memory(pid);
    let reported = stopped
        .is_none()
        .then(|| reported_size(&agent, metrics, gauge))
        .flatten();
    if !node.stop(Duration::from_secs(30)) {
        tracing::warn!(node = name, "did not stop within 30 s of SIGTERM: killed");
    }
    Ok(Started {
        start_s,
        rss_mib,
        peak_mib,
        stopped,
        reported,
    })
}

/// The value of the gauge `name` on the node's `/metrics` (the count the
/// node reads from its engine at start, without reading the rows).
/// The node publishes its gauges every second: asked for up to 5 s.
pub(crate) fn reported_size(agent: &ureq::Agent, metrics: SocketAddr, name: &str) -> Option<u64> {
    let asked = Instant::now();
    loop {
        let text = agent
            .get(&format!("http://{metrics}/metrics"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        let value = text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        match value {
            Some(v) => return Some(v as u64),
            None if asked.elapsed() > Duration::from_secs(5) => return None,
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Builds the store of `size` in `<data>.part` and renames it to `data`
/// once complete: a folder under its final name is a whole store.
fn build(store: Store, size: u64, data: &Path) -> Result<(), BenchError> {
    let part = data.with_extension("part");
    if part.exists() {
        std::fs::remove_dir_all(&part).map_err(|e| PathError::new(&part, e))?;
    }
    let file = part.join(store.file());
    match store {
        Store::Archive => fill_archive(&file, size),
        Store::Chat => fill_chat(&file, size),
    }
    .map_err(|e| BenchError::Build {
        file: file.clone(),
        source: Box::new(e),
    })?;
    std::fs::rename(&part, data).map_err(|e| PathError::new(data, e).into())
}

/// A body of about 200 bytes (150 to 250), cut from a fixed text.
fn body(rng: &mut SmallRng) -> &'static str {
    const TEXT: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do \
        eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, \
        quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. \
        Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu \
        fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa \
        qui officia deserunt mollit anim id est laborum.";
    let len = rng.gen_range(150..=250);
    let at = rng.gen_range(0..TEXT.len() - len);
    &TEXT[at..at + len]
}

fn user(rng: &mut SmallRng) -> String {
    format!("user{}@corp.example", rng.gen_range(1..=USERS))
}

/// The `i`-th of `n` moments spread over the 14 days, in order.
fn moment(i: u64, n: u64, rng: &mut SmallRng) -> u64 {
    EPOCH_MS + i * (SPAN_MS / n.max(1)) + rng.gen_range(0..1000)
}

/// Drops the secondary indexes of the store's tables (not the unique
/// ones), returning their `CREATE` statements as the node wrote them, to
/// be run again after the fill: one sort per index instead of millions of
/// scattered insertions.
fn take_indexes(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")?;
    let found: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (name, _) in &found {
        conn.execute_batch(&format!("DROP INDEX \"{name}\""))?;
    }
    Ok(found.into_iter().map(|(_, sql)| sql).collect())
}

/// A connection for the fill. The schema is the node's already; the fill
/// alone runs with `synchronous = OFF` and no journal, which a node never
/// does: a crash mid-fill leaves a broken file, but it is in the `.part`
/// folder and built again from scratch. The file goes back to WAL (what
/// the node expects) before it is closed.
fn fill_connection(file: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(file)?;
    conn.pragma_update(None, "journal_mode", "OFF")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -512 * 1024)?;
    Ok(conn)
}

fn finish_fill(conn: rusqlite::Connection, indexes: &[String]) -> rusqlite::Result<()> {
    for sql in indexes {
        conn.execute_batch(sql)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.close().map_err(|(_, e)| e)
}

/// Fills a new archive at `file` with `rows` synthetic rows, spread over
/// 14 days from 2026-06-01 (so older than any retention window a cluster
/// has today), its kept row count set to match.
pub(crate) fn fill_archive(file: &Path, rows: u64) -> Result<(), BenchError> {
    // The node's own code creates the file and its schema.
    drop(ArchiveDb::open(file)?);
    let mut conn = fill_connection(file)?;
    let indexes = take_indexes(&conn)?;
    let mut rng = SmallRng::seed_from_u64(rows);
    let mut next = 1;
    while next <= rows {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO messages (rowid, message_id, kind, from_user, to_user, time, \
                     body, external, front_end, archived_at, client_id) \
                     VALUES (?1, ?2, 'im', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let end = rows.min(next + FILL_BATCH - 1);
            for rowid in next..=end {
                let fe = if rng.gen_bool(0.5) { "fe1" } else { "fe2" };
                let time = moment(rowid, rows, &mut rng);
                insert.execute(rusqlite::params![
                    rowid,
                    format!("{fe}-{rowid:012x}"),
                    user(&mut rng),
                    user(&mut rng),
                    time,
                    body(&mut rng),
                    rng.gen_bool(0.1),
                    fe,
                    time + rng.gen_range(20..500),
                    format!("c{:08x}", rng.gen::<u32>()),
                ])?;
            }
            next = end + 1;
        }
        tx.commit()?;
    }
    // The archive keeps its row count in `counts`, moved by every
    // transaction of the node; rows filled behind its back are counted once.
    conn.execute(
        "UPDATE counts SET n = (SELECT COUNT(*) FROM messages) WHERE name = 'messages'",
        [],
    )?;
    finish_fill(conn, &indexes)?;
    // And the node's code opens what was built.
    ArchiveDb::open(file)?;
    Ok(())
}

fn fill_chat(file: &Path, posts: u64) -> Result<(), BenchError> {
    let mut rng = SmallRng::seed_from_u64(posts);
    // The node's own code creates the file and its schema, and writes the
    // rooms (with their memberships) and the users' follows as the chat
    // store core does.
    let mut db = ChatDb::open(file)?;
    let room_name = |r: u64| format!("room-{r:03}");
    let mut ops = Vec::new();
    for r in 0..ROOMS {
        let members: BTreeSet<UserId> = (0..30).map(|_| user(&mut rng).into()).collect();
        let room = Room {
            managers: members.iter().take(1).cloned().collect(),
            members,
            privacy: if r % 3 == 0 {
                Privacy::Open
            } else {
                Privacy::Closed
            },
            description: format!("synthetic room {r}"),
            version: r + 1,
            ..Room::default()
        };
        ops.push(StoreOp::Put {
            key: prefixed(CHAT_ROOM, &room_name(r)),
            value: keys::encode(&room),
        });
    }
    for u in 1..=USERS {
        let rooms: BTreeSet<String> = (0..3).map(|_| room_name(rng.gen_range(0..ROOMS))).collect();
        ops.push(StoreOp::Put {
            key: prefixed(CHAT_FOLLOWS, &format!("user{u}@corp.example")),
            value: keys::encode(&rooms),
        });
    }
    db.apply(&ops).map_err(BenchError::Store)?;
    drop(db);
    let mut conn = fill_connection(file)?;
    let indexes = take_indexes(&conn)?;
    // Post j goes to room j mod ROOMS as that room's next post: every
    // room's seq runs 1, 2, 3, ... without a gap.
    let mut next = 0;
    while next < posts {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO posts (room, seq, post_id, author, text, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let end = posts.min(next + FILL_BATCH);
            for j in next..end {
                insert.execute(rusqlite::params![
                    room_name(j % ROOMS),
                    j / ROOMS + 1,
                    format!("p{j:012x}"),
                    user(&mut rng),
                    body(&mut rng),
                    moment(j, posts, &mut rng),
                ])?;
            }
            next = end;
        }
        tx.commit()?;
    }
    finish_fill(conn, &indexes)?;
    ChatDb::open(file)?;
    Ok(())
}

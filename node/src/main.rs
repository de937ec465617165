//! `holdfast`: run cluster nodes, send traffic, query the archive, watch
//! the cluster — and document the settings and inspect stores offline.

use clap::{Args, Parser, Subcommand};
use holdfast::archive_db::{ArchiveDb, Query};
use holdfast::client::{self, Client, Outcome};
use holdfast::config::{Config, Role};
use holdfast_actors::core::identity::{Principal, Role as PrincipalRole};
use holdfast_actors::core::protocol::chat::{Privacy, Room, RoomQuery};
use holdfast_actors::core::protocol::{Im, Msg, QueueItem};
use holdfast_actors::core::settings;
use holdfast_actors::core::store_keys::{self, DB_ROW, DQ_NEXT, DQ_RECORD, OQ_ACKED, OQ_RECORD};
use holdfast_host::store::replay_log;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "holdfast: compliance-grade IM archiving"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The cluster configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "cluster.toml",
        env = "HOLDFAST_CONFIG"
    )]
    config: PathBuf,
    /// The folder of users' credentials (`<user>.pem`, `<user>.key`) that
    /// clients present on TLS links (default: the `users` folder of the
    /// config's certs).
    #[arg(long, env = "HOLDFAST_CREDENTIALS")]
    credentials: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of the cluster until SIGTERM or Ctrl-C.
    Node {
        #[command(flatten)]
        config: ConfigArg,
        /// The node's name in the config.
        #[arg(long)]
        name: String,
    },
    /// Manage a whole cluster on this machine.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Certificates for mutual TLS between nodes.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Send instant messages.
    Im {
        #[command(subcommand)]
        cmd: ImCmd,
    },
    /// Generate IM traffic at a fixed rate and report the outcome.
    Load {
        #[command(flatten)]
        config: ConfigArg,
        /// IMs per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to send, e.g. 10s, 2m.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// How long to wait for each answer.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Body size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Write every IM's outcome as JSON lines to this file.
        #[arg(long)]
        outcomes: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure end-to-end archived IM/s and latency on a loopback cluster
    /// (real processes, fsync on, SQLite).
    Bench {
        /// Offered IMs per second.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// "tls" or "plain".
        #[arg(long, default_value = "tls")]
        links: String,
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Extra settings, e.g. --set transfer_window=1024 (repeatable).
        #[arg(long = "set")]
        set: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The Compliance service: status, or export now.
    Compliance {
        #[command(subcommand)]
        cmd: ComplianceCmd,
    },
    /// Persistent group chat: rooms, posts, history.
    Chat {
        #[command(subcommand)]
        cmd: ChatCmd,
    },
    /// Files posted to chat rooms (through the Web service).
    File {
        #[command(subcommand)]
        cmd: FileCmd,
    },
    /// Read the archive.
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
    /// Records the archive database refused for good, kept aside by the
    /// archiving servers.
    Parked {
        #[command(subcommand)]
        cmd: ParkedCmd,
    },
    /// Per front end: queue depth, quota use, link health, critical mode.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print every setting with its default and meaning.
    Settings {
        /// As the Markdown table of docs/settings.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Read a store log file offline and print what a restart would recover.
    InspectStore {
        /// A store log (`outgoing_queue.log`, `destination_queue.log`, `database.log`).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ParkedCmd {
    /// Every parked record: which archiving server holds it, the message,
    /// and why the database refused it. Reads the destination queue's log
    /// on this machine (as the node's user).
    ///
    /// Example: holdfast parked list -c cluster.toml --node arch1
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this archiving server (default: every one of the config).
        #[arg(long)]
        node: Option<String>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Start every node of the config as a child process on this machine
    /// (creating certificates if needed); Ctrl-C stops them.
    Up {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Make a user's credential (certificate and key, signed by the cluster
    /// CA) in the credentials folder: what a client presents to act as
    /// USER in ROLE.
    ///
    /// Example: holdfast certs user carol@corp.example --role auditor
    User {
        #[command(flatten)]
        config: ConfigArg,
        /// The user, e.g. alice@corp.example.
        user: String,
        /// user (IM and chat as itself), operator (compliance export and
        /// status) or auditor (compliance status).
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: PrincipalRole,
        /// Replace an existing credential of the user.
        #[arg(long)]
        force: bool,
    },
    /// Create a cluster CA and a certificate for every node of the config.
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace an existing CA (every node needs its new certificate).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum ImCmd {
    /// Send one IM and print whether the front end accepted it.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Message id (default: a fresh unique one).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// The message text.
        text: String,
    },
}

#[derive(Subcommand)]
enum ComplianceCmd {
    /// Staged events, the last batch and run, the last error (an operator
    /// or an auditor may ask).
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's or an auditor's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
    /// Export the staged events now instead of at the next interval (an
    /// operator may ask).
    RunNow {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
}

#[derive(Args, Clone)]
struct ChatUser {
    #[command(flatten)]
    config: ConfigArg,
    /// The user, e.g. alice@corp.example.
    #[arg(long)]
    user: String,
    /// Use this Channel server instead of asking Lookup.
    #[arg(long)]
    channel: Option<String>,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Who a room holds and how it is seen (for `chat create` and `chat manage`).
#[derive(Args, Clone, Default)]
struct RoomArgs {
    /// open (anyone its category allows), closed (members; others find it)
    /// or secret (members only, unlisted).
    #[arg(long)]
    privacy: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Invite new members (the room shows in their `chat invites`).
    #[arg(long)]
    invite: Option<bool>,
    /// Users to add as members (comma-separated; `user{1..5}@x` expands).
    #[arg(long, value_delimiter = ',')]
    members: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    managers: Vec<String>,
    /// Make it an auditorium where only these users post.
    #[arg(long, value_delimiter = ',')]
    presenters: Vec<String>,
    /// Users to wall off the room (an ethical wall).
    #[arg(long, value_delimiter = ',')]
    deny: Vec<String>,
}

#[derive(Subcommand)]
enum ChatCmd {
    /// Rooms the user is a member or manager of (`getassociations`).
    Rooms {
        #[command(flatten)]
        who: ChatUser,
    },
    /// Rooms whose name or description contains TEXT that the user may
    /// know of (`chansrch`).
    Search {
        #[command(flatten)]
        who: ChatUser,
        text: String,
    },
    /// Rooms the user is invited to and does not follow yet (`getinv`).
    Invites {
        #[command(flatten)]
        who: ChatUser,
    },
    /// Create a room in a category the user may create rooms in; the user
    /// manages it.
    Create {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        #[arg(long)]
        category: String,
        #[command(flatten)]
        spec: RoomArgs,
    },
    /// Change a room the user manages: add members, managers, presenters,
    /// walled-off users; set privacy, description, invitations.
    Manage {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        #[command(flatten)]
        spec: RoomArgs,
        /// Users to remove from members, managers and presenters.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// A room's description, members and the users in it now.
    Show {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
    },
    /// Join rooms: print their backchat, then new posts as they come (for
    /// `--for`, or until interrupted). `bjoin` when several are given.
    Join {
        #[command(flatten)]
        who: ChatUser,
        /// Rooms to join (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        room: Vec<String>,
        /// Stop after this long (e.g. 30s); default: until interrupted.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Follow a room (new content is signalled while not joined), or stop.
    Follow {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        #[arg(long)]
        stop: bool,
    },
    /// Post to a room; prints the post's sequence number once stored.
    Post {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        text: String,
    },
    /// A room's posts after a sequence number (default: the backchat).
    History {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        /// Posts after this sequence number (0: the last `chat_backchat`).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Subcommand)]
enum FileCmd {
    /// Upload a file to a room and post a message pointing to it.
    Upload {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        path: PathBuf,
    },
    /// Download a file of a room.
    Download {
        #[command(flatten)]
        who: ChatUser,
        #[arg(long)]
        room: String,
        /// The file id (from the upload, or the room's post).
        #[arg(long)]
        file: String,
        /// Where to write it (default: its name, in this folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ArchiveCmd {
    /// Archived messages of a user (as sender or recipient).
    Query {
        #[command(flatten)]
        config: ConfigArg,
        /// Sender or recipient.
        #[arg(long)]
        user: Option<String>,
        /// From this time: RFC 3339 (2026-11-22T10:00:00Z) or an age (10m, 2h).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Up to this time (exclusive), same forms.
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Text contained in the body (case-insensitive).
        #[arg(long)]
        text: Option<String>,
        /// The database node to read (default: the config's only one).
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
}

fn parse_role(s: &str) -> Result<PrincipalRole, String> {
    PrincipalRole::parse(s)
        .ok_or_else(|| format!("{s:?}: the roles are user, operator and auditor"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// RFC 3339 or an age before now, in ms since the UNIX epoch.
fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| e.to_string());
    }
    let age = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?}: expected RFC 3339 (2026-11-22T10:00:00Z) or an age (10m)"))?;
    Ok(holdfast::node::now_ms().saturating_sub(age.as_millis() as u64))
}

fn load_config(c: &ConfigArg) -> Result<Config, String> {
    let mut config = Config::load(&c.config).map_err(|e| e.to_string())?;
    if let Some(dir) = &c.credentials {
        config.credentials = dir.clone();
    }
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn inspect(file: &PathBuf) -> Result<(), Failure> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let replayed = replay_log(&bytes);
    let (state, valid) = (replayed.state, replayed.valid);
    if !bytes.is_empty() && valid == 0 && replayed.damage.is_empty() {
        return Err(Failure::Error(format!(
            "{}: not a store log (no batch in its {} bytes reads back)",
            file.display(),
            bytes.len()
        )));
    }
    println!(
        "{}: {} bytes, {} valid, {} keys",
        file.display(),
        bytes.len(),
        valid,
        state.len()
    );
    for d in &replayed.damage {
        println!(
            "  DAMAGED: {} bytes at offset {} (set aside in .damaged at the next open; the batches after it are read)",
            d.len, d.offset
        );
    }
    if replayed.damage.is_empty() && valid < bytes.len() as u64 {
        println!(
            "  torn tail of {} bytes (cut off at the next open)",
            bytes.len() as u64 - valid
        );
    }
    for (k, v) in &state {
        if let Some(seq) = store_keys::parse_u64(OQ_RECORD, k) {
            match store_keys::decode_item(v) {
                Ok(QueueItem::Record(r)) => println!(
                    "  queued seq {seq}: {} (client id {}) {} -> {}",
                    r.id, r.client_id, r.from, r.to
                ),
                Ok(QueueItem::Heartbeat { id, .. }) => {
                    println!("  queued seq {seq}: heartbeat {id}")
                }
                Ok(QueueItem::Tombstone) => println!("  queued seq {seq}: tombstone"),
                Err(e) => println!("  queued seq {seq}: UNDECODABLE ({e})"),
            }
        } else if k.as_slice() == OQ_ACKED {
            let n = <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes);
            println!("  acknowledged up to seq {n:?}");
        } else if let Some(key) = store_keys::parse_u64(DQ_RECORD, k) {
            match store_keys::decode_item(v) {
                Ok(QueueItem::Record(r)) => {
                    println!("  received {key}: {} from front end {}", r.id, r.front_end)
                }
                Ok(QueueItem::Heartbeat { id, front_end, .. }) => {
                    println!("  received {key}: heartbeat {id} from front end {front_end}")
                }
                Ok(QueueItem::Tombstone) => println!("  received {key}: tombstone"),
                Err(e) => println!("  received {key}: UNDECODABLE ({e})"),
            }
        } else if let Some(sender) = k.strip_prefix(DQ_NEXT) {
            let n = <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes);
            println!(
                "  next expected from {}: {n:?}",
                String::from_utf8_lossy(sender)
            );
        } else if let Some(key) = store_keys::parse_u64(store_keys::DQ_PARKED, k) {
            match store_keys::decode::<store_keys::Parked>(v) {
                Ok(p) => println!(
                    "  parked {key}: {} {} -> {}: {}",
                    p.record.id, p.record.from, p.record.to, p.reason
                ),
                Err(e) => println!("  parked {key}: UNDECODABLE ({e})"),
            }
        } else if let Some(rowid) = store_keys::parse_u64(DB_ROW, k) {
            match store_keys::decode::<store_keys::Row>(v) {
                Ok(r) => println!(
                    "  row {rowid}: {} {} -> {} archived at {} ms",
                    r.record.id, r.record.from, r.record.to, r.archived_at
                ),
                Err(e) => println!("  row {rowid}: UNDECODABLE ({e})"),
            }
        } else {
            println!("  {:?}: {} bytes", String::from_utf8_lossy(k), v.len());
        }
    }
    if !replayed.damage.is_empty() {
        return Err(Failure::NotWell(format!(
            "{} damaged stretches in {}",
            replayed.damage.len(),
            file.display()
        )));
    }
    Ok(())
}

fn archive_query(
    config: &Config,
    database: Option<String>,
    q: Query,
    json: bool,
) -> Result<(), String> {
    let dbs: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::Database))
        .filter(|n| database.as_ref().is_none_or(|d| *d == n.name))
        .collect();
    let node = match dbs.as_slice() {
        [one] => *one,
        [] => return Err(format!("no database node {}", database.unwrap_or_default())),
        _ => return Err("the config has several databases: choose one with --database".into()),
    };
    let db = ArchiveDb::open_read_only(&node.archive_path()).map_err(|e| e.to_string())?;
    let rows = db.query(&q).map_err(|e| e.to_string())?;
    for r in &rows {
        if json {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        } else {
            println!(
                "{}  {} -> {}  [{}]  {}",
                fmt_time(r.time),
                r.from,
                r.to,
                r.id,
                r.body
            );
        }
    }
    if !json {
        eprintln!("{} messages", rows.len());
    }
    Ok(())
}

/// `holdfast parked list`: the parked records of the config's archiving
/// servers, read from their destination queue logs.
fn parked_list(config: &Config, only: Option<&str>, json: bool) -> Result<(), String> {
    let servers: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::Archiver))
        .filter(|n| only.is_none_or(|o| o == n.name))
        .collect();
    if servers.is_empty() {
        return Err(match only {
            Some(o) => format!("{o} is not an archiving server of the config"),
            None => "the config has no archiving server".into(),
        });
    }
    let mut total = 0;
    for n in servers {
        let file = n.data.join(holdfast::node::store_file(
            holdfast_actors::core::ids::ActorKind::DestinationQueue,
        ));
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: cannot read: {e}", file.display())),
        };
        for entry in store_keys::parked_records(&replay_log(&bytes).state) {
            let (key, p) = entry.map_err(|e| format!("{}: {e}", file.display()))?;
            total += 1;
            let r = &p.record;
            if json {
                let line = serde_json::json!({
                    "node": n.name, "key": key, "parked_at": p.at, "reason": p.reason,
                    "id": r.id, "client_id": r.client_id, "kind": r.kind.as_str(),
                    "from": r.from, "to": r.to, "time": r.time, "front_end": r.front_end,
                });
                println!("{line}");
            } else {
                println!(
                    "{}  #{key}  parked {}  {} {} -> {}  [{}]  {}",
                    n.name,
                    fmt_time(p.at),
                    r.kind.as_str(),
                    r.from,
                    r.to,
                    r.id,
                    p.reason
                );
            }
        }
    }
    if !json {
        eprintln!("{total} parked records");
    }
    Ok(())
}

fn status(config: &Config) -> Result<(), Failure> {
    println!(
        "{:<10} {:>8} {:>12} {:>7} {:<10} {:<10} {:>10}",
        "front end", "depth", "bytes", "quota%", "link", "critical", "dead-letter"
    );
    let mut unreachable = 0;
    let mut not_well = 0;
    for fe in config.front_ends() {
        let Some(addr) = fe.metrics else {
            println!("{:<10} (no metrics address in the config)", fe.name);
            continue;
        };
        let text = match ureq::get(&format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(3))
            .call()
        {
            Ok(r) => r.into_string().map_err(|e| e.to_string())?,
            Err(e) => {
                println!("{:<10} unreachable ({e})", fe.name);
                unreachable += 1;
                continue;
            }
        };
        let samples = holdfast::metrics::parse(&text);
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v as u64)
        };
        let bytes = get("holdfast_outgoing_bytes").unwrap_or(0);
        let quota = get("holdfast_queue_quota_bytes").unwrap_or(0).max(1);
        if get("holdfast_link_failing") == Some(1) || get("holdfast_critical_shutdown") == Some(1) {
            not_well += 1;
        }
        println!(
            "{:<10} {:>8} {:>12} {:>6}% {:<10} {:<10} {:>10}",
            fe.name,
            get("holdfast_outgoing_depth").unwrap_or(0),
            bytes,
            bytes * 100 / quota,
            if get("holdfast_link_failing") == Some(1) {
                "FAILING"
            } else {
                "healthy"
            },
            if get("holdfast_critical_shutdown") == Some(1) {
                "SHUT DOWN"
            } else {
                "accepting"
            },
            get("holdfast_dead_letter_depth").unwrap_or(0),
        );
    }
    if unreachable > 0 {
        return Err(Failure::Error(format!(
            "{unreachable} front ends unreachable"
        )));
    }
    if not_well > 0 {
        return Err(Failure::NotWell(format!(
            "{not_well} front ends with a failing link or shut down"
        )));
    }
    Ok(())
}

fn chat(cmd: ChatCmd) -> Result<(), String> {
    use holdfast::chat_client::ChatClient;
    match cmd {
        ChatCmd::Rooms { who } => print_rooms(&who, RoomQuery::Associations)?,
        ChatCmd::Search { who, text } => print_rooms(&who, RoomQuery::Search(text))?,
        ChatCmd::Invites { who } => print_rooms(&who, RoomQuery::Invitations)?,
        ChatCmd::Create {
            who,
            room,
            category,
            spec,
        } => {
            let info = Room {
                category,
                ..spec.apply(Room::default(), &[])?
            };
            let version =
                with_session(
                    &who,
                    |mut c| async move { c.save_room(&room, info, true).await },
                )?;
            println!("created (directory version {version})");
        }
        ChatCmd::Manage {
            who,
            room,
            spec,
            remove,
        } => {
            let version = with_session(&who, |mut c| async move {
                // Read, change, save; a concurrent change makes us retry.
                for _ in 0..5 {
                    let current = c.room(&room).await?;
                    let info = spec.apply(current, &remove)?;
                    match c.save_room(&room, info, false).await {
                        Err(e) if e.contains("changed meanwhile") => continue,
                        done => return done,
                    }
                }
                Err(format!(
                    "{room}: changed by others five times in a row; try again"
                ))
            })?;
            println!("saved (directory version {version})");
        }
        ChatCmd::Show { who, room } => {
            let (info, online) = with_session(&who, |mut c| async move {
                let info = c.room(&room).await?;
                let online = c.who(&room).await.unwrap_or_default();
                Ok((info, online))
            })?;
            println!(
                "{} room, category {:?}, {}{}",
                info.privacy.as_str(),
                info.category,
                if info.presenters.is_some() {
                    "auditorium"
                } else {
                    "normal"
                },
                if info.invite { ", invitations on" } else { "" }
            );
            if !info.description.is_empty() {
                println!("description: {}", info.description);
            }
            let list = |s: &std::collections::BTreeSet<String>| {
                s.iter().cloned().collect::<Vec<_>>().join(", ")
            };
            println!("managers:   {}", list(&info.managers));
            println!("members:    {}", list(&info.members));
            if let Some(p) = &info.presenters {
                println!("presenters: {}", list(p));
            }
            if !info.denied.is_empty() {
                println!("walled off: {}", list(&info.denied));
            }
            println!("online:     {}", online.join(", "));
        }
        ChatCmd::Join {
            who,
            room,
            duration,
        } => {
            let config = load_config(&who.config)?;
            runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                let mut seen = std::collections::BTreeMap::new();
                for (r, (posts, latest)) in c.bulk_join(&room).await? {
                    for (seq, p) in &posts {
                        println!("{r} #{seq}  {}  {}: {}", fmt_time(p.at), p.author, p.text);
                    }
                    eprintln!("joined {r} (at #{latest})");
                    seen.insert(r, latest);
                }
                let until = duration.map(|d| tokio::time::Instant::now() + d);
                while until.is_none_or(|u| tokio::time::Instant::now() < u) {
                    match c.next_post().await {
                        Some((seq, p)) => {
                            let last = seen.entry(p.room.clone()).or_insert(0);
                            if seq > *last {
                                *last = seq;
                                println!(
                                    "{} #{seq}  {}  {}: {}",
                                    p.room,
                                    fmt_time(p.at),
                                    p.author,
                                    p.text
                                );
                            }
                        }
                        // Quiet: sync, which keeps the session alive (the
                        // server closes silent ones) and fetches anything
                        // a lost relay held back.
                        None => {
                            for (r, after) in &seen {
                                c.sync(r, *after)?;
                            }
                        }
                    }
                }
                Ok::<(), String>(())
            })?;
        }
        ChatCmd::Follow { who, room, stop } => {
            let r = room.clone();
            with_session(&who, |mut c| async move { c.follow(&r, !stop).await })?;
            println!(
                "{} {room}",
                if stop {
                    "no longer following"
                } else {
                    "following"
                }
            );
        }
        ChatCmd::Post { who, room, text } => {
            let config = load_config(&who.config)?;
            let seq = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, 0).await?;
                c.post(&room, &text).await
            })?;
            println!("posted to {room} as #{seq}");
        }
        ChatCmd::History { who, room, after } => {
            let config = load_config(&who.config)?;
            let (posts, latest) = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, after).await
            })?;
            for (seq, p) in &posts {
                println!("#{seq}  {}  {}: {}", fmt_time(p.at), p.author, p.text);
            }
            eprintln!("{} posts shown; {room} is at #{latest}", posts.len());
        }
    }
    Ok(())
}

/// Connects as the user, opens a session and runs `f` with the client.
fn with_session<T, F, Fut>(who: &ChatUser, f: F) -> Result<T, String>
where
    F: FnOnce(holdfast::chat_client::ChatClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    use holdfast::chat_client::ChatClient;
    let config = load_config(&who.config)?;
    runtime()?.block_on(async {
        let mut c =
            ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout).await?;
        c.hello().await?;
        f(c).await
    })
}

fn print_rooms(who: &ChatUser, query: RoomQuery) -> Result<(), String> {
    let rooms = with_session(who, |mut c| async move { c.find(query).await })?;
    for r in &rooms {
        let role = match (r.manager, r.member) {
            (true, _) => ", manager",
            (false, true) => ", member",
            _ => "",
        };
        let cat = if r.category.is_empty() {
            String::new()
        } else {
            format!(", category {}", r.category)
        };
        println!(
            "{}  ({}{cat}{role})  {}",
            r.name,
            r.privacy.as_str(),
            r.description
        );
    }
    eprintln!("{} rooms", rooms.len());
    Ok(())
}

impl RoomArgs {
    /// `room` with these changes, and `remove` taken out of its lists.
    fn apply(&self, mut room: Room, remove: &[String]) -> Result<Room, String> {
        let users = |list: &[String]| -> Result<Vec<String>, String> {
            let mut out = Vec::new();
            for u in list {
                out.extend(holdfast::config::expand_users(u)?);
            }
            Ok(out)
        };
        if let Some(p) = &self.privacy {
            room.privacy = Privacy::parse(p)
                .ok_or_else(|| format!("--privacy {p:?}: one of open, closed, secret"))?;
        }
        if let Some(d) = &self.description {
            room.description = d.clone();
        }
        if let Some(i) = self.invite {
            room.invite = i;
        }
        room.members.extend(users(&self.members)?);
        room.managers.extend(users(&self.managers)?);
        room.denied.extend(users(&self.deny)?);
        if !self.presenters.is_empty() {
            room.presenters
                .get_or_insert_with(Default::default)
                .extend(users(&self.presenters)?);
        }
        for u in users(remove)? {
            room.members.remove(&u);
            room.managers.remove(&u);
            if let Some(p) = &mut room.presenters {
                p.remove(&u);
            }
        }
        Ok(room)
    }
}

fn file(cmd: FileCmd) -> Result<(), String> {
    use holdfast::chat_client::ChatClient;
    match cmd {
        FileCmd::Upload { who, room, path } => {
            let config = load_config(&who.config)?;
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{}: not a file", path.display()))?;
            let (id, size, seq) = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, 0).await?;
                let (id, size) = c.upload(&room, &name, data).await?;
                let seq = c
                    .post(
                        &room,
                        &format!("shared a file: {name} ({size} bytes), file id {id}"),
                    )
                    .await?;
                Ok::<_, String>((id, size, seq))
            })?;
            println!("uploaded {name} ({size} bytes) as {id}; posted to {room} as #{seq}");
        }
        FileCmd::Download {
            who,
            room,
            file,
            out,
        } => {
            let config = load_config(&who.config)?;
            let (name, data) = runtime()?.block_on(async {
                let mut c =
                    ChatClient::connect(&config, &who.user, who.channel.as_deref(), who.timeout)
                        .await?;
                c.join(&room, 0).await?;
                c.download(&room, &file).await
            })?;
            // Never let a stored name choose a path outside this folder.
            let safe = std::path::Path::new(&name)
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(&file));
            let out = out.unwrap_or(safe);
            std::fs::write(&out, &data).map_err(|e| format!("{}: {e}", out.display()))?;
            println!("downloaded {} bytes to {}", data.len(), out.display());
        }
    }
    Ok(())
}

/// Why a command did not end well. Exit codes: 0 when everything asked
/// for happened; 1 when the command ran but found something not well (a
/// front end failing or shut down, IMs not accepted, a failing export,
/// damage in a store); 2 when it could not do its job (a bad config or
/// file, a refusal, no connection).
enum Failure {
    /// Exit 2.
    Error(String),
    /// Exit 1.
    NotWell(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Node { config, name } => {
            let config = load_config(&config)?;
            holdfast::node::run(config, &name).map_err(|e| e.to_string())?;
        }
        Cmd::Cluster {
            cmd: ClusterCmd::Up { config },
        } => {
            // The certificate folder, the nodes' data folders and their
            // logs: private to the user, like what the nodes write.
            holdfast::file_disk::private_umask();
            holdfast::cluster_up::up(&load_config(&config)?)?;
        }
        Cmd::Certs {
            cmd:
                CertsCmd::User {
                    config,
                    user,
                    role,
                    force,
                },
        } => {
            holdfast::file_disk::private_umask();
            let config = load_config(&config)?;
            let principal = Principal::new(user, role);
            let files =
                holdfast::tls::issue_user(&config.certs, &config.credentials, &principal, force)
                    .map_err(|e| e.to_string())?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            println!(
                "{principal} presents these files (give them to the user; the key stays private)"
            );
        }
        Cmd::Certs {
            cmd: CertsCmd::Init { config, force },
        } => {
            holdfast::file_disk::private_umask();
            let config = load_config(&config)?;
            let files = holdfast::tls::certs_init(&config, force).map_err(|e| e.to_string())?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            if files.is_empty() {
                println!(
                    "every node already has a certificate in {}",
                    config.certs.display()
                );
            }
        }
        Cmd::Im {
            cmd:
                ImCmd::Send {
                    config,
                    from,
                    to,
                    id,
                    timeout,
                    text,
                },
        } => {
            let config = Arc::new(load_config(&config)?);
            let id = id.unwrap_or_else(|| client::new_id("im"));
            let outcome = runtime()?.block_on(async {
                let c = Client::new(config)?;
                c.send_im(
                    Im {
                        id: id.clone(),
                        from,
                        to,
                        body: text,
                    },
                    timeout,
                )
                .await
            })?;
            match outcome {
                Outcome::Accepted { at, message_id } => {
                    println!("accepted {id} as {message_id} at {}", fmt_time(at))
                }
                // Delivered, so not an error to retry; but never the
                // same line as "accepted": this one is not archived.
                Outcome::DeliveredNotArchived {
                    at,
                    message_id,
                    reason,
                } => println!(
                    "delivered {id} as {message_id} at {} but NOT ARCHIVED: {reason}",
                    fmt_time(at)
                ),
                Outcome::Rejected { reason } => {
                    return Err(format!("rejected {id}: {reason}").into())
                }
                Outcome::Unknown => {
                    return Err(format!(
                        "no answer for {id} within {}",
                        humantime::format_duration(timeout)
                    )
                    .into())
                }
            }
        }
        Cmd::Load {
            config,
            rate,
            duration,
            timeout,
            size,
            outcomes,
            json,
        } => {
            let config = Arc::new(load_config(&config)?);
            let (report, all) = runtime()?.block_on(async {
                let c = Arc::new(Client::new(config)?);
                client::load(c, rate, duration, timeout, size).await
            })?;
            if let Some(path) = outcomes {
                let mut text = String::new();
                for s in &all {
                    text.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
                    text.push('\n');
                }
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "sent {} in {:.1} s: accepted {}, rejected {}, no answer {}, delivered not archived {}",
                    report.sent,
                    report.seconds,
                    report.accepted,
                    report.rejected,
                    report.unknown,
                    report.delivered_not_archived
                );
                let [p50, p90, p99, max] = report.accept_us;
                println!("accept latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us");
                for (reason, n) in &report.reasons {
                    println!("  rejected {n}: {reason}");
                }
            }
            if report.accepted < report.sent {
                return Err(Failure::NotWell(format!(
                    "{} of {} IMs not accepted",
                    report.sent - report.accepted,
                    report.sent
                )));
            }
        }
        Cmd::Archive {
            cmd:
                ArchiveCmd::Query {
                    config,
                    user,
                    since,
                    until,
                    text,
                    database,
                    limit,
                    json,
                },
        } => {
            let config = load_config(&config)?;
            archive_query(
                &config,
                database,
                Query {
                    user,
                    since,
                    until,
                    text,
                    limit,
                },
                json,
            )?;
        }
        Cmd::Status { config } => status(&load_config(&config)?)?,
        Cmd::Chat { cmd } => chat(cmd)?,
        Cmd::Compliance { cmd } => {
            let (config, who, request) = match cmd {
                ComplianceCmd::Status { config, who } => (config, who, Msg::ComplianceStatusQuery),
                ComplianceCmd::RunNow { config, who } => (config, who, Msg::ComplianceRunNow),
            };
            let config = load_config(&config)?;
            let s = runtime()?.block_on(holdfast::compliance_client::ask(
                &config,
                &who,
                request,
                Duration::from_secs(10),
            ))?;
            println!("staged events: {}", s.staged);
            println!("last batch:    {}", s.last_batch);
            println!(
                "last run:      {}",
                if s.last_run == 0 {
                    "none since the service started".to_string()
                } else {
                    fmt_time(s.last_run)
                }
            );
            println!("filtered out:  {}", s.filtered);
            println!(
                "last error:    {}",
                s.last_error.as_deref().unwrap_or("none")
            );
            // Cleared by the next export that succeeds: the export is
            // failing now.
            if let Some(e) = s.last_error {
                return Err(Failure::NotWell(format!("the export is failing: {e}")));
            }
        }
        Cmd::File { cmd } => file(cmd)?,
        Cmd::Bench {
            rate,
            duration,
            links,
            size,
            set,
            json,
        } => {
            if links != "tls" && links != "plain" {
                return Err(format!("--links {links:?}: expected tls or plain").into());
            }
            let opts = holdfast::bench::BenchOptions {
                rate,
                duration,
                links,
                body_size: size,
                settings: set.join("\n"),
            };
            let r = holdfast::bench::run(&opts)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "offered {} IM/s for {} over {} links, {} byte bodies",
                    r.offered_rate,
                    humantime::format_duration(duration),
                    r.links,
                    size
                );
                println!(
                    "sent {}: accepted {}, rejected {}, no answer {}",
                    r.sent, r.accepted, r.rejected, r.unknown
                );
                println!(
                    "accepted: {:.0} IM/s; archived: {} = {:.0} IM/s end to end",
                    r.accepted_per_s, r.archived, r.archived_per_s
                );
                let [a50, a99, amax] = r.accept_us;
                let [r50, r99, rmax] = r.archive_ms;
                println!("send -> accepted: p50 {a50} us, p99 {a99} us, max {amax} us");
                println!("send -> archived: p50 {r50} ms, p99 {r99} ms, max {rmax} ms");
            }
        }
        Cmd::Settings { markdown: true } => print!("{}", settings::settings_markdown()),
        Cmd::Settings { markdown: false } => {
            for (name, default, doc) in settings::SETTINGS_DOC {
                println!("{name} = {default}\n    {doc}");
            }
        }
        Cmd::InspectStore { file } => inspect(&file)?,
        Cmd::Parked {
            cmd: ParkedCmd::List { config, node, json },
        } => parked_list(&load_config(&config)?, node.as_deref(), json)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::NotWell(e)) => {
            eprintln!("not well: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Error(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

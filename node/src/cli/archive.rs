//! `holdfast archive query`: archived messages, read from the database.

use super::common::{
    fmt_time, load_config, parse_duration, parse_time, printable, ConfigArg, Failure,
};
use clap::Subcommand;
use holdfast::archive_db::{ArchiveDb, Query};
use holdfast::config::{Config, NodeConfig as Node, Role, StoreEngine};
use std::path::Path;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum ArchiveCmd {
    /// Archived messages of a user (as sender or recipient).
    #[command(
        after_help = "Example: holdfast archive query -c cluster.toml --user alice@corp.example --since 10m"
    )]
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
        /// At most this many messages (the earliest ones).
        #[arg(long)]
        limit: Option<usize>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
        /// First wait until the message with this id (the one `im send`
        /// printed, or the id the front end assigned) is archived: an
        /// accepted IM reaches the archive a moment later. Exits 1 if it
        /// is not archived within --timeout.
        #[arg(long, value_name = "ID")]
        wait: Option<String>,
        /// How long --wait waits.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

pub(crate) fn run(cmd: ArchiveCmd) -> Result<(), Failure> {
    match cmd {
        ArchiveCmd::Query {
            config,
            user,
            since,
            until,
            text,
            database,
            limit,
            json,
            wait,
            timeout,
        } => {
            let config = load_config(&config)?;
            let node = database_node(&config, database)?;
            if let StoreEngine::Postgres(target) = &node.archive_engine {
                return Err(Failure::Error(format!(
                    "{}'s archive is in PostgreSQL ({}): query its messages table there \
                     (psql, or any SQL client)",
                    node.name,
                    target.redacted()
                )));
            }
            if let Some(id) = wait {
                wait_archived(&node.archive_path(), &id, timeout)?;
            }
            archive_query(
                node,
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
    }
    Ok(())
}

fn database_node(config: &Config, database: Option<String>) -> Result<&Node, String> {
    let dbs: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::Database))
        .filter(|n| database.as_ref().is_none_or(|d| *d == n.name))
        .collect();
    match dbs.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("no database node {}", database.unwrap_or_default())),
        _ => Err("the config has several databases: choose one with --database".into()),
    }
}

/// Polls the archive until it holds `id`, up to `timeout`: not well (exit
/// 1) if it does not by then.
fn wait_archived(path: &Path, id: &str, timeout: Duration) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // The database node creates its file on first start: until then
        // there is nothing archived to find.
        if path.exists() {
            let db = ArchiveDb::open_read_only(path).map_err(|e| e.to_string())?;
            if db.holds(id).map_err(|e| e.to_string())? {
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure::NotWell(format!(
                "{id} is not in the archive after {}",
                humantime::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn archive_query(node: &Node, q: Query, json: bool) -> Result<(), String> {
    let db = ArchiveDb::open_read_only(&node.archive_path()).map_err(|e| e.to_string())?;
    let rows = db.query(&q).map_err(|e| e.to_string())?;
    for r in &rows {
        if json {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        } else {
            println!(
                "{}  {} -> {}  [{}]  {}",
                fmt_time(r.time),
                printable(&r.from),
                printable(&r.to),
                r.id,
                printable(&r.body)
            );
        }
    }
    if !json {
        let n = rows.len();
        eprintln!("{n} {}", if n == 1 { "message" } else { "messages" });
    }
    Ok(())
}

//! `holdfast archive query`: archived messages, read from the database.

use super::common::{fmt_time, load_config, parse_time, printable, ConfigArg, Failure};
use clap::Subcommand;
use holdfast::archive_db::{ArchiveDb, Query};
use holdfast::config::{Config, Role};

#[derive(Subcommand)]
pub(crate) enum ArchiveCmd {
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
                printable(&r.from),
                printable(&r.to),
                r.id,
                printable(&r.body)
            );
        }
    }
    if !json {
        eprintln!("{} messages", rows.len());
    }
    Ok(())
}

//! `holdfast`: the production command-line tool.
//!
//! Today it documents the settings and inspects durable stores offline; the
//! production node runtime (actix hosts, TLS links) builds on the same
//! cores and host crates.

use clap::{Parser, Subcommand};
use holdfast_actors::settings;
use holdfast_actors::store_keys::{self, DB_ROW, DQ_NEXT, DQ_RECORD, OQ_ACKED, OQ_RECORD};
use holdfast_host::store::replay;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "holdfast: compliance-grade IM archiving"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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

fn inspect(file: &PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let (state, valid) = replay(&bytes);
    println!(
        "{}: {} bytes, {} valid, {} keys",
        file.display(),
        bytes.len(),
        valid,
        state.len()
    );
    if valid < bytes.len() as u64 {
        println!(
            "  torn or corrupt tail of {} bytes (cut off at the next open)",
            bytes.len() as u64 - valid
        );
    }
    for (k, v) in &state {
        if let Some(seq) = store_keys::parse_u64(OQ_RECORD, k) {
            match store_keys::decode::<holdfast_actors::protocol::ArchiveRecord>(v) {
                Ok(r) => println!("  queued seq {seq}: {} {} -> {}", r.id, r.from, r.to),
                Err(e) => println!("  queued seq {seq}: UNDECODABLE ({e})"),
            }
        } else if k.as_slice() == OQ_ACKED {
            let n = <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes);
            println!("  acknowledged up to seq {n:?}");
        } else if let Some(key) = store_keys::parse_u64(DQ_RECORD, k) {
            match store_keys::decode::<holdfast_actors::protocol::ArchiveRecord>(v) {
                Ok(r) => println!("  received {key}: {} from front end {}", r.id, r.front_end),
                Err(e) => println!("  received {key}: UNDECODABLE ({e})"),
            }
        } else if let Some(sender) = k.strip_prefix(DQ_NEXT) {
            let n = <[u8; 8]>::try_from(v.as_slice()).map(u64::from_be_bytes);
            println!(
                "  next expected from {}: {n:?}",
                String::from_utf8_lossy(sender)
            );
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
    Ok(())
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Settings { markdown: true } => print!("{}", settings::settings_markdown()),
        Cmd::Settings { markdown: false } => {
            for (name, default, doc) in settings::SETTINGS_DOC {
                println!("{name} = {default}\n    {doc}");
            }
        }
        Cmd::InspectStore { file } => {
            if let Err(e) = inspect(&file) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

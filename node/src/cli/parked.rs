//! `holdfast parked list|retry|export`: the records the archive database
//! refused for good, kept aside by the archiving servers — seen, sent back
//! to the database once it takes them, or written out for an
//! investigation.

use super::common::{
    ask_as_operator, fmt_time, load_config, local_store_lines, print_listing, ConfigArg, Failure,
};
use clap::Subcommand;
use holdfast::config::{Config, Role};
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::{ArchivingMsg, Msg};
use holdfast_actors::core::store_keys;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum ParkedCmd {
    /// Every parked record: which archiving server holds it, the message,
    /// and why the database refused it. Reads the destination queue's log
    /// on this machine (as the node's user).
    #[command(after_help = "Example: holdfast parked list -c cluster.toml --node arch1")]
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
    /// Send parked records back to the database (once whatever refused
    /// them is fixed): each goes back into the archiving server's queue
    /// and is delivered again; one the database still refuses is parked
    /// again. Up to 1,000 per call (an operator may ask).
    #[command(after_help = "Example: holdfast parked retry -c cluster.toml --node arch1 --key 2")]
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        /// The archiving server holding them.
        #[arg(long)]
        node: String,
        /// Only these parked records (the `#` numbers of `parked list`);
        /// repeatable. Default: all of them, 1,000 at a time.
        #[arg(long = "key")]
        keys: Vec<u64>,
        /// Whose credential to present (an operator's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
    /// Write every parked record to a file, as JSON lines (readable by
    /// the node's user only), for an investigation. Reads the destination
    /// queues' logs on this machine.
    #[command(after_help = "Example: holdfast parked export -c cluster.toml --out parked.jsonl")]
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this archiving server (default: every one of the config).
        #[arg(long)]
        node: Option<String>,
        /// The file to write.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(cmd: ParkedCmd) -> Result<(), Failure> {
    match cmd {
        ParkedCmd::List { config, node, json } => {
            let lines = parked_lines(&load_config(&config)?, node.as_deref(), json)?;
            print_listing(&lines, json, "parked records");
        }
        ParkedCmd::Retry {
            config,
            node,
            keys,
            who,
        } => {
            let answer = ask_as_operator(
                &config,
                &who,
                (&node, ActorKind::DestinationQueue),
                Msg::Archiving(ArchivingMsg::ParkedRetry { keys }),
                Duration::from_secs(30),
                |m| matches!(m, Msg::Archiving(ArchivingMsg::ParkedRetried { .. })),
            )?;
            if let Msg::Archiving(ArchivingMsg::ParkedRetried { retried, left }) = answer {
                println!("{node}: {retried} sent back to the database, {left} still parked");
            }
        }
        ParkedCmd::Export {
            config,
            node,
            out,
            force,
        } => {
            let lines = parked_lines(&load_config(&config)?, node.as_deref(), true)?;
            if out.exists() && !force {
                return Err(Failure::Error(format!(
                    "{}: exists; add --force to replace it",
                    out.display()
                )));
            }
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            holdfast::file_disk::write_file_atomically(&out, text.as_bytes(), 0o600)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            println!(
                "{} parked records written to {}",
                lines.len(),
                out.display()
            );
        }
    }
    Ok(())
}

/// The parked records of the config's archiving servers, read from their
/// destination queue logs: one line each, as text or JSON.
fn parked_lines(config: &Config, only: Option<&str>, json: bool) -> Result<Vec<String>, String> {
    let queues = (Role::Archiver, ActorKind::DestinationQueue);
    local_store_lines(
        config,
        queues,
        only,
        "an archiving server",
        |name, state| {
            let mut lines = Vec::new();
            for entry in store_keys::parked_records(state) {
                let (key, p) = entry.map_err(|e| e.to_string())?;
                let r = &p.record;
                if json {
                    let line = serde_json::json!({
                        "node": name, "key": key, "parked_at": p.at, "reason": p.reason,
                        "id": r.id, "client_id": r.client_id, "kind": r.kind.as_str(),
                        "from": r.from, "to": r.to, "time": r.time, "front_end": r.front_end,
                    });
                    lines.push(line.to_string());
                } else {
                    lines.push(format!(
                        "{}  #{key}  parked {}  {} {} -> {}  [{}]  {}",
                        name,
                        fmt_time(p.at),
                        r.kind.as_str(),
                        r.from,
                        r.to,
                        r.id,
                        p.reason
                    ));
                }
            }
            Ok(lines)
        },
    )
}

//! `holdfast parked list`: the records the archive database refused for
//! good, kept aside by the archiving servers.

use super::common::{fmt_time, load_config, ConfigArg, Failure};
use clap::Subcommand;
use holdfast::config::{Config, Role};
use holdfast_actors::core::store_keys;
use holdfast_host::store::replay_log;

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
}

pub(crate) fn run(cmd: ParkedCmd) -> Result<(), Failure> {
    match cmd {
        ParkedCmd::List { config, node, json } => {
            parked_list(&load_config(&config)?, node.as_deref(), json)?
        }
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

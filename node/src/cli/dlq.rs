//! `holdfast dlq list|resend`: a front end's dead-letter queue — the
//! records that were not acknowledged within the data TTRQ (lync2010),
//! which the queue resends once heartbeats say the link is healthy.

use super::common::{fmt_time, load_config, runtime, ConfigArg, Failure};
use clap::Subcommand;
use holdfast::config::{Config, Role};
use holdfast::operator_client;
use holdfast_actors::core::identity::Role as PrincipalRole;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::Msg;
use holdfast_actors::core::store_keys::{self, OQ_DEAD};
use holdfast_host::store::replay_log;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum DlqCmd {
    /// The records in the front ends' dead-letter queues. Reads the
    /// outgoing queue's log on this machine (as the node's user).
    #[command(after_help = "Example: holdfast dlq list -c cluster.toml --node fe1")]
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this front end (default: every one of the config).
        #[arg(long)]
        node: Option<String>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Move a front end's dead letters back into its stream now (new
    /// sequence numbers), without waiting for heartbeats to say the link
    /// is healthy. Up to 512 per call (an operator may ask).
    #[command(after_help = "Example: holdfast dlq resend -c cluster.toml --node fe1")]
    Resend {
        #[command(flatten)]
        config: ConfigArg,
        /// The front end.
        #[arg(long)]
        node: String,
        /// Whose credential to present (an operator's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
}

pub(crate) fn run(cmd: DlqCmd) -> Result<(), Failure> {
    match cmd {
        DlqCmd::List { config, node, json } => {
            let lines = dead_letters(&load_config(&config)?, node.as_deref(), json)?;
            for l in &lines {
                println!("{l}");
            }
            if !json {
                eprintln!("{} dead letters", lines.len());
            }
        }
        DlqCmd::Resend { config, node, who } => {
            let config = load_config(&config)?;
            let answer = runtime()?.block_on(operator_client::ask(
                &config,
                &who,
                &[PrincipalRole::Operator],
                (&node, ActorKind::OutgoingQueue),
                Msg::DeadLettersResend,
                Duration::from_secs(30),
                |m| matches!(m, Msg::DeadLettersResent { .. }),
            ))?;
            if let Msg::DeadLettersResent { resent, left } = answer {
                println!("{node}: {resent} resent, {left} still in the dead-letter queue");
            }
        }
    }
    Ok(())
}

/// The dead letters of the config's front ends, from their outgoing queue
/// logs: one line each, as text or JSON.
fn dead_letters(config: &Config, only: Option<&str>, json: bool) -> Result<Vec<String>, String> {
    let fes: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::FrontEnd))
        .filter(|n| only.is_none_or(|o| o == n.name))
        .collect();
    if fes.is_empty() {
        return Err(match only {
            Some(o) => format!("{o} is not a front end of the config"),
            None => "the config has no front end".into(),
        });
    }
    let mut lines = Vec::new();
    for n in fes {
        let file = n
            .data
            .join(holdfast::node::store_file(ActorKind::OutgoingQueue));
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: cannot read: {e}", file.display())),
        };
        for (k, v) in &replay_log(&bytes).state {
            let Some(key) = store_keys::parse_u64(OQ_DEAD, k) else {
                continue;
            };
            let r = store_keys::decode_record(v).map_err(|e| format!("{}: {e}", file.display()))?;
            lines.push(if json {
                serde_json::json!({
                    "node": n.name, "key": key, "id": r.id, "client_id": r.client_id,
                    "kind": r.kind.as_str(), "from": r.from, "to": r.to, "time": r.time,
                })
                .to_string()
            } else {
                format!(
                    "{}  #{key}  {}  {} {} -> {}  [{}]",
                    n.name,
                    fmt_time(r.time),
                    r.kind.as_str(),
                    r.from,
                    r.to,
                    r.id
                )
            });
        }
    }
    Ok(lines)
}

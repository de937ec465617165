//! `holdfast dlq list|resend`: a front end's dead-letter queue — the
//! records that were not acknowledged within the data TTRQ (lync2010),
//! which the queue resends once heartbeats say the link is healthy.

use super::common::{
    ask_as_operator, fmt_time, load_config, local_store_lines, print_listing, ConfigArg, Failure,
};
use clap::Subcommand;
use holdfast::config::{Config, Role};
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::{ArchivingMsg, Msg};
use holdfast_actors::core::store_keys::{self, OQ_DEAD};
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
            print_listing(&lines, json, "dead letters");
        }
        DlqCmd::Resend { config, node, who } => {
            let answer = ask_as_operator(
                &config,
                &who,
                (&node, ActorKind::OutgoingQueue),
                Msg::Archiving(ArchivingMsg::DeadLettersResend),
                Duration::from_secs(30),
                |m| matches!(m, Msg::Archiving(ArchivingMsg::DeadLettersResent { .. })),
            )?;
            if let Msg::Archiving(ArchivingMsg::DeadLettersResent { resent, left }) = answer {
                println!("{node}: {resent} resent, {left} still in the dead-letter queue");
            }
        }
    }
    Ok(())
}

/// The dead letters of the config's front ends, from their outgoing queue
/// logs: one line each, as text or JSON.
fn dead_letters(config: &Config, only: Option<&str>, json: bool) -> Result<Vec<String>, String> {
    let queues = (Role::FrontEnd, ActorKind::OutgoingQueue);
    local_store_lines(config, queues, only, "a front end", |name, state| {
        let mut lines = Vec::new();
        for (k, v) in state {
            let Some(key) = store_keys::parse_u64(OQ_DEAD, k) else {
                continue;
            };
            let r = store_keys::decode_record(v).map_err(|e| e.to_string())?;
            lines.push(if json {
                serde_json::json!({
                    "node": name, "key": key, "id": r.id, "client_id": r.client_id,
                    "kind": r.kind.as_str(), "from": r.from, "to": r.to, "time": r.time,
                })
                .to_string()
            } else {
                format!(
                    "{}  #{key}  {}  {} {} -> {}  [{}]",
                    name,
                    fmt_time(r.time),
                    r.kind.as_str(),
                    r.from,
                    r.to,
                    r.id
                )
            });
        }
        Ok(lines)
    })
}

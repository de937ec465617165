//! `holdfast chat retention status|purge-now`: what the chat store's
//! retention purge did, its policy and the legal holds it keeps, asked of
//! the chat store node directly (operators and auditors; purge-now:
//! operators).

use super::common::{
    fmt_time, load_config, parse_duration, printable, runtime, ConfigArg, Failure,
};
use clap::Subcommand;
use holdfast::config::Role;
use holdfast::operator_client;
use holdfast_actors::core::identity::Role as PrincipalRole;
use holdfast_actors::core::ids::{ActorKind, Token};
use holdfast_actors::core::protocol::{ArchiveRefusal, ChatPurgeRecord, Msg, RecordsMsg};
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum ChatRetentionCmd {
    /// The chat retention policy, the last (or running) purge and the
    /// holds the chat store keeps.
    #[command(
        after_help = "Example: holdfast chat retention status -c cluster.toml --as operator"
    )]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's or an auditor's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Starts the chat purge now and waits until it has ended.
    #[command(
        after_help = "Example: holdfast chat retention purge-now -c cluster.toml --as operator"
    )]
    PurgeNow {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's: only operators may
        /// start a purge).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
        /// How long to wait for the purge to end.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// One request to the chat store node.
async fn ask(config: &holdfast::config::Config, who: &str, request: Msg) -> Result<Msg, Failure> {
    let node = config
        .nodes
        .iter()
        .find(|n| n.has(Role::ChatStore))
        .map(|n| n.name.clone())
        .ok_or_else(|| Failure::Error("the cluster has no chat store".into()))?;
    let roles = [
        PrincipalRole::Operator,
        PrincipalRole::Auditor,
        PrincipalRole::User,
    ];
    let answer = operator_client::ask(
        config,
        who,
        &roles,
        (&node, ActorKind::ChatStore),
        request,
        Duration::from_secs(30),
        |m| {
            matches!(
                m,
                Msg::Records(
                    RecordsMsg::ChatRetentionState { .. } | RecordsMsg::ArchiveRefused { .. }
                )
            )
        },
    )
    .await?;
    match answer {
        Msg::Records(RecordsMsg::ArchiveRefused { refusal, .. }) => {
            let text = format!("{node} refused: {refusal}");
            Err(match refusal {
                ArchiveRefusal::Forbidden(_) => Failure::Error(text),
                _ => Failure::NotWell(text),
            })
        }
        other => Ok(other),
    }
}

fn print_purge(p: &ChatPurgeRecord) {
    let (deleted, held) = p.counts();
    match p.finished_at {
        Some(at) => println!(
            "last purge: started {}, finished {}: {deleted} posts deleted, {held} kept for a hold",
            fmt_time(p.started_at),
            fmt_time(at)
        ),
        None => println!(
            "purge running since {}: {deleted} posts deleted so far, {held} kept for a hold",
            fmt_time(p.started_at)
        ),
    }
    if let Some((a, b)) = p.range() {
        println!("  deleted posts' times: {} .. {}", fmt_time(a), fmt_time(b));
    }
    for (room, r) in &p.rooms {
        println!(
            "  {}: posts before {} up to #{}: {} deleted, {} held{}",
            printable(room),
            fmt_time(r.cutoff),
            r.through,
            r.deleted,
            r.held,
            if r.purged < r.through {
                " (running)"
            } else {
                ""
            }
        );
    }
}

pub(crate) fn run(cmd: ChatRetentionCmd) -> Result<(), Failure> {
    let rt = runtime()?;
    match cmd {
        ChatRetentionCmd::Status { config, who, json } => {
            let config = load_config(&config)?;
            let Msg::Records(RecordsMsg::ChatRetentionState {
                keep_days,
                by_category,
                purge_hour,
                purge,
                holds,
                ..
            }) = rt.block_on(ask(
                &config,
                &who,
                Msg::Records(RecordsMsg::ChatRetentionStatus { token: Token(1) }),
            ))?
            else {
                return Err(Failure::Error("an unexpected answer".into()));
            };
            if json {
                let v = serde_json::json!({
                    "keep_days": keep_days,
                    "by_category": by_category,
                    "purge_hour": purge_hour,
                    "purge": purge,
                    "holds": holds,
                });
                println!("{v}");
                return Ok(());
            }
            let days = |d: u64| {
                if d == 0 {
                    "kept for ever".to_string()
                } else {
                    format!("{d} days")
                }
            };
            println!(
                "chat retention: {} (purge at {purge_hour}:00 UTC)",
                days(keep_days)
            );
            for (category, d) in &by_category {
                println!("  category {}: {}", printable(category), days(*d));
            }
            match purge {
                Some(p) => print_purge(&p),
                None => println!("no chat purge yet"),
            }
            let active = holds.iter().filter(|h| h.released.is_none()).count();
            println!("holds: {active} active, {} released", holds.len() - active);
        }
        ChatRetentionCmd::PurgeNow {
            config,
            who,
            timeout,
        } => {
            let config = load_config(&config)?;
            rt.block_on(purge_now(&config, &who, timeout))?;
        }
    }
    Ok(())
}

/// Starts a purge and polls until a purge that began after the last one
/// known has finished.
async fn purge_now(
    config: &holdfast::config::Config,
    who: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let Msg::Records(RecordsMsg::ChatRetentionState {
        keep_days,
        by_category,
        purge: before,
        ..
    }) = ask(
        config,
        who,
        Msg::Records(RecordsMsg::ChatPurgeNow { token: Token(1) }),
    )
    .await?
    else {
        return Err(Failure::Error("an unexpected answer".into()));
    };
    if keep_days == 0 && by_category.values().all(|d| *d == 0) {
        println!("chat is kept for ever (chat_keep_days = 0): nothing to purge");
        return Ok(());
    }
    // A purge running when asked goes on; otherwise a new one begins.
    let since = before
        .filter(|p| p.finished_at.is_some())
        .map(|p| p.started_at);
    loop {
        if let Msg::Records(RecordsMsg::ChatRetentionState { purge: Some(p), .. }) = ask(
            config,
            who,
            Msg::Records(RecordsMsg::ChatRetentionStatus { token: Token(2) }),
        )
        .await?
        {
            if p.finished_at.is_some() && since.is_none_or(|s| p.started_at > s) {
                print_purge(&p);
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::NotWell(format!(
                "the chat purge did not finish within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! `holdfast im send`: one IM, and what the front end answered.

use super::common::{fmt_time, load_config, parse_duration, runtime, ConfigArg, Failure};
use clap::Subcommand;
use holdfast::client::{self, Client, Outcome};
use holdfast::reach::CannotReach;
use holdfast_actors::core::protocol::Im;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum ImCmd {
    /// Send one IM and print whether the front end accepted it.
    #[command(
        after_help = "Example: holdfast im send -c cluster.toml --from alice@corp.example --to bob@corp.example hello"
    )]
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// The sender (homed on a front end of the config).
        #[arg(long)]
        from: String,
        /// The recipient.
        #[arg(long)]
        to: String,
        /// Message id (default: a fresh unique one).
        #[arg(long)]
        id: Option<String>,
        /// How long to wait for the front end's answer.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// The message text.
        text: String,
    },
}

pub(crate) fn run(cmd: ImCmd) -> Result<(), Failure> {
    match cmd {
        ImCmd::Send {
            config,
            from,
            to,
            id,
            timeout,
            text,
        } => {
            let config = Arc::new(load_config(&config)?);
            let id = id.unwrap_or_else(|| client::new_id("im"));
            let home = config.home(&from).map(|n| n.name.clone());
            let outcome = runtime()?.block_on(async {
                let c = Client::new(config)?;
                let im = Im {
                    id: id.as_str().into(),
                    from: from.into(),
                    to: to.into(),
                    body: text,
                };
                // A front end that cannot be reached is said at once.
                Ok::<_, Failure>(c.send_im_once(im, timeout).await?)
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
                Outcome::Busy => {
                    return Err(format!(
                        "busy: the front end is past its capacity and kept nothing of {id}; try again shortly"
                    )
                    .into())
                }
                Outcome::Unknown => {
                    return Err(CannotReach::NoAnswer {
                        node: home.unwrap_or_default(),
                        what: format!("IM {id} (it may or may not be accepted)"),
                        timeout,
                    }
                    .into())
                }
            }
        }
    }
    Ok(())
}

//! `holdfast compliance`: the Compliance service's status, an export now,
//! or a batch acknowledged as picked up.

use super::common::{fmt_time, load_config, runtime, ConfigArg, Failure};
use clap::Subcommand;
use holdfast_actors::core::protocol::compliance::ComplianceMsg;
use holdfast_actors::core::protocol::Msg;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum ComplianceCmd {
    /// Staged events, the last batch and run, the last error (an operator
    /// or an auditor may ask).
    #[command(after_help = "Example: holdfast compliance status -c cluster.toml --as auditor")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's or an auditor's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
    /// Export the staged events now instead of at the next interval (an
    /// operator may ask).
    #[command(after_help = "Example: holdfast compliance run-now -c cluster.toml")]
    RunNow {
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
    /// Tell the service that the pickup system has taken batch BATCH: the
    /// acknowledgement is recorded, then the batch's files (events file,
    /// manifest, uploaded files no other waiting batch names) are removed
    /// from the output folder (an operator or an auditor may ask).
    #[command(after_help = "Example: holdfast compliance ack 42 -c cluster.toml --as auditor")]
    Ack {
        /// The batch number (`holdfast-compliance-<BATCH>.*`).
        batch: u64,
        #[command(flatten)]
        config: ConfigArg,
        /// Whose credential to present (an operator's or an auditor's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
}

pub(crate) fn run(cmd: ComplianceCmd) -> Result<(), Failure> {
    let (config, who, request) = match cmd {
        ComplianceCmd::Status { config, who } => (
            config,
            who,
            Msg::Compliance(ComplianceMsg::ComplianceStatusQuery),
        ),
        ComplianceCmd::RunNow { config, who } => (
            config,
            who,
            Msg::Compliance(ComplianceMsg::ComplianceRunNow),
        ),
        ComplianceCmd::Ack { batch, config, who } => (
            config,
            who,
            Msg::Compliance(ComplianceMsg::ComplianceAck { batch }),
        ),
    };
    let acked = match &request {
        Msg::Compliance(ComplianceMsg::ComplianceAck { batch }) => Some(*batch),
        _ => None,
    };
    let config = load_config(&config)?;
    let s = runtime()?.block_on(holdfast::compliance_client::ask(
        &config,
        &who,
        request,
        Duration::from_secs(10),
    ))?;
    if let Some(batch) = acked {
        println!("batch {batch} acknowledged: its files are removed from the output folder");
    }
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
        "for pickup:    {}",
        if s.awaiting_pickup.is_empty() {
            "none".to_string()
        } else {
            let list: Vec<String> = s.awaiting_pickup.iter().map(u64::to_string).collect();
            format!("{} batches ({})", list.len(), list.join(", "))
        }
    );
    println!(
        "picked up:     {} batches since the service started",
        s.picked_up
    );
    println!(
        "last error:    {}",
        s.last_error.as_deref().unwrap_or("none")
    );
    // Cleared by the next export that succeeds: the export is
    // failing now.
    if let Some(e) = s.last_error {
        return Err(Failure::NotWell(format!("the export is failing: {e}")));
    }
    Ok(())
}

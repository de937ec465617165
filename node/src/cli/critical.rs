//! `holdfast critical resume`: an operator ends a front end's
//! critical-mode shutdown by hand — the only way when
//! `critical_auto_resume = false`.

use super::common::{ask_as_operator, ConfigArg, Failure};
use clap::Subcommand;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::{ArchivingMsg, Msg};
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum CriticalCmd {
    /// End a front end's critical-mode shutdown now (an operator may ask).
    /// The front end accepts IMs again at once and raises the operator
    /// event `critical_resume` naming who ended it.
    #[command(after_help = "Example: holdfast critical resume -c cluster.toml --node fe1")]
    Resume {
        #[command(flatten)]
        config: ConfigArg,
        /// The front end to resume.
        #[arg(long)]
        node: String,
        /// Whose credential to present (an operator's).
        #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
        who: String,
    },
}

pub(crate) fn run(cmd: CriticalCmd) -> Result<(), Failure> {
    let CriticalCmd::Resume { config, node, who } = cmd;
    let answer = ask_as_operator(
        &config,
        &who,
        (&node, ActorKind::FrontEnd),
        Msg::Archiving(ArchivingMsg::OperatorResume),
        Duration::from_secs(10),
        |m| matches!(m, Msg::Archiving(ArchivingMsg::OperatorResumed { .. })),
    )?;
    match answer {
        Msg::Archiving(ArchivingMsg::OperatorResumed {
            was_shut_down: Some(why),
        }) => println!("{node}: resumed; it had shut down: {why}"),
        _ => println!("{node}: was not shut down; nothing to end"),
    }
    Ok(())
}

//! `holdfast cluster up`: every node of the config on this machine.

use super::common::{load_config, ConfigArg, Failure};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Start every node of the config as a child process on this machine
    /// (creating certificates if needed); Ctrl-C stops them.
    Up {
        #[command(flatten)]
        config: ConfigArg,
    },
}

pub(crate) fn run(cmd: ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Up { config } => {
            // The certificate folder, the nodes' data folders and their
            // logs: private to the user, like what the nodes write.
            holdfast::file_disk::private_umask();
            holdfast::cluster_up::up(&load_config(&config)?)?;
        }
    }
    Ok(())
}

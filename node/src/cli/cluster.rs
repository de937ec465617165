//! `holdfast cluster up`: every node of the config on this machine.

use super::common::{load_config, ConfigArg, Failure};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum ClusterCmd {
    /// Start every node of the config as a child process on this machine
    /// (creating certificates if needed); Ctrl-C stops them.
    #[command(after_help = "Example: holdfast cluster up -c cluster.toml")]
    Up {
        #[command(flatten)]
        config: ConfigArg,
        /// Run on with the nodes that are up when one does not come up or
        /// exits (by default every node is stopped and the command fails
        /// at once; with this it fails when Ctrl-C stops the others).
        #[arg(long)]
        keep_going: bool,
    },
}

pub(crate) fn run(cmd: ClusterCmd) -> Result<(), Failure> {
    match cmd {
        ClusterCmd::Up { config, keep_going } => {
            // The certificate folder, the nodes' data folders and their
            // logs: private to the user, like what the nodes write.
            holdfast::file_disk::private_umask();
            use holdfast::cluster_up::{up, UpError};
            match up(&load_config(&config)?, keep_going) {
                Ok(()) => {}
                Err(e @ UpError::Setup(_)) => return Err(Failure::Error(e.to_string())),
                Err(UpError::Nodes(e)) => return Err(Failure::NotWell(e)),
            }
        }
    }
    Ok(())
}

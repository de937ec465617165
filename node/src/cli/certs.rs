//! `holdfast certs`: the cluster CA, node certificates and user credentials.

use super::common::{load_config, parse_role, ConfigArg, Failure};
use clap::Subcommand;
use holdfast_actors::core::identity::{Principal, Role as PrincipalRole};

#[derive(Subcommand)]
pub(crate) enum CertsCmd {
    /// Make a user's credential (certificate and key, signed by the cluster
    /// CA) in the credentials folder: what a client presents to act as
    /// USER in ROLE.
    #[command(after_help = "Example: holdfast certs user carol@corp.example --role auditor")]
    User {
        #[command(flatten)]
        config: ConfigArg,
        /// The user, e.g. alice@corp.example.
        user: String,
        /// user (IM and chat as itself), operator (compliance export and
        /// status) or auditor (compliance status).
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: PrincipalRole,
        /// Replace an existing credential of the user.
        #[arg(long)]
        force: bool,
    },
    /// Create a cluster CA and a certificate for every node of the config.
    #[command(after_help = "Example: holdfast certs init -c cluster.toml")]
    Init {
        #[command(flatten)]
        config: ConfigArg,
        /// Replace an existing CA (every node needs its new certificate).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(cmd: CertsCmd) -> Result<(), Failure> {
    match cmd {
        CertsCmd::User {
            config,
            user,
            role,
            force,
        } => {
            holdfast::file_disk::private_umask();
            let config = load_config(&config)?;
            let principal = Principal::new(user, role);
            let files =
                holdfast::tls::issue_user(&config.certs, &config.credentials, &principal, force)
                    .map_err(|e| e.to_string())?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            println!(
                "{principal} presents these files (give them to the user; the key stays private)"
            );
        }
        CertsCmd::Init { config, force } => {
            holdfast::file_disk::private_umask();
            let config = load_config(&config)?;
            let files = holdfast::tls::certs_init(&config, force).map_err(|e| e.to_string())?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            if files.is_empty() {
                println!(
                    "every node already has a certificate in {}",
                    config.certs.display()
                );
            }
        }
    }
    Ok(())
}

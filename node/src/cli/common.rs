//! What the subcommands share: the config argument and value parsers, the
//! runtime clients run on, the time format, and how a command fails.

use clap::Args;
use holdfast::config::Config;
use holdfast::reach::CannotReach;
use holdfast_actors::core::identity::Role as PrincipalRole;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone)]
pub(crate) struct ConfigArg {
    /// The cluster configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "cluster.toml",
        env = "HOLDFAST_CONFIG"
    )]
    pub(crate) config: PathBuf,
    /// The folder of users' credentials (`<user>.pem`, `<user>.key`) that
    /// clients present on TLS links (default: the `users` folder of the
    /// config's certs).
    #[arg(long, env = "HOLDFAST_CREDENTIALS")]
    pub(crate) credentials: Option<PathBuf>,
}

pub(crate) fn parse_role(s: &str) -> Result<PrincipalRole, String> {
    PrincipalRole::parse(s)
        .ok_or_else(|| format!("{s:?}: the roles are user, operator and auditor"))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// RFC 3339 or an age before now, in ms since the UNIX epoch.
pub(crate) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| e.to_string());
    }
    let age = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?}: expected RFC 3339 (2026-11-22T10:00:00Z) or an age (10m)"))?;
    Ok(holdfast::node::now_ms().saturating_sub(age.as_millis() as u64))
}

pub(crate) fn load_config(c: &ConfigArg) -> Result<Config, String> {
    let mut config = Config::load(&c.config).map_err(|e| e.to_string())?;
    if let Some(dir) = &c.credentials {
        config.credentials = dir.clone();
    }
    Ok(config)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

pub(crate) fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Why a command did not end well. Exit codes: 0 when everything asked
/// for happened; 1 when the operation failed or the command found
/// something not well (a front end failing or shut down, IMs not
/// accepted, a failing export, damage in a store, nodes that did not come
/// up); 2 for a usage or config error, or a request refused; 3 when it
/// could not reach the cluster (connection refused, no answer from the
/// node it asked, a node `status` cannot read): every client says so with
/// the one typed error [`CannotReach`], which alone leads to exit 3.
pub(crate) enum Failure {
    /// Exit 2.
    Error(String),
    /// Exit 1.
    NotWell(String),
    /// Exit 3.
    Unreachable(CannotReach),
}

impl Failure {
    /// The process's exit code.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::NotWell(_) => 1,
            Failure::Error(_) => 2,
            Failure::Unreachable(_) => 3,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(e) | Failure::NotWell(e) => f.write_str(e),
            Failure::Unreachable(e) => write!(f, "{e}"),
        }
    }
}

impl From<CannotReach> for Failure {
    fn from(e: CannotReach) -> Failure {
        Failure::Unreachable(e)
    }
}

impl From<holdfast::operator_client::AskError> for Failure {
    fn from(e: holdfast::operator_client::AskError) -> Failure {
        use holdfast::operator_client::AskError;
        match e {
            AskError::CannotReach(e) => e.into(),
            // Refused or not set up: the request did not happen.
            AskError::NoSuchNode(_)
            | AskError::NoComplianceNode
            | AskError::Client(_)
            | AskError::Transport(_)
            | AskError::Refused { .. } => Failure::Error(e.to_string()),
        }
    }
}

impl From<holdfast::client::SendError> for Failure {
    fn from(e: holdfast::client::SendError) -> Failure {
        use holdfast::client::SendError;
        match e {
            SendError::CannotReach(e) => e.into(),
            SendError::Setup(_) | SendError::Transport(_) => Failure::Error(e.to_string()),
        }
    }
}

impl From<holdfast::chat_client::ChatError> for Failure {
    fn from(e: holdfast::chat_client::ChatError) -> Failure {
        use holdfast::chat_client::ChatError;
        use holdfast_actors::core::protocol::chat::ChatReject;
        match e {
            ChatError::CannotReach(e) => e.into(),
            // The chat store did not confirm: the operation failed, or
            // may not have happened.
            ChatError::Rejected {
                reason: ChatReject::StoreUnavailable,
                ..
            } => Failure::NotWell(e.to_string()),
            // Not set up, or refused by the Web service: the request did
            // not happen.
            _ => Failure::Error(e.to_string()),
        }
    }
}

/// Errors of the library that are all exit 2: said as they are.
macro_rules! plain_failure {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Failure {
            fn from(e: $t) -> Failure {
                Failure::Error(e.to_string())
            }
        }
    )*};
}

plain_failure!(
    holdfast::client::ClientError,
    holdfast::bench::BenchError,
    holdfast::bench_sweep::SweepError,
    holdfast::bench_peer::PeerError,
    holdfast::cluster_up::ClusterUpError,
);

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Error(e)
    }
}

/// Text from other users, fit for a terminal: control characters (an
/// escape sequence could recolour, move the cursor or retitle the
/// window) and bidirectional overrides are shown escaped (`\u{1b}`,
/// `\n`); everything else, non-ASCII letters included, as it is.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines `lines_of` makes of one actor's log store on each node of
/// `role` in the config (or only `only`), read from the data folders on
/// this machine; `lines_of` gets the node's name and the store's state,
/// and an error of it is told with the log file's path. A node whose log
/// does not exist yet is skipped. `what` names the role in the error when
/// no node has it.
pub(crate) fn local_store_lines(
    config: &Config,
    (role, kind): (
        holdfast::config::Role,
        holdfast_actors::core::ids::ActorKind,
    ),
    only: Option<&str>,
    what: &str,
    lines_of: impl Fn(&str, &holdfast_actors::core::actor::Recovered) -> Result<Vec<String>, String>,
) -> Result<Vec<String>, String> {
    let nodes: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(role))
        .filter(|n| only.is_none_or(|o| o == n.name))
        .collect();
    if nodes.is_empty() {
        return Err(match only {
            Some(o) => format!("{o} is not {what} of the config"),
            None => format!("the config has no {what}"),
        });
    }
    let mut lines = Vec::new();
    for n in nodes {
        let file = n.data.join(holdfast::node::store_file(kind));
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{}: cannot read: {e}", file.display())),
        };
        let state = holdfast_host::store::replay_log(&bytes).state;
        lines.extend(lines_of(&n.name, &state).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    Ok(lines)
}

/// Asks `actor` on `node`, as `who` with the operator role, and returns
/// the answer `wanted` accepts (an operator control).
pub(crate) fn ask_as_operator(
    config: &ConfigArg,
    who: &str,
    target: (&str, holdfast_actors::core::ids::ActorKind),
    request: holdfast_actors::core::protocol::Msg,
    timeout: Duration,
    wanted: impl Fn(&holdfast_actors::core::protocol::Msg) -> bool,
) -> Result<holdfast_actors::core::protocol::Msg, Failure> {
    let config = load_config(config)?;
    let roles = [PrincipalRole::Operator];
    let ask =
        holdfast::operator_client::ask(&config, who, &roles, target, request, timeout, wanted);
    Ok(runtime()?.block_on(ask)?)
}

/// A listing: one line each on stdout, then (as text, not JSON) how many
/// `what` on stderr.
pub(crate) fn print_listing(lines: &[String], json: bool, what: &str) {
    for l in lines {
        println!("{l}");
    }
    if !json {
        eprintln!("{} {what}", lines.len());
    }
}

/// `report` on stdout as indented JSON (what `--json` prints for a
/// whole run's report).
pub(crate) fn print_pretty_json(report: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(report).map_err(|e| e.to_string())?
    );
    Ok(())
}

/// What a load report adds to its unanswered count when some of those
/// requests never left the load generator (its queue to a front end was
/// full): they say how fast the front ends read, not what the cluster lost.
pub(crate) fn not_sent_note(not_sent: u64) -> String {
    if not_sent == 0 {
        String::new()
    } else {
        format!(" ({not_sent} of them never left this client: dropped from its full queue to a front end, or while it could not connect)")
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("\u{1b}[2Jhi"), "\\u{1b}[2Jhi");
        assert_eq!(printable("a\nb\tc\u{7}"), "a\\nb\\tc\\u{7}");
        assert_eq!(printable("Grüße, 東京 \"q\" \\"), "Grüße, 東京 \"q\" \\");
        assert_eq!(printable("\u{202e}abc"), "\\u{202e}abc");
    }
}

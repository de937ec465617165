//! `holdfast`: run cluster nodes, send traffic, query the archive, watch
//! the cluster — and document the settings and inspect stores offline.
//!
//! This file parses the arguments and dispatches; each subcommand is a
//! module of `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use cli::archive::ArchiveCmd;
use cli::certs::CertsCmd;
use cli::chat::ChatCmd;
use cli::cluster::ClusterCmd;
use cli::common::{load_config, parse_duration, ConfigArg, Failure};
use cli::compliance::ComplianceCmd;
use cli::critical::CriticalCmd;
use cli::dlq::DlqCmd;
use cli::file::FileCmd;
use cli::im::ImCmd;
use cli::parked::ParkedCmd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "holdfast: compliance-grade IM archiving"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node of the cluster until SIGTERM or Ctrl-C.
    #[command(after_help = "Example: holdfast node -c cluster.toml --name fe1")]
    Node {
        #[command(flatten)]
        config: ConfigArg,
        /// The node's name in the config.
        #[arg(long)]
        name: String,
    },
    /// Manage a whole cluster on this machine.
    #[command(after_help = "Example: holdfast cluster up -c cluster.toml")]
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Certificates for mutual TLS between nodes.
    #[command(after_help = "Example: holdfast certs init -c cluster.toml")]
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Send instant messages.
    #[command(
        after_help = "Example: holdfast im send -c cluster.toml --from alice@corp.example --to bob@corp.example hello"
    )]
    Im {
        #[command(subcommand)]
        cmd: ImCmd,
    },
    /// Generate IM traffic at a fixed rate and report the outcome.
    #[command(after_help = "Example: holdfast load -c cluster.toml --rate 200 --duration 30s")]
    Load {
        #[command(flatten)]
        config: ConfigArg,
        /// IMs per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// How long to send, e.g. 10s, 2m.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// How long to wait for each answer (an IM whose front end
        /// refuses the connection is given up at once).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Body size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Write every IM's outcome as JSON lines to this file.
        #[arg(long)]
        outcomes: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure end-to-end archived IM/s and latency on a loopback cluster
    /// (real processes, fsync on, SQLite).
    #[command(
        after_help = "Beside RabbitMQ: holdfast bench --rate 10000 --duration 20s --peer rabbitmq\nA sweep: holdfast bench --sweep 5000..60000 --steps 6 --svg sweep.svg\nExample: holdfast bench --rate 2000 --duration 10s --links plain"
    )]
    Bench {
        /// Offered IMs per second.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// How long to send, e.g. 10s, 2m.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// "tls" or "plain".
        #[arg(long, default_value = "tls")]
        links: String,
        /// Body size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Extra settings, e.g. --set transfer_window=1024 (repeatable).
        #[arg(long = "set")]
        set: Vec<String>,
        /// Put this many rows older than the retention window in the
        /// archive first, then measure twice: without a purge, and with
        /// `archive retention purge-now` started as the load begins (e.g.
        /// --purge-rows 1000000).
        #[arg(long, default_value_t = 0)]
        purge_rows: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Then run the same workload through a peer pipeline and compare:
        /// "rabbitmq" or "nats" (installed and started on loopback when
        /// needed).
        #[arg(long, conflicts_with = "sweep")]
        peer: Option<String>,
        /// Run at evenly spaced offered rates FROM..TO (IM/s), a fresh
        /// cluster each, and chart throughput and p99 latency.
        #[arg(long, value_name = "FROM..TO")]
        sweep: Option<String>,
        /// Rates in a sweep, FROM and TO included.
        #[arg(long, default_value_t = 6, requires = "sweep")]
        steps: usize,
        /// Where the sweep's SVG chart goes [default: bench-sweep.svg].
        #[arg(long, requires = "sweep")]
        svg: Option<PathBuf>,
    },
    /// Measure how long a database node and a chat store take to start,
    /// and their memory at idle, against the size of their store.
    #[command(
        after_help = "Example: holdfast bench-start --rows 0,1000000,10000000 --posts 0,100000,1000000 --dir /var/tmp/holdfast-stores"
    )]
    BenchStart {
        /// Archive sizes to start a database node on, in rows.
        #[arg(long, value_delimiter = ',', default_value = "0,1000000,10000000")]
        rows: Vec<u64>,
        /// Chat store sizes to start a chat store on, in posts.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        posts: Vec<u64>,
        /// Where to build the stores and keep them for the next run (one
        /// folder per size, reused); default a temporary folder, removed
        /// at the end.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the temporary folder (without --dir).
        #[arg(long)]
        keep: bool,
        /// How long a node may take to become ready before it is stopped
        /// (and reported as stopped), e.g. 30s, 10m.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        /// How long a ready node idles before its memory is read.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        idle: Duration,
        /// Print only the JSON line.
        #[arg(long)]
        json: bool,
    },
    /// The Compliance service: status, or export now.
    #[command(after_help = "Example: holdfast compliance status -c cluster.toml")]
    Compliance {
        #[command(subcommand)]
        cmd: ComplianceCmd,
    },
    /// Critical mode: end a front end's shutdown by hand.
    #[command(after_help = "Example: holdfast critical resume -c cluster.toml --node fe1")]
    Critical {
        #[command(subcommand)]
        cmd: CriticalCmd,
    },
    /// A front end's dead-letter queue: list it, resend it now.
    #[command(after_help = "Example: holdfast dlq list -c cluster.toml")]
    Dlq {
        #[command(subcommand)]
        cmd: DlqCmd,
    },
    /// Persistent group chat: rooms, posts, history.
    #[command(
        after_help = "Example: holdfast chat join -c cluster.toml --user alice@corp.example --room general"
    )]
    Chat {
        #[command(subcommand)]
        cmd: ChatCmd,
    },
    /// Files posted to chat rooms (through the Web service).
    #[command(
        after_help = "Example: holdfast file upload -c cluster.toml --user alice@corp.example --room general report.pdf"
    )]
    File {
        #[command(subcommand)]
        cmd: FileCmd,
    },
    /// Read the archive.
    #[command(
        after_help = "Example: holdfast archive query -c cluster.toml --user alice@corp.example --since 1h"
    )]
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
    /// Records the archive database refused for good, kept aside by the
    /// archiving servers.
    #[command(after_help = "Example: holdfast parked list -c cluster.toml")]
    Parked {
        #[command(subcommand)]
        cmd: ParkedCmd,
    },
    /// Per front end: queue depth, quota use, link health, critical mode.
    #[command(after_help = "Example: holdfast status -c cluster.toml")]
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print every setting with its default and meaning.
    #[command(after_help = "Example: holdfast settings --markdown")]
    Settings {
        /// As the Markdown table of docs/settings.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Read a store log file offline and print what a restart would recover.
    #[command(after_help = "Example: holdfast inspect-store nodes/fe1/outgoing_queue.log")]
    InspectStore {
        /// A store log (`outgoing_queue.log`, `destination_queue.log`, `database.log`).
        file: PathBuf,
    },
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: not in log files, not when
    // NO_COLOR is set (https://no-color.org).
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.cmd {
        Cmd::Node { config, name } => {
            let config = load_config(&config)?;
            holdfast::node::run(config, &name).map_err(|e| e.to_string())?;
        }
        Cmd::Cluster { cmd } => cli::cluster::run(cmd)?,
        Cmd::Certs { cmd } => cli::certs::run(cmd)?,
        Cmd::Im { cmd } => cli::im::run(cmd)?,
        Cmd::Load {
            config,
            rate,
            duration,
            timeout,
            size,
            outcomes,
            json,
        } => cli::load::run(config, rate, duration, timeout, size, outcomes, json)?,
        Cmd::Archive { cmd } => cli::archive::run(cmd)?,
        Cmd::Status { config } => cli::status::run(&load_config(&config)?)?,
        Cmd::Chat { cmd } => cli::chat::run(cmd)?,
        Cmd::Compliance { cmd } => cli::compliance::run(cmd)?,
        Cmd::Critical { cmd } => cli::critical::run(cmd)?,
        Cmd::Dlq { cmd } => cli::dlq::run(cmd)?,
        Cmd::File { cmd } => cli::file::run(cmd)?,
        Cmd::Bench {
            rate,
            duration,
            links,
            size,
            set,
            purge_rows,
            json,
            peer,
            sweep,
            steps,
            svg,
        } => match (peer, sweep) {
            (Some(_), _) | (_, Some(_)) if purge_rows > 0 => {
                return Err(Failure::Error(
                    "--purge-rows measures one cluster: it does not go with --peer or --sweep"
                        .into(),
                ))
            }
            (Some(peer), _) => cli::bench_peer::run(
                &peer,
                cli::bench::options(rate, duration, links, size, set),
                json,
            )?,
            (None, Some(sweep)) => cli::bench_sweep::run(
                &sweep,
                steps,
                svg,
                cli::bench::options(rate, duration, links, size, set),
                json,
            )?,
            (None, None) => cli::bench::run(rate, duration, links, size, set, purge_rows, json)?,
        },
        Cmd::BenchStart {
            rows,
            posts,
            dir,
            keep,
            timeout,
            idle,
            json,
        } => cli::bench_start::run(rows, posts, dir, keep, timeout, idle, json)?,
        Cmd::Settings { markdown } => cli::settings::run(markdown),
        Cmd::InspectStore { file } => cli::inspect::run(&file)?,
        Cmd::Parked { cmd } => cli::parked::run(cmd)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let kind = match f {
                Failure::NotWell(_) => "not well",
                Failure::Error(_) => "error",
                Failure::Unreachable(_) => "unreachable",
            };
            eprintln!("{kind}: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}

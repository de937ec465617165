//! `holdfast archive query|audit|export|hold|retention`: archived
//! messages, their eDiscovery export and the archive's read trail, asked
//! of the database node over the cluster's links as an auditor; legal
//! holds and retention. Every read is recorded by the database before it
//! answers.

use super::common::{
    fmt_time, load_config, parse_duration, parse_time, printable, runtime, ConfigArg, Failure,
};
use clap::Subcommand;
use holdfast::archive_db::{ArchiveDb, ArchivedMessage, Query};
use holdfast::config::{Config, Role};
use holdfast::operator_client::Session;
use holdfast::reach::CannotReach;
use holdfast_actors::core::identity::Role as PrincipalRole;
use holdfast_actors::core::ids::{ActorKind, RoomId, Token, UserId};
use holdfast_actors::core::protocol::{
    ArchiveRead, ArchiveRefusal, LegalHold, Msg, ReadWhat, RecordsMsg, Row, Search,
    SEARCH_PAGE_MAX, SEARCH_USERS_MAX,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one page of an answer may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Subcommand)]
pub(crate) enum ArchiveCmd {
    /// Archived messages of a user (as sender or recipient), asked of the
    /// database node as an auditor; the database records the read.
    #[command(
        after_help = "Example: holdfast archive query -c cluster.toml --user alice@corp.example --since 10m"
    )]
    Query {
        #[command(flatten)]
        config: ConfigArg,
        /// Sender or recipient: one of these users (comma-separated).
        #[arg(long, alias = "user", value_delimiter = ',')]
        users: Vec<String>,
        /// From this time: RFC 3339 (2026-11-22T10:00:00Z) or an age (10m, 2h).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Up to this time (exclusive), same forms.
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Text contained in the body (case-insensitive).
        #[arg(long)]
        text: Option<String>,
        /// The database node to ask (default: the config's only one).
        #[arg(long)]
        database: Option<String>,
        /// At most this many messages (the earliest ones).
        #[arg(long)]
        limit: Option<usize>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
        /// First wait until the message with this id (the one `im send`
        /// printed, or the id the front end assigned) is archived: an
        /// accepted IM reaches the archive a moment later. Exits 1 if it
        /// is not archived within --timeout.
        #[arg(long, value_name = "ID")]
        wait: Option<String>,
        /// How long --wait waits.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Whose credential to present (an auditor's: only auditors may
        /// read the archive).
        #[arg(long = "as", default_value = holdfast::tls::AUDITOR)]
        who: String,
        /// Offline: read this copy of an archive file (read-only) instead
        /// of asking the database node. Nothing is recorded in the read
        /// trail: only the file's permissions stand in the way.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["database", "who"])]
        file: Option<PathBuf>,
    },
    /// The archive's read trail: every read of the archive (who, what,
    /// when, how many rows, or why it was refused), for an export. Auditors
    /// only; this read is recorded too.
    #[command(after_help = "Example: holdfast archive audit -c cluster.toml --json > reads.jsonl")]
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        /// The database node to ask (default: the config's only one).
        #[arg(long)]
        database: Option<String>,
        /// Only entries after this one (its `#` number).
        #[arg(long)]
        after: Option<u64>,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
        /// Whose credential to present (an auditor's).
        #[arg(long = "as", default_value = holdfast::tls::AUDITOR)]
        who: String,
    },
    /// Legal holds: the messages of the users they name, in their time
    /// range, survive every retention purge until the hold is released.
    /// Auditors only; every hold and release stays on record.
    #[command(
        subcommand,
        after_help = "Example: holdfast archive hold add -c cluster.toml --name case-17 --users carol@corp.example --reason \"litigation 2026-17\""
    )]
    Hold(HoldCmd),
    /// eDiscovery export: every archived IM and call record of the users
    /// (as sender or recipient) in the time range, written page by page
    /// into a folder as EML, JSON lines or CSV, with the legal holds and a
    /// manifest naming each file's SHA-256. Auditors only; every page is a
    /// recorded read, and the finished export is recorded by the database
    /// (what `purge_exported_only` waits for).
    #[command(
        after_help = "Example: holdfast archive export -c cluster.toml --users carol@corp.example,dan@corp.example --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z --format eml --out case-17"
    )]
    Export(ExportArgs),
    /// What the retention purge did last (or is doing), the retention
    /// policy, and the holds (auditors and operators).
    #[command(
        subcommand,
        after_help = "Example: holdfast archive retention status -c cluster.toml --as operator"
    )]
    Retention(RetentionCmd),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("who_is_exported").required(true).args(["users", "all_users"])))]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    ask: AskArgs,
    /// The users whose messages (sent or received) are exported,
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Every user's messages (instead of --users).
    #[arg(long)]
    all_users: bool,
    /// From this message time: RFC 3339 or an age (30d). Default: the
    /// beginning.
    #[arg(long, value_parser = parse_time)]
    since: Option<u64>,
    /// Up to this message time (exclusive), same forms. Default: no end.
    #[arg(long, value_parser = parse_time)]
    until: Option<u64>,
    /// `eml` (one message file per row), `jsonl` or `csv`.
    #[arg(long, value_enum)]
    format: holdfast::archive_export::Format,
    /// The folder to write (created 0700; refused if not empty).
    #[arg(long)]
    out: PathBuf,
    /// Write into a folder that is not empty (files of the same names are
    /// replaced; others are left, and the manifest does not name them).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub(crate) struct AskArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The database node to ask (default: the config's only one).
    #[arg(long)]
    database: Option<String>,
    /// Whose credential to present.
    #[arg(long = "as", default_value = holdfast::tls::AUDITOR)]
    who: String,
}

/// [`AskArgs`] for what only an operator may ask (the purge), whose
/// credential is the default.
#[derive(clap::Args)]
pub(crate) struct OperatorAskArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The database node to ask (default: the config's only one).
    #[arg(long)]
    database: Option<String>,
    /// Whose credential to present (an operator's).
    #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
    who: String,
}

#[derive(Subcommand)]
pub(crate) enum HoldCmd {
    /// Places a hold on the messages of some users, and on the posts of
    /// chat rooms: on the database (users' IM) and on the chat store (the
    /// rooms' posts and the users' posts), each reported; exits non-zero
    /// unless every node placed it.
    #[command(
        after_help = "Example: holdfast archive hold add -c cluster.toml --name case-17 --users carol@corp.example,dan@corp.example --rooms deals --since 2026-11-01T00:00:00Z --reason \"litigation 2026-17\""
    )]
    Add {
        #[command(flatten)]
        ask: AskArgs,
        /// The hold's name (unique among active holds).
        #[arg(long)]
        name: String,
        /// The users whose messages (sent or received) and chat posts are
        /// held.
        #[arg(long, value_delimiter = ',', required_unless_present = "rooms")]
        users: Vec<String>,
        /// The chat rooms whose posts are held, whoever wrote them.
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<String>,
        /// Hold messages from this time: RFC 3339 or an age (30d).
        #[arg(long, value_parser = parse_time)]
        since: Option<u64>,
        /// Up to this time (exclusive), same forms.
        #[arg(long, value_parser = parse_time)]
        until: Option<u64>,
        /// Why: kept on record with the hold.
        #[arg(long)]
        reason: String,
    },
    /// Every hold, active and released, with who placed and released it.
    #[command(after_help = "Example: holdfast archive hold list -c cluster.toml --json")]
    List {
        #[command(flatten)]
        ask: AskArgs,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Releases a hold: its messages follow the retention policy again.
    #[command(
        after_help = "Example: holdfast archive hold release -c cluster.toml --name case-17 --reason \"case settled\""
    )]
    Release {
        #[command(flatten)]
        ask: AskArgs,
        /// The hold to release.
        #[arg(long)]
        name: String,
        /// Why: kept on record with the hold.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RetentionCmd {
    /// Starts the retention purge now rather than at the purge hour
    /// (operators), and waits for it to finish.
    #[command(after_help = "Example: holdfast archive retention purge-now -c cluster.toml")]
    PurgeNow {
        #[command(flatten)]
        ask: OperatorAskArgs,
        /// How long to wait for the purge to finish.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The policy, the last purge (when, cutoff, rows deleted and kept for
    /// holds) and the holds.
    #[command(
        after_help = "Example: holdfast archive retention status -c cluster.toml --as operator"
    )]
    Status {
        #[command(flatten)]
        ask: AskArgs,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: ArchiveCmd) -> Result<(), Failure> {
    match cmd {
        ArchiveCmd::Query {
            config,
            users,
            since,
            until,
            text,
            database,
            limit,
            json,
            wait,
            timeout,
            who,
            file,
        } => {
            if users.len() > SEARCH_USERS_MAX {
                return Err(Failure::Error(format!(
                    "--users names {} users; a query takes at most {SEARCH_USERS_MAX}",
                    users.len()
                )));
            }
            let search = Search {
                users: users.iter().map(UserId::from).collect(),
                since,
                until,
                text,
                ..Search::default()
            };
            if let Some(path) = file {
                if let Some(id) = wait {
                    wait_in_file(&path, &id, timeout)?;
                }
                return Ok(query_file(&path, &search, limit, json)?);
            }
            let config = load_config(&config)?;
            let node = database_node(&config, database)?;
            runtime()?.block_on(async {
                let mut reader = Reader::open(&config, &who, &node)?;
                if let Some(id) = wait {
                    reader.wait_archived(&id, timeout).await?;
                }
                reader.query(search, limit, json).await
            })?;
        }
        ArchiveCmd::Audit {
            config,
            database,
            after,
            json,
            who,
        } => {
            let config = load_config(&config)?;
            let node = database_node(&config, database)?;
            runtime()?
                .block_on(async { Reader::open(&config, &who, &node)?.audit(after, json).await })?;
        }
        ArchiveCmd::Hold(cmd) => hold(cmd)?,
        ArchiveCmd::Export(args) => export(args)?,
        ArchiveCmd::Retention(RetentionCmd::PurgeNow { ask, timeout }) => {
            let ask = AskArgs {
                config: ask.config,
                database: ask.database,
                who: ask.who,
            };
            let config = load_config(&ask.config)?;
            let node = database_node(&config, ask.database.clone())?;
            // One session for the request and every poll after it.
            runtime()?.block_on(async {
                let mut reader = Reader::open(&config, &ask.who, &node)?;
                purge_now(&mut reader, timeout).await
            })?;
        }
        ArchiveCmd::Retention(RetentionCmd::Status { ask, json }) => {
            let state = ask_db(&ask, |token| {
                Msg::Records(RecordsMsg::RetentionStatus { token })
            })?;
            let Msg::Records(RecordsMsg::RetentionState {
                keep_days,
                purge_hour,
                purge,
                holds,
                exported_only,
                exports,
                ..
            }) = state
            else {
                return Err(Failure::Error("an unexpected answer".into()));
            };
            if json {
                let line = serde_json::json!({
                    "keep_days": keep_days,
                    "purge_hour_utc": purge_hour,
                    "purge": purge,
                    "holds": holds,
                    "purge_exported_only": exported_only,
                    "exports": exports,
                });
                println!("{line}");
                return Ok(());
            }
            println!(
                "retention: {keep_days} days; purge daily at {purge_hour:02}:00 UTC{}",
                if exported_only {
                    "; rows not exported are kept (purge_exported_only)"
                } else {
                    ""
                }
            );
            match purge {
                None => println!("no purge has run yet"),
                Some(p) => {
                    let state = match p.finished_at {
                        Some(end) => format!("finished {}", fmt_time(end)),
                        None => "running (or cut off by a restart: it resumes)".to_string(),
                    };
                    println!(
                        "last purge: started {}, {state}; cutoff {}; {} rows deleted, {} kept for a hold, {} kept as not exported",
                        fmt_time(p.started_at),
                        fmt_time(p.cutoff),
                        p.deleted,
                        p.held,
                        p.unexported
                    );
                    if let Some((a, b)) = p.range {
                        println!("  deleted messages from {} to {}", fmt_time(a), fmt_time(b));
                    }
                }
            }
            let active = holds.iter().filter(|h| h.released.is_none()).count();
            println!("holds: {active} active, {} released", holds.len() - active);
            println!("exports: {}", exports.len());
            for x in &exports {
                let users: Vec<String> = x.users.iter().map(|u| printable(u)).collect();
                println!(
                    "  {}  {} rows  users {}  messages {} .. {}  as of {}  by {} at {}",
                    x.manifest_sha256,
                    x.rows,
                    if users.is_empty() {
                        "(all)".to_string()
                    } else {
                        users.join(",")
                    },
                    x.since.map_or("the beginning".into(), fmt_time),
                    x.until.map_or("no end".into(), fmt_time),
                    fmt_time(x.as_of),
                    printable(&x.recorded_by),
                    fmt_time(x.recorded_at)
                );
            }
        }
    }
    Ok(())
}

/// Starts a purge and waits (polling the state) until a purge that began
/// at or after it has finished.
async fn purge_now(reader: &mut Reader, timeout: Duration) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let Msg::Records(RecordsMsg::RetentionState {
        purge: Some(begun), ..
    }) = reader
        .ask(|token| Msg::Records(RecordsMsg::PurgeNow { token }))
        .await?
    else {
        return Err(Failure::Error("an unexpected answer".into()));
    };
    if begun.finished_at.is_none() {
        println!(
            "purge running since {} (cutoff {}); waiting for it",
            fmt_time(begun.started_at),
            fmt_time(begun.cutoff)
        );
    }
    loop {
        if let Msg::Records(RecordsMsg::RetentionState { purge: Some(p), .. }) = reader
            .ask(|token| Msg::Records(RecordsMsg::RetentionStatus { token }))
            .await?
        {
            if p.started_at >= begun.started_at && p.finished_at.is_some() {
                println!(
                    "purge finished: {} rows deleted, {} kept for a hold, {} kept as not exported (cutoff {})",
                    p.deleted,
                    p.held,
                    p.unexported,
                    fmt_time(p.cutoff)
                );
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::NotWell(format!(
                "the purge did not finish within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One request to the database node, as the principal `ask.who`.
fn ask_db(ask: &AskArgs, request: impl FnOnce(Token) -> Msg) -> Result<Msg, Failure> {
    let config = load_config(&ask.config)?;
    let node = database_node(&config, ask.database.clone())?;
    runtime()?.block_on(async { Reader::open(&config, &ask.who, &node)?.ask(request).await })
}

fn hold(cmd: HoldCmd) -> Result<(), Failure> {
    match cmd {
        HoldCmd::Add {
            ask,
            name,
            users,
            rooms,
            since,
            until,
            reason,
        } => {
            let hold = LegalHold {
                name,
                users: users.into_iter().map(UserId::from).collect(),
                rooms: rooms.into_iter().map(RoomId::from).collect(),
                since,
                until,
                reason,
                ..LegalHold::default()
            };
            let config = load_config(&ask.config)?;
            let targets = hold_targets(&config, &ask, !hold.users.is_empty(), &hold.rooms)?;
            let answers = ask_each(&config, &ask.who, &targets, |token| {
                Msg::Records(RecordsMsg::HoldPlace {
                    token,
                    hold: Box::new(hold.clone()),
                })
            });
            let answers = already_placed(&config, &ask.who, &targets, &hold, answers);
            report_each(answers, "placed", |node, h| {
                println!(
                    "{node}: hold {} placed by {} at {}",
                    printable(&h.name),
                    printable(&h.placed_by),
                    fmt_time(h.placed_at)
                )
            })?;
        }
        HoldCmd::Release { ask, name, reason } => {
            let config = load_config(&ask.config)?;
            // Every node that may keep the hold: one that never had it
            // (a hold on rooms only is not on the database) says so.
            let targets = hold_targets(&config, &ask, true, &Default::default())?;
            let answers = ask_each(&config, &ask.who, &targets, |token| {
                Msg::Records(RecordsMsg::HoldRelease {
                    token,
                    name: name.clone(),
                    reason: reason.clone(),
                })
            });
            let missing = format!("no hold {name:?}");
            let had = answers
                .iter()
                .any(|(_, a)| !matches!(a, Err(Failure::NotWell(t)) if t.ends_with(&missing)));
            if !had {
                return Err(Failure::Error(format!("no node keeps hold {name:?}")));
            }
            let answers = answers
                .into_iter()
                .filter(|(_, a)| !matches!(a, Err(Failure::NotWell(t)) if t.ends_with(&missing)))
                .collect();
            report_each(answers, "released", |node, h| {
                println!(
                    "{node}: hold {} released; it stays on record",
                    printable(&h.name)
                )
            })?;
        }
        HoldCmd::List { ask, json } => {
            let config = load_config(&ask.config)?;
            let targets = hold_targets(&config, &ask, true, &Default::default())?;
            // Each node's holds; one hold kept the same on several nodes is
            // listed once, with the nodes that keep it.
            let mut listed: Vec<(LegalHold, Vec<String>)> = Vec::new();
            let mut failed = None;
            for (node, kind) in &targets {
                let answer =
                    ask_each(
                        &config,
                        &ask.who,
                        &[(node.clone(), *kind)],
                        |token| match kind {
                            ActorKind::ChatStore => {
                                Msg::Records(RecordsMsg::ChatRetentionStatus { token })
                            }
                            _ => Msg::Records(RecordsMsg::RetentionStatus { token }),
                        },
                    )
                    .pop()
                    .map(|(_, a)| a);
                let holds = match answer {
                    Some(Ok(Msg::Records(
                        RecordsMsg::RetentionState { holds, .. }
                        | RecordsMsg::ChatRetentionState { holds, .. },
                    ))) => holds,
                    Some(Err(f)) => {
                        eprintln!("{node}: holds not listed: {f}");
                        failed = Some(f);
                        continue;
                    }
                    _ => return Err(Failure::Error("an unexpected answer".into())),
                };
                // Each node stamps its own times: the same hold is the same
                // name, scope, reason and who.
                let key = |h: &LegalHold| {
                    let released = h
                        .released
                        .as_ref()
                        .map(|r| (r.by.clone(), r.reason.clone()));
                    let scope = (h.users.clone(), h.rooms.clone(), h.since, h.until);
                    (
                        h.name.clone(),
                        scope,
                        h.reason.clone(),
                        h.placed_by.clone(),
                        released,
                    )
                };
                for h in holds {
                    match listed.iter_mut().find(|(l, _)| key(l) == key(&h)) {
                        Some((_, nodes)) => nodes.push(node.clone()),
                        None => listed.push((h, vec![node.clone()])),
                    }
                }
            }
            for (h, nodes) in listed {
                if json {
                    let mut v = serde_json::to_value(&h).map_err(|e| e.to_string())?;
                    v["nodes"] = serde_json::json!(nodes);
                    println!("{v}");
                    continue;
                }
                let range = format!(
                    "{} .. {}",
                    h.since.map_or("the beginning".into(), fmt_time),
                    h.until.map_or("no end".into(), fmt_time)
                );
                let users: Vec<String> = h.users.iter().map(|u| printable(u)).collect();
                let rooms: Vec<String> = h.rooms.iter().map(|r| printable(r)).collect();
                let rooms = if rooms.is_empty() {
                    String::new()
                } else {
                    format!("  rooms {}", rooms.join(","))
                };
                println!(
                    "{}  {}  users {}{rooms}  messages {range}  placed by {} at {}: {}",
                    printable(&h.name),
                    if h.released.is_some() {
                        "RELEASED"
                    } else {
                        "ACTIVE"
                    },
                    users.join(","),
                    printable(&h.placed_by),
                    fmt_time(h.placed_at),
                    printable(&h.reason)
                );
                if let Some(r) = &h.released {
                    println!(
                        "    released by {} at {}: {}",
                        printable(&r.by),
                        fmt_time(r.at),
                        printable(&r.reason)
                    );
                }
                println!("    kept by {}", nodes.join(", "));
            }
            if let Some(f) = failed {
                return Err(f);
            }
        }
    }
    Ok(())
}

/// Writes an export page by page (as `archive query` reads, with the same
/// search), then the holds and the manifest, then has the database record
/// it. The database's clock before the first page is the export's `as_of`:
/// rows archived from then on may have been archived behind the pages
/// already read, so the record does not cover them.
fn export(args: ExportArgs) -> Result<(), Failure> {
    use holdfast::archive_export::Export;
    use holdfast_actors::core::protocol::ExportRecord;
    let ExportArgs {
        ask,
        users,
        all_users,
        since,
        until,
        format,
        out,
        force,
    } = args;
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return Err(Failure::Error(format!(
                "--since ({}) must be before --until ({})",
                fmt_time(s),
                fmt_time(u)
            )));
        }
    }
    let mut users: Vec<String> = users.into_iter().filter(|u| !u.is_empty()).collect();
    users.sort();
    users.dedup();
    // An empty list means everyone to the database: only --all-users
    // may ask for that.
    if users.is_empty() && !all_users {
        return Err(Failure::Error("--users names no user".into()));
    }
    if users.len() > SEARCH_USERS_MAX {
        return Err(Failure::Error(format!(
            "--users names {} users; an export takes at most {SEARCH_USERS_MAX}: split the list",
            users.len()
        )));
    }
    let config = load_config(&ask.config)?;
    let node = database_node(&config, ask.database.clone())?;
    // Refused before anything is asked of the cluster; nothing is
    // written until the database has answered, so that a cluster out of
    // reach leaves no folder to clean up.
    Export::check(&out, force).map_err(|e| Failure::Error(e.to_string()))?;
    let failed = |e: holdfast::archive_export::ExportError| {
        Failure::NotWell(format!("export to {} failed: {e}", out.display()))
    };
    runtime()?.block_on(async {
        let mut reader = Reader::open(&config, &ask.who, &node)?;
        let Msg::Records(RecordsMsg::RetentionState { holds, at, .. }) =
            reader.ask(|token| Msg::Records(RecordsMsg::RetentionStatus { token })).await?
        else {
            return Err(Failure::Error("an unexpected answer".into()));
        };
        let mut files = Export::create(&out, format, force).map_err(|e| match e {
            holdfast::archive_export::ExportError::NotEmpty(_) => Failure::Error(e.to_string()),
            e => failed(e),
        })?;
        let mut search = Search {
            users: users.iter().map(UserId::from).collect(),
            since,
            until,
            limit: SEARCH_PAGE_MAX,
            ..Search::default()
        };
        // A count on stderr at a terminal (scripts see only the result).
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut written = 0u64;
        loop {
            let page = search.clone();
            let Msg::Records(RecordsMsg::ArchiveFound { rows, next, .. }) = reader
                .ask(|token| Msg::Records(RecordsMsg::ArchiveSearch {
                    token,
                    search: page,
                }))
                .await?
            else {
                return Err(Failure::Error("an unexpected answer".into()));
            };
            let empty = rows.is_empty();
            for row in rows {
                files.row(&message(row)).map_err(failed)?;
                written += 1;
            }
            if progress {
                eprint!("\r{written} rows written");
            }
            match next {
                Some(after) if !empty => search.after = Some(after),
                _ => break,
            }
        }
        let query = serde_json::json!({
            "users": users,
            "all_users": users.is_empty(),
            "since": since,
            "since_utc": since.map(fmt_time),
            "until": until,
            "until_utc": until.map(fmt_time),
            "format": format.as_str(),
            "exported_by": ask.who,
            "database": node,
            "as_of": at,
            "as_of_utc": fmt_time(at),
            "exported_at_utc": fmt_time(holdfast::node::now_ms()),
        });
        if progress {
            eprintln!();
        }
        let done = files.finish(&holds, query).map_err(failed)?;
        let record = ExportRecord {
            manifest_sha256: done.manifest_sha256.clone(),
            users: users.iter().map(UserId::from).collect(),
            since,
            until,
            as_of: at,
            rows: done.rows,
            format: format.as_str().to_string(),
            ..ExportRecord::default()
        };
        let kinds: Vec<String> = done.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "exported {} rows ({}) and {} holds to {}: {} files, manifest SHA-256 {}",
            done.rows,
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            },
            holds.len(),
            out.display(),
            done.files + 1,
            done.manifest_sha256
        );
        match reader
            .ask(|token| Msg::Records(RecordsMsg::ExportDone {
                token,
                export: Box::new(record),
            }))
            .await
        {
            Ok(_) => {
                println!("recorded by {node}");
                Ok(())
            }
            Err(why) => {
                Err(Failure::NotWell(format!(
                    "the export is complete but {node} did not record it ({why}): with purge_exported_only its rows are kept; run the export again"
                )))
            }
        }
    })
}

/// The nodes a hold goes to: the database when it names users (their IM)
/// and the chat store when the cluster has group chat (the rooms' posts and
/// the users' posts).
fn hold_targets(
    config: &Config,
    ask: &AskArgs,
    users: bool,
    rooms: &std::collections::BTreeSet<RoomId>,
) -> Result<Vec<(String, ActorKind)>, Failure> {
    let mut targets = Vec::new();
    let has_db = config.nodes.iter().any(|n| n.has(Role::Database));
    if users && has_db {
        targets.push((
            database_node(config, ask.database.clone())?,
            ActorKind::Database,
        ));
    }
    let stores: Vec<String> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::ChatStore))
        .map(|n| n.name.clone())
        .collect();
    if stores.is_empty() && !rooms.is_empty() {
        return Err(Failure::Error(
            "the hold names rooms but the cluster has no chat store".into(),
        ));
    }
    targets.extend(stores.into_iter().map(|n| (n, ActorKind::ChatStore)));
    if targets.is_empty() {
        return Err(Failure::Error(
            "the cluster has neither a database nor a chat store".into(),
        ));
    }
    Ok(targets)
}

/// A node that refused the hold as existing already holds it when its
/// active hold of that name is the same one (a run again after another
/// node failed): that is a success, not a conflict.
fn already_placed(
    config: &Config,
    who: &str,
    targets: &[(String, ActorKind)],
    hold: &LegalHold,
    answers: Vec<(String, Result<Msg, Failure>)>,
) -> Vec<(String, Result<Msg, Failure>)> {
    let same = |h: &LegalHold| {
        h.name == hold.name
            && h.released.is_none()
            && (&h.users, &h.rooms, h.since, h.until, &h.reason)
                == (
                    &hold.users,
                    &hold.rooms,
                    hold.since,
                    hold.until,
                    &hold.reason,
                )
    };
    answers
        .into_iter()
        .map(|(node, answer)| {
            let exists =
                matches!(&answer, Err(Failure::NotWell(t)) if t.ends_with("exists and is active"));
            if !exists {
                return (node, answer);
            }
            let Some((_, kind)) = targets.iter().find(|(n, _)| *n == node) else {
                return (node, answer);
            };
            let status = match kind {
                ActorKind::ChatStore => {
                    Msg::Records(RecordsMsg::ChatRetentionStatus { token: Token(0) })
                }
                _ => Msg::Records(RecordsMsg::RetentionStatus { token: Token(0) }),
            };
            let listed = ask_each(
                config,
                who,
                &[(node.clone(), *kind)],
                |token| match status {
                    Msg::Records(RecordsMsg::ChatRetentionStatus { .. }) => {
                        Msg::Records(RecordsMsg::ChatRetentionStatus { token })
                    }
                    _ => Msg::Records(RecordsMsg::RetentionStatus { token }),
                },
            );
            let found = listed.into_iter().find_map(|(_, a)| match a {
                Ok(Msg::Records(
                    RecordsMsg::RetentionState { holds, .. }
                    | RecordsMsg::ChatRetentionState { holds, .. },
                )) => holds.into_iter().find(|h| same(h)),
                _ => None,
            });
            match found {
                Some(h) => (
                    node,
                    Ok(Msg::Records(RecordsMsg::HoldDone {
                        token: Token(0),
                        hold: Box::new(h),
                    })),
                ),
                None => (node, answer),
            }
        })
        .collect()
}

/// Sends one request to each node, each on its own connection: a node
/// that cannot be reached does not keep the others from answering.
fn ask_each(
    config: &Config,
    who: &str,
    targets: &[(String, ActorKind)],
    request: impl Fn(Token) -> Msg,
) -> Vec<(String, Result<Msg, Failure>)> {
    let Ok(rt) = runtime() else {
        return targets
            .iter()
            .map(|(n, _)| (n.clone(), Err(Failure::Error("no runtime".into()))))
            .collect();
    };
    targets
        .iter()
        .map(|(node, kind)| {
            let answer = rt.block_on(async {
                let mut reader = Reader::open(config, who, node)?;
                reader.kind = *kind;
                reader.ask(&request).await
            });
            (node.clone(), answer)
        })
        .collect()
}

/// Prints each node's answer to a hold request; fails (the worst exit
/// code: unreachable 3, refused 2, not confirmed 1) unless every node did
/// it, so that a hold placed on some nodes only is never reported as done.
fn report_each(
    answers: Vec<(String, Result<Msg, Failure>)>,
    what: &str,
    done: impl Fn(&str, &LegalHold),
) -> Result<(), Failure> {
    let mut worst: Option<Failure> = None;
    let mut failed = Vec::new();
    for (node, answer) in answers {
        let failure = match answer {
            Ok(Msg::Records(RecordsMsg::HoldDone { hold, .. })) => {
                done(&node, &hold);
                continue;
            }
            Ok(other) => Failure::NotWell(format!("{node}: unexpected answer {}", other.name())),
            Err(f) => f,
        };
        eprintln!("{node}: hold not {what}: {failure}");
        failed.push(node);
        if worst
            .as_ref()
            .is_none_or(|w| failure.exit_code() > w.exit_code())
        {
            worst = Some(failure);
        }
    }
    match worst {
        None => Ok(()),
        Some(w) => {
            let text = format!(
                "the hold is not {what} on {} (run the command again once they are reachable)",
                failed.join(", ")
            );
            Err(match w {
                Failure::NotWell(_) => Failure::NotWell(text),
                Failure::Error(_) => Failure::Error(text),
                Failure::Unreachable(_) => Failure::Unreachable(CannotReach::Nodes(text)),
            })
        }
    }
}

fn database_node(config: &Config, database: Option<String>) -> Result<String, String> {
    let dbs: Vec<_> = config
        .nodes
        .iter()
        .filter(|n| n.has(Role::Database))
        .filter(|n| database.as_ref().is_none_or(|d| *d == n.name))
        .collect();
    match dbs.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(format!("no database node {}", database.unwrap_or_default())),
        _ => Err("the config has several databases: choose one with --database".into()),
    }
}

/// A principal's connection to the database node, for one command's reads.
struct Reader {
    node: String,
    /// The actor asked: the database, or a chat store for holds.
    kind: ActorKind,
    session: Session,
    token: u64,
}

impl Reader {
    fn open(config: &Config, who: &str, node: &str) -> Result<Reader, Failure> {
        // The credential's role is presented whatever it is: the database
        // decides, and records a refusal too.
        let roles = [
            PrincipalRole::Auditor,
            PrincipalRole::User,
            PrincipalRole::Operator,
        ];
        Ok(Reader {
            node: node.to_string(),
            kind: ActorKind::Database,
            session: Session::open(config, who, &roles, node)?,
            token: 0,
        })
    }

    /// Sends one read and returns its answer (a refusal is an error).
    async fn ask(&mut self, request: impl FnOnce(Token) -> Msg) -> Result<Msg, Failure> {
        self.token += 1;
        let token = Token(self.token);
        let answer = self
            .session
            .ask(self.kind, request(token), PAGE_TIMEOUT, |m| {
                matches!(m,
                    Msg::Records(RecordsMsg::ArchiveFound { token: t, .. }
                    | RecordsMsg::ArchiveReads { token: t, .. }
                    | RecordsMsg::HoldDone { token: t, .. }
                    | RecordsMsg::ExportRecorded { token: t, .. }
                    | RecordsMsg::RetentionState { token: t, .. }
                    | RecordsMsg::ChatRetentionState { token: t, .. }
                    | RecordsMsg::ArchiveRefused { token: t, .. }) if *t == token)
            })
            .await?;
        match answer {
            Msg::Records(RecordsMsg::ArchiveRefused { refusal, .. }) => {
                let text = format!("{} refused: {refusal}", self.node);
                Err(match refusal {
                    // The request was refused for who asked: exit 2.
                    ArchiveRefusal::Forbidden(_) => Failure::Error(text),
                    _ => Failure::NotWell(text),
                })
            }
            other => Ok(other),
        }
    }

    /// Polls until a message with `id` is archived, up to `timeout`: not
    /// well (exit 1) if it is not by then. Each poll is a recorded read.
    async fn wait_archived(&mut self, id: &str, timeout: Duration) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let search = Search {
                id: Some(id.into()),
                limit: 1,
                ..Search::default()
            };
            if let Msg::Records(RecordsMsg::ArchiveFound { rows, .. }) = self
                .ask(|token| Msg::Records(RecordsMsg::ArchiveSearch { token, search }))
                .await?
            {
                if !rows.is_empty() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::NotWell(format!(
                    "{id} is not in the archive after {}",
                    humantime::format_duration(timeout)
                )));
            }
            tokio::time::sleep(pause.min(deadline - tokio::time::Instant::now())).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Prints the messages `search` finds, page by page, at most `limit`.
    async fn query(
        &mut self,
        mut search: Search,
        limit: Option<usize>,
        json: bool,
    ) -> Result<(), Failure> {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut printed = 0usize;
        while left > 0 {
            search.limit = left.min(SEARCH_PAGE_MAX as usize) as u32;
            let page = search.clone();
            let Msg::Records(RecordsMsg::ArchiveFound { rows, next, .. }) = self
                .ask(|token| {
                    Msg::Records(RecordsMsg::ArchiveSearch {
                        token,
                        search: page,
                    })
                })
                .await?
            else {
                unreachable!("only an ArchiveFound is wanted")
            };
            let rows: Vec<ArchivedMessage> = rows.into_iter().take(left).map(message).collect();
            print_messages(&rows, json)?;
            printed += rows.len();
            left -= rows.len();
            match next {
                Some(after) if !rows.is_empty() => search.after = Some(after),
                _ => break,
            }
        }
        print_count(printed, json);
        Ok(())
    }

    /// Prints the read trail after `after`, up to and with the entry of
    /// this command's own first read (the trail grows as it is read: each
    /// page is a read, recorded after it was scanned).
    async fn audit(&mut self, mut after: Option<u64>, json: bool) -> Result<(), Failure> {
        let mut end = None;
        let mut n = 0usize;
        loop {
            let Msg::Records(RecordsMsg::ArchiveReads {
                reads, recorded, ..
            }) = self
                .ask(|token| {
                    Msg::Records(RecordsMsg::ArchiveTrail {
                        token,
                        after,
                        limit: SEARCH_PAGE_MAX,
                    })
                })
                .await?
            else {
                unreachable!("only an ArchiveReads is wanted")
            };
            let first = end.is_none();
            let end = *end.get_or_insert(recorded);
            let mut last = None;
            for (seq, read) in reads.iter().take_while(|(seq, _)| *seq <= end) {
                println!("{}", read_line(*seq, read, json));
                n += 1;
                last = Some(*seq);
            }
            after = match last {
                Some(l) if l < end => Some(l),
                // Nothing before this command's own read: that one next.
                None if first && after.is_none_or(|a| a < end) => Some(end - 1),
                _ => break,
            };
        }
        if !json {
            eprintln!("{n} {}", if n == 1 { "read" } else { "reads" });
        }
        Ok(())
    }
}

/// An archived row as the command prints it.
fn message(r: Row) -> ArchivedMessage {
    ArchivedMessage {
        rowid: r.rowid,
        id: r.record.id.into(),
        kind: r.record.kind.as_str().to_string(),
        from: r.record.from.into(),
        to: r.record.to.into(),
        time: r.record.time,
        body: r.record.body,
        external: r.record.external,
        front_end: r.record.front_end,
        archived_at: r.archived_at,
        client_id: r.record.client_id.into(),
    }
}

fn print_messages(rows: &[ArchivedMessage], json: bool) -> Result<(), String> {
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(r).map_err(|e| e.to_string())?);
        } else {
            println!(
                "{}  {} -> {}  [{}]  {}",
                fmt_time(r.time),
                printable(&r.from),
                printable(&r.to),
                r.id,
                printable(&r.body)
            );
        }
    }
    Ok(())
}

fn print_count(n: usize, json: bool) {
    if !json {
        eprintln!("{n} {}", if n == 1 { "message" } else { "messages" });
    }
}

/// One entry of the read trail: a line of text, or of JSON.
fn read_line(seq: u64, r: &ArchiveRead, json: bool) -> String {
    if json {
        return serde_json::json!({
            "seq": seq, "at": r.at, "who": r.who, "what": r.what,
            "rows": r.rows, "refused": r.refused,
        })
        .to_string();
    }
    let what = match &r.what {
        ReadWhat::Messages(s) => {
            let mut parts = vec!["search".to_string()];
            if !s.users.is_empty() {
                let users: Vec<_> = s.users.iter().map(|u| printable(u)).collect();
                parts.push(format!("users={}", users.join(",")));
            }
            if let Some(i) = &s.id {
                parts.push(format!("id={}", printable(i)));
            }
            if let Some(t) = s.since {
                parts.push(format!("since={}", fmt_time(t)));
            }
            if let Some(t) = s.until {
                parts.push(format!("until={}", fmt_time(t)));
            }
            if let Some(t) = &s.text {
                parts.push(format!("text={:?}", printable(t)));
            }
            if let Some(a) = &s.after {
                parts.push(format!("after={},{}", fmt_time(a.time), printable(&a.id)));
            }
            parts.push(format!("limit={}", s.limit));
            parts.join(" ")
        }
        ReadWhat::Trail { after, limit } => match after {
            Some(a) => format!("trail after=#{a} limit={limit}"),
            None => format!("trail limit={limit}"),
        },
    };
    let outcome = match &r.refused {
        Some(why) => format!("REFUSED: {}", printable(why)),
        None => format!("{} rows", r.rows),
    };
    format!(
        "#{seq}  {}  {}  {what}  {outcome}",
        fmt_time(r.at),
        printable(&r.who)
    )
}

/// Offline `--wait`: polls a copy of an archive until it holds `id`.
fn wait_in_file(path: &Path, id: &str, timeout: Duration) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if path.exists() {
            let db = ArchiveDb::open_read_only(path).map_err(|e| e.to_string())?;
            if db.holds(id).map_err(|e| e.to_string())? {
                return Ok(());
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure::NotWell(format!(
                "{id} is not in the archive after {}",
                humantime::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Offline: the messages `search` finds in a copy of an archive file.
fn query_file(
    path: &Path,
    search: &Search,
    limit: Option<usize>,
    json: bool,
) -> Result<(), String> {
    let db = ArchiveDb::open_read_only(path).map_err(|e| e.to_string())?;
    let q = Query {
        limit,
        ..Query::of_search(search)
    };
    let rows = db.query(&q).map_err(|e| e.to_string())?;
    print_messages(&rows, json)?;
    print_count(rows.len(), json);
    Ok(())
}

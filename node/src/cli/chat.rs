//! `holdfast chat`: rooms, posts and history, as a chat user.

use super::common::{
    fmt_time, load_config, parse_duration, parse_time, printable, runtime, ConfigArg, Failure,
};
use clap::{Args, Subcommand};
use holdfast::chat_client::{ChatClient, ChatError};
use holdfast_actors::core::ids::{RoomId, UserId};
use holdfast_actors::core::protocol::chat::{ChatReject, Privacy, Room, RoomQuery};
use std::time::Duration;

#[derive(Args, Clone)]
pub(crate) struct ChatUser {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// The user, e.g. alice@corp.example.
    #[arg(long)]
    pub(crate) user: String,
    /// Use this Channel server instead of asking Lookup.
    #[arg(long)]
    pub(crate) channel: Option<String>,
    /// How long to wait for each answer of the cluster.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

impl ChatUser {
    /// This user's connection to the chat pool of `config`, through the
    /// Channel server asked for (or the one Lookup names).
    pub(crate) async fn connect(
        &self,
        config: &holdfast::config::Config,
    ) -> Result<ChatClient, ChatError> {
        ChatClient::connect(config, &self.user, self.channel.as_deref(), self.timeout).await
    }
}

/// An operator's connection for records management.
#[derive(Args, Clone)]
pub(crate) struct ChatOperator {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    /// Whose credential to present (an operator's).
    #[arg(long = "as", default_value = holdfast::tls::OPERATOR)]
    pub(crate) who: String,
    /// Use this Channel server instead of asking Lookup.
    #[arg(long)]
    pub(crate) channel: Option<String>,
    /// How long to wait for the answer of the cluster.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
}

/// Records management of rooms (operators only).
#[derive(Subcommand)]
pub(crate) enum RoomCmd {
    /// Disable a room: no joins and no posts (members are told it is
    /// disabled); its history is kept. Recorded for compliance.
    #[command(after_help = "Example: holdfast chat room disable -c cluster.toml --room project-x")]
    Disable {
        #[command(flatten)]
        ops: ChatOperator,
        /// The room to disable.
        #[arg(long)]
        room: String,
    },
    /// Enable a disabled room again.
    #[command(after_help = "Example: holdfast chat room enable -c cluster.toml --room project-x")]
    Enable {
        #[command(flatten)]
        ops: ChatOperator,
        /// The room to enable.
        #[arg(long)]
        room: String,
    },
    /// Clear a room's posts: all, or those posted before a time. Members
    /// no longer read them; their rows are deleted from the chat store
    /// (the compliance export keeps what was posted). Numbers are never
    /// reused. Recorded for compliance.
    #[command(
        after_help = "Example: holdfast chat room clear -c cluster.toml --room project-x --before 2026-11-22T10:00:00Z"
    )]
    Clear {
        #[command(flatten)]
        ops: ChatOperator,
        /// The room to clear.
        #[arg(long)]
        room: String,
        /// Only posts before this time: RFC 3339, or an age (30d).
        #[arg(long, value_parser = parse_time)]
        before: Option<u64>,
    },
}

/// Records management of posts (operators only).
#[derive(Subcommand)]
pub(crate) enum MessageCmd {
    /// Replace a post's text: members read the new text; the original is
    /// kept for compliance (in the export and the store's `replaced`
    /// table), never shown to members.
    #[command(
        after_help = "Example: holdfast chat message replace -c cluster.toml --id alice@corp.example-1f2e --text '[removed by the compliance team]'"
    )]
    Replace {
        #[command(flatten)]
        ops: ChatOperator,
        /// The post's id (`chat history --ids` shows them).
        #[arg(long)]
        id: String,
        /// The new text.
        #[arg(long)]
        text: String,
    },
}

/// Who a room holds and how it is seen (for `chat create` and `chat manage`).
#[derive(Args, Clone, Default)]
pub(crate) struct RoomArgs {
    /// open (anyone its category allows), closed (members; others find it)
    /// or secret (members only, unlisted).
    #[arg(long)]
    privacy: Option<String>,
    /// The room's description (what `chat search` also looks in).
    #[arg(long)]
    description: Option<String>,
    /// Invite new members (the room shows in their `chat invites`).
    #[arg(long)]
    invite: Option<bool>,
    /// Users to add as members (comma-separated; `user{1..5}@x` expands).
    #[arg(long, value_delimiter = ',')]
    members: Vec<String>,
    /// Users to add as managers (comma-separated).
    #[arg(long, value_delimiter = ',')]
    managers: Vec<String>,
    /// Make it an auditorium where only these users post.
    #[arg(long, value_delimiter = ',')]
    presenters: Vec<String>,
    /// Users to wall off the room (an ethical wall).
    #[arg(long, value_delimiter = ',')]
    deny: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum ChatCmd {
    /// Rooms the user is a member or manager of (`getassociations`).
    #[command(
        after_help = "Example: holdfast chat rooms -c cluster.toml --user alice@corp.example"
    )]
    Rooms {
        #[command(flatten)]
        who: ChatUser,
    },
    /// Rooms whose name or description contains TEXT that the user may
    /// know of (`chansrch`).
    #[command(
        after_help = "Example: holdfast chat search -c cluster.toml --user alice@corp.example deal"
    )]
    Search {
        #[command(flatten)]
        who: ChatUser,
        /// Text to look for in room names and descriptions.
        text: String,
    },
    /// Rooms the user is invited to and does not follow yet (`getinv`).
    #[command(
        after_help = "Example: holdfast chat invites -c cluster.toml --user alice@corp.example"
    )]
    Invites {
        #[command(flatten)]
        who: ChatUser,
    },
    /// Create a room in a category the user may create rooms in; the user
    /// manages it.
    #[command(
        after_help = "Example: holdfast chat create -c cluster.toml --user alice@corp.example --room project-x --category corp --members bob@corp.example"
    )]
    Create {
        #[command(flatten)]
        who: ChatUser,
        /// The new room's name.
        #[arg(long)]
        room: String,
        /// Its category (one the user may create rooms in).
        #[arg(long)]
        category: String,
        #[command(flatten)]
        spec: RoomArgs,
    },
    /// Change a room the user manages: add members, managers, presenters,
    /// walled-off users; set privacy, description, invitations.
    #[command(
        after_help = "Example: holdfast chat manage -c cluster.toml --user alice@corp.example --room project-x --members carl@corp.example"
    )]
    Manage {
        #[command(flatten)]
        who: ChatUser,
        /// The room to change (one the user manages).
        #[arg(long)]
        room: String,
        #[command(flatten)]
        spec: RoomArgs,
        /// Users to remove from members, managers and presenters.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// A room's description, members and the users in it now.
    #[command(
        after_help = "Example: holdfast chat show -c cluster.toml --user alice@corp.example --room general"
    )]
    Show {
        #[command(flatten)]
        who: ChatUser,
        /// The room to show.
        #[arg(long)]
        room: String,
    },
    /// Join rooms: print their backchat, then new posts as they come (for
    /// `--for`, or until interrupted). `bjoin` when several are given.
    #[command(
        after_help = "Example: holdfast chat join -c cluster.toml --user alice@corp.example --room general,project-x --for 1m"
    )]
    Join {
        #[command(flatten)]
        who: ChatUser,
        /// Rooms to join (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        room: Vec<String>,
        /// Stop after this long (e.g. 30s); default: until interrupted.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Follow a room (new content is signalled while not joined), or stop.
    #[command(
        after_help = "Example: holdfast chat follow -c cluster.toml --user alice@corp.example --room general"
    )]
    Follow {
        #[command(flatten)]
        who: ChatUser,
        /// The room to follow.
        #[arg(long)]
        room: String,
        /// Stop following it instead.
        #[arg(long)]
        stop: bool,
    },
    /// Post to a room; prints the post's sequence number once stored.
    #[command(
        after_help = "Example: holdfast chat post -c cluster.toml --user alice@corp.example --room general 'standup in 5'"
    )]
    Post {
        #[command(flatten)]
        who: ChatUser,
        /// The room to post to.
        #[arg(long)]
        room: String,
        /// The post's text.
        text: String,
    },
    /// A room's posts after a sequence number (default: the backchat).
    #[command(
        after_help = "Example: holdfast chat history -c cluster.toml --user alice@corp.example --room general --after 40"
    )]
    History {
        #[command(flatten)]
        who: ChatUser,
        /// The room to read.
        #[arg(long)]
        room: String,
        /// Posts after this sequence number (0: the last `chat_backchat`).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Show each post's id too (what `chat message replace` takes).
        #[arg(long)]
        ids: bool,
    },
    /// Records management of a room, as an operator: disable, enable,
    /// clear.
    #[command(after_help = "Example: holdfast chat room clear -c cluster.toml --room project-x")]
    Room {
        #[command(subcommand)]
        cmd: RoomCmd,
    },
    /// Records management of a post, as an operator: replace its text.
    #[command(
        after_help = "Example: holdfast chat message replace -c cluster.toml --id alice@corp.example-1f2e --text '[removed]'"
    )]
    Message {
        #[command(subcommand)]
        cmd: MessageCmd,
    },
    /// The chat store's retention: policy, last purge, holds; purge now.
    #[command(
        subcommand,
        after_help = "Example: holdfast chat retention status -c cluster.toml --as operator"
    )]
    Retention(super::chat_retention::ChatRetentionCmd),
}

/// Runs a chat command. How it fails decides the exit code (see
/// [`Failure`]'s conversion from [`ChatError`]): a node that cannot be
/// reached is exit 3, a chat store that did not confirm exit 1, a refusal
/// exit 2.
pub(crate) fn run(cmd: ChatCmd) -> Result<(), Failure> {
    match cmd {
        ChatCmd::Retention(cmd) => super::chat_retention::run(cmd),
        ChatCmd::Room { .. } | ChatCmd::Message { .. } => run_records(cmd),
        cmd => run_as(cmd),
    }
}

/// Runs a records command as the operator.
fn run_records(cmd: ChatCmd) -> Result<(), Failure> {
    use holdfast_actors::core::identity::Role;
    let connect = |ops: &ChatOperator| {
        let ops = ops.clone();
        async move {
            let config = load_config(&ops.config).map_err(ChatError::Other)?;
            ChatClient::connect_as(
                &config,
                &ops.who,
                Role::Operator,
                ops.channel.as_deref(),
                ops.timeout,
            )
            .await
        }
    };
    let rt = runtime()?;
    match cmd {
        ChatCmd::Room { cmd } => match cmd {
            RoomCmd::Disable { .. } | RoomCmd::Enable { .. } => {
                let disabled = matches!(cmd, RoomCmd::Disable { .. });
                let (RoomCmd::Disable { ops, room } | RoomCmd::Enable { ops, room }) = cmd else {
                    unreachable!("matched above")
                };
                let version = rt.block_on(async {
                    let mut c = connect(&ops).await?;
                    c.disable_room(&room, disabled).await
                })?;
                println!(
                    "{} {} (directory version {version})",
                    if disabled { "disabled" } else { "enabled" },
                    printable(&room)
                );
            }
            RoomCmd::Clear { ops, room, before } => {
                let through = rt.block_on(async {
                    let mut c = connect(&ops).await?;
                    c.clear_room(&room, before).await
                })?;
                let range = match before {
                    Some(b) => format!("posts before {} up to #{through}", fmt_time(b)),
                    None => format!("all posts up to #{through}"),
                };
                println!(
                    "cleared {} ({range}); their rows are being deleted, numbers are not reused",
                    printable(&room)
                );
            }
        },
        ChatCmd::Message {
            cmd: MessageCmd::Replace { ops, id, text },
        } => {
            let (room, seq) = rt.block_on(async {
                let mut c = connect(&ops).await?;
                c.replace_post(&id, &text).await
            })?;
            println!(
                "replaced post {} ({} #{seq}); the original is kept for compliance",
                printable(&id),
                printable(&room)
            );
        }
        _ => unreachable!("only records commands come here"),
    }
    Ok(())
}

fn run_as(cmd: ChatCmd) -> Result<(), Failure> {
    match cmd {
        ChatCmd::Room { .. } | ChatCmd::Message { .. } | ChatCmd::Retention(_) => {
            unreachable!("run dispatches them")
        }
        ChatCmd::Rooms { who } => print_rooms(&who, RoomQuery::Associations)?,
        ChatCmd::Search { who, text } => print_rooms(&who, RoomQuery::Search(text))?,
        ChatCmd::Invites { who } => print_rooms(&who, RoomQuery::Invitations)?,
        ChatCmd::Create {
            who,
            room,
            category,
            spec,
        } => {
            let info = Room {
                category,
                ..spec.apply(Room::default(), &[])?
            };
            let name = room.clone();
            let version =
                with_session(
                    &who,
                    |mut c| async move { c.save_room(&room, info, true).await },
                )?;
            println!(
                "created room {} (directory version {version})",
                printable(&name)
            );
        }
        ChatCmd::Manage {
            who,
            room,
            spec,
            remove,
        } => {
            let version = with_session(&who, |mut c| async move {
                // Read, change, save; a concurrent change makes us retry.
                for _ in 0..5 {
                    let current = c.room(&room).await?;
                    let info = spec.apply(current, &remove).map_err(ChatError::Other)?;
                    match c.save_room(&room, info, false).await {
                        Err(ChatError::Rejected {
                            reason: ChatReject::Conflict,
                            ..
                        }) => continue,
                        done => return done,
                    }
                }
                Err(ChatError::Other(format!(
                    "{room}: changed by others five times in a row; try again"
                )))
            })?;
            println!("saved (directory version {version})");
        }
        ChatCmd::Show { who, room } => {
            let (info, online) = with_session(&who, |mut c| async move {
                let info = c.room(&room).await?;
                let online = c.who(&room).await.unwrap_or_default();
                Ok((info, online))
            })?;
            println!(
                "{} room, category {:?}, {}{}",
                info.privacy.as_str(),
                info.category,
                if info.presenters.is_some() {
                    "auditorium"
                } else {
                    "normal"
                },
                if info.invite { ", invitations on" } else { "" }
            );
            if !info.description.is_empty() {
                println!("description: {}", printable(&info.description));
            }
            let list = |s: &std::collections::BTreeSet<UserId>| {
                s.iter().map(UserId::as_str).collect::<Vec<_>>().join(", ")
            };
            println!("managers:   {}", list(&info.managers));
            println!("members:    {}", list(&info.members));
            if let Some(p) = &info.presenters {
                println!("presenters: {}", list(p));
            }
            if !info.denied.is_empty() {
                println!("walled off: {}", list(&info.denied));
            }
            println!("online:     {}", online.join(", "));
        }
        ChatCmd::Join {
            who,
            room,
            duration,
        } => {
            let config = load_config(&who.config)?;
            runtime()?.block_on(async {
                let mut c = who.connect(&config).await?;
                let mut seen = std::collections::BTreeMap::new();
                for (r, (posts, latest)) in c
                    .bulk_join(&room.iter().map(RoomId::from).collect::<Vec<_>>())
                    .await?
                {
                    for (seq, p) in &posts {
                        println!("{} #{seq}  {}", printable(&r), show_post(p));
                    }
                    eprintln!("joined {r} (at #{latest})");
                    seen.insert(r, latest);
                }
                let until = duration.map(|d| tokio::time::Instant::now() + d);
                while until.is_none_or(|u| tokio::time::Instant::now() < u) {
                    // `next_post` waits up to the whole --timeout: never
                    // past --for.
                    let next = match until {
                        Some(u) => match tokio::time::timeout_at(u, c.next_post()).await {
                            Ok(next) => next?,
                            Err(_) => break,
                        },
                        None => c.next_post().await?,
                    };
                    match next {
                        Some((seq, p)) => {
                            let last = seen.entry(p.room.clone()).or_insert(0);
                            if seq > *last {
                                *last = seq;
                                println!("{} #{seq}  {}", printable(&p.room), show_post(&p));
                            }
                        }
                        // Quiet: sync, which keeps the session alive (the
                        // server closes silent ones) and fetches anything
                        // a lost relay held back.
                        None => {
                            for (r, after) in &seen {
                                c.sync(r, *after)?;
                            }
                        }
                    }
                }
                Ok::<(), ChatError>(())
            })?;
        }
        ChatCmd::Follow { who, room, stop } => {
            let r = room.clone();
            with_session(&who, |mut c| async move { c.follow(&r, !stop).await })?;
            println!(
                "{} {room}",
                if stop {
                    "no longer following"
                } else {
                    "following"
                }
            );
        }
        ChatCmd::Post { who, room, text } => {
            let config = load_config(&who.config)?;
            let seq = runtime()?.block_on(async {
                let mut c = who.connect(&config).await?;
                c.join(&room, 0).await?;
                c.post(&room, &text).await
            })?;
            println!("posted to {room} as #{seq}");
        }
        ChatCmd::History {
            who,
            room,
            after,
            ids,
        } => {
            let config = load_config(&who.config)?;
            let (posts, latest) = runtime()?.block_on(async {
                let mut c = who.connect(&config).await?;
                c.join(&room, after).await
            })?;
            for (seq, p) in &posts {
                if ids {
                    println!("#{seq}  {}  [id {}]", show_post(p), printable(&p.id));
                } else {
                    println!("#{seq}  {}", show_post(p));
                }
            }
            eprintln!("{} posts shown; {room} is at #{latest}", posts.len());
        }
    }
    Ok(())
}

/// A post as `chat join` and `chat history` print it: its time, author
/// and text, with other users' control characters escaped.
fn show_post(p: &holdfast_actors::core::protocol::chat::Post) -> String {
    format!(
        "{}  {}: {}",
        fmt_time(p.at),
        printable(&p.author),
        printable(&p.text)
    )
}

/// Connects as the user, opens a session and runs `f` with the client.
pub(crate) fn with_session<T, F, Fut>(who: &ChatUser, f: F) -> Result<T, Failure>
where
    F: FnOnce(ChatClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, ChatError>>,
{
    let config = load_config(&who.config)?;
    runtime()?.block_on(async {
        let mut c = who.connect(&config).await?;
        c.hello().await?;
        Ok(f(c).await?)
    })
}

fn print_rooms(who: &ChatUser, query: RoomQuery) -> Result<(), Failure> {
    let rooms = with_session(who, |mut c| async move { c.find(query).await })?;
    for r in &rooms {
        let role = match (r.manager, r.member) {
            (true, _) => ", manager",
            (false, true) => ", member",
            _ => "",
        };
        let cat = if r.category.is_empty() {
            String::new()
        } else {
            format!(", category {}", r.category)
        };
        println!(
            "{}  ({}{cat}{role})  {}",
            printable(&r.name),
            r.privacy.as_str(),
            printable(&r.description)
        );
    }
    eprintln!("{} rooms", rooms.len());
    Ok(())
}

impl RoomArgs {
    /// `room` with these changes, and `remove` taken out of its lists.
    fn apply(&self, mut room: Room, remove: &[String]) -> Result<Room, String> {
        let users = |list: &[String]| -> Result<Vec<UserId>, String> {
            let mut out = Vec::new();
            for u in list {
                out.extend(
                    holdfast::config::expand_users(u)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(UserId::from),
                );
            }
            Ok(out)
        };
        if let Some(p) = &self.privacy {
            room.privacy = Privacy::parse(p)
                .ok_or_else(|| format!("--privacy {p:?}: one of open, closed, secret"))?;
        }
        if let Some(d) = &self.description {
            room.description = d.clone();
        }
        if let Some(i) = self.invite {
            room.invite = i;
        }
        room.members.extend(users(&self.members)?);
        room.managers.extend(users(&self.managers)?);
        room.denied.extend(users(&self.deny)?);
        if !self.presenters.is_empty() {
            room.presenters
                .get_or_insert_with(Default::default)
                .extend(users(&self.presenters)?);
        }
        for u in users(remove)? {
            room.members.remove(&u);
            room.managers.remove(&u);
            if let Some(p) = &mut room.presenters {
                p.remove(&u);
            }
        }
        Ok(room)
    }
}

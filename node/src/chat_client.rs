//! A group chat client of a real cluster: finds a Channel server through
//! Lookup, joins rooms, posts, reads history. Used by `holdfast chat` and
//! the real-process tests.

use crate::client::{client_identity, connection_name};
use crate::config::Config;
use crate::reach::{answer_from, CannotReach};
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::{ActorKind, Addr, FileId, UserId};
use holdfast_actors::core::protocol::chat::ChatMsg;
use holdfast_actors::core::protocol::chat::{
    ChatReject, Post, Room, RoomId, RoomQuery, RoomSummary,
};
use holdfast_actors::core::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, CLIENT_OUTBOUND_CAPACITY};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct ChatClient {
    me: String,
    user: UserId,
    net: Arc<Network>,
    rx: mpsc::UnboundedReceiver<Envelope>,
    channel: String,
    timeout: Duration,
    web: Option<String>,
}

/// Why a chat request did not get the answer it wanted.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The Lookup instance, the Channel server or the Web service could
    /// not be reached, or did not answer in time.
    #[error(transparent)]
    CannotReach(#[from] CannotReach),
    /// The cluster refused the request about `what` (a room, a post, or
    /// nothing in particular when empty).
    #[error("{}{}", if .what.is_empty() { String::new() } else { format!("{}: ", .what) }, describe(.reason))]
    Rejected { what: String, reason: ChatReject },
    /// No credential for the user, or one for another role.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// The transport would not take the request: nothing was sent.
    #[error(transparent)]
    Transport(#[from] holdfast_host::transport::TransportError),
    #[error("{0} is not a Channel server of the config")]
    NotAChannel(String),
    #[error("the config has no Lookup instance (no group chat)")]
    NoLookup,
    #[error("no Channel server is in rotation; try again later")]
    NoChannelInRotation,
    #[error("the config has no web node")]
    NoWeb,
    /// The Web service refused an upload or a download.
    #[error("{what} refused: {reason}")]
    FileRefused { what: &'static str, reason: String },
    #[error("unexpected answer")]
    Unexpected,
    /// Said by the command line (no such room, a bad argument).
    #[error("{0}")]
    Other(String),
}

fn rejected(what: &str, reason: ChatReject) -> ChatError {
    ChatError::Rejected {
        what: what.to_string(),
        reason,
    }
}

fn describe(r: &ChatReject) -> String {
    match r {
        ChatReject::Forbidden(why) => format!("forbidden: {why}"),
        ChatReject::Busy => "the Channel server is busy (503); try again".into(),
        ChatReject::NoSuchRoom => "no such room".into(),
        ChatReject::NotAllowed => "not allowed in this room".into(),
        ChatReject::StoreUnavailable => "the chat store did not confirm in time; the request may or may not have taken effect: retry".into(),
        ChatReject::NotJoined => "not joined to this room".into(),
        ChatReject::RoomExists => "a room of that name exists already".into(),
        ChatReject::Conflict => "the room changed meanwhile; read it again and retry".into(),
        ChatReject::TooLarge { limit } => {
            format!("the post is too large: chat_post_max_bytes is {limit} bytes")
        }
        ChatReject::RoomDisabled => "the room is disabled: no joins, no posts".into(),
        ChatReject::NoSuchPost => "no such post (never posted, or cleared)".into(),
    }
}

impl ChatClient {
    /// Connects as `user`: asks the config's Lookup instances in turn for a
    /// Channel server (or uses `channel` when given). Inside a tokio runtime.
    pub async fn connect(
        config: &Config,
        user: &str,
        channel: Option<&str>,
        timeout: Duration,
    ) -> Result<ChatClient, ChatError> {
        // Presents `user`'s credential on TLS links; the connection's name
        // carries the principal (unguessable, so that no other client can
        // take over its replies).
        Self::connect_as(config, user, Role::User, channel, timeout).await
    }

    /// Connects as `user` in `role` (an operator, for records management).
    pub async fn connect_as(
        config: &Config,
        user: &str,
        role: Role,
        channel: Option<&str>,
        timeout: Duration,
    ) -> Result<ChatClient, ChatError> {
        let (principal, link) = client_identity(config, user, &[role])?;
        let me = connection_name(&principal);
        let (tx, rx) = mpsc::unbounded_channel();
        let peers = config
            .nodes
            .iter()
            .filter(|n| {
                config.pool.channels.contains(&n.name)
                    || config.pool.lookups.contains(&n.name)
                    || config.pool.web.contains(&n.name)
            })
            .map(|n| (n.name.clone(), n.listen))
            .collect();
        let net = Network::with_link(me.clone(), peers, tx, link, CLIENT_OUTBOUND_CAPACITY);
        let mut c = ChatClient {
            web: config.pool.web.first().cloned(),
            me,
            user: user.into(),
            net,
            rx,
            channel: String::new(),
            timeout,
        };
        if let Some(ch) = channel {
            if !config.pool.channels.iter().any(|c| c == ch) {
                return Err(ChatError::NotAChannel(ch.to_string()));
            }
            c.channel = ch.to_string();
            return Ok(c);
        }
        if config.pool.lookups.is_empty() {
            return Err(ChatError::NoLookup);
        }
        let mut unreached = Vec::new();
        for lookup in &config.pool.lookups {
            c.send(
                Addr::new(lookup.clone(), ActorKind::Lookup),
                Msg::Chat(ChatMsg::FindChannel),
            )?;
            match c
                .next(lookup, "FindChannel", |m| {
                    matches!(
                        m,
                        Msg::Chat(ChatMsg::ChannelAssigned { .. }) | Msg::Chat(ChatMsg::NoChannel)
                    )
                })
                .await
            {
                Ok(Msg::Chat(ChatMsg::ChannelAssigned { channel })) => {
                    c.channel = channel;
                    return Ok(c);
                }
                Ok(_) => return Err(ChatError::NoChannelInRotation),
                // This Lookup cannot be reached: the next one.
                Err(ChatError::CannotReach(e)) => unreached.push(e),
                Err(e) => return Err(e),
            }
        }
        Err(match <[CannotReach; 1]>::try_from(unreached) {
            Ok([only]) => only,
            Err(each) => CannotReach::NoneOf {
                what: "no Lookup instance answered".into(),
                each,
            },
        }
        .into())
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn send(&self, to: Addr, msg: Msg) -> Result<(), ChatError> {
        let env = Envelope {
            from: Addr::new(self.me.clone(), ActorKind::Client),
            to,
            id: 0,
            msg,
        };
        self.net.send(env).map_err(ChatError::from)
    }

    fn to_channel(&self, msg: Msg) -> Result<(), ChatError> {
        self.send(Addr::new(self.channel.clone(), ActorKind::Channel), msg)
    }

    /// The next envelope before `deadline` (`None`: none came), from
    /// `node`: an error at once when the connection to it cannot be made.
    async fn recv(
        &mut self,
        node: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Envelope>, CannotReach> {
        let env = answer_from(&self.net, node, deadline, self.rx.recv()).await?;
        if let Some(env) = &env {
            self.net.consumed(env);
        }
        Ok(env)
    }

    /// The next message `want` accepts from `node`, within the timeout;
    /// others that arrive meanwhile are dropped. No answer in time is
    /// `node` not answering `what`.
    async fn next(
        &mut self,
        node: &str,
        what: &str,
        want: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, ChatError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let Some(env) = self.recv(node, deadline).await? else {
                return Err(CannotReach::NoAnswer {
                    node: node.to_string(),
                    what: what.to_string(),
                    timeout: self.timeout,
                }
                .into());
            };
            if want(&env.msg) {
                return Ok(env.msg);
            }
        }
    }

    /// [`ChatClient::next`] from the Channel server.
    async fn channel_answer(
        &mut self,
        what: &str,
        want: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, ChatError> {
        let channel = self.channel.clone();
        self.next(&channel, what, want).await
    }

    /// No answer from the Channel server to `what` in time.
    fn channel_silent(&self, what: &str) -> ChatError {
        CannotReach::NoAnswer {
            node: self.channel.clone(),
            what: what.to_string(),
            timeout: self.timeout,
        }
        .into()
    }

    /// Joins `room` and returns the posts after `after` (`0`: the
    /// backchat) with the room's latest sequence number.
    pub async fn join(
        &mut self,
        room: &str,
        after: u64,
    ) -> Result<(Vec<(u64, Post)>, u64), ChatError> {
        self.to_channel(Msg::Chat(ChatMsg::ChatJoin {
            user: self.user.clone(),
            room: room.into(),
            after,
        }))?;
        let mut posts = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let channel = self.channel.clone();
        loop {
            let Some(env) = self.recv(&channel, deadline).await? else {
                return Err(self.channel_silent(&format!("the join of {room}")));
            };
            match env.msg {
                Msg::Chat(ChatMsg::ChatMessage { seq, post }) if post.room == room => {
                    posts.push((seq, post))
                }
                Msg::Chat(ChatMsg::ChatJoined { room: r, latest }) if r == room => {
                    posts.sort_by_key(|(s, _)| *s);
                    posts.dedup_by_key(|(s, _)| *s);
                    return Ok((posts, latest));
                }
                Msg::Chat(ChatMsg::ChatRejected {
                    room: r, reason, ..
                }) if r == room => return Err(rejected(room, reason)),
                _ => {}
            }
        }
    }

    /// `bjoin`: joins several rooms in one request; for each, the backchat
    /// (sorted) and the room's latest sequence number. Fails on the first
    /// refusal.
    #[allow(clippy::type_complexity)]
    pub async fn bulk_join(
        &mut self,
        rooms: &[RoomId],
    ) -> Result<std::collections::BTreeMap<RoomId, (Vec<(u64, Post)>, u64)>, ChatError> {
        use std::collections::BTreeMap;
        self.to_channel(Msg::Chat(ChatMsg::ChatBulkJoin {
            user: self.user.clone(),
            rooms: rooms.iter().map(|r| (r.clone(), 0)).collect(),
        }))?;
        let mut posts: BTreeMap<RoomId, Vec<(u64, Post)>> = BTreeMap::new();
        let mut done = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let channel = self.channel.clone();
        while done.len() < rooms.len() {
            let Some(env) = self.recv(&channel, deadline).await? else {
                return Err(self.channel_silent("the join"));
            };
            match env.msg {
                Msg::Chat(ChatMsg::ChatMessage { seq, post }) if rooms.contains(&post.room) => {
                    posts
                        .entry(post.room.clone())
                        .or_default()
                        .push((seq, post));
                }
                Msg::Chat(ChatMsg::ChatJoined { room, latest }) if rooms.contains(&room) => {
                    let mut got = posts.remove(&room).unwrap_or_default();
                    got.sort_by_key(|(s, _)| *s);
                    got.dedup_by_key(|(s, _)| *s);
                    done.insert(room, (got, latest));
                }
                Msg::Chat(ChatMsg::ChatRejected {
                    room,
                    reason,
                    post: None,
                }) if rooms.contains(&room) => return Err(rejected(&room, reason)),
                _ => {}
            }
        }
        Ok(done)
    }

    /// Posts to a joined room; returns its sequence number once stored.
    pub async fn post(&mut self, room: &str, text: &str) -> Result<u64, ChatError> {
        let id = crate::client::new_id(&self.user);
        self.to_channel(Msg::Chat(ChatMsg::ChatPost {
            post: id.as_str().into(),
            room: room.into(),
            text: text.to_string(),
        }))?;
        let what = format!("post {id} (it may or may not be stored)");
        match self
            .channel_answer(&what, |m| matches!(m, Msg::Chat(ChatMsg::ChatPosted { post, .. }) | Msg::Chat(ChatMsg::ChatRejected { post: Some(post), .. }) if *post == id))
            .await?
        {
            Msg::Chat(ChatMsg::ChatPosted { seq, .. }) => Ok(seq),
            Msg::Chat(ChatMsg::ChatRejected { reason, .. }) => Err(rejected(room, reason)),
            _ => unreachable!("filtered by channel_answer"),
        }
    }

    /// A token from the Channel server for an upload to a joined room (or a
    /// download of `file`).
    async fn file_token(
        &mut self,
        room: &str,
        download: Option<FileId>,
    ) -> Result<Vec<u8>, ChatError> {
        self.to_channel(Msg::Chat(ChatMsg::FileTokenRequest {
            room: room.into(),
            download,
        }))?;
        match self
            .channel_answer("FileTokenRequest", |m| matches!(m, Msg::Chat(ChatMsg::FileToken { room: r, .. }) | Msg::Chat(ChatMsg::ChatRejected { room: r, .. }) if r == room))
            .await?
        {
            Msg::Chat(ChatMsg::FileToken { token, .. }) => Ok(token),
            Msg::Chat(ChatMsg::ChatRejected { reason, .. }) => Err(rejected(room, reason)),
            _ => unreachable!("filtered by channel_answer"),
        }
    }

    fn web(&self) -> Result<Addr, ChatError> {
        self.web
            .clone()
            .map(|w| Addr::new(w, ActorKind::Web))
            .ok_or(ChatError::NoWeb)
    }

    async fn web_answer(&mut self, what: &str) -> Result<Msg, ChatError> {
        let web = self.web()?.node;
        self.next(&web, what, |m| {
            matches!(
                m,
                Msg::Chat(ChatMsg::FileStored { .. })
                    | Msg::Chat(ChatMsg::FileData { .. })
                    | Msg::Chat(ChatMsg::FileRefused { .. })
            )
        })
        .await
    }

    /// Uploads a file to a joined room; returns its id and size once stored.
    pub async fn upload(
        &mut self,
        room: &str,
        name: &str,
        data: Vec<u8>,
    ) -> Result<(FileId, u64), ChatError> {
        let token = self.file_token(room, None).await?;
        self.send(
            self.web()?,
            Msg::Chat(ChatMsg::FileUpload {
                token,
                name: name.to_string(),
                data,
            }),
        )?;
        match self.web_answer("the upload").await? {
            Msg::Chat(ChatMsg::FileStored { file, size, .. }) => Ok((file, size)),
            Msg::Chat(ChatMsg::FileRefused { reason }) => Err(ChatError::FileRefused {
                what: "upload",
                reason,
            }),
            _ => Err(ChatError::Unexpected),
        }
    }

    /// Downloads a file of a joined room: its name and content.
    pub async fn download(
        &mut self,
        room: &str,
        file: &str,
    ) -> Result<(String, Vec<u8>), ChatError> {
        let token = self.file_token(room, Some(file.into())).await?;
        self.send(self.web()?, Msg::Chat(ChatMsg::FileDownload { token }))?;
        match self.web_answer("the download").await? {
            Msg::Chat(ChatMsg::FileData { name, data, .. }) => Ok((name, data)),
            Msg::Chat(ChatMsg::FileRefused { reason }) => Err(ChatError::FileRefused {
                what: "download",
                reason,
            }),
            _ => Err(ChatError::Unexpected),
        }
    }

    /// Asks the Channel server for `msg`'s answer: the first message
    /// `want` accepts, or the refusal of a request about `room`.
    async fn request(
        &mut self,
        msg: Msg,
        room: &str,
        want: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, ChatError> {
        let what = msg.name();
        self.to_channel(msg)?;
        match self
            .channel_answer(what, |m| {
                want(m) || matches!(m, Msg::Chat(ChatMsg::ChatRejected { room: r, post: None, .. }) if r == room)
            })
            .await?
        {
            Msg::Chat(ChatMsg::ChatRejected { reason, .. }) => Err(rejected(room, reason)),
            m => Ok(m),
        }
    }

    /// [`Self::request`] for the answer `pick` takes apart: the first
    /// message it takes, or the refusal of a request about `room`.
    async fn ask<T>(
        &mut self,
        msg: Msg,
        room: &str,
        pick: impl Fn(&Msg) -> Option<T>,
    ) -> Result<T, ChatError> {
        let answer = self.request(msg, room, |m| pick(m).is_some()).await?;
        Ok(pick(&answer).expect("filtered by request"))
    }

    /// Sends a change of `room`; returns its new directory version.
    async fn room_saved(&mut self, msg: Msg, room: &str) -> Result<u64, ChatError> {
        self.ask(msg, room, |m| match m {
            Msg::Chat(ChatMsg::RoomSaved {
                room: r, version, ..
            }) if r == room => Some(*version),
            _ => None,
        })
        .await
    }

    /// Opens the session: the rooms the user follows, each with its latest
    /// sequence number.
    pub async fn hello(&mut self) -> Result<Vec<(RoomId, u64)>, ChatError> {
        let msg = Msg::Chat(ChatMsg::ChatHello {
            user: self.user.clone(),
        });
        self.ask(msg, "", |m| match m {
            Msg::Chat(ChatMsg::ChatWelcome { follows }) => Some(follows.clone()),
            _ => None,
        })
        .await
    }

    /// Creates a room (`create`) or changes one; returns its new version.
    pub async fn save_room(
        &mut self,
        room: &str,
        info: Room,
        create: bool,
    ) -> Result<u64, ChatError> {
        let msg = Msg::Chat(ChatMsg::RoomSave {
            room: room.into(),
            info: Box::new(info),
            create,
        });
        self.room_saved(msg, room).await
    }

    /// A room's description (members only for its members).
    pub async fn room(&mut self, room: &str) -> Result<Room, ChatError> {
        let msg = Msg::Chat(ChatMsg::RoomGet { room: room.into() });
        self.ask(msg, room, |m| match m {
            Msg::Chat(ChatMsg::RoomInfo { room: r, info }) if r == room => Some((**info).clone()),
            _ => None,
        })
        .await
    }

    /// `chansrch`, `getassociations` or `getinv`.
    pub async fn find(&mut self, query: RoomQuery) -> Result<Vec<RoomSummary>, ChatError> {
        let q = query.clone();
        self.ask(Msg::Chat(ChatMsg::RoomFind { query }), "", |m| match m {
            Msg::Chat(ChatMsg::RoomFound { query, rooms }) if *query == q => Some(rooms.clone()),
            _ => None,
        })
        .await
    }

    pub async fn follow(&mut self, room: &str, follow: bool) -> Result<(), ChatError> {
        let msg = Msg::Chat(ChatMsg::ChatFollow {
            room: room.into(),
            follow,
        });
        self.request(
            msg,
            room,
            |m| matches!(m, Msg::Chat(ChatMsg::ChatFollowed { room: r, .. }) if r == room),
        )
        .await
        .map(|_| ())
    }

    /// Who is in the room now, across the pool.
    pub async fn who(&mut self, room: &str) -> Result<Vec<UserId>, ChatError> {
        let msg = Msg::Chat(ChatMsg::ChatWho { room: room.into() });
        self.ask(msg, room, |m| match m {
            Msg::Chat(ChatMsg::ChatParticipants { room: r, users }) if r == room => {
                Some(users.clone())
            }
            _ => None,
        })
        .await
    }

    /// Disables (or enables) a room, as an operator; returns its new
    /// directory version.
    pub async fn disable_room(&mut self, room: &str, disabled: bool) -> Result<u64, ChatError> {
        let msg = Msg::Chat(ChatMsg::RoomDisable {
            room: room.into(),
            disabled,
        });
        self.room_saved(msg, room).await
    }

    /// Clears a room's posts (those before `before`, ms, if given), as an
    /// operator; returns the last number the clear covers.
    pub async fn clear_room(&mut self, room: &str, before: Option<u64>) -> Result<u64, ChatError> {
        let msg = Msg::Chat(ChatMsg::RoomClear {
            room: room.into(),
            before,
        });
        self.ask(msg, room, |m| match m {
            Msg::Chat(ChatMsg::RoomCleared { room: r, through }) if r == room => Some(*through),
            _ => None,
        })
        .await
    }

    /// Replaces a post's text, as an operator; returns its room and number.
    pub async fn replace_post(
        &mut self,
        post: &str,
        text: &str,
    ) -> Result<(RoomId, u64), ChatError> {
        self.to_channel(Msg::Chat(ChatMsg::PostReplace {
            post: post.into(),
            text: text.to_string(),
        }))?;
        match self
            .channel_answer("PostReplace", |m| matches!(m, Msg::Chat(ChatMsg::PostReplaced { post: p, .. }) | Msg::Chat(ChatMsg::ChatRejected { post: Some(p), .. }) if p == post))
            .await?
        {
            Msg::Chat(ChatMsg::PostReplaced { room, seq, .. }) => Ok((room, seq)),
            Msg::Chat(ChatMsg::ChatRejected { reason, .. }) => Err(rejected(&format!("post {post}"), reason)),
            _ => unreachable!("filtered by channel_answer"),
        }
    }

    /// Asks for the posts of a joined room after `after` (they arrive as
    /// posts).
    pub fn sync(&self, room: &str, after: u64) -> Result<(), ChatError> {
        self.to_channel(Msg::Chat(ChatMsg::ChatSync {
            room: room.into(),
            after,
        }))
    }

    /// Waits for the next post of any joined room, up to the timeout
    /// (`None`: quiet); an error when the Channel server cannot be
    /// reached.
    pub async fn next_post(&mut self) -> Result<Option<(u64, Post)>, ChatError> {
        match self
            .channel_answer("", |m| matches!(m, Msg::Chat(ChatMsg::ChatMessage { .. })))
            .await
        {
            Ok(Msg::Chat(ChatMsg::ChatMessage { seq, post })) => Ok(Some((seq, post))),
            Err(ChatError::CannotReach(CannotReach::NoAnswer { .. })) => Ok(None),
            Err(e) => Err(e),
            Ok(_) => unreachable!("filtered by channel_answer"),
        }
    }
}

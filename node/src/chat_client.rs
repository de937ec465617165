//! A group chat client of a real cluster: finds a Channel server through
//! Lookup, joins rooms, posts, reads history. Used by `holdfast chat` and
//! the real-process tests.

use crate::client::{client_identity, connection_name};
use crate::config::Config;
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::{ActorKind, Addr};
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
    user: String,
    net: Arc<Network>,
    rx: mpsc::UnboundedReceiver<Envelope>,
    channel: String,
    timeout: Duration,
    web: Option<String>,
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
    ) -> Result<ChatClient, String> {
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
    ) -> Result<ChatClient, String> {
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
            user: user.to_string(),
            net,
            rx,
            channel: String::new(),
            timeout,
        };
        if let Some(ch) = channel {
            if !config.pool.channels.iter().any(|c| c == ch) {
                return Err(format!("{ch} is not a Channel server of the config"));
            }
            c.channel = ch.to_string();
            return Ok(c);
        }
        if config.pool.lookups.is_empty() {
            return Err("the config has no Lookup instance (no group chat)".into());
        }
        for lookup in &config.pool.lookups {
            c.send(
                Addr::new(lookup.clone(), ActorKind::Lookup),
                Msg::Chat(ChatMsg::FindChannel),
            )?;
            match c
                .next(|m| {
                    matches!(
                        m,
                        Msg::Chat(ChatMsg::ChannelAssigned { .. }) | Msg::Chat(ChatMsg::NoChannel)
                    )
                })
                .await
            {
                Some(Msg::Chat(ChatMsg::ChannelAssigned { channel })) => {
                    c.channel = channel;
                    return Ok(c);
                }
                Some(_) => return Err("no Channel server is in rotation; try again later".into()),
                None => continue, // this Lookup did not answer: the next one
            }
        }
        Err("no Lookup instance answered".into())
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn send(&self, to: Addr, msg: Msg) -> Result<(), String> {
        let env = Envelope {
            from: Addr::new(self.me.clone(), ActorKind::Client),
            to,
            id: 0,
            msg,
        };
        self.net.send(env).map_err(|e| e.to_string())
    }

    fn to_channel(&self, msg: Msg) -> Result<(), String> {
        self.send(Addr::new(self.channel.clone(), ActorKind::Channel), msg)
    }

    /// The next message `want` accepts, within the timeout; others that
    /// arrive meanwhile are dropped.
    async fn next(&mut self, want: impl Fn(&Msg) -> bool) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let env = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .ok()??;
            self.net.consumed(&env);
            if want(&env.msg) {
                return Some(env.msg);
            }
        }
    }

    /// Joins `room` and returns the posts after `after` (`0`: the
    /// backchat) with the room's latest sequence number.
    pub async fn join(
        &mut self,
        room: &str,
        after: u64,
    ) -> Result<(Vec<(u64, Post)>, u64), String> {
        self.to_channel(Msg::Chat(ChatMsg::ChatJoin {
            user: self.user.clone(),
            room: room.to_string(),
            after,
        }))?;
        let mut posts = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let Ok(Some(env)) = tokio::time::timeout_at(deadline, self.rx.recv()).await else {
                return Err(format!("{} did not answer in time", self.channel));
            };
            self.net.consumed(&env);
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
                }) if r == room => return Err(format!("{room}: {}", describe(&reason))),
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
        rooms: &[String],
    ) -> Result<std::collections::BTreeMap<String, (Vec<(u64, Post)>, u64)>, String> {
        use std::collections::BTreeMap;
        self.to_channel(Msg::Chat(ChatMsg::ChatBulkJoin {
            user: self.user.clone(),
            rooms: rooms.iter().map(|r| (r.clone(), 0)).collect(),
        }))?;
        let mut posts: BTreeMap<String, Vec<(u64, Post)>> = BTreeMap::new();
        let mut done = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        while done.len() < rooms.len() {
            let Ok(Some(env)) = tokio::time::timeout_at(deadline, self.rx.recv()).await else {
                return Err(format!("{} did not answer in time", self.channel));
            };
            self.net.consumed(&env);
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
                }) if rooms.contains(&room) => {
                    return Err(format!("{room}: {}", describe(&reason)))
                }
                _ => {}
            }
        }
        Ok(done)
    }

    /// Posts to a joined room; returns its sequence number once stored.
    pub async fn post(&mut self, room: &str, text: &str) -> Result<u64, String> {
        let id = crate::client::new_id(&self.user);
        self.to_channel(Msg::Chat(ChatMsg::ChatPost {
            post: id.clone(),
            room: room.to_string(),
            text: text.to_string(),
        }))?;
        match self
            .next(|m| matches!(m, Msg::Chat(ChatMsg::ChatPosted { post, .. }) | Msg::Chat(ChatMsg::ChatRejected { post: Some(post), .. }) if *post == id))
            .await
        {
            Some(Msg::Chat(ChatMsg::ChatPosted { seq, .. })) => Ok(seq),
            Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. })) => Err(format!("{room}: {}", describe(&reason))),
            _ => Err(format!("no answer in time for post {id}: it may or may not be stored")),
        }
    }

    /// A token from the Channel server for an upload to a joined room (or a
    /// download of `file`).
    async fn file_token(
        &mut self,
        room: &str,
        download: Option<String>,
    ) -> Result<Vec<u8>, String> {
        self.to_channel(Msg::Chat(ChatMsg::FileTokenRequest {
            room: room.to_string(),
            download,
        }))?;
        match self
            .next(|m| matches!(m, Msg::Chat(ChatMsg::FileToken { room: r, .. }) | Msg::Chat(ChatMsg::ChatRejected { room: r, .. }) if r == room))
            .await
        {
            Some(Msg::Chat(ChatMsg::FileToken { token, .. })) => Ok(token),
            Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. })) => Err(format!("{room}: {}", describe(&reason))),
            _ => Err(format!("{} gave no file token in time", self.channel)),
        }
    }

    fn web(&self) -> Result<Addr, String> {
        self.web
            .clone()
            .map(|w| Addr::new(w, ActorKind::Web))
            .ok_or_else(|| "the config has no web node".to_string())
    }

    async fn web_answer(&mut self) -> Result<Msg, String> {
        self.next(|m| {
            matches!(
                m,
                Msg::Chat(ChatMsg::FileStored { .. })
                    | Msg::Chat(ChatMsg::FileData { .. })
                    | Msg::Chat(ChatMsg::FileRefused { .. })
            )
        })
        .await
        .ok_or_else(|| "the Web service did not answer in time".to_string())
    }

    /// Uploads a file to a joined room; returns its id and size once stored.
    pub async fn upload(
        &mut self,
        room: &str,
        name: &str,
        data: Vec<u8>,
    ) -> Result<(String, u64), String> {
        let token = self.file_token(room, None).await?;
        self.send(
            self.web()?,
            Msg::Chat(ChatMsg::FileUpload {
                token,
                name: name.to_string(),
                data,
            }),
        )?;
        match self.web_answer().await? {
            Msg::Chat(ChatMsg::FileStored { file, size, .. }) => Ok((file, size)),
            Msg::Chat(ChatMsg::FileRefused { reason }) => Err(format!("upload refused: {reason}")),
            _ => Err("unexpected answer".into()),
        }
    }

    /// Downloads a file of a joined room: its name and content.
    pub async fn download(&mut self, room: &str, file: &str) -> Result<(String, Vec<u8>), String> {
        let token = self.file_token(room, Some(file.to_string())).await?;
        self.send(self.web()?, Msg::Chat(ChatMsg::FileDownload { token }))?;
        match self.web_answer().await? {
            Msg::Chat(ChatMsg::FileData { name, data, .. }) => Ok((name, data)),
            Msg::Chat(ChatMsg::FileRefused { reason }) => {
                Err(format!("download refused: {reason}"))
            }
            _ => Err("unexpected answer".into()),
        }
    }

    /// Asks the Channel server for `msg`'s answer: the first message
    /// `want` accepts, or the refusal of a request about `room`.
    async fn request(
        &mut self,
        msg: Msg,
        room: &str,
        want: impl Fn(&Msg) -> bool,
    ) -> Result<Msg, String> {
        let what = msg.name();
        self.to_channel(msg)?;
        match self
            .next(|m| {
                want(m) || matches!(m, Msg::Chat(ChatMsg::ChatRejected { room: r, post: None, .. }) if r == room)
            })
            .await
        {
            Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. })) if room.is_empty() => Err(describe(&reason)),
            Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. })) => Err(format!("{room}: {}", describe(&reason))),
            Some(m) => Ok(m),
            None => Err(format!("{} did not answer {what} in time", self.channel)),
        }
    }

    /// Opens the session: the rooms the user follows, each with its latest
    /// sequence number.
    pub async fn hello(&mut self) -> Result<Vec<(RoomId, u64)>, String> {
        let msg = Msg::Chat(ChatMsg::ChatHello {
            user: self.user.clone(),
        });
        match self
            .request(msg, "", |m| {
                matches!(m, Msg::Chat(ChatMsg::ChatWelcome { .. }))
            })
            .await?
        {
            Msg::Chat(ChatMsg::ChatWelcome { follows }) => Ok(follows),
            _ => unreachable!("filtered by request"),
        }
    }

    /// Creates a room (`create`) or changes one; returns its new version.
    pub async fn save_room(&mut self, room: &str, info: Room, create: bool) -> Result<u64, String> {
        let msg = Msg::Chat(ChatMsg::RoomSave {
            room: room.to_string(),
            info: Box::new(info),
            create,
        });
        match self
            .request(
                msg,
                room,
                |m| matches!(m, Msg::Chat(ChatMsg::RoomSaved { room: r, .. }) if r == room),
            )
            .await?
        {
            Msg::Chat(ChatMsg::RoomSaved { version, .. }) => Ok(version),
            _ => unreachable!("filtered by request"),
        }
    }

    /// A room's description (members only for its members).
    pub async fn room(&mut self, room: &str) -> Result<Room, String> {
        let msg = Msg::Chat(ChatMsg::RoomGet {
            room: room.to_string(),
        });
        match self
            .request(
                msg,
                room,
                |m| matches!(m, Msg::Chat(ChatMsg::RoomInfo { room: r, .. }) if r == room),
            )
            .await?
        {
            Msg::Chat(ChatMsg::RoomInfo { info, .. }) => Ok(*info),
            _ => unreachable!("filtered by request"),
        }
    }

    /// `chansrch`, `getassociations` or `getinv`.
    pub async fn find(&mut self, query: RoomQuery) -> Result<Vec<RoomSummary>, String> {
        let q = query.clone();
        match self
            .request(
                Msg::Chat(ChatMsg::RoomFind { query }),
                "",
                |m| matches!(m, Msg::Chat(ChatMsg::RoomFound { query, .. }) if *query == q),
            )
            .await?
        {
            Msg::Chat(ChatMsg::RoomFound { rooms, .. }) => Ok(rooms),
            _ => unreachable!("filtered by request"),
        }
    }

    pub async fn follow(&mut self, room: &str, follow: bool) -> Result<(), String> {
        let msg = Msg::Chat(ChatMsg::ChatFollow {
            room: room.to_string(),
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
    pub async fn who(&mut self, room: &str) -> Result<Vec<String>, String> {
        let msg = Msg::Chat(ChatMsg::ChatWho {
            room: room.to_string(),
        });
        match self
            .request(
                msg,
                room,
                |m| matches!(m, Msg::Chat(ChatMsg::ChatParticipants { room: r, .. }) if r == room),
            )
            .await?
        {
            Msg::Chat(ChatMsg::ChatParticipants { users, .. }) => Ok(users),
            _ => unreachable!("filtered by request"),
        }
    }

    /// Disables (or enables) a room, as an operator; returns its new
    /// directory version.
    pub async fn disable_room(&mut self, room: &str, disabled: bool) -> Result<u64, String> {
        let msg = Msg::Chat(ChatMsg::RoomDisable {
            room: room.to_string(),
            disabled,
        });
        match self
            .request(
                msg,
                room,
                |m| matches!(m, Msg::Chat(ChatMsg::RoomSaved { room: r, .. }) if r == room),
            )
            .await?
        {
            Msg::Chat(ChatMsg::RoomSaved { version, .. }) => Ok(version),
            _ => unreachable!("filtered by request"),
        }
    }

    /// Clears a room's posts (those before `before`, ms, if given), as an
    /// operator; returns the last number the clear covers.
    pub async fn clear_room(&mut self, room: &str, before: Option<u64>) -> Result<u64, String> {
        let msg = Msg::Chat(ChatMsg::RoomClear {
            room: room.to_string(),
            before,
        });
        match self
            .request(
                msg,
                room,
                |m| matches!(m, Msg::Chat(ChatMsg::RoomCleared { room: r, .. }) if r == room),
            )
            .await?
        {
            Msg::Chat(ChatMsg::RoomCleared { through, .. }) => Ok(through),
            _ => unreachable!("filtered by request"),
        }
    }

    /// Replaces a post's text, as an operator; returns its room and number.
    pub async fn replace_post(&mut self, post: &str, text: &str) -> Result<(String, u64), String> {
        self.to_channel(Msg::Chat(ChatMsg::PostReplace {
            post: post.to_string(),
            text: text.to_string(),
        }))?;
        match self
            .next(|m| matches!(m, Msg::Chat(ChatMsg::PostReplaced { post: p, .. }) | Msg::Chat(ChatMsg::ChatRejected { post: Some(p), .. }) if p == post))
            .await
        {
            Some(Msg::Chat(ChatMsg::PostReplaced { room, seq, .. })) => Ok((room, seq)),
            Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. })) => Err(format!("post {post}: {}", describe(&reason))),
            _ => Err(format!("{} did not answer PostReplace in time", self.channel)),
        }
    }

    /// Asks for the posts of a joined room after `after` (they arrive as
    /// posts).
    pub fn sync(&self, room: &str, after: u64) -> Result<(), String> {
        self.to_channel(Msg::Chat(ChatMsg::ChatSync {
            room: room.to_string(),
            after,
        }))
    }

    /// Waits for the next post of any joined room.
    pub async fn next_post(&mut self) -> Option<(u64, Post)> {
        match self
            .next(|m| matches!(m, Msg::Chat(ChatMsg::ChatMessage { .. })))
            .await
        {
            Some(Msg::Chat(ChatMsg::ChatMessage { seq, post })) => Some((seq, post)),
            _ => None,
        }
    }
}

//! Group chat in the simulator: the chat clients' workload.
//!
//! Every chat user is its own client (its own connection, hence its own
//! session on a Channel server). It asks a Lookup instance for a Channel
//! server, joins every room of its workload, posts at a Poisson rate, and
//! keeps per room the last sequence number it has delivered: posts are
//! delivered to the "user" strictly in order, a gap is asked for again
//! (`ChatSync`), and a keep-alive join every `sync` period both catches up
//! and proves the server alive — a server that stops answering sends the
//! client back to Lookup. Everything the clients saw is recorded for the
//! checker ([`crate::oracle::chat_checker`]).
//!
//! In a `managed` workload the rooms do not exist at the start: the first
//! user creates them (closed and secret in turn) through whatever Channel
//! server it has, and everyone else's joins are refused as "no such room"
//! until the change has reached their server — then the next keep-alive
//! joins. A creation whose answer was lost is retried and found to exist.

use crate::host::alarm::Alarm;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
use crate::oracle::chat_log::{
    chat_rooms, chat_users, file_content, is_file_content, ClearRecord, DisableRecord, FileRecord,
    PostOp, PostOutcome, Receipt, ReplaceRecord, SharedChatLog,
};
use crate::scenario::ChatWorkload;
use crate::seeds::{self, Purpose};
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::chat::ChatMsg;
use holdfast_actors::core::protocol::chat::{ChatReject, Post, Privacy, Room};
use holdfast_actors::core::protocol::{Envelope, Msg};
use holdfast_host::transport::{Network, DEFAULT_OUTBOUND_CAPACITY};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The simulated node all chat clients run on.
pub const CHAT_CLIENT_NODE: &str = "chat-clients";
/// How long a client waits for Lookup before asking another instance.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Gap repairs per room are asked at most this often.
const SYNC_BACKOFF: Duration = Duration::from_secs(2);

pub struct ChatClientSpec {
    pub lookups: Vec<SocketAddr>,
    pub lookup_names: Vec<String>,
    /// Channel servers' and Web nodes' addresses.
    pub channels: BTreeMap<String, SocketAddr>,
    pub web: Vec<String>,
    pub workloads: Vec<ChatWorkload>,
    pub domain: String,
    pub seed: u64,
    pub epoch: Instant,
    pub link: Arc<FlowLink>,
}

/// The category the first user of managed chat workload `w` creates its
/// rooms in (the runner configures it, with the workload's wall).
pub fn managed_category(w: usize) -> String {
    format!("workload{w}")
}

pub async fn run_chat_clients(spec: Arc<ChatClientSpec>, log: SharedChatLog) {
    let mut tasks = Vec::new();
    for (w, wl) in spec.workloads.iter().enumerate() {
        let users = chat_users(w, wl.users, &spec.domain);
        let rooms = chat_rooms(w, wl.rooms);
        let members: BTreeSet<String> = users.iter().cloned().collect();
        for (i, user) in users.iter().enumerate() {
            let walled = i as u64 >= wl.users - wl.walled;
            let creator = wl.managed && i == 0;
            let client = ChatClient {
                spec: spec.clone(),
                wl: wl.clone(),
                // The connection's name carries the user's principal.
                me: Principal::new(user.clone(), Role::User)
                    .client_name(&format!("c{w}u{}", i + 1)),
                user: user.clone(),
                rooms: rooms.clone(),
                walled,
                log: log.clone(),
                rng: seeds::stream(spec.seed, Purpose::ChatClient, w, i),
                files_sent: 0,
                pending_rooms: BTreeMap::new(),
                creates: creator.then(|| Creates {
                    category: managed_category(w),
                    members: members.clone(),
                    done: BTreeSet::new(),
                }),
                unanswered: BTreeMap::new(),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        if wl.records.any() {
            tasks.push(tokio::spawn(run_operator(
                spec.clone(),
                wl.clone(),
                w,
                log.clone(),
            )));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    std::future::pending::<()>().await;
}

#[derive(Default)]
struct RoomState {
    joined: bool,
    /// Left for one keep-alive period (churn): not rejoined until then.
    away: bool,
    baseline_set: bool,
    delivered_upto: u64,
    highest_seen: u64,
    buffered: BTreeMap<u64, Post>,
    last_sync: Option<Instant>,
    refused: bool,
    /// Numbers the store said hold no post (cleared): read, not owed.
    skipped: BTreeSet<u64>,
    /// The server said the room is disabled (its subscription ended).
    disabled: bool,
}

struct ChatClient {
    spec: Arc<ChatClientSpec>,
    wl: ChatWorkload,
    me: String,
    user: String,
    rooms: Vec<String>,
    walled: bool,
    log: SharedChatLog,
    rng: ChaCha8Rng,
    files_sent: u64,
    /// Uploads waiting for the Web service: file name → room.
    pending_rooms: BTreeMap<String, String>,
    /// The rooms this client creates (the first user of a managed
    /// workload).
    creates: Option<Creates>,
    /// Posts sent and not answered yet (`retry_posts`): id → room, text.
    unanswered: BTreeMap<String, (String, String)>,
}

struct Creates {
    category: String,
    members: BTreeSet<String>,
    /// Rooms known to exist (created, or found to exist).
    done: BTreeSet<String>,
}

impl ChatClient {
    fn addr(&self) -> Addr {
        Addr::new(self.me.clone(), ActorKind::Client)
    }

    fn send(&self, net: &Arc<Network>, to: Addr, msg: Msg) {
        let env = Envelope {
            from: self.addr(),
            to,
            id: 0,
            msg,
        };
        if let Err(e) = net.send(env) {
            tracing::debug!(client = %self.me, error = %e, "chat client could not send");
        }
    }

    /// Sends `msg` to the Channel server on node `channel`.
    fn to_channel(&self, net: &Arc<Network>, channel: impl Into<String>, msg: ChatMsg) {
        self.send(net, Addr::new(channel, ActorKind::Channel), Msg::Chat(msg));
    }

    fn join_all(&self, net: &Arc<Network>, channel: &str, state: &BTreeMap<String, RoomState>) {
        if let Some(c) = self
            .creates
            .as_ref()
            .filter(|c| c.done.len() < self.rooms.len())
        {
            // A session first: a room is created by a user.
            self.to_channel(
                net,
                channel,
                ChatMsg::ChatHello {
                    user: self.user.as_str().into(),
                },
            );
            for (i, room) in self.rooms.iter().enumerate() {
                if c.done.contains(room) {
                    continue;
                }
                let info = Room {
                    members: c
                        .members
                        .iter()
                        .map(holdfast_actors::core::ids::UserId::from)
                        .collect(),
                    category: c.category.clone(),
                    privacy: if i % 2 == 0 {
                        Privacy::Closed
                    } else {
                        Privacy::Secret
                    },
                    ..Default::default()
                };
                self.to_channel(
                    net,
                    channel,
                    ChatMsg::RoomSave {
                        room: room.as_str().into(),
                        info: Box::new(info),
                        create: true,
                    },
                );
            }
        }
        for room in &self.rooms {
            let s = &state[room];
            if s.refused || s.away {
                continue;
            }
            // Keep-alive and catch-up in one: what follows the last post
            // delivered (or, without repair, the last one seen at all).
            let after = if self.wl.repair {
                s.delivered_upto
            } else {
                s.highest_seen
            };
            self.to_channel(
                net,
                channel,
                ChatMsg::ChatJoin {
                    user: self.user.as_str().into(),
                    room: room.as_str().into(),
                    after,
                },
            );
        }
    }

    fn deliver(&self, room: &str, s: &mut RoomState) {
        let next = s.delivered_upto + 1;
        if !s.buffered.contains_key(&next) && !s.skipped.contains(&next) {
            return;
        }
        let mut log = lock(&self.log);
        let view = log
            .views
            .entry((self.user.clone(), room.to_string()))
            .or_default();
        loop {
            let next = s.delivered_upto + 1;
            if let Some(post) = s.buffered.remove(&next) {
                s.skipped.remove(&next);
                view.delivered.insert(next, post.id.to_string());
            } else if s.skipped.remove(&next) {
                // Cleared: nothing to deliver, and nothing lost.
                view.skipped.insert(next);
            } else {
                break;
            }
            s.delivered_upto = next;
        }
    }

    /// Milliseconds of the run now.
    fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.spec.epoch).as_millis() as u64
    }

    async fn run(mut self) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
        let mut peers: BTreeMap<String, SocketAddr> = self.spec.channels.clone();
        for (n, a) in self.spec.lookup_names.iter().zip(&self.spec.lookups) {
            peers.insert(n.clone(), *a);
        }
        let net = Network::with_link(
            self.me.clone(),
            peers,
            tx,
            self.spec.link.clone(),
            DEFAULT_OUTBOUND_CAPACITY,
        );
        let epoch = self.spec.epoch;
        tokio::time::sleep_until(epoch + Duration::from_millis(self.wl.start_ms)).await;
        let mut state: BTreeMap<String, RoomState> = self
            .rooms
            .iter()
            .map(|r| (r.clone(), RoomState::default()))
            .collect();
        if self.walled {
            let mut log = lock(&self.log);
            for r in &self.rooms {
                log.walled.insert((self.user.clone(), r.clone()));
            }
        }
        let mut channel: Option<String> = None;
        let mut lookup_turn = self.rng.gen_range(0..self.spec.lookup_names.len().max(1));
        let mut looking_since: Option<Instant> = None;
        let mut last_heard = Instant::now();
        let per_user_rate = self.wl.rate / self.wl.users as f64;
        let mut next_post = Instant::now() + self.exp(per_user_rate);
        let mut next_keepalive = Instant::now() + Duration::from_millis(self.wl.sync_ms);
        let stop = epoch + Duration::from_millis(self.wl.stop_ms);
        let mut n = 0u64;
        let mut retry_at: Option<Instant> = Some(Instant::now());
        let mut alarm = Alarm::new();
        loop {
            // Ask Lookup when there is no server (or after a backoff).
            if channel.is_none() {
                let due = retry_at.is_some_and(|t| Instant::now() >= t);
                let stale = looking_since.is_some_and(|t| t.elapsed() >= LOOKUP_TIMEOUT);
                if due || stale {
                    retry_at = None;
                    let names = &self.spec.lookup_names;
                    if !names.is_empty() {
                        lookup_turn = (lookup_turn + 1) % names.len();
                        self.send(
                            &net,
                            Addr::new(names[lookup_turn].clone(), ActorKind::Lookup),
                            Msg::Chat(ChatMsg::FindChannel),
                        );
                        looking_since = Some(Instant::now());
                    }
                }
            }
            let wake = [
                Some(next_post),
                Some(next_keepalive),
                retry_at,
                looking_since.map(|t| t + LOOKUP_TIMEOUT),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("some deadline");
            tokio::select! {
                biased;
                env = rx.recv() => {
                    let Some(env) = env else { return };
                    net.consumed(&env);
                    self.on_msg(env, &net, &mut state, &mut channel, &mut looking_since, &mut last_heard, &mut retry_at);
                }
                _ = alarm.until(wake) => {
                    let now = Instant::now();
                    if now >= next_keepalive {
                        next_keepalive = now + Duration::from_millis(self.wl.sync_ms);
                        let shut_out = state.values().all(|s| s.refused);
                        if let (Some(ch), false) = (channel.clone(), shut_out) {
                            // Silent for two periods and more: the server is
                            // gone; back to Lookup.
                            if last_heard.elapsed() > Duration::from_millis(2 * self.wl.sync_ms) + LOOKUP_TIMEOUT {
                                channel = None;
                                retry_at = Some(now);
                                lock(&self.log).reconnects += 1;
                            } else {
                                // Churn: back into the rooms left a period
                                // ago (catching up from the last post
                                // delivered), and perhaps out of another.
                                for s in state.values_mut() {
                                    s.away = false;
                                }
                                if !self.walled && now < stop && self.wl.churn > 0.0 && self.rng.gen_bool(self.wl.churn) {
                                    let joined: Vec<String> = state.iter().filter(|(_, s)| s.joined).map(|(r, _)| r.clone()).collect();
                                    if !joined.is_empty() {
                                        let room = joined[self.rng.gen_range(0..joined.len())].clone();
                                        let s = state.get_mut(&room).expect("a room of the client");
                                        s.joined = false;
                                        s.away = true;
                                        lock(&self.log).leaves += 1;
                                        self.to_channel(&net, ch.clone(), ChatMsg::ChatLeave { room: room.into() });
                                    }
                                }
                                self.join_all(&net, &ch, &state);
                                // Posts still without an answer: again,
                                // under the same id — stored at most once.
                                let again: Vec<(String, String, String)> = self
                                    .unanswered
                                    .iter()
                                    .map(|(id, (room, text))| (id.clone(), room.clone(), text.clone()))
                                    .collect();
                                for (post, room, text) in again {
                                    lock(&self.log).post_retries += 1;
                                    self.to_channel(&net, ch.clone(), ChatMsg::ChatPost { post: post.into(), room: room.into(), text });
                                }
                            }
                        }
                    }
                    if now >= next_post {
                        next_post = now + self.exp(per_user_rate);
                        if now < stop && !self.walled {
                            if let Some(ch) = channel.clone() {
                                let joined: Vec<&String> = state.iter().filter(|(_, s)| s.joined).map(|(r, _)| r).collect();
                                if !joined.is_empty() && self.wl.files {
                                    // A file: ask for an upload token first.
                                    let room = joined[self.rng.gen_range(0..joined.len())].clone();
                                    self.to_channel(&net, ch, ChatMsg::FileTokenRequest { room: room.into(), download: None });
                                } else if !joined.is_empty() {
                                    let room = joined[self.rng.gen_range(0..joined.len())].clone();
                                    n += 1;
                                    let id = format!("{}-p{n}", self.me);
                                    let mut text = format!("{id} in {room}: ");
                                    while text.len() < self.wl.size {
                                        text.push_str("lorem ipsum ");
                                    }
                                    text.truncate(self.wl.size.max(id.len()));
                                    let sent_ms = self.now_ms();
                                    lock(&self.log).posts.insert(id.clone(), PostOp {
                                        room: room.clone(),
                                        author: self.user.clone(),
                                        text: text.clone(),
                                        outcome: PostOutcome::Unknown,
                                        sent_ms,
                                    });
                                    if self.wl.retry_posts {
                                        self.unanswered.insert(id.clone(), (room.clone(), text.clone()));
                                    }
                                    self.to_channel(&net, ch, ChatMsg::ChatPost { post: id.into(), room: room.into(), text });
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn exp(&mut self, rate: f64) -> Duration {
        let u: f64 = self.rng.gen_range(f64::EPSILON..1.0);
        Duration::from_secs_f64((-u.ln() / rate).min(3600.0))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_msg(
        &mut self,
        env: Envelope,
        net: &Arc<Network>,
        state: &mut BTreeMap<String, RoomState>,
        channel: &mut Option<String>,
        looking_since: &mut Option<Instant>,
        last_heard: &mut Instant,
        retry_at: &mut Option<Instant>,
    ) {
        let from_channel = env.from.actor == ActorKind::Channel;
        if from_channel && channel.as_deref() == Some(env.from.node.as_str()) {
            *last_heard = Instant::now();
        }
        match env.msg {
            Msg::Chat(ChatMsg::ChannelAssigned { channel: ch }) => {
                if channel.is_none() && looking_since.is_some() {
                    *looking_since = None;
                    *last_heard = Instant::now();
                    self.join_all(net, &ch, state);
                    *channel = Some(ch);
                }
            }
            Msg::Chat(ChatMsg::NoChannel) => {
                *looking_since = None;
                *retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            Msg::Chat(ChatMsg::ChatJoined { room, latest }) => {
                let Some(s) = state.get_mut(room.as_str()) else {
                    return;
                };
                s.joined = true;
                if !s.baseline_set {
                    // The backchat is history, not owed: owed is what
                    // follows the room's state at the first join.
                    s.baseline_set = true;
                    s.delivered_upto = latest;
                    s.buffered.retain(|seq, _| *seq > latest);
                    s.skipped.retain(|seq| *seq > latest);
                    lock(&self.log)
                        .views
                        .entry((self.user.clone(), room.to_string()))
                        .or_default()
                        .baseline = Some(latest);
                }
                self.deliver(&room, s);
            }
            Msg::Chat(ChatMsg::ChatCleared { room, ranges }) => {
                let Some(s) = state.get_mut(room.as_str()) else {
                    return;
                };
                for (from, to) in ranges {
                    for n in from.max(s.delivered_upto + 1)..=to {
                        if !s.buffered.contains_key(&n) {
                            s.skipped.insert(n);
                        }
                    }
                }
                if s.baseline_set {
                    self.deliver(&room, s);
                }
            }
            Msg::Chat(ChatMsg::ChatMessage { seq, post }) => {
                let room = post.room.clone();
                if self.wl.records.any() {
                    let at_ms = self.now_ms();
                    lock(&self.log).receipts.push(Receipt {
                        user: self.user.clone(),
                        post: post.id.to_string(),
                        at_ms,
                        text: post.text.clone(),
                    });
                }
                if self.walled {
                    lock(&self.log)
                        .views
                        .entry((self.user.clone(), room.to_string()))
                        .or_default()
                        .received_while_walled += 1;
                }
                let Some(s) = state.get_mut(room.as_str()) else {
                    return;
                };
                s.highest_seen = s.highest_seen.max(seq);
                if s.baseline_set && seq <= s.delivered_upto || s.buffered.contains_key(&seq) {
                    lock(&self.log)
                        .views
                        .entry((self.user.clone(), room.to_string()))
                        .or_default()
                        .redundant += 1;
                    return;
                }
                // A file announced by someone else: download it.
                if self.wl.files && post.author != self.user {
                    if let (Some(file), Some(ch)) = (
                        post.text
                            .strip_prefix("file ")
                            .and_then(|t| t.split(' ').next()),
                        channel.clone(),
                    ) {
                        self.to_channel(
                            net,
                            ch,
                            ChatMsg::FileTokenRequest {
                                room: room.clone(),
                                download: Some(file.into()),
                            },
                        );
                    }
                }
                s.buffered.insert(seq, post);
                if !s.baseline_set {
                    return;
                }
                self.deliver(&room, s);
                let gap = !s.buffered.is_empty();
                let due = s.last_sync.is_none_or(|t| t.elapsed() >= SYNC_BACKOFF);
                if gap && due && self.wl.repair {
                    s.last_sync = Some(Instant::now());
                    let after = s.delivered_upto;
                    if let Some(ch) = channel.clone() {
                        self.to_channel(net, ch, ChatMsg::ChatSync { room, after });
                    }
                }
            }
            Msg::Chat(ChatMsg::FileToken {
                room,
                download,
                token,
            }) => {
                let web = match &download {
                    // A file lives on the Web node that stored it (its id
                    // starts with the node's name).
                    Some(file) => file.split('-').next().unwrap_or_default().to_string(),
                    None => {
                        let nodes = &self.spec.web;
                        nodes[self.rng.gen_range(0..nodes.len())].clone()
                    }
                };
                let to = Addr::new(web, ActorKind::Web);
                match download {
                    Some(_) => self.send(net, to, Msg::Chat(ChatMsg::FileDownload { token })),
                    None => {
                        self.files_sent += 1;
                        let name = format!("{}-f{}.bin", self.me, self.files_sent);
                        let data = file_content(&name, self.wl.size);
                        self.pending_rooms.insert(name.clone(), room.to_string());
                        self.send(
                            net,
                            to,
                            Msg::Chat(ChatMsg::FileUpload { token, name, data }),
                        );
                    }
                }
            }
            Msg::Chat(ChatMsg::FileStored { file, name, size }) => {
                let Some(room) = self.pending_rooms.remove(&name) else {
                    return;
                };
                lock(&self.log).files.insert(
                    file.to_string(),
                    FileRecord {
                        room: room.clone(),
                        name: name.clone(),
                        size,
                    },
                );
                // Announce it in the room; members download what they see.
                if let Some(ch) = channel.clone() {
                    let text = format!("file {file} {name}");
                    self.to_channel(
                        net,
                        ch,
                        ChatMsg::ChatPost {
                            post: format!("post-{file}").into(),
                            room: room.as_str().into(),
                            text: text.clone(),
                        },
                    );
                    let sent_ms = self.now_ms();
                    lock(&self.log).posts.insert(
                        format!("post-{file}"),
                        PostOp {
                            room,
                            author: self.user.clone(),
                            text,
                            outcome: PostOutcome::Unknown,
                            sent_ms,
                        },
                    );
                }
            }
            Msg::Chat(ChatMsg::FileData { file, name, data }) => {
                let mut log = lock(&self.log);
                if is_file_content(&name, &data)
                    && log
                        .files
                        .get(file.as_str())
                        .is_none_or(|f| f.size == data.len() as u64)
                {
                    log.downloads_ok += 1;
                    *log.downloads_by
                        .entry((self.user.clone(), file.into_string()))
                        .or_default() += 1;
                } else {
                    log.downloads_corrupt.push(format!(
                        "{} got {file} ({name}) with other content",
                        self.me
                    ));
                }
            }
            Msg::Chat(ChatMsg::FileRefused { reason }) => {
                lock(&self.log)
                    .file_refusals
                    .push(format!("{}: {reason}", self.me));
            }
            Msg::Chat(ChatMsg::ChatLeft { room }) => {
                // A leave of a room the server had closed (disabled) ends
                // no subscription and is not recorded.
                if state.get(room.as_str()).is_some_and(|s| s.disabled) {
                    return;
                }
                *lock(&self.log)
                    .leaves_confirmed
                    .entry((self.user.clone(), room.to_string()))
                    .or_default() += 1;
            }
            Msg::Chat(ChatMsg::RoomSaved { room, .. }) => {
                if let Some(c) = &mut self.creates {
                    c.done.insert(room.to_string());
                }
                // Created: join it now rather than at the next keep-alive.
                if let Some(ch) = channel.clone() {
                    let after = state.get(room.as_str()).map_or(0, |s| s.delivered_upto);
                    self.to_channel(
                        net,
                        ch,
                        ChatMsg::ChatJoin {
                            user: self.user.as_str().into(),
                            room,
                            after,
                        },
                    );
                }
            }
            Msg::Chat(ChatMsg::ChatPosted { post, seq, .. }) => {
                self.unanswered.remove(post.as_str());
                if let Some(op) = lock(&self.log).posts.get_mut(post.as_str()) {
                    op.outcome = PostOutcome::Accepted { seq };
                }
            }
            Msg::Chat(ChatMsg::ChatRejected { room, post, reason }) => {
                let mut log = lock(&self.log);
                match post {
                    // The store may have the post after all, or the
                    // server the retry reached has not seen the author
                    // rejoin yet: the author sends it again under its id
                    // at the next keep-alive.
                    Some(id)
                        if matches!(
                            reason,
                            ChatReject::StoreUnavailable | ChatReject::NotJoined | ChatReject::Busy
                        ) && self.unanswered.contains_key(id.as_str()) => {}
                    Some(id) => {
                        self.unanswered.remove(id.as_str());
                        if let Some(op) = log.posts.get_mut(id.as_str()) {
                            // A retry's refusal after the post was accepted
                            // answers the retry, not the post.
                            if !matches!(op.outcome, PostOutcome::Accepted { .. }) {
                                op.outcome = PostOutcome::Rejected(format!("{reason:?}"));
                            }
                        }
                    }
                    None => match reason {
                        // A managed room not created yet (or not yet known
                        // to this server): join again at the next keep-alive.
                        ChatReject::NoSuchRoom if self.wl.managed => {
                            if let Some(s) = state.get_mut(room.as_str()) {
                                s.joined = false;
                            }
                        }
                        ChatReject::RoomExists => {
                            if let Some(c) = &mut self.creates {
                                c.done.insert(room.to_string());
                            }
                        }
                        // An honest client is never forbidden: counted with
                        // the refusals the checker compares with the walls.
                        ChatReject::NotAllowed
                        | ChatReject::NoSuchRoom
                        | ChatReject::Forbidden(_) => {
                            log.refused_joins += 1;
                            if let Some(s) = state.get_mut(room.as_str()) {
                                s.refused = true;
                            }
                        }
                        ChatReject::Busy => {
                            // 503: back to Lookup after a backoff.
                            log.busy += 1;
                            if from_channel && channel.as_deref() == Some(env.from.node.as_str()) {
                                *channel = None;
                                let wait = Duration::from_millis(self.rng.gen_range(500..3000));
                                *retry_at = Some(Instant::now() + wait);
                            }
                        }
                        // Disabled by an operator: tried again at the next
                        // keep-alive (it may be enabled again).
                        ChatReject::RoomDisabled => {
                            if let Some(s) = state.get_mut(room.as_str()) {
                                s.joined = false;
                                s.disabled = true;
                            }
                        }
                        ChatReject::NotJoined => {
                            // The server forgot the session (it restarted):
                            // join again at the next keep-alive.
                            if let Some(s) = state.get_mut(room.as_str()) {
                                s.joined = false;
                            }
                        }
                        ChatReject::StoreUnavailable
                        | ChatReject::Conflict
                        | ChatReject::NoSuchPost
                        | ChatReject::TooLarge { .. } => {}
                    },
                }
            }
            other => {
                tracing::debug!(client = %self.me, msg = other.name(), "chat client ignored a message")
            }
        }
    }
}

/// How long the operator waits for an answer before asking again (on
/// another Channel server).
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(5);

/// One records action of a workload's operator.
#[derive(Clone, Copy, Debug)]
enum Action {
    Disable,
    Clear,
    Replace,
}

/// The operator of chat workload `w`: at the workload's times it disables
/// the last room, clears the first, replaces the text of a post of the
/// first (the newest accepted one a clear does not cover). Each action is
/// asked again, on the next Channel server, until answered; what it did
/// is recorded for the checker.
async fn run_operator(spec: Arc<ChatClientSpec>, wl: ChatWorkload, w: usize, log: SharedChatLog) {
    let me = Principal::new(format!("ops{w}@{}", spec.domain), Role::Operator)
        .client_name(&format!("c{w}ops"));
    let from = Addr::new(me.clone(), ActorKind::Client);
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let channels: Vec<String> = spec
        .channels
        .keys()
        .filter(|c| !spec.web.contains(c))
        .cloned()
        .collect();
    let net = Network::with_link(
        me.clone(),
        spec.channels.clone(),
        tx,
        spec.link.clone(),
        DEFAULT_OUTBOUND_CAPACITY,
    );
    let rooms = chat_rooms(w, wl.rooms);
    let first = rooms[0].clone();
    let last = rooms[rooms.len() - 1].clone();
    let r = &wl.records;
    let mut actions: Vec<(u64, Action)> = [
        (r.disable_ms, Action::Disable),
        (r.clear_ms, Action::Clear),
        (r.replace_ms, Action::Replace),
    ]
    .into_iter()
    .filter_map(|(at, a)| at.map(|at| (at, a)))
    .collect();
    actions.sort_by_key(|(at, _)| *at);
    let now_ms = || Instant::now().duration_since(spec.epoch).as_millis() as u64;
    for (at, action) in actions {
        tokio::time::sleep_until(spec.epoch + Duration::from_millis(at)).await;
        let mut outcome: Result<(), String> = Err("no answer".into());
        for attempt in 0..12 {
            let channel = &channels[attempt % channels.len().max(1)];
            // The post to replace: chosen now, from what was accepted.
            let target = match action {
                Action::Replace => {
                    let log = lock(&log);
                    let covered = |seq: u64| {
                        log.clears
                            .iter()
                            .any(|c| c.room == first && seq <= c.through)
                    };
                    let found = log
                        .posts
                        .iter()
                        .filter(|(_, p)| p.room == first)
                        .filter_map(|(id, p)| match p.outcome {
                            PostOutcome::Accepted { seq } if !covered(seq) => {
                                Some((seq, id.clone()))
                            }
                            _ => None,
                        })
                        .max();
                    match found {
                        Some(t) => Some(t),
                        None => {
                            outcome = Err(format!("no post of {first} to replace"));
                            break;
                        }
                    }
                }
                _ => None,
            };
            let msg = match action {
                Action::Disable => Msg::Chat(ChatMsg::RoomDisable {
                    room: last.as_str().into(),
                    disabled: true,
                }),
                Action::Clear => Msg::Chat(ChatMsg::RoomClear {
                    room: first.as_str().into(),
                    before: r.clear_before_ms,
                }),
                Action::Replace => Msg::Chat(ChatMsg::PostReplace {
                    post: target.as_ref().expect("chosen").1.as_str().into(),
                    text: format!(
                        "replaced by the operator: {}",
                        target.as_ref().expect("chosen").1
                    ),
                }),
            };
            let sent = net.send(Envelope {
                from: from.clone(),
                to: Addr::new(channel.clone(), ActorKind::Channel),
                id: 0,
                msg: msg.clone(),
            });
            if sent.is_err() {
                tokio::time::sleep(OPERATOR_TIMEOUT).await;
                continue;
            }
            let deadline = Instant::now() + OPERATOR_TIMEOUT;
            let answer = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, rx.recv()).await {
                    Ok(Some(env)) => {
                        net.consumed(&env);
                        let mine = match (&msg, &env.msg) {
                            (
                                Msg::Chat(ChatMsg::RoomDisable { room, .. }),
                                Msg::Chat(ChatMsg::RoomSaved { room: r, .. }),
                            )
                            | (
                                Msg::Chat(ChatMsg::RoomClear { room, .. }),
                                Msg::Chat(ChatMsg::RoomCleared { room: r, .. }),
                            ) => r == room,
                            (
                                Msg::Chat(ChatMsg::PostReplace { post, .. }),
                                Msg::Chat(ChatMsg::PostReplaced { post: p, .. }),
                            ) => p == post,
                            (
                                Msg::Chat(ChatMsg::PostReplace { post, .. }),
                                Msg::Chat(ChatMsg::ChatRejected { post: Some(p), .. }),
                            ) => p == post,
                            (
                                Msg::Chat(ChatMsg::RoomDisable { room, .. })
                                | Msg::Chat(ChatMsg::RoomClear { room, .. }),
                                Msg::Chat(ChatMsg::ChatRejected {
                                    room: r,
                                    post: None,
                                    ..
                                }),
                            ) => r == room,
                            _ => false,
                        };
                        if mine {
                            break Some(env.msg);
                        }
                    }
                    _ => break None,
                }
            };
            let done_ms = now_ms();
            match answer {
                Some(Msg::Chat(ChatMsg::RoomSaved { room, .. })) => {
                    lock(&log).disables.push(DisableRecord {
                        room: room.into(),
                        done_ms,
                    });
                    outcome = Ok(());
                }
                Some(Msg::Chat(ChatMsg::RoomCleared { room, through })) => {
                    lock(&log).clears.push(ClearRecord {
                        room: room.into(),
                        before: r.clear_before_ms,
                        through,
                        done_ms,
                    });
                    outcome = Ok(());
                }
                Some(Msg::Chat(ChatMsg::PostReplaced { post, room, seq })) => {
                    let Msg::Chat(ChatMsg::PostReplace { text, .. }) = &msg else {
                        unreachable!("answers a replace")
                    };
                    lock(&log).replaces.push(ReplaceRecord {
                        post: post.into(),
                        room: room.into(),
                        seq,
                        text: text.clone(),
                        done_ms,
                    });
                    outcome = Ok(());
                }
                Some(Msg::Chat(ChatMsg::ChatRejected { reason, .. }))
                    if reason != ChatReject::StoreUnavailable =>
                {
                    outcome = Err(format!("refused: {reason:?}"));
                }
                _ => continue,
            }
            break;
        }
        if let Err(why) = outcome {
            lock(&log)
                .records_failed
                .push(format!("{action:?} at {at} ms ({me}): {why}"));
        }
    }
    std::future::pending::<()>().await;
}

//! TCP transport: length-prefixed postcard frames (see
//! [`holdfast_actors::core::frame`]) over one connection per direction and peer.
//!
//! * Outbound: one task per peer node connects, reconnects with backoff
//!   after any error, and writes envelopes in order. A connection stalled
//!   longer than the `link_timeout` setting, or a connect that does not
//!   complete in time, is given up and retried ([`crate::liveness`]): a
//!   healed link is used within seconds, not at the kernel's next
//!   retransmission. Envelopes that were in a
//!   broken connection are gone: reliability is end to end (sequence numbers,
//!   resends, idempotent inserts), never assumed from TCP.
//! * Inbound: every connection gets a reader task that decodes frames into
//!   the node's inbox. A malformed or oversized frame, a frame for another
//!   node, or a server peer this node does not know closes that connection
//!   with a warning; the node keeps running.
//! * Clients are not in the address book: replies to them go back on the
//!   connection they came in on.
//! * A [`Link`] secures each connection: plain TCP in the simulator (the
//!   first frame names the peer; the simulator's link adds the flow control
//!   madsim's TCP lacks), mutual TLS in production (the peer's certificate
//!   names it, and every frame must agree).
//! * Outbound queues are bounded: when a peer cannot keep up, envelopes
//!   beyond the bound are dropped and counted, never buffered without limit;
//!   the protocols above recover them (resends, client retries).
//! * Inbound is back-pressured: at most [`DEFAULT_INBOUND_LIMIT`] envelopes
//!   from the network wait in the inbox; beyond that, readers stop reading
//!   and TCP flow control slows the senders down. The consumer of the inbox
//!   calls [`Network::consumed`] for every envelope it takes.

use crate::liveness::{self, Liveness};
use crate::lock;
use holdfast_actors::core::frame::{self, FrameError, HEADER, MAX_FRAME};
use holdfast_actors::core::identity::Principal;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::Envelope;
use holdfast_actors::core::settings::Settings;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};

#[derive(Debug, Error)]
pub enum TransportError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no route to node {0:?}: not in the address book and not connected")]
    NoRoute(String),
}

/// Why the last attempt to connect to a server peer failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConnectFailure {
    /// Nothing listens at the address.
    #[error("connection refused: {addr}")]
    Refused { addr: SocketAddr },
    /// Any other failure: a timeout, no route, a handshake refused.
    #[error("cannot connect to {addr}: {error}")]
    Other { addr: SocketAddr, error: String },
}

impl ConnectFailure {
    fn new(addr: SocketAddr, e: &std::io::Error) -> ConnectFailure {
        match e.kind() {
            std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused { addr },
            _ => ConnectFailure::Other {
                addr,
                error: e.to_string(),
            },
        }
    }
}

/// A byte stream a connection runs over (plain TCP, or TLS over TCP).
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}
pub type BoxStream = Box<dyn AsyncStream>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who the other end of an inbound connection proved to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// Plain TCP: the first frame names the peer and is believed (the
    /// simulator, and clusters configured for plain links on purpose).
    Claimed,
    /// Authenticated as this node (a certificate of the cluster).
    Node(String),
    /// Authenticated as a user in a role (a user credential of the
    /// cluster): the connection may only speak as a client named after
    /// this principal (see `holdfast_actors::core::identity`).
    Client(Principal),
}

/// Secures connections. The transport calls `connect` on every outbound
/// connection and `accept` on every inbound one; an error closes it.
pub trait Link: Send + Sync + 'static {
    fn connect<'a>(
        &'a self,
        peer: &'a str,
        tcp: TcpStream,
    ) -> BoxFuture<'a, std::io::Result<BoxStream>>;
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'_, std::io::Result<(BoxStream, PeerIdentity)>>;
}

/// Plain TCP, peers named by their first frame.
pub struct PlainLink;

impl Link for PlainLink {
    fn connect<'a>(
        &'a self,
        _peer: &'a str,
        tcp: TcpStream,
    ) -> BoxFuture<'a, std::io::Result<BoxStream>> {
        Box::pin(async move { Ok(Box::new(tcp) as BoxStream) })
    }
    fn accept(&self, tcp: TcpStream) -> BoxFuture<'_, std::io::Result<(BoxStream, PeerIdentity)>> {
        Box::pin(async move { Ok((Box::new(tcp) as BoxStream, PeerIdentity::Claimed)) })
    }
}

/// Inbound connections that have not yet said who they are. Every
/// connection is accepted at once; when one more would pass this bound,
/// the oldest silent one is closed. A peer sends its first frame as soon
/// as it connects, so a flood of silent sockets evicts its own, never the
/// peer, and costs at most this many connections' buffers.
pub const MAX_PENDING_CONNECTIONS: usize = 256;
/// Client connections served at once; a client beyond them is refused.
/// Server peers (named in the address book) never count against it: a
/// flood of clients cannot keep a front end from its archiver.
pub const MAX_CLIENT_CONNECTIONS: usize = 1024;
/// Time an inbound connection has to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A client connection silent this long is closed (chat clients send a
/// keep-alive every 30 s; an IM client that waits for an answer gets one
/// well within it).
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest first frame a client's connection may send:
/// a client's request, never a server's batch (nodes, proven by their
/// certificate or believed on plain links, may send up to the frame
/// limit: their first frame can be a batch resent after a reconnect).
const MAX_FIRST_FRAME: usize = 8 << 20;
/// Warnings about refused connections and bad frames: at most this many
/// per [`WARN_PERIOD`], then one line saying how many were left out.
const WARNS_PER_PERIOD: u64 = 20;
const WARN_PERIOD: Duration = Duration::from_secs(10);
/// Actors a client may address: a node that hosts none of them takes no
/// client connections. The queues take only an operator's requests
/// (parked records, the dead-letter queue), the database only an
/// auditor's reads of the archive, the chat store only legal holds and its
/// retention status; they check the principal.
const SERVES_CLIENTS: &[ActorKind] = &[
    ActorKind::FrontEnd,
    ActorKind::OutgoingQueue,
    ActorKind::Lookup,
    ActorKind::Channel,
    ActorKind::Web,
    ActorKind::Compliance,
    ActorKind::DestinationQueue,
    ActorKind::Database,
    ActorKind::ChatStore,
];

/// Envelopes from the network waiting in the inbox before readers pause.
/// Beyond it, TCP holds the senders back: a node that falls behind does
/// not buffer hours of its peers' resends in memory.
pub const DEFAULT_INBOUND_LIMIT: usize = 4096;

/// Inbox places kept for node traffic and for client requests that have
/// no busy answer: once fewer are free, a client's request that has one
/// (an IM submission) is answered busy by the connection's reader at once
/// instead of waiting for room. A reader that waited would stop reading
/// its socket, and every request behind it would wait, unseen by any
/// admission rule, in socket buffers and the client's queue until clients
/// time out. (See also [`Network::set_shed_after`].)
pub const SHED_RESERVE: usize = DEFAULT_INBOUND_LIMIT / 4;

/// Envelopes queued for one peer before further ones are dropped: a few
/// transfer windows. The durable queues hold the backlog; this only smooths
/// bursts. A larger bound keeps stale resends queued through an outage and
/// delivers them in a burst when the link heals.
pub const DEFAULT_OUTBOUND_CAPACITY: usize = 1024;

/// The outbound bound for a node whose queues send `window` transfers at
/// a time: the default, or four windows if that is more (a window larger
/// than the bound would be cut by it on every round).
pub fn outbound_capacity(window: u64) -> usize {
    DEFAULT_OUTBOUND_CAPACITY.max(
        usize::try_from(window)
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
    )
}

/// Envelopes a load-generating client queues for one front end: its own
/// requests, which it should not drop at the source while a connection
/// comes up (open-loop load offers its rate regardless).
pub const CLIENT_OUTBOUND_CAPACITY: usize = 1 << 16;

/// Writes one frame and flushes it (simulated TCP sends nothing until a flush).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    env: &Envelope,
) -> Result<(), TransportError> {
    let bytes = frame::encode(env)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Bytes of frames gathered into one write (one TLS record run, one syscall).
const BATCH_BYTES: usize = 256 * 1024;
/// Read buffer per outbound connection: many small frames per `read`
/// syscall.
const READ_BUFFER: usize = 64 * 1024;
/// Read buffer per inbound connection: smaller, since thousands of them
/// may be open at once (what a connection holds bounds what a flood of
/// them costs).
const INBOUND_READ_BUFFER: usize = 16 * 1024;

/// Writes `first` and every envelope already queued behind it (up to
/// [`BATCH_BYTES`]) with one write and one flush: under load, frames are
/// coalesced instead of paying a syscall (and a TLS record) each. An
/// envelope that cannot be encoded (too large) is dropped with a warning;
/// the connection stays up.
async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    first: Envelope,
    rx: &mut mpsc::Receiver<Envelope>,
    buf: &mut Vec<u8>,
    me: &str,
) -> Result<(), TransportError> {
    buf.clear();
    let mut next = Some(first);
    while let Some(env) = next.take() {
        match frame::encode_into(&env, buf) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(node = %me, to = %env.to, msg = env.msg.name(), error = %e, "dropping an unencodable envelope")
            }
        }
        if buf.len() < BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
    if buf.is_empty() {
        return Ok(());
    }
    w.write_all(buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame from a buffered reader: decoded in place when the
/// whole frame is already in the buffer (the usual case: a read brings many
/// small frames), through [`read_frame`] when it is not.
async fn read_buffered_frame<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Envelope>, TransportError> {
    let buffered = r.fill_buf().await?;
    if buffered.len() >= HEADER {
        let header: [u8; HEADER] = buffered[..HEADER].try_into().expect("header bytes");
        let len = frame::check_len(header, max)?;
        if buffered.len() >= HEADER + len {
            let env = frame::decode_body(&buffered[HEADER..HEADER + len]);
            r.consume(HEADER + len);
            return Ok(Some(env?));
        }
    }
    read_frame(r, max).await
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Envelope>, TransportError> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame header",
                )
                .into())
            };
        }
        got += n;
    }
    let len = frame::check_len(header, max)?;
    // Grown as bytes arrive, not allocated from the header: a peer that
    // announces a large frame and sends nothing costs nothing.
    let mut body = Vec::with_capacity(len.min(READ_BUFFER));
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed inside a frame",
        )
        .into());
    }
    Ok(Some(frame::decode_body(&body)?))
}

/// Backoff between reconnection attempts (see [`crate::liveness`]).
const BACKOFF_MIN: Duration = liveness::BACKOFF_MIN;

/// An inbound connection after its handshake and first frame: its reader,
/// writer, proven identity and first envelope (`None`: it closed cleanly
/// first), or why it was refused.
type Opened = Result<
    Option<(
        tokio::io::BufReader<tokio::io::ReadHalf<BoxStream>>,
        tokio::io::WriteHalf<BoxStream>,
        PeerIdentity,
        Envelope,
    )>,
    String,
>;

/// The network endpoint of one node.
pub struct Network {
    me: String,
    peers: BTreeMap<String, SocketAddr>,
    link: Arc<dyn Link>,
    capacity: usize,
    outbound: Mutex<BTreeMap<String, mpsc::Sender<Envelope>>>,
    /// Reply paths to clients, by client node name, with a connection id.
    clients: Mutex<BTreeMap<String, (u64, mpsc::Sender<Envelope>)>>,
    next_conn: Mutex<u64>,
    inbox: mpsc::UnboundedSender<Envelope>,
    /// When each network envelope in the inbox arrived, in inbox order:
    /// [`Network::consumed`] says how long one waited, which a front end
    /// weighs to answer busy rather than let clients time out.
    arrivals: Mutex<VecDeque<tokio::time::Instant>>,
    /// When the inbox's consumer last took an envelope: whether it is
    /// running behind a backlog or not running at all (see
    /// [`Network::shed_if_full`]).
    taken: Mutex<Option<tokio::time::Instant>>,
    /// One permit per network envelope the inbox may still take.
    inbound: Semaphore,
    /// Inbound connections that have not said who they are yet, oldest
    /// first, each with the means to close it (see
    /// [`MAX_PENDING_CONNECTIONS`]).
    pending: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    /// One permit per client connection still allowed.
    client_slots: Arc<Semaphore>,
    /// Rate limit of warnings: (start of the period, lines in it, lines
    /// left out).
    warns: Mutex<(Option<tokio::time::Instant>, u64, u64)>,
    /// Which actors each server node hosts (when known): a node may only
    /// speak for those.
    roles: OnceLock<BTreeMap<String, Vec<ActorKind>>>,
    /// How long a connection may stay stalled (the default until set).
    liveness: OnceLock<Liveness>,
    /// Inbox wait past which client requests are answered busy by the
    /// readers (see [`Network::set_shed_after`]).
    shed_after: OnceLock<Duration>,
    dropped: AtomicU64,
    refused: AtomicU64,
    /// Of the refused: connections whose peer spoke another protocol
    /// version.
    version_refused: AtomicU64,
    /// Client requests answered busy by a reader (see [`SHED_RESERVE`]).
    shed: AtomicU64,
    /// Server peers whose last connection attempt failed, and why
    /// (cleared by the next connection that succeeds): what readiness
    /// checks report.
    unreachable: Mutex<BTreeMap<String, ConnectFailure>>,
    /// Woken at every failed connection attempt.
    failure_notice: tokio::sync::Notify,
}

impl Network {
    /// `peers` is the address book of server nodes this node may talk to.
    pub fn new(
        me: impl Into<String>,
        peers: BTreeMap<String, SocketAddr>,
        inbox: mpsc::UnboundedSender<Envelope>,
    ) -> Arc<Network> {
        Network::with_link(
            me,
            peers,
            inbox,
            Arc::new(PlainLink),
            DEFAULT_OUTBOUND_CAPACITY,
        )
    }

    /// A network whose connections are secured by `link`, with at most
    /// `capacity` envelopes queued per peer.
    pub fn with_link(
        me: impl Into<String>,
        peers: BTreeMap<String, SocketAddr>,
        inbox: mpsc::UnboundedSender<Envelope>,
        link: Arc<dyn Link>,
        capacity: usize,
    ) -> Arc<Network> {
        Arc::new(Network {
            me: me.into(),
            peers,
            link,
            capacity: capacity.max(1),
            outbound: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(BTreeMap::new()),
            next_conn: Mutex::new(0),
            inbox,
            arrivals: Mutex::new(VecDeque::new()),
            taken: Mutex::new(None),
            inbound: Semaphore::new(DEFAULT_INBOUND_LIMIT),
            pending: Mutex::new(VecDeque::new()),
            client_slots: Arc::new(Semaphore::new(MAX_CLIENT_CONNECTIONS)),
            warns: Mutex::new((None, 0, 0)),
            roles: OnceLock::new(),
            liveness: OnceLock::new(),
            shed_after: OnceLock::new(),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            version_refused: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            unreachable: Mutex::new(BTreeMap::new()),
            failure_notice: tokio::sync::Notify::new(),
        })
    }

    /// A client's network whose every envelope, once its inbound budget is
    /// freed, goes on to `answers`: several connection identities (one per
    /// principal) feeding one consumer.
    pub fn forwarding_to(
        me: impl Into<String>,
        peers: BTreeMap<String, SocketAddr>,
        link: Arc<dyn Link>,
        capacity: usize,
        answers: mpsc::UnboundedSender<Envelope>,
    ) -> Arc<Network> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
        let net = Network::with_link(me, peers, tx, link, capacity);
        let reader = net.clone();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                reader.consumed(&env);
                if answers.send(env).is_err() {
                    return;
                }
            }
        });
        net
    }

    /// Restricts every server node to speaking for the actors it hosts (a
    /// front end's certificate cannot send as an archiver). Set once,
    /// before [`Network::listen`].
    pub fn set_roles(&self, roles: BTreeMap<String, Vec<ActorKind>>) {
        let _ = self.roles.set(roles);
    }

    /// Bounds how long this node's connections may stay stalled (the
    /// `link_timeout` setting). Set once, before the first connection.
    pub fn set_liveness(&self, liveness: Liveness) {
        let _ = self.liveness.set(liveness);
    }

    /// Client requests that have a busy answer are answered busy by the
    /// connection readers, besides when the inbox is nearly full, while
    /// the oldest envelope in the inbox has waited `after` or longer: a
    /// request let in then would wait as long behind it. A front end sets
    /// half its `admission_wait`, so that what it lets in reaches the core
    /// within its admission rule; otherwise, under a sustained overload,
    /// the inbox stays full of requests that waited too long, the core
    /// spends itself answering them busy, and nothing is admitted at all.
    /// Zero (or never set): only the reserve counts. Set once.
    pub fn set_shed_after(&self, after: Duration) {
        let _ = self.shed_after.set(after);
    }

    /// What the cluster's settings say about this node's connections: how
    /// long one may stay stalled (`link_timeout`) and when the readers
    /// answer IMs busy (half of `admission_wait`). Both hosts call it once,
    /// before the first connection.
    pub fn apply_settings(&self, settings: &Settings) {
        self.set_liveness(Liveness::new(Duration::from_millis(settings.link_timeout)));
        self.set_shed_after(Duration::from_millis(settings.admission_wait / 2));
    }

    fn liveness(&self) -> Liveness {
        self.liveness.get().copied().unwrap_or_default()
    }

    fn may_speak_as(&self, from: &holdfast_actors::core::ids::Addr) -> bool {
        match self.roles.get().and_then(|r| r.get(&from.node)) {
            Some(kinds) => kinds.contains(&from.actor),
            None => true,
        }
    }

    /// The inbox's consumer took `env`: makes room for another envelope
    /// from the network (local envelopes never took any). Returns when a
    /// network envelope arrived (`None` for a local one).
    pub fn consumed(&self, env: &Envelope) -> Option<tokio::time::Instant> {
        *lock(&self.taken) = Some(tokio::time::Instant::now());
        if env.from.node != self.me {
            self.inbound.add_permits(1);
            lock(&self.arrivals).pop_front()
        } else {
            None
        }
    }

    /// Hands a network envelope to the inbox, waiting while it is full.
    /// Its arrival is when it was read, before that wait: a request held
    /// back by a full inbox has waited as surely as one inside it.
    async fn admit(&self, env: Envelope) {
        let arrived = tokio::time::Instant::now();
        match self.inbound.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // closed: the node is going away
        }
        // One lock over both, so that arrivals stay in inbox order when
        // several connections' readers hand envelopes in at once.
        let mut arrivals = lock(&self.arrivals);
        arrivals.push_back(arrived);
        let _ = self.inbox.send(env);
    }

    /// Envelopes dropped because a peer's outbound queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Inbound connections closed for a bad handshake, a bad frame or a
    /// false identity.
    /// Whether the last attempt to connect to `peer` failed (a peer never
    /// tried is not known to be unreachable).
    pub fn unreachable(&self, peer: &str) -> bool {
        lock(&self.unreachable).contains_key(peer)
    }

    /// Why the last attempt to connect to `peer` failed, if it did.
    pub fn connect_failed(&self, peer: &str) -> Option<ConnectFailure> {
        lock(&self.unreachable).get(peer).cloned()
    }

    /// Returns when an attempt to connect to `peer` fails (at once if the
    /// last one did), with the reason: a client that sent `peer` a
    /// request learns at once that it cannot arrive, instead of waiting
    /// for an answer until its timeout.
    pub async fn connect_failure(&self, peer: &str) -> ConnectFailure {
        loop {
            let failed = self.failure_notice.notified();
            tokio::pin!(failed);
            // Registered before the check: a failure between the two is
            // not missed.
            failed.as_mut().enable();
            if let Some(f) = self.connect_failed(peer) {
                return f;
            }
            failed.await;
        }
    }

    /// Client requests answered busy because the inbox was nearly full
    /// (see [`SHED_RESERVE`]).
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Answers a client's request busy when the inbox is nearly full or
    /// its oldest envelope has waited too long, and the request has a busy
    /// answer. Returns whether it did. The answer
    /// waits for room on the client's connection (never dropped, or the
    /// client would hear nothing): the reader then reads as fast as the
    /// answers go out.
    async fn shed_if_full(&self, env: &Envelope) -> bool {
        let full = self.inbound.available_permits() < SHED_RESERVE;
        // Stale: the consumer is running (it took an envelope within the
        // wait) and still the oldest envelope has waited that long, so it
        // is behind a backlog that busy answers shorten. A consumer that
        // took nothing for as long (its thread got no processor, the
        // process was paused) is no backlog: what came in meanwhile is
        // handled as soon as it runs, and the front end's own admission
        // rule still refuses what waited too long; only the full inbox
        // sheds then.
        let stale = || {
            self.shed_after.get().is_some_and(|after| {
                !after.is_zero()
                    && lock(&self.taken).is_some_and(|at| at.elapsed() < *after)
                    && lock(&self.arrivals)
                        .front()
                        .is_some_and(|at| at.elapsed() >= *after)
            })
        };
        if !full && !stale() {
            return false;
        }
        let Some(msg) = env.msg.busy_answer() else {
            return false;
        };
        let reply = lock(&self.clients)
            .get(env.from.node.as_str())
            .map(|(_, tx)| tx.clone());
        let Some(reply) = reply else {
            return false;
        };
        self.shed.fetch_add(1, Ordering::Relaxed);
        let answer = Envelope {
            from: env.to.clone(),
            to: env.from.clone(),
            id: 0,
            msg,
        };
        if reply.send(answer).await.is_err() {
            tracing::debug!(node = %self.me, "client connection gone; busy answer not sent");
        }
        true
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Inbound connections refused because the peer spoke another protocol
    /// version ([`frame::PROTOCOL_VERSION`]); counted in [`Network::refused`]
    /// too.
    pub fn version_refused(&self) -> u64 {
        self.version_refused.load(Ordering::Relaxed)
    }

    /// Why a frame closes a connection, for the log: a version mismatch
    /// says so first (and is counted), naming both versions.
    fn frame_refusal(&self, e: &TransportError) -> String {
        match e {
            TransportError::Frame(FrameError::BadVersion { .. }) => {
                self.version_refused.fetch_add(1, Ordering::Relaxed);
                format!("protocol version mismatch: {e}")
            }
            _ => format!("bad frame: {e}"),
        }
    }

    /// Whether a warning about a refused connection or a bad frame may be
    /// logged now: a flood of hostile connections must not flood the log.
    /// When a period ends with lines left out, says how many.
    fn may_warn(&self) -> bool {
        let now = tokio::time::Instant::now();
        let mut w = self.warns.lock().expect("lock");
        let (start, lines, left_out) = &mut *w;
        if start.is_none_or(|s| now.duration_since(s) >= WARN_PERIOD) {
            if *left_out > 0 {
                tracing::warn!(node = %self.me, left_out = *left_out, "more connection warnings were left out in the last period");
            }
            *start = Some(now);
            *lines = 0;
            *left_out = 0;
        }
        if *lines < WARNS_PER_PERIOD {
            *lines += 1;
            true
        } else {
            *left_out += 1;
            false
        }
    }

    /// Whether this node hosts an actor that clients may address (with no
    /// roles known, every node is taken to).
    fn serves_clients(&self) -> bool {
        match self.roles.get().and_then(|r| r.get(&self.me)) {
            Some(kinds) => kinds.iter().any(|k| SERVES_CLIENTS.contains(k)),
            None => true,
        }
    }

    fn enqueue(&self, tx: &mpsc::Sender<Envelope>, env: Envelope) {
        if let Err(mpsc::error::TrySendError::Full(env)) = tx.try_send(env) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(node = %self.me, peer = %env.to.node, msg = env.msg.name(), dropped = n, "outbound queue full; envelope dropped (end-to-end recovery resends)");
            }
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Accepts connections on `addr` until the node stops.
    pub async fn listen(self: &Arc<Self>, addr: SocketAddr) -> std::io::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        let net = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        if let Err(e) = liveness::configure(&stream, &net.liveness()) {
                            tracing::debug!(node = %net.me, %remote, error = %e, "liveness options not set");
                        }
                        let conn = {
                            let mut n = net.next_conn.lock().expect("lock");
                            *n += 1;
                            *n
                        };
                        let (evict, evicted) = oneshot::channel();
                        {
                            let mut pending = net.pending.lock().expect("lock");
                            pending.push_back((conn, evict));
                            while pending.len() > MAX_PENDING_CONNECTIONS {
                                if let Some((_, oldest)) = pending.pop_front() {
                                    let _ = oldest.send(());
                                }
                            }
                        }
                        let net = net.clone();
                        tokio::spawn(async move {
                            net.serve_inbound(stream, remote, conn, evicted).await
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors, say: wait a little
                        // rather than spin.
                        if net.may_warn() {
                            tracing::warn!(node = %net.me, error = %e, "accept failed");
                        }
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Routes an envelope: to this node's inbox, to a server peer, or back to
    /// a connected client.
    pub fn send(self: &Arc<Self>, env: Envelope) -> Result<(), TransportError> {
        let node = env.to.node.as_str();
        if node == self.me {
            let _ = self.inbox.send(env);
            return Ok(());
        }
        if let Some(addr) = self.peers.get(node).copied() {
            let mut out = self.outbound.lock().expect("lock");
            // Looked up before a key is built: the peer's queue exists for
            // every envelope but the first.
            if let Some(tx) = out.get(node) {
                self.enqueue(tx, env);
                return Ok(());
            }
            let (tx, rx) = mpsc::channel(self.capacity);
            let net = self.clone();
            let peer = node.to_string();
            tokio::spawn(async move { net.run_outbound(peer, addr, rx).await });
            let key = env.to.node.clone();
            self.enqueue(&tx, env);
            out.insert(key, tx);
            return Ok(());
        }
        let clients = self.clients.lock().expect("lock");
        match clients.get(node) {
            Some((_, tx)) => {
                self.enqueue(tx, env);
                Ok(())
            }
            None => Err(TransportError::NoRoute(env.to.node)),
        }
    }

    async fn run_outbound(
        self: Arc<Self>,
        peer: String,
        addr: SocketAddr,
        mut rx: mpsc::Receiver<Envelope>,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut buf = Vec::new();
        // An envelope waiting for a (new) connection: never written into a
        // connection known to be closed.
        let mut carry: Option<Envelope> = None;
        loop {
            // Connect only with something to send: the first frame follows
            // at once (a listener closes connections that stay silent).
            let first = match carry.take() {
                Some(env) => env,
                None => match rx.recv().await {
                    Some(env) => env,
                    None => return,
                },
            };
            let connected = match liveness::connect(addr, &self.liveness()).await {
                Ok(tcp) => self.link.connect(&peer, tcp).await,
                Err(e) => Err(e),
            };
            let stream = match connected {
                Ok(s) => {
                    lock(&self.unreachable).remove(&peer);
                    s
                }
                Err(e) => {
                    lock(&self.unreachable).insert(peer.clone(), ConnectFailure::new(addr, &e));
                    self.failure_notice.notify_waiters();
                    tracing::debug!(node = %self.me, %peer, error = %e, "connect failed; retrying");
                    // The peer is unreachable: what queued for it is stale
                    // by the time it is back (the protocols above resend).
                    // Only the newest envelope waits, to go first then:
                    // held through an outage, the rest reached a peer at
                    // the heal, expired records among them.
                    carry = Some(self.newest_of(first, &mut rx));
                    tokio::time::sleep(backoff).await;
                    backoff = liveness::next_backoff(backoff);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            let (reader, mut writer) = tokio::io::split(stream);
            // Replies may come back on this connection too (for clients,
            // whose peers answer on the connection they were called on).
            let net = self.clone();
            let remote = peer.clone();
            let reader_task = tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::with_capacity(READ_BUFFER, reader);
                net.read_loop(&mut reader, &remote, false).await
            });
            let mut next = Some(first);
            loop {
                let env = match next.take() {
                    Some(env) => env,
                    None => match rx.recv().await {
                        Some(env) => env,
                        None => {
                            reader_task.abort();
                            return;
                        }
                    },
                };
                if reader_task.is_finished() {
                    // The peer closed the connection while it was idle:
                    // what we wrote now would vanish. Reconnect first.
                    carry = Some(env);
                    break;
                }
                if let Err(e) = write_batch(&mut writer, env, &mut rx, &mut buf, &self.me).await {
                    // The batch is left to end-to-end recovery.
                    tracing::debug!(node = %self.me, %peer, error = %e, "connection lost; reconnecting");
                    break;
                }
            }
            reader_task.abort();
            tokio::time::sleep(BACKOFF_MIN).await;
        }
    }

    /// The newest of `first` and what is queued behind it; the others are
    /// dropped and counted.
    fn newest_of(&self, first: Envelope, rx: &mut mpsc::Receiver<Envelope>) -> Envelope {
        let mut newest = first;
        while let Ok(env) = rx.try_recv() {
            newest = env;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        newest
    }

    /// Reads frames into the inbox until the connection ends or misbehaves.
    /// Every frame must come from the node the connection belongs to (and,
    /// on a client's connection, from a client): a peer cannot speak for
    /// another node or another role. A client's connection that stays
    /// silent for [`CLIENT_IDLE_TIMEOUT`] is closed.
    async fn read_loop<R: AsyncBufRead + Unpin>(&self, reader: &mut R, remote: &str, client: bool) {
        loop {
            let read = read_buffered_frame(reader, MAX_FRAME);
            let frame = if client {
                match tokio::time::timeout(CLIENT_IDLE_TIMEOUT, read).await {
                    Ok(f) => f,
                    Err(_) => {
                        tracing::debug!(node = %self.me, %remote, "client connection idle; closing it");
                        return;
                    }
                }
            } else {
                read.await
            };
            match frame {
                Ok(Some(env)) => {
                    if env.to.node != self.me {
                        if self.may_warn() {
                            tracing::warn!(node = %self.me, %remote, to = %env.to, "frame addressed to another node; closing connection");
                        }
                        self.refuse();
                        return;
                    }
                    if env.from.node != remote
                        || (client && env.from.actor != ActorKind::Client)
                        || (!client && !self.may_speak_as(&env.from))
                    {
                        if self.may_warn() {
                            tracing::warn!(node = %self.me, %remote, from = %env.from, "frame claims another sender; closing connection");
                        }
                        self.refuse();
                        return;
                    }
                    if client && self.shed_if_full(&env).await {
                        continue;
                    }
                    self.admit(env).await;
                }
                Ok(None) => return,
                Err(TransportError::Io(e)) => {
                    tracing::debug!(node = %self.me, %remote, error = %e, "connection ended");
                    return;
                }
                Err(e) => {
                    let why = self.frame_refusal(&e);
                    if self.may_warn() {
                        tracing::warn!(node = %self.me, %remote, "{why}; closing connection");
                    }
                    self.refuse();
                    return;
                }
            }
        }
    }

    /// Refuses an inbound connection: counted, and logged within the rate
    /// limit.
    fn refuse_with(&self, remote: SocketAddr, why: std::fmt::Arguments<'_>) {
        if self.may_warn() {
            tracing::warn!(node = %self.me, %remote, "{why}; closing connection");
        }
        self.refuse();
    }

    /// The connection `conn` has said who it is (or is gone): it leaves the
    /// connections that may be evicted.
    fn identified(&self, conn: u64) {
        let mut pending = self.pending.lock().expect("lock");
        if let Some(i) = pending.iter().position(|(c, _)| *c == conn) {
            pending.remove(i);
        }
    }

    /// Serves one inbound connection `conn`. Until its first frame names a
    /// server peer (unlimited: the address book bounds them) or a client
    /// (which takes a client slot), it is among the pending connections and
    /// is closed if `evicted` fires.
    async fn serve_inbound(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        conn: u64,
        evicted: oneshot::Receiver<()>,
    ) {
        let opened = self.open_inbound(stream, evicted).await;
        self.identified(conn);
        self.serve_opened(opened, remote, conn).await;
    }

    /// The handshake and the first frame, under one deadline, unless the
    /// connection is evicted first.
    async fn open_inbound(&self, stream: TcpStream, evicted: oneshot::Receiver<()>) -> Opened {
        let opening = tokio::time::timeout(FIRST_FRAME_TIMEOUT, async {
            let (stream, identity) = self
                .link
                .accept(stream)
                .await
                .map_err(|e| format!("handshake refused: {e}"))?;
            let (reader, writer) = tokio::io::split(stream);
            let mut reader = tokio::io::BufReader::with_capacity(INBOUND_READ_BUFFER, reader);
            // A client's first frame is a request; a node's (a certificate of
            // the cluster, or a plain link, which believes its peers) may be
            // a full batch resent after a reconnect.
            let max = match identity {
                PeerIdentity::Client(_) => MAX_FIRST_FRAME,
                PeerIdentity::Node(_) | PeerIdentity::Claimed => MAX_FRAME,
            };
            match read_buffered_frame(&mut reader, max).await {
                Ok(Some(env)) => Ok(Some((reader, writer, identity, env))),
                Ok(None) => Ok(None),
                Err(e @ TransportError::Frame(FrameError::BadVersion { .. })) => {
                    Err(self.frame_refusal(&e))
                }
                Err(e) => Err(format!("bad first frame: {e}")),
            }
        });
        tokio::select! {
            opened = opening => match opened {
                Ok(r) => r,
                Err(_) => Err("no handshake and first frame in time".into()),
            },
            _ = evicted => Err(format!(
                "silent while {MAX_PENDING_CONNECTIONS} newer connections came; evicted"
            )),
        }
    }

    async fn serve_opened(self: Arc<Self>, opened: Opened, remote: SocketAddr, conn: u64) {
        let (mut reader, mut writer, identity, first) = match opened {
            Ok(Some(opened)) => opened,
            Ok(None) => return,
            Err(why) => return self.refuse_with(remote, format_args!("{why}")),
        };
        let peer = first.from.node.clone();
        if peer == self.me {
            return self.refuse_with(remote, format_args!("a connection claims to be this node"));
        }
        let known = self.peers.contains_key(&peer);
        let proven = match &identity {
            PeerIdentity::Claimed => true,
            PeerIdentity::Node(name) => *name == peer,
            // A client speaks under a name that carries its credential's
            // principal (and every later frame must keep that name).
            PeerIdentity::Client(principal) => {
                first.from.actor == ActorKind::Client
                    && Principal::of_client_name(&peer).as_ref() == Some(principal)
            }
        };
        if !proven {
            return self.refuse_with(
                remote,
                format_args!(
                    "frame names a sender ({peer}) its certificate does not ({identity:?})"
                ),
            );
        }
        // A client must not take a server's name: with a user credential,
        // only a client name outside the address book is accepted.
        let client_credential = matches!(identity, PeerIdentity::Client(_));
        let known = known && !client_credential;
        if known && !self.may_speak_as(&first.from) {
            return self.refuse_with(
                remote,
                format_args!(
                    "a node speaks for an actor it does not host ({})",
                    first.from
                ),
            );
        }
        if !known && first.from.actor != ActorKind::Client {
            return self.refuse_with(remote, format_args!("unknown peer {peer}"));
        }
        if client_credential && self.peers.contains_key(&peer) {
            return self.refuse_with(
                remote,
                format_args!("a client's credential claims a node's name ({peer})"),
            );
        }
        if first.to.node != self.me {
            return self.refuse_with(
                remote,
                format_args!("frame addressed to another node ({})", first.to),
            );
        }
        let mut writer_task = None;
        let mut _client_slot = None;
        if !known {
            if !self.serves_clients() || !SERVES_CLIENTS.contains(&first.to.actor) {
                return self.refuse_with(
                    remote,
                    format_args!("a client addresses {}, which takes no clients", first.to),
                );
            }
            match self.client_slots.clone().try_acquire_owned() {
                Ok(slot) => _client_slot = Some(slot),
                Err(_) => {
                    return self.refuse_with(
                        remote,
                        format_args!("{MAX_CLIENT_CONNECTIONS} client connections open already"),
                    )
                }
            }
            let (tx, mut rx) = mpsc::channel::<Envelope>(self.capacity);
            self.clients
                .lock()
                .expect("lock")
                .insert(peer.clone(), (conn, tx));
            let me = self.me.clone();
            writer_task = Some(tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(env) = rx.recv().await {
                    if let Err(e) = write_batch(&mut writer, env, &mut rx, &mut buf, &me).await {
                        tracing::debug!(node = %me, error = %e, "client connection lost");
                        return;
                    }
                }
            }));
        }
        if known || !self.shed_if_full(&first).await {
            self.admit(first).await;
        }
        self.read_loop(&mut reader, &peer, !known).await;
        if let Some(t) = writer_task {
            t.abort();
            let mut clients = self.clients.lock().expect("lock");
            if clients.get(&peer).map(|(c, _)| *c) == Some(conn) {
                clients.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbound_bound_holds_four_transfer_windows() {
        assert_eq!(outbound_capacity(256), DEFAULT_OUTBOUND_CAPACITY);
        assert_eq!(outbound_capacity(4096), 16384);
        assert_eq!(outbound_capacity(u64::MAX), usize::MAX);
    }
}

/// The transport over real loopback sockets (the simulator runs the same
/// code over its own).
#[cfg(all(test, not(madsim)))]
mod socket_tests {
    use super::*;
    use holdfast_actors::core::ids::Addr;
    use holdfast_actors::core::protocol::{ArchivingMsg, Im, Msg, RejectReason};

    fn submit(i: usize) -> Envelope {
        Envelope {
            from: Addr::new("c1", ActorKind::Client),
            to: Addr::new("fe1", ActorKind::FrontEnd),
            id: 0,
            msg: Msg::Archiving(ArchivingMsg::SubmitIm {
                im: Im {
                    id: format!("m{i}").into(),
                    from: "alice@corp.example".into(),
                    to: "bob@corp.example".into(),
                    body: String::new(),
                },
            }),
        }
    }

    /// A front end `fe1` listening on loopback (with readers shedding on
    /// time after `shed_after`, if given), whose inbox only the test
    /// empties, and a client `c1` connected to it whose answers arrive on
    /// the returned receiver. Call inside a tokio runtime.
    async fn front_end_and_client(
        shed_after: Option<Duration>,
        client_capacity: usize,
    ) -> (
        Arc<Network>,
        mpsc::UnboundedReceiver<Envelope>,
        Arc<Network>,
        mpsc::UnboundedReceiver<Envelope>,
    ) {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (inbox, node) = mpsc::unbounded_channel();
        let fe = Network::new("fe1", BTreeMap::new(), inbox);
        if let Some(after) = shed_after {
            fe.set_shed_after(after);
        }
        fe.listen(addr).await.unwrap();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let client = Network::forwarding_to(
            "c1",
            BTreeMap::from([("fe1".to_string(), addr)]),
            Arc::new(PlainLink),
            client_capacity,
            answers_tx,
        );
        (fe, node, client, answers)
    }

    fn two_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A front end whose inbox nobody empties (a saturated processor)
    /// takes IMs until only the reserve is left, then answers every
    /// further IM busy at once, in order, and keeps reading: no request
    /// waits unanswered in a socket. Before, the reader stopped at the
    /// full inbox and the client heard nothing at all.
    #[test]
    fn a_full_inbox_answers_client_ims_busy_and_keeps_reading() {
        two_thread_runtime().block_on(async {
            let (fe, mut node, client, mut answers) = front_end_and_client(None, 100_000).await;
            let sent = DEFAULT_INBOUND_LIMIT + 2_000;
            for i in 0..sent {
                client.send(submit(i)).unwrap();
            }
            let taken = DEFAULT_INBOUND_LIMIT - SHED_RESERVE + 1;
            let mut busy = Vec::new();
            while busy.len() < sent - taken {
                let answer = tokio::time::timeout(Duration::from_secs(20), answers.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{} of {} busy answers came", busy.len(), sent - taken)
                    })
                    .unwrap();
                match answer.msg {
                    Msg::Archiving(ArchivingMsg::ImRejected {
                        id,
                        reason: RejectReason::Busy,
                    }) => busy.push(id),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
            let expected: Vec<String> = (taken..sent).map(|i| format!("m{i}")).collect();
            assert_eq!(busy, expected);
            assert_eq!(fe.shed(), (sent - taken) as u64);
            let mut inside = 0;
            while node.try_recv().is_ok() {
                inside += 1;
            }
            assert_eq!(inside, taken);
        });
    }

    /// A consumer that stops taking from a nearly empty inbox (its thread
    /// got no processor, its process was paused) is no backlog: requests
    /// that come in meanwhile wait for it, and none is answered busy for
    /// the time the first ones waited. Before, every IM read after half of
    /// `admission_wait` into such a pause was answered busy, however empty
    /// the inbox (`scenarios/front-end-stalls.toml` is the same in the
    /// simulator).
    #[test]
    fn a_paused_consumer_of_a_nearly_empty_inbox_sheds_nothing() {
        two_thread_runtime().block_on(async {
            let (fe, mut node, client, mut answers) =
                front_end_and_client(Some(Duration::from_millis(20)), 1_000).await;
            let recv = |node: &mut mpsc::UnboundedReceiver<Envelope>| {
                let env = node.try_recv();
                env.ok()
            };
            // The consumer takes the first request, then pauses.
            client.send(submit(0)).unwrap();
            let first = tokio::time::timeout(Duration::from_secs(10), node.recv())
                .await
                .unwrap()
                .unwrap();
            fe.consumed(&first);
            for i in 1..5 {
                client.send(submit(i)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            for i in 5..10 {
                client.send(submit(i)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(fe.shed(), 0, "requests answered busy during a pause");
            assert!(answers.try_recv().is_err(), "an answer came during a pause");
            let mut inside = Vec::new();
            while let Some(env) = recv(&mut node) {
                fe.consumed(&env);
                inside.push(env);
            }
            assert_eq!(inside.len(), 9, "every request waits in the inbox");
        });
    }
}

//! TCP flow control for the simulated network.
//!
//! madsim's TCP streams buffer without limit: a writer never waits, and
//! frames written into a clogged link are held and all delivered when it
//! heals. Real TCP stops a writer once its send buffer and the receiver's
//! window are full, so a partition or a slow receiver holds at most that
//! much in flight. Without the bound, a front end that resends its transfer
//! window into a four-hour partition had tens of thousands of stale
//! transfers delivered in one burst at the heal, and a slow archiver's
//! inbox grew by every resend for hours: behaviour no deployment shows, and
//! most of the simulator's work.
//!
//! [`FlowLink`] is the simulator's [`Link`]: it pairs the two ends of every
//! connection and lets a writer have at most [`WINDOW`] bytes written that
//! the other end has not read yet. A writer past the window waits (as on a
//! full socket buffer), which fills the transport's bounded outbound queue,
//! which then drops and counts; the queues' end-to-end resends recover.
//!
//! The two ends meet through a registry owned by the simulation (never a
//! global), keyed by (connecting address, listening address). Either end
//! may arrive first. An end that closes wakes a writer blocked on it, which
//! then fails as a write into a reset connection does.
//!
//! madsim's TCP also survives any partition: what was written into a cut
//! link arrives when it heals, hours later. Real TCP gives up. Data that
//! goes unacknowledged (the data or the acknowledgements cannot cross)
//! is retransmitted with backoff, and after [`RETRANSMISSION_TIMEOUT`]
//! (Linux: 15 retries, about 15 minutes) the connection is aborted and
//! what was in flight is gone. A connect across a cut fails too (the SYN
//! or its answer is lost). The simulation tells the link which links are
//! cut ([`FlowLink::cut`], [`FlowLink::heal`]);
//! [`FlowLink::retransmission_timeouts`] aborts every connection that has
//! had data unacknowledged across a cut for that long. Without it, a
//! front end's stale transfers from the first minutes of a four-hour
//! partition were delivered at the heal, so under `ocs2007r2` records that
//! had expired in the front end's queue still reached the archive.
//!
//! Like Linux, and unlike madsim (which retries a clogged packet with a
//! backoff capped at 10 s):
//!
//! * **Retransmission backoff.** Unacknowledged data is retransmitted
//!   [`RTO_MIN`] after it was sent, then with the timeout doubling up to
//!   [`RTO_MAX`]: after a heal, a connection resumes only at its *next*
//!   retransmission (up to two minutes later), and reads on the other end
//!   wait until then ([`next_retransmission`]).
//! * **`TCP_USER_TIMEOUT`.** The host sets it to the `link_timeout` setting
//!   on every real socket (`holdfast_host::liveness`); the simulation
//!   passes the same bound ([`FlowLink::set_user_timeout`]) and aborts
//!   after it rather than after the 15 retransmissions.
//! * **Lost acknowledgements stop the sender.** When only the way back is
//!   cut, data sent within the first retransmission timeout (and one
//!   congestion window, [`CWND`]) still arrives; after that the sender only
//!   retransmits its first segment, so nothing new arrives until the heal
//!   (madsim delivered a whole window, about 261 transfers).
//! * **SYN retransmissions.** A connect across a cut is not refused at
//!   once: its SYN is resent 1, 3, 7, 15, 31 and 63 s after it began, the
//!   connect succeeds at the first one after a heal, and fails after
//!   127 s ([`SYN_SCHEDULE`]); the host abandons it sooner, after its
//!   connect timeout ([`FlowLink::connect_timeout`]), and connects again.
//!   On real sockets that timeout wraps the SYN phase; here the SYN phase
//!   is the link's wait, so the link applies it (without it a connect begun
//!   during a one-way cut outlived the heal by up to a minute and the
//!   front end never recovered: the calibration found it).
//!
//! Not modelled: packet loss without a cut, reordering, congestion control
//! beyond the first window, keep-alive probes (an idle connection survives
//! a cut here; on real nodes keep-alive closes it after twice
//! `link_timeout`, and the next write reconnects), RST on a write into a
//! connection the other end has forgotten.

use crate::lock;
use holdfast_host::transport::{BoxFuture, BoxStream, Link, PeerIdentity};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Bytes one end may have written that the other has not read: a send
/// buffer plus a receive window, about what Linux gives a connection by
/// default.
pub const WINDOW: usize = 128 * 1024;

/// How long data may go unacknowledged before the connection is aborted:
/// Linux's default of 15 retransmissions (`tcp_retries2`), with the
/// timeout doubling from 200 ms up to 120 s, gives up after 924.6 s.
pub const RETRANSMISSION_TIMEOUT: Duration = Duration::from_millis(924_600);

/// How often connections across a cut are checked against
/// [`RETRANSMISSION_TIMEOUT`]: an abort comes at most this much late (a
/// tenth of a shorter user timeout, see [`FlowLink::set_user_timeout`]).
pub const TIMEOUT_CHECK: Duration = Duration::from_secs(10);

/// Linux's first retransmission timeout (its minimum).
pub const RTO_MIN: Duration = Duration::from_millis(200);
/// The ceiling of the doubling retransmission timeout.
pub const RTO_MAX: Duration = Duration::from_secs(120);
/// Bytes a sender gets out before it waits for acknowledgements: Linux's
/// initial congestion window, ten segments of 1448 bytes.
pub const CWND: usize = 10 * 1448;
/// When a connect's SYN is sent again, from the start of the connect, and
/// when it fails (`tcp_syn_retries` = 6).
pub const SYN_SCHEDULE: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(7),
    Duration::from_secs(15),
    Duration::from_secs(31),
    Duration::from_secs(63),
];
pub const SYN_TIMEOUT: Duration = Duration::from_secs(127);

/// The first retransmission at or after `now` of data first sent at
/// `since` and unacknowledged since: at `since` + 200 ms, + 600 ms,
/// + 1.4 s, ..., each timeout twice the last, at most [`RTO_MAX`].
pub fn next_retransmission(since: Instant, now: Instant) -> Instant {
    let mut at = since;
    let mut rto = RTO_MIN;
    loop {
        at += rto;
        if at >= now {
            return at;
        }
        rto = (rto * 2).min(RTO_MAX);
    }
}

/// The connecting end is 0, the accepting end 1.
const CONNECTOR: usize = 0;
const ACCEPTOR: usize = 1;

#[derive(Default)]
struct Direction {
    /// Written by this direction's writer, not yet acknowledged (read by
    /// the other end while acknowledgements cross).
    in_flight: usize,
    /// Bytes written and read, in all.
    written: usize,
    read: usize,
    /// While only this direction's acknowledgements are cut: the total the
    /// other end may read (what went out before the sender stalled), and
    /// what was read without being acknowledged.
    readable: Option<usize>,
    /// `written` when the acknowledgements were cut.
    stall_base: usize,
    read_unacked: usize,
    /// After a heal, reads wait for the next retransmission; `true`: the
    /// connection is aborted then instead (the user timeout comes first).
    held_until: Option<(Instant, bool)>,
    /// The writer waiting for room.
    blocked: Option<Waker>,
    /// While the connection crosses a cut: when this direction first wrote
    /// after the cut began (data that cannot be acknowledged).
    unacked_since: Option<Instant>,
    /// While the connection crosses a cut: this direction's reader, woken
    /// if the connection is aborted.
    reading: Option<Waker>,
}

#[derive(Default)]
struct Pair {
    /// Indexed by the writing end.
    dirs: [Direction; 2],
    closed: [bool; 2],
    /// Aborted after a retransmission timeout: both ends fail.
    aborted: bool,
    /// The connecting and the accepting end's addresses.
    ips: Option<[IpAddr; 2]>,
    /// Whether each direction's data path and acknowledgement path are cut.
    data_cut: [bool; 2],
    ack_cut: [bool; 2],
}

impl Pair {
    fn crossing(&self) -> bool {
        self.data_cut.iter().chain(&self.ack_cut).any(|c| *c)
    }

    /// Whether anything but a plain read or write is going on.
    fn needs_watch(&self) -> bool {
        self.crossing() || self.dirs.iter().any(|d| d.held_until.is_some())
    }
}

#[derive(Default)]
struct PairCell {
    pair: Mutex<Pair>,
    /// The connection crosses a cut: its writes start the retransmission
    /// clock and its readers leave a waker. Read without the lock, so a
    /// connection on a healthy link pays nothing for it.
    watched: AtomicBool,
}

type Shared = Arc<PairCell>;
type Key = (SocketAddr, SocketAddr);

/// The simulator's link: plain TCP (peers named by their first frame, as
/// [`holdfast_host::transport::PlainLink`]) with flow control and TCP's
/// retransmission timeout.
#[derive(Default)]
pub struct FlowLink {
    /// Connections one end of which has arrived.
    waiting: Mutex<BTreeMap<Key, Shared>>,
    /// Every connection made, as (connecting IP, accepting IP); entries of
    /// closed connections are pruned from time to time.
    connections: Mutex<Connections>,
    /// Cut links (from, to), each with the number of faults cutting it.
    cuts: Mutex<BTreeMap<(IpAddr, IpAddr), usize>>,
    /// Wakes [`FlowLink::retransmission_timeouts`] when a cut begins.
    cut_begun: Notify,
    /// The hosts' `TCP_USER_TIMEOUT`, if shorter than the retransmissions.
    user_timeout: Mutex<Option<Duration>>,
}

#[derive(Default)]
struct Connections {
    list: Vec<(IpAddr, IpAddr, Weak<PairCell>)>,
    /// Length after the last pruning: the list is pruned when it doubles.
    pruned_len: usize,
}

impl FlowLink {
    pub fn new() -> Arc<FlowLink> {
        Arc::new(FlowLink::default())
    }

    /// Data unacknowledged this long aborts a connection (what the hosts
    /// set as `TCP_USER_TIMEOUT` on real sockets: the `link_timeout`
    /// setting), if that comes before the 15 retransmissions.
    pub fn set_user_timeout(&self, timeout: Duration) {
        *lock(&self.user_timeout) = Some(timeout);
    }

    /// How long the host lets a connect take before it gives it up (what
    /// `holdfast_host::liveness` bounds real connects by; the SYN
    /// retransmission schedule alone once no user timeout is set).
    pub fn connect_timeout(&self) -> Duration {
        match *lock(&self.user_timeout) {
            Some(t) => holdfast_host::liveness::Liveness::new(t).connect_timeout(),
            None => SYN_TIMEOUT,
        }
    }

    /// How long data may go unacknowledged before the connection aborts.
    pub fn abort_after(&self) -> Duration {
        lock(&self.user_timeout).map_or(RETRANSMISSION_TIMEOUT, |t| t.min(RETRANSMISSION_TIMEOUT))
    }

    /// How often the aborts are checked: at most a tenth of the bound late.
    fn check_period(&self) -> Duration {
        (self.abort_after() / 10).clamp(Duration::from_millis(100), TIMEOUT_CHECK)
    }

    /// Brings a pair's idea of which of its paths are cut up to date, and
    /// with it the stalls of lost acknowledgements and, when the last cut
    /// ends, the wait for the next retransmission.
    fn update(&self, cell: &PairCell, p: &mut Pair, now: Instant) {
        let Some(ips) = p.ips else { return };
        let abort_after = self.abort_after();
        for side in [CONNECTOR, ACCEPTOR] {
            let (me, other) = (ips[side], ips[1 - side]);
            let data_cut = self.is_cut_one_way(me, other);
            let ack_cut = self.is_cut_one_way(other, me);
            let was_crossing = p.data_cut[side] || p.ack_cut[side];
            p.data_cut[side] = data_cut;
            p.ack_cut[side] = ack_cut;
            let d = &mut p.dirs[side];
            if data_cut || ack_cut {
                // Data already in flight is not acknowledged any more (nor
                // are the probes of a full receive window).
                if d.in_flight > 0 && d.unacked_since.is_none() {
                    d.unacked_since = Some(now);
                }
                if ack_cut && !data_cut {
                    if d.readable.is_none() {
                        d.readable = Some(d.written);
                        d.stall_base = d.written;
                    }
                } else {
                    d.readable = None;
                }
            } else if was_crossing {
                // Acknowledged again: what was read during the stall
                // frees the window.
                d.readable = None;
                d.in_flight = d.in_flight.saturating_sub(d.read_unacked);
                d.read_unacked = 0;
                if let Some(since) = d.unacked_since.take() {
                    let retransmit = next_retransmission(since, now);
                    let abort = since + abort_after;
                    d.held_until = Some(if retransmit >= abort {
                        (abort, true)
                    } else {
                        (retransmit, false)
                    });
                }
                for w in [d.reading.take(), d.blocked.take()].into_iter().flatten() {
                    w.wake();
                }
            }
        }
        cell.watched.store(p.needs_watch(), Ordering::Relaxed);
    }

    fn is_cut_one_way(&self, from: IpAddr, to: IpAddr) -> bool {
        lock(&self.cuts).contains_key(&(from, to))
    }

    /// The pair for `key`: the one the other end left, or a new one left
    /// for it.
    fn meet(&self, key: Key) -> Shared {
        let mut waiting = lock(&self.waiting);
        match waiting.remove(&key) {
            Some(pair) => pair,
            None => {
                let pair = Shared::default();
                waiting.insert(key, pair.clone());
                drop(waiting);
                self.register(key, &pair);
                pair
            }
        }
    }

    fn wrap(&self, tcp: TcpStream, side: usize) -> io::Result<FlowStream> {
        let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
        let key = if side == CONNECTOR {
            (local, peer)
        } else {
            (peer, local)
        };
        Ok(FlowStream {
            inner: tcp,
            pair: self.meet(key),
            side,
            unflushed: false,
            hold: None,
        })
    }

    fn register(&self, (from, to): Key, pair: &Shared) {
        {
            let mut p = lock(&pair.pair);
            p.ips = Some([from.ip(), to.ip()]);
            self.update(pair, &mut p, Instant::now());
        }
        let mut c = lock(&self.connections);
        if c.list.len() >= 2 * c.pruned_len.max(32) {
            c.list.retain(|(_, _, w)| w.strong_count() > 0);
            c.pruned_len = c.list.len();
        }
        c.list.push((from.ip(), to.ip(), Arc::downgrade(pair)));
    }

    fn is_cut(&self, a: IpAddr, b: IpAddr) -> bool {
        let cuts = lock(&self.cuts);
        cuts.contains_key(&(a, b)) || cuts.contains_key(&(b, a))
    }

    /// The link from `from` to `to` is cut (by one more fault). Segments
    /// cannot cross it, nor can the acknowledgements of what goes the
    /// other way: every connection between the two starts its
    /// retransmission clock now if it has data in flight, else at its
    /// next write.
    pub fn cut(&self, from: IpAddr, to: IpAddr) {
        *lock(&self.cuts).entry((from, to)).or_default() += 1;
        let now = Instant::now();
        self.for_each_between(from, to, |cell, p| self.update(cell, p, now));
        self.cut_begun.notify_one();
    }

    /// One fault cutting the link from `from` to `to` ends. When neither
    /// direction is cut any more, what a connection had unacknowledged is
    /// delivered at its next retransmission (or the connection aborts at
    /// its user timeout, if that comes first); after that it is no longer
    /// watched.
    pub fn heal(&self, from: IpAddr, to: IpAddr) {
        {
            let mut cuts = lock(&self.cuts);
            if let Some(n) = cuts.get_mut(&(from, to)) {
                *n -= 1;
                if *n == 0 {
                    cuts.remove(&(from, to));
                }
            }
        }
        let now = Instant::now();
        self.for_each_between(from, to, |cell, p| self.update(cell, p, now));
    }

    /// Calls `f` on every open connection between `a` and `b` (either way).
    fn for_each_between(&self, a: IpAddr, b: IpAddr, mut f: impl FnMut(&PairCell, &mut Pair)) {
        let c = lock(&self.connections);
        for (x, y, w) in &c.list {
            if (*x, *y) != (a, b) && (*x, *y) != (b, a) {
                continue;
            }
            if let Some(cell) = w.upgrade() {
                let mut p = lock(&cell.pair);
                f(&cell, &mut p);
            }
        }
    }

    /// TCP's retransmission timeout, for the whole simulated network: while
    /// any link is cut, aborts every connection across a cut that has had
    /// data unacknowledged for [`RETRANSMISSION_TIMEOUT`]. Both ends fail
    /// at their next read or write (a blocked one is woken), and what was
    /// in flight is never delivered. Runs until the simulation drops it.
    pub async fn retransmission_timeouts(self: Arc<Self>) {
        loop {
            if lock(&self.cuts).is_empty() {
                self.cut_begun.notified().await;
                continue;
            }
            tokio::time::sleep(self.check_period()).await;
            let abort_after = self.abort_after();
            let now = Instant::now();
            let c = lock(&self.connections);
            for (_, _, w) in &c.list {
                let Some(cell) = w.upgrade() else { continue };
                if !cell.watched.load(Ordering::Relaxed) {
                    continue;
                }
                let mut p = lock(&cell.pair);
                let timed_out = p.dirs.iter().any(|d| {
                    d.unacked_since
                        .is_some_and(|t| now.duration_since(t) >= abort_after)
                });
                if timed_out && !p.aborted {
                    p.aborted = true;
                    for d in &mut p.dirs {
                        for w in [d.blocked.take(), d.reading.take()].into_iter().flatten() {
                            w.wake();
                        }
                    }
                }
            }
        }
    }
}

impl Link for FlowLink {
    fn connect<'a>(
        &'a self,
        _peer: &'a str,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<BoxStream>> {
        // madsim lets a connection open when only the way back is cut; TCP
        // does not (the SYN's answer is lost). The accepting end, already
        // paired, fails when this one is dropped.
        let cut = match (tcp.local_addr(), tcp.peer_addr()) {
            (Ok(local), Ok(peer)) => self.is_cut(local.ip(), peer.ip()),
            _ => false,
        };
        let ends = (tcp.local_addr(), tcp.peer_addr());
        let stream = self.wrap(tcp, CONNECTOR);
        Box::pin(async move {
            if cut {
                // The SYN (or its answer) is lost: it is sent again on
                // Linux's schedule, and the connect completes at the first
                // one after a heal, or fails.
                let (Ok(local), Ok(peer)) = ends else {
                    return Err(io::ErrorKind::TimedOut.into());
                };
                let start = Instant::now();
                // The host gives a connect up after its connect timeout
                // (on real sockets that bound wraps the SYN phase; here
                // the SYN phase is this wait, so the bound applies here).
                let give_up = SYN_TIMEOUT.min(self.connect_timeout());
                let mut open = false;
                for at in SYN_SCHEDULE.into_iter().take_while(|at| *at < give_up) {
                    tokio::time::sleep_until(start + at).await;
                    if !self.is_cut(local.ip(), peer.ip()) {
                        open = true;
                        break;
                    }
                }
                if !open {
                    tokio::time::sleep_until(start + give_up).await;
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection timed out: the link is cut",
                    ));
                }
            }
            Ok(Box::new(stream?) as BoxStream)
        })
    }

    fn accept(&self, tcp: TcpStream) -> BoxFuture<'_, io::Result<(BoxStream, PeerIdentity)>> {
        let stream = self.wrap(tcp, ACCEPTOR);
        Box::pin(async move { Ok((Box::new(stream?) as BoxStream, PeerIdentity::Claimed)) })
    }
}

/// One end of a flow-controlled connection.
pub struct FlowStream {
    inner: TcpStream,
    pair: Shared,
    side: usize,
    /// Written to since the last flush.
    unflushed: bool,
    /// Reads wait for the other end's next retransmission.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection timed out: data unacknowledged across a cut link",
    )
}

impl AsyncWrite for FlowStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let room = {
            let mut p = lock(&me.pair.pair);
            if p.aborted {
                return Poll::Ready(Err(aborted()));
            }
            if p.closed[1 - me.side] {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let crossing = p.crossing();
            let d = &mut p.dirs[me.side];
            if crossing && d.unacked_since.is_none() {
                d.unacked_since = Some(Instant::now());
            }
            let room = WINDOW.saturating_sub(d.in_flight);
            if room == 0 {
                d.blocked = Some(cx.waker().clone());
            }
            room
        };
        if room == 0 {
            // madsim sends nothing before a flush: what fills the window
            // must go out, or the reads that make room never come.
            if me.unflushed {
                me.unflushed = false;
                if let Poll::Ready(Err(e)) = Pin::new(&mut me.inner).poll_flush(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            return Poll::Pending;
        }
        let n = buf.len().min(room);
        let written = Pin::new(&mut me.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(k)) = written {
            let mut p = lock(&me.pair.pair);
            let d = &mut p.dirs[me.side];
            d.in_flight += k;
            d.written += k;
            // Acknowledgements cut: what goes out before the first
            // retransmission timeout, within one congestion window,
            // arrives; later writes wait for the heal.
            if let (Some(_), Some(since)) = (d.readable, d.unacked_since) {
                if Instant::now() < since + RTO_MIN && d.written - d.stall_base <= CWND {
                    d.readable = Some(d.written);
                    if let Some(w) = d.reading.take() {
                        w.wake();
                    }
                }
            }
            me.unflushed |= k > 0;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.unflushed = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let watched = me.pair.watched.load(Ordering::Relaxed);
        // How much this read may take: all of it, unless the other end
        // stalled (lost acknowledgements) or waits to retransmit.
        let mut limit = usize::MAX;
        if watched {
            let mut p = lock(&me.pair.pair);
            if p.aborted {
                // What the other end had in flight is gone with the
                // connection.
                return Poll::Ready(Err(aborted()));
            }
            if let Some((until, abort)) = p.dirs[1 - me.side].held_until {
                let hold = me
                    .hold
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if hold.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                me.hold = None;
                p.dirs[1 - me.side].held_until = None;
                if abort {
                    p.aborted = true;
                    for d in &mut p.dirs {
                        if let Some(w) = d.blocked.take() {
                            w.wake();
                        }
                    }
                    return Poll::Ready(Err(aborted()));
                }
                me.pair.watched.store(p.needs_watch(), Ordering::Relaxed);
            }
            let d = &mut p.dirs[1 - me.side];
            if let Some(readable) = d.readable {
                limit = readable.saturating_sub(d.read);
                if limit == 0 && p.closed[1 - me.side] {
                    // The stalled sender is gone: the end of the stream.
                    return Poll::Ready(Ok(()));
                }
                let d = &mut p.dirs[1 - me.side];
                if limit == 0 {
                    d.reading = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let before = buf.filled().len();
        let read = if limit < buf.remaining() {
            // Rare (a stalled sender): through a buffer of the allowed size.
            let mut bytes = vec![0u8; limit];
            let mut part = ReadBuf::new(&mut bytes);
            let r = Pin::new(&mut me.inner).poll_read(cx, &mut part);
            buf.put_slice(part.filled());
            r
        } else {
            Pin::new(&mut me.inner).poll_read(cx, buf)
        };
        let n = buf.filled().len() - before;
        if n > 0 {
            let mut p = lock(&me.pair.pair);
            if p.aborted {
                buf.set_filled(before);
                return Poll::Ready(Err(aborted()));
            }
            let d = &mut p.dirs[1 - me.side];
            d.read += n;
            if d.readable.is_some() {
                // Read, but the acknowledgement is lost.
                d.read_unacked += n;
            } else {
                d.in_flight = d.in_flight.saturating_sub(n);
                if let Some(w) = d.blocked.take() {
                    w.wake();
                }
            }
        } else if watched && read.is_pending() {
            lock(&me.pair.pair).dirs[1 - me.side].reading = Some(cx.waker().clone());
        }
        read
    }
}

impl Drop for FlowStream {
    fn drop(&mut self) {
        // A pair the other end has not met yet stays registered, closed:
        // an end that arrives late (a connect that completed only after the
        // listener gave up on the connection) then fails like a write into
        // a reset connection, rather than waiting for reads that never come.
        let mut p = lock(&self.pair.pair);
        p.closed[self.side] = true;
        // The other end's writer waits for reads that will never come,
        // and its reader perhaps for what this end held back.
        let wake = [
            p.dirs[1 - self.side].blocked.take(),
            p.dirs[self.side].reading.take(),
        ];
        for w in wake.into_iter().flatten() {
            w.wake();
        }
    }
}

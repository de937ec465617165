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
//! had expired in the front end's queue still reached the archive. An
//! idle connection survives a cut, as in TCP without keep-alives.

use crate::lock;
use holdfast_host::transport::{BoxFuture, BoxStream, Link, PeerIdentity};
use std::collections::BTreeMap;
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
/// [`RETRANSMISSION_TIMEOUT`]: an abort comes at most this much late.
pub const TIMEOUT_CHECK: Duration = Duration::from_secs(10);

/// The connecting end is 0, the accepting end 1.
const CONNECTOR: usize = 0;
const ACCEPTOR: usize = 1;

#[derive(Default)]
struct Direction {
    /// Written by this direction's writer, not yet read by the other end.
    in_flight: usize,
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
        })
    }

    fn register(&self, (from, to): Key, pair: &Shared) {
        let crosses_cut = self.is_cut(from.ip(), to.ip());
        if crosses_cut {
            pair.watched.store(true, Ordering::Relaxed);
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
        self.for_each_between(from, to, |cell, p| {
            cell.watched.store(true, Ordering::Relaxed);
            // Data already in flight is not acknowledged any more (nor
            // are the probes of a full receive window).
            for d in &mut p.dirs {
                if d.in_flight > 0 && d.unacked_since.is_none() {
                    d.unacked_since = Some(now);
                }
            }
        });
        self.cut_begun.notify_one();
    }

    /// One fault cutting the link from `from` to `to` ends. When neither
    /// direction is cut any more, the connections between the two are no
    /// longer watched (what they wrote is acknowledged as it is read).
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
        if self.is_cut(from, to) {
            return;
        }
        self.for_each_between(from, to, |cell, p| {
            cell.watched.store(false, Ordering::Relaxed);
            for d in &mut p.dirs {
                d.unacked_since = None;
                d.reading = None;
            }
        });
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
            tokio::time::sleep(TIMEOUT_CHECK).await;
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
                        .is_some_and(|t| now.duration_since(t) >= RETRANSMISSION_TIMEOUT)
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
        let stream = self.wrap(tcp, CONNECTOR);
        Box::pin(async move {
            if cut {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out: the link is cut",
                ));
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
            let d = &mut p.dirs[me.side];
            if me.pair.watched.load(Ordering::Relaxed) && d.unacked_since.is_none() {
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
            lock(&me.pair.pair).dirs[me.side].in_flight += k;
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
        if watched && lock(&me.pair.pair).aborted {
            // What the other end had in flight is gone with the connection.
            return Poll::Ready(Err(aborted()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut me.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let mut p = lock(&me.pair.pair);
            if p.aborted {
                buf.set_filled(before);
                return Poll::Ready(Err(aborted()));
            }
            let d = &mut p.dirs[1 - me.side];
            d.in_flight = d.in_flight.saturating_sub(n);
            if let Some(w) = d.blocked.take() {
                w.wake();
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
        // The other end's writer waits for reads that will never come.
        if let Some(w) = p.dirs[1 - self.side].blocked.take() {
            w.wake();
        }
    }
}

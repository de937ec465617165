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

use crate::lock;
use holdfast_host::transport::{BoxFuture, BoxStream, Link, PeerIdentity};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes one end may have written that the other has not read: a send
/// buffer plus a receive window, about what Linux gives a connection by
/// default.
pub const WINDOW: usize = 128 * 1024;

/// The connecting end is 0, the accepting end 1.
const CONNECTOR: usize = 0;
const ACCEPTOR: usize = 1;

#[derive(Default)]
struct Direction {
    /// Written by this direction's writer, not yet read by the other end.
    in_flight: usize,
    /// The writer waiting for room.
    blocked: Option<Waker>,
}

#[derive(Default)]
struct Pair {
    /// Indexed by the writing end.
    dirs: [Direction; 2],
    closed: [bool; 2],
}

type Shared = Arc<Mutex<Pair>>;
type Key = (SocketAddr, SocketAddr);

/// The simulator's link: plain TCP (peers named by their first frame, as
/// [`holdfast_host::transport::PlainLink`]) with flow control.
#[derive(Default)]
pub struct FlowLink {
    /// Connections one end of which has arrived.
    waiting: Mutex<BTreeMap<Key, Shared>>,
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
}

impl Link for FlowLink {
    fn connect<'a>(
        &'a self,
        _peer: &'a str,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<BoxStream>> {
        let stream = self.wrap(tcp, CONNECTOR);
        Box::pin(async move { Ok(Box::new(stream?) as BoxStream) })
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

impl AsyncWrite for FlowStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let room = {
            let mut p = lock(&me.pair);
            if p.closed[1 - me.side] {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let d = &mut p.dirs[me.side];
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
            lock(&me.pair).dirs[me.side].in_flight += k;
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
        let before = buf.filled().len();
        let read = Pin::new(&mut me.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let mut p = lock(&me.pair);
            let d = &mut p.dirs[1 - me.side];
            d.in_flight = d.in_flight.saturating_sub(n);
            if let Some(w) = d.blocked.take() {
                w.wake();
            }
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
        let mut p = lock(&self.pair);
        p.closed[self.side] = true;
        // The other end's writer waits for reads that will never come.
        if let Some(w) = p.dirs[1 - self.side].blocked.take() {
            w.wake();
        }
    }
}

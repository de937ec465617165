//! How long a connection may stay stalled before holdfast gives up on it.
//!
//! Left to the kernel, a TCP connection whose data goes unacknowledged
//! across a network cut retransmits with a timeout doubling from 200 ms up
//! to 120 s and gives up only after 15 retransmissions (about 15 minutes).
//! When the cut heals, the connection resumes at its *next* retransmission:
//! after a 4-minute cut on Linux that was 94 s away, and a front end in
//! critical mode stayed shut down all that time with a healthy link. A
//! connect across a cut likewise waits for SYN retransmissions 1, 3, 7, 15,
//! 31 and 63 s after it began.
//!
//! The transport bounds both by [`Liveness::link_timeout`] (the
//! `link_timeout` setting):
//!
//! * every connection, outbound and inbound, sets `TCP_USER_TIMEOUT`: data
//!   unacknowledged for longer than the bound aborts the connection (the
//!   writer then reconnects, and the envelopes not yet written go on the
//!   new connection);
//! * keep-alive probes start after the connection has been idle for the
//!   bound, so a connection nobody writes on (a reader whose peer is gone
//!   behind a cut) is found dead too, at the latest twice the bound after
//!   it went quiet;
//! * a connect that has not completed within [`Liveness::connect_timeout`]
//!   is abandoned and tried again after the reconnection backoff
//!   ([`BACKOFF_MIN`] doubling up to [`BACKOFF_MAX`]), so a SYN leaves at
//!   least every `connect_timeout + BACKOFF_MAX` while a peer is
//!   unreachable, and a healed link is used within that time.
//!
//! Nothing is added to the wire: the probes are TCP's own, and nodes that
//! do not set these options still talk to nodes that do. The options are
//! Linux's (`socket2`); elsewhere the kernel's defaults apply and the
//! connect timeout alone is holdfast's. In the simulator (`--cfg madsim`)
//! there are no sockets to set options on: its link
//! (`sim/src/host/tcp_flow.rs`) models the same bound.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// The default of the `link_timeout` setting.
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(5);

/// First wait before reconnecting after a failed connect.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The wait doubles while connects fail, up to this: together with the
/// connect timeout, how late a healed link may be noticed.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The longest a connect may wait: long enough for a SYN and one
/// retransmission (Linux resends an unanswered SYN after 1 s), short enough
/// that a link healed during a failing connect is tried again soon.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_millis(1500);
/// The shortest keep-alive probe interval.
const KEEPALIVE_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// The liveness bounds of one node's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Data unacknowledged this long, or an idle connection whose
    /// keep-alive probes go unanswered this long, ends the connection.
    pub link_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            link_timeout: DEFAULT_LINK_TIMEOUT,
        }
    }
}

impl Liveness {
    /// Bounds for `link_timeout` (at least 1 ms).
    pub fn new(link_timeout: Duration) -> Liveness {
        Liveness {
            link_timeout: link_timeout.max(Duration::from_millis(1)),
        }
    }

    /// How long a connect may take before it is abandoned and retried.
    pub fn connect_timeout(&self) -> Duration {
        self.link_timeout.min(CONNECT_TIMEOUT_MAX)
    }

    /// Idle time before the first keep-alive probe (whole seconds, as the
    /// kernel takes it).
    pub fn keepalive_idle(&self) -> Duration {
        Duration::from_secs(self.link_timeout.as_secs()).max(KEEPALIVE_INTERVAL_MIN)
    }

    /// Time between keep-alive probes: a few fit in the bound (whole
    /// seconds).
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.link_timeout.as_secs() / 3).max(KEEPALIVE_INTERVAL_MIN)
    }

    /// The longest a healed link may go unused by a writer that has
    /// something to send: a connect that began just before the heal
    /// times out, then the longest backoff passes.
    pub fn reconnect_bound(&self) -> Duration {
        self.connect_timeout() + BACKOFF_MAX
    }
}

/// The next reconnection backoff after `current`.
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// Connects to `addr` within the connect timeout, with the liveness
/// options set on the new connection.
pub async fn connect(addr: SocketAddr, liveness: &Liveness) -> io::Result<TcpStream> {
    let tcp = match tokio::time::timeout(liveness.connect_timeout(), TcpStream::connect(addr)).await
    {
        Ok(tcp) => tcp?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {addr} timed out after {} ms",
                    liveness.connect_timeout().as_millis()
                ),
            ))
        }
    };
    if let Err(e) = configure(&tcp, liveness) {
        // The kernel's defaults apply; the connect timeout still holds.
        tracing::debug!(%addr, error = %e, "liveness options not set");
    }
    Ok(tcp)
}

/// Sets the liveness options on a connection (outbound or accepted).
#[cfg(not(madsim))]
pub fn configure(tcp: &TcpStream, liveness: &Liveness) -> io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    sock.set_tcp_user_timeout(Some(liveness.link_timeout))?;
    let keepalive = socket2::TcpKeepalive::new().with_time(liveness.keepalive_idle());
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "macos"))]
    let keepalive = keepalive
        .with_interval(liveness.keepalive_interval())
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)
}

/// The simulator's sockets take no options: its link models the bound.
#[cfg(madsim)]
pub fn configure(_tcp: &TcpStream, _liveness: &Liveness) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum() {
        let mut b = BACKOFF_MIN;
        let mut seen = vec![b];
        while b < BACKOFF_MAX {
            b = next_backoff(b);
            seen.push(b);
        }
        assert_eq!(seen.first(), Some(&Duration::from_millis(100)));
        assert_eq!(next_backoff(BACKOFF_MAX), BACKOFF_MAX);
        assert!(seen.windows(2).all(|w| w[1] <= w[0] * 2));
    }

    #[test]
    fn a_healed_link_is_tried_within_a_few_seconds_whatever_the_bound() {
        for secs in [1, 5, 60, 3600] {
            let l = Liveness::new(Duration::from_secs(secs));
            assert!(l.reconnect_bound() <= Duration::from_millis(3500), "{l:?}");
            assert!(l.keepalive_interval() >= KEEPALIVE_INTERVAL_MIN);
        }
        assert_eq!(
            Liveness::new(Duration::ZERO).link_timeout,
            Duration::from_millis(1)
        );
    }

    /// The options reach the socket: the kernel reports them back.
    #[cfg(all(not(madsim), target_os = "linux"))]
    #[test]
    fn the_options_are_set_on_the_socket() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let l = Liveness::new(Duration::from_secs(7));
            let tcp = connect(addr, &l).await.unwrap();
            let sock = socket2::SockRef::from(&tcp);
            assert_eq!(sock.tcp_user_timeout().unwrap(), Some(l.link_timeout));
            assert!(sock.keepalive().unwrap());
            assert_eq!(sock.tcp_keepalive_time().unwrap(), l.keepalive_idle());
            assert_eq!(
                sock.tcp_keepalive_interval().unwrap(),
                l.keepalive_interval()
            );
        });
    }
}

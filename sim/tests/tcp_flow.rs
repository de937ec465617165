//! The simulator's TCP: a writer stops once the other end has a window's
//! worth unread (a partition holds at most that much), resumes when it
//! reads, and fails once the other end is gone; a connection whose data
//! stays unacknowledged across a cut for the retransmission timeout is
//! aborted (sooner with a user timeout), and no connection opens across a
//! cut. Like Linux: after a heal, data waits for its next retransmission;
//! a sender whose acknowledgements are lost stops after its first window;
//! a connect across a cut completes at the first SYN retransmission after
//! the heal.
#![cfg(madsim)]

use holdfast_host::transport::{BoxStream, Link};
use holdfast_sim::host::tcp_flow::{
    next_retransmission, FlowLink, RETRANSMISSION_TIMEOUT, SYN_TIMEOUT, TIMEOUT_CHECK, WINDOW,
};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::task::JoinHandle;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

const SERVER: &str = "10.77.0.1:5061";
const SERVER_IP: &str = "10.77.0.1";
const CLIENT_IP: &str = "10.77.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A link with its retransmission timeouts running, as the runner has it.
fn new_link() -> Arc<FlowLink> {
    let link = FlowLink::new();
    tokio::spawn(link.clone().retransmission_timeouts());
    link
}

/// Cuts (or heals) the link from `from` to `to`, in madsim and in `link`,
/// as the runner does.
fn cut(link: &FlowLink, from: (&NodeHandle, &str), to: (&NodeHandle, &str), on: bool) {
    let net = NetSim::current();
    if on {
        net.clog_link(from.0.id(), to.0.id());
        link.cut(ip(from.1), ip(to.1));
    } else {
        net.unclog_link(from.0.id(), to.0.id());
        link.heal(ip(from.1), ip(to.1));
    }
}

/// Writes `total` bytes in 1 KiB writes, counting what was accepted.
async fn write_counting(
    stream: &mut (impl AsyncWriteExt + Unpin),
    total: usize,
    written: &AtomicUsize,
) -> std::io::Result<()> {
    let chunk = [7u8; 1024];
    while written.load(Ordering::SeqCst) < total {
        stream.write_all(&chunk).await?;
        stream.flush().await?;
        written.fetch_add(chunk.len(), Ordering::SeqCst);
    }
    Ok(())
}

/// Cuts (or heals) the link between `client` and `server` both ways.
fn cut_both(link: &FlowLink, client: &NodeHandle, server: &NodeHandle, on: bool) {
    cut(link, (client, CLIENT_IP), (server, SERVER_IP), on);
    cut(link, (server, SERVER_IP), (client, CLIENT_IP), on);
}

/// A server node (10.77.0.1) and a client node (10.77.0.2).
fn two_nodes() -> (NodeHandle, NodeHandle) {
    let handle = Handle::current();
    let node = |name: &str, ip: &str| {
        handle
            .create_node()
            .name(name)
            .ip(ip.parse().unwrap())
            .build()
    };
    (node("server", SERVER_IP), node("client", CLIENT_IP))
}

/// Runs `test` in a runtime seeded with `seed`, on [`two_nodes`] joined by
/// a link as `make_link` makes it.
fn run_with<F, Fut>(seed: u64, make_link: fn() -> Arc<FlowLink>, test: F)
where
    F: FnOnce(NodeHandle, NodeHandle, Arc<FlowLink>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.block_on(async {
        let (server, client) = two_nodes();
        let link = make_link();
        test(server, client, link).await
    });
}

/// [`run_with`] a link whose retransmission timeouts run.
fn run<F, Fut>(seed: u64, test: F)
where
    F: FnOnce(NodeHandle, NodeHandle, Arc<FlowLink>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    run_with(seed, new_link, test);
}

/// Connects from `client` to [`SERVER`] in madsim alone, before the link
/// has its say.
async fn connect_unlinked(client: &NodeHandle) -> TcpStream {
    client
        .spawn(async { TcpStream::connect(SERVER).await })
        .await
        .unwrap()
        .expect("madsim opens it")
}

/// Accepts one connection on [`SERVER`] through `link`.
async fn accept_one(link: &FlowLink) -> BoxStream {
    let listener = TcpListener::bind(SERVER).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    link.accept(tcp).await.unwrap().0
}

/// Accepts one connection on the server and, once told to, hands it to
/// `read`.
fn spawn_gated_reader<T, F, Fut>(
    server: &NodeHandle,
    link: &Arc<FlowLink>,
    read: F,
) -> (oneshot::Sender<()>, JoinHandle<T>)
where
    F: FnOnce(BoxStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (start, go) = oneshot::channel::<()>();
    let l = link.clone();
    let reader = server.spawn(async move {
        let stream = accept_one(&l).await;
        go.await.unwrap();
        read(stream).await
    });
    (start, reader)
}

/// Reads once from `stream`, into a buffer of a few windows.
async fn read_once(mut stream: BoxStream) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 4096];
    stream.read(&mut buf).await
}

/// Connects from `client` through `link` and writes four windows,
/// counting what each write got out.
fn spawn_writer(
    client: &NodeHandle,
    link: &Arc<FlowLink>,
) -> (Arc<AtomicUsize>, JoinHandle<std::io::Result<()>>) {
    let written = Arc::new(AtomicUsize::new(0));
    let (w, l) = (written.clone(), link.clone());
    let writer = client.spawn(async move {
        let tcp = TcpStream::connect(SERVER).await.unwrap();
        let mut stream = l.connect("server", tcp).await.unwrap();
        write_counting(&mut stream, 4 * WINDOW, &w).await
    });
    (written, writer)
}

/// Accepts one connection on the server and reads two 10-byte messages:
/// the second, and when it arrived.
fn spawn_two_message_reader(
    server: &NodeHandle,
    link: &Arc<FlowLink>,
) -> JoinHandle<std::io::Result<([u8; 10], Instant)>> {
    let l = link.clone();
    server.spawn(async move {
        let mut stream = accept_one(&l).await;
        let mut buf = [0u8; 10];
        stream.read_exact(&mut buf).await?;
        stream.read_exact(&mut buf).await?;
        Ok((buf, Instant::now()))
    })
}

/// Connects from `client` through `link`, writes a 10-byte message and,
/// once told to, another; the connection stays open as long as the
/// caller keeps the stream.
fn spawn_two_message_writer(
    client: &NodeHandle,
    link: &Arc<FlowLink>,
) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<BoxStream>>) {
    let l = link.clone();
    let (go, went) = oneshot::channel::<()>();
    let writer = client.spawn(async move {
        let tcp = TcpStream::connect(SERVER).await.unwrap();
        let mut stream = l.connect("server", tcp).await.unwrap();
        stream.write_all(&[1u8; 10]).await?;
        stream.flush().await?;
        went.await.unwrap();
        stream.write_all(&[2u8; 10]).await?;
        stream.flush().await?;
        Ok(stream)
    });
    (go, writer)
}

/// A two-message connection from `client` to `server` whose first message
/// has gone across, then cut both ways: the reader, the trigger of the
/// second message, and the writer.
async fn first_message_then_cut(
    server: &NodeHandle,
    client: &NodeHandle,
    link: &Arc<FlowLink>,
) -> (
    JoinHandle<std::io::Result<([u8; 10], Instant)>>,
    oneshot::Sender<()>,
    JoinHandle<std::io::Result<BoxStream>>,
) {
    let reader = spawn_two_message_reader(server, link);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (go, writer) = spawn_two_message_writer(client, link);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cut_both(link, client, server, true);
    (reader, go, writer)
}

/// What `task` gives within `limit`: it must end by then.
async fn within<T>(limit: Duration, task: JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(limit, task)
        .await
        .expect(what)
        .unwrap()
}

/// The writer got exactly one window out and waits.
fn assert_blocked_at_the_window(written: &AtomicUsize) {
    assert_eq!(
        written.load(Ordering::SeqCst),
        WINDOW,
        "blocked at the window"
    );
}

#[test]
fn a_partition_holds_one_window_and_the_writer_resumes_after_it() {
    run(1, |server, client, link| async move {
        let (start_reading, reader) = spawn_gated_reader(&server, &link, |mut stream| async move {
            let mut got = 0usize;
            let mut buf = vec![0u8; 4096];
            while got < 4 * WINDOW {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection ended after {got} bytes");
                got += n;
            }
            got
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (written, writer) = spawn_writer(&client, &link);
        // The reader is not reading, and the link is cut for a while
        // shorter than the retransmission timeout: the writer gets exactly
        // one window out, then waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        cut(&link, (&client, CLIENT_IP), (&server, SERVER_IP), true);
        // (Healed before the last retransmission, 804.6 s in: a heal after
        // it only sees the abort at 924.6 s.)
        tokio::time::sleep(Duration::from_secs(700)).await;
        assert_eq!(written.load(Ordering::SeqCst), WINDOW);
        // The link heals and the reader reads: everything goes through.
        cut(&link, (&client, CLIENT_IP), (&server, SERVER_IP), false);
        start_reading.send(()).unwrap();
        assert_eq!(reader.await.unwrap(), 4 * WINDOW);
        writer.await.unwrap().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 4 * WINDOW);
    });
}

#[test]
fn a_writer_blocked_on_a_closed_end_fails_instead_of_waiting_for_ever() {
    run_with(2, FlowLink::new, |server, client, link| async move {
        let (close, closing) = oneshot::channel::<()>();
        let l = link.clone();
        server.spawn(async move {
            let stream = accept_one(&l).await;
            // Never reads; drops its end when told.
            closing.await.unwrap();
            drop(stream);
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (written, writer) = spawn_writer(&client, &link);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_blocked_at_the_window(&written);
        close.send(()).unwrap();
        let result = within(
            Duration::from_secs(1),
            writer,
            "the blocked writer is woken",
        )
        .await;
        let err = result.expect_err("a write into a closed connection fails");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

#[test]
fn data_unacknowledged_across_a_cut_for_the_timeout_aborts_the_connection() {
    run(3, |server, client, link| async move {
        let (start_reading, reader) = spawn_gated_reader(&server, &link, read_once);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (written, writer) = spawn_writer(&client, &link);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_blocked_at_the_window(&written);
        let cut_at = Instant::now();
        cut_both(&link, &client, &server, true);
        // The blocked writer is woken with an error once the window has
        // gone unacknowledged for the timeout (checked every few seconds).
        let result = within(
            2 * RETRANSMISSION_TIMEOUT,
            writer,
            "the blocked writer is woken",
        )
        .await;
        let waited = cut_at.elapsed();
        let err = result.expect_err("TCP gives up on the connection");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            waited >= RETRANSMISSION_TIMEOUT && waited <= RETRANSMISSION_TIMEOUT + TIMEOUT_CHECK,
            "aborted after {waited:?}"
        );
        // After the heal, the window that was in flight is never read:
        // the other end fails instead.
        tokio::time::sleep(Duration::from_secs(600)).await;
        cut_both(&link, &client, &server, false);
        start_reading.send(()).unwrap();
        let read = reader.await.unwrap();
        assert_eq!(
            read.expect_err("the stale window is not delivered").kind(),
            std::io::ErrorKind::TimedOut
        );
    });
}

#[test]
fn lost_acknowledgements_abort_a_connection_whose_data_still_arrives() {
    run(4, |server, client, link| async move {
        let l = link.clone();
        let got = Arc::new(AtomicUsize::new(0));
        let g = got.clone();
        let (reopen, reopened) = oneshot::channel::<()>();
        let reader = server.spawn(async move {
            let listener = TcpListener::bind(SERVER).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = l.accept(tcp).await.unwrap().0;
            let mut buf = vec![0u8; 4096];
            let ended = loop {
                match stream.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => g.fetch_add(n, Ordering::SeqCst),
                    Err(e) => break Err(e),
                };
            };
            // Serves one more connection attempt: madsim hands it over,
            // but the connecting end refuses it, so it ends at once.
            reopened.await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let mut again = l.accept(tcp).await.unwrap().0;
            (ended, again.read(&mut buf).await)
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let l = link.clone();
        let writer = client.spawn(async move {
            let tcp = TcpStream::connect(SERVER).await.unwrap();
            let mut stream = l.connect("server", tcp).await.unwrap();
            // A heartbeat a minute.
            loop {
                stream.write_all(&[1u8; 100]).await?;
                stream.flush().await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Only the way back is cut: the heartbeats still arrive, their
        // acknowledgements do not.
        let cut_at = Instant::now();
        cut(&link, (&server, SERVER_IP), (&client, CLIENT_IP), true);
        tokio::time::sleep(Duration::from_secs(600)).await;
        // The first heartbeat after the cut arrives (sent before the
        // first retransmission timeout); the sender then only retransmits
        // it, and the next nine never leave it (madsim delivered them all).
        assert_eq!(
            got.load(Ordering::SeqCst),
            200,
            "the heartbeat before the cut and the first one after it arrive, no more"
        );
        let result: std::io::Result<()> =
            within(2 * RETRANSMISSION_TIMEOUT, writer, "the writer fails").await;
        let waited = cut_at.elapsed();
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        // The first heartbeat after the cut starts the clock (up to a
        // minute in); the writer learns of the abort at its next one.
        assert!(
            waited >= RETRANSMISSION_TIMEOUT
                && waited <= RETRANSMISSION_TIMEOUT + TIMEOUT_CHECK + Duration::from_secs(120),
            "aborted after {waited:?}"
        );
        // No new connection opens across the cut: madsim lets it through
        // (the way there is clear), the link does not (the answer is lost).
        reopen.send(()).unwrap();
        let tcp = connect_unlinked(&client).await;
        let asked = Instant::now();
        let opened = link.connect("server", tcp).await;
        // Not at once: after Linux's SYN retransmissions.
        assert!(
            asked.elapsed() >= SYN_TIMEOUT
                && asked.elapsed() <= SYN_TIMEOUT + Duration::from_millis(10),
            "failed after {:?}",
            asked.elapsed()
        );
        assert_eq!(
            opened.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::TimedOut)
        );
        // The reader learned of the abort too, rather than waiting for
        // ever; the refused connection ended at once.
        let (ended, again) = within(Duration::from_secs(60), reader, "the reader is woken").await;
        assert_eq!(ended.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(!matches!(again, Ok(n) if n > 0), "{again:?}");
    });
}

#[test]
fn an_idle_connection_survives_a_long_cut() {
    run(5, |server, client, link| async move {
        let (reader, resume, writer) = first_message_then_cut(&server, &client, &link).await;
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        cut_both(&link, &client, &server, false);
        resume.send(()).unwrap();
        let _stream = writer
            .await
            .unwrap()
            .expect("nothing was in flight: the connection lives");
        assert_eq!(reader.await.unwrap().unwrap().0, [2u8; 10]);
    });
}

/// Data written into a cut waits, after the heal, for its next
/// retransmission (200 ms after it was sent, doubling): after a 60 s cut
/// it arrives 102.2 s after the write, not within madsim's 10 s retry
/// (66.4 s). madsim's own retry may still come later than a
/// retransmission, by at most 10 s.
#[test]
fn after_a_heal_data_waits_for_its_next_retransmission() {
    run(6, |server, client, link| async move {
        let (reader, go, writer) = first_message_then_cut(&server, &client, &link).await;
        let sent = Instant::now();
        go.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let healed = Instant::now();
        cut_both(&link, &client, &server, false);
        let (_, got) = reader.await.unwrap().unwrap();
        let _stream = writer.await.unwrap().unwrap();
        let expected = next_retransmission(sent, healed);
        assert_eq!(expected - sent, Duration::from_millis(102_200));
        assert!(
            got >= expected && got <= expected + Duration::from_secs(10),
            "read {:?} after the write, the retransmission is due {:?} after it",
            got - sent,
            expected - sent
        );
    });
}

/// With a user timeout (the hosts' `link_timeout`), data unacknowledged
/// across a cut aborts the connection after it, not after 15 minutes.
#[test]
fn a_user_timeout_aborts_a_stalled_connection_sooner() {
    run(7, |server, client, link| async move {
        link.set_user_timeout(Duration::from_secs(5));
        let (start_reading, reader) = spawn_gated_reader(&server, &link, read_once);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (_written, writer) = spawn_writer(&client, &link);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cut_at = Instant::now();
        cut_both(&link, &client, &server, true);
        let result = within(
            Duration::from_secs(60),
            writer,
            "the writer fails within a minute",
        )
        .await;
        let waited = cut_at.elapsed();
        assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(
            waited >= Duration::from_secs(5) && waited <= Duration::from_millis(5500),
            "aborted after {waited:?}"
        );
        start_reading.send(()).unwrap();
        let read = reader.await.unwrap();
        assert_eq!(read.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    });
}

/// A connect across a cut is neither refused at once nor lost: its SYN
/// is sent again 1, 3 and 7 s after it began, and the connect completes
/// at the first of those after the heal.
#[test]
fn a_connect_across_a_cut_completes_at_the_first_syn_after_the_heal() {
    run(8, |server, client, link| async move {
        let l = link.clone();
        server.spawn(async move {
            let mut stream = accept_one(&l).await;
            let mut buf = [0u8; 1];
            let _ = stream.read(&mut buf).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Only the way back is cut: madsim opens the connection, TCP would
        // not (the SYN's answer is lost).
        cut(&link, (&server, SERVER_IP), (&client, CLIENT_IP), true);
        let tcp = connect_unlinked(&client).await;
        let start = Instant::now();
        let l = link.clone();
        let connecting =
            client.spawn(async move { l.connect("server", tcp).await.map(|_| Instant::now()) });
        tokio::time::sleep(Duration::from_secs(4)).await;
        cut(&link, (&server, SERVER_IP), (&client, CLIENT_IP), false);
        let opened = connecting.await.unwrap().expect("opens after the heal");
        let took = opened - start;
        assert!(
            took >= Duration::from_secs(7) && took <= Duration::from_millis(7010),
            "opened after {took:?}"
        );
    });
}

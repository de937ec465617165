//! The simulator's TCP flow control: a writer stops once the other end has
//! a window's worth unread (a partition holds at most that much), resumes
//! when it reads, and fails once the other end is gone.
#![cfg(madsim)]

use holdfast_host::transport::{BoxStream, Link};
use holdfast_sim::tcp_flow::{FlowLink, WINDOW};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use madsim::task::JoinHandle;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SERVER: &str = "10.77.0.1:5061";

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
    (node("server", "10.77.0.1"), node("client", "10.77.0.2"))
}

/// Accepts one connection on [`SERVER`] through `link`.
async fn accept_one(link: &FlowLink) -> BoxStream {
    let listener = TcpListener::bind(SERVER).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    link.accept(tcp).await.unwrap().0
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

#[test]
fn a_partition_holds_one_window_and_the_writer_resumes_after_it() {
    let rt = Runtime::with_seed_and_config(1, madsim::Config::default());
    rt.block_on(async {
        let (server, client) = two_nodes();
        let link = FlowLink::new();
        let (start_reading, go) = oneshot::channel::<()>();
        let l = link.clone();
        let reader = server.spawn(async move {
            let mut stream = accept_one(&l).await;
            go.await.unwrap();
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
        // The reader is not reading, and the link is cut for an hour: the
        // writer gets exactly one window out, then waits.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let net = NetSim::current();
        net.clog_link(client.id(), server.id());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(written.load(Ordering::SeqCst), WINDOW);
        // The link heals and the reader reads: everything goes through.
        net.unclog_link(client.id(), server.id());
        start_reading.send(()).unwrap();
        assert_eq!(reader.await.unwrap(), 4 * WINDOW);
        writer.await.unwrap().unwrap();
        assert_eq!(written.load(Ordering::SeqCst), 4 * WINDOW);
    });
}

#[test]
fn a_writer_blocked_on_a_closed_end_fails_instead_of_waiting_for_ever() {
    let rt = Runtime::with_seed_and_config(2, madsim::Config::default());
    rt.block_on(async {
        let (server, client) = two_nodes();
        let link = FlowLink::new();
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
        assert_eq!(
            written.load(Ordering::SeqCst),
            WINDOW,
            "blocked at the window"
        );
        close.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(1), writer)
            .await
            .expect("the blocked writer is woken")
            .unwrap();
        let err = result.expect_err("a write into a closed connection fails");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    });
}

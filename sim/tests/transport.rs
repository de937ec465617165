//! The TCP transport under hostile input, on madsim's simulated network: a
//! peer that sends garbage, an oversized length, a wrong protocol version or
//! claims to be a server this node does not know is disconnected; the node
//! keeps serving everyone else and never panics.
#![cfg(madsim)]

use holdfast_actors::core::frame;
use holdfast_actors::core::ids::{ActorKind, Addr};
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Msg};
use holdfast_host::transport::Network;
use madsim::runtime::{Handle, Runtime};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const SERVER: &str = "10.77.0.1:5061";

fn envelope(from: Addr) -> Envelope {
    Envelope {
        from,
        to: Addr::new("fe1", ActorKind::FrontEnd),
        id: 1,
        msg: Msg::Archiving(ArchivingMsg::ImDelivered { id: "m1".into() }),
    }
}

/// Sends `bytes` and reports whether the server closed the connection.
async fn closed_after(bytes: Vec<u8>) -> bool {
    let mut s = TcpStream::connect(SERVER).await.expect("connect");
    s.write_all(&bytes).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[test]
fn hostile_peers_are_disconnected_and_the_node_keeps_serving() {
    let rt = Runtime::with_seed_and_config(1, madsim::Config::default());
    rt.block_on(async {
        let handle = Handle::current();
        let received: Arc<Mutex<Vec<Envelope>>> = Arc::default();
        let r = received.clone();
        handle
            .create_node()
            .name("fe1")
            .ip("10.77.0.1".parse().unwrap())
            .init(move || {
                let r = r.clone();
                async move {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    let mut peers = BTreeMap::new();
                    peers.insert(
                        "arch1".to_string(),
                        "10.77.0.2:5061".parse::<SocketAddr>().unwrap(),
                    );
                    let net = Network::new("fe1", peers, tx);
                    net.listen(SERVER.parse().unwrap()).await.unwrap();
                    while let Some(env) = rx.recv().await {
                        r.lock().unwrap().push(env);
                    }
                }
            })
            .build();
        let client = handle
            .create_node()
            .name("attacker")
            .ip("10.77.0.9".parse().unwrap())
            .build();
        let received2 = received.clone();
        client
            .spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Garbage that is not even a frame.
                assert!(
                    closed_after(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await,
                    "garbage"
                );
                // A length far beyond the limit.
                let mut huge = (u32::MAX).to_be_bytes().to_vec();
                huge.push(frame::PROTOCOL_VERSION);
                assert!(closed_after(huge).await, "oversized");
                // A wrong protocol version.
                let mut bad = frame::encode(&envelope(Addr::new("c1", ActorKind::Client))).unwrap();
                bad[4] = 200;
                assert!(closed_after(bad).await, "bad version");
                // A well-formed frame from a server the node does not know.
                let intruder =
                    frame::encode(&envelope(Addr::new("intruder", ActorKind::Archiver))).unwrap();
                assert!(closed_after(intruder).await, "unknown peer");
                assert!(
                    received2.lock().unwrap().is_empty(),
                    "nothing hostile was delivered"
                );

                // The node still serves a legitimate client.
                let mut s = TcpStream::connect(SERVER).await.expect("still listening");
                let good = frame::encode(&envelope(Addr::new("c1", ActorKind::Client))).unwrap();
                s.write_all(&good).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            })
            .await
            .unwrap();
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from.node, "c1");
    });
}

//! The transport over mutual TLS, on real sockets: who may connect, who may
//! speak for whom, and that bad peers are refused without stopping the node.

mod common;

use holdfast::cluster_up::loopback_config;
use holdfast::config::Config;
use holdfast::tls::{certs_init, Credential, TlsLink};
use holdfast_actors::core::frame::MAX_FRAME;
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr, Seq};
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Im, Msg};
use holdfast_host::transport::{read_frame, write_frame, Link, Network, DEFAULT_OUTBOUND_CAPACITY};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long anything expected may take to happen.
const PATIENCE: Duration = Duration::from_secs(10);

/// A cluster's certificates in a temporary folder.
fn cluster_certs() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    // fe1, fe2, arch1 and db1, with alice homed on fe1 and bob on fe2.
    let text = loopback_config("tls", "");
    let config = Config::parse(&text, Path::new("c.toml"), dir.path()).unwrap();
    certs_init(&config, false).unwrap();
    (dir, config)
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn link(config: &Config, node: &str) -> Arc<dyn Link> {
    Arc::new(TlsLink::for_node(&config.certs, node).unwrap())
}

type Inbox = mpsc::UnboundedReceiver<Envelope>;

fn network(me: &str, peers: &[(&str, SocketAddr)], link: Arc<dyn Link>) -> (Arc<Network>, Inbox) {
    let book: BTreeMap<String, SocketAddr> =
        peers.iter().map(|(n, a)| (n.to_string(), *a)).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Network::with_link(me, book, tx, link, DEFAULT_OUTBOUND_CAPACITY),
        rx,
    )
}

/// arch1 listening with its TLS link; it knows fe1 and fe2 as peers.
async fn arch1(config: &Config) -> (Arc<Network>, Inbox, SocketAddr) {
    let addr = free_addr();
    let (net, inbox) = network(
        "arch1",
        &[("fe1", free_addr()), ("fe2", free_addr())],
        link(config, "arch1"),
    );
    net.listen(addr).await.unwrap();
    (net, inbox, addr)
}

fn ack(from: &str, upto: u64) -> Envelope {
    Envelope {
        from: Addr::new(from, ActorKind::OutgoingQueue),
        to: Addr::new("arch1", ActorKind::DestinationQueue),
        id: upto,
        msg: Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(upto) }),
    }
}

fn submit(from: &str, to: &str) -> Envelope {
    Envelope {
        from: Addr::new(from, ActorKind::Client),
        to: Addr::new(to, ActorKind::FrontEnd),
        id: 1,
        msg: Msg::Archiving(ArchivingMsg::SubmitIm {
            im: Im {
                id: "m1".into(),
                from: "alice@corp.example".into(),
                to: "bob@corp.example".into(),
                body: "hello".into(),
            },
        }),
    }
}

async fn next(inbox: &mut Inbox) -> Envelope {
    tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .expect("no envelope arrived in time")
        .expect("inbox closed")
}

/// Waits until the node has refused more than `before` connections.
async fn refused_beyond(net: &Network, before: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while net.refused() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection was not refused (refused = {})",
            net.refused()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The connection is closed by the other end (end of stream or an error)
/// before `PATIENCE` runs out.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(s: &mut S) {
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

/// A legitimate node still gets through: the listener stayed up.
async fn legit_frame_arrives(config: &Config, arch: SocketAddr, inbox: &mut Inbox, upto: u64) {
    let (fe2, _fe2_inbox) = network("fe2", &[("arch1", arch)], link(config, "fe2"));
    fe2.send(ack("fe2", upto)).unwrap();
    let env = next(inbox).await;
    assert_eq!(env.from, Addr::new("fe2", ActorKind::OutgoingQueue));
    assert_eq!(
        env.msg,
        Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(upto) })
    );
}

#[tokio::test]
async fn an_envelope_crosses_a_mutual_tls_link() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;
    let (fe1, _fe1_inbox) = network("fe1", &[("arch1", addr)], link(&config, "fe1"));
    fe1.send(ack("fe1", 7)).unwrap();
    let env = next(&mut inbox).await;
    assert_eq!(env.from, Addr::new("fe1", ActorKind::OutgoingQueue));
    assert_eq!(env.to, Addr::new("arch1", ActorKind::DestinationQueue));
    assert_eq!(
        env.msg,
        Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(7) })
    );
    assert_eq!(arch.refused(), 0);
}

/// A TLS client that trusts `trusted`'s CA (so it accepts the listener's
/// certificate) and presents `node`'s certificate from `presented`.
fn tls_client(trusted: &Config, presented: &Config, node: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(trusted.certs.join("ca.pem")).unwrap())
        .unwrap();
    let chain =
        vec![CertificateDer::from_pem_file(presented.certs.join(format!("{node}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(presented.certs.join(format!("{node}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_certificate_of_another_cluster_is_refused() {
    let (_dir, config) = cluster_certs();
    let (_other_dir, other) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;

    // A node of another cluster: neither end accepts the other.
    let (intruder, _i) = network("fe1", &[("arch1", addr)], link(&other, "fe1"));
    intruder.send(ack("fe1", 1)).unwrap();
    refused_beyond(&arch, 0).await;
    drop(intruder);

    // A caller that trusts this cluster's CA but presents a certificate for
    // fe1 from another CA: arch1 refuses it.
    let before = arch.refused();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("arch1").unwrap();
    // With TLS 1.3 the caller may finish its side of the handshake before
    // the listener has checked its certificate.
    if let Ok(mut s) = tls_client(&config, &other, "fe1").connect(name, tcp).await {
        let _ = write_frame(&mut s, &ack("fe1", 2)).await;
        closed_by_peer(&mut s).await;
    }
    refused_beyond(&arch, before).await;

    legit_frame_arrives(&config, addr, &mut inbox, 3).await;
    assert!(inbox.try_recv().is_err(), "the intruder's envelope arrived");
}

/// alice's user credential, made from the cluster CA.
fn alice(config: &Config) -> Credential {
    let alice = Principal::new("alice@corp.example", Role::User);
    let dir = config.certs.join("users");
    // Issued by `certs init` (alice is homed on fe1); issued again here.
    holdfast::tls::issue_user(&config.certs, &dir, &alice, true).unwrap();
    Credential::load(&config.certs, &dir, "alice@corp.example").unwrap()
}

const ALICE: &str = "user:alice@corp.example/1";

#[tokio::test]
async fn a_client_speaks_only_as_the_principal_of_its_credential() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;
    let credential = alice(&config);
    let client_link =
        || -> Arc<dyn Link> { Arc::new(TlsLink::for_client(&config.certs, &credential).unwrap()) };

    // alice's client, named after her principal, submits an IM: it arrives.
    let (client, _c) = network(ALICE, &[("arch1", addr)], client_link());
    client.send(submit(ALICE, "arch1")).unwrap();
    let env = next(&mut inbox).await;
    assert_eq!(env.from, Addr::new(ALICE, ActorKind::Client));
    assert!(matches!(
        env.msg,
        Msg::Archiving(ArchivingMsg::SubmitIm { .. })
    ));
    assert_eq!(arch.refused(), 0);

    // With alice's credential: not as bob, not as an operator, not without
    // a principal, and not as fe1 (a node of arch1's address book), neither
    // as a node actor nor as a client.
    let mut refused = 0;
    for name in [
        "user:bob@corp.example/1",
        "operator:alice@corp.example/1",
        "cli1",
    ] {
        let (fake, _f) = network(name, &[("arch1", addr)], client_link());
        fake.send(submit(name, "arch1")).unwrap();
        refused_beyond(&arch, refused).await;
        refused += 1;
    }
    let (fake, _f) = network("fe1", &[("arch1", addr)], client_link());
    fake.send(ack("fe1", 1)).unwrap();
    refused_beyond(&arch, refused).await;
    let (fake, _f) = network("fe1", &[("arch1", addr)], client_link());
    fake.send(submit("fe1", "arch1")).unwrap();
    refused_beyond(&arch, refused + 1).await;

    legit_frame_arrives(&config, addr, &mut inbox, 3).await;
    assert!(inbox.try_recv().is_err(), "a false claim got through");
}

#[tokio::test]
async fn a_client_without_a_credential_is_refused() {
    use rustls::pki_types::ServerName;
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;
    let connector = common::anonymous_tls(&config.certs);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("arch1").unwrap();
    // With TLS 1.3 the caller may finish its side of the handshake before
    // the listener asks for the certificate it does not have.
    if let Ok(mut s) = connector.connect(name, tcp).await {
        let _ = write_frame(&mut s, &submit("user:alice@corp.example/2", "arch1")).await;
        closed_by_peer(&mut s).await;
    }
    refused_beyond(&arch, 0).await;
    legit_frame_arrives(&config, addr, &mut inbox, 1).await;
    assert!(
        inbox.try_recv().is_err(),
        "an unauthenticated frame arrived"
    );
}

#[tokio::test]
async fn a_node_cannot_speak_for_another_node() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;

    // fe1's certificate, frames from fe2.
    let (fake, _f) = network("fe2", &[("arch1", addr)], link(&config, "fe1"));
    fake.send(ack("fe2", 1)).unwrap();
    refused_beyond(&arch, 0).await;

    legit_frame_arrives(&config, addr, &mut inbox, 2).await;
    assert!(inbox.try_recv().is_err(), "the false sender got through");
}

#[tokio::test]
async fn a_node_cannot_speak_for_an_actor_it_does_not_host() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;
    // What the cluster config says each node hosts.
    arch.set_roles(
        [
            (
                "fe1".to_string(),
                vec![ActorKind::FrontEnd, ActorKind::OutgoingQueue],
            ),
            (
                "fe2".to_string(),
                vec![ActorKind::FrontEnd, ActorKind::OutgoingQueue],
            ),
        ]
        .into_iter()
        .collect(),
    );
    // fe1, with its own certificate, poses as an archiver.
    let (fake, _f) = network("fe1", &[("arch1", addr)], link(&config, "fe1"));
    let mut forged = ack("fe1", 1);
    forged.from.actor = ActorKind::Archiver;
    fake.send(forged).unwrap();
    refused_beyond(&arch, 0).await;

    legit_frame_arrives(&config, addr, &mut inbox, 2).await;
    assert!(inbox.try_recv().is_err(), "the forged role got through");
}

/// A TLS connection to arch1 with fe1's certificate, for raw bytes.
async fn raw_tls(config: &Config, addr: SocketAddr) -> holdfast_host::transport::BoxStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    link(config, "fe1").connect("arch1", tcp).await.unwrap()
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_the_connection() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;

    // Garbage as the first frame: a plausible length, then no valid frame.
    let mut s = raw_tls(&config, addr).await;
    s.write_all(&[0, 0, 0, 12, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        .await
        .unwrap();
    s.flush().await.unwrap();
    closed_by_peer(&mut s).await;
    refused_beyond(&arch, 0).await;

    // An oversized header as the first frame.
    let mut s = raw_tls(&config, addr).await;
    let len = (MAX_FRAME as u32 + 1).to_be_bytes();
    s.write_all(&len).await.unwrap();
    s.flush().await.unwrap();
    closed_by_peer(&mut s).await;
    refused_beyond(&arch, 1).await;

    // An oversized header after a good first frame.
    let mut s = raw_tls(&config, addr).await;
    write_frame(&mut s, &ack("fe1", 5)).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    closed_by_peer(&mut s).await;
    refused_beyond(&arch, 2).await;
    assert_eq!(
        next(&mut inbox).await.msg,
        Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(5) })
    );

    legit_frame_arrives(&config, addr, &mut inbox, 6).await;
    assert!(inbox.try_recv().is_err(), "garbage was delivered");
}

#[tokio::test]
async fn plain_tcp_to_a_tls_node_is_refused() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    write_frame(&mut tcp, &ack("fe1", 1)).await.unwrap();
    closed_by_peer(&mut tcp).await;
    refused_beyond(&arch, 0).await;

    legit_frame_arrives(&config, addr, &mut inbox, 2).await;
    assert!(inbox.try_recv().is_err(), "a plain frame was delivered");
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    let (_dir, config) = cluster_certs();
    let addr = free_addr();
    let link = TlsLink::for_node(&config.certs, "arch1")
        .unwrap()
        .with_handshake_timeout(Duration::from_millis(200));
    let (arch, mut inbox) = network("arch1", &[("fe2", free_addr())], Arc::new(link));
    arch.listen(addr).await.unwrap();

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    closed_by_peer(&mut tcp).await;
    refused_beyond(&arch, 0).await;

    legit_frame_arrives(&config, addr, &mut inbox, 1).await;
}

#[tokio::test]
async fn a_client_checks_the_listener_is_the_node_it_called() {
    let (_dir, config) = cluster_certs();
    let (arch, mut inbox, addr) = arch1(&config).await;
    let client = TlsLink::for_client(&config.certs, &alice(&config)).unwrap();

    // arch1 answers, but the caller meant to reach fe1.
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(client.connect("fe1", tcp).await.is_err());

    // The right name: the connection carries frames both ways (replies to a
    // client go back on the connection it came in on).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut s = client.connect("arch1", tcp).await.unwrap();
    write_frame(&mut s, &submit(ALICE, "arch1")).await.unwrap();
    let env = next(&mut inbox).await;
    assert_eq!(env.from, Addr::new(ALICE, ActorKind::Client));
    let reply = Envelope {
        from: Addr::new("arch1", ActorKind::FrontEnd),
        to: env.from,
        id: 2,
        msg: Msg::Archiving(ArchivingMsg::TransferAck { upto: Seq(9) }),
    };
    arch.send(reply.clone()).unwrap();
    let got = tokio::time::timeout(PATIENCE, read_frame(&mut s, MAX_FRAME))
        .await
        .expect("no reply in time")
        .unwrap();
    assert_eq!(got, Some(reply));
}

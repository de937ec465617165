//! Group chat on real processes over mutual TLS: a post on one Channel
//! server reaches a member connected to the other through the relay; a
//! member whose server dies rejoins through Lookup and gets what it
//! missed; posts survive a SIGKILL of the chat store. Rooms are created,
//! found, changed and kept through the command-line tool. Each case runs
//! with the chat store in SQLite and in PostgreSQL.

mod common;

use common::chat::{chat_config, chat_store_on, exported_once, ok};
use common::postgres::PgServer;
use common::TestCluster;
use holdfast::chat_client::ChatClient;
use std::time::Duration;

/// The chat cluster, its chat store in `pg`'s database when given.
fn cluster(pg: Option<&PgServer>) -> TestCluster {
    let chat_store = chat_store_on(pg);
    TestCluster::start_with("tls", || config_text() + &chat_store)
}

fn config_text() -> String {
    let mut text = chat_config(
        "tls",
        "chat_load_report = \"1s\"\nchat_file_max = \"64KiB\"",
        &[("ch2", "channel"), ("web1", "web"), ("comp1", "compliance")],
        // Its readiness is checked (`/readyz`).
        &["ch1"],
    );
    text.push_str("\n[compliance]\noutput = \"compliance-out\"\n");
    text.push_str(
        "\n[[category]]\nname = \"corp\"\nallowed = [\"*\"]\ndenied = [\"eve@corp.example\"]\ncreators = [\"alice@corp.example\"]\n",
    );
    text
}

/// Runs the command-line tool; returns (exit code, stdout, stderr).
fn holdfast(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    c.cli(args)
}

sqlite_and_postgres!(rooms_are_created_found_changed_and_kept_on: rooms_are_created_found_changed_and_kept, rooms_are_created_found_changed_and_kept_with_postgres);

fn rooms_are_created_found_changed_and_kept_on(pg: Option<&PgServer>) {
    let mut c = cluster(pg);
    // carl chats but is homed on no front end: `certs init` made him no
    // credential, so he gets one as any new user does.
    let (code, out, err) = holdfast(&c, &["certs", "user", "carl@corp.example"]);
    assert_eq!(code, 0, "{out}{err}");
    let as_user = |user: &'static str, channel: &'static str| {
        move |args: &[&'static str]| -> Vec<&'static str> {
            let mut v = vec!["chat"];
            v.extend_from_slice(&args[..1]);
            v.extend_from_slice(&["--user", user, "--channel", channel]);
            v.extend_from_slice(&args[1..]);
            v
        }
    };
    let alice = as_user("alice@corp.example", "ch1");
    let bob = as_user("bob@corp.example", "ch2");
    let carl = as_user("carl@corp.example", "ch2");
    // Alice creates a secret room with Bob in it, invitations on.
    ok(holdfast(
        &c,
        &alice(&[
            "create",
            "--room",
            "project-x",
            "--category",
            "corp",
            "--privacy",
            "secret",
            "--members",
            "bob@corp.example",
            "--invite",
            "true",
            "--description",
            "the X deal",
        ]),
    ));
    // Bob may not create rooms; nobody creates one twice.
    let (code, _, err) = holdfast(&c, &bob(&["create", "--room", "b", "--category", "corp"]));
    assert_eq!(code, 2);
    assert!(err.to_string().contains("not allowed"), "{err}");
    let (code, _, err) = holdfast(
        &c,
        &alice(&["create", "--room", "project-x", "--category", "corp"]),
    );
    assert_eq!(code, 2);
    assert!(err.contains("exists"), "{err}");
    // Bob, on the other server, finds it and is invited; Carl finds nothing.
    let found = ok(holdfast(&c, &bob(&["search", "deal"])));
    assert!(
        found.contains("project-x  (secret, category corp, member)"),
        "{found}"
    );
    assert!(ok(holdfast(&c, &bob(&["invites"]))).contains("project-x"));
    assert!(!ok(holdfast(&c, &carl(&["search", "deal"]))).contains("project-x"));
    ok(holdfast(&c, &bob(&["follow", "--room", "project-x"])));
    assert!(!ok(holdfast(&c, &bob(&["invites"]))).contains("project-x"));
    assert!(ok(holdfast(&c, &bob(&["rooms"]))).contains("project-x"));

    let config = c.config.clone();
    let t = Duration::from_secs(10);
    let rt = common::runtime();
    let mut bob_client = rt.block_on(async {
        let mut bob = ChatClient::connect(&config, "bob@corp.example", Some("ch2"), t)
            .await
            .unwrap();
        bob.join("project-x", 0).await.unwrap();
        let mut alice = ChatClient::connect(&config, "alice@corp.example", Some("ch1"), t)
            .await
            .unwrap();
        alice.join("project-x", 0).await.unwrap();
        assert_eq!(alice.post("project-x", "kick-off").await.unwrap(), 1);
        let (seq, post) = bob.next_post().await.unwrap().expect("relayed post");
        assert_eq!((seq, post.text.as_str()), (1, "kick-off"));
        bob
    });
    // Alice sees Bob online though he is on the other server.
    let shown = ok(holdfast(&c, &alice(&["show", "--room", "project-x"])));
    assert!(
        shown.contains("online:     alice@corp.example, bob@corp.example"),
        "{shown}"
    );
    let joined = ok(holdfast(
        &c,
        &alice(&["join", "--room", "project-x,general", "--for", "1s"]),
    ));
    assert!(
        joined.contains("project-x #1") && joined.contains("kick-off"),
        "{joined}"
    );
    // Alice walls Bob off: his server ends his subscription, he cannot
    // come back.
    ok(holdfast(
        &c,
        &alice(&[
            "manage",
            "--room",
            "project-x",
            "--deny",
            "bob@corp.example",
        ]),
    ));
    rt.block_on(async {
        let err = bob_client
            .post("project-x", "still here?")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not joined"), "{err}");
        let err = bob_client.join("project-x", 0).await.unwrap_err();
        assert!(err.to_string().contains("not allowed"), "{err}");
    });
    // The chat store and a Channel server are killed and restarted: the
    // room, its wall and its posts come back from SQLite.
    c.kill("chatdb");
    c.kill("ch1");
    c.start_node("chatdb");
    c.start_node("ch1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let r = holdfast(&c, &alice(&["show", "--room", "project-x"]));
        if r.0 == 0 || std::time::Instant::now() > deadline {
            break ok(r);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(shown.contains("walled off: bob@corp.example"), "{shown}");
    let history = ok(holdfast(&c, &alice(&["history", "--room", "project-x"])));
    assert!(
        history.contains("alice@corp.example: kick-off"),
        "{history}"
    );

    // Compliance: an export on demand holds the room's creation, its post
    // and the wall, once each, in XML a pickup system can read.
    let events = exported_once(&c, Duration::from_secs(20), |events| {
        events
            .iter()
            .any(|e| e.kind == "post" && e.text == "kick-off")
    });
    let count = |kind: &str, room: &str| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.room == room)
            .count()
    };
    assert_eq!(count("post", "project-x"), 1, "{events:?}");
    assert_eq!(count("room_saved", "project-x"), 2, "{events:?}");
    assert!(count("join", "project-x") >= 2, "{events:?}");
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    let all = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), all, "an event exported twice");
    let status = ok(holdfast(&c, &["compliance", "status"]));
    assert!(status.contains("last error:    none"), "{status}");
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}

sqlite_and_postgres!(posts_cross_servers_survive_a_server_and_a_store_crash_on: posts_cross_servers_survive_a_server_and_a_store_crash, posts_cross_servers_survive_a_server_and_a_store_crash_with_postgres);

fn posts_cross_servers_survive_a_server_and_a_store_crash_on(pg: Option<&PgServer>) {
    let mut c = cluster(pg);
    let rt = common::runtime();
    let config = c.config.clone();
    let t = Duration::from_secs(10);
    rt.block_on(async {
        let mut alice = ChatClient::connect(&config, "alice@corp.example", Some("ch1"), t)
            .await
            .unwrap();
        let mut bob = ChatClient::connect(&config, "bob@corp.example", Some("ch2"), t)
            .await
            .unwrap();
        alice.join("general", 0).await.unwrap();
        bob.join("general", 0).await.unwrap();
        for i in 1..=20u64 {
            assert_eq!(
                alice.post("general", &format!("post {i}")).await.unwrap(),
                i
            );
        }
        // Bob, on ch2, gets every post through the relay, in order.
        for i in 1..=20u64 {
            let (seq, post) = bob.next_post().await.unwrap().expect("relayed post");
            assert_eq!((seq, post.text.as_str()), (i, format!("post {i}").as_str()));
        }
        // A file: Alice uploads with a token from ch1, Bob downloads with
        // one from ch2; the Web service checks both.
        let content: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (id, size) = alice
            .upload("general", "plan.bin", content.clone())
            .await
            .unwrap();
        assert_eq!(size, 50_000);
        let (name, data) = bob.download("general", &id).await.unwrap();
        assert_eq!((name.as_str(), data), ("plan.bin", content));
        // The content is a file of its own on the Web node, not in its log.
        let data = &config.node("web1").unwrap().data;
        let sizes: Vec<u64> = std::fs::read_dir(data.join("files"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![50_000]);
        let log = std::fs::metadata(data.join("web.log")).unwrap().len();
        assert!(log < 10_000, "the log holds {log} bytes");
        let too_big = alice.upload("general", "big.bin", vec![0; 70_000]).await;
        assert!(too_big.unwrap_err().to_string().contains("limit"));
        assert!(bob.download("general", "no-such-file").await.is_err());
    });

    // ch2 dies; Alice goes on posting; Bob rejoins through Lookup and gets
    // what he missed.
    c.kill("ch2");
    rt.block_on(async {
        let mut alice = ChatClient::connect(&config, "alice@corp.example", Some("ch1"), t)
            .await
            .unwrap();
        alice.join("general", 20).await.unwrap();
        for i in 21..=30u64 {
            assert_eq!(
                alice.post("general", &format!("post {i}")).await.unwrap(),
                i
            );
        }
        // Lookup takes ch2 out of rotation once it misses three 1 s reports.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut bob = ChatClient::connect(&config, "bob@corp.example", None, t)
            .await
            .unwrap();
        assert_eq!(bob.channel(), "ch1", "Lookup sent Bob to the live server");
        let (missed, latest) = bob.join("general", 20).await.unwrap();
        assert_eq!(latest, 30);
        let seqs: Vec<u64> = missed.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
    });

    // The chat store is killed and restarted: every acknowledged post is
    // still there.
    c.kill("chatdb");
    c.start_node("chatdb");
    rt.block_on(async {
        let mut bob = ChatClient::connect(&config, "bob@corp.example", Some("ch1"), t)
            .await
            .unwrap();
        let (posts, latest) = bob.join("general", 0).await.unwrap();
        assert_eq!(latest, 30);
        assert_eq!(posts.len(), 30, "the backchat holds every post");
    });
    if let Some(pg) = pg {
        // In the server's tables, not in a SQLite file.
        let n: i64 = pg
            .client("holdfast")
            .query_one("SELECT COUNT(*) FROM posts WHERE room = 'general'", &[])
            .unwrap()
            .get(0);
        assert_eq!(n, 30);
        assert!(!c.config.node("chatdb").unwrap().chat_path().exists());
    }
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}

/// A Channel server writes every post and room to the chat store first:
/// without it the server is not ready (`/readyz` 503, naming it), and is
/// again once the store is back.
#[test]
fn a_channel_server_is_not_ready_without_its_chat_store() {
    use std::time::Instant;
    let mut c = cluster(None);
    let addr = c
        .config
        .node("ch1")
        .unwrap()
        .metrics
        .expect("ch1 has metrics");
    let ready = || -> (u16, String) {
        match ureq::get(&format!("http://{addr}/readyz")).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => (0, e.to_string()),
        }
    };
    let wait = |want: u16, within: Duration| -> String {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = ready();
            if code == want {
                return body;
            }
            assert!(Instant::now() < deadline, "ch1/readyz: {code} {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait(200, Duration::from_secs(20));
    // The Channel server asks the store for room changes at every load
    // report (1 s here): it learns the store is gone without a client.
    c.kill("chatdb");
    let why = wait(503, Duration::from_secs(30));
    assert!(why.contains("cannot reach chatdb"), "{why}");
    c.start_node("chatdb");
    wait(200, Duration::from_secs(30));
}

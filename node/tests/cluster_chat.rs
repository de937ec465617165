//! Group chat on real processes over mutual TLS: a post on one Channel
//! server reaches a member connected to the other through the relay; a
//! member whose server dies rejoins through Lookup and gets what it
//! missed; posts survive a SIGKILL of the chat store.

mod common;

use common::TestCluster;
use holdfast::chat_client::ChatClient;
use holdfast::cluster_up::{free_port, loopback_config};
use std::time::Duration;

fn config_text() -> String {
    let mut text = loopback_config(
        "tls",
        "chat_load_report = \"1s\"\nchat_file_max = \"64KiB\"",
    )
    .replace(
        "links = \"tls\"",
        "links = \"tls\"\nfile_token_key = \"a secret of the test cluster\"",
    );
    for (name, role) in [
        ("ch1", "channel"),
        ("ch2", "channel"),
        ("lookup1", "lookup"),
        ("chatdb", "chat_store"),
        ("web1", "web"),
    ] {
        text.push_str(&format!(
            "\n[[node]]\nname = \"{name}\"\nroles = [\"{role}\"]\nlisten = \"127.0.0.1:{}\"\n",
            free_port().unwrap()
        ));
    }
    text.push_str(
        "\n[[room]]\nname = \"general\"\nmembers = [\"alice@corp.example\", \"bob@corp.example\"]\n",
    );
    text
}

#[test]
fn posts_cross_servers_survive_a_server_and_a_store_crash() {
    let mut c = TestCluster::start_text("tls", &config_text());
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
            let (seq, post) = bob.next_post().await.expect("relayed post");
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
        let too_big = alice.upload("general", "big.bin", vec![0; 70_000]).await;
        assert!(too_big.unwrap_err().contains("limit"));
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
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}

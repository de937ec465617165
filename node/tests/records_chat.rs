//! Chat records management on real processes over mutual TLS: an operator
//! clears a room's older posts, replaces the text of a later one and
//! disables the room with the command-line tool. Members read only what
//! remains (the replacement, not the original); the cleared text is gone
//! from the chat store's SQLite file; the original of the replaced post
//! is kept beside it; the compliance export names every action and who
//! did it; a user may do none of it. With the chat store in SQLite and in
//! PostgreSQL. Then legal holds on rooms and chat retention: a held room's
//! posts survive a clear and a purge until the hold is released.

mod common;

use common::chat::{chat_config, chat_store_on, exported_once, ok, ALICE, BOB};
use common::postgres::PgServer;
use common::TestCluster;
use holdfast::chat_client::ChatClient;
use holdfast_actors::compliance::export::ExportedEvent;
use std::time::Duration;

fn config_text() -> String {
    config_with("chat_load_report = \"1s\"")
}

fn config_with(settings: &str) -> String {
    let mut text = chat_config("tls", settings, &[("comp1", "compliance")], &[]);
    text.push_str("\n[compliance]\noutput = \"compliance-out\"\n");
    text
}

/// `holdfast chat ARGS`.
fn chat(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    c.cli(&[&["chat"][..], args].concat())
}

/// `chat post TEXT` to room general as alice.
fn post(c: &TestCluster, text: &str) -> (i32, String, String) {
    chat(c, &["post", "--user", ALICE, "--room", "general", text])
}

/// `holdfast archive hold ARGS`.
fn hold(c: &TestCluster, args: &[&str]) -> (i32, String, String) {
    c.cli(&[&["archive", "hold"][..], args].concat())
}

/// `chat history` of `room` as `user`, with `more` arguments.
fn history_of(c: &TestCluster, user: &str, room: &str, more: &[&str]) -> String {
    ok(chat(
        c,
        &[&["history", "--user", user, "--room", room][..], more].concat(),
    ))
}

sqlite_and_postgres!(records_on: an_operator_clears_replaces_and_disables_and_compliance_keeps_the_record, an_operator_clears_replaces_and_disables_with_postgres);

fn records_on(pg: Option<&PgServer>) {
    let chat_store = chat_store_on(pg);
    let mut c = TestCluster::start_with("tls", || config_text() + &chat_store);
    let config = c.config.clone();
    let t = Duration::from_secs(10);
    let rt = common::runtime();
    // Three older posts, a cut, two newer ones.
    let logs = |c: &TestCluster| format!("ch1:\n{}\nchatdb:\n{}", c.log("ch1"), c.log("chatdb"));
    let cut = rt.block_on(async {
        let mut alice = ChatClient::connect(&config, "alice@corp.example", Some("ch1"), t)
            .await
            .unwrap();
        // The cluster may still be coming up: join until answered.
        let mut tries = 0;
        while let Err(e) = alice.join("general", 0).await {
            tries += 1;
            assert!(tries < 4, "{e}\n{}", logs(&c));
        }
        for text in ["old-secret-1", "old-secret-2", "old-secret-3"] {
            alice.post("general", text).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cut = std::time::SystemTime::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(alice.post("general", "new-4").await.unwrap(), 4);
        assert_eq!(
            alice.post("general", "new-5 (to be fixed)").await.unwrap(),
            5
        );
        // A user may not clear, even by asking the Channel server herself.
        let err = alice.clear_room("general", None).await.unwrap_err();
        assert!(err.to_string().contains("forbidden"), "{err}");
        cut
    });
    // Nor with the command-line tool.
    let (code, out, err) = chat(
        &c,
        &[
            "room",
            "clear",
            "--room",
            "general",
            "--as",
            "alice@corp.example",
        ],
    );
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("needs operator"), "{err}");

    let before = humantime::format_rfc3339_millis(cut).to_string();
    let out = ok(chat(
        &c,
        &["room", "clear", "--room", "general", "--before", &before],
    ));
    assert!(
        out.contains("cleared general") && out.contains("#5"),
        "{out}"
    );
    let history = history_of(&c, BOB, "general", &["--ids"]);
    assert!(!history.contains("old-secret"), "{history}");
    assert!(
        history.contains("#4") && history.contains("new-5"),
        "{history}"
    );
    let id = history
        .lines()
        .find(|l| l.contains("new-5"))
        .and_then(|l| l.rsplit_once("[id "))
        .map(|(_, id)| id.trim_end_matches(']').to_string())
        .expect("the post's id");
    // A catch-up from inside the cleared range gets the survivors.
    let caught_up = history_of(&c, BOB, "general", &["--after", "1"]);
    assert!(
        caught_up.starts_with("#4") && !caught_up.contains("old-secret"),
        "{caught_up}"
    );

    let (code, out, err) = chat(
        &c,
        &[
            "message",
            "replace",
            "--id",
            &id,
            "--text",
            "new-5 fixed",
            "--as",
            "bob@corp.example",
        ],
    );
    assert_eq!(code, 2, "a user may not replace: {out}{err}");
    let out = ok(chat(
        &c,
        &["message", "replace", "--id", &id, "--text", "new-5 fixed"],
    ));
    assert!(out.contains("replaced post") && out.contains("#5"), "{out}");
    let history = history_of(&c, BOB, "general", &[]);
    assert!(
        history.contains("new-5 fixed") && !history.contains("to be fixed"),
        "{history}"
    );
    let (code, _, err) = chat(
        &c,
        &["message", "replace", "--id", "no-such-post", "--text", "x"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("no such post"), "{err}");

    // Disabled: no joins, no posts; enabled again, its history is there.
    ok(chat(&c, &["room", "disable", "--room", "general"]));
    let (code, _, err) = post(&c, "still open?");
    assert_eq!(code, 2);
    assert!(err.contains("disabled"), "{err}");
    ok(chat(&c, &["room", "enable", "--room", "general"]));
    let history = history_of(&c, ALICE, "general", &[]);
    assert!(history.contains("new-5 fixed"), "{history}");
    // Numbers are not reused after a clear.
    let out = ok(post(&c, "after all that"));
    assert!(out.contains("#6"), "{out}");

    // Compliance: every action, who did it, the original and the new text.
    let events = exported_once(&c, Duration::from_secs(30), |events| {
        ["room_cleared", "room_purged", "post_replaced"]
            .iter()
            .all(|k| events.iter().any(|e| e.kind == *k))
            && events.iter().any(|e| e.text == "after all that")
    });
    let one = |kind: &str| -> &ExportedEvent {
        let found: Vec<&ExportedEvent> = events.iter().filter(|e| e.kind == kind).collect();
        assert_eq!(found.len(), 1, "{kind}: {events:?}");
        found[0]
    };
    let cleared = one("room_cleared");
    assert_eq!(
        (
            cleared.room.as_str(),
            cleared.user.as_str(),
            cleared.item.as_str()
        ),
        ("general", "operator", "5")
    );
    assert!(cleared.details.contains("\"before\""), "{cleared:?}");
    let purged = one("room_purged");
    assert!(purged.details.contains("\"deleted\":\"3\""), "{purged:?}");
    let replaced = one("post_replaced");
    assert_eq!(
        (replaced.item.as_str(), replaced.text.as_str()),
        (id.as_str(), "new-5 fixed")
    );
    assert!(
        replaced.details.contains("new-5 (to be fixed)"),
        "{replaced:?}"
    );
    let disabling: Vec<&ExportedEvent> = events
        .iter()
        .filter(|e| e.kind == "room_saved" && e.details.contains("disabled"))
        .collect();
    assert_eq!(disabling.len(), 2, "{events:?}");
    // The original posts were exported when posted: compliance has them.
    assert!(events
        .iter()
        .any(|e| e.kind == "post" && e.text == "old-secret-1"));
    assert!(c.log("chatdb").contains("chat_records"));

    if let Some(pg) = pg {
        // The same tables in PostgreSQL: no cleared row, the original kept.
        let mut db = pg.client("holdfast");
        let texts: Vec<String> = db
            .query(
                "SELECT text FROM posts WHERE room = 'general' ORDER BY seq",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(texts, ["new-4", "new-5 fixed", "after all that"]);
        let left: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM posts WHERE text LIKE 'old-secret%'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(left, 0);
        let original: String = db
            .query_one("SELECT text FROM replaced WHERE post_id = $1", &[&id])
            .unwrap()
            .get(0);
        assert_eq!(original, "new-5 (to be fixed)");
        let slow = c.stop_all();
        assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
        return;
    }
    // The chat store's file: no cleared row, no cleared text; the original
    // of the replaced post in `replaced`.
    let path = c.config.node("chatdb").unwrap().chat_path();
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        let texts: Vec<String> = db
            .prepare("SELECT text FROM posts WHERE room = 'general' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts, ["new-4", "new-5 fixed", "after all that"]);
        let original: String = db
            .query_row("SELECT text FROM replaced WHERE post_id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(original, "new-5 (to be fixed)");
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(path.with_extension("sqlite-wal")).unwrap_or_default());
    for gone in ["old-secret-1", "old-secret-2", "old-secret-3"] {
        assert!(
            !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
            "{gone} is still in {}",
            path.display()
        );
    }
}

/// Writes posts `days` old straight into the chat store's SQLite file (as
/// if posted long ago), numbered from 1, before anything reads the room.
fn old_posts(c: &TestCluster, room: &str, texts: &[&str], days: u64) {
    use holdfast_actors::chat::chat_store::{post_id_key, post_key};
    use holdfast_actors::core::actor::StoreOp;
    use holdfast_actors::core::protocol::chat::Post;
    use holdfast_actors::core::store_keys::encode;
    let now = common::archive::now_ms();
    let mut ops = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let seq = i as u64 + 1;
        let post = Post {
            id: format!("{room}-old-{seq}").into(),
            room: room.into(),
            author: "alice@corp.example".into(),
            text: text.to_string(),
            at: now - days * 86_400_000 + seq,
        };
        ops.push(StoreOp::Put {
            key: post_key(room, seq),
            value: encode(&post),
        });
        ops.push(StoreOp::Insert {
            key: post_id_key(&post.id),
            value: encode(&(seq, &post)),
        });
    }
    let path = c.config.node("chatdb").unwrap().chat_path();
    let mut db = holdfast::chat_db::ChatDb::open(&path).unwrap();
    db.apply(&ops).unwrap();
}

/// The texts of a room's rows in the chat store's file.
fn stored_texts(c: &TestCluster, room: &str) -> Vec<String> {
    let path = c.config.node("chatdb").unwrap().chat_path();
    let db = rusqlite::Connection::open(&path).unwrap();
    let texts = db
        .prepare("SELECT text FROM posts WHERE room = ?1 ORDER BY seq")
        .unwrap()
        .query_map([room], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    texts
}

#[test]
fn a_room_hold_keeps_posts_through_a_clear_and_a_purge_until_released() {
    let mut c = TestCluster::start_with("tls", || {
        config_with("chat_load_report = \"1s\"\nchat_keep_days = 1")
            + "\n[[room]]\nname = \"deals\"\nmembers = [\"alice@corp.example\", \"bob@corp.example\"]\n"
    });
    // Three days old: past the one-day window.
    old_posts(&c, "deals", &["deal-old-1", "deal-old-2", "deal-old-3"], 3);
    old_posts(&c, "general", &["gen-old-1", "gen-old-2"], 3);
    let add = [
        "add",
        "--name",
        "case-9",
        "--rooms",
        "deals",
        "--reason",
        "litigation 9",
    ];
    // Only an auditor places a hold.
    let (code, out, err) = hold(&c, &[&add[..], &["--as", "operator"]].concat());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("chatdb: hold not placed"), "{err}");
    let out = ok(hold(&c, &add));
    assert!(
        out.contains("chatdb: hold case-9 placed by auditor:auditor"),
        "{out}"
    );
    // A rooms-only hold is not the database's: it went to the chat store.
    assert!(!out.contains("db1"), "{out}");

    // A clear hides the held posts from members and keeps their rows.
    let out = ok(chat(&c, &["room", "clear", "--room", "deals"]));
    assert!(out.contains("#3"), "{out}");
    let history = history_of(&c, BOB, "deals", &[]);
    assert!(!history.contains("deal-old"), "{history}");
    // The clear's rows are deleted a batch per request the store serves.
    ok(chat(&c, &["rooms", "--user", "bob@corp.example"]));
    assert_eq!(
        stored_texts(&c, "deals"),
        ["deal-old-1", "deal-old-2", "deal-old-3"]
    );

    // The purge deletes general's old posts and keeps the held ones.
    let (code, _, err) = chat(&c, &["retention", "purge-now", "--as", "auditor"]);
    assert_eq!(code, 2, "only operators start a purge: {err}");
    let out = ok(chat(&c, &["retention", "purge-now"]));
    assert!(out.contains("2 posts deleted, 3 kept for a hold"), "{out}");
    assert_eq!(stored_texts(&c, "general"), Vec::<String>::new());
    assert_eq!(stored_texts(&c, "deals").len(), 3);
    assert!(
        c.log("chatdb").contains("chat_purged"),
        "{}",
        c.log("chatdb")
    );
    let status = ok(chat(&c, &["retention", "status", "--json"]));
    let state: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(state["keep_days"], 1);
    assert_eq!(state["holds"][0]["name"], "case-9");
    assert!(state["purge"]["finished_at"].is_u64(), "{state}");
    // Numbers are not reused after the purge.
    let out = ok(post(&c, "gen-new"));
    assert!(out.contains("#3"), "{out}");

    // A hold that cannot reach every node is not reported as placed.
    c.kill("chatdb");
    let add = [
        "add",
        "--name",
        "case-10",
        "--users",
        "carol@corp.example",
        "--reason",
        "r",
    ];
    let (code, out, err) = hold(&c, &add);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("db1: hold case-10 placed"), "{out}");
    assert!(
        err.contains("chatdb: hold not placed") && err.contains("chatdb"),
        "{err}"
    );
    c.start_node("chatdb");
    // Run again: the database holds the same hold already (done), the
    // chat store places it; every node has it now.
    let out = ok(hold(&c, &add));
    assert!(
        out.contains("db1: hold case-10 placed") && out.contains("chatdb: hold case-10 placed"),
        "{out}"
    );

    // Released (the database never had it: not an error), the next clear
    // deletes the rows.
    let out = ok(hold(
        &c,
        &["release", "--name", "case-9", "--reason", "settled"],
    ));
    assert!(out.contains("chatdb: hold case-9 released"), "{out}");
    // The Channel server may still be reconnecting to the restarted store.
    let mut tries = 0;
    loop {
        let (code, out, err) = chat(&c, &["room", "clear", "--room", "deals"]);
        if code == 0 {
            break;
        }
        tries += 1;
        assert!(tries < 5, "{out}{err}");
        std::thread::sleep(Duration::from_secs(1));
    }
    ok(chat(&c, &["rooms", "--user", "bob@corp.example"]));
    assert_eq!(stored_texts(&c, "deals"), Vec::<String>::new());

    // The list names every hold once, with the nodes that keep it.
    let list = ok(hold(&c, &["list", "--json"]));
    let holds: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let nodes = |name: &str| -> serde_json::Value {
        let h = holds.iter().find(|h| h["name"] == name).unwrap();
        h["nodes"].clone()
    };
    assert_eq!(nodes("case-9"), serde_json::json!(["chatdb"]), "{list}");
    assert_eq!(
        nodes("case-10"),
        serde_json::json!(["db1", "chatdb"]),
        "{list}"
    );

    // The hold's placing and release are compliance records, with who.
    let events = exported_once(&c, Duration::from_secs(30), |events| {
        ["hold_placed", "hold_released"]
            .iter()
            .all(|k| events.iter().any(|e| e.kind == *k && e.room == "deals"))
    });
    let placed = events
        .iter()
        .find(|e| e.kind == "hold_placed" && e.room == "deals")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(
        (placed.user.as_str(), placed.item.as_str()),
        ("auditor:auditor", "case-9")
    );
    assert!(events
        .iter()
        .any(|e| e.kind == "room_purged" && e.user == "retention" && e.room == "general"));
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}

//! The PostgreSQL engines against a throwaway server: the cases of the
//! SQLite engines' unit tests, and a few hundred random batches and
//! queries answered alike by the map reference
//! ([`holdfast_actors::core::engine`]), SQLite and PostgreSQL. Then what
//! only a server has: a lost server, migrations, TLS.

mod common;

use common::postgres::PgServer;
use holdfast::archive_db::ArchiveDb;
use holdfast::chat_db::ChatDb;
use holdfast::config::PgTarget;
use holdfast::engines::postgres::{PgArchive, PgChat};
use holdfast::engines::Engine;
use holdfast_actors::chat::chat_store::{
    post_key, replaced_key, Replaced, CHAT_POST, CHAT_POST_ID,
};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp};
use holdfast_actors::core::engine::{self, Answer, Query};
use holdfast_actors::core::protocol::chat::Post;
use holdfast_actors::core::protocol::{ArchiveRecord, RecordKind, Search, SearchAfter};
use holdfast_actors::core::store_keys::{self as keys, Row, DB_ROW};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

fn target(url: String) -> PgTarget {
    PgTarget {
        url,
        tls_ca: None,
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(10),
    }
}

fn rec(id: &str, body: &str, time: u64) -> ArchiveRecord {
    ArchiveRecord {
        kind: RecordKind::Im,
        id: id.into(),
        client_id: id.into(),
        from: "a@x".into(),
        to: "b@x".into(),
        time,
        body: body.into(),
        external: false,
        front_end: "fe1".into(),
    }
}

/// The database core's insert of `record`.
fn put(record: ArchiveRecord) -> StoreOp {
    StoreOp::Insert {
        key: keys::key_str(DB_ROW, &record.id),
        value: keys::encode(&Row {
            rowid: 0,
            record,
            archived_at: 1_700_000_000_000,
        }),
    }
}

fn sample() -> Vec<StoreOp> {
    (1..=5)
        .map(|i| put(rec(&format!("m{i}"), "hello", i)))
        .collect()
}

fn count(db: &mut dyn Engine) -> u64 {
    db.answer(&Query::Count {
        prefix: DB_ROW.to_vec(),
    })
    .unwrap()
    .count()
}

#[test]
fn archive_inserts_are_idempotent_and_counted() {
    let pg = PgServer::start();
    let mut db = PgArchive::connect(&target(pg.url("holdfast"))).unwrap();
    assert_eq!(db.apply(&sample()).unwrap().inserted, 5);
    assert_eq!(db.apply(&sample()).unwrap().inserted, 0);
    let again = db.apply(&[put(rec("m1", "again", 0))]).unwrap();
    assert_eq!(again.inserted, 0);
    assert_eq!(count(&mut db), 5);
    let counts = db.client_id_counts().unwrap();
    assert_eq!(counts.len(), 5);
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let rows = db.messages().unwrap();
    // Row ids as SQLite gives them: no gap where a conflict was.
    assert_eq!(
        rows.iter().map(|m| m.rowid).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(rows[0].body, "hello");
    db.apply(&[put(rec("m6", "later", 6))]).unwrap();
    assert_eq!(db.messages().unwrap().pop().unwrap().rowid, 6);
    // The node's kv survives a new connection.
    db.apply(&[StoreOp::Put {
        key: b"meta/b".to_vec(),
        value: b"3".to_vec(),
    }])
    .unwrap();
    drop(db);
    let mut db = PgArchive::connect(&target(pg.url("holdfast"))).unwrap();
    let recovered = db.recovered().unwrap();
    assert_eq!(
        recovered,
        Recovered::from([(b"meta/b".to_vec(), b"3".to_vec())])
    );
    assert_eq!(count(&mut db), 6);
}

#[test]
fn a_row_the_archive_refuses_for_good_is_named_and_nothing_committed() {
    let pg = PgServer::start();
    let mut db = PgArchive::connect(&target(pg.url("holdfast"))).unwrap();
    // A trigger raising an error, one skipping rows quietly, and a value
    // PostgreSQL text cannot hold (a NUL byte): all refuse for good.
    pg.sql(
        "holdfast",
        "CREATE FUNCTION guard() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; \
           IF NEW.body = 'skip' THEN RETURN NULL; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER guard BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION guard();",
    );
    for (bad, why) in [
        ("poison", "poisoned"),
        ("skip", "skipped its row"),
        ("nul\0byte", "0x00"),
    ] {
        let err = db
            .apply(&[put(rec("m1", "fine", 1)), put(rec("m2", bad, 2))])
            .unwrap_err();
        match &err {
            StoreError::Refused { key, reason } => {
                assert_eq!(key, &keys::key_str(DB_ROW, "m2"));
                assert!(reason.contains("m2") && reason.contains(why), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(count(&mut db), 0, "nothing of the batch committed");
    }
    // A key naming another message refuses the batch, as in SQLite.
    let StoreOp::Insert { value, .. } = put(rec("other", "clash", 0)) else {
        unreachable!()
    };
    let clash = StoreOp::Insert {
        key: keys::key_str(DB_ROW, "m2"),
        value,
    };
    let err = db.apply(&[put(rec("m6", "new", 0)), clash]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Io(m) if m.contains("holds message \"other\"")),
        "{err:?}"
    );
    db.apply(&[put(rec("m1", "fine", 1))]).unwrap();
    assert_eq!(count(&mut db), 1);
}

/// A value of a row answer without its row id (the reference keeps the
/// core's 0; the engines give one).
fn normalise(key: &[u8], value: Vec<u8>) -> Vec<u8> {
    if key.starts_with(DB_ROW) {
        let mut row: Row = keys::decode(&value).unwrap();
        row.rowid = 0;
        keys::encode(&row)
    } else {
        value
    }
}

fn normalised(query: &Query, answer: Answer) -> Answer {
    match (query, answer) {
        (Query::Get { keys }, Answer::Values(values)) => Answer::Values(
            keys.iter()
                .zip(values)
                .map(|(k, v)| v.map(|v| normalise(k, v)))
                .collect(),
        ),
        (_, Answer::Rows(rows)) => Answer::Rows(
            rows.into_iter()
                .map(|(k, v)| {
                    let v = normalise(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        (_, other) => other,
    }
}

fn pick<'a, T>(rng: &mut SmallRng, from: &'a [T]) -> &'a T {
    &from[rng.gen_range(0..from.len())]
}

const ID_PARTS: [&str; 4] = ["a", "b", "é", "0"];
const KEY_BYTES: [u8; 6] = [0x00, 0x01, b'a', 0x7f, 0x80, 0xff];

fn random_id(rng: &mut SmallRng) -> String {
    (0..rng.gen_range(1..=3))
        .map(|_| *pick(rng, &ID_PARTS))
        .collect()
}

fn random_kv_key(rng: &mut SmallRng) -> Vec<u8> {
    let mut k = b"k/".to_vec();
    k.extend((0..rng.gen_range(0..=3)).map(|_| *pick(rng, &KEY_BYTES)));
    k
}

/// Senders and recipients of the random rows.
const USERS: [&str; 4] = ["a@x", "b@x", "c@x", "é@x"];

fn random_query(rng: &mut SmallRng) -> Query {
    let prefixes: [&[u8]; 8] = [
        b"m/",
        b"m/a",
        "m/é".as_bytes(),
        b"k/",
        b"k/\x00",
        b"k/\xff",
        b"k/a",
        b"meta/",
    ];
    let prefix = pick(rng, &prefixes).to_vec();
    match rng.gen_range(0..5) {
        // A search of the archive: several users, a range, a text, a page
        // key (the rows are in batch order, one time per batch).
        4 => {
            let n = rng.gen_range(0..=3);
            let users = (0..n).map(|_| (*pick(rng, &USERS)).into()).collect();
            let since = rng.gen_bool(0.5).then(|| rng.gen_range(0..80));
            let until = rng.gen_bool(0.5).then(|| rng.gen_range(40..130));
            let text = rng
                .gen_bool(0.2)
                .then(|| format!("BODY {}", rng.gen_range(0..12)));
            let after = rng.gen_bool(0.3).then(|| SearchAfter {
                time: rng.gen_range(0..120),
                id: random_id(rng).into(),
            });
            Query::Search {
                prefix: DB_ROW.to_vec(),
                search: Search {
                    users,
                    id: None,
                    since,
                    until,
                    text,
                    after,
                    limit: rng.gen_range(1..20),
                },
            }
        }
        0 => Query::Get {
            keys: (0..rng.gen_range(1..=3))
                .map(|_| {
                    if rng.gen_bool(0.5) {
                        keys::key_str(DB_ROW, &random_id(rng))
                    } else {
                        random_kv_key(rng)
                    }
                })
                .collect(),
        },
        1 => Query::Count { prefix },
        _ => {
            let from = rng.gen_bool(0.6).then(|| {
                if prefix.starts_with(DB_ROW) {
                    random_id(rng).into_bytes()
                } else {
                    (0..rng.gen_range(0..=2))
                        .map(|_| *pick(rng, &KEY_BYTES))
                        .collect()
                }
            });
            Query::Scan {
                prefix,
                from,
                reverse: rng.gen_bool(0.5),
                limit: rng.gen_range(0..6),
            }
        }
    }
}

/// Random batches of row inserts and `kv` puts, inserts and deletes;
/// after each, random queries: the map reference, SQLite and PostgreSQL
/// must write and answer alike.
#[test]
fn the_archive_engines_answer_like_the_map_reference() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![
        (
            "sqlite",
            Box::new(ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap()),
        ),
        (
            "postgres",
            Box::new(PgArchive::connect(&target(pg.url("holdfast"))).unwrap()),
        ),
    ];
    let mut reference = Recovered::new();
    let mut rng = SmallRng::seed_from_u64(7);
    let (mut ops_done, mut queries) = (0, 0);
    for batch in 0..120 {
        let ops: Vec<StoreOp> = (0..rng.gen_range(1..=5))
            .map(|_| match rng.gen_range(0..4) {
                0 => put(ArchiveRecord {
                    from: (*pick(&mut rng, &USERS)).into(),
                    to: (*pick(&mut rng, &USERS)).into(),
                    ..rec(&random_id(&mut rng), &format!("body {batch}"), batch)
                }),
                1 => StoreOp::Put {
                    key: random_kv_key(&mut rng),
                    value: vec![batch as u8],
                },
                2 => StoreOp::Insert {
                    key: random_kv_key(&mut rng),
                    value: vec![batch as u8, 1],
                },
                _ => StoreOp::Delete {
                    key: random_kv_key(&mut rng),
                },
            })
            .collect();
        ops_done += ops.len();
        let want = engine::apply(&mut reference, ops.clone());
        for (name, e) in engines.iter_mut() {
            assert_eq!(
                e.apply(&ops).unwrap(),
                want,
                "{name}: batch {batch}: {ops:?}"
            );
        }
        for _ in 0..4 {
            let q = random_query(&mut rng);
            queries += 1;
            let want = normalised(&q, engine::answer(&reference, &q));
            for (name, e) in engines.iter_mut() {
                let got = normalised(&q, e.answer(&q).unwrap());
                assert_eq!(got, want, "{name}: batch {batch}: {q:?}");
            }
        }
    }
    let kv: Recovered = reference
        .into_iter()
        .filter(|(k, _)| !k.starts_with(DB_ROW))
        .collect();
    for (name, e) in engines.iter_mut() {
        assert_eq!(e.recovered().unwrap(), kv, "{name}");
    }
    eprintln!("{ops_done} ops, {queries} queries agreed");
}

fn post(id: &str, room: &str, text: &str) -> Post {
    Post {
        id: id.into(),
        room: room.into(),
        author: "ann@corp.example".into(),
        text: text.into(),
        at: 5,
    }
}

/// A post appended as the chat store core appends it: under its number,
/// and its id inserted.
fn append(p: &Post, seq: u64) -> [StoreOp; 2] {
    [
        StoreOp::Put {
            key: post_key(&p.room, seq),
            value: keys::encode(p),
        },
        StoreOp::Insert {
            key: keys::key_str(CHAT_POST_ID, &p.id),
            value: keys::encode(&(seq, p.clone())),
        },
    ]
}

#[test]
fn the_chat_engines_answer_like_the_map_reference() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut engines: Vec<(&str, Box<dyn Engine>)> = vec![
        (
            "sqlite",
            Box::new(ChatDb::open(&dir.path().join("chat.sqlite")).unwrap()),
        ),
        (
            "postgres",
            Box::new(PgChat::connect(&target(pg.url("holdfast"))).unwrap()),
        ),
    ];
    let rooms = ["deals", "général", "a"];
    let mut next = [1u64; 3];
    let mut reference = Recovered::new();
    let mut rng = SmallRng::seed_from_u64(11);
    // Posts stored: (seq, post), which a later batch may replace or delete
    // (records management: as the chat store core does).
    let mut stored: Vec<(u64, Post)> = Vec::new();
    for batch in 0..100 {
        let mut ops = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            let roll = rng.gen_range(0..10);
            if roll < 6 || stored.is_empty() {
                let r = rng.gen_range(0..rooms.len());
                let p = post(&format!("p{batch}-{}", ops.len()), rooms[r], "hi ✓");
                ops.extend(append(&p, next[r]));
                stored.push((next[r], p));
                next[r] += 1;
            } else if roll == 6 {
                // A clear deletes a post's row, its id and any original.
                let (seq, p) = stored.remove(rng.gen_range(0..stored.len()));
                ops.push(StoreOp::Delete {
                    key: post_key(&p.room, seq),
                });
                ops.push(StoreOp::Delete {
                    key: keys::key_str(CHAT_POST_ID, &p.id),
                });
                ops.push(StoreOp::Delete {
                    key: replaced_key(&p.id),
                });
            } else if roll == 7 {
                // A replace: the new text under the number and the id, the
                // original (the first only) beside it.
                let i = rng.gen_range(0..stored.len());
                let (seq, original) = stored[i].clone();
                let new = Post {
                    text: format!("replaced in {batch}"),
                    ..original.clone()
                };
                ops.push(StoreOp::Delete {
                    key: keys::key_str(CHAT_POST_ID, &new.id),
                });
                ops.extend(append(&new, seq));
                ops.push(StoreOp::Insert {
                    key: replaced_key(&new.id),
                    value: keys::encode(&Replaced {
                        seq,
                        original,
                        by: "ops".into(),
                        at: batch,
                    }),
                });
                stored[i].1 = new;
            } else {
                ops.push(StoreOp::Put {
                    key: random_kv_key(&mut rng),
                    value: vec![batch as u8],
                });
            }
        }
        engine::apply(&mut reference, ops.clone());
        let mut written = Vec::new();
        for (_, e) in engines.iter_mut() {
            written.push(e.apply(&ops).unwrap());
        }
        assert_eq!(written[0], written[1], "batch {batch}");
        for _ in 0..3 {
            let r = *pick(&mut rng, &rooms);
            let q = match rng.gen_range(0..4) {
                0 => Query::Count {
                    prefix: CHAT_POST.to_vec(),
                },
                1 => Query::Get {
                    keys: vec![
                        post_key(r, rng.gen_range(1..6)),
                        keys::key_str(CHAT_POST_ID, &format!("p{}-0", rng.gen_range(0..=batch))),
                        replaced_key(&format!("p{}-0", rng.gen_range(0..=batch))),
                        random_kv_key(&mut rng),
                    ],
                },
                _ => Query::Scan {
                    prefix: post_key(r, 0)[..post_key(r, 0).len() - 8].to_vec(),
                    from: rng
                        .gen_bool(0.5)
                        .then(|| rng.gen_range(0u64..8).to_be_bytes().to_vec()),
                    reverse: rng.gen_bool(0.5),
                    limit: rng.gen_range(0..5),
                },
            };
            let want = engine::answer(&reference, &q);
            for (name, e) in engines.iter_mut() {
                assert_eq!(e.answer(&q).unwrap(), want, "{name}: batch {batch}: {q:?}");
            }
        }
    }
    // A post under a taken number refuses the batch, in both.
    let taken = append(&post("intruder", "deals", "x"), 1);
    for (name, e) in engines.iter_mut() {
        let err = e.apply(&taken).unwrap_err();
        assert!(err.to_string().contains("holds post"), "{name}: {err}");
    }
}

/// The server dies under the archive: the batch fails as I/O (quickly,
/// no panic); once the server is back, the next batch reconnects.
#[test]
fn a_lost_server_is_an_io_error_and_the_next_batch_reconnects() {
    let pg = PgServer::start();
    let mut db = PgArchive::connect(&target(pg.url("holdfast"))).unwrap();
    db.apply(&sample()).unwrap();
    pg.stop_immediate();
    let started = Instant::now();
    let err = db.apply(&[put(rec("m6", "during", 6))]).unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    let err = db
        .answer(&Query::Count {
            prefix: DB_ROW.to_vec(),
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    pg.start_again();
    let written = db
        .apply(&[put(rec("m6", "after", 6)), put(rec("m1", "again", 1))])
        .unwrap();
    assert_eq!(written.inserted, 1);
    assert_eq!(count(&mut db), 6);
}

#[test]
fn schemas_are_migrated_once_and_a_newer_or_foreign_one_is_refused() {
    let pg = PgServer::start();
    let url = pg.url("holdfast");
    drop(PgArchive::connect(&target(url.clone())).unwrap());
    drop(PgArchive::connect(&target(url.clone())).unwrap());
    let mut admin = pg.client("holdfast");
    let version: i32 = admin
        .query_one(
            "SELECT version FROM schema_version WHERE component = 'archive'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    // The archive's tables read as they do in SQLite.
    admin
        .batch_execute(
            "SELECT rowid, message_id, kind, from_user, to_user, time, body, external, \
             front_end, archived_at, client_id FROM messages WHERE external = 1",
        )
        .unwrap();
    // The chat store refuses the archive's database.
    let err = PgChat::connect(&target(url.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("a database of its own"), "{err}");
    admin
        .batch_execute("UPDATE schema_version SET version = 9")
        .unwrap();
    let err = PgArchive::connect(&target(url)).err().unwrap().to_string();
    assert!(err.contains("schema version 9, newer"), "{err}");
    // The chat store's own database, with the SQLite column names.
    let chat = pg.create_db("chat");
    drop(PgChat::connect(&target(chat)).unwrap());
    pg.sql(
        "chat",
        "SELECT room, \"user\", role FROM memberships; SELECT \"user\", room FROM follows; \
         SELECT room, seq, post_id, author, text, at FROM posts",
    );
}

/// TLS with the operator's CA: the server refuses plain connections; the
/// node connects over TLS with a password in the URL, which no error
/// shows; a CA that did not sign the server's certificate is refused.
#[test]
fn tls_to_the_server_is_verified_and_the_password_never_shown() {
    let pg = PgServer::start();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let cert = pg.give("server.crt", server.pem().as_bytes());
    let key = pg.give("server.key", server_key.serialize_pem().as_bytes());
    pg.sql("holdfast", "ALTER USER holdfast PASSWORD 's3cret-pw'");
    pg.reconfigure(
        "local all all trust\n\
         hostnossl all all 0.0.0.0/0 reject\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n",
        &format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ),
    );
    let ca_file = pg.dir().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let url = format!(
        "postgres://holdfast:s3cret-pw@127.0.0.1:{}/holdfast",
        pg.port
    );
    let plain = PgArchive::connect(&target(url.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(plain.contains("cannot connect"), "{plain}");
    assert!(!plain.contains("s3cret-pw"), "{plain}");
    let mut db = PgArchive::connect(&PgTarget {
        tls_ca: Some(ca_file),
        ..target(url.clone())
    })
    .unwrap();
    db.apply(&sample()).unwrap();
    assert_eq!(count(&mut db), 5);
    assert!(!db.describe().contains("s3cret-pw"));
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = pg.dir().join("other.pem");
    std::fs::write(&other_ca, other.self_signed(&other_key).unwrap().pem()).unwrap();
    let err = PgArchive::connect(&PgTarget {
        tls_ca: Some(other_ca),
        ..target(url)
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("cannot connect") && !err.contains("s3cret-pw"),
        "{err}"
    );
}

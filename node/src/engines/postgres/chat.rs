//! The chat store in PostgreSQL: the twin of [`crate::chat_db::ChatDb`],
//! with the same tables and the same semantics. A post (`c/`) is a row of
//! `posts`, its id (`i/`) answered from the unique `post_id`; a room
//! (`r/`) a row of `rooms` plus its `memberships`; a user's follows
//! (`u/`) rows of `follows`; any other key lands in `kv`.
//!
//! Records management as in SQLite: a replaced post's original (`e/`) is a
//! row of `replaced`; a cleared post's row is deleted (the space is
//! reclaimed by the server's vacuum).
//!
//! `user` is a reserved word in PostgreSQL: the `memberships` and
//! `follows` columns of that name are written `"user"` (which SQLite
//! reads too).

use super::link::{io_error, refused_for_good, Link, Session};
use super::schema::Schema;
use super::target::PgTarget;
use crate::engines::{Engine, EngineError};
use holdfast_actors::chat::chat_store::{
    key_name, parse_post_key, post_id_holds, post_id_to_store, post_key, post_key_parts, post_scan,
    post_to_store, prefixed, Replaced, CHAT_FOLLOWS, CHAT_POST, CHAT_POST_ID, CHAT_REPLACED,
    CHAT_ROOM,
};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{Answer, Query};
use holdfast_actors::core::protocol::chat::{Post, Room, RoomId};
use holdfast_actors::core::store_keys as keys;
use std::collections::{BTreeMap, BTreeSet};

/// The chat store's migrations. Version 1 is the SQLite store's schema 1;
/// version 2 (`replaced`) its schema 2.
pub static SCHEMA: Schema = Schema {
    component: "chat store",
    steps: &[
        "
CREATE TABLE posts (
    room    TEXT   COLLATE \"C\" NOT NULL,
    seq     BIGINT NOT NULL,
    post_id TEXT   COLLATE \"C\" NOT NULL UNIQUE,
    author  TEXT   NOT NULL,
    text    TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE INDEX posts_author_at ON posts (author, at);
CREATE TABLE rooms (
    name        TEXT    COLLATE \"C\" PRIMARY KEY,
    version     BIGINT  NOT NULL,
    privacy     TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    description TEXT    NOT NULL,
    invite      INTEGER NOT NULL,
    auditorium  INTEGER NOT NULL,
    info        BYTEA   NOT NULL
);
CREATE TABLE memberships (
    room   TEXT COLLATE \"C\" NOT NULL,
    \"user\" TEXT COLLATE \"C\" NOT NULL,
    role   TEXT NOT NULL CHECK (role IN ('member', 'manager', 'presenter', 'denied')),
    PRIMARY KEY (room, \"user\", role)
);
CREATE INDEX memberships_user ON memberships (\"user\");
CREATE TABLE follows (
    \"user\" TEXT COLLATE \"C\" NOT NULL,
    room   TEXT COLLATE \"C\" NOT NULL,
    PRIMARY KEY (\"user\", room)
);
CREATE TABLE kv (
    key   BYTEA PRIMARY KEY,
    value BYTEA NOT NULL
);
",
        "
CREATE TABLE replaced (
    post_id     TEXT   COLLATE \"C\" PRIMARY KEY,
    room        TEXT   COLLATE \"C\" NOT NULL,
    seq         BIGINT NOT NULL,
    author      TEXT   NOT NULL,
    text        TEXT   NOT NULL,
    at          BIGINT NOT NULL,
    replaced_by TEXT   NOT NULL,
    replaced_at BIGINT NOT NULL
);
",
    ],
};

const POST: &str = "SELECT room, seq, post_id, author, text, at FROM posts";
const POST_BY_ID: &str = "SELECT room, seq FROM posts WHERE post_id = $1";
const POST_AT: &str = "SELECT post_id FROM posts WHERE room = $1 AND seq = $2";
const POST_INSERT: &str =
    "INSERT INTO posts (room, seq, post_id, author, text, at) VALUES ($1, $2, $3, $4, $5, $6)";
const ROOM_PUT: &str = "INSERT INTO rooms (name, version, privacy, category, description, \
     invite, auditorium, info) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, privacy = EXCLUDED.privacy, \
     category = EXCLUDED.category, description = EXCLUDED.description, \
     invite = EXCLUDED.invite, auditorium = EXCLUDED.auditorium, info = EXCLUDED.info";
const ROOM_DELETE: &str = "DELETE FROM rooms WHERE name = $1";
const MEMBERS_DELETE: &str = "DELETE FROM memberships WHERE room = $1";
const MEMBER_ADD: &str = "INSERT INTO memberships (room, \"user\", role) VALUES ($1, $2, $3)";
const FOLLOWS_DELETE: &str = "DELETE FROM follows WHERE \"user\" = $1";
const FOLLOW_ADD: &str = "INSERT INTO follows (\"user\", room) VALUES ($1, $2)";
const KV_PUT: &str = "INSERT INTO kv (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const KV_INSERT: &str = "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
const KV_DELETE: &str = "DELETE FROM kv WHERE key = $1";
const POST_DELETE_ID: &str = "DELETE FROM posts WHERE post_id = $1";
const POST_DELETE_AT: &str = "DELETE FROM posts WHERE room = $1 AND seq = $2";
const REPLACED_INSERT: &str = "INSERT INTO replaced (post_id, room, seq, author, text, at, \
     replaced_by, replaced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const REPLACED_DELETE: &str = "DELETE FROM replaced WHERE post_id = $1";
const REPLACED_GET: &str = "SELECT post_id, room, seq, author, text, at, replaced_by, \
     replaced_at FROM replaced WHERE post_id = $1";

/// The chat store, in PostgreSQL.
pub struct PgChat {
    link: Link,
}

impl PgChat {
    /// Connects (the server must answer) and brings the schema to this
    /// build's version; refuses a newer schema.
    pub fn connect(target: &PgTarget) -> Result<PgChat, EngineError> {
        Ok(PgChat {
            link: Link::open(target, &SCHEMA)?,
        })
    }
}

/// Batches, queries and the state at start (the rooms, the follows and
/// `kv`) as [`crate::chat_db::ChatDb`] has them.
impl Engine for PgChat {
    fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError> {
        self.link.apply(ops, apply)
    }
    fn answer(&mut self, query: &Query) -> Result<Answer, StoreError> {
        self.link.answer(query, answer)
    }
    fn recovered(&mut self) -> Result<Recovered, EngineError> {
        self.link.recovered(recovered)
    }
}

fn apply(s: &mut Session, ops: &[StoreOp]) -> Result<Written, StoreError> {
    let [post_delete_id, post_delete_at, replaced_insert, replaced_delete] = s.prepare([
        POST_DELETE_ID,
        POST_DELETE_AT,
        REPLACED_INSERT,
        REPLACED_DELETE,
    ])?;
    let [post_by_id, post_at, post_insert, room_put, room_delete, members_delete, member_add, follows_delete, follow_add, kv_put, kv_insert, kv_delete] =
        s.prepare([
            POST_BY_ID,
            POST_AT,
            POST_INSERT,
            ROOM_PUT,
            ROOM_DELETE,
            MEMBERS_DELETE,
            MEMBER_ADD,
            FOLLOWS_DELETE,
            FOLLOW_ADD,
            KV_PUT,
            KV_INSERT,
            KV_DELETE,
        ])?;
    let target = s.target().clone();
    let refuse = |detail: String| {
        StoreError::Io(format!(
            "chat store {}: batch refused: {detail}",
            target.redacted()
        ))
    };
    // A value the engine refuses for good (a NUL byte in a text, a
    // constraint) names the key it came under.
    let failed = |key: &[u8]| {
        let key = key.to_vec();
        let target = target.clone();
        move |e: postgres::Error| {
            if refused_for_good(&e) {
                StoreError::Refused {
                    key,
                    reason: super::schema::describe(&e),
                }
            } else {
                io_error(&target, &e)
            }
        }
    };
    let mut tx = s
        .client()?
        .transaction()
        .map_err(|e| io_error(&target, &e))?;
    let mut inserted = 0u64;
    for op in ops {
        match op {
            StoreOp::Delete { key } if key.starts_with(CHAT_POST_ID) => {
                let id = key_name(key, CHAT_POST_ID).ok_or_else(|| refuse(format!("{key:?}")))?;
                tx.execute(&post_delete_id, &[&id]).map_err(failed(key))?;
            }
            StoreOp::Put { key, value } | StoreOp::Insert { key, value }
                if key.starts_with(CHAT_REPLACED) =>
            {
                let r: Replaced = keys::decode(value)
                    .map_err(|e| refuse(format!("undecodable original {key:?}: {e}")))?;
                let put = matches!(op, StoreOp::Put { .. });
                if put {
                    tx.execute(&replaced_delete, &[&r.original.id])
                        .map_err(failed(key))?;
                }
                let held = tx
                    .query_opt(REPLACED_GET, &[&r.original.id])
                    .map_err(failed(key))?
                    .is_some();
                if !held {
                    tx.execute(
                        &replaced_insert,
                        &[
                            &r.original.id,
                            &r.original.room,
                            &(r.seq as i64),
                            &r.original.author,
                            &r.original.text,
                            &(r.original.at as i64),
                            &r.by,
                            &(r.at as i64),
                        ],
                    )
                    .map_err(failed(key))?;
                    if !put {
                        inserted += 1;
                    }
                }
            }
            StoreOp::Delete { key } if key.starts_with(CHAT_REPLACED) => {
                let id = key_name(key, CHAT_REPLACED).ok_or_else(|| refuse(format!("{key:?}")))?;
                tx.execute(&replaced_delete, &[&id]).map_err(failed(key))?;
            }
            // A post's id: the posts table's unique index on `post_id` is
            // the key. The post itself was put under its number earlier
            // in the batch; check that it holds this id.
            StoreOp::Insert { key, value } if key.starts_with(CHAT_POST_ID) => {
                let (seq, post) =
                    post_id_to_store(key, value).map_err(|e| refuse(e.to_string()))?;
                let held = tx
                    .query_opt(&post_by_id, &[&post.id])
                    .map_err(failed(key))?
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
                post_id_holds(&post, seq, held).map_err(|e| refuse(e.to_string()))?;
                inserted += 1;
            }
            StoreOp::Put { key, .. } if key.starts_with(CHAT_POST_ID) => {
                return Err(refuse(format!("post ids are only inserted (key {key:?})")));
            }
            StoreOp::Put { key, value } if key.starts_with(CHAT_POST) => {
                let (room, seq, post) = post_to_store(key, value).map_err(refuse)?;
                let held: Option<String> = tx
                    .query_opt(&post_at, &[&room, &(seq as i64)])
                    .map_err(failed(key))?
                    .map(|r| r.get(0));
                match held {
                    Some(id) if id == post.id => {} // a retried batch
                    Some(id) => {
                        return Err(refuse(format!("{room}#{seq} holds post {id} already")))
                    }
                    None => {
                        tx.execute(
                            &post_insert,
                            &[
                                &room,
                                &(seq as i64),
                                &post.id,
                                &post.author,
                                &post.text,
                                &(post.at as i64),
                            ],
                        )
                        .map_err(failed(key))?;
                    }
                }
            }
            StoreOp::Delete { key } if key.starts_with(CHAT_POST) => {
                let (room, seq) = post_key_parts(key).map_err(refuse)?;
                tx.execute(&post_delete_at, &[&room, &(seq as i64)])
                    .map_err(failed(key))?;
            }
            StoreOp::Put { key, value } if key.starts_with(CHAT_ROOM) => {
                let name = key_name(key, CHAT_ROOM).ok_or_else(|| refuse(format!("{key:?}")))?;
                let room: Room = keys::decode(value)
                    .map_err(|e| refuse(format!("undecodable room {name}: {e}")))?;
                tx.execute(
                    &room_put,
                    &[
                        &name,
                        &(room.version as i64),
                        &room.privacy.as_str(),
                        &room.category,
                        &room.description,
                        &i32::from(room.invite),
                        &i32::from(room.presenters.is_some()),
                        value,
                    ],
                )
                .map_err(failed(key))?;
                tx.execute(&members_delete, &[&name]).map_err(failed(key))?;
                let empty = BTreeSet::new();
                for (role, users) in [
                    ("member", &room.members),
                    ("manager", &room.managers),
                    ("presenter", room.presenters.as_ref().unwrap_or(&empty)),
                    ("denied", &room.denied),
                ] {
                    for user in users {
                        tx.execute(&member_add, &[&name, user, &role])
                            .map_err(failed(key))?;
                    }
                }
            }
            StoreOp::Delete { key } if key.starts_with(CHAT_ROOM) => {
                let name = key_name(key, CHAT_ROOM).ok_or_else(|| refuse(format!("{key:?}")))?;
                tx.execute(&room_delete, &[&name]).map_err(failed(key))?;
                tx.execute(&members_delete, &[&name]).map_err(failed(key))?;
            }
            StoreOp::Put { key, value } if key.starts_with(CHAT_FOLLOWS) => {
                let user = key_name(key, CHAT_FOLLOWS).ok_or_else(|| refuse(format!("{key:?}")))?;
                let rooms: BTreeSet<RoomId> = keys::decode(value)
                    .map_err(|e| refuse(format!("undecodable follows of {user}: {e}")))?;
                tx.execute(&follows_delete, &[&user]).map_err(failed(key))?;
                for room in rooms {
                    tx.execute(&follow_add, &[&user, &room])
                        .map_err(failed(key))?;
                }
            }
            StoreOp::Delete { key } if key.starts_with(CHAT_FOLLOWS) => {
                let user = key_name(key, CHAT_FOLLOWS).ok_or_else(|| refuse(format!("{key:?}")))?;
                tx.execute(&follows_delete, &[&user]).map_err(failed(key))?;
            }
            StoreOp::Put { key, value } => {
                tx.execute(&kv_put, &[key, value]).map_err(failed(key))?;
            }
            StoreOp::Insert { key, value } => {
                inserted += tx.execute(&kv_insert, &[key, value]).map_err(failed(key))?;
            }
            StoreOp::Delete { key } => {
                tx.execute(&kv_delete, &[key]).map_err(failed(key))?;
            }
        }
    }
    tx.commit().map_err(|e| io_error(&target, &e))?;
    Ok(Written { inserted })
}

/// A row of `SELECT room, seq, post_id, author, text, at`.
fn read_post(r: &postgres::Row) -> (u64, Post) {
    let seq: i64 = r.get(1);
    let at: i64 = r.get(5);
    (
        seq as u64,
        Post {
            room: r.get(0),
            id: r.get(2),
            author: r.get(3),
            text: r.get(4),
            at: at as u64,
        },
    )
}

fn answer(s: &mut Session, query: &Query) -> Result<Answer, StoreError> {
    match query {
        Query::Get { keys: wanted } => {
            let mut values = Vec::with_capacity(wanted.len());
            for key in wanted {
                let found = if let Some(id) = key.strip_prefix(CHAT_REPLACED) {
                    let id = String::from_utf8_lossy(id).into_owned();
                    s.client()?.query_opt(REPLACED_GET, &[&id]).map(|r| {
                        r.map(|r| {
                            keys::encode(&Replaced {
                                seq: r.get::<_, i64>(2) as u64,
                                original: Post {
                                    id: r.get(0),
                                    room: r.get(1),
                                    author: r.get(3),
                                    text: r.get(4),
                                    at: r.get::<_, i64>(5) as u64,
                                },
                                by: r.get(6),
                                at: r.get::<_, i64>(7) as u64,
                            })
                        })
                    })
                } else if let Some(id) = key.strip_prefix(CHAT_POST_ID) {
                    let id = String::from_utf8_lossy(id).into_owned();
                    let sql = format!("{POST} WHERE post_id = $1");
                    s.client()?
                        .query_opt(sql.as_str(), &[&id])
                        .map(|r| r.map(|r| keys::encode(&read_post(&r))))
                } else if let Some((room, seq)) = parse_post_key(key) {
                    let sql = format!("{POST} WHERE room = $1 AND seq = $2");
                    let seq = seq.min(i64::MAX as u64) as i64;
                    s.client()?
                        .query_opt(sql.as_str(), &[&room, &seq])
                        .map(|r| r.map(|r| keys::encode(&read_post(&r).1)))
                } else {
                    s.client()?
                        .query_opt("SELECT value FROM kv WHERE key = $1", &[key])
                        .map(|r| r.map(|r| r.get(0)))
                };
                values.push(found.map_err(|e| s.error(&e))?);
            }
            Ok(Answer::Values(values))
        }
        Query::Count { prefix } if prefix.as_slice() == CHAT_POST => {
            let found = s.client()?.query_one("SELECT COUNT(*) FROM posts", &[]);
            let n: i64 = found.map_err(|e| s.error(&e))?.get(0);
            Ok(Answer::Count(n.max(0) as u64))
        }
        Query::Scan {
            prefix,
            from,
            reverse,
            limit,
        } if prefix.starts_with(CHAT_POST) => {
            let (room, after) = post_scan(prefix, from.as_deref(), *reverse)?;
            let sql = if *reverse {
                format!("{POST} WHERE room = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3")
            } else {
                format!("{POST} WHERE room = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            };
            let found = s
                .client()?
                .query(sql.as_str(), &[&room, &after, &i64::from(*limit)]);
            let found = found.map_err(|e| s.error(&e))?;
            Ok(Answer::Rows(
                found
                    .iter()
                    .map(|r| {
                        let (seq, post) = read_post(r);
                        (post_key(&post.room, seq), keys::encode(&post))
                    })
                    .collect(),
            ))
        }
        // The store reads its directory and follows at start and scans
        // nothing else: say so rather than answer wrongly.
        other => Err(StoreError::Io(format!(
            "chat store {}: query not supported: {other:?}",
            s.target().redacted()
        ))),
    }
}

fn recovered(s: &mut Session) -> Result<Recovered, StoreError> {
    let mut out = Recovered::new();
    let rooms = s.client()?.query("SELECT name, info FROM rooms", &[]);
    for r in rooms.map_err(|e| s.error(&e))? {
        out.insert(prefixed(CHAT_ROOM, &r.get::<_, String>(0)), r.get(1));
    }
    let follows = s
        .client()?
        .query("SELECT \"user\", room FROM follows ORDER BY \"user\"", &[]);
    let mut by_user: BTreeMap<String, BTreeSet<RoomId>> = BTreeMap::new();
    for r in follows.map_err(|e| s.error(&e))? {
        by_user.entry(r.get(0)).or_default().insert(r.get(1));
    }
    for (user, rooms) in by_user {
        out.insert(prefixed(CHAT_FOLLOWS, &user), keys::encode(&rooms));
    }
    let kv = s.client()?.query("SELECT key, value FROM kv", &[]);
    for r in kv.map_err(|e| s.error(&e))? {
        out.insert(r.get(0), r.get(1));
    }
    Ok(out)
}

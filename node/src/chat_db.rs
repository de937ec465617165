//! The SQLite store of a chat store node: rooms, memberships, follows and
//! every room's posts, in tables an operator or a compliance officer can
//! query with ordinary SQL tools.
//!
//! The [`ChatStore`](holdfast_actors::chat::chat_store::ChatStore) core speaks in
//! key-value [`StoreOp`]s. A post (`c/`) becomes a row of `posts`; a room
//! (`r/`) a row of `rooms` plus its rows in `memberships`; a user's follows
//! (`u/`) rows of `follows`. Any other key lands in `kv`, so no op is ever
//! dropped. A `Persist` batch is one transaction, WAL journal and
//! `synchronous = FULL`: on disk before [`ChatDb::apply`] returns.
//!
//! Records management: a replaced post's original (`e/`) is a row of
//! `replaced`, beside the post that now holds the new text. A cleared
//! post's row is deleted (`DELETE`, `secure_delete` on, so SQLite
//! overwrites the freed space), and a batch that deleted posts ends with
//! a `TRUNCATE` checkpoint, so that the write-ahead log does not keep
//! the deleted text either.

use crate::path_error::PathError;
use holdfast_actors::chat::chat_store::{
    key_name, parse_post_key, post_id_holds, post_id_to_store, post_key, post_key_parts, post_scan,
    post_to_store, prefixed, Replaced, CHAT_FOLLOWS, CHAT_POST, CHAT_POST_ID, CHAT_REPLACED,
    CHAT_ROOM,
};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{Answer, Query};
use holdfast_actors::core::protocol::chat::{Post, Room, RoomId};
use holdfast_actors::core::store_keys as keys;
use rusqlite::{ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this build writes and understands (`user_version`).
/// Version 2 added `replaced`.
pub const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS posts (
    room    TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    post_id TEXT    NOT NULL UNIQUE,
    author  TEXT    NOT NULL,
    text    TEXT    NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS posts_author_at ON posts (author, at);
CREATE TABLE IF NOT EXISTS rooms (
    name        TEXT    PRIMARY KEY,
    version     INTEGER NOT NULL,
    privacy     TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    description TEXT    NOT NULL,
    invite      INTEGER NOT NULL,
    auditorium  INTEGER NOT NULL,
    info        BLOB    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS memberships (
    room TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('member', 'manager', 'presenter', 'denied')),
    PRIMARY KEY (room, user, role)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS memberships_user ON memberships (user);
CREATE TABLE IF NOT EXISTS follows (
    user TEXT NOT NULL,
    room TEXT NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replaced (
    post_id     TEXT    PRIMARY KEY,
    room        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    author      TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    at          INTEGER NOT NULL,
    replaced_by TEXT    NOT NULL,
    replaced_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
";

/// An open chat database.
pub struct ChatDb {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl ChatDb {
    /// Opens or creates the database (parent folders created): WAL,
    /// `synchronous = FULL`, schema created idempotently; a database of a
    /// newer schema is refused.
    pub fn open(path: &Path) -> Result<ChatDb, PathError> {
        let fail = |e: &dyn std::fmt::Display| PathError::new(path, e.to_string());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|e| fail(&e))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| fail(&e))?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| fail(&e))?;
        if found > SCHEMA_VERSION {
            return Err(fail(&format!(
                "written by a newer holdfast (schema {found}, this build reads {SCHEMA_VERSION})"
            )));
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| fail(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(&format!("cannot use a WAL journal (got {mode})")));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail(&e))?;
        // Deleted rows (cleared posts) are overwritten, not left in free
        // pages.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(|e| fail(&e))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail(&e))?;
        tx.execute_batch(SCHEMA)
            .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
            .and_then(|()| tx.commit())
            .map_err(|e| fail(&e))?;
        Ok(ChatDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Applies one `Persist` batch in one transaction. A malformed post or
    /// a sequence number holding another post refuses the whole batch:
    /// nothing is committed. Deleting a post (by number or by id) deletes
    /// its row.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError> {
        let path = self.path.clone();
        let io = |e: rusqlite::Error| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
                StoreError::NoSpace
            }
            _ => StoreError::Io(format!("chat store {}: {e}", path.display())),
        };
        let refuse = |detail: String| {
            StoreError::Io(format!(
                "chat store {}: batch refused: {detail}",
                path.display()
            ))
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(io)?;
        let mut inserted = 0u64;
        let mut deleted = 0usize;
        for op in ops {
            match op {
                StoreOp::Delete { key } if key.starts_with(CHAT_POST_ID) => {
                    let id =
                        key_name(key, CHAT_POST_ID).ok_or_else(|| refuse(format!("{key:?}")))?;
                    deleted += tx
                        .execute("DELETE FROM posts WHERE post_id = ?1", [&id])
                        .map_err(io)?;
                }
                StoreOp::Put { key, value } | StoreOp::Insert { key, value }
                    if key.starts_with(CHAT_REPLACED) =>
                {
                    let r: Replaced = keys::decode(value)
                        .map_err(|e| refuse(format!("undecodable original {key:?}: {e}")))?;
                    let verb = if matches!(op, StoreOp::Put { .. }) {
                        "INSERT OR REPLACE"
                    } else {
                        "INSERT OR IGNORE"
                    };
                    let n = tx
                        .execute(
                            &format!(
                                "{verb} INTO replaced (post_id, room, seq, author, text, at, \
                                 replaced_by, replaced_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                            ),
                            rusqlite::params![
                                r.original.id,
                                r.original.room,
                                r.seq as i64,
                                r.original.author,
                                r.original.text,
                                r.original.at as i64,
                                r.by,
                                r.at as i64
                            ],
                        )
                        .map_err(io)?;
                    if matches!(op, StoreOp::Insert { .. }) {
                        inserted += n as u64;
                    }
                }
                StoreOp::Delete { key } if key.starts_with(CHAT_REPLACED) => {
                    let id =
                        key_name(key, CHAT_REPLACED).ok_or_else(|| refuse(format!("{key:?}")))?;
                    tx.execute("DELETE FROM replaced WHERE post_id = ?1", [&id])
                        .map_err(io)?;
                }
                // A post's id: the posts table's unique index on `post_id`
                // is the key. The post itself was put under its number
                // earlier in the batch; check that it holds this id.
                StoreOp::Insert { key, value } if key.starts_with(CHAT_POST_ID) => {
                    let (seq, post) =
                        post_id_to_store(key, value).map_err(|e| refuse(e.to_string()))?;
                    let held: Option<(String, i64)> = tx
                        .query_row(
                            "SELECT room, seq FROM posts WHERE post_id = ?1",
                            [&post.id],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()
                        .map_err(io)?;
                    post_id_holds(&post, seq, held).map_err(|e| refuse(e.to_string()))?;
                    inserted += 1;
                }
                StoreOp::Put { key, .. } if key.starts_with(CHAT_POST_ID) => {
                    return Err(refuse(format!("post ids are only inserted (key {key:?})")));
                }
                StoreOp::Put { key, value } if key.starts_with(CHAT_POST) => {
                    let (room, seq, post) = post_to_store(key, value).map_err(refuse)?;
                    let held: Option<String> = tx
                        .query_row(
                            "SELECT post_id FROM posts WHERE room = ?1 AND seq = ?2",
                            rusqlite::params![room, seq as i64],
                            |r| r.get(0),
                        )
                        .optional()
                        .map_err(io)?;
                    match held {
                        Some(id) if id == post.id => {} // a retried batch
                        Some(id) => {
                            return Err(refuse(format!("{room}#{seq} holds post {id} already")))
                        }
                        None => {
                            tx.execute(
                                "INSERT INTO posts (room, seq, post_id, author, text, at) \
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                rusqlite::params![
                                    room,
                                    seq as i64,
                                    post.id,
                                    post.author,
                                    post.text,
                                    post.at as i64
                                ],
                            )
                            .map_err(io)?;
                        }
                    }
                }
                StoreOp::Delete { key } if key.starts_with(CHAT_POST) => {
                    let (room, seq) = post_key_parts(key).map_err(refuse)?;
                    deleted += tx
                        .execute(
                            "DELETE FROM posts WHERE room = ?1 AND seq = ?2",
                            rusqlite::params![room, seq as i64],
                        )
                        .map_err(io)?;
                }
                StoreOp::Put { key, value } if key.starts_with(CHAT_ROOM) => {
                    let name =
                        key_name(key, CHAT_ROOM).ok_or_else(|| refuse(format!("{key:?}")))?;
                    let room: Room = keys::decode(value)
                        .map_err(|e| refuse(format!("undecodable room {name}: {e}")))?;
                    tx.execute(
                        "INSERT OR REPLACE INTO rooms (name, version, privacy, category, \
                         description, invite, auditorium, info) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        rusqlite::params![
                            name,
                            room.version as i64,
                            room.privacy.as_str(),
                            room.category,
                            room.description,
                            room.invite,
                            room.presenters.is_some(),
                            value
                        ],
                    )
                    .map_err(io)?;
                    tx.execute("DELETE FROM memberships WHERE room = ?1", [&name])
                        .map_err(io)?;
                    let mut add = tx
                        .prepare_cached(
                            "INSERT INTO memberships (room, user, role) VALUES (?1, ?2, ?3)",
                        )
                        .map_err(io)?;
                    let empty = BTreeSet::new();
                    for (role, users) in [
                        ("member", &room.members),
                        ("manager", &room.managers),
                        ("presenter", room.presenters.as_ref().unwrap_or(&empty)),
                        ("denied", &room.denied),
                    ] {
                        for user in users {
                            add.execute((&name, user, role)).map_err(io)?;
                        }
                    }
                }
                StoreOp::Delete { key } if key.starts_with(CHAT_ROOM) => {
                    let name =
                        key_name(key, CHAT_ROOM).ok_or_else(|| refuse(format!("{key:?}")))?;
                    tx.execute("DELETE FROM rooms WHERE name = ?1", [&name])
                        .and_then(|_| {
                            tx.execute("DELETE FROM memberships WHERE room = ?1", [&name])
                        })
                        .map_err(io)?;
                }
                StoreOp::Put { key, value } if key.starts_with(CHAT_FOLLOWS) => {
                    let user =
                        key_name(key, CHAT_FOLLOWS).ok_or_else(|| refuse(format!("{key:?}")))?;
                    let rooms: BTreeSet<RoomId> = keys::decode(value)
                        .map_err(|e| refuse(format!("undecodable follows of {user}: {e}")))?;
                    tx.execute("DELETE FROM follows WHERE user = ?1", [&user])
                        .map_err(io)?;
                    for room in rooms {
                        tx.execute(
                            "INSERT INTO follows (user, room) VALUES (?1, ?2)",
                            (&user, room),
                        )
                        .map_err(io)?;
                    }
                }
                StoreOp::Delete { key } if key.starts_with(CHAT_FOLLOWS) => {
                    let user =
                        key_name(key, CHAT_FOLLOWS).ok_or_else(|| refuse(format!("{key:?}")))?;
                    tx.execute("DELETE FROM follows WHERE user = ?1", [&user])
                        .map_err(io)?;
                }
                StoreOp::Put { key, value } => {
                    tx.execute(
                        "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)",
                        (key, value),
                    )
                    .map_err(io)?;
                }
                StoreOp::Insert { key, value } => {
                    inserted += tx
                        .execute(
                            "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                             ON CONFLICT (key) DO NOTHING",
                            (key, value),
                        )
                        .map_err(io)? as u64;
                }
                StoreOp::Delete { key } => {
                    tx.execute("DELETE FROM kv WHERE key = ?1", [key])
                        .map_err(io)?;
                }
            }
        }
        tx.commit().map_err(io)?;
        if deleted > 0 {
            // The log still holds the deleted rows' pages: copy it into
            // the database file and empty it. Committed already, so a
            // checkpoint that cannot finish now (a reader) is only late.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        Ok(Written { inserted })
    }

    /// Answers a core's query (see [`holdfast_actors::core::engine`]): a
    /// post by its id or number, a room's posts in order, the post count;
    /// other keys from `kv`.
    pub fn answer(&self, query: &Query) -> Result<Answer, StoreError> {
        let io =
            |e: rusqlite::Error| StoreError::Io(format!("chat store {}: {e}", self.path.display()));
        const POST: &str = "SELECT room, seq, post_id, author, text, at FROM posts";
        let read = |r: &rusqlite::Row| -> rusqlite::Result<(u64, Post)> {
            let seq: i64 = r.get(1)?;
            let at: i64 = r.get(5)?;
            Ok((
                seq as u64,
                Post {
                    room: r.get(0)?,
                    id: r.get(2)?,
                    author: r.get(3)?,
                    text: r.get(4)?,
                    at: at as u64,
                },
            ))
        };
        match query {
            Query::Get { keys: wanted } => {
                let mut values = Vec::with_capacity(wanted.len());
                for key in wanted {
                    let value = if let Some(id) = key.strip_prefix(CHAT_REPLACED) {
                        let id = String::from_utf8_lossy(id);
                        self.conn
                            .query_row(
                                "SELECT post_id, room, seq, author, text, at, replaced_by, \
                                 replaced_at FROM replaced WHERE post_id = ?1",
                                [&id],
                                |r| {
                                    Ok(Replaced {
                                        seq: r.get::<_, i64>(2)? as u64,
                                        original: Post {
                                            id: r.get(0)?,
                                            room: r.get(1)?,
                                            author: r.get(3)?,
                                            text: r.get(4)?,
                                            at: r.get::<_, i64>(5)? as u64,
                                        },
                                        by: r.get(6)?,
                                        at: r.get::<_, i64>(7)? as u64,
                                    })
                                },
                            )
                            .optional()
                            .map_err(io)?
                            .map(|r| keys::encode(&r))
                    } else if let Some(id) = key.strip_prefix(CHAT_POST_ID) {
                        let id = String::from_utf8_lossy(id);
                        self.conn
                            .query_row(&format!("{POST} WHERE post_id = ?1"), [&id], read)
                            .optional()
                            .map_err(io)?
                            .map(|found| keys::encode(&found))
                    } else if let Some((room, seq)) = parse_post_key(key) {
                        self.conn
                            .query_row(
                                &format!("{POST} WHERE room = ?1 AND seq = ?2"),
                                rusqlite::params![room, seq as i64],
                                read,
                            )
                            .optional()
                            .map_err(io)?
                            .map(|(_, post)| keys::encode(&post))
                    } else {
                        self.conn
                            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
                            .optional()
                            .map_err(io)?
                    };
                    values.push(value);
                }
                Ok(Answer::Values(values))
            }
            Query::Count { prefix } if prefix.as_slice() == CHAT_POST => {
                let n: i64 = self
                    .conn
                    .query_row("SELECT COUNT(*) FROM posts", [], |r| r.get(0))
                    .map_err(io)?;
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
                    format!("{POST} WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3")
                } else {
                    format!("{POST} WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
                };
                let mut stmt = self.conn.prepare_cached(&sql).map_err(io)?;
                let rows = stmt
                    .query_map(rusqlite::params![room, after, i64::from(*limit)], read)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(io)?;
                Ok(Answer::Rows(
                    rows.into_iter()
                        .map(|(seq, post)| (post_key(&post.room, seq), keys::encode(&post)))
                        .collect(),
                ))
            }
            // The store reads its directory and follows at start and scans
            // nothing else: say so rather than answer wrongly.
            other => Err(StoreError::Io(format!(
                "chat store {}: query not supported: {other:?}",
                self.path.display()
            ))),
        }
    }

    /// The core's state at start, as the keys it wrote: the rooms, the
    /// follows and `kv`. The posts stay here; the core reads them on
    /// demand ([`ChatDb::answer`]).
    pub fn recovered(&self) -> Result<Recovered, PathError> {
        let fail = |e: rusqlite::Error| PathError::new(&self.path, e);
        let mut out = Recovered::new();
        let mut stmt = self
            .conn
            .prepare("SELECT name, info FROM rooms")
            .map_err(fail)?;
        let rooms = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(fail)?;
        for r in rooms {
            let (name, info) = r.map_err(fail)?;
            out.insert(prefixed(CHAT_ROOM, &name), info);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT user, room FROM follows ORDER BY user")
            .map_err(fail)?;
        let follows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(fail)?;
        let mut by_user: std::collections::BTreeMap<String, BTreeSet<RoomId>> = Default::default();
        for f in follows {
            let (user, room) = f.map_err(fail)?;
            by_user.entry(user).or_default().insert(room.into());
        }
        for (user, rooms) in by_user {
            out.insert(prefixed(CHAT_FOLLOWS, &user), keys::encode(&rooms));
        }
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM kv")
            .map_err(fail)?;
        let kv = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(fail)?;
        for e in kv {
            let (k, v) = e.map_err(fail)?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::chat::chat_store::ChatStore;
    use holdfast_actors::core::actor::{Actor, Ctx, Effect};
    use holdfast_actors::core::ids::{ActorKind, Addr, Token};
    use holdfast_actors::core::protocol::chat::ChatMsg;
    use holdfast_actors::core::protocol::chat::Privacy;
    use holdfast_actors::core::protocol::Msg;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    /// Runs the chat store core on the database: each message's persists
    /// go to SQLite; returns what the core sent.
    fn react(db: &mut ChatDb, core: &mut ChatStore, msg: Msg) -> Vec<Msg> {
        let me = Addr::new("chatdb", ActorKind::ChatStore);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let mut ctx = Ctx::new(1, &me, &mut rng);
        core.on_msg(Addr::new("ch1", ActorKind::Channel), msg, &mut ctx);
        let mut sent = Vec::new();
        let mut effects = ctx.into_effects();
        while !effects.is_empty() {
            let mut next = Vec::new();
            for e in effects {
                match e {
                    Effect::Send { msg, .. } => sent.push(msg),
                    Effect::Persist { token, ops } => {
                        let result = db.apply(&ops);
                        let mut ctx = Ctx::new(1, &me, &mut rng);
                        core.on_persisted(token, result, &mut ctx);
                        next.extend(ctx.into_effects());
                    }
                    Effect::Query { token, query } => {
                        let result = db.answer(&query);
                        let mut ctx = Ctx::new(1, &me, &mut rng);
                        core.on_queried(token, result, &mut ctx);
                        next.extend(ctx.into_effects());
                    }
                    _ => {}
                }
            }
            effects = next;
        }
        sent
    }

    fn post(id: &str, room: &str) -> Post {
        Post {
            id: id.into(),
            room: room.into(),
            author: "ann@corp.example".into(),
            text: format!("text of {id}"),
            at: 5,
        }
    }

    #[test]
    fn posts_rooms_and_follows_land_in_tables_and_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.sqlite");
        let mut db = ChatDb::open(&path).unwrap();
        let mut core = ChatStore::new("chatdb", BTreeMap::new());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let me = Addr::new("chatdb", ActorKind::ChatStore);
        core.on_start(db.recovered().unwrap(), &mut Ctx::new(0, &me, &mut rng));
        for (t, id) in ["p1", "p2"].iter().enumerate() {
            let sent = react(
                &mut db,
                &mut core,
                Msg::Chat(ChatMsg::StoreAppend {
                    token: Token(t as u64),
                    post: post(id, "deals"),
                }),
            );
            assert!(
                matches!(sent[..], [Msg::Chat(ChatMsg::StoreAppended { .. })]),
                "{sent:?}"
            );
        }
        let room = Room {
            members: ["bob@corp.example".into()].into(),
            managers: ["ann@corp.example".into()].into(),
            privacy: Privacy::Secret,
            category: "corp".into(),
            ..Default::default()
        };
        let sent = react(
            &mut db,
            &mut core,
            Msg::Chat(ChatMsg::StoreRoomSave {
                token: Token(7),
                room: "deals".into(),
                info: Box::new(room),
                create: true,
                by: "ann@corp.example".into(),
            }),
        );
        assert!(
            matches!(sent[..], [Msg::Chat(ChatMsg::StoreRoomSaved { .. })]),
            "{sent:?}"
        );
        react(
            &mut db,
            &mut core,
            Msg::Chat(ChatMsg::StoreFollow {
                token: Token(8),
                user: "bob@corp.example".into(),
                room: "deals".into(),
                follow: true,
            }),
        );
        // Plain SQL sees the chat as tables.
        let roles: Vec<(String, String)> = db
            .conn
            .prepare("SELECT user, role FROM memberships WHERE room = 'deals' ORDER BY user")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            roles,
            vec![
                ("ann@corp.example".into(), "manager".into()),
                ("bob@corp.example".into(), "member".into())
            ]
        );
        let texts: Vec<String> = db
            .conn
            .prepare("SELECT text FROM posts WHERE room = 'deals' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts, vec!["text of p1", "text of p2"]);
        drop(db);
        // Reopened: the core gets back what it wrote, key for key.
        let mut db = ChatDb::open(&path).unwrap();
        let mut again = ChatStore::new("chatdb", BTreeMap::new());
        again.on_start(db.recovered().unwrap(), &mut Ctx::new(0, &me, &mut rng));
        let sent = react(
            &mut db,
            &mut again,
            Msg::Chat(ChatMsg::StoreAppend {
                token: Token(9),
                post: post("p3", "deals"),
            }),
        );
        assert!(
            matches!(sent[..], [Msg::Chat(ChatMsg::StoreAppended { seq: 3, .. })]),
            "{sent:?}"
        );
        let sent = react(
            &mut db,
            &mut again,
            Msg::Chat(ChatMsg::StoreUser {
                token: Token(10),
                user: "bob@corp.example".into(),
            }),
        );
        assert_eq!(
            sent,
            vec![Msg::Chat(ChatMsg::StoreUserInfo {
                token: Token(10),
                user: "bob@corp.example".into(),
                follows: vec![("deals".into(), 3)]
            })]
        );
        let sent = react(
            &mut db,
            &mut again,
            Msg::Chat(ChatMsg::StoreRooms {
                token: Token(11),
                since: 0,
            }),
        );
        assert!(
            matches!(&sent[..], [Msg::Chat(ChatMsg::StoreRoomList { rooms, version: 1, .. })] if rooms[0].1.privacy == Privacy::Secret),
            "{sent:?}"
        );
    }

    #[test]
    fn a_post_under_a_taken_number_refuses_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ChatDb::open(&dir.path().join("chat.sqlite")).unwrap();
        let put = |p: &Post, seq| StoreOp::Put {
            key: post_key(&p.room, seq),
            value: keys::encode(p),
        };
        db.apply(&[put(&post("p1", "r"), 1)]).unwrap();
        // The same again (a retried batch) is fine.
        db.apply(&[put(&post("p1", "r"), 1)]).unwrap();
        let e = db
            .apply(&[put(&post("p9", "r"), 2), put(&post("p2", "r"), 1)])
            .unwrap_err();
        assert!(e.to_string().contains("holds post p1"), "{e}");
        // Nothing of the refused batch was committed.
        let count = Query::Count {
            prefix: CHAT_POST.to_vec(),
        };
        assert_eq!(db.answer(&count).unwrap().count(), 1);
    }

    /// A clear's deletion removes the row and its text from the file; a
    /// replace keeps the original in `replaced`.
    #[test]
    fn deleted_posts_leave_no_text_in_the_file_and_originals_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.sqlite");
        let mut db = ChatDb::open(&path).unwrap();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let me = Addr::new("chatdb", ActorKind::ChatStore);
        let mut rooms = BTreeMap::new();
        rooms.insert("r".into(), Room::default());
        let mut core = ChatStore::new("chatdb", rooms);
        core.on_start(db.recovered().unwrap(), &mut Ctx::new(0, &me, &mut rng));
        for (t, id) in ["p1", "p2", "p3"].iter().enumerate() {
            let mut p = post(id, "r");
            p.text = format!("needle-{id}-needle");
            p.at = t as u64;
            react(
                &mut db,
                &mut core,
                Msg::Chat(ChatMsg::StoreAppend {
                    token: Token(t as u64),
                    post: p,
                }),
            );
        }
        let sent = react(
            &mut db,
            &mut core,
            Msg::Chat(ChatMsg::StoreReplace {
                token: Token(5),
                post: "p3".into(),
                text: "replacement".into(),
                by: "ops".into(),
            }),
        );
        assert!(
            matches!(sent[..], [Msg::Chat(ChatMsg::StoreReplaced { seq: 3, .. })]),
            "{sent:?}"
        );
        let sent = react(
            &mut db,
            &mut core,
            Msg::Chat(ChatMsg::StoreClear {
                token: Token(6),
                room: "r".into(),
                before: Some(2),
                by: "ops".into(),
            }),
        );
        assert!(
            matches!(
                sent[..],
                [Msg::Chat(ChatMsg::StoreCleared { through: 3, .. })]
            ),
            "{sent:?}"
        );
        let texts: Vec<(i64, String)> = db
            .conn
            .prepare("SELECT seq, text FROM posts ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(texts, vec![(3, "replacement".to_string())]);
        let original: String = db
            .conn
            .query_row("SELECT text FROM replaced WHERE post_id = 'p3'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(original, "needle-p3-needle");
        drop(db);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend(std::fs::read(dir.path().join("chat.sqlite-wal")).unwrap_or_default());
        for gone in ["needle-p1-needle", "needle-p2-needle"] {
            assert!(
                !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
                "{gone} still in the file"
            );
        }
    }
}

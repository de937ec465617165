//! The SQLite archive of a database node: the durable store of the
//! [`Database`](holdfast_actors::archiving::database::Database) core, laid out like the
//! Lync LcsLog `Messages` table so operators and compliance officers can
//! query it with ordinary SQL tools.
//!
//! The core speaks in key-value [`StoreOp`]s. Every `Put` under
//! [`DB_ROW`] becomes one row of `messages` (its row id is the core's row
//! id, its message id is unique); any other key lands in a small `kv`
//! table, so no op is ever dropped. A `Persist` batch is one SQLite
//! transaction: WAL journal, `synchronous = FULL`, so a batch is on disk
//! before [`ArchiveDb::apply`] returns and the core may acknowledge it.
//!
//! Every client read of the archive is recorded in the `reads` table
//! (the read trail: who, what, when, how many rows), inserted under
//! [`DB_READ`] before the answer leaves the node; auditors list it with
//! `holdfast archive audit`, and SQL tools see it plainly.
//!
//! Clients read the archive over the network, through the database core
//! ([`ArchiveDb::answer`] of [`EngineQuery::Search`]); `holdfast archive
//! query --file` opens a copy read-only, and WAL lets such readers and the
//! writer proceed side by side.

use holdfast_actors::archiving::retention::{parse_time_key, time_key};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{prefix_end, Answer, Query as EngineQuery};
use holdfast_actors::core::protocol::{ArchiveRead, ArchiveRecord, ReadWhat, RecordKind, Search};
use holdfast_actors::core::store_keys::{self as keys, Row, DB_READ, DB_ROW, DB_TIME};
use rusqlite::types::Value;
use rusqlite::{ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema version this build writes and understands, kept in
/// `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 4;

/// Version 2 adds `client_id`: the id the client gave its request, beside
/// the cluster-wide `message_id` its front end assigned.
const MIGRATE_1_TO_2: &str = "ALTER TABLE messages ADD COLUMN client_id TEXT NOT NULL DEFAULT ''";

/// Version 3 counts the rows in `counts`, kept by every transaction that
/// inserts or deletes, so that the count a node reports at start costs
/// nothing however large the archive (the one `COUNT(*)` runs here, once).
const MIGRATE_2_TO_3: &str =
    "INSERT OR REPLACE INTO counts (name, n) SELECT 'messages', COUNT(*) FROM messages";

/// Version 4 adds the read trail, `reads` (created with the schema: an
/// archive of version 3 gets it empty), and indexes `(time, message_id)`,
/// the order searches page in, instead of `(time)` alone (which it
/// covers: one index to keep up on insert, as before).
const MIGRATE_3_TO_4: &str = "DROP INDEX IF EXISTS messages_time";

/// How long a connection waits for another one's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writing connection, in KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages between automatic checkpoints.
const CHECKPOINT_PAGES: i64 = 16 * 1024;
/// Size the WAL file is truncated back to after a checkpoint, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    rowid       INTEGER PRIMARY KEY,
    message_id  TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    from_user   TEXT    NOT NULL,
    to_user     TEXT    NOT NULL,
    time        INTEGER NOT NULL,
    body        TEXT    NOT NULL,
    external    INTEGER NOT NULL,
    front_end   TEXT    NOT NULL,
    archived_at INTEGER NOT NULL,
    client_id   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_from_time ON messages (from_user, time);
CREATE INDEX IF NOT EXISTS messages_to_time ON messages (to_user, time);
CREATE INDEX IF NOT EXISTS messages_time_id ON messages (time, message_id);
CREATE TABLE IF NOT EXISTS kv (
    key   BLOB PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reads (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    principal TEXT    NOT NULL,
    what      TEXT    NOT NULL,
    row_count INTEGER NOT NULL,
    refused   TEXT
);
CREATE TABLE IF NOT EXISTS counts (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
) WITHOUT ROWID;
";

const COLUMNS: &str = "rowid, message_id, kind, from_user, to_user, time, body, external, \
                       front_end, archived_at, client_id";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveDbError {
    #[error("archive {}: cannot create its directory: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("archive {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("archive {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{} is not a holdfast archive (no schema)", path.display())]
    NotAnArchive { path: PathBuf },
    #[error(
        "archive {} has schema version {found}, newer than version {supported} \
         this build understands; use a newer holdfast",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "archive {}: cannot use the WAL journal (journal mode stays {mode}); \
         is it on a network file system?",
        path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error("archive {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("archive {}: corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

/// One archived row as queries return it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ArchivedMessage {
    pub rowid: u64,
    pub id: String,
    /// `"im"`, `"cdr"` or `"qoe"`.
    pub kind: String,
    pub from: String,
    pub to: String,
    /// When the front end accepted it, ms since the UNIX epoch.
    pub time: u64,
    pub body: String,
    pub external: bool,
    pub front_end: String,
    /// When the database core archived it, ms since the UNIX epoch.
    pub archived_at: u64,
    /// The id the client gave its request (empty for rows archived before
    /// schema version 2).
    pub client_id: String,
}

/// A row whose kind no record has.
#[derive(Debug, thiserror::Error)]
#[error("row {rowid}: unknown kind {kind:?}")]
pub struct UnknownKind {
    pub rowid: u64,
    pub kind: String,
}

impl ArchivedMessage {
    /// The core's row of this message, as either archive engine reads it
    /// back; `Err` says which row has a kind no record has.
    pub(crate) fn into_row(self) -> Result<Row, UnknownKind> {
        let kind = match self.kind.as_str() {
            "im" => RecordKind::Im,
            "cdr" => RecordKind::Cdr,
            "qoe" => RecordKind::Qoe,
            _ => {
                return Err(UnknownKind {
                    rowid: self.rowid,
                    kind: self.kind,
                })
            }
        };
        Ok(Row {
            rowid: self.rowid,
            record: ArchiveRecord {
                kind,
                id: self.id.into(),
                client_id: self.client_id.into(),
                from: self.from.into(),
                to: self.to.into(),
                time: self.time,
                body: self.body,
                external: self.external,
                front_end: self.front_end,
            },
            archived_at: self.archived_at,
        })
    }
}

/// A message row under its key, as the engines answer a core's read of
/// the messages.
pub(crate) fn keyed_row(row: &Row) -> (Vec<u8>, Vec<u8>) {
    (keys::key_str(DB_ROW, &row.record.id), keys::encode(row))
}

/// A search of the archive. Every criterion given must hold.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Sender or recipient is one of these (exact match); empty: anyone.
    pub users: Vec<String>,
    /// The message id, or the id its client gave the request.
    pub id: Option<String>,
    /// `time >= since` (ms since the UNIX epoch).
    pub since: Option<u64>,
    /// `time < until` (ms since the UNIX epoch).
    pub until: Option<u64>,
    /// Substring of the body, case-insensitive (Unicode lower case);
    /// wildcard characters are literal.
    pub text: Option<String>,
    /// At most this many rows (the earliest ones).
    pub limit: Option<usize>,
    /// Only rows after this `(time, message id)`: the page key.
    pub after: Option<(u64, String)>,
}

impl Query {
    /// The archive query of a client's search.
    pub fn of_search(s: &Search) -> Query {
        Query {
            users: s.users.iter().map(|u| u.to_string()).collect(),
            id: s.id.as_ref().map(|id| id.to_string()),
            since: s.since,
            until: s.until,
            text: s.text.clone(),
            limit: Some(s.limit as usize),
            after: s.after.as_ref().map(|a| (a.time, a.id.to_string())),
        }
    }
}

/// A trail entry's `what` as the `reads` table holds it (JSON). Entries
/// written when a search named one optional user carry `"user": U` (or
/// null): they read as `"users": [U]` (or `[]`), so that a trail written
/// before an upgrade is still answered after it.
fn read_what(text: &str) -> Result<ReadWhat, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_str(text)?;
    if let Some(s) = v.get_mut("Messages").and_then(|m| m.as_object_mut()) {
        if let Some(user) = s.remove("user") {
            let users = match user {
                serde_json::Value::Null => Vec::new(),
                u => vec![u],
            };
            s.insert("users".into(), serde_json::Value::Array(users));
        }
    }
    serde_json::from_value(v)
}

/// One entry of the read trail, as `reads` holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReadEntry {
    pub seq: u64,
    pub at: u64,
    pub principal: String,
    /// The request, as JSON.
    pub what: String,
    pub rows: u64,
    pub refused: Option<String>,
}

/// An open archive: read-write for the database node, read-only for queries.
pub struct ArchiveDb {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ArchiveDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ArchiveDb {
    /// Opens or creates the archive (parent directories created): WAL
    /// journal, `synchronous = FULL`, a busy timeout, schema and indexes
    /// created idempotently. Refuses an archive written by a newer schema.
    pub fn open(path: &Path) -> Result<ArchiveDb, ArchiveDbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ArchiveDbError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|source| {
            ArchiveDbError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let mut db = ArchiveDb {
            conn,
            path: path.to_path_buf(),
        };
        db.conn.busy_timeout(BUSY_TIMEOUT).map_err(db.sqlite())?;
        let version = db.check_version()?;
        let mode: String = db
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db.sqlite())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(ArchiveDbError::NoWal {
                path: db.path.clone(),
                mode,
            });
        }
        db.conn
            .pragma_update(None, "synchronous", "FULL")
            .and_then(|()| db.conn.pragma_update(None, "secure_delete", "ON"))
            .map_err(db.sqlite())?;
        // The per-user indexes take inserts all over their B-trees: a
        // larger page cache and less frequent checkpoints keep a batch
        // from rewriting the same hot pages again and again.
        db.conn
            .pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .and_then(|()| {
                db.conn
                    .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)
            })
            .map_err(db.sqlite())?;
        let _limit: i64 = db
            .conn
            .pragma_update_and_check(None, "journal_size_limit", WAL_SIZE_LIMIT, |r| r.get(0))
            .map_err(db.sqlite())?;
        let tx = db
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| ArchiveDbError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        tx.execute_batch(SCHEMA)
            .and_then(|()| {
                if version == 1 {
                    tx.execute_batch(MIGRATE_1_TO_2)?;
                }
                if version < 3 {
                    tx.execute_batch(MIGRATE_2_TO_3)?;
                }
                if version < 4 {
                    tx.execute_batch(MIGRATE_3_TO_4)?;
                }
                if version < SCHEMA_VERSION {
                    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
                }
                tx.commit()
            })
            .map_err(|source| ArchiveDbError::Sqlite {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(db)
    }

    /// Read-only access for queries while a node writes. The archive must
    /// exist and carry a schema this build understands.
    pub fn open_read_only(path: &Path) -> Result<ArchiveDb, ArchiveDbError> {
        if !path.is_file() {
            return Err(ArchiveDbError::NotFound {
                path: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|source| {
            ArchiveDbError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let db = ArchiveDb {
            conn,
            path: path.to_path_buf(),
        };
        db.conn.busy_timeout(BUSY_TIMEOUT).map_err(db.sqlite())?;
        if db.check_version()? == 0 {
            return Err(ArchiveDbError::NotAnArchive {
                path: db.path.clone(),
            });
        }
        Ok(db)
    }

    /// The archive's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies one `Persist` batch of the database core in one transaction.
    /// An [`StoreOp::Insert`] under [`DB_ROW`] (`m/<message id>`) inserts
    /// its row into `messages` unless the message id is archived already
    /// (idempotent: `ON CONFLICT DO NOTHING`); any other key goes to `kv`.
    /// A malformed row, a row put or deleted under `m/`, or a row the
    /// engine skips without storing refuses the whole batch: nothing is
    /// committed.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<Written, StoreError> {
        let path = self.path.clone();
        let io = |e: rusqlite::Error| store_error(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(io)?;
        let (mut inserted, mut rows, mut deleted) = (0u64, 0u64, 0u64);
        {
            let prepare = |sql: &str| tx.prepare_cached(sql).map_err(io);
            let mut insert = prepare(
                "INSERT INTO messages (message_id, kind, from_user, \
                     to_user, time, body, external, front_end, archived_at, client_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (message_id) DO NOTHING",
            )?;
            let mut archived = prepare("SELECT 1 FROM messages WHERE message_id = ?1")?;
            let mut kv_put = prepare("INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)")?;
            let mut kv_insert = prepare(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )?;
            let mut kv_delete = prepare("DELETE FROM kv WHERE key = ?1")?;
            let mut read_insert = prepare(
                "INSERT INTO reads (seq, at, principal, what, row_count, refused) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (seq) DO NOTHING",
            )?;
            let refuse = |detail: String| {
                StoreError::Io(format!(
                    "archive {}: batch refused: {detail}",
                    path.display()
                ))
            };
            // The message id of the row the op before inserted: the time
            // index entry written with it names it (the core writes the
            // two together), and needs no lookup.
            let mut just_inserted: Option<&[u8]> = None;
            for op in ops {
                let inserted_before = just_inserted.take();
                match op {
                    StoreOp::Insert { key, value } if key.starts_with(DB_ROW) => {
                        let row: Row = keys::decode(value)
                            .map_err(|e| refuse(format!("undecodable row {key:?}: {e}")))?;
                        let r = &row.record;
                        if key[DB_ROW.len()..] != *r.id.as_bytes() {
                            return Err(refuse(format!(
                                "row key {key:?} holds message {:?}",
                                r.id
                            )));
                        }
                        // A constraint, a trigger or a limit of the engine
                        // that refuses this row will refuse it on every
                        // retry: say which row, so that it is parked.
                        let refused = |e: rusqlite::Error| match refused_for_good(&e) {
                            true => StoreError::Refused {
                                key: key.clone(),
                                reason: format!("message {}: {e}", r.id),
                            },
                            false => io(e),
                        };
                        let n = insert
                            .execute(rusqlite::params![
                                r.id,
                                r.kind.as_str(),
                                r.from,
                                r.to,
                                r.time,
                                r.body,
                                r.external,
                                r.front_end,
                                row.archived_at,
                                r.client_id,
                            ])
                            .map_err(refused)?;
                        if n == 0 {
                            // Not inserted: the message is archived already
                            // (a retried batch: fine) — unless a trigger
                            // skipped it quietly: what is acknowledged must
                            // be archived.
                            let found = archived
                                .query_row([&r.id], |_| Ok(()))
                                .optional()
                                .map_err(io)?;
                            if found.is_none() {
                                return Err(StoreError::Refused {
                                    key: key.clone(),
                                    reason: format!(
                                        "message {}: the archive skipped its row (a trigger)",
                                        r.id
                                    ),
                                });
                            }
                        }
                        if n == 1 {
                            just_inserted = Some(&key[DB_ROW.len()..]);
                        }
                        inserted += n as u64;
                        rows += n as u64;
                    }
                    StoreOp::Insert { key, value } if key.starts_with(DB_READ) => {
                        let seq = keys::parse_u64(DB_READ, key)
                            .filter(|&n| n <= i64::MAX as u64)
                            .ok_or_else(|| refuse(format!("malformed trail key {key:?}")))?;
                        let read: ArchiveRead = keys::decode(value)
                            .map_err(|e| refuse(format!("undecodable trail entry {key:?}: {e}")))?;
                        let what = serde_json::to_string(&read.what)
                            .map_err(|e| refuse(format!("trail entry {seq}: {e}")))?;
                        inserted += read_insert
                            .execute(rusqlite::params![
                                seq as i64,
                                clamp_i64(read.at),
                                read.who,
                                what,
                                clamp_i64(read.rows),
                                read.refused,
                            ])
                            .map_err(io)? as u64;
                    }
                    StoreOp::Put { key, .. } | StoreOp::Delete { key }
                        if key.starts_with(DB_READ) =>
                    {
                        return Err(refuse(format!(
                            "the read trail is only inserted into (key {key:?})"
                        )));
                    }
                    // The retention purge: the row goes, content and all
                    // (`secure_delete` overwrites it in the file).
                    StoreOp::Delete { key } if key.starts_with(DB_ROW) => {
                        let id = std::str::from_utf8(&key[DB_ROW.len()..])
                            .map_err(|_| refuse(format!("malformed row key {key:?}")))?;
                        let n = tx
                            .prepare_cached("DELETE FROM messages WHERE message_id = ?1")
                            .and_then(|mut d| d.execute([id]))
                            .map_err(io)?;
                        deleted += n as u64;
                    }
                    StoreOp::Put { key, .. } if key.starts_with(DB_ROW) => {
                        return Err(refuse(format!(
                            "archived rows are inserted, never overwritten (key {key:?})"
                        )));
                    }
                    // The time index is the `messages_time` index: an
                    // entry must name a row of this time, and goes with it.
                    StoreOp::Put { key, .. } if key.starts_with(DB_TIME) => {
                        let (time, id) = parse_time_key(key)
                            .ok_or_else(|| refuse(format!("malformed time key {key:?}")))?;
                        if inserted_before == Some(id.as_bytes()) {
                            continue;
                        }
                        let found: Option<i64> = tx
                            .prepare_cached("SELECT time FROM messages WHERE message_id = ?1")
                            .and_then(|mut q| q.query_row([&id], |r| r.get(0)).optional())
                            .map_err(io)?;
                        // The row keeps the time it was first archived
                        // with (a copy sent again under another time adds
                        // nothing); an entry must name a row, though.
                        if found.is_none() {
                            return Err(refuse(format!(
                                "time index entry {time}/{id} names no row"
                            )));
                        }
                    }
                    StoreOp::Delete { key } if key.starts_with(DB_TIME) => {}
                    StoreOp::Insert { key, .. } if key.starts_with(DB_TIME) => {
                        return Err(refuse(format!(
                            "the time index is put, not inserted ({key:?})"
                        )));
                    }
                    StoreOp::Put { key, value } => {
                        kv_put.execute((key, value)).map_err(io)?;
                    }
                    StoreOp::Insert { key, value } => {
                        inserted += kv_insert.execute((key, value)).map_err(io)? as u64;
                    }
                    StoreOp::Delete { key } => {
                        kv_delete.execute([key]).map_err(io)?;
                    }
                }
            }
        }
        // `counts` counts the messages: not the inserts into `kv`.
        if rows > 0 || deleted > 0 {
            tx.execute(
                "UPDATE counts SET n = n + ?1 - ?2 WHERE name = 'messages'",
                [clamp_i64(rows), clamp_i64(deleted)],
            )
            .map_err(io)?;
        }
        tx.commit().map_err(io)?;
        Ok(Written { inserted })
    }

    /// The core's durable state at start: the `kv` entries. The rows stay
    /// here; the core reads them on demand ([`ArchiveDb::answer`]).
    pub fn recovered(&self) -> Result<Recovered, ArchiveDbError> {
        let mut out = Recovered::new();
        let mut stmt = self
            .conn
            .prepare("SELECT key, value FROM kv ORDER BY key")
            .map_err(self.sqlite())?;
        let entries = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(self.sqlite())?;
        for entry in entries {
            let (k, v) = entry.map_err(self.sqlite())?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// Answers a core's query (see [`holdfast_actors::core::engine`]):
    /// keys under [`DB_ROW`] from `messages` by message id, any other key
    /// from `kv`.
    pub fn answer(&self, query: &EngineQuery) -> Result<Answer, StoreError> {
        let io = |e: ArchiveDbError| StoreError::Io(e.to_string());
        match query {
            EngineQuery::Get { keys: wanted } => {
                let mut values = Vec::with_capacity(wanted.len());
                for key in wanted {
                    let value = match key.strip_prefix(DB_ROW) {
                        Some(id) => match std::str::from_utf8(id) {
                            Ok(id) => self.row_by_id(id).map_err(io)?.map(|r| keys::encode(&r)),
                            Err(_) => None,
                        },
                        None if key.starts_with(DB_READ) => match keys::parse_u64(DB_READ, key) {
                            Some(seq) => self
                                .trail(Some(seq.saturating_sub(1)), false, 1)
                                .map_err(io)?
                                .into_iter()
                                .find(|(n, _)| *n == seq)
                                .map(|(_, r)| keys::encode(&r)),
                            None => None,
                        },
                        None => self
                            .conn
                            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
                            .optional()
                            .map_err(|e| store_error(&self.path, e))?,
                    };
                    values.push(value);
                }
                Ok(Answer::Values(values))
            }
            EngineQuery::Count { prefix } if prefix.as_slice() == DB_ROW => {
                let n: Option<i64> = self
                    .conn
                    .query_row("SELECT n FROM counts WHERE name = 'messages'", [], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(|e| store_error(&self.path, e))?;
                Ok(Answer::Count(n.unwrap_or(0).max(0) as u64))
            }
            EngineQuery::Count { prefix } if prefix.as_slice() == DB_READ => {
                let n: i64 = self
                    .conn
                    .query_row("SELECT COUNT(*) FROM reads", [], |r| r.get(0))
                    .map_err(|e| store_error(&self.path, e))?;
                Ok(Answer::Count(n.max(0) as u64))
            }
            EngineQuery::Count { prefix } => {
                let (sql, args) = self.range_sql("COUNT(*)", prefix, None, false)?;
                let n: i64 = self
                    .conn
                    .query_row(&sql, rusqlite::params_from_iter(args), |r| r.get(0))
                    .map_err(|e| store_error(&self.path, e))?;
                Ok(Answer::Count(n.max(0) as u64))
            }
            EngineQuery::Scan {
                prefix,
                from,
                reverse: false,
                limit,
            } if prefix.as_slice() == DB_TIME => self.time_scan(from.as_deref(), *limit),
            EngineQuery::Scan { prefix, .. } if prefix.starts_with(DB_TIME) => Err(StoreError::Io(
                "the time index is read oldest first from its start".into(),
            )),
            EngineQuery::Scan {
                prefix,
                from,
                reverse,
                limit,
            } if prefix.as_slice() == DB_READ => {
                let after = match from {
                    None => None,
                    Some(f) => Some(keys::parse_u64(b"", f).ok_or_else(|| {
                        StoreError::Io(format!("a trail key that is no number: {f:?}"))
                    })?),
                };
                let rows = self
                    .trail(after, *reverse, *limit)
                    .map_err(io)?
                    .into_iter()
                    .map(|(seq, r)| (keys::key_u64(DB_READ, seq), keys::encode(&r)))
                    .collect();
                Ok(Answer::Rows(rows))
            }
            EngineQuery::Search { prefix, search } => {
                if prefix.as_slice() != DB_ROW {
                    return Err(StoreError::Io(format!(
                        "archive {}: searches are of the messages ({DB_ROW:?}), not {prefix:?}",
                        self.path.display()
                    )));
                }
                self.rows_answer(self.query(&Query::of_search(search)).map_err(io)?)
            }
            EngineQuery::Scan {
                prefix,
                from,
                reverse,
                limit,
            } => {
                if prefix.starts_with(DB_ROW) {
                    let (mut sql, mut args) =
                        self.range_sql(COLUMNS, prefix, from.as_deref(), *reverse)?;
                    args.push(Value::Integer(i64::from(*limit)));
                    sql.push_str(&format!(" LIMIT ?{}", args.len()));
                    self.rows_answer(self.select(&sql, args, None, usize::MAX).map_err(io)?)
                } else {
                    let (mut sql, mut args) =
                        self.range_sql("key, value", prefix, from.as_deref(), *reverse)?;
                    args.push(Value::Integer(i64::from(*limit)));
                    sql.push_str(&format!(" LIMIT ?{}", args.len()));
                    let mut stmt = self
                        .conn
                        .prepare(&sql)
                        .map_err(|e| store_error(&self.path, e))?;
                    let rows = stmt
                        .query_map(rusqlite::params_from_iter(args), |r| {
                            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| store_error(&self.path, e))?;
                    Ok(Answer::Rows(rows))
                }
            }
        }
    }

    /// The time index from its start or after `from` (`<time><id>`): the
    /// `messages_time` index's order (time, then message id).
    fn time_scan(&self, from: Option<&[u8]>, limit: u32) -> Result<Answer, StoreError> {
        let fail = |e: rusqlite::Error| store_error(&self.path, e);
        let (time, id) = match from {
            None => (-1, String::new()),
            Some(f) => {
                let (t, id) = parse_time_key(&[DB_TIME, f].concat())
                    .ok_or_else(|| StoreError::Io(format!("malformed time index key {f:?}")))?;
                (clamp_i64(t), id)
            }
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT time, message_id FROM messages \
                 WHERE time > ?1 OR (time = ?1 AND message_id > ?2) \
                 ORDER BY time, message_id LIMIT ?3",
            )
            .map_err(fail)?;
        let rows = stmt
            .query_map(rusqlite::params![time, id, i64::from(limit)], |r| {
                let time: i64 = r.get(0)?;
                let id: String = r.get(1)?;
                Ok((time_key(time.max(0) as u64, &id), Vec::new()))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(fail)?;
        Ok(Answer::Rows(rows))
    }

    /// `SELECT {what}` over the rows under `prefix` (after `from`, ordered
    /// by key, reversed if asked): the messages by id, or `kv` by key.
    /// Text compares as bytes in SQLite (binary collation), like keys.
    fn range_sql(
        &self,
        what: &str,
        prefix: &[u8],
        from: Option<&[u8]>,
        reverse: bool,
    ) -> Result<(String, Vec<Value>), StoreError> {
        let (table, column, value): (&str, &str, BindKey) = match prefix.strip_prefix(DB_ROW) {
            Some(_) => ("messages", "message_id", |b| {
                String::from_utf8(b)
                    .map(Value::Text)
                    .map_err(|_| StoreError::Io("a message id key that is not UTF-8".into()))
            }),
            None => ("kv", "key", |b| Ok(Value::Blob(b))),
        };
        let strip = |k: &[u8]| -> Vec<u8> {
            if table == "messages" {
                k[DB_ROW.len()..].to_vec()
            } else {
                k.to_vec()
            }
        };
        let mut conds = Vec::new();
        let mut args = Vec::new();
        args.push(value(strip(prefix))?);
        conds.push(format!("{column} >= ?{}", args.len()));
        if let Some(end) = prefix_end(&strip(prefix)) {
            args.push(value(end)?);
            conds.push(format!("{column} < ?{}", args.len()));
        }
        if let Some(from) = from {
            args.push(value(strip(&[prefix, from].concat()))?);
            let op = if reverse { "<" } else { ">" };
            conds.push(format!("{column} {op} ?{}", args.len()));
        }
        let order = if reverse { "DESC" } else { "ASC" };
        Ok((
            format!(
                "SELECT {what} FROM {table} WHERE {} ORDER BY {column} {order}",
                conds.join(" AND ")
            ),
            args,
        ))
    }

    /// The row archived under message id `id`, if any.
    fn row_by_id(&self, id: &str) -> Result<Option<Row>, ArchiveDbError> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE message_id = ?1");
        match self
            .select(&sql, vec![Value::Text(id.into())], None, 1)?
            .pop()
        {
            Some(m) => Ok(Some(self.to_row(m)?)),
            None => Ok(None),
        }
    }

    /// Messages matching every criterion of `q`, ordered by time, then
    /// message id (the order pages follow: many rows share a time).
    pub fn query(&self, q: &Query) -> Result<Vec<ArchivedMessage>, ArchiveDbError> {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if !q.users.is_empty() {
            let mut any = Vec::with_capacity(q.users.len());
            for user in &q.users {
                params.push(Value::Text(user.clone()));
                let n = params.len();
                any.push(format!("from_user = ?{n} OR to_user = ?{n}"));
            }
            conds.push(format!("({})", any.join(" OR ")));
        }
        if let Some(id) = &q.id {
            params.push(Value::Text(id.clone()));
            let n = params.len();
            conds.push(format!("(message_id = ?{n} OR client_id = ?{n})"));
        }
        if let Some(since) = q.since {
            params.push(Value::Integer(clamp_i64(since)));
            conds.push(format!("time >= ?{}", params.len()));
        }
        if let Some((time, id)) = &q.after {
            // Written so that an index on time bounds the scan.
            params.push(Value::Integer(clamp_i64(*time)));
            params.push(Value::Text(id.clone()));
            let (t, i) = (params.len() - 1, params.len());
            conds.push(format!(
                "time >= ?{t} AND (time > ?{t} OR message_id > ?{i})"
            ));
        }
        if let Some(until) = q.until {
            params.push(Value::Integer(clamp_i64(until)));
            conds.push(format!("time < ?{}", params.len()));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM messages");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY time, message_id");
        let needle = q.text.as_ref().map(|t| t.to_lowercase());
        let limit = q.limit.unwrap_or(usize::MAX);
        if needle.is_none() && limit != usize::MAX {
            // Without a text filter the database can stop early itself.
            params.push(Value::Integer(clamp_i64(limit as u64)));
            sql.push_str(&format!(" LIMIT ?{}", params.len()));
        }
        self.select(&sql, params, needle.as_deref(), limit)
    }

    /// Entries of the read trail after `after` (before it, if `reverse`),
    /// at most `limit`, in order of their numbers.
    fn trail(
        &self,
        after: Option<u64>,
        reverse: bool,
        limit: u32,
    ) -> Result<Vec<(u64, ArchiveRead)>, ArchiveDbError> {
        let (op, order) = if reverse { ("<", "DESC") } else { (">", "ASC") };
        let bound = match after {
            Some(n) => clamp_i64(n),
            None if reverse => i64::MAX,
            None => -1,
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT seq, at, principal, what, row_count, refused FROM reads \
                 WHERE seq {op} ?1 ORDER BY seq {order} LIMIT ?2"
            ))
            .map_err(self.sqlite())?;
        let rows = stmt
            .query_map(rusqlite::params![bound, i64::from(limit)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(self.sqlite())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, who, what, n, refused) = row.map_err(self.sqlite())?;
            let what = read_what(&what).map_err(|e| ArchiveDbError::Corrupt {
                path: self.path.clone(),
                detail: format!("reads row {seq}: {e}"),
            })?;
            let read = ArchiveRead {
                at: at.max(0) as u64,
                who,
                what,
                rows: n.max(0) as u64,
                refused,
            };
            out.push((seq.max(0) as u64, read));
        }
        Ok(out)
    }

    /// Every entry of the read trail, in order (for an export from a copy
    /// of the archive, and tests).
    pub fn reads(&self) -> Result<Vec<ReadEntry>, ArchiveDbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, principal, what, row_count, refused FROM reads ORDER BY seq")
            .map_err(self.sqlite())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ReadEntry {
                    seq: r.get::<_, i64>(0)?.max(0) as u64,
                    at: r.get::<_, i64>(1)?.max(0) as u64,
                    principal: r.get(2)?,
                    what: r.get(3)?,
                    rows: r.get::<_, i64>(4)?.max(0) as u64,
                    refused: r.get(5)?,
                })
            })
            .map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(self.sqlite())
    }

    /// Whether a message is archived under `id`: the id the front end
    /// assigned it, or the id its client gave the request.
    pub fn holds(&self, id: &str) -> Result<bool, ArchiveDbError> {
        self.conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM messages WHERE message_id = ?1 OR client_id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(self.sqlite())
    }

    /// How many rows the archive holds.
    pub fn count(&self) -> Result<u64, ArchiveDbError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .map_err(self.sqlite())
    }

    /// Rows whose message time is at or after `since` (ms since the UNIX
    /// epoch), by the time index: what a benchmark counts of its own rows
    /// in an archive that holds older ones.
    pub fn count_since(&self, since: u64) -> Result<u64, ArchiveDbError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM messages WHERE time >= ?1",
                [since as i64],
                |r| r.get(0),
            )
            .map_err(self.sqlite())
    }

    /// Client request id → rows archived for it: what a client's view of
    /// "archived once" is checked against (the message id, assigned by the
    /// front end, is unique by the schema).
    pub fn client_id_counts(&self) -> Result<BTreeMap<String, u64>, ArchiveDbError> {
        self.counts_by("client_id")
    }

    /// Every archived message id with how many rows hold it (a checker
    /// treats more than one as a duplicate).
    pub fn id_counts(&self) -> Result<BTreeMap<String, u64>, ArchiveDbError> {
        self.counts_by("message_id")
    }

    /// Rows per value of `column` (one of this file's column names).
    fn counts_by(&self, column: &'static str) -> Result<BTreeMap<String, u64>, ArchiveDbError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {column}, COUNT(*) FROM messages GROUP BY {column}"
            ))
            .map_err(self.sqlite())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
            .map_err(self.sqlite())?;
        rows.collect::<Result<_, _>>().map_err(self.sqlite())
    }

    /// Reads `user_version` and refuses a newer schema.
    fn check_version(&self) -> Result<i64, ArchiveDbError> {
        let found: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| ArchiveDbError::Open {
                path: self.path.clone(),
                source,
            })?;
        if found > SCHEMA_VERSION {
            return Err(ArchiveDbError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(found)
    }

    /// Runs a `SELECT {COLUMNS}` statement; keeps the rows whose body
    /// contains `needle` (already lower case), at most `limit` of them.
    fn select(
        &self,
        sql: &str,
        params: Vec<Value>,
        needle: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ArchivedMessage>, ArchiveDbError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut stmt = self.conn.prepare(sql).map_err(self.sqlite())?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(self.sqlite())?;
        while let Some(r) = rows.next().map_err(self.sqlite())? {
            let body: String = r.get(6).map_err(self.sqlite())?;
            if needle.is_some_and(|n| !body.to_lowercase().contains(n)) {
                continue;
            }
            let m = (|| {
                Ok::<_, rusqlite::Error>(ArchivedMessage {
                    rowid: r.get(0)?,
                    id: r.get(1)?,
                    kind: r.get(2)?,
                    from: r.get(3)?,
                    to: r.get(4)?,
                    time: r.get(5)?,
                    body,
                    external: r.get(7)?,
                    front_end: r.get(8)?,
                    archived_at: r.get(9)?,
                    client_id: r.get(10)?,
                })
            })()
            .map_err(|e| ArchiveDbError::Corrupt {
                path: self.path.clone(),
                detail: format!("messages row: {e}"),
            })?;
            out.push(m);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn to_row(&self, m: ArchivedMessage) -> Result<Row, ArchiveDbError> {
        m.into_row().map_err(|e| ArchiveDbError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }

    /// The messages as an answer to a core's read: each row under its key.
    fn rows_answer(&self, messages: Vec<ArchivedMessage>) -> Result<Answer, StoreError> {
        let rows = messages
            .into_iter()
            .map(|m| Ok(keyed_row(&self.to_row(m)?)))
            .collect::<Result<_, ArchiveDbError>>()
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Answer::Rows(rows))
    }

    fn sqlite(&self) -> impl Fn(rusqlite::Error) -> ArchiveDbError + '_ {
        |source| ArchiveDbError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

/// Errors no retry can cure: a constraint or a trigger refusing the row,
/// a value over the engine's limits, a type the column refuses.
fn refused_for_good(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if matches!(
            f.code,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch
        )
    )
}

/// SQLITE_FULL is a full disk; anything else is an I/O failure.
fn store_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
            StoreError::NoSpace
        }
        _ => StoreError::Io(format!("archive {}: {e}", path.display())),
    }
}

/// Turns a key (without its table's prefix) into the SQL value compared
/// with the table's key column.
type BindKey = fn(Vec<u8>) -> Result<Value, StoreError>;

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::archiving::database::Database;
    use holdfast_actors::core::actor::{Actor, Ctx, Effect};
    use holdfast_actors::core::ids::{ActorKind, Addr, BatchId, Token};
    use holdfast_actors::core::protocol::{ArchivingMsg, Msg, RecordsMsg};
    use holdfast_actors::core::settings::Sabotage;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn rec(id: &str, from: &str, to: &str, time: u64, body: &str) -> ArchiveRecord {
        ArchiveRecord {
            kind: RecordKind::Im,
            id: id.into(),
            client_id: id.into(),
            from: from.into(),
            to: to.into(),
            time,
            body: body.into(),
            external: false,
            front_end: "fe1".into(),
        }
    }

    /// The database core's insert of `record`, archived at `n` ms past
    /// the sample's epoch.
    fn put(n: u64, record: ArchiveRecord) -> StoreOp {
        StoreOp::Insert {
            key: keys::key_str(DB_ROW, &record.id),
            value: keys::encode(&Row {
                rowid: 0,
                record,
                archived_at: 1_700_000_000_000 + n,
            }),
        }
    }

    fn count_rows(db: &ArchiveDb) -> u64 {
        db.answer(&EngineQuery::Count {
            prefix: DB_ROW.to_vec(),
        })
        .unwrap()
        .count()
    }

    /// Five messages between three users, one second apart.
    fn sample() -> Vec<StoreOp> {
        let t = 1_700_000_000_000;
        vec![
            put(1, rec("m1", "a@x", "b@x", t, "Hello Bob")),
            put(2, rec("m2", "b@x", "a@x", t + 1000, "hi alice, 100% sure")),
            put(3, rec("m3", "c@x", "b@x", t + 2000, "lunch?")),
            put(4, rec("m4", "a@x", "c@x", t + 3000, "HELLO carol")),
            put(5, rec("m5", "c@x", "a@x", t + 4000, "100 percent, Ünïcode")),
        ]
    }

    fn ids(found: &[ArchivedMessage]) -> Vec<&str> {
        found.iter().map(|m| m.id.as_str()).collect()
    }

    fn q() -> Query {
        Query::default()
    }

    #[test]
    fn queries_by_user_time_text_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("a/b/archive.sqlite")).unwrap();
        db.apply(&sample()).unwrap();
        let t = 1_700_000_000_000;
        let run = |q: Query| db.query(&q).unwrap();

        assert_eq!(ids(&run(q())), ["m1", "m2", "m3", "m4", "m5"]);
        let user = |u: &str| Query {
            users: vec![u.into()],
            ..q()
        };
        // As sender or recipient.
        assert_eq!(ids(&run(user("b@x"))), ["m1", "m2", "m3"]);
        assert_eq!(ids(&run(user("c@x"))), ["m3", "m4", "m5"]);
        assert!(run(user("nobody@x")).is_empty());
        // Inclusive since, exclusive until.
        let window = Query {
            since: Some(t + 1000),
            until: Some(t + 3000),
            ..q()
        };
        assert_eq!(ids(&run(window.clone())), ["m2", "m3"]);
        assert_eq!(
            ids(&run(Query {
                users: vec!["a@x".into()],
                ..window
            })),
            ["m2"]
        );
        assert_eq!(
            ids(&run(Query {
                since: Some(u64::MAX),
                ..q()
            })),
            Vec::<&str>::new()
        );
        // Case-insensitive text; wildcards are literal.
        let text = |s: &str| Query {
            text: Some(s.into()),
            ..q()
        };
        assert_eq!(ids(&run(text("hello"))), ["m1", "m4"]);
        assert_eq!(ids(&run(text("100%"))), ["m2"]);
        assert_eq!(ids(&run(text("100"))), ["m2", "m5"]);
        assert_eq!(ids(&run(text("_"))), Vec::<&str>::new());
        assert_eq!(ids(&run(text("üNÏ"))), ["m5"]);
        // Limit, with and without a text filter.
        let limited = |limit, text: Option<&str>| Query {
            limit: Some(limit),
            text: text.map(Into::into),
            ..q()
        };
        assert_eq!(ids(&run(limited(2, None))), ["m1", "m2"]);
        assert_eq!(ids(&run(limited(1, Some("hello")))), ["m1"]);
        assert!(run(limited(0, None)).is_empty());

        let m = &run(user("a@x"))[0];
        assert_eq!(
            *m,
            ArchivedMessage {
                rowid: 1,
                id: "m1".into(),
                kind: "im".into(),
                from: "a@x".into(),
                to: "b@x".into(),
                time: t,
                body: "Hello Bob".into(),
                external: false,
                front_end: "fe1".into(),
                archived_at: t + 1,
                client_id: "m1".into(),
            }
        );
        assert_eq!(db.count().unwrap(), 5);
    }

    #[test]
    fn applying_a_batch_twice_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        assert_eq!(db.apply(&sample()).unwrap().inserted, 5);
        assert_eq!(db.apply(&sample()).unwrap().inserted, 0);
        // The same message with other content (a retry) is ignored too.
        let again = db
            .apply(&[put(9, rec("m1", "a@x", "b@x", 0, "again"))])
            .unwrap();
        assert_eq!(again.inserted, 0);
        assert_eq!(db.count().unwrap(), 5);
        assert_eq!(count_rows(&db), 5, "the kept count matches");
        let counts = db.id_counts().unwrap();
        assert_eq!(counts.len(), 5);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        assert_eq!(db.query(&q()).unwrap()[0].body, "Hello Bob");
    }

    #[test]
    fn a_key_naming_another_message_refuses_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        db.apply(&sample()).unwrap();
        let StoreOp::Insert { value, .. } = put(2, rec("other", "a@x", "b@x", 0, "clash")) else {
            unreachable!()
        };
        let clash = StoreOp::Insert {
            key: keys::key_str(DB_ROW, "m2"),
            value,
        };
        let err = db
            .apply(&[put(6, rec("m6", "a@x", "b@x", 0, "new")), clash])
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Io(m) if m.contains("holds message \"other\"")),
            "{err}"
        );
        assert_eq!(db.count().unwrap(), 5);
        assert!(!db.id_counts().unwrap().contains_key("m6"));
    }

    #[test]
    fn a_row_the_engine_refuses_for_good_is_named_and_nothing_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        let mut db = ArchiveDb::open(&path).unwrap();
        // A trigger raising an error, and one skipping rows quietly (what
        // OR IGNORE does with a constraint): both refuse for good.
        let admin = rusqlite::Connection::open(&path).unwrap();
        admin
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.body = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
                 CREATE TRIGGER skip BEFORE INSERT ON messages WHEN NEW.body = 'skip' \
                 BEGIN SELECT RAISE(IGNORE); END;",
            )
            .unwrap();
        for (bad, why) in [("poison", "poisoned"), ("skip", "skipped its row")] {
            let err = db
                .apply(&[
                    put(1, rec("m1", "a@x", "b@x", 0, "fine")),
                    put(2, rec("m2", "a@x", "b@x", 0, bad)),
                ])
                .unwrap_err();
            match &err {
                StoreError::Refused { key, reason } => {
                    assert_eq!(key, &keys::key_str(DB_ROW, "m2"));
                    assert!(reason.contains("m2") && reason.contains(why), "{reason}");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(db.count().unwrap(), 0, "nothing of the batch committed");
        }
        db.apply(&[put(1, rec("m1", "a@x", "b@x", 0, "fine"))])
            .unwrap();
        assert_eq!(db.count().unwrap(), 1);
    }

    #[test]
    fn an_undecodable_row_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        let mut ops = sample();
        ops.insert(
            0,
            StoreOp::Put {
                key: b"meta/x".to_vec(),
                value: b"1".to_vec(),
            },
        );
        ops.push(StoreOp::Insert {
            key: keys::key_str(DB_ROW, "m6"),
            value: vec![0xff; 3],
        });
        let err = db.apply(&ops).unwrap_err();
        assert!(matches!(&err, StoreError::Io(m) if m.contains("undecodable row")));
        assert_eq!(db.count().unwrap(), 0);
        assert!(db.recovered().unwrap().is_empty());
        // A row put (not inserted), and a time index entry naming no row
        // of its time, are refused the same way.
        let StoreOp::Insert { key, value } = sample().remove(1) else {
            unreachable!()
        };
        let bad_put = StoreOp::Put { key, value };
        assert!(db.apply(&[sample().remove(0), bad_put]).is_err());
        let stray = StoreOp::Put {
            key: time_key(5, "nobody"),
            value: Vec::new(),
        };
        assert!(db.apply(&[sample().remove(0), stray]).is_err());
        assert_eq!(db.count().unwrap(), 0);
    }

    /// The retention purge deletes rows: gone from the table, from the
    /// time index, from the kept count, and their text from the file
    /// (`secure_delete`), not hidden behind a flag.
    #[test]
    fn a_purged_row_is_gone_from_the_table_the_index_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        let mut db = ArchiveDb::open(&path).unwrap();
        let secret = "the merger closes on friday";
        let t = 1_700_000_000_000;
        db.apply(&[
            put(1, rec("m1", "a@x", "b@x", t, secret)),
            StoreOp::Put {
                key: time_key(t, "m1"),
                value: keys::encode(&("a@x".to_string(), "b@x".to_string())),
            },
            put(2, rec("m2", "a@x", "b@x", t + 1, "kept")),
        ])
        .unwrap();
        let scan = |db: &ArchiveDb| {
            db.answer(&EngineQuery::Scan {
                prefix: DB_TIME.to_vec(),
                from: None,
                reverse: false,
                limit: 10,
            })
            .unwrap()
            .into_rows()
        };
        let index = scan(&db);
        assert_eq!(index.len(), 2, "every row is in the time index");
        assert_eq!(index[0].0, time_key(t, "m1"));
        let from_m1 = index[0].0[DB_TIME.len()..].to_vec();
        let after = db
            .answer(&EngineQuery::Scan {
                prefix: DB_TIME.to_vec(),
                from: Some(from_m1),
                reverse: false,
                limit: 10,
            })
            .unwrap()
            .into_rows();
        assert_eq!(after.len(), 1);
        db.apply(&[
            StoreOp::Delete {
                key: keys::key_str(DB_ROW, "m1"),
            },
            StoreOp::Delete {
                key: time_key(t, "m1"),
            },
        ])
        .unwrap();
        assert_eq!(db.count().unwrap(), 1);
        assert_eq!(count_rows(&db), 1);
        assert_eq!(scan(&db).len(), 1);
        drop(db);
        // With the WAL checkpointed into the file, the text is nowhere.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .unwrap();
        drop(conn);
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(wal) = std::fs::read(path.with_extension("sqlite-wal")) {
            bytes.extend(wal);
        }
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "the purged text is still in the file");
    }

    #[test]
    fn other_keys_are_kept_in_kv_and_recovered_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        let mut ops = sample();
        ops.push(StoreOp::Put {
            key: b"meta/a".to_vec(),
            value: b"1".to_vec(),
        });
        ops.push(StoreOp::Put {
            key: b"meta/b".to_vec(),
            value: b"2".to_vec(),
        });
        {
            let mut db = ArchiveDb::open(&path).unwrap();
            db.apply(&ops).unwrap();
            db.apply(&[
                StoreOp::Delete {
                    key: b"meta/a".to_vec(),
                },
                StoreOp::Put {
                    key: b"meta/b".to_vec(),
                    value: b"3".to_vec(),
                },
            ])
            .unwrap();
        }
        let db = ArchiveDb::open(&path).unwrap();
        let recovered = db.recovered().unwrap();
        // The rows are not handed over at start: the core asks for them.
        assert!(keys::db_rows(&recovered).is_empty());
        assert_eq!(recovered.get(&b"meta/a"[..]), None);
        assert_eq!(recovered.get(&b"meta/b"[..]), Some(&b"3".to_vec()));
        assert_eq!(recovered.len(), 1);
        let scan = |from: Option<&str>, reverse, limit| {
            let q = EngineQuery::Scan {
                prefix: DB_ROW.to_vec(),
                from: from.map(|f| f.as_bytes().to_vec()),
                reverse,
                limit,
            };
            db.answer(&q)
                .unwrap()
                .into_rows()
                .into_iter()
                .map(|(k, v)| {
                    let row: Row = keys::decode(&v).unwrap();
                    assert_eq!(k, keys::key_str(DB_ROW, &row.record.id));
                    row.record.id
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(scan(None, false, 10), ["m1", "m2", "m3", "m4", "m5"]);
        assert_eq!(scan(Some("m2"), false, 2), ["m3", "m4"]);
        assert_eq!(scan(None, true, 2), ["m5", "m4"]);
        assert_eq!(scan(Some("m2"), true, 9), ["m1"]);
        let got = db
            .answer(&EngineQuery::Get {
                keys: vec![
                    keys::key_str(DB_ROW, "m3"),
                    keys::key_str(DB_ROW, "zz"),
                    b"meta/b".to_vec(),
                ],
            })
            .unwrap()
            .into_values();
        let m3: Row = keys::decode(got[0].as_ref().unwrap()).unwrap();
        assert_eq!((m3.rowid, m3.record.body.as_str()), (3, "lunch?"));
        assert_eq!(
            (got[1].as_ref(), got[2].as_deref()),
            (None, Some(&b"3"[..]))
        );
        let kv_scan = EngineQuery::Scan {
            prefix: b"meta/".to_vec(),
            from: None,
            reverse: false,
            limit: 10,
        };
        assert_eq!(db.answer(&kv_scan).unwrap().into_rows().len(), 1);
        assert_eq!(count_rows(&db), 5);
    }

    type Reaction<'a> = Box<dyn FnOnce(&mut Database, &mut Ctx) + 'a>;

    /// Runs one reaction of the core; applies its persist to the archive
    /// (reporting the result back) and returns what it sent and whether it
    /// persisted.
    fn react(
        core: &mut Database,
        db: &mut ArchiveDb,
        rng: &mut SmallRng,
        f: Reaction<'_>,
    ) -> (Vec<Msg>, bool) {
        let me = Addr::new("db1", ActorKind::Database);
        let mut ctx = Ctx::new(1_700_000_000_000, &me, rng);
        f(core, &mut ctx);
        let mut sent = Vec::new();
        let mut persisted = false;
        for effect in ctx.into_effects() {
            // The engine's answer to a persist or a query, reported back.
            let answered: Reaction<'_> = match effect {
                Effect::Send { msg, .. } => {
                    sent.push(msg);
                    continue;
                }
                Effect::Persist { token, ops } => {
                    persisted = true;
                    let result = db.apply(&ops);
                    Box::new(move |c, ctx| c.on_persisted(token, result, ctx))
                }
                Effect::Query { token, query } => {
                    let result = db.answer(&query);
                    Box::new(move |c, ctx| c.on_queried(token, result, ctx))
                }
                _ => continue,
            };
            sent.extend(react(core, db, rng, answered).0);
        }
        (sent, persisted)
    }

    /// A database core on `db`, started with what it `recovered`.
    fn start_core(db: &mut ArchiveDb, rng: &mut SmallRng, recovered: Recovered) -> Database {
        let mut core = Database::new("db1", Sabotage::default());
        react(
            &mut core,
            db,
            rng,
            Box::new(|c, ctx| c.on_start(recovered, ctx)),
        );
        core
    }

    /// `msg` from `from` to the core on `db`: what it sent and whether it
    /// persisted.
    fn deliver(
        core: &mut Database,
        db: &mut ArchiveDb,
        rng: &mut SmallRng,
        from: &Addr,
        msg: Msg,
    ) -> (Vec<Msg>, bool) {
        let from = from.clone();
        react(
            core,
            db,
            rng,
            Box::new(move |c, ctx| c.on_msg(from, msg, ctx)),
        )
    }

    #[test]
    fn the_database_core_starts_without_reading_the_rows_and_the_engine_keeps_inserts_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        let arch = Addr::new("arch1", ActorKind::Archiver);
        let batch = || {
            Msg::Archiving(ArchivingMsg::LogMessages {
                batch: BatchId(7),
                records: (1..=20)
                    .map(|i| rec(&format!("m{i}"), "a@x", "b@x", i, "hi"))
                    .collect(),
            })
        };
        let mut rng = SmallRng::seed_from_u64(1);
        {
            let mut db = ArchiveDb::open(&path).unwrap();
            let mut core = start_core(&mut db, &mut rng, Recovered::new());
            let (sent, persisted) = deliver(&mut core, &mut db, &mut rng, &arch, batch());
            assert!(persisted);
            assert_eq!(
                sent,
                [Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(7) })]
            );
            assert_eq!(db.count().unwrap(), 20);
        }
        let mut db = ArchiveDb::open(&path).unwrap();
        let recovered = db.recovered().unwrap();
        let mut core = start_core(&mut db, &mut rng, recovered);
        assert!(keys::db_rows(&db.recovered().unwrap()).is_empty());
        assert_eq!(core.rows(), Some(20), "counted by the engine");
        let (sent, persisted) = deliver(&mut core, &mut db, &mut rng, &arch, batch());
        assert!(persisted);
        assert_eq!(
            sent,
            [Msg::Archiving(ArchivingMsg::Logged { batch: BatchId(7) })]
        );
        assert_eq!(db.count().unwrap(), 20, "every id was recognised");
        assert_eq!(core.rows(), Some(20));
        // A new message gets the next row id.
        let records = vec![rec("m21", "a@x", "b@x", 21, "hi")];
        let batch = Msg::Archiving(ArchivingMsg::LogMessages {
            batch: BatchId(8),
            records,
        });
        let (_, persisted) = deliver(&mut core, &mut db, &mut rng, &arch, batch);
        assert!(persisted);
        let last = db.query(&q()).unwrap().pop().unwrap();
        assert_eq!((last.id.as_str(), last.rowid), ("m21", 21));
    }

    #[test]
    fn a_reader_sees_what_a_writer_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        assert!(matches!(
            ArchiveDb::open_read_only(&path),
            Err(ArchiveDbError::NotFound { .. })
        ));
        let mut writer = ArchiveDb::open(&path).unwrap();
        let reader = ArchiveDb::open_read_only(&path).unwrap();
        assert_eq!(reader.count().unwrap(), 0);
        writer.apply(&sample()).unwrap();
        assert_eq!(reader.count().unwrap(), 5);
        assert_eq!(ids(&reader.query(&q()).unwrap()).len(), 5);
        let mut reader = reader;
        assert!(reader.apply(&sample()).is_err(), "read-only");
        // With the writer gone (WAL checkpointed and removed) too.
        drop(writer);
        drop(reader);
        let reader = ArchiveDb::open_read_only(&path).unwrap();
        assert_eq!(reader.count().unwrap(), 5);
    }

    /// An archive of schema version 1 (no `client_id`) opens: the column
    /// is added, its rows read back with an empty client id, and new rows
    /// carry theirs.
    #[test]
    fn a_version_1_archive_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (rowid INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, \
                 kind TEXT NOT NULL, from_user TEXT NOT NULL, to_user TEXT NOT NULL, \
                 time INTEGER NOT NULL, body TEXT NOT NULL, external INTEGER NOT NULL, \
                 front_end TEXT NOT NULL, archived_at INTEGER NOT NULL); \
                 INSERT INTO messages VALUES (1, 'old1', 'im', 'a@x', 'b@x', 5, 'hi', 0, 'fe1', 6); \
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut db = ArchiveDb::open(&path).unwrap();
        db.apply(&[put(2, rec("new1", "a@x", "b@x", 7, "later"))])
            .unwrap();
        let rows = db.query(&q()).unwrap();
        let by_id: BTreeMap<&str, &str> = rows
            .iter()
            .map(|m| (m.id.as_str(), m.client_id.as_str()))
            .collect();
        assert_eq!(by_id, BTreeMap::from([("old1", ""), ("new1", "new1")]));
        assert_eq!(count_rows(&db), 2, "the migration counted the old rows");
        drop(db);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_or_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        drop(ArchiveDb::open(&path).unwrap());
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        for result in [ArchiveDb::open(&path), ArchiveDb::open_read_only(&path)] {
            let err = result.unwrap_err();
            assert!(matches!(err, ArchiveDbError::NewerSchema { found: 5, .. }));
            let text = err.to_string();
            assert!(text.contains("archive.sqlite") && text.contains("version 5"));
        }
        let empty = dir.path().join("empty.sqlite");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            ArchiveDb::open_read_only(&empty),
            Err(ArchiveDbError::NotAnArchive { .. })
        ));
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let err = ArchiveDb::open(&junk).unwrap_err();
        assert!(err.to_string().contains("junk.sqlite"), "{err}");
    }

    /// Rows of which many share one timestamp, in SQLite and in the
    /// reference engine.
    fn twins() -> (ArchiveDb, Recovered, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        let mut ops = Vec::new();
        for i in 0..40u64 {
            let (from, to) = if i % 3 == 0 {
                ("a@x", "b@x")
            } else {
                ("c@x", "a@x")
            };
            let body = if i % 4 == 0 { "Hello" } else { "bye" };
            // Ids out of time order; times in three clusters.
            let id = format!("k{:02}", (i * 17) % 40);
            ops.push(put(i, rec(&id, from, to, 100 + (i % 3) * 10, body)));
        }
        db.apply(&ops).unwrap();
        let mut map = Recovered::new();
        holdfast_actors::core::engine::apply(&mut map, ops);
        (db, map, dir)
    }

    fn page_keys(a: Answer) -> Vec<String> {
        a.into_rows()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn searches_page_like_the_reference_engine() {
        let (db, map, _dir) = twins();
        let searches = [
            Search::default(),
            Search {
                users: vec!["b@x".into()],
                ..Search::default()
            },
            Search {
                text: Some("hELLo".into()),
                since: Some(110),
                ..Search::default()
            },
            Search {
                until: Some(120),
                id: None,
                ..Search::default()
            },
            Search {
                id: Some("k05".into()),
                ..Search::default()
            },
        ];
        for base in searches {
            let mut s = Search {
                limit: 3,
                ..base.clone()
            };
            let mut got = Vec::new();
            loop {
                let q = EngineQuery::Search {
                    prefix: DB_ROW.to_vec(),
                    search: s.clone(),
                };
                let page = page_keys(db.answer(&q).unwrap());
                assert_eq!(
                    page,
                    page_keys(holdfast_actors::core::engine::answer(&map, &q)),
                    "{s:?}"
                );
                let Some(last) = page.last() else { break };
                let row = db.row_by_id(&last[DB_ROW.len()..]).unwrap().unwrap();
                s.after = Some(holdfast_actors::core::protocol::SearchAfter {
                    time: row.record.time,
                    id: row.record.id,
                });
                got.extend(page);
            }
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), got.len(), "no row twice: {base:?}");
            let all = db
                .query(&Query::of_search(&Search {
                    limit: u32::MAX,
                    ..base.clone()
                }))
                .unwrap();
            assert_eq!(got.len(), all.len(), "every row: {base:?}");
        }
    }

    #[test]
    fn a_trail_written_when_a_search_named_one_user_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        for (seq, user) in [(1, "\"a@x\""), (2, "null")] {
            let what = format!(
                r#"{{"Messages":{{"user":{user},"id":null,"since":5,"until":null,"text":null,"after":null,"limit":10}}}}"#
            );
            db.conn
                .execute(
                    "INSERT INTO reads (seq, at, principal, what, row_count, refused) \
                     VALUES (?1, 1, 'auditor:carol', ?2, 0, NULL)",
                    rusqlite::params![seq, what],
                )
                .unwrap();
        }
        let got = db
            .answer(&EngineQuery::Scan {
                prefix: DB_READ.to_vec(),
                from: None,
                reverse: false,
                limit: 10,
            })
            .unwrap()
            .into_rows();
        let users: Vec<Vec<holdfast_actors::core::ids::UserId>> = got
            .iter()
            .map(
                |(_, v)| match keys::decode::<ArchiveRead>(v).unwrap().what {
                    ReadWhat::Messages(s) => {
                        assert_eq!((s.since, s.limit), (Some(5), 10));
                        s.users
                    }
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(
            users,
            [
                vec![holdfast_actors::core::ids::UserId::from("a@x")],
                vec![]
            ]
        );
    }

    #[test]
    fn the_read_trail_is_a_table_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        let mut db = ArchiveDb::open(&path).unwrap();
        db.apply(&sample()).unwrap();
        let read = |n: u64, refused: Option<&str>| StoreOp::Insert {
            key: keys::key_u64(DB_READ, n),
            value: keys::encode(&ArchiveRead {
                at: 1_000 + n,
                who: "auditor:carol".into(),
                what: ReadWhat::Messages(Search {
                    users: vec!["a@x".into()],
                    limit: 10,
                    ..Search::default()
                }),
                rows: n,
                refused: refused.map(Into::into),
            }),
        };
        assert_eq!(
            db.apply(&[read(1, None), read(2, Some("no"))])
                .unwrap()
                .inserted,
            2
        );
        assert_eq!(
            db.apply(&[read(2, None)]).unwrap().inserted,
            0,
            "a number once"
        );
        assert_eq!(count_rows(&db), 5, "the trail is no message");
        let put = StoreOp::Put {
            key: keys::key_u64(DB_READ, 1),
            value: vec![],
        };
        assert!(db.apply(&[put]).is_err(), "the trail is only inserted into");
        let reads = db.reads().unwrap();
        assert_eq!(reads.len(), 2);
        assert_eq!(
            (
                reads[1].seq,
                reads[1].principal.as_str(),
                reads[1].rows,
                reads[1].refused.as_deref()
            ),
            (2, "auditor:carol", 2, Some("no"))
        );
        assert!(
            reads[0].what.contains("\"users\":[\"a@x\"]"),
            "{}",
            reads[0].what
        );
        // The engine's answers: the last entry, those after one, one by key.
        let scan = |from: Option<u64>, reverse| EngineQuery::Scan {
            prefix: DB_READ.to_vec(),
            from: from.map(|n| n.to_be_bytes().to_vec()),
            reverse,
            limit: 10,
        };
        let seqs = |q| -> Vec<u64> {
            db.answer(&q)
                .unwrap()
                .into_rows()
                .into_iter()
                .map(|(k, v)| {
                    let r: ArchiveRead = keys::decode(&v).unwrap();
                    assert_eq!(r.who, "auditor:carol");
                    keys::parse_u64(DB_READ, &k).unwrap()
                })
                .collect()
        };
        assert_eq!(seqs(scan(None, true)), [2, 1]);
        assert_eq!(seqs(scan(Some(1), false)), [2]);
        assert_eq!(seqs(scan(Some(2), true)), [1]);
        let got = db
            .answer(&EngineQuery::Get {
                keys: vec![keys::key_u64(DB_READ, 2), keys::key_u64(DB_READ, 3)],
            })
            .unwrap()
            .into_values();
        let two: ArchiveRead = keys::decode(got[0].as_ref().unwrap()).unwrap();
        assert_eq!((two.rows, got[1].is_none()), (2, true));
        let count = EngineQuery::Count {
            prefix: DB_READ.to_vec(),
        };
        assert_eq!(db.answer(&count).unwrap().count(), 2);
        assert!(
            db.recovered().unwrap().is_empty(),
            "not handed over at start"
        );
    }

    /// An archive of schema version 3 gets the read trail's table.
    #[test]
    fn a_version_3_archive_gets_its_read_trail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive.sqlite");
        {
            let mut db = ArchiveDb::open(&path).unwrap();
            db.apply(&sample()).unwrap();
        }
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP TABLE reads; DROP INDEX messages_time_id; \
                 CREATE INDEX messages_time ON messages (time); PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let db = ArchiveDb::open(&path).unwrap();
        assert!(db.reads().unwrap().is_empty());
        assert_eq!(db.count().unwrap(), 5);
        let indexes: Vec<String> = db
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'messages_time%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(indexes, ["messages_time_id"]);
        let v: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, 4);
    }

    /// The database core over SQLite: an auditor's search is answered
    /// from the indexes and recorded in `reads`.
    #[test]
    fn the_core_records_a_search_in_the_reads_table() {
        use holdfast_actors::core::identity::{Principal, Role};
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        db.apply(&sample()).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut core = start_core(&mut db, &mut rng, Recovered::new());
        let carol = Addr::new(
            Principal::new("carol", Role::Auditor).client_name("n"),
            ActorKind::Client,
        );
        let search = Search {
            users: vec!["a@x".into()],
            limit: 2,
            ..Search::default()
        };
        // The search goes to the engine; its answer, once recorded.
        let search = Msg::Records(RecordsMsg::ArchiveSearch {
            token: Token(1),
            search,
        });
        let (sent, _) = deliver(&mut core, &mut db, &mut rng, &carol, search);
        let [Msg::Records(RecordsMsg::ArchiveFound { rows, next, .. })] = &sent[..] else {
            panic!("{sent:?}")
        };
        let ids: Vec<&str> = rows.iter().map(|r| r.record.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"]);
        assert_eq!(rows[0].rowid, 1, "the engine's row id");
        assert_eq!(next.as_ref().map(|a| a.id.as_str()), Some("m2"));
        let reads = db.reads().unwrap();
        assert_eq!(
            (
                reads.len(),
                reads[0].seq,
                reads[0].principal.as_str(),
                reads[0].rows
            ),
            (1, 1, "auditor:carol", 2)
        );
    }

    /// Insert rate: `cargo test -p holdfast --release --lib
    /// archive_db::tests::insert_rate -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, not a check"]
    fn insert_rate() {
        const ROWS: u64 = 100_000;
        const BATCH: u64 = 500;
        let dir = tempfile::tempdir().unwrap();
        let mut db = ArchiveDb::open(&dir.path().join("archive.sqlite")).unwrap();
        let t = 1_700_000_000_000;
        let batches: Vec<Vec<StoreOp>> = (0..ROWS / BATCH)
            .map(|b| {
                (b * BATCH + 1..=(b + 1) * BATCH)
                    .map(|i| {
                        let body = format!("message {i}: the quarterly figures look fine");
                        let from = format!("user{}@corp.example", i % 1000);
                        let to = format!("user{}@corp.example", (i * 7) % 1000);
                        put(i, rec(&format!("msg-{i:012}"), &from, &to, t + i, &body))
                    })
                    .collect()
            })
            .collect();
        let start = std::time::Instant::now();
        for ops in &batches {
            db.apply(ops).unwrap();
        }
        let took = start.elapsed();
        assert_eq!(db.count().unwrap(), ROWS);
        println!(
            "{ROWS} rows in batches of {BATCH}: {took:?} ({:.0} rows/s, {:.2} ms/batch)",
            ROWS as f64 / took.as_secs_f64(),
            took.as_secs_f64() * 1000.0 / (ROWS / BATCH) as f64
        );
        let start = std::time::Instant::now();
        let found = db
            .query(&Query {
                users: vec!["user7@corp.example".into()],
                limit: Some(50),
                ..q()
            })
            .unwrap();
        println!("user query (50 rows): {:?}", start.elapsed());
        assert_eq!(found.len(), 50);
    }
}

//! The archive in PostgreSQL: the twin of [`crate::archive_db::ArchiveDb`],
//! with the same tables and the same semantics. An insert under
//! [`DB_ROW`] (`m/<message id>`) becomes a `messages` row unless the
//! message id is archived already (`ON CONFLICT (message_id) DO NOTHING`);
//! any other key lands in `kv`; `counts` keeps the number of rows. Row
//! ids are given as SQLite gives them (one more than the largest), so
//! they have no gaps where a conflict or a rollback consumed a sequence
//! number.
//!
//! Key columns compare as bytes, like the keys of the map reference:
//! `message_id` is `TEXT COLLATE "C"`, `kv.key` is `BYTEA`.

use super::link::{io_error, refused_for_good, Link, Session};
use super::schema::Schema;
use super::target::PgTarget;
use crate::archive_db::{keyed_row, ArchivedMessage};
use crate::engines::{Engine, EngineError};
use holdfast_actors::archiving::retention::{parse_time_key, time_key};
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{prefix_end, Answer, Query};
use holdfast_actors::core::store_keys::{self as keys, Row, DB_ROW, DB_TIME};
use postgres::types::ToSql;
use std::collections::BTreeMap;

/// The archive's migrations. Version 1 is the SQLite archive's schema 3.
pub static SCHEMA: Schema = Schema {
    component: "archive",
    steps: &["
CREATE TABLE messages (
    rowid       BIGINT  PRIMARY KEY,
    message_id  TEXT    COLLATE \"C\" NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    from_user   TEXT    NOT NULL,
    to_user     TEXT    NOT NULL,
    time        BIGINT  NOT NULL,
    body        TEXT    NOT NULL,
    external    INTEGER NOT NULL,
    front_end   TEXT    NOT NULL,
    archived_at BIGINT  NOT NULL,
    client_id   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX messages_from_time ON messages (from_user, time);
CREATE INDEX messages_to_time ON messages (to_user, time);
CREATE INDEX messages_time ON messages (time);
CREATE TABLE kv (
    key   BYTEA PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE counts (
    name TEXT   PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO counts (name, n) VALUES ('messages', 0);
"],
};

const COLUMNS: &str = "rowid, message_id, kind, from_user, to_user, time, body, external, \
                       front_end, archived_at, client_id";

/// A row under the row id `$11`: the transaction reads the highest row id
/// once ([`LAST_ROWID`]) and numbers its rows from there, rather than
/// reading `MAX(rowid)` again for every row.
const INSERT_ROW: &str = "INSERT INTO messages (rowid, message_id, kind, from_user, to_user, \
     time, body, external, front_end, archived_at, client_id) \
     VALUES ($11::bigint, $1::text, $2::text, $3::text, $4::text, $5::bigint, \
     $6::text, $7::integer, $8::text, $9::bigint, $10::text) \
     ON CONFLICT (message_id) DO NOTHING";
const LAST_ROWID: &str = "SELECT COALESCE(MAX(rowid), 0)::bigint FROM messages";
const ARCHIVED: &str = "SELECT 1 FROM messages WHERE message_id = $1";
const KV_PUT: &str = "INSERT INTO kv (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
const KV_INSERT: &str = "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
const KV_DELETE: &str = "DELETE FROM kv WHERE key = $1";
const COUNT_ADD: &str = "UPDATE counts SET n = n + $1 WHERE name = 'messages'";

/// The archive of a database node, in PostgreSQL.
pub struct PgArchive {
    link: Link,
}

impl PgArchive {
    /// Connects (the server must answer) and brings the schema to this
    /// build's version; refuses a newer schema.
    pub fn connect(target: &PgTarget) -> Result<PgArchive, EngineError> {
        Ok(PgArchive {
            link: Link::open(target, &SCHEMA)?,
        })
    }

    /// Client request id → rows archived for it (what the tests' "archived
    /// once" checks read).
    pub fn client_id_counts(&mut self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.link.call(|s| {
            let rows = s.client()?.query(
                "SELECT client_id, COUNT(*) FROM messages GROUP BY client_id",
                &[],
            );
            let rows = rows.map_err(|e| s.error(&e))?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
                .collect())
        })
    }

    /// Every row, by row id.
    pub fn messages(&mut self) -> Result<Vec<ArchivedMessage>, StoreError> {
        self.link.call(|s| {
            let sql = format!("SELECT {COLUMNS} FROM messages ORDER BY rowid");
            let rows = s.client()?.query(sql.as_str(), &[]);
            let rows = rows.map_err(|e| s.error(&e))?;
            rows.iter().map(|r| message(s, r)).collect()
        })
    }

    /// The server this archive is on (password hidden).
    pub fn describe(&self) -> String {
        self.link.target().redacted()
    }
}

/// Batches, queries and the state at start as
/// [`crate::archive_db::ArchiveDb`] has them.
impl Engine for PgArchive {
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

/// The database core's durable state at start: the `kv` entries.
fn recovered(s: &mut Session) -> Result<Recovered, StoreError> {
    let rows = s
        .client()?
        .query("SELECT key, value FROM kv ORDER BY key", &[]);
    let rows = rows.map_err(|e| s.error(&e))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
        .collect())
}

fn apply(s: &mut Session, ops: &[StoreOp]) -> Result<Written, StoreError> {
    let [insert, archived, kv_put, kv_insert, kv_delete, count_add, last_rowid] = s.prepare([
        INSERT_ROW, ARCHIVED, KV_PUT, KV_INSERT, KV_DELETE, COUNT_ADD, LAST_ROWID,
    ])?;
    let target = s.target().clone();
    let io = |e: postgres::Error| io_error(&target, &e);
    let refuse = |detail: String| {
        StoreError::Io(format!(
            "archive {}: batch refused: {detail}",
            target.redacted()
        ))
    };
    let mut tx = s.client()?.transaction().map_err(io)?;
    let (mut inserted, mut rows, mut deleted) = (0u64, 0u64, 0u64);
    // The row id the next row takes, read once the first row comes.
    let mut next_rowid: Option<i64> = None;
    // The message id of the row the op before inserted: the time index
    // entry written with it names it, and needs no lookup.
    let mut just_inserted: Option<&[u8]> = None;
    for op in ops {
        let inserted_before = just_inserted.take();
        match op {
            // The retention purge: the row goes.
            StoreOp::Delete { key } if key.starts_with(DB_ROW) => {
                let id = std::str::from_utf8(&key[DB_ROW.len()..])
                    .map_err(|_| refuse(format!("malformed row key {key:?}")))?;
                deleted += tx
                    .execute("DELETE FROM messages WHERE message_id = $1", &[&id])
                    .map_err(io)?;
            }
            // The time index is the index on `time`: an entry must name a
            // row of this time, and goes with it.
            StoreOp::Put { key, .. } if key.starts_with(DB_TIME) => {
                let (time, id) = parse_time_key(key)
                    .ok_or_else(|| refuse(format!("malformed time key {key:?}")))?;
                if inserted_before == Some(id.as_bytes()) {
                    continue;
                }
                let found = tx
                    .query_opt("SELECT time FROM messages WHERE message_id = $1", &[&id])
                    .map_err(io)?
                    .map(|r| r.get::<_, i64>(0));
                // The row keeps the time it was first archived with (a
                // copy sent again under another time adds nothing); an
                // entry must name a row, though.
                if found.is_none() {
                    return Err(refuse(format!("time index entry {time}/{id} names no row")));
                }
            }
            StoreOp::Delete { key } if key.starts_with(DB_TIME) => {}
            StoreOp::Insert { key, .. } if key.starts_with(DB_TIME) => {
                return Err(refuse(format!(
                    "the time index is put, not inserted ({key:?})"
                )));
            }
            StoreOp::Insert { key, value } if key.starts_with(DB_ROW) => {
                let row: Row = keys::decode(value)
                    .map_err(|e| refuse(format!("undecodable row {key:?}: {e}")))?;
                let r = &row.record;
                if key[DB_ROW.len()..] != *r.id.as_bytes() {
                    return Err(refuse(format!("row key {key:?} holds message {:?}", r.id)));
                }
                // A constraint, a trigger or a limit of the engine that
                // refuses this row will refuse it on every retry: say
                // which row, so that it is parked.
                let refused = |reason: String| StoreError::Refused {
                    key: key.clone(),
                    reason: format!("message {}: {reason}", r.id),
                };
                let big =
                    |n: u64| i64::try_from(n).map_err(|_| refused(format!("{n} is over a BIGINT")));
                let (time, archived_at) = (big(r.time)?, big(row.archived_at)?);
                let external = i32::from(r.external);
                let rowid = match next_rowid {
                    Some(n) => n,
                    None => tx.query_one(&last_rowid, &[]).map_err(io)?.get::<_, i64>(0) + 1,
                };
                let params: [&(dyn ToSql + Sync); 11] = [
                    &r.id,
                    &r.kind.as_str(),
                    &r.from,
                    &r.to,
                    &time,
                    &r.body,
                    &external,
                    &r.front_end,
                    &archived_at,
                    &r.client_id,
                    &rowid,
                ];
                let n = tx.execute(&insert, &params).map_err(|e| {
                    // Another writer took the next row id at the same
                    // moment: a retry takes the one after.
                    let raced = e
                        .as_db_error()
                        .is_some_and(|d| d.constraint() == Some("messages_pkey"));
                    if refused_for_good(&e) && !raced {
                        refused(super::schema::describe(&e))
                    } else {
                        io(e)
                    }
                })?;
                if n == 0 {
                    // Not inserted: the message is archived already (a
                    // retried batch: fine) — unless a trigger skipped it
                    // quietly: what is acknowledged must be archived.
                    let found = tx.query_opt(&archived, &[&r.id]).map_err(io)?;
                    if found.is_none() {
                        return Err(refused("the archive skipped its row (a trigger)".into()));
                    }
                }
                next_rowid = Some(rowid + n as i64);
                if n == 1 {
                    just_inserted = Some(&key[DB_ROW.len()..]);
                }
                inserted += n;
                rows += n;
            }
            StoreOp::Put { key, .. } if key.starts_with(DB_ROW) => {
                return Err(refuse(format!(
                    "archived rows are inserted, never overwritten (key {key:?})"
                )));
            }
            StoreOp::Put { key, value } => {
                tx.execute(&kv_put, &[key, value]).map_err(io)?;
            }
            StoreOp::Insert { key, value } => {
                inserted += tx.execute(&kv_insert, &[key, value]).map_err(io)?;
            }
            StoreOp::Delete { key } => {
                tx.execute(&kv_delete, &[key]).map_err(io)?;
            }
        }
    }
    // `counts` counts the messages: not the inserts into `kv`.
    if rows > 0 || deleted > 0 {
        let n = i64::try_from(rows).unwrap_or(i64::MAX) - i64::try_from(deleted).unwrap_or(0);
        tx.execute(&count_add, &[&n]).map_err(io)?;
    }
    tx.commit().map_err(io)?;
    Ok(Written { inserted })
}

fn answer(s: &mut Session, query: &Query) -> Result<Answer, StoreError> {
    match query {
        Query::Get { keys: wanted } => {
            let mut values = Vec::with_capacity(wanted.len());
            for key in wanted {
                let value = match key.strip_prefix(DB_ROW) {
                    Some(id) => match std::str::from_utf8(id) {
                        Ok(id) => {
                            let sql =
                                format!("SELECT {COLUMNS} FROM messages WHERE message_id = $1");
                            let found = s.client()?.query_opt(sql.as_str(), &[&id]);
                            match found.map_err(|e| s.error(&e))? {
                                Some(r) => Some(keys::encode(&row(message(s, &r)?, s)?)),
                                None => None,
                            }
                        }
                        Err(_) => None,
                    },
                    None => {
                        let found = s
                            .client()?
                            .query_opt("SELECT value FROM kv WHERE key = $1", &[key]);
                        found.map_err(|e| s.error(&e))?.map(|r| r.get(0))
                    }
                };
                values.push(value);
            }
            Ok(Answer::Values(values))
        }
        Query::Count { prefix } if prefix.as_slice() == DB_ROW => {
            let found = s
                .client()?
                .query_opt("SELECT n FROM counts WHERE name = 'messages'", &[]);
            let n: Option<i64> = found.map_err(|e| s.error(&e))?.map(|r| r.get(0));
            Ok(Answer::Count(n.unwrap_or(0).max(0) as u64))
        }
        Query::Count { prefix } => {
            let (sql, args) = range_sql("COUNT(*)", prefix, None, false)?;
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_sql()).collect();
            let found = s.client()?.query_one(sql.as_str(), &params);
            let n: i64 = found.map_err(|e| s.error(&e))?.get(0);
            Ok(Answer::Count(n.max(0) as u64))
        }
        Query::Search { prefix, search } => {
            if prefix.as_slice() != DB_ROW {
                return Err(StoreError::Io(format!(
                    "searches are of the messages ({DB_ROW:?}), not {prefix:?}"
                )));
            }
            search_rows(s, search)
        }
        Query::Scan {
            prefix,
            from,
            reverse: false,
            limit,
        } if prefix.as_slice() == DB_TIME => time_scan(s, from.as_deref(), *limit),
        Query::Scan { prefix, .. } if prefix.starts_with(DB_TIME) => Err(StoreError::Io(
            "the time index is read oldest first from its start".into(),
        )),
        Query::Scan {
            prefix,
            from,
            reverse,
            limit,
        } => {
            let rows_of_messages = prefix.starts_with(DB_ROW);
            let what = if rows_of_messages {
                COLUMNS
            } else {
                "key, value"
            };
            let (mut sql, args) = range_sql(what, prefix, from.as_deref(), *reverse)?;
            let limit = i64::from(*limit);
            let mut params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_sql()).collect();
            params.push(&limit);
            sql.push_str(&format!(" LIMIT ${}", params.len()));
            let found = s.client()?.query(sql.as_str(), &params);
            let found = found.map_err(|e| s.error(&e))?;
            let mut rows = Vec::with_capacity(found.len());
            for r in &found {
                if rows_of_messages {
                    let row = row(message(s, r)?, s)?;
                    rows.push(keyed_row(&row));
                } else {
                    rows.push((r.get(0), r.get(1)));
                }
            }
            Ok(Answer::Rows(rows))
        }
    }
}

/// A search of the archive (the reference semantics are
/// `Search::matches` and its page bounds): the conditions in SQL on the
/// indexes, the text in Rust (case-insensitive, wildcards literal), in
/// `(time, message id)` order.
fn search_rows(
    s: &mut Session,
    search: &holdfast_actors::core::protocol::Search,
) -> Result<Answer, StoreError> {
    let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut conds: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
    let arg = |v: Box<dyn ToSql + Sync>, args: &mut Vec<Box<dyn ToSql + Sync>>| {
        args.push(v);
        args.len()
    };
    if !search.users.is_empty() {
        // One array parameter, whatever the number of users.
        let n = arg(Box::new(search.users.clone()), &mut args);
        conds.push(format!("(from_user = ANY(${n}) OR to_user = ANY(${n}))"));
    }
    if let Some(id) = &search.id {
        let n = arg(Box::new(id.clone()), &mut args);
        conds.push(format!("(message_id = ${n} OR client_id = ${n})"));
    }
    if let Some(since) = search.since {
        let n = arg(Box::new(big(since)), &mut args);
        conds.push(format!("time >= ${n}"));
    }
    if let Some(after) = &search.after {
        let t = arg(Box::new(big(after.time)), &mut args);
        let i = arg(Box::new(after.id.clone()), &mut args);
        conds.push(format!(
            "time >= ${t} AND (time > ${t} OR message_id > ${i})"
        ));
    }
    if let Some(until) = search.until {
        let n = arg(Box::new(big(until)), &mut args);
        conds.push(format!("time < ${n}"));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM messages");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY time, message_id");
    let needle = search.text.as_ref().map(|t| t.to_lowercase());
    let limit = search.limit as usize;
    if needle.is_none() {
        let n = arg(Box::new(i64::from(search.limit)), &mut args);
        sql.push_str(&format!(" LIMIT ${n}"));
    }
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
    let found = s.client()?.query(sql.as_str(), &params);
    let found = found.map_err(|e| s.error(&e))?;
    let mut rows = Vec::new();
    for r in &found {
        if rows.len() >= limit {
            break;
        }
        let m = message(s, r)?;
        if needle
            .as_ref()
            .is_some_and(|n| !m.body.to_lowercase().contains(n.as_str()))
        {
            continue;
        }
        let row = row(m, s)?;
        rows.push(keyed_row(&row));
    }
    Ok(Answer::Rows(rows))
}

/// The time index from its start or after `from` (`<time><id>`), in the
/// order of the index on (time, message id).
fn time_scan(s: &mut Session, from: Option<&[u8]>, limit: u32) -> Result<Answer, StoreError> {
    let (time, id) = match from {
        None => (-1i64, String::new()),
        Some(f) => {
            let (t, id) = parse_time_key(&[DB_TIME, f].concat())
                .ok_or_else(|| StoreError::Io(format!("malformed time index key {f:?}")))?;
            (i64::try_from(t).unwrap_or(i64::MAX), id)
        }
    };
    let limit = i64::from(limit);
    let found = s.client()?.query(
        "SELECT time, message_id FROM messages \
         WHERE time > $1 OR (time = $1 AND message_id > $2) \
         ORDER BY time, message_id LIMIT $3",
        &[&time, &id, &limit],
    );
    let found = found.map_err(|e| s.error(&e))?;
    Ok(Answer::Rows(
        found
            .iter()
            .map(|r| {
                let time: i64 = r.get(0);
                let id: String = r.get(1);
                (time_key(time.max(0) as u64, &id), Vec::new())
            })
            .collect(),
    ))
}

/// A bound value of a range condition: a message id or a `kv` key.
enum Bind {
    Text(String),
    Bytes(Vec<u8>),
}

impl Bind {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Bind::Text(t) => t,
            Bind::Bytes(b) => b,
        }
    }
}

/// `SELECT {what}` over the rows under `prefix` (after `from`, ordered by
/// key, reversed if asked): the messages by id, or `kv` by key.
fn range_sql(
    what: &str,
    prefix: &[u8],
    from: Option<&[u8]>,
    reverse: bool,
) -> Result<(String, Vec<Bind>), StoreError> {
    let messages = prefix.starts_with(DB_ROW);
    let (table, column) = if messages {
        ("messages", "message_id")
    } else {
        ("kv", "key")
    };
    let bind = |k: &[u8]| -> Result<Bind, StoreError> {
        if messages {
            String::from_utf8(k[DB_ROW.len()..].to_vec())
                .map(Bind::Text)
                .map_err(|_| StoreError::Io("a message id key that is not UTF-8".into()))
        } else {
            Ok(Bind::Bytes(k.to_vec()))
        }
    };
    let mut conds = Vec::new();
    let mut args = Vec::new();
    args.push(bind(prefix)?);
    conds.push(format!("{column} >= ${}", args.len()));
    // The end of the prefix, within the table's part of the key.
    let end = if messages {
        prefix_end(&prefix[DB_ROW.len()..]).map(|e| [DB_ROW, &e].concat())
    } else {
        prefix_end(prefix)
    };
    if let Some(end) = end {
        args.push(bind(&end)?);
        conds.push(format!("{column} < ${}", args.len()));
    }
    if let Some(from) = from {
        args.push(bind(&[prefix, from].concat())?);
        let op = if reverse { "<" } else { ">" };
        conds.push(format!("{column} {op} ${}", args.len()));
    }
    let mut sql = format!("SELECT {what} FROM {table} WHERE {}", conds.join(" AND "));
    // A count has no order (PostgreSQL refuses one beside an aggregate).
    if what != "COUNT(*)" {
        let order = if reverse { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY {column} {order}"));
    }
    Ok((sql, args))
}

/// A `messages` row read back.
fn message(s: &Session, r: &postgres::Row) -> Result<ArchivedMessage, StoreError> {
    let corrupt = |e: postgres::Error| {
        StoreError::Io(format!(
            "archive {}: corrupt messages row: {e}",
            s.target().redacted()
        ))
    };
    let unsigned = |n: i64| n.max(0) as u64;
    Ok(ArchivedMessage {
        rowid: unsigned(r.try_get(0).map_err(corrupt)?),
        id: r.try_get(1).map_err(corrupt)?,
        kind: r.try_get(2).map_err(corrupt)?,
        from: r.try_get(3).map_err(corrupt)?,
        to: r.try_get(4).map_err(corrupt)?,
        time: unsigned(r.try_get(5).map_err(corrupt)?),
        body: r.try_get(6).map_err(corrupt)?,
        external: r.try_get::<_, i32>(7).map_err(corrupt)? != 0,
        front_end: r.try_get(8).map_err(corrupt)?,
        archived_at: unsigned(r.try_get(9).map_err(corrupt)?),
        client_id: r.try_get(10).map_err(corrupt)?,
    })
}

/// The core's row of an archived message.
fn row(m: ArchivedMessage, s: &Session) -> Result<Row, StoreError> {
    m.into_row()
        .map_err(|e| StoreError::Io(format!("archive {}: corrupt: {e}", s.target().redacted())))
}

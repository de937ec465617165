//! What a core may ask of the engine that holds its rows.
//!
//! The queues keep their whole (quota-bounded) state in memory and get it
//! back at start. The archive database and the chat store cannot: their
//! rows grow with the archive, for years. Their cores keep only what is in
//! flight; the rows stay in the engine (SQLite, PostgreSQL, the
//! simulator's disk), which a core reads on demand with a [`Query`] and
//! writes with idempotent inserts ([`StoreOp::Insert`]). A host leaves the
//! keys under a core's `Actor::engine_prefixes` out of what it hands the
//! core at start, so restart cost does not grow with the archive.
//!
//! Every engine answers the same queries with the same semantics; this
//! module holds the reference implementation over an ordered map, which
//! the test kit, the simulator and the production log store use, and
//! which the SQL engines are tested against.

use crate::core::protocol::{Row, Search};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// What an actor's durable store held at start: key → value, in key order.
pub type Recovered = BTreeMap<Vec<u8>, Vec<u8>>;

/// One write to an actor's durable key-value store. A `Persist` effect
/// carries a batch of these, applied atomically.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StoreOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Writes `value` under `key` unless the key holds a value already
    /// (a unique key: `INSERT … ON CONFLICT DO NOTHING`). The persist's
    /// [`Written`] says how many inserts wrote.
    Insert {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// Why a persist failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The disk is full (ENOSPC).
    NoSpace,
    /// Any other I/O failure.
    Io(String),
    /// The engine refuses the operation under `key` for good (a constraint
    /// or a trigger of the archive database): retrying it cannot succeed.
    /// Nothing of the batch was written.
    Refused { key: Vec<u8>, reason: String },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NoSpace => write!(f, "no space left on device"),
            StoreError::Io(e) => write!(f, "I/O error: {e}"),
            StoreError::Refused { reason, .. } => write!(f, "refused for good: {reason}"),
        }
    }
}

/// A read of committed rows. Keys are compared bytewise; `prefix` names a
/// set of rows (a table, or one room's posts).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Query {
    /// The values of `keys` (`None` where a key holds nothing), in order.
    Get { keys: Vec<Vec<u8>> },
    /// Rows whose key starts with `prefix`, in key order (or reverse key
    /// order), strictly after (before, when reversed) `prefix + from` if
    /// `from` is given, at most `limit` of them.
    Scan {
        prefix: Vec<u8>,
        from: Option<Vec<u8>>,
        reverse: bool,
        limit: u32,
    },
    /// How many rows have a key starting with `prefix`.
    Count { prefix: Vec<u8> },
    /// Archived messages (the [`Row`]s under `prefix`) that meet every
    /// criterion of `search` ([`Search::matches`]) and come after its page
    /// key, in `(time, message id)` order, at most `search.limit` of them;
    /// answered as [`Answer::Rows`] of `(key, row)`. An engine with
    /// indexes uses them; the reference decodes every row.
    Search { prefix: Vec<u8>, search: Search },
}

/// The answer to a [`Query`], of the shape the query asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// For [`Query::Get`]: one value per key asked.
    Values(Vec<Option<Vec<u8>>>),
    /// For [`Query::Scan`]: `(key, value)` rows.
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
    /// For [`Query::Count`].
    Count(u64),
}

impl Answer {
    /// The values of a [`Query::Get`] answer (empty for another shape).
    pub fn into_values(self) -> Vec<Option<Vec<u8>>> {
        match self {
            Answer::Values(v) => v,
            _ => Vec::new(),
        }
    }
    /// The rows of a [`Query::Scan`] answer (empty for another shape).
    pub fn into_rows(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Answer::Rows(r) => r,
            _ => Vec::new(),
        }
    }
    /// The count of a [`Query::Count`] answer (0 for another shape).
    pub fn count(&self) -> u64 {
        match self {
            Answer::Count(n) => *n,
            _ => 0,
        }
    }
}

/// What a persist wrote, reported with its success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Written {
    /// How many [`StoreOp::Insert`]s wrote a row; the others found their
    /// key taken (the row was there already) and wrote nothing.
    pub inserted: u64,
}

/// Applies `ops` to an ordered map, as every engine must: puts replace,
/// deletes remove, inserts write only where the key is free.
pub fn apply(map: &mut Recovered, ops: Vec<StoreOp>) -> Written {
    let mut written = Written::default();
    for op in ops {
        match op {
            StoreOp::Put { key, value } => {
                map.insert(key, value);
            }
            StoreOp::Delete { key } => {
                map.remove(&key);
            }
            StoreOp::Insert { key, value } => {
                if let std::collections::btree_map::Entry::Vacant(e) = map.entry(key) {
                    e.insert(value);
                    written.inserted += 1;
                }
            }
        }
    }
    written
}

/// Answers `query` from an ordered map: the reference semantics.
pub fn answer(map: &Recovered, query: &Query) -> Answer {
    match query {
        Query::Get { keys } => Answer::Values(keys.iter().map(|k| map.get(k).cloned()).collect()),
        Query::Count { prefix } => Answer::Count(
            map.range::<Vec<u8>, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .count() as u64,
        ),
        Query::Scan {
            prefix,
            from,
            reverse,
            limit,
        } => {
            let start = from.as_ref().map(|f| [prefix.as_slice(), f].concat());
            let end = prefix_end(prefix);
            let limit = *limit as usize;
            let rows: Vec<(Vec<u8>, Vec<u8>)> = if *reverse {
                let upper = match &start {
                    Some(s) => Bound::Excluded(s.clone()),
                    None => end.map_or(Bound::Unbounded, Bound::Excluded),
                };
                map.range((Bound::Included(prefix.clone()), upper))
                    .rev()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            } else {
                let lower = match &start {
                    Some(s) => Bound::Excluded(s.clone()),
                    None => Bound::Included(prefix.clone()),
                };
                map.range((lower, Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            Answer::Rows(rows)
        }
        Query::Search { prefix, search } => {
            let mut found: Vec<(Row, &Vec<u8>, &Vec<u8>)> = map
                .range::<Vec<u8>, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                // A row that does not decode is no message: the checkers
                // and `holdfast inspect` report it.
                .filter_map(|(k, v)| Some((postcard::from_bytes::<Row>(v).ok()?, k, v)))
                .filter(|(row, _, _)| search.matches(&row.record) && search.is_after(&row.record))
                .collect();
            found.sort_by(|(a, ..), (b, ..)| {
                (a.record.time, &a.record.id).cmp(&(b.record.time, &b.record.id))
            });
            Answer::Rows(
                found
                    .into_iter()
                    .take(search.limit as usize)
                    .map(|(_, k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
    }
}

/// The first key after every key starting with `prefix` (`None` if there
/// is none: the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Leaves out of `recovered` every key under `prefixes` (what the engine
/// keeps and the core reads on demand).
pub fn without_prefixes(mut recovered: Recovered, prefixes: &[&[u8]]) -> Recovered {
    if !prefixes.is_empty() {
        recovered.retain(|k, _| !prefixes.iter().any(|p| k.starts_with(p)));
    }
    recovered
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> Recovered {
        keys.iter()
            .map(|k| (k.as_bytes().to_vec(), k.as_bytes().to_vec()))
            .collect()
    }

    fn keys(a: Answer) -> Vec<String> {
        a.into_rows()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    }

    fn scan(prefix: &str, from: Option<&str>, reverse: bool, limit: u32) -> Query {
        Query::Scan {
            prefix: prefix.into(),
            from: from.map(Into::into),
            reverse,
            limit,
        }
    }

    #[test]
    fn scans_stay_inside_their_prefix_in_both_directions() {
        let m = map(&["a", "b/1", "b/2", "b/3", "b0", "c"]);
        assert_eq!(
            keys(answer(&m, &scan("b/", None, false, 10))),
            ["b/1", "b/2", "b/3"]
        );
        assert_eq!(keys(answer(&m, &scan("b/", None, true, 2))), ["b/3", "b/2"]);
        assert_eq!(
            keys(answer(&m, &scan("b/", Some("1"), false, 10))),
            ["b/2", "b/3"]
        );
        assert_eq!(
            keys(answer(&m, &scan("b/", Some("3"), true, 10))),
            ["b/2", "b/1"]
        );
        assert_eq!(
            keys(answer(&m, &scan("b/", Some("9"), false, 10))),
            Vec::<String>::new()
        );
        assert_eq!(
            answer(
                &m,
                &Query::Count {
                    prefix: b"b".to_vec()
                }
            ),
            Answer::Count(4)
        );
        let all_ff = map(&["\u{7f}"]);
        assert_eq!(
            keys(answer(&all_ff, &scan("\u{7f}", None, true, 1))),
            ["\u{7f}"]
        );
    }

    #[test]
    fn inserts_write_only_free_keys_and_say_how_many() {
        let mut m = map(&["k1"]);
        let w = apply(
            &mut m,
            vec![
                StoreOp::Insert {
                    key: b"k1".to_vec(),
                    value: b"new".to_vec(),
                },
                StoreOp::Insert {
                    key: b"k2".to_vec(),
                    value: b"v2".to_vec(),
                },
                StoreOp::Insert {
                    key: b"k2".to_vec(),
                    value: b"again".to_vec(),
                },
            ],
        );
        assert_eq!(w.inserted, 1);
        assert_eq!(m[&b"k1".to_vec()], b"k1");
        assert_eq!(m[&b"k2".to_vec()], b"v2");
        let got = answer(
            &m,
            &Query::Get {
                keys: vec![b"k2".to_vec(), b"zz".to_vec()],
            },
        );
        assert_eq!(got.into_values(), vec![Some(b"v2".to_vec()), None]);
    }
}

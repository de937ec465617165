//! Archive database: the LcsLog `messages` table. The rows live in the
//! engine, not in this core: a row is inserted under its message id with
//! [`StoreOp::Insert`], which writes only if the id is not archived yet —
//! the engine's unique key makes inserts idempotent, so a batch retried by
//! the archiver never archives a message twice, and starting reads no row.
//! A batch is one transaction: one durable write, then the answer.

use crate::archiving::retention::{self, Holds, Retention, Step};
use crate::core::actor::{authorize, Actor, Ctx, Recovered, StoreError, StoreOp, Timer, Written};
use crate::core::engine::{Answer, Query};
use crate::core::ids::{Addr, MessageId};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::{DbError, Msg};
use crate::core::settings::Sabotage;
use crate::core::settings::Settings;
use crate::core::store_keys::{self as keys, Row, DB_ROW, DB_TIME};
use std::collections::BTreeMap;

struct Txn {
    from: Addr,
    batch: u64,
}

/// The token of the query that counts the archived rows at start (write
/// tokens start at 1).
const COUNT: u64 = 0;
/// The token of the purge's reads and writes.
const PURGE: u64 = u64::MAX;

pub struct Database {
    name: String,
    sabotage: Sabotage,
    /// Records seen (drives the sabotage counters).
    seen: u64,
    /// Rows in the archive: counted by the engine at start, then kept up
    /// to date with what each transaction inserted (`None` until counted).
    rows: Option<u64>,
    txns: BTreeMap<u64, Txn>,
    next_token: u64,
    retention: Retention,
}

/// No legal hold exists yet: nothing is held.
struct NoHolds;

impl Holds for NoHolds {
    fn held(&self, _from: &str, _to: &str, _time: u64) -> bool {
        false
    }
}

impl Database {
    pub fn new(name: impl Into<String>, sabotage: Sabotage) -> Self {
        Database {
            name: name.into(),
            sabotage,
            seen: 0,
            rows: None,
            txns: BTreeMap::new(),
            next_token: 0,
            retention: Retention::new(&Settings::default()),
        }
    }

    /// Purges by the retention settings of `settings`.
    pub fn with_settings(mut self, settings: &Settings) -> Self {
        self.retention = Retention::new(settings);
        self
    }

    fn purge_step(&mut self, step: Step, ctx: &mut Ctx) {
        match step {
            Step::Read(query) => ctx.query(PURGE, query),
            Step::Delete(ops) => ctx.persist(PURGE, ops),
            Step::Wait => {}
        }
    }

    /// Rows in the archive, once the engine has counted them.
    pub fn rows(&self) -> Option<u64> {
        self.rows
    }
}

impl Actor for Database {
    fn on_start(&mut self, _recovered: Recovered, ctx: &mut Ctx) {
        self.txns.clear();
        self.rows = None;
        self.retention.start(ctx);
        ctx.query(
            COUNT,
            Query::Count {
                prefix: DB_ROW.to_vec(),
            },
        );
    }

    fn engine_prefixes(&self) -> &'static [&'static [u8]] {
        &[DB_ROW, DB_TIME]
    }

    fn on_queried(&mut self, token: u64, result: Result<Answer, StoreError>, ctx: &mut Ctx) {
        if token == PURGE {
            let step = match result {
                Ok(answer) => self.retention.on_rows(answer.into_rows(), &NoHolds, ctx),
                Err(e) => {
                    self.retention.on_read_failed(&e, ctx);
                    Step::Wait
                }
            };
            return self.purge_step(step, ctx);
        }
        if token != COUNT {
            return;
        }
        match result {
            Ok(answer) => self.rows = Some(answer.count()),
            // Only the gauge waits for it: archiving goes on.
            Err(e) => ctx.event(
                OperatorEvent::DbStoreFailed,
                format!("{}: cannot count the archived rows: {e}", self.name),
            ),
        }
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        if !authorize(
            from.actor == crate::core::ids::ActorKind::Archiver,
            &self.name,
            &from,
            &msg,
            ctx,
        ) {
            return;
        }
        let Msg::LogMessages { batch, records } = msg else {
            ctx.event(
                OperatorEvent::UnexpectedMessage,
                format!("database {} ignored {} from {from}", self.name, msg.name()),
            );
            return;
        };
        let mut ops = Vec::with_capacity(records.len());
        for record in records {
            self.seen += 1;
            let s = &self.sabotage;
            if s.db_drop_every > 0 && self.seen.is_multiple_of(s.db_drop_every) {
                continue; // sabotage: acknowledged but never written
            }
            let duplicate =
                s.db_duplicate_every > 0 && self.seen.is_multiple_of(s.db_duplicate_every);
            let row = Row {
                // The engine numbers its rows; a core never sees them.
                rowid: 0,
                record,
                archived_at: ctx.now(),
            };
            let key = keys::key_str(DB_ROW, &row.record.id);
            let value = keys::encode(&row);
            // The time index entry, written with the row (a retry writes
            // the same entry again): what the purge reads oldest first.
            let entry: retention::TimeEntry = (row.record.from.clone(), row.record.to.clone());
            let index = StoreOp::Put {
                key: retention::time_key(row.record.time, &row.record.id),
                value: keys::encode(&entry),
            };
            if duplicate {
                // Sabotage: the same message again under another key, past
                // the unique key.
                let mut twin = key.clone();
                twin.extend_from_slice(b"\0twin");
                ops.push(StoreOp::Insert {
                    key: twin,
                    value: value.clone(),
                });
            }
            ops.push(StoreOp::Insert { key, value });
            ops.push(index);
        }
        if ops.is_empty() {
            ctx.send(from, Msg::Logged { batch });
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        self.txns.insert(token, Txn { from, batch });
        ctx.persist(token, ops);
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::Purge {
            let step = self.retention.on_timer(ctx);
            self.purge_step(step, ctx);
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        let mut gauges = self
            .rows
            .map(|n| vec![(Gauge::ArchivedRows, n)])
            .unwrap_or_default();
        gauges.extend(self.retention.gauges());
        gauges
    }

    fn on_persisted(&mut self, token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        if token == PURGE {
            let deleted = self.retention.on_written(result, ctx);
            if let Some(rows) = &mut self.rows {
                *rows = rows.saturating_sub(deleted);
            }
            return;
        }
        let Some(txn) = self.txns.remove(&token) else {
            return;
        };
        match result {
            Ok(written) => {
                if let Some(rows) = &mut self.rows {
                    *rows += written.inserted;
                }
                ctx.send(txn.from, Msg::Logged { batch: txn.batch });
            }
            Err(StoreError::Refused { key, reason }) => {
                // The engine refuses one row for good: name its message, so
                // that the archiver parks it and sends the rest again.
                let refused: Option<MessageId> = key
                    .strip_prefix(DB_ROW)
                    .and_then(|id| String::from_utf8(id.to_vec()).ok());
                let error = match refused {
                    Some(id) => {
                        ctx.event(
                            OperatorEvent::DbRecordRefused,
                            format!(
                                "{}: batch {}: message {id} refused for good: {reason}",
                                self.name, txn.batch
                            ),
                        );
                        DbError::Refused {
                            ids: vec![id],
                            reason,
                        }
                    }
                    // Not a row: nothing to park, retry.
                    None => DbError::StoreFailed(reason),
                };
                ctx.send(
                    txn.from,
                    Msg::LogFailed {
                        batch: txn.batch,
                        error,
                    },
                );
            }
            Err(e) => {
                ctx.event(
                    OperatorEvent::DbStoreFailed,
                    format!("{}: batch {}: {e}", self.name, txn.batch),
                );
                ctx.send(
                    txn.from,
                    Msg::LogFailed {
                        batch: txn.batch,
                        error: DbError::StoreFailed(e.to_string()),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::ActorKind;
    use crate::core::protocol::ArchiveRecord;
    use crate::testkit::{record as rec, Harness};

    fn db(sabotage: Sabotage) -> Harness<Database> {
        Harness::new(
            Addr::new("db1", ActorKind::Database),
            Database::new("db1", sabotage),
        )
    }

    fn arch() -> Addr {
        Addr::new("arch1", ActorKind::Archiver)
    }

    /// The archiver sends batch `batch` of the records named by `ids`.
    fn log(h: &mut Harness<Database>, batch: u64, ids: &[&str]) -> Vec<(Addr, Msg)> {
        let records = ids.iter().map(|id| rec(id)).collect();
        h.msg(arch(), Msg::LogMessages { batch, records })
    }

    fn stored_ids(h: &Harness<Database>) -> Vec<String> {
        keys::db_rows(&h.store)
            .into_iter()
            .map(|r| r.unwrap().record.id)
            .collect()
    }

    #[test]
    fn insert_is_idempotent_across_retries_and_restarts() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        let sent = log(&mut h, 1, &["m1", "m2"]);
        assert_eq!(sent, vec![(arch(), Msg::Logged { batch: 1 })]);
        log(&mut h, 1, &["m1", "m2"]);
        let mut h2 = db(Sabotage::default());
        h2.store = h.store.clone();
        h2.start(h.store.clone());
        let sent = log(&mut h2, 2, &["m2", "m3", "m3"]);
        assert_eq!(sent, vec![(arch(), Msg::Logged { batch: 2 })]);
        assert_eq!(stored_ids(&h2), vec!["m1", "m2", "m3"]);
        // The engine counted two rows at start; one more was new.
        assert_eq!(h2.actor().rows(), Some(3));
    }

    #[test]
    fn a_row_the_engine_refuses_for_good_is_named() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::Refused {
            key: keys::key_str(DB_ROW, "bad"),
            reason: "trigger poison".into(),
        });
        let sent = log(&mut h, 1, &["m1", "bad"]);
        assert_eq!(
            sent,
            vec![(
                arch(),
                Msg::LogFailed {
                    batch: 1,
                    error: DbError::Refused {
                        ids: vec!["bad".into()],
                        reason: "trigger poison".into()
                    }
                }
            )]
        );
        assert!(h.events().contains(&"db_record_refused"));
        assert!(
            stored_ids(&h).is_empty(),
            "nothing of the batch was written"
        );
    }

    #[test]
    fn failed_transaction_is_refused_not_acknowledged() {
        let mut h = db(Sabotage::default());
        h.start(Recovered::new());
        h.fail_persists = Some(StoreError::NoSpace);
        let sent = log(&mut h, 1, &["m1"]);
        assert!(matches!(&sent[..], [(_, Msg::LogFailed { batch: 1, .. })]));
        h.fail_persists = None;
        let sent = log(&mut h, 1, &["m1"]);
        assert_eq!(sent, vec![(arch(), Msg::Logged { batch: 1 })]);
        assert_eq!(stored_ids(&h), vec!["m1"]);
    }

    #[test]
    fn sabotage_drops_and_duplicates_for_checker_tests() {
        let mut h = db(Sabotage {
            db_drop_every: 3,
            db_duplicate_every: 4,
            ..Sabotage::default()
        });
        h.start(Recovered::new());
        let records = (1..=8).map(|i| rec(&format!("m{i}"))).collect();
        h.msg(arch(), Msg::LogMessages { batch: 1, records });
        assert_eq!(
            stored_ids(&h),
            vec!["m1", "m2", "m4", "m4", "m5", "m7", "m8", "m8"]
        );
        assert_eq!(h.actor().rows(), Some(8), "twins are rows too");
    }

    const DAY: u64 = 86_400_000;
    const HOUR: u64 = 3_600_000;

    /// A database keeping one day, purging at 02:00 two rows at a time.
    fn purging() -> Harness<Database> {
        let settings = Settings {
            archive_keep_days: 1,
            archive_purge_hour: 2,
            archive_purge_batch: 2,
            archive_purge_pause: 100,
            ..Settings::default()
        };
        Harness::new(
            Addr::new("db1", ActorKind::Database),
            Database::new("db1", Sabotage::default()).with_settings(&settings),
        )
    }

    fn log_at(h: &mut Harness<Database>, batch: u64, rows: &[(&str, u64)]) {
        let records = rows
            .iter()
            .map(|(id, time)| ArchiveRecord {
                time: *time,
                ..rec(id)
            })
            .collect();
        let sent = h.msg(arch(), Msg::LogMessages { batch, records });
        assert_eq!(sent, vec![(arch(), Msg::Logged { batch })]);
    }

    /// Fires the purge timer until the purge has finished (or `max` times).
    fn purge(h: &mut Harness<Database>, max: usize) -> usize {
        let mut fired = 0;
        while fired < max {
            h.fire(Timer::Purge);
            fired += 1;
            if h.events().contains(&"archive_purged") {
                break;
            }
        }
        fired
    }

    fn gauge(h: &Harness<Database>, g: Gauge) -> u64 {
        h.actor()
            .gauges()
            .into_iter()
            .find(|(k, _)| *k == g)
            .unwrap()
            .1
    }

    #[test]
    fn the_purge_deletes_rows_past_the_window_in_batches_and_keeps_the_rest() {
        let mut h = purging();
        h.start(Recovered::new());
        // The first purge is set for 02:00.
        assert_eq!(h.timer(Timer::Purge), Some(2 * HOUR));
        log_at(
            &mut h,
            1,
            &[
                ("old1", HOUR),
                ("old2", 90 * 60_000),
                ("old3", 3 * HOUR / 2 + 1),
            ],
        );
        log_at(&mut h, 2, &[("new1", DAY + 3 * HOUR), ("edge", 2 * HOUR)]);
        // 02:00 on day 0: nothing is a day old yet.
        purge(&mut h, 5);
        assert_eq!(stored_ids(&h).len(), 5);
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 0);
        h.clear_events();
        // 02:00 on day 1: the cutoff is 02:00 on day 0; three rows go, in
        // two transactions of at most two rows, the one at the cutoff stays.
        assert_eq!(h.timer(Timer::Purge), Some(DAY + 2 * HOUR));
        let fired = purge(&mut h, 10);
        assert_eq!(fired, 3, "two batches, then the read that meets the window");
        assert_eq!(stored_ids(&h), vec!["edge", "new1"]);
        assert!(
            !h.store
                .keys()
                .any(|k| k.starts_with(DB_TIME) && k.ends_with(b"old1")),
            "the index entry goes with its row"
        );
        assert_eq!(h.actor().rows(), Some(2));
        assert_eq!(gauge(&h, Gauge::ArchivePurged), 3);
        assert_eq!(gauge(&h, Gauge::ArchivePurgeCutoff), 2 * HOUR);
        assert_eq!(gauge(&h, Gauge::ArchiveLastPurgeAt), h.now);
        assert_eq!(h.events(), vec!["archive_purged"]);
        // The next purge is set for 02:00 the day after.
        assert_eq!(h.timer(Timer::Purge), Some(2 * DAY + 2 * HOUR));
    }

    #[test]
    fn a_failed_purge_transaction_is_said_and_tried_again() {
        let mut h = purging();
        h.start(Recovered::new());
        log_at(&mut h, 1, &[("old1", HOUR), ("old2", HOUR + 1)]);
        h.now = DAY + 2 * HOUR;
        h.set_timer(Timer::Purge, h.now);
        h.fail_persists = Some(StoreError::Io("disk gone".into()));
        h.fire(Timer::Purge);
        assert_eq!(h.events(), vec!["archive_purge_failed"]);
        assert_eq!(stored_ids(&h).len(), 2, "nothing deleted");
        h.fail_persists = None;
        h.clear_events();
        purge(&mut h, 5);
        assert!(stored_ids(&h).is_empty());
        assert_eq!(h.events(), vec!["archive_purged"]);
    }
}

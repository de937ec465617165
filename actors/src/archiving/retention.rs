//! Archive retention: the daily purge of the rows older than the window.
//!
//! Lync's archiving server keeps messages for `KeepArchivingDataForDays`
//! (default 14) and purges at `PurgeHourOfDay` (default 2). Here the
//! database core runs the purge against its engine: once a day at
//! `archive_purge_hour` (UTC), it reads the oldest rows by message time
//! ([`time_key`]: the engine's time index) a batch at a time, deletes those
//! older than `archive_keep_days` and not under a legal hold in one
//! transaction, pauses, and goes on until the next row is inside the
//! window. Ingest runs between the batches, so a purge of millions of rows
//! does not stall it; the pause is at least `archive_purge_pause` and long
//! enough that the purge takes at most `archive_purge_share` percent of the
//! database's time.
//!
//! What it did is never silent: `archive_purged` names the rows deleted,
//! the rows kept for a hold and the time range; a batch that fails raises
//! `archive_purge_failed` and is tried again after a pause. The gauges
//! `archive_last_purge_at` and `archive_purge_cutoff` tell when the last
//! purge finished and where it cut; `archive_purged` counts the rows.
//! Deleted rows are deleted from the engine, not flagged.

use crate::core::actor::Recovered;
use crate::core::actor::{Ctx, StoreError, StoreOp, Written};
use crate::core::engine::Query;
use crate::core::ids::Millis;
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
pub use crate::core::protocol::PurgeRecord;
use crate::core::protocol::Row;
use crate::core::settings::Settings;
use crate::core::store_keys::{self as keys, DB_PURGE, DB_ROW, DB_TIME};

use crate::core::daily::{self, DAY, HOUR};

/// The time index key of a row: `t/<time, 8 bytes big-endian><message id>`.
pub fn time_key(time: Millis, id: &str) -> Vec<u8> {
    let mut k = keys::key_u64(DB_TIME, time);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The message time and id a time index key names.
pub fn parse_time_key(key: &[u8]) -> Option<(Millis, String)> {
    let rest = key.strip_prefix(DB_TIME)?;
    if rest.len() < 8 {
        return None;
    }
    let (time, id) = rest.split_at(8);
    let time = u64::from_be_bytes(time.try_into().ok()?);
    Some((time, String::from_utf8(id.to_vec()).ok()?))
}

/// Whether a row must survive the purge: a legal hold covers it, or
/// (with `purge_exported_only`) no export has covered it yet. The database
/// core answers.
pub trait Holds {
    fn held(&self, from: &str, to: &str, time: Millis) -> bool;
    /// Whether an export wrote the row (only asked of rows not held).
    fn exported(&self, _row: &Row) -> bool {
        true
    }
}

/// One purge in progress.
#[derive(Debug)]
struct Run {
    /// Rows whose message time is before this go.
    cutoff: Millis,
    started_at: Millis,
    /// The last index key read: the next batch reads after it.
    after: Option<Vec<u8>>,
    /// Where the batch being deleted was read from: read again from there
    /// if its transaction fails.
    batch_from: Option<Vec<u8>>,
    deleted: u64,
    held: u64,
    /// Rows past the window kept because no export covered them.
    unexported: u64,
    /// Message times of the rows deleted: first and last.
    range: Option<(Millis, Millis)>,
    /// The batch being deleted: its count and times, until it commits.
    writing: Option<(u64, Millis, Millis)>,
    /// Reads failed in a row (the retry backs off with them).
    read_failures: u32,
}

/// A batch of index entries past the cutoff, waiting for their rows.
#[derive(Debug)]
struct Verifying {
    /// `(index key, time, message id)`.
    candidates: Vec<(Vec<u8>, Millis, String)>,
    /// The index ended, or reached the window, in this batch.
    last_batch: bool,
}

/// The purge's state, kept by the database core.
#[derive(Debug)]
pub struct Retention {
    keep: Millis,
    hour: Millis,
    batch: u32,
    pause: Millis,
    /// Percent of the database's time the purge may take.
    share: u64,
    /// When the batch being worked on was started (its read asked).
    batch_started: Millis,
    run: Option<Run>,
    last_at: Millis,
    last_cutoff: Millis,
    purged: u64,
    /// The write recording the end of a purge is in flight.
    finishing: bool,
    /// Index entries whose rows are being read before they are deleted.
    verifying: Option<Verifying>,
    /// The last purge's record (what an operator asks for).
    last: Option<PurgeRecord>,
    /// Sabotages `purge_ignores_window`, `purge_stops_early`,
    /// `purge_ignores_holds`.
    ignores_window: bool,
    stops_early: bool,
    ignores_holds: bool,
    waits_for_the_hour: bool,
    gives_up_on_failed_read: bool,
}

/// What the core does next for the purge.
pub enum Step {
    /// Read the next batch of the time index.
    Read(Query),
    /// Delete these rows (one transaction).
    Delete(Vec<StoreOp>),
    /// Nothing now (a timer is set).
    Wait,
}

impl Retention {
    pub fn new(settings: &Settings) -> Self {
        Retention {
            keep: settings.archive_keep_days.saturating_mul(DAY),
            hour: settings.archive_purge_hour.min(23) * HOUR,
            batch: settings.archive_purge_batch.clamp(1, 100_000) as u32,
            pause: settings.archive_purge_pause,
            share: settings.archive_purge_share.clamp(1, 100),
            batch_started: 0,
            run: None,
            last_at: 0,
            last_cutoff: 0,
            purged: 0,
            finishing: false,
            verifying: None,
            last: None,
            ignores_window: false,
            stops_early: false,
            ignores_holds: false,
            waits_for_the_hour: false,
            gives_up_on_failed_read: false,
        }
    }

    /// Applies the sabotages that concern the purge (for the checkers to
    /// find; production never sets them).
    pub fn sabotaged(mut self, sabotage: &crate::core::settings::Sabotage) -> Self {
        self.ignores_window = sabotage.purge_ignores_window;
        self.stops_early = sabotage.purge_stops_early;
        self.ignores_holds = sabotage.purge_ignores_holds;
        self.waits_for_the_hour = sabotage.purge_waits_for_the_hour;
        self.gives_up_on_failed_read = sabotage.purge_gives_up_on_failed_read;
        self
    }

    /// At start: a purge a crash cut off resumes at once, with its
    /// cutoff and counts; a purge hour that passed while the node was down
    /// (after the last purge began) is made up at once, said so; otherwise
    /// the next purge is set for the purge hour.
    pub fn start(&mut self, recovered: &Recovered, ctx: &mut Ctx) {
        self.run = None;
        self.verifying = None;
        let record = recovered.get(DB_PURGE).map(|v| {
            keys::decode_exact::<PurgeRecord>(v).or_else(|e| {
                keys::decode_exact::<crate::core::protocol::PurgeRecordV1>(v)
                    .map(Into::into)
                    .map_err(|_| e)
            })
        });
        match record {
            Some(Ok(r)) if r.finished_at.is_none() => {
                self.run = Some(Run {
                    cutoff: r.cutoff,
                    started_at: r.started_at,
                    after: None,
                    batch_from: None,
                    deleted: r.deleted,
                    held: 0,
                    unexported: 0,
                    range: r.range,
                    writing: None,
                    read_failures: 0,
                });
                ctx.set_timer(ArchivingTimer::Purge, 0);
                return;
            }
            Some(Ok(r)) => {
                self.last_at = r.finished_at.unwrap_or(0);
                self.last_cutoff = r.cutoff;
                let missed = daily::missed(r.started_at, ctx.now(), self.hour)
                    .filter(|_| !self.waits_for_the_hour);
                self.last = Some(r);
                if let Some(due) = missed {
                    // Waiting for tomorrow's hour would keep a day of rows
                    // past the window, silently: a purge that never runs
                    // is what operators of archives find too late.
                    ctx.event(
                        OperatorEvent::ArchivePurgeLate,
                        format!(
                            "archive purge: the purge due at {due} ms ({:02}:00 UTC) did not run, the node was down; it runs now",
                            self.hour / HOUR
                        ),
                    );
                    self.start_now(ctx);
                    return;
                }
            }
            Some(Err(e)) => ctx.event(
                OperatorEvent::StoreCorrupt,
                format!(
                    "archive purge: its record is unreadable ({e}): the next purge runs afresh"
                ),
            ),
            // A database that never purged waits for its first hour: its
            // rows are younger than the window unless they were brought in
            // from elsewhere (and a purge at every first start would delete
            // an imported archive before anyone could look at it).
            None => {}
        }
        self.schedule(ctx);
    }

    fn to_record(run: &Run, finished_at: Option<Millis>) -> PurgeRecord {
        PurgeRecord {
            cutoff: run.cutoff,
            started_at: run.started_at,
            finished_at,
            deleted: run.deleted,
            held: run.held,
            range: run.range,
            unexported: run.unexported,
        }
    }

    fn record(run: &Run, finished_at: Option<Millis>) -> StoreOp {
        StoreOp::Put {
            key: DB_PURGE.to_vec(),
            value: keys::encode(&Self::to_record(run, finished_at)),
        }
    }

    /// Sets the purge timer for the next purge hour after now.
    fn schedule(&self, ctx: &mut Ctx) {
        let now = ctx.now();
        ctx.set_timer(ArchivingTimer::Purge, daily::next_at(now, self.hour) - now);
    }

    /// An operator asked for a purge now: one starts at once unless one is
    /// running (then it goes on as it was).
    pub fn start_now(&mut self, ctx: &mut Ctx) {
        if self.run.is_none() {
            self.begin(ctx);
            ctx.set_timer(ArchivingTimer::Purge, 0);
        }
    }

    fn begin(&mut self, ctx: &mut Ctx) {
        let keep = if self.ignores_window { 0 } else { self.keep };
        self.run = Some(Run {
            cutoff: ctx.now().saturating_sub(keep),
            started_at: ctx.now(),
            after: None,
            batch_from: None,
            deleted: 0,
            held: 0,
            unexported: 0,
            range: None,
            writing: None,
            read_failures: 0,
        });
    }

    /// The purge timer: starts a purge, or reads the next batch of the one
    /// running (after its pause).
    pub fn on_timer(&mut self, ctx: &mut Ctx) -> Step {
        if self.run.is_none() {
            self.begin(ctx);
        }
        self.batch_started = ctx.now();
        Step::Read(self.read())
    }

    /// The pause after a batch that began at `batch_started` and ended
    /// now: long enough that the purge takes at most its share of the
    /// database's time. The database answers one request at a time, and
    /// ingest waits while a batch is read, checked and deleted; a fixed
    /// pause let a large purge take half the database's time, and ingest
    /// on a busy archive fell behind (send to archived p99 from 0.28 s to
    /// 4.2 s while a million rows went).
    fn pause_after_batch(&self, now: Millis) -> Millis {
        let took = now.saturating_sub(self.batch_started);
        let fair = took.saturating_mul(100 - self.share) / self.share;
        self.pause.max(fair)
    }

    fn read(&self) -> Query {
        let after = self.run.as_ref().and_then(|r| r.after.clone());
        Query::Scan {
            prefix: DB_TIME.to_vec(),
            from: after.map(|k| k[DB_TIME.len()..].to_vec()),
            reverse: false,
            limit: self.batch,
        }
    }

    /// The oldest rows after the last one read: deletes those before the
    /// cutoff and not held; ends the purge at the first row inside the
    /// window (or the end of the index).
    pub fn on_rows(
        &mut self,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        holds: &impl Holds,
        ctx: &mut Ctx,
    ) -> Step {
        if self.verifying.is_some() {
            // The answer to the rows' check (see below).
            return self.on_verified(rows, holds, ctx);
        }
        if self.stops_early && self.run.as_ref().is_some_and(|r| r.deleted > 0) {
            return self.finish(ctx);
        }
        let Some(run) = self.run.as_mut() else {
            return Step::Wait;
        };
        run.read_failures = 0;
        let full = rows.len() as u32 >= self.batch;
        run.batch_from = run.after.clone();
        let mut candidates = Vec::new();
        let mut reached_window = false;
        for (key, _) in rows {
            let Some((time, id)) = parse_time_key(&key) else {
                ctx.event(
                    OperatorEvent::StoreCorrupt,
                    format!("archive purge: unreadable time index key {key:?}: skipped"),
                );
                run.after = Some(key);
                continue;
            };
            if time >= run.cutoff {
                reached_window = true;
                break;
            }
            run.after = Some(key.clone());
            candidates.push((key, time, id));
        }
        if candidates.is_empty() {
            if reached_window || !full {
                return self.finish(ctx);
            }
            return Step::Read(self.read());
        }
        // The index says when; the row decides. A message sent again (a
        // dead letter resent starts a new life with a new time) may have
        // left an entry at a time that is not its row's: read the rows,
        // and delete only those whose own time is past the window.
        let keys = candidates
            .iter()
            .map(|(_, _, id)| keys::key_str(DB_ROW, id))
            .collect();
        self.verifying = Some(Verifying {
            candidates,
            last_batch: reached_window || !full,
        });
        Step::Read(Query::Get { keys })
    }

    /// The rows of a batch of index entries: deletes the rows past the
    /// window and not held, and the index entries that name no such row.
    fn on_verified(
        &mut self,
        values: Vec<(Vec<u8>, Vec<u8>)>,
        holds: &impl Holds,
        ctx: &mut Ctx,
    ) -> Step {
        let Some(Verifying {
            candidates,
            last_batch,
        }) = self.verifying.take()
        else {
            return Step::Wait;
        };
        let ignores_holds = self.ignores_holds;
        let Some(run) = self.run.as_mut() else {
            return Step::Wait;
        };
        // A `Get` answers one value per key, in order (empty: no row).
        let mut ops = Vec::new();
        let mut rows_deleted = 0u64;
        let (mut first, mut last) = (Millis::MAX, 0);
        for ((key, time, id), (_, value)) in candidates.into_iter().zip(values) {
            let row: Option<Row> = if value.is_empty() {
                None
            } else {
                match keys::decode(&value) {
                    Ok(row) => Some(row),
                    Err(e) => {
                        ctx.event(
                            OperatorEvent::StoreCorrupt,
                            format!("archive purge: message {id}: unreadable row ({e}): kept"),
                        );
                        run.held += 1;
                        continue;
                    }
                }
            };
            match row {
                // The row's own time is past the window.
                Some(row) if row.record.time == time && time < run.cutoff => {
                    let r = &row.record;
                    if !ignores_holds && holds.held(&r.from, &r.to, time) {
                        run.held += 1;
                        continue;
                    }
                    if !holds.exported(&row) {
                        run.unexported += 1;
                        continue;
                    }
                    first = first.min(time);
                    last = last.max(time);
                    rows_deleted += 1;
                    ops.push(StoreOp::Delete {
                        key: keys::key_str(DB_ROW, &id),
                    });
                    ops.push(StoreOp::Delete { key });
                }
                // An entry naming no row, or a row of another time (which
                // has its own entry): only the entry goes.
                _ => ops.push(StoreOp::Delete { key }),
            }
        }
        if ops.is_empty() {
            if last_batch {
                return self.finish(ctx);
            }
            return Step::Read(self.read());
        }
        run.writing = Some((rows_deleted, first, last));
        // The record as it will be once this batch commits.
        let after = Run {
            deleted: run.deleted + rows_deleted,
            range: match (run.range, rows_deleted) {
                (r, 0) => r,
                (Some((a, b)), _) => Some((a.min(first), b.max(last))),
                (None, _) => Some((first, last)),
            },
            after: None,
            batch_from: None,
            writing: None,
            read_failures: 0,
            ..*run
        };
        ops.push(Self::record(&after, None));
        Step::Delete(ops)
    }

    /// A purge transaction committed or failed.
    pub fn on_written(&mut self, result: Result<Written, StoreError>, ctx: &mut Ctx) -> u64 {
        if std::mem::take(&mut self.finishing) {
            match result {
                Ok(_) => self.finished(ctx),
                Err(e) => {
                    // The rows are gone; only the record of the end is
                    // not: the next start finishes it.
                    ctx.event(
                        OperatorEvent::ArchivePurgeFailed,
                        format!("archive purge: its end could not be recorded ({e})"),
                    );
                    self.finished(ctx);
                }
            }
            return 0;
        }
        let Some(run) = self.run.as_mut() else {
            return 0;
        };
        let Some((n, first, last)) = run.writing.take() else {
            return 0;
        };
        match result {
            Ok(_) => {
                run.deleted += n;
                run.range = Some(match run.range {
                    Some((a, b)) => (a.min(first), b.max(last)),
                    None => (first, last),
                });
                self.purged += n;
                let pause = self.pause_after_batch(ctx.now());
                ctx.set_timer(ArchivingTimer::Purge, pause);
                n
            }
            Err(e) => {
                // Read again from the batch's start after a longer pause:
                // nothing of it was deleted.
                ctx.event(
                    OperatorEvent::ArchivePurgeFailed,
                    format!(
                        "archive purge: deleting {n} rows failed ({e}); tried again in {} ms",
                        self.pause.max(1_000) * 10
                    ),
                );
                run.after = run.batch_from.clone();
                ctx.set_timer(ArchivingTimer::Purge, self.pause.max(1_000) * 10);
                0
            }
        }
    }

    /// A read of the index or of a batch's rows failed: said so, and the
    /// same purge (same cutoff) reads again from the batch's start after a
    /// pause. Giving up until the next purge hour would keep a day of rows
    /// past the window whenever the database was down at the hour.
    pub fn on_read_failed(&mut self, e: &StoreError, ctx: &mut Ctx) {
        let rows_read = self.verifying.take().is_some();
        let Some(run) = self.run.as_mut() else {
            return;
        };
        if rows_read {
            // The batch's index entries were passed over: read them again.
            run.after = run.batch_from.clone();
        }
        if self.gives_up_on_failed_read {
            ctx.event(
                OperatorEvent::ArchivePurgeFailed,
                format!("archive purge stopped: a read failed ({e})"),
            );
            self.run = None;
            return self.schedule(ctx);
        }
        // 10 pauses (at least 10 s), doubling with each failure in a row
        // up to 5 minutes: a database down for an hour is not told every
        // 10 s.
        let retry = (self.pause.max(1_000) * 10)
            .saturating_mul(1 << run.read_failures.min(8))
            .min(300_000);
        run.read_failures += 1;
        ctx.event(
            OperatorEvent::ArchivePurgeFailed,
            format!(
                "archive purge: a read failed after {} rows deleted ({e}); tried again in {retry} ms",
                run.deleted
            ),
        );
        ctx.set_timer(ArchivingTimer::Purge, retry);
    }

    /// The purge is done: its record says so (one more small write), then
    /// the event, and the next purge is set.
    fn finish(&mut self, ctx: &mut Ctx) -> Step {
        let Some(run) = self.run.as_ref() else {
            return Step::Wait;
        };
        self.finishing = true;
        Step::Delete(vec![Self::record(run, Some(ctx.now()))])
    }

    fn finished(&mut self, ctx: &mut Ctx) {
        let Some(run) = self.run.take() else {
            return;
        };
        self.last_at = ctx.now();
        self.last_cutoff = run.cutoff;
        self.last = Some(Self::to_record(&run, Some(self.last_at)));
        let range = match run.range {
            Some((a, b)) => format!(", message times {a} to {b} ms"),
            None => String::new(),
        };
        ctx.event(
            OperatorEvent::ArchivePurged,
            format!(
                "archive purge: {} rows older than {} ms deleted, {} kept for a legal hold, {} kept as not exported{range}",
                run.deleted, run.cutoff, run.held, run.unexported
            ),
        );
        self.schedule(ctx);
    }

    /// The purge running, or the last one since start (from its record).
    pub fn record_now(&self) -> Option<PurgeRecord> {
        self.run
            .as_ref()
            .map(|run| Self::to_record(run, None))
            .or_else(|| self.last.clone())
    }

    /// The retention window, in days, and the purge hour.
    pub fn policy(&self) -> (u64, u64) {
        (self.keep / DAY, self.hour / HOUR)
    }

    pub fn gauges(&self) -> [(Gauge, u64); 3] {
        [
            (Gauge::ArchiveLastPurgeAt, self.last_at),
            (Gauge::ArchivePurgeCutoff, self.last_cutoff),
            (Gauge::ArchivePurged, self.purged),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pause after a batch keeps the purge to its share of the
    /// database's time, and never below the configured least pause.
    #[test]
    fn the_pause_keeps_the_purge_to_its_share() {
        let mut r = Retention::new(&Settings {
            archive_purge_pause: 100,
            archive_purge_share: 10,
            ..Settings::default()
        });
        r.batch_started = 1_000;
        assert_eq!(
            r.pause_after_batch(1_005),
            100,
            "a quick batch: the least pause"
        );
        assert_eq!(r.pause_after_batch(1_090), 810, "90 ms of work: 810 ms off");
        let mut all = Retention::new(&Settings {
            archive_purge_pause: 0,
            archive_purge_share: 100,
            ..Settings::default()
        });
        all.batch_started = 1_000;
        assert_eq!(
            all.pause_after_batch(1_090),
            0,
            "a share of 100 %: no pause"
        );
    }
}

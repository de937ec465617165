//! The group chat checker: compares what the chat clients saw with the
//! chat store's durable posts — every accepted post stored exactly once,
//! in per-room order, and delivered exactly once, in order, to every member
//! subscribed when it was posted; nothing reaching anyone behind an
//! ethical wall.
//!
//! Where an operator managed records: a cleared post is gone from the
//! store — no row, and its text nowhere in the store's values — and no
//! reader receives it once the clear is answered (after a grace for
//! copies in flight); numbers a clear covers are never given out again;
//! posts after the range stay; a replaced post is stored with the new
//! text, and readers get the new text once the replace is answered; no
//! post is accepted in a disabled room; a number a client skipped as
//! cleared holds no stored post.

use crate::oracle::chat_log::{ChatLog, PostOutcome};
use holdfast_actors::core::protocol::chat::Post;
use holdfast_actors::core::protocol::ChatPurgeRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// The chat checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChatCounts {
    pub posts: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub unknown: u64,
    pub stored: u64,
    /// Accepted but not in the store.
    pub lost: u64,
    /// A post id stored under two sequence numbers.
    pub duplicates: u64,
    /// Stored but never posted.
    pub phantoms: u64,
    /// Holes in a room's sequence, a post stored under another number than
    /// its author was told, or stored content that differs from what was sent.
    pub order_errors: u64,
    /// Owed deliveries that never happened (member subscribed, post after
    /// its baseline).
    pub missed: u64,
    /// Deliveries owed and made.
    pub delivered: u64,
    /// A delivery whose post differs from the store's at that number.
    pub wrong_deliveries: u64,
    /// Copies received by someone walled off the room.
    pub wall_breaches: u64,
    pub refused_joins: u64,
    pub busy: u64,
    pub reconnects: u64,
    pub post_retries: u64,
    pub leaves: u64,
    /// Copies that arrived again and were dropped by the client.
    pub redundant: u64,
    pub files_stored: u64,
    /// Acknowledged files missing from the Web service's durable store.
    pub files_lost: u64,
    pub files_downloaded: u64,
    pub files_corrupt: u64,
    pub file_refusals: u64,
    /// Accepted posts an operator's clear removed (not lost).
    pub cleared: u64,
    pub replaced: u64,
    pub disabled: u64,
    /// Numbers clients skipped as cleared while catching up.
    pub skipped: u64,
    /// Records management not done as it must be (see the module doc).
    pub records_errors: u64,
    /// Operator actions that never got done.
    pub records_failed: u64,
    /// Accepted posts absent because a retention purge deleted them: past
    /// their room's window when the purge began. Allowed.
    pub purged: u64,
    /// Posts past their room's window when a finished purge began, within
    /// the numbers it covered, still stored: kept past the window.
    pub unpurged: u64,
    pub examples: BTreeMap<&'static str, Vec<String>>,
    /// Compliance findings, when the pool has a Compliance service.
    pub compliance: Option<crate::oracle::compliance_checker::ComplianceCounts>,
}

/// Copies in flight when an operator's action was answered may still
/// arrive this long after it.
pub const RECORDS_GRACE_MS: u64 = 5_000;

/// The chat store's last retention purge, and each room's window as the
/// scenario sets it: the checker's own cutoff for a room is the purge's
/// start minus the window, whatever cutoff the purge recorded.
pub struct ChatRetention<'a> {
    pub record: &'a ChatPurgeRecord,
    /// Window per room, in ms (absent or 0: kept for ever).
    pub keep_ms: BTreeMap<String, u64>,
}

impl ChatRetention<'_> {
    /// The cutoff the purge must have applied to `room`, and how far (by
    /// number) it covered and got: `(cutoff, through, purged)`.
    fn room(&self, room: &str) -> Option<(u64, u64, u64)> {
        let part = self.record.rooms.get(room)?;
        let keep = self.keep_ms.get(room).copied().filter(|k| *k > 0)?;
        Some((
            self.record.started_at.saturating_sub(keep),
            part.through,
            part.purged,
        ))
    }
}

/// Compares what the chat clients saw with the store's durable posts and
/// the Web service's durable files (id → size); `store_values` is every
/// value the chat store holds outside its compliance outbox, where no
/// cleared text may remain; `retention`, the store's last purge.
pub fn check(
    log: &ChatLog,
    stored: &[(u64, Post)],
    files: &BTreeMap<String, u64>,
    store_values: &[u8],
    retention: Option<&ChatRetention>,
) -> ChatCounts {
    let mut c = ChatCounts::default();
    for (id, f) in &log.files {
        c.files_stored += 1;
        if files.get(id) != Some(&f.size) {
            c.files_lost += 1;
            c.examples
                .entry("files_lost")
                .or_default()
                .push(format!("{id} ({} in {})", f.name, f.room));
        }
    }
    c.files_downloaded = log.downloads_ok;
    c.files_corrupt = log.downloads_corrupt.len() as u64;
    c.file_refusals = log.file_refusals.len() as u64;
    let example = |c: &mut ChatCounts, what: &'static str, s: String| {
        super::keep_example(&mut c.examples, what, s);
    };
    for f in &log.downloads_corrupt {
        example(&mut c, "files_corrupt", f.clone());
    }
    for f in &log.file_refusals {
        example(&mut c, "file_refusals", f.clone());
    }
    // Records management not done as it must be: counted, and kept as an
    // example.
    let records_error = |c: &mut ChatCounts, s: String| {
        c.records_errors += 1;
        example(c, "records", s);
    };
    // room → seq → post
    let mut rooms: BTreeMap<&str, BTreeMap<u64, &Post>> = BTreeMap::new();
    let mut by_id: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
    for (seq, post) in stored {
        c.stored += 1;
        rooms.entry(&post.room).or_default().insert(*seq, post);
        by_id.entry(&post.id).or_default().push((&post.room, *seq));
    }
    // The highest number a clear covers, per room: below it, numbers
    // without a post are cleared, not holes.
    let mut floor: BTreeMap<&str, u64> = BTreeMap::new();
    for cl in &log.clears {
        let f = floor.entry(cl.room.as_str()).or_default();
        *f = (*f).max(cl.through);
    }
    // So does a retention purge, up to where it got.
    if let Some(r) = retention {
        for (room, part) in &r.record.rooms {
            let f = floor.entry(room.as_str()).or_default();
            *f = (*f).max(part.purged.min(part.through));
        }
    }
    // Whether the purge must have deleted `room#seq` sent (or stored) at
    // `at`: `Some(done)`, with whether the purge finished, or `None`.
    let purging = |room: &str, seq: u64, at: u64| -> Option<bool> {
        let r = retention?;
        let (cutoff, through, purged) = r.room(room)?;
        let finished = r.record.finished_at.is_some();
        (at < cutoff && seq <= through && (finished || seq <= purged)).then_some(finished)
    };
    for (room, posts) in &rooms {
        let cleared_upto = floor.get(room).copied().unwrap_or(0);
        let mut expect = 1;
        for seq in posts.keys() {
            if *seq != expect && expect > cleared_upto {
                c.order_errors += 1;
                example(
                    &mut c,
                    "order_errors",
                    format!("{room}: seq {seq} where {expect} was next"),
                );
                break;
            }
            expect = seq + 1;
        }
    }
    let replaced: BTreeMap<&str, &str> = log
        .replaces
        .iter()
        .map(|r| (r.post.as_str(), r.text.as_str()))
        .collect();
    // Whether a clear covers post `id` posted at `sent_ms` as `room#seq`:
    // `Some(true)` surely (sent before the cut), `Some(false)` perhaps
    // (sent just before the cut, received after it), `None` not.
    let covering = |room: &str, seq: u64, sent_ms: u64| -> Option<bool> {
        log.clears
            .iter()
            .filter(|cl| cl.room == room && seq <= cl.through)
            .map(|cl| match cl.before {
                None => Some(true),
                Some(b) if sent_ms + RECORDS_GRACE_MS < b => Some(true),
                Some(b) if sent_ms < b => Some(false),
                Some(_) => None,
            })
            .max()
            .flatten()
    };
    for (id, places) in &by_id {
        if places.len() > 1 {
            c.duplicates += places.len() as u64 - 1;
            example(&mut c, "duplicates", format!("{id} at {places:?}"));
        }
        if !log.posts.contains_key(*id) {
            c.phantoms += 1;
            example(&mut c, "phantoms", id.to_string());
        }
    }
    for (id, op) in &log.posts {
        c.posts += 1;
        match &op.outcome {
            PostOutcome::Accepted { seq } => {
                c.accepted += 1;
                let covered = covering(&op.room, *seq, op.sent_ms);
                // A number a clear covers, given to a post sent after the
                // clear was answered: a number used twice.
                if let Some(cl) = log
                    .clears
                    .iter()
                    .find(|cl| cl.room == op.room && *seq <= cl.through && op.sent_ms > cl.done_ms)
                {
                    records_error(
                        &mut c,
                        format!(
                            "{id} sent after the clear of {} through #{} got #{seq}",
                            cl.room, cl.through
                        ),
                    );
                }
                if let Some(d) = log
                    .disables
                    .iter()
                    .find(|d| d.room == op.room && op.sent_ms > d.done_ms + RECORDS_GRACE_MS)
                {
                    records_error(
                        &mut c,
                        format!("{id} accepted in {} after it was disabled", d.room),
                    );
                }
                match by_id.get(id.as_str()) {
                    None if covered.is_some() => c.cleared += 1,
                    None if purging(&op.room, *seq, op.sent_ms).is_some() => c.purged += 1,
                    None => {
                        c.lost += 1;
                        example(&mut c, "lost", id.clone());
                    }
                    Some(_) if covered == Some(true) => {
                        records_error(
                            &mut c,
                            format!("{id} ({}#{seq}) cleared yet still stored", op.room),
                        );
                    }
                    Some(places)
                        if purging(&op.room, *seq, rooms[places[0].0][&places[0].1].at)
                            == Some(true) =>
                    {
                        c.unpurged += 1;
                        example(
                            &mut c,
                            "unpurged",
                            format!("{id} ({}#{seq}) past the window, still stored", op.room),
                        );
                    }
                    Some(places) => {
                        let post = rooms[places[0].0][&places[0].1];
                        let text_ok = match replaced.get(id.as_str()) {
                            Some(new) => post.text == *new,
                            None => post.text == op.text,
                        };
                        if places[0] != (op.room.as_str(), *seq)
                            || !text_ok
                            || post.author != op.author
                        {
                            c.order_errors += 1;
                            example(
                                &mut c,
                                "order_errors",
                                format!("{id}: told {}#{seq}, stored {places:?}", op.room),
                            );
                        }
                    }
                }
            }
            PostOutcome::Rejected(reason) => {
                c.rejected += 1;
                // A definite refusal must mean not stored. "Store
                // unavailable" leaves the post's fate open (a timed-out
                // write may still land: the author retries the same id).
                if !reason.starts_with("StoreUnavailable") && by_id.contains_key(id.as_str()) {
                    c.phantoms += 1;
                    example(
                        &mut c,
                        "phantoms",
                        format!("{id}: refused ({reason}) yet stored"),
                    );
                }
            }
            PostOutcome::Unknown => c.unknown += 1,
        }
    }
    for ((user, room), view) in &log.views {
        c.redundant += view.redundant;
        c.wall_breaches += view.received_while_walled;
        if view.received_while_walled > 0 {
            example(
                &mut c,
                "wall_breaches",
                format!("{user} got {} posts of {room}", view.received_while_walled),
            );
        }
        if log.walled.contains(&(user.clone(), room.clone())) {
            continue;
        }
        let Some(baseline) = view.baseline else {
            continue;
        };
        let Some(posts) = rooms.get(room.as_str()) else {
            continue;
        };
        c.skipped += view.skipped.len() as u64;
        for seq in &view.skipped {
            if let Some(post) = posts.get(seq) {
                records_error(
                    &mut c,
                    format!(
                        "{user} skipped {room}#{seq} as cleared: {} is stored",
                        post.id
                    ),
                );
            }
        }
        // A disabled room takes no joins: a member away when it was
        // disabled cannot catch up until it is enabled (its posts are
        // kept, as the store's check shows).
        let closed = log.disables.iter().any(|d| d.room == *room);
        for (seq, post) in posts.range(baseline + 1..) {
            match view.delivered.get(seq) {
                None if closed => {}
                None => {
                    c.missed += 1;
                    example(
                        &mut c,
                        "missed",
                        format!("{user}: {room}#{seq} ({})", post.id),
                    );
                }
                Some(id) if post.id != *id => {
                    c.wrong_deliveries += 1;
                    example(
                        &mut c,
                        "wrong_deliveries",
                        format!("{user}: {room}#{seq} got {id}, stored {}", post.id),
                    );
                }
                Some(_) => c.delivered += 1,
            }
        }
    }
    c.replaced = log.replaces.len() as u64;
    c.disabled = log.disables.len() as u64;
    c.records_failed = log.records_failed.len() as u64;
    for f in &log.records_failed {
        example(&mut c, "records_failed", f.clone());
    }
    // What readers received after each action was answered.
    let cleared_ids: BTreeMap<&str, u64> = log
        .posts
        .iter()
        .filter_map(|(id, op)| match op.outcome {
            PostOutcome::Accepted { seq } => covering(&op.room, seq, op.sent_ms)
                .filter(|sure| *sure)
                .and_then(|_| {
                    log.clears
                        .iter()
                        .filter(|cl| cl.room == op.room && seq <= cl.through)
                        .map(|cl| cl.done_ms)
                        .min()
                })
                .map(|done| (id.as_str(), done)),
            _ => None,
        })
        .collect();
    let replaced_at: BTreeMap<&str, (u64, &str)> = log
        .replaces
        .iter()
        .map(|r| (r.post.as_str(), (r.done_ms, r.text.as_str())))
        .collect();
    for r in &log.receipts {
        if let Some(done) = cleared_ids.get(r.post.as_str()) {
            if r.at_ms > done + RECORDS_GRACE_MS {
                records_error(
                    &mut c,
                    format!(
                        "{} received cleared post {} at {} ms",
                        r.user, r.post, r.at_ms
                    ),
                );
            }
        }
        if let Some((done, text)) = replaced_at.get(r.post.as_str()) {
            if r.at_ms > done + RECORDS_GRACE_MS && r.text != *text {
                records_error(
                    &mut c,
                    format!(
                        "{} received {} with its old text at {} ms",
                        r.user, r.post, r.at_ms
                    ),
                );
            }
        }
    }
    // A cleared post's text must be nowhere in the store.
    for id in cleared_ids.keys() {
        let text = log.posts[*id].text.as_bytes();
        if !text.is_empty() && store_values.windows(text.len()).any(|w| w == text) {
            records_error(
                &mut c,
                format!("the text of cleared post {id} is still in the store"),
            );
        }
    }
    c.refused_joins = log.refused_joins;
    c.busy = log.busy;
    c.reconnects = log.reconnects;
    c.post_retries = log.post_retries;
    c.leaves = log.leaves;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::chat_log::{FileRecord, PostOp};

    fn post(id: &str, room: &str, text: &str) -> Post {
        Post {
            id: id.into(),
            room: room.into(),
            author: "a".into(),
            text: text.into(),
            at: 0,
        }
    }

    fn log() -> ChatLog {
        let mut log = ChatLog::default();
        for (id, seq) in [("p1", 1), ("p2", 2), ("p3", 3)] {
            log.posts.insert(
                id.into(),
                PostOp {
                    room: "r".into(),
                    author: "a".into(),
                    text: id.into(),
                    outcome: PostOutcome::Accepted { seq },
                    sent_ms: 0,
                },
            );
        }
        let view = log.views.entry(("b".into(), "r".into())).or_default();
        view.baseline = Some(0);
        for (seq, id) in [(1, "p1"), (2, "p2"), (3, "p3")] {
            view.delivered.insert(seq, id.into());
        }
        log.files.insert(
            "web1-1".into(),
            FileRecord {
                room: "r".into(),
                name: "f".into(),
                size: 10,
            },
        );
        log
    }

    fn stored() -> Vec<(u64, Post)> {
        vec![
            (1, post("p1", "r", "p1")),
            (2, post("p2", "r", "p2")),
            (3, post("p3", "r", "p3")),
        ]
    }

    fn files() -> BTreeMap<String, u64> {
        BTreeMap::from([("web1-1".to_string(), 10)])
    }

    /// A clear's posts are counted as cleared, not lost; one still stored,
    /// its text left in the store, or its number given out again is a
    /// records error; a replaced post is checked against the new text.
    #[test]
    fn records_management_is_checked() {
        use crate::oracle::chat_log::{ClearRecord, ReplaceRecord};
        let mut l = log();
        l.clears.push(ClearRecord {
            room: "r".into(),
            before: None,
            through: 2,
            done_ms: 100,
        });
        let survivors = &stored()[2..];
        let c = check(&l, survivors, &files(), b"other bytes", None);
        assert_eq!(
            (c.lost, c.cleared, c.records_errors, c.order_errors),
            (0, 2, 0, 0)
        );
        // Hidden but kept: the row, and the text in the store's values.
        let c = check(&l, &stored(), &files(), b"...p1...", None);
        assert_eq!(c.records_errors, 2 + 1, "{:?}", c.examples);
        // A number the clear covered, given to a post sent after it.
        let mut reused = l.clone();
        reused.posts.insert(
            "p9".into(),
            PostOp {
                room: "r".into(),
                author: "a".into(),
                text: "p9".into(),
                outcome: PostOutcome::Accepted { seq: 2 },
                sent_ms: 200,
            },
        );
        let mut again = survivors.to_vec();
        again.push((2, post("p9", "r", "p9")));
        assert!(check(&reused, &again, &files(), &[], None).records_errors > 0);
        // A replace: the store holds the new text.
        let mut r = log();
        r.replaces.push(ReplaceRecord {
            post: "p2".into(),
            room: "r".into(),
            seq: 2,
            text: "new".into(),
            done_ms: 100,
        });
        let mut replaced = stored();
        replaced[1].1.text = "new".into();
        assert_eq!(check(&r, &replaced, &files(), &[], None).order_errors, 0);
        assert!(check(&r, &stored(), &files(), &[], None).order_errors > 0);
    }

    #[test]
    fn a_clean_history_passes_and_each_kind_of_damage_is_counted() {
        let c = check(&log(), &stored(), &files(), &[], None);
        assert_eq!((c.lost, c.missed, c.delivered, c.files_lost), (0, 0, 3, 0));

        // A post the store lost, and so a delivery that cannot be owed.
        let c = check(&log(), &stored()[..2], &files(), &[], None);
        assert_eq!(c.lost, 1);
        // A post stored twice.
        let mut twice = stored();
        twice.push((4, post("p3", "r", "p3")));
        assert_eq!(check(&log(), &twice, &files(), &[], None).duplicates, 1);
        // A delivery that never came.
        let mut l = log();
        l.views
            .get_mut(&("b".into(), "r".into()))
            .unwrap()
            .delivered
            .remove(&2);
        assert_eq!(check(&l, &stored(), &files(), &[], None).missed, 1);
        // A walled user that received something.
        let mut l = log();
        l.views
            .get_mut(&("b".into(), "r".into()))
            .unwrap()
            .received_while_walled = 2;
        assert_eq!(check(&l, &stored(), &files(), &[], None).wall_breaches, 2);
        // A file the Web service does not hold, and a corrupt download.
        assert_eq!(
            check(&log(), &stored(), &BTreeMap::new(), &[], None).files_lost,
            1
        );
        let mut l = log();
        l.downloads_corrupt.push("x".into());
        assert_eq!(check(&l, &stored(), &files(), &[], None).files_corrupt, 1);
        // Content stored under another number than the author was told.
        let mut moved = stored();
        moved.swap(0, 1);
        moved[0].0 = 1;
        moved[1].0 = 2;
        assert!(check(&log(), &moved, &files(), &[], None).order_errors > 0);
    }
}

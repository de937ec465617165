//! The link: numbered items sent in order inside a window, acknowledged
//! cumulatively, probed after a silence with backoff, and sent again from
//! the first unacknowledged one (go-back-N) when a probe's answer shows
//! that transfers were lost.
//!
//! It is pure: it holds the items and the link's positions, and says what
//! to send and when to set the resend timer; the caller sends, persists
//! and sets timers. The outgoing queue sends each item as a transfer inside
//! a window and probes after a silence; a compliance outbox sends a batch
//! at a time (a window of one batch) and goes back on its resend timer.

use crate::core::ids::Millis;
pub use crate::core::ids::Seq;
use std::collections::{BTreeMap, VecDeque};

/// What the link sends: each item in order, then possibly a hole.
pub struct Sending<T> {
    /// Items to send, with their sequence numbers, in order.
    pub items: Vec<(Seq, T)>,
    /// The next item to send is missing: only a damaged store can leave a
    /// hole; the caller says so.
    pub missing: Option<Seq>,
}

/// The answer to a cumulative acknowledgement.
pub enum Acked<T> {
    /// Beyond the last number given out: refused.
    Beyond { last: Seq },
    /// Nothing new acknowledged.
    Stale { backing_off: bool },
    /// New items acknowledged: removed from the link, in order.
    Advanced { backing_off: bool, items: Vec<T> },
}

/// A probe to send: the first unacknowledged item, numbered.
pub struct Probe<T> {
    pub seq: Seq,
    pub item: T,
    pub probe: u64,
}

#[derive(Debug)]
pub struct Link<T> {
    /// Items held and not yet acknowledged (and, until the caller removes
    /// them, acknowledged ones not yet deleted).
    items: BTreeMap<Seq, T>,
    next_seq: Seq,
    /// Highest seq the destination acknowledged.
    acked: Seq,
    /// Highest seq sent in the current round.
    sent: Seq,
    /// Items in flight at most.
    window: u64,
    /// Frames sent in the current round and not acknowledged yet: the last
    /// seq of each, in order. Only bounded ([`Link::with_frames`]) links
    /// keep them.
    frames: VecDeque<Seq>,
    /// Frames in flight at most (0: no bound, one item per frame).
    frames_max: usize,
    /// Probes sent so far (numbers them).
    probes: u64,
    /// The latest probe (number, highest seq sent before it) while it is
    /// unanswered: its answer tells whether anything up to there was lost.
    /// An earlier probe's answer comes from before transfers the latest
    /// one followed, and is not used.
    probe: Option<(u64, Seq)>,
    acked_at_last_check: Seq,
    resend_interval: Millis,
    backoff_max: Millis,
    interval: Millis,
    /// Whether the resend timer is set. It is only while something is in
    /// flight or acknowledged but not yet deleted: an idle queue sets no
    /// timer, and the first transfer after a quiet spell gets a whole
    /// interval before it is probed.
    resend_armed: bool,
    /// Probes sent after a silence (the resends gauge).
    resends: u64,
}

impl<T: Clone> Link<T> {
    pub fn new(window: u64, resend_interval: Millis, backoff_max: Millis) -> Self {
        Link {
            items: BTreeMap::new(),
            next_seq: Seq::FIRST,
            acked: Seq::ZERO,
            sent: Seq::ZERO,
            window,
            frames: VecDeque::new(),
            frames_max: 0,
            probes: 0,
            probe: None,
            acked_at_last_check: Seq::ZERO,
            resend_interval,
            backoff_max,
            interval: resend_interval,
            resend_armed: false,
            resends: 0,
        }
    }

    /// Bounds the frames in flight to `frames`: [`Link::take_frame`] then
    /// lets a frame go only while fewer are unacknowledged, and what comes
    /// meanwhile waits to go together in the next one (a batch per frame,
    /// as group commit does for fsyncs).
    pub fn with_frames(mut self, frames: u64) -> Self {
        self.frames_max = frames.max(1) as usize;
        self
    }

    /// Frames in flight in the current round.
    pub fn frames_in_flight(&self) -> usize {
        self.frames.len()
    }

    /// Items after the acknowledged point, in order.
    pub fn unacked(&self) -> impl Iterator<Item = (&Seq, &T)> {
        self.items.range(self.acked.next()..)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn contains(&self, seq: Seq) -> bool {
        self.items.contains_key(&seq)
    }

    /// Holds `item` at `seq`; returns what was there.
    pub fn insert(&mut self, seq: Seq, item: T) -> Option<T> {
        self.items.insert(seq, item)
    }

    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The last number given out.
    pub fn last(&self) -> Seq {
        Seq(self.next_seq.0 - 1)
    }

    /// Gives out the next number.
    pub fn number(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        seq
    }

    /// Numbering goes on from `seq` (a number given back, or one learnt).
    pub fn number_from(&mut self, seq: Seq) {
        self.next_seq = seq;
    }

    pub fn acked(&self) -> Seq {
        self.acked
    }

    pub fn resends(&self) -> u64 {
        self.resends
    }

    pub fn in_flight(&self) -> bool {
        self.sent > self.acked
    }

    pub fn backing_off(&self) -> bool {
        self.interval > self.resend_interval
    }

    /// A fresh start from what the store holds: everything after `acked`
    /// is sent again.
    pub fn restart(&mut self, acked: Seq) {
        self.items.clear();
        self.acked = acked;
        self.frames.clear();
        self.resend_armed = false;
    }

    /// After recovery: numbering goes on after `max`, and everything
    /// unacknowledged is sent again.
    pub fn recovered(&mut self, max: Seq) {
        self.next_seq = max.next();
        self.sent = self.acked;
        self.frames.clear();
        self.probe = None;
        self.acked_at_last_check = self.acked;
        self.interval = self.resend_interval;
    }

    /// Takes what the window lets out, in order.
    pub fn take_sendable(&mut self) -> Sending<T> {
        self.take_sendable_while(|_| true)
    }

    /// Takes what the window lets out, in order, while `more` accepts the
    /// next item (it sees each item once, before it is taken).
    pub fn take_sendable_while(&mut self, mut more: impl FnMut(&T) -> bool) -> Sending<T> {
        let last = self.last();
        let mut items = Vec::new();
        let mut missing = None;
        while self.sent < last && self.sent.0 - self.acked.0 < self.window {
            let seq = self.sent.next();
            let Some(item) = self.items.get(&seq) else {
                missing = Some(seq);
                break;
            };
            if !more(item) {
                break;
            }
            let item = item.clone();
            self.sent = seq;
            items.push((seq, item));
        }
        Sending { items, missing }
    }

    /// The items of the next frame, in order, while `more` accepts the next
    /// one: nothing while the frames in flight are at their bound. Every
    /// item taken goes in this one frame; an acknowledgement that covers
    /// its last item frees its place.
    pub fn take_frame(&mut self, more: impl FnMut(&T) -> bool) -> Sending<T> {
        if self.frames_max > 0 && self.frames.len() >= self.frames_max {
            return Sending {
                items: Vec::new(),
                missing: None,
            };
        }
        let sending = self.take_sendable_while(more);
        if let Some((last, _)) = sending.items.last() {
            if self.frames_max > 0 {
                self.frames.push_back(*last);
            }
        }
        sending
    }

    /// Sets the resend timer if there is something to watch (`needed`) and
    /// it is not set; the interval starts afresh. Returns the delay to set
    /// it to.
    pub fn arm(&mut self, needed: bool) -> Option<Millis> {
        if !self.resend_armed && needed {
            self.resend_armed = true;
            self.interval = self.resend_interval;
            self.acked_at_last_check = self.acked;
            return Some(self.interval);
        }
        None
    }

    /// The first unacknowledged item again, behind everything in flight,
    /// to learn whether what was sent before it arrived; `Err` with its
    /// number if it is missing.
    pub fn probe(&mut self) -> Result<Probe<T>, Seq> {
        let seq = self.acked.next();
        let item = self.items.get(&seq).cloned().ok_or(seq)?;
        self.probes += 1;
        self.probe = Some((self.probes, self.sent));
        Ok(Probe {
            seq,
            item,
            probe: self.probes,
        })
    }

    /// Counts a probe sent after a silence.
    pub fn count_resend(&mut self) {
        self.resends += 1;
    }

    /// The destination has handled a probe, and with it (in order) every
    /// transfer sent before it that was not lost. Returns whether it was
    /// acknowledged short of those: then the rest were lost, and the link
    /// has gone back to send them again.
    pub fn probe_answered(&mut self, probe: u64) -> bool {
        let Some((latest, after)) = self.probe else {
            return false;
        };
        if probe != latest {
            return false;
        }
        self.probe = None;
        if self.acked < after {
            self.go_back();
            return true;
        }
        false
    }

    /// Everything unacknowledged is sent again; the frames of the round
    /// before count as lost.
    pub fn go_back(&mut self) {
        self.sent = self.acked;
        self.frames.clear();
    }

    /// Takes in a cumulative acknowledgement.
    pub fn ack(&mut self, upto: Seq) -> Acked<T> {
        let last = self.last();
        if upto > last {
            return Acked::Beyond { last };
        }
        let backing_off = self.backing_off();
        if upto <= self.acked {
            return Acked::Stale { backing_off };
        }
        let mut items = Vec::new();
        for s in self.acked.after_upto(upto) {
            if let Some(item) = self.items.remove(&s) {
                items.push(item);
            }
        }
        self.acked = upto;
        self.sent = self.sent.max(upto);
        while self.frames.front().is_some_and(|&end| end <= upto) {
            self.frames.pop_front();
        }
        Acked::Advanced { backing_off, items }
    }

    /// The normal resend interval again. A timer set while the probes
    /// backed off is set again too (the delay returned): left alone it
    /// fired up to the backoff maximum later, and a cut that began
    /// meanwhile went unprobed that long.
    pub fn restart_rhythm(&mut self, was_backing_off: bool) -> Option<Millis> {
        self.interval = self.resend_interval;
        (was_backing_off && self.resend_armed).then_some(self.interval)
    }

    /// The resend timer fired. Returns whether to probe: transfers are in
    /// flight and nothing was acknowledged for a whole interval (lost or
    /// only slow?); the caller then backs off. With nothing in flight the
    /// interval is the normal one again.
    pub fn silence_check(&mut self) -> bool {
        let outstanding = self.in_flight();
        let probe = outstanding && self.acked == self.acked_at_last_check;
        if !outstanding {
            self.interval = self.resend_interval;
        }
        self.acked_at_last_check = self.acked;
        probe
    }

    /// After a probe for a silence: wait longer next time.
    pub fn back_off(&mut self) {
        self.interval = (self.interval * 2).min(self.backoff_max);
    }

    /// After the resend timer's check: whether it is set again, and when.
    pub fn rearm_after_check(&mut self, needed: bool) -> Option<Millis> {
        self.resend_armed = needed;
        needed.then_some(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(window: u64, n: u64) -> Link<u64> {
        let mut l = Link::new(window, 100, 800);
        for _ in 0..n {
            let seq = l.number();
            l.insert(seq, seq.get() * 10);
        }
        l
    }

    fn seqs(s: Sending<u64>) -> Vec<u64> {
        s.items.into_iter().map(|(seq, _)| seq.get()).collect()
    }

    #[test]
    fn the_window_limits_what_is_in_flight_and_acks_open_it() {
        let mut l = link(2, 5);
        assert_eq!(seqs(l.take_sendable()), vec![1, 2]);
        assert!(l.take_sendable().items.is_empty());
        assert!(matches!(l.ack(Seq(1)), Acked::Advanced { ref items, .. } if items == &[10]));
        assert_eq!(seqs(l.take_sendable()), vec![3]);
        assert!(matches!(l.ack(Seq(1)), Acked::Stale { .. }));
        assert!(matches!(l.ack(Seq(6)), Acked::Beyond { last: Seq(5) }));
    }

    #[test]
    fn a_hole_stops_sending_and_is_reported() {
        let mut l = link(10, 2);
        l.number(); // numbered, not yet held
        let s = l.take_sendable();
        assert_eq!(s.missing, Some(Seq(3)));
        assert_eq!(seqs(s), vec![1, 2]);
    }

    #[test]
    fn a_probe_answered_short_goes_back_and_one_answered_in_full_does_not() {
        let mut l = link(10, 4);
        assert_eq!(seqs(l.take_sendable()), vec![1, 2, 3, 4]);
        assert_eq!(l.arm(l.in_flight()), Some(100));
        // Silence: probe the first unacknowledged, and back off.
        assert!(l.silence_check());
        let p = l.probe().ok().unwrap();
        assert_eq!((p.seq, p.probe), (Seq(1), 1));
        l.back_off();
        assert!(l.backing_off());
        l.ack(Seq(2));
        assert!(l.probe_answered(1));
        assert_eq!(seqs(l.take_sendable()), vec![3, 4]);
        // Answered after everything arrived: nothing is sent again.
        let p = l.probe().ok().unwrap();
        l.ack(Seq(4));
        assert!(!l.probe_answered(p.probe));
        assert!(l.take_sendable().items.is_empty());
        assert_eq!(l.restart_rhythm(true), Some(100));
    }

    /// With the frames in flight bounded, what comes while they are
    /// unacknowledged goes together in one frame once an acknowledgement
    /// covers a frame's last item; going back counts the round's frames
    /// as lost.
    #[test]
    fn bounded_frames_batch_what_waits_and_go_back_frees_them() {
        let mut l = link(100, 2).with_frames(1);
        assert_eq!(seqs(l.take_frame(|_| true)), vec![1, 2]);
        for _ in 0..3 {
            let seq = l.number();
            l.insert(seq, seq.get() * 10);
        }
        assert!(
            l.take_frame(|_| true).items.is_empty(),
            "one frame in flight"
        );
        // Part of the frame acknowledged: it is still in flight.
        l.ack(Seq(1));
        assert!(l.take_frame(|_| true).items.is_empty());
        l.ack(Seq(2));
        assert_eq!(l.frames_in_flight(), 0);
        assert_eq!(seqs(l.take_frame(|_| true)), vec![3, 4, 5]);
        // Lost: going back sends the same items again, in one frame.
        l.go_back();
        assert_eq!(l.frames_in_flight(), 0);
        assert_eq!(seqs(l.take_frame(|_| true)), vec![3, 4, 5]);
        assert_eq!(l.frames_in_flight(), 1);
    }

    #[test]
    fn a_batch_rule_bounds_what_is_taken() {
        let mut l = link(10, 5);
        let mut n = 0;
        let s = l.take_sendable_while(|_| {
            n += 1;
            n <= 2
        });
        assert_eq!(seqs(s), vec![1, 2]);
        assert!(l.in_flight());
        l.go_back();
        assert_eq!(seqs(l.take_sendable()), vec![1, 2, 3, 4, 5]);
    }
}

//! Heartbeats (lync2010) and the link's health they tell. A heartbeat goes
//! with the data every heartbeat interval. One not acknowledged by the
//! destination within its TTRQ is a *delivery* NACK (link or queue service
//! down); one delivered but not processed within its TTBR is a
//! *processing* NACK (archiver down or behind). The archiver's ACK of a
//! newer heartbeat makes the link healthy again.

use crate::core::ids::Millis;
use crate::core::link::Seq;
use std::collections::BTreeMap;

/// The state of the link to the archiving server, from heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkHealth {
    Healthy,
    /// A heartbeat did not reach the destination queue in time.
    DeliveryFailing,
    /// A heartbeat reached it but was not processed in time.
    ProcessingFailing,
}

impl LinkHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkHealth::Healthy => "healthy",
            LinkHealth::DeliveryFailing => "delivery_failing",
            LinkHealth::ProcessingFailing => "processing_failing",
        }
    }
}

struct Beat {
    seq: Seq,
    sent_at: Millis,
    delivered: bool,
}

/// The heartbeats in the stream, by id, and the health they tell.
pub struct Heartbeats {
    beats: BTreeMap<u64, Beat>,
    last_beat: u64,
    health: LinkHealth,
    last_nacked_beat: u64,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            beats: BTreeMap::new(),
            last_beat: 0,
            health: LinkHealth::Healthy,
            last_nacked_beat: 0,
        }
    }
}

impl Heartbeats {
    pub fn health(&self) -> LinkHealth {
        self.health
    }

    pub fn healthy(&self) -> bool {
        self.health == LinkHealth::Healthy
    }

    /// At restart: no heartbeat known yet, and the link presumed healthy
    /// (the queue says nothing until it has evidence).
    pub fn clear(&mut self) {
        self.beats.clear();
    }

    pub fn reset_health(&mut self) {
        self.health = LinkHealth::Healthy;
    }

    /// A heartbeat in the stream at `seq`, not yet delivered.
    pub fn track(&mut self, id: u64, seq: Seq, sent_at: Millis) {
        self.beats.insert(
            id,
            Beat {
                seq,
                sent_at,
                delivered: false,
            },
        );
    }

    /// A heartbeat found in the store at restart.
    pub fn recovered(&mut self, id: u64, seq: Seq, sent_at: Millis) {
        self.last_beat = self.last_beat.max(id);
        self.track(id, seq, sent_at);
    }

    /// The destination acknowledged the stream up to `upto`.
    pub fn delivered_upto(&mut self, upto: Seq) {
        for beat in self.beats.values_mut() {
            if beat.seq <= upto {
                beat.delivered = true;
            }
        }
    }

    /// The heartbeats late at `now`, forgotten, with the failure each
    /// tells, in order of id; the health follows (a delivery failure
    /// outranks a processing failure).
    pub fn nacks(&mut self, now: Millis, ttrq: Millis, ttbr: Millis) -> Vec<(u64, LinkHealth)> {
        let mut nacks = Vec::new();
        for (&id, beat) in &self.beats {
            if !beat.delivered && now >= beat.sent_at + ttrq {
                nacks.push((id, LinkHealth::DeliveryFailing));
            } else if beat.delivered && now >= beat.sent_at + ttbr {
                nacks.push((id, LinkHealth::ProcessingFailing));
            }
        }
        for &(id, kind) in &nacks {
            self.beats.remove(&id);
            self.last_nacked_beat = self.last_nacked_beat.max(id);
            if !(self.health == LinkHealth::DeliveryFailing
                && kind == LinkHealth::ProcessingFailing)
            {
                self.health = kind;
            }
        }
        nacks
    }

    /// The id of the next heartbeat, sent at `now`.
    pub fn next_id(&mut self, now: Millis) -> u64 {
        let id = now.max(self.last_beat + 1);
        self.last_beat = id;
        id
    }

    /// The archiver processed heartbeat `id`; returns whether that makes
    /// a failing link healthy again (only a heartbeat newer than the last
    /// one NACKed does).
    pub fn processed(&mut self, id: u64) -> bool {
        self.beats.remove(&id);
        if id > self.last_nacked_beat && self.health != LinkHealth::Healthy {
            self.health = LinkHealth::Healthy;
            return true;
        }
        false
    }
}

//! Quota monitoring (lync2010): a warning at the warning percentage (95 %)
//! of the queue's quota, then an information event at every check above
//! the information percentage (90 %); below that the queue is no longer
//! full. Under ocs2007r2 only the "full" state is kept, re-assessed by the
//! expiry check.

/// What a quota check tells the operator.
pub enum QuotaNote {
    Warning { pct: u64, quota: u64 },
    Info { pct: u64, quota: u64 },
}

#[derive(Default)]
pub struct Quota {
    quota: u64,
    warning_pct: u64,
    info_pct: u64,
    warned: bool,
    /// An enqueue was refused for the quota, and use has not dropped
    /// below the information percentage since.
    full: bool,
    /// Whether the quota check is set (only while there is something to
    /// look at).
    pub armed: bool,
}

impl Quota {
    pub fn new(quota: u64, warning_pct: u64, info_pct: u64) -> Self {
        Quota {
            quota,
            warning_pct,
            info_pct,
            ..Default::default()
        }
    }

    pub fn limit(&self) -> u64 {
        self.quota
    }

    pub fn full(&self) -> bool {
        self.full
    }

    /// Whether the check has anything to look at.
    pub fn watching(&self, bytes: u64) -> bool {
        bytes > 0 || self.warned || self.full
    }

    /// Whether `bytes` more fit when `used` are taken.
    pub fn fits(&self, used: u64, bytes: u64) -> bool {
        used + bytes <= self.quota
    }

    /// An enqueue refused; returns whether the queue has just become full.
    pub fn refused(&mut self) -> bool {
        let newly = !self.full;
        self.full = true;
        newly
    }

    fn pct(&self, bytes: u64) -> u64 {
        bytes.saturating_mul(100) / self.quota.max(1)
    }

    /// At restart: a queue that comes back (nearly) full is full.
    pub fn restarted(&mut self, bytes: u64) {
        self.full = self.pct(bytes) >= self.warning_pct;
    }

    /// The quota check (lync2010).
    pub fn check(&mut self, bytes: u64) -> Option<QuotaNote> {
        let quota = self.quota.max(1);
        let pct = self.pct(bytes);
        let note = if pct >= self.warning_pct && !self.warned {
            self.warned = true;
            Some(QuotaNote::Warning { pct, quota })
        } else if self.warned && pct > self.info_pct {
            Some(QuotaNote::Info { pct, quota })
        } else {
            None
        };
        if pct < self.info_pct {
            self.warned = false;
            self.full = false;
        }
        note
    }

    /// ocs2007r2's re-assessment: no longer full below the information
    /// percentage.
    pub fn legacy_check(&mut self, bytes: u64) {
        if self.pct(bytes) < self.info_pct {
            self.full = false;
        }
    }
}

//! The run's trace: a running hash over every event in the order the
//! simulator executed it. Identical seed and code give an identical hash;
//! any divergence (a stray source of nondeterminism) changes it.

use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

pub struct Trace {
    // FxHasher: a fixed algorithm (the version is pinned by Cargo.lock), so
    // a trace hash means the same thing on every toolchain of a 64-bit
    // platform (std's DefaultHasher promises no such thing); and fast,
    // since every simulated message goes through it.
    hasher: FxHasher,
    len: u64,
    /// Optional human timeline (kept only when asked for).
    lines: Option<Vec<String>>,
}

impl Trace {
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            hasher: FxHasher::default(),
            len: 0,
            lines: keep_lines.then(Vec::new),
        }
    }

    pub fn record(&mut self, at_ms: u64, node: &str, what: &str, detail: &(impl Hash + ?Sized)) {
        self.record_noted(at_ms, node, what, String::new, detail);
    }

    /// As `record`, with a note for the timeline only (made only when the
    /// timeline is kept; not hashed: which timer fired, say, is in `detail`
    /// already).
    pub fn record_noted(
        &mut self,
        at_ms: u64,
        node: &str,
        what: &str,
        note: impl FnOnce() -> String,
        detail: &(impl Hash + ?Sized),
    ) {
        at_ms.hash(&mut self.hasher);
        node.hash(&mut self.hasher);
        what.hash(&mut self.hasher);
        detail.hash(&mut self.hasher);
        self.len += 1;
        if let Some(lines) = &mut self.lines {
            let at = at_ms as f64 / 1000.0;
            let note = note();
            lines.push(if note.is_empty() {
                format!("{at:>12.3}s {node:<8} {what}")
            } else {
                format!("{at:>12.3}s {node:<8} {what} {note}")
            });
        }
    }

    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or(&[])
    }
}

//! What must hold after a run, checked against what the clients recorded
//! and what the stores hold: the IM checker, the chat and compliance
//! checkers, critical-mode accounting and recovery figures.

pub mod chat_checker;
pub mod chat_log;
pub mod checker;
pub mod compliance_checker;
pub mod critical;
pub mod events;
pub mod holds;
pub mod recovery;

use std::collections::BTreeMap;

/// How many examples of each finding a checker keeps for the report.
const EXAMPLES: usize = 5;

/// Keeps `example` among the `examples` of `what`, up to the first
/// [`EXAMPLES`] of them.
fn keep_example<T>(examples: &mut BTreeMap<&'static str, Vec<T>>, what: &'static str, example: T) {
    let v = examples.entry(what).or_default();
    if v.len() < EXAMPLES {
        v.push(example);
    }
}

//! What a load's client was told against what the archive holds: the
//! exactly-once check of the crash and partition tests.

use holdfast::client::Outcome;
use std::collections::{BTreeMap, BTreeSet};

/// The ids of the IMs a load sent, by what the client was told.
pub struct Told {
    pub accepted: BTreeSet<String>,
    pub rejected: BTreeSet<String>,
    pub all: BTreeSet<String>,
}

impl Told {
    /// From each IM's id and outcome.
    pub fn new<'a>(sent: impl IntoIterator<Item = (&'a str, &'a Outcome)>) -> Told {
        let mut told = Told {
            accepted: BTreeSet::new(),
            rejected: BTreeSet::new(),
            all: BTreeSet::new(),
        };
        for (id, outcome) in sent {
            match outcome {
                Outcome::Accepted { .. } => told.accepted.insert(id.to_string()),
                Outcome::Rejected { .. } => told.rejected.insert(id.to_string()),
                _ => false,
            };
            told.all.insert(id.to_string());
        }
        told
    }
}

/// What the archive holds against what the client was told.
#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub phantoms: Vec<String>,
    pub archived_rejected: Vec<String>,
}

impl Verdict {
    /// `archive`: how many times each message id is archived.
    pub fn new(told: &Told, archive: &BTreeMap<String, u64>) -> Verdict {
        Verdict {
            accepted: told.accepted.len(),
            lost: told
                .accepted
                .iter()
                .filter(|id| !archive.contains_key(*id))
                .cloned()
                .collect(),
            // The archive's unique index on the message id makes this zero
            // by construction; it is checked so that a schema change cannot
            // quietly drop the guarantee.
            duplicated: archive
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, _)| id.clone())
                .collect(),
            phantoms: archive
                .keys()
                .filter(|id| !told.all.contains(*id))
                .cloned()
                .collect(),
            archived_rejected: archive
                .keys()
                .filter(|id| told.rejected.contains(*id))
                .cloned()
                .collect(),
        }
    }
}

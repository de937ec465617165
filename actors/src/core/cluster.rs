//! The cluster map every actor is configured with: which front ends exist,
//! where users are homed, which archiver serves which front end, which
//! database each archiver writes to, and the archiving policy.

use crate::core::ids::UserId;
use crate::core::policy::Policy;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontEndInfo {
    pub site: String,
    /// The archiving server whose destination queue this front end feeds.
    pub archiver: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiverInfo {
    pub database: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The organisation's SIP domain; users of other domains are external.
    pub domain: String,
    pub front_ends: BTreeMap<String, FrontEndInfo>,
    pub archivers: BTreeMap<String, ArchiverInfo>,
    pub databases: Vec<String>,
    /// Home front end of every user of the organisation.
    pub users: BTreeMap<UserId, String>,
    pub policy: Policy,
}

impl Cluster {
    pub fn home(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(String::as_str)
    }
    pub fn site_of(&self, user: &str) -> Option<&str> {
        let fe = self.home(user)?;
        self.front_ends.get(fe).map(|f| f.site.as_str())
    }
    pub fn is_external(&self, user: &str) -> bool {
        match user.rsplit_once('@') {
            Some((_, domain)) => !domain.eq_ignore_ascii_case(&self.domain),
            None => false,
        }
    }
    /// The archiving agent's decision for a message from `from` to `to`.
    pub fn should_archive(&self, from: &str, to: &str) -> bool {
        let external = self.is_external(from) || self.is_external(to);
        self.policy
            .should_archive(from, self.site_of(from), to, self.site_of(to), external)
    }
}

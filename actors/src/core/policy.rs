//! Archiving policy: per-user settings with global → site → user scope and
//! separate switches for internal and external (federated) communication.
//!
//! The archiving agent looks up the settings of both sender and recipient;
//! a message is sent for archiving if either side's applicable switch is on.

use crate::core::ids::UserId;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSwitch {
    pub internal: bool,
    pub external: bool,
}

impl ArchiveSwitch {
    pub const ALL: ArchiveSwitch = ArchiveSwitch {
        internal: true,
        external: true,
    };
    pub const NONE: ArchiveSwitch = ArchiveSwitch {
        internal: false,
        external: false,
    };
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub global: ArchiveSwitch,
    pub sites: BTreeMap<String, ArchiveSwitch>,
    pub users: BTreeMap<UserId, ArchiveSwitch>,
}

impl Policy {
    /// The switch that applies to `user` homed in `site`: the most specific
    /// scope that has one.
    pub fn for_user(&self, user: &str, site: Option<&str>) -> ArchiveSwitch {
        if let Some(s) = self.users.get(user) {
            return *s;
        }
        if let Some(s) = site.and_then(|site| self.sites.get(site)) {
            return *s;
        }
        self.global
    }

    /// The archiving agent's decision. `*_site` is `None` for a user outside
    /// the organisation (whose settings we do not know).
    pub fn should_archive(
        &self,
        from: &str,
        from_site: Option<&str>,
        to: &str,
        to_site: Option<&str>,
        external: bool,
    ) -> bool {
        let side = |user: &str, site: Option<&str>| -> bool {
            if site.is_none() {
                return false;
            }
            let s = self.for_user(user, site);
            if external {
                s.external
            } else {
                s.internal
            }
        };
        side(from, from_site) || side(to, to_site)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_scope_wins() {
        let mut p = Policy {
            global: ArchiveSwitch::NONE,
            ..Default::default()
        };
        p.sites.insert("branch".into(), ArchiveSwitch::ALL);
        p.users.insert(
            "vip@corp.example".into(),
            ArchiveSwitch {
                internal: false,
                external: true,
            },
        );
        assert_eq!(
            p.for_user("a@corp.example", Some("hq")),
            ArchiveSwitch::NONE
        );
        assert_eq!(
            p.for_user("a@corp.example", Some("branch")),
            ArchiveSwitch::ALL
        );
        assert_eq!(
            p.for_user("vip@corp.example", Some("branch")),
            ArchiveSwitch {
                internal: false,
                external: true
            }
        );
    }

    #[test]
    fn either_side_triggers_and_switches_are_separate() {
        let mut p = Policy::default();
        p.users.insert(
            "a@c".into(),
            ArchiveSwitch {
                internal: true,
                external: false,
            },
        );
        // internal message: a's internal switch is on
        assert!(p.should_archive("a@c", Some("s"), "b@c", Some("s"), false));
        assert!(p.should_archive("b@c", Some("s"), "a@c", Some("s"), false));
        // external message: a's external switch is off, the partner has none
        assert!(!p.should_archive("a@c", Some("s"), "x@partner", None, true));
        p.global.external = true;
        assert!(p.should_archive("b@c", Some("s"), "x@partner", None, true));
        assert!(!p.should_archive("b@c", Some("s"), "c@c", Some("s"), false));
    }
}

//! Who a client is: the authenticated principal behind a client connection,
//! and what each role may ask for.
//!
//! A client names its connection after its principal:
//! `<role>:<user>/<nonce>` (for example `user:alice@corp.example/3f9a…`).
//! On TLS links the transport checks that name against the client's
//! certificate (issued by `holdfast certs user`) before any frame reaches a
//! core, and every later frame of the connection must carry the same name;
//! on plain links (the simulator, closed test networks) the name is
//! believed. The cores then bind every request to the principal in the
//! sender's name: an IM's sender, a chat session's user, a file token's
//! holder and an operator command's role must agree with it, or the request
//! is refused with an explicit error and an operator event
//! ([`IDENTITY_REFUSED`]).
//!
//! The nonce keeps two connections of one principal apart (replies go back
//! on the connection they came from) and is unguessable on real clients.

use crate::core::ids::{ActorKind, Addr, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a principal may do.
///
/// | role | may |
/// |---|---|
/// | `user` | send IMs and call reports as itself, use group chat and files as itself |
/// | `operator` | run the cluster: compliance export now, compliance status |
/// | `auditor` | read: compliance status, the archive and its read trail (every read recorded) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    User,
    Operator,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Operator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated user in a role.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Principal {
    pub user: UserId,
    pub role: Role,
}

/// Why a user name cannot be a principal's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadUserName {
    #[error("a user name has 1 to 254 characters")]
    Length,
    #[error("a user name does not start with '.'")]
    LeadingDot,
    /// A space, a character outside printable ASCII, '/', ':' or '\\':
    /// the name is part of a connection name, a certificate's URI and a
    /// credential file's name.
    #[error("a user name is printable ASCII without spaces, '/', ':' or '\\' (found {0:?})")]
    Character(char),
}

/// Whether `user` can be a principal's name.
pub fn check_user_name(user: &str) -> Result<(), BadUserName> {
    if user.is_empty() || user.len() > 254 {
        return Err(BadUserName::Length);
    }
    if user.starts_with('.') {
        return Err(BadUserName::LeadingDot);
    }
    if let Some(c) = user
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':' | '\\'))
    {
        return Err(BadUserName::Character(c));
    }
    Ok(())
}

impl Principal {
    pub fn new(user: impl Into<UserId>, role: Role) -> Principal {
        Principal {
            user: user.into(),
            role,
        }
    }

    /// The name of a client connection of this principal.
    pub fn client_name(&self, nonce: &str) -> String {
        format!("{}:{}/{nonce}", self.role, self.user)
    }

    /// The principal a client connection's name carries, if it is one.
    pub fn of_client_name(name: &str) -> Option<Principal> {
        let (role, rest) = name.split_once(':')?;
        let (user, nonce) = rest.rsplit_once('/')?;
        if nonce.is_empty() || check_user_name(user).is_err() {
            return None;
        }
        Some(Principal::new(user, Role::parse(role)?))
    }

    /// The principal of a client address (`None` for servers, and for
    /// clients whose name carries none).
    pub fn of(from: &Addr) -> Option<Principal> {
        if from.actor != ActorKind::Client {
            return None;
        }
        Principal::of_client_name(&from.node)
    }

    /// The certificate URI that names this principal.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}:{}", self.role, self.user)
    }

    /// The principal a certificate URI names, if it is one.
    pub fn of_uri(uri: &str) -> Option<Principal> {
        let (role, user) = uri.strip_prefix(URI_PREFIX)?.split_once(':')?;
        check_user_name(user).ok()?;
        Some(Principal::new(user, Role::parse(role)?))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.user, self.role)
    }
}

/// Certificates name their principal with a URI subject alternative name
/// `urn:holdfast:<role>:<user>`.
const URI_PREFIX: &str = "urn:holdfast:";

/// Why a client's request is refused for who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's connection carries no principal.
    Unauthenticated,
    /// The principal's role may not make this request.
    Role { principal: Principal, needs: String },
    /// The request speaks for another user than the principal.
    NotYou {
        principal: Principal,
        claimed: UserId,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unauthenticated => f.write_str("the client is not authenticated"),
            Refusal::Role { principal, needs } => {
                write!(f, "{principal} may not do this: it needs the {needs} role")
            }
            Refusal::NotYou { principal, claimed } => {
                write!(f, "{principal} may not speak for {claimed}")
            }
        }
    }
}

/// Who may read the archive (`holdfast archive query`) and its read trail
/// (`holdfast archive audit`): auditors only. A user may not read the
/// archive, not even their own messages (the archive is a compliance
/// record: it keeps what the user's own client has deleted, and the other
/// party's words); an operator runs the cluster but reads no content.
/// Every read, allowed or refused, is recorded before it is answered.
/// Who may place and release legal holds: compliance officers.
pub const HOLD_KEEPERS: &[Role] = &[Role::Auditor];

/// Who may start the retention purge by hand: those who run the cluster.
pub const PURGE_STARTERS: &[Role] = &[Role::Operator];

/// Who may see what retention did and which holds stand.
pub const RETENTION_VIEWERS: &[Role] = &[Role::Auditor, Role::Operator];

pub const ARCHIVE_READERS: &[Role] = &[Role::Auditor];

/// The principal of `from` if it has one of `roles`.
pub fn require(from: &Addr, roles: &[Role]) -> Result<Principal, Refusal> {
    let principal = Principal::of(from).ok_or(Refusal::Unauthenticated)?;
    if roles.contains(&principal.role) {
        Ok(principal)
    } else {
        let needs = roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        Err(Refusal::Role { principal, needs })
    }
}

/// The principal of `from` if it is `user` in the user role.
pub fn require_user(from: &Addr, user: &str) -> Result<Principal, Refusal> {
    let principal = require(from, &[Role::User])?;
    if principal.user == user {
        Ok(principal)
    } else {
        Err(Refusal::NotYou {
            principal,
            claimed: user.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_name_carries_its_principal() {
        let p = Principal::new("alice@corp.example", Role::User);
        let name = p.client_name("3f9a");
        assert_eq!(name, "user:alice@corp.example/3f9a");
        assert_eq!(Principal::of_client_name(&name), Some(p.clone()));
        assert_eq!(
            Principal::of(&Addr::new(name.clone(), ActorKind::Client)),
            Some(p.clone())
        );
        // A server address never carries one.
        assert_eq!(Principal::of(&Addr::new(name, ActorKind::FrontEnd)), None);
        assert_eq!(Principal::of_uri(&p.uri()), Some(p));
    }

    #[test]
    fn names_without_a_principal_are_refused() {
        for name in [
            "client-1",
            "user:alice/",
            "user:/n",
            "root:alice/n",
            "user:al ice/n",
            "user:.x/n",
            "",
        ] {
            assert_eq!(Principal::of_client_name(name), None, "{name:?}");
        }
        assert_eq!(Principal::of_uri("urn:holdfast:user:a/b"), None);
        assert_eq!(Principal::of_uri("urn:other:user:a"), None);
    }

    #[test]
    fn requests_are_bound_to_the_principal() {
        let alice = Addr::new("user:alice/1", ActorKind::Client);
        let ops = Addr::new("operator:ops/1", ActorKind::Client);
        let anon = Addr::new("client-7", ActorKind::Client);
        assert!(require_user(&alice, "alice").is_ok());
        assert_eq!(
            require_user(&alice, "bob"),
            Err(Refusal::NotYou {
                principal: Principal::new("alice", Role::User),
                claimed: "bob".into()
            })
        );
        assert!(matches!(
            require_user(&ops, "ops"),
            Err(Refusal::Role { .. })
        ));
        assert_eq!(require_user(&anon, "x"), Err(Refusal::Unauthenticated));
        assert!(require(&ops, &[Role::Operator]).is_ok());
        let e = require(&alice, &[Role::Operator, Role::Auditor]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "alice (user) may not do this: it needs the operator or auditor role"
        );
    }
}

//! Where a PostgreSQL engine connects: the URL (password included) and
//! what the node adds to it, shown only with the password hidden.

use std::path::PathBuf;

/// A PostgreSQL database to connect to. Its `Debug` and
/// [`PgTarget::redacted`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The connection URL (or `key=value` string), password included.
    pub url: String,
    /// The CA that signed the server's certificate: TLS when set.
    pub tls_ca: Option<PathBuf>,
    pub connect_timeout: std::time::Duration,
    pub statement_timeout: std::time::Duration,
}

impl PgTarget {
    /// The URL with any password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.redacted())
            .field("tls_ca", &self.tls_ca)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// `url` without its password: the user-info's `:password` of a URL,
/// a `password=` query parameter, or a `password=` pair of a key-value
/// connection string.
pub fn redact_url(url: &str) -> String {
    let hide_pairs = |s: &str, sep: char| -> String {
        s.split(sep)
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.trim().eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return hide_pairs(url, ' ');
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", hide_pairs(query, '&')),
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

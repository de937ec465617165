//! The cluster configuration file (TOML): which nodes exist, what they run,
//! where they listen and keep their data, how their links are secured, the
//! archiving policy and every reliability setting.
//!
//! Every node of a cluster reads the same file and picks its own `[[node]]`
//! by name. Relative paths are relative to the file's folder, so a config
//! and its `certs/` and `data/` folders can be moved together. Errors name
//! the file and the key.

use holdfast_actors::chat::chat_store::valid_room_name;
use holdfast_actors::chat::pool::{Category, ChatPool};
use holdfast_actors::compliance::export::ExportFormat;
use holdfast_actors::core::cluster::{ArchiverInfo, Cluster, FrontEndInfo};
use holdfast_actors::core::ids::{ActorKind, RoomId, UserId};
use holdfast_actors::core::policy::{ArchiveSwitch, Policy};
use holdfast_actors::core::protocol::chat::{Privacy as RoomPrivacy, Room};
use holdfast_actors::core::settings::Settings;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

pub use crate::engines::postgres::target::{redact_url, PgTarget};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {err}")]
    Read { file: String, err: std::io::Error },
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("{file}: {key}: {msg}")]
    Invalid {
        file: String,
        key: String,
        msg: String,
    },
}

/// How links between nodes are secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// Mutual TLS with the cluster's own CA (`holdfast certs init`).
    #[default]
    Tls,
    /// Plain TCP: only for a trusted loopback or lab network, and only when
    /// the config says so.
    Plain,
}

/// MSMQ privacy level of a destination queue: which links may deliver to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Encrypted links only.
    Body,
    /// Encrypted or plain.
    #[default]
    Optional,
    /// Plain only: refused for the archiving destination.
    None,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterSection {
    domain: String,
    #[serde(default)]
    links: LinkMode,
    #[serde(default = "default_certs")]
    certs: PathBuf,
    #[serde(default = "default_data")]
    data: PathBuf,
    /// Group chat: the secret Channel servers sign file tokens with and the
    /// Web service checks them with (16 characters or more).
    #[serde(default)]
    file_token_key: Option<String>,
}

fn default_certs() -> PathBuf {
    "certs".into()
}
fn default_data() -> PathBuf {
    "data".into()
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchivingSection {
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    external: bool,
    #[serde(default)]
    sites: BTreeMap<String, ArchiveSwitch>,
    #[serde(default)]
    users: BTreeMap<UserId, ArchiveSwitch>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    roles: Vec<String>,
    listen: SocketAddr,
    #[serde(default)]
    metrics: Option<SocketAddr>,
    #[serde(default)]
    data: Option<PathBuf>,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    archiver: Option<String>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    privacy: Privacy,
}

/// A persistent chat room.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    name: String,
    /// Members; `user{1..50}@x` expands.
    #[serde(default)]
    members: Vec<String>,
    /// Members walled off the room (an ethical wall).
    #[serde(default)]
    denied: Vec<String>,
    /// Set: an auditorium, where only these members post.
    #[serde(default)]
    presenters: Option<Vec<String>>,
    #[serde(default)]
    managers: Vec<String>,
    /// open, closed (default) or secret.
    #[serde(default)]
    privacy: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    invite: bool,
}

/// A room category: who its rooms may hold and who may create them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    name: String,
    /// Users its rooms may hold; `"*"` is everyone.
    allowed: Vec<String>,
    /// Users walled off every room of the category.
    #[serde(default)]
    denied: Vec<String>,
    /// Users who may create rooms in it; `"*"` is everyone allowed.
    #[serde(default)]
    creators: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: ClusterSection,
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    archiving: Option<ArchivingSection>,
    #[serde(rename = "node")]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "room")]
    rooms: Vec<RawRoom>,
    #[serde(default, rename = "category")]
    categories: Vec<RawCategory>,
    #[serde(default)]
    compliance: Option<RawCompliance>,
    /// `[archive]`: the engine of every database node's archive.
    #[serde(default)]
    archive: Option<RawEngine>,
    /// `[chat_store]`: the engine of the chat store.
    #[serde(default)]
    chat_store: Option<RawEngine>,
}

/// `[archive]` or `[chat_store]`: which engine keeps the rows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    /// `sqlite` (default: a file in the node's data folder) or `postgres`.
    #[serde(default)]
    engine: Option<String>,
    /// PostgreSQL: `postgres://user[:password]@host[:port]/database[?sslmode=…]`.
    #[serde(default)]
    url: Option<String>,
    /// PostgreSQL: the CA certificate (PEM) that signed the server's
    /// certificate; set, the link is TLS (rustls) and must verify.
    #[serde(default)]
    tls_ca: Option<PathBuf>,
    /// PostgreSQL: how long a connection attempt may take (default 5s).
    #[serde(default)]
    connect_timeout: Option<String>,
    /// PostgreSQL: how long one statement may run (default 30s).
    #[serde(default)]
    statement_timeout: Option<String>,
}

/// Where a database or chat store node keeps its rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreEngine {
    /// A SQLite file in the node's data folder.
    #[default]
    Sqlite,
    /// A PostgreSQL database.
    Postgres(PgTarget),
}

/// The engine `section` (`"archive"` or `"chat_store"`) names for each of
/// `nodes` (the nodes with that role): with several of them, a PostgreSQL
/// URL must say `{node}` where each node's name goes, so that no two nodes
/// share a database.
fn store_engines(
    raw: Option<&RawEngine>,
    section: &str,
    nodes: &[&str],
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: Invalid,
) -> Result<Vec<StoreEngine>, ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    let Some(raw) = raw else {
        return Ok(vec![StoreEngine::Sqlite; nodes.len()]);
    };
    let duration = |k: &str, v: &Option<String>, default: u64| match v {
        None => Ok(std::time::Duration::from_secs(default)),
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(invalid(key(k), "must be more than 0".into())),
            Err(e) => Err(invalid(key(k), format!("{text:?}: {e}"))),
        },
    };
    match raw.engine.as_deref().unwrap_or("sqlite") {
        "sqlite" => {
            for (k, set) in [
                ("url", raw.url.is_some()),
                ("tls_ca", raw.tls_ca.is_some()),
                ("connect_timeout", raw.connect_timeout.is_some()),
                ("statement_timeout", raw.statement_timeout.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key(k),
                        "only for engine = \"postgres\" (the engine is sqlite)".into(),
                    ));
                }
            }
            Ok(vec![StoreEngine::Sqlite; nodes.len()])
        }
        "postgres" => {
            let Some(url) = raw.url.clone() else {
                return Err(invalid(
                    key("url"),
                    "engine = \"postgres\" needs url = \"postgres://user@host:port/database\""
                        .into(),
                ));
            };
            if nodes.len() > 1 && !url.contains("{node}") {
                return Err(invalid(
                    key("url"),
                    format!(
                        "{} nodes would share one database: write {{node}} where each node's name goes",
                        nodes.len()
                    ),
                ));
            }
            let connect_timeout = duration("connect_timeout", &raw.connect_timeout, 5)?;
            let statement_timeout = duration("statement_timeout", &raw.statement_timeout, 30)?;
            let tls_ca = raw.tls_ca.as_deref().map(resolve);
            let mut out = Vec::new();
            for node in nodes {
                let target = PgTarget {
                    url: url.replace("{node}", node),
                    tls_ca: tls_ca.clone(),
                    connect_timeout,
                    statement_timeout,
                };
                crate::engines::postgres::check_target(&target)
                    .map_err(|e| invalid(key("url"), e.to_string()))?;
                out.push(StoreEngine::Postgres(target));
            }
            Ok(out)
        }
        other => Err(invalid(
            key("engine"),
            format!("{other:?}: expected \"sqlite\" or \"postgres\""),
        )),
    }
}

/// `[compliance]`: where and how the Compliance service exports.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompliance {
    /// Output folder for the pickup system (relative to the config file).
    output: PathBuf,
    /// `xml` (default), `jsonl` or `csv`.
    #[serde(default)]
    format: Option<String>,
    /// Export only these rooms (default: all).
    #[serde(default)]
    rooms: Vec<String>,
    /// Export only events of these users (default: all).
    #[serde(default)]
    users: Vec<String>,
    /// Export files readable by the node user's group (folder 0750, files
    /// 0640) instead of private (0700, 0600), for a pickup system that
    /// runs as another user of that group.
    #[serde(default)]
    group_read: bool,
}

/// A server role a node can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A front end with its archiving agent and outgoing queue.
    FrontEnd,
    /// An archiving server with its destination queue.
    Archiver,
    /// The archive database (SQLite).
    Database,
    /// Group chat: assigns clients to Channel servers.
    Lookup,
    /// Group chat: rooms, posts, fan-out, relay.
    Channel,
    /// Group chat: the durable store of posts.
    ChatStore,
    /// Group chat: the Web service and file store.
    Web,
    /// Group chat: the Compliance service (at most one).
    Compliance,
}

impl Role {
    const ALL: [Role; 8] = [
        Role::FrontEnd,
        Role::Archiver,
        Role::Database,
        Role::Lookup,
        Role::Channel,
        Role::ChatStore,
        Role::Web,
        Role::Compliance,
    ];

    /// The role's name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::FrontEnd => "front_end",
            Role::Archiver => "archiver",
            Role::Database => "database",
            Role::Lookup => "lookup",
            Role::Channel => "channel",
            Role::ChatStore => "chat_store",
            Role::Web => "web",
            Role::Compliance => "compliance",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
    /// The actor cores a role runs.
    pub fn actors(self) -> &'static [ActorKind] {
        match self {
            Role::FrontEnd => &[ActorKind::FrontEnd, ActorKind::OutgoingQueue],
            Role::Archiver => &[ActorKind::DestinationQueue, ActorKind::Archiver],
            Role::Database => &[ActorKind::Database],
            Role::Lookup => &[ActorKind::Lookup],
            Role::Channel => &[ActorKind::Channel],
            Role::ChatStore => &[ActorKind::ChatStore],
            Role::Web => &[ActorKind::Web],
            Role::Compliance => &[ActorKind::Compliance],
        }
    }
}

/// One node of the cluster, with paths resolved.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub roles: Vec<Role>,
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub data: PathBuf,
    pub site: String,
    pub archiver: Option<String>,
    pub database: Option<String>,
    pub users: Vec<String>,
    pub privacy: Privacy,
    /// Where a database node keeps its archive (`[archive]`).
    pub archive_engine: StoreEngine,
    /// Where a chat store node keeps its rows (`[chat_store]`).
    pub chat_engine: StoreEngine,
}

impl NodeConfig {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
    /// The actor cores this node runs, in start order.
    pub fn actors(&self) -> Vec<ActorKind> {
        self.roles
            .iter()
            .flat_map(|r| r.actors().iter().copied())
            .collect()
    }
    /// The SQLite archive of a database node.
    pub fn archive_path(&self) -> PathBuf {
        self.data.join("archive.sqlite")
    }

    /// The chat store's database (a `chat_store` node).
    pub fn chat_path(&self) -> PathBuf {
        self.data.join("chat.sqlite")
    }
}

/// A parsed and checked cluster configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub file: PathBuf,
    pub domain: String,
    pub links: LinkMode,
    /// Folder of the CA and node certificates.
    pub certs: PathBuf,
    /// Folder of the users' credentials a client presents on TLS links
    /// (`<certs>/users` unless the command line names another).
    pub credentials: PathBuf,
    pub settings: Settings,
    pub nodes: Vec<NodeConfig>,
    pub cluster: Arc<Cluster>,
    /// The group chat pool (empty without Channel servers).
    pub pool: Arc<ChatPool>,
    /// The Compliance service's output folder (with a `compliance` node).
    pub compliance_output: Option<PathBuf>,
    /// `[compliance] group_read`: export files readable by the node user's
    /// group (see `node::export_modes`).
    pub compliance_group_read: bool,
}

/// Why a `user{LOW..HIGH}@x` pattern names no users.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("{0:?}: '{{' without '}}'")]
    Unclosed(String),
    #[error("{0:?}: expected {{LOW..HIGH}}")]
    NoRange(String),
    #[error("{pattern:?}: {bound:?} is not a number")]
    NotANumber { pattern: String, bound: String },
    #[error("{0:?}: the range must be increasing and under a million")]
    BadRange(String),
}

/// Expands `user{1..3}@x` into `user1@x`, `user2@x`, `user3@x`.
pub fn expand_users(pattern: &str) -> Result<Vec<String>, PatternError> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| PatternError::Unclosed(pattern.to_string()))?;
    let inner = &pattern[open + 1..close];
    let (lo, hi) = inner
        .split_once("..")
        .ok_or_else(|| PatternError::NoRange(pattern.to_string()))?;
    let number = |bound: &str| {
        bound
            .trim()
            .parse::<u64>()
            .map_err(|_| PatternError::NotANumber {
                pattern: pattern.to_string(),
                bound: bound.to_string(),
            })
    };
    let (lo, hi) = (number(lo)?, number(hi)?);
    if hi < lo || hi - lo >= 1_000_000 {
        return Err(PatternError::BadRange(pattern.to_string()));
    }
    let (pre, post) = (&pattern[..open], &pattern[close + 1..]);
    Ok((lo..=hi).map(|i| format!("{pre}{i}{post}")).collect())
}

/// Expands a list of users (`user{1..3}@x` patterns, `"*"` kept).
fn user_set(
    list: &[String],
    key: String,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<BTreeSet<UserId>, ConfigError> {
    let mut set = BTreeSet::new();
    for u in list {
        if u == "*" {
            set.insert(UserId::from(u));
            continue;
        }
        let users = expand_users(u).map_err(|e| invalid(key.clone(), e.to_string()))?;
        set.extend(users.into_iter().map(UserId::from));
    }
    Ok(set)
}

/// The chat pool of a config: its Channel servers, Lookup instances, the
/// one chat store, and the rooms.
fn chat_pool(
    rooms: &[RawRoom],
    categories: &[RawCategory],
    nodes: &[NodeConfig],
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<ChatPool, ConfigError> {
    let with = |role| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| n.has(role))
            .map(|n| n.name.clone())
            .collect()
    };
    let (channels, lookups, stores) = (
        with(Role::Channel),
        with(Role::Lookup),
        with(Role::ChatStore),
    );
    let chat = !channels.is_empty() || !lookups.is_empty() || !stores.is_empty();
    if chat && (channels.is_empty() || lookups.is_empty() || stores.len() != 1) {
        return Err(invalid(
            "node.roles".into(),
            format!(
                "group chat needs Channel servers, Lookup instances and exactly one chat_store; found {} channel, {} lookup, {} chat_store nodes",
                channels.len(),
                lookups.len(),
                stores.len()
            ),
        ));
    }
    if (!rooms.is_empty() || !categories.is_empty()) && !chat {
        return Err(invalid(
            if rooms.is_empty() { "category" } else { "room" }.into(),
            "rooms and categories need group chat nodes (channel, lookup, chat_store roles)".into(),
        ));
    }
    let mut cats = BTreeMap::new();
    for (i, c) in categories.iter().enumerate() {
        let key = |k: &str| format!("category[{i}].{k}");
        if c.name.is_empty() {
            return Err(invalid(key("name"), "a category needs a name".into()));
        }
        let category = Category {
            allowed: user_set(&c.allowed, key("allowed"), invalid)?,
            denied: user_set(&c.denied, key("denied"), invalid)?,
            creators: user_set(&c.creators, key("creators"), invalid)?,
        };
        if cats.insert(c.name.clone(), category).is_some() {
            return Err(invalid(key("name"), format!("{:?} is used twice", c.name)));
        }
    }
    let mut out = BTreeMap::new();
    for (i, r) in rooms.iter().enumerate() {
        let key = |k: &str| format!("room[{i}].{k}");
        if !valid_room_name(&r.name) {
            return Err(invalid(
                key("name"),
                "a room needs a name of at most 256 bytes without control characters".into(),
            ));
        }
        let expand = |list: &[String], k: &str| user_set(list, key(k), invalid);
        let privacy = match r.privacy.as_deref() {
            None => RoomPrivacy::Closed,
            Some(p) => RoomPrivacy::parse(p).ok_or_else(|| {
                invalid(
                    key("privacy"),
                    format!("{p:?} is not one of open, closed, secret"),
                )
            })?,
        };
        let category = r.category.clone().unwrap_or_default();
        if !category.is_empty() && !cats.contains_key(&category) {
            return Err(invalid(
                key("category"),
                format!("no [[category]] is named {category:?}"),
            ));
        }
        let room = Room {
            members: expand(&r.members, "members")?,
            denied: expand(&r.denied, "denied")?,
            presenters: r
                .presenters
                .as_deref()
                .map(|p| expand(p, "presenters"))
                .transpose()?,
            managers: expand(&r.managers, "managers")?,
            privacy,
            category,
            description: r.description.clone(),
            invite: r.invite,
            version: 0,
            disabled: false,
        };
        if out.insert(RoomId::from(&r.name), room).is_some() {
            return Err(invalid(key("name"), format!("{:?} is used twice", r.name)));
        }
    }
    Ok(ChatPool {
        channels,
        lookups,
        store: stores.into_iter().next().unwrap_or_default(),
        rooms: out,
        categories: cats,
        ..Default::default()
    })
}

/// Builds a [`ConfigError::Invalid`] from a key and a message.
type Invalid<'a> = &'a dyn Fn(String, String) -> ConfigError;

/// `[[node]]`: each node's name, address, roles, users and data folder.
fn nodes(
    raw: &[RawNode],
    data_root: &Path,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: Invalid,
) -> Result<Vec<NodeConfig>, ConfigError> {
    let mut nodes = Vec::new();
    let mut names = BTreeMap::new();
    let mut listens = BTreeMap::new();
    for (i, n) in raw.iter().enumerate() {
        let key = |k: &str| format!("node[{i}].{k}");
        if n.name.is_empty()
            || !n
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                key("name"),
                format!("{:?}: use letters, digits, '-' and '_'", n.name),
            ));
        }
        if names.insert(n.name.clone(), i).is_some() {
            return Err(invalid(key("name"), format!("{:?} is used twice", n.name)));
        }
        if let Some(other) = listens.insert(n.listen, n.name.clone()) {
            return Err(invalid(
                key("listen"),
                format!("{} is also {other}'s address", n.listen),
            ));
        }
        let mut roles = Vec::new();
        for r in &n.roles {
            let role = Role::parse(r).ok_or_else(|| {
                invalid(
                    key("roles"),
                    format!("{r:?}: expected front_end, archiver, database, lookup, channel, chat_store or web"),
                )
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(invalid(key("roles"), "a node needs a role".into()));
        }
        roles.sort();
        let mut users = Vec::new();
        for u in &n.users {
            users.extend(expand_users(u).map_err(|e| invalid(key("users"), e.to_string()))?);
        }
        if !users.is_empty() && !roles.contains(&Role::FrontEnd) {
            return Err(invalid(
                key("users"),
                "only a front end has users homed on it".into(),
            ));
        }
        nodes.push(NodeConfig {
            name: n.name.clone(),
            roles,
            listen: n.listen,
            metrics: n.metrics,
            data: n
                .data
                .as_deref()
                .map(resolve)
                .unwrap_or_else(|| data_root.join(&n.name)),
            site: n.site.clone().unwrap_or_else(|| "default".into()),
            archiver: n.archiver.clone(),
            database: n.database.clone(),
            users,
            privacy: n.privacy,
            archive_engine: StoreEngine::Sqlite,
            chat_engine: StoreEngine::Sqlite,
        });
    }
    if nodes.is_empty() {
        return Err(invalid("node".into(), "the cluster has no nodes".into()));
    }
    Ok(nodes)
}

/// The archiving path: each front end's archiving server, each archiving
/// server's database, where users are homed, and the `[archiving]` policy.
fn archiving_cluster(
    nodes: &[NodeConfig],
    section: &ClusterSection,
    archiving: Option<ArchivingSection>,
    invalid: Invalid,
) -> Result<Cluster, ConfigError> {
    let role_of = |name: &str, role: Role| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .is_some_and(|n| n.has(role))
    };
    // The node named under `key`: it must be given (else `missing`) and
    // have `role` (`what`) in this cluster.
    let peer = |name: &Option<String>, key: String, missing: String, role: Role, what: &str| {
        let Some(name) = name.clone() else {
            return Err(invalid(key, missing));
        };
        if !role_of(&name, role) {
            return Err(invalid(
                key,
                format!("{name:?} is not {what} of this cluster"),
            ));
        }
        Ok(name)
    };
    let mut front_ends = BTreeMap::new();
    let mut archivers = BTreeMap::new();
    let mut databases = Vec::new();
    let mut users = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let key = |k: &str| format!("node[{i}].{k}");
        if n.has(Role::FrontEnd) {
            let missing = format!("front end {} must name its archiving server", n.name);
            let a = peer(
                &n.archiver,
                key("archiver"),
                missing,
                Role::Archiver,
                "an archiver",
            )?;
            front_ends.insert(
                n.name.clone(),
                FrontEndInfo {
                    site: n.site.clone(),
                    archiver: a,
                },
            );
            for u in &n.users {
                if let Some(other) = users.insert(UserId::from(u), n.name.clone()) {
                    return Err(invalid(
                        key("users"),
                        format!("{u} is homed on {other} already"),
                    ));
                }
            }
        }
        if n.has(Role::Archiver) {
            let missing = format!("archiver {} must name its database", n.name);
            let d = peer(
                &n.database,
                key("database"),
                missing,
                Role::Database,
                "a database",
            )?;
            match (n.privacy, section.links) {
                (Privacy::None, _) => {
                    return Err(invalid(
                        key("privacy"),
                        "\"none\" is refused for an archiving destination: use \"optional\" or \"body\"".into(),
                    ))
                }
                (Privacy::Body, LinkMode::Plain) => {
                    return Err(invalid(
                        key("privacy"),
                        "\"body\" needs encrypted links, but cluster.links = \"plain\"".into(),
                    ))
                }
                _ => {}
            }
            archivers.insert(n.name.clone(), ArchiverInfo { database: d });
        }
        if n.has(Role::Database) {
            databases.push(n.name.clone());
        }
    }
    let archiving = archiving.unwrap_or(ArchivingSection {
        internal: true,
        external: true,
        ..Default::default()
    });
    Ok(Cluster {
        domain: section.domain.clone(),
        front_ends,
        archivers,
        databases,
        users,
        policy: Policy {
            global: ArchiveSwitch {
                internal: archiving.internal,
                external: archiving.external,
            },
            sites: archiving.sites,
            users: archiving.users,
        },
    })
}

/// Web service nodes: they need channel nodes and the file token secret.
fn web(
    pool: &mut ChatPool,
    nodes: &[NodeConfig],
    file_token_key: Option<&str>,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    pool.web = nodes
        .iter()
        .filter(|n| n.has(Role::Web))
        .map(|n| n.name.clone())
        .collect();
    if !pool.web.is_empty() {
        if pool.channels.is_empty() {
            return Err(invalid(
                "node.roles".into(),
                "a web node serves group chat: the cluster needs channel nodes too".into(),
            ));
        }
        match file_token_key {
            Some(k) if k.len() >= 16 => pool.token_key = k.as_bytes().to_vec(),
            _ => {
                return Err(invalid(
                    "cluster.file_token_key".into(),
                    "a web node needs a secret of 16 characters or more to check file tokens"
                        .into(),
                ))
            }
        }
    }
    Ok(())
}

/// The compliance node and `[compliance]`: the export's format, scope and
/// output folder (and whether its group may read it).
fn compliance(
    pool: &mut ChatPool,
    nodes: &[NodeConfig],
    section: Option<&RawCompliance>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    invalid: Invalid,
) -> Result<(Option<PathBuf>, bool), ConfigError> {
    let comp: Vec<&NodeConfig> = nodes.iter().filter(|n| n.has(Role::Compliance)).collect();
    let mut compliance_output = None;
    let mut compliance_group_read = false;
    match (comp.as_slice(), section) {
        ([], None) => {}
        ([], Some(_)) => {
            return Err(invalid(
                "compliance".into(),
                "a [compliance] section needs a node with the compliance role".into(),
            ))
        }
        ([_], None) => {
            return Err(invalid(
                "compliance.output".into(),
                "a compliance node needs [compliance] output = \"folder\"".into(),
            ))
        }
        ([node], Some(c)) => {
            if pool.store.is_empty() {
                return Err(invalid(
                    "node.roles".into(),
                    "a compliance node serves group chat: the cluster needs a chat pool".into(),
                ));
            }
            pool.compliance = Some(node.name.clone());
            if let Some(f) = &c.format {
                pool.export.format = ExportFormat::parse(f).ok_or_else(|| {
                    invalid(
                        "compliance.format".into(),
                        format!("{f:?}: one of xml, jsonl, csv"),
                    )
                })?;
            }
            pool.export.rooms = c.rooms.clone();
            pool.export.users = c.users.clone();
            compliance_output = Some(resolve(&c.output));
            compliance_group_read = c.group_read;
        }
        (_, _) => {
            return Err(invalid(
                "node.roles".into(),
                "at most one node may have the compliance role".into(),
            ))
        }
    }
    Ok((compliance_output, compliance_group_read))
}

impl Config {
    /// The peers `node` must reach to be ready (`/readyz`): a front end's
    /// archiving server, an archiving server's database, a Channel
    /// server's chat stores (every post and room is written there first),
    /// a Compliance service's Web services (it fetches uploaded files).
    pub fn ready_peers(&self, node: &NodeConfig) -> Vec<String> {
        let with = |role: Role| {
            self.nodes
                .iter()
                .filter(move |n| n.has(role))
                .map(|n| n.name.clone())
        };
        let mut peers: Vec<String> = node
            .archiver
            .iter()
            .chain(node.database.iter())
            .cloned()
            .collect();
        if node.has(Role::Channel) {
            peers.extend(with(Role::ChatStore));
        }
        if node.has(Role::Compliance) {
            peers.extend(with(Role::Web));
        }
        peers.retain(|p| *p != node.name);
        peers.sort();
        peers.dedup();
        peers
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            file: path.display().to_string(),
            err,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses `text` as if read from `file`; relative paths resolve
    /// against `base`. The sections are checked in order: settings, nodes,
    /// the archiving topology, group chat, the Web service, compliance.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let fname = file.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: fname.clone(),
            msg: e.to_string(),
        })?;
        let invalid = |key: String, msg: String| ConfigError::Invalid {
            file: fname.clone(),
            key,
            msg,
        };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        raw.settings
            .validate()
            .map_err(|(key, msg)| invalid(format!("settings.{key}"), msg))?;
        let data_root = resolve(&raw.cluster.data);
        let mut nodes = nodes(&raw.nodes, &data_root, &resolve, &invalid)?;
        for (role, section, raw_engine) in [
            (Role::Database, "archive", raw.archive.as_ref()),
            (Role::ChatStore, "chat_store", raw.chat_store.as_ref()),
        ] {
            let names: Vec<String> = nodes
                .iter()
                .filter(|n| n.has(role))
                .map(|n| n.name.clone())
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let engines = store_engines(raw_engine, section, &names, &resolve, &invalid)?;
            for (node, engine) in nodes.iter_mut().filter(|n| n.has(role)).zip(engines) {
                match role {
                    Role::Database => node.archive_engine = engine,
                    _ => node.chat_engine = engine,
                }
            }
        }
        let cluster = archiving_cluster(&nodes, &raw.cluster, raw.archiving, &invalid)?;
        let mut pool = chat_pool(&raw.rooms, &raw.categories, &nodes, &invalid)?;
        // A window for a category no room can have is a typo that would
        // keep posts longer than the policy meant.
        if let Some(c) = raw
            .settings
            .chat_retention
            .keys()
            .find(|c| !c.is_empty() && !pool.categories.contains_key(*c))
        {
            return Err(invalid(
                "settings.chat_retention".into(),
                format!("no [[category]] is named {c:?}"),
            ));
        }
        web(
            &mut pool,
            &nodes,
            raw.cluster.file_token_key.as_deref(),
            &invalid,
        )?;
        let (compliance_output, compliance_group_read) = compliance(
            &mut pool,
            &nodes,
            raw.compliance.as_ref(),
            &resolve,
            &invalid,
        )?;
        Ok(Config {
            compliance_output,
            compliance_group_read,
            pool: Arc::new(pool),
            file: file.to_path_buf(),
            domain: raw.cluster.domain,
            links: raw.cluster.links,
            credentials: resolve(&raw.cluster.certs).join("users"),
            certs: resolve(&raw.cluster.certs),
            settings: raw.settings,
            nodes,
            cluster: Arc::new(cluster),
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Address book of every node.
    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.listen))
            .collect()
    }

    /// The front end a user is homed on.
    pub fn home(&self, user: &str) -> Option<&NodeConfig> {
        self.cluster.home(user).and_then(|n| self.node(n))
    }

    pub fn front_ends(&self) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(|n| n.has(Role::FrontEnd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::chat::pool::Directory;

    const GOOD: &str = r#"
[cluster]
domain = "corp.example"
links = "plain"

[settings]
critical_mode = true
heartbeat_interval = "2s"

[[node]]
name = "fe1"
roles = ["front_end"]
listen = "127.0.0.1:7101"
archiver = "arch1"
users = ["alice@corp.example", "user{1..3}@corp.example"]

[[node]]
name = "arch1"
roles = ["archiver"]
listen = "127.0.0.1:7201"
database = "db1"

[[node]]
name = "db1"
roles = ["database"]
listen = "127.0.0.1:7301"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("c.toml"), Path::new("/base"))
    }

    #[test]
    fn a_good_config_resolves_paths_users_and_settings() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.links, LinkMode::Plain);
        assert!(c.settings.critical_mode);
        assert_eq!(c.settings.heartbeat_interval, 2000);
        assert_eq!(c.cluster.users.len(), 4);
        assert_eq!(c.cluster.home("user2@corp.example"), Some("fe1"));
        assert_eq!(c.node("db1").unwrap().data, Path::new("/base/data/db1"));
        assert_eq!(c.certs, Path::new("/base/certs"));
        assert_eq!(
            c.node("arch1").unwrap().actors(),
            vec![ActorKind::DestinationQueue, ActorKind::Archiver]
        );
    }

    #[test]
    fn group_chat_nodes_and_rooms_make_a_pool() {
        let chat = format!(
            "{GOOD}{}",
            r#"
[[node]]
name = "ch1"
roles = ["channel"]
listen = "127.0.0.1:7401"

[[node]]
name = "lk1"
roles = ["lookup"]
listen = "127.0.0.1:7501"

[[node]]
name = "chatdb"
roles = ["chat_store"]
listen = "127.0.0.1:7601"

[[room]]
name = "deals"
members = ["user{1..3}@corp.example"]
denied = ["user3@corp.example"]
"#
        );
        let c = parse(&chat).unwrap();
        assert_eq!(c.pool.channels, vec!["ch1"]);
        assert_eq!(c.pool.store, "chatdb");
        let dir = Directory {
            rooms: c.pool.rooms.clone(),
            categories: c.pool.categories.clone(),
        };
        assert!(dir.may_read("deals", "user1@corp.example"));
        assert!(!dir.may_read("deals", "user3@corp.example"));
        // Categories: who rooms may hold, and who creates them.
        let cat = format!(
            "{chat}\n[[category]]\nname = \"corp\"\nallowed = [\"*\"]\ncreators = [\"user1@corp.example\"]\n\n[[room]]\nname = \"lobby\"\ncategory = \"corp\"\nprivacy = \"open\"\n"
        );
        let c = parse(&cat).unwrap();
        assert!(c.pool.categories["corp"].may_create("user1@corp.example"));
        assert_eq!(c.pool.rooms["lobby"].privacy, RoomPrivacy::Open);
        let e = err(&cat.replace("privacy = \"open\"", "privacy = \"public\""));
        assert!(e.contains("room[1].privacy"), "{e}");
        let e = err(&cat.replace("category = \"corp\"", "category = \"nope\""));
        assert!(e.contains("room[1].category"), "{e}");
        // Chat retention per category names a category of the config.
        let kept = parse(&format!("{cat}\n[settings.chat_retention]\ncorp = 30\n")).unwrap();
        assert_eq!(kept.settings.chat_retention["corp"], 30);
        let e = err(&format!("{cat}\n[settings.chat_retention]\ncrop = 30\n"));
        assert!(
            e.contains("settings.chat_retention") && e.contains("crop"),
            "{e}"
        );
        assert_eq!(c.node("ch1").unwrap().actors(), vec![ActorKind::Channel]);
        // A chat pool without a Lookup instance cannot work.
        let e = err(&chat.replace("roles = [\"lookup\"]", "roles = [\"channel\"]"));
        assert!(e.contains("node.roles") && e.contains("Lookup"), "{e}");
        // A web node needs the file token secret.
        let web = format!(
            "{chat}\n[[node]]\nname = \"web1\"\nroles = [\"web\"]\nlisten = \"127.0.0.1:7701\"\n"
        );
        let e = err(&web);
        assert!(e.contains("cluster.file_token_key"), "{e}");
        let keyed = web.replace(
            "links = \"plain\"",
            "links = \"plain\"\nfile_token_key = \"sixteen chars or more\"",
        );
        assert_eq!(parse(&keyed).unwrap().pool.web, vec!["web1"]);
        // A compliance node needs its output folder, and a chat pool.
        let comp = format!(
            "{chat}\n[[node]]\nname = \"comp1\"\nroles = [\"compliance\"]\nlisten = \"127.0.0.1:7801\"\n"
        );
        assert!(err(&comp).contains("compliance.output"));
        let with_out = format!("{comp}\n[compliance]\noutput = \"out\"\nformat = \"csv\"\n");
        let c = parse(&with_out).unwrap();
        assert_eq!(c.pool.compliance.as_deref(), Some("comp1"));
        assert!(c
            .compliance_output
            .as_ref()
            .is_some_and(|p| p.ends_with("out")));
        assert!(err(&with_out.replace("\"csv\"", "\"pdf\"")).contains("compliance.format"));
        // Export files are private unless the group may read them.
        assert!(!c.compliance_group_read);
        let shared = parse(&format!("{with_out}group_read = true\n")).unwrap();
        assert!(shared.compliance_group_read);
        assert!(err(&format!("{with_out}group_read = \"yes\"\n")).contains("group_read"));
        assert!(err(&format!("{GOOD}\n[compliance]\noutput = \"o\"\n")).contains("compliance"));
        // Rooms without chat nodes are refused.
        let e = err(&format!("{GOOD}\n[[room]]\nname = \"r\"\nmembers = []\n"));
        assert!(e.contains("room"), "{e}");
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err(&GOOD.replace("\"archiver\"]", "\"archivr\"]")).contains("node[1].roles"));
        assert!(
            err(&GOOD.replace("archiver = \"arch1\"", "archiver = \"db1\""))
                .contains("node[0].archiver")
        );
        assert!(err(&GOOD.replace(
            "heartbeat_interval = \"2s\"",
            "heartbeat_interval = \"soon\""
        ))
        .contains("heartbeat_interval"));
        assert!(err(&GOOD.replace(
            "database = \"db1\"",
            "database = \"db1\"\nprivacy = \"none\""
        ))
        .contains("node[1].privacy"));
        assert!(err(&GOOD.replace(
            "database = \"db1\"",
            "database = \"db1\"\nprivacy = \"body\""
        ))
        .contains("needs encrypted links"));
        assert!(err(&GOOD.replace("7201", "7101")).contains("node[1].listen"));
        assert!(err(&GOOD.replace("{1..3}", "{3..1}")).contains("node[0].users"));
        assert!(err(&GOOD.replace("links", "linkz")).contains("linkz"));
        assert!(err(&GOOD.replace("\"2s\"", "\"0s\""))
            .contains("settings.heartbeat_interval: must be greater than 0"));
    }

    #[test]
    fn the_archive_and_chat_store_engines_default_to_sqlite_and_postgres_is_checked() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node("db1").unwrap().archive_engine, StoreEngine::Sqlite);
        let pg = format!(
            "{GOOD}\n[archive]\nengine = \"postgres\"\n\
             url = \"postgres://hf:s3cret@db.corp.example:5432/archive?sslmode=require\"\n\
             tls_ca = \"certs/pg-ca.pem\"\nstatement_timeout = \"10s\"\n"
        );
        let c = parse(&pg).unwrap();
        let StoreEngine::Postgres(t) = &c.node("db1").unwrap().archive_engine else {
            panic!("not postgres")
        };
        assert_eq!(
            t.tls_ca.as_deref(),
            Some(Path::new("/base/certs/pg-ca.pem"))
        );
        assert_eq!(t.statement_timeout, std::time::Duration::from_secs(10));
        assert_eq!(t.connect_timeout, std::time::Duration::from_secs(5));
        let shown = format!("{t:?} {}", t.redacted());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://hf:***@db.corp.example:5432/archive?sslmode=require"));
        assert_eq!(c.node("fe1").unwrap().archive_engine, StoreEngine::Sqlite);
        assert_eq!(
            redact_url("host=h user=u password=p dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        assert_eq!(
            redact_url("postgres://u@h/d?password=p&x=1"),
            "postgres://u@h/d?password=***&x=1"
        );
        let without_url = format!("{GOOD}\n[archive]\nengine = \"postgres\"\n");
        assert!(err(&without_url).contains("archive.url"));
        let sqlite_with_url = format!("{GOOD}\n[chat_store]\nurl = \"postgres://h/d\"\n");
        assert!(err(&sqlite_with_url).contains("chat_store.url: only for engine"));
        let other = format!("{GOOD}\n[archive]\nengine = \"mysql\"\n");
        assert!(err(&other).contains("archive.engine"));
        let bad_mode = format!(
            "{GOOD}\n[archive]\nengine = \"postgres\"\nurl = \"postgres://h/d?sslmode=require\"\n"
        );
        assert!(err(&bad_mode).contains("tls_ca"), "{}", err(&bad_mode));
        let typo = format!("{GOOD}\n[archive]\nengin = \"postgres\"\n");
        assert!(err(&typo).contains("engin"));
        let two_dbs = pg.replace(
            "[[node]]\nname = \"db1\"",
            "[[node]]\nname = \"db2\"\nroles = [\"database\"]\nlisten = \"127.0.0.1:7302\"\n\n[[node]]\nname = \"db1\"",
        );
        assert!(err(&two_dbs).contains("{node}"), "{}", err(&two_dbs));
    }
}

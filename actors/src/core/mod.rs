//! What every service shares: the actor contract, ids, the typed protocol
//! and its framing, store key layouts, settings, identity and the cluster
//! description. Nothing here depends on a service folder.

pub mod actor;
pub mod cluster;
pub mod contract;
pub mod daily;
pub mod engine;
pub mod frame;
pub mod identity;
pub mod ids;
pub mod link;
pub mod operator;
pub mod output;
pub mod policy;
pub mod protocol;
pub mod reactor;
pub mod settings;
pub mod store_keys;
pub mod units;

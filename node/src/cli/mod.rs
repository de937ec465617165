//! The subcommands of `holdfast`, one module each; `main.rs` parses the
//! arguments and dispatches.

pub(crate) mod archive;
pub(crate) mod bench;
pub(crate) mod bench_peer;
pub(crate) mod bench_start;
pub(crate) mod bench_sweep;
pub(crate) mod certs;
pub(crate) mod chat;
pub(crate) mod chat_retention;
pub(crate) mod cluster;
pub(crate) mod common;
pub(crate) mod compliance;
pub(crate) mod critical;
pub(crate) mod dlq;
pub(crate) mod file;
pub(crate) mod im;
pub(crate) mod inspect;
pub(crate) mod load;
pub(crate) mod parked;
pub(crate) mod settings;
pub(crate) mod status;

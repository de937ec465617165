//! The production side of holdfast: the same actor cores the simulator
//! checks, hosted by actix actors on a real network with real storage.
//!
//! Reading order for the archiving path on a real node:
//! [`config`] (what runs where) → [`node`] (one actix actor per core,
//! effects executed in order, group commit) → [`file_disk`] (queue stores
//! on disk) and [`archive_db`] (the SQLite archive) → [`tls`] (mutual TLS
//! links) → [`client`] (IM clients, load, status) → [`cluster_up`].

pub mod archive_db;
pub mod archive_export;
pub mod bench;
pub mod bench_error;
pub mod bench_peer;
pub mod bench_start;
pub mod bench_sweep;
pub mod blob_files;
pub mod chat_client;
pub mod chat_db;
pub mod client;
pub mod cluster_status;
pub mod cluster_up;
pub mod compliance_client;
pub mod config;
pub mod engines;
pub mod file_disk;
pub mod metrics;
pub mod node;
pub mod operator_client;
pub mod path_error;
pub mod reach;
pub mod status_page;
pub mod tls;

pub(crate) use holdfast_host::lock;

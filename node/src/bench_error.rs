//! Why a benchmark could not run to its figures: one error type for the
//! throughput run (`bench.rs`) and the start-time run (`bench_start.rs`),
//! kept apart from both so that neither imports the other's module for it.

use crate::archive_db::ArchiveDbError;
use crate::client::ClientError;
use crate::cluster_up::ClusterUpError;
use crate::config::ConfigError;
use crate::operator_client::AskError;
use crate::path_error::PathError;
use crate::tls::TlsError;
use holdfast_actors::core::actor::StoreError;

/// Why a benchmark (`bench`, `bench --purge-rows`, `bench-start`) could
/// not run to its figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Its scratch folder, a runtime, this executable's path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Certs(#[from] TlsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A node did not start or come up.
    #[error(transparent)]
    Node(#[from] ClusterUpError),
    #[error(transparent)]
    Archive(#[from] ArchiveDbError),
    /// Filling a store straight through SQLite.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// Filling the chat store through its own code.
    #[error("{0}")]
    Store(StoreError),
    /// The retention purge could not be asked for.
    #[error(transparent)]
    Ask(#[from] AskError),
    #[error("the purge's thread panicked")]
    PurgePanicked,
    #[error("db1 started no purge")]
    NoPurge,
    #[error("the purge did not finish within 30 minutes")]
    PurgeTooLong,
    /// db1 refused a retention request: its answer.
    #[error("db1 refused: {0}")]
    Refused(String),
    /// A node of `bench-start` exited before it was ready.
    #[error("{name} exited ({status}) before it was ready; its log ends:\n{log_end}")]
    NotReady {
        name: String,
        status: std::process::ExitStatus,
        log_end: String,
    },
    /// A store of `bench-start` could not be built.
    #[error("building {}: {source}", .file.display())]
    Build {
        file: std::path::PathBuf,
        #[source]
        source: Box<BenchError>,
    },
}

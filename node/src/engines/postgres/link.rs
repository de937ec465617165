//! One connection to PostgreSQL, driven by a thread of its own.
//!
//! The `postgres` client runs a small Tokio runtime inside: it must not be
//! called from a thread that already drives one (a node's actix arbiter
//! does). So each store owns a worker thread holding the connection; the
//! store hands it a job and waits for the answer, at most as long as a
//! connect and two statements may take (connect and statement timeouts
//! bound the server's side, TCP keepalives and `TCP_USER_TIMEOUT` the
//! network's). A job that does not answer in time is abandoned with its
//! thread, and the next call starts a fresh one: the arbiter is never
//! blocked for longer than that.
//!
//! A failure that is not a refusal (a lost server, a timeout) drops the
//! connection; the next job connects again (and checks the schema). The
//! cores retry their batches, and inserts are idempotent.

use super::schema::{self, describe, Schema, SchemaError};
use super::target::PgTarget;
use crate::engines::EngineError;
use holdfast_actors::core::actor::{Recovered, StoreError, StoreOp, Written};
use holdfast_actors::core::engine::{Answer, Query};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};
use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Why a PostgreSQL target cannot be used. `target` is always the
/// redacted URL: no message shows a password.
#[derive(Debug, thiserror::Error)]
pub enum PgLinkError {
    /// The URL does not parse.
    #[error("{target}: {source}")]
    Url {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error("{target}: names no host")]
    NoHost { target: String },
    #[error(
        "{target}: sslmode=require needs tls_ca = \"<the CA certificate (PEM) that signed the server's>\""
    )]
    RequireWithoutCa { target: String },
    #[error("{target}: sslmode=disable, but tls_ca asks for TLS")]
    DisableWithCa { target: String },
    /// The CA file cannot be read as PEM certificates.
    #[error("tls_ca {}: {source}", .ca.display())]
    CaFile {
        ca: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate of the CA file is not one a root store takes.
    #[error("tls_ca {}: {source}", .ca.display())]
    CaCertificate {
        ca: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls_ca {}: no certificate in it", .ca.display())]
    NoCaCertificate { ca: PathBuf },
    /// The TLS client configuration could not be built.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    #[error("{target}: cannot connect: {source}")]
    Connect {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error("{target}: {source}")]
    Schema {
        target: String,
        #[source]
        source: SchemaError,
    },
    /// The worker could not connect: the store's own message (it names
    /// the target).
    #[error("{0}")]
    Unavailable(String),
    /// The worker failed otherwise.
    #[error("{target}: {error}")]
    Store { target: String, error: StoreError },
}

/// Checks what can be checked of a target without connecting: the URL
/// parses, names a host, and its `sslmode` agrees with `tls_ca`.
pub fn check_target(target: &PgTarget) -> Result<(), PgLinkError> {
    pg_config(target).map(|_| ())
}

/// The client configuration of `target`: its URL, with the timeouts and
/// the TLS mode the node imposes.
fn pg_config(target: &PgTarget) -> Result<postgres::Config, PgLinkError> {
    use postgres::config::SslMode;
    let mut config =
        postgres::Config::from_str(&target.url).map_err(|source| PgLinkError::Url {
            target: target.redacted(),
            source,
        })?;
    if config.get_hosts().is_empty() {
        return Err(PgLinkError::NoHost {
            target: target.redacted(),
        });
    }
    match (config.get_ssl_mode(), &target.tls_ca) {
        (SslMode::Require, None) => {
            return Err(PgLinkError::RequireWithoutCa {
                target: target.redacted(),
            })
        }
        (SslMode::Disable, Some(_)) => {
            return Err(PgLinkError::DisableWithCa {
                target: target.redacted(),
            })
        }
        // With a CA, TLS is required: no quiet fall-back to plain text.
        (_, Some(_)) => {
            config.ssl_mode(SslMode::Require);
        }
        (_, None) => {
            config.ssl_mode(SslMode::Disable);
        }
    }
    let timeout_ms = target.statement_timeout.as_millis().max(1);
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c statement_timeout={timeout_ms}"),
        _ => format!("-c statement_timeout={timeout_ms}"),
    };
    config
        .options(&options)
        .connect_timeout(target.connect_timeout)
        .tcp_user_timeout(target.statement_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    if config.get_application_name().is_none() {
        config.application_name("holdfast");
    }
    Ok(config)
}

/// The TLS connector: the operator's CA only, the server's name checked.
fn tls(ca: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgLinkError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let file = |source| PgLinkError::CaFile {
        ca: ca.to_path_buf(),
        source,
    };
    for cert in CertificateDer::pem_file_iter(ca).map_err(file)? {
        roots
            .add(cert.map_err(file)?)
            .map_err(|source| PgLinkError::CaCertificate {
                ca: ca.to_path_buf(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(PgLinkError::NoCaCertificate {
            ca: ca.to_path_buf(),
        });
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects to `target` and brings its schema to this build's version.
pub(crate) fn connect(target: &PgTarget, schema: &Schema) -> Result<Client, PgLinkError> {
    let config = pg_config(target)?;
    let connected = match &target.tls_ca {
        None => config.connect(NoTls),
        Some(ca) => config.connect(tls(ca)?),
    };
    let mut client = connected.map_err(|source| PgLinkError::Connect {
        target: target.redacted(),
        source,
    })?;
    schema::migrate(&mut client, schema).map_err(|source| PgLinkError::Schema {
        target: target.redacted(),
        source,
    })?;
    Ok(client)
}

/// The connection as the worker thread holds it, with the statements
/// prepared on it.
pub(crate) struct Session {
    target: PgTarget,
    schema: &'static Schema,
    client: Option<Client>,
    prepared: HashMap<&'static str, Statement>,
}

impl Session {
    /// The connection, made (again) if there is none or the server closed
    /// it.
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.lost();
        }
        if self.client.is_none() {
            let client = connect(&self.target, self.schema);
            self.client = Some(client.map_err(|e| StoreError::Io(e.to_string()))?);
        }
        Ok(self.client.as_mut().expect("connected just now"))
    }

    /// `sqls` prepared on the connection (once per connection).
    pub(crate) fn prepare<const N: usize>(
        &mut self,
        sqls: [&'static str; N],
    ) -> Result<[Statement; N], StoreError> {
        let mut out = Vec::with_capacity(N);
        for sql in sqls {
            if let Some(s) = self.prepared.get(sql) {
                out.push(s.clone());
                continue;
            }
            let prepared = self.client()?.prepare(sql);
            let statement = prepared.map_err(|e| self.error(&e))?;
            self.prepared.insert(sql, statement.clone());
            out.push(statement);
        }
        Ok(out
            .try_into()
            .unwrap_or_else(|_| unreachable!("N statements")))
    }

    /// Forgets the connection: the next job connects again.
    pub(crate) fn lost(&mut self) {
        self.client = None;
        self.prepared.clear();
    }

    /// A failure of a statement outside any one key's row: no space, or
    /// an I/O failure naming the server.
    pub(crate) fn error(&self, e: &postgres::Error) -> StoreError {
        io_error(&self.target, e)
    }

    pub(crate) fn target(&self) -> &PgTarget {
        &self.target
    }
}

/// A full disk on the server is [`StoreError::NoSpace`]; anything else
/// not refused for good is an I/O failure, retried by the core.
pub(crate) fn io_error(target: &PgTarget, e: &postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::DISK_FULL) {
        return StoreError::NoSpace;
    }
    StoreError::Io(format!("{}: {}", target.redacted(), describe(e)))
}

/// Errors no retry can cure: a constraint or a trigger refusing the row
/// (integrity classes 23, `RAISE EXCEPTION` P0001), a value the column
/// or the encoding refuses (data exceptions, class 22: a NUL byte in
/// text), a value over the engine's limits (class 54).
pub(crate) fn refused_for_good(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        let c = c.code();
        c.starts_with("23") || c.starts_with("22") || c.starts_with("54") || c == "P0001"
    })
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A store's connection to PostgreSQL, behind its worker thread.
pub(crate) struct Link {
    target: PgTarget,
    schema: &'static Schema,
    jobs: Option<mpsc::Sender<Job>>,
}

impl Link {
    /// Starts the worker and connects: the server must be reachable and
    /// its schema one this build understands.
    pub(crate) fn open(target: &PgTarget, schema: &'static Schema) -> Result<Link, PgLinkError> {
        pg_config(target)?;
        let mut link = Link {
            target: target.clone(),
            schema,
            jobs: None,
        };
        link.call(|s| s.client().map(|_| ())).map_err(|e| match e {
            StoreError::Io(m) => PgLinkError::Unavailable(m),
            error => PgLinkError::Store {
                target: target.redacted(),
                error,
            },
        })?;
        Ok(link)
    }

    /// Applies one `Persist` batch on the connection with the store's
    /// `apply` (one transaction: all of it or nothing).
    pub(crate) fn apply(
        &mut self,
        ops: &[StoreOp],
        apply: fn(&mut Session, &[StoreOp]) -> Result<Written, StoreError>,
    ) -> Result<Written, StoreError> {
        let ops = ops.to_vec();
        self.call(move |s| apply(s, &ops))
    }

    /// Answers a core's query on the connection with the store's `answer`.
    pub(crate) fn answer(
        &mut self,
        query: &Query,
        answer: fn(&mut Session, &Query) -> Result<Answer, StoreError>,
    ) -> Result<Answer, StoreError> {
        let query = query.clone();
        self.call(move |s| answer(s, &query))
    }

    /// The core's state at start, as the store's `recovered` reads it.
    pub(crate) fn recovered(
        &mut self,
        recovered: fn(&mut Session) -> Result<Recovered, StoreError>,
    ) -> Result<Recovered, EngineError> {
        self.call(recovered).map_err(EngineError::Store)
    }

    /// Runs `job` on the connection; waits at most a connect and two
    /// statements' timeouts for its answer. A failure other than a
    /// refusal drops the connection.
    pub(crate) fn call<R: Send + 'static>(
        &mut self,
        job: impl FnOnce(&mut Session) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let jobs = match &self.jobs {
            Some(jobs) => jobs.clone(),
            None => {
                let jobs = self.spawn()?;
                self.jobs = Some(jobs.clone());
                jobs
            }
        };
        let (answer, answered) = mpsc::sync_channel(1);
        let sent = jobs.send(Box::new(move |session: &mut Session| {
            let result = job(session);
            if matches!(result, Err(StoreError::Io(_))) {
                session.lost();
            }
            let _ = answer.send(result);
        }));
        if sent.is_err() {
            self.jobs = None;
            return Err(StoreError::Io(format!(
                "{}: the connection's thread stopped",
                self.target.redacted()
            )));
        }
        let wait = self.target.connect_timeout
            + 2 * self.target.statement_timeout
            + Duration::from_secs(5);
        match answered.recv_timeout(wait) {
            Ok(result) => result,
            Err(why) => {
                // Abandon the thread: it ends once its job returns and it
                // finds no more jobs. What it was doing is rolled back
                // with its connection (or committed: the retry is
                // idempotent).
                self.jobs = None;
                let what = match why {
                    mpsc::RecvTimeoutError::Timeout => format!("no answer within {wait:?}"),
                    mpsc::RecvTimeoutError::Disconnected => {
                        "the connection's thread stopped".into()
                    }
                };
                Err(StoreError::Io(format!(
                    "{}: {what}",
                    self.target.redacted()
                )))
            }
        }
    }

    fn spawn(&self) -> Result<mpsc::Sender<Job>, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let mut session = Session {
            target: self.target.clone(),
            schema: self.schema,
            client: None,
            prepared: HashMap::new(),
        };
        std::thread::Builder::new()
            .name(format!("pg-{}", self.schema.component))
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&mut session);
                }
            })
            .map_err(|e| StoreError::Io(format!("cannot start a thread: {e}")))?;
        Ok(jobs)
    }

    pub(crate) fn target(&self) -> &PgTarget {
        &self.target
    }
}

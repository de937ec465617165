//! `holdfast bench --peer rabbitmq`: the same workload through a peer
//! pipeline, measured right after holdfast in the same invocation, so
//! both rows come from the same machine under the same load.
//!
//! The peer: a producer publishes every IM as a persistent message to a
//! durable RabbitMQ queue with publisher confirms (at most
//! [`CONFIRM_WINDOW`] unconfirmed), a consumer writes the rows into an
//! archive opened by holdfast's own [`ArchiveDb`] (same schema and
//! indexes, WAL, `synchronous = FULL`) in transactions of up to
//! [`BATCH`] rows, and acknowledges a whole batch with one multiple ack
//! after its commit. So each side answers "accepted" only once the IM is
//! on disk, and lets go of it only once the archive has committed it.
//!
//! The broker is Debian's `rabbitmq-server`, installed when missing,
//! started on loopback on free ports in a scratch folder and stopped
//! after the run, also when the run fails.

use crate::archive_db::{ArchiveDb, ArchiveDbError};
use crate::bench::BenchOptions;
use crate::client::OpenLoop;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use holdfast_actors::core::actor::{StoreError, StoreOp};
use holdfast_actors::core::protocol::{ArchiveRecord, RecordKind};
use holdfast_actors::core::store_keys::{self as keys, Row, DB_ROW};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unconfirmed publishes allowed at once: enough to keep the broker's
/// disk writes batched, bounded so a slow broker slows the producer.
pub const CONFIRM_WINDOW: usize = 2_000;
/// Rows per SQLite transaction of the peer's consumer.
pub const BATCH: usize = 1_000;
/// Deliveries the broker may push ahead of the acks: two batches, so the
/// consumer fills the next batch while the last one commits.
const PREFETCH: u16 = 2 * BATCH as u16;
/// With no delivery for this long, a gathered batch waits for the writer
/// rather than for more deliveries.
const BATCH_IDLE: Duration = Duration::from_millis(5);
const QUEUE: &str = "holdfast-bench";
/// Delivery errors in a row, with no delivery between them, after which
/// the consumer gives up.
const CONSUMER_ERRORS_MAX: u32 = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the peer pipeline could not run to its figures.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("--peer {0:?}: expected rabbitmq or nats")]
    UnknownPeer(String),
    #[error("the rate must be positive")]
    BadRate,
    /// The peer's client or broker failed at `what` (`connect`,
    /// `publish`, `delivery`, ...).
    #[error("{peer}: {what}: {source}")]
    Broker {
        peer: &'static str,
        what: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("{0}: the consumer stopped")]
    ConsumerStopped(&'static str),
    /// Delivery errors in a row, with no delivery between them: the last.
    #[error("the consumer gave up after {errors} delivery errors in a row: {last}")]
    ConsumerGaveUp {
        errors: u32,
        #[source]
        last: Box<PeerError>,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveDbError),
    /// Committing a batch to the peer's archive.
    #[error("peer archive: {0}")]
    ArchiveWrite(StoreError),
    #[error(transparent)]
    Encode(#[from] postcard::Error),
    #[error(transparent)]
    Window(#[from] tokio::sync::AcquireError),
    /// The scratch folder, a runtime, the server's log.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no free loopback port: {0}")]
    NoFreePort(#[source] std::io::Error),
    #[error(
        "{package} is not installed and could not be installed ({source}): \
         install Debian's {package} package, or run as root"
    )]
    NotInstalled {
        package: String,
        #[source]
        source: AptError,
    },
    #[error("rabbitmq-server installed, but its server script was not found")]
    RabbitScriptMissing,
    #[error("nats-server installed, but its binary was not found")]
    NatsBinaryMissing,
    #[error("cannot start {}: {source}", .program.display())]
    Start {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A server exited before it was up: its name and its log's end.
    #[error("{server} exited ({status}):\n{log}")]
    ServerExited {
        server: &'static str,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("nats-server not ready after 30s")]
    NatsLate,
    #[error("rabbitmq-server not ready after {}:\n{log}", humantime::format_duration(*.after))]
    RabbitLate { after: Duration, log: String },
}

/// The error of the RabbitMQ client at `what`.
fn rabbitmq(what: &'static str) -> impl Fn(lapin::Error) -> PeerError {
    PeerError::at(Peer::Rabbitmq, what)
}

impl PeerError {
    /// The error of `peer`'s client at `what`.
    fn at<E: Into<BoxError>>(peer: Peer, what: &'static str) -> impl Fn(E) -> PeerError {
        move |e| PeerError::Broker {
            peer: peer.name(),
            what,
            source: e.into(),
        }
    }
}

/// Why `apt-get` did not install a package.
#[derive(Debug, thiserror::Error)]
pub enum AptError {
    /// It could not be run.
    #[error(transparent)]
    Run(#[from] std::io::Error),
    /// It failed: what it wrote to its standard error.
    #[error("{0}")]
    Failed(String),
}

/// The peer systems `--peer` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Rabbitmq,
    Nats,
}

impl Peer {
    pub fn parse(s: &str) -> Result<Peer, PeerError> {
        match s {
            "rabbitmq" => Ok(Peer::Rabbitmq),
            "nats" => Ok(Peer::Nats),
            _ => Err(PeerError::UnknownPeer(s.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Peer::Rabbitmq => "rabbitmq",
            Peer::Nats => "nats",
        }
    }

    /// What "confirmed" and "archived" promise on this side.
    pub fn durability(self) -> &'static str {
        match self {
            Peer::Rabbitmq => {
                "durable queue, persistent messages, publisher confirms (a confirm \
                 comes after the queue has written the message to disk and fsynced it); \
                 archive committed with fsync (SQLite WAL, synchronous=FULL) before the \
                 multiple ack"
            }
            Peer::Nats => {
                "JetStream file storage, acknowledged publishes; nats-server 2.9 does not \
                 fsync before the publish ack (stream files are synced every 2 minutes by \
                 default, sync_interval): an acknowledged IM can be lost on power loss; \
                 archive committed with fsync (SQLite WAL, synchronous=FULL) before the \
                 cumulative ack (AckPolicy::All)"
            }
        }
    }
}

/// What holdfast's own row promises, printed beside the peer's.
pub const HOLDFAST_DURABILITY: &str = "outgoing queue fsynced before \"accepted\"; archive \
     committed with fsync (SQLite WAL, synchronous=FULL) before the acknowledgement";

#[derive(Debug, Serialize)]
pub struct PeerReport {
    pub peer: String,
    pub offered_rate: f64,
    pub sent: u64,
    /// Publishes the broker confirmed (ack).
    pub confirmed: u64,
    /// Publishes the broker refused (nack).
    pub nacked: u64,
    /// Publishes with no confirm at all (connection lost).
    pub unknown: u64,
    pub confirmed_per_s: f64,
    pub archived: u64,
    pub archived_per_s: f64,
    /// send → confirmed, µs: p50, p99, max.
    pub confirm_us: [u64; 3],
    /// send → archived (committed in SQLite), ms: p50, p99, max.
    pub archive_ms: [u64; 3],
    pub durability: String,
}

/// One IM as the producer publishes it.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: String,
    from: String,
    to: String,
    /// When it was due to be sent, ms since the UNIX epoch.
    sent_at: u64,
    body: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pct(h: &Histogram<u64>) -> [u64; 3] {
    if h.is_empty() {
        return [0; 3];
    }
    [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).expect("valid precision")
}

/// Runs the peer pipeline with `opts`' rate, duration and body size.
pub fn run(peer: Peer, opts: &BenchOptions) -> Result<PeerReport, PeerError> {
    if !opts.rate.is_finite() || opts.rate <= 0.0 {
        return Err(PeerError::BadRate);
    }
    // The peer's server and its archive in a scratch folder; the pipeline
    // on a runtime of its own, dropped before the server is stopped.
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("archive.sqlite");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    };
    match peer {
        Peer::Rabbitmq => {
            let server = RabbitServer::start(dir.path(), opts.progress)?;
            let rt = runtime()?;
            let r = rt.block_on(rabbit_run(&server, &archive, opts));
            drop(rt);
            // Stopped here on success and on error alike (and by Drop on a panic).
            drop(server);
            r
        }
        Peer::Nats => {
            let server = NatsServer::start(dir.path(), opts.progress)?;
            let rt = runtime()?;
            let r = rt.block_on(nats_run(server.port, &archive, opts));
            drop(rt);
            drop(server);
            r
        }
    }
}

async fn nats_run(port: u16, archive: &Path, opts: &BenchOptions) -> Result<PeerReport, PeerError> {
    use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
    let url = format!("nats://127.0.0.1:{port}");
    // Producer and consumer on connections of their own, as two services
    // would be.
    let pclient = async_nats::connect(&url)
        .await
        .map_err(PeerError::at(Peer::Nats, "connect"))?;
    let cclient = async_nats::connect(&url)
        .await
        .map_err(PeerError::at(Peer::Nats, "connect"))?;
    let mut pjs = jetstream::new(pclient);
    // A loaded broker may take longer than the client's default 5 s to
    // acknowledge: that is latency to measure, not a lost publish.
    pjs.set_timeout(Duration::from_secs(60));
    let stream = pjs
        .get_or_create_stream(stream::Config {
            name: "HOLDFAST_BENCH".into(),
            subjects: vec![NATS_SUBJECT.into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(PeerError::at(Peer::Nats, "create the stream"))?;
    let _ = stream;
    let cjs = jetstream::new(cclient);
    let consumer: jetstream::consumer::Consumer<pull::Config> = cjs
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("archiver".into()),
                // Acking one message acks every earlier one: the multiple
                // ack after a commit.
                ack_policy: AckPolicy::All,
                max_ack_pending: PREFETCH as i64,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
            "HOLDFAST_BENCH",
        )
        .await
        .map_err(PeerError::at(Peer::Nats, "create the consumer"))?;
    let deliveries = consumer
        .messages()
        .await
        .map_err(PeerError::at(Peer::Nats, "consume"))?
        .map(|m| {
            m.map(|m| (m.message.payload.to_vec(), m))
                .map_err(PeerError::at(Peer::Nats, "delivery"))
        });
    let publish_one = |payload: Vec<u8>| {
        let pjs = pjs.clone();
        async move {
            let ack = pjs
                .publish(NATS_SUBJECT, payload.into())
                .await
                .map_err(PeerError::at(Peer::Nats, "publish"))?;
            let answer: ConfirmFuture = Box::pin(async move {
                match ack.await {
                    Ok(_) => Answer::Ack,
                    Err(_) => Answer::None,
                }
            });
            Ok(answer)
        }
    };
    let ack = {
        let handle = tokio::runtime::Handle::current();
        move |m: jetstream::Message| {
            handle
                .block_on(m.ack())
                .map_err(PeerError::at(Peer::Nats, "ack"))
        }
    };
    measure(Peer::Nats, opts, archive, publish_one, deliveries, ack).await
}

const NATS_SUBJECT: &str = "holdfast.bench";

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}

async fn rabbit_run(
    server: &RabbitServer,
    archive: &Path,
    opts: &BenchOptions,
) -> Result<PeerReport, PeerError> {
    let url = server.url();
    // Producer and consumer on connections of their own, as two services
    // would be.
    let pconn = connect(&url).await.map_err(rabbitmq("connect"))?;
    let cconn = connect(&url).await.map_err(rabbitmq("connect"))?;
    let pch = pconn
        .create_channel()
        .await
        .map_err(rabbitmq("open channel"))?;
    pch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(rabbitmq("confirm.select"))?;
    pch.queue_declare(
        QUEUE,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(rabbitmq("declare the queue"))?;
    let cch = cconn
        .create_channel()
        .await
        .map_err(rabbitmq("open channel"))?;
    cch.basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(rabbitmq("basic.qos"))?;
    let consumer = cch
        .basic_consume(
            QUEUE,
            "holdfast-bench-archiver",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(rabbitmq("basic.consume"))?;
    let deliveries = consumer.map(|d| {
        d.map(|d| (d.data, d.delivery_tag))
            .map_err(rabbitmq("delivery"))
    });
    let publish_one = |payload: Vec<u8>| {
        let pch = pch.clone();
        async move {
            let confirm = pch
                .basic_publish(
                    "",
                    QUEUE,
                    BasicPublishOptions::default(),
                    &payload,
                    // 2: persistent, written to disk by a durable queue.
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(rabbitmq("publish"))?;
            let answer: ConfirmFuture = Box::pin(async move {
                match confirm.await {
                    Ok(Confirmation::Ack(_)) => Answer::Ack,
                    Ok(Confirmation::Nack(_)) => Answer::Nack,
                    // Not in confirm mode, or the channel closed.
                    Ok(Confirmation::NotRequested) | Err(_) => Answer::None,
                }
            });
            Ok(answer)
        }
    };
    let ack = {
        let (handle, cch) = (tokio::runtime::Handle::current(), cch.clone());
        move |tag: u64| {
            handle
                .block_on(cch.basic_ack(tag, BasicAckOptions { multiple: true }))
                .map_err(rabbitmq("ack"))
        }
    };
    let r = measure(Peer::Rabbitmq, opts, archive, publish_one, deliveries, ack).await;
    let _ = pconn.close(200, "bench done").await;
    let _ = cconn.close(200, "bench done").await;
    // Lets the client's I/O loops see the close before the runtime goes,
    // or they log errors about a runtime shutting down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    r
}

/// How the broker answered one publish.
pub(crate) enum Answer {
    Ack,
    Nack,
    None,
}

pub(crate) type ConfirmFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

/// The measurement, the same for every peer: open-loop publishing through
/// `publish_one` (whose future resolves once the publish is sent, to a
/// future of the broker's confirm), `deliveries` gathered into batches
/// and committed on a writer thread, each batch's last token passed to
/// `ack` after its commit (a cumulative ack).
pub(crate) async fn measure<T, P, PF, S>(
    peer: Peer,
    opts: &BenchOptions,
    archive: &Path,
    publish_one: P,
    deliveries: S,
    ack: impl Fn(T) -> Result<(), PeerError> + Send + 'static,
) -> Result<PeerReport, PeerError>
where
    T: Send + 'static,
    P: Fn(Vec<u8>) -> PF,
    PF: std::future::Future<Output = Result<ConfirmFuture, PeerError>>,
    S: futures_util::Stream<Item = Result<(Vec<u8>, T), PeerError>> + Send + Unpin + 'static,
{
    let archived = Arc::new(AtomicU64::new(0));
    let archive_ms = Arc::new(Mutex::new(histogram()));
    let writer_error = Arc::new(Mutex::new(None::<PeerError>));
    let db = ArchiveDb::open(archive)?;
    // The SQLite writer runs on a thread of its own: a commit waits for
    // fsync, and the consumer keeps filling the next batch meanwhile.
    // Rendezvous: a batch is handed over only to a writer waiting for one.
    let (batches, batches_rx) = std::sync::mpsc::sync_channel::<(Vec<Wire>, T)>(0);
    let writer = {
        let (archived, archive_ms, writer_error) =
            (archived.clone(), archive_ms.clone(), writer_error.clone());
        std::thread::spawn(move || {
            write_batches(
                peer,
                db,
                batches_rx,
                ack,
                &archived,
                &archive_ms,
                &writer_error,
            )
        })
    };
    let consuming = tokio::spawn(consume(deliveries, batches));

    let start = Instant::now();
    let (sent, confirms) = publish(publish_one, opts, start).await?;
    let confirmed_done = start.elapsed();
    let confirmed = confirms.acked.load(Ordering::Relaxed);

    // Archived throughput counts from the first send to the moment the
    // archive holds every confirmed IM, polled as holdfast's row is.
    let deadline = Instant::now() + Duration::from_secs(120);
    let archived_done = loop {
        if archived.load(Ordering::Relaxed) >= confirmed || Instant::now() > deadline {
            break start.elapsed();
        }
        if let Some(e) = writer_error.lock().expect("not poisoned").take() {
            return Err(e);
        }
        if consuming.is_finished() {
            // The consumer gave up (a delivery error, or the broker closed
            // the stream): say why rather than wait out the deadline.
            return match consuming.await {
                Ok(Err(e)) => Err(e),
                _ => Err(PeerError::ConsumerStopped(peer.name())),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The consumer's sender goes with the aborted task, so the writer
    // ends after its last ack.
    consuming.abort();
    let _ = consuming.await;
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    if let Some(e) = writer_error.lock().expect("not poisoned").take() {
        return Err(e);
    }
    let archived = archived.load(Ordering::Relaxed);
    let confirm_us = pct(&confirms.latency_us.lock().expect("not poisoned"));
    let archive_ms = pct(&archive_ms.lock().expect("not poisoned"));
    let nacked = confirms.nacked.load(Ordering::Relaxed);
    Ok(PeerReport {
        peer: peer.name().into(),
        offered_rate: opts.rate,
        sent,
        confirmed,
        nacked,
        unknown: sent - confirmed - nacked,
        confirmed_per_s: confirmed as f64 / confirmed_done.as_secs_f64(),
        archived,
        archived_per_s: archived as f64 / archived_done.as_secs_f64(),
        confirm_us,
        archive_ms,
        durability: peer.durability().into(),
    })
}

/// Open-loop publishing at the offered rate, like holdfast's client: each
/// IM's latency counts from when it was due, so a full confirm window
/// shows as latency rather than as a slower offered rate. Returns how
/// many were sent, once every confirm has come back.
async fn publish<P, PF>(
    publish_one: P,
    opts: &BenchOptions,
    start: Instant,
) -> Result<(u64, Arc<ConfirmsHist>), PeerError>
where
    P: Fn(Vec<u8>) -> PF,
    PF: std::future::Future<Output = Result<ConfirmFuture, PeerError>>,
{
    let rate = opts.rate;
    let mut pacing = OpenLoop::new(start, rate, opts.duration);
    let window = Arc::new(tokio::sync::Semaphore::new(CONFIRM_WINDOW));
    let confirms = Arc::new(ConfirmsHist::default());
    let body = "x".repeat(opts.body_size);
    let bar = opts
        .progress
        .then(|| crate::client::load_bar(rate, opts.duration));
    let mut tasks = Vec::with_capacity(pacing.total() as usize);
    while let Some(due) = pacing.due().await {
        for n in due {
            let due_at = start + Duration::from_secs_f64((n - 1) as f64 / rate);
            let sent_at = now_ms().saturating_sub(due_at.elapsed().as_millis() as u64);
            let wire = Wire {
                id: format!("peer-{n:09}"),
                from: format!("user{}@bench.example", n % 1000),
                to: format!("user{}@bench.example", (n * 7 + 1) % 1000),
                sent_at,
                body: body.clone(),
            };
            let payload = postcard::to_allocvec(&wire)?;
            let permit = window.clone().acquire_owned().await?;
            let confirm = publish_one(payload).await?;
            let (confirms, bar) = (confirms.clone(), bar.clone());
            tasks.push(tokio::spawn(async move {
                let answer = confirm.await;
                drop(permit);
                let latency = due_at.elapsed().as_micros() as u64;
                match answer {
                    Answer::Ack => {
                        confirms.acked.fetch_add(1, Ordering::Relaxed);
                        let _ = confirms
                            .latency_us
                            .lock()
                            .expect("not poisoned")
                            .record(latency.max(1));
                    }
                    Answer::Nack => {
                        confirms.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::None => {}
                }
                if let Some(bar) = bar {
                    bar.inc(1);
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok((pacing.total(), confirms))
}

struct ConfirmsHist {
    acked: AtomicU64,
    nacked: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Default for ConfirmsHist {
    fn default() -> Self {
        ConfirmsHist {
            acked: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            latency_us: Mutex::new(histogram()),
        }
    }
}

/// Gathers deliveries into batches and hands each to the writer with the
/// ack token of its last message, group-commit style as holdfast's
/// archiver does: a batch goes as soon as the writer is idle (the
/// rendezvous channel's `try_send` succeeds only then), so at low rates
/// a row does not wait for 999 others; while the writer commits, up to
/// [`BATCH`] rows gather for the next transaction.
async fn consume<T: Send + 'static>(
    mut deliveries: impl futures_util::Stream<Item = Result<(Vec<u8>, T), PeerError>> + Unpin,
    batches: std::sync::mpsc::SyncSender<(Vec<Wire>, T)>,
) -> Result<(), PeerError> {
    use std::sync::mpsc::TrySendError;
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = None;
    let mut errors = 0u32;
    loop {
        let next = if batch.is_empty() {
            deliveries.next().await
        } else {
            match tokio::time::timeout(BATCH_IDLE, deliveries.next()).await {
                Ok(next) => next,
                Err(_) => {
                    // Nothing more for now: the batch waits for the writer.
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    let Some(token) = last.take() else { continue };
                    if hand_over(&batches, full, token).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            }
        };
        let (data, token) = match next {
            Some(Ok(d)) => {
                errors = 0;
                d
            }
            // A pull consumer's stream yields errors it recovers from (a
            // missed idle heartbeat, a status the server answers a pull
            // request with) and goes on delivering: ending here on the
            // first one left every later delivery unread, a stall until
            // the deadline. Only errors with no delivery between them end
            // the run, and then saying why.
            Some(Err(e)) => {
                errors += 1;
                tracing::warn!("peer consumer: delivery error {errors} in a row: {e}");
                if errors >= CONSUMER_ERRORS_MAX {
                    return Err(PeerError::ConsumerGaveUp {
                        errors,
                        last: Box::new(e),
                    });
                }
                continue;
            }
            None => {
                // The stream ended: what was gathered is still archived.
                if let Some(token) = last.take() {
                    let _ = hand_over(&batches, std::mem::take(&mut batch), token).await;
                }
                return Ok(());
            }
        };
        last = Some(token);
        // A message this bench did not publish is left unacknowledged:
        // it cannot be archived, and the count will show it missing.
        if let Ok(w) = postcard::from_bytes::<Wire>(&data) {
            batch.push(w);
        }
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let Some(token) = last.take() else { continue };
            if hand_over(&batches, full, token).await.is_err() {
                return Ok(());
            }
        } else if !batch.is_empty() {
            let (ready, token) = (std::mem::take(&mut batch), last.take());
            let Some(token) = token else { continue };
            match batches.try_send((ready, token)) {
                Ok(()) => batch = Vec::with_capacity(BATCH),
                Err(TrySendError::Full((back, token))) => {
                    batch = back;
                    last = Some(token);
                }
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
    }
}

/// The bounded channel blocks while the writer commits: off the reactor.
async fn hand_over<T: Send + 'static>(
    batches: &std::sync::mpsc::SyncSender<(Vec<Wire>, T)>,
    batch: Vec<Wire>,
    token: T,
) -> Result<(), ()> {
    let tx = batches.clone();
    tokio::task::spawn_blocking(move || tx.send((batch, token)).map_err(|_| ()))
        .await
        .map_err(|_| ())?
}

/// Commits each batch in one transaction, then acknowledges every
/// delivery up to its last with one cumulative ack.
fn write_batches<T>(
    peer: Peer,
    mut db: ArchiveDb,
    batches: std::sync::mpsc::Receiver<(Vec<Wire>, T)>,
    ack: impl Fn(T) -> Result<(), PeerError>,
    archived: &AtomicU64,
    archive_ms: &Mutex<Histogram<u64>>,
    error: &Mutex<Option<PeerError>>,
) {
    while let Ok((batch, token)) = batches.recv() {
        let archived_at = now_ms();
        let ops: Vec<StoreOp> = batch
            .iter()
            .map(|w| StoreOp::Insert {
                key: keys::key_str(DB_ROW, &w.id),
                value: keys::encode(&Row {
                    rowid: 0,
                    record: ArchiveRecord {
                        kind: RecordKind::Im,
                        id: w.id.as_str().into(),
                        client_id: w.id.as_str().into(),
                        from: w.from.as_str().into(),
                        to: w.to.as_str().into(),
                        time: w.sent_at,
                        body: w.body.clone(),
                        external: false,
                        front_end: peer.name().into(),
                    },
                    archived_at,
                }),
            })
            .collect();
        if let Err(e) = db.apply(&ops) {
            *error.lock().expect("not poisoned") = Some(PeerError::ArchiveWrite(e));
            return;
        }
        {
            // Latency to the end of the commit, not to the stamp on the
            // row: the fsync counts against the peer.
            let committed = now_ms();
            let mut h = archive_ms.lock().expect("not poisoned");
            for w in &batch {
                let _ = h.record(committed.saturating_sub(w.sent_at).max(1));
            }
        }
        archived.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = ack(token) {
            *error.lock().expect("not poisoned") = Some(e);
            return;
        }
    }
}

/// A throwaway RabbitMQ node on loopback: its database, logs and Erlang
/// cookie in a scratch folder, its ports free ones, its own epmd.
pub struct RabbitServer {
    child: Child,
    port: u16,
    epmd_port: u16,
}

/// The server script itself: Debian's `/usr/sbin/rabbitmq-server` is a
/// wrapper that switches to the `rabbitmq` user, which would not honour
/// the scratch folder.
fn rabbit_script() -> Option<PathBuf> {
    let direct = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if direct.is_file() {
        return Some(direct);
    }
    let lib = std::fs::read_dir("/usr/lib/rabbitmq/lib").ok()?;
    lib.flatten()
        .map(|e| e.path().join("sbin/rabbitmq-server"))
        .find(|p| p.is_file())
}

/// Finds the RabbitMQ server, installing Debian's package when missing.
pub fn find_or_install_rabbitmq(progress: bool) -> Result<PathBuf, PeerError> {
    if let Some(p) = rabbit_script() {
        return Ok(p);
    }
    install_debian("rabbitmq-server", progress)?;
    rabbit_script().ok_or(PeerError::RabbitScriptMissing)
}

/// Finds `nats-server`, installing Debian's package when missing.
pub fn find_or_install_nats(progress: bool) -> Result<PathBuf, PeerError> {
    let found = || {
        [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    };
    if let Some(p) = found() {
        return Ok(p);
    }
    install_debian("nats-server", progress)?;
    found().ok_or(PeerError::NatsBinaryMissing)
}

/// Installs one of Debian's packages (as root, or through `sudo -n`), as
/// the test script does for PostgreSQL, with a plain error when it cannot.
fn install_debian(package: &str, progress: bool) -> Result<(), PeerError> {
    if progress {
        eprintln!("{package} is not installed: installing Debian's package");
    }
    let root = nix::unistd::geteuid().is_root();
    let apt = |args: &[&str]| -> Result<(), AptError> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        };
        let out = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(AptError::Failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    };
    apt(&["update", "-qq"])
        .and_then(|()| apt(&["install", "-y", "-qq", "--no-install-recommends", package]))
        .map_err(|source| PeerError::NotInstalled {
            package: package.to_string(),
            source,
        })
}

/// A throwaway NATS server with JetStream on loopback, its store in a
/// scratch folder.
pub struct NatsServer {
    child: Child,
    port: u16,
}

impl NatsServer {
    pub fn start(dir: &Path, progress: bool) -> Result<NatsServer, PeerError> {
        let bin = find_or_install_nats(progress)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new(&bin)
            .arg("-js")
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| PeerError::Start {
                program: bin.clone(),
                source,
            })?;
        let mut server = NatsServer { child, port };
        let every = Duration::from_millis(100);
        match wait_until_up(&mut server.child, Duration::from_secs(30), every, || {
            nats_answers(port)
        }) {
            Ok(()) => Ok(server),
            Err(NotUp::Exited(status)) => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                Err(PeerError::ServerExited {
                    server: "nats-server",
                    status,
                    log,
                })
            }
            Err(NotUp::Late) => Err(PeerError::NatsLate),
        }
    }
}

/// Why a server started here is not up.
enum NotUp {
    /// It exited, with this status.
    Exited(std::process::ExitStatus),
    /// It did not answer within the time it had.
    Late,
}

/// Waits until `answers` says the server `child` is up, asking every
/// `every`, for `timeout` at the most.
fn wait_until_up(
    child: &mut Child,
    timeout: Duration,
    every: Duration,
    answers: impl Fn() -> bool,
) -> Result<(), NotUp> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotUp::Exited(status));
        }
        if answers() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NotUp::Late);
        }
        std::thread::sleep(every);
    }
}

/// A loopback connection to `port` whose reads give up after 2 s: how
/// the servers started here are asked whether they are up.
fn probe(port: u16) -> Option<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    Some(s)
}

/// Stops a server started here: SIGTERM (a clean shutdown), SIGKILL if it
/// has not exited after 20 s.
fn stop(child: &mut Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// True when the port greets with the NATS protocol's `INFO` line.
fn nats_answers(port: u16) -> bool {
    use std::io::Read;
    let Some(mut s) = probe(port) else {
        return false;
    };
    let mut hello = [0u8; 4];
    s.read_exact(&mut hello).is_ok() && &hello == b"INFO"
}

impl Drop for NatsServer {
    /// SIGTERM (a clean shutdown), SIGKILL after 20 s.
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn free_port() -> Result<u16, PeerError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(PeerError::NoFreePort)
}

impl RabbitServer {
    pub fn start(dir: &Path, progress: bool) -> Result<RabbitServer, PeerError> {
        let script = find_or_install_rabbitmq(progress)?;
        let (port, dist_port, epmd_port) = (free_port()?, free_port()?, free_port()?);
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n"),
        )
        .and_then(|()| std::fs::write(dir.join("enabled_plugins"), "[].\n"))?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let name = format!("holdfast-bench-{}-{port}@localhost", std::process::id());
        let child = Command::new(&script)
            // The Erlang cookie goes in $HOME: the scratch folder.
            .env("HOME", dir)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            // Its own epmd on loopback, on a free port, so that neither a
            // system-wide epmd nor another bench's node is in the way.
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env(
                "RABBITMQ_SERVER_START_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| PeerError::Start {
                program: script.clone(),
                source,
            })?;
        let mut server = RabbitServer {
            child,
            port,
            epmd_port,
        };
        server.wait_ready(dir, Duration::from_secs(90))?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Ready once the AMQP listener answers (it opens last in the boot).
    fn wait_ready(&mut self, dir: &Path, timeout: Duration) -> Result<(), PeerError> {
        let tail = || {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        let (port, every) = (self.port, Duration::from_millis(200));
        wait_until_up(&mut self.child, timeout, every, || amqp_answers(port)).map_err(|e| match e {
            NotUp::Exited(status) => PeerError::ServerExited {
                server: "rabbitmq-server",
                status,
                log: tail(),
            },
            NotUp::Late => PeerError::RabbitLate {
                after: timeout,
                log: tail(),
            },
        })
    }
}

/// True when the port answers the AMQP 0-9-1 protocol header with a
/// frame (`connection.start`): the broker is up and taking connections.
fn amqp_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Some(mut s) = probe(port) else {
        return false;
    };
    let mut frame = [0u8; 1];
    // Frame type 1: a method frame.
    s.write_all(b"AMQP\x00\x00\x09\x01").is_ok()
        && s.read_exact(&mut frame).is_ok()
        && frame[0] == 1
}

impl Drop for RabbitServer {
    /// SIGTERM (the server script stops the node cleanly), SIGKILL after
    /// 20 s; then the epmd it started.
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u64) -> Result<(Vec<u8>, u64), PeerError> {
        let w = Wire {
            id: format!("peer-{n:09}"),
            from: "a@bench.example".into(),
            to: "b@bench.example".into(),
            sent_at: n,
            body: "x".into(),
        };
        Ok((postcard::to_allocvec(&w).unwrap(), n))
    }

    /// What the consumer hands to the writer: the ids of each batch and
    /// its ack token, and how the consumer ended.
    /// A delivery error of the broker's client, saying `what`.
    fn failed(what: &str) -> Result<(Vec<u8>, u64), PeerError> {
        Err(PeerError::at(Peer::Nats, "delivery")(what))
    }

    fn consumed(items: Vec<Result<(Vec<u8>, u64), PeerError>>) -> (Vec<String>, Vec<u64>, String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<Wire>, u64)>(0);
        let writer = std::thread::spawn(move || {
            let (mut ids, mut tokens) = (Vec::new(), Vec::new());
            while let Ok((batch, token)) = rx.recv() {
                ids.extend(batch.into_iter().map(|w| w.id));
                tokens.push(token);
            }
            (ids, tokens)
        });
        let end = rt.block_on(consume(futures_util::stream::iter(items), tx));
        let (ids, tokens) = writer.join().unwrap();
        (ids, tokens, format!("{end:?}"))
    }

    #[test]
    fn a_delivery_error_the_stream_recovers_from_does_not_end_the_consumer() {
        let (ids, tokens, end) = consumed(vec![
            delivery(1),
            failed("missed idle heartbeat"),
            delivery(2),
            failed("missed idle heartbeat"),
            delivery(3),
        ]);
        assert_eq!(ids, ["peer-000000001", "peer-000000002", "peer-000000003"]);
        assert_eq!(tokens.last(), Some(&3), "the last ack covers everything");
        assert_eq!(end, "Ok(())");
    }

    #[test]
    fn errors_with_no_delivery_between_them_end_the_consumer_saying_why() {
        let mut items = vec![delivery(1)];
        items.extend((0..CONSUMER_ERRORS_MAX).map(|_| failed("consumer deleted")));
        items.push(delivery(2));
        let (ids, _, end) = consumed(items);
        assert!(!ids.contains(&"peer-000000002".to_string()), "{ids:?}");
        assert!(end.contains("consumer deleted"), "{end}");
    }
}

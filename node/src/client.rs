//! An IM client of a real cluster: submits IMs to the sender's home front
//! end and waits for the explicit answer (accepted, rejected) — or reports
//! that none came in time (the outcome is then unknown: the IM may or may
//! not be archived, and never twice).
//!
//! Used by `holdfast im send`, `holdfast load`, the benchmark and the
//! real-process tests.

use crate::config::{Config, LinkMode};
use crate::lock;
use crate::reach::{answer_from, CannotReach};
use crate::tls::{Credential, TlsError, TlsLink};
use hdrhistogram::Histogram;
use holdfast_actors::core::identity::{check_user_name, BadUserName, Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr, MessageId, UserId};
use holdfast_actors::core::protocol::{ArchivingMsg, Envelope, Im, Msg, RejectReason};
use holdfast_host::transport::{
    Link, Network, PlainLink, TransportError, CLIENT_OUTBOUND_CAPACITY,
};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What became of one submitted IM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The front end took responsibility: if archivable, it will be
    /// archived, under `message_id` (the cluster-wide id it assigned).
    Accepted { at: u64, message_id: MessageId },
    /// Critical mode is off and the front end's queue store failed: the
    /// IM was delivered but it is **not** archived.
    DeliveredNotArchived {
        at: u64,
        message_id: MessageId,
        reason: String,
    },
    /// Explicitly refused: it will not be archived.
    Rejected { reason: String },
    /// The front end is past its capacity and kept nothing: refused for
    /// now, answered at once; the client may try again.
    Busy,
    /// No answer in time.
    Unknown,
}

/// Why a client could not be set up or a load could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// On plain links, a name that cannot be a principal's.
    #[error("user {user:?}: {source}")]
    UserName {
        user: String,
        #[source]
        source: BadUserName,
    },
    /// The user's credential or the TLS link it sets up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The credential is for a role this request does not take.
    #[error("{user}'s credential is for the {role} role; this needs {wanted}")]
    WrongRole {
        user: String,
        role: Role,
        /// The roles that would do, `user or operator`.
        wanted: String,
    },
    /// The sender has no home front end.
    #[error("{user} is not homed on any front end of the config")]
    NotHomed { user: String },
    #[error("the config homes fewer than two users")]
    TooFewUsers,
    #[error("the rate must be positive")]
    BadRate,
}

type Waiting = Arc<Mutex<BTreeMap<MessageId, oneshot::Sender<Outcome>>>>;

/// IM clients of the config's users: one connection identity per sender,
/// made when that sender first sends (each proves its own principal, so one
/// connection never speaks for two users).
pub struct Client {
    config: Arc<Config>,
    /// Answers of every connection arrive here.
    tx: tokio::sync::mpsc::UnboundedSender<Envelope>,
    senders: Mutex<BTreeMap<String, Arc<Network>>>,
    waiting: Waiting,
}

/// Who a client speaks as, and the link that proves it: on TLS links the
/// principal of `user`'s credential (which must have one of `roles`), on
/// plain links `user` in the first of `roles`, believed.
pub fn client_identity(
    config: &Config,
    user: &str,
    roles: &[Role],
) -> Result<(Principal, Arc<dyn Link>), ClientError> {
    match config.links {
        LinkMode::Plain => {
            check_user_name(user).map_err(|source| ClientError::UserName {
                user: user.to_string(),
                source,
            })?;
            Ok((Principal::new(user, roles[0]), Arc::new(PlainLink)))
        }
        LinkMode::Tls => {
            let credential = Credential::load(&config.certs, &config.credentials, user)?;
            let principal = credential.principal.clone();
            if !roles.contains(&principal.role) {
                let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                return Err(ClientError::WrongRole {
                    user: user.to_string(),
                    role: principal.role,
                    wanted: wanted.join(" or "),
                });
            }
            let link = TlsLink::for_client(&config.certs, &credential)?;
            Ok((principal, Arc::new(link)))
        }
    }
}

/// A connection name for `principal` nobody can guess: replies go to the
/// latest connection that uses a client's name, so another client cannot
/// take them over.
pub fn connection_name(principal: &Principal) -> String {
    let nonce: u128 = rand::rngs::StdRng::from_entropy().gen();
    principal.client_name(&format!("{nonce:032x}"))
}

impl Client {
    /// Clients of the config's users. Must be called inside a tokio
    /// runtime.
    pub fn new(config: Arc<Config>) -> Result<Client, ClientError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Envelope>();
        let waiting: Waiting = Arc::new(Mutex::new(BTreeMap::new()));
        let w = waiting.clone();
        tokio::spawn(async move {
            while let Some(env) = rx.recv().await {
                let (id, outcome) = match env.msg {
                    Msg::Archiving(ArchivingMsg::ImAccepted { id, at, message_id }) => {
                        (id, Outcome::Accepted { at, message_id })
                    }
                    Msg::Archiving(ArchivingMsg::ImDeliveredNotArchived {
                        id,
                        message_id,
                        at,
                        reason,
                    }) => (
                        id,
                        Outcome::DeliveredNotArchived {
                            at,
                            message_id,
                            reason,
                        },
                    ),
                    Msg::Archiving(ArchivingMsg::ImRejected {
                        id,
                        reason: RejectReason::Busy,
                    }) => (id, Outcome::Busy),
                    Msg::Archiving(ArchivingMsg::ImRejected { id, reason }) => (
                        id,
                        Outcome::Rejected {
                            reason: describe(&reason),
                        },
                    ),
                    other => {
                        tracing::debug!(msg = other.name(), "client got an unexpected message");
                        continue;
                    }
                };
                if let Some(tx) = lock(&w).remove(&id) {
                    let _ = tx.send(outcome);
                }
            }
        });
        Ok(Client {
            config,
            tx,
            senders: Mutex::new(BTreeMap::new()),
            waiting,
        })
    }

    /// The connection that speaks for `user` (made on first use: on TLS
    /// links it presents `user`'s credential).
    /// Requests dropped before they left this client, its queue to a
    /// front end being full (each is also an unanswered request).
    pub fn dropped_here(&self) -> u64 {
        lock(&self.senders).values().map(|n| n.dropped()).sum()
    }

    pub fn sender(&self, user: &str) -> Result<Arc<Network>, ClientError> {
        if let Some(net) = lock(&self.senders).get(user) {
            return Ok(net.clone());
        }
        let (principal, link) = client_identity(&self.config, user, &[Role::User])?;
        let peers = self
            .config
            .front_ends()
            .map(|n| (n.name.clone(), n.listen))
            .collect();
        let net = Network::forwarding_to(
            connection_name(&principal),
            peers,
            link,
            CLIENT_OUTBOUND_CAPACITY,
            self.tx.clone(),
        );
        Ok(lock(&self.senders)
            .entry(user.to_string())
            .or_insert(net)
            .clone())
    }

    /// The front ends the last attempt to connect to failed, and why
    /// (`connection refused: 127.0.0.1:8101 (fe1)`), over every sender's
    /// connection: what a load with IMs unanswered tells the operator.
    pub fn unreachable_front_ends(&self) -> Vec<CannotReach> {
        let nets: Vec<Arc<Network>> = lock(&self.senders).values().cloned().collect();
        let mut found: BTreeMap<String, CannotReach> = BTreeMap::new();
        for fe in self.config.front_ends() {
            for net in &nets {
                if let Some(failure) = net.connect_failed(&fe.name) {
                    found
                        .entry(fe.name.clone())
                        .or_insert(CannotReach::Connect {
                            node: fe.name.clone(),
                            failure,
                        });
                }
            }
        }
        found.into_values().collect()
    }

    /// Submits one IM and waits up to `timeout` for the answer (through
    /// connection failures: the transport retries, and an IM that reaches
    /// the front end meanwhile is answered).
    pub async fn send_im(&self, im: Im, timeout: Duration) -> Result<Outcome, SendError> {
        self.submit(im, timeout, false).await
    }

    /// Submits one IM for a one-off command: as [`Client::send_im`], but
    /// gives up at once when the connection to the sender's front end
    /// cannot be made (`connection refused: 127.0.0.1:8101 (fe1)`), rather
    /// than waiting out `timeout` for an answer that cannot come.
    pub async fn send_im_once(&self, im: Im, timeout: Duration) -> Result<Outcome, SendError> {
        self.submit(im, timeout, true).await
    }

    async fn submit(
        &self,
        im: Im,
        timeout: Duration,
        fail_fast: bool,
    ) -> Result<Outcome, SendError> {
        let home = self
            .config
            .home(&im.from)
            .ok_or_else(|| ClientError::NotHomed {
                user: im.from.to_string(),
            })?
            .name
            .clone();
        let net = self.sender(&im.from)?;
        let id = im.id.clone();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let env = Envelope {
            from: Addr::new(net.me().to_string(), ActorKind::Client),
            to: Addr::new(home.clone(), ActorKind::FrontEnd),
            id: 0,
            msg: Msg::Archiving(ArchivingMsg::SubmitIm { im }),
        };
        net.send(env)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let answer = async { rx.await.ok() };
        let got = if fail_fast {
            answer_from(&net, &home, deadline, answer).await
        } else {
            Ok(tokio::time::timeout_at(deadline, answer)
                .await
                .ok()
                .flatten())
        };
        if !matches!(got, Ok(Some(_))) {
            lock(&self.waiting).remove(&id);
        }
        Ok(got?.unwrap_or(Outcome::Unknown))
    }
}

/// Why an IM could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No credential, a sender homed nowhere: nothing was sent.
    #[error(transparent)]
    Setup(#[from] ClientError),
    /// The transport would not take the request: nothing was sent.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The front end could not be reached.
    #[error(transparent)]
    CannotReach(#[from] CannotReach),
}

pub fn describe(reason: &RejectReason) -> String {
    match reason {
        RejectReason::NotHomed => "sender not homed on this front end".into(),
        RejectReason::UnknownRecipient => "unknown recipient".into(),
        RejectReason::ArchivingUnavailable(s) => format!("archiving unavailable: {s}"),
        RejectReason::Invalid(s) => format!("invalid: {s}"),
        RejectReason::TooLarge { what, limit } => {
            format!("too large: the {what} limit is {limit} bytes")
        }
        RejectReason::CriticalMode(s) => format!("critical mode: {s}"),
        RejectReason::NodeStopping => "front end stopping".into(),
        RejectReason::Forbidden(s) => format!("forbidden: {s}"),
        RejectReason::Busy => {
            "busy: the front end is past its capacity; nothing was kept, try again shortly".into()
        }
    }
}

/// A fresh message id: unique across processes and runs.
pub fn new_id(prefix: &str) -> String {
    let r: u64 = rand::rngs::StdRng::from_entropy().gen();
    format!("{prefix}-{r:016x}")
}

/// What `holdfast load` reports.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Of the rejected, answered busy (the front end past its capacity).
    pub busy: u64,
    pub unknown: u64,
    /// Of the unanswered, requests that never left this client: its queue
    /// to a front end was full (the front ends read slower than the load
    /// was offered), so they were dropped here, not lost by the cluster.
    pub not_sent: u64,
    /// Delivered but not archived (critical mode off, queue store failing).
    pub delivered_not_archived: u64,
    pub seconds: f64,
    /// Accept latency percentiles in microseconds: p50, p90, p99, max.
    pub accept_us: [u64; 4],
    /// Rejection reasons and how often each came.
    pub reasons: BTreeMap<String, u64>,
}

/// One submitted IM and its outcome (for `--outcomes` and tests).
#[derive(Clone, Debug, Serialize)]
pub struct Sent {
    pub id: MessageId,
    pub from: UserId,
    pub to: UserId,
    /// When it was sent, ms since the UNIX epoch.
    pub sent_at: u64,
    /// Microseconds from sending to the answer (or the timeout).
    pub latency_us: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Open-loop load: `rate` IMs per second for `duration` between random
/// pairs of the config's users, each answered or timed out after
/// `timeout` (or given up at once, unanswered, when its front end refuses
/// the connection). Returns the report and every IM's outcome.
pub async fn load(
    client: Arc<Client>,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    body_size: usize,
) -> Result<(LoadReport, Vec<Sent>), ClientError> {
    load_showing(client, rate, duration, timeout, body_size, None).await
}

/// Open-loop pacing: `rate` sends a second from `start` for `duration`,
/// each due at its own time whatever became of the earlier ones.
pub(crate) struct OpenLoop {
    start: Instant,
    rate: f64,
    total: u64,
    sent: u64,
}

impl OpenLoop {
    pub(crate) fn new(start: Instant, rate: f64, duration: Duration) -> OpenLoop {
        OpenLoop {
            start,
            rate,
            total: (rate * duration.as_secs_f64()).round() as u64,
            sent: 0,
        }
    }

    /// How many sends in all.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The numbers (from 1) of the sends due by now and not yet handed
    /// out, a millisecond after the last call; `None` once all were.
    pub(crate) async fn due(&mut self) -> Option<std::ops::RangeInclusive<u64>> {
        if self.sent >= self.total {
            return None;
        }
        if self.sent > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let due = ((self.start.elapsed().as_secs_f64() * self.rate) as u64 + 1).min(self.total);
        let first = self.sent + 1;
        self.sent = due;
        Some(first..=due)
    }
}

/// A progress bar of IMs answered (or timed out) out of those to send.
pub fn load_bar(rate: f64, duration: Duration) -> indicatif::ProgressBar {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed:>4} [{bar:40}] {pos}/{len} IMs answered {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// [`load`], counting each answer on `progress` (made by [`load_bar`]).
pub async fn load_showing(
    client: Arc<Client>,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    body_size: usize,
    progress: Option<indicatif::ProgressBar>,
) -> Result<(LoadReport, Vec<Sent>), ClientError> {
    let users: Vec<UserId> = client.config.cluster.users.keys().cloned().collect();
    if users.len() < 2 {
        return Err(ClientError::TooFewUsers);
    }
    if !rate.is_finite() || rate <= 0.0 {
        return Err(ClientError::BadRate);
    }
    // Every sender's connection identity up front: a missing credential is
    // an error now, not thousands of unknown outcomes.
    for u in &users {
        client.sender(u)?;
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let run = new_id("load");
    let start = Instant::now();
    let mut pacing = OpenLoop::new(start, rate, duration);
    let mut tasks = Vec::with_capacity(pacing.total() as usize);
    while let Some(due) = pacing.due().await {
        for n in due {
            let a = rng.gen_range(0..users.len());
            let mut b = rng.gen_range(0..users.len() - 1);
            if b >= a {
                b += 1;
            }
            let id = MessageId::from(format!("{run}-{n}"));
            let mut body = format!("{id}: ");
            while body.len() < body_size {
                body.push_str("lorem ipsum ");
            }
            body.truncate(body_size.max(id.len()));
            let im = Im {
                id,
                from: users[a].clone(),
                to: users[b].clone(),
                body,
            };
            let c = client.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let sent_at = crate::node::now_ms();
                let (id, from, to) = (im.id.clone(), im.from.clone(), im.to.clone());
                // A front end that refuses the connection answers nothing:
                // its IMs end at once, not at the timeout (the report names
                // it), while the others' are answered as they come.
                let outcome = c
                    .send_im_once(im, timeout)
                    .await
                    .unwrap_or(Outcome::Unknown);
                let latency_us = t.elapsed().as_micros() as u64;
                if let Some(p) = &progress {
                    p.inc(1);
                }
                let sent = Sent {
                    id,
                    from,
                    to,
                    sent_at,
                    latency_us,
                    outcome,
                };
                (sent, latency_us)
            }));
        }
    }
    let mut hist = Histogram::<u64>::new(3).expect("valid precision");
    let mut report = LoadReport {
        sent: 0,
        accepted: 0,
        rejected: 0,
        busy: 0,
        unknown: 0,
        not_sent: 0,
        delivered_not_archived: 0,
        seconds: 0.0,
        accept_us: [0; 4],
        reasons: BTreeMap::new(),
    };
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        let Ok((sent, us)) = t.await else { continue };
        report.sent += 1;
        match &sent.outcome {
            Outcome::Accepted { .. } => {
                report.accepted += 1;
                let _ = hist.record(us.max(1));
            }
            Outcome::Rejected { reason } => {
                report.rejected += 1;
                *report.reasons.entry(reason.clone()).or_insert(0) += 1;
            }
            Outcome::Busy => {
                report.rejected += 1;
                report.busy += 1;
            }
            Outcome::DeliveredNotArchived { .. } => report.delivered_not_archived += 1,
            Outcome::Unknown => report.unknown += 1,
        }
        all.push(sent);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.not_sent = client.dropped_here();
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    if !hist.is_empty() {
        report.accept_us = [
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.9),
            hist.value_at_quantile(0.99),
            hist.max(),
        ];
    }
    Ok((report, all))
}

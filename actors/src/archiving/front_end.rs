//! Front end: accepts IMs from its homed users, routes them to the
//! recipient, and runs the **archiving agent**: per-user policy decides
//! whether the message is sent for archiving.
//!
//! * lync2010: the record is handed to the local
//!   [`crate::archiving::outgoing_queue`] first; the client is told "accepted" once the
//!   queue holds it durably.
//! * ocs2007r2: the IM is routed first and archived only when the
//!   recipient's side answers (a message whose response never came back is
//!   not archived — the legacy behaviour).
//!
//! **Critical mode.** When archiving cannot be guaranteed (the queue
//! reports a NACK, a full quota or a failing store, or a record could not
//! be queued) a front end with `critical_mode` rejects new IMs explicitly
//! until archiving is healthy again (automatically, or by an operator).
//! Without critical mode the answer depends on why the record could not be
//! queued: a full quota refuses the IM explicitly (the quota exists so that
//! nothing is dropped); a failing store (full disk, I/O error) lets the IM
//! through with the distinct answer `ImDeliveredNotArchived` and a
//! `delivered_not_archived` event — never the "accepted" that means
//! "durably queued for archiving".
//!
//! **Message ids.** The front end assigns every admitted message a
//! cluster-wide id (128 random bits from the node's generator) that keys
//! the archive; the client's id is kept beside it for correlation only. A
//! client that reuses an id gets two messages with two archive rows: no
//! sequence of requests delivers an IM without its record.

use crate::core::actor::{
    authorize, identity_refused, ignored, Actor, Ctx, Recovered, StoreError, StoreOp, Timer,
    Written,
};
use crate::core::cluster::Cluster;
use crate::core::identity::{self, Refusal, Role};
use crate::core::ids::{ActorKind, Addr, MessageId, Millis, Token};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::archiving::ArchivingTimer;
use crate::core::protocol::{
    ArchiveRecord, ArchivingMsg, CallReport, EnqueueFailure, Im, Msg, RecordKind, RejectReason,
};
use crate::core::settings::{Sabotage, Semantics, Settings};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Store key of the critical-mode state: a restart does not end a shutdown
/// (with automatic resume, the queue's next healthy report does).
const CRITICAL_KEY: &[u8] = b"critical";

/// Longest client-chosen request id a front end takes.
pub const CLIENT_ID_MAX_BYTES: usize = 256;

/// An admitted message: the client's request with the id the front end
/// assigned (`im.id`) and the client's own id beside it.
#[derive(Debug)]
struct Admitted {
    im: Im,
    client_id: MessageId,
    /// When the front end admitted it: the message time its archive row
    /// carries, whenever the record is queued (ocs2007r2 queues it only
    /// once the recipient's side answered) and however often it is sent.
    at: Millis,
}

/// An IM waiting for its outgoing queue to confirm the enqueue.
#[derive(Debug)]
struct Pending {
    /// `None`: the client was already answered (ocs2007r2).
    client: Option<Addr>,
    kind: RecordKind,
    msg: Admitted,
    /// When the front end admitted the IM (checked against critical mode).
    admitted_at: Millis,
}

/// A lasting overload raises `front_end_busy` at most this often.
const BUSY_REPORT_EVERY: Millis = 60_000;

pub struct FrontEnd {
    name: String,
    cluster: Arc<Cluster>,
    settings: Settings,
    pending: BTreeMap<Token, Pending>,
    /// ocs2007r2: archivable IMs routed to another front end, archived when
    /// its answer comes back.
    awaiting_response: BTreeMap<MessageId, Admitted>,
    next_token: u64,
    /// Messaging is stopped by critical mode (with the reason).
    shut_down: Option<String>,
    /// What the outgoing queue last said about archiving.
    archiving_ok: bool,
    /// The resume timer runs: archiving reported healthy since then.
    resume_armed: bool,
    /// IMs answered busy, in all and since the last `front_end_busy`
    /// event, and when that was raised.
    busy_answers: u64,
    busy_unreported: u64,
    busy_reported_at: Option<Millis>,
    /// IMs delivered to recipients homed here (a stand-in for the SIP leg).
    pub delivered: u64,
    /// IMs handed to the federation edge.
    pub federated_out: u64,
    /// Sabotage for checker tests only (see `Sabotage`): the defects
    /// these front ends had before, switched back on.
    sabotage: Sabotage,
}

impl FrontEnd {
    pub fn new(name: impl Into<String>, cluster: Arc<Cluster>, settings: Settings) -> Self {
        FrontEnd {
            name: name.into(),
            cluster,
            settings,
            pending: BTreeMap::new(),
            awaiting_response: BTreeMap::new(),
            next_token: 1,
            shut_down: None,
            archiving_ok: true,
            resume_armed: false,
            busy_answers: 0,
            busy_unreported: 0,
            busy_reported_at: None,
            delivered: 0,
            federated_out: 0,
            sabotage: Sabotage::default(),
        }
    }

    /// Sabotage for checker tests only: switches back on the defects that
    /// `fe_accept_unqueued`, `fe_client_ids`, `fe_no_size_limit` and
    /// `fe_trust_sender` name,
    /// so that a test can show the checker seeing what they cause.
    pub fn sabotaged(mut self, sabotage: &Sabotage) -> Self {
        self.sabotage = sabotage.clone();
        self
    }

    pub fn is_shut_down(&self) -> bool {
        self.shut_down.is_some()
    }

    fn queue(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::OutgoingQueue)
    }

    fn legacy(&self) -> bool {
        self.settings.semantics == Semantics::Ocs2007r2
    }

    /// Whether the front end is past its capacity: this request waited
    /// in the node (a saturated processor, a full inbox) `admission_wait`
    /// or longer before it got here, or the IMs admitted earlier have
    /// waited that long for the queue's disk, or too many of them wait.
    /// Answering busy then, at once, keeps what admitted IMs wait bounded
    /// and tells every other client where it stands; admitting them all
    /// would only lengthen the wait until clients time out not knowing
    /// whether their IM was taken.
    fn overloaded(&self, ctx: &Ctx) -> bool {
        let (now, wait) = (ctx.now(), self.settings.admission_wait);
        self.pending.len() as u64 >= self.settings.admission_queue
            || (wait > 0
                && (ctx.waited_ms() >= wait
                    // Tokens grow with time: the first pending IM is the
                    // oldest.
                    || self
                        .pending
                        .values()
                        .next()
                        .is_some_and(|p| now >= p.admitted_at.saturating_add(wait))))
    }

    /// Answers an IM busy, telling operators when an overload begins and
    /// then at most once a minute, with counts.
    fn busy(&mut self, client: Addr, id: MessageId, ctx: &mut Ctx) {
        let now = ctx.now();
        self.busy_answers += 1;
        self.busy_unreported += 1;
        if self
            .busy_reported_at
            .is_none_or(|at| now >= at.saturating_add(BUSY_REPORT_EVERY))
        {
            let oldest = self
                .pending
                .values()
                .next()
                .map_or(0, |p| now.saturating_sub(p.admitted_at));
            ctx.event(
                OperatorEvent::FrontEndBusy,
                format!(
                    "{}: {} IMs answered busy; {} admitted IMs wait for the queue, the oldest {oldest} ms",
                    self.name,
                    self.busy_unreported,
                    self.pending.len()
                ),
            );
            self.busy_unreported = 0;
            self.busy_reported_at = Some(now);
        }
        Self::reject(ctx, client, id, RejectReason::Busy);
    }

    fn reject(ctx: &mut Ctx, client: Addr, id: MessageId, reason: RejectReason) {
        ctx.send(client, ArchivingMsg::ImRejected { id, reason });
    }

    /// Takes a client's request under a cluster-wide id of the front end's
    /// choosing: 32 hex digits, the time in milliseconds (12) then 80
    /// random bits (20), so no state has to survive a restart for it. The
    /// time first keeps the archive's unique index on message ids growing
    /// at its end: with wholly random ids every archived row landed on
    /// another page of that index, and each transaction rewrote about one
    /// index page (4 KiB) per row.
    fn admit(&self, im: Im, ctx: &mut Ctx) -> Admitted {
        let id = if self.sabotage.fe_client_ids {
            im.id.clone()
        } else {
            let now = ctx.now() & 0xffff_ffff_ffff;
            let random = ctx.rng().gen::<u128>() & ((1 << 80) - 1);
            MessageId::from(format!("{now:012x}{random:020x}"))
        };
        let client_id = im.id.clone();
        Admitted {
            im: Im { id, ..im },
            client_id,
            at: ctx.now(),
        }
    }

    fn accepted(client: Addr, m: &Admitted, at: Millis, ctx: &mut Ctx) {
        ctx.send(
            client,
            ArchivingMsg::ImAccepted {
                id: m.client_id.clone(),
                message_id: m.im.id.clone(),
                at,
            },
        );
    }

    fn record(&self, kind: RecordKind, m: &Admitted) -> ArchiveRecord {
        let im = &m.im;
        ArchiveRecord {
            kind,
            id: im.id.clone(),
            client_id: m.client_id.clone(),
            from: im.from.clone(),
            to: im.to.clone(),
            time: m.at,
            body: im.body.clone(),
            external: self.cluster.is_external(&im.from) || self.cluster.is_external(&im.to),
            front_end: self.name.clone(),
        }
    }

    fn enqueue(&mut self, client: Option<Addr>, kind: RecordKind, msg: Admitted, ctx: &mut Ctx) {
        let record = self.record(kind, &msg);
        let token = Token(self.next_token);
        self.next_token += 1;
        let admitted_at = ctx.now();
        self.pending.insert(
            token,
            Pending {
                client,
                kind,
                msg,
                admitted_at,
            },
        );
        ctx.send(self.queue(), ArchivingMsg::Enqueue { token, record });
    }

    /// Routes an IM; returns true when the recipient's answer is already
    /// known (local or federated recipient).
    fn route(&mut self, im: &Im, ctx: &mut Ctx) -> bool {
        if self.cluster.is_external(&im.to) {
            self.federated_out += 1;
            return true;
        }
        match self.cluster.home(&im.to) {
            Some(home) if home == self.name => {
                self.delivered += 1;
                true
            }
            Some(home) => {
                let to = Addr::new(home.to_string(), ActorKind::FrontEnd);
                ctx.send(to, ArchivingMsg::DeliverIm { im: im.clone() });
                false
            }
            None => true, // validated on submit
        }
    }

    fn shut(&mut self, reason: String, ctx: &mut Ctx) {
        if !self.settings.critical_mode || self.shut_down.is_some() {
            return;
        }
        ctx.event(
            OperatorEvent::CriticalShutdown,
            format!("{}: {reason}", self.name),
        );
        ctx.persist(
            0,
            vec![StoreOp::Put {
                key: CRITICAL_KEY.to_vec(),
                value: reason.as_bytes().to_vec(),
            }],
        );
        self.shut_down = Some(reason);
    }

    fn resume(&mut self, why: &str, ctx: &mut Ctx) {
        if self.resume_armed {
            // An operator resumed first: a later shutdown must wait its own
            // interval of health.
            self.resume_armed = false;
            ctx.cancel_timer(ArchivingTimer::CriticalResume);
        }
        if self.shut_down.take().is_some() {
            ctx.event(
                OperatorEvent::CriticalResume,
                format!("{}: {why}", self.name),
            );
            ctx.persist(
                0,
                vec![StoreOp::Delete {
                    key: CRITICAL_KEY.to_vec(),
                }],
            );
        }
    }

    /// `holdfast critical resume`: an operator ends a shutdown by hand
    /// (the only way with `critical_auto_resume = false`). Over the wire
    /// only a client with the operator role may; it is told what there was
    /// to end. The resume itself is the `critical_resume` operator event.
    fn operator_resume(&mut self, from: Addr, ctx: &mut Ctx) {
        if from.actor != ActorKind::Client {
            return self.resume("resumed by an operator", ctx);
        }
        let allowed = identity::require(&from, &[Role::Operator]);
        if let (Err(refusal), false) = (&allowed, self.sabotage.fe_resume_anyone) {
            identity_refused(&self.name, &from, "OperatorResume", refusal, ctx);
            let reason = refusal.to_string();
            return ctx.send(from, Msg::Forbidden { reason });
        }
        let was_shut_down = self.shut_down.clone();
        let who = identity::Principal::of(&from)
            .map(|p| p.to_string())
            .unwrap_or_else(|| from.node.clone());
        self.resume(&format!("resumed by the operator {who}"), ctx);
        ctx.send(from, ArchivingMsg::OperatorResumed { was_shut_down });
    }

    /// What every submission is checked for first, before anything is
    /// admitted: that it is well formed, within the size limits, and that
    /// its sender is homed here.
    fn precheck(
        &self,
        id: &str,
        body: &str,
        valid: Result<(), &str>,
        from: &str,
    ) -> Option<RejectReason> {
        if id.is_empty() {
            return Some(RejectReason::Invalid("empty message id".into()));
        }
        if id.len() > CLIENT_ID_MAX_BYTES {
            return Some(RejectReason::Invalid(format!(
                "message id longer than {CLIENT_ID_MAX_BYTES} bytes"
            )));
        }
        if let Err(why) = valid {
            return Some(RejectReason::Invalid(why.into()));
        }
        if body.len() as u64 > self.settings.im_max_bytes && !self.sabotage.fe_no_size_limit {
            return Some(RejectReason::TooLarge {
                what: "body (im_max_bytes)".into(),
                limit: self.settings.im_max_bytes,
            });
        }
        if self.cluster.home(from) != Some(self.name.as_str()) {
            return Some(RejectReason::NotHomed);
        }
        None
    }

    fn submit(&mut self, client: Addr, im: Im, ctx: &mut Ctx) {
        if let Err(refusal) = self.check_sender(&client, &im.from) {
            return self.forbid(ctx, client, im.id, "an IM", refusal);
        }
        if let Some(reason) = self.precheck(&im.id, &im.body, Ok(()), &im.from) {
            return Self::reject(ctx, client, im.id, reason);
        }
        if !self.cluster.is_external(&im.to) && self.cluster.home(&im.to).is_none() {
            return Self::reject(ctx, client, im.id, RejectReason::UnknownRecipient);
        }
        if let Some(reason) = &self.shut_down {
            return Self::reject(
                ctx,
                client,
                im.id,
                RejectReason::CriticalMode(reason.clone()),
            );
        }
        let at = ctx.now();
        if self.overloaded(ctx) {
            return self.busy(client, im.id, ctx);
        }
        let msg = self.admit(im, ctx);
        if !self.cluster.should_archive(&msg.im.from, &msg.im.to) {
            Self::accepted(client, &msg, at, ctx);
            self.route(&msg.im, ctx);
            return;
        }
        if self.legacy() {
            // Route first; archive once the recipient's side answered.
            Self::accepted(client, &msg, at, ctx);
            if self.route(&msg.im, ctx) {
                self.enqueue(None, RecordKind::Im, msg, ctx);
            } else {
                self.awaiting_response.insert(msg.im.id.clone(), msg);
            }
            return;
        }
        self.enqueue(Some(client), RecordKind::Im, msg, ctx);
    }

    /// CDR and QoE agents: every finished call is recorded (not subject to
    /// the IM archiving policy, nor stopped by critical mode — the call has
    /// already happened). A CDR is accepted only once durably queued; one
    /// that cannot be queued is refused, so the client keeps it and retries.
    fn report_call(&mut self, client: Addr, report: CallReport, ctx: &mut Ctx) {
        if let Err(refusal) = self.check_sender(&client, &report.from) {
            return self.forbid(ctx, client, report.id, "a call report", refusal);
        }
        let valid = if report.kind == RecordKind::Im {
            Err("a call report is a CDR or a QoE report")
        } else {
            Ok(())
        };
        if let Some(reason) = self.precheck(&report.id, &report.body, valid, &report.from) {
            return Self::reject(ctx, client, report.id, reason);
        }
        let im = Im {
            id: report.id,
            from: report.from,
            to: report.to,
            body: report.body,
        };
        let msg = self.admit(im, ctx);
        self.enqueue(Some(client), report.kind, msg, ctx);
    }

    /// The client's principal must be the sender itself.
    fn check_sender(&self, client: &Addr, from: &str) -> Result<(), Refusal> {
        if self.sabotage.fe_trust_sender {
            return Ok(());
        }
        identity::require_user(client, from).map(|_| ())
    }

    /// Refuses a client's request for who sent it: the client is told why,
    /// the operator gets an event.
    fn forbid(&self, ctx: &mut Ctx, client: Addr, id: MessageId, what: &str, refusal: Refusal) {
        identity_refused(&self.name, &client, what, &refusal, ctx);
        Self::reject(
            ctx,
            client,
            id,
            RejectReason::Forbidden(refusal.to_string()),
        );
    }

    /// The outgoing queue could not take a record.
    fn enqueue_failed(&mut self, p: Pending, cause: EnqueueFailure, ctx: &mut Ctx) {
        let reason = cause.to_string();
        match (p.kind, p.client.clone()) {
            (RecordKind::Cdr, Some(client)) => {
                return Self::reject(
                    ctx,
                    client,
                    p.msg.client_id,
                    RejectReason::ArchivingUnavailable(reason),
                );
            }
            (RecordKind::Qoe, Some(client)) => {
                ctx.event(
                    OperatorEvent::QoeDropped,
                    format!("{}: {reason}", p.msg.im.id),
                );
                return Self::accepted(client, &p.msg, p.admitted_at, ctx);
            }
            _ => {}
        }
        let Some(client) = p.client else {
            // ocs2007r2: the IM already went through; its record is lost.
            self.shut(format!("a record could not be queued: {reason}"), ctx);
            ctx.event(
                OperatorEvent::ArchivingFailed,
                format!("{}: {reason}", p.msg.im.id),
            );
            return;
        };
        if self.settings.critical_mode {
            self.shut(format!("a record could not be queued: {reason}"), ctx);
            return Self::reject(
                ctx,
                client,
                p.msg.client_id,
                RejectReason::CriticalMode(reason),
            );
        }
        if self.sabotage.fe_accept_unqueued {
            ctx.event(
                OperatorEvent::ArchivingFailed,
                format!("{}: {reason}", p.msg.im.id),
            );
            Self::accepted(client, &p.msg, p.admitted_at, ctx);
            self.route(&p.msg.im, ctx);
            return;
        }
        match cause {
            // The quota bounds the queue so that nothing is dropped: the
            // IM is refused, and the client may try again later.
            EnqueueFailure::QuotaExceeded => Self::reject(
                ctx,
                client,
                p.msg.client_id,
                RejectReason::ArchivingUnavailable(reason),
            ),
            // Messaging is not critical here and the store is failing: the
            // IM goes through, the client is told it is not archived, and
            // an operator hears about it.
            EnqueueFailure::Store(_) => {
                ctx.event(
                    OperatorEvent::DeliveredNotArchived,
                    format!("{} ({}): {reason}", p.msg.im.id, p.msg.client_id),
                );
                ctx.send(
                    client,
                    ArchivingMsg::ImDeliveredNotArchived {
                        id: p.msg.client_id.clone(),
                        message_id: p.msg.im.id.clone(),
                        at: p.admitted_at,
                        reason,
                    },
                );
                self.route(&p.msg.im, ctx);
            }
        }
    }
}

impl Actor for FrontEnd {
    fn on_start(&mut self, recovered: Recovered, ctx: &mut Ctx) {
        // IMs pending at a crash were never acknowledged to the client.
        self.pending.clear();
        self.awaiting_response.clear();
        self.resume_armed = false;
        self.shut_down = recovered
            .get(CRITICAL_KEY)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        // Say which state this incarnation starts in: a shutdown whose
        // record could not be saved (a failing disk) ends with the crash,
        // and operators and the checker must know.
        ctx.event(
            OperatorEvent::FrontEndStarted,
            match &self.shut_down {
                Some(reason) => format!("{}: critical shutdown restored: {reason}", self.name),
                None => format!("{}: accepting IM", self.name),
            },
        );
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        let ok = match &msg {
            Msg::Archiving(ArchivingMsg::SubmitIm { .. } | ArchivingMsg::ReportCall { .. }) => {
                from.actor == ActorKind::Client
            }
            Msg::Archiving(ArchivingMsg::DeliverIm { .. } | ArchivingMsg::ImDelivered { .. }) => {
                from.actor == ActorKind::FrontEnd
                    && self.cluster.front_ends.contains_key(&from.node)
            }
            Msg::Archiving(
                ArchivingMsg::Enqueued { .. }
                | ArchivingMsg::EnqueueFailed { .. }
                | ArchivingMsg::ArchivingHealth { .. },
            ) => from == self.queue(),
            // An operator acts through the node itself, or as a client
            // whose principal is checked below.
            Msg::Archiving(ArchivingMsg::OperatorResume) => {
                from.node == self.name || from.actor == ActorKind::Client
            }
            _ => true,
        };
        if !authorize(ok, &self.name, &from, &msg, ctx) {
            return;
        }
        match msg {
            Msg::Archiving(ArchivingMsg::SubmitIm { im }) => self.submit(from, im, ctx),
            Msg::Archiving(ArchivingMsg::ReportCall { report }) => {
                self.report_call(from, report, ctx)
            }
            Msg::Archiving(ArchivingMsg::DeliverIm { im }) => {
                let id = im.id.clone();
                if self.cluster.home(&im.to) == Some(self.name.as_str()) {
                    self.delivered += 1;
                }
                ctx.send(from, ArchivingMsg::ImDelivered { id });
            }
            Msg::Archiving(ArchivingMsg::ImDelivered { id }) => {
                if let Some(msg) = self.awaiting_response.remove(&id) {
                    self.enqueue(None, RecordKind::Im, msg, ctx);
                }
            }
            Msg::Archiving(ArchivingMsg::Enqueued { token }) => {
                if let Some(p) = self.pending.remove(&token) {
                    if let Some(client) = p.client {
                        Self::accepted(client, &p.msg, p.admitted_at, ctx);
                        if p.kind == RecordKind::Im {
                            self.route(&p.msg.im, ctx);
                        }
                    }
                }
            }
            Msg::Archiving(ArchivingMsg::EnqueueFailed { token, cause }) => {
                if let Some(p) = self.pending.remove(&token) {
                    self.enqueue_failed(p, cause, ctx);
                }
            }
            Msg::Archiving(ArchivingMsg::ArchivingHealth { ok, reason }) => {
                self.archiving_ok = ok;
                if !ok {
                    if self.resume_armed {
                        self.resume_armed = false;
                        ctx.cancel_timer(ArchivingTimer::CriticalResume);
                    }
                    self.shut(reason, ctx);
                } else if self.settings.critical_auto_resume && self.shut_down.is_some() {
                    if self.settings.critical_resume_after == 0 {
                        self.resume("archiving is healthy again", ctx);
                    } else if !self.resume_armed {
                        // Resume once health has held: the queue reports
                        // only changes, so no report until the timer fires
                        // means it held.
                        self.resume_armed = true;
                        ctx.set_timer(
                            ArchivingTimer::CriticalResume,
                            self.settings.critical_resume_after,
                        );
                    }
                }
            }
            Msg::Archiving(ArchivingMsg::OperatorResume) => self.operator_resume(from, ctx),
            other => ignored("front end", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer == Timer::Archiving(ArchivingTimer::CriticalResume) {
            self.resume_armed = false;
            if self.archiving_ok && self.settings.critical_auto_resume {
                let held = self.settings.critical_resume_after;
                self.resume(
                    &format!("archiving has been healthy for {} s", held / 1000),
                    ctx,
                );
            }
        }
    }

    fn on_persisted(&mut self, _token: u64, result: Result<Written, StoreError>, ctx: &mut Ctx) {
        if let Err(e) = result {
            ctx.event(
                OperatorEvent::CriticalStateNotSaved,
                format!("{}: {e}", self.name),
            );
        }
    }

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![
            (Gauge::CriticalShutdown, u64::from(self.shut_down.is_some())),
            (Gauge::AdmissionWaiting, self.pending.len() as u64),
            (Gauge::BusyAnswers, self.busy_answers),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cluster, Harness};

    /// fe1's front end, started on what `recovered` holds.
    fn started(settings: Settings, recovered: Recovered) -> Harness<FrontEnd> {
        let mut h = Harness::new(
            Addr::new("fe1", ActorKind::FrontEnd),
            FrontEnd::new("fe1", cluster(), settings),
        );
        h.start(recovered);
        h
    }

    /// fe1's front end, started afresh, its start event cleared.
    fn fe(settings: Settings) -> Harness<FrontEnd> {
        let mut h = started(settings, Recovered::new());
        assert_eq!(h.events(), vec!["front_end_started"]);
        h.clear_events();
        h
    }

    fn critical() -> Settings {
        Settings {
            critical_mode: true,
            ..Settings::default()
        }
    }

    fn im(id: &str, from: &str, to: &str) -> Im {
        Im {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            body: "hi".into(),
        }
    }

    fn client() -> Addr {
        crate::testkit::client_of("a@corp.example")
    }

    fn queue() -> Addr {
        Addr::new("fe1", ActorKind::OutgoingQueue)
    }

    fn submit(h: &mut Harness<FrontEnd>, id: &str, to: &str) -> Vec<(Addr, Msg)> {
        submit_as(h, "a@corp.example", id, to)
    }

    /// `user`'s client submits the IM `id` to `to`.
    fn submit_as(h: &mut Harness<FrontEnd>, user: &str, id: &str, to: &str) -> Vec<(Addr, Msg)> {
        h.msg(
            crate::testkit::client_of(user),
            ArchivingMsg::SubmitIm {
                im: im(id, user, to),
            },
        )
    }

    /// The outgoing queue reports archiving healthy or not.
    fn health(h: &mut Harness<FrontEnd>, ok: bool, reason: &str) -> Vec<(Addr, Msg)> {
        let reason = reason.into();
        h.msg(queue(), ArchivingMsg::ArchivingHealth { ok, reason })
    }

    /// The outgoing queue could not queue the record of `token`.
    fn enqueue_failed(
        h: &mut Harness<FrontEnd>,
        token: Token,
        cause: EnqueueFailure,
    ) -> Vec<(Addr, Msg)> {
        h.msg(queue(), ArchivingMsg::EnqueueFailed { token, cause })
    }

    /// Why `m` rejects an IM, if it is a rejection.
    fn rejection(m: &Msg) -> Option<&RejectReason> {
        match m {
            Msg::Archiving(ArchivingMsg::ImRejected { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    /// Why `sent` rejects an IM, if it is one rejection and nothing else.
    fn rejected(sent: &[(Addr, Msg)]) -> Option<&RejectReason> {
        match sent {
            [(_, m)] => rejection(m),
            _ => None,
        }
    }

    /// Whether `sent` is one enqueue and nothing else.
    fn enqueues(sent: &[(Addr, Msg)]) -> bool {
        matches!(sent, [(_, Msg::Archiving(ArchivingMsg::Enqueue { .. }))])
    }

    fn enqueue_token(sent: &[(Addr, Msg)]) -> Token {
        sent.iter()
            .find_map(|(_, m)| match m {
                Msg::Archiving(ArchivingMsg::Enqueue { token, .. }) => Some(*token),
                _ => None,
            })
            .expect("an enqueue")
    }

    #[test]
    fn archivable_im_is_accepted_only_after_enqueue() {
        let mut h = fe(Settings::default());
        let sent = submit(&mut h, "m1", "b@corp.example");
        assert_eq!(sent.len(), 1, "only the enqueue goes out");
        let (to, Msg::Archiving(ArchivingMsg::Enqueue { token, record })) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(*to, queue());
        assert_eq!(record.client_id, "m1");
        assert_eq!(
            record.id.len(),
            32,
            "a 128-bit id of the front end's: {}",
            record.id
        );
        assert_ne!(record.id, "m1");
        assert!(!record.external);
        let sent = h.msg(queue(), ArchivingMsg::Enqueued { token: *token });
        assert_eq!(
            sent[0],
            (
                client(),
                Msg::Archiving(ArchivingMsg::ImAccepted {
                    id: "m1".into(),
                    message_id: record.id.clone(),
                    at: 0
                })
            )
        );
        let (to, Msg::Archiving(ArchivingMsg::DeliverIm { im })) = &sent[1] else {
            panic!("{sent:?}")
        };
        assert_eq!(
            *to,
            Addr::new("fe2", ActorKind::FrontEnd),
            "b@ is homed on fe2"
        );
        assert_eq!(im.id, record.id, "delivered under the archived id");
    }

    /// Message ids lead with the time they were given (12 hex digits of
    /// milliseconds), then 80 random bits: ids given later sort later, so
    /// the archive's unique index grows at its end.
    #[test]
    fn message_ids_sort_by_the_time_they_were_given() {
        let mut h = fe(Settings::default());
        let id_at = |h: &mut Harness<FrontEnd>, now: Millis, client_id: &str| {
            h.now = now;
            let sent = submit(h, client_id, "b@corp.example");
            let [(_, Msg::Archiving(ArchivingMsg::Enqueue { record, .. }))] = &sent[..] else {
                panic!("{sent:?}")
            };
            record.id.clone()
        };
        let ids = [
            id_at(&mut h, 0x0123_4567_89ab, "m1"),
            id_at(&mut h, 0x0123_4567_89ab, "m2"),
            id_at(&mut h, 0x0123_4567_89ac, "m3"),
        ];
        assert!(ids.iter().all(|id| id.len() == 32), "{ids:?}");
        assert!(ids[0].starts_with("0123456789ab") && ids[2].starts_with("0123456789ac"));
        assert_ne!(ids[0], ids[1], "the random part tells apart ids of one ms");
        assert!(ids[0].clone().max(ids[1].clone()) < ids[2], "{ids:?}");
    }

    /// A client that reuses its request id gets a new archive record per
    /// message: nothing it sends is delivered without one.
    #[test]
    fn a_reused_client_id_never_delivers_without_a_record() {
        let mut h = fe(Settings::default());
        let mut ids = BTreeMap::new();
        for body in ["first", "second", "third"] {
            let sent = h.msg(
                client(),
                ArchivingMsg::SubmitIm {
                    im: Im {
                        body: body.into(),
                        ..im("same", "a@corp.example", "b@corp.example")
                    },
                },
            );
            let [(_, Msg::Archiving(ArchivingMsg::Enqueue { token, record }))] = &sent[..] else {
                panic!("only an enqueue goes out: {sent:?}")
            };
            assert_eq!(record.body, body);
            ids.insert(record.id.clone(), *token);
        }
        assert_eq!(ids.len(), 3, "three messages, three archive ids");
        for (id, token) in ids {
            let sent = h.msg(queue(), ArchivingMsg::Enqueued { token });
            let delivered: Vec<&Im> = sent
                .iter()
                .filter_map(|(_, m)| match m {
                    Msg::Archiving(ArchivingMsg::DeliverIm { im }) => Some(im),
                    _ => None,
                })
                .collect();
            assert_eq!(delivered.len(), 1);
            assert_eq!(delivered[0].id, id);
        }
    }

    #[test]
    fn oversize_and_malformed_requests_are_refused_before_admission() {
        let mut h = fe(Settings {
            im_max_bytes: 10,
            ..Settings::default()
        });
        let sized = |h: &mut Harness<FrontEnd>, id: &str, size: usize| {
            h.msg(
                client(),
                ArchivingMsg::SubmitIm {
                    im: Im {
                        body: "x".repeat(size),
                        ..im(id, "a@corp.example", "b@corp.example")
                    },
                },
            )
        };
        let sent = sized(&mut h, "big", 11);
        assert_eq!(
            sent,
            vec![(
                client(),
                Msg::Archiving(ArchivingMsg::ImRejected {
                    id: "big".into(),
                    reason: RejectReason::TooLarge {
                        what: "body (im_max_bytes)".into(),
                        limit: 10
                    }
                })
            )]
        );
        let long_id = "i".repeat(CLIENT_ID_MAX_BYTES + 1);
        let sent = submit(&mut h, &long_id, "b@corp.example");
        assert!(matches!(rejected(&sent), Some(RejectReason::Invalid(_))));
        // Exactly the limit is taken.
        let sent = sized(&mut h, "fits", 10);
        assert!(enqueues(&sent));
    }

    /// Without critical mode, a full quota refuses the IM; a failing store
    /// delivers it with an answer that says it is not archived. Neither is
    /// ever the plain "accepted".
    #[test]
    fn without_critical_mode_a_failed_enqueue_is_never_told_accepted() {
        let mut h = fe(Settings::default());
        let token = enqueue_token(&submit(&mut h, "m1", "b@corp.example"));
        let sent = enqueue_failed(&mut h, token, EnqueueFailure::QuotaExceeded);
        assert!(
            matches!(rejected(&sent), Some(RejectReason::ArchivingUnavailable(_))),
            "{sent:?}"
        );
        let token = enqueue_token(&submit(&mut h, "m2", "b@corp.example"));
        let sent = enqueue_failed(
            &mut h,
            token,
            EnqueueFailure::Store("no space left on device".into()),
        );
        assert!(
            matches!(&sent[0].1, Msg::Archiving(ArchivingMsg::ImDeliveredNotArchived { id, .. }) if id == "m2"),
            "{sent:?}"
        );
        assert!(
            matches!(&sent[1].1, Msg::Archiving(ArchivingMsg::DeliverIm { .. })),
            "still delivered"
        );
        assert!(!sent
            .iter()
            .any(|(_, m)| matches!(m, Msg::Archiving(ArchivingMsg::ImAccepted { .. }))));
        assert_eq!(h.events(), vec!["delivered_not_archived"]);
        assert!(!h.actor().is_shut_down());
    }

    #[test]
    fn critical_mode_rejects_the_im_and_shuts_down() {
        let mut h = fe(critical());
        let token = enqueue_token(&submit(&mut h, "m1", "b@corp.example"));
        let sent = enqueue_failed(&mut h, token, EnqueueFailure::QuotaExceeded);
        assert!(matches!(
            rejection(&sent[0].1),
            Some(RejectReason::CriticalMode(_))
        ));
        assert_eq!(h.events(), vec!["critical_shutdown"]);
        // Every later IM, archivable or not, is refused explicitly.
        let sent = submit_as(&mut h, "c@corp.example", "m2", "d@corp.example");
        assert!(matches!(
            rejected(&sent),
            Some(RejectReason::CriticalMode(_))
        ));
    }

    #[test]
    fn unhealthy_queue_shuts_down_and_health_resumes() {
        let mut h = fe(critical());
        health(&mut h, false, "delivery NACK");
        assert!(h.actor().is_shut_down());
        let sent = submit(&mut h, "m1", "b@corp.example");
        assert!(matches!(
            &sent[..],
            [(_, Msg::Archiving(ArchivingMsg::ImRejected { .. }))]
        ));
        health(&mut h, true, "healthy");
        assert!(h.actor().is_shut_down(), "health must hold first");
        h.fire(ArchivingTimer::CriticalResume);
        assert!(!h.actor().is_shut_down());
        assert_eq!(h.events(), vec!["critical_shutdown", "critical_resume"]);
        assert!(matches!(
            &submit(&mut h, "m2", "b@corp.example")[0].1,
            Msg::Archiving(ArchivingMsg::Enqueue { .. })
        ));
    }

    /// A link that heals and fails again before `critical_resume_after`
    /// does not make messaging flap: one shutdown, no resume until health
    /// has held for the whole interval.
    #[test]
    fn resume_waits_until_health_has_held() {
        let mut h = fe(critical());
        health(&mut h, false, "r");
        for _ in 0..5 {
            health(&mut h, true, "r");
            health(&mut h, false, "r");
        }
        assert!(h.actor().is_shut_down());
        assert_eq!(h.events(), vec!["critical_shutdown"], "no flapping");
        health(&mut h, true, "r");
        h.fire(ArchivingTimer::CriticalResume);
        assert!(!h.actor().is_shut_down());
        assert_eq!(h.events(), vec!["critical_shutdown", "critical_resume"]);
    }

    #[test]
    fn without_auto_resume_only_an_operator_resumes_even_across_restarts() {
        let s = Settings {
            critical_mode: true,
            critical_auto_resume: false,
            ..Settings::default()
        };
        let mut h = fe(s.clone());
        health(&mut h, false, "processing NACK");
        health(&mut h, true, "healthy");
        assert!(h.actor().is_shut_down(), "health alone does not resume");
        let mut h2 = started(s, h.store.clone());
        assert!(h2.actor().is_shut_down(), "the shutdown survives a restart");
        // Over the wire: refused without a principal or with a user's,
        // done for an operator, who is told what was ended.
        for (who, not_for) in [
            (Addr::new("ops", ActorKind::Client), "an anonymous client"),
            (crate::testkit::client_of("a@corp.example"), "a user"),
        ] {
            let sent = h2.msg(who, Msg::Archiving(ArchivingMsg::OperatorResume));
            assert!(h2.actor().is_shut_down(), "not for {not_for}");
            assert!(
                matches!(&sent[..], [(_, Msg::Forbidden { .. })]),
                "{sent:?}"
            );
        }
        assert!(h2.events().contains(&OperatorEvent::IdentityRefused.name()));
        let ops = crate::testkit::client_as("ops@corp.example", Role::Operator);
        let sent = h2.msg(ops.clone(), ArchivingMsg::OperatorResume);
        assert!(!h2.actor().is_shut_down());
        assert!(
            matches!(&sent[..], [(to, Msg::Archiving(ArchivingMsg::OperatorResumed { was_shut_down: Some(_) }))] if *to == ops),
            "{sent:?}"
        );
        assert!(h2.store.is_empty());
        let sent = h2.msg(ops, ArchivingMsg::OperatorResume);
        assert!(
            matches!(
                &sent[..],
                [(
                    _,
                    Msg::Archiving(ArchivingMsg::OperatorResumed {
                        was_shut_down: None
                    })
                )]
            ),
            "nothing to end: {sent:?}"
        );
    }

    #[test]
    fn a_shutdown_survives_a_restart_until_the_queue_reports_healthy() {
        let mut h = fe(critical());
        health(&mut h, false, "quota");
        let mut h2 = started(critical(), h.store.clone());
        assert!(h2.actor().is_shut_down());
        health(&mut h2, true, "healthy");
        h2.fire(ArchivingTimer::CriticalResume);
        assert!(!h2.actor().is_shut_down());
        assert_eq!(h2.events(), vec!["front_end_started", "critical_resume"]);
    }

    #[test]
    fn health_reports_are_ignored_without_critical_mode() {
        let mut h = fe(Settings::default());
        health(&mut h, false, "delivery NACK");
        assert!(!h.actor().is_shut_down());
    }

    fn busy(sent: &[(Addr, Msg)]) -> bool {
        matches!(rejected(sent), Some(RejectReason::Busy))
    }

    /// Past capacity the front end answers busy at once, keeping nothing:
    /// when the oldest admitted IM has waited `admission_wait` for the
    /// queue, when a request itself waited that long in the node, and when
    /// `admission_queue` IMs wait; it admits again once the wait is over,
    /// and tells operators when an overload begins and then once a minute.
    #[test]
    fn past_capacity_new_ims_are_answered_busy_at_once() {
        let mut h = fe(Settings {
            admission_wait: 100,
            admission_queue: 3,
            ..Settings::default()
        });
        let first = submit(&mut h, "m1", "b@corp.example");
        let [(_, Msg::Archiving(ArchivingMsg::Enqueue { token, .. }))] = &first[..] else {
            panic!("{first:?}")
        };
        h.now = 99;
        let sent = submit(&mut h, "m2", "b@corp.example");
        assert!(enqueues(&sent), "{sent:?}");
        // The first IM has waited 100 ms for its record to be queued.
        h.now = 100;
        let sent = submit(&mut h, "m3", "b@corp.example");
        assert!(busy(&sent), "{sent:?}");
        assert_eq!(h.events(), vec!["front_end_busy"]);
        // Queued at last: the next IM is admitted.
        h.msg(queue(), ArchivingMsg::Enqueued { token: *token });
        let sent = submit(&mut h, "m4", "b@corp.example");
        assert!(enqueues(&sent), "{sent:?}");
        // A request that waited in the node as long is answered busy.
        let late = h.msg_waited(
            crate::testkit::client_of("a@corp.example"),
            Msg::Archiving(ArchivingMsg::SubmitIm {
                im: im("m5", "a@corp.example", "b@corp.example"),
            }),
            100,
        );
        assert!(busy(&late), "{late:?}");
        // Three IMs wait (m2, m4 and m6): the queue bound.
        let sent = submit(&mut h, "m6", "b@corp.example");
        assert!(enqueues(&sent), "{sent:?}");
        let sent = submit(&mut h, "m7", "b@corp.example");
        assert!(busy(&sent), "{sent:?}");
        // One event for the episode so far; the next a minute later.
        assert_eq!(h.events(), vec!["front_end_busy"]);
        h.now = 60_100;
        assert!(busy(&submit(&mut h, "m8", "b@corp.example")));
        assert_eq!(h.events(), vec!["front_end_busy", "front_end_busy"]);
        let busy_answers = h
            .actor()
            .gauges()
            .into_iter()
            .find(|(g, _)| *g == Gauge::BusyAnswers);
        assert_eq!(busy_answers, Some((Gauge::BusyAnswers, 4)));
    }

    #[test]
    fn ocs2007r2_archives_only_after_the_recipients_answer() {
        let mut h = fe(Settings {
            semantics: Semantics::Ocs2007r2,
            ..Settings::default()
        });
        let sent = submit(&mut h, "m1", "b@corp.example");
        assert!(matches!(
            &sent[0].1,
            Msg::Archiving(ArchivingMsg::ImAccepted { .. })
        ));
        let Msg::Archiving(ArchivingMsg::DeliverIm { im }) = &sent[1].1 else {
            panic!("{sent:?}")
        };
        assert_eq!(sent.len(), 2, "nothing queued for archiving yet");
        let Msg::Archiving(ArchivingMsg::ImAccepted { at: admitted, .. }) = sent[0].1 else {
            unreachable!()
        };
        // The recipient's side answers a while later: the record still
        // carries the time the message was admitted, as its answer said.
        h.now += 7_000;
        let sent = h.msg(
            Addr::new("fe2", ActorKind::FrontEnd),
            Msg::Archiving(ArchivingMsg::ImDelivered { id: im.id.clone() }),
        );
        let [(_, Msg::Archiving(ArchivingMsg::Enqueue { record, .. }))] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(record.time, admitted);
        // A local recipient answers at once.
        let sent = submit(&mut h, "m2", "c@corp.example");
        assert!(matches!(
            &sent[1].1,
            Msg::Archiving(ArchivingMsg::Enqueue { .. })
        ));
    }

    #[test]
    fn policy_none_skips_the_queue() {
        let mut h = fe(Settings::default());
        let sent = submit_as(&mut h, "c@corp.example", "m2", "d@corp.example");
        assert!(
            matches!(&sent[..], [(c, Msg::Archiving(ArchivingMsg::ImAccepted { id, at: 0, .. }))] if *c == crate::testkit::client_of("c@corp.example") && id == "m2"),
            "{sent:?}"
        );
        assert_eq!(h.actor().delivered, 1);
    }

    #[test]
    fn only_the_sender_itself_may_submit_its_ims_and_calls() {
        let mut h = fe(Settings::default());
        let forged = im("f1", "a@corp.example", "b@corp.example");
        let senders = [
            // mallory, authenticated, sends as a@
            crate::testkit::client_of("mallory@corp.example"),
            // no principal in the connection's name
            Addr::new("client-1", ActorKind::Client),
            // an operator is not a user
            Addr::new(
                crate::core::identity::Principal::new(
                    "a@corp.example",
                    crate::core::identity::Role::Operator,
                )
                .client_name("n"),
                ActorKind::Client,
            ),
        ];
        for sender in senders {
            let sent = h.msg(
                sender.clone(),
                ArchivingMsg::SubmitIm { im: forged.clone() },
            );
            assert!(
                matches!(&sent[..], [(to, Msg::Archiving(ArchivingMsg::ImRejected { id, reason: RejectReason::Forbidden(_) }))]
                    if *to == sender && id == "f1"),
                "{sender}: {sent:?}"
            );
            assert_eq!(h.events(), vec![OperatorEvent::IdentityRefused.name()]);
            h.clear_events();
            let sent = h.msg(
                sender,
                ArchivingMsg::ReportCall {
                    report: CallReport {
                        id: "c1".into(),
                        kind: RecordKind::Cdr,
                        from: "a@corp.example".into(),
                        to: "b@corp.example".into(),
                        body: "call".into(),
                    },
                },
            );
            assert!(
                matches!(rejected(&sent), Some(RejectReason::Forbidden(_))),
                "{sent:?}"
            );
            h.clear_events();
        }
        // The sender itself is admitted.
        let sent = h.msg(client(), ArchivingMsg::SubmitIm { im: forged });
        assert!(enqueues(&sent), "{sent:?}");
    }

    #[test]
    fn wrong_home_and_unknown_recipient_are_rejected() {
        let mut h = fe(Settings::default());
        let sent = submit_as(&mut h, "b@corp.example", "m3", "a@corp.example");
        assert!(matches!(
            rejection(&sent[0].1),
            Some(RejectReason::NotHomed)
        ));
        let sent = submit(&mut h, "m4", "zed@corp.example");
        assert!(matches!(
            rejection(&sent[0].1),
            Some(RejectReason::UnknownRecipient)
        ));
    }

    #[test]
    fn call_reports_are_queued_and_a_cdr_that_cannot_be_is_refused() {
        let mut h = fe(critical());
        health(&mut h, false, "delivery NACK");
        let report = |id: &str, kind| CallReport {
            id: id.into(),
            kind,
            from: "a@corp.example".into(),
            to: "b@corp.example".into(),
            body: "call".into(),
        };
        // Critical mode stops IM, not the records of calls that happened.
        let sent = h.msg(
            client(),
            ArchivingMsg::ReportCall {
                report: report("c1", RecordKind::Cdr),
            },
        );
        let (_, Msg::Archiving(ArchivingMsg::Enqueue { token, record })) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(record.kind, RecordKind::Cdr);
        let sent = enqueue_failed(&mut h, *token, EnqueueFailure::QuotaExceeded);
        assert!(
            matches!(
                &sent[..],
                [(_, Msg::Archiving(ArchivingMsg::ImRejected { .. }))]
            ),
            "the client keeps the CDR"
        );
        let sent = h.msg(
            client(),
            ArchivingMsg::ReportCall {
                report: report("q1", RecordKind::Qoe),
            },
        );
        let token = enqueue_token(&sent);
        let sent = enqueue_failed(&mut h, token, EnqueueFailure::QuotaExceeded);
        assert!(
            matches!(
                &sent[..],
                [(_, Msg::Archiving(ArchivingMsg::ImAccepted { .. }))]
            ),
            "QoE may be dropped"
        );
        assert_eq!(h.events(), vec!["critical_shutdown", "qoe_dropped"]);
    }

    #[test]
    fn external_recipient_is_archived_as_external() {
        let mut h = fe(Settings::default());
        let sent = submit(&mut h, "m5", "x@partner.example");
        let Msg::Archiving(ArchivingMsg::Enqueue { record, .. }) = &sent[0].1 else {
            panic!()
        };
        assert!(record.external);
    }
}

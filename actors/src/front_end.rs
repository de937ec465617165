//! Front end: accepts IMs from its homed users, routes them to the
//! recipient, and runs the **archiving agent**: per-user policy decides
//! whether the message is sent for archiving; if so the record is handed to
//! the local [`crate::outgoing_queue`] and the client is told "accepted"
//! only once the queue holds it durably.

use crate::actor::{Actor, Ctx, Recovered, StoreError, Timer};
use crate::cluster::Cluster;
use crate::ids::{ActorKind, Addr, MessageId};
use crate::protocol::{ArchiveRecord, Im, Msg, RecordKind, RejectReason};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An IM waiting for its outgoing queue to confirm the enqueue.
#[derive(Debug)]
struct Pending {
    client: Addr,
    im: Im,
}

pub struct FrontEnd {
    name: String,
    cluster: Arc<Cluster>,
    pending: BTreeMap<u64, Pending>,
    next_token: u64,
    /// IMs delivered to recipients homed here (a stand-in for the SIP leg).
    pub delivered: u64,
    /// IMs handed to the federation edge.
    pub federated_out: u64,
}

impl FrontEnd {
    pub fn new(name: impl Into<String>, cluster: Arc<Cluster>) -> Self {
        FrontEnd {
            name: name.into(),
            cluster,
            pending: BTreeMap::new(),
            next_token: 1,
            delivered: 0,
            federated_out: 0,
        }
    }

    fn queue(&self) -> Addr {
        Addr::new(self.name.clone(), ActorKind::OutgoingQueue)
    }

    fn reject(ctx: &mut Ctx, client: Addr, id: MessageId, reason: RejectReason) {
        ctx.send(client, Msg::ImRejected { id, reason });
    }

    fn route(&mut self, im: Im, ctx: &mut Ctx) {
        if self.cluster.is_external(&im.to) {
            self.federated_out += 1;
            return;
        }
        match self.cluster.home(&im.to) {
            Some(home) if home == self.name => self.delivered += 1,
            Some(home) => {
                let to = Addr::new(home.to_string(), ActorKind::FrontEnd);
                ctx.send(to, Msg::DeliverIm { im });
            }
            None => {} // validated on submit
        }
    }

    fn submit(&mut self, client: Addr, im: Im, ctx: &mut Ctx) {
        if im.id.is_empty() {
            return Self::reject(
                ctx,
                client,
                im.id,
                RejectReason::Invalid("empty message id".into()),
            );
        }
        if self.cluster.home(&im.from) != Some(self.name.as_str()) {
            return Self::reject(ctx, client, im.id, RejectReason::NotHomed);
        }
        if !self.cluster.is_external(&im.to) && self.cluster.home(&im.to).is_none() {
            return Self::reject(ctx, client, im.id, RejectReason::UnknownRecipient);
        }
        if !self.cluster.should_archive(&im.from, &im.to) {
            ctx.send(client, Msg::ImAccepted { id: im.id.clone() });
            self.route(im, ctx);
            return;
        }
        let record = ArchiveRecord {
            kind: RecordKind::Im,
            id: im.id.clone(),
            from: im.from.clone(),
            to: im.to.clone(),
            time: ctx.now(),
            body: im.body.clone(),
            external: self.cluster.is_external(&im.from) || self.cluster.is_external(&im.to),
            front_end: self.name.clone(),
        };
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, Pending { client, im });
        ctx.send(self.queue(), Msg::Enqueue { token, record });
    }
}

impl Actor for FrontEnd {
    fn on_start(&mut self, _recovered: Recovered, _ctx: &mut Ctx) {
        // A front end holds nothing durable itself: its outgoing queue does.
        // IMs pending at a crash were never acknowledged to the client.
        self.pending.clear();
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::SubmitIm { im } => self.submit(from, im, ctx),
            Msg::DeliverIm { im } => {
                let id = im.id.clone();
                if self.cluster.home(&im.to) == Some(self.name.as_str()) {
                    self.delivered += 1;
                }
                ctx.send(from, Msg::ImDelivered { id });
            }
            Msg::ImDelivered { .. } => {}
            Msg::Enqueued { token } => {
                if let Some(p) = self.pending.remove(&token) {
                    ctx.send(
                        p.client,
                        Msg::ImAccepted {
                            id: p.im.id.clone(),
                        },
                    );
                    self.route(p.im, ctx);
                }
            }
            Msg::EnqueueFailed { token, reason } => {
                if let Some(p) = self.pending.remove(&token) {
                    ctx.event("archiving_unavailable", format!("{}: {reason}", p.im.id));
                    Self::reject(
                        ctx,
                        p.client,
                        p.im.id,
                        RejectReason::ArchivingUnavailable(reason),
                    );
                }
            }
            other => ctx.event(
                "unexpected_message",
                format!(
                    "front end {} ignored {} from {from}",
                    self.name,
                    other.name()
                ),
            ),
        }
    }

    fn on_timer(&mut self, _timer: Timer, _ctx: &mut Ctx) {}

    fn on_persisted(&mut self, _token: u64, _result: Result<(), StoreError>, _ctx: &mut Ctx) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{cluster, Harness};

    fn fe() -> Harness<FrontEnd> {
        Harness::new(
            Addr::new("fe1", ActorKind::FrontEnd),
            FrontEnd::new("fe1", cluster()),
        )
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
        Addr::new("c", ActorKind::Client)
    }

    #[test]
    fn archivable_im_is_accepted_only_after_enqueue() {
        let mut h = fe();
        h.start(Recovered::new());
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m1", "a@corp.example", "b@corp.example"),
            },
        );
        // Only the enqueue goes out; the client hears nothing yet.
        assert_eq!(sent.len(), 1);
        let token = match &sent[0] {
            (to, Msg::Enqueue { token, record }) => {
                assert_eq!(to.actor, ActorKind::OutgoingQueue);
                assert_eq!(record.id, "m1");
                assert!(!record.external);
                *token
            }
            other => panic!("{other:?}"),
        };
        let sent = h.msg(
            Addr::new("fe1", ActorKind::OutgoingQueue),
            Msg::Enqueued { token },
        );
        assert_eq!(sent[0], (client(), Msg::ImAccepted { id: "m1".into() }));
        // b is homed on fe2: routed there.
        assert_eq!(sent[1].0, Addr::new("fe2", ActorKind::FrontEnd));
    }

    #[test]
    fn enqueue_failure_is_an_explicit_rejection() {
        let mut h = fe();
        h.start(Recovered::new());
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m1", "a@corp.example", "b@corp.example"),
            },
        );
        let Msg::Enqueue { token, .. } = sent[0].1.clone() else {
            panic!()
        };
        let sent = h.msg(
            Addr::new("fe1", ActorKind::OutgoingQueue),
            Msg::EnqueueFailed {
                token,
                reason: "quota".into(),
            },
        );
        assert!(matches!(
            &sent[0].1,
            Msg::ImRejected {
                reason: RejectReason::ArchivingUnavailable(_),
                ..
            }
        ));
        assert_eq!(h.events(), vec!["archiving_unavailable"]);
    }

    #[test]
    fn policy_none_skips_the_queue() {
        let mut h = fe();
        h.start(Recovered::new());
        // c@ and d@ have a user-level "archive nothing" policy.
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m2", "c@corp.example", "d@corp.example"),
            },
        );
        assert_eq!(sent[0], (client(), Msg::ImAccepted { id: "m2".into() }));
        assert_eq!(h.actor.delivered, 1);
    }

    #[test]
    fn wrong_home_and_unknown_recipient_are_rejected() {
        let mut h = fe();
        h.start(Recovered::new());
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m3", "b@corp.example", "a@corp.example"),
            },
        );
        assert!(matches!(
            &sent[0].1,
            Msg::ImRejected {
                reason: RejectReason::NotHomed,
                ..
            }
        ));
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m4", "a@corp.example", "zed@corp.example"),
            },
        );
        assert!(matches!(
            &sent[0].1,
            Msg::ImRejected {
                reason: RejectReason::UnknownRecipient,
                ..
            }
        ));
    }

    #[test]
    fn external_recipient_is_archived_as_external() {
        let mut h = fe();
        h.start(Recovered::new());
        let sent = h.msg(
            client(),
            Msg::SubmitIm {
                im: im("m5", "a@corp.example", "x@partner.example"),
            },
        );
        match &sent[0].1 {
            Msg::Enqueue { record, .. } => assert!(record.external),
            other => panic!("{other:?}"),
        }
    }
}

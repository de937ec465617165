//! The Lookup service: tells a chat client which Channel server to use.
//!
//! Every Channel server reports its load (sessions, capacity) every
//! `chat_load_report`; Lookup assigns the least-loaded server that reported
//! within three periods, counting the clients it has sent there since that
//! report, so that a burst of clients spreads out and a server that comes
//! back gets new clients until the load evens out (existing sessions are
//! never moved). Several Lookup instances may serve one pool: each sees
//! every report, and none holds state another needs.

use crate::chat::pool::ChatPool;
use crate::core::actor::{authorize, ignored, Actor, Ctx, Recovered, StoreError, Timer, Written};
use crate::core::ids::{ActorKind, Addr, Millis};
use crate::core::operator::{Gauge, OperatorEvent};
use crate::core::protocol::chat::ChatMsg;
use crate::core::protocol::chat::ChatTimer;
use crate::core::protocol::Msg;
use crate::core::settings::Settings;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
struct Load {
    sessions: u64,
    capacity: u64,
    reported_at: Millis,
    /// Clients sent there since the report.
    assigned: u64,
}

pub struct Lookup {
    name: String,
    pool: Arc<ChatPool>,
    settings: Settings,
    servers: BTreeMap<String, Load>,
    /// Servers currently in rotation (for the operator events).
    in_rotation: BTreeMap<String, bool>,
}

impl Lookup {
    pub fn new(name: impl Into<String>, pool: Arc<ChatPool>, settings: Settings) -> Self {
        Lookup {
            name: name.into(),
            pool,
            settings,
            servers: BTreeMap::new(),
            in_rotation: BTreeMap::new(),
        }
    }

    fn alive(&self, load: &Load, now: Millis) -> bool {
        now.saturating_sub(load.reported_at) <= 3 * self.settings.chat_load_report
    }

    fn choose(&mut self, now: Millis) -> Option<String> {
        let best = self
            .servers
            .iter()
            .filter(|(_, l)| self.alive(l, now) && l.sessions + l.assigned < l.capacity)
            .min_by_key(|(name, l)| (l.sessions + l.assigned, (*name).clone()))
            .map(|(n, _)| n.clone())?;
        if let Some(l) = self.servers.get_mut(&best) {
            l.assigned += 1;
        }
        Some(best)
    }
}

impl Actor for Lookup {
    fn on_start(&mut self, _recovered: Recovered, ctx: &mut Ctx) {
        self.servers.clear();
        self.in_rotation.clear();
        ctx.set_timer(
            Timer::Chat(ChatTimer::Rotation),
            self.settings.chat_load_report,
        );
    }

    fn on_msg(&mut self, from: Addr, msg: Msg, ctx: &mut Ctx) {
        match msg {
            Msg::Chat(ChatMsg::FindChannel) => {
                if !authorize(
                    from.actor == ActorKind::Client,
                    &self.name,
                    &from,
                    &msg,
                    ctx,
                ) {
                    return;
                }
                let reply = match self.choose(ctx.now()) {
                    Some(channel) => Msg::Chat(ChatMsg::ChannelAssigned { channel }),
                    None => Msg::Chat(ChatMsg::NoChannel),
                };
                ctx.send(from, reply);
            }
            Msg::Chat(ChatMsg::LoadReport { sessions, capacity }) => {
                let ok =
                    from.actor == ActorKind::Channel && self.pool.channels.contains(&from.node);
                if !authorize(ok, &self.name, &from, &msg, ctx) {
                    return;
                }
                if self.in_rotation.insert(from.node.clone(), true) != Some(true) {
                    ctx.event(
                        OperatorEvent::ChannelInRotation,
                        format!("{}: {} reports its load", self.name, from.node),
                    );
                }
                self.servers.insert(
                    from.node,
                    Load {
                        sessions,
                        capacity,
                        reported_at: ctx.now(),
                        assigned: 0,
                    },
                );
            }
            other => ignored("lookup", &self.name, other.name(), &from, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Ctx) {
        if timer != Timer::Chat(ChatTimer::Rotation) {
            return;
        }
        let now = ctx.now();
        let states: Vec<(String, bool)> = self
            .servers
            .iter()
            .map(|(n, l)| (n.clone(), self.alive(l, now)))
            .collect();
        for (server, alive) in states {
            if !alive && self.in_rotation.insert(server.clone(), false) == Some(true) {
                ctx.event(
                    OperatorEvent::ChannelOutOfRotation,
                    format!("{}: {server} stopped reporting its load", self.name),
                );
            }
        }
        ctx.set_timer(
            Timer::Chat(ChatTimer::Rotation),
            self.settings.chat_load_report,
        );
    }

    fn on_persisted(&mut self, _token: u64, _result: Result<Written, StoreError>, _ctx: &mut Ctx) {}

    fn gauges(&self) -> Vec<(Gauge, u64)> {
        vec![(Gauge::ChannelsKnown, self.servers.len() as u64)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Harness;

    fn pool() -> Arc<ChatPool> {
        Arc::new(ChatPool {
            channels: vec!["ch1".into(), "ch2".into()],
            lookups: vec!["lk1".into()],
            store: "chatdb".into(),
            rooms: BTreeMap::new(),
            ..Default::default()
        })
    }

    fn lookup() -> Harness<Lookup> {
        let mut h = Harness::new(
            Addr::new("lk1", ActorKind::Lookup),
            Lookup::new("lk1", pool(), Settings::default()),
        );
        h.start(Recovered::new());
        h
    }

    fn report(h: &mut Harness<Lookup>, ch: &str, sessions: u64) {
        h.msg(
            Addr::new(ch, ActorKind::Channel),
            Msg::Chat(ChatMsg::LoadReport {
                sessions,
                capacity: 10,
            }),
        );
    }

    fn find(h: &mut Harness<Lookup>) -> Msg {
        h.msg(
            Addr::new("c1", ActorKind::Client),
            Msg::Chat(ChatMsg::FindChannel),
        )
        .remove(0)
        .1
    }

    fn assigned(m: Msg) -> String {
        match m {
            Msg::Chat(ChatMsg::ChannelAssigned { channel }) => channel,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn least_loaded_first_and_a_burst_spreads_out() {
        let mut h = lookup();
        assert_eq!(find(&mut h), Msg::Chat(ChatMsg::NoChannel));
        report(&mut h, "ch1", 4);
        report(&mut h, "ch2", 2);
        let got: Vec<String> = (0..6).map(|_| assigned(find(&mut h))).collect();
        // ch2 until it matches ch1, then alternating.
        assert_eq!(got, ["ch2", "ch2", "ch1", "ch2", "ch1", "ch2"]);
    }

    #[test]
    fn a_silent_server_leaves_the_rotation_and_comes_back_when_it_reports() {
        let mut h = lookup();
        report(&mut h, "ch1", 0);
        report(&mut h, "ch2", 5);
        h.now += 25_000;
        report(&mut h, "ch2", 5);
        h.now += 10_000; // ch1 silent for 35 s > 3 periods
        assert_eq!(assigned(find(&mut h)), "ch2");
        h.fire(Timer::Chat(ChatTimer::Rotation));
        report(&mut h, "ch1", 0);
        assert_eq!(assigned(find(&mut h)), "ch1");
        assert!(h.events().contains(&"channel_out_of_rotation"));
    }

    #[test]
    fn full_servers_are_not_assigned_and_strangers_cannot_report() {
        let mut h = lookup();
        report(&mut h, "ch1", 10);
        assert_eq!(find(&mut h), Msg::Chat(ChatMsg::NoChannel));
        h.msg(
            Addr::new("ch9", ActorKind::Channel),
            Msg::Chat(ChatMsg::LoadReport {
                sessions: 0,
                capacity: 10,
            }),
        );
        assert_eq!(find(&mut h), Msg::Chat(ChatMsg::NoChannel));
        assert!(h.events().contains(&"unauthorized_sender"));
    }
}

//! The auditor (`[[hold]]` in a scenario): at each hold's time it places
//! the hold on every database, as an auditor, and at its release time
//! releases it, sending each request again every few seconds until that
//! database answers. What it was told goes to the checker, so a hold that
//! was never placed is seen as such rather than assumed. Right before a
//! release it reads what each database holds durably: the rows the hold
//! kept through the purges while it was in force, which a later purge
//! may delete legally.

use crate::host::disk::SimDisk;
use crate::host::node::store_file;
use crate::host::tcp_flow::FlowLink;
use crate::lock;
pub use crate::oracle::holds::HoldLog;
use crate::scenario::Hold;
use holdfast_actors::core::identity::{Principal, Role};
use holdfast_actors::core::ids::{ActorKind, Addr, MessageId, Millis, Token, UserId};
use holdfast_actors::core::protocol::{
    ArchiveRefusal, Envelope, LegalHold, Msg, PurgeRecord, RecordsMsg,
};
use holdfast_actors::core::store_keys::{self, DB_PURGE};
use holdfast_host::store::replay;
use holdfast_host::transport::{Network, DEFAULT_OUTBOUND_CAPACITY};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The simulated node the auditor runs on.
pub const AUDITOR_NODE: &str = "auditor";
/// The auditor's principal (an auditor may place and release holds).
pub const AUDITOR: &str = "auditor@corp.example";
/// A request without an answer is sent again after this.
const RETRY: Duration = Duration::from_secs(5);

pub struct AuditorSpec {
    /// Every database: its name, address and disk.
    pub databases: Vec<(String, SocketAddr, SimDisk)>,
    pub holds: Vec<Hold>,
    pub epoch: Instant,
    pub link: Arc<FlowLink>,
}

pub type SharedAuditLog = Arc<Mutex<Vec<HoldLog>>>;

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Place,
    Release,
}

/// One request to one database, sent until answered.
struct Request {
    hold: usize,
    db: usize,
    action: Action,
    answered: bool,
}

fn now(epoch: Instant) -> Millis {
    Instant::now().duration_since(epoch).as_millis() as Millis
}

/// What the databases hold durably right now: the client ids of their
/// rows and their purge records.
fn snapshot(spec: &AuditorSpec) -> (BTreeSet<MessageId>, Vec<PurgeRecord>) {
    let mut ids = BTreeSet::new();
    let mut purges = Vec::new();
    for (_, _, disk) in &spec.databases {
        let state = replay(&disk.durable(&store_file(ActorKind::Database))).0;
        ids.extend(
            store_keys::db_rows(&state)
                .into_iter()
                .flatten()
                .map(|r| r.record.client_id),
        );
        if let Some(Ok(p)) = state
            .get(DB_PURGE)
            .map(|v| store_keys::decode::<PurgeRecord>(v))
        {
            purges.push(p);
        }
    }
    (ids, purges)
}

pub async fn run_auditor(spec: Arc<AuditorSpec>, log: SharedAuditLog) {
    let me = Principal::new(AUDITOR.to_string(), Role::Auditor).client_name("au1");
    let (tx, mut rx) = mpsc::unbounded_channel::<Envelope>();
    let net = Network::with_link(
        me.clone(),
        spec.databases
            .iter()
            .map(|(n, a, _)| (n.clone(), *a))
            .collect(),
        tx,
        spec.link.clone(),
        DEFAULT_OUTBOUND_CAPACITY,
    );
    *lock(&log) = vec![HoldLog::default(); spec.holds.len()];
    // Every action at its time, in time order (a release after its place).
    let mut schedule: Vec<(Millis, usize, Action)> = Vec::new();
    for (i, h) in spec.holds.iter().enumerate() {
        schedule.push((h.place_ms, i, Action::Place));
        if let Some(r) = h.release_ms {
            schedule.push((r, i, Action::Release));
        }
    }
    schedule.sort_by_key(|(t, i, a)| (*t, *i, *a == Action::Release));
    let mut schedule = schedule.into_iter().peekable();
    // Requests by token: the token stays the same across resends, so a
    // late answer to an earlier copy still counts.
    let mut requests: BTreeMap<Token, Request> = BTreeMap::new();
    let mut next_retry = spec.epoch + Duration::from_secs(366 * 86_400);
    loop {
        let next_action = schedule
            .peek()
            .map(|(t, _, _)| spec.epoch + Duration::from_millis(*t));
        let wake = next_action.map_or(next_retry, |a| a.min(next_retry));
        tokio::select! {
            biased;
            env = rx.recv() => {
                let Some(env) = env else { return };
                net.consumed(&env);
                let t = now(spec.epoch);
                let (token, refused) = match env.msg {
                    Msg::Records(RecordsMsg::HoldDone { token, .. }) => (token, None),
                    Msg::Records(RecordsMsg::ArchiveRefused { token, refusal }) => (token, Some(refusal)),
                    _ => continue,
                };
                let Some(r) = requests.get_mut(&token) else { continue };
                if r.answered {
                    continue;
                }
                match refused {
                    // The engine failed, or is busy: the next resend may
                    // succeed.
                    Some(
                        ArchiveRefusal::StoreFailed(_)
                        | ArchiveRefusal::AuditFailed(_)
                        | ArchiveRefusal::Busy,
                    ) => continue,
                    // An earlier copy of this very request was done and
                    // its answer lost: the hold stands as asked.
                    Some(ArchiveRefusal::Invalid(why))
                        if why.contains("exists and is active")
                            || why.contains("released already") => {}
                    Some(other) => {
                        let mut l = lock(&log);
                        l[r.hold].refused.get_or_insert(format!("{}: {other:?}", spec.databases[r.db].0));
                    }
                    None => {}
                }
                r.answered = true;
                let (hold, action) = (r.hold, r.action);
                let all = requests
                    .values()
                    .filter(|q| q.hold == hold && q.action == action)
                    .all(|q| q.answered);
                let mut l = lock(&log);
                if all && l[hold].refused.is_none() {
                    match action {
                        Action::Place => l[hold].placed_at = Some(t),
                        Action::Release => l[hold].released_at = Some(t),
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let t = now(spec.epoch);
                while let Some((at, hold, action)) = schedule.peek().copied() {
                    if at > t {
                        break;
                    }
                    schedule.next();
                    if action == Action::Release {
                        let snap = snapshot(&spec);
                        let mut l = lock(&log);
                        l[hold].snapshot = Some(snap);
                        l[hold].release_sent_at = Some(t);
                    }
                    for db in 0..spec.databases.len() {
                        let token = Token(requests.len() as u64 + 1);
                        requests.insert(token, Request { hold, db, action, answered: false });
                    }
                }
                for (token, r) in requests.iter().filter(|(_, r)| !r.answered) {
                    let h = &spec.holds[r.hold];
                    let msg = match r.action {
                        Action::Place => Msg::Records(RecordsMsg::HoldPlace {
                            token: *token,
                            hold: Box::new(LegalHold {
                                name: h.name.clone(),
                                users: h.users.iter().map(UserId::from).collect(),
                                since: h.since_ms,
                                until: h.until_ms,
                                reason: "scenario".into(),
                                ..Default::default()
                            }),
                        }),
                        Action::Release => Msg::Records(RecordsMsg::HoldRelease {
                            token: *token,
                            name: h.name.clone(),
                            reason: "scenario".into(),
                        }),
                    };
                    let env = Envelope {
                        from: Addr::new(me.clone(), ActorKind::Client),
                        to: Addr::new(spec.databases[r.db].0.clone(), ActorKind::Database),
                        id: 0,
                        msg,
                    };
                    if let Err(e) = net.send(env) {
                        tracing::debug!(error = %e, "auditor could not send");
                    }
                }
                next_retry = if requests.values().any(|r| !r.answered) {
                    Instant::now() + RETRY
                } else {
                    spec.epoch + Duration::from_secs(366 * 86_400)
                };
            }
        }
    }
}

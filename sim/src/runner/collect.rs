//! Reading a run's outcome: what survives a crash on every node's disk,
//! what the clients were told, and the operator events, handed to the
//! checkers and gathered into the run's result.

use super::boot::Started;
use super::nodes::Nodes;
use crate::host::node::{store_file, OUTPUT_DIR};
use crate::lock;
use crate::oracle::chat_checker::{self, ChatCounts, ChatRetention};
use crate::oracle::chat_log::SharedChatLog;
use crate::oracle::checker::{self, Observed, Op, Shutdown};
use crate::oracle::compliance_checker::{self, ComplianceInput};
use crate::oracle::critical;
use crate::oracle::events::EventRecord;
use crate::oracle::holds::ObservedHold;
use crate::report::RunResult;
use crate::scenario::Scenario;
use holdfast_actors::archiving::retention::PurgeRecord;
use holdfast_actors::chat::chat_store;
use holdfast_actors::chat::web_files;
use holdfast_actors::compliance::export as compliance_export;
use holdfast_actors::compliance::service as compliance;
use holdfast_actors::core::actor::Recovered;
use holdfast_actors::core::cluster::Cluster;
use holdfast_actors::core::ids::{ActorKind, MessageId};
use holdfast_actors::core::operator::OperatorEvent;
use holdfast_actors::core::protocol::{ChatPurgeRecord, LegalHold};
use holdfast_actors::core::store_keys::{self, Row};
use holdfast_host::store::replay;
use std::collections::{BTreeMap, BTreeSet};

pub struct RunOutput {
    pub result: RunResult,
    pub timeline: Vec<String>,
    /// Per node, every gauge sample `(time, gauge, value)` (with `series`).
    pub series: BTreeMap<String, Vec<(u64, &'static str, u64)>>,
    /// The concrete scenario this seed ran (ranges drawn, faults expanded).
    pub scenario: Scenario,
    /// Simulated tasks still alive after the run was torn down: each one
    /// holds memory a sweep of many seeds would never get back.
    pub tasks_left: usize,
}

/// The run's outcome and result, read right after its end (the teardown
/// fills in `tasks_left`).
pub(super) fn collect(scn: Scenario, seed: u64, run: &Started) -> RunOutput {
    let nodes = &run.nodes;
    // Read the outcome: what survives a crash right now.
    let ops: Vec<Op> = std::mem::take(&mut *lock(&run.history))
        .into_values()
        .collect();
    let mut read_errors = Vec::new();
    let archive = read_archive(&scn, nodes, &mut read_errors);
    let chat = check_chat(&scn, nodes, run, &mut read_errors);
    let events = lock(&run.events).clone();
    let shutdowns = critical::shutdowns(&events);
    let keep_ms = scn.settings.archive_keep_days * 86_400_000;
    let mut observed = observe(ops, archive, keep_ms, &events, &shutdowns, &run.cluster);
    observed.end_ms = scn.duration_ms;
    observed.purge_hour_ms = scn.settings.archive_purge_hour.min(23) * 3_600_000;
    observed.db_back_at = databases_back_at(&scn);
    observed.holds = scn
        .holds
        .iter()
        .zip(lock(&run.audit_log).iter())
        .map(|(hold, log)| ObservedHold {
            hold: hold.clone(),
            log: log.clone(),
        })
        .collect();
    let counts = checker::check(&observed);
    let recovery =
        crate::oracle::recovery::figures(&observed.ops, &observed.rows, &scn.faults, &run.cluster);
    let hostile = (!scn.hostile.is_empty())
        .then(|| checker::check_hostile(&lock(&run.hostile_log), &observed.rows));
    let (trace_hash, trace_len, timeline) = {
        let t = lock(&run.trace);
        (t.hash(), t.len(), t.lines().to_vec())
    };
    let result = RunResult {
        scenario: scn.name.clone(),
        file: scn.file.clone(),
        seed,
        semantics: scn.semantics.as_str(),
        simulated_ms: scn.duration_ms,
        counts,
        chat,
        hostile,
        critical: critical::attribute(&shutdowns, &scn.faults, &run.cluster),
        obligations: scn
            .expect
            .critical_shutdown_within_ms
            .map(|bound| critical::obligations(bound, &shutdowns, &scn.faults, &run.cluster))
            .unwrap_or_default(),
        events,
        faults: scn.faults.iter().map(|f| f.describe()).collect(),
        trace_hash,
        trace_len,
        read_errors,
        drawn: Vec::new(),
        gauges: nodes
            .shared
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    lock(&s.gauges)
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                )
            })
            .collect(),
        recovery,
    };
    RunOutput {
        tasks_left: 0,
        result,
        timeline,
        series: nodes
            .shared
            .iter()
            .filter_map(|(n, s)| s.series.as_ref().map(|v| (n.clone(), lock(v).clone())))
            .collect(),
        scenario: scn,
    }
}

/// When each database last came back from a fault that stopped it (0:
/// never stopped; `None`: down at the end of the run).
fn databases_back_at(scn: &Scenario) -> BTreeMap<String, Option<u64>> {
    use crate::scenario::FaultKind;
    scn.topology
        .databases
        .iter()
        .map(|db| {
            let back = scn
                .faults
                .iter()
                .filter(|f| match &f.kind {
                    FaultKind::Crash { node }
                    | FaultKind::DbDown { node }
                    | FaultKind::Corrupt { node, .. } => node == db,
                    _ => false,
                })
                .try_fold(0, |back: u64, f| {
                    f.duration_ms.map(|d| back.max(f.start_ms + d))
                });
            (db.clone(), back)
        })
        .collect()
}

/// What the databases and queues hold.
struct Archive {
    rows: Vec<Row>,
    purges: Vec<PurgeRecord>,
    /// Each database's purge record, by database.
    db_purges: BTreeMap<String, PurgeRecord>,
    /// Which database each run of `rows` came from: `(database, rows)`.
    row_groups: Vec<(String, usize)>,
    holds: Vec<LegalHold>,
    queued: BTreeSet<MessageId>,
    parked: BTreeSet<MessageId>,
}

/// Every database's rows and every queue's records, as a restart would
/// find them.
fn read_archive(scn: &Scenario, nodes: &Nodes, read_errors: &mut Vec<String>) -> Archive {
    let mut rows = Vec::new();
    let mut purges = Vec::new();
    let mut db_purges = BTreeMap::new();
    let mut row_groups = Vec::new();
    let mut holds = Vec::new();
    let mut queued = BTreeSet::new();
    let mut parked = BTreeSet::new();
    for (name, shared) in &nodes.shared {
        let state = |kind| -> Recovered {
            shared
                .disk
                .with_durable(&store_file(kind), |bytes| replay(bytes).0)
        };
        if scn.topology.databases.contains(name) {
            let mut db = state(ActorKind::Database);
            let record = db
                .get(store_keys::DB_PURGE)
                .map(|v| store_keys::decode::<PurgeRecord>(v));
            match record {
                Some(Ok(p)) => {
                    db_purges.insert(name.clone(), p.clone());
                    purges.push(p);
                }
                Some(Err(e)) => read_errors.push(format!("{name}: purge record: {e}")),
                None => {}
            }
            for (k, v) in db
                .range(store_keys::DB_HOLD.to_vec()..)
                .take_while(|(k, _)| k.starts_with(store_keys::DB_HOLD))
            {
                match store_keys::decode::<LegalHold>(v) {
                    Ok(h) => holds.push(h),
                    Err(e) => read_errors.push(format!("{name}: hold {k:?}: {e}")),
                }
            }
            let before = rows.len();
            // The rows (as `store_keys::db_rows` reads them), each entry
            // of the replayed store dropped once decoded: at volume the
            // store and its decoded rows are the most a run holds at once.
            let stored = db.split_off(store_keys::DB_ROW);
            drop(db);
            rows.reserve(stored.len());
            for (k, v) in stored
                .into_iter()
                .take_while(|(k, _)| k.starts_with(store_keys::DB_ROW))
            {
                match store_keys::decode::<Row>(&v) {
                    Ok(row) => rows.push(row),
                    Err(e) => read_errors.push(format!(
                        "{name}: {}",
                        store_keys::ReadError::undecodable(&k)(e)
                    )),
                }
            }
            row_groups.push((name.clone(), rows.len() - before));
        }
        for r in store_keys::parked_records(&state(ActorKind::DestinationQueue)) {
            match r {
                Ok((_, p)) => {
                    parked.insert(p.record.client_id);
                }
                Err(e) => read_errors.push(format!("{name}: {e}")),
            }
        }
        for kind in [ActorKind::OutgoingQueue, ActorKind::DestinationQueue] {
            for r in store_keys::queued_records(&state(kind)) {
                match r {
                    Ok(rec) => {
                        queued.insert(rec.client_id);
                    }
                    Err(e) => read_errors.push(format!("{name}: {e}")),
                }
            }
        }
    }
    Archive {
        rows,
        purges,
        db_purges,
        row_groups,
        holds,
        queued,
        parked,
    }
}

/// The chat checker's (and compliance checker's) findings, when the
/// topology has a chat store.
fn check_chat(
    scn: &Scenario,
    nodes: &Nodes,
    run: &Started,
    read_errors: &mut Vec<String>,
) -> Option<ChatCounts> {
    let chat_log: &SharedChatLog = &run.chat_log;
    scn.topology.chat_store.as_ref().map(|store| {
        let shared = &nodes.shared[store];
        let state = replay(&shared.disk.durable(&store_file(ActorKind::ChatStore))).0;
        let mut posts = Vec::new();
        for entry in chat_store::stored_posts(&state) {
            match entry {
                Ok(p) => posts.push(p),
                Err(e) => read_errors.push(format!("{store}: {e}")),
            }
        }
        let mut files = BTreeMap::new();
        let mut file_owners = BTreeMap::new();
        let mut uploads = BTreeMap::new();
        let mut pending = 0u64;
        for web in &scn.topology.web {
            let state = replay(&nodes.shared[web].disk.durable(&store_file(ActorKind::Web))).0;
            for (k, v) in state.range(web_files::FILE.to_vec()..) {
                if !k.starts_with(web_files::FILE) {
                    break;
                }
                match store_keys::decode::<web_files::FileMeta>(v) {
                    // A description without its content is a lost file.
                    Ok(f) => match state.get(&web_files::blob_key(&f.id)) {
                        Some(data) => {
                            uploads.insert(
                                f.id.to_string(),
                                (data.len() as u64, compliance_export::sha256_hex(data)),
                            );
                            file_owners.insert(
                                f.id.to_string(),
                                (f.room.to_string(), f.uploader.to_string()),
                            );
                            files.insert(f.id.into_string(), data.len() as u64);
                        }
                        None => read_errors.push(format!("{web}: file {} has no content", f.id)),
                    },
                    Err(e) => read_errors.push(format!("{web}: {e}")),
                }
            }
            pending += outbox_len(&state);
        }
        let log = lock(chat_log);
        // Every value the store holds outside its compliance outbox (which
        // carries the posts' text to the Compliance service, by design).
        let store_values: Vec<u8> = if log.clears.is_empty() {
            Vec::new()
        } else {
            state
                .iter()
                .filter(|(k, _)| !k.starts_with(compliance::OUTBOX))
                .flat_map(|(_, v)| v.iter().copied())
                .collect()
        };
        let record = state.get(chat_store::CHAT_PURGE).and_then(|v| {
            store_keys::decode::<ChatPurgeRecord>(v)
                .map_err(|e| read_errors.push(format!("{store}: chat purge record: {e}")))
                .ok()
        });
        let policy = chat_store::Policy::new(&scn.settings);
        // The configured rooms, then those the store holds (created or
        // changed at run time).
        let mut keep_ms: BTreeMap<String, u64> = super::build_pool(scn)
            .rooms
            .into_iter()
            .map(|(name, room)| (name.into_string(), policy.days(&room.category) * 86_400_000))
            .collect();
        for room in chat_store::stored_rooms(&state) {
            match room {
                Ok((name, room)) => {
                    keep_ms.insert(name.into_string(), policy.days(&room.category) * 86_400_000);
                }
                Err(e) => read_errors.push(format!("{store}: {e}")),
            }
        }
        let retention = record
            .as_ref()
            .map(|record| ChatRetention { record, keep_ms });
        let mut counts =
            chat_checker::check(&log, &posts, &files, &store_values, retention.as_ref());
        if let Some(comp) = &scn.topology.compliance {
            pending += outbox_len(&state);
            let comp_disk = &nodes.shared[comp].disk;
            let staged = replay(&comp_disk.durable(&store_file(ActorKind::Compliance))).0;
            pending += staged
                .keys()
                .filter(|k| k.starts_with(compliance::STAGED))
                .count() as u64;
            let outputs: Vec<(String, Vec<u8>)> = comp_disk
                .file_names()
                .into_iter()
                .filter_map(|n| {
                    let name = n.strip_prefix(OUTPUT_DIR)?.to_string();
                    Some((name, comp_disk.durable(&n)))
                })
                .collect();
            let rooms_saved: Vec<String> = state
                .keys()
                .filter_map(|k| k.strip_prefix(chat_store::CHAT_ROOM))
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            let pickup = lock(&run.pickup_log);
            let picked: Vec<(String, Vec<u8>)> = pickup
                .picked
                .iter()
                .map(|(n, d)| (n.clone(), d.clone()))
                .collect();
            counts.compliance = Some(compliance_checker::check(&ComplianceInput {
                format: scn.export.format,
                outputs: &outputs,
                picked: &picked,
                acked: &pickup.acked,
                ack_sent: &pickup.sent,
                uploads: &uploads,
                posts: &posts,
                files: &file_owners,
                rooms_saved: &rooms_saved,
                log: &log,
                pending,
            }));
        }
        counts
    })
}

/// Events still in a compliance outbox of a store.
fn outbox_len(state: &Recovered) -> u64 {
    state
        .keys()
        .filter(|k| k.starts_with(compliance::OUTBOX) && k.len() == compliance::OUTBOX.len() + 8)
        .count() as u64
}

/// What the IM checker judges: the clients' history, the archive, and the
/// operator events that bear on it.
fn observe(
    ops: Vec<Op>,
    archive: Archive,
    keep_ms: u64,
    events: &[EventRecord],
    shutdowns: &BTreeMap<String, Vec<(Shutdown, String)>>,
    cluster: &Cluster,
) -> Observed {
    let Archive {
        rows,
        purges,
        db_purges,
        row_groups,
        holds,
        queued,
        parked,
    } = archive;
    let expired = events
        .iter()
        .filter(|e| e.kind == OperatorEvent::RecordExpired)
        .filter_map(|e| e.detail.strip_prefix("ids="))
        .flat_map(|ids| ids.split(',').map(MessageId::from))
        .collect();
    // Operator events that report data lost to damage, per node; and the
    // nodes each front end's records pass through.
    let mut damage_reports: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| checker::REPORTS_LOSS.contains(&e.kind))
    {
        damage_reports.entry(e.node.clone()).or_default().push(e.at);
    }
    let paths = cluster
        .front_ends
        .iter()
        .map(|(fe, info)| {
            let db = cluster
                .archivers
                .get(&info.archiver)
                .map(|a| a.database.clone())
                .unwrap_or_default();
            (fe.clone(), vec![fe.clone(), info.archiver.clone(), db])
        })
        .collect();
    Observed {
        ops,
        rows,
        purges,
        db_purges,
        row_groups,
        purge_hour_ms: 0,
        db_back_at: BTreeMap::new(),
        keep_ms,
        stored_holds: holds,
        holds: Vec::new(),
        end_ms: 0,
        queued,
        parked,
        expired,
        damage_reports,
        paths,
        shutdowns: shutdowns
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.iter().map(|(s, _)| *s).collect::<Vec<Shutdown>>(),
                )
            })
            .collect(),
    }
}

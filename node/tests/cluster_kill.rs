//! Real processes on loopback, mutual TLS, queues fsynced by group commit:
//! SIGKILL the archiver and a front end in the middle of a stream of IMs,
//! restart them, and the archive must hold exactly what the front ends
//! accepted — nothing lost, nothing twice, nothing never sent. The same
//! with the archive in PostgreSQL, and with the PostgreSQL server itself
//! killed and restarted mid-stream.

mod common;

use common::outcomes::{Told, Verdict};
use common::postgres::PgServer;
use common::TestCluster;
use holdfast::client::{self, Client};
use holdfast::cluster_up::loopback_config;
use std::time::Duration;

const SETTINGS: &str = "resend_interval = \"500ms\"";

/// The test cluster, its archive in `pg`'s database when given.
fn cluster(pg: Option<&PgServer>) -> TestCluster {
    match pg {
        None => TestCluster::start("tls", SETTINGS),
        Some(pg) => {
            let url = pg.url("holdfast");
            TestCluster::start_with("tls", || {
                format!(
                    "{}\n[archive]\nengine = \"postgres\"\nurl = \"{url}\"\nstatement_timeout = \"5s\"\n",
                    loopback_config("tls", SETTINGS)
                )
            })
        }
    }
}

/// 4 s of traffic at 1,000 IM/s; the archiver is killed after 1.2 s, fe1
/// half a second later (its queue then holds what the archiver missed);
/// both restart 0.8 s after that. `wipe_fe1_queue` destroys fe1's queue
/// file before the restart, as a lost disk would.
fn kill_and_restart(wipe_fe1_queue: bool, pg: Option<&PgServer>) -> Verdict {
    let c = cluster(pg);
    stream(c, wipe_fe1_queue, |c| {
        std::thread::sleep(Duration::from_millis(1200));
        c.kill("arch1");
        std::thread::sleep(Duration::from_millis(500));
        c.kill("fe1");
        if wipe_fe1_queue {
            let fe1 = c.config.node("fe1").unwrap().data.clone();
            std::fs::remove_file(fe1.join("outgoing_queue.log")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(800));
        c.start_node("arch1");
        c.start_node("fe1");
    })
}

/// Streams 4 s of IMs at 1,000 a second through `c` while `meanwhile`
/// breaks things; then compares the archive with what the client was
/// told.
fn stream(mut c: TestCluster, lossy: bool, meanwhile: impl FnOnce(&mut TestCluster)) -> Verdict {
    let rt = common::runtime();
    let config = c.config.clone();
    let client = rt.block_on(async { std::sync::Arc::new(Client::new(config).unwrap()) });
    let load = rt.spawn(client::load(
        client.clone(),
        1000.0,
        Duration::from_secs(4),
        Duration::from_secs(15),
        120,
    ));
    meanwhile(&mut c);
    let (report, sent) = rt.block_on(load).unwrap().unwrap();
    eprintln!("{report:?}");

    let told = Told::new(sent.iter().map(|s| (s.id.as_str(), &s.outcome)));
    let accepted = &told.accepted;
    assert_eq!(report.sent, 4000);
    // Not vacuous: most traffic got through despite the two crashes.
    assert!(
        accepted.len() >= 2000,
        "only {} of 4000 accepted: {report:?}\nfe1 log:\n{}",
        accepted.len(),
        c.log("fe1")
    );
    let settle = if lossy { 15 } else { 60 };
    let archive = c.wait_archive(Duration::from_secs(settle), |a| {
        accepted.iter().all(|id| a.contains_key(id))
    });
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
    Verdict::new(&told, &archive)
}

fn assert_exact(v: &Verdict) {
    assert!(
        v.lost.is_empty(),
        "{} of {} accepted IMs not archived, e.g. {:?}",
        v.lost.len(),
        v.accepted,
        &v.lost[..v.lost.len().min(5)]
    );
    assert!(
        v.duplicated.is_empty(),
        "archived twice: {:?}",
        v.duplicated
    );
    assert!(
        v.phantoms.is_empty(),
        "archived but never sent: {:?}",
        v.phantoms
    );
    assert!(
        v.archived_rejected.is_empty(),
        "rejected but archived: {:?}",
        v.archived_rejected
    );
}

#[test]
fn sigkill_of_archiver_and_front_end_loses_nothing_accepted() {
    assert_exact(&kill_and_restart(false, None));
}

#[test]
fn sigkill_of_archiver_and_front_end_loses_nothing_accepted_with_postgres() {
    let pg = PgServer::start();
    assert_exact(&kill_and_restart(false, Some(&pg)));
}

/// The PostgreSQL server of the archive crashes (`pg_ctl stop -m
/// immediate`) while IMs flow and comes back 1.5 s later on the same data:
/// archiving pauses (the database node's batches fail, the queues hold
/// the records), then every accepted IM is archived exactly once.
#[test]
fn the_archive_server_killed_mid_stream_loses_nothing_accepted() {
    let pg = PgServer::start();
    let c = cluster(Some(&pg));
    let v = stream(c, false, |c| {
        std::thread::sleep(Duration::from_millis(1200));
        let before = c.archived().len();
        assert!(before > 0, "archiving had not started");
        pg.stop_immediate();
        std::thread::sleep(Duration::from_millis(1500));
        pg.start_again();
        let log = c.log("db1");
        assert!(
            log.contains("persist failed"),
            "the database node did not see the server go:\n{log}"
        );
    });
    assert_exact(&v);
}

/// The check above must be able to fail: a front end that comes back
/// without its queue file has lost what it held, and the same comparison
/// must count it.
#[test]
fn a_front_end_that_loses_its_queue_file_is_seen_losing_messages() {
    let v = kill_and_restart(true, None);
    assert!(
        !v.lost.is_empty(),
        "fe1's queue was destroyed while the archiver was down, yet nothing is missing"
    );
    assert!(v.phantoms.is_empty());
}

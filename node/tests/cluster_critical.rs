//! Critical mode on real processes (plain links): when the archiving server
//! dies, front ends must turn IM away explicitly within the configured
//! bound, lose nothing they accepted before, and accept again once the
//! archiver is back.

mod common;

use common::TestCluster;
use holdfast::client::{self, Client, Outcome};
use holdfast_actors::core::protocol::Im;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const SETTINGS: &str = r#"
critical_mode = true
critical_auto_resume = true
critical_resume_after = "2s"
heartbeat_interval = "500ms"
heartbeat_ttrq = "2s"
heartbeat_ttbr = "4s"
resend_interval = "500ms"
"#;

/// Heartbeat TTRQ + two heartbeat intervals (a NACK is noticed at the next
/// check) + 1.5 s for process scheduling on a loaded machine.
const SHUTDOWN_BOUND: Duration = Duration::from_millis(2000 + 2 * 500 + 1500);

#[test]
fn archiver_down_stops_messaging_within_the_bound_and_it_resumes_after() {
    let mut c = TestCluster::start("plain", SETTINGS);
    let rt = common::runtime();
    let config = c.config.clone();
    let client = rt.block_on(async { std::sync::Arc::new(Client::new(config).unwrap()) });
    let accepted = RefCell::new(BTreeSet::new());
    let send = |n: u64| -> Outcome {
        let im = Im {
            id: client::new_id(&format!("crit{n}")).into(),
            from: "alice@corp.example".into(),
            to: "bob@corp.example".into(),
            body: format!("message {n}"),
        };
        let id = im.id.clone();
        let outcome = rt
            .block_on(client.send_im(im, Duration::from_secs(5)))
            .unwrap();
        if matches!(outcome, Outcome::Accepted { .. }) {
            accepted.borrow_mut().insert(id);
        }
        outcome
    };
    // Healthy: accepted.
    assert!(matches!(send(0), Outcome::Accepted { .. }));

    c.kill("arch1");
    let killed = Instant::now();
    let mut n = 1;
    let shutdown = loop {
        match send(n) {
            Outcome::Rejected { reason } => {
                assert!(
                    reason.contains("critical mode"),
                    "rejected for another reason: {reason}"
                );
                break killed.elapsed();
            }
            Outcome::Accepted { .. } => {}
            Outcome::Unknown => panic!("no answer while the archiver is down"),
            Outcome::Busy => panic!("busy at one IM at a time"),
            Outcome::DeliveredNotArchived { reason, .. } => {
                panic!("delivered without archiving under critical mode: {reason}")
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "still accepting 20 s after the archiver died; fe1 log:\n{}",
            c.log("fe1")
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("critical shutdown {shutdown:?} after the archiver was killed");
    assert!(
        shutdown <= SHUTDOWN_BOUND,
        "shutdown took {shutdown:?}, bound {SHUTDOWN_BOUND:?}"
    );
    // Shut down means shut down: every further IM is refused.
    for _ in 0..5 {
        n += 1;
        assert!(matches!(send(n), Outcome::Rejected { .. }));
    }

    c.start_node("arch1");
    let back = Instant::now();
    loop {
        n += 1;
        if let Outcome::Accepted { .. } = send(n) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no resume 30 s after the archiver restarted; fe1 log:\n{}",
            c.log("fe1")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("resumed {:?} after the archiver restarted", back.elapsed());

    // Everything accepted — before the shutdown too — reaches the archive.
    let accepted = accepted.borrow().clone();
    let archive = c.wait_archive(Duration::from_secs(30), |a| {
        accepted.iter().all(|id| a.contains_key(id.as_str()))
    });
    let lost: Vec<_> = accepted
        .iter()
        .filter(|id| !archive.contains_key(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "accepted but not archived: {lost:?}\n--- fe1 ---\n{}\n--- arch1 ---\n{}\n--- db1 ---\n{}",
        c.log("fe1"),
        c.log("arch1"),
        c.log("db1")
    );
    let slow = c.stop_all();
    assert!(slow.is_empty(), "did not stop on SIGTERM: {slow:?}");
}

//! The checker is not blind: a database that drops or duplicates inserts on
//! purpose (sabotage, enabled only here) makes the report say so and the
//! run fail, both through the library and through the CLI's exit code.
#![cfg(madsim)]

mod common;

use common::{
    assert_failure, assert_failure_mentions, library_source, run_judged, scenario_file, sim_cli,
};
use holdfast_sim::oracle::checker::Counts;
use holdfast_sim::oracle::compliance_checker::ComplianceCounts;

const BASE: &str = r#"
name = "sabotaged"
duration = "20m"
[topology]
front_ends = 2
[[workload]]
kind = "im"
users = 50
rate = 5.0
stop = "15m"
"#;

fn run(sabotage: &str) -> (holdfast_sim::report::RunResult, Vec<String>) {
    run_judged(
        "sabotaged.toml",
        &format!("{BASE}\n[sabotage]\n{sabotage}\n"),
        42,
    )
}

#[test]
fn dropped_inserts_are_reported_as_lost() {
    let (r, failures) = run("db_drop_every = 100");
    let expected = r.counts.archivable_accepted / 100;
    assert!(
        r.counts.accepted > 1000,
        "the workload ran: {}",
        r.counts.accepted
    );
    // Every 100th new record is dropped; nothing else is lost.
    assert!(
        r.counts.lost >= expected.saturating_sub(1) && r.counts.lost <= expected + 1,
        "lost = {}, expected about {expected}",
        r.counts.lost
    );
    assert_eq!(r.counts.duplicates, 0);
    assert_failure(&failures, "lost = ");
}

#[test]
fn duplicated_inserts_are_reported() {
    let (r, failures) = run("db_duplicate_every = 50");
    assert!(
        r.counts.duplicates > 10,
        "duplicates = {}",
        r.counts.duplicates
    );
    assert_eq!(r.counts.lost, 0);
    assert_failure(&failures, "duplicates = ");
}

#[test]
fn the_cli_exits_non_zero_and_reports_the_loss() {
    let (_dir, file) = scenario_file(
        "sabotaged.toml",
        &format!("{BASE}\n[sabotage]\ndb_drop_every = 100\n"),
    );
    let out = sim_cli()
        .args(["run", file.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(v["lost"].as_u64().unwrap() > 0);
    assert_eq!(v["pass"], false);
    assert!(!v["failures"].as_array().unwrap().is_empty());
}

const CHAT: &str = r#"
name = "chat-sabotaged"
duration = "6m"
[topology]
channels = 2
lookups = 1
[[workload]]
kind = "chat"
users = 20
rooms = 2
rate = 4.0
stop = "5m"
"#;

fn run_chat(extra: &str) -> (holdfast_sim::oracle::chat_checker::ChatCounts, Vec<String>) {
    let (result, failures) = run_judged("chat-sabotaged.toml", &format!("{CHAT}{extra}"), 42);
    (result.chat.expect("a chat run has chat counts"), failures)
}

/// Channel servers that do not relay, and clients that do not repair gaps:
/// members on the other server never get a post, and the chat checker
/// must count every such missed delivery.
#[test]
fn posts_not_relayed_are_reported_as_missed_deliveries() {
    let (c, failures) = run_chat("repair = false\n[sabotage]\nno_relay = true\n");
    assert!(c.accepted > 500, "the workload ran: {}", c.accepted);
    assert_eq!(c.lost, 0);
    // Users are spread over both servers: roughly half of every post's
    // audience is on the other one.
    assert!(
        c.missed > c.delivered / 4,
        "missed = {}, delivered = {}",
        c.missed,
        c.delivered
    );
    assert_failure(&failures, "chat missed deliveries");
    // The same run with relaying on has nothing missed: the count above is
    // the sabotage, not noise.
    let (c, failures) = run_chat("repair = false\n");
    assert_eq!(c.missed, 0, "{failures:?}");
    assert!(failures.is_empty(), "{failures:?}");
}

/// Without relay but with clients repairing gaps and catching up on every
/// keep-alive, every post still arrives: the checker does not cry wolf.
#[test]
fn repair_recovers_what_the_relay_did_not_deliver() {
    let (c, failures) = run_chat("[sabotage]\nno_relay = true\n");
    assert_eq!(c.missed, 0, "{failures:?}");
    assert!(c.delivered > 1000);
}

/// The Compliance service deleting a batch before writing its files (the
/// wrong order) loses the batch when it is killed in between: the
/// compliance checker reports the missing events. The library scenario,
/// unsabotaged, passes with the same crash.
#[test]
fn compliance_deleting_before_writing_is_caught() {
    let file = "compliance-crash.toml";
    let c = library_passes(file, 1).chat.unwrap().compliance.unwrap();
    assert_eq!((c.missing, c.duplicates), (0, 0));
    let (c, failures) = compliance(file, 1, "compliance_delete_first = true");
    assert!(c.missing > 10, "missing = {}", c.missing);
    assert_failure_mentions(&failures, "events missing");
}

/// Batches that leave out the uploaded files (the behaviour before they
/// carried them), or whose files are removed before the pickup system
/// acknowledged them, fail the compliance checker; the library scenario,
/// unsabotaged, exports every uploaded file with its hash and removes
/// exactly the acknowledged batches.
#[test]
fn compliance_without_files_or_removing_unpicked_batches_is_caught() {
    let file = "compliance-files.toml";
    let chat = library_passes(file, 1).chat.unwrap();
    let c = chat.compliance.unwrap();
    assert_eq!(c.files_exported, chat.files_stored);
    assert!(c.files_exported > 50 && c.acked > 5, "{c:?}");
    assert_eq!((c.files_missing, c.files_wrong, c.pickup_wrong), (0, 0, 0));
    let (c, failures) = compliance(file, 1, "compliance_skip_files = true");
    assert!(c.files_missing > 50, "files missing = {}", c.files_missing);
    assert_failure_mentions(&failures, "uploaded files missing");
    let (c, failures) = compliance(file, 1, "compliance_delete_unpicked = true");
    assert!(c.missing > 100, "missing = {}", c.missing);
    assert_failure_mentions(&failures, "events missing");
}

/// A post its author sends again under its id (the answer came too late)
/// must be answered with the number it is stored under. A store that
/// appends it again is caught: the checker counts every copy.
#[test]
fn a_store_that_forgets_post_ids_is_caught() {
    let good = library_passes("chat-store-restarts.toml", 1);
    let c = good.chat.unwrap();
    assert_eq!(c.duplicates, 0);
    assert!(c.post_retries > 100, "retries = {}", c.post_retries);
    let (bad, failures) = library(
        "chat-store-restarts.toml",
        1,
        "chat_store_forgets_ids = true",
    );
    let c = bad.chat.unwrap();
    assert!(c.duplicates > 100, "duplicates = {}", c.duplicates);
    assert_failure(&failures, "chat duplicates = ");
}

/// The retention purge deletes what the window no longer covers, and
/// only that: a purge that cuts at its own time instead (deleting rows the
/// policy keeps) is seen losing accepted IMs; one that stops after its
/// first batch yet records itself done is seen keeping rows past the
/// window.
#[test]
fn a_purge_that_deletes_too_much_or_too_little_is_caught() {
    let good = library_passes("purge-during-ingest.toml", 31);
    assert!(
        good.counts.purged > 10_000,
        "purged = {}",
        good.counts.purged
    );
    assert_eq!((good.counts.lost, good.counts.unpurged), (0, 0));
    let (early, failures) = library(
        "purge-during-ingest.toml",
        31,
        "purge_ignores_window = true",
    );
    assert!(early.counts.lost > 1_000, "lost = {}", early.counts.lost);
    assert_failure(&failures, "lost = ");
    let (short, failures) = library("purge-during-ingest.toml", 31, "purge_stops_early = true");
    assert!(
        short.counts.unpurged > 1_000,
        "unpurged = {}",
        short.counts.unpurged
    );
    assert_failure(&failures, "unpurged = ");
}

/// A purge hour a database was down for is made up when it comes back,
/// and a purge whose reads fail is tried again the same morning: with
/// either put off to the next day's hour (as before), the checker finds
/// the database whose last purge hour went by without a purge.
#[test]
fn a_purge_hour_that_goes_by_without_a_purge_is_caught() {
    let good = library_passes("purge-missed.toml", 43);
    assert_eq!(good.counts.purge_missed, 0);
    assert!(good.counts.purged > 500, "purged = {}", good.counts.purged);
    for sabotage in [
        "purge_waits_for_the_hour = true",
        "purge_gives_up_on_failed_read = true",
    ] {
        let (bad, failures) = library("purge-missed.toml", 43, sabotage);
        assert_eq!(bad.counts.purge_missed, 1, "{sabotage}");
        assert_failure(&failures, "purge_missed = ");
    }
}

/// Chat retention: the checker computes each room's cutoff from the
/// purge's start and the scenario's window. A purge that cuts at its own
/// start loses posts inside the window; one that counts rooms done without
/// deleting leaves posts past it. Both are caught.
#[test]
fn a_chat_purge_that_deletes_too_much_or_nothing_is_caught() {
    let good = library_passes("chat-retention.toml", 47);
    let chat = good.chat.as_ref().expect("chat counts");
    assert!(chat.purged > 300, "purged = {}", chat.purged);
    assert_eq!((chat.lost, chat.unpurged), (0, 0));
    let (wide, failures) = library(
        "chat-retention.toml",
        47,
        "chat_purge_ignores_window = true",
    );
    assert!(wide.chat.as_ref().unwrap().lost > 1_000);
    assert_failure(&failures, "chat lost = ");
    let (idle, failures) = library("chat-retention.toml", 47, "chat_purge_stops_early = true");
    assert_eq!(idle.chat.as_ref().unwrap().unpurged, chat.purged);
    assert_failure(&failures, "chat unpurged = ");
}

/// Legal holds keep what they cover while in force: a purge that deletes
/// held rows anyway (as before holds existed) is caught, the rows gone
/// under a hold counted one by one.
#[test]
fn a_purge_that_ignores_legal_holds_is_caught() {
    let good = library_passes("legal-hold.toml", 41);
    let c = &good.counts;
    assert!(c.held > 600, "held = {}", c.held);
    assert_eq!(
        (c.held_purged, c.holds_unplaced, c.unpurged, c.lost),
        (0, 0, 0, 0)
    );
    let (bad, failures) = library("legal-hold.toml", 41, "purge_ignores_holds = true");
    assert!(
        bad.counts.held_purged >= c.held,
        "held_purged = {}, held without the sabotage {}",
        bad.counts.held_purged,
        c.held
    );
    assert_failure(&failures, "held_purged = ");
}

/// A hold no database confirms is reported as such, never assumed placed:
/// here the database is down from before the hold's time to the end.
#[test]
fn a_hold_never_placed_is_reported() {
    let src = r#"
name = "hold-unplaced"
duration = "10m"
[[workload]]
kind = "im"
users = 10
rate = 0.5
stop = "8m"
[[hold]]
name = "never"
users = ["w0u1@corp.example"]
place = "2m"
[[fault]]
kind = "crash"
node = "db1"
start = "1m"
[expect]
lost = 0
"#;
    let (r, failures) = run_judged("hold-unplaced.toml", src, 3);
    assert_eq!(r.counts.holds_unplaced, 1);
    assert_failure(&failures, "holds_unplaced = ");
}

/// An operator's clear must delete what it covers, not only hide it: a
/// store that keeps the rows (and so the text) of cleared posts is caught
/// by the records check, though no member reads them.
#[test]
fn a_clear_that_only_hides_is_caught() {
    let good = library_passes("chat-clear-and-replace.toml", 2);
    let c = good.chat.unwrap();
    assert!(c.cleared > 30, "cleared = {}", c.cleared);
    // Members away at the clear caught up across the cleared range.
    assert!(c.skipped > 0, "skipped = {}", c.skipped);
    assert_eq!((c.replaced, c.disabled, c.records_errors), (1, 1, 0));
    let comp = c.compliance.unwrap();
    for kind in ["room_cleared", "room_purged", "post_replaced"] {
        assert_eq!(
            comp.by_kind.get(kind),
            Some(&1),
            "{kind}: {:?}",
            comp.by_kind
        );
    }
    let (bad, failures) = library(
        "chat-clear-and-replace.toml",
        2,
        "chat_clear_hides_only = true",
    );
    let b = bad.chat.unwrap();
    assert_eq!(b.cleared, 0);
    // Each post surely cleared is counted twice: its row, and its text in
    // the store (those posted at the cut may or may not be covered).
    assert!(
        b.records_errors >= c.cleared,
        "{} {:?}",
        b.records_errors,
        b.examples.get("records")
    );
    assert_failure(&failures, "chat records errors = ");
}

/// A library scenario run as it is: it passes, and this is its result.
fn library_passes(file: &str, seed: u64) -> holdfast_sim::report::RunResult {
    let (result, failures) = library(file, seed, "");
    assert!(failures.is_empty(), "{failures:?}");
    result
}

/// A library scenario that passes with more than `least` of what `handled`
/// counts, while `sabotage` makes exactly those lost (and reported so): the
/// passing run's result.
fn sabotage_turns_into_loss(
    file: &str,
    seed: u64,
    sabotage: &str,
    handled: fn(&Counts) -> u64,
    least: u64,
) -> holdfast_sim::report::RunResult {
    let good = library_passes(file, seed);
    assert!(handled(&good.counts) > least, "{}", handled(&good.counts));
    let (bad, failures) = library(file, seed, sabotage);
    assert_eq!(handled(&bad.counts), 0);
    assert_eq!(bad.counts.lost, handled(&good.counts));
    assert_failure(&failures, "lost = ");
    good
}

/// The compliance checker's counts of a library scenario run with
/// `[sabotage]` lines added, and the run's failures.
fn compliance(file: &str, seed: u64, sabotage: &str) -> (ComplianceCounts, Vec<String>) {
    let (result, failures) = library(file, seed, sabotage);
    (result.chat.unwrap().compliance.unwrap(), failures)
}

/// A library scenario run as it is and with `[sabotage]` lines added.
fn library(
    file: &str,
    seed: u64,
    sabotage: &str,
) -> (holdfast_sim::report::RunResult, Vec<String>) {
    let mut src = library_source(file);
    if !sabotage.is_empty() {
        src.push_str(&format!("\n[sabotage]\n{sabotage}\n"));
    }
    run_judged(file, &src, seed)
}

/// Damage in the middle of a queue log, handled, loses at most what the
/// damaged batch held, and an operator event names it (`lost_reported`).
/// A store that mistakes the damage for a torn tail (the old behaviour)
/// cuts every batch after it without a word: the checker counts that as
/// silent loss (`lost`), not as reported.
#[test]
fn corruption_cut_as_a_torn_tail_is_silent_loss() {
    let good = library_passes("corrupt-queue.toml", 71);
    assert_eq!(good.counts.lost, 0);
    let (bad, failures) = library("corrupt-queue.toml", 71, "store_cut_silently = true");
    assert!(
        bad.counts.lost > 100,
        "lost = {}, lost_reported = {}",
        bad.counts.lost,
        bad.counts.lost_reported
    );
    assert_eq!(bad.counts.lost_reported, 0, "nothing reported it");
    assert_failure(&failures, "lost = ");
}

/// Without critical mode and with a full disk, a front end that answers
/// "accepted" for records it could not queue (the old behaviour) is seen
/// losing them; the same scenario, unsabotaged, tells those clients
/// "delivered, not archived" and loses nothing.
#[test]
fn accepting_what_could_not_be_queued_is_loss() {
    sabotage_turns_into_loss(
        "disk-full-no-critical.toml",
        29,
        "fe_accept_unqueued = true",
        |c| c.delivered_not_archived,
        50,
    );
}

/// Hostile clients against front ends with the old defects: one that
/// keys the archive by the client's id lets a reused id hide messages from
/// the archive, and one without a size limit takes oversize IMs. The
/// hostile checker reports both; unsabotaged, the library scenario passes.
#[test]
fn hostile_requests_against_the_old_front_end_are_caught() {
    let good = library_passes("hostile-clients.toml", 97);
    let h = good.hostile.expect("hostile counts");
    assert!(h.reused_accepted > 100 && h.refused > 100, "{h:?}");
    let (bad, failures) = library("hostile-clients.toml", 97, "fe_client_ids = true");
    let h = bad.hostile.expect("hostile counts");
    assert!(h.reused_unarchived > 100, "{h:?}");
    assert_failure(&failures, "hostile_reused_unarchived");
    hostile_ims_are_taken("fe_no_size_limit = true");
}

/// A front end that believes an IM's sender (the behaviour before client
/// identities) takes IMs sent as honest users by another user and by a
/// client with no principal: the hostile checker reports them taken.
#[test]
fn ims_sent_as_someone_else_are_caught() {
    hostile_ims_are_taken("fe_trust_sender = true");
}

/// Records the database refuses for good are parked and counted as such;
/// an archiver that deletes them as if archived (sabotaged) is seen losing
/// exactly those records.
#[test]
fn refused_records_dropped_instead_of_parked_are_loss() {
    let good = sabotage_turns_into_loss(
        "db-refuses-records.toml",
        41,
        "archiver_drop_refused = true",
        |c| c.parked,
        20,
    );
    assert_eq!(good.counts.lost, 0);
}

/// Group commit: a persist is appended at once and synced later with
/// others; what a core sends after it must wait for that sync. A host that
/// lets it leave at once (sabotaged) acknowledges writes a crash then
/// loses, and the checker sees the loss.
#[test]
fn acknowledgements_sent_before_their_sync_are_loss() {
    let good = library_passes("group-commit-crashes.toml", 23);
    assert!(good.counts.accepted > 10_000, "{}", good.counts.accepted);
    assert_eq!(good.counts.lost, 0);
    let (bad, failures) = library("group-commit-crashes.toml", 23, "send_before_sync = true");
    assert!(bad.counts.lost > 0, "lost = {}", bad.counts.lost);
    assert_failure(&failures, "lost = ");
}

/// Only an operator may end a critical-mode shutdown by hand: a front end
/// that ends it for any client that asks (sabotaged) is seen taking the
/// hostile users' requests.
#[test]
fn a_resume_asked_by_a_user_is_caught() {
    let good = library_passes("hostile-clients.toml", 97);
    assert_eq!(good.hostile.expect("hostile counts").accepted, 0);
    hostile_ims_are_taken("fe_resume_anyone = true");
}

/// The hostile clients' library scenario with `sabotage`: the front end
/// takes the hostile users' IMs, and the report says so.
fn hostile_ims_are_taken(sabotage: &str) {
    let (bad, failures) = library("hostile-clients.toml", 97, sabotage);
    let h = bad.hostile.expect("hostile counts");
    assert!(h.accepted > 100, "{h:?}");
    assert_failure(&failures, "hostile_accepted");
}

/// A front end that admits everything past its capacity (no busy answer:
/// no time bound, a queue bound nothing reaches) leaves most clients
/// without an answer; the overload scenario's checks see it.
#[test]
fn an_overloaded_front_end_without_busy_answers_fails_the_overload_scenario() {
    let (r, failures) = unanswered_with(
        "front-end-overload.toml",
        5,
        "admission_wait = \"50ms\"",
        "admission_wait = \"0ms\"\nadmission_queue = 1000000",
    );
    assert_eq!(r.counts.busy, 0);
    assert_failure(&failures, "busy = ");
    assert_failure(&failures, "accept latency p99");
}

/// Without a time bound (`admission_wait = 0`) the readers answer busy
/// only once the inbox is nearly full, and the front end admits requests
/// that waited seconds in it, past their clients' timeouts: the
/// inbox-full scenario's checks see it. (With no reader answers at all,
/// the host's transport test
/// `a_full_inbox_answers_client_ims_busy_and_keeps_reading` fails.)
#[test]
fn an_inbox_full_of_stale_requests_fails_the_inbox_full_scenario() {
    unanswered_with(
        "front-end-inbox-full.toml",
        11,
        "admission_wait = \"50ms\"",
        "admission_wait = \"0ms\"",
    );
}

/// The library scenario `file` run with `seed` and its setting `from`
/// changed to `to`: many clients get no answer, and the report says so.
/// The run's result and failures.
fn unanswered_with(
    file: &str,
    seed: u64,
    from: &str,
    to: &str,
) -> (holdfast_sim::report::RunResult, Vec<String>) {
    let src = library_source(file).replace(from, to);
    assert!(src.contains(to), "the setting moved");
    let (r, failures) = run_judged(file, &src, seed);
    assert!(r.counts.unknown > 1000, "unknown = {}", r.counts.unknown);
    assert_failure(&failures, "unknown = ");
    (r, failures)
}

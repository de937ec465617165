//! `holdfast bench`: archived IM/s and latency on a loopback cluster.

use super::common::Failure;
use holdfast::bench::BenchOptions;
use std::time::Duration;

/// The options of a bench run: the plain one, `--peer` and `--sweep`.
pub(crate) fn options(
    rate: f64,
    duration: Duration,
    links: String,
    size: usize,
    set: Vec<String>,
) -> BenchOptions {
    BenchOptions {
        rate,
        duration,
        links,
        body_size: size,
        settings: set.join("\n"),
        // Progress bars for a person at a terminal; pipes get the report only.
        progress: {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
        },
    }
}

pub(crate) fn run(
    rate: f64,
    duration: Duration,
    links: String,
    size: usize,
    set: Vec<String>,
    purge_rows: u64,
    json: bool,
) -> Result<(), Failure> {
    if links != "tls" && links != "plain" {
        return Err(format!("--links {links:?}: expected tls or plain").into());
    }
    let opts = options(rate, duration, links, size, set);
    if purge_rows > 0 {
        return purge(&opts, purge_rows, json);
    }
    let r = holdfast::bench::run(&opts)?;
    if json {
        crate::cli::common::print_pretty_json(&r)?;
    } else {
        println!(
            "offered {} IM/s for {} over {} links, {} byte bodies",
            r.offered_rate,
            humantime::format_duration(duration),
            r.links,
            size
        );
        println!(
            "sent {}: accepted {}, rejected {} (busy {}), no answer {}{}",
            r.sent,
            r.accepted,
            r.rejected,
            r.busy,
            r.unknown,
            crate::cli::common::not_sent_note(r.not_sent)
        );
        println!(
            "accepted: {:.0} IM/s; archived: {} = {:.0} IM/s end to end",
            r.accepted_per_s, r.archived, r.archived_per_s
        );
        let [a50, a99, amax] = r.accept_us;
        let [r50, r99, rmax] = r.archive_ms;
        println!("send -> accepted: p50 {a50} us, p99 {a99} us, max {amax} us");
        println!("send -> archived: p50 {r50} ms, p99 {r99} ms, max {rmax} ms");
    }
    match r.shortfall() {
        Some(why) => Err(Failure::NotWell(why)),
        None => Ok(()),
    }
}

/// `--purge-rows`: a table of the two windows, then one JSON line (only
/// the line with `--json`). A purge that did not delete exactly the
/// pre-filled rows, or a benchmark row gone, fails the command.
fn purge(opts: &holdfast::bench::BenchOptions, rows: u64, json: bool) -> Result<(), Failure> {
    let r = holdfast::bench::run_purge(opts, rows)?;
    let line = serde_json::to_string(&r).map_err(|e| e.to_string())?;
    if !json {
        println!(
            "offered {} IM/s for {} over {} links; archive pre-filled with {} old rows in {:.1} s",
            opts.rate,
            humantime::format_duration(opts.duration),
            opts.links,
            r.prefilled_rows,
            r.fill_s
        );
        println!(
            "{:<14} {:>11} {:>11} {:>12} {:>12} {:>14} {:>9}",
            "window",
            "accepted/s",
            "archived/s",
            "archived p50",
            "archived p99",
            "purge deleted",
            "purge s"
        );
        for (name, w, purge) in [
            ("without purge", &r.without_purge, None),
            (
                "with purge",
                &r.with_purge,
                Some((r.purge_deleted, r.purge_s)),
            ),
        ] {
            let [p50, p99, _] = w.archive_ms;
            println!(
                "{:<14} {:>11.0} {:>11.0} {:>9} ms {:>9} ms {:>14} {:>9}",
                name,
                w.accepted_per_s,
                w.archived_per_s,
                p50,
                p99,
                purge.map_or("-".into(), |(d, _)| d.to_string()),
                purge.map_or("-".into(), |(_, s)| format!("{s:.1}")),
            );
        }
        println!(
            "after: {} rows; {} of {} accepted benchmark rows kept; node counts {}",
            r.rows_after,
            r.benchmark_rows_kept,
            r.benchmark_rows_accepted,
            r.reported_rows.map_or("-".into(), |n| n.to_string())
        );
        if r.verified {
            println!("verified: the purge deleted exactly the pre-filled rows and kept every benchmark row");
        } else {
            println!("NOT verified: {}", r.problems.join("; "));
        }
    }
    println!("{line}");
    if r.verified {
        Ok(())
    } else {
        Err(Failure::NotWell(r.problems.join("; ")))
    }
}

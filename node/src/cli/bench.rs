//! `holdfast bench`: archived IM/s and latency on a loopback cluster.

use super::common::Failure;
use std::time::Duration;

pub(crate) fn run(
    rate: f64,
    duration: Duration,
    links: String,
    size: usize,
    set: Vec<String>,
    json: bool,
) -> Result<(), Failure> {
    if links != "tls" && links != "plain" {
        return Err(format!("--links {links:?}: expected tls or plain").into());
    }
    let opts = holdfast::bench::BenchOptions {
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
    };
    let r = holdfast::bench::run(&opts)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "offered {} IM/s for {} over {} links, {} byte bodies",
            r.offered_rate,
            humantime::format_duration(duration),
            r.links,
            size
        );
        println!(
            "sent {}: accepted {}, rejected {} (busy {}), no answer {}",
            r.sent, r.accepted, r.rejected, r.busy, r.unknown
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
    Ok(())
}

//! `holdfast bench --peer SYSTEM`: holdfast, then the peer pipeline with
//! the same rate, body size and duration, reported side by side.

use super::common::Failure;
use holdfast::bench::{BenchOptions, BenchReport};
use holdfast::bench_peer::{Peer, PeerReport, HOLDFAST_DURABILITY};

pub(crate) fn run(peer: &str, opts: BenchOptions, json: bool) -> Result<(), Failure> {
    let peer = Peer::parse(peer)?;
    if opts.links != "tls" && opts.links != "plain" {
        return Err(format!("--links {:?}: expected tls or plain", opts.links).into());
    }
    if opts.progress {
        eprintln!(
            "holdfast: {} IM/s for {}",
            opts.rate,
            humantime::format_duration(opts.duration)
        );
    }
    let h = holdfast::bench::run(&opts)?;
    if opts.progress {
        eprintln!("{}: the same workload", peer.name());
    }
    let p = holdfast::bench_peer::run(peer, &opts)?;
    let ratio = if h.archived_per_s > 0.0 {
        p.archived_per_s / h.archived_per_s
    } else {
        0.0
    };
    if !json {
        table(&opts, &h, &p, ratio);
    }
    let line = serde_json::json!({
        "holdfast": { "durability": HOLDFAST_DURABILITY, "report": h },
        "peer": p,
        "archived_ratio_peer_to_holdfast": ratio,
    });
    println!("{line}");
    Ok(())
}

fn table(opts: &BenchOptions, h: &BenchReport, p: &PeerReport, ratio: f64) {
    println!(
        "offered {} IM/s for {}, {} byte bodies; holdfast over {} links, {} on loopback",
        opts.rate,
        humantime::format_duration(opts.duration),
        opts.body_size,
        h.links,
        p.peer
    );
    println!(
        "{:<9} {:>8} {:>10} {:>9} {:>9} {:>11} {:>9} {:>11} {:>22} {:>22}",
        "system",
        "sent",
        "accepted",
        "refused",
        "no answer",
        "accepted/s",
        "archived",
        "archived/s",
        "accepted p50/p99 (ms)",
        "archived p50/p99 (ms)"
    );
    // One row a system: its name; sent, accepted, refused, no answer;
    // accepted/s, archived, archived/s; accept µs and archive ms.
    let row = |system: &str,
               [sent, accepted, refused, unknown]: [u64; 4],
               (accepted_per_s, archived, archived_per_s): (f64, u64, f64),
               accept_us: [u64; 3],
               archive_ms: [u64; 3]| {
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "{:<9} {:>8} {:>10} {:>9} {:>9} {:>11.0} {:>9} {:>11.0} {:>22} {:>22}",
            system,
            sent,
            accepted,
            refused,
            unknown,
            accepted_per_s,
            archived,
            archived_per_s,
            format!("{:.1} / {:.1}", ms(accept_us[0]), ms(accept_us[1])),
            format!("{} / {}", archive_ms[0], archive_ms[1])
        );
    };
    row(
        "holdfast",
        [h.sent, h.accepted, h.rejected, h.unknown],
        (h.accepted_per_s, h.archived, h.archived_per_s),
        h.accept_us,
        h.archive_ms,
    );
    row(
        &p.peer,
        [p.sent, p.confirmed, p.nacked, p.unknown],
        (p.confirmed_per_s, p.archived, p.archived_per_s),
        p.confirm_us,
        p.archive_ms,
    );
    println!("(holdfast: accepted = answered accepted, refused = answered busy or refused;");
    println!(
        " {}: accepted = publish confirmed, refused = nacked; latencies from when each IM was due)",
        p.peer
    );
    println!("archived rate {} / holdfast: {ratio:.2}", p.peer);
    println!("durability:");
    println!("  holdfast: {HOLDFAST_DURABILITY}");
    println!("  {}: {}", p.peer, p.durability);
}

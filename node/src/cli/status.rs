//! `holdfast status`: per front end, queue depth, quota use, link health
//! and critical mode.

use super::common::Failure;
use holdfast::config::Config;
use std::time::Duration;

pub(crate) fn run(config: &Config) -> Result<(), Failure> {
    println!(
        "{:<10} {:>8} {:>12} {:>7} {:<10} {:<10} {:>10}",
        "front end", "depth", "bytes", "quota%", "link", "critical", "dead-letter"
    );
    let mut unreachable = 0;
    let mut not_well = 0;
    for fe in config.front_ends() {
        let Some(addr) = fe.metrics else {
            println!("{:<10} (no metrics address in the config)", fe.name);
            continue;
        };
        let text = match ureq::get(&format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(3))
            .call()
        {
            Ok(r) => r.into_string().map_err(|e| e.to_string())?,
            Err(e) => {
                println!("{:<10} unreachable ({e})", fe.name);
                unreachable += 1;
                continue;
            }
        };
        let samples = holdfast::metrics::parse(&text);
        let get = |name: &str| {
            samples
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, v)| *v as u64)
        };
        let bytes = get("holdfast_outgoing_bytes").unwrap_or(0);
        let quota = get("holdfast_queue_quota_bytes").unwrap_or(0).max(1);
        if get("holdfast_link_failing") == Some(1) || get("holdfast_critical_shutdown") == Some(1) {
            not_well += 1;
        }
        println!(
            "{:<10} {:>8} {:>12} {:>6}% {:<10} {:<10} {:>10}",
            fe.name,
            get("holdfast_outgoing_depth").unwrap_or(0),
            bytes,
            bytes * 100 / quota,
            if get("holdfast_link_failing") == Some(1) {
                "FAILING"
            } else {
                "healthy"
            },
            if get("holdfast_critical_shutdown") == Some(1) {
                "SHUT DOWN"
            } else {
                "accepting"
            },
            get("holdfast_dead_letter_depth").unwrap_or(0),
        );
    }
    if unreachable > 0 {
        return Err(Failure::Error(format!(
            "{unreachable} front ends unreachable"
        )));
    }
    if not_well > 0 {
        return Err(Failure::NotWell(format!(
            "{not_well} front ends with a failing link or shut down"
        )));
    }
    Ok(())
}

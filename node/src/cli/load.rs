//! `holdfast load`: IM traffic at a fixed rate, and its outcome.

use super::common::{load_config, runtime, ConfigArg, Failure};
use holdfast::client::{self, Client};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn run(
    config: ConfigArg,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    size: usize,
    outcomes: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let config = Arc::new(load_config(&config)?);
    // A progress bar for a person at a terminal; pipes and logs get
    // only the report.
    use std::io::IsTerminal;
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| client::load_bar(rate, duration));
    let (report, all, unreachable) = runtime()?.block_on(async {
        let c = Arc::new(Client::new(config)?);
        let watch = tokio::spawn(say_unreachable(c.clone(), progress.clone()));
        let (report, all) =
            client::load_showing(c.clone(), rate, duration, timeout, size, progress).await?;
        watch.abort();
        Ok::<_, Failure>((report, all, c.unreachable_front_ends()))
    })?;
    if let Some(path) = outcomes {
        let mut text = String::new();
        for s in &all {
            text.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if json {
        crate::cli::common::print_pretty_json(&report)?;
    } else {
        println!(
            "sent {} in {:.1} s: accepted {}, rejected {} (busy {}), no answer {}{}, delivered not archived {}",
            report.sent,
            report.seconds,
            report.accepted,
            report.rejected,
            report.busy,
            report.unknown,
            crate::cli::common::not_sent_note(report.not_sent),
            report.delivered_not_archived
        );
        let [p50, p90, p99, max] = report.accept_us;
        println!("accept latency: p50 {p50} us, p90 {p90} us, p99 {p99} us, max {max} us");
        for (reason, n) in &report.reasons {
            println!("  rejected {n}: {reason}");
        }
    }
    if report.accepted < report.sent {
        // Front ends that could not be reached, by address.
        let why: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
        return Err(Failure::NotWell(format!(
            "{} of {} IMs not accepted{}",
            report.sent - report.accepted,
            report.sent,
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        )));
    }
    Ok(())
}

/// Says on stderr, as soon as it happens, that a front end cannot be
/// reached (`connection refused: 127.0.0.1:8101 (fe1)`): its IMs get no
/// answer while the load goes on to the others.
async fn say_unreachable(c: Arc<Client>, progress: Option<indicatif::ProgressBar>) {
    let mut said = std::collections::BTreeSet::new();
    loop {
        for e in c.unreachable_front_ends() {
            let line = e.to_string();
            if said.insert(line.clone()) {
                let line = format!("cannot reach a front end: {line}; its IMs get no answer");
                match &progress {
                    Some(p) => p.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! `[expect]`: what must hold after the run, with the defaults that make
//! loss, duplicates and phantoms errors unless the file allows them.

use super::error::{Ctx, ScenarioError};
use super::model::{Expect, Topology, GAUGES};
use super::raw::RawExpect;

/// `expect.gauge_min`: `(node, gauge, least maximum)`.
pub(super) fn gauge_min(
    cx: &Ctx,
    e: &RawExpect,
    topology: &Topology,
) -> Result<Vec<(String, String, u64)>, ScenarioError> {
    let mut gauge_min = Vec::new();
    for (key, min) in &e.gauge_min {
        let bad = |m: String| cx.err(&min.span(), &format!("expect.gauge_min.{key}"), m);
        let (node, gauge) = key
            .split_once('.')
            .ok_or_else(|| bad("expected a key like \"fe1.outgoing_depth\"".into()))?;
        if !topology.has(node) {
            return Err(bad(format!("unknown node {node:?}")));
        }
        if !GAUGES.contains(&gauge) {
            return Err(bad(format!(
                "unknown gauge {gauge:?}; known: {}",
                GAUGES.join(", ")
            )));
        }
        gauge_min.push((node.to_string(), gauge.to_string(), *min.get_ref()));
    }
    Ok(gauge_min)
}

/// The rest of `[expect]`; `chat`: whether the scenario has a chat workload.
pub(super) fn expect(
    cx: &Ctx,
    e: &RawExpect,
    gauge_min: Vec<(String, String, u64)>,
    chat: bool,
) -> Result<Expect, ScenarioError> {
    Ok(Expect {
        compliance_exported_min: e.compliance_exported_min,
        gauge_min,
        critical_shutdown_within_ms: cx.opt_dur(
            &e.critical_shutdown_within,
            "expect.critical_shutdown_within",
        )?,
        critical_shutdowns: e.critical_shutdowns,
        shutdowns_end_by_ms: cx.opt_dur(&e.shutdowns_end_by, "expect.shutdowns_end_by")?,
        no_accept_while_shut_down: e.no_accept_while_shut_down,
        events_order: cx.events(&e.events_order, "expect.events_order")?,
        // With a chat workload, nothing accepted may be lost or missed
        // unless the file says otherwise.
        chat_lost: e.chat_lost.or(chat.then_some(0)),
        chat_missed: exact_unless_min(e.chat_missed, e.chat_missed_min, chat.then_some(0)),
        chat_missed_min: e.chat_missed_min,
        chat_accepted_min: e.chat_accepted_min,
        chat_busy_min: e.chat_busy_min,
        chat_reconnects_min: e.chat_reconnects_min,
        purged_min: e.purged_min,
        held_min: e.held_min,
        chat_post_retries_min: e.chat_post_retries_min,
        chat_refused_joins_min: e.chat_refused_joins_min,
        lost: exact_unless_min(e.lost, e.lost_min, Some(0)),
        lost_min: e.lost_min,
        lost_reported_max: Some(e.lost_reported_max.unwrap_or(0)),
        parked_max: Some(e.parked_max.unwrap_or(0)),
        parked_min: e.parked_min,
        duplicates: Some(e.duplicates.unwrap_or(0)),
        phantoms: Some(e.phantoms.unwrap_or(0)),
        accepted_min: e.accepted_min,
        rejected_min: e.rejected_min,
        unknown_max: e.unknown_max,
        busy_min: e.busy_min,
        busy_max: e.busy_max,
        pending_min: e.pending_min,
        qoe_dropped_min: e.qoe_dropped_min,
        delivered_not_archived: exact_unless_min(
            e.delivered_not_archived,
            e.delivered_not_archived_min,
            Some(0),
        ),
        delivered_not_archived_min: e.delivered_not_archived_min,
        accept_p99_max_ms: cx.opt_dur(&e.accept_p99_max, "expect.accept_p99_max")?,
        drained_by_ms: cx.opt_dur(&e.drained_by, "expect.drained_by")?,
        events_include: cx.events(&e.events_include, "expect.events_include")?,
    })
}

/// A count's exact expectation: as the file gives it, or `default` when
/// the file gives neither it nor a minimum (a minimum alone leaves the
/// count free above it).
fn exact_unless_min(exact: Option<u64>, min: Option<u64>, default: Option<u64>) -> Option<u64> {
    if min.is_some() {
        exact
    } else {
        exact.or(default)
    }
}

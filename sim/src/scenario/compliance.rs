//! `[compliance]`: how the Compliance service exports.

use super::error::{Ctx, ScenarioError};
use super::model::Topology;
use super::raw::RawCompliance;
use holdfast_actors::compliance::export::ExportFormat;
use holdfast_actors::compliance::service::ComplianceConfig;

/// `compliance.pickup`: how often the simulated pickup system takes and
/// acknowledges batches (none without it).
pub(super) fn pickup(cx: &Ctx, raw: Option<&RawCompliance>) -> Result<Option<u64>, ScenarioError> {
    let Some(p) = raw.and_then(|c| c.pickup.as_ref()) else {
        return Ok(None);
    };
    let ms = cx.dur(p, "compliance.pickup")?;
    if ms < 1_000 {
        return Err(cx.err(&p.span(), "compliance.pickup", "at least 1s"));
    }
    Ok(Some(ms))
}

pub(super) fn export(
    cx: &Ctx,
    raw: Option<&RawCompliance>,
    topology: &Topology,
) -> Result<ComplianceConfig, ScenarioError> {
    let mut export = ComplianceConfig::default();
    if let Some(c) = raw {
        if topology.compliance.is_none() {
            return Err(cx.err(
                &(0..0),
                "compliance",
                "a [compliance] table needs topology.compliance = true",
            ));
        }
        if let Some(f) = &c.format {
            export.format = ExportFormat::parse(f.get_ref())
                .ok_or_else(|| cx.err(&f.span(), "compliance.format", "one of xml, jsonl, csv"))?;
        }
        export.rooms = c.rooms.clone();
        export.users = c.users.clone();
    }
    Ok(export)
}

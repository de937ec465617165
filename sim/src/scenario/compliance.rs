//! `[compliance]`: how the Compliance service exports.

use super::error::{Ctx, ScenarioError};
use super::model::Topology;
use super::raw::RawCompliance;
use holdfast_actors::compliance::export::ExportFormat;
use holdfast_actors::compliance::service::ComplianceConfig;

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

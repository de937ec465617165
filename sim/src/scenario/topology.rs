//! `[topology]`: the nodes of the cluster and their disks.

use super::error::{Ctx, ScenarioError};
use super::model::{node_names, Topology, CHAT_STORE_NODE, COMPLIANCE_NODE};
use super::raw::RawTopology;
use holdfast_actors::core::units;
use std::collections::BTreeMap;

pub(super) fn topology(cx: &Ctx, t: &RawTopology) -> Result<Topology, ScenarioError> {
    let mut topology = Topology {
        front_ends: node_names("fe", cx.count(&t.front_ends, "topology.front_ends", 1)?),
        archivers: node_names("arch", cx.count(&t.archivers, "topology.archivers", 1)?),
        databases: node_names("db", cx.count(&t.databases, "topology.databases", 1)?),
        disk_size: match &t.disk_size {
            Some(s) => units::parse_size(s.get_ref())
                .map_err(|m| cx.err(&s.span(), "topology.disk_size", m.to_string()))?,
            None => 16 << 30,
        },
        disk_sizes: BTreeMap::new(),
        fsync_ms: cx.opt_dur(&t.fsync, "topology.fsync")?.unwrap_or(1),
        group_commit: t.group_commit.as_ref().is_some_and(|g| *g.get_ref()),
        channels: node_names("ch", cx.count(&t.channels, "topology.channels", 0)?),
        lookups: node_names("lookup", cx.count(&t.lookups, "topology.lookups", 0)?),
        chat_store: None,
        web: node_names("web", cx.count(&t.web, "topology.web", 0)?),
        compliance: None,
    };
    if !topology.channels.is_empty() {
        if topology.lookups.is_empty() {
            return Err(cx.err(
                &t.channels.span(),
                "topology.lookups",
                "Channel servers need at least one Lookup instance",
            ));
        }
        topology.chat_store = Some(CHAT_STORE_NODE.to_string());
    }
    if let Some(c) = t.compliance.as_ref().filter(|c| *c.get_ref()) {
        if topology.channels.is_empty() {
            return Err(cx.err(
                &c.span(),
                "topology.compliance",
                "the Compliance service serves group chat: set topology.channels too",
            ));
        }
        topology.compliance = Some(COMPLIANCE_NODE.to_string());
    }
    if !topology.web.is_empty() && topology.channels.is_empty() {
        return Err(cx.err(
            &t.web.span(),
            "topology.web",
            "a Web service serves group chat: set topology.channels too",
        ));
    }
    if topology.channels.len() > 16 || topology.lookups.len() > 8 || topology.web.len() > 8 {
        return Err(cx.err(
            &t.channels.span(),
            "topology.channels",
            "at most 16 Channel servers and 8 Lookup instances",
        ));
    }
    for (node, size) in &t.disk_sizes {
        let key = format!("topology.disk_sizes.{node}");
        if !topology.has(node) {
            return Err(cx.err(
                &size.span(),
                &key,
                format!(
                    "unknown node {node:?}; this topology has {}",
                    topology.servers().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let bytes = units::parse_size(size.get_ref())
            .map_err(|m| cx.err(&size.span(), &key, m.to_string()))?;
        topology.disk_sizes.insert(node.clone(), bytes);
    }
    if topology.front_ends.len() > 64
        || topology.archivers.len() > 16
        || topology.databases.len() > 16
    {
        return Err(cx.err(
            &(0..0),
            "topology",
            "at most 64 front ends, 16 archivers and 16 databases",
        ));
    }
    Ok(topology)
}

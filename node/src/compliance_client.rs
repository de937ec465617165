//! `holdfast compliance status|run-now|ack`: asks the Compliance service
//! for its status (staged events, last batch and run, last error, batches
//! waiting for pickup), to export now, or to take a batch as picked up.

use crate::config::Config;
use crate::operator_client::{self, AskError};
use holdfast_actors::core::identity::Role;
use holdfast_actors::core::ids::ActorKind;
use holdfast_actors::core::protocol::compliance::ComplianceMsg;
use holdfast_actors::core::protocol::compliance::ComplianceStatus;
use holdfast_actors::core::protocol::Msg;
use std::time::Duration;

/// Sends `request` (`ComplianceStatusQuery`, `ComplianceRunNow` or
/// `ComplianceAck`) to the config's Compliance node as `user` (an
/// operator, or for the status and an acknowledgement an auditor) and
/// returns its report. Inside a runtime.
pub async fn ask(
    config: &Config,
    user: &str,
    request: Msg,
    timeout: Duration,
) -> Result<ComplianceStatus, AskError> {
    let node = config
        .pool
        .compliance
        .clone()
        .ok_or(AskError::NoComplianceNode)?;
    let roles: &[Role] = match request {
        Msg::Compliance(ComplianceMsg::ComplianceRunNow) => &[Role::Operator],
        _ => &[Role::Operator, Role::Auditor],
    };
    let target = (node.as_str(), ActorKind::Compliance);
    let is_report = |m: &Msg| {
        matches!(
            m,
            Msg::Compliance(ComplianceMsg::ComplianceReport(_))
                | Msg::Compliance(ComplianceMsg::ComplianceAckRefused { .. })
        )
    };
    match operator_client::ask(config, user, roles, target, request, timeout, is_report).await? {
        Msg::Compliance(ComplianceMsg::ComplianceReport(status)) => Ok(status),
        Msg::Compliance(ComplianceMsg::ComplianceAckRefused { reason, .. }) => {
            Err(AskError::Refused { node, reason })
        }
        _ => unreachable!("only a report is wanted"),
    }
}

//! The operator events the nodes raise during a run, as the host records
//! them for the oracle and the report.

use holdfast_actors::core::ids::Millis;
use holdfast_actors::core::operator::OperatorEvent;

/// An operator event raised by an actor during the run.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRecord {
    pub at: Millis,
    pub node: String,
    pub kind: OperatorEvent,
    pub detail: String,
}

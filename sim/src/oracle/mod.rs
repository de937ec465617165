//! What must hold after a run, checked against what the clients recorded
//! and what the stores hold: the IM checker, the chat and compliance
//! checkers, critical-mode accounting and recovery figures.

pub mod chat_checker;
pub mod chat_log;
pub mod checker;
pub mod compliance_checker;
pub mod critical;
pub mod events;
pub mod holds;
pub mod recovery;

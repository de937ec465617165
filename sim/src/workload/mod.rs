//! The simulated clients: honest IM, CDR and QoE traffic, group chat and
//! file users, hostile clients, and an auditor placing legal holds. Each
//! records what it was told for the oracle.

pub mod auditor;
pub mod chat;
pub mod hostile;
pub mod im;
pub mod pickup;

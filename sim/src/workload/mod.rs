//! The simulated clients: honest IM, CDR and QoE traffic, group chat and
//! file users, and hostile clients. Each records what it was told for the
//! oracle.

pub mod chat;
pub mod hostile;
pub mod im;
pub mod pickup;

//! Compliance: the outbox the chat cores embed and the Compliance
//! [`service`] that exports what they record, in the formats of
//! [`export`]. Depends only on [`crate::core`].

pub mod export;
pub mod service;

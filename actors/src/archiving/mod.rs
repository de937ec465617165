//! The archiving path, in the order a message travels it:
//! [`front_end`] (archiving agent) → [`outgoing_queue`] (durable, on the
//! front end) → [`destination_queue`] (durable, on the archiving server) →
//! [`archiver`] → [`database`], whose rows [`retention`] purges past the
//! retention window.

pub mod archiver;
pub mod database;
pub mod destination_queue;
pub mod front_end;
pub mod outgoing_queue;
pub mod retention;

//! A sleep that enters madsim's timer heap once per deadline.
//!
//! madsim's `Sleep` adds a new entry (a boxed callback) to the runtime's
//! timer heap every time it is polled while pending, and never removes
//! one. An event loop that `select!`s over a message channel and a sleep
//! polls the sleep on every message, so the heap grew by one entry per
//! message per sleep, and popping those dead entries was a tenth of the
//! simulator's time. An `Alarm` polls its sleep only when the deadline
//! changes; an entry left behind by an earlier deadline only wakes the
//! task once, harmlessly.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use tokio::time::{Instant, Sleep};

pub struct Alarm {
    sleep: Pin<Box<Sleep>>,
    /// The deadline whose timer entry is in the heap, if any.
    armed: Option<Instant>,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

impl Alarm {
    pub fn new() -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Completes at `deadline` (at once if it has passed). Cancel-safe:
    /// dropping the future before then leaves the entry armed, and a later
    /// call with the same deadline does not add another.
    pub fn until(&mut self, deadline: Instant) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            if self.armed != Some(deadline) {
                self.sleep.as_mut().reset(deadline);
                // Pending (the deadline is ahead): this poll registers the
                // task's waker for the deadline.
                if self.sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                self.armed = Some(deadline);
            }
            Poll::Pending
        })
    }
}

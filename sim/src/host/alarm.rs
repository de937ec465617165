//! A sleep for event loops that `select!` over an inbox and a deadline.
//!
//! Two properties of madsim's `Sleep` make a fresh `sleep_until` in such a
//! loop wrong:
//!
//! * `sleep_until` waits at least 1 ms, even for a deadline already past.
//!   A loop that builds a new sleep on every turn therefore never sees a
//!   due timer while its inbox has a message waiting: on a saturated node
//!   every timer (database timeouts, expiry checks, gauge samples) starved
//!   until the inbox emptied, in one scenario for 20 simulated minutes
//!   (`sim/tests/sim_host.rs`).
//! * `Sleep` adds an entry (a boxed callback) to the runtime's timer heap
//!   every time it is polled while pending, and never removes one: a loop
//!   that polls its sleep on every message left a dead entry per message,
//!   and popping them was a tenth of the simulator's time.
//!
//! An `Alarm` is ready as soon as its deadline has passed, and polls its
//! sleep only when the deadline changes; an entry left by an earlier
//! deadline only wakes the task once, harmlessly.

use madsim::time::TimeHandle;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use tokio::time::{Instant, Sleep};

pub struct Alarm {
    sleep: Pin<Box<Sleep>>,
    /// The deadline whose timer entry is in the heap, if any.
    armed: Option<Instant>,
    /// The simulation's clock, read on every poll: held, since
    /// `Instant::now` looks it up through madsim's `clock_gettime` shim.
    clock: TimeHandle,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm::new()
    }
}

impl Alarm {
    pub fn new() -> Alarm {
        let clock = TimeHandle::current();
        Alarm {
            sleep: Box::pin(tokio::time::sleep_until(clock.now_instant())),
            armed: None,
            clock,
        }
    }

    /// Completes at `deadline` (at once if it has passed). Cancel-safe:
    /// dropping the future before then leaves the entry armed, and a later
    /// call with the same deadline does not add another.
    pub fn until(&mut self, deadline: Instant) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.clock.now_instant() >= deadline {
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

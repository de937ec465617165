//! Host plumbing shared by the simulator and production nodes.
//!
//! Written against `madsim-tokio` (imported as `tokio`): in a normal build it
//! is real tokio on real sockets; under `--cfg madsim` the same code runs on
//! madsim's simulated TCP and clock.

pub mod disk;
pub mod liveness;
pub mod store;
pub mod transport;

/// Locks shared state. A poisoned lock only means another thread panicked
/// between calls; the data is consistent, so it is used rather than
/// panicking a second time.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

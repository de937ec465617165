//! The simulator's own resource use, for its reports (`run`, `bench`):
//! CPU seconds and peak memory from `getrusage`. Process plumbing read
//! outside the simulated runtime: nothing a run simulates depends on it.

/// CPU time (user + system) and peak resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_secs: f64,
    /// Maximum resident set size, in bytes.
    pub max_rss: u64,
}

/// Linux's `RUSAGE_THREAD` (the `libc` crate defines it for some targets
/// only).
#[cfg(target_os = "linux")]
const RUSAGE_THREAD: libc::c_int = 1;

fn rusage(who: libc::c_int) -> Usage {
    // SAFETY: `getrusage` writes a whole `rusage` into the zeroed one it is
    // given and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Usage::default();
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu_secs: secs(ru.ru_utime) + secs(ru.ru_stime),
        // Kilobytes on Linux.
        max_rss: (ru.ru_maxrss as u64).saturating_mul(1024),
    }
}

/// The whole process: every thread's CPU time, and the process's peak
/// memory so far.
pub fn process() -> Usage {
    rusage(libc::RUSAGE_SELF)
}

/// The calling thread's CPU time (and the process's peak memory: Linux
/// keeps no per-thread figure). Elsewhere, the whole process's.
pub fn thread() -> Usage {
    #[cfg(target_os = "linux")]
    {
        rusage(RUSAGE_THREAD)
    }
    #[cfg(not(target_os = "linux"))]
    {
        process()
    }
}

/// `bytes` in MB (10^6), as `/usr/bin/time` users read them (it prints
/// kilobytes).
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

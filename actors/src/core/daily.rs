//! Daily jobs at an hour of the day (UTC), such as the retention purges:
//! when the next one is due, and whether one was missed.

use crate::core::ids::Millis;

pub const HOUR: Millis = 3_600_000;
pub const DAY: Millis = 24 * HOUR;

/// The first time strictly after `now` at `hour` (milliseconds after
/// midnight UTC).
pub fn next_at(now: Millis, hour: Millis) -> Millis {
    let today = now - now % DAY + hour;
    if today <= now {
        today + DAY
    } else {
        today
    }
}

/// The last time at or before `now` at `hour`, if one has passed since
/// time 0.
pub fn last_at(now: Millis, hour: Millis) -> Option<Millis> {
    let today = now - now % DAY + hour;
    if today <= now {
        Some(today)
    } else {
        today.checked_sub(DAY)
    }
}

/// The job due at `hour` that a node down over it missed: the last such
/// time at or before `now`, when the last run began before it.
pub fn missed(last_began: Millis, now: Millis, hour: Millis) -> Option<Millis> {
    last_at(now, hour).filter(|due| last_began < *due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_and_last_hours() {
        let two = 2 * HOUR;
        assert_eq!(next_at(0, two), two);
        assert_eq!(next_at(two, two), DAY + two, "strictly after now");
        assert_eq!(next_at(3 * HOUR, two), DAY + two);
        assert_eq!(last_at(HOUR, two), None, "none before the first");
        assert_eq!(last_at(two, two), Some(two));
        assert_eq!(last_at(DAY + HOUR, two), Some(two));
        assert_eq!(last_at(DAY + two, two), Some(DAY + two));
    }

    #[test]
    fn a_run_is_missed_only_when_its_hour_passed_after_the_last_began() {
        let two = 2 * HOUR;
        // Began at day 1's hour; the node restarts at day 1 03:00: nothing
        // missed. Restarts at day 2 03:00: day 2's run was missed.
        assert_eq!(missed(DAY + two, DAY + 3 * HOUR, two), None);
        assert_eq!(
            missed(DAY + two, 2 * DAY + 3 * HOUR, two),
            Some(2 * DAY + two)
        );
        // An operator's run at 01:00 does not stand for the 02:00 one.
        assert_eq!(missed(DAY + HOUR, DAY + 3 * HOUR, two), Some(DAY + two));
        // Before the first hour has come nothing can be missed.
        assert_eq!(missed(0, HOUR, two), None);
    }
}

//! The gateway's clocks: monotonic protocol time for the sans-IO core, and
//! the conversion of protocol times to wall-clock times for `wg show`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use causeway_wireguard::Time;

pub struct Clock {
    start: Instant,
    /// Nanoseconds added by `advance`: zero in a daemon.
    skew: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { start: Instant::now(), skew: AtomicU64::new(0) }
    }
}

impl Clock {
    pub fn now(&self) -> Time {
        Time::from_nanos(self.start.elapsed().as_nanos() as u64 + self.skew.load(Ordering::Relaxed))
    }

    /// Moves protocol time forward by `by`, as a host suspended that long
    /// would see it, so tests reach rekey and expiry times without
    /// waiting. Time never goes back.
    pub fn advance(&self, by: Duration) {
        self.skew.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The wall-clock time now, moved forward by `advance` like protocol
    /// time. Handshake initiations carry it as their TAI64N timestamp, which
    /// a peer requires to grow from one initiation to the next: a test that
    /// jumps past REKEY_AFTER_TIME must see the wall clock jump too, or a
    /// rekey within the timestamp's 16.8 ms granularity is refused as a
    /// replay.
    pub fn wall_now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.skew.load(Ordering::Relaxed))
    }

    /// The wall-clock time at which protocol time `t` was (or will be),
    /// counted back (or on) from the wall clock now: the wall clock may
    /// have been stepped since start (NTP after boot) or run on while the
    /// monotonic clock stood (suspend), and a handshake a second ago must
    /// read as a second ago.
    pub fn wall_time_of(&self, t: Time) -> SystemTime {
        wall_time_from(self.now(), self.wall_now(), t)
    }
}

/// The wall-clock time of protocol time `t`, given that protocol time `now`
/// is wall-clock time `wall`.
fn wall_time_from(now: Time, wall: SystemTime, t: Time) -> SystemTime {
    if t <= now {
        wall.checked_sub(now.saturating_since(t)).unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        wall + t.saturating_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_time_moves_forward_and_maps_to_wall_time() {
        let c = Clock::default();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = c.now();
        assert!(b > a);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(wall_time_from(b, at, a), at - b.saturating_since(a), "the past");
        assert_eq!(wall_time_from(a, at, b), at + b.saturating_since(a), "the future");
        // Counted from the wall clock now, not from when the clock was made.
        let then = c.wall_time_of(a);
        let now = SystemTime::now();
        assert!(then <= now && now.duration_since(then).unwrap() >= b.saturating_since(a));
        c.advance(std::time::Duration::from_secs(120));
        assert!(c.now().saturating_since(b) >= std::time::Duration::from_secs(120));
        assert!(c.wall_now() >= SystemTime::now() + std::time::Duration::from_secs(119));
    }
}

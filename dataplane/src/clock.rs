//! The gateway's clocks: monotonic protocol time for the sans-IO core, and
//! the conversion of protocol times to wall-clock times for `wg show`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use causeway_wireguard::Time;

pub struct Clock {
    start: Instant,
    start_wall: SystemTime,
    /// Nanoseconds added by `advance`: zero in a daemon.
    skew: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { start: Instant::now(), start_wall: SystemTime::now(), skew: AtomicU64::new(0) }
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

    /// The wall-clock time at which protocol time `t` was (or will be).
    pub fn wall_time_of(&self, t: Time) -> SystemTime {
        self.start_wall + std::time::Duration::from_nanos(t.as_nanos())
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
        let wall = c.wall_time_of(b).duration_since(c.wall_time_of(a)).unwrap();
        assert_eq!(wall, b.saturating_since(a));
        c.advance(std::time::Duration::from_secs(120));
        assert!(c.now().saturating_since(b) >= std::time::Duration::from_secs(120));
        assert!(c.wall_now() >= SystemTime::now() + std::time::Duration::from_secs(119));
    }
}

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
/// is wall-clock time `wall`. The offset between the two clocks is taken
/// to the whole second: read afresh each time, it would move by the
/// microseconds between the two clock reads, and a handshake time would
/// differ from one `wg show` or scrape to the next.
fn wall_time_from(now: Time, wall: SystemTime, t: Time) -> SystemTime {
    let at_zero =
        wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128 - now.as_nanos() as i128;
    let second = 1_000_000_000i128;
    let at_zero = (at_zero + second / 2).div_euclid(second) * second;
    let nanos = (at_zero + t.as_nanos() as i128).max(0);
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
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
        // Protocol time 2.5 s is wall time 1_800_000_000.3 s: time 0 is
        // 1_799_999_997.8, taken as 1_799_999_998.
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_300);
        let now = Time::ZERO + Duration::from_millis(2_500);
        let zero = SystemTime::UNIX_EPOCH + Duration::from_secs(1_799_999_998);
        assert_eq!(
            wall_time_from(now, at, Time::ZERO + Duration::from_millis(1_250)),
            zero + Duration::from_millis(1_250)
        );
        assert_eq!(wall_time_from(now, at, Time::ZERO + Duration::from_secs(9)), zero + Duration::from_secs(9));
        // Microseconds between the two clocks' reads change nothing.
        let later = (now + Duration::from_micros(1), at + Duration::from_micros(4));
        assert_eq!(wall_time_from(later.0, later.1, a), wall_time_from(now, at, a));
        // Counted from the wall clock now, not from when the clock was made.
        let then = c.wall_time_of(a);
        let expected = SystemTime::now() - c.now().saturating_since(a);
        let off = then.duration_since(expected).unwrap_or_else(|e| e.duration());
        assert!(off <= Duration::from_millis(501), "within the rounding: {off:?}");
        c.advance(std::time::Duration::from_secs(120));
        assert!(c.now().saturating_since(b) >= std::time::Duration::from_secs(120));
        assert!(c.wall_now() >= SystemTime::now() + std::time::Duration::from_secs(119));
    }
}

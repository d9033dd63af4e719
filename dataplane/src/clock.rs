//! The gateway's clocks: monotonic protocol time for the sans-IO core, and
//! the conversion of protocol times to wall-clock times for `wg show`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use causeway_wireguard::Time;

pub struct Clock {
    start: Instant,
    /// Nanoseconds added by `advance`: zero in a daemon.
    skew: AtomicU64,
    /// Wall-clock nanoseconds since the epoch at protocol time zero, as
    /// last taken (`NOT_TAKEN` before the first use): see `settle`.
    wall_at_zero: AtomicI64,
}

const NOT_TAKEN: i64 = i64::MIN;

/// How far the two clocks may move apart before the wall-clock time of
/// protocol time zero is taken again. Both run at the rate NTP slews them
/// to; they part only when the wall clock is stepped or the monotonic one
/// stood (suspend). The two reads of one conversion are microseconds
/// apart, far inside this.
const STEP: i128 = 50_000_000;

impl Default for Clock {
    fn default() -> Self {
        Clock { start: Instant::now(), skew: AtomicU64::new(0), wall_at_zero: AtomicI64::new(NOT_TAKEN) }
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

    /// The wall-clock time at which protocol time `t` was, counted back
    /// from the wall clock now: the wall clock may have been stepped since
    /// start (NTP after boot) or run on while the monotonic clock stood
    /// (suspend), and a handshake a second ago must read as a second ago.
    /// A time already past never reads as later than the wall clock now
    /// (a monitor computing its age must not get a negative one).
    pub fn wall_time_of(&self, t: Time) -> SystemTime {
        let (now, wall) = (self.now(), nanos_since_epoch(self.wall_now()));
        let kept = Some(self.wall_at_zero.load(Ordering::Relaxed)).filter(|k| *k != NOT_TAKEN).map(i128::from);
        let at_zero = settle(kept, wall - now.as_nanos() as i128);
        if kept != Some(at_zero) {
            // Past the year 2262 it is not kept, only used.
            if let Ok(v) = i64::try_from(at_zero) {
                self.wall_at_zero.store(v, Ordering::Relaxed);
            }
        }
        wall_time_from(at_zero, now, wall, t)
    }
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// The wall-clock time of protocol time zero to convert with: the one
/// kept while the clocks agree with it (`STEP`), else the one just read.
/// Read afresh each time, it would move by the microseconds between the
/// two clock reads, and a handshake time would differ from one `wg show`
/// or scrape to the next; rounded to a stable value instead, it would be
/// off by up to half a second, sometimes into the future.
fn settle(kept: Option<i128>, fresh: i128) -> i128 {
    match kept {
        Some(k) if (fresh - k).abs() <= STEP => k,
        _ => fresh,
    }
}

/// The wall-clock time of protocol time `t`, protocol time zero being
/// `at_zero` (wall-clock nanoseconds) and protocol time `now` wall-clock
/// nanoseconds `wall`: no later than `wall` for a `t` already past.
fn wall_time_from(at_zero: i128, now: Time, wall: i128, t: Time) -> SystemTime {
    let mut nanos = (at_zero + t.as_nanos() as i128).max(0);
    if t <= now {
        nanos = nanos.min(wall.max(0));
    }
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
        // 1_799_999_997.8, to the nanosecond (it was rounded to the second,
        // which could put a handshake up to half a second in the future).
        let s = 1_000_000_000i128;
        let wall = 1_800_000_000 * s + 300_000_000;
        let now = Time::ZERO + Duration::from_millis(2_500);
        let at_zero = settle(None, wall - 2_500_000_000);
        assert_eq!(at_zero, 1_799_999_997 * s + 800_000_000);
        let epoch = SystemTime::UNIX_EPOCH;
        let of = |t: Time| wall_time_from(at_zero, now, wall, t);
        assert_eq!(
            of(Time::ZERO + Duration::from_millis(1_250)),
            epoch + Duration::from_nanos(1_799_999_999_050_000_000)
        );
        assert_eq!(of(now), epoch + Duration::from_nanos(1_800_000_000_300_000_000));
        // Microseconds between the two clocks' reads change nothing; a step
        // of the wall clock (or a suspend) is followed.
        assert_eq!(settle(Some(at_zero), at_zero + 3_000), at_zero);
        assert_eq!(settle(Some(at_zero), at_zero - 3_000), at_zero);
        assert_eq!(settle(Some(at_zero), at_zero + 2 * s), at_zero + 2 * s);
        // A past time never reads later than the wall clock now, even
        // with a kept offset a little ahead of the clocks.
        let late = wall_time_from(at_zero + 40_000_000, now, wall, now - Duration::from_millis(10));
        assert_eq!(late, epoch + Duration::from_nanos(1_800_000_000_300_000_000));
        // Counted from the wall clock now, not from when the clock was made.
        let then = c.wall_time_of(a);
        let expected = SystemTime::now() - c.now().saturating_since(a);
        let off = then.duration_since(expected).unwrap_or_else(|e| e.duration());
        assert!(off <= Duration::from_millis(5), "to the clocks' reads: {off:?}");
        assert!(then <= SystemTime::now(), "not in the future");
        assert_eq!(c.wall_time_of(a), then, "the same from one read to the next");
        c.advance(std::time::Duration::from_secs(120));
        assert!(c.now().saturating_since(b) >= std::time::Duration::from_secs(120));
        assert!(c.wall_now() >= SystemTime::now() + std::time::Duration::from_secs(119));
    }
}

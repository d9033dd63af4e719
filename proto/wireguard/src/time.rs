use std::ops::{Add, Sub};
use std::time::Duration;

/// Monotonic protocol time, supplied by the caller.
///
/// The origin is arbitrary (the gateway uses its start-up instant; tests use
/// zero) and only differences matter. It is a plain nanosecond count so that
/// timer hooks on the data path can store it in an `AtomicU64`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    pub const fn from_secs(secs: u64) -> Time {
        Time(secs * 1_000_000_000)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time(self.0.saturating_add(rhs.as_nanos().min(u64::MAX as u128) as u64))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, rhs: Duration) -> Time {
        Time(self.0.saturating_sub(rhs.as_nanos().min(u64::MAX as u128) as u64))
    }
}

impl From<Duration> for Time {
    fn from(d: Duration) -> Time {
        Time::ZERO + d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_secs(5);
        assert_eq!(t.saturating_since(Time::from_secs(7)), Duration::ZERO);
        assert_eq!(t.saturating_since(Time::from_secs(2)), Duration::from_secs(3));
        assert_eq!(Time::ZERO - Duration::from_secs(1), Time::ZERO);
        assert_eq!(t + Duration::from_millis(500), Time::from_nanos(5_500_000_000));
    }
}

//! The gateway's clocks: monotonic protocol time for the sans-IO core, and
//! the conversion of protocol times to wall-clock times for `wg show`.

use std::time::{Instant, SystemTime};

use causeway_wireguard::Time;

pub struct Clock {
    start: Instant,
    start_wall: SystemTime,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { start: Instant::now(), start_wall: SystemTime::now() }
    }
}

impl Clock {
    pub fn now(&self) -> Time {
        Time::from_nanos(self.start.elapsed().as_nanos() as u64)
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
    }
}

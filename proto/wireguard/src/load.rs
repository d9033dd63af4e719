//! The responder's "under load" signal (whitepaper section 5.3).
//!
//! The kernel decides load from the depth of its handshake queue; a sans-IO
//! core has no queue, so it counts MAC1-valid handshake messages per second
//! instead, and stays under load for one second after the rate falls, as the
//! kernel does. The gateway may also force load from its own queue depth.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::Time;

/// Default rate of handshake messages per second above which cookies are demanded.
pub const DEFAULT_HANDSHAKES_PER_SECOND: u64 = 1000;

const WINDOW: Duration = Duration::from_secs(1);

pub struct LoadMonitor {
    limit: AtomicU64,
    forced: AtomicBool,
    state: Mutex<LoadState>,
}

#[derive(Default)]
struct LoadState {
    window_start: Time,
    count: u64,
    under_load_until: Option<Time>,
}

impl Default for LoadMonitor {
    fn default() -> Self {
        LoadMonitor::new(DEFAULT_HANDSHAKES_PER_SECOND)
    }
}

impl LoadMonitor {
    pub fn new(limit_per_second: u64) -> LoadMonitor {
        LoadMonitor { limit: AtomicU64::new(limit_per_second), forced: AtomicBool::new(false), state: Mutex::default() }
    }

    pub fn set_limit(&self, limit_per_second: u64) {
        self.limit.store(limit_per_second, Ordering::Relaxed);
    }

    /// Forces the load state on or off, for a gateway whose own handshake
    /// queue is filling (or for tests).
    pub fn force(&self, on: bool) {
        self.forced.store(on, Ordering::Relaxed);
    }

    /// Counts one handshake message at `now` and says whether the responder
    /// is under load, counting this message.
    pub fn record(&self, now: Time) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_since(st.window_start) >= WINDOW {
            st.window_start = now;
            st.count = 0;
        }
        st.count += 1;
        if st.count > limit {
            st.under_load_until = Some(now + WINDOW);
        }
        let sticky = matches!(st.under_load_until, Some(until) if now < until);
        sticky || self.forced.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_starts_above_limit_and_lingers_one_second() {
        let m = LoadMonitor::new(3);
        let t = Time::from_secs(100);
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(!m.record(t));
        assert!(m.record(t));
        // New window, low rate, but still inside the sticky second.
        assert!(m.record(t + Duration::from_millis(999)));
        assert!(!m.record(t + Duration::from_millis(2500)));
    }

    #[test]
    fn forced_load() {
        let m = LoadMonitor::new(1000);
        assert!(!m.record(Time::ZERO));
        m.force(true);
        assert!(m.record(Time::ZERO));
        m.force(false);
        assert!(!m.record(Time::ZERO));
    }
}

//! Sliding replay window over received counters, RFC 6479 style.
//!
//! A ring of 64-bit blocks; advancing the window clears whole blocks instead
//! of shifting bits, so an update costs O(1) in the common in-order case.
//! One block is kept as slack (the window is `BITS - 64`) so the block that
//! holds the newest counter never aliases the oldest one still in the window.

use crate::REJECT_AFTER_MESSAGES;

const BLOCKS: usize = 128;
const BITS_TOTAL: u64 = (BLOCKS * 64) as u64;
/// How far behind the newest counter a packet may arrive and still be accepted.
pub const WINDOW_SIZE: u64 = BITS_TOTAL - 64;
// The protocol requires a window of at least 2048 packets.
const _: () = assert!(WINDOW_SIZE >= 2048);

#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the highest counter accepted; 0 when none was.
    next: u64,
    blocks: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { next: 0, blocks: [0; BLOCKS] }
    }
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// Accepts `counter` exactly once, and only while it is within the window
    /// behind the newest accepted counter. Call this only after the packet
    /// authenticated: otherwise a forged counter could slide the window.
    pub fn check_and_update(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        // Shift by one so that `next == 0` can mean "nothing seen yet".
        let shifted = counter + 1;
        if shifted + WINDOW_SIZE < self.next {
            return false;
        }
        let block = shifted / 64;
        if shifted > self.next {
            let current = self.next / 64;
            let to_clear = (block - current).min(BLOCKS as u64);
            for i in 1..=to_clear {
                self.blocks[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.next = shifted;
        }
        let slot = &mut self.blocks[(block % BLOCKS as u64) as usize];
        let bit = 1u64 << (shifted % 64);
        let fresh = *slot & bit == 0;
        *slot |= bit;
        fresh
    }

    /// Read-only pre-check: false when `counter` would certainly be refused.
    /// Lets a receiver drop an obvious replay before paying for decryption.
    pub fn might_accept(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let shifted = counter + 1;
        if shifted + WINDOW_SIZE < self.next {
            return false;
        }
        if shifted > self.next {
            return true;
        }
        self.blocks[((shifted / 64) % BLOCKS as u64) as usize] & (1u64 << (shifted % 64)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{OsRng, RngCore};
    use std::collections::HashSet;

    #[test]
    fn duplicates_reorder_and_too_old() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(0));
        assert!(!w.check_and_update(0), "duplicate");
        assert!(w.check_and_update(5));
        assert!(w.check_and_update(3), "reordered inside the window");
        assert!(!w.check_and_update(3));
        assert!(w.check_and_update(10_000));
        assert!(w.check_and_update(10_000 - WINDOW_SIZE), "oldest counter still inside");
        assert!(!w.check_and_update(10_000 - WINDOW_SIZE - 1), "just outside");
        assert!(!w.check_and_update(5), "far too old");
    }

    #[test]
    fn refuses_counters_at_the_reject_limit() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(REJECT_AFTER_MESSAGES - 1));
        assert!(!w.check_and_update(REJECT_AFTER_MESSAGES));
        assert!(!w.check_and_update(u64::MAX));
        assert!(!w.might_accept(u64::MAX));
    }

    #[test]
    fn large_jumps_clear_the_whole_ring() {
        let mut w = ReplayWindow::new();
        for c in 0..BITS_TOTAL {
            w.check_and_update(c);
        }
        let far = 10 * BITS_TOTAL + 17;
        assert!(w.check_and_update(far));
        for c in far - WINDOW_SIZE..far {
            assert!(w.might_accept(c), "{c} must be fresh after the jump");
        }
    }

    /// Randomized comparison against the obvious definition: a counter is
    /// fresh if never seen and no more than WINDOW_SIZE behind the maximum.
    #[test]
    fn matches_naive_reference() {
        for round in 0..20 {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut max: Option<u64> = None;
            let mut base = 0u64;
            for _ in 0..20_000 {
                let r = OsRng.next_u64();
                // Mostly near the front, sometimes far behind or far ahead.
                let c = match r % 16 {
                    0 => base.saturating_sub(r % (3 * BITS_TOTAL)),
                    1 => base + (r >> 8) % (4 * BITS_TOTAL),
                    _ => (base + (r >> 8) % 200).saturating_sub(100),
                };
                base = base.max(c);
                let expected = !seen.contains(&c) && max.is_none_or(|m| c + WINDOW_SIZE >= m);
                assert_eq!(w.might_accept(c), expected, "round {round} counter {c} pre-check");
                assert_eq!(w.check_and_update(c), expected, "round {round} counter {c}");
                if expected {
                    seen.insert(c);
                    max = Some(max.map_or(c, |m| m.max(c)));
                }
            }
        }
    }
}

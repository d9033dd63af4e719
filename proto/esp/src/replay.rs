//! The anti-replay window of an inbound SA (RFC 4303 §3.4.3), as a ring of
//! 64-bit blocks (RFC 6479): advancing clears whole blocks instead of
//! shifting a bitmap, so an in-order packet costs O(1).
//!
//! Invariants:
//! - A sequence number is accepted at most once, and only if it is
//!   1..=2^32-1 (no ESN: 0 is never sent, RFC 4303 §3.3.3) and no more
//!   than `WINDOW_SIZE - 1` behind the highest accepted one.
//! - The ring has one block more than the window needs, so the block that
//!   holds the newest number never aliases one still inside the window.
//! - Call `check_and_update` only for packets that authenticated: a forged
//!   sequence number must not move the window.
//!
//! 4096 packets because the data plane checks replay in its drain, after
//! workers opened batches in parallel: packets of one peer may reach the
//! drain reordered by up to a few batches across workers (~4096 packets).

/// How many sequence numbers, counting the highest accepted, the window
/// holds: the highest and the 4095 before it.
pub const WINDOW_SIZE: u64 = 4096;
const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = (WINDOW_SIZE / BLOCK_BITS) as usize + 1;
const MAX_SEQ: u64 = u32::MAX as u64;

// RFC 4303 §3.4.3 asks for at least 32, recommends 64; we need batches.
const _: () = assert!(WINDOW_SIZE >= 1024 && WINDOW_SIZE.is_multiple_of(BLOCK_BITS));

/// Which sequence numbers an inbound SA has accepted. Not `Sync` on its
/// own: `InboundSa` keeps it behind a mutex the drain takes briefly.
#[derive(Clone)]
pub struct ReplayWindow {
    /// The highest accepted sequence number; 0 while none was.
    top: u64,
    blocks: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { top: 0, blocks: [0; BLOCKS] }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow").field("top", &self.top).finish_non_exhaustive()
    }
}

fn locate(seq: u64) -> (usize, u64) {
    (((seq / BLOCK_BITS) % BLOCKS as u64) as usize, 1 << (seq % BLOCK_BITS))
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// The highest sequence number accepted so far (0: none).
    pub fn top(&self) -> u64 {
        self.top
    }

    fn in_range(&self, seq: u64) -> bool {
        (1..=MAX_SEQ).contains(&seq) && seq + WINDOW_SIZE > self.top
    }

    /// Accepts `seq` if it is new and inside the window, and records it.
    pub fn check_and_update(&mut self, seq: u64) -> bool {
        if !self.in_range(seq) {
            return false;
        }
        if seq > self.top {
            let current = self.top / BLOCK_BITS;
            let target = seq / BLOCK_BITS;
            let to_clear = (target - current).min(BLOCKS as u64);
            for i in 1..=to_clear {
                self.blocks[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = locate(seq);
        let fresh = self.blocks[block] & bit == 0;
        self.blocks[block] |= bit;
        fresh
    }

    /// Read-only pre-check: false when `seq` would certainly be refused.
    pub fn might_accept(&self, seq: u64) -> bool {
        if !self.in_range(seq) {
            return false;
        }
        if seq > self.top {
            return true;
        }
        let (block, bit) = locate(seq);
        self.blocks[block] & bit == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_out_of_order_duplicates() {
        let mut w = ReplayWindow::new();
        for s in 1..=100 {
            assert!(w.check_and_update(s), "in order {s}");
        }
        assert!(!w.check_and_update(50), "duplicate");
        assert!(w.check_and_update(200));
        assert!(w.check_and_update(150), "out of order inside the window");
        assert!(!w.check_and_update(150), "duplicate of a reordered one");
        assert!(w.check_and_update(101));
        assert_eq!(w.top(), 200);
    }

    #[test]
    fn window_edges_and_too_old() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_update(10_000));
        assert!(w.might_accept(10_000 - WINDOW_SIZE + 1));
        assert!(w.check_and_update(10_000 - WINDOW_SIZE + 1), "oldest still inside");
        assert!(!w.check_and_update(10_000 - WINDOW_SIZE), "just outside");
        assert!(!w.might_accept(10_000 - WINDOW_SIZE));
        assert!(!w.check_and_update(1), "far too old");
    }

    #[test]
    fn far_jump_forgets_the_old_window() {
        let mut w = ReplayWindow::new();
        for s in 1..=5000 {
            w.check_and_update(s);
        }
        let far = 5000 + 10 * WINDOW_SIZE + 17;
        assert!(w.check_and_update(far));
        for s in far - WINDOW_SIZE + 1..far {
            assert!(w.might_accept(s), "{s} must be fresh after the jump");
        }
        assert!(!w.might_accept(far));
        assert!(!w.check_and_update(5000), "old numbers fell out");
    }

    #[test]
    fn zero_and_beyond_32_bits_are_never_valid() {
        let mut w = ReplayWindow::new();
        assert!(!w.might_accept(0));
        assert!(!w.check_and_update(0));
        assert!(w.check_and_update(u64::from(u32::MAX)));
        assert!(!w.check_and_update(u64::from(u32::MAX) + 1));
        assert!(!w.check_and_update(u64::MAX));
        assert!(!w.check_and_update(0), "not even right after the window moved");
    }

    /// The window against a naive model (a set and the highest number),
    /// on sequences that mix in-order runs, reordering, duplicates and
    /// jumps.
    #[test]
    fn agrees_with_a_naive_model() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20 {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut top = 0u64;
            let mut next = 1u64;
            for _ in 0..20_000 {
                let r = rand();
                let seq = match r % 10 {
                    0 => next.saturating_sub(rand() % (2 * WINDOW_SIZE)),
                    1 => next + rand() % 3 * WINDOW_SIZE,
                    2 => rand() % 64,
                    _ => next,
                };
                next = next.max(seq) + 1;
                let expected = seq != 0 && seq <= MAX_SEQ && seq + WINDOW_SIZE > top && !seen.contains(&seq);
                assert_eq!(w.might_accept(seq), expected, "might_accept({seq}) top {top}");
                assert_eq!(w.check_and_update(seq), expected, "check_and_update({seq}) top {top}");
                if expected {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }
}

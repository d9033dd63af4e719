use std::time::{SystemTime, UNIX_EPOCH};

/// A TAI64N timestamp as carried in handshake initiations: 8 bytes of seconds
/// (big-endian, offset by 2^62 + 10) then 4 bytes of nanoseconds (big-endian).
/// Big-endian makes byte-wise comparison equal to time comparison.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64N([u8; 12]);

const TAI64_EPOCH_OFFSET: u64 = (1 << 62) + 10;

/// Nanoseconds are rounded down to this granularity (2^24 ns, about 16.8 ms,
/// one step below 1/INITIATIONS_PER_SECOND) so that the timestamp does not
/// leak a fine-grained clock to an observer who can decrypt it — the kernel
/// implementation does the same.
const NANOS_MASK: u32 = !((1 << 24) - 1);

impl Tai64N {
    pub const LEN: usize = 12;

    /// The timestamp for a wall-clock time.
    pub fn from_system_time(t: SystemTime) -> Tai64N {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&(since.as_secs() + TAI64_EPOCH_OFFSET).to_be_bytes());
        b[8..].copy_from_slice(&(since.subsec_nanos() & NANOS_MASK).to_be_bytes());
        Tai64N(b)
    }

    pub fn from_bytes(b: [u8; 12]) -> Tai64N {
        Tai64N(b)
    }

    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn encodes_epoch_and_orders_by_time() {
        let t0 = Tai64N::from_system_time(UNIX_EPOCH);
        assert_eq!(&t0.as_bytes()[..8], &(0x4000_0000_0000_000au64).to_be_bytes());
        let a = Tai64N::from_system_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let b = Tai64N::from_system_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_020));
        assert!(b > a);
    }

    #[test]
    fn nanoseconds_are_coarsened() {
        let base = UNIX_EPOCH + Duration::from_secs(100);
        let a = Tai64N::from_system_time(base + Duration::from_nanos(1));
        let b = Tai64N::from_system_time(base + Duration::from_nanos(1 << 23));
        assert_eq!(a, b);
        let c = Tai64N::from_system_time(base + Duration::from_nanos(1 << 24));
        assert!(c > a);
    }
}

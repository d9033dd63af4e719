//! Handshake messages per source address while under load, as the kernel's
//! `ratelimiter.c` and wireguard-go's `ratelimiter` allow them: a token
//! bucket of 20 a second with a burst of 5, per IPv4 address or IPv6 /64.
//!
//! Cookies (MAC2) only prove that a sender owns its address; without this a
//! sender that does could still make the responder compute a
//! Diffie-Hellman for every initiation it sends. The table is bounded:
//! sources idle for a second are forgotten, and a new source finding it
//! full is refused, as the kernel refuses one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::Time;

const PER_SECOND: u64 = 20;
const BURST: u64 = 5;
/// Nanoseconds of credit one message costs.
const COST: u64 = 1_000_000_000 / PER_SECOND;
const MAX_CREDIT: u64 = COST * BURST;
/// Sources idle this long are forgotten: by then their bucket is full.
const IDLE: Duration = Duration::from_secs(1);
/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 16_384;

/// A source's bucket: its credit when last seen.
struct Bucket {
    credit: u64,
    seen: Time,
}

#[derive(Default)]
pub struct RateLimiter {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    buckets: HashMap<[u8; 9], Bucket>,
    swept: Time,
}

/// The key of a source: an IPv4 address, or an IPv6 address's /64 (one
/// host commonly holds a whole /64), after a byte that tells the two
/// families apart.
fn key(addr: IpAddr) -> [u8; 9] {
    let mut k = [0u8; 9];
    match addr {
        IpAddr::V4(a) => k[1..5].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => k[1..5].copy_from_slice(&v4.octets()),
            None => {
                k[0] = 6;
                k[1..].copy_from_slice(&a.octets()[..8]);
            }
        },
    }
    k
}

impl RateLimiter {
    /// Whether a handshake message from `addr` at `now` may be processed.
    pub fn allow(&self, addr: IpAddr, now: Time) -> bool {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_since(t.swept) >= IDLE {
            t.buckets.retain(|_, b| now.saturating_since(b.seen) < IDLE);
            t.swept = now;
        }
        let k = key(addr);
        if !t.buckets.contains_key(&k) {
            if t.buckets.len() >= MAX_SOURCES {
                return false;
            }
            t.buckets.insert(k, Bucket { credit: MAX_CREDIT - COST, seen: now });
            return true;
        }
        let b = t.buckets.get_mut(&k).expect("present");
        let gained = u64::try_from(now.saturating_since(b.seen).as_nanos()).unwrap_or(u64::MAX);
        b.credit = b.credit.saturating_add(gained).min(MAX_CREDIT);
        b.seen = now;
        if b.credit < COST {
            return false;
        }
        b.credit -= COST;
        true
    }

    #[cfg(test)]
    fn sources(&self) -> usize {
        self.table.lock().unwrap().buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_nanos(1_000_000_000 + ms * 1_000_000)
    }

    #[test]
    fn a_burst_of_five_then_twenty_a_second() {
        let r = RateLimiter::default();
        let a: IpAddr = "198.18.0.9".parse().unwrap();
        let allowed = (0..10).filter(|_| r.allow(a, at(0))).count();
        assert_eq!(allowed, 5, "the burst");
        assert!(!r.allow(a, at(49)), "less than 50 ms of credit");
        assert!(r.allow(a, at(50)));
        // A second at a steady 100 a second: 20 of them pass.
        let passed = (1..=100).filter(|i| r.allow(a, at(50 + i * 10))).count();
        assert!((20..=21).contains(&passed), "{passed}");
        // Another source is not held back by this one.
        assert!(r.allow("198.18.0.10".parse().unwrap(), at(1050)));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_the_table_is_bounded() {
        let r = RateLimiter::default();
        let allowed = (0..10u16)
            .filter(|i| r.allow(IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, *i)), at(0)))
            .count();
        assert_eq!(allowed, 5, "one /64, one bucket");
        assert!(r.allow("fd00:0:0:2::1".parse().unwrap(), at(0)), "another /64");
        // Neighbouring /64s, and an IPv4 address, are other sources.
        for other in ["fd00:0:0:0::1", "fd00:0:0:3::1", "253.0.0.0"] {
            assert!(r.allow(other.parse().unwrap(), at(0)), "{other}");
        }
        for i in 0..MAX_SOURCES as u32 {
            r.allow(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), at(1));
        }
        assert_eq!(r.sources(), MAX_SOURCES);
        assert!(!r.allow("198.18.1.1".parse().unwrap(), at(2)), "a new source finds the table full");
        // A second later the idle ones are forgotten.
        assert!(r.allow("198.18.1.1".parse().unwrap(), at(1002)));
        assert_eq!(r.sources(), 1);
    }
}

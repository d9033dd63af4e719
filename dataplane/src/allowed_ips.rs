//! Cryptokey routing: longest-prefix match from an IP address to the peer
//! that owns it, for IPv4 and IPv6.
//!
//! Workers read an immutable snapshot (see `Interface::routes`) without any
//! lock; a change builds a new table and swaps it in. Changes are rare and
//! come in transactions (a UAPI `set`, a reload), so copying on write is
//! cheaper overall than making every lookup synchronise.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

#[derive(Clone)]
pub struct AllowedIps<T> {
    v4: PrefixMap<Ipv4Net, T>,
    v6: PrefixMap<Ipv6Net, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps { v4: PrefixMap::new(), v6: PrefixMap::new() }
    }
}

impl<T: Clone> AllowedIps<T> {
    /// Routes `net` (host bits cleared) to `value`; returns the previous owner.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(n, value),
            IpNet::V6(n) => self.v6.insert(n, value),
        }
    }

    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.remove(&n),
            IpNet::V6(n) => self.v6.remove(&n),
        }
    }

    /// The owner of exactly `net` (host bits cleared), if routed.
    pub fn get(&self, net: IpNet) -> Option<&T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get(&n),
            IpNet::V6(n) => self.v6.get(&n),
        }
    }

    /// The owner of the most specific prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, v)| v),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, v)| v),
        }
    }

    /// The entries that overlap `net`: those that contain it, then those
    /// it contains (an entry of exactly `net` comes in both). Found in the
    /// tries rather than by a scan of every entry, so checking each of a
    /// large configuration's prefixes stays linear overall.
    pub fn overlapping(&self, net: IpNet) -> Vec<(IpNet, &T)> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.cover(&n).chain(self.v4.children(&n)).map(|(p, v)| (IpNet::V4(p), v)).collect(),
            IpNet::V6(n) => self.v6.cover(&n).chain(self.v6.children(&n)).map(|(p, v)| (IpNet::V6(p), v)).collect(),
        }
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&IpNet, &T) -> bool) {
        let drop_v4: Vec<Ipv4Net> = self.v4.iter().filter(|(n, v)| !keep(&IpNet::V4(*n), v)).map(|(n, _)| n).collect();
        for n in drop_v4 {
            self.v4.remove(&n);
        }
        let drop_v6: Vec<Ipv6Net> = self.v6.iter().filter(|(n, v)| !keep(&IpNet::V6(*n), v)).map(|(n, _)| n).collect();
        for n in drop_v6 {
            self.v6.remove(&n);
        }
    }

    /// Every prefix with its owner, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        self.v4.iter().map(|(n, v)| (IpNet::V4(n), v)).chain(self.v6.iter().map(|(n, v)| (IpNet::V6(n), v)))
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{OsRng, RngCore};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("10.1.2.3/32"), 3);
        t.insert(net("0.0.0.0/0"), 4);
        t.insert(net("fd00::/8"), 5);
        t.insert(net("fd00:1::/64"), 6);
        assert_eq!(t.lookup("10.2.0.1".parse().unwrap()), Some(&1));
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(&2));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(&3));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(&4));
        assert_eq!(t.lookup("fd00:1::9".parse().unwrap()), Some(&6));
        assert_eq!(t.lookup("fd00:2::9".parse().unwrap()), Some(&5));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), None);
        assert_eq!(t.insert(net("10.1.0.0/16"), 7), Some(2), "re-inserting moves the prefix");
        assert_eq!(t.remove(net("10.1.2.3/32")), Some(3));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(&7));
        t.retain(|_, v| *v != 7);
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(&1));
        assert_eq!(t.len(), 4);
        assert_eq!(t.iter().count(), 4);
    }

    /// Randomized comparison against a linear scan over the same prefixes.
    #[test]
    fn matches_linear_scan() {
        let mut t = AllowedIps::default();
        let mut list: Vec<(IpNet, u32)> = Vec::new();
        for i in 0..3000u32 {
            let r = OsRng.next_u64();
            let n = if i % 2 == 0 {
                let len = (r % 33) as u8;
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from((r >> 8) as u32 & 0x0aff_ffff), len).unwrap().trunc())
            } else {
                let len = (r % 129) as u8;
                let addr = ((0xfd00u128) << 112) | (OsRng.next_u64() as u128) << 40;
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len.max(8)).unwrap().trunc())
            };
            list.retain(|(p, _)| *p != n);
            list.push((n, i));
            t.insert(n, i);
        }
        for _ in 0..20_000 {
            let r = OsRng.next_u64();
            let addr: IpAddr = if r.is_multiple_of(2) {
                IpAddr::V4(Ipv4Addr::from((r >> 16) as u32 & 0x0aff_ffff))
            } else {
                IpAddr::V6(Ipv6Addr::from(
                    ((0xfd00u128) << 112) | (OsRng.next_u64() as u128) << 40 | (r as u128 & 0xff),
                ))
            };
            let expected =
                list.iter().filter(|(p, _)| p.contains(&addr)).max_by_key(|(p, _)| p.prefix_len()).map(|(_, v)| v);
            assert_eq!(t.lookup(addr), expected, "{addr}");
        }
    }

    /// `overlapping` finds what a scan of every entry finds.
    #[test]
    fn overlapping_matches_linear_scan() {
        let mut t = AllowedIps::default();
        let mut list: Vec<IpNet> = Vec::new();
        let v4 = |r: u64| {
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from((r >> 8) as u32 & 0x0a0f_ffff), (r % 33) as u8).unwrap().trunc())
        };
        let v6 = |r: u64| {
            let addr = ((0xfd00u128) << 112) | ((r as u128) << 96);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), (r % 41) as u8).unwrap().trunc())
        };
        for i in 0..2000u32 {
            let r = OsRng.next_u64();
            let n = if i % 2 == 0 { v4(r) } else { v6(r) };
            if !list.contains(&n) {
                list.push(n);
            }
            t.insert(n, i);
        }
        for i in 0..2000 {
            let r = OsRng.next_u64();
            let q = if i % 2 == 0 { v4(r) } else { v6(r) };
            let mut found: Vec<IpNet> = t.overlapping(q).into_iter().map(|(n, _)| n).collect();
            found.sort();
            found.dedup();
            let mut expected: Vec<IpNet> = list.iter().copied().filter(|p| p.contains(&q) || q.contains(p)).collect();
            expected.sort();
            assert_eq!(found, expected, "{q}");
        }
    }
}

//! The bucket table of a site: which of its gateways each of `BUCKETS`
//! slices of the flow-hash space goes to. A packet to a site costs one
//! index into it (`bucket_of` of its flow hash); the control plane builds
//! a new table when a gateway comes or goes, up or down.
//!
//! Each bucket goes to the eligible member with the highest score for
//! that bucket (rendezvous, or highest-random-weight, hashing). So when a
//! member goes down only its own buckets move, each to its runner-up, and
//! when it comes back exactly those buckets return; members that stay
//! keep every bucket they had. Scores depend only on the bucket and the
//! member's id (a hash of its name), so a table is the same whatever the
//! order of members and whichever gateway or restart builds it.
//!
//! 1024 buckets keep the spread even (a member's share is within a few
//! percent of fair for sites of a handful of gateways) in 2 KiB per site.

use crate::flow_hash::finish;

/// Buckets per site; a power of two.
pub const BUCKETS: usize = 1024;
const BUCKET_BITS: u32 = BUCKETS.trailing_zeros();

/// The bucket of a flow hash: its top bits, which `finish` mixed best.
pub fn bucket_of(flow: u64) -> usize {
    (flow >> (64 - BUCKET_BITS)) as usize
}

/// A member's id for scoring: a hash of its name (FNV-1a, finished),
/// stable across restarts and the same on every gateway.
pub fn member_id(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    finish(h)
}

fn score(bucket: usize, id: u64) -> u64 {
    finish(id ^ (bucket as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// For every bucket, the index in `ids` of the member it goes to: the
/// best-scoring member of those `eligible`, or of all of them when none
/// is (a site whose gateways are all down still sends, which keeps
/// probing them). Ties (equal ids) go to the lower index. Empty when
/// there are no members. Members beyond `u16::MAX` are never chosen.
pub fn assign(ids: &[u64], eligible: &[bool]) -> Vec<u16> {
    let ids = &ids[..ids.len().min(usize::from(u16::MAX))];
    if ids.is_empty() {
        return Vec::new();
    }
    let any = ids.iter().enumerate().any(|(i, _)| eligible.get(i).copied().unwrap_or(false));
    let candidates: Vec<(u16, u64)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !any || eligible.get(*i).copied().unwrap_or(false))
        .map(|(i, id)| (i as u16, *id))
        .collect();
    (0..BUCKETS)
        .map(|b| {
            let mut best = candidates[0];
            let mut best_score = score(b, best.1);
            for &(i, id) in &candidates[1..] {
                let s = score(b, id);
                if s > best_score {
                    (best, best_score) = ((i, id), s);
                }
            }
            best.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<u64> {
        (1..=n).map(|i| member_id(&format!("west.gw{i}"))).collect()
    }

    fn shares(table: &[u16], members: usize) -> Vec<usize> {
        (0..members).map(|m| table.iter().filter(|&&i| usize::from(i) == m).count()).collect()
    }

    #[test]
    fn every_member_gets_near_its_fair_share() {
        // Fixed names, so this is deterministic; the bound is over four
        // standard deviations of a random assignment's share at every size.
        for n in 1..=8 {
            let table = assign(&ids(n), &vec![true; n]);
            assert_eq!(table.len(), BUCKETS);
            let fair = BUCKETS / n;
            let p = 1.0 / n as f64;
            let slack = (4.0 * (BUCKETS as f64 * p * (1.0 - p)).sqrt()) as usize;
            for (m, s) in shares(&table, n).into_iter().enumerate() {
                assert!(s.abs_diff(fair) <= slack, "{n} members: member {m} has {s} buckets, fair is {fair}±{slack}");
            }
        }
    }

    #[test]
    fn flows_spread_over_buckets_evenly() {
        let mut counts = vec![0usize; BUCKETS];
        for a in 0..64u8 {
            for port in 0..256u16 {
                let p = crate::flow_hash::tests::v4(a, 7, 6, 30000 + port, 443);
                counts[bucket_of(crate::flow_hash::flow_hash(&p))] += 1;
            }
        }
        // 16 flows per bucket on average; none empty, none crowded.
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min >= 2 && *max <= 40, "buckets hold {min} to {max} of 16384 flows");
    }

    #[test]
    fn only_a_downed_members_buckets_move_and_they_come_back() {
        let ids = ids(4);
        let all = assign(&ids, &[true; 4]);
        let without_2 = assign(&ids, &[true, true, false, true]);
        for b in 0..BUCKETS {
            if all[b] == 2 {
                assert_ne!(without_2[b], 2, "bucket {b} still on the member that is down");
            } else {
                assert_eq!(without_2[b], all[b], "bucket {b} moved though its member stayed up");
            }
        }
        // Its buckets spread over the others, not onto one of them.
        let moved: Vec<usize> =
            (0..4).map(|m| (0..BUCKETS).filter(|&b| all[b] == 2 && usize::from(without_2[b]) == m).count()).collect();
        assert_eq!(moved[2], 0);
        assert!(moved.iter().filter(|&&c| c > 0).count() == 3, "moved to {moved:?}");
        assert_eq!(assign(&ids, &[true; 4]), all, "back up: every bucket returns");
    }

    #[test]
    fn independent_of_member_order_and_of_who_builds_it() {
        let ids = ids(3);
        let table = assign(&ids, &[true; 3]);
        let reversed: Vec<u64> = ids.iter().rev().copied().collect();
        let other = assign(&reversed, &[true; 3]);
        for b in 0..BUCKETS {
            assert_eq!(ids[usize::from(table[b])], reversed[usize::from(other[b])]);
        }
    }

    #[test]
    fn none_eligible_means_all_and_no_members_means_no_table() {
        let ids = ids(3);
        assert_eq!(assign(&ids, &[false; 3]), assign(&ids, &[true; 3]));
        assert_eq!(assign(&ids, &[false, true, false]), vec![1; BUCKETS]);
        assert!(assign(&[], &[]).is_empty());
        assert_eq!(assign(&ids[..1], &[]), vec![0; BUCKETS], "a missing flag is not eligible");
    }
}

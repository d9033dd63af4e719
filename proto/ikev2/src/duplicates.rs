//! Two IKE SAs with one peer, from both ends initiating at once: each
//! end's IKE_AUTH crosses the other's, and each end holds both SAs, each
//! with its child SA. RFC 7296 has no rule for it (§2.8 covers crossing
//! rekeys, not crossing set-ups), and strongSwan keeps both in this race
//! (its uniqueness check, done as responder, only sees SAs already
//! established). Kept, the duplicate costs its own rekeys and liveness
//! checks for its whole life.
//!
//! Between two Causeway gateways, which say so with a Vendor ID in
//! IKE_AUTH, the duplicate goes by the rule RFC 7296 §2.8.1 gives for
//! crossing rekeys: the SA made with the lowest of the four nonces is
//! redundant, and the end that initiated it deletes it. Both ends hold
//! the same four nonces, so they agree on which SA goes and only one of
//! them sends a Delete. With any other peer nothing is deleted: a peer
//! with a rule of its own (strongSwan's `uniqueids` replaces the older SA
//! as responder when it sees one) could delete the other SA of the pair
//! at the same time, leaving none.
//!
//! The check runs once per SA, when IKE_AUTH brings it up; a pair that
//! does not qualify then (one of them without a child SA, or rekeying)
//! keeps both SAs, as before this rule.
//!
//! Invariant: only an SA we initiated is ever chosen here, and only when
//! both SAs of the pair are established, up, carry a child SA, and are
//! from a peer that sent the Vendor ID. The two ends may see a pair
//! differently for a moment (a child rekey under way at one end); that
//! can only keep the end that would delete from deleting, never make
//! both delete, since one end alone initiated the SA that goes.

use crate::sa::{IkeSa, SaState};

/// The Vendor ID by which a Causeway gateway says it deletes duplicates
/// by this rule. Sent only inside IKE_AUTH's encrypted payload, so only
/// the authenticated peer learns what it is talking to.
pub(crate) const VENDOR_ID: &[u8] = b"Causeway: crossing IKE SAs, lowest nonce goes (1)";

/// Whether `sa` counts in a pair: up, established and not on its way
/// out, with a peer that follows the rule, and carrying a child SA. An
/// SA whose child failed is no stand-in for one whose child carries
/// traffic, and the rule would as likely delete the latter. Nor one being
/// rekeyed: the rekey would hand its children to a successor that is no
/// duplicate in our eyes and leave the old SA's Delete deleting nothing.
fn eligible(sa: &IkeSa) -> bool {
    let carries = sa.children.iter().any(|c| !c.retiring);
    let rekeying = sa.ike_rekey_in_flight();
    sa.up && sa.state == SaState::Established && sa.peer_resolves_duplicates && !sa.duplicate && carries && !rekeying
}

/// The lower of an SA's two nonces, which §2.8.1 compares.
fn lowest_nonce(sa: &IkeSa) -> &[u8] {
    sa.ni.as_slice().min(sa.nr.as_slice())
}

/// Our SAs to delete now that `new` came up beside `others` (the peer's
/// other IKE SAs): for each pair of `new` and an eligible other, the one
/// with the lowest nonce, if we initiated it. At most `new` itself and
/// each other once; `new`'s own SPI when it is the one.
pub(crate) fn ours_to_delete<'a>(new: &IkeSa, others: impl Iterator<Item = &'a IkeSa>) -> Vec<u64> {
    if !eligible(new) {
        return Vec::new();
    }
    let mut doomed = Vec::new();
    for other in others.filter(|o| eligible(o) && o.local_spi() != new.local_spi()) {
        let redundant = if lowest_nonce(new) < lowest_nonce(other) { new } else { other };
        if redundant.initiator && !doomed.contains(&redundant.local_spi()) {
            doomed.push(redundant.local_spi());
        }
        if redundant.local_spi() == new.local_spi() {
            // `new` goes: the pairs it would make with the rest are not
            // duplicates any more.
            break;
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerId;
    use crate::sa::{ChildSa, Path};
    use crate::EspCipher;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Instant;

    fn sa(initiator: bool, spi: u64, ni: u8, nr: u8) -> IkeSa {
        let remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 500);
        let path = Path { remote, local: None, local_port: 500 };
        let mut sa = IkeSa::new(PeerId("b".into()), initiator, spi, path, Instant::now());
        sa.spi_r = spi;
        sa.ni = vec![ni; 32];
        sa.nr = vec![nr; 32];
        sa.state = SaState::Established;
        sa.up = true;
        sa.peer_resolves_duplicates = true;
        let now = Instant::now();
        sa.children.push(ChildSa {
            spi_in: spi as u32,
            spi_out: spi as u32 + 100,
            cipher: EspCipher::AesGcm16 { key_bits: 256 },
            pfs: None,
            created: now,
            rekey_at: now,
            expire_at: now,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            retiring: false,
            rekey_group: None,
            collision: None,
            replaces: None,
        });
        sa
    }

    #[test]
    fn the_pair_member_with_the_lowest_nonce_goes_by_its_initiator() {
        // Ours holds the lowest nonce (2): we delete it, whichever came up last.
        let (ours, theirs) = (sa(true, 1, 5, 2), sa(false, 2, 3, 9));
        assert_eq!(ours_to_delete(&ours, [&theirs].into_iter()), vec![1]);
        assert_eq!(ours_to_delete(&theirs, [&ours].into_iter()), vec![1]);
        // The peer's holds it: the peer deletes it, we do nothing.
        let (ours, theirs) = (sa(true, 1, 5, 4), sa(false, 2, 3, 1));
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        assert!(ours_to_delete(&theirs, [&ours].into_iter()).is_empty());
    }

    #[test]
    fn both_ends_agree_on_the_one_that_goes() {
        // The same two SAs as each end holds them: roles swapped.
        for (a, b) in [((5, 2), (3, 9)), ((5, 4), (3, 1)), ((7, 8), (9, 6))] {
            let at_a = [sa(true, 1, a.0, a.1), sa(false, 2, b.0, b.1)];
            let at_b = [sa(false, 1, a.0, a.1), sa(true, 2, b.0, b.1)];
            let deleted_by_a = ours_to_delete(&at_a[1], [&at_a[0]].into_iter());
            let deleted_by_b = ours_to_delete(&at_b[0], [&at_b[1]].into_iter());
            assert_eq!(deleted_by_a.len() + deleted_by_b.len(), 1, "{a:?} {b:?}: exactly one end deletes");
        }
    }

    #[test]
    fn nothing_goes_without_the_peer_s_word_or_while_an_sa_is_not_up() {
        let (ours, mut theirs) = (sa(true, 1, 5, 2), sa(false, 2, 3, 9));
        theirs.peer_resolves_duplicates = false;
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        theirs.peer_resolves_duplicates = true;
        theirs.state = SaState::Deleting;
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        theirs.state = SaState::Established;
        theirs.up = false;
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        // Nor while one of them carries no child SA.
        theirs.up = true;
        theirs.children.clear();
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        assert!(ours_to_delete(&theirs, [&ours].into_iter()).is_empty());
        theirs.children = ours.children.clone();
        assert_eq!(ours_to_delete(&ours, [&theirs].into_iter()), vec![1]);
        // Nor one already going, or being rekeyed.
        theirs.duplicate = true;
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
        theirs.duplicate = false;
        theirs.responded_ike_rekey =
            Some(crate::rekey_state::Collision { ni: vec![0; 32], nr: vec![0; 32], created: 9 });
        assert!(ours_to_delete(&ours, [&theirs].into_iter()).is_empty());
    }

    #[test]
    fn among_several_others_each_pair_counts_until_the_new_one_goes() {
        // Two others the new SA outranks: both ours, both go.
        let new = sa(false, 9, 8, 9);
        let (x, y) = (sa(true, 1, 1, 9), sa(true, 2, 2, 9));
        assert_eq!(ours_to_delete(&new, [&x, &y].into_iter()), vec![1, 2]);
        // The new one (ours) loses to the first: it goes, and alone.
        let new = sa(true, 9, 1, 9);
        let (x, y) = (sa(false, 1, 5, 9), sa(true, 2, 6, 9));
        assert_eq!(ours_to_delete(&new, [&x, &y].into_iter()), vec![9]);
    }
}

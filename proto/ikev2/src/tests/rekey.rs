//! CREATE_CHILD_SA: child and IKE SA rekeys as time passes, with and
//! without PFS, and simultaneous rekeys from both ends.

use std::net::SocketAddr;
use std::time::Duration;

use super::net::*;
use crate::crypto::DhGroup;
use crate::{EspCipher, EspProposal, Event, IkeState, PeerConfig};

fn pair(cfg: PeerConfig) -> Net {
    let cfg_b = mirror(&cfg);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    n
}

/// (inbound SPI, outbound SPI) of each installed child SA.
type Spis = Vec<(u32, u32)>;

/// The SPIs both ends have installed at the end.
fn installed(n: &Net) -> (Spis, Spis) {
    let of =
        |s: Option<crate::PeerStatus>| s.map_or(vec![], |s| s.children.iter().map(|c| (c.spi_in, c.spi_out)).collect());
    (of(n.a.status(&peer_b())), of(n.b.status(&peer_a())))
}

fn assert_one_child_each_crosswise(n: &Net) {
    let (a, b) = installed(n);
    assert_eq!(a.len(), 1, "A has {a:?}");
    assert_eq!(b, vec![(a[0].1, a[0].0)]);
}

/// Each ChildUp (except the first) replaces an SA that then goes down.
fn assert_make_before_break(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        if let Event::ChildUp { replaces: Some(old), .. } = e {
            let down_at = events.iter().position(|d| matches!(d, Event::ChildDown { spi_in, .. } if spi_in == old));
            assert!(down_at.is_none_or(|d| d > i), "the replaced SA {old:08x} went down before its successor came up");
        }
    }
}

/// Plays the events as the data plane takes them (`ChildSend`): the SA it
/// sends on must end as the one child SA left, on each side, and it never
/// sends on a redundant SA.
fn assert_sending_follows(n: &Net, side: Side) {
    let (mut sending, mut pending): (Option<u32>, Option<u32>) = (None, None);
    for e in n.events(side) {
        match e {
            Event::ChildUp { keys, send: crate::ChildSend::Now, .. } => sending = Some(keys.spi_in),
            Event::ChildUp { keys, send: crate::ChildSend::OnceUsed, .. } => pending = Some(keys.spi_in),
            Event::ChildUp { send: crate::ChildSend::Never, .. } => {}
            Event::ChildDown { spi_in, .. } => {
                if sending == Some(*spi_in) {
                    sending = pending.take();
                }
                if pending == Some(*spi_in) {
                    pending = None;
                }
            }
            _ => {}
        }
    }
    let st = match side {
        Side::A => n.a.status(&peer_b()),
        Side::B => n.b.status(&peer_a()),
    };
    let survivor = st.expect("status").children.first().map(|c| c.spi_in);
    assert!(sending.is_some(), "{side:?} has nothing to send on");
    assert!(sending == survivor || pending == survivor, "{side:?} sends on {sending:?}, child is {survivor:?}");
}

#[test]
fn child_sa_is_rekeyed_before_its_lifetime_and_the_old_one_deleted() {
    let mut cfg = config_a();
    cfg.child_lifetime = Duration::from_secs(100);
    let mut n = pair(cfg);
    n.advance(Duration::from_secs(95));
    let (ua, ub) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert!(ua.len() >= 2 && ub.len() >= 2);
    let last_a = ua.last().copied().expect("rekeyed");
    let last_b = ub.iter().find(|e| child_keys(e).1 == child_keys(last_a).0).copied().expect("B has the same SA");
    assert_crosswise(last_a, last_b);
    let first = child_keys(ua[0]).0;
    assert!(matches!(last_a, Event::ChildUp { replaces: Some(_), .. }));
    assert!(n.events_a.iter().any(|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == first)));
    assert_one_child_each_crosswise(&n);
    assert_make_before_break(&n.events_a);
    assert_make_before_break(&n.events_b);
    assert!(n.a.status(&peer_b()).is_some_and(|s| s.child_rekeys >= 1));
    assert_ne!(child_keys(ua[0]).2, child_keys(last_a).2, "new keys");
    assert_sending_follows(&n, Side::A);
    assert_sending_follows(&n, Side::B);
}

#[test]
fn child_rekey_with_pfs_runs_a_new_key_exchange() {
    let mut cfg = config_a();
    cfg.child_lifetime = Duration::from_secs(100);
    cfg.esp_proposals = vec![EspProposal {
        cipher: EspCipher::AesCbcHmacSha256 { key_bits: 256 },
        dh: Some(DhGroup::Ecp256),
        esn: false,
    }];
    let mut n = pair(cfg);
    n.advance(Duration::from_secs(95));
    assert!(n.child_ups(Side::A).len() >= 2);
    assert_one_child_each_crosswise(&n);
    assert_eq!(n.a.status(&peer_b()).map(|s| s.children[0].pfs), Some(Some(DhGroup::Ecp256)));
    let failures = n.failures(Side::A);
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn ike_sa_is_rekeyed_and_keeps_its_child_sas() {
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(100);
    let mut n = pair(cfg);
    let spi_before = n.a.status(&peer_b()).map(|s| s.spi_i);
    n.advance(Duration::from_secs(95));
    let st = n.a.status(&peer_b()).expect("status");
    assert_eq!(st.state, IkeState::Established);
    assert_ne!(Some(st.spi_i), spi_before);
    assert!(st.ike_rekeys >= 1);
    assert_one_child_each_crosswise(&n);
    assert_eq!(n.child_ups(Side::A).len(), 1, "the child SA survives the IKE rekey as it is");
    assert!(!n.events_a.iter().any(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. })));
    assert!(!n.events_b.iter().any(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. })));
    // The new IKE SA works: a further child rekey runs over it.
    n.advance(Duration::from_secs(1200));
    assert!(n.child_ups(Side::A).len() >= 2);
    assert_one_child_each_crosswise(&n);
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Established));
}

#[test]
fn simultaneous_child_rekeys_leave_one_child_sa() {
    for seed in 0..4u64 {
        let mut cfg = config_a();
        cfg.child_lifetime = Duration::from_secs(100);
        cfg.rekey_jitter_percent = 0;
        let mut n = Net::new(cfg.clone(), mirror(&cfg));
        n.a = crate::Endpoint::new(Box::new(TestRng(0x1111 + seed)));
        n.a.set_peer(peer_b(), cfg.clone(), n.now);
        n.connect();
        n.advance(Duration::from_secs(95));
        let requests = n
            .log
            .iter()
            .filter(|(_, t)| {
                let h = crate::wire::message::Message::parse(&t.data).expect("parses").header;
                h.exchange == crate::ids::ExchangeType::CreateChildSa && !h.is_response()
            })
            .count();
        assert_eq!(requests, 2, "both ends rekeyed at once");
        assert_one_child_each_crosswise(&n);
        assert_make_before_break(&n.events_a);
        assert_make_before_break(&n.events_b);
        // Every ChildUp is matched by a ChildDown except the survivor's.
        for side in [Side::A, Side::B] {
            let ups = n.child_ups(side).len();
            let downs = n.events(side).iter().filter(|e| matches!(e, Event::ChildDown { .. })).count();
            assert_eq!(ups, downs + 1, "{side:?}");
            assert_sending_follows(&n, side);
        }
    }
}

#[test]
fn simultaneous_ike_rekeys_leave_one_ike_sa_with_the_children() {
    for seed in 0..4u64 {
        let mut cfg = config_a();
        cfg.ike_lifetime = Duration::from_secs(100);
        cfg.rekey_jitter_percent = 0;
        let mut n = Net::new(cfg.clone(), mirror(&cfg));
        n.a = crate::Endpoint::new(Box::new(TestRng(0x2222 + seed)));
        n.a.set_peer(peer_b(), cfg.clone(), n.now);
        n.connect();
        n.advance(Duration::from_secs(95));
        let (a, b) = (n.a.status(&peer_b()).expect("A"), n.b.status(&peer_a()).expect("B"));
        assert_eq!((a.state, b.state), (IkeState::Established, IkeState::Established));
        assert_eq!((a.spi_i, a.spi_r), (b.spi_i, b.spi_r), "both kept the same IKE SA");
        assert_eq!(n.a.sas.len(), 1, "A keeps one IKE SA");
        assert_eq!(n.b.sas.len(), 1, "B keeps one IKE SA");
        assert_one_child_each_crosswise(&n);
        assert!(!n.events_a.iter().any(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. })));
        // And it still works.
        n.advance(Duration::from_secs(1200));
        assert_one_child_each_crosswise(&n);
    }
}

#[test]
fn a_child_sa_whose_rekey_keeps_failing_is_deleted_at_its_lifetime() {
    let mut cfg = config_a();
    cfg.child_lifetime = Duration::from_secs(100);
    let mut cfg_b = mirror(&cfg);
    // B rekeys late and refuses A's rekeys: it only has CBC for ESP now.
    cfg_b.child_lifetime = Duration::from_secs(1000);
    let mut n = Net::new(cfg.clone(), cfg_b.clone());
    n.connect();
    cfg_b.esp_proposals = vec![crate::tests::net::esp(EspCipher::AesCbcHmacSha256 { key_bits: 256 })];
    n.b.set_peer(peer_a(), cfg_b, n.now);
    n.advance(Duration::from_secs(101));
    assert!(n.failures(Side::A).iter().any(|f| matches!(f, crate::Failure::NoProposalChosen { .. })));
    let downs = |side| n.events(side).iter().filter(|e| matches!(e, Event::ChildDown { .. })).count();
    assert_eq!((downs(Side::A), downs(Side::B)), (1, 1));
    assert_eq!(n.a.status(&peer_b()).map(|s| (s.state, s.children.len())), Some((IkeState::Established, 0)));
}

/// A offers two PFS groups and B takes only the second: the child SA from
/// IKE_AUTH (no KE there) carries no sign of it, so A's first rekey goes
/// out in the first group and B answers INVALID_KE_PAYLOAD. A asks again
/// at once in the group B named, rather than failing every retry until
/// the child SA expires and the tunnel goes down with it.
#[test]
fn child_rekey_retries_in_the_pfs_group_the_peer_asks_for() {
    let with = |dh| EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: Some(dh), esn: false };
    let mut cfg = config_a();
    cfg.child_lifetime = Duration::from_secs(100);
    cfg.esp_proposals = vec![with(DhGroup::Ecp256), with(DhGroup::Curve25519)];
    let mut cfg_b = mirror(&cfg);
    cfg_b.esp_proposals = vec![with(DhGroup::Curve25519)];
    // A rekeys first.
    cfg_b.child_lifetime = Duration::from_secs(1000);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    n.advance(Duration::from_secs(95));
    assert!(n.child_ups(Side::A).len() >= 2, "A's rekey came through");
    assert_one_child_each_crosswise(&n);
    assert_eq!(n.a.status(&peer_b()).map(|s| s.children[0].pfs), Some(Some(DhGroup::Curve25519)));
    let failures = n.failures(Side::A);
    assert!(failures.is_empty(), "{failures:?}");
    assert_sending_follows(&n, Side::A);
}

/// A offers two IKE groups, B takes only the second (IKE_SA_INIT needed
/// INVALID_KE_PAYLOAD to find it): A's IKE rekey uses the group the SA
/// was made with, not its first proposal's, which B would refuse until
/// the IKE SA expired with its children.
#[test]
fn ike_rekey_keys_in_the_group_the_sa_was_made_with() {
    let with = |dh| crate::crypto::IkeSuite { dh, ..gcm256_x25519() };
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(100);
    cfg.ike_proposals = vec![with(DhGroup::Ecp256), with(DhGroup::Curve25519)];
    let mut cfg_b = mirror(&cfg);
    cfg_b.ike_proposals = vec![with(DhGroup::Curve25519)];
    cfg_b.ike_lifetime = Duration::from_secs(1000);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    n.advance(Duration::from_secs(95));
    let st = n.a.status(&peer_b()).expect("status");
    assert!(st.ike_rekeys >= 1, "A's IKE rekey came through");
    assert_eq!(st.state, IkeState::Established);
    assert_one_child_each_crosswise(&n);
    for side in [Side::A, Side::B] {
        assert!(!n.events(side).iter().any(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. })));
    }
    let failures = n.failures(Side::A);
    assert!(failures.is_empty(), "{failures:?}");
}

/// An IKE rekey keeps the PRF the SA was made with: strongSwan 5.9 keys a
/// rekeyed IKE SA with the old SA's PRF where the RFC takes the new
/// suite's, so a rekey onto another PRF would leave the two ends with
/// different keys. Here B prefers a suite of another PRF, which its offer
/// and A's choice (with INVALID_KE_PAYLOAD to settle the group) would have
/// reached before.
#[test]
fn an_ike_rekey_keeps_the_prf_the_sa_was_made_with() {
    use crate::crypto::PrfAlg;
    let sha384 = crate::crypto::IkeSuite { prf: PrfAlg::HmacSha384, ..gcm256_x25519() };
    let sha256 = crate::crypto::IkeSuite { dh: DhGroup::Ecp256, ..gcm256_x25519() };
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(1000);
    cfg.ike_proposals = vec![sha384, sha256];
    let mut cfg_b = mirror(&cfg);
    cfg_b.ike_proposals = vec![sha256, sha384];
    cfg_b.ike_lifetime = Duration::from_secs(100);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    let prf = |n: &Net| n.a.status(&peer_b()).and_then(|s| s.suite).map(|s| s.prf);
    assert_eq!(prf(&n), Some(PrfAlg::HmacSha384), "A's offer made the SA");
    n.advance(Duration::from_secs(95));
    let st = n.b.status(&peer_a()).expect("status");
    assert!(st.ike_rekeys >= 1, "B's IKE rekey came through");
    assert_eq!(st.suite.map(|s| s.prf), Some(PrfAlg::HmacSha384));
    assert_eq!(prf(&n), Some(PrfAlg::HmacSha384));
    assert_one_child_each_crosswise(&n);
    for side in [Side::A, Side::B] {
        let failures = n.failures(side);
        assert!(failures.is_empty(), "{failures:?}");
    }
}

/// Behind a NAT, the IKE SA that replaces another still knows of the NAT,
/// so the gateway keeps sending NAT keepalives after an IKE rekey.
#[test]
fn a_nat_found_at_the_start_is_still_known_after_an_ike_rekey() {
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(100);
    let mut n = Net::connected_through_nat(cfg);
    assert!(n.a.status(&peer_b()).is_some_and(|s| s.nat));
    n.advance(Duration::from_secs(95));
    for (side, st) in [(Side::A, n.a.status(&peer_b())), (Side::B, n.b.status(&peer_a()))] {
        let st = st.expect("status");
        assert!(st.ike_rekeys >= 1 || side == Side::B, "A rekeyed the IKE SA");
        assert!(st.nat, "{side:?} forgot the NAT after the IKE rekey");
    }
}

/// A data plane whose SA runs low on sequence numbers has it rekeyed at
/// once, long before its lifetime; asking again while that rekey runs
/// does nothing.
#[test]
fn a_child_sa_asked_for_early_is_rekeyed_at_once() {
    let mut n = pair(config_a());
    let (spi_in, _) = installed(&n).0[0];
    assert!(n.a.rekey_child_now(spi_in, n.now));
    assert!(!n.a.rekey_child_now(0xdead_beef, n.now), "no such SA");
    n.advance(Duration::from_secs(1));
    assert_eq!(n.child_ups(Side::A).len(), 2, "rekeyed within a second, its lifetime being 1200 s");
    assert!(matches!(n.child_ups(Side::A)[1], Event::ChildUp { replaces: Some(old), .. } if *old == spi_in));
    assert_one_child_each_crosswise(&n);
    assert!(!n.a.rekey_child_now(spi_in, n.now), "the old SA is gone");
    assert_sending_follows(&n, Side::A);
    assert_sending_follows(&n, Side::B);
}

/// B's rekey of the child SA is out when A's IKE rekey reaches B. Were B
/// to accept it, the child would move to the new IKE SA still marked as
/// being rekeyed while the answer came to the old one, and it would never
/// be rekeyed again: the tunnel would go down at its lifetime. B puts the
/// IKE rekey off instead (TEMPORARY_FAILURE) and A tries again later.
#[test]
fn an_ike_rekey_that_meets_our_child_exchange_is_put_off() {
    let mut n = pair(config_a());
    let (b_in, _) = installed(&n).1[0];
    assert!(n.b.rekey_child_now(b_in, n.now));
    n.b.handle_timeout(n.now);
    for sa in n.a.sas.values_mut().filter(|sa| sa.up) {
        sa.rekey_at = Some(n.now);
    }
    n.a.handle_timeout(n.now);
    let b_req = n.b.poll_transmit().expect("B's child rekey");
    let a_req = n.a.poll_transmit().expect("A's IKE rekey");
    // A's request reaches B first, then B's reaches A.
    n.b.handle(n.now, a_req.remote, SocketAddr::new(a_req.local.unwrap_or(A_IP), a_req.local_port), &a_req.data);
    n.a.handle(n.now, b_req.remote, SocketAddr::new(b_req.local.unwrap_or(B_IP), b_req.local_port), &b_req.data);
    n.run();
    n.advance(Duration::from_secs(60));
    assert!(n.a.status(&peer_b()).is_some_and(|s| s.ike_rekeys >= 1), "A's IKE rekey went through later");
    assert_one_child_each_crosswise(&n);
    // The child keeps being rekeyed: still one, crosswise, after its lifetime.
    n.advance(Duration::from_secs(1300));
    assert!(n.child_ups(Side::B).len() >= 3);
    assert_one_child_each_crosswise(&n);
    assert_sending_follows(&n, Side::A);
    assert_sending_follows(&n, Side::B);
    for side in [Side::A, Side::B] {
        assert!(!n.events(side).iter().any(|e| matches!(e, Event::IkeDown { .. })));
    }
}

/// A's liveness check is out when B's IKE rekey reaches A. RFC 7296
/// §2.25.2 puts off an IKE rekey only for a child SA exchange; the
/// request itself shows B alive. A takes it at once (B's rekey does not
/// wait `REKEY_RETRY`), and when B's answer to the check and its Delete
/// of the old SA are both lost, the check does not run out on the old SA
/// as a dead peer: nothing goes down or fails.
#[test]
fn an_ike_rekey_that_meets_our_liveness_check_is_taken() {
    use crate::ids::ExchangeType;
    use crate::wire::header::Header;
    for lose_old in [false, true] {
        let mut n = pair(config_a());
        let old = n.a.status(&peer_b()).expect("A").spi_i;
        n.drop = Box::new(move |side, t| {
            let h = Header::parse(&t.data).expect("header");
            lose_old && side == Side::B && h.exchange == ExchangeType::Informational && h.spi_i == old
        });
        for sa in n.a.sas.values_mut().filter(|sa| sa.up) {
            sa.queue.push_back(crate::sa::Planned::Dpd);
        }
        n.a.handle_timeout(n.now);
        for sa in n.b.sas.values_mut().filter(|sa| sa.up) {
            sa.rekey_at = Some(n.now);
        }
        n.b.handle_timeout(n.now);
        let a_req = n.a.poll_transmit().expect("A's liveness check");
        let b_req = n.b.poll_transmit().expect("B's IKE rekey");
        // B's request reaches A first, then A's check reaches B.
        n.a.handle(n.now, b_req.remote, SocketAddr::new(b_req.local.unwrap_or(B_IP), b_req.local_port), &b_req.data);
        n.b.handle(n.now, a_req.remote, SocketAddr::new(a_req.local.unwrap_or(A_IP), a_req.local_port), &a_req.data);
        n.run();
        n.advance(Duration::from_secs(1));
        assert_eq!(n.b.status(&peer_a()).map(|s| s.ike_rekeys), Some(1), "lost {lose_old}: rekeyed at once");
        n.advance(Duration::from_secs(300));
        assert_one_child_each_crosswise(&n);
        assert_sending_follows(&n, Side::A);
        assert_sending_follows(&n, Side::B);
        for side in [Side::A, Side::B] {
            let bad = n.events(side).iter().find(|e| matches!(e, Event::IkeDown { .. } | Event::Failed { .. }));
            assert!(bad.is_none(), "lost {lose_old}: {side:?}: {bad:?}");
        }
    }
}

/// As above, but A has marked the SA a duplicate to delete, its Delete
/// waiting behind the liveness check. B's rekey is put off: taken, it
/// would clear the Delete, and both SAs of the duplicate pair would live
/// on. Here the SA is the only one, so once the Delete goes out neither
/// end has an IKE SA up (in the real case the other SA of the pair stays).
#[test]
fn an_ike_rekey_of_an_sa_we_are_deleting_is_put_off() {
    let mut n = pair(config_a());
    for sa in n.a.sas.values_mut().filter(|sa| sa.up) {
        sa.queue.push_back(crate::sa::Planned::Dpd);
    }
    n.a.handle_timeout(n.now);
    for sa in n.a.sas.values_mut().filter(|sa| sa.up) {
        sa.duplicate = true;
        sa.queue.push_back(crate::sa::Planned::DeleteIke);
    }
    for sa in n.b.sas.values_mut().filter(|sa| sa.up) {
        sa.rekey_at = Some(n.now);
    }
    n.b.handle_timeout(n.now);
    n.run();
    assert_eq!(n.b.status(&peer_a()).map_or(0, |s| s.ike_rekeys), 0, "B's rekey was put off");
    for (side, e) in [(Side::A, &n.a), (Side::B, &n.b)] {
        assert!(!e.sas.values().any(|sa| sa.up), "{side:?} still has an IKE SA up");
    }
}

/// Both ends rekey the IKE SA at once and B's answer to A's rekey is lost.
/// B settles the collision first; where its own new SA survives, it
/// deletes the old SA while A's rekey is still out. A must then take the
/// SA it made answering B's rekey, children and all, rather than drop the
/// children with the old SA (and be left up with none).
#[test]
fn a_delete_of_the_old_ike_sa_mid_collision_moves_the_children_on() {
    use crate::ids::{flags, ExchangeType};
    use crate::wire::header::Header;
    for seed in 0..8u64 {
        let mut cfg = config_a();
        cfg.ike_lifetime = Duration::from_secs(100);
        cfg.rekey_jitter_percent = 0;
        let mut n = Net::new(cfg.clone(), mirror(&cfg));
        n.a = crate::Endpoint::new(Box::new(TestRng(0x3333 + seed)));
        n.a.set_peer(peer_b(), cfg.clone(), n.now);
        n.connect();
        let mut lost = false;
        n.drop = Box::new(move |side, t| {
            let h = Header::parse(&t.data).expect("header");
            let answer = h.exchange == ExchangeType::CreateChildSa && h.flags & flags::RESPONSE != 0;
            let drop = side == Side::B && answer && !lost;
            lost |= drop;
            drop
        });
        n.advance(Duration::from_secs(120));
        let (a, b) = (n.a.status(&peer_b()).expect("A"), n.b.status(&peer_a()).expect("B"));
        assert_eq!((a.state, b.state), (IkeState::Established, IkeState::Established), "seed {seed}");
        assert_eq!((a.spi_i, a.spi_r), (b.spi_i, b.spi_r), "seed {seed}: the same IKE SA");
        assert_one_child_each_crosswise(&n);
        for side in [Side::A, Side::B] {
            let downs = n.events(side).iter().filter(|e| matches!(e, Event::IkeDown { .. } | Event::ChildDown { .. }));
            assert_eq!(downs.count(), 0, "seed {seed}: {side:?} lost an SA");
        }
    }
}

/// As above, but the SA A made answering B's rekey is gone (B deleted it,
/// or it died) before B's Delete of the old one arrives: the children have
/// nowhere to go, and the data plane must hear that they went down rather
/// than keep them installed and sending.
#[test]
fn children_that_a_collision_cannot_move_go_down_with_the_old_ike_sa() {
    let mut n = pair(config_a());
    let (old_a, _) = installed(&n);
    assert_eq!(old_a.len(), 1);
    let gone = 0x5eed_u64;
    for sa in n.a.sas.values_mut() {
        sa.responded_ike_rekey =
            Some(crate::rekey_state::Collision { ni: vec![1; 32], nr: vec![2; 32], created: gone });
    }
    n.b.remove_peer(&peer_a(), n.now);
    n.run();
    let downs: Vec<u32> = n
        .events_a
        .iter()
        .filter_map(|e| if let Event::ChildDown { spi_in, .. } = e { Some(*spi_in) } else { None })
        .collect();
    assert_eq!(downs, vec![old_a[0].0], "the child went down with its IKE SA");
    assert!(n.events_a.iter().any(|e| matches!(e, Event::IkeDown { .. })));
    assert!(n.a.status(&peer_b()).is_none_or(|s| s.children.is_empty()));
}

/// Both ends rekey the IKE SA at once, and B settles its side before A's
/// request reaches it: B got A's answer to its rekey first, saw no
/// collision, moved on to the new SA and is deleting the old one, so it
/// answers A's late request with TEMPORARY_FAILURE. A, left with an
/// unanswered collision, must still end on B's new SA with the children.
#[test]
fn a_simultaneous_ike_rekey_refused_by_a_deleting_peer_still_converges() {
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(1000);
    cfg.rekey_jitter_percent = 0;
    let mut n = pair(cfg);
    for sa in n.a.sas.values_mut().chain(n.b.sas.values_mut()) {
        sa.rekey_at = Some(n.now);
    }
    n.a.handle_timeout(n.now);
    n.b.handle_timeout(n.now);
    let (rekey_a, rekey_b) = (n.a.poll_transmit().expect("A's rekey"), n.b.poll_transmit().expect("B's rekey"));
    let to_a = |n: &mut Net, t: crate::Transmit| {
        n.a.handle(n.now, t.remote, SocketAddr::new(t.local.unwrap_or(B_IP), t.local_port), &t.data)
    };
    let to_b = |n: &mut Net, t: crate::Transmit| {
        n.b.handle(n.now, t.remote, SocketAddr::new(t.local.unwrap_or(A_IP), t.local_port), &t.data)
    };
    to_a(&mut n, rekey_b);
    let answer_to_b = n.a.poll_transmit().expect("A answers B's rekey");
    to_b(&mut n, answer_to_b);
    let deleting = n.b.sas.values().filter(|sa| sa.state == crate::sa::SaState::Deleting).count();
    assert_eq!((n.b.sas.len(), deleting), (2, 1), "B moved to its new SA and deletes the old one");
    to_b(&mut n, rekey_a);
    let mut refused = false;
    while let Some(t) = n.b.poll_transmit() {
        let h = crate::wire::header::Header::parse(&t.data).expect("header");
        refused |= h.exchange == crate::ids::ExchangeType::CreateChildSa;
        to_a(&mut n, t);
    }
    assert!(refused, "B answered A's late rekey");
    n.run();
    n.advance(Duration::from_secs(60));
    n.assert_one_ike_sa_kept("refused late rekey");
    assert_one_child_each_crosswise(&n);
    n.advance(Duration::from_secs(1200));
    assert_one_child_each_crosswise(&n);
}

// RFC 7296 §2.25: a rekey of a child SA the responder does not have is
// answered with CHILD_SA_NOT_FOUND carrying the protocol and SPI of the
// request's REKEY_SA, so that the initiator knows which of its rekeys it
// was.
#[test]
fn a_rekey_of_a_child_sa_we_do_not_have_is_answered_with_its_spi() {
    let mut n = pair(config_a());
    let (a, _) = installed(&n);
    let spi_a = a[0].0;
    for sa in n.b.sas.values_mut() {
        sa.children.clear();
    }
    let sent = n.log.len();
    assert!(n.a.rekey_child_now(spi_a, n.now));
    n.advance(Duration::from_millis(1));
    let sa_a = n.a.sas.values().next().expect("A's IKE SA");
    let answers: Vec<_> = n.log[sent..]
        .iter()
        .filter(|(side, _)| *side == Side::B)
        .filter_map(|(_, t)| {
            let msg = crate::wire::message::Message::parse(&t.data).ok()?;
            sa_a.open(&t.data, &msg)?.ok()
        })
        .collect();
    let not_found: Vec<_> = answers
        .iter()
        .flatten()
        .filter_map(|p| match p {
            crate::wire::payload::Payload::Notify(x) if x.kind == crate::ids::notify::CHILD_SA_NOT_FOUND => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(not_found.len(), 1, "{answers:?}");
    assert_eq!(not_found[0].protocol, crate::ids::protocol::ESP);
    assert_eq!(not_found[0].spi, spi_a.to_be_bytes().to_vec(), "the SPI of A's REKEY_SA");
    assert!(n.events(Side::A).iter().any(|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == spi_a)));
}

/// A rekeys the IKE SA and every answer of B is lost. A peer with a
/// longer retransmission schedule than ours (strongSwan's runs 165 s)
/// still gets an answer from the replaced SA a minute later, and it goes
/// only after `REPLACED_SA_LINGER`.
#[test]
fn a_replaced_ike_sa_answers_late_retransmissions_of_its_rekey() {
    use crate::ids::{flags, ExchangeType};
    use crate::wire::header::Header;
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(100);
    let mut cfg_b = mirror(&cfg);
    cfg_b.ike_lifetime = Duration::from_secs(1000);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    let rekey = |t: &crate::Transmit| {
        let h = Header::parse(&t.data).expect("header");
        h.exchange == ExchangeType::CreateChildSa && h.flags & flags::RESPONSE == 0
    };
    // A's rekey request reaches B, and then the link is cut both ways;
    // the test plays the peer's late retransmissions itself (A's own
    // schedule is short and ends in a Delete).
    let mut cut = false;
    n.drop = Box::new(move |side, t| {
        let first = !cut && side == Side::A && rekey(t);
        cut |= first;
        cut && !first
    });
    n.advance(Duration::from_secs(95));
    let request = n.log.iter().rev().find(|(s, t)| *s == Side::A && rekey(t)).map(|(_, t)| t.clone());
    let request = request.expect("A rekeyed the IKE SA");
    let retransmit = |n: &mut Net, after: Duration| {
        n.advance(after);
        while n.b.poll_transmit().is_some() {}
        n.b.handle(n.now, request.remote, SocketAddr::new(A_IP, request.local_port), &request.data);
        let answer = std::iter::from_fn(|| n.b.poll_transmit()).find(|t| {
            let h = Header::parse(&t.data).expect("header");
            h.exchange == ExchangeType::CreateChildSa && h.flags & flags::RESPONSE != 0
        });
        answer.map(|t| Header::parse(&t.data).expect("header").message_id)
    };
    let id = Header::parse(&request.data).expect("header").message_id;
    assert_eq!(retransmit(&mut n, Duration::from_secs(60)), Some(id), "answered from the cache a minute on");
    let linger = crate::REPLACED_SA_LINGER;
    assert_eq!(retransmit(&mut n, linger), None, "gone after REPLACED_SA_LINGER");
}

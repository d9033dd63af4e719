//! Answers that carry a child SA we then refuse: the peer made that SA
//! when it answered, so it is deleted there too, and the peer sends
//! nothing into an SA only it holds.
//!
//! A conforming peer's answer is refused when our configuration changed
//! while the request was out (a reload), which is how these tests get one:
//! B's answer is held, A's configuration changes, then the answer arrives.

use super::net::*;
use crate::wire::message::Message;
use crate::{EspCipher, Failure, IkeState, PeerConfig, Transmit};

/// Runs the network with every datagram of B's held back (as lost), and
/// returns the last one B sent.
fn hold_bs_answer(n: &mut Net) -> Transmit {
    let sent = n.log.len();
    n.drop = Box::new(|side, _| side == Side::B);
    n.run();
    // A request that waits for a timer now due (a rekey asked for) leaves.
    n.advance(std::time::Duration::ZERO);
    n.drop = Box::new(|_, _| false);
    let held = n.log[sent..].iter().rev().find(|(side, _)| *side == Side::B);
    held.map(|(_, t)| t.clone()).expect("B answered")
}

/// Hands B's held datagram to A and runs the network until quiet.
fn deliver_to_a(n: &mut Net, t: &Transmit) {
    to_a(n, t);
    n.run();
}

/// A's selectors narrowed to a part of what it offered.
fn narrowed(cfg: &PeerConfig) -> PeerConfig {
    let mut c = cfg.clone();
    c.local_ts = vec![net("10.1.1.0", 24)];
    c
}

/// An INFORMATIONAL request of A's other than a liveness check: this
/// configuration has none (dpd_interval 0), so it is a Delete.
fn is_informational_delete(t: &Transmit) -> bool {
    let m = Message::parse(&t.data).expect("sent messages parse");
    m.header.exchange == crate::ids::ExchangeType::Informational && !m.header.is_response()
}

#[test]
fn a_child_sa_of_ike_auth_refused_by_the_initiator_is_deleted_at_the_responder() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.a.connect(&peer_b(), std::net::SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    // B answers IKE_SA_INIT; its IKE_AUTH answer is held.
    n.drop = Box::new(|side, t| side == Side::B && Message::parse(&t.data).is_ok_and(|m| m.header.message_id == 1));
    n.run();
    let auth_answer = n.log.iter().rev().find(|(s, _)| *s == Side::B).map(|(_, t)| t.clone()).expect("held");
    n.drop = Box::new(|_, _| false);
    assert_eq!(n.child_ups(Side::B).len(), 1, "B made the child SA when it answered");
    n.a.set_peer(peer_b(), narrowed(&cfg), n.now);
    let before = n.log.len();
    deliver_to_a(&mut n, &auth_answer);
    assert!(matches!(n.failures(Side::A)[..], [Failure::TsUnacceptable { .. }]), "{:?}", n.failures(Side::A));
    assert!(n.log[before..].iter().any(|(s, t)| *s == Side::A && is_informational_delete(t)), "A sent a Delete");
    assert_eq!(n.child_downs(Side::B), 1, "B's child SA is gone");
    assert_eq!((n.children(Side::A), n.children(Side::B)), (0, 0));
    for (ep, id) in [(&n.a, peer_b()), (&n.b, peer_a())] {
        assert_eq!(ep.status(&id).map(|s| s.state), Some(IkeState::Established), "the IKE SA stays");
    }
}

#[test]
fn a_new_child_sa_refused_by_its_asker_is_deleted_at_the_peer() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.connect();
    let (b_in, _, _, _) = child_keys(n.child_ups(Side::B)[0]);
    assert!(n.b.delete_child(b_in, n.now));
    n.run();
    assert_eq!((n.children(Side::A), n.children(Side::B)), (0, 0));
    assert!(n.a.create_child(&peer_b(), n.now));
    let answer = hold_bs_answer(&mut n);
    assert_eq!(n.child_ups(Side::B).len(), 2, "B made the new child SA when it answered");
    n.a.set_peer(peer_b(), narrowed(&cfg), n.now);
    deliver_to_a(&mut n, &answer);
    assert!(matches!(n.failures(Side::A).last(), Some(Failure::TsUnacceptable { .. })), "{:?}", n.failures(Side::A));
    assert_eq!(n.child_ups(Side::A).len(), 1, "A never installed it");
    assert_eq!(n.child_downs(Side::B), 2, "the deleted one and the refused one");
    assert_eq!((n.children(Side::A), n.children(Side::B)), (0, 0));
    // With the configuration back, A asks again and B takes it.
    n.a.set_peer(peer_b(), cfg, n.now);
    assert!(n.a.create_child(&peer_b(), n.now));
    n.run();
    assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1));
}

#[test]
fn a_rekeyed_child_sa_refused_by_the_rekeyer_is_deleted_at_the_peer_and_the_old_one_kept() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.connect();
    let (a_in, a_out, _, _) = child_keys(n.child_ups(Side::A)[0]);
    assert!(n.a.rekey_child_now(a_in, n.now));
    let answer = hold_bs_answer(&mut n);
    assert_eq!(n.child_ups(Side::B).len(), 2, "B made the new child SA when it answered");
    // A's proposals change to one B's answer did not take.
    let mut cbc = cfg.clone();
    cbc.esp_proposals = vec![esp(EspCipher::AesCbcHmacSha256 { key_bits: 256 })];
    n.a.set_peer(peer_b(), cbc, n.now);
    deliver_to_a(&mut n, &answer);
    assert!(matches!(n.failures(Side::A).last(), Some(Failure::Protocol(_))), "{:?}", n.failures(Side::A));
    assert_eq!(n.child_ups(Side::A).len(), 1, "A never installed it");
    assert_eq!(n.child_downs(Side::B), 1, "the refused one");
    let b = n.b.status(&peer_a()).expect("B's status");
    assert_eq!(
        b.children.iter().map(|c| (c.spi_in, c.spi_out)).collect::<Vec<_>>(),
        vec![(a_out, a_in)],
        "the old one"
    );
    assert_eq!(n.children(Side::A), 1);
    // With the configuration back, A's retry is taken: B holds the old
    // child SA as its child again, not as one already replaced.
    n.a.set_peer(peer_b(), cfg, n.now);
    n.advance(crate::rekey::REKEY_RETRY + std::time::Duration::from_secs(1));
    assert_eq!(n.child_ups(Side::A).len(), 2, "the rekey went through: {:?}", n.failures(Side::A));
    let (a, b) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert_crosswise(a[1], b[2]);
    assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1));
}

fn to_a(n: &mut Net, t: &Transmit) {
    n.a.handle(n.now, t.remote, std::net::SocketAddr::new(B_IP, t.local_port), &t.data);
}

fn to_b(n: &mut Net, t: &Transmit) {
    n.b.handle(n.now, t.remote, std::net::SocketAddr::new(A_IP, t.local_port), &t.data);
}

/// Crossing rekeys of the one child SA, and B refuses A's answer to its
/// rekey (a reload changed its proposals in between): B deletes the SA A
/// made answering it. A's own rekey, still out, then completes as an
/// uncontested one, whichever way the nonces would have settled the
/// collision, and the child SA goes on being rekeyed. The seeds vary A's
/// nonces, so both outcomes of the collision rule are met.
#[test]
fn crossing_rekeys_where_the_peer_refuses_our_answer_still_leave_a_child_sa() {
    for seed in 0..4u64 {
        let cfg = config_a();
        let mut n = Net::new(cfg.clone(), mirror(&cfg));
        n.a = crate::Endpoint::new(Box::new(TestRng(0x2222 + seed)));
        n.a.set_peer(peer_b(), cfg.clone(), n.now);
        n.connect();
        let (a_in, _, _, _) = child_keys(n.child_ups(Side::A)[0]);
        let (b_in, _, _, _) = child_keys(n.child_ups(Side::B)[0]);
        assert!(n.a.rekey_child_now(a_in, n.now) && n.b.rekey_child_now(b_in, n.now));
        n.a.handle_timeout(n.now);
        n.b.handle_timeout(n.now);
        let (ra, rb) = (n.a.poll_transmit().expect("A's rekey"), n.b.poll_transmit().expect("B's rekey"));
        to_b(&mut n, &ra);
        let answer_to_a = n.b.poll_transmit().expect("B answers A's rekey");
        to_a(&mut n, &rb);
        let answer_to_b = n.a.poll_transmit().expect("A answers B's rekey");
        let mut cbc = mirror(&cfg);
        cbc.esp_proposals = vec![esp(EspCipher::AesCbcHmacSha256 { key_bits: 256 })];
        n.b.set_peer(peer_a(), cbc, n.now);
        to_b(&mut n, &answer_to_b);
        // B's Delete of what A made for B's rekey, and A's answer to it.
        n.run();
        n.b.set_peer(peer_a(), mirror(&cfg), n.now);
        to_a(&mut n, &answer_to_a);
        n.run();
        assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1), "seed {seed}");
        // Past the old child SA's hard lifetime: rekeyed on, not expired.
        n.advance(cfg.child_lifetime + std::time::Duration::from_secs(60));
        assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1), "seed {seed}: {:?}", n.events_a);
        let (a, b) = (n.a.status(&peer_b()).unwrap(), n.b.status(&peer_a()).unwrap());
        assert_eq!((a.children[0].spi_in, a.children[0].spi_out), (b.children[0].spi_out, b.children[0].spi_in));
    }
}

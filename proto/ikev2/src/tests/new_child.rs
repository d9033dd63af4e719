//! A child SA asked for on an IKE SA that has lost its own (RFC 7296
//! §1.3.1), and what the core does when the driver gives one back.

use super::net::*;
use crate::crypto::DhGroup;
use crate::{EspCipher, EspProposal, Event, Failure, IkeState};

fn up(cfg: crate::PeerConfig) -> Net {
    let cfg_b = mirror(&cfg);
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    assert_eq!((n.child_ups(Side::A).len(), n.child_ups(Side::B).len()), (1, 1));
    n
}

/// B deletes its child SA (as `swanctl --terminate --child` would); the
/// IKE SA stays up on both ends without one.
fn delete_bs_child(n: &mut Net) {
    let (b_in, _, _, _) = child_keys(n.child_ups(Side::B)[0]);
    assert!(n.b.delete_child(b_in, n.now));
    assert!(!n.b.delete_child(b_in, n.now), "being deleted already");
    n.run();
    assert_eq!((n.child_downs(Side::A), n.child_downs(Side::B)), (1, 1));
    assert_eq!((n.children(Side::A), n.children(Side::B)), (0, 0));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Established));
}

#[test]
fn a_child_sa_the_peer_deleted_is_created_anew_on_the_same_ike_sa() {
    let mut n = up(config_a());
    delete_bs_child(&mut n);
    assert!(n.a.create_child(&peer_b(), n.now));
    assert!(!n.a.create_child(&peer_b(), n.now), "asked for already");
    n.run();
    let (a, b) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_crosswise(a[1], b[1]);
    assert_ne!(child_keys(a[0]).2, child_keys(a[1]).2, "fresh keys");
    for e in [a[1], b[1]] {
        let Event::ChildUp { replaces, send, .. } = e else { unreachable!() };
        assert_eq!((*replaces, *send), (None, crate::ChildSend::Now));
    }
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1), "on the same IKE SA");
    assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1));
    assert!(!n.a.create_child(&peer_b(), n.now), "it has one now");
    assert!(!n.b.create_child(&peer_a(), n.now));
    // The new child SA is rekeyed like the first.
    n.advance(std::time::Duration::from_secs(1300));
    assert!(n.child_ups(Side::A).len() >= 3);
    assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1));
}

#[test]
fn a_new_child_sa_with_pfs_runs_a_key_exchange() {
    let mut cfg = config_a();
    cfg.esp_proposals =
        vec![EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: Some(DhGroup::Ecp256), esn: false }];
    let mut n = up(cfg);
    delete_bs_child(&mut n);
    // The responder asks this time.
    assert!(n.b.create_child(&peer_a(), n.now));
    n.run();
    let (a, b) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_crosswise(a[1], b[1]);
    assert_eq!(n.b.status(&peer_a()).map(|s| s.children[0].pfs), Some(Some(DhGroup::Ecp256)));
}

#[test]
fn a_refused_new_child_sa_is_reported_and_leaves_the_ike_sa_up() {
    let mut n = up(config_a());
    delete_bs_child(&mut n);
    // B now takes only CBC.
    let mut cfg_b = mirror(&config_a());
    cfg_b.esp_proposals = vec![esp(EspCipher::AesCbcHmacSha256 { key_bits: 256 })];
    n.b.set_peer(peer_a(), cfg_b, n.now);
    assert!(n.a.create_child(&peer_b(), n.now));
    n.run();
    assert_eq!(n.child_ups(Side::A).len(), 1, "no new child SA");
    assert!(matches!(n.failures(Side::A).last(), Some(Failure::NoProposalChosen { .. })), "{:?}", n.failures(Side::A));
    assert!(matches!(n.failures(Side::B).last(), Some(Failure::NoProposalChosen { .. })));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Established));
    assert!(n.a.create_child(&peer_b(), n.now), "it may be asked for again");
}

#[test]
fn a_child_sa_the_driver_could_not_install_is_deleted_on_both_ends() {
    let mut n = up(config_a());
    let (a_in, _, _, _) = child_keys(n.child_ups(Side::A)[0]);
    assert!(n.a.delete_child(a_in, n.now));
    n.run();
    assert_eq!((n.child_downs(Side::A), n.child_downs(Side::B)), (1, 1));
    assert!(!n.a.delete_child(a_in, n.now), "gone");
    assert_eq!(n.b.status(&peer_a()).map(|s| s.state), Some(IkeState::Established));
}

// Both ends ask at once: the IKE SA's initiator (A) refuses B's request
// while its own is out, B takes A's, and one child SA is made, with no
// failure reported on either end.
#[test]
fn both_ends_asking_at_once_make_one_child_sa() {
    let mut n = up(config_a());
    delete_bs_child(&mut n);
    assert!(n.a.create_child(&peer_b(), n.now));
    assert!(n.b.create_child(&peer_a(), n.now));
    n.run();
    let (a, b) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert_eq!((a.len(), b.len()), (2, 2), "one new child SA each");
    assert_crosswise(a[1], b[1]);
    assert_eq!((n.children(Side::A), n.children(Side::B)), (1, 1));
    assert!(n.failures(Side::A).is_empty() && n.failures(Side::B).is_empty(), "{:?}", n.events_b);
}

// A offers PFS in ECP-256 first and Curve25519 second; B takes only the
// second and answers INVALID_KE_PAYLOAD: A asks again at once in the
// group B named instead of failing every retry.
#[test]
fn a_new_child_sa_asks_again_in_the_group_the_peer_names() {
    let with = |dh| EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: Some(dh), esn: false };
    let mut cfg = config_a();
    cfg.esp_proposals = vec![with(DhGroup::Ecp256), with(DhGroup::Curve25519)];
    let mut cfg_b = mirror(&cfg);
    cfg_b.esp_proposals = vec![with(DhGroup::Curve25519)];
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    delete_bs_child(&mut n);
    assert!(n.a.create_child(&peer_b(), n.now));
    n.run();
    let (a, b) = (n.child_ups(Side::A), n.child_ups(Side::B));
    assert_eq!((a.len(), b.len()), (2, 2));
    assert_crosswise(a[1], b[1]);
    assert_eq!(n.a.status(&peer_b()).map(|s| s.children[0].pfs), Some(Some(DhGroup::Curve25519)));
    assert!(n.failures(Side::A).is_empty(), "{:?}", n.failures(Side::A));
}

// The retry in the group the peer named happens once: a peer that then
// names yet another group gets a failure, not an endless exchange.
#[test]
fn a_new_child_sa_asks_again_in_another_group_only_once() {
    use crate::ids::ExchangeType;
    use crate::wire::message::Message;
    let with = |dh| EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: Some(dh), esn: false };
    let mut cfg = config_a();
    cfg.esp_proposals = vec![with(DhGroup::Ecp256), with(DhGroup::Curve25519), with(DhGroup::Ecp384)];
    let mut cfg_b = mirror(&cfg);
    cfg_b.esp_proposals = vec![with(DhGroup::Curve25519)];
    let mut n = Net::new(cfg.clone(), cfg_b.clone());
    n.connect();
    delete_bs_child(&mut n);
    // A's second request (the retry in Curve25519) is lost once; B then
    // takes ECP-384 only, so the retransmission meets another
    // INVALID_KE_PAYLOAD.
    let mut requests = 0;
    n.drop = Box::new(move |side, t| {
        let h = Message::parse(&t.data).expect("parses").header;
        if side == Side::A && h.exchange == ExchangeType::CreateChildSa && !h.is_response() {
            requests += 1;
            return requests == 2;
        }
        false
    });
    assert!(n.a.create_child(&peer_b(), n.now));
    n.run();
    cfg_b.esp_proposals = vec![with(DhGroup::Ecp384)];
    n.b.set_peer(peer_a(), cfg_b, n.now);
    n.advance(std::time::Duration::from_secs(5));
    assert_eq!(n.child_ups(Side::A).len(), 1, "no new child SA");
    let last = n.failures(Side::A).last().copied().cloned();
    assert!(matches!(last, Some(Failure::InvalidKe { requested }) if requested == DhGroup::Ecp384.id()), "{last:?}");
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Established));
}

/// RFC 7296 §2.10 holds for child SAs too: over an IKE SA with
/// HMAC-SHA2-384, A's request for a new child SA with a 20-octet nonce is
/// refused (INVALID_SYNTAX, inside the IKE SA) and named in B's log, and
/// the same request with 24 octets makes the child SA.
#[test]
fn a_child_sa_request_with_a_nonce_too_short_for_the_prf_is_refused() {
    use crate::crypto::{IkeSuite, PrfAlg};
    use crate::ids::{notify, ExchangeType};
    use crate::wire::message::Message;
    use crate::wire::payload::Payload;
    let mut cfg = config_a();
    cfg.ike_proposals = vec![IkeSuite { prf: PrfAlg::HmacSha384, ..gcm256_x25519() }];
    let mut n = up(cfg.clone());
    delete_bs_child(&mut n);
    let ask = |n: &mut Net, nonce: usize| {
        let sa = n.a.sas.values_mut().next().expect("A's SA");
        let id = sa.next_id;
        sa.next_id += 1;
        let payloads = [
            Payload::Sa(crate::negotiate::esp_offer(&cfg.esp_proposals, 0x0c0f_fee0 + nonce as u32, true)),
            Payload::Nonce(vec![0x5a; nonce]),
            Payload::TsI(cfg.local_ts.clone()),
            Payload::TsR(cfg.remote_ts.clone()),
        ];
        let request =
            sa.seal(&mut n.a.io, sa.header(ExchangeType::CreateChildSa, false, id), &payloads).expect("sealed");
        let to = std::net::SocketAddr::new(B_IP, 500);
        n.b.handle(n.now, to, std::net::SocketAddr::new(A_IP, 500), &request);
        let answer = n.b.poll_transmit().expect("answered");
        let msg = Message::parse(&answer.data).expect("parses");
        let sa = n.a.sas.values().next().expect("A's SA");
        let payloads = sa.open(&answer.data, &msg).expect("sealed").expect("well formed");
        n.collect();
        payloads.iter().any(|p| matches!(p, Payload::Notify(x) if x.kind == notify::INVALID_SYNTAX))
    };
    assert!(ask(&mut n, 20), "refused");
    let why = "CREATE_CHILD_SA request with a nonce of 20 octets, shorter than the 24 its prf needs";
    assert_eq!(n.failures(Side::B).last(), Some(&&Failure::Protocol(why.into())));
    assert_eq!(n.child_ups(Side::B).len(), 1, "no child SA made");
    assert!(!ask(&mut n, 24), "taken");
    assert_eq!(n.child_ups(Side::B).len(), 2, "the child SA made");
}

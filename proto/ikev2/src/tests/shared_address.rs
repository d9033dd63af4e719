//! Several of B's peers that may call from one address (sites behind a
//! shared NAT, a road warrior's peer beside a site's): which answers
//! IKE_SA_INIT (`Endpoint::peer_for`) and which IKE_AUTH binds
//! (`Endpoint::bind_by_identity`).

use super::establish::assert_up;
use super::net::*;
use crate::crypto::{DhGroup, IkeSuite};
use crate::{Event, IkeState, PeerConfig, PeerId};

/// `config_a`'s AES-GCM suite in another group.
fn gcm256_in(dh: DhGroup) -> IkeSuite {
    IkeSuite { dh, ..gcm256_x25519() }
}

/// Connects A (`cfg_a`) to B, which has beside its peer for A (`cfg_b`)
/// the peer `other`: B's view of `config_a` under another identity, as
/// `edit` leaves it. Checks that A came up, as B's peer for A only, with
/// no failure on either side; returns the suite B's IKE SA has.
fn connect_beside(cfg_a: PeerConfig, cfg_b: PeerConfig, other: &str, edit: impl FnOnce(&mut PeerConfig)) -> IkeSuite {
    let mut n = Net::new(cfg_a, cfg_b);
    let mut cfg = mirror(&config_a());
    cfg.remote_id = crate::Identity::Fqdn("c.test".into());
    edit(&mut cfg);
    let other = PeerId::from(other);
    n.b.set_peer(other.clone(), cfg, n.now);
    n.connect();
    assert_up(&n);
    let ups: Vec<_> = n
        .events_b
        .iter()
        .filter_map(|e| if let Event::IkeUp { peer, suite, .. } = e { Some((peer, *suite)) } else { None })
        .collect();
    assert_eq!(ups.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![&peer_a()], "beside {other}");
    assert_eq!(n.b.status(&other).map(|s| s.state), Some(IkeState::Down), "{other}");
    ups[0].1
}

/// B's view of A accepting any address (a road warrior's peer).
fn any_address() -> PeerConfig {
    let mut cfg = mirror(&config_a());
    (cfg.remote_addrs, cfg.any_address) = (vec![], true);
    cfg
}

/// Two of B's peers call from A's address (behind one NAT, say), with
/// their own identities and keys. Whichever IKE_SA_INIT was filed under,
/// A's IKE_AUTH identity picks its peer, and only that one comes up.
#[test]
fn peers_sharing_an_address_are_told_apart_by_identity() {
    for decoy in ["0-decoy", "z-decoy"] {
        connect_beside(config_a(), mirror(&config_a()), decoy, |other| {
            other.psk = zeroize::Zeroizing::new(b"another peer's key of the test".to_vec());
        });
    }
}

/// Two of B's peers call from A's address, and the one first by name
/// takes only another IKE suite: A's IKE_SA_INIT is answered with the
/// proposals of the peer that accepts it, so A comes up, and the other
/// peer files no failure for a request that was not its own. With A's
/// own identity (and key) as well, IKE_AUTH still binds the peer that
/// accepts the suite chosen.
#[test]
fn peers_sharing_an_address_each_answer_with_their_own_proposals() {
    for same_identity in [false, true] {
        connect_beside(config_a(), mirror(&config_a()), "0-decoy", |other| {
            if same_identity {
                other.remote_id = config_a().local_id;
            }
            other.ike_proposals = vec![cbc256_modp2048()];
        });
    }
}

/// A calls from an address one of B's peers lists, but A's identity is
/// that of B's peer without addresses (a road warrior's, say): IKE_SA_INIT
/// is filed under the listed peer, and IKE_AUTH's identity moves the SA
/// to the peer accepting any address.
#[test]
fn the_identity_may_pick_a_peer_accepting_any_address() {
    connect_beside(config_a(), any_address(), "0-listed", |listed| {
        listed.psk = zeroize::Zeroizing::new(b"another peer's key of the test".to_vec());
    });
}

/// A offers AES-GCM with X25519 (its key share) and then with ECP-256.
/// The peer first by name takes only the ECP-256 suite, which would cost
/// an INVALID_KE_PAYLOAD round and then bind no one at IKE_AUTH (A's own
/// peer does not take that suite): the request goes to the peer that
/// takes the key share as sent.
#[test]
fn a_peer_taking_the_key_share_as_sent_answers_first() {
    let mut cfg_a = config_a();
    cfg_a.ike_proposals = vec![gcm256_x25519(), gcm256_in(DhGroup::Ecp256)];
    let mut cfg_b = mirror(&cfg_a);
    cfg_b.ike_proposals = vec![gcm256_x25519()];
    let suite = connect_beside(cfg_a, cfg_b, "0-decoy", |other| other.ike_proposals = vec![gcm256_in(DhGroup::Ecp256)]);
    assert_eq!(suite.dh, DhGroup::Curve25519, "no INVALID_KE_PAYLOAD round");
}

/// A calls from the address a site's peer lists, whose proposals do not
/// take A's offer; B's peer for A accepts any address (a road warrior's)
/// and does: it answers, where only the listed peer used to, refusing.
#[test]
fn a_peer_accepting_any_address_answers_what_the_listed_one_refuses() {
    connect_beside(config_a(), any_address(), "0-site", |listed| listed.ike_proposals = vec![cbc256_modp2048()]);
}

/// B's peer for A lists A's address but takes A's offer only in another
/// group than A's key share; a road warrior's peer (any address) takes it
/// as sent. The peer naming the address answers, after an
/// INVALID_KE_PAYLOAD round: it is the more specific configuration.
#[test]
fn a_listed_peer_answers_before_one_accepting_any_address() {
    let mut cfg_a = config_a();
    cfg_a.ike_proposals = vec![gcm256_x25519(), gcm256_in(DhGroup::Ecp256)];
    let mut cfg_b = mirror(&cfg_a);
    cfg_b.ike_proposals = vec![gcm256_in(DhGroup::Ecp256)];
    let suite = connect_beside(cfg_a, cfg_b, "0-road-warrior", |roaming| {
        (roaming.remote_addrs, roaming.any_address) = (vec![], true);
    });
    assert_eq!(suite.dh, DhGroup::Ecp256);
}

/// A offers AES-GCM in X25519 (its key share), ECP-384 and ECP-256; B's
/// peer for A ("a") takes only ECP-384, another peer listing the address
/// only ECP-256. Both need an INVALID_KE_PAYLOAD round; the first by
/// name answers, and A comes up in its group.
#[test]
fn among_peers_that_fit_alike_the_first_by_name_answers() {
    let mut cfg_a = config_a();
    cfg_a.ike_proposals = vec![gcm256_x25519(), gcm256_in(DhGroup::Ecp384), gcm256_in(DhGroup::Ecp256)];
    let mut cfg_b = mirror(&cfg_a);
    cfg_b.ike_proposals = vec![gcm256_in(DhGroup::Ecp384)];
    let suite = connect_beside(cfg_a, cfg_b, "z-decoy", |other| other.ike_proposals = vec![gcm256_in(DhGroup::Ecp256)]);
    assert_eq!(suite.dh, DhGroup::Ecp384);
}

/// No peer that may call from A's address takes its offer: the first of
/// them by name refuses it, and the failure is filed under that peer.
#[test]
fn when_every_peer_refuses_the_first_by_name_names_the_offer() {
    let mut cfg_b = mirror(&config_a());
    cfg_b.ike_proposals = vec![cbc256_modp2048()];
    let mut n = Net::new(config_a(), cfg_b.clone());
    cfg_b.remote_id = crate::Identity::Fqdn("c.test".into());
    n.b.set_peer(PeerId::from("0-decoy"), cfg_b, n.now);
    n.connect();
    let refused: Vec<_> = n
        .events_b
        .iter()
        .filter_map(|e| match e {
            Event::Failed { peer, reason: crate::Failure::NoProposalChosen { .. } } => Some(peer.clone()),
            _ => None,
        })
        .collect();
    assert!(!refused.is_empty() && refused.iter().all(|p| *p == PeerId::from("0-decoy")), "{refused:?}");
    assert_eq!(n.ike_ups(Side::B), 0);
}

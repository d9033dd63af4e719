//! Several of B's peers that may call from one address (sites behind a
//! shared NAT, a road warrior's peer beside a site's): which answers
//! IKE_SA_INIT (`Endpoint::peer_for`) and which IKE_AUTH binds
//! (`Endpoint::bind_by_identity`).

use super::establish::assert_up;
use super::net::*;
use crate::crypto::{DhGroup, IkeSuite};
use crate::{Event, IkeState, PeerId};

/// The peers B's IKE SAs came up for, in order.
fn ups_of_b(n: &Net) -> Vec<&PeerId> {
    n.events_b.iter().filter_map(|e| if let Event::IkeUp { peer, .. } = e { Some(peer) } else { None }).collect()
}

/// `config_a`'s AES-GCM suite in another group.
fn gcm256_in(dh: DhGroup) -> IkeSuite {
    IkeSuite { dh, ..gcm256_x25519() }
}

/// Two of B's peers call from A's address (behind one NAT, say), with
/// their own identities and keys. Whichever IKE_SA_INIT was filed under,
/// A's IKE_AUTH identity picks its peer, and only that one comes up.
#[test]
fn peers_sharing_an_address_are_told_apart_by_identity() {
    for decoy in ["0-decoy", "z-decoy"] {
        let mut n = Net::new(config_a(), mirror(&config_a()));
        let mut other = mirror(&config_a());
        other.remote_id = crate::Identity::Fqdn("c.test".into());
        other.psk = zeroize::Zeroizing::new(b"another peer's key of the test".to_vec());
        n.b.set_peer(PeerId::from(decoy), other, n.now);
        n.connect();
        assert_up(&n);
        assert_eq!(ups_of_b(&n), vec![&peer_a()], "{decoy}");
        let decoy_state = n.b.status(&PeerId::from(decoy)).map(|s| s.state);
        assert_eq!(decoy_state, Some(IkeState::Down), "{decoy}");
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
        let mut n = Net::new(config_a(), mirror(&config_a()));
        let mut other = mirror(&config_a());
        if !same_identity {
            other.remote_id = crate::Identity::Fqdn("c.test".into());
        }
        other.ike_proposals = vec![cbc256_modp2048()];
        let decoy = PeerId::from("0-decoy");
        n.b.set_peer(decoy.clone(), other, n.now);
        n.connect();
        assert_up(&n);
        assert_eq!(ups_of_b(&n), vec![&peer_a()], "same identity {same_identity}");
        assert!(n.failures(Side::B).is_empty(), "{:?}", n.failures(Side::B));
        assert_eq!(n.b.status(&decoy).map(|s| s.state), Some(IkeState::Down));
    }
}

/// A calls from an address one of B's peers lists, but A's identity is
/// that of B's peer without addresses (a road warrior's, say): IKE_SA_INIT
/// is filed under the listed peer, and IKE_AUTH's identity moves the SA
/// to the peer accepting any address.
#[test]
fn the_identity_may_pick_a_peer_accepting_any_address() {
    let mut cfg_b = mirror(&config_a());
    (cfg_b.remote_addrs, cfg_b.any_address) = (vec![], true);
    let mut n = Net::new(config_a(), cfg_b);
    let mut listed = mirror(&config_a());
    listed.remote_id = crate::Identity::Fqdn("c.test".into());
    listed.psk = zeroize::Zeroizing::new(b"another peer's key of the test".to_vec());
    let decoy = PeerId::from("0-listed");
    n.b.set_peer(decoy.clone(), listed, n.now);
    n.connect();
    assert_up(&n);
    assert_eq!(ups_of_b(&n), vec![&peer_a()]);
    assert_eq!(n.b.status(&decoy).map(|s| s.state), Some(IkeState::Down));
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
    let mut n = Net::new(cfg_a, cfg_b);
    let mut other = mirror(&config_a());
    other.remote_id = crate::Identity::Fqdn("c.test".into());
    other.ike_proposals = vec![gcm256_in(DhGroup::Ecp256)];
    n.b.set_peer(PeerId::from("0-decoy"), other, n.now);
    n.connect();
    assert_up(&n);
    assert_eq!(ups_of_b(&n), vec![&peer_a()]);
    let suite = n.events_b.iter().find_map(|e| if let Event::IkeUp { suite, .. } = e { Some(*suite) } else { None });
    assert_eq!(suite.map(|s| s.dh), Some(DhGroup::Curve25519), "no INVALID_KE_PAYLOAD round");
}

/// A calls from the address a site's peer lists, whose proposals do not
/// take A's offer; B's peer for A accepts any address (a road warrior's)
/// and does: it answers, where only the listed peer used to, refusing.
#[test]
fn a_peer_accepting_any_address_answers_what_the_listed_one_refuses() {
    let mut cfg_b = mirror(&config_a());
    (cfg_b.remote_addrs, cfg_b.any_address) = (vec![], true);
    let mut n = Net::new(config_a(), cfg_b);
    let mut listed = mirror(&config_a());
    listed.remote_id = crate::Identity::Fqdn("c.test".into());
    listed.ike_proposals = vec![cbc256_modp2048()];
    let site = PeerId::from("0-site");
    n.b.set_peer(site.clone(), listed, n.now);
    n.connect();
    assert_up(&n);
    assert_eq!(ups_of_b(&n), vec![&peer_a()]);
    assert_eq!(n.b.status(&site).map(|s| s.state), Some(IkeState::Down));
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
    let mut n = Net::new(cfg_a, cfg_b);
    let mut roaming = mirror(&config_a());
    roaming.remote_id = crate::Identity::Fqdn("c.test".into());
    (roaming.remote_addrs, roaming.any_address) = (vec![], true);
    n.b.set_peer(PeerId::from("0-road-warrior"), roaming, n.now);
    n.connect();
    assert_up(&n);
    assert_eq!(ups_of_b(&n), vec![&peer_a()]);
    let suite = n.events_b.iter().find_map(|e| if let Event::IkeUp { suite, .. } = e { Some(*suite) } else { None });
    assert_eq!(suite.map(|s| s.dh), Some(DhGroup::Ecp256));
}

//! An operator's rekey and reset of a peer's SAs (`operator.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use super::net::*;
use crate::{DownReason, Event, IkeState, RekeyScheduled};

fn up_pair() -> Net {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    n
}

/// (IKE SPIs, the child SAs' (inbound, outbound) SPIs) of a side.
fn spis(n: &Net, side: Side) -> ((u64, u64), Vec<(u32, u32)>) {
    let s = match side {
        Side::A => n.a.status(&peer_b()),
        Side::B => n.b.status(&peer_a()),
    }
    .expect("a status");
    ((s.spi_i, s.spi_r), s.children.iter().map(|c| (c.spi_in, c.spi_out)).collect())
}

fn downs(n: &Net, side: Side) -> Vec<DownReason> {
    n.events(side)
        .iter()
        .filter_map(|e| if let Event::IkeDown { reason, .. } = e { Some(reason.clone()) } else { None })
        .collect()
}

#[test]
fn a_rekey_asked_for_gives_the_children_new_keys_at_once_and_keeps_the_ike_sa() {
    let mut n = up_pair();
    let (ike, children) = spis(&n, Side::A);
    assert_eq!(n.a.rekey_peer_now(&peer_b(), false, n.now), RekeyScheduled { ike: false, children: 1 });
    n.advance(Duration::from_secs(1));
    let (ike_after, children_after) = spis(&n, Side::A);
    assert_eq!(ike_after, ike, "the IKE SA stays");
    assert_eq!(children_after.len(), 1);
    assert_ne!(children_after, children, "new child SPIs");
    let (_, at_b) = spis(&n, Side::B);
    assert_eq!(at_b, vec![(children_after[0].1, children_after[0].0)], "the same child SA at B");
    assert!(downs(&n, Side::A).is_empty() && downs(&n, Side::B).is_empty(), "no IKE SA went down");
}

#[test]
fn a_rekey_asked_for_with_ike_rekeys_the_ike_sa_too() {
    let mut n = up_pair();
    let (ike, children) = spis(&n, Side::A);
    assert_eq!(n.a.rekey_peer_now(&peer_b(), true, n.now), RekeyScheduled { ike: true, children: 1 });
    n.a.handle_timeout(n.now);
    // While they are under way, asking again schedules nothing more.
    assert_eq!(n.a.rekey_peer_now(&peer_b(), true, n.now), RekeyScheduled { ike: false, children: 0 });
    n.run();
    n.advance(Duration::from_secs(1));
    let (ike_after, children_after) = spis(&n, Side::A);
    assert_ne!(ike_after, ike, "a new IKE SA");
    assert_ne!(children_after, children, "new child SPIs");
    assert_eq!(spis(&n, Side::B).0, ike_after, "the same IKE SA at B");
    assert_eq!((n.a.sas.len(), n.b.sas.len()), (1, 1), "the old IKE SA went");
    assert!(downs(&n, Side::A).is_empty() && downs(&n, Side::B).is_empty(), "handed over, not lost");
}

#[test]
fn a_peer_without_an_ike_sa_up_has_nothing_to_rekey() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    assert_eq!(n.a.rekey_peer_now(&peer_b(), true, n.now), RekeyScheduled::default());
    n.a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    assert_eq!(n.a.rekey_peer_now(&peer_b(), true, n.now), RekeyScheduled::default(), "only connecting");
}

// The reset deletes both ends' SAs (the peer is told); the next IKE SA,
// set up as after any loss of one, is a new one at both ends.
#[test]
fn a_reset_deletes_the_sas_at_both_ends_and_the_next_starts_afresh() {
    let mut n = up_pair();
    let (ike, children) = spis(&n, Side::A);
    assert_eq!(n.a.reset_peer(&peer_b(), n.now), Some(1));
    n.run();
    assert_eq!(downs(&n, Side::A), [DownReason::Reset]);
    assert_eq!(downs(&n, Side::B), [DownReason::DeletedByPeer]);
    assert_eq!((n.child_downs(Side::A), n.child_downs(Side::B)), (1, 1));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Down), "the peer stays configured");
    assert!(n.a.io.spis_in.is_empty() && n.a.io.ike_spis.is_empty(), "nothing held");
    n.connect();
    let (ike_after, children_after) = spis(&n, Side::A);
    assert_ne!(ike_after, ike);
    assert_ne!(children_after, children);
    assert_eq!(spis(&n, Side::B), (ike_after, vec![(children_after[0].1, children_after[0].0)]));
}

// The reset's Delete is lost: B still holds the old SAs, and the next IKE
// SA's INITIAL_CONTACT clears them.
#[test]
fn after_a_reset_whose_delete_was_lost_initial_contact_clears_the_peers_old_sas() {
    let mut n = up_pair();
    n.drop = Box::new(|side, _| side == Side::A);
    n.a.reset_peer(&peer_b(), n.now);
    n.run();
    n.drop = Box::new(|_, _| false);
    assert_eq!(n.b.sas.len(), 1, "B did not hear of it");
    n.connect();
    assert_eq!(downs(&n, Side::B), [DownReason::Replaced]);
    assert_eq!((n.a.sas.len(), n.b.sas.len()), (1, 1));
    assert_eq!(spis(&n, Side::A).0, spis(&n, Side::B).0);
}

// A reset while our IKE SA rekey is out is refused: the peer may hold the
// new SA already and would take the old one's Delete as the rekey's end.
// Once the rekey is over, the reset goes ahead and leaves no SA at B.
#[test]
fn a_reset_waits_while_an_ike_rekey_is_in_flight() {
    let mut n = up_pair();
    n.a.rekey_peer_now(&peer_b(), true, n.now);
    // B's answer is lost: the rekey stays in flight at A.
    n.drop = Box::new(|side, _| side == Side::B);
    n.a.handle_timeout(n.now);
    n.run();
    assert_eq!(n.a.reset_peer(&peer_b(), n.now), None, "refused while the rekey is out");
    assert_eq!(n.b.sas.len(), 2, "B holds the old SA and the new one");
    n.drop = Box::new(|_, _| false);
    n.advance(Duration::from_secs(30));
    assert_eq!(n.a.reset_peer(&peer_b(), n.now), Some(1), "the rekey is over");
    n.run();
    assert!(n.b.sas.values().all(|sa| !sa.up), "B holds no SA up: {:?}", n.b.status(&peer_a()).map(|s| s.state));
}

//! After establishment: liveness checks, deletes, dead peers, restarts.

use std::net::SocketAddr;
use std::time::Duration;

use super::net::*;
use crate::ids::{ExchangeType, NAT_T_PORT};
use crate::wire::message::Message;
use crate::{DownReason, Endpoint, Event, IkeState};

/// A checks liveness every `dpd`, B never.
fn up_pair(dpd: Duration) -> Net {
    let mut cfg = config_a();
    cfg.dpd_interval = dpd;
    let mut cfg_b = mirror(&cfg);
    cfg_b.dpd_interval = Duration::ZERO;
    let mut n = Net::new(cfg, cfg_b);
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    n
}

fn informational_requests(n: &Net, side: Side) -> usize {
    n.log
        .iter()
        .filter(|(s, t)| {
            let h = Message::parse(&t.data).expect("parses").header;
            *s == side && h.exchange == ExchangeType::Informational && !h.is_response()
        })
        .count()
}

fn downs(n: &Net, side: Side) -> (Vec<DownReason>, usize) {
    let ev = n.events(side);
    let ike = ev
        .iter()
        .filter_map(|e| if let Event::IkeDown { reason, .. } = e { Some(reason.clone()) } else { None })
        .collect();
    let child = ev.iter().filter(|e| matches!(e, Event::ChildDown { .. })).count();
    (ike, child)
}

#[test]
fn liveness_checks_run_only_when_the_peer_is_quiet_and_keep_a_live_peer() {
    let mut n = up_pair(Duration::from_secs(10));
    n.advance(Duration::from_secs(35));
    assert_eq!(informational_requests(&n, Side::A), 3, "one check per quiet 10 s");
    assert_eq!(informational_requests(&n, Side::B), 0);
    assert_eq!(downs(&n, Side::A), (vec![], 0));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Established));
}

#[test]
fn a_silent_peer_is_declared_dead_with_all_its_child_sas() {
    let mut n = up_pair(Duration::from_secs(10));
    n.drop = Box::new(|side, _| side == Side::B);
    // Quiet for 10 s, then tries at 0, 0.5, 1.5, 3.5 and 7.5 s of a
    // liveness check that gives up after one interval; a restart 5 s later.
    n.advance(Duration::from_secs(10 + 9));
    assert_eq!(downs(&n, Side::A), (vec![], 0), "still within the check's interval");
    n.advance(Duration::from_secs(1) + Duration::from_millis(100));
    assert_eq!(downs(&n, Side::A), (vec![DownReason::PeerDead], 1));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Down));
    n.advance(Duration::from_secs(5));
    let (spi_in, _, _, _) = child_keys(n.child_ups(Side::A)[0]);
    assert!(n.events_a.iter().any(|e| matches!(e, Event::ChildDown { spi_in: s, .. } if *s == spi_in)));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.state), Some(IkeState::Connecting), "restarted");
}

#[test]
fn a_dead_peer_is_reconnected_when_it_comes_back() {
    let mut n = up_pair(Duration::from_secs(10));
    n.drop = Box::new(|side, _| side == Side::B);
    n.advance(Duration::from_secs(30));
    n.drop = Box::new(|_, _| false);
    n.advance(Duration::from_secs(30));
    assert_eq!(n.ike_ups(Side::A), 2);
    // The new IKE SA carried INITIAL_CONTACT, so B dropped its stale one.
    assert!(downs(&n, Side::B).0.contains(&DownReason::Replaced));
    assert_eq!(n.a.status(&peer_b()).map(|s| s.children.len()), Some(1));
    assert_eq!(n.b.status(&peer_a()).map(|s| s.children.len()), Some(1));
}

#[test]
fn removing_a_peer_deletes_its_sas_on_both_ends() {
    let mut n = up_pair(Duration::ZERO);
    n.a.remove_peer(&peer_b(), n.now);
    n.run();
    assert_eq!(downs(&n, Side::A), (vec![DownReason::DeletedLocally], 1));
    assert_eq!(downs(&n, Side::B), (vec![DownReason::DeletedByPeer], 1));
    assert!(n.a.status(&peer_b()).is_none());
    assert_eq!(n.b.status(&peer_a()).map(|s| s.state), Some(IkeState::Down));
}

// A's liveness check is answered by B but the answer is still on its
// way when the peer is removed: the Delete goes out with the next message
// ID (`delete_now` says why), and B, which expects that ID, deletes its
// side at once rather than after its own liveness checks.
#[test]
fn a_delete_beside_a_request_in_flight_still_reaches_the_peer() {
    let mut n = up_pair(Duration::from_secs(10));
    n.drop = Box::new(|side, t| {
        let h = crate::wire::header::Header::parse(&t.data).expect("header");
        side == Side::B && h.flags & crate::ids::flags::RESPONSE != 0
    });
    n.advance(Duration::from_millis(10_500));
    assert!(n.a.sas.values().any(|sa| sa.pending.is_some()), "the liveness check's answer is lost");
    n.a.remove_peer(&peer_b(), n.now);
    n.run();
    assert_eq!(downs(&n, Side::A), (vec![DownReason::DeletedLocally], 1));
    assert_eq!(downs(&n, Side::B), (vec![DownReason::DeletedByPeer], 1));
    assert!(n.a.status(&peer_b()).is_none());
}

#[test]
fn initial_contact_clears_the_old_sas_after_a_restart() {
    let mut n = up_pair(Duration::ZERO);
    let (old_b_in, _, _, _) = child_keys(n.child_ups(Side::B)[0]);
    // A restarts: a fresh endpoint that knows nothing of the old SAs.
    n.a = Endpoint::new(Box::new(TestRng(0x5555_aaaa_1234_0001)));
    n.a.set_peer(peer_b(), config_a(), n.now);
    n.events_a.clear();
    n.connect();
    assert_eq!(n.ike_ups(Side::A), 1);
    assert_eq!(downs(&n, Side::B).0, vec![DownReason::Replaced]);
    assert!(n.events_b.iter().any(|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == old_b_in)));
    assert_eq!(n.child_ups(Side::B).len(), 2);
    assert_eq!(n.b.status(&peer_a()).map(|s| s.children.len()), Some(1));
}

#[test]
fn requests_outside_the_window_are_dropped() {
    let mut n = up_pair(Duration::ZERO);
    let from = std::net::SocketAddr::new(A_IP, 500);
    let to = std::net::SocketAddr::new(B_IP, 500);
    let forge = |n: &mut Net, id: u32| {
        let sa = n.a.sas.values().next().expect("A's SA");
        sa.seal(&mut n.a.io, sa.header(ExchangeType::Informational, false, id), &[]).expect("sealed")
    };
    let ahead = forge(&mut n, 7);
    n.b.handle(n.now, to, from, &ahead);
    assert!(n.b.poll_transmit().is_none(), "ID 7 while 2 is expected");
    let next = forge(&mut n, 2);
    n.b.handle(n.now, to, from, &next);
    assert!(n.b.poll_transmit().is_some(), "the expected ID is answered");
    // A forged message that does not authenticate changes nothing.
    let mut bad = forge(&mut n, 3);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    n.b.handle(n.now, to, from, &bad);
    assert!(n.b.poll_transmit().is_none());
    let good = forge(&mut n, 3);
    n.b.handle(n.now, to, from, &good);
    assert!(n.b.poll_transmit().is_some(), "ID 3 still expected after the forgery");
}

/// An INFORMATIONAL request sealed by A's SA with its next message ID, as
/// if A sent it, for the test to deliver from anywhere.
fn forge_check(n: &mut Net) -> Vec<u8> {
    sealed_check(&mut n.a)
}

/// An INFORMATIONAL request sealed by `from`'s one SA with its next ID.
fn sealed_check(from: &mut crate::Endpoint) -> Vec<u8> {
    let sa = from.sas.values_mut().next().expect("an SA");
    let id = sa.next_id;
    sa.next_id += 1;
    sa.seal(&mut from.io, sa.header(ExchangeType::Informational, false, id), &[]).expect("sealed")
}

fn b_path(n: &Net) -> crate::sa::Path {
    n.b.sas.values().next().expect("B's SA").path
}

// RFC 7296 §2.11: a response goes to where its request came from, from
// where it arrived, not along the SA's path, which stays as it was (only
// a NAT in front of the peer makes the SA follow it).
#[test]
fn a_request_from_another_port_is_answered_there() {
    let mut n = up_pair(Duration::ZERO);
    let path = b_path(&n);
    assert_eq!((path.remote, path.local_port), (SocketAddr::new(A_IP, 500), 500));
    let at = SocketAddr::new(B_IP, 500);
    let check = forge_check(&mut n);
    n.b.handle(n.now, at, SocketAddr::new(A_IP, 1500), &check);
    let answer = n.b.poll_transmit().expect("answered");
    assert_eq!((answer.remote, answer.local, answer.local_port), (SocketAddr::new(A_IP, 1500), Some(B_IP), 500));
    // Its retransmission gets the cached response the way it came in turn.
    n.b.handle(n.now, at, SocketAddr::new(A_IP, 1501), &check);
    let again = n.b.poll_transmit().expect("answered again");
    assert_eq!((again.remote, again.local_port, &again.data), (SocketAddr::new(A_IP, 1501), 500, &answer.data));
    // A forged one sends nothing anywhere.
    let mut forged = check;
    let last = forged.len() - 1;
    forged[last] ^= 1;
    n.b.handle(n.now, at, SocketAddr::new(NAT_IP, 500), &forged);
    assert!(n.b.poll_transmit().is_none());
    assert_eq!(b_path(&n), path, "no roaming without NAT");
}

// A peer that moves IKE to 4500 (RFC 7296 §2.23) is followed there though
// nothing else moves the SA without a NAT in front of the peer.
#[test]
fn a_peers_move_to_4500_is_followed_without_roaming() {
    let mut n = up_pair(Duration::ZERO);
    assert_eq!((b_path(&n).remote, b_path(&n).local_port), (SocketAddr::new(A_IP, 500), 500));
    let at = SocketAddr::new(B_IP, NAT_T_PORT);
    let moved = SocketAddr::new(A_IP, NAT_T_PORT);
    let check = forge_check(&mut n);
    n.b.handle(n.now, at, moved, &check);
    assert!(n.b.poll_transmit().is_some(), "answered");
    assert_eq!((b_path(&n).remote, b_path(&n).local_port), (moved, NAT_T_PORT));
    let check = forge_check(&mut n);
    n.b.handle(n.now, at, SocketAddr::new(A_IP, 4501), &check);
    assert!(n.b.poll_transmit().is_some(), "answered");
    assert_eq!(b_path(&n).remote, moved, "and stays there");
}

// With NAT-T the response goes back on 4500 (the driver adds the non-ESP
// marker) to wherever the NAT now maps A, and the SA follows.
#[test]
fn behind_a_nat_a_request_is_answered_on_4500_where_it_came_from() {
    let mut n = Net::connected_through_nat(config_a());
    assert_eq!(n.ike_ups(Side::B), 1);
    let check = forge_check(&mut n);
    let rebound = SocketAddr::new(NAT_IP, 45000);
    n.b.handle(n.now, SocketAddr::new(B_IP, NAT_T_PORT), rebound, &check);
    let answer = n.b.poll_transmit().expect("answered");
    assert_eq!((answer.remote, answer.local, answer.local_port), (rebound, Some(B_IP), NAT_T_PORT));
    assert_eq!((b_path(&n).remote, b_path(&n).local_port), (rebound, NAT_T_PORT));
    n.collect();
    let moved =
        n.events_b.iter().filter_map(|e| if let Event::PeerMoved { remote, .. } = e { Some(*remote) } else { None });
    assert_eq!(moved.collect::<Vec<_>>(), vec![rebound], "the data plane is told");
    // Where ESP found A moves the IKE SA too; the same address is no move.
    let again = SocketAddr::new(NAT_IP, 45001);
    assert!(n.b.peer_moved(&peer_a(), again, n.now));
    assert!(!n.b.peer_moved(&peer_a(), again, n.now));
    assert_eq!(b_path(&n).remote, again);
}

// RFC 7296 §2.23: only the end that is not behind the NAT follows the
// other's address; A, behind it, answers a request from elsewhere there
// but keeps B's address, and its child SAs do not roam either.
#[test]
fn behind_a_nat_the_peers_address_is_not_followed() {
    let mut n = Net::connected_through_nat(config_a());
    let roams = |n: &Net, side| {
        n.events(side).iter().find_map(|e| if let Event::ChildUp { roams, .. } = e { Some(*roams) } else { None })
    };
    assert_eq!((roams(&n, Side::A), roams(&n, Side::B)), (Some(false), Some(true)));
    let a_path = |n: &Net| n.a.sas.values().next().expect("A's SA").path;
    let before = a_path(&n);
    assert_eq!(before.remote, SocketAddr::new(B_IP, NAT_T_PORT));
    let check = sealed_check(&mut n.b);
    let elsewhere = SocketAddr::new("198.18.0.99".parse().expect("addr"), 4501);
    n.a.handle(n.now, SocketAddr::new(A_IP, NAT_T_PORT), elsewhere, &check);
    let answer = n.a.poll_transmit().expect("answered");
    assert_eq!(answer.remote, elsewhere, "answered where the request came from");
    assert_eq!(a_path(&n), before, "but B's address is kept");
    assert!(!n.a.peer_moved(&peer_b(), elsewhere, n.now), "also when ESP came from there");
    assert_eq!(a_path(&n), before);
    n.collect();
    assert!(!n.events_a.iter().any(|e| matches!(e, Event::PeerMoved { .. })));
}

#[test]
fn failures_print_as_one_line() {
    use crate::Failure;
    for f in [
        Failure::AuthenticationFailed { by_peer: true },
        Failure::NoProposalChosen { offered: "aes256gcm16-prfsha256-x25519".into() },
        Failure::TsUnacceptable { offered: "10.1.0.0/16 === 10.2.0.0/16".into() },
        Failure::Timeout,
        Failure::InvalidKe { requested: 19 },
        Failure::IdentityMismatch { expected: "b.test".into(), received: "c.test".into() },
    ] {
        let line = f.to_string();
        assert!(!line.contains('\n') && line.len() > 20, "{line}");
    }
}

// Both ends delete the same child SA at once and the Deletes cross
// (RFC 7296 §1.4.1): each answer MUST NOT carry a Delete for it, and each
// end reports it down once.
#[test]
fn crossing_deletes_of_one_child_sa_are_answered_without_deletes() {
    let mut n = up_pair(Duration::ZERO);
    let (a_in, b_in) = (child_keys(n.child_ups(Side::A)[0]).0, child_keys(n.child_ups(Side::B)[0]).0);
    let sent = n.log.len();
    assert!(n.a.delete_child(a_in, n.now));
    assert!(n.b.delete_child(b_in, n.now));
    n.run();
    let mut answers = 0;
    for (side, t) in &n.log[sent..] {
        let msg = Message::parse(&t.data).expect("parses");
        if msg.header.flags & crate::ids::flags::RESPONSE == 0 || msg.header.exchange != ExchangeType::Informational {
            continue;
        }
        // Opened with the other end's keys: it receives this answer.
        let reader = if *side == Side::A { &n.b } else { &n.a };
        let sa = reader.sas.values().next().expect("IKE SA");
        let payloads = sa.open(&t.data, &msg).expect("sealed").expect("well formed");
        assert!(
            !payloads.iter().any(|p| matches!(p, crate::wire::payload::Payload::Delete(_))),
            "{side:?}: {payloads:?}"
        );
        answers += 1;
    }
    assert_eq!(answers, 2, "each Delete was answered");
    for (side, spi) in [(Side::A, a_in), (Side::B, b_in)] {
        let downs = n.events(side).iter().filter(|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == spi));
        assert_eq!(downs.count(), 1, "{side:?}");
    }
}

// A child SA whose Delete goes out stops sending first and goes only
// when the peer answers: the data plane then never hands sending over to
// it while it is on its way out, and still opens what the peer sent on it
// before the Delete arrived.
#[test]
fn a_child_sa_being_deleted_stops_sending_before_it_goes() {
    let mut n = up_pair(Duration::ZERO);
    let a_in = child_keys(n.child_ups(Side::A)[0]).0;
    let before = n.events_a.len();
    assert!(n.a.delete_child(a_in, n.now));
    n.collect();
    let stop = |e: &Event| matches!(e, Event::ChildStopSending { spi_in, .. } if *spi_in == a_in);
    let down = |e: &Event| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == a_in);
    assert!(n.events_a[before..].iter().any(stop), "stopped sending when the Delete left");
    assert!(!n.events_a[before..].iter().any(down), "still there before the answer");
    n.run();
    let later: Vec<&Event> = n.events_a[before..].iter().collect();
    let (s, d) = (later.iter().position(|e| stop(e)), later.iter().position(|e| down(e)));
    assert!(matches!((s, d), (Some(s), Some(d)) if s < d), "{later:?}");
}

// ESP finds A at a new mapping while both ends rekey the IKE SA at once.
// B then holds the old SA and the one it made answering A's rekey, and
// makes its own from the old one's path when A answers; any of them may
// be the one that survives the collision, so every one of them moves,
// and the survivor sends to where A is now.
#[test]
fn a_move_in_an_ike_rekey_collision_stays_with_the_sa_that_survives() {
    // The nonces decide which SA survives: seeds where each side's does.
    let mut survivors = std::collections::HashSet::new();
    for seed in 0..6u64 {
        survivors.insert(move_in_an_ike_rekey_collision(seed));
    }
    assert_eq!(survivors.len(), 2, "both ends' new SAs survived in some run");
}

/// The collision above with A's nonces from `seed`; returns whether the
/// IKE SA that survived is the one A initiated.
fn move_in_an_ike_rekey_collision(seed: u64) -> bool {
    let mut cfg = config_a();
    cfg.ike_lifetime = Duration::from_secs(1000);
    cfg.rekey_jitter_percent = 0;
    let mut cfg_b = mirror(&cfg);
    cfg_b.remote_addrs = vec![NAT_IP];
    let mut n = Net::new(cfg.clone(), cfg_b);
    n.nat = true;
    n.a = Endpoint::new(Box::new(TestRng(0x4444 + seed)));
    n.a.set_peer(peer_b(), cfg, n.now);
    n.connect();
    let first = n.a.status(&peer_b()).expect("A").spi_i;
    for sa in n.a.sas.values_mut().chain(n.b.sas.values_mut()) {
        sa.rekey_at = Some(n.now);
    }
    n.a.handle_timeout(n.now);
    n.b.handle_timeout(n.now);
    // A's rekey reaches B through the NAT while B's is on its way to A.
    let rekey_a = n.a.poll_transmit().expect("A's rekey");
    n.b.handle(n.now, rekey_a.remote, SocketAddr::new(NAT_IP, rekey_a.local_port + 40000), &rekey_a.data);
    assert_eq!(n.b.sas.len(), 2, "B holds the old SA and the one it answered with");
    let rebound = SocketAddr::new(NAT_IP, 44501);
    assert!(n.b.peer_moved(&peer_a(), rebound, n.now));
    assert!(n.b.sas.values().all(|sa| sa.path.remote == rebound), "seed {seed}: every SA of A moved");
    n.run();
    n.advance(Duration::from_secs(60));
    let kept = n.assert_one_ike_sa_kept(&format!("seed {seed}"));
    assert_eq!(b_path(&n).remote, rebound, "seed {seed}: the survivor sends where A is now");
    assert_ne!(kept, first, "seed {seed}: rekeyed");
    n.a.sas.values().next().expect("A's SA").initiator
}

/// What the data plane holds after `events`, played as it takes them
/// (`ChildSend`; a removed sending SA hands over to the pending one, else
/// to another installed SA that may send, as ESP's `remove_child` and
/// `stop_sending` do):
/// the (inbound, outbound) SPIs installed, and the outbound SPIs it sends
/// with now or will once the peer uses the pending SA.
pub(super) fn data_plane(events: &[Event]) -> (Vec<(u32, u32)>, Vec<u32>) {
    let (mut installed, mut sending, mut pending) = (Vec::new(), None, None);
    let mut receive_only = Vec::new();
    for e in events {
        match e {
            Event::ChildUp { keys, send, .. } => {
                installed.push((keys.spi_in, keys.spi_out));
                match send {
                    crate::ChildSend::Now => (sending, pending) = (Some(keys.spi_out), None),
                    crate::ChildSend::OnceUsed if sending.is_none() => sending = Some(keys.spi_out),
                    crate::ChildSend::OnceUsed => pending = Some(keys.spi_out),
                    crate::ChildSend::Never => receive_only.push(keys.spi_out),
                }
            }
            Event::ChildDown { spi_in, spi_out, .. } => {
                installed.retain(|&(i, _)| i != *spi_in);
                if pending == Some(*spi_out) {
                    pending = None;
                }
                if sending == Some(*spi_out) {
                    sending = pending.take().or(stand_in(&installed, &receive_only, *spi_out));
                }
            }
            // As `ChildDown` for sending, but kept to receive on; and kept
            // sending on when nothing else may.
            Event::ChildStopSending { spi_in, .. } => {
                let Some(&(_, spi_out)) = installed.iter().find(|&&(i, _)| i == *spi_in) else { continue };
                if pending == Some(spi_out) {
                    pending = None;
                }
                if sending == Some(spi_out) {
                    sending = pending.take().or(stand_in(&installed, &receive_only, spi_out)).or(sending);
                }
                if sending != Some(spi_out) {
                    receive_only.push(spi_out);
                }
            }
            _ => {}
        }
    }
    (installed, sending.into_iter().chain(pending).collect())
}

/// The SA that takes over sending from `leaving`: of those installed that
/// may send, the one with the highest inbound SPI, as the data plane picks.
fn stand_in(installed: &[(u32, u32)], receive_only: &[u32], leaving: u32) -> Option<u32> {
    let may_send = installed.iter().filter(|&&(_, o)| o != leaving && !receive_only.contains(&o));
    may_send.max_by_key(|&&(i, _)| i).map(|&(_, o)| o)
}

// Both ends initiate at once (each has the other's address, as two site
// gateways started together): each IKE_AUTH request carries
// INITIAL_CONTACT, since neither end has an SA up yet, and they cross.
// Neither may take the other's to mean its own SA under way is stale:
// each end must be left sending on SAs the other end has installed. Then
// the duplicate goes (`duplicates.rs`): the end that initiated the SA
// with the lowest nonce deletes it, and one IKE SA with one child SA is
// left, the same at both ends, through hours of liveness checks and
// rekeys. The seeds give each end's SA the lowest nonce in some run.
#[test]
fn initiations_that_cross_leave_one_ike_sa_both_ends_send_on() {
    let mut deleters = Vec::new();
    for seed in 0..8u64 {
        let side = crossing_initiations(seed);
        if !deleters.contains(&side) {
            deleters.push(side);
        }
    }
    assert_eq!(deleters.len(), 2, "each end deleted the duplicate in some run");
}

/// Crossing initiations with A's randomness from `seed`; returns which
/// end deleted the duplicate.
fn crossing_initiations(seed: u64) -> Side {
    let cfg = config_a();
    let mut cfg_b = mirror(&cfg);
    cfg_b.initiate = true;
    let mut n = Net::new(cfg.clone(), cfg_b);
    n.a = Endpoint::new(Box::new(TestRng(0x5151 + seed)));
    n.a.set_peer(peer_b(), cfg, n.now);
    n.a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    n.b.connect(&peer_a(), SocketAddr::new(A_IP, 500), Some(B_IP), n.now);
    n.run();
    let auths = n.log.iter().filter(|(_, t)| {
        let Ok(m) = Message::parse(&t.data) else { return false };
        m.header.exchange == ExchangeType::IkeAuth && !m.header.is_response()
    });
    assert_eq!(auths.count(), 2, "seed {seed}: both ends sent IKE_AUTH");
    let check = |n: &Net, when: &str| {
        let (a, b) = (data_plane(&n.events_a), data_plane(&n.events_b));
        for (side, (installed, sends), (held, _)) in [("A", &a, &b), ("B", &b, &a)] {
            assert_eq!(installed.len(), 1, "seed {seed}, {when}: {side} holds one child SA: {installed:08x?}");
            assert!(!sends.is_empty(), "seed {seed}, {when}: {side} has nothing to send on");
            for spi in sends {
                assert!(
                    held.iter().any(|&(i, _)| i == *spi),
                    "seed {seed}, {when}: {side} sends on {spi:08x}, not held: {held:08x?}"
                );
            }
        }
        let up = |e: &Endpoint| e.sas.iter().filter(|(_, sa)| sa.up).map(|(_, sa)| (sa.spi_i, sa.spi_r)).collect();
        let (at_a, at_b): (Vec<_>, Vec<_>) = (up(&n.a), up(&n.b));
        assert_eq!(at_a.len(), 1, "seed {seed}, {when}: one IKE SA up at A");
        assert_eq!(at_a, at_b, "seed {seed}, {when}: the same IKE SA at both ends");
    };
    check(&n, "at once");
    let downs = |events: &[Event]| -> Vec<DownReason> {
        events
            .iter()
            .filter_map(|e| if let Event::IkeDown { reason, .. } = e { Some(reason.clone()) } else { None })
            .collect()
    };
    let (down_a, down_b) = (downs(&n.events_a), downs(&n.events_b));
    let deleter = match (down_a.as_slice(), down_b.as_slice()) {
        ([DownReason::Duplicate], [DownReason::DeletedByPeer]) => Side::A,
        ([DownReason::DeletedByPeer], [DownReason::Duplicate]) => Side::B,
        other => panic!("seed {seed}: one end deletes the duplicate, the other is told: {other:?}"),
    };
    // The deleter stopped sending on the duplicate's child before its
    // Delete went, onto the child that stays, and received on it until
    // the answer.
    let events = if deleter == Side::A { &n.events_a } else { &n.events_b };
    let stop = events.iter().position(|e| matches!(e, Event::ChildStopSending { .. }));
    let stop = stop.unwrap_or_else(|| panic!("seed {seed}: {deleter:?} stopped sending on the duplicate's child"));
    let Event::ChildStopSending { spi_in: retired, .. } = events[stop] else { unreachable!() };
    let down = events.iter().position(|e| matches!(e, Event::ChildDown { spi_in, .. } if *spi_in == retired));
    assert!(down.is_some_and(|d| d > stop), "seed {seed}: removed after, not before");
    let (installed, sends) = data_plane(&events[..=stop]);
    let retired_out = installed.iter().find(|&&(i, _)| i == retired).map(|&(_, o)| o);
    assert!(retired_out.is_some() && !sends.contains(&retired_out.unwrap_or(0)), "seed {seed}: {sends:08x?}");
    assert_eq!(sends.len(), 1, "seed {seed}: the child that stays sends");
    for (side, peer) in [(Side::A, peer_b()), (Side::B, peer_a())] {
        let endpoint = if side == Side::A { &n.a } else { &n.b };
        assert_eq!(endpoint.status(&peer).map(|s| s.state), Some(IkeState::Established), "{side:?}");
    }
    // And it stays so: liveness checks, rekeys, no other SA lost.
    n.advance(Duration::from_secs(3 * 3600));
    check(&n, "three hours on");
    assert_eq!(downs(&n.events_a).len() + downs(&n.events_b).len(), 2, "seed {seed}: only the duplicate went");
    deleter
}

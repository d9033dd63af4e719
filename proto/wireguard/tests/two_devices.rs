//! Two Causeway devices driven in memory with injected time: long runs of
//! protocol time, the timers' failure paths, and concurrent use.

mod support;

use std::sync::Arc;
use std::time::Duration;

use causeway_wireguard::{Device, Error, PublicKey, Received, StaticSecret, REJECT_AFTER_TIME};
use rand_core::OsRng;
use support::*;

fn two(keepalive: u16) -> (Clock, CausewayEnd, CausewayEnd) {
    let a = StaticSecret::random(&mut OsRng);
    let b = StaticSecret::random(&mut OsRng);
    let (pa, pb) = (a.public_key(), b.public_key());
    (Clock::new(), CausewayEnd::new(a, pb, None, keepalive, addr(1)), CausewayEnd::new(b, pa, None, keepalive, addr(2)))
}

fn pkt(n: u32) -> Vec<u8> {
    ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &n.to_le_bytes())
}

/// Two hours of protocol time, traffic both ways every 5 s, timers polled
/// every second: sessions keep renewing, none outlives REJECT_AFTER_TIME,
/// nothing is lost. Runs in milliseconds.
#[test]
fn two_hours_of_traffic_with_rekeys() {
    let (mut clock, mut a, mut b) = two(0);
    let mut sent = 0u32;
    let mut sessions = std::collections::HashSet::new();
    for second in 0..7200u32 {
        if second % 5 == 0 {
            let out = a.send(&pkt(sent), &clock);
            pump(&mut a, &mut b, out, &clock);
            let out = b.send(&pkt(sent), &clock);
            pump(&mut b, &mut a, out, &clock);
            sent += 1;
        }
        let out = a.tick(&clock);
        pump(&mut a, &mut b, out, &clock);
        let out = b.tick(&clock);
        pump(&mut b, &mut a, out, &clock);
        if let Some(kp) = a.peer.current_keypair() {
            assert!(!kp.is_expired(clock.now), "a current session outlived REJECT_AFTER_TIME at {second}s");
            sessions.insert(kp.local_index);
        }
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(b.delivered.len(), sent as usize);
    assert_eq!(a.delivered.len(), sent as usize);
    assert!(b.delivered.iter().enumerate().all(|(i, p)| *p == pkt(i as u32)));
    // One renewal per REKEY_AFTER_TIME or so: 7200 s / 120 s = 60.
    assert!((50..=75).contains(&sessions.len()), "{} sessions", sessions.len());
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
    // Old sessions' indices are reclaimed: current, previous, maybe next.
    assert!(a.dev.index_count() <= 3, "{} live indices", a.dev.index_count());
}

/// A sends once to start the session, then only B sends, and A never
/// renews it (as when both ends send on responder sessions after a
/// crossing). B, the responder, renews the session itself before
/// REJECT_AFTER_TIME, so it never has to hold a packet for want of one.
#[test]
fn a_responder_renews_a_session_nobody_else_renews() {
    let (mut clock, mut a, mut b) = two(0);
    a.ignore_rekeys = true;
    let out = a.send(&pkt(0), &clock);
    pump(&mut a, &mut b, out, &clock);
    let first = b.peer.current_keypair().expect("b confirmed a's session");
    assert!(!first.is_initiator);
    let mut initiations = 0;
    for second in 1..400u32 {
        clock.advance(Duration::from_secs(1));
        let out = b.send(&pkt(second), &clock);
        assert!(b.queued.is_empty(), "b had no session to send on at {second}s");
        initiations += out.iter().filter(|d| msg_type(d) == 1).count();
        pump(&mut b, &mut a, out, &clock);
        let out = a.tick(&clock);
        pump(&mut a, &mut b, out, &clock);
        let out = b.tick(&clock);
        pump(&mut b, &mut a, out, &clock);
    }
    assert_eq!(a.delivered.len(), 399, "every packet of b's arrived");
    // 170 s on the responder's session, then b's own sessions renew every
    // REKEY_AFTER_TIME: at about 170 and 290 s.
    assert!((2..=3).contains(&initiations), "{initiations} initiations from b");
    let now = b.peer.current_keypair().unwrap();
    assert!(now.is_initiator, "b sends on a session it initiated");
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
}

/// The peer never answers: retries every 5 s for 90 s, then gives up and
/// drops the queue; new data starts a fresh series of attempts.
#[test]
fn unreachable_peer_gives_up_after_90s() {
    let (mut clock, mut a, _b) = two(0);
    let mut initiations = a.send(&pkt(0), &clock).len();
    a.send(&pkt(1), &clock);
    assert_eq!(a.queued.len(), 2);
    for _ in 0..200 {
        clock.advance(Duration::from_millis(500));
        initiations += a.tick(&clock).iter().filter(|d| msg_type(d) == 1).count();
    }
    assert!((17..=19).contains(&initiations), "{initiations} initiations in 100 s");
    assert!(a.queued.is_empty(), "queued packets dropped on giving up");
    assert!(!a.peer.handshake_in_flight());
    assert_eq!(a.dev.index_count(), 0, "the abandoned handshake's index is freed");
    clock.advance(Duration::from_secs(30));
    assert!(a.tick(&clock).is_empty(), "no attempts without new data");
    assert_eq!(msg_type(&a.send(&pkt(2), &clock)[0]), 1);
}

/// With no new handshake for 3 × REJECT_AFTER_TIME, every key is erased.
#[test]
fn keys_are_erased_after_540s_without_a_new_session() {
    let (mut clock, mut a, mut b) = two(0);
    let out = a.send(&pkt(0), &clock);
    pump(&mut a, &mut b, out, &clock);
    assert!(a.peer.current_keypair().is_some());
    for _ in 0..(3 * REJECT_AFTER_TIME.as_secs() - 1) {
        clock.advance(Duration::from_secs(1));
        // The other side is gone: whatever a sends is lost.
        a.tick(&clock);
    }
    assert!(a.peer.current_keypair().is_some(), "not yet");
    clock.advance(Duration::from_secs(2));
    a.tick(&clock);
    assert!(a.peer.current_keypair().is_none());
    assert_eq!(a.dev.index_count(), 0);
}

/// A handshake that races the removal of its peer (a worker or the timer
/// still holding the peer) must leave no index behind: nothing would ever
/// remove it, and an answer to it would make a session for a peer that is
/// gone.
#[test]
fn a_removed_peer_gets_no_new_index() {
    let (clock, a, b) = two(0);
    let init = a.dev.create_initiation(&a.peer, clock.now, clock.wall()).unwrap();
    assert!(a.dev.remove_peer(a.peer.public_key()).is_some());
    assert_eq!(a.dev.index_count(), 0, "the removal took the handshake's index");
    let later = clock.now + Duration::from_secs(6);
    assert_eq!(a.dev.create_initiation(&a.peer, later, clock.wall()).unwrap_err(), Error::UnknownPeer);
    assert_eq!(a.dev.index_count(), 0);
    // B removed A meanwhile: A's initiation makes no index on B either.
    assert!(b.dev.remove_peer(b.peer.public_key()).is_some());
    let mut msg = init.to_vec();
    assert!(b.dev.receive(a.addr, &mut msg, clock.now).is_err());
    assert_eq!(b.dev.index_count(), 0);
}

#[test]
fn low_order_public_key_produces_no_handshake() {
    let dev = Device::new(Some(StaticSecret::random(&mut OsRng)));
    let peer = dev.add_peer(PublicKey::from_bytes([0u8; 32]), None, 0).unwrap();
    assert!(!peer.can_handshake());
    let clock = Clock::new();
    assert_eq!(dev.create_initiation(&peer, clock.now, clock.wall()).unwrap_err(), Error::LowOrderKey);
    assert_eq!(dev.index_count(), 0);
}

#[test]
fn own_public_key_is_not_a_peer() {
    let s = StaticSecret::random(&mut OsRng);
    let dev = Device::new(Some(s.clone()));
    assert_eq!(dev.add_peer(s.public_key(), None, 0).unwrap_err(), Error::OwnPublicKey);
}

#[test]
fn replayed_and_flooding_initiations_are_refused() {
    let (mut clock, mut a, mut b) = two(0);
    let init = a.send(&pkt(0), &clock).remove(0);
    clock.advance(Duration::from_secs(1));
    b.receive(&init, a.addr, &clock).unwrap();
    let state_after_first = b.peer.current_keypair().map(|k| k.local_index);
    clock.advance(Duration::from_secs(1));
    assert_eq!(b.receive(&init, a.addr, &clock).unwrap_err(), Error::ReplayedInitiation);
    assert_eq!(b.peer.current_keypair().map(|k| k.local_index), state_after_first);

    // Two genuine, newer initiations that reach b within 1/50 s of each other.
    clock.advance(Duration::from_secs(6));
    let second = a.dev.create_initiation(&a.peer, clock.now, clock.wall()).unwrap();
    clock.advance(Duration::from_secs(6));
    let third = a.dev.create_initiation(&a.peer, clock.now, clock.wall()).unwrap();
    b.receive(&second, a.addr, &clock).unwrap();
    assert_eq!(b.receive(&third, a.addr, &clock).unwrap_err(), Error::InitiationFlood);
    clock.advance(Duration::from_millis(25));
    b.receive(&third, a.addr, &clock).expect("accepted once the flood gap passed");
}

#[test]
fn strangers_are_refused_before_any_state_is_made() {
    let (clock, mut a, mut b) = two(0);
    // A stranger who knows b's public key: MAC1 verifies, the peer is unknown.
    let stranger = Device::new(Some(StaticSecret::random(&mut OsRng)));
    let p = stranger.add_peer(b.dev.public_key().unwrap(), None, 0).unwrap();
    let init = stranger.create_initiation(&p, clock.now, clock.wall()).unwrap();
    assert_eq!(b.receive(&init, addr(9), &clock).unwrap_err(), Error::UnknownPeer);
    // An initiation meant for someone else fails MAC1.
    let init_for_b = a.send(&pkt(0), &clock).remove(0);
    let mut c = CausewayEnd::new(StaticSecret::random(&mut OsRng), a.dev.public_key().unwrap(), None, 0, addr(3));
    assert_eq!(c.receive(&init_for_b, a.addr, &clock).unwrap_err(), Error::InvalidMac1);
    assert_eq!(b.dev.index_count(), 0);
    assert_eq!(c.dev.index_count(), 0);
}

/// Packets sealed with the old session and delivered after a rekey still
/// decrypt (the previous keypair keeps receiving).
#[test]
fn in_flight_packets_survive_a_rekey() {
    let (mut clock, mut a, mut b) = two(0);
    let out = a.send(&pkt(0), &clock);
    pump(&mut a, &mut b, out, &clock);
    let late = a.send(&pkt(1), &clock);
    clock.advance(Duration::from_secs(121));
    let out = a.send(&pkt(2), &clock);
    assert_eq!(out.len(), 2, "data plus a rekey initiation");
    pump(&mut a, &mut b, out, &clock);
    b.receive(&late[0], a.addr, &clock).expect("old-session packet after the rekey");
    assert_eq!(b.delivered, vec![pkt(0), pkt(2), pkt(1)]);
}

#[test]
fn changing_the_private_key_drops_sessions() {
    let (clock, mut a, mut b) = two(0);
    let out = a.send(&pkt(0), &clock);
    pump(&mut a, &mut b, out, &clock);
    a.dev.set_private_key(Some(StaticSecret::random(&mut OsRng)));
    assert!(a.peer.current_keypair().is_none());
    assert_eq!(a.dev.index_count(), 0);
    // With an initiation in flight, its index goes too.
    let (clock, mut a, _b) = two(0);
    assert_eq!(msg_type(&a.send(&pkt(0), &clock)[0]), 1);
    assert_eq!(a.dev.index_count(), 1);
    a.dev.set_private_key(Some(StaticSecret::random(&mut OsRng)));
    assert_eq!(a.dev.index_count(), 0, "the initiation's index is not left behind");
}

/// Key changes racing initiations on another thread (a reload while the
/// timers run): every initiation's index is removed by the key change
/// that ends it, so none is left once the last change is made.
#[test]
fn key_changes_racing_initiations_leave_no_index_behind() {
    let (_clock, a, _b) = two(0);
    let a = Arc::new(a);
    std::thread::scope(|s| {
        let initiator = s.spawn(|| {
            let mut made = 0u32;
            for i in 1..=20_000u64 {
                // Each attempt REKEY_TIMEOUT after the last, so none is refused as too soon.
                let now = causeway_wireguard::Time::from_secs(i * 6);
                made += u32::from(a.dev.create_initiation(&a.peer, now, std::time::SystemTime::now()).is_ok());
            }
            made
        });
        while !initiator.is_finished() {
            a.dev.set_private_key(Some(StaticSecret::random(&mut OsRng)));
        }
        assert!(initiator.join().unwrap() > 0, "initiations were made");
    });
    a.dev.set_private_key(Some(StaticSecret::random(&mut OsRng)));
    assert_eq!(a.dev.index_count(), 0, "an initiation's index was left behind");
}

/// One peer's packets sealed from four threads through the Device API and
/// received on four threads: every packet arrives exactly once.
#[test]
fn one_peer_from_many_threads() {
    let (clock, mut a, mut b) = two(0);
    let out = a.send(&pkt(0), &clock);
    pump(&mut a, &mut b, out, &clock);
    let now = clock.now;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let sealed: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u32)
            .map(|t| {
                let a = a.clone();
                s.spawn(move || {
                    (0..1500u32)
                        .map(|i| {
                            let p = pkt(t * 10_000 + i);
                            let mut buf = vec![0u8; p.len() + 64];
                            buf[16..16 + p.len()].copy_from_slice(&p);
                            let sealed = a.dev.seal(&a.peer, &mut buf, p.len(), MTU, now).unwrap();
                            buf.truncate(sealed.len);
                            buf
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let received: Vec<Vec<u8>> = std::thread::scope(|s| {
        let hs: Vec<_> = sealed
            .into_iter()
            .map(|batch| {
                let b = b.clone();
                s.spawn(move || {
                    batch
                        .into_iter()
                        .map(|mut m| match b.dev.receive(addr(1), &mut m, now).unwrap() {
                            Received::Data { plaintext, .. } => plaintext[..ip_len(plaintext)].to_vec(),
                            other => panic!("{other:?}"),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let unique: std::collections::HashSet<_> = received.iter().collect();
    assert_eq!(unique.len(), 6000);
}

/// Both ends start a handshake at the same moment, as two gateways
/// restarted together do, and the initiations cross on the wire. Each
/// answers the other's and keeps its own, so both complete at once: the
/// packets that started the handshakes arrive after one round trip, and
/// later data flows both ways with no timer involved.
#[test]
fn crossing_initiations_give_sessions_after_one_round_trip() {
    let (clock, mut a, mut b) = two(0);
    let init_a = a.send(&pkt(1), &clock);
    let init_b = b.send(&pkt(2), &clock);
    assert_eq!((msg_type(&init_a[0]), msg_type(&init_b[0])), (1, 1), "both initiate");
    let resp_b = b.receive(&init_a[0], a.addr, &clock).unwrap();
    let resp_a = a.receive(&init_b[0], b.addr, &clock).unwrap();
    assert_eq!((msg_type(&resp_a[0]), msg_type(&resp_b[0])), (2, 2), "each answers the other");
    pump(&mut b, &mut a, resp_b, &clock);
    pump(&mut a, &mut b, resp_a, &clock);
    assert_eq!((a.sessions_established, b.sessions_established), (1, 1), "both completed their own");
    assert_eq!(b.delivered, [pkt(1)]);
    assert_eq!(a.delivered, [pkt(2)]);
    for n in 3..10 {
        let out = a.send(&pkt(n), &clock);
        pump(&mut a, &mut b, out, &clock);
        let out = b.send(&pkt(n + 100), &clock);
        pump(&mut b, &mut a, out, &clock);
    }
    assert_eq!(b.delivered.len(), 8);
    assert_eq!(a.delivered.len(), 8);
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
    assert!(a.dev.index_count() <= 3 && b.dev.index_count() <= 3, "no handshake index left behind");
}

/// After crossing initiations, both ends must come to send on one session,
/// whichever order the messages took: each side otherwise sends on its
/// own initiator session, which the other holds only as `previous`, and
/// the next rekey (a responder's install drops `previous`, an initiator's
/// moves `current` there) lost what was in flight on it. The tie goes to
/// the initiation of the peer with the lower public key, so the two agree
/// and only one of them rekeys on time from then on.
#[test]
fn after_crossing_initiations_a_rekey_loses_nothing_in_flight() {
    for order in 0..4 {
        let (mut clock, mut a, mut b) = two(0);
        let init_a = a.send(&pkt(1), &clock);
        let init_b = b.send(&pkt(2), &clock);
        let resp_b = b.receive(&init_a[0], a.addr, &clock).unwrap();
        let resp_a = a.receive(&init_b[0], b.addr, &clock).unwrap();
        // The responses (and the data they release) in every order.
        if order & 1 == 0 {
            pump(&mut b, &mut a, resp_b, &clock);
            pump(&mut a, &mut b, resp_a, &clock);
        } else {
            pump(&mut a, &mut b, resp_a, &clock);
            pump(&mut b, &mut a, resp_b, &clock);
        }
        if order & 2 == 0 {
            std::mem::swap(&mut a, &mut b);
        }
        for n in 3..6 {
            let out = a.send(&pkt(n), &clock);
            pump(&mut a, &mut b, out, &clock);
            let out = b.send(&pkt(n + 100), &clock);
            pump(&mut b, &mut a, out, &clock);
        }
        one_session_and_rekeys_lose_nothing(&mut clock, &mut a, &mut b, 3, &format!("order {order}"));
    }
}

/// Both ends send on one session, and `rounds` rekeys follow, each with a
/// packet each way in flight on the sessions in use when it starts: all
/// arrive, and nothing is refused.
fn one_session_and_rekeys_lose_nothing(
    clock: &mut Clock,
    a: &mut CausewayEnd,
    b: &mut CausewayEnd,
    rounds: u32,
    case: &str,
) {
    let (a_now, b_now) = (a.peer.current_keypair().unwrap(), b.peer.current_keypair().unwrap());
    assert_eq!(a_now.local_index, b_now.remote_index, "{case}: both send on one session");
    for round in 0..rounds {
        let late_a = a.send(&pkt(1000 + round), clock);
        let late_b = b.send(&pkt(2000 + round), clock);
        clock.advance(Duration::from_secs(121));
        for _ in 0..3 {
            let out = a.tick(clock);
            pump(a, b, out, clock);
            let out = b.tick(clock);
            pump(b, a, out, clock);
            let out = a.send(&pkt(3000 + round), clock);
            pump(a, b, out, clock);
            let out = b.send(&pkt(4000 + round), clock);
            pump(b, a, out, clock);
            clock.advance(Duration::from_secs(1));
        }
        b.receive(&late_a[0], a.addr, clock).unwrap_or_else(|e| panic!("{case} round {round}: {e}"));
        a.receive(&late_b[0], b.addr, clock).unwrap_or_else(|e| panic!("{case} round {round}: {e}"));
    }
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{case}: {:?} {:?}", a.errors, b.errors);
}

/// A responder with a packet to send before the initiator's confirmation
/// arrives waits for it rather than start a crossing handshake of its own
/// (wireguard-go and the kernel hold initiations REKEY_TIMEOUT after a
/// response); the packet leaves once the session is confirmed.
#[test]
fn a_responder_does_not_initiate_while_its_answer_is_confirmed() {
    let (clock, mut a, mut b) = two(0);
    let init_a = a.send(&pkt(1), &clock);
    let resp_b = b.receive(&init_a[0], a.addr, &clock).unwrap();
    assert!(b.send(&pkt(2), &clock).is_empty(), "held, no initiation of its own");
    pump(&mut b, &mut a, resp_b, &clock);
    assert_eq!(b.delivered, [pkt(1)]);
    assert_eq!(a.delivered, [pkt(2)], "sent once the session was confirmed");
    assert_eq!((a.sessions_established, b.sessions_established), (1, 0), "one handshake");
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
}

/// A response holds retries back too (wireguard-go's lastSentHandshake
/// and the kernel's last_sent_handshake are set by both): A's initiation
/// is lost, B's reaches A and is answered, and A's retry, due 5 s after
/// its first, waits out REKEY_TIMEOUT after the answer instead of
/// starting a second handshake that the answered one makes needless.
#[test]
fn a_retry_waits_after_a_response_too() {
    let (mut clock, mut a, mut b) = two(0);
    let lost = a.send(&pkt(1), &clock);
    assert_eq!(msg_type(&lost[0]), 1);
    clock.advance(Duration::from_secs(4));
    let init_b = b.send(&pkt(2), &clock);
    let resp_a = a.receive(&init_b[0], b.addr, &clock).unwrap();
    // Past the retry's time (REKEY_TIMEOUT and at most 334 ms of jitter).
    clock.advance(Duration::from_millis(1_400));
    let retry = a.tick(&clock);
    assert!(retry.iter().all(|d| msg_type(d) != 1), "no initiation 1.4 s after answering one");
    // B's handshake completes, its packet confirms A's session, and A's
    // held packet leaves on it: one handshake in all.
    pump(&mut a, &mut b, resp_a, &clock);
    assert_eq!((a.delivered.as_slice(), b.delivered.as_slice()), (&[pkt(2)][..], &[pkt(1)][..]));
    assert_eq!((a.sessions_established, b.sessions_established), (0, 1), "only B's handshake");
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        assert!(a.tick(&clock).iter().all(|d| msg_type(d) != 1), "A's series ended with the session");
    }
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{:?} {:?}", a.errors, b.errors);
}

/// Under load, a sender that holds a cookie (it owns its address) still
/// gets at most a burst of 5 handshake messages through, then 20 a second:
/// each one that passes the gate costs a Diffie-Hellman, valid or not.
#[test]
fn under_load_a_source_with_a_cookie_is_rate_limited() {
    let (mut clock, mut a, mut b) = two(0);
    b.dev.load_monitor().force(true);
    let init = a.send(&pkt(1), &clock);
    let cookie = b.receive(&init[0], a.addr, &clock).unwrap();
    assert_eq!(msg_type(&cookie[0]), 3);
    a.receive(&cookie[0], b.addr, &clock).unwrap();
    clock.advance(Duration::from_secs(6));
    let with_mac2 = a.tick(&clock);
    assert_eq!(msg_type(&with_mac2[0]), 1);
    for _ in 0..10 {
        let _ = b.receive(&with_mac2[0], a.addr, &clock);
    }
    let limited = b.errors.iter().filter(|e| **e == Error::RateLimited).count();
    let replayed = b.errors.iter().filter(|e| **e == Error::ReplayedInitiation).count();
    assert_eq!((replayed, limited), (4, 5), "{:?}", b.errors);
    // Credit comes back at 20 a second.
    clock.advance(Duration::from_millis(50));
    assert_eq!(b.receive(&with_mac2[0], a.addr, &clock).unwrap_err(), Error::ReplayedInitiation);
}

#[test]
fn a_data_message_too_short_for_its_header_is_refused() {
    let dev = Device::new(Some(StaticSecret::random(&mut OsRng)));
    let clock = Clock::new();
    assert_eq!(dev.data_keypair(&[4, 0, 0, 0, 1], clock.now).unwrap_err(), Error::InvalidLength);
}

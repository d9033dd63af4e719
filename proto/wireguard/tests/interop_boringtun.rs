//! Interoperability with the independent boringtun implementation, both
//! driven in memory with injected time.

mod support;

use std::time::Duration;

use causeway_wireguard::{CookieGenerator, Error, PresharedKey, PublicKey, StaticSecret, Time};
use rand_core::OsRng;
use support::*;

struct Pair {
    clock: Clock,
    cw: CausewayEnd,
    bt: BoringEnd,
}

fn pair(psk: bool, cw_keepalive: u16, bt_rate_limit: Option<u64>) -> Pair {
    let clock = Clock::new();
    let cw_secret = StaticSecret::random(&mut OsRng);
    let bt_secret = StaticSecret::random(&mut OsRng);
    let psk = psk.then(|| PresharedKey::random(&mut OsRng));
    let bt = BoringEnd::new(&bt_secret, &cw_secret.public_key(), psk.as_ref(), None, bt_rate_limit, addr(2));
    let cw = CausewayEnd::new(cw_secret, bt_secret.public_key(), psk, cw_keepalive, addr(1));
    Pair { clock, cw, bt }
}

fn pkt(n: u32) -> Vec<u8> {
    ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], format!("packet {n}").as_bytes())
}

fn reply(n: u32) -> Vec<u8> {
    ipv4_packet([10, 0, 0, 2], [10, 0, 0, 1], format!("reply {n}").as_bytes())
}

fn data_both_ways(p: &mut Pair, n: u32) {
    let out = p.cw.send(&pkt(n), &p.clock);
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    let out = p.bt.send(&reply(n));
    pump(&mut p.bt, &mut p.cw, out, &p.clock);
}

fn causeway_initiates(psk: bool) {
    let mut p = pair(psk, 0, None);
    let out = p.cw.send(&pkt(1), &p.clock);
    assert_eq!(out.len(), 1);
    assert_eq!(msg_type(&out[0]), 1, "first packet triggers an initiation");
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    assert_eq!(p.cw.sessions_established, 1);
    assert_eq!(p.bt.delivered, vec![pkt(1)], "queued packet flushed after the handshake");
    let out = p.bt.send(&reply(1));
    pump(&mut p.bt, &mut p.cw, out, &p.clock);
    assert_eq!(p.cw.delivered, vec![reply(1)]);
    assert!(p.cw.peer.stats().last_handshake.is_some());
    assert!(p.cw.errors.is_empty() && p.bt.errors.is_empty(), "{:?} {:?}", p.cw.errors, p.bt.errors);
}

fn boringtun_initiates(psk: bool) {
    let mut p = pair(psk, 0, None);
    let out = p.bt.send(&reply(1));
    assert_eq!(msg_type(&out[0]), 1);
    pump(&mut p.bt, &mut p.cw, out, &p.clock);
    assert_eq!(p.cw.delivered, vec![reply(1)]);
    // The responder's session is confirmed by that data; now it can send.
    assert!(p.cw.peer.keypair_for_sending(p.clock.now).is_ok());
    assert!(p.cw.peer.stats().last_handshake.is_some());
    let out = p.cw.send(&pkt(1), &p.clock);
    assert_eq!(msg_type(&out[0]), 4, "no new handshake needed");
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    assert_eq!(p.bt.delivered, vec![pkt(1)]);
    assert!(p.cw.errors.is_empty() && p.bt.errors.is_empty(), "{:?} {:?}", p.cw.errors, p.bt.errors);
}

#[test]
fn handshake_causeway_initiator_without_psk() {
    causeway_initiates(false);
}

#[test]
fn handshake_causeway_initiator_with_psk() {
    causeway_initiates(true);
}

#[test]
fn handshake_boringtun_initiator_without_psk() {
    boringtun_initiates(false);
}

#[test]
fn handshake_boringtun_initiator_with_psk() {
    boringtun_initiates(true);
}

#[test]
fn psk_mismatch_yields_no_session() {
    let clock = Clock::new();
    let cw_secret = StaticSecret::random(&mut OsRng);
    let bt_secret = StaticSecret::random(&mut OsRng);
    let their_psk = PresharedKey::random(&mut OsRng);
    let mut bt = BoringEnd::new(&bt_secret, &cw_secret.public_key(), Some(&their_psk), None, None, addr(2));
    let mut cw =
        CausewayEnd::new(cw_secret, bt_secret.public_key(), Some(PresharedKey::random(&mut OsRng)), 0, addr(1));
    let out = cw.send(&pkt(1), &clock);
    pump(&mut cw, &mut bt, out, &clock);
    assert_eq!(cw.sessions_established, 0);
    assert_eq!(cw.errors, vec![Error::DecryptionFailed], "the response does not authenticate");
    assert!(bt.delivered.is_empty());
}

#[test]
fn data_flows_both_ways_many_packets() {
    let mut p = pair(true, 0, None);
    for n in 0..500 {
        data_both_ways(&mut p, n);
    }
    assert_eq!(p.bt.delivered.len(), 500);
    assert_eq!(p.cw.delivered.len(), 500);
    assert_eq!(p.cw.delivered[499], reply(499));
    // Sizes from empty UDP to a full MTU packet, across the padding boundaries.
    for size in [0usize, 1, 15, 16, 17, 1000, MTU - 28] {
        let packet = ipv4_packet([10, 0, 0, 1], [10, 0, 0, 2], &vec![0xab; size]);
        let out = p.cw.send(&packet, &p.clock);
        pump(&mut p.cw, &mut p.bt, out, &p.clock);
        assert_eq!(p.bt.delivered.last().unwrap(), &packet, "size {size}");
    }
}

#[test]
fn keepalives_both_ways() {
    let mut p = pair(false, 0, None);
    data_both_ways(&mut p, 0);
    // boringtun sent last (its reply), so Causeway owes a keepalive after 10 s of silence.
    p.clock.advance(Duration::from_secs(11));
    let out = p.cw.tick(&p.clock);
    assert_eq!(out.len(), 1, "one keepalive");
    assert_eq!(out[0].len(), 32, "an empty data message");
    let before = p.bt.delivered.len();
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    assert!(p.bt.errors.is_empty(), "{:?}", p.bt.errors);
    assert_eq!(p.bt.delivered.len(), before, "keepalives are not delivered");
    // Now Causeway sends data and stays silent: boringtun answers with a
    // keepalive. boringtun stamps events with the time of its last
    // update_timers call, so it is ticked first, as its event loop would.
    p.bt.tick();
    let out = p.cw.send(&pkt(1), &p.clock);
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    p.clock.advance(Duration::from_secs(11));
    let out = p.bt.tick();
    pump(&mut p.bt, &mut p.cw, out, &p.clock);
    assert_eq!(p.cw.keepalives_received, 1);
}

#[test]
fn persistent_keepalive_starts_the_tunnel_and_repeats() {
    let mut p = pair(false, 25, None);
    let out = p.cw.tick(&p.clock);
    assert_eq!(msg_type(&out[0]), 1, "keepalive with no session starts a handshake");
    pump(&mut p.cw, &mut p.bt, out, &p.clock);
    assert_eq!(p.cw.sessions_established, 1);
    for _ in 0..3 {
        p.clock.advance(Duration::from_secs(25));
        let out = p.cw.tick(&p.clock);
        assert!(out.iter().any(|d| d.len() == 32), "persistent keepalive every 25 s");
        pump(&mut p.cw, &mut p.bt, out, &p.clock);
        p.bt.tick();
    }
    assert!(p.bt.errors.is_empty(), "{:?}", p.bt.errors);
}

/// Six minutes of protocol time in one-second steps with traffic both ways:
/// sessions renew every REKEY_AFTER_TIME, and not one packet is lost.
#[test]
fn rekey_after_120s_with_traffic_flowing() {
    let mut p = pair(true, 0, None);
    let mut first_keypair = None;
    let mut keypairs_seen = std::collections::HashSet::new();
    for n in 0..360u32 {
        data_both_ways(&mut p, n);
        let out = p.cw.tick(&p.clock);
        pump(&mut p.cw, &mut p.bt, out, &p.clock);
        let out = p.bt.tick();
        pump(&mut p.bt, &mut p.cw, out, &p.clock);
        let kp = p.cw.peer.current_keypair().unwrap();
        first_keypair.get_or_insert(kp.local_index);
        keypairs_seen.insert(kp.local_index);
        assert!(
            p.clock.now.saturating_since(kp.created) < Duration::from_secs(180),
            "a session outlived REJECT_AFTER_TIME"
        );
        p.clock.advance(Duration::from_secs(1));
    }
    assert_eq!(p.bt.delivered.len(), 360);
    assert_eq!(p.cw.delivered.len(), 360);
    assert!(p.bt.delivered.iter().enumerate().all(|(i, d)| *d == pkt(i as u32)), "in order, none lost");
    assert!(keypairs_seen.len() >= 3, "only {} sessions in 6 minutes", keypairs_seen.len());
    assert!(p.cw.errors.is_empty() && p.bt.errors.is_empty(), "{:?} {:?}", p.cw.errors, p.bt.errors);
}

#[test]
fn causeway_under_load_demands_a_cookie_from_boringtun() {
    let mut p = pair(false, 0, None);
    p.cw.dev.load_monitor().force(true);
    let init = p.bt.send(&reply(1));
    let answer = p.cw.receive(&init[0], p.bt.addr, &p.clock).unwrap();
    assert_eq!(msg_type(&answer[0]), 3, "cookie reply instead of a response");
    assert!(
        p.cw.peer.current_keypair().is_none() && !p.cw.peer.has_next_keypair(),
        "no state for a cookie-less initiation"
    );
    assert!(p.bt.receive(&answer[0], p.cw.addr).is_empty());
    // boringtun retries after REKEY_TIMEOUT, now with MAC2.
    p.clock.advance(Duration::from_secs(6));
    let retry = p.bt.tick();
    assert_eq!(msg_type(&retry[0]), 1);
    pump(&mut p.bt, &mut p.cw, retry, &p.clock);
    assert_eq!(p.cw.delivered, vec![reply(1)], "session up under load, queued packet delivered");
}

#[test]
fn boringtun_under_load_sends_causeway_a_cookie() {
    let mut p = pair(false, 0, Some(0));
    let init = p.cw.send(&pkt(1), &p.clock);
    let answer = p.bt.receive(&init[0], p.cw.addr);
    assert_eq!(msg_type(&answer[0]), 3);
    assert!(p.cw.receive(&answer[0], p.bt.addr, &p.clock).unwrap().is_empty());
    assert!(p.cw.peer.has_fresh_cookie(p.clock.now));
    p.clock.advance(Duration::from_secs(6));
    let retry = p.cw.tick(&p.clock);
    assert_eq!(msg_type(&retry[0]), 1);
    pump(&mut p.cw, &mut p.bt, retry, &p.clock);
    assert_eq!(p.cw.sessions_established, 1);
    assert_eq!(p.bt.delivered, vec![pkt(1)]);
}

#[test]
fn replay_window_on_boringtun_traffic() {
    let mut p = pair(false, 0, None);
    data_both_ways(&mut p, 0);
    let captured: Vec<Vec<u8>> = (1..=4).map(|n| p.bt.send(&reply(n)).remove(0)).collect();
    let from = p.bt.addr;
    p.cw.receive(&captured[1], from, &p.clock).unwrap();
    assert_eq!(p.cw.receive(&captured[1], from, &p.clock).unwrap_err(), Error::Replayed, "duplicate");
    p.cw.receive(&captured[0], from, &p.clock).expect("reordered inside the window");
    p.cw.receive(&captured[3], from, &p.clock).unwrap();
    // Push the window 9000 packets ahead; the held-back packet is now too old.
    let mut last = vec![];
    for n in 0..9000 {
        last = p.bt.send(&reply(100 + n)).remove(0);
    }
    p.cw.receive(&last, from, &p.clock).unwrap();
    assert_eq!(p.cw.receive(&captured[2], from, &p.clock).unwrap_err(), Error::Replayed, "older than the window");
    assert_eq!(p.cw.delivered.len(), 1 + 3 + 1);
}

/// Every message type, mangled every way: an error each time, and the
/// genuine message still works afterwards, so nothing changed state.
#[test]
fn malformed_messages_change_no_state() {
    let mut p = pair(false, 0, None);
    let from = p.bt.addr;
    let init = p.bt.send(&reply(1)).remove(0);

    let snapshot = |p: &Pair| {
        (p.cw.dev.index_count(), p.cw.peer.stats(), p.cw.peer.has_next_keypair(), p.cw.peer.handshake_in_flight())
    };
    let before = snapshot(&p);
    let cw_public = p.cw.dev.public_key().unwrap();
    for bad in mangled(&init, 88, 116, Some(&cw_public)) {
        assert!(p.cw.receive(&bad, from, &p.clock).is_err());
        assert_eq!(snapshot(&p), before);
    }
    let response = p.cw.receive(&init, from, &p.clock).unwrap().remove(0);
    assert_eq!(msg_type(&response), 2);

    // A response goes Causeway -> boringtun; for a response *to* Causeway,
    // let Causeway initiate to a fresh boringtun.
    let mut q = pair(false, 0, None);
    let init = q.cw.send(&pkt(1), &q.clock).remove(0);
    let response = q.bt.receive(&init, q.cw.addr).remove(0);
    let before = snapshot(&q);
    let cw_public = q.cw.dev.public_key().unwrap();
    for bad in mangled(&response, 44, 60, Some(&cw_public)) {
        assert!(q.cw.receive(&bad, q.bt.addr, &q.clock).is_err());
        assert_eq!(snapshot(&q), before);
    }
    let flushed = q.cw.receive(&response, q.bt.addr, &q.clock).unwrap();
    assert_eq!(q.cw.sessions_established, 1);

    // Data: mangle a real data message.
    pump(&mut q.cw, &mut q.bt, flushed, &q.clock);
    let data = q.bt.send(&reply(2)).remove(0);
    let before = snapshot(&q);
    let mut bad_data = mangled(&data, 16, data.len() - 16, None);
    let mut wrong_index = data.clone();
    wrong_index[4] ^= 1;
    bad_data.push(wrong_index);
    for bad in bad_data {
        assert!(q.cw.receive(&bad, q.bt.addr, &q.clock).is_err(), "{:?}", &bad[..bad.len().min(20)]);
        assert_eq!(snapshot(&q), before);
    }
    q.cw.receive(&data, q.bt.addr, &q.clock).unwrap();
    assert_eq!(q.cw.delivered, vec![reply(2)]);

    // Cookie reply: one from boringtun under load, mangled.
    let mut r = pair(false, 0, Some(0));
    let init = r.cw.send(&pkt(1), &r.clock).remove(0);
    let cookie = r.bt.receive(&init, r.cw.addr).remove(0);
    assert_eq!(msg_type(&cookie), 3);
    for bad in mangled(&cookie, 32, 4, None) {
        assert!(r.cw.receive(&bad, r.bt.addr, &r.clock).is_err());
        assert!(!r.cw.peer.has_fresh_cookie(r.clock.now));
    }
    r.cw.receive(&cookie, r.bt.addr, &r.clock).unwrap();
    assert!(r.cw.peer.has_fresh_cookie(r.clock.now));
}

/// Variants of a genuine message: short, long, wrong type, reserved bytes
/// set, a flipped bit at `mac_at` (MAC1, tag or receiver index), and a
/// flipped bit in the encrypted part at `sealed_at`. For handshake messages
/// (`remac` names the receiver) that last variant gets valid MACs again, so
/// it is the AEAD, not MAC1, that must catch it.
fn mangled(genuine: &[u8], sealed_at: usize, mac_at: usize, remac: Option<&PublicKey>) -> Vec<Vec<u8>> {
    let mut v = vec![genuine[..genuine.len() - 1].to_vec(), genuine[..3].to_vec(), vec![]];
    let mut long = genuine.to_vec();
    long.push(0);
    v.push(long);
    for ty in [0u8, 5, 255, if genuine[0] == 1 { 2 } else { 1 }] {
        let mut w = genuine.to_vec();
        w[0] = ty;
        v.push(w);
    }
    let mut reserved = genuine.to_vec();
    reserved[2] = 1;
    v.push(reserved);
    let mut bad_mac = genuine.to_vec();
    bad_mac[mac_at] ^= 1;
    v.push(bad_mac);
    let mut bad_tag = genuine.to_vec();
    bad_tag[sealed_at] ^= 0x40;
    if let Some(receiver) = remac {
        CookieGenerator::new(receiver).add_macs(&mut bad_tag, Time::ZERO);
    }
    v.push(bad_tag);
    v
}

/// Causeway and boringtun initiate at the same moment. boringtun does what
/// stock WireGuard does (its own handshake gives way to the peer's, and
/// our answer to it is refused); Causeway keeps its own handshake while it
/// answers, so boringtun's answer to it completes a session at once.
#[test]
fn crossing_initiations_with_boringtun_give_a_session_after_one_round_trip() {
    let mut p = pair(false, 0, None);
    let init_cw = p.cw.send(&pkt(1), &p.clock);
    let init_bt = p.bt.send(&reply(1));
    assert_eq!((msg_type(&init_cw[0]), msg_type(&init_bt[0])), (1, 1), "both initiate");
    let to_cw = p.bt.receive(&init_cw[0], p.cw.addr);
    let to_bt = p.cw.receive(&init_bt[0], p.bt.addr, &p.clock).unwrap();
    pump(&mut p.bt, &mut p.cw, to_cw, &p.clock);
    assert_eq!(p.cw.sessions_established, 1, "boringtun's answer completed ours");
    assert_eq!(p.bt.delivered, vec![pkt(1)], "our waiting packet went through");
    // Our answer to boringtun's abandoned initiation is refused there,
    // which changes nothing.
    pump(&mut p.cw, &mut p.bt, to_bt, &p.clock);
    for n in 2..6 {
        data_both_ways(&mut p, n);
    }
    assert_eq!(p.bt.delivered, (1..6).map(pkt).collect::<Vec<_>>());
    assert!((2..6).all(|n| p.cw.delivered.contains(&reply(n))), "every reply arrived");
    // boringtun sends its abandoned initiation once more; it is refused
    // as the replay it is.
    assert!(p.cw.errors.iter().all(|e| *e == Error::ReplayedInitiation), "{:?}", p.cw.errors);
}

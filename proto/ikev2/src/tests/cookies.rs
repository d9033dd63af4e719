//! Responder protection: cookies past the half-open threshold, half-open
//! expiry, and refusal of unsupported critical payloads.

use std::net::SocketAddr;
use std::time::Duration;

use super::net::*;
use crate::ids::{notify as n, ExchangeType};
use crate::sa::SaState;
use crate::wire::message::Message;
use crate::wire::payload::Payload;
use crate::{Endpoint, HALF_OPEN_TIMEOUT};

fn notifies(data: &[u8]) -> Vec<u16> {
    let m = Message::parse(data).expect("parses");
    m.payloads.iter().filter_map(|p| if let Payload::Notify(x) = p { Some(x.kind) } else { None }).collect()
}

fn half_open(ep: &Endpoint) -> usize {
    ep.half_open_count()
}

/// An IKE_SA_INIT from A's address that is never followed up.
fn stray_init(n: &mut Net, seed: u64) {
    let mut c = Endpoint::new(Box::new(TestRng(seed)));
    c.set_peer(peer_b(), config_a(), n.now);
    c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    let t = c.poll_transmit().expect("IKE_SA_INIT");
    n.b.handle(n.now, t.remote, SocketAddr::new(A_IP, 500), &t.data);
    while n.b.poll_transmit().is_some() {}
}

#[test]
fn past_the_threshold_the_responder_asks_for_a_cookie_and_keeps_no_state() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.b.set_cookie_threshold(1);
    stray_init(&mut n, 77);
    assert_eq!(half_open(&n.b), 1);
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    let b_inits: Vec<&Vec<u8>> = n
        .log
        .iter()
        .filter(|(s, t)| {
            *s == Side::B && Message::parse(&t.data).is_ok_and(|m| m.header.exchange == ExchangeType::IkeSaInit)
        })
        .map(|(_, t)| &t.data)
        .collect();
    assert_eq!(notifies(b_inits[0]), vec![n::COOKIE], "first answer: a cookie only");
    let a_inits: Vec<&Vec<u8>> = n
        .log
        .iter()
        .filter(|(s, t)| {
            *s == Side::A && Message::parse(&t.data).is_ok_and(|m| m.header.exchange == ExchangeType::IkeSaInit)
        })
        .map(|(_, t)| &t.data)
        .collect();
    // The first, its retransmission while an answer to it may still come
    // (`INIT_REDO_WAIT`), then the retry.
    assert_eq!(a_inits.len(), 3);
    assert_eq!(a_inits[0], a_inits[1]);
    assert_eq!(notifies(a_inits[2]).first(), Some(&n::COOKIE), "the retry leads with the cookie");
    assert_eq!(child_keys(n.child_ups(Side::A)[0]).1, child_keys(n.child_ups(Side::B)[0]).0);
}

#[test]
fn a_wrong_cookie_is_answered_with_a_new_one_not_with_state() {
    let cfg = config_a();
    let mut cfg_b = mirror(&cfg);
    (cfg_b.remote_addrs, cfg_b.any_address) = (vec![], true);
    let mut n = Net::new(cfg.clone(), cfg_b);
    n.b.set_cookie_threshold(0);
    let mut c = Endpoint::new(Box::new(TestRng(99)));
    c.set_peer(peer_b(), config_a(), n.now);
    c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    let t = c.poll_transmit().expect("IKE_SA_INIT");
    let from = SocketAddr::new(A_IP, 500);
    n.b.handle(n.now, t.remote, from, &t.data);
    let answer = n.b.poll_transmit().expect("cookie");
    // Echo the cookie from another address: it does not check there.
    c.handle(n.now, SocketAddr::new(A_IP, 500), SocketAddr::new(B_IP, 500), &answer.data);
    assert!(c.poll_transmit().is_none(), "the retry waits for an answer to the first request");
    c.handle_timeout(n.now + crate::sa_init::INIT_REDO_WAIT);
    let retry = c.poll_transmit().expect("retry with cookie");
    let elsewhere: SocketAddr = "198.18.0.9:500".parse().expect("address");
    n.b.handle(n.now, retry.remote, elsewhere, &retry.data);
    let again = n.b.poll_transmit().expect("answered");
    assert_eq!(notifies(&again.data), vec![n::COOKIE]);
    assert!(n.b.sas.is_empty());
    // From the right address it does.
    n.b.handle(n.now, retry.remote, from, &retry.data);
    assert_eq!(n.b.sas.len(), 1);
}

#[test]
fn half_open_sas_expire() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    stray_init(&mut n, 5);
    assert_eq!(half_open(&n.b), 1);
    n.advance(HALF_OPEN_TIMEOUT + Duration::from_secs(1));
    assert_eq!(half_open(&n.b), 0);
    assert!(n.events_b.is_empty(), "nothing was up, nothing to report");
}

#[test]
fn unsupported_critical_payloads_are_refused_by_type() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    let mut c = Endpoint::new(Box::new(TestRng(3)));
    c.set_peer(peer_b(), config_a(), n.now);
    c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    let t = c.poll_transmit().expect("IKE_SA_INIT");
    let m = Message::parse(&t.data).expect("parses");
    // Put an unknown payload type 99 with the critical bit in front.
    let mut data = t.data[..28].to_vec();
    data[16] = 99;
    data.extend_from_slice(&[m.header.next_payload, 0x80, 0, 4]);
    data.extend_from_slice(&t.data[28..]);
    let len = data.len() as u32;
    data[24..28].copy_from_slice(&len.to_be_bytes());
    // From a stranger's address: no answer at all.
    n.b.handle(n.now, t.remote, "198.18.0.9:500".parse().expect("address"), &data);
    assert!(n.b.poll_transmit().is_none(), "a stranger is not answered");
    n.b.handle(n.now, t.remote, SocketAddr::new(A_IP, 500), &data);
    let answer = n.b.poll_transmit().expect("refused");
    let refusal = Message::parse(&answer.data).expect("parses");
    assert_eq!(refusal.payloads.len(), 1);
    match &refusal.payloads[0] {
        Payload::Notify(x) => assert_eq!((x.kind, x.data.as_slice()), (n::UNSUPPORTED_CRITICAL_PAYLOAD, &[99u8][..])),
        p => panic!("{p:?}"),
    }
    assert!(n.b.sas.is_empty());
}

#[test]
fn an_ike_sa_init_with_a_zero_initiator_spi_is_dropped_unanswered() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    let mut c = Endpoint::new(Box::new(TestRng(91)));
    c.set_peer(peer_b(), config_a(), n.now);
    c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    let mut t = c.poll_transmit().expect("IKE_SA_INIT");
    t.data[..8].fill(0);
    n.b.handle(n.now, t.remote, SocketAddr::new(A_IP, 500), &t.data);
    assert!(n.b.poll_transmit().is_none(), "answered");
    assert_eq!(half_open(&n.b), 0);
}

/// The cookie secret is replaced every five minutes: a cookie is still
/// good after the next replacement (an initiator's retry always finds it
/// so) and no longer after the one after.
#[test]
fn a_cookie_is_good_through_one_secret_rotation_and_not_two() {
    use crate::cookies::COOKIE_ROTATION;
    let cfg = config_a();
    let mut cfg_b = mirror(&cfg);
    (cfg_b.remote_addrs, cfg_b.any_address) = (vec![], true);
    let mut n = Net::new(cfg.clone(), cfg_b);
    n.b.set_cookie_threshold(0);
    let from = SocketAddr::new(A_IP, 500);
    // Two initiators each get a cookie now, and a retry that echoes it.
    let retries = [101, 102].map(|seed| {
        let mut c = Endpoint::new(Box::new(TestRng(seed)));
        c.set_peer(peer_b(), config_a(), n.now);
        c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
        let t = c.poll_transmit().expect("IKE_SA_INIT");
        n.b.handle(n.now, t.remote, from, &t.data);
        let answer = n.b.poll_transmit().expect("cookie");
        assert_eq!(notifies(&answer.data), vec![n::COOKIE]);
        c.handle(n.now, from, SocketAddr::new(B_IP, 500), &answer.data);
        c.handle_timeout(n.now + crate::sa_init::INIT_REDO_WAIT);
        c.poll_transmit().expect("retry with cookie")
    });
    n.advance(COOKIE_ROTATION + Duration::from_secs(1));
    n.b.handle(n.now, retries[0].remote, from, &retries[0].data);
    let answer = n.b.poll_transmit().expect("answered");
    assert!(!notifies(&answer.data).contains(&n::COOKIE), "refused after one rotation");
    assert_eq!(n.b.sas.len(), 1);
    n.advance(COOKIE_ROTATION);
    n.b.handle(n.now, retries[1].remote, from, &retries[1].data);
    let answer = n.b.poll_transmit().expect("answered");
    assert_eq!(notifies(&answer.data), vec![n::COOKIE], "a cookie two rotations old");
    assert!(n.b.sas.values().all(|sa| sa.spi_i != Message::parse(&retries[1].data).unwrap().header.spi_i));
}

/// A request from the peer's address makes a half-open SA that anyone
/// could have made: it must not count as the peer's IKE SA, or one spoofed
/// request every half minute would keep us from connecting to the peer.
#[test]
fn a_strangers_half_open_sa_neither_blocks_our_own_connect_nor_shows_as_the_peers() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    stray_init(&mut n, 41);
    assert_eq!(half_open(&n.b), 1);
    let status = n.b.status(&peer_a()).expect("configured");
    assert_eq!(status.state, crate::IkeState::Down, "the half-open SA is not the peer's");
    n.b.connect(&peer_a(), SocketAddr::new(A_IP, 500), Some(B_IP), n.now);
    n.run();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1), "B connected all the same");
    assert_eq!(n.b.status(&peer_a()).expect("configured").state, crate::IkeState::Established);
    assert_eq!(half_open(&n.b), 1, "the stranger's SA waits out its timeout");
}

/// New requests count toward the cookie threshold even when they leave no
/// SA behind (each may have cost a DH): past the threshold in one second,
/// a request must bring a cookie; a second later it need not.
#[test]
fn many_new_requests_in_a_second_bring_cookies_even_without_half_open_sas() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.b.set_cookie_threshold(3);
    // Requests B refuses (a proposal it does not take): no SA, no DH.
    let mut refused = config_a();
    refused.ike_proposals = vec![cbc256_modp2048()];
    for seed in 0..3 {
        let mut c = Endpoint::new(Box::new(TestRng(500 + seed)));
        c.set_peer(peer_b(), refused.clone(), n.now);
        c.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
        let t = c.poll_transmit().expect("IKE_SA_INIT");
        n.b.handle(n.now, t.remote, SocketAddr::new(A_IP, 500), &t.data);
        let answer = n.b.poll_transmit().expect("answered");
        assert_eq!(notifies(&answer.data), vec![n::NO_PROPOSAL_CHOSEN]);
    }
    assert_eq!(half_open(&n.b), 0);
    // The fourth request in the second, three before it: a cookie first.
    n.connect();
    let b_inits: Vec<Vec<u16>> = n
        .log
        .iter()
        .filter(|(s, t)| {
            *s == Side::B && Message::parse(&t.data).is_ok_and(|m| m.header.exchange == ExchangeType::IkeSaInit)
        })
        .map(|(_, t)| notifies(&t.data))
        .collect();
    assert_eq!(b_inits[0], vec![n::COOKIE], "the fourth new request in a second is asked for a cookie");
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1), "and goes through with it");
    // A second later the count starts again.
    let mut late = Net::new(cfg.clone(), mirror(&cfg));
    late.b.set_cookie_threshold(2);
    stray_init(&mut late, 9);
    late.now += Duration::from_millis(1100);
    late.connect();
    let first = late.log.iter().find(|(s, _)| *s == Side::B).map(|(_, t)| notifies(&t.data)).expect("B answered");
    assert!(!first.contains(&n::COOKIE), "{first:?}");
}

#[test]
fn past_the_half_open_limit_the_oldest_half_open_sa_makes_way() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.b.max_half_open = 3;
    for seed in 0..3 {
        stray_init(&mut n, 300 + seed);
        n.now += Duration::from_millis(10);
    }
    let oldest = n.b.sas.iter().min_by_key(|(_, s)| s.created).map(|(spi, _)| *spi).unwrap();
    assert_eq!(half_open(&n.b), 3);
    stray_init(&mut n, 310);
    assert_eq!(half_open(&n.b), 3, "never more than the limit");
    assert!(!n.b.sas.contains_key(&oldest), "the oldest went");
    assert_eq!(n.b.init_index.len(), 3, "and its retransmission entry with it");
    // SAs that failed IKE_AUTH stay (dead) until the half-open timeout,
    // holding their requests: they count, and make way, the same.
    for sa in n.b.sas.values_mut() {
        sa.state = SaState::Dead;
    }
    stray_init(&mut n, 311);
    assert_eq!(n.b.sas.len(), 3, "dead responder SAs count toward the limit");
    assert_eq!(half_open(&n.b), 3);
    // A genuine initiator arriving at the limit still gets through.
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
}

/// Anyone can send an IKE_SA_INIT from our peer's address; the half-open
/// SA it leaves says nothing of the peer. Its expiry must not reschedule
/// our reconnect to the peer, or a forger sending one every few seconds
/// (far below the cookie threshold) would put the reconnect off for ever,
/// and a peer that never initiates itself would stay down.
#[test]
fn a_forger_sending_ike_sa_init_in_our_peers_name_does_not_put_off_our_reconnects() {
    let cfg = config_a();
    let mut a = Endpoint::new(Box::new(TestRng(3)));
    let t0 = std::time::Instant::now();
    a.set_peer(peer_b(), cfg.clone(), t0);
    // B never answers: each attempt gives up after its retransmissions,
    // and the next follows RECONNECT_DELAY later.
    a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), t0);
    let (mut now, mut next_forgery, mut seed) = (t0, t0, 1000);
    let mut attempts = std::collections::HashSet::new();
    while now < t0 + Duration::from_secs(300) {
        if now >= next_forgery {
            let mut forger = Endpoint::new(Box::new(TestRng(seed)));
            seed += 1;
            forger.set_peer(peer_a(), mirror(&cfg), now);
            forger.connect(&peer_a(), SocketAddr::new(A_IP, 500), Some(B_IP), now);
            let t = forger.poll_transmit().expect("IKE_SA_INIT");
            a.handle(now, SocketAddr::new(A_IP, 500), SocketAddr::new(B_IP, 500), &t.data);
            next_forgery += Duration::from_secs(4);
        }
        a.handle_timeout(now);
        while let Some(t) = a.poll_transmit() {
            let h = Message::parse(&t.data).expect("parses").header;
            if h.exchange == ExchangeType::IkeSaInit && !h.is_response() {
                attempts.insert(h.spi_i);
            }
        }
        now += Duration::from_millis(100);
    }
    // An attempt is about 15.5 s of retransmissions and 5 s of delay: 14
    // in five minutes.
    assert!(attempts.len() >= 12, "{} attempts in five minutes", attempts.len());
    assert!(half_open(&a) > 0, "the forgeries did reach A");
}

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
    ep.sas.values().filter(|s| s.state == SaState::InitReplied).count()
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
    assert_eq!(a_inits.len(), 2);
    assert_eq!(notifies(a_inits[1]).first(), Some(&n::COOKIE), "the retry leads with the cookie");
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

//! Messages the endpoint drops are counted by reason (`drops.rs`): each
//! kind of bad message under its own reason and no other, nothing answered;
//! a clean exchange, retransmissions answered from the cache included,
//! counts nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::net::*;
use crate::ids::{flags, ExchangeType};
use crate::wire::message::Message;
use crate::{DropReason, Drops, Transmit};

const SPI_I: std::ops::Range<usize> = 0..8;
const SPI_R: std::ops::Range<usize> = 8..16;
const EXCHANGE: usize = 18;
const FLAGS: usize = 19;
const MESSAGE_ID: std::ops::Range<usize> = 20..24;

/// An address no peer is configured at.
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99));

/// The reasons with a count.
fn counted(d: Drops) -> Vec<(DropReason, u64)> {
    d.iter().filter(|(_, n)| *n > 0).collect()
}

/// The first message `side` sent of `exchange`, a request or a response.
fn sent(n: &Net, side: Side, exchange: ExchangeType, response: bool) -> Transmit {
    let of = |t: &Transmit| {
        let h = Message::parse(&t.data).expect("sent messages parse").header;
        h.exchange == exchange && h.is_response() == response
    };
    n.log.iter().find(|(s, t)| *s == side && of(t)).map(|(_, t)| t.clone()).expect("sent")
}

fn edited(t: &Transmit, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut d = t.data.clone();
    edit(&mut d);
    d
}

/// The ICV (the last octet) broken.
fn tampered(t: &Transmit) -> Vec<u8> {
    edited(t, |d| *d.last_mut().expect("not empty") ^= 1)
}

/// Hands `data` to B as from `from`, port 500; returns B's answers.
fn to_b(n: &mut Net, from: IpAddr, data: &[u8]) -> Vec<Transmit> {
    n.b.handle(n.now, SocketAddr::new(B_IP, 500), SocketAddr::new(from, 500), data);
    std::iter::from_fn(|| n.b.poll_transmit()).collect()
}

/// Hands `data` to A as from B, port 500; returns A's answers.
fn to_a(n: &mut Net, data: &[u8]) -> Vec<Transmit> {
    n.a.handle(n.now, SocketAddr::new(A_IP, 500), SocketAddr::new(B_IP, 500), data);
    std::iter::from_fn(|| n.a.poll_transmit()).collect()
}

/// A's IKE_SA_INIT request, which B has not seen.
fn held_init(n: &mut Net) -> Transmit {
    n.drop = Box::new(|_, _| true);
    n.a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    n.run();
    n.drop = Box::new(|_, _| false);
    sent(n, Side::A, ExchangeType::IkeSaInit, false)
}

fn connected() -> Net {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.connect();
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    n
}

#[test]
fn a_retransmission_answered_from_the_cache_is_no_drop_and_a_forged_one_fails_integrity() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    let mut lost = false;
    n.drop = Box::new(move |side, t| {
        let auth = Message::parse(&t.data).is_ok_and(|m| m.header.exchange == ExchangeType::IkeAuth);
        let first = side == Side::B && auth && !lost;
        lost |= first;
        first
    });
    n.connect();
    n.advance(crate::RETRANSMIT_BASE);
    assert_eq!((n.ike_ups(Side::A), n.ike_ups(Side::B)), (1, 1));
    let answers =
        n.log.iter().filter(|(s, t)| *s == Side::B && t.data == sent(&n, Side::B, ExchangeType::IkeAuth, true).data);
    assert_eq!(answers.count(), 2, "B answered the retransmission from its cache");
    assert_eq!((counted(n.a.drops()), counted(n.b.drops())), (vec![], vec![]));

    let auth = sent(&n, Side::A, ExchangeType::IkeAuth, false);
    assert!(to_b(&mut n, A_IP, &tampered(&auth)).is_empty(), "a forged copy gets nothing");
    assert_eq!(counted(n.b.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
    assert_eq!(to_b(&mut n, A_IP, &auth.data).len(), 1, "a real one is answered again");
    assert_eq!(counted(n.b.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
    assert_eq!(counted(n.a.drops()), []);
}

#[test]
fn a_tampered_request_or_response_fails_integrity_and_leaves_the_exchange_to_the_real_one() {
    let mut n = connected();
    let (a_in, _, _, _) = child_keys(n.child_ups(Side::A)[0]);
    n.drop = Box::new(|side, _| side == Side::A);
    assert!(n.a.delete_child(a_in, n.now));
    n.run();
    n.drop = Box::new(|_, _| false);
    let delete = n.log.last().map(|(_, t)| t.clone()).expect("A sent its Delete");

    assert!(to_b(&mut n, A_IP, &tampered(&delete)).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
    let answer = to_b(&mut n, A_IP, &delete.data);
    assert_eq!(answer.len(), 1, "the real request still has the expected ID");

    assert!(to_a(&mut n, &tampered(&answer[0])).is_empty());
    assert_eq!(counted(n.a.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
    to_a(&mut n, &answer[0].data);
    n.run();
    assert_eq!((n.children(Side::A), n.children(Side::B)), (0, 0), "the real answer completed the Delete");
    assert_eq!(counted(n.a.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
    assert_eq!(counted(n.b.drops()), [(DropReason::IntegrityCheckFailed, 1)]);
}

#[test]
fn what_does_not_parse_or_has_a_zero_spi_is_malformed() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    assert!(to_b(&mut n, A_IP, b"not an IKE message").is_empty());
    assert!(to_b(&mut n, STRANGER, b"not an IKE message").is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::Malformed, 2)]);
    let init = held_init(&mut n);
    assert!(to_b(&mut n, A_IP, &edited(&init, |d| d[SPI_I].fill(0))).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::Malformed, 3)]);
    assert!(n.b.sas.is_empty());
    assert_eq!(to_b(&mut n, A_IP, &init.data).len(), 1, "the real request is answered");
    assert_eq!(counted(n.b.drops()), [(DropReason::Malformed, 3)]);
}

#[test]
fn an_ike_sa_init_from_an_address_of_no_peer_is_from_an_unknown_peer() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    let init = held_init(&mut n);
    assert!(to_b(&mut n, STRANGER, &init.data).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnknownPeer, 1)]);
    assert!(n.b.sas.is_empty());
    assert_eq!(to_b(&mut n, A_IP, &init.data).len(), 1);
    assert_eq!(counted(n.b.drops()), [(DropReason::UnknownPeer, 1)]);
}

#[test]
fn a_message_for_no_sa_of_ours_or_not_fitting_it_is_counted_apart() {
    let mut n = connected();
    let auth = sent(&n, Side::A, ExchangeType::IkeAuth, false);
    let not_ours = edited(&auth, |d| d[SPI_R.end - 1] ^= 1);
    assert!(to_b(&mut n, A_IP, &not_ours).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnknownSpi, 1)]);

    let other_initiator_spi = edited(&auth, |d| d[SPI_I.end - 1] ^= 1);
    // B's SPI where a responder's goes, from a sender claiming to be the responder.
    let roles_swapped = edited(&auth, |d| {
        let (i, r) = (d[SPI_I].to_vec(), d[SPI_R].to_vec());
        d[SPI_I].copy_from_slice(&r);
        d[SPI_R].copy_from_slice(&i);
        d[FLAGS] &= !flags::INITIATOR;
    });
    for m in [other_initiator_spi, roles_swapped] {
        assert!(to_b(&mut n, A_IP, &m).is_empty());
    }
    assert_eq!(counted(n.b.drops()), [(DropReason::UnknownSpi, 1), (DropReason::SaMismatch, 2)]);
    assert_eq!(counted(n.a.drops()), []);
}

#[test]
fn messages_outside_the_message_id_window_are_counted() {
    let mut n = connected();
    let auth = sent(&n, Side::A, ExchangeType::IkeAuth, false);
    let ahead = edited(&auth, |d| d[MESSAGE_ID].copy_from_slice(&7u32.to_be_bytes()));
    assert!(to_b(&mut n, A_IP, &ahead).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedMessageId, 1)]);

    // A late copy of a response already taken.
    let auth_answer = sent(&n, Side::B, ExchangeType::IkeAuth, true);
    assert!(to_a(&mut n, &auth_answer.data).is_empty());
    assert_eq!(counted(n.a.drops()), [(DropReason::UnexpectedMessageId, 1)]);

    // IKE_SA_INIT retransmitted after IKE_AUTH came: the initiator has its answer.
    let init = sent(&n, Side::A, ExchangeType::IkeSaInit, false);
    assert!(to_b(&mut n, A_IP, &init.data).is_empty());
    let not_zero = edited(&init, |d| d[MESSAGE_ID].copy_from_slice(&1u32.to_be_bytes()));
    assert!(to_b(&mut n, A_IP, &not_zero).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedMessageId, 3)]);

    // The last request answered, but no answer kept to send again (no
    // exchange leaves one unanswered today; the window check holds still).
    n.b.sas.values_mut().for_each(|sa| sa.cached = None);
    assert!(to_b(&mut n, A_IP, &auth.data).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedMessageId, 4)]);
}

#[test]
fn an_exchange_the_sa_cannot_take_in_its_state_is_counted_and_uses_up_no_message_id() {
    let cfg = config_a();
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.drop = Box::new(|side, t| side == Side::A && Message::parse(&t.data).is_ok_and(|m| m.header.message_id == 1));
    n.a.connect(&peer_b(), SocketAddr::new(B_IP, 500), Some(A_IP), n.now);
    n.run();
    n.drop = Box::new(|_, _| false);
    let auth = sent(&n, Side::A, ExchangeType::IkeAuth, false);
    let informational = edited(&auth, |d| d[EXCHANGE] = ExchangeType::Informational.to_u8());
    assert!(to_b(&mut n, A_IP, &informational).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedExchange, 1)]);

    // IKE_SA_INIT on the SA, with the message ID it expects next.
    let init = sent(&n, Side::A, ExchangeType::IkeSaInit, false);
    let on_the_sa = edited(&init, |d| {
        d[SPI_R].copy_from_slice(&auth.data[SPI_R]);
        d[MESSAGE_ID].copy_from_slice(&1u32.to_be_bytes());
    });
    assert!(to_b(&mut n, A_IP, &on_the_sa).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedExchange, 2)]);
    // An IKE_SA_INIT response to A's IKE_AUTH (its message ID).
    let init_answer = sent(&n, Side::B, ExchangeType::IkeSaInit, true);
    let as_auth_answer = edited(&init_answer, |d| d[MESSAGE_ID].copy_from_slice(&1u32.to_be_bytes()));
    assert!(to_a(&mut n, &as_auth_answer).is_empty());
    assert_eq!(counted(n.a.drops()), [(DropReason::UnexpectedExchange, 1)]);

    assert_eq!(to_b(&mut n, A_IP, &auth.data).len(), 1, "IKE_AUTH still has its message ID");
    // A new IKE_SA_INIT (other bytes) under the SPI of an SA past it.
    let another = edited(&init, |d| *d.last_mut().expect("not empty") ^= 1);
    assert!(to_b(&mut n, A_IP, &another).is_empty());
    assert_eq!(counted(n.b.drops()), [(DropReason::UnexpectedExchange, 3)]);
}

/// What a healthy link does, a child rekey, an IKE rekey from each end,
/// liveness checks and a child's Delete, drops nothing on either side.
#[test]
fn rekeys_liveness_checks_and_deletes_count_nothing() {
    let mut cfg = config_a();
    cfg.dpd_interval = std::time::Duration::from_secs(5);
    let mut n = Net::new(cfg.clone(), mirror(&cfg));
    n.connect();
    let spi = n.a.status(&peer_b()).expect("A").children[0].spi_in;
    assert!(n.a.rekey_child_now(spi, n.now));
    n.run();
    for side in [Side::A, Side::B] {
        let now = n.now;
        let e = if side == Side::A { &mut n.a } else { &mut n.b };
        for sa in e.sas.values_mut().filter(|sa| sa.up) {
            sa.rekey_at = Some(now);
        }
        n.advance(std::time::Duration::from_secs(1));
    }
    n.advance(std::time::Duration::from_secs(30));
    let spi = n.a.status(&peer_b()).expect("A").children[0].spi_in;
    assert!(n.a.delete_child(spi, n.now));
    n.run();
    let (a, b) = (n.a.status(&peer_b()).expect("A"), n.b.status(&peer_a()).expect("B"));
    assert!(a.ike_rekeys + b.ike_rekeys >= 2, "both ends rekeyed the IKE SA");
    assert!(a.children.is_empty() && b.children.is_empty(), "the child was deleted");
    let checks = n
        .log
        .iter()
        .filter(|(_, t)| Message::parse(&t.data).is_ok_and(|m| m.header.exchange == ExchangeType::Informational))
        .count();
    assert!(checks >= 6, "liveness checks went both ways ({checks} INFORMATIONAL messages)");
    assert_eq!((counted(n.a.drops()), counted(n.b.drops())), (vec![], vec![]));
}

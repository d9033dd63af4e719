//! The IKE target: datagrams from the network at a responder.
//!
//! An input is a run of records, each `[control][length: u16 BE][datagram]`
//! (the last one takes what is left). Every datagram goes through the
//! wire parser, whose result must survive re-encoding, and then, in order,
//! to one responder `Endpoint` with one configured peer, made afresh and
//! deterministically for each input (seeded randomness, MODP groups drawn
//! from it) so that a kept input replays exactly. The control byte picks
//! the port (bit 0: 4500, else 500), the sender (bit 1: a stranger, else
//! the configured peer's address) and how many seconds pass first (bits
//! 2-7; the endpoint's timers then run).
//!
//! Properties: a plain message re-encodes to one that parses back to it
//! (but for transforms' unknown-attribute marks, which the encoder does not
//! write); no input, lacking the peer's key, brings an IKE SA or a
//! child SA up (no `IkeUp`, no `ChildUp`, never "established"); the
//! responder answers each datagram with at most one datagram, never larger
//! than `MAX_DATAGRAM`; timers send nothing on their own for SAs that
//! never came up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use causeway_ikev2::crypto::{DhGroup, EncrAlg, IkeSuite, IntegAlg, PrfAlg};
use causeway_ikev2::wire::header::HEADER_LEN;
use causeway_ikev2::wire::message::{parse_inner, Message};
use causeway_ikev2::wire::payload::Payload;
use causeway_ikev2::{
    Endpoint, EspCipher, EspProposal, Event, Identity, IkeState, PeerConfig, PeerId, TrafficSelector,
};
use rand_core::RngCore;
use zeroize::Zeroizing;

pub const RESPONDER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
pub const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
/// The responder's randomness; the seeds' transcripts depend on it.
pub const RESPONDER_SEED: u64 = 0x0fed_cba9_8765_4321;
/// Records handled per input at most (each may cost a key exchange).
const MAX_RECORDS: usize = 16;
/// The largest answer to an unauthenticated datagram: an IKE_SA_INIT
/// response with a MODP-2048 key share is about 450 bytes.
pub const MAX_DATAGRAM: usize = 1280;

/// A deterministic generator (xorshift64*), as the IKE core's tests use.
pub struct TestRng(pub u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

pub fn x25519_suite() -> IkeSuite {
    IkeSuite {
        encr: EncrAlg::AesGcm16 { key_bits: 256 },
        prf: PrfAlg::HmacSha256,
        integ: None,
        dh: DhGroup::Curve25519,
    }
}

/// The MODP suite: its key share comes from the seeded generator (the
/// curves' keys are drawn by AWS-LC itself), so a transcript through it
/// replays.
pub fn modp_suite() -> IkeSuite {
    IkeSuite {
        encr: EncrAlg::AesCbc { key_bits: 256 },
        prf: PrfAlg::HmacSha256,
        integ: Some(IntegAlg::HmacSha256_128),
        dh: DhGroup::Modp2048,
    }
}

fn net(s: &str, len: u8) -> TrafficSelector {
    TrafficSelector::subnet(s.parse().expect("test address"), len)
}

/// The responder's view of its one peer.
pub fn responder_config() -> PeerConfig {
    PeerConfig {
        local_id: Identity::Fqdn("responder.test".into()),
        remote_id: Identity::Fqdn("initiator.test".into()),
        psk: Zeroizing::new(b"the responder's key, which no input knows".to_vec()),
        ike_proposals: vec![x25519_suite(), modp_suite()],
        esp_proposals: vec![
            EspProposal { cipher: EspCipher::AesGcm16 { key_bits: 256 }, dh: None, esn: false },
            EspProposal { cipher: EspCipher::AesCbcHmacSha256 { key_bits: 256 }, dh: None, esn: false },
        ],
        local_ts: vec![net("10.2.0.0", 16)],
        remote_ts: vec![net("10.1.0.0", 16)],
        remote_addrs: vec![PEER],
        any_address: false,
        ike_lifetime: Duration::from_secs(3600),
        child_lifetime: Duration::from_secs(1200),
        rekey_jitter_percent: 10,
        dpd_interval: Duration::from_secs(30),
        initiate: false,
        encap_always: false,
    }
}

/// The peer's side, with a key of its own (for the seeds).
pub fn initiator_config(psk: &[u8], suite: IkeSuite) -> PeerConfig {
    let mut c = responder_config();
    std::mem::swap(&mut c.local_id, &mut c.remote_id);
    std::mem::swap(&mut c.local_ts, &mut c.remote_ts);
    c.psk = Zeroizing::new(psk.to_vec());
    c.ike_proposals = vec![suite];
    c.remote_addrs = vec![RESPONDER];
    c.initiate = true;
    c
}

pub fn peer_id() -> PeerId {
    PeerId::from("initiator")
}

/// A fresh responder and its clock's start.
pub fn responder() -> (Endpoint, Instant) {
    static START: OnceLock<Instant> = OnceLock::new();
    let now = *START.get_or_init(Instant::now);
    let mut ep = Endpoint::new(Box::new(TestRng(RESPONDER_SEED)));
    ep.set_peer(peer_id(), responder_config(), now);
    (ep, now)
}

/// One record of an input.
pub fn record(control: u8, datagram: &[u8]) -> Vec<u8> {
    let mut v = vec![control];
    v.extend_from_slice(&(datagram.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
    v.extend_from_slice(datagram);
    v
}

fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&control, rest) = data.split_first()?;
        let len = match rest {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        };
        let body = rest.get(2..).unwrap_or_default();
        let (this, next) = body.split_at(len.min(body.len()));
        data = next;
        Some((control, this))
    })
}

/// The wire parser's property: a plain message re-encodes to bytes that
/// parse to the same message (the header's length aside), are no longer
/// than the datagram, and encode again to themselves; an encrypted one's
/// SK payload lies inside the datagram where its header says.
fn wire(datagram: &[u8]) {
    let Ok(m) = Message::parse(datagram) else { return };
    match m.encrypted {
        None => {
            let encoded = Message::encode(m.header, &m.payloads);
            assert!(encoded.len() <= datagram.len(), "re-encoding grew {} to {} bytes", datagram.len(), encoded.len());
            let again = Message::parse(&encoded).expect("a re-encoded message parses");
            assert_eq!(again.payloads, without_marks(m.payloads.clone()));
            assert_eq!(again.header.length as usize, encoded.len());
            let mut header = m.header;
            header.length = again.header.length;
            assert_eq!(again.header, header);
            assert_eq!(Message::encode(again.header, &again.payloads), encoded, "encoding is not stable");
        }
        Some(sk) => {
            assert!(sk.aad_len >= HEADER_LEN + 4 && sk.aad_len < datagram.len());
            assert_eq!(datagram[sk.aad_len - 4], sk.first_inner, "SK's next-payload field");
            // What an opened body would be parsed with (here: unopened bytes).
            let _ = parse_inner(sk.first_inner, &datagram[sk.aad_len..]);
        }
    }
}

/// Payloads with transforms' unknown-attribute marks cleared: the mark is
/// the parser's note to negotiation (RFC 7296 §3.3.6), and the encoder,
/// which writes only what Causeway offers, has no attribute to carry it.
fn without_marks(mut payloads: Vec<Payload>) -> Vec<Payload> {
    for p in &mut payloads {
        if let Payload::Sa(proposals) = p {
            for t in proposals.iter_mut().flat_map(|p| p.transforms.iter_mut()) {
                t.unknown_attr = false;
            }
        }
    }
    payloads
}

/// Runs an input through the wire parser and a fresh responder, checking
/// the properties; every event goes to `seen`.
pub fn drive(data: &[u8], mut seen: impl FnMut(&Event)) {
    let (mut ep, mut now) = responder();
    let mut check = |ep: &mut Endpoint, answers: usize| {
        let mut sent = 0;
        while let Some(t) = ep.poll_transmit() {
            assert!(t.data.len() <= MAX_DATAGRAM, "a {}-byte answer", t.data.len());
            sent += 1;
        }
        assert!(sent <= answers, "{sent} datagrams where at most {answers} may go");
        while let Some(e) = ep.poll_event() {
            assert!(!matches!(e, Event::IkeUp { .. } | Event::ChildUp { .. }), "came up without the key: {e:?}");
            seen(&e);
        }
        let status = ep.status(&peer_id()).expect("the peer stays configured");
        assert_ne!(status.state, IkeState::Established);
        assert!(status.children.is_empty());
    };
    for (control, datagram) in records(data).take(MAX_RECORDS) {
        wire(datagram);
        let wait = u64::from(control >> 2);
        if wait > 0 {
            now += Duration::from_secs(wait);
            ep.handle_timeout(now);
            check(&mut ep, 0);
        }
        let port = if control & 1 == 1 { 4500 } else { 500 };
        let from = if control & 2 == 0 { PEER } else { STRANGER };
        ep.handle(now, SocketAddr::new(RESPONDER, port), SocketAddr::new(from, port), datagram);
        check(&mut ep, 1);
    }
    // Long after: half-open SAs are gone, quietly.
    now += Duration::from_secs(3600);
    ep.handle_timeout(now);
    check(&mut ep, 0);
}

pub fn ike(data: &[u8]) {
    drive(data, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_and_the_last_takes_the_rest() {
        let mut input = record(1, b"abc");
        input.extend(record(6, b""));
        input.extend([9, 0, 200, b'x', b'y']);
        let got: Vec<(u8, &[u8])> = records(&input).collect();
        assert_eq!(got, [(1, &b"abc"[..]), (6, &b""[..]), (9, &b"xy"[..])]);
        assert_eq!(records(&[7]).collect::<Vec<_>>(), [(7, &b""[..])]);
    }

    /// The peer's real IKE_SA_INIT is answered (one datagram), and the
    /// property checks hold on the way.
    #[test]
    fn a_real_init_is_answered() {
        let mut initiator = Endpoint::new(Box::new(TestRng(7)));
        let (_, now) = responder();
        initiator.set_peer(PeerId::from("r"), initiator_config(b"whatever key it has", x25519_suite()), now);
        initiator.connect(&PeerId::from("r"), SocketAddr::new(RESPONDER, 500), Some(PEER), now);
        let init = initiator.poll_transmit().expect("an IKE_SA_INIT").data;
        let (mut ep, now) = responder();
        ep.handle(now, SocketAddr::new(RESPONDER, 500), SocketAddr::new(PEER, 500), &init);
        let answer = ep.poll_transmit().expect("an answer");
        assert!(Message::parse(&answer.data).is_ok());
        ike(&record(0, &init));
        // A stranger's is not for the configured peer (it lists its address).
        ike(&record(2, &init));
    }

    /// The kept IKE_AUTH of a peer with another key decrypts at a fresh
    /// responder (the transcript replays) and fails the PSK check there:
    /// the fuzzer starts from inputs that reach the authentication.
    #[test]
    fn the_kept_exchange_reaches_the_key_check() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/ike/ike-auth-wrong-key");
        let input = std::fs::read(path).expect("the seed is kept");
        let mut events = Vec::new();
        drive(&input, |e| events.push(format!("{e:?}")));
        assert!(
            events.iter().any(|e| e.contains("AuthenticationFailed { by_peer: false }")),
            "the responder did not check the key: {events:?}"
        );
    }
}

//! A whole IKE message: the header, the plain payloads and, where there is
//! one, the location of the Encrypted (SK) payload (RFC 7296 §3.14).
//!
//! [`Message::parse`] is the entry point for untrusted datagrams (and the
//! fuzz target's): it checks the header and the plain chain and locates the
//! SK payload without touching keys. The SK body is opened by the caller,
//! which then parses the inner chain with [`parse_chain`].
//!
//! Invariant: an SK payload is the last payload, so its associated data is
//! exactly the message from its first octet to the end of SK's generic
//! header, and its body runs to the end of the datagram.

use super::header::{Header, GENERIC_HEADER_LEN, HEADER_LEN};
use super::payload::{parse_chain, write_chain, ChainEnd, Payload};
use super::WireError;
use crate::ids::payload as kind;

/// Where the Encrypted payload of a parsed message lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted {
    /// Octets of associated data: IKE header through SK's generic header.
    pub aad_len: usize,
    /// Type of the first payload inside.
    pub first_inner: u8,
}

/// A parsed IKE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    /// Payloads outside any SK payload.
    pub payloads: Vec<Payload>,
    pub encrypted: Option<Encrypted>,
}

impl Message {
    /// Parses an IKE datagram (non-ESP marker already removed). Never panics.
    pub fn parse(data: &[u8]) -> Result<Message, WireError> {
        let header = Header::parse(data)?;
        let rest = data.get(HEADER_LEN..).ok_or(WireError::Truncated)?;
        let (payloads, end) = parse_chain(header.next_payload, rest)?;
        let encrypted = match end {
            ChainEnd::Done => None,
            ChainEnd::Encrypted { offset, first_inner } => {
                let aad_len = HEADER_LEN + offset + GENERIC_HEADER_LEN;
                if aad_len >= data.len() {
                    return Err(WireError::Malformed("SK"));
                }
                Some(Encrypted { aad_len, first_inner })
            }
        };
        Ok(Message { header, payloads, encrypted })
    }

    /// Encodes a message of plain payloads; sets the header's length and
    /// next-payload fields.
    pub fn encode(mut header: Header, payloads: &[Payload]) -> Vec<u8> {
        let mut body = Vec::new();
        header.next_payload = write_chain(payloads, kind::NONE, &mut body);
        header.length = (HEADER_LEN + body.len()) as u32;
        let mut out = Vec::with_capacity(header.length as usize);
        header.write(&mut out);
        out.extend_from_slice(&body);
        out
    }

    /// Encodes a message whose payloads all go inside one SK payload.
    /// `body_len` gives the SK body's length for an inner chain's length
    /// and `seal` turns (associated data, inner chain) into that body.
    pub fn encode_encrypted<E>(
        mut header: Header,
        inner: &[Payload],
        body_len: impl FnOnce(usize) -> usize,
        seal: impl FnOnce(&[u8], &[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        let first_inner = write_chain(inner, kind::NONE, &mut plain);
        let sk_len = GENERIC_HEADER_LEN + body_len(plain.len());
        header.next_payload = kind::SK;
        header.length = (HEADER_LEN + sk_len) as u32;
        let mut out = Vec::with_capacity(header.length as usize);
        header.write(&mut out);
        out.extend_from_slice(&[first_inner, 0]);
        out.extend_from_slice(&(sk_len as u16).to_be_bytes());
        let body = seal(&out, &plain)?;
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// The inner payloads of an opened SK body.
pub fn parse_inner(first_inner: u8, plain: &[u8]) -> Result<Vec<Payload>, WireError> {
    match parse_chain(first_inner, plain)? {
        (payloads, ChainEnd::Done) => Ok(payloads),
        (_, ChainEnd::Encrypted { .. }) => Err(WireError::Malformed("SK")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{flags, ExchangeType};
    use crate::wire::identity::Identity;
    use crate::wire::notify::{Delete, Notify};
    use crate::wire::proposal::{Proposal, Transform};
    use crate::wire::traffic_selector::TrafficSelector;

    fn header(exchange: ExchangeType) -> Header {
        Header {
            spi_i: 0x1122334455667788,
            spi_r: 0x99,
            next_payload: 0,
            exchange,
            flags: flags::INITIATOR,
            message_id: 1,
            length: 0,
        }
    }

    /// Messages of every payload kind, as encoded datagrams.
    pub(crate) fn samples() -> Vec<Vec<u8>> {
        let sa = Payload::Sa(vec![Proposal {
            num: 1,
            protocol: 1,
            spi: vec![],
            transforms: vec![Transform::new(1, 20, Some(256)), Transform::new(2, 5, None), Transform::new(4, 31, None)],
        }]);
        let init = vec![
            sa.clone(),
            Payload::Ke { group: 31, data: vec![5; 32] },
            Payload::Nonce(vec![6; 32]),
            Payload::Notify(Notify::new(16388, vec![1; 20])),
            Payload::Notify(Notify::new(16389, vec![2; 20])),
        ];
        let auth = vec![
            Payload::IdI(Identity::Fqdn("a.example".into()).to_payload()),
            Payload::Auth { method: 2, data: vec![3; 32] },
            sa,
            Payload::TsI(vec![TrafficSelector::subnet("10.1.0.0".parse().expect("ip"), 16)]),
            Payload::TsR(vec![TrafficSelector::subnet("fd00::".parse().expect("ip"), 64)]),
            Payload::Delete(Delete { protocol: 3, spis: vec![vec![0, 0, 1, 0]] }),
        ];
        let mut out = vec![Message::encode(header(ExchangeType::IkeSaInit), &init)];
        // An SK payload sealed by a stand-in (identity with a fake ICV).
        let sealed = Message::encode_encrypted::<()>(
            header(ExchangeType::IkeAuth),
            &auth,
            |n| n + 16,
            |_, plain| {
                let mut b = plain.to_vec();
                b.extend_from_slice(&[0; 16]);
                Ok(b)
            },
        );
        out.push(sealed.expect("stand-in seal"));
        out
    }

    #[test]
    fn plain_and_encrypted_messages_round_trip() {
        let s = samples();
        let m = Message::parse(&s[0]).expect("parses");
        assert_eq!(m.payloads.len(), 5);
        assert_eq!(m.encrypted, None);
        assert_eq!(Message::encode(m.header, &m.payloads), s[0]);

        let m = Message::parse(&s[1]).expect("parses");
        let enc = m.encrypted.expect("has SK");
        assert_eq!(enc.aad_len, HEADER_LEN + 4);
        let body = &s[1][enc.aad_len..s[1].len() - 16];
        let inner = parse_inner(enc.first_inner, body).expect("inner parses");
        assert_eq!(inner.len(), 6);
        assert!(matches!(inner[0], Payload::IdI(_)));
    }

    /// Every truncation and many random bit flips of valid messages parse
    /// to a value or an error, never a panic — what the fuzz target checks
    /// at scale, run here on every test.
    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut parsed_ok = 0;
        for msg in samples() {
            for n in 0..msg.len() {
                assert!(Message::parse(&msg[..n]).is_err());
                let _ = parse_inner(msg[HEADER_LEN.min(n)], &msg[HEADER_LEN.min(n)..n]);
            }
            for _ in 0..20_000 {
                let mut m = msg.clone();
                for _ in 0..1 + next() % 4 {
                    let bit = (next() % (m.len() as u64 * 8)) as usize;
                    m[bit / 8] ^= 1 << (bit % 8);
                }
                if let Ok(p) = Message::parse(&m) {
                    parsed_ok += 1;
                    if let Some(e) = p.encrypted {
                        let _ = parse_inner(e.first_inner, &m[e.aad_len..]);
                    }
                }
            }
        }
        // Flips in data fields leave messages valid: the test reached the
        // payload parsers, not only the header check.
        assert!(parsed_ok > 1000);
    }
}

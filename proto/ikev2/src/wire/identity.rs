//! Identities (RFC 7296 §3.5): the configured [`Identity`] and the raw
//! IDi/IDr payload body it is sent as and compared against.
//!
//! Invariant: a received ID is matched by comparing its encoded body with
//! the configured identity's encoding, octet for octet — the same octets
//! AUTH covers, so what is checked is what was authenticated.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::reader::Reader;
use super::WireError;
use crate::ids::id_type;

/// An IKE identity as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Fqdn(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Email(String),
    KeyId(Vec<u8>),
}

impl Identity {
    /// The ID payload this identity is sent as.
    pub fn to_payload(&self) -> IdPayload {
        let (id_type, data) = match self {
            Identity::Fqdn(s) => (id_type::FQDN, s.as_bytes().to_vec()),
            Identity::Ipv4(a) => (id_type::IPV4_ADDR, a.octets().to_vec()),
            Identity::Ipv6(a) => (id_type::IPV6_ADDR, a.octets().to_vec()),
            Identity::Email(s) => (id_type::RFC822_ADDR, s.as_bytes().to_vec()),
            Identity::KeyId(k) => (id_type::KEY_ID, k.clone()),
        };
        IdPayload { id_type, data }
    }

    /// The identity a received ID payload names, if its type is one we know.
    pub fn from_payload(p: &IdPayload) -> Option<Identity> {
        match p.id_type {
            id_type::FQDN => String::from_utf8(p.data.clone()).ok().map(Identity::Fqdn),
            id_type::RFC822_ADDR => String::from_utf8(p.data.clone()).ok().map(Identity::Email),
            id_type::IPV4_ADDR => <[u8; 4]>::try_from(p.data.as_slice()).ok().map(|a| Identity::Ipv4(a.into())),
            id_type::IPV6_ADDR => <[u8; 16]>::try_from(p.data.as_slice()).ok().map(|a| Identity::Ipv6(a.into())),
            id_type::KEY_ID => Some(Identity::KeyId(p.data.clone())),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Fqdn(s) | Identity::Email(s) => f.write_str(s),
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::KeyId(k) => {
                f.write_str("keyid:")?;
                k.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// An IDi or IDr payload's body: the type and the identification data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    pub id_type: u8,
    pub data: Vec<u8>,
}

impl IdPayload {
    pub(crate) fn parse(body: &[u8]) -> Result<IdPayload, WireError> {
        let mut r = Reader::new(body);
        let id_type = r.u8()?;
        r.bytes(3)?;
        Ok(IdPayload { id_type, data: r.rest().to_vec() })
    }

    /// The body as AUTH signs it ("RestOfInitIDPayload", RFC 7296 §2.15).
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.data.len());
        self.write(&mut out);
        out
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.id_type, 0, 0, 0]);
        out.extend_from_slice(&self.data);
    }

    /// What to print for this ID in a log line. The ID is the peer's to
    /// choose, before it is authenticated and up to a datagram long: all but
    /// printable ASCII is escaped (`\n`, `\u{202e}`), so that it stays on
    /// its one log line and no control, line-separator or direction
    /// character can make it pass for other text, and it is cut at
    /// `MAX_DESCRIBED` characters.
    pub fn describe(&self) -> String {
        let text = match Identity::from_payload(self) {
            Some(id) => id.to_string(),
            None => return format!("<ID type {}>", self.id_type),
        };
        let (mut out, mut shown) = (String::new(), 0);
        for c in text.chars() {
            if shown >= MAX_DESCRIBED {
                out.push_str(&format!("… ({} bytes in all)", self.data.len()));
                break;
            }
            if c.is_ascii_graphic() || c == ' ' {
                out.push(c);
                shown += 1;
            } else {
                let escaped = c.escape_default();
                shown += escaped.len();
                out.extend(escaped);
            }
        }
        out
    }
}

/// The most characters of a received ID a log line shows (escapes
/// counted as written), before the note of its length.
const MAX_DESCRIBED: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_payloads() {
        for id in [
            Identity::Fqdn("gw.example".into()),
            Identity::Ipv4(Ipv4Addr::new(198, 18, 0, 1)),
            Identity::Ipv6("fd00::1".parse().expect("address")),
            Identity::Email("ops@gw.example".into()),
            Identity::KeyId(vec![1, 2, 3]),
        ] {
            let p = id.to_payload();
            assert_eq!(IdPayload::parse(&p.body()), Ok(p.clone()));
            assert_eq!(Identity::from_payload(&p), Some(id));
        }
        assert_eq!(Identity::KeyId(vec![0xab]).to_string(), "keyid:ab");
        assert!(IdPayload::parse(&[2, 0]).is_err());
    }

    #[test]
    fn a_received_id_is_described_on_one_bounded_line() {
        let mut forged = "a.test\n2026-12-02T00:00:00Z INFO IKE SA up\x1b[2J\u{2028}\u{202e}".as_bytes().to_vec();
        forged.extend(std::iter::repeat_n(b'x', 10_000));
        let p = IdPayload { id_type: id_type::FQDN, data: forged };
        let text = p.describe();
        assert!(text.chars().all(|c| c.is_ascii_graphic() || c == ' ' || c == '…'), "{text:?}");
        assert!(text.contains("\\u{2028}\\u{202e}"), "{text:?}");
        assert!(text.starts_with("a.test\\n2026"), "{text:?}");
        assert!(text.ends_with(&format!("… ({} bytes in all)", p.data.len())), "{text:?}");
        assert!(text.chars().count() < 128 + 10 + 30);
        let key = IdPayload { id_type: id_type::KEY_ID, data: vec![0xab; 1000] };
        assert!(key.describe().starts_with("keyid:abab") && key.describe().len() < 200);
        assert_eq!(Identity::Fqdn("gw.example".into()).to_payload().describe(), "gw.example");
    }
}
